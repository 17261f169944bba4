//! The build queue: a build is recorded (`queued`), waits for one of `max_concurrent_builds`
//! slots, runs `engine::build` on a blocking thread with its own `Cancel`, and ends `succeeded`,
//! `failed` or `cancelled` with its steps and result in the record and a terminal event in its log.
//!
//! Must not: fork, store credentials, or leave a secret file behind (the `Prepared` that owns them
//! is dropped when the build ends).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

use crate::api::{self, kind, BuildOutcome, BuildSpec, Event, Status, StepRecord};
use crate::engine::{self, BuildError};
use crate::exec::Cancel;
use crate::store::{BuildDetails, BuildRecord, StoreError};

use super::events::{self, EventLog};
use super::hooks;
use super::log;
use super::outputs;
use super::records;
use super::resolve::Prepared;
use super::{error_chain, now, ApiError, JobMap, Shared};

/// A queued or running build.
pub(crate) struct Job {
    pub id: String,
    /// Who asked (SO_PEERCRED): outputs are handed to this uid/gid.
    pub peer: Option<api::Peer>,
    /// When it was accepted, for the durations the daemon log reports.
    pub accepted: std::time::Instant,
    pub cancel: Cancel,
    pub woken: Notify,
    pub reason: Mutex<Option<String>>,
    pub log: Arc<EventLog>,
}

impl Job {
    pub(crate) fn cancel(&self, reason: &str) {
        {
            let mut r = crate::sync::lock(&self.reason);
            r.get_or_insert_with(|| reason.to_string());
        }
        self.cancel.cancel();
        self.woken.notify_one();
    }
}

pub(crate) struct Jobs {
    map: Mutex<JobMap>,
    slots: Arc<Semaphore>,
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
}

impl Jobs {
    pub(crate) fn new(max: usize) -> Jobs {
        Jobs {
            map: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(max.max(1))),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobMap> {
        crate::sync::lock(&self.map)
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.lock().get(id).cloned()
    }

    pub(crate) fn active(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn cancel_all(&self, reason: &str) {
        for j in self.lock().values() {
            j.cancel(reason);
        }
    }
}

/// A fresh build id: 16 random hex digits.
fn new_id() -> String {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t as u64 ^ u64::from(std::process::id())).to_be_bytes();
    }
    hex::encode(b)
}

/// Record and queue a validated build; returns its id at once.
pub(crate) fn submit(
    state: &Shared,
    spec: &BuildSpec,
    prepared: Prepared,
    peer: Option<api::Peer>,
) -> Result<String, ApiError> {
    let id = new_id();
    let spec_json = serde_json::to_string(&spec.redacted()).map_err(ApiError::internal)?;
    let db = state.store.db();
    db.insert_build(&BuildRecord {
        id: id.clone(),
        status: Status::Queued.as_str().into(),
        spec_json,
        result_digest: None,
        started: now(),
        finished: None,
        error: None,
    })?;
    // kiln.db takes writes again: ends it refused before are written now.
    records::retry(state);
    let details = BuildDetails {
        dockerfile: prepared.dockerfile_text.clone(),
        peer_uid: peer.map(|p| p.uid),
        peer_gid: peer.map(|p| p.gid),
        peer_pid: peer.and_then(|p| p.pid),
        ..BuildDetails::default()
    };
    if let Err(e) = records::details(state, &id, "submitter", &details) {
        // Refused, not left `queued` for ever.
        let cause = records::logged(&e, &id);
        let text = format!("{}: {cause}", kind::RECORD_FAILED);
        records::ended(state, &id, records::failed_end(now(), text));
        return Err(ApiError::internal(cause));
    }
    let log = EventLog::create(
        state.logs_dir().join(format!("{id}.ndjson")),
        prepared.sensitive.clone(),
    )
    .map_err(ApiError::internal)?;
    log::info(
        "build.accepted",
        &[
            ("id", id.as_str().into()),
            ("peer_uid", peer.map(|p| p.uid).into()),
            ("peer_gid", peer.map(|p| p.gid).into()),
            ("peer_pid", peer.and_then(|p| p.pid).into()),
            ("tags", prepared.req.tags.join(",").into()),
            ("context", prepared.req.context.display().to_string().into()),
            ("push", spec.push.into()),
        ],
    );
    let job = Arc::new(Job {
        id: id.clone(),
        peer,
        accepted: std::time::Instant::now(),
        cancel: Cancel::new(),
        woken: Notify::new(),
        reason: Mutex::new(None),
        log: Arc::new(log),
    });
    let position = state.jobs.queued.fetch_add(1, Ordering::SeqCst) + 1;
    state.jobs.lock().insert(id.clone(), job.clone());
    job.log.append(&Event::Queued {
        id: id.clone(),
        position,
    });
    state.metrics.queued();
    let state = state.clone();
    tokio::spawn(async move { drive(state, job, prepared).await });
    Ok(id)
}

