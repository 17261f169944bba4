//! Committed snapshots: each layer of an image chain unpacked once, into a directory of its own,
//! in overlayfs' on-disk format (whiteouts as 0/0 character devices, opaque directories marked
//! by an xattr), so a step's root filesystem is an overlay of its chain's snapshots as read-only
//! lowers plus a fresh upper — containerd's overlayfs snapshotter (`snapshots/overlay/
//! overlay.go`), with its vocabulary: a snapshot is *committed* under its key, the OCI chain ID
//! of the layers below and including it (image-spec `config.md`, "Layer ChainID").
//!
//! Directories are named by a short prefix of the chain ID (`snapshots/<16 hex>/`): overlay's
//! mount options must fit in one page, which is why containerd uses numeric ids. Records are
//! tracked rows of `kiln.db` (namespace `snapshot`, kind `regular`), so GC collects them with
//! their directory by the same policies as cache records, and a lease keeps every snapshot a
//! live build looked up.
//!
//! Crash safety: a snapshot is filled in this process's session directory under `tmp/` (swept
//! after a crash), renamed into `snapshots/`, and only then recorded. A record therefore always
//! names a complete directory; a directory without a record (killed between the rename and the
//! record) is replaced by the next fill and removed by GC's sweep. Identical snapshots wanted by
//! concurrent builds (threads or processes) are filled once: the fill holds an flock on
//! `snapshots/<name>.lock`, and whoever waited finds the record.
//!
//! Must not: know tar or how a snapshot is filled (the caller's `fill` does), or mount anything.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::{io_err, Store, StoreError, Tracked};
use crate::digest::Digest;

/// The records' namespace in `kiln.db`.
pub const NAMESPACE: &str = "snapshot";
/// Directory of committed snapshots, relative to the store root.
pub(super) const DIR: &str = "snapshots";

/// What a snapshot record holds besides its key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotRecord {
    /// The chain ID below this one (None: the first layer).
    pub parent: Option<String>,
    /// The uncompressed digest of the layer this snapshot holds.
    pub diff_id: String,
    /// The layer blob it was made from or made into (`kiln fsck --snapshots` re-applies it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// Relative to the store root.
    pub dir: String,
}

/// A committed snapshot: its chain ID and the directory holding its files (an overlay lower).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub chain: Digest,
    pub diff_id: Digest,
    pub dir: PathBuf,
    /// Made by this call (false: found committed).
    pub made: bool,
}

/// The OCI chain ID of `parent` followed by a layer with `diff_id`: `diff_id` for the first layer,
/// else `sha256(parent + " " + diff_id)`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
    }
}

/// Why a snapshot could not be made; the fill's own error is kept as the cause.
pub type FillError = Box<dyn std::error::Error + Send + Sync>;

impl Store {
    fn snapshot_rel(chain: &Digest) -> PathBuf {
        Path::new(DIR).join(&chain.hex()[..16])
    }

    /// The committed snapshot of `chain`, stamped as used (so a live lease keeps it), or None
    /// when there is none or its directory is gone.
    pub fn snapshot(&self, chain: &Digest) -> Result<Option<Committed>, StoreError> {
        let Some(value) = self.use_record(NAMESPACE, &chain.to_string())? else {
            return Ok(None);
        };
        let Ok(rec) = serde_json::from_str::<SnapshotRecord>(&value) else {
            return Ok(None);
        };
        let (Some(dir), Ok(diff_id)) = (self.record_dir(Path::new(&rec.dir)), rec.diff_id.parse())
        else {
            return Ok(None);
        };
        Ok(dir.is_dir().then(|| Committed {
            chain: chain.clone(),
            diff_id,
            dir,
            made: false,
        }))
    }

