//! Leases: what an in-flight build (or import, or push) uses is never collected.
//!
//! A lease is a row in `kiln.db` naming its owner (pid and the process's start time, so a reused
//! pid is not mistaken for the owner) and when it began. While it is held, GC keeps
//! - everything *used* since it began: blobs committed or re-committed (their mtime is the use
//!   stamp, see `Ingest::commit`), images loaded (`Store::load_manifest` stamps their blobs),
//!   records looked up or saved (`last_used`) — so a build's cache hits, base image and fresh
//!   layers are protected without the engine naming each one;
//! - what it names explicitly ([`Lease::protect_blob`], [`Lease::protect_dir`]).
//!
//! The check and the stamp are made atomic by the GC lock (`<root>/gc.lock`): a sweep holds it
//! exclusively, every stamp holds it shared, so a blob is either stamped before the sweep looks
//! (and kept) or looked up after the sweep removed it (and missing, which callers treat as a miss).
//!
//! Leases of a process that died (a crashed daemon or CLI) are cleared at the next GC and at
//! daemon start-up. This mirrors containerd's leases, which BuildKit takes for every solve
//! (`leaseutil.WithLease` in solver/llbsolver), minus their explicit expiry: a dead owner is
//! known exactly here, so there is no timeout to guess.
//!
//! Must not: decide what is garbage (gc.rs) or know what the protected things are for.

use std::fs::File;
use std::path::Path;

use rusqlite::params;

use super::{io_err, Store, StoreError};
use crate::digest::Digest;

/// A held lease; dropping it releases what it protects.
pub struct Lease<'s> {
    store: &'s Store,
    id: String,
    created_ms: i64,
}

impl std::fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).finish()
    }
}

/// Kinds of explicitly protected resources in `lease_resources`.
pub(super) const RES_BLOB: &str = "blob";
pub(super) const RES_DIR: &str = "dir";

/// When each live lease began (unix ms), and what they protect explicitly (`(kind, key)`).
pub(super) type Leases = (Vec<i64>, Vec<(String, String)>);

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// When process `pid` started (field 22 of /proc/PID/stat, clock ticks since boot); None when it
/// does not exist.
fn process_start(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Store {
    /// Take a lease for `label` (e.g. `build`, `import`) until the guard drops.
    pub fn lease(&self, label: &str) -> Result<Lease<'_>, StoreError> {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b)
            .map_err(|_| StoreError::Layout("no randomness for a lease id".into()))?;
        let id = hex::encode(b);
        let pid = i64::from(std::process::id());
        let created_ms = now_ms();
        self.meta
            .conn()
            .execute(
                "INSERT INTO leases (id, label, pid, pid_start, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, label, pid, process_start(pid).unwrap_or(0), created_ms],
            )
            .map_err(self.meta.err("taking a lease"))?;
        Ok(Lease {
            store: self,
            id,
            created_ms,
        })
    }

    /// Remove the leases of processes that are gone; returns how many.
    pub fn clear_dead_leases(&self) -> Result<usize, StoreError> {
        let conn = self.meta.conn();
        let rows: Vec<(String, i64, i64)> = {
            let mut st = conn
                .prepare("SELECT id, pid, pid_start FROM leases")
                .map_err(self.meta.err("listing leases"))?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(self.meta.err("listing leases"))?;
            rows.collect::<Result<_, _>>()
                .map_err(self.meta.err("listing leases"))?
        };
        let mut n = 0;
        for (id, pid, start) in rows {
            if process_start(pid).is_some_and(|s| start == 0 || s == start) {
                continue;
            }
            conn.execute("DELETE FROM lease_resources WHERE lease = ?1", [&id])
                .and_then(|_| conn.execute("DELETE FROM leases WHERE id = ?1", [&id]))
                .map_err(self.meta.err("clearing a dead lease"))?;
            n += 1;
        }
        Ok(n)
    }

    /// When each live lease began (unix ms), and what they protect explicitly (`[(kind, key)]`).
    pub(super) fn leases(&self) -> Result<Leases, StoreError> {
        let conn = self.meta.conn();
        let leases = {
            let mut st = conn
                .prepare("SELECT created FROM leases")
                .map_err(self.meta.err("listing leases"))?;
            let rows = st
                .query_map([], |r| r.get(0))
                .map_err(self.meta.err("listing leases"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(self.meta.err("listing leases"))?
        };
        let mut st = conn
            .prepare("SELECT kind, key FROM lease_resources")
            .map_err(self.meta.err("listing leased resources"))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.meta.err("listing leased resources"))?;
        let res = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.meta.err("listing leased resources"))?;
        Ok((leases, res))
    }

    /// Hold the GC lock: shared for a stamp (use) of something, exclusive for a sweep.
    pub(super) fn gc_lock(&self, exclusive: bool) -> Result<File, StoreError> {
        gc_lock_at(&self.root, exclusive)
    }
}

