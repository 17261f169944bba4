//! Push: every blob confirmed on the registry first (HEAD, cross-repository mount, or upload —
//! monolithic or chunked, each falling back to the other when refused, whole sessions retried on
//! transient failures), child manifests of an index next, the tagged manifest last. A push that
//! fails before the end leaves no manifest naming missing blobs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use reqwest::blocking::{Body, Response};
use reqwest::Method;

use super::http::{Ctx, Req};
use super::{
    run_parallel, sources_of, BlobOutcome, Progress, Purpose, RegistryClient, RegistryError,
};
use crate::config::UploadMode;
use crate::digest::Digest;
use crate::image::{manifest_kind, Descriptor, Index, Manifest, ManifestKind};
use crate::reference::{Reference, DEFAULT_DOMAIN};
use crate::store::{Store, StoreError, MAX_JSON_BLOB};

const DEFAULT_CHUNK: u64 = 16 << 20;

pub(super) struct Target<'a> {
    pub(super) ctx: Ctx,
    /// Where requests go (Docker Hub's API host for docker.io).
    pub(super) host: String,
    pub(super) path: &'a str,
    pub(super) domain: &'a str,
}

impl Target<'_> {
    /// Where pushes of `dest` go (Docker Hub's API host for docker.io).
    pub(super) fn of(dest: &Reference) -> Target<'_> {
        let host = if dest.domain == DEFAULT_DOMAIN {
            "registry-1.docker.io".to_string()
        } else {
            dest.domain.clone()
        };
        Target {
            ctx: Ctx::new(&dest.domain, &dest.to_string()),
            host,
            path: &dest.path,
            domain: &dest.domain,
        }
    }

    fn scopes(&self) -> Vec<String> {
        vec![format!("repository:{}:pull,push", self.path)]
    }

    pub(super) fn req<'b>(&'b self, method: Method, url: String) -> Req<'b> {
        Req {
            method,
            url,
            host: &self.host,
            path: self.path,
            scopes: self.scopes(),
            purpose: Purpose::Push,
            headers: Vec::new(),
            body: None,
            retry: true,
        }
    }

    /// The registry answered `resp` instead of what `what` expects (status, body, auth hints).
    pub(super) fn refused(
        &self,
        client: &RegistryClient,
        what: &'static str,
        resp: Response,
    ) -> RegistryError {
        client.refused(&self.ctx, &self.host, self.path, Purpose::Push, what, resp)
    }

    fn store_err(&self, action: String, source: StoreError) -> RegistryError {
        RegistryError::Store {
            host: self.ctx.host.clone(),
            reference: self.ctx.reference.clone(),
            action,
            source: Box::new(source),
        }
    }
}

