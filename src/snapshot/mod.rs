//! snapshot — filesystem snapshots for build steps, in containerd's vocabulary.
//!
//! A *committed* snapshot is an immutable layer directory; an *active* snapshot is a writable layer
//! prepared on top of a committed parent; a *view* is a read-only mount of a committed chain.
//! `prepare`/`view` return [`Mount`] descriptions that the `exec` module mounts inside its own
//! mount namespace (this module never mounts anything itself). `changes` turns an active snapshot
//! into a sorted change set ([`Change`]) for the `layer` module.
//!
//! Implementations: kernel overlayfs (layers are directories, the diff is read from the upper
//! directory so its cost grows with what the step changed), fuse-overlayfs (same on-disk format,
//! mounted by the `fuse-overlayfs` binary) and a native copy snapshotter (parent tree copied with
//! reflinks when the filesystem can, diff by comparing against the parent).
//!
//! Populating a snapshot from an image layer: `prepare` → write into [`Snapshotter::writable_dir`]
//! using [`Snapshotter::whiteout_format`] (see [`write_whiteout`], [`mark_opaque`]) → `commit`.
//!
//! Must NOT: know tar, layers' media types or registries; mount; run processes.

mod diff;
mod native;
mod over;
mod overlay;

pub use native::{copy_tree, NativeSnapshotter};
pub use over::ActiveOver;
pub use overlay::OverlaySnapshotter;

use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

/// Errors of the snapshot module; each variant names the failed action.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {key:?} does not exist")]
    NotFound { key: String },
    #[error("snapshot {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("snapshot {key:?} is {actual}, expected {expected}")]
    WrongKind {
        key: String,
        actual: &'static str,
        expected: &'static str,
    },
    #[error("snapshot {key:?} is the parent of {child:?} and cannot be removed")]
    HasChildren { key: String, child: String },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading snapshot metadata {path}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshotter {0:?} is not usable here: {1}")]
    Unavailable(SnapshotterKind, String),
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}

/// `[worker.oci] snapshotter = auto|overlayfs|fuse-overlayfs|native`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotterKind {
    #[default]
    Auto,
    Overlayfs,
    FuseOverlayfs,
    Native,
}

impl std::fmt::Display for SnapshotterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotterKind::Auto => "auto",
            SnapshotterKind::Overlayfs => "overlayfs",
            SnapshotterKind::FuseOverlayfs => "fuse-overlayfs",
            SnapshotterKind::Native => "native",
        })
    }
}

impl std::str::FromStr for SnapshotterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "overlayfs" | "overlay" => Ok(Self::Overlayfs),
            "fuse-overlayfs" => Ok(Self::FuseOverlayfs),
            "native" => Ok(Self::Native),
            other => Err(format!(
                "unknown snapshotter {other:?} (auto, overlayfs, fuse-overlayfs, native)"
            )),
        }
    }
}

/// How a mount of a snapshot is made. `lower` lists layer directories top-most first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Mount {
    /// Kernel overlayfs. `userxattr` must be set when mounting inside a non-initial user namespace.
    Overlay {
        lower: Vec<PathBuf>,
        upper: Option<PathBuf>,
        work: Option<PathBuf>,
        userxattr: bool,
    },
    /// The same layout mounted by the `fuse-overlayfs` binary.
    FuseOverlay {
        lower: Vec<PathBuf>,
        upper: Option<PathBuf>,
        work: Option<PathBuf>,
    },
    /// A plain directory bind-mounted as the rootfs.
    Bind { source: PathBuf, readonly: bool },
}

/// The mounts that make up a rootfs, applied in order on the same target.
pub type Mounts = Vec<Mount>;

/// One entry of a change set. Paths are relative to the rootfs, without a leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A path that did not exist in the parent; `on_disk` holds its content and metadata.
    Added { path: PathBuf, on_disk: PathBuf },
    /// A path whose content or metadata changed (directories: also when their entries changed).
    Modified { path: PathBuf, on_disk: PathBuf },
    /// A path of the parent that no longer exists.
    Deleted { path: PathBuf },
    /// Everything the parent had below `dir` is hidden (a replaced directory). Follows the
    /// `Added`/`Modified` entry of `dir` itself.
    Opaque { dir: PathBuf },
}

impl Change {
    pub fn path(&self) -> &Path {
        match self {
            Change::Added { path, .. }
            | Change::Modified { path, .. }
            | Change::Deleted { path } => path,
            Change::Opaque { dir } => dir,
        }
    }
}

/// Disk use of a snapshot's own directory (not its parents).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub inodes: u64,
    pub bytes: u64,
}

