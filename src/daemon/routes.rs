//! The HTTP routes (see `openapi.rs` for their description). Bodies are read with explicit limits
//! and parsed here, so that every malformed, oversized or mistyped request gets a 4xx JSON error
//! naming the problem — axum's own rejections (plain text) never reach a client.
//!
//! Must not: run builds (jobs.rs) or resolve paths itself (resolve.rs).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State as AxState};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

use crate::api::{kind, Accepted, BuildSpec, ConfigUpdate, PruneRequest, Status};
use crate::reference::Reference;

use super::{events, jobs, resolve, ApiError, PeerCred, Shared};

pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/builds", post(create_build).get(list_builds))
        .route("/v1/builds/{id}", get(show_build))
        .route("/v1/builds/{id}/events", get(build_events))
        .route("/v1/builds/{id}/logs", get(build_logs))
        .route("/v1/builds/{id}/cancel", post(cancel_build))
        .route("/v1/builds/{id}/rebuild", post(rebuild))
        .route(
            "/v1/catalog",
            get(super::catalog::list).post(super::catalog::create),
        )
        .route(
            "/v1/catalog/{name}",
            get(super::catalog::show)
                .put(super::catalog::update)
                .delete(super::catalog::delete),
        )
        .route("/v1/config", get(show_config).put(put_config))
        .route("/v1/images", get(list_images))
        .route("/v1/images/{*name}", get(show_image).delete(delete_image))
        .route("/v1/prune", post(prune))
        .route("/metrics", get(metrics))
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

fn query(raw: &Option<String>) -> HashMap<String, String> {
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

async fn info(AxState(state): AxState<Shared>) -> Result<Response, ApiError> {
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
            "cgroups": super::cgroup_json(&probe.cgroup),
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

async fn openapi() -> Response {
    Json(super::openapi::document()).into_response()
}

async fn create_build(
    AxState(state): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            kind::SHUTTING_DOWN,
            "the daemon is shutting down",
        ));
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let (spec, context_dir) = if ctype.starts_with("application/x-tar") {
        let spec_text = headers
            .get("x-kiln-build")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("{}");
        let spec: BuildSpec = parse_json(spec_text.as_bytes(), "X-Kiln-Build header")?;
        (spec, Some(receive_tar(&state, body).await?))
    } else if ctype.starts_with("application/json") {
        let bytes = read_body(&headers, body, state.settings.max_json_body).await?;
        (parse_json::<BuildSpec>(&bytes, "build request")?, None)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {ctype:?}: send application/json or application/x-tar"),
        ));
    };
    start(&state, spec, context_dir, peer).await
}

async fn start(
    state: &Shared,
    spec: BuildSpec,
    context_dir: Option<tempfile::TempDir>,
    peer: PeerCred,
) -> Result<Response, ApiError> {
    let st = state.clone();
    let spec2 = spec.clone();
    let config = crate::sync::lock(&state.config).config();
    let prepared = tokio::task::spawn_blocking(move || {
        resolve::prepare(
            &config,
            &st.settings,
            &st.roots,
            &spec2,
            context_dir,
            &st.settings.root.join("daemon").join("secrets"),
        )
    })
    .await
    .map_err(ApiError::internal)??;
    super::catalog::check_spec(&spec)?;
    super::policy::caller(state, peer.0).check_build(&spec, prepared.dockerfile_text.as_deref())?;
    let twin = super::catalog::gpu_twin(&spec);
    let id = jobs::submit(state, &spec, prepared, peer.0)?;
    let gpu_id = match twin {
        // A `universal` package build on two bases: the GPU image is a second build.
        Some(t) => Some(
            Box::pin(start(state, t, None, peer))
                .await
                .and_then(accepted_id)?,
        ),
        None => None,
    };
    if let Some(c) = &spec.catalog {
        super::catalog::building(state, c, &id, gpu_id.as_deref())?;
    }
    let mut resp = (StatusCode::ACCEPTED, Json(Accepted { id: id.clone() })).into_response();
    resp.extensions_mut().insert(Accepted { id });
    Ok(resp)
}

