//! The daemon killed (-9) while it serves several builds — two in a RUN step, one queued: none of
//! their processes or mounts outlives it, and the restarted daemon marks all three failed with the
//! reason (records and event logs), serves a new build, and leaves `kiln fsck` clean. Then kills
//! at ten points spread over builds that push to a real registry with per-build credentials:
//! after each, nothing left running, every build ended (succeeded, or failed as interrupted), fsck
//! clean, and no tag in the registry names a blob it lacks (`kiln pull` of every tag verifies each
//! blob).

use crate::support::registry as registry_support;

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killed_mid_builds_the_daemon_restarts_marks_them_failed_and_serves_new_ones() {
    let mut d = Daemon::start(&["--max-concurrent-builds", "2"]);
    let markers = ["kill-mark-1061", "kill-mark-1062", "kill-mark-1063"];
    let mut ids = Vec::new();
    for (i, m) in markers.iter().enumerate() {
        d.context(
            &format!("c{i}"),
            &[
                (
                    "Dockerfile",
                    &format!("FROM busybox:latest\nCOPY f /f\nRUN sleep 300; echo {m}\n"),
                ),
                ("f", &format!("build {i}\n")),
            ],
        );
        let (s, v) = d.post_json(
            "/v1/builds",
            &json!({"context": format!("c{i}"), "tags": [format!("killed:{i}")]}).to_string(),
        );
        assert_eq!(s, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Two slots: two builds in their RUN step, the third queued.
    wait_until("two RUN steps running", Duration::from_secs(60), || {
        markers.iter().filter(|m| !pids_of(m).is_empty()).count() == 2
    });
    let (_, queued) = d.get("/v1/builds?status=queued");
    assert_eq!(queued.as_array().unwrap().len(), 1, "{queued}");

    d.kill9();
    // Nothing of theirs is left running (no one kills them but the kernel).
    wait_until(
        "the RUN processes of the killed daemon still run",
        Duration::from_secs(10),
        || markers.iter().all(|m| pids_of(m).is_empty()),
    );
    assert_eq!(
        mounts_under(&d.root()),
        Vec::<String>::new(),
        "mounts left by the killed daemon"
    );

    d.restart();
    for id in &ids {
        let (_, rec) = d.get(&format!("/v1/builds/{id}"));
        assert_eq!(rec["status"], "failed", "{rec}");
        assert!(
            rec["error"]
                .as_str()
                .unwrap()
                .contains("daemon stopped or restarted"),
            "{rec}"
        );
        let events = d.events(id);
        assert_eq!(events.last().unwrap()["kind"], "interrupted", "{events:?}");
    }
    let log = std::fs::read_to_string(d.root().parent().unwrap().join("daemon.log")).unwrap();
    assert_eq!(
        log.matches("build.interrupted").count(),
        3,
        "each interrupted build is logged: {log}"
    );

    // New builds are served; the interrupted ones' leftovers do not get in the way.
    d.context(
        "after",
        &[
            ("Dockerfile", "FROM busybox:latest\nCOPY f /f\nRUN cat /f\n"),
            ("f", "after the kill\n"),
        ],
    );
    let (s, v) = d.post_json("/v1/builds", r#"{"context":"after","tags":["after:1"]}"#);
    assert_eq!(s, 202, "{v}");
    let events = d.events(v["id"].as_str().unwrap());
    assert_eq!(events.last().unwrap()["type"], "succeeded", "{events:?}");
    d.stop();
    assert_eq!(mounts_under(&d.root()), Vec::<String>::new());
    let out = kiln_ok(&d.root(), &["fsck"]);
    assert!(out.contains("no damage found"), "{out}");
}

/// Tags of `repo` in the registry (basic auth with the harness user).
fn registry_tags(addr: &str, repo: &str) -> Vec<String> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-u"])
        .arg(format!(
            "{}:{}",
            registry_support::USER,
            registry_support::PASSWORD
        ))
        .arg(format!("http://{addr}/v2/{repo}/tags/list"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn killed_at_points_spread_over_pushing_builds_nothing_is_left_half_done() {
    let reg = registry_support::Registry::start(registry_support::Options {
        htpasswd: true,
        ..Default::default()
    });
    let mut d = Daemon::start(&["--max-concurrent-builds", "2"]);
    // Kill points spread over the builds' life: queued, COPY, RUN, layer commit, push.
    let delays_ms = [100u64, 250, 400, 550, 700, 850, 1000, 1200, 1400, 1700];
    for (round, delay) in delays_ms.iter().enumerate() {
        let mut ids = Vec::new();
        for i in 0..3 {
            let m = format!("push-kill-{round}-{i}");
            d.context(
                &format!("r{round}c{i}"),
                &[
                    (
                        "Dockerfile",
                        &format!(
                            "FROM busybox:latest\nCOPY f /f\nRUN head -c 400000 /dev/urandom > /r; \
                             sleep 0.3; echo {m}\n"
                        ),
                    ),
                    ("f", &format!("round {round} build {i}\n")),
                ],
            );
            let body = json!({
                "context": format!("r{round}c{i}"),
                "tags": [format!("{}/killed/app:r{round}-{i}", reg.addr)],
                "push": true, "insecure_registry": true,
                "registry_credentials": [[reg.addr, registry_support::USER, registry_support::PASSWORD]]});
            let (s, v) = d.post_json("/v1/builds", &body.to_string());
            assert_eq!(s, 202, "{v}");
            ids.push((v["id"].as_str().unwrap().to_string(), m));
        }
        std::thread::sleep(Duration::from_millis(*delay));
        d.kill9();
        wait_until(
            "a RUN of the killed daemon still runs",
            Duration::from_secs(10),
            || ids.iter().all(|(_, m)| pids_of(m).is_empty()),
        );
        assert_eq!(mounts_under(&d.root()), Vec::<String>::new());
        d.restart();
        for (id, _) in &ids {
            let (_, rec) = d.get(&format!("/v1/builds/{id}"));
            let ok = rec["status"] == "succeeded"
                || (rec["status"] == "failed"
                    && rec["error"].as_str().unwrap().contains("interrupted"));
            assert!(ok, "round {round} (kill after {delay} ms): {rec}");
        }
        d.stop();
        let out = kiln_ok(&d.root(), &["fsck"]);
        assert!(out.contains("no damage found"), "round {round}: {out}");
        d.restart();
    }
    // Every tag the registry holds is whole: a pull verifies each blob it names.
    let tags = registry_tags(&reg.addr, "killed/app");
    let pulled = tempfile::tempdir().unwrap();
    for t in &tags {
        kiln_ok(
            pulled.path(),
            &[
                "pull",
                &format!("{}/killed/app:{t}", reg.addr),
                "--insecure-registry",
                &reg.addr,
                "--registry-credential",
                &format!(
                    "{}={}:{}",
                    reg.addr,
                    registry_support::USER,
                    registry_support::PASSWORD
                ),
            ],
        );
    }
    eprintln!(
        "{} tag(s) pushed before the kills, each pulled whole",
        tags.len()
    );
    // And the same build runs to the end now.
    let (s, v) = d.post_json(
        "/v1/builds",
        &json!({"context": "r0c0", "tags": [format!("{}/killed/app:again", reg.addr)],
                "push": true, "insecure_registry": true,
                "registry_credentials": [[reg.addr, registry_support::USER, registry_support::PASSWORD]]})
        .to_string(),
    );
    assert_eq!(s, 202, "{v}");
    let events = d.events(v["id"].as_str().unwrap());
    assert_eq!(events.last().unwrap()["type"], "succeeded", "{events:?}");
}
