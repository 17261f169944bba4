//! The HTTP face of the daemon, one file per resource (see `openapi.rs` for the description):
//! `builds.rs`, `images.rs` (and prune), `config.rs`, `catalog.rs`, `system.rs` (info, OpenAPI,
//! metrics). This file holds the router, the peer check and the body helpers every resource
//! uses: bodies are read with explicit limits and parsed here, so that every malformed, oversized
//! or mistyped request gets a 4xx JSON error naming the problem — axum's own rejections (plain
//! text) never reach a client.
//!
//! Must not: run builds (`jobs.rs`), resolve paths (`resolve.rs`) or keep state of its own.

mod builds;
mod catalog;
mod config;
mod images;
mod system;

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::api::kind;

use super::{ApiError, PeerCred, Shared};

pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/info", get(system::info))
        .route("/v1/openapi.json", get(system::openapi))
        .route("/v1/builds", post(builds::create).get(builds::list))
        .route("/v1/builds/{id}", get(builds::show))
        .route("/v1/builds/{id}/events", get(builds::events))
        .route("/v1/builds/{id}/logs", get(builds::logs))
        .route("/v1/builds/{id}/cancel", post(builds::cancel))
        .route("/v1/builds/{id}/rebuild", post(builds::rebuild))
        .route("/v1/catalog", get(catalog::list).post(catalog::create))
        .route(
            "/v1/catalog/{name}",
            get(catalog::show)
                .put(catalog::update)
                .delete(catalog::delete),
        )
        .route("/v1/config", get(config::show).put(config::update))
        .route("/v1/images", get(images::list))
        .route(
            "/v1/images/{*name}",
            get(images::show).delete(images::delete),
        )
        .route("/v1/prune", post(images::prune))
        .route("/metrics", get(system::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), check_peer))
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        kind::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// SO_PEERCRED check: only root, the daemon's user, `allowed_uids`, `allowed_gids` and the socket's
/// group may talk to the daemon.
async fn check_peer(AxState(state): AxState<Shared>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerCred>>()
        .and_then(|c| c.0 .0);
    match peer {
        Some(p) if state.allowed(&p) => next.run(req).await,
        Some(p) => ApiError::forbidden(
            kind::FORBIDDEN,
            format!(
                "uid {} (gid {}) is not allowed to use this daemon (see [daemon] allowed_uids / allowed_gids)",
                p.uid, p.gid
            ),
        )
        .into_response(),
        None => ApiError::forbidden(kind::FORBIDDEN, "the peer's credentials are unknown")
            .into_response(),
    }
}

pub(super) fn query(raw: &Option<String>) -> HashMap<String, String> {
    raw.as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            kind::BODY_TOO_LARGE,
            format!("request body larger than the {limit}-byte limit"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_big());
        }
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_big())
}

/// A JSON object body within the daemon's limit, parsed; every failure a 4xx naming `what`.
pub(super) async fn json_body<T: DeserializeOwned>(
    state: &Shared,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body, state.settings.max_json_body).await?;
    parse_json(&bytes, what)
}

/// As [`json_body`], for routes whose body may be left out: an empty (all-whitespace) body is
/// `None`.
pub(super) async fn optional_json_body<T: DeserializeOwned>(
    state: &Shared,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<Option<T>, ApiError> {
    let bytes = read_body(headers, body, state.settings.max_json_body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_json(&bytes, what).map(Some)
}

/// Parse a JSON object, naming the field, line and column serde stopped at.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    // serde accepts a JSON array for a struct (fields by position); the API takes objects only.
    if let Some(b) = bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        if *b != b'{' {
            return Err(ApiError::bad(
                kind::INVALID_REQUEST,
                format!("{what}: expected a JSON object"),
            ));
        }
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let k = match e.classify() {
            serde_json::error::Category::Data => kind::INVALID_REQUEST,
            _ => kind::INVALID_JSON,
        };
        ApiError::bad(k, format!("{what}: {e}"))
    })
}
