//! The local content store: an OCI image layout under `<root>/content` (blobs, `index.json` tags),
//! verified atomic ingest, fsck, garbage collection by policy with leases protecting in-flight
//! work, export to OCI layouts and docker-archives, and the SQLite metadata database
//! (`<root>/kiln.db`) for what the layout cannot hold.
//!
//! Invariant: nothing the store calls committed is ever partial. Blobs are written to a temp file
//! under `<root>/tmp`, hashed on the way, checked (size + digest), fsynced, then renamed into
//! `blobs/sha256/<hex>` and the directory fsynced. `index.json` is replaced the same way, under an
//! flock so concurrent taggers never lose each other's updates.
//!
//! Must not: know about the build cache, registries, or how layers are made.

mod check;
mod export;
mod gc;
mod gc_policy;
mod ingest;
mod lease;
mod meta;
mod snapshot_check;
mod snapshots;
mod tags;
mod tracked;

pub use check::{Damaged, FsckReport, Missing};
pub use export::{import_oci_layout, write_docker_archive, write_oci_layout};
pub use gc::{disk_usage, Bucket, GcOptions, GcReport, RemovedRecord, Usage};
pub use gc_policy::{as_bytes, policies_from_config, DiskStat, Filter, GcPolicy, RECORD_TYPES};
pub use ingest::Ingest;
pub use lease::Lease;
pub use meta::{BuildDetails, BuildRecord, Metadata};
pub use snapshots::{
    chain_id, Committed, FillError, SnapshotRecord, NAMESPACE as SNAPSHOT_NAMESPACE,
};
pub use tags::StoredImage;
pub use tracked::{Tracked, TrackedRecord};

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::image::{ImageError, Index};

/// Largest JSON blob (manifest, index, config) the store reads into memory.
pub const MAX_JSON_BLOB: u64 = 16 << 20;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] crate::report::IoError),
    #[error("blob digest mismatch: expected {expected}, got {actual} ({size} bytes); nothing was committed")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob size mismatch for {digest}: expected {expected} bytes, got {actual}; nothing was committed")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error("blob {digest} is {size} bytes, over the {max} byte limit for a JSON document")]
    TooLarge { digest: Digest, size: u64, max: u64 },
    #[error("reading {what} {digest}")]
    Image {
        what: &'static str,
        digest: Digest,
        #[source]
        source: ImageError,
    },
    #[error("writing {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: ImageError,
    },
    #[error("parsing {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: ImageError,
    },
    #[error("invalid tag name {0:?}: use letters, digits and -._:@/+")]
    BadTagName(String),
    #[error("image {0:?} not found in the store")]
    ImageNotFound(String),
    #[error("{name}: {media_type} {digest} is not an image manifest or index")]
    NotAnImage {
        name: String,
        digest: Digest,
        media_type: String,
    },
    #[error("{name}: index {digest} has no manifest for platform {platform}")]
    NoPlatform {
        name: String,
        digest: Digest,
        platform: String,
    },
    #[error("{0}")]
    Layout(String),
    #[error("unpacking snapshot {chain}")]
    Snapshot {
        chain: Digest,
        #[source]
        source: snapshots::FillError,
    },
    #[error("prune filter {filter:?}: {message}")]
    BadFilter { filter: String, message: String },
    #[error("metadata database {path}: {action}")]
    Db {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "metadata database {path} has schema version {found}, newer than this kiln ({supported})"
    )]
    DbTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let at = crate::report::IoError::at(action, path);
    move |source| StoreError::Io(at(source))
}

/// An opened store. Cheap to share between threads (`&Store` is all operations need).
pub struct Store {
    root: PathBuf,
    content: PathBuf,
    /// This process's private temp directory under `<root>/tmp`, flocked for the Store's lifetime so
    /// that another process opening the store does not sweep our in-flight ingests.
    session: PathBuf,
    /// The session directory itself, opened and flocked (see `new_session`).
    _session_lock: File,
    meta: Metadata,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

/// The lock file inside a session directory of kiln before 2026-12 (the directory itself is
/// locked now); still honoured by the sweep so that an older process's session is left alone.
const OLD_SESSION_LOCK: &str = "lock";

impl Store {
    /// Open (creating when needed) the store at `root`; sweeps temp files left by crashed processes.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        meta::refuse_newer(&root.join("kiln.db"))?;
        let content = root.join("content");
        let blobs = content.join("blobs").join("sha256");
        let tmp = root.join("tmp");
        for d in [root, &content, &blobs, &tmp] {
            fs::create_dir_all(d).map_err(io_err("creating store directory", d))?;
        }
        sweep_tmp(&tmp)?;
        let (session, lock) = new_session(&tmp)?;
        let store = Store {
            root: root.to_path_buf(),
            content,
            session,
            _session_lock: lock,
            meta: Metadata::open(&root.join("kiln.db"))?,
        };
        let layout = store.content.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.content.join("index.json");
        if !index.exists() {
            let bytes = crate::image::canonical_json(&Index::default()).map_err(|source| {
                StoreError::Encode {
                    what: "index.json",
                    source,
                }
            })?;
            let _guard = store.lock_index()?;
            if !index.exists() {
                store.write_atomic(&index, &bytes)?;
            }
        }
        Ok(store)
    }