/// The id of a `202 {"id"}` answer.
fn accepted_id(r: Response) -> Result<String, ApiError> {
    r.extensions()
        .get::<Accepted>()
        .map(|a| a.id.clone())
        .ok_or_else(|| ApiError::internal("the GPU build was not accepted"))
}

/// Stream a tar body to disk (bounded), then unpack it into a private directory.
async fn receive_tar(state: &Shared, body: Body) -> Result<tempfile::TempDir, ApiError> {
    let dir = state.settings.root.join("daemon").join("contexts");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    let tar = tempfile::NamedTempFile::new_in(&dir).map_err(ApiError::internal)?;
    let mut f = tokio::fs::File::create(tar.path())
        .await
        .map_err(ApiError::internal)?;
    let mut n: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad(kind::INVALID_REQUEST, format!("reading the tar body: {e}"))
        })?;
        n += chunk.len() as u64;
        if n > state.settings.max_context_body {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                kind::BODY_TOO_LARGE,
                format!(
                    "context tar larger than the {}-byte limit",
                    state.settings.max_context_body
                ),
            ));
        }
        f.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    f.flush().await.map_err(ApiError::internal)?;
    drop(f);
    tokio::task::spawn_blocking(move || {
        let out = tempfile::Builder::new()
            .prefix("ctx-")
            .tempdir_in(&dir)
            .map_err(ApiError::internal)?;
        let file = std::fs::File::open(tar.path()).map_err(ApiError::internal)?;
        // tar's unpack refuses `..` and absolute names and never writes through a symlink out of
        // the destination.
        tar::Archive::new(file).unpack(out.path()).map_err(|e| {
            ApiError::bad(
                kind::INVALID_REQUEST,
                format!("unpacking the context tar: {e}"),
            )
        })?;
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)?
}

async fn list_builds(
    AxState(state): AxState<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(&q);
    let limit = match q.get("limit") {
        Some(l) => l.parse::<usize>().map_err(|_| {
            ApiError::bad(
                kind::INVALID_REQUEST,
                format!("limit {l:?} is not a number"),
            )
        })?,
        None => 100,
    };
    let db = state.store.db();
    let recs = match q.get("status") {
        Some(s) => {
            let st = Status::parse(s).ok_or_else(|| {
                ApiError::bad(
                    kind::INVALID_REQUEST,
                    format!("status {s:?}: one of queued, running, succeeded, failed, cancelled"),
                )
            })?;
            let mut recs = db.list_builds_with_status(st.as_str(), limit)?;
            // Ends kiln.db refused: their rows still say `running`.
            for id in state.unwritten.with_status(st.as_str()) {
                if let Some(r) = db.get_build(&id)? {
                    if !recs.iter().any(|x| x.id == id) && recs.len() < limit {
                        recs.push(r);
                    }
                }
            }
            recs
        }
        None => db.list_builds(limit)?,
    };
    let mut out = Vec::with_capacity(recs.len());
    for mut r in recs {
        state.unwritten.overlay(&mut r);
        if q.get("status").is_some_and(|s| *s != r.status) {
            continue;
        }
        let d = db.get_build_details(&r.id)?;
        let mut info = jobs::build_info(r, d)?;
        info.dockerfile = None;
        out.push(info);
    }
    Ok(Json(out).into_response())
}

