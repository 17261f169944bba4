//! Tracked records: rows of the `records` table that GC may collect. The module that owns a record
//! (the step cache, cache mounts) says what it is — a `kind` that prune filters match
//! (`type==regular`), the blobs it keeps alive, a directory under the store root it owns — and the
//! store stamps every save and use with the time and a use count, BuildKit's `lastUsedAt` and
//! `usageCount` that GC's keepDuration and LRU order go on.
//!
//! Must not: interpret a record's value, or decide when one is garbage (gc.rs does).

use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use super::lease::now_ms;
use super::{Store, StoreError};
use crate::digest::Digest;

/// What GC needs to know of a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked {
    /// BuildKit's record type, matched by `type==…` filters: `regular`, `exec.cachemount`, ….
    pub kind: String,
    /// Blobs the record keeps alive (removed with it when nothing else needs them).
    pub blobs: Vec<Digest>,
    /// A directory the record owns, relative to the store root (removed with it).
    pub dir: Option<PathBuf>,
    /// Shown in prune output and matched by `description~=…`.
    pub description: String,
}

/// A tracked record as GC and `kiln info` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedRecord {
    pub namespace: String,
    pub key: String,
    pub tracked: Tracked,
    /// Unix ms of the last save or use.
    pub last_used_ms: i64,
    pub uses: i64,
}

impl Store {
    /// Keep `value` under `namespace`/`key` as a record GC may collect, stamped as used now.
    pub fn put_tracked(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        t: &Tracked,
    ) -> Result<(), StoreError> {
        let blobs: Vec<String> = t.blobs.iter().map(|d| d.to_string()).collect();
        let blobs = serde_json::to_string(&blobs).unwrap_or_else(|_| "[]".into());
        let dir = t.dir.as_ref().map(|d| d.to_string_lossy().into_owned());
        let now = now_ms();
        let _use = self.gc_lock(false)?;
        self.meta
            .conn()
            .execute(
                "INSERT INTO records (namespace, key, value, updated, kind, blobs, dir, description,
                                      last_used, uses)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)
                 ON CONFLICT (namespace, key) DO UPDATE SET
                   value = excluded.value, updated = excluded.updated, kind = excluded.kind,
                   blobs = excluded.blobs, dir = excluded.dir, description = excluded.description,
                   last_used = excluded.last_used, uses = uses + 1",
                params![
                    namespace,
                    key,
                    value,
                    now / 1000,
                    t.kind,
                    blobs,
                    dir,
                    t.description,
                    now
                ],
            )
            .map(|_| ())
            .map_err(self.meta.err("writing a tracked record"))
    }

    /// The value of `namespace`/`key`, stamped as used now — or None when there is none or a blob
    /// it keeps alive is gone (GC took it: the record is as good as missing).
    pub fn use_record(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        let _use = self.gc_lock(false)?;
        let conn = self.meta.conn();
        let row: Option<(String, String)> = conn
            .query_row(
                "UPDATE records SET last_used = ?3, uses = uses + 1
                 WHERE namespace = ?1 AND key = ?2 RETURNING value, blobs",
                params![namespace, key, now_ms()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.meta.err("using a record"))?;
        drop(conn);
        let Some((value, blobs)) = row else {
            return Ok(None);
        };
        if parse_blobs(&blobs).iter().any(|d| !self.has_blob(d)) {
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// Every record with a kind (the ones GC may collect), oldest use first.
    pub fn tracked_records(&self) -> Result<Vec<TrackedRecord>, StoreError> {
        let conn = self.meta.conn();
        let mut st = conn
            .prepare(
                "SELECT namespace, key, kind, blobs, dir, description,
                        COALESCE(last_used, updated * 1000), uses
                 FROM records WHERE kind IS NOT NULL ORDER BY 7, namespace, key",
            )
            .map_err(self.meta.err("listing tracked records"))?;
        let rows = st
            .query_map([], |r| {
                Ok(TrackedRecord {
                    namespace: r.get(0)?,
                    key: r.get(1)?,
                    tracked: Tracked {
                        kind: r.get(2)?,
                        blobs: parse_blobs(&r.get::<_, String>(3)?),
                        dir: r.get::<_, Option<String>>(4)?.map(PathBuf::from),
                        description: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    },
                    last_used_ms: r.get(6)?,
                    uses: r.get(7)?,
                })
            })
            .map_err(self.meta.err("listing tracked records"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.meta.err("listing tracked records"))
    }

    /// Stamp blobs as used now (their mtime), so a lease taken before protects them; blobs that
    /// are not there are skipped.
    pub(super) fn touch_blobs<'a>(
        &self,
        digests: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<(), StoreError> {
        let _use = self.gc_lock(false)?;
        let now = filetime::FileTime::now();
        for d in digests {
            // A blob another process removed meanwhile is the reader's problem, not a stamp's.
            let _ = filetime::set_file_mtime(self.blob_path(d), now);
        }
        Ok(())
    }

    /// The directory of a tracked record, absolute (None when it would leave the root).
    pub(super) fn record_dir(&self, rel: &Path) -> Option<PathBuf> {
        let safe = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        (safe && rel.components().next().is_some()).then(|| self.root.join(rel))
    }
}

fn parse_blobs(json: &str) -> Vec<Digest> {
    serde_json::from_str::<Vec<String>>(json)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_uses_are_stamped_and_a_record_missing_its_blob_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = store.put_bytes(b"layer", None).unwrap();
        let t = Tracked {
            kind: "regular".into(),
            blobs: vec![blob.clone()],
            dir: None,
            description: "RUN x".into(),
        };
        store.put_tracked("ns", "k", "v", &t).unwrap();
        store.db().record_put("other", "k", "untracked").unwrap();
        let before = store.tracked_records().unwrap();
        assert_eq!(before.len(), 1, "untracked records are not GC's");
        assert_eq!((before[0].uses, &before[0].tracked), (1, &t));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(store.use_record("ns", "k").unwrap().as_deref(), Some("v"));
        let after = store.tracked_records().unwrap();
        assert_eq!(after[0].uses, 2);
        assert!(after[0].last_used_ms > before[0].last_used_ms);
        std::fs::remove_file(store.blob_path(&blob)).unwrap();
        assert_eq!(store.use_record("ns", "k").unwrap(), None);
        assert_eq!(store.use_record("ns", "nope").unwrap(), None);
    }
}
