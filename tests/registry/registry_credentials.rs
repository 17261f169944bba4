//! Credentials from Docker's config.json (`auths`, `credHelpers`, `credsStore` through a real
//! `docker-credential-*` executable) and kiln's config, `kiln login`'s writer, and the login
//! check. One test: it puts a helper on PATH for the whole process.

use crate::support::registry as registry_support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine as _;
use kiln::config::Config;
use kiln::image::Platform;
use kiln::reference::Reference;
use kiln::registry::{
    login_store, pull, push, Credentials, DockerConfig, RegistryClient, RegistryError, RetryPolicy,
};
use kiln::store::Store;
use registry_support::*;

fn docker_client(toml: &str, docker: &std::path::Path) -> RegistryClient {
    let cfg = Config::from_toml_str(toml, "test.toml").unwrap();
    RegistryClient::new(&cfg, Credentials::new())
        .unwrap()
        .with_docker_config(DockerConfig::at(docker))
        .with_retry(RetryPolicy {
            attempts: 2,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(50),
        })
}

#[test]
fn docker_config_helpers_kiln_config_and_login() {
    let reg = Registry::start(Options {
        htpasswd: true,
        ..Options::default()
    });
    let toml = reg.config_section();
    let (_d, store, desc) = store_with_busybox();
    let dest: Reference = format!("{}/creds/app:1", reg.addr).parse().unwrap();
    let work = tempfile::tempdir().unwrap();

    // auths with base64 user:password, under an https:// key as docker writes for some hosts.
    let dc = work.path().join("docker-auths");
    std::fs::create_dir_all(&dc).unwrap();
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        dc.join("config.json"),
        format!(
            r#"{{"auths":{{"https://{}":{{"auth":"{enc}"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    push(
        &docker_client(&toml, &dc),
        &store,
        &desc,
        &dest,
        &mut |_| {},
    )
    .unwrap();

    // credHelpers → docker-credential-kilntest on PATH.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stored = work.path().join("helper-stored.json");
    let helper = bin.join("docker-credential-kilntest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n get) read url; printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$url\";;\n store) cat > {};;\n *) exit 1;;\nesac\n",
            stored.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // PATH is process-wide and this binary's other registry tests run alongside: only prepend a
    // directory that holds nothing but docker-credential-kilntest (std serialises environment
    // access with spawning, and every other tool is still found where it was).
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::set_var("PATH", path);
    let dh = work.path().join("docker-helpers");
    std::fs::create_dir_all(&dh).unwrap();
    std::fs::write(
        dh.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"kilntest"}}}}"#, reg.addr),
    )
    .unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let s2 = Store::open(d2.path()).unwrap();
    let c = docker_client(&toml, &dh);
    pull(&c, &s2, &dest, &Platform::host(), &mut |_| {}).unwrap();
    assert!(!format!("{c:?}").contains(PASSWORD));

    // kiln's own config carries credentials (redacted when shown).
    let with_creds = format!("{toml}username = \"{USER}\"\npassword = \"{PASSWORD}\"\n");
    let empty = work.path().join("no-docker");
    push(
        &docker_client(&with_creds, &empty),
        &store,
        &desc,
        &dest,
        &mut |_| {},
    )
    .unwrap();
    assert!(!Config::from_toml_str(&with_creds, "x")
        .unwrap()
        .to_string()
        .contains(PASSWORD));

    // login: checked against the registry, then written as docker does (0600, other keys kept).
    let dl = work.path().join("docker-login");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::write(dl.join("config.json"), r#"{"experimental":"enabled"}"#).unwrap();
    let check = |pass: &str| {
        let cfg = Config::from_toml_str(&toml, "t").unwrap();
        RegistryClient::new(
            &cfg,
            Credentials::from_list([(reg.addr.as_str(), USER, pass)]),
        )
        .unwrap()
        .with_docker_config(DockerConfig::at(&empty))
        .check_login(&reg.addr)
    };
    let e = check("wrong-password-xyz").unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains(&reg.addr) && !chain(&e).contains("wrong-password-xyz"));
    check(PASSWORD).unwrap();
    let whereto = login_store(&DockerConfig::at(&dl), &reg.addr, USER, PASSWORD).unwrap();
    assert!(whereto.ends_with("config.json"));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dl.join("config.json")).unwrap()).unwrap();
    assert_eq!(written["experimental"], "enabled");
    assert_eq!(written["auths"][reg.addr.as_str()]["auth"], enc);
    let mode = std::fs::metadata(dl.join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    push(
        &docker_client(&toml, &dl),
        &store,
        &desc,
        &dest,
        &mut |_| {},
    )
    .unwrap();
    // Docker Hub's key is the v1 URL docker uses.
    login_store(
        &DockerConfig::at(&dl),
        "index.docker.io",
        "hubuser",
        "hubpass",
    )
    .unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dl.join("config.json")).unwrap()).unwrap();
    assert!(written["auths"]["https://index.docker.io/v1/"]["auth"].is_string());

    // With a credsStore the helper stores the secret; config.json gets none.
    std::fs::write(dh.join("config.json"), r#"{"credsStore":"kilntest"}"#).unwrap();
    let whereto = login_store(&DockerConfig::at(&dh), &reg.addr, USER, PASSWORD).unwrap();
    assert_eq!(whereto, "docker-credential-kilntest");
    let sent: serde_json::Value = serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
    assert_eq!(sent["ServerURL"], reg.addr.as_str());
    assert_eq!(sent["Username"], USER);
    assert!(!std::fs::read_to_string(dh.join("config.json"))
        .unwrap()
        .contains(PASSWORD));
}
