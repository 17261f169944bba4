//! Replacing a file so that a reader or a crash sees the old bytes or the new, never a mix: the one
//! helper every state file goes through (store index and layout files, exported layouts, the
//! daemon's persisted config, `~/.docker/config.json`). ocidir-rs' "write to a temp file in the
//! same directory, fsync, rename, fsync the directory" — the rename is atomic on POSIX filesystems,
//! and the two fsyncs make it durable (ext4's `auto_da_alloc` is not a guarantee; see rename(2) and
//! the ext4 data=ordered notes).
//!
//! Must not: know what it writes, or leave a temp file behind on error (tempfile removes it).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replace `path` with `bytes`, mode `mode`, durably. The temp file lives in `tmp_dir` when given
/// (on the same filesystem: a store's session directory, swept after a crash), else next to `path`.
pub fn atomic_write(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    tmp_dir: Option<&Path>,
) -> io::Result<()> {
    atomic_write_with(path, mode, tmp_dir, |f| f.write_all(bytes))
}

/// [`atomic_write`] with the content streamed by `fill` (a tar, a large JSON document).
pub fn atomic_write_with(
    path: &Path,
    mode: u32,
    tmp_dir: Option<&Path>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent(path);
    let mut t = tempfile::Builder::new()
        .prefix(".kiln-atomic-")
        .tempfile_in(tmp_dir.unwrap_or(dir))?;
    fill(t.as_file_mut())?;
    t.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    t.as_file().sync_all()?;
    t.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// fsync a directory, so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_with_the_mode_asked_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        atomic_write(&p, b"old", 0o644, None).unwrap();
        atomic_write(&p, b"new", 0o600, None).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        atomic_write(&p, b"kept", 0o644, None).unwrap();
        let e =
            atomic_write_with(&p, 0o644, None, |_| Err(io::Error::other("disk full"))).unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&p).unwrap(), b"kept");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
