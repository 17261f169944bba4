//! The `docker buildx build` flags as `POST /v1/builds` fields (issue 21): a named local context,
//! `--ssh` key files, `--add-host`, `--shm-size` and `--ulimit` in one build on a live daemon; the
//! key material nowhere in the daemon's state (store, records, logs); paths outside the context
//! roots refused like the main context's.

use std::process::Command;

use crate::support::*;
use serde_json::json;

#[test]
fn buildx_flag_fields_build_on_the_daemon_and_keys_stay_out_of_its_state() {
    for t in ["ssh-keygen", "ssh-agent", "ssh-add", "ldd"] {
        require_tool(t);
    }
    let d = Daemon::start(&[]);
    let app = d.context(
        "app",
        &[(
            "Dockerfile",
            "FROM busybox\nCOPY sshroot/ /\nCOPY --from=notes /note /note\n\
             RUN --mount=type=ssh ssh-add -l; grep db /etc/hosts; \
                 df -k /dev/shm | tail -1 | awk '{print \"shm \" $2}'; echo \"nofile $(ulimit -n)\"\n",
        )],
    );
    host_binary_tree("/usr/bin/ssh-add", &app.join("sshroot"));
    d.context("notes", &[("note", "named context\n")]);
    let key = d.build_root().join("keys").join("id");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let gen = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "daemon-test-key",
            "-f",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(gen.status.success());
    let secret_line = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .nth(2)
        .unwrap()
        .to_string();

    let body = json!({"context": "app", "name": "flags", "tag": "1",
        "build_contexts": {"notes": "notes"},
        "ssh": [format!("default={}", key.display())],
        "add_hosts": ["db:10.0.0.5"], "shm_size": "32m", "ulimits": ["nofile=256:512"]});
    let (status, v) = d.post_json("/v1/builds", &body.to_string());
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let events = d.events(&id);
    assert_eq!(events.last().unwrap()["type"], "succeeded", "{events:?}");
    let log = d.log_text(&id);
    for want in [
        "daemon-test-key (ED25519)",
        "10.0.0.5\tdb",
        "shm 32768",
        "nofile 256",
    ] {
        assert!(log.contains(want), "no {want:?} in the log:\n{log}");
    }
    let (_, rec) = d.get(&format!("/v1/builds/{id}"));
    assert_eq!(rec["spec"]["add_hosts"][0], "db:10.0.0.5", "{rec}");
    let leaks = files_containing(&d.root(), secret_line.as_bytes());
    assert!(leaks.is_empty(), "key material in {leaks:?}");

    // Paths the daemon reads for the caller are under the roots, like the context.
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().display().to_string();
    for body in [
        json!({"context": "app", "build_contexts": {"notes": outside}}),
        json!({"context": "app", "ssh": [format!("default={outside}")]}),
    ] {
        let (status, v) = d.post_json("/v1/builds", &body.to_string());
        assert!(status == 403 || status == 400, "{status} {v}");
        assert!(v.to_string().contains("outside"), "{v}");
    }
    let (status, v) = d.post_json(
        "/v1/builds",
        &json!({"context": "app", "ulimits": ["nofile=9:1"]}).to_string(),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("ulimits"), "{v}");
}
