//! `/v1/catalog`: list (keyword-filtered, what the caller may see), show, create an entry for an
//! existing image, change and delete entries.
//!
//! Must not: drive an entry's build status (the catalog hook does, `daemon/catalog.rs`) or decide
//! who may do what (`policy.rs`).

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{self, kind, CatalogEntry, CatalogStatus, CatalogUpdate, ImageType};
use crate::daemon::catalog::{
    all, bad, check_groups, check_url, decode, load, lock, matches, save, NS,
};
use crate::daemon::{now, policy, ApiError, PeerCred, Shared};

/// `GET /v1/catalog[?q=]`: the entries the caller may see, keyword-filtered.
pub(super) async fn list(
    AxState(state): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = q
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("q="))
        .map(decode);
    let who = policy::caller(&state, peer.0);
    let out: Vec<CatalogEntry> = all(&state)?
        .into_iter()
        .filter(|e| who.may_see(e.global, &e.groups))
        .filter(|e| q.as_deref().is_none_or(|q| matches(e, q)))
        .collect();
    Ok(Json(out).into_response())
}

fn visible(state: &Shared, peer: PeerCred, name: &str) -> Result<CatalogEntry, ApiError> {
    let who = policy::caller(state, peer.0);
    match load(state, name)? {
        Some(e) if who.may_see(e.global, &e.groups) => Ok(e),
        _ => Err(ApiError::not_found(format!("no catalog entry {name:?}"))),
    }
}

pub(super) async fn show(
    AxState(state): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(visible(&state, peer, &name)?).into_response())
}

fn apply(e: &mut CatalogEntry, u: CatalogUpdate) -> Result<(), ApiError> {
    if let Some(d) = u.display_name {
        api::check_display_name(&d).map_err(bad)?;
        e.display_name = d;
    }
    check_url("url", &u.url)?;
    check_url("gpu_url", &u.gpu_url)?;
    if let Some(g) = &u.groups {
        check_groups(g)?;
    }
    if let Some(d) = u.description {
        e.description = d;
    }
    if let Some(t) = u.image_type {
        e.image_type = t;
    }
    if u.url.is_some() {
        e.url = u.url;
    }
    if u.gpu_url.is_some() {
        e.gpu_url = u.gpu_url;
    }
    if u.pull_secret.is_some() {
        e.pull_secret = u.pull_secret;
    }
    if let Some(g) = u.groups {
        e.global = u.global.unwrap_or(g.is_empty());
        e.groups = g;
    } else if let Some(gl) = u.global {
        e.global = gl;
    }
    e.updated = now();
    Ok(())
}

/// `POST /v1/catalog`: an existing image (its `url` required) becomes a `ready` entry.
pub(super) async fn create(
    AxState(state): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let u: CatalogUpdate = super::json_body(&state, &headers, body, "catalog entry").await?;
    let who = policy::caller(&state, peer.0);
    who.may_manage_catalog()?;
    let display = u
        .display_name
        .clone()
        .ok_or_else(|| bad("display_name: missing"))?;
    api::check_display_name(&display).map_err(bad)?;
    if u.url.is_none() {
        return Err(bad("url: missing (the image to list; builds create entries with a build spec's \"catalog\")"));
    }
    let _g = lock();
    let name = api::image_name(&display);
    if load(&state, &name)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            kind::CONFLICT,
            format!("catalog entry {name:?} exists (PUT /v1/catalog/{name} changes it)"),
        ));
    }
    let t = now();
    let mut e = CatalogEntry {
        name,
        display_name: display,
        description: String::new(),
        image_type: ImageType::Cpu,
        url: None,
        gpu_url: None,
        pull_secret: None,
        global: true,
        groups: Vec::new(),
        status: CatalogStatus::Ready,
        build_id: None,
        gpu_build_id: None,
        error: None,
        created: t,
        updated: t,
    };
    apply(&mut e, u)?;
    who.may_use_groups(e.global, &e.groups)?;
    save(&state, &e)?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

/// `PUT /v1/catalog/{name}`: change the fields given.
pub(super) async fn update(
    AxState(state): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let u: CatalogUpdate = super::json_body(&state, &headers, body, "catalog changes").await?;
    policy::caller(&state, peer.0).may_manage_catalog()?;
    let _g = lock();
    let mut e = visible(&state, peer, &name)?;
    policy::caller(&state, peer.0).may_use_groups(e.global, &e.groups)?;
    apply(&mut e, u)?;
    policy::caller(&state, peer.0).may_use_groups(e.global, &e.groups)?;
    save(&state, &e)?;
    Ok(Json(e).into_response())
}

/// `DELETE /v1/catalog/{name}`.
pub(super) async fn delete(
    AxState(state): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    policy::caller(&state, peer.0).may_manage_catalog()?;
    let _g = lock();
    let e = visible(&state, peer, &name)?;
    policy::caller(&state, peer.0).may_use_groups(e.global, &e.groups)?;
    state.store.db().record_delete(NS, &name)?;
    Ok(Json(serde_json::json!({"removed": name})).into_response())
}
