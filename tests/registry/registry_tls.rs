//! Per-host TLS against real registries: a test CA trusted through `ca` or `tlsconfigdir`,
//! `insecure`, client certificates required by the registry (`http.tls.clientcas`), and the
//! errors when trust or the client certificate is missing.

use crate::support::registry as registry_support;

use kiln::image::Platform;
use kiln::reference::Reference;
use kiln::registry::{pull, push, Credentials, RegistryError};
use kiln::store::Store;
use registry_support::*;

fn round_trip(reg: &Registry, toml: &str, repo: &str) -> Result<(), RegistryError> {
    let c = client(toml, Credentials::new());
    let (_d, store, desc) = store_with_busybox();
    let dest: Reference = format!("{}/{repo}:1", reg.addr).parse().unwrap();
    push(&c, &store, &desc, &dest, &mut |_| {})?;
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let got = pull(&c, &s, &dest, &Platform::host(), &mut |_| {})?;
    assert_eq!(got.digest, desc.digest);
    Ok(())
}

#[test]
fn tls_with_test_ca_via_ca_tlsconfigdir_or_insecure() {
    let reg = Registry::start(Options {
        tls: true,
        ..Options::default()
    });
    let pki = reg.pki.as_ref().unwrap();
    // `ca = [...]`
    round_trip(&reg, &reg.config_section(), "tls/ca").unwrap();
    // tlsconfigdir with the CA as *.crt
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.path("ca.crt"), dir.path().join("test-ca.crt")).unwrap();
    let toml = format!(
        "[registry.\"{}\"]\ntlsconfigdir = [\"{}\"]\n",
        reg.addr,
        dir.path().display()
    );
    round_trip(&reg, &toml, "tls/dir").unwrap();
    // insecure: no verification at all
    round_trip(
        &reg,
        &format!("[registry.\"{}\"]\ninsecure = true\n", reg.addr),
        "tls/insecure",
    )
    .unwrap();
    // the CA files the client trusts for the host are listed (for `kiln info`)
    let c = client(&reg.config_section(), Credentials::new());
    assert!(c
        .trusted_ca_files(&reg.addr)
        .unwrap()
        .contains(&pki.path("ca.crt")));
}

#[test]
fn untrusted_ca_is_a_tls_error_naming_host_and_reference() {
    let reg = Registry::start(Options {
        tls: true,
        ..Options::default()
    });
    let e = round_trip(&reg, "", "tls/untrusted").unwrap_err();
    let msg = chain(&e);
    assert!(matches!(e, RegistryError::Tls { .. }), "{msg}");
    assert!(
        msg.contains(&reg.addr) && msg.contains("tls/untrusted:1"),
        "{msg}"
    );
    assert!(
        msg.contains("ca") && msg.to_lowercase().contains("certificate"),
        "{msg}"
    );
}

#[test]
fn client_certificates_via_keypair_client_alias_and_tlsconfigdir() {
    let reg = Registry::start(Options {
        tls: true,
        client_certs: true,
        ..Options::default()
    });
    let pki = reg.pki.as_ref().unwrap();
    let (ca, cert, key) = (
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key"),
    );
    let keypair = format!(
        "[registry.\"{0}\"]\nca = [\"{1}\"]\n[[registry.\"{0}\".keypair]]\ncert = \"{2}\"\nkey = \"{3}\"\n",
        reg.addr,
        ca.display(),
        cert.display(),
        key.display()
    );
    round_trip(&reg, &keypair, "mtls/keypair").unwrap();
    let alias = format!(
        "[registry.\"{}\"]\nca = [\"{}\"]\nclient = [\"{}\", \"{}\"]\n",
        reg.addr,
        ca.display(),
        cert.display(),
        key.display()
    );
    round_trip(&reg, &alias, "mtls/alias").unwrap();
    // Docker's certs.d layout: ca.crt, client.cert, client.key
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, dir.path().join("ca.crt")).unwrap();
    std::fs::copy(&cert, dir.path().join("client.cert")).unwrap();
    std::fs::copy(&key, dir.path().join("client.key")).unwrap();
    let toml = format!(
        "[registry.\"{}\"]\ntlsconfigdir = \"{}\"\n",
        reg.addr,
        dir.path().display()
    );
    round_trip(&reg, &toml, "mtls/dir").unwrap();

    // Without a client certificate the registry refuses the handshake.
    let e = round_trip(&reg, &reg.config_section(), "mtls/none").unwrap_err();
    let msg = chain(&e);
    assert!(
        matches!(e, RegistryError::Tls { .. } | RegistryError::Connect { .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&reg.addr) && msg.contains("mtls/none:1"),
        "{msg}"
    );
}

#[test]
fn bad_tls_settings_are_reported_before_connecting() {
    let c = client(
        "[registry.\"r.example\"]\nca = [\"/nonexistent/ca.crt\"]\n",
        Credentials::new(),
    );
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let e = pull(
        &c,
        &s,
        &"r.example/app:1".parse().unwrap(),
        &Platform::host(),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::TlsSetup { .. }), "{msg}");
    assert!(
        msg.contains("r.example") && msg.contains("/nonexistent/ca.crt"),
        "{msg}"
    );
}

#[test]
fn insecure_registry_list_falls_back_to_plain_http() {
    let reg = Registry::plain();
    // No section for the host: only the daemon-style list marks it insecure.
    let toml = format!("insecure_registries = \"{}\"\n", reg.addr);
    round_trip(&reg, &toml, "insecure/http").unwrap();
}

#[test]
fn ca_bundle_at_a_conventional_path_is_trusted_without_configuration() {
    let reg = Registry::start(Options {
        tls: true,
        ..Options::default()
    });
    let dir = std::path::Path::new("/usr/local/share/ca-certificates");
    if std::fs::create_dir_all(dir).is_err() {
        panic!("cannot create {} (tests run as root here)", dir.display());
    }
    let bundle = dir.join(format!("kiln-test-{}.crt", std::process::id()));
    std::fs::copy(reg.pki.as_ref().unwrap().path("ca.crt"), &bundle).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Cleanup(bundle.clone());
    assert!(kiln::registry::conventional_ca_bundles().contains(&bundle));
    round_trip(&reg, "", "tls/conventional").unwrap();
}
