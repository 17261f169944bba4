//! Owners the single-uid rung cannot put on disk, kept beside the file in the
//! [`OWNER_XATTR`] extended attribute: written when a layer is unpacked (`layer::apply`) or when
//! a RUN command chowns a file (pid 1's recorder, `seccomp`), shown to the command by faking the
//! owner fields of stat, fstat, lstat, newfstatat and statx, and read back by the layer writer.
//! An xattr follows the inode through renames and overlayfs copy-up, so shadow's
//! `fchown(shadow+, 0, 42)` then `rename(shadow+, shadow)` (useradd) keeps gid 42, and the
//! stat that useradd takes of the old /etc/shadow to copy its owner says 0:42 as on a root build.
//! Files made by a process that only appears as another user (after a faked setuid, or `USER
//! app`) are noted by the supervisor and given that user's ids here once they exist.
//! Must NOT: change a file's content or real owner, or answer for a file without the xattr
//! (the kernel then performs the call itself).

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// `uid:gid` of a file whose owner was recorded instead of applied.
pub const OWNER_XATTR: &str = "user.kiln.owner";

/// The recorded owner of `path` (never of a symlink: user.* xattrs cannot be on one).
pub(super) fn recorded(path: &Path) -> Option<(u32, u32)> {
    let v = xattr::get(path, OWNER_XATTR).ok()??;
    let (u, g) = std::str::from_utf8(&v).ok()?.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// After a chown of `path` to (`uid`, `gid`) (None: unchanged): keeps the owner it now has in
/// the xattr, or removes the xattr when the owner is the mapped 0:0 that the kernel applies.
/// Best effort: a read-only or xattr-less filesystem keeps only the record file's entry.
pub(super) fn chowned(path: &Path, uid: Option<u32>, gid: Option<u32>) {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return;
    };
    if md.file_type().is_symlink() {
        return;
    }
    let (cu, cg) = recorded(path).unwrap_or((md.uid(), md.gid()));
    let new = (uid.unwrap_or(cu), gid.unwrap_or(cg));
    if new == (0, 0) {
        let _ = xattr::remove(path, OWNER_XATTR);
    } else {
        let _ = xattr::set(path, OWNER_XATTR, format!("{}:{}", new.0, new.1).as_bytes());
    }
}

/// Files made by a process that appears as another user: (path, its filesystem uid and gid).
/// Noted before the kernel makes them, given their owner once they exist ([`flush`]).
pub(super) type Pending = std::sync::Arc<std::sync::Mutex<Vec<(PathBuf, (u32, u32))>>>;

pub(super) fn note(pending: &Pending, path: PathBuf, ids: (u32, u32)) {
    crate::sync::lock(pending).push((path, ids));
}

/// Gives each noted file that now exists the owner it was made with (a file that already had
/// one, or a symlink, keeps its own).
pub(super) fn flush(pending: &Pending) {
    let made = std::mem::take(&mut *crate::sync::lock(pending));
    for (path, (uid, gid)) in made {
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.file_type().is_symlink() || recorded(&path).is_some() {
            continue;
        }
        let _ = xattr::set(&path, OWNER_XATTR, format!("{uid}:{gid}").as_bytes());
    }
}

/// Which stat call, for [`fake_stat`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum StatKind {
    /// struct stat (stat, fstat, lstat, newfstatat).
    Stat,
    /// struct statx, with the caller's flags and mask.
    Statx { flags: i32, mask: u32 },
}

/// Performs the stat of `path` (already resolved; the last component followed when `follow`)
/// for the caller whose /proc directory is `proc_dir`, with the recorded owner, into its buffer
/// at `buf`. None: no recorded owner, or something failed — let the kernel answer.
pub(super) fn fake_stat(
    proc_dir: &Path,
    path: &Path,
    follow: bool,
    kind: StatKind,
    buf: u64,
) -> Option<()> {
    let target = if follow {
        std::fs::canonicalize(path).ok()?
    } else {
        path.to_path_buf()
    };
    let (uid, gid) = recorded(&target)?;
    let c = CString::new(target.as_os_str().as_bytes()).ok()?;
    let bytes = match kind {
        StatKind::Stat => {
            // SAFETY: libc::stat is plain old data; zeroed is a valid value.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: `c` is a NUL-terminated path and `st` a stat buffer, both live across the
            // call.
            let r = unsafe {
                libc::fstatat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r != 0 {
                return None;
            }
            st.st_uid = uid;
            st.st_gid = gid;
            // SAFETY: reading the bytes of a plain-old-data struct we own.
            unsafe { as_bytes(&st) }.to_vec()
        }
        StatKind::Statx { flags, mask } => {
            // SAFETY: libc::statx is plain old data; zeroed is a valid value.
            let mut stx: libc::statx = unsafe { std::mem::zeroed() };
            let flags = (flags & libc::AT_STATX_SYNC_TYPE) | libc::AT_SYMLINK_NOFOLLOW;
            // SAFETY: `c` is a NUL-terminated path and `stx` a statx buffer, both live across
            // the call.
            let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), flags, mask, &mut stx) };
            if r != 0 {
                return None;
            }
            stx.stx_uid = uid;
            stx.stx_gid = gid;
            // SAFETY: reading the bytes of a plain-old-data struct we own.
            unsafe { as_bytes(&stx) }.to_vec()
        }
    };
    let mem = File::options()
        .write(true)
        .open(proc_dir.join("mem"))
        .ok()?;
    mem.write_all_at(&bytes, buf).ok()
}

/// # Safety
/// `T` must be plain old data (no padding read as meaningful, no pointers).
unsafe fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: `v` is a valid reference to size_of::<T>() bytes, per the caller's contract.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chown_keeps_the_owner_and_back_to_root_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        if xattr::set(&f, OWNER_XATTR, b"0:0").is_err() {
            eprintln!("SKIP: {} holds no user.* xattrs", dir.path().display());
            return;
        }
        let _ = xattr::remove(&f, OWNER_XATTR);
        let disk = {
            let md = std::fs::metadata(&f).unwrap();
            (md.uid(), md.gid())
        };
        chowned(&f, None, Some(42));
        assert_eq!(recorded(&f), Some((disk.0, 42)));
        chowned(&f, Some(7), None);
        assert_eq!(recorded(&f), Some((7, 42)), "-1 keeps the recorded gid");
        chowned(&f, Some(0), Some(0));
        assert_eq!(recorded(&f), None);
    }
}
