//! An active snapshot over a plain directory: the build keeps each stage's root filesystem flattened
//! in one directory (COPY reads destinations and `--chown` names from it), and a RUN step gets a
//! writable layer over that directory. Overlay kinds use it as the single lower layer and read the
//! diff from the upper directory; the native kind copies it and diffs against it.
//!
//! Must not: mount anything (exec mounts the returned [`Mounts`]) or know layers.

use std::path::{Path, PathBuf};

use super::{diff, io_err, native, Change, Mount, Mounts, SnapshotError, SnapshotterKind};

pub struct ActiveOver {
    kind: SnapshotterKind,
    userxattr: bool,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
}

impl ActiveOver {
    /// Prepare a writable layer over `lower` with its scratch space in `dir` (created; must be on
    /// the same filesystem as nothing in particular, but outside `lower`).
    pub fn prepare(
        kind: SnapshotterKind,
        userxattr: bool,
        lower: &Path,
        dir: &Path,
    ) -> Result<ActiveOver, SnapshotError> {
        let upper = dir.join("fs");
        let work = dir.join("work");
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        match kind {
            SnapshotterKind::Native => native::copy_tree(lower, &upper)?,
            SnapshotterKind::Overlayfs | SnapshotterKind::FuseOverlayfs => {
                std::fs::create_dir(&upper).map_err(io_err("creating", &upper))?;
                std::fs::create_dir(&work).map_err(io_err("creating", &work))?;
            }
            SnapshotterKind::Auto => {
                return Err(SnapshotError::Unavailable(
                    kind,
                    "auto must be resolved by exec::probe first".into(),
                ))
            }
        }
        Ok(ActiveOver {
            kind,
            userxattr,
            lower: lower.to_path_buf(),
            upper,
            work,
        })
    }

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

    /// What the step changed, sorted by path; `on_disk` paths point into the scratch directory.
    pub fn changes(&self) -> Result<Vec<Change>, SnapshotError> {
        match self.kind {
            SnapshotterKind::Native => diff::tree_changes(&self.upper, Some(&self.lower)),
            _ => diff::overlay_changes(&self.upper, std::slice::from_ref(&self.lower)),
        }
    }
}
