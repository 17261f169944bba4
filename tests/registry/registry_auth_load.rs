//! Issue 24's intermittent 401, reproduced: pushes (and pulls) with per-build credentials to a
//! real htpasswd `docker-registry`, one client per build, several at once — while the registry's
//! password file is rewritten in place, as `htpasswd -b`, a config-management run or a mounted
//! secret update does. distribution re-reads the file whenever its mtime changes and can read it
//! half-written, so for a moment it refuses good credentials: `refused the credentials for user
//! "…" (HTTP 401 on HEAD blob)` — once in ~30 pushes with a rewrite every 50 ms, often at 20 ms
//! (measured before the fix; without rewrites, 300 pushes under the same load never saw a 401).
//! The client now asks again after a pause when basic credentials are refused; a wrong password
//! still fails, naming the user.

use crate::support::registry as registry_support;

use crate::support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiln::image::Platform;
use kiln::reference::Reference;
use kiln::registry::{pull, push, Credentials, RegistryClient, RegistryError, RetryPolicy};
use kiln::store::Store;
use registry_support::*;

/// How often the password file is rewritten while the pushes run.
const REWRITE_EVERY: Duration = Duration::from_millis(20);

/// Rewrite `htpasswd` in place (truncate, then write: what `htpasswd -b` and most tools do) until
/// `stop`.
fn rewrite_until(htpasswd: &Path, stop: &AtomicBool) {
    let text = std::fs::read(htpasswd).unwrap();
    while !stop.load(Ordering::Relaxed) {
        std::fs::write(htpasswd, &text).unwrap();
        std::thread::sleep(REWRITE_EVERY);
    }
}

/// A build's client: its own credentials, the daemon's default retry policy.
fn build_client(toml: &str, host: &str, password: &str) -> RegistryClient {
    client(toml, Credentials::from_list([(host, USER, password)]))
        .with_retry(RetryPolicy::default())
}

#[test]
fn per_build_credentials_survive_a_password_file_rewritten_under_load() {
    let reg = Registry::start(Options {
        htpasswd: true,
        ..Options::default()
    });
    let (_d, store, _) = store_with_busybox();
    let images: Vec<_> = (0..6)
        .map(|_| random_image_layers(&store, &[3000, 5000, 7000, 9000], "amd64"))
        .collect();
    // Plain HTTP as configured, and as an insecure host (pinged first, challenge learned there).
    let configs = [
        reg.config_section(),
        format!("insecure_registries = [\"{}\"]\n", reg.addr),
    ];
    let base: Reference = format!("{}/base/img:1", reg.addr).parse().unwrap();
    push(
        &build_client(&configs[0], &reg.addr, PASSWORD),
        &store,
        &images[0],
        &base,
        &mut |_| {},
    )
    .unwrap();

    let failures = std::sync::Mutex::new(Vec::new());
    let (done, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    let t = Instant::now();
    std::thread::scope(|s| {
        let htpasswd = reg.dir.path().join("htpasswd");
        let stop = &stop;
        s.spawn(move || rewrite_until(&htpasswd, stop));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (store, images, configs, reg, base) = (&store, &images, &configs, &reg, &base);
                let (failures, done) = (&failures, &done);
                s.spawn(move || {
                    for i in 0..8 {
                        let c = build_client(&configs[i % 2], &reg.addr, PASSWORD);
                        let own = tempfile::tempdir().unwrap();
                        let own = Store::open(own.path()).unwrap();
                        let platform = Platform::host();
                        if let Err(e) = pull(&c, &own, base, &platform, &mut |_| {}) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("pull {w}/{i}: {}", chain(&e)));
                        }
                        let img = &images[(w + i) % images.len()];
                        let dest: Reference =
                            format!("{}/load/w{w}:{i}", reg.addr).parse().unwrap();
                        match push(&c, store, img, &dest, &mut |_| {}) {
                            Ok(_) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures
                                .lock()
                                .unwrap()
                                .push(format!("push {w}/{i}: {}", chain(&e))),
                        }
                    }
                })
            })
            .collect();
        for h in workers {
            h.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(done.load(Ordering::Relaxed), 32);
    eprintln!(
        "32 pulls + pushes with the password file rewritten every {REWRITE_EVERY:?}: {:?}",
        t.elapsed()
    );

    // A wrong password is still refused, after the pauses, naming the user and never the secret.
    let t = Instant::now();
    let bad = build_client(&configs[0], &reg.addr, "wrong-password-xyz");
    let dest: Reference = format!("{}/load/bad:1", reg.addr).parse().unwrap();
    let e = push(&bad, &store, &images[1], &dest, &mut |_| {}).unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    let text = chain(&e);
    assert!(
        text.contains(USER) && !text.contains("wrong-password-xyz"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// The same through the daemon: concurrent builds, each pushing with its own credentials, while
/// the password file is rewritten.
#[test]
fn daemon_builds_push_with_per_build_credentials_while_the_password_file_is_rewritten() {
    let reg = Registry::start(Options {
        htpasswd: true,
        ..Options::default()
    });
    let d = support::Daemon::start(&["--max-concurrent-builds", "4"]);
    let stop = AtomicBool::new(false);
    let bad = std::thread::scope(|s| {
        let htpasswd = reg.dir.path().join("htpasswd");
        let stop_ref = &stop;
        s.spawn(move || rewrite_until(&htpasswd, stop_ref));
        let mut ids = Vec::new();
        for i in 0..12 {
            d.context(
                &format!("c{i}"),
                &[
                    (
                        "Dockerfile",
                        "FROM busybox:latest\nCOPY f /f\nRUN head -c 100000 /dev/urandom > /r\n",
                    ),
                    ("f", &format!("build {i}\n")),
                ],
            );
            let body = serde_json::json!({
                "context": format!("c{i}"),
                "tags": [format!("{}/load/d{}:{i}", reg.addr, i % 3)],
                "push": true, "insecure_registry": i % 2 == 0,
                "registry_credentials": [[reg.addr, USER, PASSWORD]]});
            let (st, v) = d.post_json("/v1/builds", &body.to_string());
            assert_eq!(st, 202, "{v}");
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        let bad: Vec<String> = ids
            .iter()
            .filter_map(|id| {
                let ev = d.events(id);
                let last = ev.last().unwrap();
                (last["type"] != "succeeded").then(|| last.to_string())
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        bad
    });
    assert!(bad.is_empty(), "{bad:#?}");
}
