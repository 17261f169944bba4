//! Build records written, never dropped: every change of a build's row in kiln.db after it was
//! accepted goes through here. A write that fails is logged with its cause, and the build's end
//! that could not be written is kept in memory — the API serves it in place of the stale row, so a
//! build on a full disk reads `failed` with the cause, not `running` forever — and written again
//! when the database takes writes (the next build accepted or ended).
//!
//! Must not: decide how a build ended (jobs.rs does) or keep more than the ends not yet written.
//! What a restart loses of them, start-up's recovery marks `interrupted`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::Status;
use crate::store::{BuildDetails, BuildRecord, StoreError};

use super::{error_chain, log, Shared};

/// A write of a build's record that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("recording build {id} as {status}")]
    Status {
        id: String,
        status: &'static str,
        #[source]
        source: Box<StoreError>,
    },
    #[error("recording the {what} of build {id}")]
    Details {
        id: String,
        what: &'static str,
        #[source]
        source: Box<StoreError>,
    },
    #[error("recording catalog entry {name:?} as built by {id}")]
    Catalog {
        id: String,
        name: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("reading the catalog entries for build {id}")]
    CatalogRead {
        id: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("encoding catalog entry {name:?}")]
    CatalogEncode {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// How a build ended, as its row should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct End {
    pub status: Status,
    pub manifest: Option<String>,
    pub finished: i64,
    pub error: Option<String>,
}

/// Ends of builds that kiln.db refused, by build id.
#[derive(Default)]
pub(crate) struct Unwritten {
    ends: Mutex<HashMap<String, End>>,
}

impl Unwritten {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, End>> {
        crate::sync::lock(&self.ends)
    }

    /// How many ends wait to be written (for `/v1/info` and tests).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The builds whose unwritten end has `status`.
    pub(crate) fn with_status(&self, status: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.status.as_str() == status)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// `rec` as the API shows it: an end not yet written replaces the row's stale state.
    pub(crate) fn overlay(&self, rec: &mut BuildRecord) {
        if let Some(end) = self.lock().get(&rec.id) {
            rec.status = end.status.as_str().into();
            rec.result_digest.clone_from(&end.manifest);
            rec.finished = Some(end.finished);
            rec.error.clone_from(&end.error);
        }
    }
}

/// Log a failed write; returns the text for the build's status.
pub(crate) fn logged(e: &RecordError, id: &str) -> String {
    let text = error_chain(e);
    log::error(
        "build.record_failed",
        &[("id", id.into()), ("error", text.as_str().into())],
    );
    text
}

/// Mark build `id` running.
pub(crate) fn running(state: &Shared, id: &str) -> Result<(), RecordError> {
    let st = Status::Running;
    state
        .store
        .db()
        .update_build(id, st.as_str(), None, None, None)
        .map(|_| ())
        .map_err(|e| RecordError::Status {
            id: id.into(),
            status: st.as_str(),
            source: Box::new(e),
        })
}

/// Set the non-`None` fields of `d` on build `id`; `what` names them in the error.
pub(crate) fn details(
    state: &Shared,
    id: &str,
    what: &'static str,
    d: &BuildDetails,
) -> Result<(), RecordError> {
    state
        .store
        .db()
        .update_build_details(id, d)
        .map(|_| ())
        .map_err(|e| RecordError::Details {
            id: id.into(),
            what,
            source: Box::new(e),
        })
}

fn write_end(state: &Shared, id: &str, end: &End) -> Result<(), RecordError> {
    state
        .store
        .db()
        .update_build(
            id,
            end.status.as_str(),
            end.manifest.as_deref(),
            Some(end.finished),
            end.error.as_deref(),
        )
        .map(|_| ())
        .map_err(|e| RecordError::Status {
            id: id.into(),
            status: end.status.as_str(),
            source: Box::new(e),
        })
}

/// Record a succeeded build's end; on failure nothing is kept (the caller fails the build).
pub(crate) fn succeeded(state: &Shared, id: &str, end: &End) -> Result<(), RecordError> {
    write_end(state, id, end)
}

/// Record how a build ended that did not succeed. When kiln.db refuses, the end is kept in
/// memory with the refusal added to its error, served by the API, and written later.
pub(crate) fn ended(state: &Shared, id: &str, mut end: End) {
    retry(state);
    if let Err(e) = write_end(state, id, &end) {
        let cause = logged(&e, id);
        let note = format!("(and the record could not be written: {cause})");
        end.error = Some(match end.error.take() {
            Some(text) => format!("{text} {note}"),
            None => note,
        });
        state.unwritten.lock().insert(id.to_string(), end);
    }
}

/// Write the ends kiln.db refused before; those it still refuses stay. Returns how many.
pub(crate) fn retry(state: &Shared) -> usize {
    let pending: Vec<(String, End)> = state
        .unwritten
        .lock()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (id, end) in pending {
        if write_end(state, &id, &end).is_ok() {
            log::info("build.record_written", &[("id", id.as_str().into())]);
            state.unwritten.lock().remove(&id);
        }
    }
    state.unwritten.len()
}

/// The end of a build that could not be recorded as it happened: failed, with the cause.
pub(crate) fn failed_end(finished: i64, error: String) -> End {
    End {
        status: Status::Failed,
        manifest: None,
        finished,
        error: Some(error),
    }
}
