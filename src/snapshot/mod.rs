//! snapshot — the writable layer of a RUN step, in containerd's snapshotter vocabulary.
//!
//! A stage's filesystem is the chain of its layers' committed snapshots (`store::snapshots`: one
//! directory per layer in overlayfs' format, shared by every build). A RUN step gets an *active*
//! snapshot over that chain: [`Snapshotter::prepare`] makes its scratch space, [`Active::mounts`]
//! describes the rootfs mount that `exec` makes inside its own mount namespace (this module never
//! mounts anything), [`Active::diff`] turns what the step changed into a sorted change set
//! ([`Change`]) for the `layer` module, [`Active::commit_dir`] hands the upper directory over to
//! become the next committed snapshot, and [`Active::remove`] deletes the scratch space.
//! [`flatten`] makes one plain tree of a chain where one is needed.
//!
//! Kinds: kernel overlayfs (the chain's snapshots are the lowers, the diff is read from the upper
//! directory so its cost grows with what the step changed), fuse-overlayfs (the same on-disk
//! format, mounted by the `fuse-overlayfs` binary) and native (the merged chain is copied, with
//! reflinks where the filesystem can, and diffed against a hard-linked flat view of it).
//!
//! Must NOT: know tar, layers' media types or registries; mount; run processes.

mod active;
mod diff;
mod native;
mod view;

pub use active::{Active, Snapshotter};
pub use native::copy_tree;
pub use view::{flatten, View};

use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

/// Errors of the snapshot module; each variant names the failed action.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Io(#[from] crate::report::IoError),
    #[error("snapshotter {0:?} is not usable here: {1}")]
    Unavailable(SnapshotterKind, String),
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let at = crate::report::IoError::at(action, path);
    move |source| SnapshotError::Io(at(source))
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

/// True for xattrs that belong to the overlay implementation and must not enter a layer.
pub(crate) fn is_private_xattr(name: &OsStr) -> bool {
    let n = name.as_encoded_bytes();
    n.starts_with(b"trusted.overlay.")
        || n.starts_with(b"user.overlay.")
        || n.starts_with(b"user.fuseoverlayfs.")
}