async fn drive(state: Shared, job: Arc<Job>, prepared: Prepared) {
    let permit = tokio::select! {
        p = state.jobs.slots.clone().acquire_owned() => p.ok(),
        () = job.woken.notified() => None,
    };
    state.jobs.queued.fetch_sub(1, Ordering::SeqCst);
    let outcome = match permit {
        Some(permit) if !job.cancel.is_cancelled() => {
            state.jobs.running.fetch_add(1, Ordering::SeqCst);
            let outcome = run(&state, &job, prepared).await;
            state.jobs.running.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            outcome
        }
        _ => {
            drop(prepared);
            Finish::Cancelled
        }
    };
    // Off the async workers: a write kiln.db makes wait (a lock held elsewhere) must not stall
    // the API.
    let (st, j) = (state.clone(), job.clone());
    if let Err(e) = tokio::task::spawn_blocking(move || finish(&st, &j, outcome)).await {
        log::error(
            "build.record_failed",
            &[
                ("id", job.id.as_str().into()),
                (
                    "error",
                    format!("the thread ending the build panicked: {e}").into(),
                ),
            ],
        );
    }
    state.jobs.lock().remove(&job.id);
}

/// On a blocking thread: mark the build running and run it. A build whose record cannot say it
/// runs does not run.
async fn run(state: &Shared, job: &Arc<Job>, prepared: Prepared) -> Finish {
    let (st, j) = (state.clone(), job.clone());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = records::running(&st, &j.id) {
            return Finish::record_failed(records::logged(&e, &j.id));
        }
        j.log.append(&Event::Started { id: j.id.clone() });
        log::info(
            "build.started",
            &[
                ("id", j.id.as_str().into()),
                (
                    "queued_ms",
                    (j.accepted.elapsed().as_millis() as u64).into(),
                ),
            ],
        );
        execute(&st, &j, prepared)
    })
    .await
    .unwrap_or_else(|e| Finish::Failed {
        kind: kind::INTERNAL,
        message: format!("the build thread panicked: {e}"),
        step: None,
        line: None,
    })
}

enum Finish {
    Succeeded(BuildOutcome),
    Failed {
        kind: &'static str,
        message: String,
        step: Option<usize>,
        line: Option<usize>,
    },
    Cancelled,
}

impl Finish {
    /// A build whose record could not be written: failed, with the cause.
    fn record_failed(message: String) -> Finish {
        Finish::Failed {
            kind: kind::RECORD_FAILED,
            message,
            step: None,
            line: None,
        }
    }

    /// This end, with its `what` not recorded: a success becomes a failure naming what was
    /// built; a failure keeps its own cause first.
    fn unrecorded(self, what: &str, cause: &str) -> Finish {
        match self {
            Finish::Succeeded(out) => Finish::record_failed(format!(
                "{} but its {what} could not be recorded: {cause}",
                built(&out)
            )),
            Finish::Failed {
                kind,
                message,
                step,
                line,
            } => Finish::Failed {
                kind,
                message: format!("{message} (and its {what} could not be recorded: {cause})"),
                step,
                line,
            },
            Finish::Cancelled => Finish::record_failed(format!(
                "cancelled, and its {what} could not be recorded: {cause}"
            )),
        }
    }
}

/// `the image sha256:… was built [and tagged …]`.
fn built(out: &BuildOutcome) -> String {
    format!(
        "the image {} was built{}",
        out.manifest,
        match out.tags.is_empty() {
            true => String::new(),
            false => format!(" and tagged {}", out.tags.join(", ")),
        }
    )
}

/// Record a succeeded build (its result, then its status) and announce its end. The first write
/// kiln.db refuses fails the build instead, with the cause; what a hook subscriber could not do
/// is returned as warnings for the build's events.
fn record_success(state: &Shared, job: &Job, out: &BuildOutcome) -> Result<Vec<String>, String> {
    let details = BuildDetails {
        result_json: serde_json::to_string(out).ok(),
        ..BuildDetails::default()
    };
    let written = records::details(state, &job.id, "result", &details).and_then(|()| {
        let end = records::End {
            status: Status::Succeeded,
            manifest: Some(out.manifest.clone()),
            finished: now(),
            error: None,
        };
        records::succeeded(state, &job.id, &end)
    });
    written.map_err(|e| {
        format!(
            "{} but its record could not be written: {}",
            built(out),
            records::logged(&e, &job.id)
        )
    })?;
    let ended = hooks::Ended {
        id: &job.id,
        outcome: hooks::Outcome::Succeeded { tags: &out.tags },
    };
    Ok(hooks::announce(state, &ended))
}

