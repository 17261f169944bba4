//! Layers: change set → deterministic tar → gzip/zstd (parallel) → diff_id + digest in one streaming
//! pass; and applying a layer blob to a directory (whiteouts, opaque dirs, escape guards).
//!
//! - [`ChangeSet`] / [`Change`]: what goes into one layer, by layer path (sorted when written).
//! - [`write_layer`]: tar on one thread (hashing the diff_id), compression on worker threads, the blob
//!   digest hashed on the caller's thread while writing to the sink; bounded channels throughout.
//! - [`apply_layer`]: our own extraction loop (the `tar` crate's `unpack` turns devices into plain files
//!   and ignores whiteouts).
//! - [`ParallelGzip`]: the pigz-style encoder, usable on any byte stream.
//!
//! Must not: buffer a whole layer (or a whole file) in memory, know snapshots, stores or registries.

mod apply;
mod compress;
pub mod gzip;
mod pipeline;
pub mod sniff;
mod tar;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

pub use apply::{apply_layer, ApplyOptions, ApplyStats};
pub use compress::{compress_stream, Compression};
pub use gzip::ParallelGzip;
pub use pipeline::write_layer;

/// Why writing or applying a layer failed. Variants name the action and the path or tar entry.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("unknown compression {0:?} (expected gzip, zstd or uncompressed)")]
    UnknownCompression(String),
    #[error("compression level {level} is out of range for {compression}")]
    BadLevel {
        compression: Compression,
        level: i32,
    },
    #[error("invalid layer path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("walking {path}")]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    #[error("path {path} is not valid UTF-8")]
    NonUtf8Path { path: PathBuf },
    #[error("reading metadata of {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading symlink {path}")]
    ReadLink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading extended attributes of {path}")]
    ReadXattr {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}")]
    ReadSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed size while being archived (expected {expected} bytes)")]
    SourceChanged { path: PathBuf, expected: u64 },
    #[error("writing the layer tar stream")]
    WriteTar {
        #[source]
        source: io::Error,
    },
    #[error("compressing the layer")]
    Compress {
        #[source]
        source: io::Error,
    },
    #[error("writing the compressed layer to its destination")]
    WriteOutput {
        #[source]
        source: io::Error,
    },
    #[error("layer pipeline thread {0} panicked")]
    ThreadPanicked(&'static str),
    #[error("reading the layer archive")]
    ReadArchive {
        #[source]
        source: io::Error,
    },
    #[error("refusing tar entry {entry:?}: {reason}")]
    Escape { entry: String, reason: String },
    #[error("refusing tar entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },
    #[error("extracting tar entry {entry:?}: {action} {path}")]
    Extract {
        entry: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How to write a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// `None`: gzip 6, zstd 3.
    pub level: Option<i32>,
    /// Compression worker threads (gzip blocks / zstd workers); 0 is treated as 1.
    pub threads: usize,
    /// Clamp every mtime to this (seconds since the epoch); whiteouts get this mtime (else 0).
    pub source_date_epoch: Option<i64>,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::Gzip,
            level: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            source_date_epoch: None,
        }
    }
}

/// What [`write_layer`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the blob as written (the manifest's layer digest).
    pub digest: Digest,
    /// Blob size in bytes.
    pub size: u64,
    pub uncompressed_size: u64,
    pub media_type: String,
}

/// One change in a layer. Paths are layer paths: relative, `/`-separated, no leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Archive what is at `source` (lstat'ed, symlinks not followed) under `path`.
    Add { path: String, source: PathBuf },
    /// Archive `source` under `path` as COPY writes it (the layer is made straight from the
    /// sources, nothing staged): `attrs` replace what the source's metadata says, and a file
    /// becomes a hard link only to an earlier entry of the same `link_group` with its inode
    /// (fsutil keeps links within one source operand, never across).
    Copied {
        path: String,
        source: PathBuf,
        attrs: Overrides,
        link_group: u32,
    },
    /// An entry the step makes up, with no source on disk: a directory (`content: None`) or a
    /// regular file holding `content` (a heredoc).
    Made {
        path: String,
        attrs: Attrs,
        content: Option<Vec<u8>>,
    },
    /// Delete `path` from lower layers (`<dir>/.wh.<name>`).
    Whiteout { path: String },
    /// Hide everything lower layers have under `dir` (`<dir>/.wh..wh..opq`).
    Opaque { dir: String },
}