    /// The committed snapshot of the layer `diff_id` (blob `blob`) over `parent`, made by `fill`
    /// (given an empty directory to fill) when there is none yet. Concurrent callers for the same
    /// chain wait for one fill.
    pub fn commit_snapshot(
        &self,
        parent: Option<&Digest>,
        diff_id: &Digest,
        blob: Option<&Digest>,
        fill: impl FnOnce(&Path) -> Result<(), FillError>,
    ) -> Result<Committed, StoreError> {
        let chain = chain_id(parent, diff_id);
        if let Some(c) = self.snapshot(&chain)? {
            return Ok(c);
        }
        let dir = self.root().join(DIR);
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let rel = Self::snapshot_rel(&chain);
        let lock_path = self.root().join(rel.with_extension("lock"));
        let lock = File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("locking", &lock_path)(e.into()))?;
        // Whoever held the lock before us may have made it.
        if let Some(c) = self.snapshot(&chain)? {
            return Ok(c);
        }
        let tmp = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempdir_in(&self.session)
            .map_err(io_err("creating a snapshot directory in", &self.session))?;
        // The root of the merged tree takes its mode from the top-most snapshot: a layer's `./`
        // entry is never applied, and a temp directory is 0700.
        super::set_mode(tmp.path(), 0o755)?;
        fill(tmp.path()).map_err(|source| StoreError::Snapshot {
            chain: chain.clone(),
            source,
        })?;
        let final_dir = self.root().join(&rel);
        // A directory without a record: a crash between rename and record, never trusted.
        self.discard_dir(&final_dir)?;
        fs::rename(tmp.path(), &final_dir).map_err(io_err("committing", &final_dir))?;
        let _ = tmp.keep();
        super::sync_parent(&final_dir)?;
        let record = SnapshotRecord {
            parent: parent.map(|p| p.to_string()),
            diff_id: diff_id.to_string(),
            blob: blob.map(|b| b.to_string()),
            dir: rel.to_string_lossy().into_owned(),
        };
        let value = serde_json::to_string(&record).unwrap_or_default();
        let tracked = Tracked {
            kind: "regular".into(),
            blobs: Vec::new(),
            dir: Some(rel),
            description: format!("snapshot of layer {}", diff_id.short()),
        };
        self.put_tracked(NAMESPACE, &chain.to_string(), &value, &tracked)?;
        Ok(Committed {
            chain,
            diff_id: diff_id.clone(),
            dir: final_dir,
            made: true,
        })
    }

    /// Remove a directory by renaming it into this session's temp space first, so that a crash
    /// mid-delete leaves nothing under a name a reader trusts.
    pub(super) fn discard_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if fs::symlink_metadata(dir).is_err() {
            return Ok(());
        }
        let doomed = tempfile::Builder::new()
            .prefix("doomed-")
            .tempdir_in(&self.session)
            .map_err(io_err("creating a directory in", &self.session))?
            .keep();
        let to = doomed.join("d");
        fs::rename(dir, &to).map_err(io_err("moving aside", dir))?;
        fs::remove_dir_all(&doomed).map_err(io_err("removing", &doomed))
    }

    /// Every snapshot record (chain ID, record), for fsck.
    pub fn snapshot_records(&self) -> Result<Vec<(String, SnapshotRecord)>, StoreError> {
        Ok(self
            .db()
            .record_list(NAMESPACE)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{GcOptions, GcPolicy};

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn fill_with(name: &'static str) -> impl FnOnce(&Path) -> Result<(), FillError> {
        move |dir| Ok(fs::write(dir.join(name), name)?)
    }

    #[test]
    fn a_snapshot_is_filled_once_and_found_by_its_chain_id() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let a = store
            .commit_snapshot(None, &d("a"), None, fill_with("a"))
            .unwrap();
        assert_eq!(a.chain, d("a"), "the first layer's chain ID is its diff_id");
        let b = store
            .commit_snapshot(Some(&a.chain), &d("b"), None, fill_with("b"))
            .unwrap();
        assert_eq!(b.chain, chain_id(Some(&d("a")), &d("b")));
        assert!(b.dir.join("b").is_file());
        let again = store
            .commit_snapshot(Some(&a.chain), &d("b"), None, |_| panic!("filled twice"))
            .unwrap();
        assert_eq!((&again.dir, again.made, b.made), (&b.dir, false, true));
        assert!(store.fsck().unwrap().is_clean());
    }

    #[test]
    fn a_failed_fill_leaves_no_record_and_no_directory() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let err = store
            .commit_snapshot(None, &d("a"), None, |dir| {
                fs::write(dir.join("half"), "x")?;
                Err("killed half way".into())
            })
            .unwrap_err();
        assert!(err.to_string().contains("unpacking snapshot"), "{err}");
        assert_eq!(store.snapshot(&d("a")).unwrap(), None);
        let left: Vec<_> = fs::read_dir(root.path().join(DIR))
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let a = store
            .commit_snapshot(None, &d("a"), None, fill_with("a"))
            .unwrap();
        assert!(a.dir.join("a").is_file() && !a.dir.join("half").exists());
    }

    #[test]
    fn a_directory_without_a_record_is_never_trusted() {
        // A process killed between committing the directory and recording it.
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let stale = root.path().join(Store::snapshot_rel(&d("a")));
        fs::create_dir_all(&stale).unwrap();
        fs::write(stale.join("partial"), "x").unwrap();
        let a = store
            .commit_snapshot(None, &d("a"), None, fill_with("a"))
            .unwrap();
        assert!(a.dir.join("a").is_file());
        assert!(!a.dir.join("partial").exists());
    }

    #[test]
    fn gc_removes_unused_snapshots_and_never_a_leased_one() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let old = store
            .commit_snapshot(None, &d("old"), None, fill_with("o"))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let lease = store.lease("test build").unwrap();
        let used = store
            .commit_snapshot(None, &d("used"), None, fill_with("u"))
            .unwrap();
        let prune_all = GcOptions {
            policies: vec![GcPolicy {
                all: true,
                ..GcPolicy::default()
            }],
            scratch: Vec::new(),
            trigger: "test".into(),
        };
        store.collect(&prune_all).unwrap();
        assert!(!old.dir.exists(), "an unused snapshot is collected");
        assert_eq!(store.snapshot(&d("old")).unwrap(), None);
        assert!(used.dir.join("u").is_file(), "a leased snapshot stays");
        drop(lease);
        store.collect(&prune_all).unwrap();
        assert!(!used.dir.exists());
        assert!(store.fsck().unwrap().is_clean());
    }
}
