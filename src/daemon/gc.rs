//! The daemon's automatic garbage collection: `[worker.oci]`'s policies (gc = true) applied after
//! builds and on a timer, and `POST /v1/prune`.
//!
//! After builds, BuildKit's throttle (`throttle.After(time.Minute, c.gc)` in control/control.go):
//! the first build to finish starts a run at once; builds finishing in the minute after it are
//! coalesced into one more run when the minute is over. The timer runs the policies every hour
//! whatever happened, and the first time shortly after start-up (BuildKit runs one a second after
//! start). The policies are read from the current configuration for every run, so `PUT
//! /v1/config` changes them without a restart.
//!
//! Must not: run builds, or hold the GC lock longer than a run (the store's `collect` takes it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::api::{kind, PruneRequest};
use crate::store::{self, GcOptions, GcPolicy, GcReport};

use super::log;
use super::{ApiError, Shared};

/// After-build runs are at most this often (BuildKit: a minute).
const THROTTLE: Duration = Duration::from_secs(60);
/// The timer's period.
const INTERVAL: Duration = Duration::from_secs(3600);
/// The first timer run, after start-up.
const FIRST_RUN: Duration = Duration::from_secs(1);

/// How long `/v1/info` reuses a usage count: clients probe `/v1/info` often, and counting walks
/// every cache mount. A build's end or a GC run invalidates it at once.
const USAGE_TTL: Duration = Duration::from_secs(10);

/// Wakes the GC task when a build ends; keeps the last usage count.
#[derive(Default)]
pub(crate) struct AutoGc {
    build_ended: Notify,
    usage: Mutex<Option<(Instant, serde_json::Value)>>,
}

/// The GC's subscriber to the "build ended" hook: a build that ran here may have left garbage,
/// so the GC task runs its policies (throttled); an interrupted build found at start-up did not
/// run here.
pub(super) fn on_build_ended(
    state: &Shared,
    ended: &super::hooks::Ended<'_>,
) -> Result<(), super::records::RecordError> {
    if !matches!(ended.outcome, super::hooks::Outcome::Interrupted { .. }) {
        state.gc.build_ended();
    }
    Ok(())
}

impl AutoGc {
    fn build_ended(&self) {
        self.forget_usage();
        self.build_ended.notify_one();
    }

    fn forget_usage(&self) {
        *crate::sync::lock(&self.usage) = None;
    }

    /// `/v1/info`'s `usage`, counted at most every `USAGE_TTL`.
    pub(crate) fn usage(&self, store: &store::Store) -> serde_json::Value {
        let mut cached = crate::sync::lock(&self.usage);
        if let Some((at, v)) = cached.as_ref() {
            if at.elapsed() < USAGE_TTL {
                return v.clone();
            }
        }
        let v = usage_json(store);
        *cached = Some((Instant::now(), v.clone()));
        v
    }
}

/// Bytes and items by kind (null when the store cannot be read).
fn usage_json(store: &store::Store) -> serde_json::Value {
    let Ok(u) = store.usage(&crate::engine::scratch_dirs()) else {
        return serde_json::Value::Null;
    };
    let rec = |k: &str| u.records.get(k).copied().unwrap_or_default();
    serde_json::json!({
        "images": u.images,
        "build_cache": rec("regular"),
        "cache_mounts": rec("exec.cachemount"),
        "records": u.records,
        "unreferenced_blobs": u.unreferenced,
        "workspaces": u.scratch,
        "snapshots": u.snapshots,
    })
}

/// The GC task: runs until the runtime stops.
pub(crate) fn spawn(state: Shared) {
    tokio::spawn(async move {
        let mut next_timer = tokio::time::Instant::now() + FIRST_RUN;
        loop {
            let trigger = tokio::select! {
                () = state.gc.build_ended.notified() => "after-build",
                () = tokio::time::sleep_until(next_timer) => {
                    next_timer = tokio::time::Instant::now() + INTERVAL;
                    "timer"
                }
            };
            let st = state.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || run_policies(&st, trigger)).await {
                log::error(
                    "gc.failed",
                    &[
                        ("trigger", trigger.into()),
                        ("error", format!("the GC thread panicked: {e}").into()),
                    ],
                );
            }
            if trigger == "after-build" {
                tokio::time::sleep(THROTTLE).await;
            }
        }
    });
}

/// One run of the configured policies (nothing when `gc` is not true).
fn run_policies(state: &Shared, trigger: &str) {
    let worker = crate::sync::lock(&state.config).config().worker;
    let disk = store::DiskStat::of(state.store.root());
    let policies = match store::policies_from_config(&worker, &disk) {
        Ok(p) if p.is_empty() => return,
        Ok(p) => p,
        Err(e) => {
            log::error(
                "gc.failed",
                &[
                    ("trigger", trigger.into()),
                    ("error", super::error_chain(&e).as_str().into()),
                ],
            );
            return;
        }
    };
    // `collect` logs its own failure; a background run has no one else to tell.
    drop(collect(state, policies, trigger));
}

/// Apply `policies` now and log the outcome.
fn collect(state: &Shared, policies: Vec<GcPolicy>, trigger: &str) -> Result<GcReport, ApiError> {
    let started = std::time::Instant::now();
    let r = state.store.collect(&GcOptions {
        policies,
        scratch: crate::engine::scratch_dirs(),
        trigger: trigger.into(),
    });
    state.gc.forget_usage();
    match &r {
        Ok(report) => log::info(
            "gc.finished",
            &[
                ("trigger", trigger.into()),
                ("bytes_freed", report.bytes_freed.into()),
                ("items", (report.items() as u64).into()),
                ("records", (report.records.len() as u64).into()),
                ("blobs", (report.removed.len() as u64).into()),
                ("duration_ms", (started.elapsed().as_millis() as u64).into()),
            ],
        ),
        Err(e) => log::error(
            "gc.failed",
            &[
                ("trigger", trigger.into()),
                ("error", super::error_chain(e).as_str().into()),
            ],
        ),
    }
    Ok(r?)
}

/// `POST /v1/prune`: the request's policy, now.
pub(crate) fn prune(state: &Shared, req: &PruneRequest) -> Result<GcReport, ApiError> {
    let size = |field: &str, v: &Option<crate::api::Memory>| {
        v.as_ref()
            .map(|m| m.bytes())
            .transpose()
            .map_err(|e| ApiError::bad(kind::INVALID_REQUEST, format!("{field}: {e}")))
    };
    let policy = GcPolicy::from_prune(
        &req.filters,
        req.all,
        size("keep_storage", &req.keep_storage)?.or(size("reserved_space", &req.reserved_space)?),
        size("max_used_space", &req.max_used_space)?,
        size("min_free_space", &req.min_free_space)?,
    )
    .map_err(|e| ApiError::bad(kind::INVALID_REQUEST, e.to_string()))?;
    collect(state, vec![policy], "api")
}
