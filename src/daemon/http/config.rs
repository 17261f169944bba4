//! `GET/PUT /v1/config`: the registry settings, redacted, and their change at run time (an
//! insecure-registry list or a whole kiln.toml).
//!
//! Must not: apply a change itself (`config_api.rs` validates and swaps the settings).

use axum::body::Body;
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::json_body;
use crate::api::ConfigUpdate;
use crate::daemon::{ApiError, PeerCred, Shared};

pub(super) async fn show(AxState(state): AxState<Shared>) -> Response {
    let view = crate::sync::lock(&state.config).view();
    Json(view).into_response()
}

pub(super) async fn update(
    AxState(state): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    crate::daemon::policy::caller(&state, peer.0)
        .must_be_exempt("change the daemon's configuration")?;
    let update: ConfigUpdate = json_body(&state, &headers, body, "config update").await?;
    let mut cfg = crate::sync::lock(&state.config);
    cfg.update(&update)?;
    Ok(Json(cfg.view()).into_response())
}
