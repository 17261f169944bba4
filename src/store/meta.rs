//! SQLite metadata (`kiln.db`, WAL): what an OCI layout cannot hold: build records, namespaced
//! records other modules own (with what GC needs to know of them: type, blobs, directory, last
//! use), leases and the last GC runs.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// Current schema version; migrations below bring older databases up to it.
const SCHEMA_VERSION: i64 = 4;

/// One build, as the daemon and `kiln builds` list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    pub id: String,
    /// queued | running | succeeded | failed | cancelled (free text; the daemon owns the vocabulary).
    pub status: String,
    /// The request, secrets already redacted by the caller.
    pub spec_json: String,
    pub result_digest: Option<String>,
    /// Unix seconds.
    pub started: i64,
    pub finished: Option<i64>,
    pub error: Option<String>,
}

/// The metadata database. One connection behind a mutex: writes are small and rare.
pub struct Metadata {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata")
            .field("path", &self.path)
            .finish()
    }
}

/// Refuse a database written by a newer kiln before anything of the store is touched: read its
/// schema version through an immutable, read-only connection (no lock, no `-wal`/`-shm` file, no
/// write of any kind), so a refused store is left byte for byte as it was.
pub(super) fn refuse_newer(path: &Path) -> Result<(), StoreError> {
    if !path.exists() {
        return Ok(());
    }
    let uri = format!("file:{}?immutable=1", path.display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let Ok(conn) = Connection::open_with_flags(&uri, flags) else {
        return Ok(()); // not readable as a database: the ordinary open says why
    };
    let found: Option<i64> = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()
        .unwrap_or(None);
    match found {
        Some(found) if found > SCHEMA_VERSION => Err(StoreError::DbTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}

/// The schema's migrations, in order: version `n` is reached by running its SQL over `n - 1`, in
/// one immediate transaction that also records the new version (so a crash leaves the old one).
const MIGRATIONS: [(i64, &str); SCHEMA_VERSION as usize] = [
    (
        1,
        "CREATE TABLE IF NOT EXISTS builds (
         id TEXT PRIMARY KEY,
         status TEXT NOT NULL,
         spec_json TEXT NOT NULL,
         result_digest TEXT,
         started INTEGER NOT NULL,
         finished INTEGER,
         error TEXT
         );
         CREATE INDEX IF NOT EXISTS builds_started ON builds (started);",
    ),
    // Schema 2: what the daemon shows of a build besides its status.
    (
        2,
        "ALTER TABLE builds ADD COLUMN dockerfile TEXT;
         ALTER TABLE builds ADD COLUMN peer_uid INTEGER;
         ALTER TABLE builds ADD COLUMN peer_gid INTEGER;
         ALTER TABLE builds ADD COLUMN peer_pid INTEGER;
         ALTER TABLE builds ADD COLUMN steps_json TEXT;
         ALTER TABLE builds ADD COLUMN result_json TEXT;
         CREATE INDEX IF NOT EXISTS builds_status ON builds (status);",
    ),
    // Schema 3: a namespaced key → value table for records other modules own (the step
    // cache); the store keeps the rows, never interprets them.
    (
        3,
        "CREATE TABLE IF NOT EXISTS records (
         namespace TEXT NOT NULL,
         key TEXT NOT NULL,
         value TEXT NOT NULL,
         updated INTEGER NOT NULL,
         PRIMARY KEY (namespace, key)
         );",
    ),
    // Schema 4: garbage collection. A record may say what it is (`kind`, which GC filters
    // match; NULL = never collected), which blobs it keeps alive, which directory under
    // the root it owns, and when it was last used (unix ms) and how often; leases protect
    // what in-flight builds use; gc_runs remembers what GC freed.
    (
        4,
        "ALTER TABLE records ADD COLUMN kind TEXT;
         ALTER TABLE records ADD COLUMN blobs TEXT NOT NULL DEFAULT '[]';
         ALTER TABLE records ADD COLUMN dir TEXT;
         ALTER TABLE records ADD COLUMN description TEXT;
         ALTER TABLE records ADD COLUMN last_used INTEGER;
         ALTER TABLE records ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
         CREATE INDEX IF NOT EXISTS records_kind ON records (kind);
         CREATE TABLE IF NOT EXISTS leases (
         id TEXT PRIMARY KEY,
         label TEXT NOT NULL,
         pid INTEGER NOT NULL,
         pid_start INTEGER NOT NULL,
         created INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS lease_resources (
         lease TEXT NOT NULL,
         kind TEXT NOT NULL,
         key TEXT NOT NULL,
         PRIMARY KEY (lease, kind, key)
         );
         CREATE TABLE IF NOT EXISTS gc_runs (
         at INTEGER NOT NULL,
         trigger TEXT NOT NULL,
         bytes INTEGER NOT NULL,
         items INTEGER NOT NULL,
         report TEXT NOT NULL
         );",
    ),
];

impl Metadata {
    pub(super) fn open(path: &Path) -> Result<Metadata, StoreError> {
        let db = |action| {
            let path = path.to_path_buf();
            move |source| StoreError::Db {
                action,
                path,
                source,
            }
        };
        let conn = Connection::open(path).map_err(db("opening"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db("setting busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db("setting synchronous"))?;
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version (version)
               SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
             COMMIT;",
        )
        .map_err(db("creating schema_version"))?;
        let found: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .map_err(db("reading schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::DbTooNew {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (version, sql) in MIGRATIONS {
            if found < version {
                conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE; {sql} UPDATE schema_version SET version = {version}; COMMIT;"
                ))
                .map_err(|source| StoreError::Db {
                    action: "migrating the schema",
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        Ok(Metadata {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value kept under `namespace`/`key`, if any.
    pub fn record_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row(
                "SELECT value FROM records WHERE namespace = ?1 AND key = ?2",
                rusqlite::params![namespace, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("reading a record"))
    }

    /// Keep `value` under `namespace`/`key`, replacing what was there.
    pub fn record_put(&self, namespace: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO records (namespace, key, value, updated) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![namespace, key, value, now],
            )
            .map(|_| ())
            .map_err(self.err("writing a record"))
    }

    /// Every `(key, value)` under `namespace`, by key.
    pub fn record_list(&self, namespace: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT key, value FROM records WHERE namespace = ?1 ORDER BY key")
            .map_err(self.err("listing records"))?;
        let rows = st
            .query_map([namespace], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err("listing records"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("listing records"))
    }

    /// Remove `namespace`/`key`; whether it was there.
    pub fn record_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM records WHERE namespace = ?1 AND key = ?2",
                rusqlite::params![namespace, key],
            )
            .map(|n| n > 0)
            .map_err(self.err("removing a record"))
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .map_err(self.err("reading schema version"))
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (it has its own
        // transactions), so a poisoned mutex is still usable.
        crate::sync::lock(&self.conn)
    }

    pub(super) fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let path = self.path.clone();
        move |source| StoreError::Db {
            action,
            path,
            source,
        }
    }

    pub fn insert_build(&self, r: &BuildRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO builds (id, status, spec_json, result_digest, started, finished, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.id,
                    r.status,
                    r.spec_json,
                    r.result_digest,
                    r.started,
                    r.finished,
                    r.error
                ],
            )
            .map_err(self.err("inserting build record"))?;
        Ok(())
    }

    /// Set a build's status (and, when finishing, its result or error). False when no such build.
    pub fn update_build(
        &self,
        id: &str,
        status: &str,
        result_digest: Option<&str>,
        finished: Option<i64>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE builds SET status = ?2,
                   result_digest = COALESCE(?3, result_digest),
                   finished = COALESCE(?4, finished),
                   error = COALESCE(?5, error)
                 WHERE id = ?1",
                params![id, status, result_digest, finished, error],
            )
            .map_err(self.err("updating build record"))?;
        Ok(n > 0)
    }

    pub fn get_build(&self, id: &str) -> Result<Option<BuildRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT id, status, spec_json, result_digest, started, finished, error
                 FROM builds WHERE id = ?1",
                [id],
                row_to_build,
            )
            .optional()
            .map_err(self.err("reading build record"))
    }

    /// The most recent builds first, at most `limit`. Builds started in the same second come in
    /// the order they were recorded (rowid), not by their random ids.
    pub fn list_builds(&self, limit: usize) -> Result<Vec<BuildRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, status, spec_json, result_digest, started, finished, error
                 FROM builds ORDER BY started DESC, rowid DESC LIMIT ?1",
            )
            .map_err(self.err("listing build records"))?;
        let rows = stmt
            .query_map([limit as i64], row_to_build)
            .map_err(self.err("listing build records"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("listing build records"))
    }
}

/// A build's details beyond [`BuildRecord`] (schema 2): who asked, the Dockerfile used, steps and
/// result as JSON (the daemon owns their shape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildDetails {
    pub dockerfile: Option<String>,
    pub peer_uid: Option<u32>,
    pub peer_gid: Option<u32>,
    pub peer_pid: Option<i32>,
    pub steps_json: Option<String>,
    pub result_json: Option<String>,
}

impl Metadata {
    /// Set the non-`None` fields of `d` on build `id`. False when no such build.
    pub fn update_build_details(&self, id: &str, d: &BuildDetails) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE builds SET
                   dockerfile = COALESCE(?2, dockerfile),
                   peer_uid = COALESCE(?3, peer_uid),
                   peer_gid = COALESCE(?4, peer_gid),
                   peer_pid = COALESCE(?5, peer_pid),
                   steps_json = COALESCE(?6, steps_json),
                   result_json = COALESCE(?7, result_json)
                 WHERE id = ?1",
                params![
                    id,
                    d.dockerfile,
                    d.peer_uid,
                    d.peer_gid,
                    d.peer_pid,
                    d.steps_json,
                    d.result_json
                ],
            )
            .map_err(self.err("updating build details"))?;
        Ok(n > 0)
    }

    pub fn get_build_details(&self, id: &str) -> Result<Option<BuildDetails>, StoreError> {
        self.conn()
            .query_row(
                "SELECT dockerfile, peer_uid, peer_gid, peer_pid, steps_json, result_json
                 FROM builds WHERE id = ?1",
                [id],
                |r| {
                    Ok(BuildDetails {
                        dockerfile: r.get(0)?,
                        peer_uid: r.get(1)?,
                        peer_gid: r.get(2)?,
                        peer_pid: r.get(3)?,
                        steps_json: r.get(4)?,
                        result_json: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(self.err("reading build details"))
    }

    /// The most recent builds with `status` first, at most `limit`.
    pub fn list_builds_with_status(
        &self,
        status: &str,
        limit: usize,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, status, spec_json, result_digest, started, finished, error
                 FROM builds WHERE status = ?1 ORDER BY started DESC, rowid DESC LIMIT ?2",
            )
            .map_err(self.err("listing build records"))?;
        let rows = stmt
            .query_map(params![status, limit as i64], row_to_build)
            .map_err(self.err("listing build records"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("listing build records"))
    }

    /// Mark every build still `queued` or `running` as `failed` with `reason` (a daemon that
    /// starts owns no build yet, so these were interrupted). Returns their ids.
    pub fn fail_unfinished_builds(
        &self,
        reason: &str,
        finished: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.err("failing interrupted builds"))?;
        let ids = {
            let mut stmt = tx
                .prepare("SELECT id FROM builds WHERE status IN ('queued', 'running')")
                .map_err(self.err("failing interrupted builds"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(self.err("failing interrupted builds"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(self.err("failing interrupted builds"))?
        };
        tx.execute(
            "UPDATE builds SET status = 'failed', finished = ?1, error = ?2
             WHERE status IN ('queued', 'running')",
            params![finished, reason],
        )
        .map_err(self.err("failing interrupted builds"))?;
        tx.commit()
            .map_err(self.err("failing interrupted builds"))?;
        Ok(ids)
    }
}

fn row_to_build(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRecord> {
    Ok(BuildRecord {
        id: r.get(0)?,
        status: r.get(1)?,
        spec_json: r.get(2)?,
        result_digest: r.get(3)?,
        started: r.get(4)?,
        finished: r.get(5)?,
        error: r.get(6)?,
    })
}
