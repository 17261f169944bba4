//! The daemon (issue 6) against a live `kiln daemon` on a temp socket, driven with curl the way a
//! user would: builds, events, records, cancel, restart, peer checks, path escapes, bad input, the
//! OpenAPI document, the CLI client and the Python client.

use crate::support::registry as registry_support;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};

const DOCKERFILE: &str =
    "FROM busybox:latest\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt && echo ran > /ran\n";

fn build_ok(d: &Daemon, body: Value) -> (String, Vec<Value>) {
    let (status, v) = d.post_json("/v1/builds", &body.to_string());
    assert_eq!(status, 202, "POST /v1/builds {body}: {v}");
    let id = v["id"].as_str().unwrap().to_string();
    let events = d.events(&id);
    (id, events)
}

#[test]
fn round_trip_build_events_record_and_store() {
    let d = Daemon::start(&[]);
    d.context(
        "app",
        &[
            ("Dockerfile", DOCKERFILE),
            ("hello.txt", "hello from the context\n"),
        ],
    );
    let (id, events) = build_ok(
        &d,
        json!({"context": "app", "name": "demo", "tag": "1.0",
               "registry_credentials": [["r.example.com", "robot", "s3cr3t-pw"]],
               "secrets": [{"id": "tok", "value": "inline-secret-value"}],
               "labels": {"org.example.team": "kiln"}}),
    );
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for k in [
        "queued",
        "started",
        "step_started",
        "log",
        "step_finished",
        "finished",
        "succeeded",
    ] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    assert!(events
        .iter()
        .any(|e| e["type"] == "log" && e["line"] == "hello from the context"));
    let manifest = events.last().unwrap()["manifest"]
        .as_str()
        .unwrap()
        .to_string();

    // The record: succeeded, the Dockerfile, steps with timings, the peer (us: root).
    let (_, rec) = d.get(&format!("/v1/builds/{id}"));
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(rec["result"]["manifest"], manifest.as_str());
    assert_eq!(rec["dockerfile"], DOCKERFILE);
    assert_eq!(rec["steps"].as_array().unwrap().len(), 2, "{rec}");
    assert!(rec["steps"][1]["duration_ms"].is_u64());
    assert_eq!(rec["peer"]["uid"], 0);

    // The result is tagged in the store, as `kiln images` shows it.
    let images = kiln_ok(&d.root(), &["images"]);
    assert!(images.contains("docker.io/library/demo:1.0"), "{images}");
    let (_, img) = d.get("/v1/images/demo:1.0");
    assert_eq!(img["digest"], manifest.as_str());

    // Replay from an offset skips exactly that many events.
    let replay = d.events_from(&id, 2);
    assert_eq!(replay.len(), events.len() - 2);
    assert_eq!(replay[0], events[2]);

    // Credentials and secret values appear nowhere: events, record, list, log, database.
    let (_, list) = d.get("/v1/builds");
    let logs = d.raw("GET", &format!("/v1/builds/{id}/logs"), None, "").1;
    let db = std::fs::read(d.root().join("kiln.db")).unwrap();
    let everything = format!(
        "{}{rec}{list}{logs}{}",
        serde_json::to_string(&events).unwrap(),
        String::from_utf8_lossy(&db)
    );
    for secret in ["s3cr3t-pw", "inline-secret-value"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
    assert!(
        rec["spec"]["registry_credentials"][0][2] == "<redacted>",
        "{rec}"
    );

    // Filtering by status, metrics.
    let (_, ok) = d.get("/v1/builds?status=succeeded");
    assert_eq!(ok.as_array().unwrap().len(), 1);
    let metrics = d.raw("GET", "/metrics", None, "").1;
    assert!(
        metrics.contains("kiln_builds_total{status=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kiln_queue_length 0"), "{metrics}");
}

#[test]
fn push_goes_to_a_real_registry_and_credentials_stay_secret() {
    registry_support::require_tools();
    let reg = registry_support::Registry::start(registry_support::Options {
        htpasswd: true,
        ..Default::default()
    });
    let d = Daemon::start(&[]);
    d.context(
        "app",
        &[("Dockerfile", "FROM busybox:latest\nRUN echo pushed > /p\n")],
    );
    let (status, v) = d.post_json("/v1/builds", r#"{"context":"app","push_image":true}"#);
    assert_eq!(status, 400, "push without a tag is refused: {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("tag"),
        "{v}"
    );

    // Wrong password: the build fails with push_failed naming the registry, never the password.
    let tag = format!("{}/team/app:1", reg.addr);
    let (_, events) = build_ok(
        &d,
        json!({"context": "app", "tags": [tag], "push": true, "insecure_registry": true,
               "registry_credentials": [[reg.addr, registry_support::USER, "pw-wrong-never-shown"]]}),
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["kind"], "push_failed", "{last}");
    assert!(
        last["message"].as_str().unwrap().contains(&reg.addr),
        "{last}"
    );
    assert!(!serde_json::to_string(&events)
        .unwrap()
        .contains("pw-wrong-never-shown"));

    let (id, events) = build_ok(
        &d,
        json!({"context": "app", "name": format!("{}/team/app", reg.addr), "tag": "1",
               "push_image": true, "insecure_registry": true,
               "registry_credentials": [[reg.addr, registry_support::USER, registry_support::PASSWORD]]}),
    );
    let last = events.last().unwrap();
    assert_eq!(last["type"], "succeeded", "{events:?}");
    assert!(events
        .iter()
        .any(|e| e["type"] == "exported" && e["kind"] == "registry"));
    let (ok, out, err) = registry_support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{}:{}", registry_support::USER, registry_support::PASSWORD),
        &format!("docker://{tag}"),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], last["manifest"], "{v}");
    let (_, rec) = d.get(&format!("/v1/builds/{id}"));
    assert!(
        !rec.to_string().contains(registry_support::PASSWORD),
        "{rec}"
    );
    let metrics = d.raw("GET", "/metrics", None, "").1;
    let pushed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kiln_bytes_pushed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        pushed > 1_000_000,
        "busybox's layer was uploaded: {metrics}"
    );
}