/// Hold `<root>/gc.lock` (shared or exclusive) until the file drops.
pub(super) fn gc_lock_at(root: &Path, exclusive: bool) -> Result<File, StoreError> {
    let p = root.join("gc.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io_err("creating", &p))?;
    let op = if exclusive {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::LockShared
    };
    rustix::fs::flock(&f, op).map_err(|e| io_err("locking", &p)(e.into()))?;
    Ok(f)
}

impl Lease<'_> {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the lease began (unix ms): everything used since is protected.
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    fn protect(&self, kind: &str, key: &str) -> Result<(), StoreError> {
        self.store
            .meta
            .conn()
            .execute(
                "INSERT OR IGNORE INTO lease_resources (lease, kind, key) VALUES (?1, ?2, ?3)",
                params![self.id, kind, key],
            )
            .map(|_| ())
            .map_err(self.store.meta.err("adding to a lease"))
    }

    /// Protect a blob whatever its last use (e.g. one a push is about to read).
    pub fn protect_blob(&self, d: &Digest) -> Result<(), StoreError> {
        self.protect(RES_BLOB, &d.to_string())
    }

    /// Protect everything `root` (a manifest or index) reaches, e.g. an image being pushed.
    pub fn protect_closure(&self, root: &crate::image::Descriptor) -> Result<(), StoreError> {
        let _use = self.store.gc_lock(false)?;
        for d in self.store.walk(root).present {
            self.protect_blob(&d.digest)?;
        }
        Ok(())
    }

    /// Protect a directory under the store root (a build's workspace).
    pub fn protect_dir(&self, dir: &Path) -> Result<(), StoreError> {
        let rel = dir.strip_prefix(&self.store.root).unwrap_or(dir);
        self.protect(RES_DIR, &rel.to_string_lossy())
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // Best effort: a lease that cannot be removed now is cleared once this process is gone.
        let conn = self.store.meta.conn();
        let _ = conn.execute("DELETE FROM lease_resources WHERE lease = ?1", [&self.id]);
        let _ = conn.execute("DELETE FROM leases WHERE id = ?1", [&self.id]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_known_and_a_dead_pid_has_none() {
        assert!(process_start(i64::from(std::process::id())).is_some());
        assert!(process_start(i64::from(i32::MAX)).is_none());
    }

    #[test]
    fn a_dropped_lease_is_gone_and_a_dead_owners_lease_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease("build").unwrap();
        lease.protect_dir(&dir.path().join("builds/x")).unwrap();
        assert_eq!(store.leases().unwrap().0.len(), 1);
        assert_eq!(
            store.leases().unwrap().1,
            vec![(RES_DIR.to_string(), "builds/x".to_string())]
        );
        assert_eq!(store.clear_dead_leases().unwrap(), 0, "we are alive");
        drop(lease);
        assert!(store.leases().unwrap().0.is_empty());
        store
            .meta
            .conn()
            .execute(
                "INSERT INTO leases (id, label, pid, pid_start, created) VALUES ('x', 'build', ?1, 1, 0)",
                [i64::from(i32::MAX)],
            )
            .unwrap();
        assert_eq!(store.clear_dead_leases().unwrap(), 1);
        assert!(store.leases().unwrap().0.is_empty());
    }
}
