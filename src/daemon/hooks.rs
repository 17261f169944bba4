//! The "build ended" hook. What must follow a build's end subscribes to it — the catalog entry
//! the build drives (`catalog.rs`), the automatic GC (`gc.rs`), listed in `daemon/mod.rs`'s
//! `BUILD_ENDED` — so the build queue (`jobs.rs`) only announces ends and names none of them. Subscribers run in order, after the build's own
//! status is recorded: a subscriber that reads other builds' statuses (a universal catalog entry
//! waits for both of its builds) sees this one's.
//!
//! Must not: record a build's status, or fail a build that ended — a subscriber's failure is
//! logged and handed back for the build's event log.

use super::records::RecordError;
use super::{log, Shared};

/// How a build ended, as subscribers need it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
    Succeeded {
        tags: &'a [String],
    },
    /// Failed or cancelled while this daemon ran it.
    Failed {
        error: &'a str,
    },
    /// Found queued or running at start-up: a previous daemon stopped under it.
    Interrupted {
        reason: &'a str,
    },
}

/// One build's end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ended<'a> {
    pub id: &'a str,
    pub outcome: Outcome<'a>,
}

/// A subscriber: a name for the logs, and what it does.
pub(crate) type Subscriber = (
    &'static str,
    fn(&Shared, &Ended<'_>) -> Result<(), RecordError>,
);

/// Tell every subscriber that a build ended. Returns the failures, each already logged as
/// `build.hook_failed`, for the caller to add to the build's events.
pub(crate) fn announce(state: &Shared, ended: &Ended<'_>) -> Vec<String> {
    let mut failed = Vec::new();
    for (name, subscriber) in super::BUILD_ENDED {
        if let Err(e) = subscriber(state, ended) {
            let text = super::error_chain(&e);
            log::error(
                "build.hook_failed",
                &[
                    ("id", ended.id.into()),
                    ("hook", name.into()),
                    ("error", text.as_str().into()),
                ],
            );
            failed.push(format!("{name}: {text}"));
        }
    }
    failed
}
