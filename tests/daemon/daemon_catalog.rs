//! The image catalog and group policy (issue 14) against a live `kiln daemon`, driven with curl:
//! entries created by builds (`building` → `ready` / `failed`) and by hand, keyword search,
//! edits, removal, bad input; then a `[policy]` in kiln.toml, with requests made as the real
//! non-root user kilntest (SO_PEERCRED): pulls, pushes and catalog management refused with a 403
//! naming the rule, listings limited to global entries and the caller's groups.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};

fn wait(d: &Daemon, id: &str) -> Value {
    let t = Instant::now();
    loop {
        let (_, v) = d.get(&format!("/v1/builds/{id}"));
        if ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn catalog_entries_follow_their_builds_and_survive_a_restart() {
    let mut d = Daemon::start(&[]);
    d.context(
        "app",
        &[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")],
    );
    let (s, v) = d.post_json(
        "/v1/builds",
        &json!({"context": "app", "tags": ["registry.example.com/team/app:1"],
                "catalog": {"display_name": "team-app", "description": "says hi", "groups": ["team-a"]}})
        .to_string(),
    );
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap();
    let (_, e) = d.get("/v1/catalog/team-app");
    assert_eq!(e["build_id"], id);
    assert_eq!(wait(&d, id)["status"], "succeeded");
    let (_, e) = d.get("/v1/catalog/team-app");
    assert_eq!(e["status"], "ready", "{e}");
    assert_eq!(e["url"], "registry.example.com/team/app:1");
    assert_eq!(
        (e["global"].clone(), e["groups"].clone()),
        (json!(false), json!(["team-a"]))
    );

    // A failing build leaves its entry failed, with the reason.
    d.context("bad", &[("Dockerfile", "FROM busybox\nRUN exit 3\n")]);
    let (_, v) = d.post_json(
        "/v1/builds",
        &json!({"context": "bad", "tags": ["registry.example.com/team/bad:1"],
                "catalog": {"display_name": "bad.app"}})
        .to_string(),
    );
    assert_eq!(wait(&d, v["id"].as_str().unwrap())["status"], "failed");
    let (_, e) = d.get("/v1/catalog/bad.app");
    assert_eq!(e["status"], "failed", "{e}");
    assert!(e["error"].as_str().unwrap().contains("exit"), "{e}");

    // By hand: create, conflict, search, edit, remove; bad input is a 400 naming the field.
    let add = |body: Value| {
        d.raw_json(
            "POST",
            "/v1/catalog",
            Some("application/json"),
            &body.to_string(),
        )
    };
    let (s, e) = add(
        json!({"display_name": "py-tools", "url": "registry.example.com/t/py:2",
                            "type": "universal", "description": "Python tools"}),
    );
    assert_eq!(s, 201, "{e}");
    assert_eq!(
        (e["status"].clone(), e["global"].clone()),
        (json!("ready"), json!(true))
    );
    assert_eq!(
        add(json!({"display_name": "py-tools", "url": "r.io/x:1"})).0,
        409
    );
    let (s, e) = add(json!({"display_name": "Py_Tools", "url": "r.io/x:1"}));
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lowercase"),
        "{e}"
    );
    assert_eq!(
        add(json!({"display_name": "x", "url": "r.io/x:1", "colour": 1})).0,
        400
    );
    let (s, v) = d.post_json(
        "/v1/builds",
        &json!({"context": "app", "tags": ["r.io/a:1"], "catalog": {"display_name": "UP"}})
            .to_string(),
    );
    assert_eq!(s, 400, "{v}");
    let (_, l) = d.get("/v1/catalog?q=python");
    assert_eq!(names(&l), ["py-tools"]);
    let (_, l) = d.get("/v1/catalog?q=registry.example.com%2Fteam");
    assert_eq!(names(&l), ["team-app"]);
    let (s, e) = d.raw_json(
        "PUT",
        "/v1/catalog/py-tools",
        Some("application/json"),
        &json!({"gpu_url": "registry.example.com/t/py:2-gpu", "groups": ["ml"]}).to_string(),
    );
    assert_eq!(s, 200, "{e}");
    assert_eq!(
        (e["global"].clone(), e["gpu_url"].clone()),
        (json!(false), json!("registry.example.com/t/py:2-gpu"))
    );
    assert_eq!(d.raw("DELETE", "/v1/catalog/bad.app", None, "").0, 200);
    assert_eq!(d.get("/v1/catalog/bad.app").0, 404);

    // Rebuild with changes goes through the same entry.
    let (_, v) = d.post_json(&format!("/v1/builds/{id}/rebuild"), r#"{"no_cache": true}"#);
    let rid = v["id"].as_str().unwrap().to_string();
    assert_eq!(d.get("/v1/catalog/team-app").1["build_id"], rid.as_str());
    wait(&d, &rid);
    d.restart();
    let (_, l) = d.get("/v1/catalog");
    assert_eq!(names(&l), ["py-tools", "team-app"]);
    assert_eq!(d.get("/v1/catalog/team-app").1["status"], "ready");
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// One request as kilntest (so the daemon sees kilntest's uid through SO_PEERCRED).
fn as_kilntest(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let ctype = body.map(|_| "application/json");
    let (code, b) = socket_request(&d.socket(), Some("kilntest"), method, path, ctype, &text);
    (code, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

fn forbidden(r: (u16, Value), needle: &str) {
    assert_eq!(r.0, 403, "{}", r.1);
    let m = r.1["error"]["message"].as_str().unwrap().to_string();
    assert!(m.contains(needle), "{m:?} does not name {needle:?}");
}

#[test]
fn group_policy_limits_pulls_pushes_catalog_and_listings() {
    ensure_kilntest();
    let uid = uid_of("kilntest");
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("kiln.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[policy.groups.team-a]
  uids = [{uid}]
  pull = ["docker.io/library/*"]
  push = ["127.0.0.1:5000/team-a/*"]
  manage_catalog = true
[policy.groups.team-b]
  gids = [4242]
  pull = ["*"]
"#
        ),
    )
    .unwrap();
    let d = Daemon::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--allowed-uid",
        &uid.to_string(),
        "--socket-mode",
        "0666",
    ]);
    d.context(
        "app",
        &[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")],
    );
    let build = |extra: Value| {
        let mut b = json!({"context": "app"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        as_kilntest(&d, "POST", "/v1/builds", Some(&b))
    };
    forbidden(
        build(json!({"dockerfile_text": "FROM registry.example.com/x/base:1\n"})),
        "may not pull registry.example.com/x/base: no rule allows it ([policy.groups.team-a] pull",
    );
    forbidden(
        build(json!({"packages": {"base": "quay.io/x/y:1", "apt": ["jq"]}, "tags": ["t:1"]})),
        "may not pull quay.io/x/y",
    );
    forbidden(
        build(json!({"tags": ["127.0.0.1:5000/team-b/app:1"], "push": true})),
        "may not push 127.0.0.1:5000/team-b/app",
    );
    forbidden(
        build(
            json!({"tags": ["127.0.0.1:5000/team-a/app:1"], "catalog": {"display_name": "a-glob"}}),
        ),
        "may not make a catalog entry global",
    );
    // Allowed: busybox from docker.io/library, an entry for its own group.
    let (s, v) = build(json!({"tags": ["127.0.0.1:5000/team-a/app:1"],
                              "catalog": {"display_name": "a-app", "groups": ["team-a"]}}));
    assert_eq!(s, 202, "{v}");
    assert_eq!(wait(&d, v["id"].as_str().unwrap())["status"], "succeeded");

    // Root (exempt) lists a global entry and one for team-b only.
    for (n, extra) in [
        ("everyone", json!({"global": true})),
        ("b-only", json!({"groups": ["team-b"]})),
    ] {
        let mut b = json!({"display_name": n, "url": "registry.example.com/x/y:1"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        assert_eq!(
            d.raw(
                "POST",
                "/v1/catalog",
                Some("application/json"),
                &b.to_string()
            )
            .0,
            201
        );
    }
    let (_, mine) = as_kilntest(&d, "GET", "/v1/catalog", None);
    assert_eq!(names(&mine), ["a-app", "everyone"]);
    assert_eq!(
        names(&d.get("/v1/catalog").1),
        ["a-app", "b-only", "everyone"]
    );
    assert_eq!(as_kilntest(&d, "GET", "/v1/catalog/b-only", None).0, 404);
    forbidden(
        as_kilntest(&d, "DELETE", "/v1/catalog/everyone", None),
        "global",
    );
    forbidden(
        as_kilntest(
            &d,
            "POST",
            "/v1/catalog",
            Some(&json!({"display_name": "x", "url": "r.io/x:1", "groups": ["team-b"]})),
        ),
        "group \"team-b\": it is not a member",
    );
    assert_eq!(
        as_kilntest(
            &d,
            "PUT",
            "/v1/catalog/a-app",
            Some(&json!({"description": "ours"}))
        )
        .0,
        200
    );
    forbidden(
        as_kilntest(
            &d,
            "PUT",
            "/v1/config",
            Some(&json!({"insecure_registries": "a.io"})),
        ),
        "only root and the daemon's user",
    );
}
