//! `GET /v1/info`, `GET /v1/openapi.json` and `GET /metrics`: what the daemon is and how it is doing.
//!
//! Must not: change anything.

use std::sync::atomic::Ordering;

use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::daemon::{ApiError, Shared};

pub(super) async fn info(AxState(state): AxState<Shared>) -> Result<Response, ApiError> {
    let st = state.clone();
    let v = tokio::task::spawn_blocking(move || {
        let root = st.settings.root.clone();
        let probe = crate::exec::probe(&crate::exec::SandboxConfig::new(&root.join("exec")));
        let storage: u64 = walkdir::WalkDir::new(st.store.content_dir())
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "root": root,
            "rootless": !rustix::process::geteuid().is_root() || in_user_namespace(),
            "sandbox": probe.rung,
            "running_as": crate::exec::identity(),
            "sandbox_unavailable": probe.reasons.iter()
                .map(|(r, why)| serde_json::json!({"rung": r, "why": why}))
                .collect::<Vec<_>>(),
            "snapshotter": probe.snapshotter,
            "cgroups": crate::daemon::cgroup_json(&probe.cgroup),
            "warnings": probe.warnings,
            "storage_bytes": storage,
            "usage": st.gc.usage(&st.store),
            "last_gc": st.store.last_gc().ok().flatten().map(|g| serde_json::json!({
                "at": g.at, "trigger": g.trigger, "bytes_freed": g.bytes_freed,
                "items": g.items(), "records": g.records.len(), "blobs": g.removed.len(),
            })),
            "images": st.store.tags().map(|t| t.len()).unwrap_or(0),
            "context_roots": st.roots,
            "max_concurrent_builds": st.settings.max_concurrent_builds,
            "queued": st.jobs.queued.load(Ordering::SeqCst),
            "running": st.jobs.running.load(Ordering::SeqCst),
            "unwritten_records": st.unwritten.len(),
        })
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(v).into_response())
}

pub(super) async fn openapi() -> Response {
    Json(crate::daemon::openapi::document()).into_response()
}

pub(super) async fn metrics(AxState(state): AxState<Shared>) -> Response {
    let text = state.metrics.render(
        state.jobs.queued.load(Ordering::SeqCst),
        state.jobs.running.load(Ordering::SeqCst),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// True inside a user namespace that does not map the host's whole id range (rootless kiln
/// re-executes itself into one).
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| !m.split_whitespace().eq(["0", "0", "4294967295"]))
        .unwrap_or(false)
}
