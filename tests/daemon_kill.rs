//! The daemon killed (-9) while it serves several builds — two in a RUN step, one queued: none of
//! their processes or mounts outlives it, and the restarted daemon marks all three failed with the
//! reason (records and event logs), serves a new build, and leaves `kiln fsck` clean.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Mount points under `dir` in this mount namespace (the daemon's: tests run in the host's).
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

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
