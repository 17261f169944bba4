//! What a build reports while it runs: one-way, in order, serialisable as NDJSON for `--progress json`
//! and (later) the daemon's event stream.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

impl Event {
    /// The event as one line of a plain build log (`--progress plain`, the daemon's `/logs`);
    /// None for events a log does not show (byte counters).
    pub fn plain_line(&self) -> Option<String> {
        Some(match self {
            Event::Planned { stages, steps } => {
                format!("planned {stages} stage(s), {steps} step(s)")
            }
            Event::Warning { message } => format!("WARNING: {message}"),
            Event::StageStarted { stage, base } => format!("[{stage}] FROM {base}"),
            Event::StepStarted {
                step,
                total,
                stage,
                instruction,
                ..
            } => format!(
                "[{stage} {step}/{total}] {}",
                instruction.lines().next().unwrap_or("")
            ),
            Event::Sandbox {
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
            Event::StepProgress { .. } => return None,
            Event::Log { line, .. } => format!("  {line}"),
            Event::StepFinished {
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
            Event::Exported { kind, dest } => format!("exported {kind}: {dest}"),
            Event::Cache {
                action,
                source,
                detail,
            } => format!("cache {action} {source}: {detail}"),
            Event::Transferred {
                kind,
                reference,
                bytes,
            } => format!("{kind} {} for {reference}", human(*bytes)),
            Event::Finished {
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

/// Add a blob's size to `bytes` when it was really moved (not found on the other side already).
pub(crate) fn count_transfer(
    p: &crate::registry::Progress,
    sizes: &mut std::collections::BTreeMap<Digest, u64>,
    bytes: &mut u64,
) {
    use crate::registry::{BlobOutcome, Progress};
    match p {
        Progress::BlobStarted { digest, size } => {
            sizes.insert(digest.clone(), *size);
        }
        Progress::BlobDone {
            digest,
            outcome: BlobOutcome::Uploaded | BlobOutcome::Downloaded,
        } => *bytes += sizes.get(digest).copied().unwrap_or(0),
        _ => {}
    }
}
