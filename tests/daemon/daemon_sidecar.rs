//! The sidecar path as the seeds' user meets it (issue 12, items 2, 3, 5, 7) — the README's
//! Kubernetes pod walked through: a root `kiln daemon` with `--socket-mode 0666 --allowed-uid` and
//! `--context-root /build`, and a worker running as another uid (the real user `kilntest`) that
//! shares the build folder and calls the Python client with `KILN_HOST`. The worker hands over a
//! real buildkitd.toml after setting an insecure list, builds, pushes with credentials to a real
//! registry on 127.0.0.1, and writes outputs into a folder that does not exist yet; then checks,
//! as itself, that it owns them.

use crate::support::registry as registry_support;

use std::path::Path;
use std::process::Command;

use crate::support::*;

pub(crate) fn kilntest_uid() -> String {
    let out = Command::new("id")
        .args(["-u", "kilntest"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The worker container: kilntest running the system python with only KILN_HOST set.
pub(crate) fn worker_python(d: &Daemon, script: &str) -> String {
    let client = manifest_dir().join("clients/python");
    let out = Command::new("runuser")
        .args(["-u", "kilntest", "--", "env", "-i"])
        .arg(format!("KILN_HOST=unix://{}", d.socket().display()))
        .arg("PATH=/usr/bin:/bin")
        .arg("/usr/bin/python3")
        .arg("-c")
        .arg(format!(
            "import sys, warnings\nwarnings.simplefilter('ignore')\n\
             sys.path.insert(0, {:?})\nimport kiln_client\n{script}",
            client.display().to_string()
        ))
        .current_dir("/tmp")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "worker python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `stat -c %u:%g PATH` as kilntest (what the worker sees).
pub(crate) fn owner_as_worker(p: &Path) -> String {
    let out = Command::new("runuser")
        .args(["-u", "kilntest", "--", "stat", "-c", "%u:%g"])
        .arg(p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stat {}: {}",
        p.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn daemon_log(d: &Daemon) -> String {
    std::fs::read_to_string(d.root().parent().unwrap().join("daemon.log")).unwrap()
}

/// The kiln container's `args` from the README's pod, for a daemon on a test socket and build
/// root (the harness gives `--socket` and `--context-root`), with the worker's uid as kilntest's.
fn readme_pod_daemon_args(uid: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let start = readme
        .find("args: [")
        .expect("the README's pod has kiln's args")
        + 6;
    let end = start + readme[start..].find(']').unwrap() + 1;
    let args: Vec<String> = serde_json::from_str(&readme[start..end]).unwrap();
    assert_eq!(args[0], "daemon");
    let worker_env = "env: [{name: KILN_HOST, value: unix:///run/kiln/kiln.sock}]";
    assert!(
        readme.contains(worker_env),
        "the worker finds kiln by KILN_HOST"
    );
    let mut out = Vec::new();
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--socket" | "--context-root" => {
                it.next();
            }
            "--allowed-uid" => {
                assert_eq!(it.next().as_deref(), Some("1000"));
                out.extend(["--allowed-uid".to_string(), uid.to_string()]);
            }
            _ => out.push(a),
        }
    }
    out
}

#[test]
fn the_readme_pod_worker_configures_builds_pushes_and_owns_its_outputs() {
    ensure_kilntest();
    let uid = kilntest_uid();
    let reg = registry_support::Registry::start(registry_support::Options {
        htpasswd: true,
        ..Default::default()
    });
    let args = readme_pod_daemon_args(&uid);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(args.contains(&"--allowed-uid"), "{args:?}");
    let mut d = Daemon::start(&args);
    // The shared emptyDir: the worker (kilntest) owns it and writes the context.
    d.context(
        "app",
        &[
            (
                "Dockerfile",
                "FROM busybox:latest\nCOPY app.txt /app.txt\nRUN cat /app.txt\n",
            ),
            ("app.txt", "sidecar app\n"),
        ],
    );
    assert!(Command::new("chown")
        .args(["-R", "kilntest:kilntest"])
        .arg(d.build_root())
        .status()
        .unwrap()
        .success());

    // Items 2 and 3: the insecure list, then a real buildkitd.toml; the list is kept.
    let buildkitd =
        std::fs::read_to_string(manifest_dir().join("testdata/config/buildkitd.toml")).unwrap();
    let script = format!(
        "import json\n\
         kiln_client.update_build_config(insecure_registries='{addr},other.example:5000')\n\
         v = kiln_client.update_build_config(config_content={buildkitd:?})\n\
         print(json.dumps(v))\n",
        addr = reg.addr
    );
    let out = worker_python(&d, &script);
    let view: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let warnings: Vec<&str> = view["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    for key in [
        "debug",
        "root",
        "grpc",
        "worker.containerd",
        "worker.oci.enabled",
        "frontend",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(key)),
            "every unused key is warned about at once; no {key}: {warnings:#?}"
        );
    }
    let insecure = view["insecure_registries"].to_string();
    assert!(
        insecure.contains("other.example:5000") && insecure.contains(&reg.addr),
        "config_content keeps the insecure list: {view}"
    );
    assert!(view["config"]
        .as_str()
        .unwrap()
        .contains("yourmirror.local"));

    // Someone else's file in the shared folder: written over if asked, never given away.
    let foreign = d.build_root().join("foreign.tar");
    std::fs::write(&foreign, "root's").unwrap();
    // The worker's call: build, push with credentials, outputs into a folder not made yet.
    let script = format!(
        "ok = kiln_client.build_image('{addr}/team/app', '1.0', push_image=True, \
         registry_credentials=[('{addr}', '{user}', '{pw}')], context='app', \
         outputs=['type=oci,dest=out/nested/app-oci', 'type=docker,dest=out/nested/app.tar', \
         'type=docker,dest=foreign.tar'])\n\
         assert ok, 'build failed'\n",
        addr = reg.addr,
        user = registry_support::USER,
        pw = registry_support::PASSWORD,
    );
    let out = worker_python(&d, &script);
    assert!(out.contains("sidecar app"), "{out}");
    assert!(!out.contains(registry_support::PASSWORD));
    let (ok, _, err) = registry_support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{}:{}", registry_support::USER, registry_support::PASSWORD),
        &format!("docker://{}/team/app:1.0", reg.addr),
    ]);
    assert!(ok, "pushed: {err}");

    // Item 5: the worker owns every output and the folders made for them, and can remove them.
    let out_dir = d.build_root().join("out");
    let want = format!("{uid}:{uid}");
    for p in [
        out_dir.clone(),
        out_dir.join("nested"),
        out_dir.join("nested/app-oci"),
        out_dir.join("nested/app-oci/index.json"),
        out_dir.join("nested/app.tar"),
    ] {
        assert_eq!(owner_as_worker(&p), want, "{}", p.display());
    }
    let blobs = std::fs::read_dir(out_dir.join("nested/app-oci/blobs/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(owner_as_worker(&blobs), want);
    assert_eq!(owner_as_worker(&foreign), "0:0");
    let rm = Command::new("runuser")
        .args(["-u", "kilntest", "--", "rm", "-rf"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        rm.status.success() && !out_dir.exists(),
        "the worker removes its outputs: {}",
        String::from_utf8_lossy(&rm.stderr)
    );

    // Item 7: the daemon's log says what happened, with the peer, and no secret.
    let log = daemon_log(&d);
    for want in [
        "daemon.listening",
        "config.changed",
        "config.warning",
        &format!("peer_uid={uid}"),
        "build.accepted",
        "build.started",
        "build.succeeded",
        "digest=sha256:",
    ] {
        assert!(log.contains(want), "no {want:?} in the daemon log:\n{log}");
    }
    assert!(!log.contains(registry_support::PASSWORD), "{log}");

    // Both layers survive a restart; a new insecure list replaces only that layer.
    d.restart();
    let (_, v) = d.get("/v1/config");
    assert!(
        v["insecure_registries"]
            .to_string()
            .contains("other.example:5000"),
        "{v}"
    );
    assert!(
        v["config"].as_str().unwrap().contains("yourmirror.local"),
        "{v}"
    );
    let (s, v) = d.raw_json(
        "PUT",
        "/v1/config",
        Some("application/json"),
        r#"{"insecure_registries": ""}"#,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["insecure_registries"], serde_json::json!([]), "{v}");
    assert!(
        v["config"].as_str().unwrap().contains("yourmirror.local"),
        "{v}"
    );
    d.stop();
    assert!(daemon_log(&d).contains("daemon.shutting_down"));
}

#[test]
fn config_syntax_errors_and_wrong_types_are_still_refused() {
    let d = Daemon::start(&["--log-format", "json"]);
    for (body, want) in [
        (
            r#"{"config_content": "[registry.\"a\"]\nhttp = \n"}"#,
            "line 2",
        ),
        (
            r#"{"config_content": "[registry.\"a\"]\nhttp = \"yes\"\n"}"#,
            "registry.\"a\".http",
        ),
    ] {
        let (s, v) = d.raw_json("PUT", "/v1/config", Some("application/json"), body);
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{v}"
        );
    }
    // --log-format json: one JSON object per line.
    let log = daemon_log(&d);
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["event"].is_string() && v["time"].is_string(), "{line}");
    }
}

