//! Bringing a stage's root filesystem up to date with a COPY/ADD/WORKDIR layer without writing the
//! files again: the staged tree the layer was just made from is *moved* into the rootfs (rename(2),
//! metadata only), with the same result as applying the layer's tar (`layer::apply_layer`): an
//! entry replaces whatever is at its path, except that a directory over a directory merges, the
//! staged directory's mode, owner and mtime winning as the layer's header would.
//!
//! This is the "COPY writes once" half of BuildKit's approach (its file ops write into the step's
//! snapshot, and the diff is computed from it): kiln copies into a staging tree once, streams the
//! layer from it, then publishes the tree here — never re-extracting a layer it just produced.
//!
//! Must not: copy file data (both trees are in the build workspace, one filesystem), or follow a
//! symlink in the rootfs while merging (a symlink where a directory is staged is replaced, as the
//! layer's directory entry would replace it).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use filetime::FileTime;

/// Move every entry of `staged` into `rootfs` (both directories), merging directories.
/// `chown`: apply staged owners to merged directories (only when this process may chown).
pub fn move_into(staged: &Path, rootfs: &Path, chown: bool) -> io::Result<()> {
    for entry in fs::read_dir(staged)? {
        let entry = entry?;
        let src = entry.path();
        let dst = rootfs.join(entry.file_name());
        let src_is_dir = entry.file_type()?.is_dir();
        match fs::symlink_metadata(&dst) {
            Ok(existing) if existing.is_dir() && src_is_dir => {
                move_into(&src, &dst, chown)?;
                copy_dir_metadata(&src, &dst, chown)?;
            }
            Ok(existing) => {
                // rename(2) replaces a non-directory atomically, but not a directory, and not a
                // non-directory by a directory.
                if existing.is_dir() {
                    fs::remove_dir_all(&dst)?;
                } else if src_is_dir {
                    fs::remove_file(&dst)?;
                }
                fs::rename(&src, &dst)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::rename(&src, &dst)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A merged directory takes the staged directory's metadata, as the layer's directory header sets it.
fn copy_dir_metadata(src: &Path, dst: &Path, chown: bool) -> io::Result<()> {
    let m = fs::symlink_metadata(src)?;
    if chown {
        std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))?;
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    filetime::set_symlink_file_times(
        dst,
        FileTime::from_last_access_time(&m),
        FileTime::from_last_modification_time(&m),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (p, c) in files {
            let path = root.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, c).unwrap();
        }
    }

    #[test]
    fn directories_merge_files_replace_and_links_survive() {
        let staged = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        tree(
            rootfs.path(),
            &[("etc/keep", "old"), ("etc/over", "old"), ("data", "file")],
        );
        tree(
            staged.path(),
            &[
                ("etc/over", "new"),
                ("etc/add", "new"),
                ("data/x", "dir now"),
            ],
        );
        fs::hard_link(
            staged.path().join("etc/add"),
            staged.path().join("etc/add2"),
        )
        .unwrap();
        fs::set_permissions(staged.path().join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
        move_into(staged.path(), rootfs.path(), false).unwrap();
        let r = |p: &str| fs::read_to_string(rootfs.path().join(p)).unwrap();
        assert_eq!(
            (r("etc/keep"), r("etc/over"), r("etc/add"), r("data/x")),
            ("old".into(), "new".into(), "new".into(), "dir now".into())
        );
        let ino = |p: &str| fs::metadata(rootfs.path().join(p)).unwrap().ino();
        assert_eq!(ino("etc/add"), ino("etc/add2"), "hard links stay one inode");
        let mode = fs::metadata(rootfs.path().join("etc")).unwrap().mode() & 0o777;
        assert_eq!(
            mode, 0o750,
            "the staged directory's mode wins, as the layer header's would"
        );
    }

    #[test]
    fn a_staged_directory_replaces_a_symlink_without_following_it() {
        let staged = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), rootfs.path().join("lib")).unwrap();
        tree(staged.path(), &[("lib/x", "inside")]);
        move_into(staged.path(), rootfs.path(), false).unwrap();
        assert!(fs::symlink_metadata(rootfs.path().join("lib"))
            .unwrap()
            .is_dir());
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing written through the link"
        );
    }
}
