//! Garbage collection: apply [`GcPolicy`]s to the store, BuildKit's `cacheManager.prune` /
//! `pruneOnce` (cache/manager.go) over kiln's tracked records, then containerd's content GC
//! (remove blobs nothing references) and stale scratch directories.
//!
//! The units GC removes are tracked records (tracked.rs): a record goes with its directory and the
//! blobs only it kept alive. Per policy, in order: the candidates are records not protected by a
//! lease, not used within keepDuration, matching a filter, and — unless `all` — not *shared* (a
//! tagged image reaches one of its blobs; BuildKit's `checkShared`). Without size limits every
//! candidate goes; with them ("gc mode") the least recently / least often used goes first, one at
//! a time, until the build cache (bytes not reachable from a tag) is under `calculateKeepBytes`.
//! Tags are never removed, so neither is anything a tag reaches, whatever `all` says.
//!
//! The whole sweep holds the GC lock exclusively and the index lock, so no use is stamped and no
//! tag is added while it decides and deletes (lease.rs).
//!
//! Must not: know what a record means, remove a tag, or touch anything outside the store root.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::gc_policy::{DiskStat, Field, GcPolicy};
use super::lease::{now_ms, RES_BLOB, RES_DIR};
use super::tracked::TrackedRecord;
use super::{io_err, Store, StoreError};
use crate::digest::Digest;

/// Scratch entries younger than this are never removed unleased: a build's workspace exists a
/// moment before its lease names it.
const SCRATCH_GRACE_SECS: u64 = 60;
/// Coarse file timestamps (and the ms of a lease row) may round a use just before a lease began.
const STAMP_SLACK_MS: i64 = 1000;

/// What to collect.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    pub policies: Vec<GcPolicy>,
    /// Directories under the root whose entries are disposable scratch (build workspaces) unless
    /// a lease names them.
    pub scratch: Vec<PathBuf>,
    /// Who asked (`prune`, `api`, `after-build`, `timer`), for the record.
    pub trigger: String,
}

/// A record GC removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedRecord {
    pub namespace: String,
    pub key: String,
    pub kind: String,
    pub description: String,
    pub bytes: u64,
}

/// What one GC run removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcReport {
    /// Unix seconds.
    pub at: i64,
    pub trigger: String,
    /// Blobs removed.
    pub removed: Vec<Digest>,
    pub records: Vec<RemovedRecord>,
    /// Scratch directories removed (relative to the root).
    pub dirs: Vec<String>,
    pub bytes_freed: u64,
    /// Blobs kept.
    pub kept: usize,
}

impl GcReport {
    /// Blobs, records and directories removed.
    pub fn items(&self) -> usize {
        self.removed.len() + self.records.len() + self.dirs.len()
    }
}

/// Bytes and count of one kind of thing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub bytes: u64,
    pub items: u64,
}

/// What the store holds, by kind (apparent sizes, hard links once: `du -sb`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Blobs a tag reaches; items = tags.
    pub images: Bucket,
    /// Tracked records by kind: their directories and the blobs they keep that no tag reaches.
    pub records: BTreeMap<String, Bucket>,
    /// Blobs nothing references (removed by the next GC unless a lease protects them).
    pub unreferenced: Bucket,
    /// Scratch directories (build workspaces, the trash); items = entries.
    pub scratch: Bucket,
    /// Committed snapshots (unpacked layers, `store::snapshots`): records GC collects like the
    /// others (kind `regular`, as BuildKit's snapshots are), shown apart from the step cache.
    #[serde(default)]
    pub snapshots: Bucket,
}

/// `du -sb`: apparent size of everything under `path` (itself included), hard links once.
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.nlink() < 2 || m.is_dir() || seen.insert((m.dev(), m.ino())))
        .map(|m| m.len())
        .sum()
}

/// The state of one run.
struct Sweep<'s> {
    store: &'s Store,
    /// Anything used at or after this (unix ms) is protected by a live lease.
    since: Option<i64>,
    leased_blobs: BTreeSet<Digest>,
    leased_dirs: BTreeSet<PathBuf>,
    tagged: BTreeSet<Digest>,
    /// Every blob: size and mtime (unix ms, the last use).
    blobs: BTreeMap<Digest, (u64, i64)>,
    records: Vec<TrackedRecord>,
    dir_sizes: HashMap<(String, String), u64>,
    report: GcReport,
}