/// Warnings in the build's events for what a "build ended" subscriber could not do.
fn hook_warnings(job: &Job, failed: Vec<String>) {
    for f in failed {
        job.log.append(&Event::Build(engine::Event::Warning {
            message: format!("after the build ended, {f}"),
        }));
    }
}

fn finish(state: &Shared, job: &Job, outcome: Finish) {
    let took = (
        "duration_ms",
        (job.accepted.elapsed().as_millis() as u64).into(),
    );
    let id = ("id", job.id.as_str().into());
    let outcome = match outcome {
        Finish::Succeeded(out) => match record_success(state, job, &out) {
            Ok(failed) => {
                hook_warnings(job, failed);
                if let Ok(manifest) = out.manifest.parse() {
                    let index = out.index.as_ref().and_then(|i| i.parse().ok());
                    job.log.append(&Event::Succeeded { manifest, index });
                }
                log::info(
                    "build.succeeded",
                    &[
                        id,
                        took,
                        ("digest", out.manifest.as_str().into()),
                        ("tags", out.tags.join(",").into()),
                    ],
                );
                state.metrics.finished(Status::Succeeded);
                return;
            }
            Err(message) => Finish::record_failed(message),
        },
        other => other,
    };
    let (status, error) = match outcome {
        Finish::Succeeded(_) => return,
        Finish::Failed {
            kind,
            message,
            step,
            line,
        } => {
            let e = Event::Error {
                kind: kind.to_string(),
                message,
                step,
                line,
            };
            job.log.append(&e);
            // The stored error is the scrubbed text the log holds.
            let text = match &e {
                Event::Error { message, .. } => job.log.scrub_text(message),
                _ => String::new(),
            };
            log::error(
                "build.failed",
                &[
                    id,
                    took,
                    ("kind", kind.into()),
                    ("error", text.as_str().into()),
                ],
            );
            (Status::Failed, format!("{kind}: {text}"))
        }
        Finish::Cancelled => {
            let reason = crate::sync::lock(&job.reason)
                .clone()
                .unwrap_or_else(|| "cancelled".into());
            job.log.append(&Event::Cancelled {
                reason: reason.clone(),
            });
            log::info(
                "build.cancelled",
                &[id, took, ("reason", reason.as_str().into())],
            );
            (Status::Cancelled, reason)
        }
    };
    let end = records::End {
        status,
        manifest: None,
        finished: now(),
        error: Some(error.clone()),
    };
    records::ended(state, &job.id, end);
    let ended = hooks::Ended {
        id: &job.id,
        outcome: hooks::Outcome::Failed { error: &error },
    };
    // The terminal event is in the log already; a subscriber's failure is logged only.
    drop(hooks::announce(state, &ended));
    state.metrics.finished(status);
}

/// Run one build on this (blocking) thread.
fn execute(state: &Shared, job: &Job, prepared: Prepared) -> Finish {
    let mut steps: BTreeMap<usize, StepRecord> = BTreeMap::new();
    let mut totals = (0u64, 0u64);
    let mut on_event = |e: &engine::Event| {
        match e {
            engine::Event::Finished {
                size, duration_ms, ..
            } => totals = (*size, *duration_ms),
            engine::Event::StepStarted {
                step,
                stage,
                line,
                instruction,
                ..
            } => {
                steps.insert(
                    *step,
                    StepRecord {
                        step: *step,
                        stage: stage.clone(),
                        line: *line,
                        instruction: instruction.clone(),
                        ..StepRecord::default()
                    },
                );
            }
            engine::Event::Transferred { kind, bytes, .. } => {
                let counter = if kind == "pushed" {
                    &state.metrics.bytes_pushed
                } else {
                    &state.metrics.bytes_pulled
                };
                counter.fetch_add(*bytes, Ordering::Relaxed);
            }
            engine::Event::StepFinished {
                step,
                duration_ms,
                layer,
                cached,
            } => {
                if *cached {
                    state.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                }
                state.metrics.step(*duration_ms);
                if let Some(s) = steps.get_mut(step) {
                    s.duration_ms = Some(*duration_ms);
                    s.layer = layer.clone();
                }
            }
            _ => {}
        }
        job.log.append(&Event::from(e));
    };
    // Outputs in a shared folder (a `type=local` cache too): missing parents made, everything
    // handed to the caller.
    let mut handed = prepared.req.outputs.clone();
    for c in &prepared.req.cache_to {
        if let crate::cache::spec::ExportTarget::Local { dest, .. } = &c.target {
            handed.push(engine::Output::Oci { dest: dest.clone() });
        }
    }
    // Metadata files too: parents made for the caller, the files handed over.
    for p in prepared.req.metadata_files.paths() {
        handed.push(engine::Output::Docker { dest: p.clone() });
    }
    let ours = match outputs::prepare(&handed, job.peer) {
        Ok(ours) => ours,
        Err(e) => {
            return Finish::Failed {
                kind: kind::BUILD_FAILED,
                message: error_chain(&e),
                step: None,
                line: None,
            }
        }
    };
    let result = engine::build(&state.store, &prepared.req, &mut on_event, &job.cancel);
    let steps_json = serde_json::to_string(&steps.values().collect::<Vec<_>>()).ok();
    let details = BuildDetails {
        steps_json,
        ..BuildDetails::default()
    };
    let steps_written = records::details(state, &job.id, "steps", &details)
        .map_err(|e| records::logged(&e, &job.id));
    let last_step = steps.keys().next_back().copied();
    let finish = conclude(job, &prepared, result, &ours, totals, last_step);
    match steps_written {
        Ok(()) => finish,
        Err(cause) => finish.unrecorded("steps", &cause),
    }
}

