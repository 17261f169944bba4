//! The sandbox tests/misc/fuzz_inputs.rs applies layers in: `sandbox/target` (with pre-placed traps:
//! symlinks to the sentinel, relative and absolute) beside `sandbox/sentinel` and a sibling file,
//! and the check that nothing outside `target` changed by a byte after a layer was applied.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

/// `sandbox/{target,sentinel,sibling}`: layers go into `target`, which holds traps pointing out.
pub struct Sandbox {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub target: PathBuf,
    pub sentinel: PathBuf,
}

pub fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let target = root.join("target");
    let sentinel = root.join("sentinel");
    for d in ["target/d", "sentinel/a", "sentinel/b", "sentinel/d"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(sentinel.join("file"), "secret").unwrap();
    fs::write(sentinel.join("a/file"), "secret a").unwrap();
    fs::write(root.join("sibling"), "outside").unwrap();
    fs::write(target.join("f"), "lower").unwrap();
    fs::write(target.join("d/f"), "lower").unwrap();
    // The traps: a relative and an absolute symlink to the sentinel, one to a file in it.
    symlink("../sentinel", target.join("trap")).unwrap();
    symlink(&sentinel, target.join("abs")).unwrap();
    symlink("../sentinel/file", target.join("trapf")).unwrap();
    Sandbox {
        _tmp: tmp,
        root,
        target,
        sentinel,
    }
}

/// As a non-root user, give the owner rwx on every directory a layer made in `dir` (mode 000 is
/// a valid layer directory), so the target can be walked and removed; root needs nothing.
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if rustix::process::geteuid().is_root() {
        return;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        match fs::symlink_metadata(&d) {
            Ok(md) if md.is_dir() => {
                let _ = fs::set_permissions(&d, fs::Permissions::from_mode(md.mode() | 0o700));
            }
            _ => continue,
        }
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            stack.push(e.path());
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        open_up(&self.target);
    }
}

/// Everything observable about one path, without following symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    nlink: u64,
    ino: u64,
    content: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn meta(p: &Path) -> Meta {
    let md = fs::symlink_metadata(p).unwrap();
    let content = if md.file_type().is_symlink() {
        fs::read_link(p)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else if md.is_file() {
        fs::read(p).unwrap()
    } else {
        Vec::new()
    };
    let mut xattrs: Vec<_> = xattr::list(p)
        .map(|l| {
            l.map(|k| {
                let v = xattr::get(p, &k).ok().flatten().unwrap_or_default();
                (k.to_string_lossy().into_owned(), v)
            })
            .collect()
        })
        .unwrap_or_default();
    xattrs.sort();
    Meta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec()),
        nlink: md.nlink(),
        ino: md.ino(),
        content,
        xattrs,
    }
}

/// The sandbox outside the target (the sandbox root itself included), and the target's own mode
/// and owner, which a layer never changes.
pub fn outside(s: &Sandbox) -> (BTreeMap<PathBuf, Meta>, (u32, u32, u32)) {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(&s.root)
        .into_iter()
        .filter_entry(|e| e.path() != s.target)
    {
        let e = e.unwrap();
        m.insert(e.path().to_path_buf(), meta(e.path()));
    }
    let t = fs::symlink_metadata(&s.target).expect("the target itself was removed");
    assert!(t.is_dir(), "the target is no longer a directory");
    (m, (t.mode(), t.uid(), t.gid()))
}

pub fn assert_contained(s: &Sandbox, before: &(BTreeMap<PathBuf, Meta>, (u32, u32, u32))) {
    let after = outside(s);
    for (p, m) in &before.0 {
        let now = after.0.get(p);
        assert_eq!(now, Some(m), "{} changed outside the target", p.display());
    }
    for p in after.0.keys() {
        assert!(
            before.0.contains_key(p),
            "{} was created outside the target",
            p.display()
        );
    }
    assert_eq!(after.1, before.1, "the target's own mode or owner changed");
    let outside_inodes: HashSet<(u64, u64)> = walkdir::WalkDir::new(&s.root)
        .into_iter()
        .filter_entry(|e| e.path() != s.target)
        .map(|e| {
            let md = e.unwrap().metadata().unwrap();
            (md.dev(), md.ino())
        })
        .collect();
    open_up(&s.target);
    for e in walkdir::WalkDir::new(&s.target).min_depth(1) {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        assert!(
            !outside_inodes.contains(&(md.dev(), md.ino())),
            "{} is a hard link to an inode outside the target",
            e.path().display()
        );
    }
}