impl Store {
    /// Apply `opts.policies` in order, then remove unreferenced blobs and stale scratch; the
    /// report is also kept as the last GC run (`Store::last_gc`).
    pub fn collect(&self, opts: &GcOptions) -> Result<GcReport, StoreError> {
        let disk = DiskStat::of(&self.root);
        let report = {
            let _gc = self.gc_lock(true)?;
            let _index = self.lock_index()?;
            let mut s = Sweep::start(self, &opts.trigger)?;
            s.sweep_unreferenced()?;
            for p in &opts.policies {
                s.prune(p, &disk)?;
            }
            s.sweep_unreferenced()?;
            s.sweep_scratch(&opts.scratch)?;
            s.sweep_snapshot_orphans()?;
            s.report.kept = s.blobs.len();
            s.report
        };
        self.save_gc_run(&report)?;
        Ok(report)
    }

    /// Everything unreferenced: what `kiln prune` without flags does (every build-cache record
    /// no tag shares, then every blob nothing references).
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        self.collect(&GcOptions {
            policies: vec![GcPolicy::default()],
            scratch: Vec::new(),
            trigger: "prune".into(),
        })
    }

    /// What the store holds by kind; `scratch` as for [`GcOptions::scratch`].
    pub fn usage(&self, scratch: &[PathBuf]) -> Result<Usage, StoreError> {
        let s = Sweep::start(self, "usage")?;
        let mut u = Usage {
            images: Bucket {
                bytes: s
                    .tagged
                    .iter()
                    .filter_map(|d| s.blobs.get(d))
                    .map(|b| b.0)
                    .sum(),
                items: self.tags()?.len() as u64,
            },
            ..Usage::default()
        };
        let mut counted: BTreeSet<&Digest> = s.tagged.iter().collect();
        for r in &s.records {
            let dir_bytes = r
                .tracked
                .dir
                .as_ref()
                .and_then(|d| self.record_dir(d))
                .map_or(0, |d| disk_usage(&d));
            let b = if r.namespace == super::snapshots::NAMESPACE {
                &mut u.snapshots
            } else {
                u.records.entry(r.tracked.kind.clone()).or_default()
            };
            b.items += 1;
            b.bytes += dir_bytes;
            for d in &r.tracked.blobs {
                if let Some((size, _)) = s.blobs.get(d) {
                    if counted.insert(d) {
                        b.bytes += size;
                    }
                }
            }
        }
        for (d, (size, _)) in &s.blobs {
            if !counted.contains(d) {
                u.unreferenced.bytes += size;
                u.unreferenced.items += 1;
            }
        }
        for dir in scratch {
            let dir = self.root.join(dir);
            if let Ok(entries) = fs::read_dir(&dir) {
                u.scratch.items += entries.count() as u64;
                u.scratch.bytes += disk_usage(&dir);
            }
        }
        Ok(u)
    }

    /// The last GC run, if any.
    pub fn last_gc(&self) -> Result<Option<GcReport>, StoreError> {
        use rusqlite::OptionalExtension;
        let text: Option<String> = self
            .meta
            .conn()
            .query_row(
                "SELECT report FROM gc_runs ORDER BY rowid DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.meta.err("reading the last GC run"))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    fn save_gc_run(&self, r: &GcReport) -> Result<(), StoreError> {
        // The run's summary is kept whole; the lists of what went are capped (a big prune).
        let mut kept = r.clone();
        kept.removed.truncate(1000);
        kept.records.truncate(1000);
        kept.dirs.truncate(1000);
        let text = serde_json::to_string(&kept).unwrap_or_default();
        let conn = self.meta.conn();
        conn.execute(
            "INSERT INTO gc_runs (at, trigger, bytes, items, report) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                r.at,
                r.trigger,
                r.bytes_freed as i64,
                r.items() as i64,
                text
            ],
        )
        .and_then(|_| {
            conn.execute(
                "DELETE FROM gc_runs WHERE rowid NOT IN
                   (SELECT rowid FROM gc_runs ORDER BY rowid DESC LIMIT 20)",
                [],
            )
        })
        .map(|_| ())
        .map_err(self.meta.err("recording a GC run"))
    }

    fn list_blobs(&self) -> Result<BTreeMap<Digest, (u64, i64)>, StoreError> {
        let dir = self.content.join("blobs").join("sha256");
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
            else {
                continue;
            };
            let Ok(m) = entry.metadata() else { continue };
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |t| t.as_millis() as i64);
            out.insert(d, (m.len(), mtime));
        }
        Ok(out)
    }
}

