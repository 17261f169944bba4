//! The build queue: a build is recorded (`queued`), waits for one of `max_concurrent_builds`
//! slots, runs `engine::run` on a blocking thread with its own `Cancel`, and ends `succeeded`,
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
use super::log;
use super::outputs;
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
    pub fn cancel(&self, reason: &str) {
        {
            let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
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
    pub fn new(max: usize) -> Jobs {
        Jobs {
            map: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(max.max(1))),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.lock().get(id).cloned()
    }

    pub fn active(&self) -> usize {
        self.lock().len()
    }

    pub fn cancel_all(&self, reason: &str) {
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
    db.update_build_details(
        &id,
        &BuildDetails {
            dockerfile: prepared.dockerfile_text.clone(),
            peer_uid: peer.map(|p| p.uid),
            peer_gid: peer.map(|p| p.gid),
            peer_pid: peer.and_then(|p| p.pid),
            ..BuildDetails::default()
        },
    )?;
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
            let _ =
                state
                    .store
                    .db()
                    .update_build(&job.id, Status::Running.as_str(), None, None, None);
            job.log.append(&Event::Started { id: job.id.clone() });
            log::info(
                "build.started",
                &[
                    ("id", job.id.as_str().into()),
                    (
                        "queued_ms",
                        (job.accepted.elapsed().as_millis() as u64).into(),
                    ),
                ],
            );
            let (st, j) = (state.clone(), job.clone());
            let r = tokio::task::spawn_blocking(move || execute(&st, &j, prepared)).await;
            state.jobs.running.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            r.unwrap_or_else(|e| Finish::Failed {
                kind: kind::INTERNAL,
                message: format!("the build thread panicked: {e}"),
                step: None,
                line: None,
            })
        }
        _ => {
            drop(prepared);
            Finish::Cancelled
        }
    };
    finish(&state, &job, outcome);
    state.jobs.lock().remove(&job.id);
    state.gc.build_ended();
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

fn finish(state: &Shared, job: &Job, outcome: Finish) {
    let db = state.store.db();
    let t = now();
    let took = (
        "duration_ms",
        (job.accepted.elapsed().as_millis() as u64).into(),
    );
    let id = ("id", job.id.as_str().into());
    match outcome {
        Finish::Succeeded(out) => {
            let _ = db.update_build(
                &job.id,
                Status::Succeeded.as_str(),
                Some(&out.manifest),
                Some(t),
                None,
            );
            let _ = db.update_build_details(
                &job.id,
                &BuildDetails {
                    result_json: serde_json::to_string(&out).ok(),
                    ..BuildDetails::default()
                },
            );
            super::catalog::build_ended(state, &job.id, Some(&out.tags), None);
            if let Ok(manifest) = out.manifest.parse() {
                job.log.append(&Event::Succeeded { manifest });
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
        }
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
            let _ = db.update_build(
                &job.id,
                Status::Failed.as_str(),
                None,
                Some(t),
                Some(&format!("{kind}: {text}")),
            );
            super::catalog::build_ended(state, &job.id, None, Some(&format!("{kind}: {text}")));
            state.metrics.finished(Status::Failed);
        }
        Finish::Cancelled => {
            let reason = job
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "cancelled".into());
            job.log.append(&Event::Cancelled {
                reason: reason.clone(),
            });
            log::info(
                "build.cancelled",
                &[id, took, ("reason", reason.as_str().into())],
            );
            let _ = db.update_build(
                &job.id,
                Status::Cancelled.as_str(),
                None,
                Some(t),
                Some(&reason),
            );
            super::catalog::build_ended(state, &job.id, None, Some(&reason));
            state.metrics.finished(Status::Cancelled);
        }
    }
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
    let result = engine::run(&state.store, &prepared.req, &mut on_event, &job.cancel);
    let steps_json = serde_json::to_string(&steps.values().collect::<Vec<_>>()).ok();
    let _ = state.store.db().update_build_details(
        &job.id,
        &BuildDetails {
            steps_json,
            ..BuildDetails::default()
        },
    );
    let last_step = steps.keys().next_back().copied();
    match result {
        Ok(r) => {
            if let Err(e) = outputs::hand_over(&ours, job.peer) {
                return Finish::Failed {
                    kind: kind::BUILD_FAILED,
                    message: error_chain(&e),
                    step: None,
                    line: None,
                };
            }
            let out = BuildOutcome {
                manifest: r.manifest.digest.to_string(),
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
        let path = state.logs_dir().join(format!("{id}.ndjson"));
        events::append_offline(
            &path,
            &Event::Error {
                kind: kind::INTERRUPTED.into(),
                message: reason.into(),
                step: None,
                line: None,
            },
        );
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
