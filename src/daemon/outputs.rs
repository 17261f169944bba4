//! Outputs written into a shared folder belong to whoever asked for them: before a build the
//! missing parents of each output are created, and after it the output (the OCI layout directory
//! or the tar) and those parents are handed to the calling peer's uid/gid (SO_PEERCRED), so a
//! worker running as uid 1000 can read and remove what a root daemon wrote for it.
//!
//! Must not: follow a symlink (every component is checked, ownership changes use lchown) or touch
//! anything but the outputs of this build and the directories made for them.

use std::os::unix::fs::{lchown, DirBuilderExt};
use std::path::{Path, PathBuf};

use crate::api::Peer;
use crate::engine::Output;

/// Why an output's place could not be prepared or handed over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputError {
    #[error("creating the output directory {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("output path {0} goes through a symlink or a non-directory")]
    NotADirectory(PathBuf),
    #[error("giving {path} to uid {uid}")]
    Chown {
        path: PathBuf,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn dest(o: &Output) -> &Path {
    match o {
        Output::Oci { dest } | Output::Docker { dest } => dest,
    }
}

/// Create the missing parents of every output (mode 0755), owned by `peer`. Returns the outputs
/// to hand over after the build: those that do not exist yet or already belong to the peer (an
/// existing path of someone else is written as before but never given away).
pub(crate) fn prepare(outputs: &[Output], peer: Option<Peer>) -> Result<Vec<PathBuf>, OutputError> {
    use std::os::unix::fs::MetadataExt;
    let mut ours = Vec::new();
    for o in outputs {
        match std::fs::symlink_metadata(dest(o)) {
            Err(_) => ours.push(dest(o).to_path_buf()),
            Ok(m) if peer.is_some_and(|p| p.uid == m.uid()) => ours.push(dest(o).to_path_buf()),
            Ok(_) => {}
        }
        let Some(parent) = dest(o).parent() else {
            continue;
        };
        let mut missing = Vec::new();
        let mut at = parent;
        while std::fs::symlink_metadata(at).is_err() {
            missing.push(at.to_path_buf());
            match at.parent() {
                Some(p) => at = p,
                None => break,
            }
        }
        if !std::fs::metadata(at).map(|m| m.is_dir()).unwrap_or(false) {
            return Err(OutputError::NotADirectory(at.to_path_buf()));
        }
        for dir in missing.into_iter().rev() {
            match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(OutputError::Mkdir { path: dir, source }),
            }
            let is_dir = std::fs::symlink_metadata(&dir)
                .map(|m| m.file_type().is_dir())
                .unwrap_or(false);
            if !is_dir {
                return Err(OutputError::NotADirectory(dir));
            }
            give(&dir, peer)?;
        }
    }
    Ok(ours)
}

/// After a build: the outputs [`prepare`] chose (recursively, symlinks not followed) to `peer`.
pub(crate) fn hand_over(ours: &[PathBuf], peer: Option<Peer>) -> Result<(), OutputError> {
    for root in ours {
        if std::fs::symlink_metadata(root).is_err() {
            continue;
        }
        for entry in walkdir::WalkDir::new(root).follow_links(false) {
            let Ok(entry) = entry else { continue };
            give(entry.path(), peer)?;
        }
    }
    Ok(())
}

/// lchown to the peer; nothing to do without a peer or when the daemon is that peer. A daemon that
/// may not chown (rootless) leaves its own files as they are.
fn give(path: &Path, peer: Option<Peer>) -> Result<(), OutputError> {
    let Some(p) = peer else { return Ok(()) };
    if p.uid == rustix::process::geteuid().as_raw() && p.gid == rustix::process::getegid().as_raw()
    {
        return Ok(());
    }
    match lchown(path, Some(p.uid), Some(p.gid)) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::EPERM) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            Ok(())
        }
        Err(source) => Err(OutputError::Chown {
            path: path.to_path_buf(),
            uid: p.uid,
            source,
        }),
    }
}