#[test]
fn eight_concurrent_builds_all_correct() {
    let d = Daemon::start(&["--max-concurrent-builds", "4"]);
    let mut ids = Vec::new();
    for i in 0..8 {
        let body = format!("build number {i}\n");
        d.context(
            &format!("c{i}"),
            &[("Dockerfile", DOCKERFILE), ("hello.txt", &body)],
        );
        let (status, v) = d.post_json(
            "/v1/builds",
            &json!({"context": format!("c{i}"), "tags": [format!("conc:{i}")]}).to_string(),
        );
        assert_eq!(status, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let mut digests = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let events = d.events(id);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "succeeded", "build {i}: {last}");
        let want = format!("build number {i}");
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "log" && e["line"] == want.as_str()),
            "build {i} did not log its own context"
        );
        let (_, img) = d.get(&format!("/v1/images/conc:{i}"));
        assert_eq!(img["digest"], last["manifest"]);
        digests.insert(last["manifest"].as_str().unwrap().to_string());
    }
    assert_eq!(digests.len(), 8, "each context gives its own image");
}

fn wait_for_run(d: &Daemon, id: &str, marker: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if !pids_of(marker).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the RUN step of {id} never started: {}", d.log_text(id));
}

#[test]
fn cancel_mid_run_leaves_no_process() {
    let d = Daemon::start(&[]);
    d.context(
        "slow",
        &[("Dockerfile", "FROM busybox:latest\nRUN sleep 1017\n")],
    );
    let (_, v) = d.post_json("/v1/builds", r#"{"context":"slow"}"#);
    let id = v["id"].as_str().unwrap().to_string();
    wait_for_run(&d, &id, "sleep 1017");
    let (status, v) = d.post_json(&format!("/v1/builds/{id}/cancel"), "");
    assert_eq!(status, 202, "{v}");
    let events = d.events(&id);
    assert_eq!(events.last().unwrap()["type"], "cancelled", "{events:?}");
    let (_, rec) = d.get(&format!("/v1/builds/{id}"));
    assert_eq!(rec["status"], "cancelled");
    let t = Instant::now();
    while !pids_of("sleep 1017").is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        pids_of("sleep 1017").is_empty(),
        "the RUN process survived the cancel"
    );
    let (status, v) = d.post_json(&format!("/v1/builds/{id}/cancel"), "");
    assert_eq!(status, 409, "{v}");
}

