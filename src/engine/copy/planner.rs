//! COPY straight into its layer: a [`Sink`] that records, for every entry the copy makes, where
//! its bytes are (the source file itself) and what metadata the layer gives it, so the layer tar is
//! streamed from the sources and nothing is written to disk first. The stage's filesystem catches
//! up later by committing the layer's snapshot, only if a later step reads the filesystem
//! (`Engine::materialize`); a build whose last step is a big COPY never creates one inode for it.
//! BuildKit gets the same effect from its snapshotter (the copy is written once, into the step's
//! snapshot, and the layer is the snapshot's diff); here the layer comes first and the snapshot is
//! made from it.
//!
//! Same entries, modes, owners, mtimes and links as [`super::rules::stage_copy`] would stage (both
//! run [`super::rules::copy_into`], which owns Docker's rules), with two differences that follow
//! BuildKit where staging through the host filesystem could not: set-uid/set-gid bits survive the
//! owner change (fsutil `copyFileInfo` chowns before it chmods; a chown(2) clears them), and
//! extended attributes are carried (fsutil `copyXAttrs`).
//!
//! Must not: write to the filesystem, read file contents (the tar writer does, once), or decide
//! Docker's COPY semantics (that is `copy_into`'s job).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::rules::{CopyError, CopySpec, Sink};
use crate::context::SourceRoot;
use crate::layer::{Attrs, Change, ChangeSet, Overrides};

/// A layer path ordered as the tar writer orders it (component-wise), so a directory's entries
/// follow it contiguously.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key(String);

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        crate::layer::path_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The plan: layer path → change, later entries replacing earlier ones as a staged copy would.
pub(crate) struct Planner<'a> {
    spec: &'a CopySpec<'a>,
    image: &'a SourceRoot,
    entries: BTreeMap<Key, (Change, bool)>,
    operand: u32,
}

