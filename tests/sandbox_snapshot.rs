//! Snapshot bookkeeping and the native diff, without any sandbox.

use kiln::snapshot::{self, Change, SnapshotError, SnapshotterKind};
use std::path::Path;

#[test]
fn native_prepare_commit_diff_remove() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshot::open(dir.path(), SnapshotterKind::Native, false).unwrap();
    s.prepare("a", None).unwrap();
    let w = s.writable_dir("a").unwrap();
    std::fs::create_dir_all(w.join("etc/sub")).unwrap();
    std::fs::write(w.join("etc/keep"), "k").unwrap();
    std::fs::write(w.join("etc/sub/gone"), "g").unwrap();
    std::os::unix::fs::symlink("keep", w.join("etc/link")).unwrap();
    std::fs::hard_link(w.join("etc/keep"), w.join("etc/hard")).unwrap();
    s.commit("base", "a").unwrap();
    assert!(matches!(
        s.writable_dir("base"),
        Err(SnapshotError::WrongKind { .. })
    ));
    s.prepare("b", Some("base")).unwrap();
    let w = s.writable_dir("b").unwrap();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(w.join("etc/keep")).unwrap();
    assert_eq!(m.nlink(), 2, "hard links survive the copy");
    assert!(
        s.changes("b").unwrap().is_empty(),
        "an untouched copy has no changes"
    );
    std::fs::remove_dir_all(w.join("etc/sub")).unwrap();
    std::fs::write(w.join("etc/new"), "n").unwrap();
    let ch = s.changes("b").unwrap();
    let paths: Vec<_> = ch
        .iter()
        .map(|c| {
            (
                c.path().to_str().unwrap().to_string(),
                matches!(c, Change::Deleted { .. }),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("etc".into(), false),
            ("etc/new".into(), false),
            ("etc/sub".into(), true)
        ]
    );
    assert!(matches!(
        s.remove("base"),
        Err(SnapshotError::HasChildren { .. })
    ));
    s.remove("b").unwrap();
    s.remove("base").unwrap();
    assert!(s.list().unwrap().is_empty());
    assert!(matches!(
        s.changes("b"),
        Err(SnapshotError::NotFound { .. })
    ));
}

#[test]
fn overlay_whiteouts_written_by_a_caller_are_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshot::open(dir.path(), SnapshotterKind::Overlayfs, false).unwrap();
    s.prepare("a", None).unwrap();
    let w = s.writable_dir("a").unwrap();
    std::fs::create_dir_all(w.join("d")).unwrap();
    std::fs::write(w.join("f"), "x").unwrap();
    s.commit("base", "a").unwrap();
    s.prepare("b", Some("base")).unwrap();
    let w = s.writable_dir("b").unwrap();
    snapshot::write_whiteout(&w, Path::new("f")).unwrap();
    std::fs::create_dir(w.join("d")).unwrap();
    snapshot::mark_opaque(&w, Path::new("d"), false).unwrap();
    let ch = s.changes("b").unwrap();
    assert_eq!(ch.len(), 3, "{ch:?}");
    assert!(matches!(&ch[0], Change::Modified { path, .. } if path == Path::new("d")));
    assert_eq!(ch[1], Change::Opaque { dir: "d".into() });
    assert_eq!(ch[2], Change::Deleted { path: "f".into() });
    assert_eq!(s.usage("b").unwrap().inodes, 3);
}
