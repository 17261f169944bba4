//! Verified blob ingest: write → hash → size+digest check → fsync → rename → fsync dir.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::{io_err, set_mode, sync_parent, Store, StoreError};
use crate::digest::{Digest, Hasher};

/// A blob being written. Dropping it without [`Ingest::commit`] removes the temp file.
pub struct Ingest {
    file: BufWriter<NamedTempFile>,
    hasher: Hasher,
    blobs_dir: PathBuf,
    /// The store's GC lock file, opened (not held) up front: commit holds it shared.
    root: PathBuf,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("temp", &self.temp_path())
            .field("bytes", &self.hasher.len())
            .finish()
    }
}

impl Ingest {
    pub(super) fn new(store: &Store) -> Result<Ingest, StoreError> {
        let dir = store.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("ingest-")
            .tempfile_in(dir)
            .map_err(io_err("creating temp file in", dir))?;
        Ok(Ingest {
            file: BufWriter::with_capacity(256 * 1024, tmp),
            hasher: Hasher::new(),
            blobs_dir: store.content_dir().join("blobs").join("sha256"),
            root: store.root().to_path_buf(),
        })
    }

    /// Where the bytes go until commit.
    pub fn temp_path(&self) -> &Path {
        self.file.get_ref().path()
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Make the blob visible under its digest, after checking it against what the caller expects.
    /// On a mismatch the temp file is removed and nothing becomes visible.
    pub fn commit(
        self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        let Ingest {
            file,
            hasher,
            blobs_dir,
            root,
        } = self;
        let size = hasher.len();
        let digest = hasher.finish();
        let tmp_path = file.get_ref().path().to_path_buf();
        let tmp = file
            .into_inner()
            .map_err(|e| io_err("flushing", &tmp_path)(e.into_error()))?;
        if let Some(want) = expected_size {
            if want != size {
                return Err(StoreError::SizeMismatch {
                    digest: expected.cloned().unwrap_or(digest),
                    expected: want,
                    actual: size,
                });
            }
        }
        if let Some(want) = expected {
            if want != &digest {
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                    size,
                });
            }
        }
        let dest = blobs_dir.join(digest.hex());
        // Held shared until the blob is visible and stamped, so a GC sweep (exclusive) either
        // sees it used under a lease or finishes before it exists (lease.rs).
        let _use = super::lease::gc_lock_at(&root, false)?;
        // Another writer may have committed the same content meanwhile; ours is redundant then,
        // and the commit counts as a use of theirs (mtime = last use, see lease.rs).
        // A file of the wrong size (damage found by fsck) is replaced, which repairs it.
        if std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size) {
            let _ = filetime::set_file_mtime(&dest, filetime::FileTime::now());
            return Ok((digest, size));
        }
        tmp.as_file()
            .sync_all()
            .map_err(io_err("syncing", tmp.path()))?;
        set_mode(tmp.path(), 0o644)?;
        tmp.persist(&dest)
            .map_err(|e| io_err("renaming blob into", &dest)(e.error))?;
        sync_parent(&dest)?;
        Ok((digest, size))
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
