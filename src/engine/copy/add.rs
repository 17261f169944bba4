//! ADD of a local file: decided by content, not by name, as BuildKit's
//! `solver/llbsolver/file/unpack.go` does. `isArchivePath` sniffs the compression (gzip, bzip2, xz,
//! zstd or none — moby/go-archive's `DecompressStream`) and extracts only when the first tar header
//! then reads; anything else (a `.gz` of plain text, a text file named `.tar`, an empty tar) is
//! copied byte for byte. `unpack` creates the destination 0755 owned by `--chown`, and with
//! `--chown` every extracted entry gets that owner (go-archive `TarOptions.ChownOpts`).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use crate::layer::sniff::{read_prefix, Compressed, SNIFF_LEN};

/// A reader of the decompressed bytes of the file at `path`.
fn decompressed(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut file = fs::File::open(path)?;
    let mut magic = [0u8; SNIFF_LEN];
    let n = read_prefix(&mut file, &mut magic)?;
    let kind = Compressed::sniff(&magic[..n]);
    let head = io::Cursor::new(magic[..n].to_vec()).chain(file);
    kind.decoder(head)
}

/// BuildKit's `isArchivePath`: a regular file whose (decompressed) content starts with a valid tar
/// header. An empty tar (only the end-of-archive blocks) is not an archive.
pub(crate) fn is_tar_archive(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        _ => return false,
    }
    let Ok(reader) = decompressed(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(reader);
    let Ok(mut entries) = archive.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// Extract the archive at `path` into `dest` (a directory that exists).
pub(crate) fn extract(
    path: &Path,
    dest: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let reader = decompressed(path)?;
    let opts = crate::layer::ApplyOptions {
        allow_devices: false,
        preserve_owners: true,
        overlay_opaque_xattr: None,
    };
    crate::layer::apply_layer(reader, dest, &opts)?;
    Ok(())
}

/// `ADD --chown` on an extracted tree: every entry under `dir` (not `dir` itself) gets the owner.
/// Returns false when owners cannot be set here (the layer writer then overrides them).
pub(crate) fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<bool> {
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        if !super::fsutil::try_lchown(entry.path(), uid, gid)? {
            return Ok(false);
        }
    }
    Ok(true)
}
