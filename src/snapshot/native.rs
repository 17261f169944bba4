//! The native kind's copy: a full copy of the stage rootfs (FICLONE reflinks when the filesystem
//! supports them, else copy_file_range through std), later diffed against the original. Also used
//! by the engine to give a RUN step a private copy of a read-write bind mount.
//!
//! Must not: mount, or decide what a change is (that is `diff`).

use super::{io_err, SnapshotError};
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Copies the tree `src` to the new directory `dst`, keeping owners, modes, times, xattrs,
/// hard links, symlinks and device nodes.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    for e in walkdir::WalkDir::new(src) {
        let e = e.map_err(|e| {
            SnapshotError::Io(crate::report::IoError {
                action: "walking",
                path: e.path().unwrap_or(src).to_path_buf(),
                source: e.into(),
            })
        })?;
        let rel = e.path().strip_prefix(src).unwrap_or(e.path());
        let to = dst.join(rel);
        let m = std::fs::symlink_metadata(e.path()).map_err(io_err("reading", e.path()))?;
        let ft = m.file_type();
        if ft.is_dir() {
            if rel.as_os_str().is_empty() {
                std::fs::create_dir_all(&to).map_err(io_err("creating", &to))?;
            } else {
                std::fs::create_dir(&to).map_err(io_err("creating", &to))?;
            }
            dirs.push((e.path().to_path_buf(), to, m));
            continue;
        }
        if m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                std::fs::hard_link(first, &to).map_err(io_err("hard-linking", &to))?;
                continue;
            }
            links.insert((m.dev(), m.ino()), to.clone());
        }
        if !copy_entry(e.path(), &to, &m)? {
            continue; // sockets are not part of a filesystem image
        }
    }
    // Directory times last: creating entries changes them.
    for (from, to, m) in dirs.iter().rev() {
        set_meta(from, to, m)?;
    }
    Ok(())
}

/// Copy one non-directory entry (file, symlink, device, FIFO) with its metadata; false for a
/// socket, which is not part of a filesystem image.
pub(crate) fn copy_entry(
    from: &Path,
    to: &Path,
    m: &std::fs::Metadata,
) -> Result<bool, SnapshotError> {
    let ft = m.file_type();
    if ft.is_file() {
        copy_file(from, to)?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(from).map_err(io_err("reading link", from))?;
        std::os::unix::fs::symlink(&target, to).map_err(io_err("creating symlink", to))?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let kind = if ft.is_char_device() {
            rustix::fs::FileType::CharacterDevice
        } else if ft.is_block_device() {
            rustix::fs::FileType::BlockDevice
        } else {
            rustix::fs::FileType::Fifo
        };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            to,
            kind,
            rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777),
            m.rdev(),
        )
        .map_err(|err| io_err("creating node", to)(err.into()))?;
    } else {
        return Ok(false);
    }
    set_meta(from, to, m)?;
    Ok(true)
}

fn copy_file(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let src = std::fs::File::open(from).map_err(io_err("opening", from))?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(io_err("creating", to))?;
    if rustix::fs::ioctl_ficlone(&dst, &src).is_ok() {
        return Ok(());
    }
    let (mut src, mut dst) = (src, dst);
    std::io::copy(&mut src, &mut dst).map_err(io_err("copying", from))?;
    Ok(())
}

/// Owner before mode (chown clears set-id bits), xattrs after chown (it drops
/// `security.capability`), times last.
pub(crate) fn set_meta(from: &Path, to: &Path, m: &std::fs::Metadata) -> Result<(), SnapshotError> {
    std::os::unix::fs::lchown(to, Some(m.uid()), Some(m.gid())).map_err(io_err("chowning", to))?;
    if !m.file_type().is_symlink() {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(io_err("chmoding", to))?;
    }
    if let Ok(names) = xattr::list(from) {
        for n in names {
            // overlayfs' markers belong to the snapshot they are in, never to a copy.
            if super::is_private_xattr(&n) {
                continue;
            }
            if let Ok(Some(v)) = xattr::get(from, &n) {
                xattr::set(to, &n, &v).map_err(io_err("setting xattr on", to))?;
            }
        }
    }
    let at = filetime::FileTime::from_last_access_time(m);
    let mt = filetime::FileTime::from_last_modification_time(m);
    filetime::set_symlink_file_times(to, at, mt).map_err(io_err("setting times of", to))
}