/// Push the image `manifest` (a manifest or an index in the store) to `dest`; returns the
/// descriptor the registry now serves under `dest`'s tag (or digest).
pub fn push(
    client: &RegistryClient,
    store: &Store,
    manifest: &Descriptor,
    dest: &Reference,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Descriptor, RegistryError> {
    let t = Target::of(dest);
    if let Some(d) = &dest.digest {
        if d != &manifest.digest {
            return Err(RegistryError::BadResponse {
                host: dest.domain.clone(),
                reference: t.ctx.reference.clone(),
                what: "destination".into(),
                detail: format!("pinned to {d} but the image is {}", manifest.digest),
            });
        }
    }
    let bytes = store
        .read_blob(&manifest.digest, MAX_JSON_BLOB)
        .map_err(|e| t.store_err(format!("reading manifest {}", manifest.digest), e))?;
    match manifest_kind(&manifest.media_type) {
        Some(ManifestKind::Index) => {
            let index = Index::from_slice(&bytes).map_err(|e| bad_local(&t, "image index", e))?;
            for child in &index.manifests {
                let cb = store
                    .read_blob(&child.digest, MAX_JSON_BLOB)
                    .map_err(|e| t.store_err(format!("reading manifest {}", child.digest), e))?;
                push_image(
                    client,
                    store,
                    &t,
                    &cb,
                    child,
                    &child.digest.to_string(),
                    on_progress,
                )?;
            }
        }
        Some(ManifestKind::Manifest) => {}
        None => {
            return Err(RegistryError::BadResponse {
                host: dest.domain.clone(),
                reference: t.ctx.reference.clone(),
                what: "local image".into(),
                detail: format!("{} is not a manifest or index", manifest.media_type),
            })
        }
    }
    let object = match &dest.tag {
        Some(tag) => tag.clone(),
        None if dest.digest.is_some() => manifest.digest.to_string(),
        None => "latest".to_string(),
    };
    if manifest_kind(&manifest.media_type) == Some(ManifestKind::Index) {
        put_manifest(client, &t, &bytes, manifest, &object, on_progress)?;
    } else {
        push_image(client, store, &t, &bytes, manifest, &object, on_progress)?;
    }
    let mut out = Descriptor::new(
        manifest.media_type.clone(),
        manifest.digest.clone(),
        manifest.size,
    );
    out.platform = manifest.platform.clone();
    Ok(out)
}

/// Confirm one blob on `dest`'s repository ahead of its manifest (HEAD, cross-repository mount,
/// or upload, with the same retries as [`push`]): a build pushes each layer as soon as it exists,
/// and the final [`push`] then finds it there. Never writes a manifest.
pub fn push_blob_early(
    client: &RegistryClient,
    store: &Store,
    blob: &Descriptor,
    dest: &Reference,
    note: &dyn Fn(Progress),
) -> Result<(), RegistryError> {
    let t = Target::of(dest);
    let _slot = client.acquire(t.domain);
    push_blob(client, store, &t, blob, note)
}

fn bad_local(t: &Target, what: &str, e: crate::image::ImageError) -> RegistryError {
    RegistryError::BadResponse {
        host: t.ctx.host.clone(),
        reference: t.ctx.reference.clone(),
        what: format!("local {what}"),
        detail: super::error::chain(&e),
    }
}

/// Blobs of one manifest, then the manifest under `object`.
fn push_image(
    client: &RegistryClient,
    store: &Store,
    t: &Target,
    bytes: &[u8],
    desc: &Descriptor,
    object: &str,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(), RegistryError> {
    let m = Manifest::from_slice(bytes).map_err(|e| bad_local(t, "image manifest", e))?;
    let mut blobs: Vec<Descriptor> = Vec::new();
    for b in std::iter::once(&m.config).chain(&m.layers) {
        if !blobs.iter().any(|x| x.digest == b.digest) {
            // A blob missing locally is still pushed when the registry has it or can mount it
            // (a layer a build took from a shared cache); otherwise `push_blob_once` refuses it
            // before the manifest is written.
            blobs.push(b.clone());
        }
    }
    let work = |b: &Descriptor, note: &dyn Fn(Progress)| -> Result<(), RegistryError> {
        let _slot = client.acquire(t.domain);
        push_blob(client, store, t, b, note)
    };
    run_parallel(&blobs, client.max_concurrency(t.domain), on_progress, &work)?;
    put_manifest(client, t, bytes, desc, object, on_progress)
}

/// How many more times a manifest PUT is sent when the registry says a blob it names is unknown
/// although every blob was confirmed first. distribution 2.8 answers so (`MANIFEST_BLOB_UNKNOWN`,
/// with `DIGEST_INVALID`) while another client mounts or uploads the same blob into the same
/// repository: the repository's link to the blob is being rewritten as it stats it (seen with two
/// daemons pushing one image built from a shared cache to two tags at once). A moment later the
/// link is whole.
const MANIFEST_BLOB_RACE_RETRIES: u32 = 3;

fn put_manifest(
    client: &RegistryClient,
    t: &Target,
    bytes: &[u8],
    desc: &Descriptor,
    object: &str,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(), RegistryError> {
    let mut attempt = 0;
    loop {
        match put_manifest_once(client, t, bytes, desc, object, on_progress) {
            Err(RegistryError::Status {
                status: 400,
                message,
                ..
            }) if message.contains("MANIFEST_BLOB_UNKNOWN")
                && attempt < MANIFEST_BLOB_RACE_RETRIES =>
            {
                attempt += 1;
                std::thread::sleep(client.retry.delay(attempt));
            }
            other => return other,
        }
    }
}

fn put_manifest_once(
    client: &RegistryClient,
    t: &Target,
    bytes: &[u8],
    desc: &Descriptor,
    object: &str,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(), RegistryError> {
    let url = format!(
        "{}/v2/{}/manifests/{object}",
        client.base(&t.ctx, &t.host)?,
        t.path
    );
    let owned = bytes.to_vec();
    let body = move || Ok(Body::from(owned.clone()));
    let mut req = t.req(Method::PUT, url);
    req.headers.push(("Content-Type", desc.media_type.clone()));
    req.body = Some(&body);
    let progress = std::cell::RefCell::new(&mut *on_progress);
    let resp = client.send(&t.ctx, &req, &|p| (progress.borrow_mut())(p))?;
    if !resp.status().is_success() {
        return Err(t.refused(client, "PUT manifest", resp));
    }
    check_digest(t, &resp, &desc.digest, "manifest")?;
    on_progress(Progress::ManifestPushed {
        reference: format!("{}/{}:{object}", t.domain, t.path),
        digest: desc.digest.clone(),
    });
    Ok(())
}

pub(super) fn check_digest(
    t: &Target,
    resp: &Response,
    want: &Digest,
    what: &str,
) -> Result<(), RegistryError> {
    let got = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    match got {
        Some(g) if &g != want => Err(RegistryError::DigestMismatch {
            host: t.host.clone(),
            reference: t.ctx.reference.clone(),
            what: format!("{what} confirmation"),
            expected: want.clone(),
            actual: g,
        }),
        _ => Ok(()),
    }
}

fn transient(e: &RegistryError) -> bool {
    match e {
        RegistryError::Connect { .. } => true,
        RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
        RegistryError::BadResponse { .. } => true,
        _ => false,
    }
}

fn push_blob(
    client: &RegistryClient,
    store: &Store,
    t: &Target,
    b: &Descriptor,
    note: &dyn Fn(Progress),
) -> Result<(), RegistryError> {
    let base = format!("{}/v2/{}", client.base(&t.ctx, &t.host)?, t.path);
    let mut attempt = 0;
    loop {
        match push_blob_once(client, store, t, b, &base, note) {
            Ok(outcome) => {
                note(Progress::BlobDone {
                    digest: b.digest.clone(),
                    outcome,
                });
                return Ok(());
            }
            Err(e) if transient(&e) && attempt + 1 < client.retry.attempts => {
                note(Progress::Retrying {
                    host: t.host.clone(),
                    attempt: attempt + 1,
                    reason: format!("upload of {}: {e}", b.digest),
                });
                std::thread::sleep(client.retry.delay(attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn push_blob_once(
    client: &RegistryClient,
    store: &Store,
    t: &Target,
    b: &Descriptor,
    base: &str,
    note: &dyn Fn(Progress),
) -> Result<BlobOutcome, RegistryError> {
    let resp = client.send(
        &t.ctx,
        &t.req(Method::HEAD, format!("{base}/blobs/{}", b.digest)),
        note,
    )?;
    if resp.status().is_success() {
        return Ok(BlobOutcome::AlreadyRemote);
    }
    if resp.status().as_u16() != 404 {
        return Err(t.refused(client, "HEAD blob", resp));
    }
    // A blob pulled from another repository of this registry can be mounted, not uploaded.
    let prefix = format!("{}/", t.domain);
    let from = sources_of(store, &b.digest)
        .into_iter()
        .filter_map(|r| r.strip_prefix(&prefix).map(str::to_string))
        .find(|p| p != t.path);
    let mut location = None;
    if let Some(src) = &from {
        let mut req = t.req(
            Method::POST,
            format!("{base}/blobs/uploads/?mount={}&from={src}", b.digest),
        );
        req.scopes.push(format!("repository:{src}:pull"));
        req.headers.push(("Content-Length", "0".into()));
        let resp = client.send(&t.ctx, &req, note)?;
        match resp.status().as_u16() {
            201 => {
                check_digest(t, &resp, &b.digest, "mounted blob")?;
                return Ok(BlobOutcome::Mounted { from: src.clone() });
            }
            // 202: the registry would not mount but opened an upload session instead.
            202 => location = Some(location_of(t, &resp, base)?),
            _ => {}
        }
    }
    if !store.has_blob(&b.digest) {
        return Err(t.store_err(
            format!("pushing blob {}", b.digest),
            StoreError::BlobNotFound(b.digest.clone()),
        ));
    }
    note(Progress::BlobStarted {
        digest: b.digest.clone(),
        size: b.size,
    });
    let mode = client.cfg.registry(t.domain).upload;
    let chunk = client
        .cfg
        .registry(t.domain)
        .chunk_size
        .unwrap_or(DEFAULT_CHUNK);
    let first = upload(
        client,
        store,
        t,
        b,
        base,
        location.take(),
        mode,
        chunk,
        note,
    );
    match first {
        Err(Upload::Refused(_)) => {
            let other = match mode {
                UploadMode::Monolithic => UploadMode::Chunked,
                UploadMode::Chunked => UploadMode::Monolithic,
            };
            upload(client, store, t, b, base, None, other, chunk, note).map_err(Upload::into_error)
        }
        r => r.map_err(Upload::into_error),
    }?;
    note(Progress::BlobBytes {
        digest: b.digest.clone(),
        done: b.size,
        total: b.size,
    });
    Ok(BlobOutcome::Uploaded)
}

enum Upload {
    /// The registry refused this upload mode (the other may work).
    Refused(RegistryError),
    Failed(RegistryError),
}

impl Upload {
    fn into_error(self) -> RegistryError {
        match self {
            Upload::Refused(e) | Upload::Failed(e) => e,
        }
    }
}

impl From<RegistryError> for Upload {
    fn from(e: RegistryError) -> Self {
        Upload::Failed(e)
    }
}

pub(super) fn location_of(
    t: &Target,
    resp: &Response,
    base: &str,
) -> Result<String, RegistryError> {
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::BadResponse {
            host: t.host.clone(),
            reference: t.ctx.reference.clone(),
            what: "upload session".into(),
            detail: "no Location header".into(),
        })?;
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Ok(loc.to_string());
    }
    // Relative to the registry's root (`/v2/...`).
    let root = base.split("/v2/").next().unwrap_or(base);
    Ok(format!(
        "{root}{}{loc}",
        if loc.starts_with('/') { "" } else { "/" }
    ))
}

pub(super) fn with_query(url: &str, q: &str) -> String {
    format!("{url}{}{q}", if url.contains('?') { '&' } else { '?' })
}

fn refused_mode(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Status { status, .. } if matches!(status, 400 | 405 | 411 | 413 | 416 | 501))
}

#[allow(clippy::too_many_arguments)]
fn upload(
    client: &RegistryClient,
    store: &Store,
    t: &Target,
    b: &Descriptor,
    base: &str,
    session: Option<String>,
    mode: UploadMode,
    chunk: u64,
    note: &dyn Fn(Progress),
) -> Result<(), Upload> {
    let mut location = match session {
        Some(l) => l,
        None => open_session(client, t, base, note)?,
    };
    let path = store.blob_path(&b.digest);
    let open = |offset: u64, len: u64| -> Result<Body, RegistryError> {
        let mut f = File::open(&path).map_err(|source| {
            RegistryError::Io(crate::report::IoError {
                action: "opening blob",
                path: path.clone(),
                source,
            })
        })?;
        f.seek(SeekFrom::Start(offset)).map_err(|source| {
            RegistryError::Io(crate::report::IoError {
                action: "seeking in blob",
                path: path.clone(),
                source,
            })
        })?;
        Ok(Body::sized(f.take(len), len))
    };
    let classify = |e: RegistryError| {
        if refused_mode(&e) {
            Upload::Refused(e)
        } else {
            Upload::Failed(e)
        }
    };
    let final_body;
    match mode {
        UploadMode::Monolithic => {
            final_body = Some((0, b.size));
        }
        UploadMode::Chunked => {
            let mut offset = 0;
            while offset < b.size {
                let len = chunk.min(b.size - offset);
                let body = || open(offset, len);
                location = match patch_chunk(client, t, &location, base, (offset, len), &body, note)
                {
                    Ok(next) => next,
                    Err(e) if offset == 0 => return Err(classify(e)),
                    Err(e) => return Err(Upload::Failed(e)),
                };
                offset += len;
                note(Progress::BlobBytes {
                    digest: b.digest.clone(),
                    done: offset,
                    total: b.size,
                });
            }
            final_body = None;
        }
    }
    let body_fn = move || match final_body {
        Some((o, l)) => open(o, l),
        None => Ok(Body::from(Vec::new())),
    };
    match close_session(client, t, &location, &b.digest, &body_fn, note) {
        Err(e) if mode == UploadMode::Monolithic && refused_mode(&e) => Err(Upload::Refused(e)),
        r => r.map_err(Upload::Failed),
    }
}

/// Open an upload session (`POST /blobs/uploads/`); returns where to send the bytes.
pub(super) fn open_session(
    client: &RegistryClient,
    t: &Target,
    base: &str,
    note: &dyn Fn(Progress),
) -> Result<String, RegistryError> {
    let mut req = t.req(Method::POST, format!("{base}/blobs/uploads/"));
    req.headers.push(("Content-Length", "0".into()));
    let resp = client.send(&t.ctx, &req, note)?;
    if resp.status().as_u16() != 202 {
        return Err(t.refused(client, "POST blob upload", resp));
    }
    location_of(t, &resp, base)
}

/// One chunk of a session (`PATCH`, `Content-Range: offset-end`): `(offset, len)` bytes from
/// `body`; returns the session's next location.
pub(super) fn patch_chunk(
    client: &RegistryClient,
    t: &Target,
    location: &str,
    base: &str,
    (offset, len): (u64, u64),
    body: &(dyn Fn() -> Result<Body, RegistryError> + Sync),
    note: &dyn Fn(Progress),
) -> Result<String, RegistryError> {
    let mut req = t.req(Method::PATCH, location.to_string());
    req.retry = false;
    req.body = Some(body);
    req.headers
        .push(("Content-Type", "application/octet-stream".into()));
    req.headers
        .push(("Content-Range", format!("{offset}-{}", offset + len - 1)));
    let resp = client.send(&t.ctx, &req, note)?;
    if resp.status().as_u16() != 202 {
        return Err(t.refused(client, "PATCH blob chunk", resp));
    }
    location_of(t, &resp, base)
}

/// Close a session with the blob's digest (`PUT ?digest=`, with what `body` gives: the whole blob
/// for a monolithic upload, nothing after chunks) and check what the registry stored.
pub(super) fn close_session(
    client: &RegistryClient,
    t: &Target,
    location: &str,
    digest: &Digest,
    body: &(dyn Fn() -> Result<Body, RegistryError> + Sync),
    note: &dyn Fn(Progress),
) -> Result<(), RegistryError> {
    let mut req = t.req(
        Method::PUT,
        with_query(location, &format!("digest={digest}")),
    );
    req.retry = false;
    req.body = Some(body);
    req.headers
        .push(("Content-Type", "application/octet-stream".into()));
    let resp = client.send(&t.ctx, &req, note)?;
    if resp.status().as_u16() != 201 {
        return Err(t.refused(client, "PUT blob", resp));
    }
    check_digest(t, &resp, digest, "uploaded blob")
}