async fn show_build(
    AxState(state): AxState<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let db = state.store.db();
    let mut rec = db
        .get_build(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no build {id:?}")))?;
    state.unwritten.overlay(&mut rec);
    let d = db.get_build_details(&id)?;
    Ok(Json(jobs::build_info(rec, d)?).into_response())
}

fn offset(q: &Option<String>) -> Result<usize, ApiError> {
    match query(q).get("offset") {
        Some(o) => o.parse().map_err(|_| {
            ApiError::bad(
                kind::INVALID_REQUEST,
                format!("offset {o:?} is not a number"),
            )
        }),
        None => Ok(0),
    }
}

fn log_stream(
    state: &Shared,
    id: &str,
    offset: usize,
) -> Result<impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>, ApiError> {
    if state.store.db().get_build(id)?.is_none() {
        return Err(ApiError::not_found(format!("no build {id:?}")));
    }
    let (path, rx) = match state.jobs.get(id) {
        Some(j) => (j.log.path().to_path_buf(), Some(j.log.subscribe())),
        None => (state.logs_dir().join(format!("{id}.ndjson")), None),
    };
    if !path.exists() {
        return Err(ApiError::not_found(format!(
            "build {id:?} has no event log"
        )));
    }
    Ok(events::follow(path, offset, rx))
}

async fn build_events(
    AxState(state): AxState<Shared>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let s = log_stream(&state, &id, offset(&q)?)?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(s),
    )
        .into_response())
}

async fn build_logs(
    AxState(state): AxState<Shared>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let s = log_stream(&state, &id, offset(&q)?)?.map(|chunk| {
        chunk.map(|b| {
            let mut out = String::new();
            for line in b.split(|&c| c == b'\n') {
                if let Some(t) = events::plain_line(line) {
                    out.push_str(&t);
                    out.push('\n');
                }
            }
            Bytes::from(out)
        })
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(s),
    )
        .into_response())
}

async fn cancel_build(
    AxState(state): AxState<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state.jobs.get(&id) {
        Some(j) => {
            j.cancel("cancelled by request");
            Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"id": j.id, "cancelling": true})),
            )
                .into_response())
        }
        None => match state.store.db().get_build(&id)? {
            Some(mut r) => Err(ApiError::new(
                StatusCode::CONFLICT,
                kind::CONFLICT,
                format!("build {id} already ended ({})", {
                    state.unwritten.overlay(&mut r);
                    r.status
                }),
            )),
            None => Err(ApiError::not_found(format!("no build {id:?}"))),
        },
    }
}

async fn rebuild(
    AxState(state): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rec = state
        .store
        .db()
        .get_build(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no build {id:?}")))?;
    let old: BuildSpec = serde_json::from_str(&rec.spec_json).map_err(ApiError::internal)?;
    let mut merged = serde_json::to_value(old.without_secrets()).map_err(ApiError::internal)?;
    let bytes = read_body(&headers, body, state.settings.max_json_body).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let changes: serde_json::Map<String, serde_json::Value> =
            parse_json(&bytes, "rebuild changes")?;
        if let Some(obj) = merged.as_object_mut() {
            obj.extend(changes);
        }
    }
    let spec: BuildSpec = serde_json::from_value(merged)
        .map_err(|e| ApiError::bad(kind::INVALID_REQUEST, format!("rebuild changes: {e}")))?;
    start(&state, spec, None, peer).await
}

async fn show_config(AxState(state): AxState<Shared>) -> Response {
    let view = crate::sync::lock(&state.config).view();
    Json(view).into_response()
}

async fn put_config(
    AxState(state): AxState<Shared>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    super::policy::caller(&state, peer.0).must_be_exempt("change the daemon's configuration")?;
    let bytes = read_body(&headers, body, state.settings.max_json_body).await?;
    let update: ConfigUpdate = parse_json(&bytes, "config update")?;
    let mut cfg = crate::sync::lock(&state.config);
    cfg.update(&update)?;
    Ok(Json(cfg.view()).into_response())
}

async fn list_images(AxState(state): AxState<Shared>) -> Result<Response, ApiError> {
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

async fn show_image(
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

async fn delete_image(
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

async fn prune(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, state.settings.max_json_body).await?;
    let req: PruneRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        PruneRequest::default()
    } else {
        parse_json(&bytes, "prune request")?
    };
    let st = state.clone();
    let r = tokio::task::spawn_blocking(move || super::gc::prune(&st, &req))
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

async fn metrics(AxState(state): AxState<Shared>) -> Response {
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
