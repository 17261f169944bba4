//! What a build reports while it runs: one-way, in order, serialisable as NDJSON for `--progress json`
//! and (later) the daemon's event stream.

use serde::Serialize;

use crate::digest::Digest;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The plan is ready: how many stages and steps will run.
    Planned {
        stages: usize,
        steps: usize,
    },
    /// A build check or plan warning (`file:line: message`).
    Warning {
        message: String,
    },
    /// A stage starts from its base.
    StageStarted {
        stage: String,
        base: String,
    },
    StepStarted {
        /// 1-based step number over the whole build.
        step: usize,
        total: usize,
        stage: String,
        line: usize,
        instruction: String,
    },
    /// The sandbox RUN steps get (announced at the first RUN).
    Sandbox {
        rung: String,
        snapshotter: String,
        warnings: Vec<String>,
    },
    /// Bytes of a layer written so far (compressed).
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
        #[serde(skip_serializing_if = "Option::is_none")]
        layer: Option<LayerSummary>,
    },
    /// An output was written (`oci`, `docker`) or a tag set (`store`).
    Exported {
        kind: String,
        dest: String,
    },
    Finished {
        manifest: Digest,
        config: Digest,
        tags: Vec<String>,
        size: u64,
        duration_ms: u64,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LayerSummary {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub uncompressed_size: u64,
}