impl<'a> Planner<'a> {
    pub(crate) fn new(spec: &'a CopySpec<'a>, image: &'a SourceRoot) -> Planner<'a> {
        Planner {
            spec,
            image,
            entries: BTreeMap::new(),
            operand: 0,
        }
    }

    /// The layer's change set: copied entries owned by the copy's owner (or keeping the source's,
    /// [`CopySpec::keep_source_owners`]), made-up ones by theirs.
    pub(crate) fn into_changes(self) -> ChangeSet {
        let mut set = ChangeSet::new();
        for (_, (change, _)) in self.entries {
            set.push(change);
        }
        if self.spec.keep_source_owners {
            return set;
        }
        set.with_owner(self.spec.owner.0, self.spec.owner.1)
    }

    fn io(&self, from: &Path, source: io::Error) -> CopyError {
        CopyError::Io {
            from: from.to_path_buf(),
            to: self.spec.dest.clone(),
            source,
        }
    }

    fn key(&self, rel: &Path) -> Result<Key, CopyError> {
        match rel.to_str() {
            Some(s) => Ok(Key(s.to_string())),
            None => Err(self.io(
                rel,
                io::Error::new(io::ErrorKind::InvalidData, "path is not valid UTF-8"),
            )),
        }
    }

    fn is_dir(&self, key: &Key) -> Option<bool> {
        self.entries.get(key).map(|(_, dir)| *dir)
    }

    /// Drop `key` and, when it was a directory, everything under it (a staged copy replacing a
    /// directory with a file removes the tree).
    fn remove_tree(&mut self, key: &Key) {
        if let Some((_, true)) = self.entries.remove(key) {
            let prefix = format!("{}/", key.0);
            let under: Vec<Key> = self
                .entries
                .range(Key(prefix.clone())..)
                .take_while(|(k, _)| k.0.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in under {
                self.entries.remove(&k);
            }
        }
    }

    /// An entry is about to be placed at `key`; what is there gives way, as `copy_entry` does
    /// on disk (a directory over a directory merges into it).
    fn make_room(&mut self, key: &Key, new_is_dir: bool) {
        match self.is_dir(key) {
            Some(true) if new_is_dir => {}
            Some(_) => self.remove_tree(key),
            None => {}
        }
    }
}

/// Whether staging would copy this kind of entry: sockets, FIFOs and devices in a source are
/// skipped, as BuildKit's fsutil does for a build context.
fn copied_kind(meta: &fs::Metadata) -> bool {
    let ft = meta.file_type();
    ft.is_file() || ft.is_dir() || ft.is_symlink()
}

impl Sink for Planner<'_> {
    fn begin_operand(&mut self, index: usize) {
        self.operand = u32::try_from(index).unwrap_or(u32::MAX);
    }

    fn ensure_dir(&mut self, rel: &Path, mode: u32) -> Result<(), CopyError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            let key = self.key(&cur)?;
            match self.is_dir(&key) {
                Some(true) => continue,
                Some(false) => {
                    return Err(self.io(&cur, io::Error::from(io::ErrorKind::AlreadyExists)))
                }
                None => {}
            }
            let attrs = match self.image.lstat(&cur) {
                // The image's directory: the layer must not change its metadata.
                Ok(m) if m.is_dir() => Attrs {
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime: m.mtime(),
                },
                _ => Attrs {
                    mode,
                    uid: self.spec.owner.0,
                    gid: self.spec.owner.1,
                    mtime: self.spec.created_mtime,
                },
            };
            let change = Change::Made {
                path: key.0.clone(),
                attrs,
                content: None,
            };
            self.entries.insert(key, (change, true));
        }
        Ok(())
    }

    fn put(&mut self, src: &Path, meta: &fs::Metadata, rel: &Path) -> Result<(), CopyError> {
        if !copied_kind(meta) {
            return Ok(());
        }
        let key = self.key(rel)?;
        let is_dir = meta.is_dir();
        self.make_room(&key, is_dir);
        let mode = match &self.spec.chmod {
            Some(chmod) if !meta.file_type().is_symlink() => {
                Some(chmod.apply(meta.permissions().mode() & 0o7777, is_dir))
            }
            _ => None,
        };
        let change = Change::Copied {
            path: key.0.clone(),
            source: src.to_path_buf(),
            attrs: Overrides { mode, mtime: None },
            link_group: self.operand,
        };
        self.entries.insert(key, (change, is_dir));
        Ok(())
    }

    fn dir_time(&mut self, rel: &Path, meta: &fs::Metadata) -> Result<(), CopyError> {
        let key = self.key(rel)?;
        match self.entries.get_mut(&key) {
            Some((Change::Made { attrs, .. }, _)) => attrs.mtime = meta.mtime(),
            Some((Change::Copied { attrs, .. }, _)) => attrs.mtime = Some(meta.mtime()),
            _ => {}
        }
        Ok(())
    }

    fn unpack(&mut self, archive: &Path, _dest_rel: &Path) -> Result<(), CopyError> {
        // `Resolved::is_direct` keeps archives away from this sink.
        Err(self.io(
            archive,
            io::Error::new(
                io::ErrorKind::Unsupported,
                "archives are unpacked into a staging tree",
            ),
        ))
    }

    fn heredoc(&mut self, name: &str, rel: &Path, content: &[u8]) -> Result<(), CopyError> {
        let key = self.key(rel)?;
        if self.is_dir(&key) == Some(true) {
            return Err(CopyError::Io {
                from: PathBuf::from(format!("<<{name}")),
                to: self.spec.dest.clone(),
                source: io::Error::from(io::ErrorKind::IsADirectory),
            });
        }
        let mode = match &self.spec.chmod {
            Some(chmod) => chmod.apply(0o644, false),
            None => 0o644,
        };
        let change = Change::Made {
            path: key.0.clone(),
            attrs: Attrs {
                mode,
                uid: self.spec.owner.0,
                gid: self.spec.owner.1,
                mtime: self.spec.created_mtime,
            },
            content: Some(content.to_vec()),
        };
        self.entries.insert(key, (change, false));
        Ok(())
    }
}