#[test]
fn restart_mid_build_marks_the_record_failed() {
    let mut d = Daemon::start(&[]);
    d.context(
        "slow",
        &[("Dockerfile", "FROM busybox:latest\nRUN sleep 1023\n")],
    );
    let (_, v) = d.post_json("/v1/builds", r#"{"context":"slow"}"#);
    let id = v["id"].as_str().unwrap().to_string();
    wait_for_run(&d, &id, "sleep 1023");
    d.kill9();
    for pid in pids_of("sleep 1023") {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    d.restart();
    let (_, rec) = d.get(&format!("/v1/builds/{id}"));
    assert_eq!(rec["status"], "failed", "{rec}");
    assert!(
        rec["error"].as_str().unwrap().contains("interrupted"),
        "{rec}"
    );
    let events = d.events(&id);
    assert_eq!(events.last().unwrap()["kind"], "interrupted", "{events:?}");
}

#[test]
fn a_uid_not_allowed_is_refused() {
    ensure_kilntest();
    let d = Daemon::start(&["--socket-mode", "0666"]);
    let out = Command::new("runuser")
        .args([
            "-u",
            "kilntest",
            "--",
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
        ])
        .arg(d.socket())
        .arg("http://kiln/v1/builds")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("403"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\"forbidden\"") && text.contains("is not allowed"),
        "{text}"
    );
}

#[test]
fn contexts_escaping_the_root_are_refused() {
    let d = Daemon::start(&[]);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("Dockerfile"), "FROM busybox:latest\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), d.build_root().join("link")).unwrap();
    d.context("app", &[("Dockerfile", "FROM busybox:latest\n")]);
    let rel = format!(
        "../{}",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    for ctx in [
        rel.as_str(),
        "link",
        "app/../../",
        outside.path().to_str().unwrap(),
    ] {
        let (status, v) = d.post_json("/v1/builds", &json!({"context": ctx}).to_string());
        assert_eq!(status, 403, "{ctx}: {v}");
        assert_eq!(v["error"]["kind"], "context_outside_roots", "{ctx}: {v}");
    }
    let (status, v) = d.post_json(
        "/v1/builds",
        r#"{"context":"app","dockerfile":"../../../etc/passwd"}"#,
    );
    assert_eq!(status, 403, "{v}");
    let (status, v) = d.post_json(
        "/v1/builds",
        r#"{"context":"app","outputs":["type=oci,dest=/etc/x"]}"#,
    );
    assert_eq!(status, 403, "{v}");
}

#[test]
fn bad_input_gets_4xx_naming_the_problem() {
    let d = Daemon::start(&[]);
    let cases: &[(&str, u16, &str, &str)] = &[
        ("{\"context\": ", 400, "invalid_json", "EOF"),
        ("{\"contxt\": \"app\"}", 400, "invalid_request", "contxt"),
        ("{\"tags\": \"a\"}", 400, "invalid_request", "invalid type"),
        (
            "{\"no_cache\": \"yes\"}",
            400,
            "invalid_request",
            "expected a boolean",
        ),
        (
            "{\"resources\": {\"cpu\": 2}}",
            400,
            "invalid_request",
            "cpu",
        ),
        (
            "{\"context\": \"app\", \"tags\": [\"UPPER:x\"]}",
            400,
            "invalid_request",
            "UPPER",
        ),
        ("[]", 400, "invalid_request", "expected a JSON object"),
        ("", 400, "invalid_json", "EOF"),
    ];
    d.context("app", &[("Dockerfile", "FROM busybox:latest\n")]);
    for (body, status, kind, needle) in cases {
        let (s, v) = d.post_json("/v1/builds", body);
        assert_eq!(s, *status, "{body}: {v}");
        assert_eq!(v["error"]["kind"], *kind, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{body}: {msg:?} should mention {needle:?}"
        );
    }
    let huge = format!("{{\"context\": \"{}\"}}", "a".repeat(3 << 20));
    let (s, v) = d.post_json("/v1/builds", &huge);
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"]["kind"], "body_too_large");
    let (s, v) = d.raw_json("POST", "/v1/builds", Some("text/plain"), "hi");
    assert_eq!(
        (s, v["error"]["kind"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (s, v) = d.get("/v1/builds/nope");
    assert_eq!((s, v["error"]["kind"].as_str()), (404, Some("not_found")));
    let (s, v) = d.get("/v1/builds?status=weird");
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.raw_json(
        "PUT",
        "/v1/config",
        Some("application/json"),
        r#"{"config_content":"[registry.\"a\"]\nhttp = true\nbogus = [\n"}"#,
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("line"),
        "{v}"
    );
}

#[test]
fn config_updates_at_run_time_and_persists() {
    let mut d = Daemon::start(&[]);
    let (s, v) = d.raw_json(
        "PUT",
        "/v1/config",
        Some("application/json"),
        r#"{"insecure_registries":"a.example.com,b.example.com"}"#,
    );
    assert_eq!(s, 200, "{v}");
    let toml = "[registry.\"r.example.com\"]\nhttp = true\npassword = \"hunter2\"\n";
    let (s, v) = d.raw_json(
        "PUT",
        "/v1/config",
        Some("application/json"),
        &json!({"config_content": toml, "insecure_registries": ["a.example.com"]}).to_string(),
    );
    assert_eq!(s, 200, "{v}");
    // Issue 12: an unknown key is accepted and warned about, naming its line
    // (tests/daemon/daemon_sidecar.rs hands over a whole buildkitd.toml).
    let (s, v) = d.raw_json(
        "PUT",
        "/v1/config",
        Some("application/json"),
        &json!({ "config_content": format!("nope = 1\n{toml}") }).to_string(),
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        v["warnings"].to_string().contains(":1: unknown key nope"),
        "an unknown key is warned about, naming its line: {v}"
    );
    d.restart();
    let (_, v) = d.get("/v1/config");
    assert_eq!(v["insecure_registries"], json!(["a.example.com"]), "{v}");
    assert!(
        v["config"].as_str().unwrap().contains("r.example.com"),
        "{v}"
    );
    assert!(!v.to_string().contains("hunter2"), "{v}");
}

#[test]
fn openapi_describes_every_route_the_router_serves() {
    let d = Daemon::start(&[]);
    d.context("app", &[("Dockerfile", DOCKERFILE), ("hello.txt", "x\n")]);
    let (id, _) = build_ok(&d, json!({"context": "app", "tags": ["doc:1"]}));
    let (_, doc) = d.get("/v1/openapi.json");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 13, "{doc}");
    for (path, ops) in paths {
        for (method, _) in ops.as_object().unwrap() {
            let url = path.replace("{id}", &id).replace("{name}", "doc:1");
            let (status, body) =
                d.raw(&method.to_uppercase(), &url, Some("application/json"), "{}");
            assert!(
                status != 405 && !body.contains("no route for"),
                "{method} {path} is documented but not served: {status} {body}"
            );
            assert!(status < 500, "{method} {path}: {status} {body}");
        }
    }
    let (status, body) = d.raw("GET", "/v1/undocumented", None, "");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn cli_builds_through_the_daemon_and_lists_records() {
    let d = Daemon::start(&[]);
    let ctx = d.context(
        "cli",
        &[("Dockerfile", DOCKERFILE), ("hello.txt", "via the cli\n")],
    );
    let host = format!("unix://{}", d.socket().display());
    let out = Command::new(kiln_bin())
        .args([
            "--host",
            &host,
            "build",
            "--progress",
            "plain",
            "-t",
            "clibuilt:1",
        ])
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("  via the cli"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .starts_with("sha256:"));
    let ls = Command::new(kiln_bin())
        .args(["--host", &host, "builds", "ls"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        text.contains("succeeded") && text.contains("clibuilt:1"),
        "{text}"
    );
    // A context the daemon cannot see is sent as a tar.
    let elsewhere = context(&[("Dockerfile", DOCKERFILE), ("hello.txt", "sent as tar\n")]);
    let out = Command::new(kiln_bin())
        .args([
            "--host",
            &host,
            "build",
            "--progress",
            "plain",
            "-t",
            "tarred:1",
        ])
        .arg(elsewhere.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("sent as tar"),
        "{stderr}"
    );
}

/// Run a Python snippet that finds the daemon through KILN_HOST, as the worker does; insists it
/// succeeded and returns what it printed.
fn run_python(d: &Daemon, script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("KILN_HOST", format!("unix://{}", d.socket().display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn python_client_builds_through_a_live_daemon() {
    require_tool("python3");
    let d = Daemon::start(&[]);
    d.context(
        "py",
        &[("Dockerfile", DOCKERFILE), ("hello.txt", "from python\n")],
    );
    let script = format!(
        "import sys\nsys.path.insert(0, {client:?})\nimport kiln_client\n\
         ok = kiln_client.build_image('pyimg', '2.0', push_image=False, \
         registry_credentials=[('r.example.com', 'u', 'py-secret-pw')], context='py')\n\
         assert ok, 'build failed'\n\
         cfg = kiln_client.update_build_config(insecure_registries='a.example.com')\n\
         assert 'a.example.com' in cfg['insecure_registries'], cfg\n\
         bad = kiln_client.build_image('pyimg', '3.0', push_image=False, context='../etc')\n\
         assert not bad\n",
        client = manifest_dir().join("clients/python").display().to_string()
    );
    let stdout = run_python(&d, &script);
    assert!(
        stdout.contains("from python"),
        "the log is streamed to stdout: {stdout}"
    );
    assert!(!stdout.contains("py-secret-pw"));
    let (_, img) = d.get("/v1/images/pyimg:2.0");
    assert!(
        img["digest"].as_str().unwrap().starts_with("sha256:"),
        "{img}"
    );

    // The worker's usual call: build, tag and push with credentials to an insecure registry.
    let reg = registry_support::Registry::start(registry_support::Options {
        htpasswd: true,
        ..Default::default()
    });
    let script = format!(
        "import sys\nsys.path.insert(0, {client:?})\nimport kiln_client\n\
         ok = kiln_client.build_image('{addr}/team/pyimg', '4.0', push_image=True, \
         registry_credentials=[('{addr}', '{user}', '{pw}')], insecure_registry=True, context='py')\n\
         assert ok, 'build+push failed'\n",
        client = manifest_dir().join("clients/python").display().to_string(),
        addr = reg.addr,
        user = registry_support::USER,
        pw = registry_support::PASSWORD,
    );
    let stdout = run_python(&d, &script);
    assert!(!stdout.contains(registry_support::PASSWORD));
    let (ok, _, err) = registry_support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{}:{}", registry_support::USER, registry_support::PASSWORD),
        &format!("docker://{}/team/pyimg:4.0", reg.addr),
    ]);
    assert!(ok, "the pushed image is in the registry: {err}");
}

#[test]
fn sigterm_cancels_running_builds_and_exits() {
    let mut d = Daemon::start(&[]);
    d.context(
        "slow",
        &[("Dockerfile", "FROM busybox:latest\nRUN sleep 1031\n")],
    );
    let (_, v) = d.post_json("/v1/builds", r#"{"context":"slow"}"#);
    let id = v["id"].as_str().unwrap().to_string();
    wait_for_run(&d, &id, "sleep 1031");
    let t = Instant::now();
    d.stop(); // SIGTERM, then wait for the daemon to exit
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "graceful shutdown took {:?}",
        t.elapsed()
    );
    assert!(
        pids_of("sleep 1031").is_empty(),
        "the RUN process outlived the daemon"
    );
    d.restart();
    let (_, rec) = d.get(&format!("/v1/builds/{id}"));
    assert_eq!(
        rec["status"], "cancelled",
        "a graceful stop cancels, it does not crash: {rec}"
    );
}

#[test]
fn no_pull_keeps_the_daemon_off_the_network() {
    let d = Daemon::start(&[]);
    d.context(
        "remote-base",
        &[("Dockerfile", "FROM 127.0.0.1:1/team/missing:1\nRUN true\n")],
    );
    let (id, events) = build_ok(&d, json!({"context": "remote-base", "no_pull": true}));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{last}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("not found in the local store"),
        "{last}"
    );
    let (_, rec) = d.get(&format!("/v1/builds/{id}"));
    assert_eq!(rec["status"], "failed");
}