    /// `/var/lib/kiln` as root, else `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`, decided
    /// from the uid kiln was started as (see `config::defaults`).
    pub fn default_root() -> PathBuf {
        crate::config::defaults::state_root()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI image layout directory (`skopeo inspect oci:<this>:<tag>` reads it).
    pub fn content_dir(&self) -> &Path {
        &self.content
    }

    /// This process's temp directory (in-flight ingests live here until committed).
    pub fn tmp_dir(&self) -> &Path {
        &self.session
    }

    pub fn db(&self) -> &Metadata {
        &self.meta
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.content.join("blobs").join(d.algorithm()).join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(d.clone()),
            _ => io_err("opening blob", &p)(e),
        })
    }

    /// Read a small blob (JSON) whole, verifying its digest.
    pub fn read_blob(&self, d: &Digest, max: u64) -> Result<Vec<u8>, StoreError> {
        let f = self.open_blob(d)?;
        let p = self.blob_path(d);
        let size = f
            .metadata()
            .map_err(io_err("reading metadata of", &p))?
            .len();
        if size > max {
            return Err(StoreError::TooLarge {
                digest: d.clone(),
                size,
                max,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        f.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(io_err("reading blob", &p))?;
        let actual = Digest::of(&buf);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                expected: d.clone(),
                actual,
                size: buf.len() as u64,
            });
        }
        Ok(buf)
    }

    /// Start writing a blob; see [`Ingest::commit`].
    pub fn ingest(&self) -> Result<Ingest, StoreError> {
        Ingest::new(self)
    }

    /// Store a blob from a reader, checking it against `expected` digest and size when given.
    pub fn ingest_reader<R: Read>(
        &self,
        mut r: R,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        let mut w = self.ingest()?;
        let tmp = w.temp_path().to_path_buf();
        io::copy(&mut r, &mut w).map_err(io_err("copying into", &tmp))?;
        w.commit(expected, expected_size)
    }

    pub fn put_bytes(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        if let Some(e) = expected {
            if e != &d {
                return Err(StoreError::DigestMismatch {
                    expected: e.clone(),
                    actual: d,
                    size: bytes.len() as u64,
                });
            }
        }
        if self.has_blob(&d) {
            return Ok(d);
        }
        Ok(self
            .ingest_reader(bytes, Some(&d), Some(bytes.len() as u64))?
            .0)
    }

    /// Replace `path` with `bytes` atomically and durably; the temp file lives in our session dir,
    /// so a crash leaves it where the next start sweeps it.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        crate::atomic::atomic_write(path, bytes, 0o644, Some(&self.session))
            .map_err(io_err("replacing", path))
    }

    /// Hold the index.json lock (an flock on `<root>/index.lock`) until the guard drops.
    pub(crate) fn lock_index(&self) -> Result<File, StoreError> {
        let p = self.root.join("index.lock");
        let f = File::create(&p).map_err(io_err("creating", &p))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("locking", &p)(e.into()))?;
        Ok(f)
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err("setting permissions of", path))
}

/// fsync the directory holding `path`, so a rename into it survives a crash.
pub(crate) fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// Create this process's session directory under `tmp` and flock the directory itself.
///
/// The lock is on the directory, not a file in it, so a session is never visible half set up:
/// between `mkdir` and `flock` a sweeping process may take the free lock and remove the
/// directory. The creator then wakes (after the sweeper let go) to find its path gone or another
/// directory there, and makes a fresh one. A process killed at any point leaves either nothing
/// or an unlocked directory, which the next open removes at once.
fn new_session(tmp: &Path) -> Result<(PathBuf, File), StoreError> {
    loop {
        let session = tempfile::Builder::new()
            .prefix("session-")
            .tempdir_in(tmp)
            .map_err(io_err("creating session directory in", tmp))?
            .keep();
        let dir = match File::open(&session) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("opening", &session)(e)),
        };
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("locking", &session)(e.into()))?;
        let held = dir.metadata().map_err(io_err("inspecting", &session))?;
        match fs::symlink_metadata(&session) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok((session, dir))
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("inspecting", &session)(e)),
        }
    }
}

/// Remove what crashed processes left in `tmp/`: loose files, and session directories nobody
/// holds the lock of any more (the directory's flock, and for an older kiln's session its
/// `lock` file's).
fn sweep_tmp(tmp: &Path) -> Result<(), StoreError> {
    let entries = fs::read_dir(tmp).map_err(io_err("listing", tmp))?;
    for entry in entries {
        let entry = entry.map_err(io_err("listing", tmp))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io_err("inspecting", &path))?;
        if !ft.is_dir() {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("removing leftover", &path)(e))
                }
                _ => continue,
            }
        }
        let dir = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        if !try_lock(&dir) {
            continue;
        }
        match File::open(path.join(OLD_SESSION_LOCK)) {
            Ok(old) if !try_lock(&old) => continue,
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("opening", &path.join(OLD_SESSION_LOCK))(e))
            }
            _ => {}
        }
        // Removed while holding the directory's lock: a process that created it and is
        // waiting for the lock sees it gone and starts over (`new_session`).
        remove_tree(&path)?;
    }
    Ok(())
}

fn try_lock(f: &File) -> bool {
    rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

fn remove_tree(path: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing leftover", path)(e)),
        _ => Ok(()),
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Best effort: a leftover session is swept by the next open anyway.
        let _ = fs::remove_dir_all(&self.session);
    }
}
