//! The NDJSON event stream of `GET /v1/builds/{id}/events`: every `kiln::build::Event` with the same
//! shape (so `--progress json` and the daemon speak one format), plus the daemon's own lifecycle
//! events (queued, started, push progress, error, cancelled).

use serde::{Deserialize, Serialize};

use crate::build;
use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The build was accepted and waits for a slot.
    Queued {
        id: String,
        position: usize,
    },
    /// A slot was free; the build runs.
    Started {
        id: String,
    },
    Planned {
        stages: usize,
        steps: usize,
    },
    Warning {
        message: String,
    },
    StageStarted {
        stage: String,
        base: String,
    },
    StepStarted {
        step: usize,
        total: usize,
        stage: String,
        line: usize,
        instruction: String,
    },
    Sandbox {
        rung: String,
        snapshotter: String,
        warnings: Vec<String>,
    },
    StepProgress {
        step: usize,
        bytes: u64,
    },
    Log {
        step: usize,
        line: String,
    },
    StepFinished {
        step: usize,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer: Option<LayerSummary>,
    },
    Exported {
        kind: String,
        dest: String,
    },
    /// Bytes of a blob pushed so far.
    PushProgress {
        reference: String,
        bytes: u64,
    },
    Finished {
        manifest: Digest,
        config: Digest,
        tags: Vec<String>,
        size: u64,
        duration_ms: u64,
    },
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
    Cancelled {
        reason: String,
    },
    /// The build and everything after it (push) succeeded. Always the last event of a good build.
    Succeeded {
        manifest: Digest,
    },
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
    pub fn to_build_event(&self) -> Option<build::Event> {
        Some(match self.clone() {
            Event::Planned { stages, steps } => build::Event::Planned { stages, steps },
            Event::Warning { message } => build::Event::Warning { message },
            Event::StageStarted { stage, base } => build::Event::StageStarted { stage, base },
            Event::StepStarted {
                step,
                total,
                stage,
                line,
                instruction,
            } => build::Event::StepStarted {
                step,
                total,
                stage,
                line,
                instruction,
            },
            Event::Sandbox {
                rung,
                snapshotter,
                warnings,
            } => build::Event::Sandbox {
                rung,
                snapshotter,
                warnings,
            },
            Event::StepProgress { step, bytes } => build::Event::StepProgress { step, bytes },
            Event::Log { step, line } => build::Event::Log { step, line },
            Event::StepFinished {
                step,
                duration_ms,
                layer,
            } => build::Event::StepFinished {
                step,
                duration_ms,
                layer: layer.map(Into::into),
            },
            Event::Exported { kind, dest } => build::Event::Exported { kind, dest },
            Event::Finished {
                manifest,
                config,
                tags,
                size,
                duration_ms,
            } => build::Event::Finished {
                manifest,
                config,
                tags,
                size,
                duration_ms,
            },
            Event::Queued { .. }
            | Event::Started { .. }
            | Event::PushProgress { .. }
            | Event::Error { .. }
            | Event::Cancelled { .. }
            | Event::Succeeded { .. } => return None,
        })
    }
}

impl From<&build::Event> for Event {
    fn from(e: &build::Event) -> Event {
        match e.clone() {
            build::Event::Planned { stages, steps } => Event::Planned { stages, steps },
            build::Event::Warning { message } => Event::Warning { message },
            build::Event::StageStarted { stage, base } => Event::StageStarted { stage, base },
            build::Event::StepStarted {
                step,
                total,
                stage,
                line,
                instruction,
            } => Event::StepStarted {
                step,
                total,
                stage,
                line,
                instruction,
            },
            build::Event::Sandbox {
                rung,
                snapshotter,
                warnings,
            } => Event::Sandbox {
                rung,
                snapshotter,
                warnings,
            },
            build::Event::StepProgress { step, bytes } => Event::StepProgress { step, bytes },
            build::Event::Log { step, line } => Event::Log { step, line },
            build::Event::StepFinished {
                step,
                duration_ms,
                layer,
            } => Event::StepFinished {
                step,
                duration_ms,
                layer: layer.map(Into::into),
            },
            build::Event::Exported { kind, dest } => Event::Exported { kind, dest },
            build::Event::Finished {
                manifest,
                config,
                tags,
                size,
                duration_ms,
            } => Event::Finished {
                manifest,
                config,
                tags,
                size,
                duration_ms,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub uncompressed_size: u64,
}

impl From<build::LayerSummary> for LayerSummary {
    fn from(l: build::LayerSummary) -> Self {
        LayerSummary {
            digest: l.digest,
            diff_id: l.diff_id,
            size: l.size,
            uncompressed_size: l.uncompressed_size,
        }
    }
}

impl From<LayerSummary> for build::LayerSummary {
    fn from(l: LayerSummary) -> Self {
        build::LayerSummary {
            digest: l.digest,
            diff_id: l.diff_id,
            size: l.size,
            uncompressed_size: l.uncompressed_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_events_keep_their_shape() {
        let e = build::Event::Log {
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
