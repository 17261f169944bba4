//! Filesystem helpers for the build's COPY steps: copy an entry keeping its metadata, and resolve the
//! owners a `--chown` names from a root filesystem's /etc/passwd and /etc/group.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use filetime::FileTime;

use crate::context::SourceRoot;

/// Copy one entry (file, symlink, directory shell — not its children) from `src` to `dst`, keeping
/// mode and mtime; owners are set by the caller.
pub(crate) fn copy_entry(src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
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
pub(crate) fn try_lchown(path: &Path, uid: u32, gid: u32) -> io::Result<bool> {
    match lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Look a name up in a passwd/group style file of `rootfs`: the numeric id field (2) and, for passwd,
/// the primary group (3).
fn lookup(image: &SourceRoot, file: &str, name: &str) -> io::Result<Option<(u32, Option<u32>)>> {
    // The file is found inside the root (symlinks resolved there, BuildKit's `fs.RootPath`).
    let rel = image
        .resolve_rel(Path::new(file))
        .unwrap_or_else(|_| file.into());
    let Some(path) = image.real_path(&rel) else {
        return Ok(None);
    };
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(None)
        }
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

/// Why a `--chown` or USER value could not be turned into ids.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChownError {
    #[error("reading the image's user database ({file})")]
    Read {
        file: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Resolve `user[:group]` (names or ids) against the image's /etc/passwd and /etc/group the way
/// BuildKit does for `--chown` and for the directories WORKDIR creates: `client/llb/fileop.go`
/// `WithUser` (a number or `root` is an id, anything else a name) and
/// `solver/llbsolver/ops/user_linux.go` `readUser` — a name gives the user's uid and primary gid, a
/// bare id N gives N:N, a group overrides the gid, and a name missing from the image's files (or
/// files that do not exist) leaves 0 rather than failing.
pub(crate) fn resolve_chown(image: &SourceRoot, spec: &str) -> Result<(u32, u32), ChownError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let id = |s: &str| {
        if s == "root" {
            Some(0)
        } else {
            s.parse::<u32>().ok()
        }
    };
    let (mut uid, mut gid) = (0, 0);
    match id(user) {
        Some(n) => (uid, gid) = (n, n),
        None => {
            let found = lookup(image, "etc/passwd", user).map_err(|source| ChownError::Read {
                file: "/etc/passwd",
                source,
            })?;
            if let Some((u, g)) = found {
                (uid, gid) = (u, g.unwrap_or(0));
            }
        }
    }
    match group.map(|g| (g, id(g))) {
        None => {}
        Some((_, Some(n))) => gid = n,
        Some((g, None)) => {
            let found = lookup(image, "etc/group", g).map_err(|source| ChownError::Read {
                file: "/etc/group",
                source,
            })?;
            if let Some((n, _)) = found {
                gid = n;
            }
        }
    }
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
        // BuildKit's readUser: a name gives uid and primary gid; N gives N:N.
        assert_eq!(
            resolve_chown(&SourceRoot::rootfs(d.path()), "app").unwrap(),
            (1000, 1001)
        );
        assert_eq!(
            resolve_chown(&SourceRoot::rootfs(d.path()), "app:staff").unwrap(),
            (1000, 50)
        );
        assert_eq!(
            resolve_chown(&SourceRoot::rootfs(d.path()), "10:20").unwrap(),
            (10, 20)
        );
        assert_eq!(
            resolve_chown(&SourceRoot::rootfs(d.path()), "10").unwrap(),
            (10, 10)
        );
        assert_eq!(
            resolve_chown(&SourceRoot::rootfs(d.path()), "root:staff").unwrap(),
            (0, 50)
        );
        // Unknown names are not an error: they leave 0.
        assert_eq!(
            resolve_chown(&SourceRoot::rootfs(d.path()), "ghost").unwrap(),
            (0, 0)
        );
        assert_eq!(
            resolve_chown(&SourceRoot::rootfs(d.path()), "app:nogroup").unwrap(),
            (1000, 1001)
        );
        assert_eq!(
            resolve_chown(&SourceRoot::rootfs(Path::new("/nonexistent")), "app").unwrap(),
            (0, 0)
        );
    }
}
