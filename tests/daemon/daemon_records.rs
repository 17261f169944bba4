//! No record write dropped: when kiln.db refuses a build's record, the build reads `failed`
//! through the API with the cause — not `running` until a restart — the daemon keeps serving, and
//! once kiln.db takes writes the refused end is written (a restart finds it as it was, not
//! "interrupted").
//!
//! The refusal is real: another connection holds kiln.db's write lock (`BEGIN IMMEDIATE`, as a
//! long `sqlite3` session or a stuck process would) past the daemon's busy timeout, so each write
//! fails with SQLite's "database is locked" after 10 s. A full tmpfs was tried first and does not
//! refuse SQLite deterministically: the failed build's workspace is freed and the WAL reuses its
//! pages, so the end write fit (tests/store/store_disk_full.rs covers the full disk itself).

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;

/// Poll the build until it is neither queued nor running.
fn wait_ended(d: &Daemon, id: &str) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let (s, rec) = d.get(&format!("/v1/builds/{id}"));
        assert_eq!(s, 200, "{rec}");
        if rec["status"] != "running" && rec["status"] != "queued" {
            return rec;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "build {id} still {} after 90 s: the refused record write was dropped",
            rec["status"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_refused_record_write_fails_the_build_with_the_cause_and_the_daemon_keeps_serving() {
    let mut d = Daemon::start(&[]);
    d.context(
        "slow",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN sleep 2; echo records-1049 > /r\n",
        )],
    );
    let (s, v) = d.post_json("/v1/builds", r#"{"context":"slow"}"#);
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    while pids_of("records-1049").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the RUN never started: {}",
            d.log_text(&id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The build is recorded `running`; from here on kiln.db's write lock is someone else's.
    let lock = rusqlite::Connection::open(d.root().join("kiln.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    let rec = wait_ended(&d, &id);
    assert_eq!(rec["status"], "failed", "{rec}");
    let error = rec["error"].as_str().unwrap();
    assert!(
        error.contains("could not be") && error.contains("database is locked"),
        "the status names the refused write and its cause: {rec}"
    );
    // Still serving (reads need no write lock), and saying one end waits to be written.
    let (s, info) = d.get("/v1/info");
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["unwritten_records"], 1, "{info}");
    let (s, list) = d.get("/v1/builds?status=failed");
    assert_eq!(s, 200, "{list}");
    assert!(
        list.as_array().unwrap().iter().any(|b| b["id"] == id),
        "{list}"
    );
    let log = std::fs::read_to_string(d.root().parent().unwrap().join("daemon.log")).unwrap();
    assert!(log.contains("build.record_failed"), "logged: {log}");

    // The lock released: the next build is served, and the refused end is written.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    d.context(
        "small",
        &[
            ("Dockerfile", "FROM busybox:latest\nCOPY s /s\n"),
            ("s", "small"),
        ],
    );
    let (s, v) = d.post_json("/v1/builds", &json!({"context": "small"}).to_string());
    assert_eq!(s, 202, "{v}");
    let events = d.events(v["id"].as_str().unwrap());
    assert_eq!(events.last().unwrap()["type"], "succeeded", "{events:?}");
    let (_, info) = d.get("/v1/info");
    assert_eq!(info["unwritten_records"], 0, "{info}");

    // In kiln.db now: a restart finds it failed with its cause, not interrupted.
    d.restart();
    let (_, after) = d.get(&format!("/v1/builds/{id}"));
    assert_eq!(after["status"], "failed", "{after}");
    assert_eq!(after["error"], rec["error"], "{after}");
    d.stop();
    let out = kiln_ok(&d.root(), &["fsck"]);
    assert!(out.contains("no damage found"), "{out}");
}
