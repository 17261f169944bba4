//! Disk full, on a real size-limited filesystem (a 64 MiB tmpfs holding the store; needs root):
//! a build that runs out of space fails with "no space left on device while writing …" naming what
//! it was writing, leaves the store consistent (`kiln fsck` clean, no half-written blob), a daemon
//! keeps serving, and the next build after freeing space succeeds — for `kiln build` and through
//! `kiln daemon`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use serde_json::json;

/// A tmpfs of `size` mounted at `path` until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        let uid = Command::new("id").arg("-u").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "tests/store/store_disk_full.rs needs root: it mounts a size-limited tmpfs to fill"
        );
        std::fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs at {}", path.display());
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Nothing half-written is left in the store's temp area.
fn no_partial_ingest(root: &Path) {
    let left: Vec<_> = walkdir::WalkDir::new(root.join("tmp"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("ingest-"))
        .map(|e| e.path().to_path_buf())
        .collect();
    assert!(left.is_empty(), "half-written blobs left: {left:?}");
}

fn fsck_clean(root: &Path) {
    let out = kiln_ok(root, &["fsck"]);
    assert!(out.contains("no damage found"), "{out}");
}

#[test]
fn embedded_builds_that_fill_the_disk_say_what_they_were_writing_and_the_store_survives() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    let _fs = Tmpfs::mount(&mnt, "64m");
    let root = mnt.join("root");
    kiln_ok(
        &root,
        &[
            "import",
            &format!("{}:latest", busybox_layout().display()),
            "--tag",
            "busybox:latest",
        ],
    );

    // A 70 MB COPY of incompressible bytes: its layer alone does not fit (COPY stages nothing;
    // the layer is written straight from the context, engine/copy/planner.rs).
    let big = tempfile::tempdir().unwrap();
    std::fs::write(
        big.path().join("Dockerfile"),
        "FROM busybox\nCOPY big /big\n",
    )
    .unwrap();
    std::fs::write(big.path().join("big"), noise(70 << 20)).unwrap();
    let err = kiln_err(
        &root,
        &["build", "-t", "big:1", big.path().to_str().unwrap()],
    );
    assert!(
        err.contains("no space left on device while writing"),
        "{err}"
    );
    assert!(
        err.contains("a blob into the store") || err.contains("the build workspace"),
        "the message names what was being written: {err}"
    );
    assert!(err.contains("COPY big /big"), "and the step: {err}");
    no_partial_ingest(&root);
    fsck_clean(&root);

    // A RUN that fills the disk inside the sandbox: the command's own error is recognised.
    let run = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN dd if=/dev/zero of=/fill bs=1M count=100\n",
    )]);
    let err = kiln_err(&root, &["build", run.path().to_str().unwrap()]);
    assert!(
        err.contains("no space left on device while writing the RUN step's files"),
        "{err}"
    );
    fsck_clean(&root);

    // Freed (the trash of the failed builds), the next build succeeds.
    kiln_ok(&root, &["prune"]);
    let small = context(&[("Dockerfile", "FROM busybox\nCOPY s /s\n"), ("s", "small")]);
    kiln_ok(
        &root,
        &["build", "-t", "small:1", small.path().to_str().unwrap()],
    );
    fsck_clean(&root);
    no_partial_ingest(&root);
}

#[test]
fn a_daemon_build_that_fills_the_disk_fails_clearly_and_the_daemon_keeps_serving() {
    let mut d = Daemon::start(&[]);
    // Move the daemon's store (busybox imported) onto a 64 MiB tmpfs.
    d.stop();
    let root = d.root();
    let saved = root.with_extension("saved");
    std::fs::rename(&root, &saved).unwrap();
    let _fs = Tmpfs::mount(&root, "64m");
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", saved.display()))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    d.restart();

    let dir = d.context(
        "big",
        &[("Dockerfile", "FROM busybox:latest\nCOPY big /big\n")],
    );
    std::fs::write(dir.join("big"), noise(70 << 20)).unwrap();
    let (s, v) = d.post_json("/v1/builds", &json!({"context": "big"}).to_string());
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let events = d.events(&id);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{events:?}");
    let msg = last["message"].as_str().unwrap();
    assert!(
        msg.contains("no space left on device while writing"),
        "{msg}"
    );
    let (s, rec) = d.get(&format!("/v1/builds/{id}"));
    assert_eq!(s, 200);
    assert_eq!(rec["status"], "failed");
    assert!(
        rec["error"]
            .as_str()
            .unwrap()
            .contains("no space left on device"),
        "{rec}"
    );
    // Still serving.
    let (s, info) = d.get("/v1/info");
    assert_eq!(s, 200, "{info}");
    no_partial_ingest(&root);

    let (s, v) = d.post_json("/v1/prune", "{}");
    assert_eq!(s, 200, "{v}");
    d.context(
        "small",
        &[
            ("Dockerfile", "FROM busybox:latest\nCOPY s /s\n"),
            ("s", "small"),
        ],
    );
    let (s, v) = d.post_json(
        "/v1/builds",
        &json!({"context": "small", "name": "small", "tag": "1"}).to_string(),
    );
    assert_eq!(s, 202, "{v}");
    let events = d.events(v["id"].as_str().unwrap());
    assert_eq!(events.last().unwrap()["type"], "succeeded", "{events:?}");
    fsck_clean(&root);
    d.stop();
}