/// How deletions must be written into [`Snapshotter::writable_dir`] by a caller populating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// Overlay whiteouts: a 0/0 character device; opaque dirs carry an `overlay.opaque` xattr
    /// (`user.` when `userxattr`, else `trusted.`). Use [`write_whiteout`] and [`mark_opaque`].
    Overlay { userxattr: bool },
    /// The directory is a full tree: delete paths directly.
    Direct,
}

/// containerd's snapshotter contract. Keys and names are free-form strings.
pub trait Snapshotter: Send + Sync {
    fn kind(&self) -> SnapshotterKind;
    /// A new active snapshot `key` on top of committed `parent` (None: empty).
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Mounts, SnapshotError>;
    /// A read-only view `key` of committed `parent`.
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Mounts, SnapshotError>;
    /// Turn active `key` into committed `name` (the same directory; nothing is copied).
    fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError>;
    /// Remove an active, view or (childless) committed snapshot.
    fn remove(&self, key: &str) -> Result<(), SnapshotError>;
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError>;
    /// The change set of active (or committed) `key` against its parent, sorted by path.
    fn changes(&self, key: &str) -> Result<Vec<Change>, SnapshotError>;
    /// Where a caller may write the snapshot's own content before committing it.
    fn writable_dir(&self, key: &str) -> Result<PathBuf, SnapshotError>;
    fn whiteout_format(&self) -> WhiteoutFormat;
    /// Every snapshot with its kind and parent.
    fn list(&self) -> Result<Vec<Info>, SnapshotError>;
}

/// A snapshot's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub key: String,
    pub kind: State,
    pub parent: Option<String>,
    /// The snapshot's own directory name under `<root>/snapshots/`.
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Active,
    View,
    Committed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Active => "active",
            State::View => "a view",
            State::Committed => "committed",
        }
    }
}

/// Opens the snapshotter of `kind` under `<root>/snapshots/`. `Auto` must be resolved first
/// (`exec::probe` tries mounts, which this module cannot do); `userxattr` is whether overlays
/// will be mounted inside a non-initial user namespace (rootless).
pub fn open(
    root: &Path,
    kind: SnapshotterKind,
    userxattr: bool,
) -> Result<Box<dyn Snapshotter>, SnapshotError> {
    let dir = root.join("snapshots");
    Ok(match kind {
        SnapshotterKind::Overlayfs => Box::new(OverlaySnapshotter::new(&dir, false, userxattr)?),
        SnapshotterKind::FuseOverlayfs => Box::new(OverlaySnapshotter::new(&dir, true, userxattr)?),
        SnapshotterKind::Native => Box::new(NativeSnapshotter::new(&dir)?),
        SnapshotterKind::Auto => {
            return Err(SnapshotError::Unavailable(
                kind,
                "auto must be resolved by exec::probe first".into(),
            ))
        }
    })
}

/// True for xattrs that belong to the overlay implementation and must not enter a layer.
pub fn is_private_xattr(name: &OsStr) -> bool {
    let n = name.as_encoded_bytes();
    n.starts_with(b"trusted.overlay.")
        || n.starts_with(b"user.overlay.")
        || n.starts_with(b"user.fuseoverlayfs.")
}

/// Records the deletion of `rel` in an overlay layer directory (a 0/0 character device).
pub fn write_whiteout(layer_dir: &Path, rel: &Path) -> Result<(), SnapshotError> {
    let p = layer_dir.join(rel);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).map_err(io_err("removing", &p))?,
        Ok(_) => std::fs::remove_file(&p).map_err(io_err("removing", &p))?,
        Err(_) => {}
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &p,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .map_err(|e| SnapshotError::Io {
        action: "creating whiteout",
        path: p.clone(),
        source: e.into(),
    })
}

/// Marks directory `rel` of an overlay layer directory opaque (hides the lower layers' entries).
pub fn mark_opaque(layer_dir: &Path, rel: &Path, userxattr: bool) -> Result<(), SnapshotError> {
    let p = layer_dir.join(rel);
    let name = if userxattr {
        "user.overlay.opaque"
    } else {
        "trusted.overlay.opaque"
    };
    xattr::set(&p, name, b"y").map_err(io_err("marking opaque", &p))
}

/// The on-disk records shared by the implementations: `<dir>/meta/<sha256(key)>.json` and
/// `<dir>/<id>/` per snapshot.
pub(crate) struct MetaStore {
    pub(crate) dir: PathBuf,
    lock: std::sync::Mutex<()>,
}