/// Item 9: a registry on 127.0.0.1 needs no insecure setting (as with Docker); a failed push names
/// its reference once and says the image is in the local store.
#[test]
fn loopback_registries_need_no_insecure_setting_and_push_errors_read_well() {
    let reg = registry_support::Registry::plain();
    let d = Daemon::start(&[]);
    d.context(
        "lo",
        &[("Dockerfile", "FROM busybox:latest\nRUN echo loopback\n")],
    );
    let body = serde_json::json!({
        "context": "lo", "name": format!("{}/team/lo", reg.addr), "tag": "1", "push": true
    });
    let (s, v) = d.post_json("/v1/builds", &body.to_string());
    assert_eq!(s, 202, "{v}");
    let events = d.events(v["id"].as_str().unwrap());
    let last = events.last().unwrap();
    assert_eq!(last["type"], "succeeded", "{last}");
    let (ok, _, err) = registry_support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/team/lo:1", reg.addr),
    ]);
    assert!(ok, "{err}");

    // Nothing listens on port 1.
    let reference = "127.0.0.1:1/team/lo:2";
    let body = serde_json::json!({"context": "lo", "tags": [reference], "push": true});
    let (_, v) = d.post_json("/v1/builds", &body.to_string());
    let events = d.events(v["id"].as_str().unwrap());
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{last}");
    let msg = last["message"].as_str().unwrap();
    assert_eq!(
        msg.matches(reference).count(),
        2,
        "the reference once in the error, once where it is stored: {msg}"
    );
    assert!(msg.contains("local store"), "{msg}");
    assert!(!msg.contains("InvalidContentType"), "{msg}");
}

/// Item 8: `kiln builds ls` shows readable times and the tags of `name`+`tag` builds, and is quiet
/// when piped to `head`; `/v1/info` reports cgroups as JSON.
#[test]
fn builds_ls_reads_well_and_info_is_structured() {
    let d = Daemon::start(&[]);
    d.context("ls", &[("Dockerfile", "FROM busybox:latest\nRUN true\n")]);
    let body = serde_json::json!({"context": "ls", "name": "team/lsapp", "tag": "7"});
    let (_, v) = d.post_json("/v1/builds", &body.to_string());
    d.events(v["id"].as_str().unwrap());
    let host = format!("unix://{}", d.socket().display());
    let out = Command::new(kiln_bin())
        .args(["--host", &host, "builds", "ls"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("team/lsapp:7"), "{text}");
    let year = text.lines().nth(1).unwrap_or("").split_whitespace().nth(2);
    assert!(
        year.is_some_and(|y| y.len() == 10 && y.starts_with("20")),
        "a date, not Unix seconds: {text}"
    );
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} --host {host} builds ls | head -n 0",
            kiln_bin().display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        piped.status.success() && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    let (_, info) = d.get("/v1/info");
    assert!(info["cgroups"]["limits"].is_boolean(), "{info}");
}
