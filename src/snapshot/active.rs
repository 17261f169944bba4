//! The one snapshot model the build uses: an active (writable) snapshot over a plain directory,
//! with containerd's verbs. [`Snapshotter::prepare`] is containerd's `Prepare` with a single parent
//! (the stage rootfs directory), [`Active::mounts`] its `Mounts`, [`Active::diff`] the differ's
//! `Compare` of the active against its parent, [`Active::remove`] its `Remove`. There is no
//! `Commit`: a step's result becomes a layer (the `layer` module) and the engine applies it to the
//! flattened stage rootfs, so nothing ever stacks snapshots.
//!
//! Must not: mount anything (exec mounts the returned [`Mounts`]) or know layers.

use std::path::{Path, PathBuf};

use super::{diff, io_err, native, Change, Mount, Mounts, SnapshotError, SnapshotterKind};

/// Makes active snapshots of one kind (`Auto` resolved first by `exec::probe`, which can try
/// mounts). `userxattr`: overlays will be mounted inside a non-initial user namespace (rootless),
/// so overlay keeps whiteout/opaque markers in `user.` xattrs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshotter {
    kind: SnapshotterKind,
    userxattr: bool,
}

/// A writable layer over `lower`; its own files live in a scratch directory.
#[derive(Debug)]
pub struct Active {
    kind: SnapshotterKind,
    userxattr: bool,
    lower: PathBuf,
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

    /// Prepare a writable layer over `lower` with its scratch space in `dir` (created; outside
    /// `lower`). Overlay kinds make empty `fs` (upper) and `work` directories; native copies
    /// `lower` into `fs`.
    pub fn prepare(&self, lower: &Path, dir: &Path) -> Result<Active, SnapshotError> {
        let upper = dir.join("fs");
        let work = dir.join("work");
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        match self.kind {
            SnapshotterKind::Native => native::copy_tree(lower, &upper)?,
            _ => {
                std::fs::create_dir(&upper).map_err(io_err("creating", &upper))?;
                std::fs::create_dir(&work).map_err(io_err("creating", &work))?;
            }
        }
        Ok(Active {
            kind: self.kind,
            userxattr: self.userxattr,
            lower: lower.to_path_buf(),
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
        let lower = vec![self.lower.clone()];
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
            SnapshotterKind::Native => diff::tree_changes(&self.upper, Some(&self.lower)),
            _ => diff::overlay_changes(&self.upper, std::slice::from_ref(&self.lower)),
        }
    }

    /// Deletes the scratch directory. The mount itself lives in exec's mount namespace and is gone
    /// when the step's sandbox exits, so there is nothing to unmount here.
    pub fn remove(self) -> Result<(), SnapshotError> {
        std::fs::remove_dir_all(&self.dir).map_err(io_err("removing", &self.dir))
    }
}