impl MetaStore {
    pub(crate) fn new(dir: &Path) -> Result<Self, SnapshotError> {
        let meta = dir.join("meta");
        std::fs::create_dir_all(&meta).map_err(io_err("creating", &meta))?;
        Ok(MetaStore {
            dir: dir.to_path_buf(),
            lock: std::sync::Mutex::new(()),
        })
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        let d = crate::digest::Digest::of(key.as_bytes());
        self.dir.join("meta").join(format!("{}.json", d.hex()))
    }

    pub(crate) fn get(&self, key: &str) -> Result<Info, SnapshotError> {
        let p = self.meta_path(key);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::NotFound { key: key.into() })
            }
            Err(e) => return Err(io_err("reading", &p)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Metadata { path: p, source })
    }

    pub(crate) fn get_kind(&self, key: &str, want: State) -> Result<Info, SnapshotError> {
        let info = self.get(key)?;
        if info.kind != want {
            return Err(SnapshotError::WrongKind {
                key: key.into(),
                actual: info.kind.name(),
                expected: want.name(),
            });
        }
        Ok(info)
    }

    fn put(&self, info: &Info) -> Result<(), SnapshotError> {
        let p = self.meta_path(&info.key);
        let tmp = p.with_extension("tmp");
        let bytes = serde_json::to_vec(info).map_err(|source| SnapshotError::Metadata {
            path: p.clone(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err("renaming", &tmp))
    }

    /// Creates the record and the directory `<dir>/<id>/` of a new snapshot.
    pub(crate) fn create(
        &self,
        key: &str,
        kind: State,
        parent: Option<&str>,
    ) -> Result<Info, SnapshotError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.meta_path(key).exists() {
            return Err(SnapshotError::AlreadyExists { key: key.into() });
        }
        if let Some(p) = parent {
            self.get_kind(p, State::Committed)?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = format!("{key}\0{nanos}\0{}", std::process::id());
        let id = crate::digest::Digest::of(seed.as_bytes()).hex()[..16].to_string();
        let sdir = self.dir.join(&id);
        std::fs::create_dir(&sdir).map_err(io_err("creating", &sdir))?;
        let info = Info {
            key: key.into(),
            kind,
            parent: parent.map(str::to_string),
            id,
        };
        self.put(&info)?;
        Ok(info)
    }

    pub(crate) fn commit(&self, name: &str, key: &str) -> Result<Info, SnapshotError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut info = self.get_kind(key, State::Active)?;
        if self.meta_path(name).exists() {
            return Err(SnapshotError::AlreadyExists { key: name.into() });
        }
        info.key = name.into();
        info.kind = State::Committed;
        self.put(&info)?;
        let old = self.meta_path(key);
        std::fs::remove_file(&old).map_err(io_err("removing", &old))?;
        Ok(info)
    }

    pub(crate) fn list(&self) -> Result<Vec<Info>, SnapshotError> {
        let meta = self.dir.join("meta");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&meta).map_err(io_err("listing", &meta))? {
            let e = e.map_err(io_err("listing", &meta))?;
            if e.path().extension() != Some(OsStr::new("json")) {
                continue;
            }
            let bytes = std::fs::read(e.path()).map_err(io_err("reading", &e.path()))?;
            let info: Info =
                serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Metadata {
                    path: e.path(),
                    source,
                })?;
            out.push(info);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub(crate) fn remove(&self, key: &str) -> Result<Info, SnapshotError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let info = self.get(key)?;
        if let Some(child) = self
            .list()?
            .into_iter()
            .find(|i| i.parent.as_deref() == Some(key))
        {
            return Err(SnapshotError::HasChildren {
                key: key.into(),
                child: child.key,
            });
        }
        let p = self.meta_path(key);
        std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
        let sdir = self.dir.join(&info.id);
        std::fs::remove_dir_all(&sdir).map_err(io_err("removing", &sdir))?;
        Ok(info)
    }

    /// The directories of `key`'s committed ancestors, nearest first.
    pub(crate) fn chain(&self, parent: Option<&str>) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut out = Vec::new();
        let mut next = parent.map(str::to_string);
        while let Some(k) = next {
            let info = self.get(&k)?;
            out.push(self.dir.join(&info.id).join("fs"));
            next = info.parent;
        }
        Ok(out)
    }
}

/// Disk use of a directory tree, counting each hard-linked inode once.
pub(crate) fn dir_usage(dir: &Path) -> Result<Usage, SnapshotError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut u = Usage::default();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.map_err(|e| SnapshotError::Io {
            action: "walking",
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        let m = e.metadata().map_err(|err| SnapshotError::Io {
            action: "reading metadata of",
            path: e.path().to_path_buf(),
            source: err.into(),
        })?;
        if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        u.inodes += 1;
        u.bytes += m.blocks() * 512;
    }
    Ok(u)
}
