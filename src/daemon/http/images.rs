//! `/v1/images` (the local store's tags) and `POST /v1/prune` (garbage collection now).
//!
//! Must not: decide what GC keeps (`store::gc` and the daemon's `gc.rs` do).

use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::optional_json_body;
use crate::api::PruneRequest;
use crate::daemon::{ApiError, Shared};
use crate::reference::Reference;

pub(super) async fn list(AxState(state): AxState<Shared>) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    for (name, desc) in state.store.tags()? {
        let size = state
            .store
            .image(&name)
            .map(|i| i.manifest.layers.iter().map(|l| l.size).sum::<u64>() + i.manifest.config.size)
            .unwrap_or(0);
        out.push(serde_json::json!({"name": name, "digest": desc.digest, "size": size}));
    }
    Ok(Json(out).into_response())
}

fn store_key(name: &str) -> String {
    if name.starts_with("sha256:") {
        return name.to_string();
    }
    name.parse::<Reference>()
        .map(|r| r.store_name())
        .unwrap_or_else(|_| name.to_string())
}

pub(super) async fn show(
    AxState(state): AxState<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let key = store_key(&name);
    let img = state
        .store
        .image(&key)
        .map_err(|_| ApiError::not_found(format!("no image {name:?} in the store")))?;
    Ok(Json(serde_json::json!({
        "name": key,
        "digest": img.manifest_desc.digest,
        "manifest": img.manifest,
    }))
    .into_response())
}

pub(super) async fn delete(
    AxState(state): AxState<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if state.store.untag(&store_key(&name))? {
        Ok(Json(serde_json::json!({"untagged": store_key(&name)})).into_response())
    } else {
        Err(ApiError::not_found(format!(
            "no image {name:?} in the store"
        )))
    }
}

pub(super) async fn prune(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: PruneRequest = optional_json_body(&state, &headers, body, "prune request")
        .await?
        .unwrap_or_default();
    let st = state.clone();
    let r = tokio::task::spawn_blocking(move || crate::daemon::gc::prune(&st, &req))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(serde_json::json!({
        "removed": r.removed.len(),
        "bytes_freed": r.bytes_freed,
        "kept": r.kept,
        "items": r.items(),
        "records": r.records,
        "dirs": r.dirs,
    }))
    .into_response())
}
