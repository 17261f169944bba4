//! The active (writable) snapshot of a RUN step, with containerd's verbs:
//! [`Snapshotter::prepare`] is containerd's `Prepare` over a parent chain (committed snapshots,
//! top-most first, see `store::snapshots`), [`Active::mounts`] its `Mounts`, [`Active::diff`] the
//! differ's `Compare` of the active against its parents, [`Active::commit_dir`] what containerd's
//! `Commit` keeps (the upper directory becomes the next committed snapshot), [`Active::remove`]
//! its `Remove`. The native kind has no overlay: it copies the merged chain (`view::flatten`) and
//! diffs the copy against a hard-linked flat view of the same chain.
//!
//! Must not: mount anything (exec mounts the returned [`Mounts`]) or know layers.

use std::path::{Path, PathBuf};

use super::view::{flatten, View};
use super::{diff, io_err, Change, Mount, Mounts, SnapshotError, SnapshotterKind};

/// Makes active snapshots of one kind (`Auto` resolved first by `exec::probe`, which can try
/// mounts). `userxattr`: overlays will be mounted inside a non-initial user namespace (rootless),
/// so overlay keeps whiteout/opaque markers in `user.` xattrs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshotter {
    kind: SnapshotterKind,
    userxattr: bool,
}

/// A writable layer over `lowers`; its own files live in a scratch directory.
#[derive(Debug)]
pub struct Active {
    kind: SnapshotterKind,
    userxattr: bool,
    /// Committed snapshots, top-most first (native: the one flattened, hard-linked tree).
    lowers: Vec<PathBuf>,
    dir: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

impl Snapshotter {
    pub fn new(kind: SnapshotterKind, userxattr: bool) -> Result<Snapshotter, SnapshotError> {
        if kind == SnapshotterKind::Auto {
            return Err(SnapshotError::Unavailable(
                kind,
                "auto must be resolved by exec::probe first".into(),
            ));
        }
        Ok(Snapshotter { kind, userxattr })
    }

    pub fn kind(&self) -> SnapshotterKind {
        self.kind
    }

    /// Prepare a writable layer over `lowers` (committed snapshots, top-most first) with its
    /// scratch space in `dir` (created). Overlay kinds make empty `fs` (upper) and `work`
    /// directories; native copies the merged chain into `fs` and links it into `lower`.
    pub fn prepare(&self, lowers: &[PathBuf], dir: &Path) -> Result<Active, SnapshotError> {
        let upper = dir.join("fs");
        let work = dir.join("work");
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let mut lowers = lowers.to_vec();
        match self.kind {
            SnapshotterKind::Native => {
                let view = View::new(lowers);
                let flat = dir.join("lower");
                flatten(&view, &flat, true)?;
                flatten(&view, &upper, false)?;
                lowers = vec![flat];
            }
            _ => {
                std::fs::create_dir(&upper).map_err(io_err("creating", &upper))?;
                std::fs::create_dir(&work).map_err(io_err("creating", &work))?;
            }
        }
        Ok(Active {
            kind: self.kind,
            userxattr: self.userxattr,
            lowers,
            dir: dir.to_path_buf(),
            upper,
            work,
        })
    }
}

impl Active {
    /// How exec mounts the rootfs: an overlay (kernel or FUSE) of the upper over `lower`, or a
    /// bind of the native copy.
    pub fn mounts(&self) -> Mounts {
        let lower = self.lowers.clone();
        match self.kind {
            SnapshotterKind::FuseOverlayfs => vec![Mount::FuseOverlay {
                lower,
                upper: Some(self.upper.clone()),
                work: Some(self.work.clone()),
            }],
            SnapshotterKind::Native => vec![Mount::Bind {
                source: self.upper.clone(),
                readonly: false,
            }],
            _ => vec![Mount::Overlay {
                lower,
                upper: Some(self.upper.clone()),
                work: Some(self.work.clone()),
                userxattr: self.userxattr,
            }],
        }
    }

    /// What was changed through the mount, sorted by path; `on_disk` paths point into the scratch
    /// directory, so they are valid until [`Active::remove`]. Overlay whiteouts become
    /// [`Change::Deleted`], opaque directories [`Change::Opaque`].
    pub fn diff(&self) -> Result<Vec<Change>, SnapshotError> {
        match self.kind {
            SnapshotterKind::Native => {
                diff::tree_changes(&self.upper, self.lowers.first().map(PathBuf::as_path))
            }
            _ => diff::overlay_changes(&self.upper, &self.lowers),
        }
    }

    /// The upper directory, in overlayfs' format, when it can become the next committed snapshot
    /// as it is: kernel overlayfs only (native's upper is a whole tree, fuse-overlayfs marks opaque
    /// directories with its own xattr). The caller moves it away before [`Active::remove`].
    pub fn commit_dir(&self) -> Option<&Path> {
        (self.kind == SnapshotterKind::Overlayfs).then_some(self.upper.as_path())
    }

    /// Deletes the scratch directory. The mount itself lives in exec's mount namespace and is gone
    /// when the step's sandbox exits, so there is nothing to unmount here.
    pub fn remove(self) -> Result<(), SnapshotError> {
        std::fs::remove_dir_all(&self.dir).map_err(io_err("removing", &self.dir))
    }
}
