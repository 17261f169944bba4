//! A build's scratch directory (`<root>/builds/build-XXXX`: stage root filesystems, staging trees,
//! RUN snapshots), removed without the user waiting for it. Deleting a large tree costs seconds of
//! inode work (measured: 6–18 s after a COPY of 20,000 files, `benches/e2e/RESULTS.md`), so the
//! directory is renamed into `<root>/builds/trash/` — one rename(2) — and deleted on a background
//! thread. What an exiting CLI leaves half-deleted there is swept by the next build (also in the
//! background) and by `kiln prune`.
//!
//! Must not: delete anything outside `<root>/builds`, or make a build fail because cleanup did.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The scratch directory of one build; dropped = moved to the trash and deleted in the background.
pub(super) struct Workspace {
    path: PathBuf,
    trash: PathBuf,
}

impl Workspace {
    /// A fresh `<builds>/build-XXXX`, after sweeping what earlier builds left in the trash.
    pub(super) fn create(builds: &Path) -> io::Result<Workspace> {
        fs::create_dir_all(builds)?;
        let trash = builds.join("trash");
        sweep_in_background(&trash);
        let dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(builds)?;
        Ok(Workspace {
            path: dir.keep(),
            trash,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let Some(name) = self.path.file_name() else {
            return;
        };
        let dest = self.trash.join(name);
        if fs::create_dir_all(&self.trash).is_ok() && fs::rename(&self.path, &dest).is_ok() {
            std::thread::spawn(move || {
                let _ = fs::remove_dir_all(&dest);
            });
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Delete every entry of `trash` on a background thread (a concurrent sweep of the same entry
/// only finds it gone).
fn sweep_in_background(trash: &Path) {
    let Ok(entries) = fs::read_dir(trash) else {
        return;
    };
    let paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    if !paths.is_empty() {
        std::thread::spawn(move || {
            for p in paths {
                let _ = fs::remove_dir_all(&p);
            }
        });
    }
}

/// The directories (relative to the store root) whose entries are build scratch: GC removes the
/// ones no live build's lease names (`store::GcOptions::scratch`).
pub fn scratch_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("builds")]
}

/// Delete the trash now (`kiln prune`): what builds of processes that exited left behind.
pub fn empty_trash(store_root: &Path) -> io::Result<()> {
    let trash = store_root.join("builds").join("trash");
    match fs::remove_dir_all(&trash) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_workspace_leaves_the_builds_dir_at_once_and_prune_empties_the_trash() {
        let root = tempfile::tempdir().unwrap();
        let builds = root.path().join("builds");
        let ws = Workspace::create(&builds).unwrap();
        fs::create_dir_all(ws.path().join("stage-0/usr/lib")).unwrap();
        fs::write(ws.path().join("stage-0/usr/lib/f"), b"x").unwrap();
        let path = ws.path().to_path_buf();
        drop(ws);
        assert!(
            !path.exists(),
            "the workspace is gone from builds/ when the build returns"
        );
        empty_trash(root.path()).unwrap();
        assert!(!builds.join("trash").exists());
        let left: Vec<_> = fs::read_dir(&builds).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