impl<'s> Sweep<'s> {
    fn start(store: &'s Store, trigger: &str) -> Result<Sweep<'s>, StoreError> {
        store.clear_dead_leases()?;
        let (leases, resources) = store.leases()?;
        let mut tagged = BTreeSet::new();
        for (_, desc) in store.tags()? {
            tagged.extend(store.walk(&desc).present.into_iter().map(|d| d.digest));
        }
        Ok(Sweep {
            store,
            since: leases.iter().map(|c| c - STAMP_SLACK_MS).min(),
            leased_blobs: resources
                .iter()
                .filter(|(k, _)| k == RES_BLOB)
                .filter_map(|(_, v)| v.parse().ok())
                .collect(),
            leased_dirs: resources
                .iter()
                .filter(|(k, _)| k == RES_DIR)
                .map(|(_, v)| PathBuf::from(v))
                .collect(),
            tagged,
            blobs: store.list_blobs()?,
            records: store.tracked_records()?,
            dir_sizes: HashMap::new(),
            report: GcReport {
                at: now_ms() / 1000,
                trigger: trigger.to_string(),
                ..GcReport::default()
            },
        })
    }

    fn blob_protected(&self, d: &Digest) -> bool {
        self.leased_blobs.contains(d)
            || self
                .since
                .is_some_and(|s| self.blobs.get(d).is_some_and(|b| b.1 >= s))
    }

    fn record_protected(&self, r: &TrackedRecord) -> bool {
        self.since.is_some_and(|s| r.last_used_ms >= s)
            || r.tracked
                .dir
                .as_ref()
                .is_some_and(|d| self.leased_dirs.contains(d))
    }

    fn shared(&self, r: &TrackedRecord) -> bool {
        r.tracked.blobs.iter().any(|d| self.tagged.contains(d))
    }

    fn dir_size(&mut self, i: usize) -> u64 {
        let r = &self.records[i];
        let k = (r.namespace.clone(), r.key.clone());
        if let Some(n) = self.dir_sizes.get(&k) {
            return *n;
        }
        let n = r
            .tracked
            .dir
            .as_ref()
            .and_then(|d| self.store.record_dir(d))
            .map_or(0, |d| disk_usage(&d));
        self.dir_sizes.insert(k, n);
        n
    }

    /// BuildKit's `totalSize`: the build cache, i.e. what no tag reaches.
    fn total(&mut self) -> u64 {
        let blobs: u64 = self
            .blobs
            .iter()
            .filter(|(d, _)| !self.tagged.contains(*d))
            .map(|(_, b)| b.0)
            .sum();
        (0..self.records.len())
            .map(|i| self.dir_size(i))
            .sum::<u64>()
            + blobs
    }

    fn remove_blob(&mut self, d: &Digest) -> Result<(), StoreError> {
        let path = self.store.blob_path(d);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("removing unreferenced blob", &path)(e))
            }
            _ => {}
        }
        if let Some((size, _)) = self.blobs.remove(d) {
            self.report.bytes_freed += size;
        }
        self.report.removed.push(d.clone());
        Ok(())
    }

    /// Blobs no tag, no record and no lease keeps.
    fn sweep_unreferenced(&mut self) -> Result<(), StoreError> {
        let referenced: BTreeSet<Digest> = self
            .records
            .iter()
            .flat_map(|r| r.tracked.blobs.iter().cloned())
            .collect();
        let doomed: Vec<Digest> = self
            .blobs
            .keys()
            .filter(|d| !self.tagged.contains(*d) && !referenced.contains(*d))
            .filter(|d| !self.blob_protected(d))
            .cloned()
            .collect();
        for d in doomed {
            self.remove_blob(&d)?;
        }
        Ok(())
    }

    /// Remove record `i`: its row first (a crash after leaves only unreferenced files, which the
    /// next run sweeps), then its directory and the blobs only it kept.
    fn remove_record(&mut self, i: usize) -> Result<u64, StoreError> {
        let size = self.dir_size(i);
        let r = self.records.remove(i);
        self.store.db().record_delete(&r.namespace, &r.key)?;
        let before = self.report.bytes_freed;
        if let Some(dir) = r
            .tracked
            .dir
            .as_ref()
            .and_then(|d| self.store.record_dir(d))
        {
            // Renamed away first: a kill mid-delete leaves nothing under a name a reader trusts.
            self.store.discard_dir(&dir)?;
            self.report.bytes_freed += size;
        }
        for d in &r.tracked.blobs {
            let needed = self.tagged.contains(d)
                || self.records.iter().any(|o| o.tracked.blobs.contains(d))
                || self.blob_protected(d)
                || !self.blobs.contains_key(d);
            if !needed {
                self.remove_blob(d)?;
            }
        }
        let freed = self.report.bytes_freed - before;
        self.report.records.push(RemovedRecord {
            namespace: r.namespace,
            key: r.key,
            kind: r.tracked.kind,
            description: r.tracked.description,
            bytes: freed,
        });
        Ok(freed)
    }

    /// One policy: `cacheManager.prune` — `pruneOnce` until nothing more goes.
    fn prune(&mut self, p: &GcPolicy, disk: &DiskStat) -> Result<(), StoreError> {
        // Counted once, then decreased by what goes (BuildKit: `popt.totalSize -= releasedSize`).
        let mut total = self.total();
        let keep = p.keep_bytes(total, disk);
        let cutoff = now_ms() - p.keep_duration.as_millis() as i64;
        loop {
            if keep != 0 && total < keep {
                return Ok(());
            }
            let mut candidates: Vec<usize> = (0..self.records.len())
                .filter(|&i| {
                    let r = &self.records[i];
                    !self.record_protected(r)
                        && (p.all || !self.shared(r))
                        && (p.keep_duration.is_zero() || r.last_used_ms <= cutoff)
                        && (p.filters.is_empty()
                            || p.filters.iter().any(|f| f.matches(&|x| field(r, x))))
                })
                .collect();
            if candidates.is_empty() {
                return Ok(());
            }
            if keep != 0 {
                // gc mode: one at a time, least recently and least often used first.
                candidates = vec![lru_first(&self.records, &candidates)];
            }
            // Highest index first, so earlier indexes stay valid while removing.
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            for i in candidates {
                total = total.saturating_sub(self.remove_record(i)?);
            }
        }
    }

    /// Snapshot directories no record names (a process killed between committing a snapshot's
    /// directory and recording it), older than the scratch grace period.
    fn sweep_snapshot_orphans(&mut self) -> Result<(), StoreError> {
        let rel = Path::new(super::snapshots::DIR);
        let Ok(entries) = fs::read_dir(self.store.root.join(rel)) else {
            return Ok(());
        };
        let named: BTreeSet<PathBuf> = self
            .records
            .iter()
            .filter_map(|r| r.tracked.dir.clone())
            .collect();
        for e in entries.flatten() {
            let rel_entry = rel.join(e.file_name());
            let young = in_grace(&e);
            if young || named.contains(&rel_entry) || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let size = disk_usage(&e.path());
            self.store.discard_dir(&e.path())?;
            self.report.bytes_freed += size;
            self.report
                .dirs
                .push(rel_entry.to_string_lossy().into_owned());
        }
        Ok(())
    }

    /// Entries of the scratch directories no lease names, older than the grace period.
    fn sweep_scratch(&mut self, scratch: &[PathBuf]) -> Result<(), StoreError> {
        for rel in scratch {
            let dir = self.store.root.join(rel);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let rel_entry = rel.join(e.file_name());
                let young = in_grace(&e);
                if young || self.leased_dirs.contains(&rel_entry) {
                    continue;
                }
                let size = disk_usage(&e.path());
                let removed = if e.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(e.path())
                } else {
                    fs::remove_file(e.path())
                };
                if removed.is_ok() {
                    self.report.bytes_freed += size;
                    self.report
                        .dirs
                        .push(rel_entry.to_string_lossy().into_owned());
                }
            }
        }
        Ok(())
    }
}

