//! [`flatten`] makes one plain tree of a chain of committed snapshots (a `COPY --from` source,
//! the native snapshotter's root): hard links to the snapshots' files when the tree is only read,
//! copies when it is written. The merged lookups themselves are `context::View`'s.
//!
//! Must not: write into a snapshot, or mount.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub(crate) use crate::context::layers::{is_opaque, is_whiteout};
pub use crate::context::View;

use super::{io_err, SnapshotError};

/// Make `dst` (a new directory) hold the merged tree of `view`: layers applied bottom-up as
/// overlayfs merges them. With `link`, files are hard links into the snapshots (`dst` must then
/// never be written); otherwise they are copies (FICLONE where the filesystem has it).
pub fn flatten(view: &View, dst: &Path, link: bool) -> Result<(), SnapshotError> {
    fs::create_dir_all(dst).map_err(io_err("creating", dst))?;
    // Directory metadata last, from the top-most layer that has the directory, deepest first.
    let mut dir_meta: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut copied: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for layer in view.layers().iter().rev() {
        for e in walkdir::WalkDir::new(layer).min_depth(1) {
            let e = e.map_err(|e| {
                SnapshotError::Io(crate::report::IoError {
                    action: "walking",
                    path: e.path().unwrap_or(layer).to_path_buf(),
                    source: e.into(),
                })
            })?;
            let rel = e.path().strip_prefix(layer).unwrap_or(e.path());
            let to = dst.join(rel);
            let m = fs::symlink_metadata(e.path()).map_err(io_err("reading", e.path()))?;
            let existing = fs::symlink_metadata(&to).ok();
            if is_whiteout(&m) {
                remove(&to, existing.as_ref())?;
                continue;
            }
            if m.is_dir() {
                let keep = existing.as_ref().is_some_and(|x| x.is_dir()) && !is_opaque(e.path());
                if !keep {
                    remove(&to, existing.as_ref())?;
                    fs::create_dir(&to).map_err(io_err("creating", &to))?;
                }
                dir_meta.insert(rel.to_path_buf(), e.path().to_path_buf());
                continue;
            }
            remove(&to, existing.as_ref())?;
            if link {
                fs::hard_link(e.path(), &to).map_err(io_err("linking", &to))?;
            } else if let Some(first) = (m.nlink() > 1)
                .then(|| copied.get(&(m.dev(), m.ino())))
                .flatten()
            {
                fs::hard_link(first, &to).map_err(io_err("linking", &to))?;
            } else {
                super::native::copy_entry(e.path(), &to, &m)?;
                if m.nlink() > 1 {
                    copied.insert((m.dev(), m.ino()), to.clone());
                }
            }
        }
    }
    for (rel, from) in dir_meta.iter().rev() {
        let to = dst.join(rel);
        let m = fs::symlink_metadata(from).map_err(io_err("reading", from))?;
        super::native::set_meta(from, &to, &m)?;
    }
    if let Some(top) = view.layers().first() {
        let m = fs::symlink_metadata(top).map_err(io_err("reading", top))?;
        super::native::set_meta(top, dst, &m)?;
    }
    Ok(())
}

fn remove(p: &Path, existing: Option<&Metadata>) -> Result<(), SnapshotError> {
    match existing {
        Some(m) if m.is_dir() => fs::remove_dir_all(p).map_err(io_err("removing", p)),
        Some(_) => fs::remove_file(p).map_err(io_err("removing", p)),
        None => Ok(()),
    }
}
