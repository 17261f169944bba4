//! Hard links kept within one COPY/ADD source operand, as tonistiigi/fsutil's copier does
//! (`copy/hardlink.go` `getLinkSource`, one `inodes` map per `copy.Copy` call): the first file with
//! a given inode and more than one link is copied, every later one becomes a hard link to that first
//! destination. BuildKit calls `copy.Copy` once per source (and once per wildcard match, see
//! `solver/llbsolver/file/backend.go` `docopy`), so links are never made across operands.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// (dev, ino) → where the first copy of that inode was staged, for one source operand.
#[derive(Default)]
pub(crate) struct HardLinks {
    inodes: HashMap<(u64, u64), PathBuf>,
}

impl HardLinks {
    /// For a regular file about to be staged at `dst`: the earlier staged path to link to, or
    /// `None` (copy it; remembered when it has other links).
    pub(crate) fn source_for(&mut self, meta: &fs::Metadata, dst: &Path) -> Option<PathBuf> {
        if !meta.file_type().is_file() || meta.nlink() < 2 {
            return None;
        }
        let key = (meta.dev(), meta.ino());
        match self.inodes.get(&key) {
            Some(first) => Some(first.clone()),
            None => {
                self.inodes.insert(key, dst.to_path_buf());
                None
            }
        }
    }
}
