//! Change sets: from an overlay upper directory (whiteouts and opaque markers), or by comparing a
//! full tree against its parent tree (native snapshotter).

use super::view::{is_opaque, is_whiteout, View};
use super::{Change, SnapshotError};
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// fuse-overlayfs falls back to these names when it cannot create 0/0 devices or xattrs.
const WH_PREFIX: &str = ".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";

fn walk_err(root: &Path) -> impl Fn(walkdir::Error) -> SnapshotError + '_ {
    move |e| {
        SnapshotError::Io(crate::report::IoError {
            action: "walking",
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e.into(),
        })
    }
}

/// Whether `rel` is visible in the merged view of the lowers.
fn in_lowers(rel: &Path, lowers: &View) -> bool {
    matches!(lowers.lookup(rel), Ok(Some(_)))
}

fn rank(c: &Change) -> u8 {
    match c {
        Change::Opaque { .. } => 1,
        _ => 0,
    }
}

fn sort(changes: &mut [Change]) {
    changes.sort_by(|a, b| a.path().cmp(b.path()).then(rank(a).cmp(&rank(b))));
}

/// The changes recorded in an overlay upper directory over `lowers` (top-most first). Only the
/// upper directory is walked; lowers are looked up per changed path.
pub(crate) fn overlay_changes(
    upper: &Path,
    lowers: &[PathBuf],
) -> Result<Vec<Change>, SnapshotError> {
    let mut out = Vec::new();
    let lowers = View::new(lowers.to_vec());
    let walk = WalkDir::new(upper).min_depth(1).sort_by_file_name();
    for e in walk {
        let e = e.map_err(walk_err(upper))?;
        let rel = e
            .path()
            .strip_prefix(upper)
            .unwrap_or(e.path())
            .to_path_buf();
        let m = e.metadata().map_err(walk_err(upper))?;
        let name = e.file_name().to_string_lossy();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if is_whiteout(&m) {
            out.push(Change::Deleted { path: rel });
        } else if name == WH_OPAQUE {
            out.push(Change::Opaque { dir: parent });
        } else if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
            out.push(Change::Deleted {
                path: parent.join(hidden),
            });
        } else {
            let on_disk = e.path().to_path_buf();
            let opaque = m.is_dir() && is_opaque(&on_disk);
            if in_lowers(&rel, &lowers) {
                out.push(Change::Modified {
                    path: rel.clone(),
                    on_disk,
                });
            } else {
                out.push(Change::Added {
                    path: rel.clone(),
                    on_disk,
                });
            }
            if opaque {
                out.push(Change::Opaque { dir: rel });
            }
        }
    }
    sort(&mut out);
    Ok(out)
}

fn xattrs(p: &Path) -> Vec<(std::ffi::OsString, Option<Vec<u8>>)> {
    let mut v: Vec<_> = xattr::list(p)
        .map(|l| l.filter(|n| !super::is_private_xattr(n)).collect())
        .unwrap_or_default();
    v.sort();
    v.into_iter()
        .map(|n| {
            let val = xattr::get(p, &n).ok().flatten();
            (n, val)
        })
        .collect()
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(fb.read(&mut bb[..1])? == 0);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Whether `a` (new) differs from `b` (parent), both of the same file type.
fn differs(a: &Path, ma: &Metadata, b: &Path, mb: &Metadata) -> bool {
    let meta_same = ma.mode() == mb.mode()
        && ma.uid() == mb.uid()
        && ma.gid() == mb.gid()
        && ma.rdev() == mb.rdev()
        && ma.mtime() == mb.mtime()
        && ma.mtime_nsec() == mb.mtime_nsec()
        && (ma.is_dir() || ma.size() == mb.size());
    if !meta_same || xattrs(a) != xattrs(b) {
        return true;
    }
    if ma.file_type().is_symlink() {
        return std::fs::read_link(a).ok() != std::fs::read_link(b).ok();
    }
    // Sub-second mtimes make equal metadata trustworthy; coarse ones do not.
    if ma.is_file() && ma.mtime_nsec() == 0 {
        return !same_content(a, b).unwrap_or(false);
    }
    false
}

/// The changes of full tree `new` against full tree `old` (a merge of two sorted walks).
pub(crate) fn tree_changes(new: &Path, old: Option<&Path>) -> Result<Vec<Change>, SnapshotError> {
    let mut out = Vec::new();
    let mut wn = WalkDir::new(new)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    let empty = new.join(".kiln-nonexistent-parent");
    let old_root = old.unwrap_or(&empty);
    let mut wo = WalkDir::new(old_root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    let next = |w: &mut walkdir::IntoIter,
                root: &Path|
     -> Result<Option<walkdir::DirEntry>, SnapshotError> {
        match w.next() {
            None => Ok(None),
            Some(Err(e)) if e.path() == Some(root) => Ok(None),
            Some(r) => r.map(Some).map_err(walk_err(root)),
        }
    };
    let rel = |e: &walkdir::DirEntry, root: &Path| {
        e.path()
            .strip_prefix(root)
            .unwrap_or(e.path())
            .to_path_buf()
    };
    let (mut en, mut eo) = (next(&mut wn, new)?, next(&mut wo, old_root)?);
    loop {
        let ord = match (&en, &eo) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => rel(a, new).cmp(&rel(b, old_root)),
        };
        match ord {
            std::cmp::Ordering::Less => {
                if let Some(a) = en.take() {
                    out.push(Change::Added {
                        path: rel(&a, new),
                        on_disk: a.into_path(),
                    });
                }
                en = next(&mut wn, new)?;
            }
            std::cmp::Ordering::Greater => {
                if let Some(b) = eo.take() {
                    if b.file_type().is_dir() {
                        wo.skip_current_dir();
                    }
                    out.push(Change::Deleted {
                        path: rel(&b, old_root),
                    });
                }
                eo = next(&mut wo, old_root)?;
            }
            std::cmp::Ordering::Equal => {
                if let (Some(a), Some(b)) = (en.take(), eo.take()) {
                    let ma = a.metadata().map_err(walk_err(new))?;
                    let mb = b.metadata().map_err(walk_err(old_root))?;
                    let path = rel(&a, new);
                    if ma.file_type() != mb.file_type() {
                        // A replaced entry: the parent's subtree is gone with it.
                        if mb.is_dir() {
                            wo.skip_current_dir();
                        }
                        out.push(Change::Modified {
                            path,
                            on_disk: a.into_path(),
                        });
                    } else if differs(a.path(), &ma, b.path(), &mb) {
                        out.push(Change::Modified {
                            path,
                            on_disk: a.into_path(),
                        });
                    }
                }
                en = next(&mut wn, new)?;
                eo = next(&mut wo, old_root)?;
            }
        }
    }
    sort(&mut out);
    Ok(out)
}
