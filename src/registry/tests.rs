//! Unit tests of the registry client pieces that need no server: challenges, scopes, redaction.

use super::*;

#[test]
fn credentials_debug_and_errors_never_show_secrets() {
    let mut c = Credentials::new();
    c.add("registry.example.com", "alice", "s3cret-pass");
    c.add_flag("push:index.docker.io=bob:t0ken-xyz").unwrap();
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("s3cret") && !dbg.contains("t0ken") && !dbg.contains("alice"),
        "{dbg}"
    );
    let e = Credentials::new()
        .add_flag("host:pw-leak")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("pw-leak"), "{e}");
    let e = Credentials::new()
        .add_flag("host=nocolon-leak")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("nocolon-leak") && e.contains("host"), "{e}");
}

#[test]
fn most_specific_credential_wins_and_purposes_separate() {
    let mut c = Credentials::new();
    c.add("r.example", "general", "a");
    c.add("r.example/team", "team", "b");
    c.add_for(Purpose::Push, "r.example", "pusher", "c");
    c.add("docker.io", "hub", "d");
    let user = |h: &str, p: &str, purpose| c.lookup(h, p, purpose).map(|a| a.username);
    assert_eq!(
        user("r.example", "team/app", Purpose::Pull).as_deref(),
        Some("team")
    );
    assert_eq!(
        user("r.example", "teamx/app", Purpose::Pull).as_deref(),
        Some("general")
    );
    assert_eq!(
        user("r.example", "other", Purpose::Push).as_deref(),
        Some("pusher")
    );
    assert_eq!(
        user("registry-1.docker.io", "library/x", Purpose::Pull).as_deref(),
        Some("hub")
    );
    assert_eq!(user("elsewhere", "x", Purpose::Pull), None);
}

#[test]
fn retry_delays_grow_and_are_capped() {
    let p = RetryPolicy::default();
    assert!(p.delay(1) > p.delay(0));
    assert_eq!(p.delay(30), p.max_delay);
}
