//! `/v1/builds`: start one (a JSON spec or a streamed context tar), list, show, follow its events
//! and log, cancel, rebuild with changes.
//!
//! Must not: run the build (`jobs.rs` queues it) or resolve its paths (`resolve.rs`).

use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{json_body, optional_json_body, parse_json, query};
use crate::api::{kind, Accepted, BuildSpec, Status};
use crate::daemon::events as daemon_events;
use crate::daemon::{jobs, resolve, ApiError, PeerCred, Shared};

pub(super) async fn create(
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
        (
            json_body::<BuildSpec>(&state, &headers, body, "build request").await?,
            None,
        )
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
    crate::daemon::catalog::check_spec(&spec)?;
    crate::daemon::policy::caller(state, peer.0)
        .check_build(&spec, prepared.dockerfile_text.as_deref())?;
    let twin = crate::daemon::catalog::gpu_twin(&spec);
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
        crate::daemon::catalog::building(state, c, &id, gpu_id.as_deref())?;
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

pub(super) async fn list(
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

pub(super) async fn show(
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
    Ok(daemon_events::follow(path, offset, rx))
}

pub(super) async fn events(
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

pub(super) async fn logs(
    AxState(state): AxState<Shared>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let s = log_stream(&state, &id, offset(&q)?)?.map(|chunk| {
        chunk.map(|b| {
            let mut out = String::new();
            for line in b.split(|&c| c == b'\n') {
                if let Some(t) = daemon_events::plain_line(line) {
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

pub(super) async fn cancel(
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

pub(super) async fn rebuild(
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
    let changes: Option<serde_json::Map<String, serde_json::Value>> =
        optional_json_body(&state, &headers, body, "rebuild changes").await?;
    if let (Some(changes), Some(obj)) = (changes, merged.as_object_mut()) {
        obj.extend(changes);
    }
    let spec: BuildSpec = serde_json::from_value(merged)
        .map_err(|e| ApiError::bad(kind::INVALID_REQUEST, format!("rebuild changes: {e}")))?;
    start(&state, spec, None, peer).await
}
