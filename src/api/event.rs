//! The NDJSON event stream of `GET /v1/builds/{id}/events`: the build's own events
//! ([`BuildEvent`], which the engine emits and `kiln build --progress json` prints), plus the
//! daemon's lifecycle events (queued, started, push progress, error, cancelled).
//!
//! Must not: name the engine; it is the contract the engine, daemon and clients share.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

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
    Build(BuildEvent),
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
    pub fn to_build_event(&self) -> Option<BuildEvent> {
        match self {
            Event::Build(e) => Some(e.clone()),
            _ => None,
        }
    }
}

impl From<&BuildEvent> for Event {
    fn from(e: &BuildEvent) -> Event {
        Event::Build(e.clone())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BuildEvent {
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
        /// The stronger rungs that do not work here, each with why (`full: …`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unavailable: Vec<String>,
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer: Option<LayerSummary>,
        /// The step was not run: the step cache had its result.
        #[serde(default)]
        cached: bool,
    },
    /// Blob bytes moved to (`pushed`) or from (`pulled`) a registry for one image; blobs the other
    /// side already had do not count.
    Transferred {
        kind: String,
        reference: String,
        bytes: u64,
    },
    /// An output was written (`oci`, `docker`) or a tag set (`store`).
    Exported {
        kind: String,
        dest: String,
    },
    /// The shared step cache: a source imported or a cache exported (`action`: imported,
    /// exported, seeded, fetched), with what it held or cost. A source that is not used is a
    /// `Warning`.
    Cache {
        action: String,
        source: String,
        detail: String,
    },
    Finished {
        manifest: Digest,
        config: Digest,
        tags: Vec<String>,
        size: u64,
        duration_ms: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerSummary {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub uncompressed_size: u64,
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl BuildEvent {
    /// The event as one line of a plain build log (`--progress plain`, the daemon's `/logs`);
    /// None for events a log does not show (byte counters).
    pub fn plain_line(&self) -> Option<String> {
        Some(match self {
            BuildEvent::Planned { stages, steps } => {
                format!("planned {stages} stage(s), {steps} step(s)")
            }
            BuildEvent::Warning { message } => format!("WARNING: {message}"),
            BuildEvent::StageStarted { stage, base } => format!("[{stage}] FROM {base}"),
            BuildEvent::StepStarted {
                step,
                total,
                stage,
                instruction,
                ..
            } => format!(
                "[{stage} {step}/{total}] {}",
                instruction.lines().next().unwrap_or("")
            ),
            BuildEvent::Sandbox {
                rung,
                snapshotter,
                warnings,
                unavailable,
            } => {
                let mut text = format!("sandbox: {rung} rung, {snapshotter} snapshots");
                for u in unavailable {
                    text.push_str(&format!("\n  not {u}"));
                }
                for w in warnings {
                    text.push_str(&format!("\nWARNING: {w}"));
                }
                text
            }
            BuildEvent::StepProgress { .. } => return None,
            BuildEvent::Log { line, .. } => format!("  {line}"),
            BuildEvent::StepFinished {
                step,
                duration_ms,
                layer,
                cached,
            } => {
                let secs = *duration_ms as f64 / 1000.0;
                let what = match layer {
                    Some(l) => format!(
                        "layer {} {} ({} uncompressed)",
                        l.digest.short(),
                        human(l.size),
                        human(l.uncompressed_size)
                    ),
                    None => "config".to_string(),
                };
                if *cached {
                    format!("  #{step} CACHED: {what}")
                } else {
                    format!("  #{step} done in {secs:.2}s: {what}")
                }
            }
            BuildEvent::Exported { kind, dest } => format!("exported {kind}: {dest}"),
            BuildEvent::Cache {
                action,
                source,
                detail,
            } => format!("cache {action} {source}: {detail}"),
            BuildEvent::Transferred {
                kind,
                reference,
                bytes,
            } => format!("{kind} {} for {reference}", human(*bytes)),
            BuildEvent::Finished {
                manifest,
                tags,
                size,
                duration_ms,
                ..
            } => format!(
                "built {manifest} ({}) in {:.2}s{}",
                human(*size),
                *duration_ms as f64 / 1000.0,
                if tags.is_empty() {
                    String::new()
                } else {
                    format!(", tagged {}", tags.join(", "))
                }
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_events_keep_their_shape() {
        let e = BuildEvent::Log {
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
