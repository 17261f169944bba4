//! SQLite metadata (`kiln.db`, WAL): what an OCI layout cannot hold. Today: build records.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// Current schema version; migrations below bring older databases up to it.
const SCHEMA_VERSION: i64 = 1;

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
        if found < 1 {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS builds (
                   id TEXT PRIMARY KEY,
                   status TEXT NOT NULL,
                   spec_json TEXT NOT NULL,
                   result_digest TEXT,
                   started INTEGER NOT NULL,
                   finished INTEGER,
                   error TEXT
                 );
                 CREATE INDEX IF NOT EXISTS builds_started ON builds (started);
                 UPDATE schema_version SET version = 1;
                 COMMIT;",
            )
            .map_err(db("migrating to schema 1"))?;
        }
        Ok(Metadata {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .map_err(self.err("reading schema version"))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (it has its own
        // transactions), so a poisoned mutex is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
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

    /// The most recent builds first, at most `limit`.
    pub fn list_builds(&self, limit: usize) -> Result<Vec<BuildRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, status, spec_json, result_digest, started, finished, error
                 FROM builds ORDER BY started DESC, id DESC LIMIT ?1",
            )
            .map_err(self.err("listing build records"))?;
        let rows = stmt
            .query_map([limit as i64], row_to_build)
            .map_err(self.err("listing build records"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("listing build records"))
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
