//! Overlay snapshots (kernel overlayfs or fuse-overlayfs): each snapshot is `<id>/fs` (its upper
//! directory while active, a lower layer once committed) plus `<id>/work` (overlay's workdir).

use super::{
    diff, dir_usage, io_err, Change, Info, MetaStore, Mount, Mounts, SnapshotError, Snapshotter,
    SnapshotterKind, State, Usage, WhiteoutFormat,
};
use std::path::{Path, PathBuf};

pub struct OverlaySnapshotter {
    meta: MetaStore,
    fuse: bool,
    userxattr: bool,
}

impl OverlaySnapshotter {
    /// `dir` is `<root>/snapshots`; `fuse` selects fuse-overlayfs; `userxattr` as in [`super::open`].
    pub fn new(dir: &Path, fuse: bool, userxattr: bool) -> Result<Self, SnapshotError> {
        let meta = MetaStore::new(dir)?;
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(io_err("creating", &empty))?;
        Ok(OverlaySnapshotter {
            meta,
            fuse,
            userxattr,
        })
    }

    fn mount(&self, lower: Vec<PathBuf>, upper: Option<PathBuf>, work: Option<PathBuf>) -> Mount {
        if self.fuse {
            Mount::FuseOverlay { lower, upper, work }
        } else {
            Mount::Overlay {
                lower,
                upper,
                work,
                userxattr: self.userxattr,
            }
        }
    }

    fn create(&self, key: &str, kind: State, parent: Option<&str>) -> Result<Info, SnapshotError> {
        let info = self.meta.create(key, kind, parent)?;
        let sdir = self.meta.dir.join(&info.id);
        for sub in ["fs", "work"] {
            let p = sdir.join(sub);
            std::fs::create_dir(&p).map_err(io_err("creating", &p))?;
        }
        Ok(info)
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn kind(&self) -> SnapshotterKind {
        if self.fuse {
            SnapshotterKind::FuseOverlayfs
        } else {
            SnapshotterKind::Overlayfs
        }
    }

    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Mounts, SnapshotError> {
        let mut lower = self.meta.chain(parent)?;
        let info = self.create(key, State::Active, parent)?;
        if lower.is_empty() {
            // overlayfs needs at least one lower layer.
            lower.push(self.meta.dir.join("empty"));
        }
        let sdir = self.meta.dir.join(&info.id);
        Ok(vec![self.mount(
            lower,
            Some(sdir.join("fs")),
            Some(sdir.join("work")),
        )])
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Mounts, SnapshotError> {
        let lower = self.meta.chain(parent)?;
        self.create(key, State::View, parent)?;
        Ok(match lower.len() {
            0 => vec![Mount::Bind {
                source: self.meta.dir.join("empty"),
                readonly: true,
            }],
            // A lower-only overlay needs two layers; one layer is just a read-only bind.
            1 => vec![Mount::Bind {
                source: lower[0].clone(),
                readonly: true,
            }],
            _ => vec![self.mount(lower, None, None)],
        })
    }

    fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError> {
        let info = self.meta.commit(name, key)?;
        // overlayfs leaves `work/work` (mode 000) behind; a committed layer needs no workdir.
        let work = self.meta.dir.join(&info.id).join("work");
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(io_err("removing", &work))?;
        }
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        self.meta.remove(key).map(|_| ())
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let info = self.meta.get(key)?;
        dir_usage(&self.meta.dir.join(&info.id).join("fs"))
    }

    fn changes(&self, key: &str) -> Result<Vec<Change>, SnapshotError> {
        let info = self.meta.get(key)?;
        let upper = self.meta.dir.join(&info.id).join("fs");
        let lowers = self.meta.chain(info.parent.as_deref())?;
        diff::overlay_changes(&upper, &lowers)
    }

    fn writable_dir(&self, key: &str) -> Result<PathBuf, SnapshotError> {
        let info = self.meta.get_kind(key, State::Active)?;
        Ok(self.meta.dir.join(&info.id).join("fs"))
    }

    fn whiteout_format(&self) -> WhiteoutFormat {
        WhiteoutFormat::Overlay {
            userxattr: self.userxattr,
        }
    }

    fn list(&self) -> Result<Vec<Info>, SnapshotError> {
        self.meta.list()
    }
}