/// What a [`Change::Copied`] entry gets instead of its source's metadata (`None`: the source's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Permission bits (`--chmod`).
    pub mode: Option<u32>,
    /// Seconds since the epoch (a destination directory takes its source directory's mtime).
    pub mtime: Option<i64>,
}

/// The whole metadata of a [`Change::Made`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

impl Change {
    /// The entry's layer path as given.
    pub fn path(&self) -> &str {
        match self {
            Change::Add { path, .. }
            | Change::Copied { path, .. }
            | Change::Made { path, .. }
            | Change::Whiteout { path } => path,
            Change::Opaque { dir } => dir,
        }
    }
}

/// What goes into one layer; written sorted by layer path (component by component), whatever the
/// order of `push`. A later change to the same path replaces an earlier one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    changes: Vec<Change>,
    owner: Option<(u32, u32)>,
    /// Per layer path (normalised): uid, gid replacing the entry's (None: keep).
    owners: BTreeMap<String, (Option<u32>, Option<u32>)>,
}

impl ChangeSet {
    pub fn new() -> Self {
        ChangeSet::default()
    }

    pub fn push(&mut self, c: Change) {
        self.changes.push(c);
    }

    /// Every entry under `root` (not `root` itself) as an [`Change::Add`], in sorted order.
    pub fn from_dir(root: &Path) -> Result<ChangeSet, LayerError> {
        let mut set = ChangeSet::new();
        let walk = walkdir::WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walk {
            let entry = entry.map_err(|source| LayerError::Walk {
                path: root.to_path_buf(),
                source,
            })?;
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap_or(entry.path())
                .to_str()
                .ok_or_else(|| LayerError::NonUtf8Path {
                    path: entry.path().to_path_buf(),
                })?
                .to_string();
            set.push(Change::Add {
                path: rel,
                source: entry.into_path(),
            });
        }
        Ok(set)
    }

    /// Override uid/gid of every added or copied entry (COPY resets owners to 0:0, or `--chown`);
    /// [`Change::Made`] entries keep the owner they carry.
    pub fn with_owner(mut self, uid: u32, gid: u32) -> Self {
        self.owner = Some((uid, gid));
        self
    }

    /// Override the owner of the entry at layer path `path` (None: keep that id), after any
    /// [`with_owner`](Self::with_owner); a later call replaces the ids it sets. A path that is
    /// not (or not validly) in the set changes nothing.
    pub fn set_owner(&mut self, path: &str, uid: Option<u32>, gid: Option<u32>) {
        if let Ok(p) = normalize_layer_path(path) {
            let e = self.owners.entry(p).or_default();
            *e = (uid.or(e.0), gid.or(e.1));
        }
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter()
    }

    pub(crate) fn owner(&self) -> Option<(u32, u32)> {
        self.owner
    }

    /// The [`set_owner`](Self::set_owner) override of a normalised layer path.
    pub(crate) fn owner_of(&self, path: &str) -> (Option<u32>, Option<u32>) {
        self.owners.get(path).copied().unwrap_or_default()
    }

