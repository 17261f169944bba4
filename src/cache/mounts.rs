//! Cache mounts: one directory per cache id under `<root>/cache`, kept across builds, recorded in
//! the store as a tracked record of BuildKit's type `exec.cachemount` so GC knows its size and
//! when it was last used (each mount is a use).
//!
//! Must not: mount anything or lock the directory (the engine's RUN does both).

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::store::{Store, StoreError, Tracked};

const NAMESPACE: &str = "cache-mount";
/// BuildKit's `UsageRecordTypeCacheMount`.
pub const KIND: &str = "exec.cachemount";

/// The directory of cache `id` (not created), relative to the store root.
pub fn dir(id: &str) -> PathBuf {
    PathBuf::from("cache").join(Digest::of(id.as_bytes()).hex())
}

/// Where cache `id` of the store at `store_root` lives (its lock file is the same path with
/// `.lock`); shared caches seed and export it here.
pub fn path(store_root: &Path, id: &str) -> PathBuf {
    store_root.join(dir(id))
}

/// Record that cache `id` is being mounted now; returns its absolute directory.
pub fn used(store: &Store, id: &str) -> Result<PathBuf, StoreError> {
    let rel = dir(id);
    let tracked = Tracked {
        kind: KIND.into(),
        blobs: Vec::new(),
        dir: Some(rel.clone()),
        description: format!("cache mount {id}"),
    };
    let key = Digest::of(id.as_bytes());
    store.put_tracked(NAMESPACE, key.hex(), id, &tracked)?;
    Ok(store.root().join(rel))
}

/// How `kiln info` names a record type (BuildKit's `UsageRecordType`s; the store only keeps them).
pub fn kind_label(kind: &str) -> &'static str {
    match kind {
        "regular" => "build cache",
        KIND => "cache mounts",
        "source.local" => "local sources",
        "source.git.checkout" => "git checkouts",
        "internal" => "internal",
        "frontend" => "frontend",
        _ => "other",
    }
}