/// How a build that ran ended (outputs handed over when it succeeded).
fn conclude(
    job: &Job,
    prepared: &Prepared,
    result: Result<engine::BuildResult, BuildError>,
    ours: &[std::path::PathBuf],
    totals: (u64, u64),
    last_step: Option<usize>,
) -> Finish {
    match result {
        Ok(r) => {
            if let Err(e) = outputs::hand_over(ours, job.peer) {
                return Finish::Failed {
                    kind: kind::BUILD_FAILED,
                    message: error_chain(&e),
                    step: None,
                    line: None,
                };
            }
            let out = BuildOutcome {
                manifest: r.manifest.digest.to_string(),
                index: r.index.as_ref().map(|i| i.digest.to_string()),
                config: r.config.to_string(),
                tags: r.tags.clone(),
                size: totals.0,
                duration_ms: totals.1,
            };
            Finish::Succeeded(out)
        }
        Err(_) if job.cancel.is_cancelled() => Finish::Cancelled,
        Err(BuildError::Cancelled) => Finish::Cancelled,
        Err(e) => {
            let line = match &e {
                BuildError::Step { line, .. } if *line > 0 => Some(*line),
                _ => None,
            };
            let mut message = error_chain(&e);
            if matches!(e, BuildError::Push { .. }) {
                // The image was built and tagged before the push: say where it is.
                message.push_str(&format!(
                    " (the image was built and is tagged {} in the daemon's local store; \
                     a rebuild pushes it again from the cache)",
                    prepared.req.tags.join(", ")
                ));
            }
            Finish::Failed {
                kind: if matches!(e, BuildError::Push { .. } | BuildError::Registry(_)) {
                    kind::PUSH_FAILED
                } else {
                    kind::BUILD_FAILED
                },
                message,
                step: line.and(last_step),
                line,
            }
        }
    }
}

/// At start-up: builds a previous daemon left `queued` or `running` were interrupted.
pub(crate) fn recover(state: &Shared) -> Result<(), StoreError> {
    let reason =
        "interrupted: the daemon stopped or restarted while this build was queued or running";
    let ids = state.store.db().fail_unfinished_builds(reason, now())?;
    for id in ids {
        log::warn(
            "build.interrupted",
            &[("id", id.as_str().into()), ("reason", reason.into())],
        );
        // A catalog entry it drove fails with it, not `building` for ever.
        let ended = hooks::Ended {
            id: &id,
            outcome: hooks::Outcome::Interrupted { reason },
        };
        drop(hooks::announce(state, &ended));
        let path = state.logs_dir().join(format!("{id}.ndjson"));
        let end = Event::Error {
            kind: kind::INTERRUPTED.into(),
            message: reason.into(),
            step: None,
            line: None,
        };
        if let Err(e) = events::append_offline(&path, &end) {
            // The record says it; only the log of events lacks its last line.
            log::warn(
                "build.log_write_failed",
                &[("id", id.as_str().into()), ("error", e.to_string().into())],
            );
        }
    }
    Ok(())
}

/// Parse a stored record into the API's view.
pub(crate) fn build_info(
    rec: BuildRecord,
    details: Option<BuildDetails>,
) -> Result<api::BuildInfo, ApiError> {
    let d = details.unwrap_or_default();
    let status = Status::parse(&rec.status).unwrap_or(Status::Failed);
    Ok(api::BuildInfo {
        spec: serde_json::from_str(&rec.spec_json).unwrap_or(serde_json::Value::Null),
        id: rec.id,
        status,
        created: rec.started,
        finished: rec.finished,
        error: rec.error,
        peer: match (d.peer_uid, d.peer_gid) {
            (Some(uid), Some(gid)) => Some(api::Peer {
                uid,
                gid,
                pid: d.peer_pid,
            }),
            _ => None,
        },
        dockerfile: d.dockerfile,
        steps: d
            .steps_json
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
        result: d.result_json.and_then(|s| serde_json::from_str(&s).ok()),
    })
}
