//! Upgrades: a store, kiln.db and daemon records written by the previous release
//! (`testdata/upgrade/store-0c3a63f.tar.gz`, made by `testdata/upgrade/make-store.sh` with kiln
//! built from commit 0c3a63f) open with this kiln: its images, blobs and build records are there,
//! fsck is clean, and it builds — the old step-cache records (key schema 1) simply miss. A store
//! whose database comes from a newer kiln is refused with a message naming both versions, and is
//! left byte for byte as it was.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::*;

const FIXTURE: &str = "testdata/upgrade/store-0c3a63f.tar.gz";

fn unpack_fixture(into: &Path) {
    let tar = manifest_dir().join(FIXTURE);
    assert!(
        tar.is_file(),
        "the previous release's store: {}",
        tar.display()
    );
    let st = Command::new("tar")
        .arg("-C")
        .arg(into)
        .arg("-xzf")
        .arg(&tar)
        .status()
        .unwrap();
    assert!(st.success(), "unpacking {}", tar.display());
}

#[test]
fn a_store_from_the_previous_release_opens_keeps_its_images_and_builds() {
    let root = tempfile::tempdir().unwrap();
    unpack_fixture(root.path());
    let images = kiln_ok(root.path(), &["images"]);
    for tag in ["busybox", "old"] {
        assert!(images.contains(tag), "{images}");
    }
    let fsck = kiln_ok(root.path(), &["fsck"]);
    assert!(fsck.contains("no damage found"), "{fsck}");
    // The daemon's records of the old release's builds are served.
    let d = Daemon::start_on(root.path(), &[]);
    let (s, v) = d.get("/v1/builds");
    assert_eq!(s, 200, "{v}");
    let text = v.to_string();
    assert!(text.contains("succeeded"), "the old build record: {text}");
    drop(d);
    // And it builds, FROM the old image, with a RUN (the sandbox, snapshots) and a cache mount.
    let ctx = context(&[(
        "Dockerfile",
        "FROM old:1\nRUN --mount=type=cache,target=/cache cat /g /cache/n > /seen\n",
    )]);
    let (img, err) = build_to_layout(root.path(), ctx.path(), &[]);
    let seen = all_entries(&img)["seen"].content.clone().unwrap();
    // The old release's second build of that Dockerfile was all cache hits: one `x`.
    assert_eq!(
        seen, b"old\nx\n",
        "the old image's file and the old cache mount:\n{err}"
    );
    let fsck = kiln_ok(root.path(), &["fsck", "--snapshots"]);
    assert!(fsck.contains("no damage found"), "{fsck}");
}

#[test]
fn a_store_from_a_newer_kiln_is_refused_and_left_untouched() {
    let root = tempfile::tempdir().unwrap();
    unpack_fixture(root.path());
    let db = root.path().join("kiln.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute("UPDATE schema_version SET version = 999", [])
            .unwrap();
    }
    let snapshot = |p: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(p)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let rel = e.path().strip_prefix(p).unwrap().display().to_string();
                (rel, fs::read(e.path()).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(root.path());
    for args in [&["images"][..], &["fsck"], &["build", "."]] {
        let err = kiln_err(root.path(), args);
        assert!(
            err.contains("schema version 999") && err.contains("newer than this kiln"),
            "kiln {args:?}: {err}"
        );
    }
    assert!(
        before == snapshot(root.path()),
        "a refused store must not be changed"
    );
}