    /// The changes keyed by their tar entry name (`a/.wh.b` for a whiteout of `a/b`, `a/.wh..wh..opq`
    /// for an opaque `a`), sorted component-wise, later duplicates winning.
    pub(crate) fn sorted(&self) -> Result<Vec<(String, &Change)>, LayerError> {
        let mut v = Vec::with_capacity(self.changes.len());
        for c in &self.changes {
            let p = normalize_layer_path(c.path())?;
            let key = match c {
                Change::Add { .. } | Change::Copied { .. } | Change::Made { .. } => p,
                Change::Whiteout { .. } => match p.rsplit_once('/') {
                    Some((dir, base)) => format!("{dir}/{WHITEOUT_PREFIX}{base}"),
                    None => format!("{WHITEOUT_PREFIX}{p}"),
                },
                Change::Opaque { .. } => format!("{p}/{OPAQUE_MARKER}"),
            };
            v.push((key, c));
        }
        // Stable sort keeps push order among equal paths; keep the last of each run.
        v.sort_by(|a, b| path_cmp(&a.0, &b.0));
        let mut out: Vec<(String, &Change)> = Vec::with_capacity(v.len());
        for item in v {
            match out.last_mut() {
                Some(last) if last.0 == item.0 => *last = item,
                _ => out.push(item),
            }
        }
        Ok(out)
    }
}

/// The OCI whiteout prefix: `<dir>/.wh.<name>` deletes `<dir>/<name>` from lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// An owner kiln could not apply on disk, as `uid:gid`: a single-uid kiln (one id mapped in its
/// user namespace) unpacking `/etc/gshadow` (gid 42) keeps the file's owner here instead. The
/// layer writer reads it back as the entry's owner and never writes the xattr into a layer;
/// overlayfs copies it up with the file, so a RUN that modifies the file keeps its owner.
pub const OWNER_XATTR: &str = crate::exec::OWNER_XATTR;
/// The OCI opaque-directory marker: `<dir>/.wh..wh..opq` hides everything lower layers have in `<dir>`.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Compare `/`-separated paths component by component (so `a/b` sorts before `a.txt`, like a
/// sorted directory walk).
pub fn path_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes().map(|c| if c == b'/' { 0 } else { c })
    }
    key(a).cmp(key(b))
}

/// Normalise a layer path: strip leading `/` and `./`, drop `.` and empty components; refuse `..`
/// and the empty path.
pub(crate) fn normalize_layer_path(p: &str) -> Result<String, LayerError> {
    let mut parts = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                return Err(LayerError::InvalidPath {
                    path: p.to_string(),
                    reason: "contains a `..` component",
                })
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(LayerError::InvalidPath {
            path: p.to_string(),
            reason: "names the layer root",
        });
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_component_wise_and_dedups() {
        let mut cs = ChangeSet::new();
        for p in ["a.txt", "a/b", "/a", "a/b"] {
            cs.push(Change::Whiteout { path: p.into() });
        }
        cs.push(Change::Add {
            path: "a".into(),
            source: "/".into(),
        });
        let paths: Vec<_> = cs.sorted().unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, [".wh.a", ".wh.a.txt", "a", "a/.wh.b"]);
        let mut bad = ChangeSet::new();
        bad.push(Change::Whiteout {
            path: "a/../../etc".into(),
        });
        assert!(bad
            .sorted()
            .unwrap_err()
            .to_string()
            .contains("a/../../etc"));
    }

    #[test]
    fn set_owner_overrides_one_entry_id_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let uid = {
            use std::os::unix::fs::MetadataExt;
            u64::from(std::fs::metadata(dir.path()).unwrap().uid())
        };
        for n in ["f", "g"] {
            std::fs::write(dir.path().join(n), n).unwrap();
        }
        let mut cs = ChangeSet::from_dir(dir.path()).unwrap();
        cs.set_owner("/f", Some(1234), Some(5678));
        cs.set_owner("f", Some(42), None);
        cs.set_owner("g", None, Some(7));
        cs.set_owner("absent", Some(1), Some(1));
        let bytes = tar::write_tar(&cs, None, Vec::new()).unwrap();
        let mut ar = ::tar::Archive::new(&bytes[..]);
        let owners: Vec<(String, u64, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let h = e.unwrap().header().clone();
                let p = h.path().unwrap().to_string_lossy().into_owned();
                (p, h.uid().unwrap(), h.gid().unwrap())
            })
            .collect();
        assert_eq!(owners, [("f".into(), 42, 5678), ("g".into(), uid, 7)]);
    }
}
