//! Reading a chain of committed snapshots (overlayfs' on-disk format, top-most first) without
//! mounting it: what the merged tree holds at a path ([`View::lookup`], overlayfs' `ovl_lookup`
//! rules: the top-most entry wins, a whiteout hides every lower one, an opaque or non-directory
//! entry ends the search below it), and a directory listing ([`View::read_dir`]). The engine reads
//! a stage's filesystem this way for COPY's destination, `--chown` names and WORKDIR — a few
//! lookups, where unpacking the chain would cost the whole image.
//!
//! Must not: write anything, or mount.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// xattrs that mark a directory opaque (kernel overlay as root, with `userxattr`, fuse-overlayfs).
const OPAQUE_XATTRS: &[&str] = &[
    "trusted.overlay.opaque",
    "user.overlay.opaque",
    "user.fuseoverlayfs.opaque",
];

pub fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

pub fn is_opaque(dir: &Path) -> bool {
    OPAQUE_XATTRS
        .iter()
        .any(|x| matches!(xattr::get(dir, x), Ok(Some(v)) if v == b"y"))
}

/// A read-only merged view of snapshot directories, top-most first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    layers: Vec<PathBuf>,
}

impl View {
    pub fn new(top_first: Vec<PathBuf>) -> View {
        View { layers: top_first }
    }

    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// The layers (indices, top first) in which directory `rel` contributes entries to the merged
    /// tree; empty when `rel` is not a directory there.
    fn dir_layers(&self, rel: &Path) -> io::Result<Vec<usize>> {
        let mut live: Vec<usize> = (0..self.layers.len()).collect();
        let mut prefix = PathBuf::new();
        for comp in rel.components() {
            let std::path::Component::Normal(name) = comp else {
                continue;
            };
            prefix.push(name);
            let mut next = Vec::new();
            for &i in &live {
                let p = self.layers[i].join(&prefix);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {
                        next.push(i);
                        if is_opaque(&p) {
                            break;
                        }
                    }
                    // A whiteout or a non-directory hides every lower layer's entry; on top, it
                    // means the path is no directory at all.
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
                    Err(e) => return Err(e),
                }
            }
            if next.is_empty() {
                return Ok(next);
            }
            live = next;
        }
        Ok(live)
    }

    /// The top-most entry at `rel` (no symlink followed): its path in a snapshot and metadata;
    /// None when the merged tree has nothing there.
    pub fn lookup(&self, rel: &Path) -> io::Result<Option<(PathBuf, Metadata)>> {
        let (Some(name), parent) = (rel.file_name(), rel.parent()) else {
            // The root: the top-most layer's directory.
            return match self.layers.first() {
                Some(l) => Ok(Some((l.clone(), fs::symlink_metadata(l)?))),
                None => Ok(None),
            };
        };
        let parent = parent.unwrap_or(Path::new(""));
        for i in self.dir_layers(parent)? {
            let p = self.layers[i].join(parent).join(name);
            match fs::symlink_metadata(&p) {
                Ok(m) if is_whiteout(&m) => return Ok(None),
                Ok(m) => return Ok(Some((p, m))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The names in directory `rel` of the merged tree, sorted; NotFound when it is no directory.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let layers = self.dir_layers(rel)?;
        if layers.is_empty() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let mut seen = BTreeSet::new();
        let mut names = BTreeSet::new();
        for i in layers {
            let dir = self.layers[i].join(rel);
            for e in fs::read_dir(&dir)? {
                let e = e?;
                let name = e.file_name();
                if !seen.insert(name.clone()) {
                    continue;
                }
                if !is_whiteout(&e.metadata()?) {
                    names.insert(name);
                }
            }
        }
        Ok(names.into_iter().collect())
    }
}
