//! Filesystem helpers for the build's COPY steps: copy an entry keeping its metadata, and resolve the
//! owners a `--chown` names from a root filesystem's /etc/passwd and /etc/group.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use filetime::FileTime;

/// Copy one entry (file, symlink, directory shell — not its children) from `src` to `dst`, keeping
/// mode and mtime; owners are set by the caller.
pub fn copy_entry(src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src)?;
        remove_existing(dst)?;
        symlink(target, dst)?;
    } else if ft.is_dir() {
        match fs::symlink_metadata(dst) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(dst)?;
                fs::create_dir(dst)?;
            }
            Err(_) => fs::create_dir(dst)?,
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if ft.is_file() {
        remove_existing(dst)?;
        fs::copy(src, dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else {
        // Sockets, FIFOs and devices in a build context are skipped, as BuildKit's fsutil does.
        return Ok(());
    }
    let mtime = FileTime::from_last_modification_time(meta);
    filetime::set_symlink_file_times(dst, mtime, mtime)?;
    Ok(())
}

fn remove_existing(dst: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(dst),
        Ok(_) => fs::remove_file(dst),
        Err(_) => Ok(()),
    }
}

/// Set the owner of an entry without following symlinks. Returns false when the process may not
/// chown (rootless without a user namespace): the caller records owners in the layer instead.
pub fn try_lchown(path: &Path, uid: u32, gid: u32) -> io::Result<bool> {
    match lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Look a name up in a passwd/group style file of `rootfs`: the numeric id field (2) and, for passwd,
/// the primary group (3).
fn lookup(rootfs: &Path, file: &str, name: &str) -> io::Result<Option<(u32, Option<u32>)>> {
    let text = match fs::read_to_string(rootfs.join(file)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            let id = f[2].parse().ok();
            let gid = f.get(3).and_then(|g| g.parse().ok());
            return Ok(id.map(|id| (id, gid)));
        }
    }
    Ok(None)
}

/// Why a `--chown` value could not be turned into ids.
#[derive(Debug, thiserror::Error)]
pub enum ChownError {
    #[error("unknown user {0:?} (not in the image's /etc/passwd)")]
    UnknownUser(String),
    #[error("unknown group {0:?} (not in the image's /etc/group)")]
    UnknownGroup(String),
    #[error("reading the image's user database")]
    Read(#[source] io::Error),
}

/// Resolve `user[:group]` (names or ids) against the image's /etc/passwd and /etc/group. As Docker
/// documents for `--chown`, a user without a group uses the same numeric id as the group.
pub fn resolve_chown(rootfs: &Path, spec: &str) -> Result<(u32, u32), ChownError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            lookup(rootfs, "etc/passwd", user)
                .map_err(ChownError::Read)?
                .ok_or_else(|| ChownError::UnknownUser(user.to_string()))?
                .0
        }
    };
    let gid = match group {
        None | Some("") => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                lookup(rootfs, "etc/group", g)
                    .map_err(ChownError::Read)?
                    .ok_or_else(|| ChownError::UnknownGroup(g.to_string()))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_names_resolve_from_the_image() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_chown(d.path(), "app").unwrap(), (1000, 1000));
        assert_eq!(resolve_chown(d.path(), "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_chown(d.path(), "10:20").unwrap(), (10, 20));
        let e = resolve_chown(d.path(), "ghost").unwrap_err().to_string();
        assert!(e.contains("ghost"), "{e}");
        let e = resolve_chown(d.path(), "app:nogroup")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nogroup"), "{e}");
    }
}