/// Whether a directory entry changed within the scratch grace period (or its age is unknown):
/// what another process may be setting up right now.
fn in_grace(e: &fs::DirEntry) -> bool {
    e.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age.as_secs() < SCRATCH_GRACE_SECS)
}

fn field(r: &TrackedRecord, f: Field) -> String {
    match f {
        Field::Type => r.tracked.kind.clone(),
        Field::Id => r.key.clone(),
        Field::Description => r.tracked.description.clone(),
    }
}

/// BuildKit's `sortDeleteRecords`: rank by last use and by use count, each normalised to (0, 1],
/// and take the lowest sum.
fn lru_first(records: &[TrackedRecord], candidates: &[usize]) -> usize {
    let mut by_time: Vec<i64> = candidates
        .iter()
        .map(|&i| records[i].last_used_ms)
        .collect();
    by_time.sort_unstable();
    by_time.dedup();
    let mut by_uses: Vec<i64> = candidates.iter().map(|&i| records[i].uses).collect();
    by_uses.sort_unstable();
    by_uses.dedup();
    let rank =
        |v: &[i64], x: i64| (v.partition_point(|&y| y < x) + 1) as f64 / (v.len() + 1) as f64;
    *candidates
        .iter()
        .min_by(|&&a, &&b| {
            let score = |i: usize| {
                rank(&by_time, records[i].last_used_ms) + rank(&by_uses, records[i].uses)
            };
            score(a)
                .partial_cmp(&score(b))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(records[a].last_used_ms.cmp(&records[b].last_used_ms))
        })
        .unwrap_or(&candidates[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Tracked;

    fn age(path: &Path, secs: i64) {
        let t = filetime::FileTime::from_unix_time(now_ms() / 1000 - secs, 0);
        filetime::set_file_mtime(path, t).unwrap();
    }

    #[test]
    fn stale_scratch_goes_leased_and_fresh_scratch_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let builds = dir.path().join("builds");
        for name in ["build-old", "build-leased", "build-new"] {
            std::fs::create_dir_all(builds.join(name).join("rootfs")).unwrap();
            std::fs::write(builds.join(name).join("rootfs/f"), b"12345").unwrap();
        }
        age(&builds.join("build-old"), 120);
        age(&builds.join("build-leased"), 120);
        let lease = store.lease("build").unwrap();
        lease.protect_dir(&builds.join("build-leased")).unwrap();
        let r = store
            .collect(&GcOptions {
                policies: vec![],
                scratch: vec![PathBuf::from("builds")],
                trigger: "test".into(),
            })
            .unwrap();
        assert_eq!(r.dirs, vec!["builds/build-old".to_string()]);
        assert!(r.bytes_freed >= 5, "{r:?}");
        assert!(builds.join("build-leased").is_dir() && builds.join("build-new").is_dir());
        drop(lease);
        assert_eq!(store.last_gc().unwrap().unwrap().dirs, r.dirs);
    }

    #[test]
    fn a_record_used_under_a_live_lease_survives_all_and_goes_once_the_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = store.put_bytes(b"old layer", None).unwrap();
        let t = |d: &Digest| Tracked {
            kind: "regular".into(),
            blobs: vec![d.clone()],
            ..Tracked::default()
        };
        store.put_tracked("ns", "old", "v", &t(&old)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let lease = store.lease("build").unwrap();
        let fresh = store.put_bytes(b"fresh layer", None).unwrap();
        store.put_tracked("ns", "fresh", "v", &t(&fresh)).unwrap();
        let all = GcPolicy {
            all: true,
            max_used_space: 1,
            ..GcPolicy::default()
        };
        let run = |p: &GcPolicy| {
            store
                .collect(&GcOptions {
                    policies: vec![p.clone()],
                    ..GcOptions::default()
                })
                .unwrap()
        };
        let r = run(&all);
        // The record from before the lease goes; the one used under it stays.
        assert_eq!(r.records.len(), 1, "{r:?}");
        assert_eq!(r.records[0].key, "old");
        assert!(!store.has_blob(&old) && store.has_blob(&fresh));
        drop(lease);
        let r = run(&all);
        assert_eq!(r.records.len(), 1, "{r:?}");
        assert!(!store.has_blob(&fresh));
        assert!(store.tracked_records().unwrap().is_empty());
    }
}
