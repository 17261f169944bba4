//! Authentication against real registries: htpasswd basic auth and token auth with a harness
//! issuer signing RS256 JWTs (anonymous pull tokens, basic-exchanged tokens, refresh tokens), scope
//! caching, cross-repository mounts (pull scope on the source), separate pull and push
//! credentials, and errors that name host and reference but never a secret.

use crate::support::registry as registry_support;

use kiln::image::Platform;
use kiln::reference::Reference;
use kiln::registry::{pull, push, BlobOutcome, Credentials, Progress, Purpose, RegistryError};
use kiln::store::Store;
use registry_support::*;

fn r(s: &str) -> Reference {
    s.parse().unwrap()
}

fn fresh() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    (d, s)
}

fn creds(host: &str, pass: &str) -> Credentials {
    Credentials::from_list([(host, USER, pass)])
}

fn assert_no_secret(text: &str) {
    for s in [PASSWORD, "wrong-password-xyz", IDENTITY_TOKEN] {
        assert!(!text.contains(s), "a secret leaked: {text}");
    }
}

#[test]
fn htpasswd_basic_auth() {
    let reg = Registry::start(Options {
        htpasswd: true,
        ..Options::default()
    });
    let toml = reg.config_section();
    let (_d, store, desc) = store_with_busybox();
    let dest = r(&format!("{}/basic/app:1", reg.addr));

    let good = client(&toml, creds(&reg.addr, PASSWORD));
    push(&good, &store, &desc, &dest, &mut |_| {}).unwrap();
    let (_d2, s2) = fresh();
    pull(&good, &s2, &dest, &Platform::host(), &mut |_| {}).unwrap();

    let bad = client(&toml, creds(&reg.addr, "wrong-password-xyz"));
    let e = push(&bad, &store, &desc, &dest, &mut |_| {}).unwrap_err();
    let msg = chain(&e);
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains(&reg.addr) && msg.contains("basic/app:1") && msg.contains(USER),
        "{msg}"
    );
    assert_no_secret(&msg);
    assert_no_secret(&format!("{e:?} {bad:?}"));

    let anon = client(&toml, Credentials::new());
    let (_d3, s3) = fresh();
    let e = pull(&anon, &s3, &dest, &Platform::host(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("anonymous"), "{e}");
}

#[test]
fn separate_pull_and_push_credentials() {
    let reg = Registry::start(Options {
        htpasswd: true,
        ..Options::default()
    });
    let mut c = Credentials::new();
    c.add_for(Purpose::Pull, &reg.addr, USER, "wrong-password-xyz");
    c.add_for(Purpose::Push, &reg.addr, USER, PASSWORD);
    let cl = client(&reg.config_section(), c);
    let (_d, store, desc) = store_with_busybox();
    let dest = r(&format!("{}/split/app:1", reg.addr));
    push(&cl, &store, &desc, &dest, &mut |_| {}).unwrap();
    let (_d2, s2) = fresh();
    let e = pull(&cl, &s2, &dest, &Platform::host(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
}

#[test]
fn token_auth_anonymous_pull_basic_exchange_and_refresh_token() {
    let reg = Registry::start(Options {
        token: true,
        ..Options::default()
    });
    let issuer = reg.issuer.as_ref().unwrap();
    let toml = reg.config_section();
    let (_d, store, desc) = store_with_busybox();
    let dest = r(&format!("{}/tok/app:1", reg.addr));

    // Anonymous tokens carry pull only: a push is refused, naming host and reference.
    let anon = client(&toml, Credentials::new());
    let e = push(&anon, &store, &desc, &dest, &mut |_| {}).unwrap_err();
    let msg = chain(&e);
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains(&reg.addr) && msg.contains("tok/app:1"),
        "{msg}"
    );

    let good = client(&toml, creds(&reg.addr, PASSWORD));
    push(&good, &store, &desc, &dest, &mut |_| {}).unwrap();
    // One token per scope set: the blob and manifest requests reuse it.
    let push_tokens = issuer
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(authed, s)| *authed && s == &vec!["repository:tok/app:pull,push".to_string()])
        .count();
    assert_eq!(push_tokens, 1, "{:?}", issuer.requests.lock().unwrap());

    let (_d2, s2) = fresh();
    assert_eq!(
        pull(&anon, &s2, &dest, &Platform::host(), &mut |_| {})
            .unwrap()
            .digest,
        desc.digest
    );

    // Wrong password: the token service says no.
    let bad = client(&toml, creds(&reg.addr, "wrong-password-xyz"));
    let e = push(
        &bad,
        &store,
        &desc,
        &r(&format!("{}/tok/other:1", reg.addr)),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = chain(&e);
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains(&reg.addr) && msg.contains("tok/other:1"),
        "{msg}"
    );
    assert_no_secret(&msg);

    // An identity (refresh) token from the config file.
    let toml_tok = format!("{toml}identitytoken = \"{IDENTITY_TOKEN}\"\n");
    let refresh = client(&toml_tok, Credentials::new());
    push(
        &refresh,
        &store,
        &desc,
        &r(&format!("{}/tok/refreshed:1", reg.addr)),
        &mut |_| {},
    )
    .unwrap();
    assert_no_secret(&format!("{refresh:?}"));
}

#[test]
fn cross_repo_mount_with_pull_scope_on_source() {
    let reg = Registry::start(Options {
        token: true,
        ..Options::default()
    });
    let issuer = reg.issuer.as_ref().unwrap();
    let c = client(&reg.config_section(), creds(&reg.addr, PASSWORD));
    let (_d, store, desc) = store_with_busybox();
    let src = r(&format!("{}/team/base:1", reg.addr));
    push(&c, &store, &desc, &src, &mut |_| {}).unwrap();

    // A store that pulled from team/base knows where its blobs came from.
    let (_d2, s2) = fresh();
    pull(&c, &s2, &src, &Platform::host(), &mut |_| {}).unwrap();
    let mut ev = Vec::new();
    let dest = r(&format!("{}/team/app:1", reg.addr));
    push(&c, &s2, &desc, &dest, &mut |p| ev.push(p)).unwrap();
    let mounted: Vec<_> = ev
        .iter()
        .filter(|p| matches!(p, Progress::BlobDone { outcome: BlobOutcome::Mounted { from }, .. } if from == "team/base"))
        .collect();
    assert_eq!(mounted.len(), 2, "{ev:?}");
    let log = reg.log();
    assert!(
        log.lines()
            .any(|l| l.contains("POST /v2/team/app/blobs/uploads/?mount=")
                && l.contains("from=team/base")
                && l.contains("\" 201 ")),
        "no mount in the registry log:\n{log}"
    );
    let reqs = issuer.requests.lock().unwrap();
    assert!(
        reqs.iter().any(
            |(_, s)| s.contains(&"repository:team/app:pull,push".to_string())
                && s.contains(&"repository:team/base:pull".to_string())
        ),
        "{reqs:?}"
    );
    drop(reqs);
    let (ok, _, err) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("docker://{dest}"),
    ]);
    assert!(ok, "{err}");
}
