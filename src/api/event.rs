//! The NDJSON event stream of `GET /v1/builds/{id}/events`: every `kiln::engine::Event` with the same
//! shape (so `--progress json` and the daemon speak one format), plus the daemon's own lifecycle
//! events (queued, started, push progress, error, cancelled).

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::engine;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The build was accepted and waits for a slot.
    Queued { id: String, position: usize },
    /// A slot was free; the build runs.
    Started { id: String },
    /// Bytes of a blob pushed so far.
    PushProgress { reference: String, bytes: u64 },
    /// The build failed; `step`/`line` name where when known. Always the last event of a failed build.
    Error {
        kind: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<usize>,
    },
    /// The build was cancelled. Always the last event of a cancelled build.
    Cancelled { reason: String },
    /// The build and everything after it (push) succeeded. Always the last event of a good build.
    Succeeded {
        manifest: Digest,
        /// The index over the manifest and its attestations, when the build made one (what the
        /// tags name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<Digest>,
    },
    /// An event of the engine, in exactly the shape `kiln build --progress json` prints.
    #[serde(untagged)]
    Build(engine::Event),
}

impl Event {
    /// True for the last event of a build.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::Error { .. } | Event::Cancelled { .. } | Event::Succeeded { .. }
        )
    }

    /// The engine's event, for the shared progress renderer (None for the daemon's own events).
    pub fn to_build_event(&self) -> Option<engine::Event> {
        match self {
            Event::Build(e) => Some(e.clone()),
            _ => None,
        }
    }
}

impl From<&engine::Event> for Event {
    fn from(e: &engine::Event) -> Event {
        Event::Build(e.clone())
    }
}

pub use engine::LayerSummary;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_events_keep_their_shape() {
        let e = engine::Event::Log {
            step: 2,
            line: "hi".into(),
        };
        let ours = Event::from(&e);
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&e).unwrap()
        );
        assert_eq!(ours.to_build_event(), Some(e));
    }
}
