//! Pull: resolve a reference (through mirrors, falling back to the origin) to a manifest or index,
//! choose the platform's manifest, stream the missing blobs into the store verified, tag it.

use std::io::{self, Read, Write};

use reqwest::Method;

use super::http::{Ctx, Req};
use super::{
    record_sources, run_parallel, BlobOutcome, Progress, Purpose, RegistryClient, RegistryError,
};
use crate::digest::Digest;
use crate::image::{
    manifest_kind, sniff_manifest_kind, Descriptor, Index, Manifest, ManifestKind, Platform,
    MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use crate::reference::Reference;
use crate::store::{Store, StoreError, MAX_JSON_BLOB};

pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Where to fetch from: a mirror (`host[/prefix]`) or the registry itself.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub host: String,
    /// `/prefix` for a mirror given as `host/prefix`, else empty.
    pub prefix: String,
    pub mirror: bool,
}

impl Endpoint {
    fn url(
        &self,
        client: &RegistryClient,
        ctx: &Ctx,
        path: &str,
        rest: &str,
    ) -> Result<String, RegistryError> {
        Ok(format!(
            "{}{}/v2/{path}/{rest}",
            client.base(ctx, &self.host)?,
            self.prefix
        ))
    }
}

fn endpoints(client: &RegistryClient, domain: &str) -> Vec<Endpoint> {
    let mut eps: Vec<Endpoint> = client
        .cfg
        .registry(domain)
        .mirrors
        .iter()
        .map(|m| {
            let m = m
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let (host, prefix) = match m.split_once('/') {
                Some((h, p)) => (h.to_string(), format!("/{p}")),
                None => (m.to_string(), String::new()),
            };
            Endpoint {
                host,
                prefix,
                mirror: true,
            }
        })
        .collect();
    // Docker Hub's API lives on registry-1.docker.io; `docker.io` is only its name.
    let origin = if domain == crate::reference::DEFAULT_DOMAIN {
        "registry-1.docker.io"
    } else {
        domain
    };
    eps.push(Endpoint {
        host: origin.to_string(),
        prefix: String::new(),
        mirror: false,
    });
    eps
}

fn pull_scope(path: &str) -> Vec<String> {
    vec![format!("repository:{path}:pull")]
}

/// Pull `reference` for `platform` into `store`, tag it as `reference.store_name()`, and return
/// the platform manifest's descriptor.
pub fn pull(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Descriptor, RegistryError> {
    let ctx = Ctx::new(&reference.domain, &reference.to_string());
    let eps = endpoints(client, &reference.domain);
    let mut resolved = None;
    for (i, ep) in eps.iter().enumerate() {
        match resolve(client, &ctx, ep, store, reference, platform, on_progress) {
            Ok(r) => {
                resolved = Some((i, r));
                break;
            }
            Err(e) if ep.mirror => on_progress(Progress::MirrorFailed {
                mirror: format!("{}{}", ep.host, ep.prefix),
                reason: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    let Some((first, (desc, manifest))) = resolved else {
        return Err(RegistryError::NotFound {
            host: ctx.host.clone(),
            reference: ctx.reference.clone(),
            what: "any endpoint".into(),
        });
    };
    on_progress(Progress::Fetching {
        manifest: desc.digest.clone(),
        config: manifest.config.digest.clone(),
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
    });
    let mut blobs: Vec<Descriptor> = Vec::new();
    for b in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if blobs.iter().any(|x| x.digest == b.digest) {
            continue;
        }
        if store.has_blob(&b.digest) {
            on_progress(Progress::BlobDone {
                digest: b.digest.clone(),
                outcome: BlobOutcome::AlreadyLocal,
            });
        } else {
            blobs.push(b.clone());
        }
    }
    download(
        client,
        &ctx,
        &eps[first..],
        reference,
        store,
        &blobs,
        on_progress,
    )?;
    let all: Vec<Digest> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .map(|d| d.digest.clone())
        .collect();
    record_sources(store, &reference.repository(), &all);
    store
        .tag(&reference.store_name(), &desc)
        .map_err(|source| RegistryError::Store {
            host: ctx.host.clone(),
            reference: ctx.reference.clone(),
            action: format!("tagging {}", reference.store_name()),
            source: Box::new(source),
        })?;
    Ok(desc)
}

/// Fetch the manifest (following an index to the platform's entry) from one endpoint, store it.
fn resolve(
    client: &RegistryClient,
    ctx: &Ctx,
    ep: &Endpoint,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(Descriptor, Manifest), RegistryError> {
    let mut object = reference.object();
    let mut expected = reference.digest.clone();
    let mut entry_platform = None;
    for _ in 0..4 {
        let (bytes, media_type, digest) =
            get_manifest(client, ctx, ep, &reference.path, &object, expected.as_ref())?;
        if expected.is_none() {
            on_progress(Progress::Resolved {
                reference: ctx.reference.clone(),
                digest: digest.clone(),
                endpoint: format!("{}{}", ep.host, ep.prefix),
            });
        }
        store_json(store, ctx, &bytes, &digest)?;
        let bad = |what: &str, e: crate::image::ImageError| RegistryError::BadResponse {
            host: ep.host.clone(),
            reference: ctx.reference.clone(),
            what: what.to_string(),
            detail: super::error::chain(&e),
        };
        match manifest_kind(&media_type) {
            Some(ManifestKind::Manifest) => {
                let m = Manifest::from_slice(&bytes).map_err(|e| bad("image manifest", e))?;
                let mut d = Descriptor::new(media_type, digest, bytes.len() as u64);
                d.platform = entry_platform;
                return Ok((d, m));
            }
            Some(ManifestKind::Index) => {
                let index = Index::from_slice(&bytes).map_err(|e| bad("image index", e))?;
                let next = index.select(platform).or_else(|| {
                    index.manifests.iter().find(|d| {
                        manifest_kind(&d.media_type) == Some(ManifestKind::Index)
                            && d.platform.is_none()
                    })
                });
                let Some(next) = next else {
                    let available: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                        .collect();
                    return Err(RegistryError::NoPlatform {
                        host: ep.host.clone(),
                        reference: ctx.reference.clone(),
                        platform: platform.to_string(),
                        available: available.join(", "),
                    });
                };
                object = next.digest.to_string();
                expected = Some(next.digest.clone());
                entry_platform = next.platform.clone();
            }
            None => {
                return Err(RegistryError::BadResponse {
                    host: ep.host.clone(),
                    reference: ctx.reference.clone(),
                    what: "manifest".into(),
                    detail: format!("unsupported media type {media_type:?}"),
                })
            }
        }
    }
    Err(RegistryError::BadResponse {
        host: ep.host.clone(),
        reference: ctx.reference.clone(),
        what: "image index".into(),
        detail: "indexes nested more than 4 deep".into(),
    })
}

fn store_json(
    store: &Store,
    ctx: &Ctx,
    bytes: &[u8],
    digest: &Digest,
) -> Result<(), RegistryError> {
    store
        .put_bytes(bytes, Some(digest))
        .map(|_| ())
        .map_err(|source| RegistryError::Store {
            host: ctx.host.clone(),
            reference: ctx.reference.clone(),
            action: format!("storing manifest {digest}"),
            source: Box::new(source),
        })
}

/// GET a manifest: its bytes, media type and verified digest.
pub(crate) fn get_manifest(
    client: &RegistryClient,
    ctx: &Ctx,
    ep: &Endpoint,
    path: &str,
    object: &str,
    expected: Option<&Digest>,
) -> Result<(Vec<u8>, String, Digest), RegistryError> {
    let url = ep.url(client, ctx, path, &format!("manifests/{object}"))?;
    let req = Req {
        method: Method::GET,
        url,
        host: &ep.host,
        path,
        scopes: pull_scope(path),
        purpose: Purpose::Pull,
        headers: vec![("Accept", MANIFEST_ACCEPT.to_string())],
        body: None,
        retry: true,
    };
    let resp = client.send(ctx, &req, &|_| {})?;
    let st = resp.status().as_u16();
    if st == 404 {
        return Err(RegistryError::NotFound {
            host: ep.host.clone(),
            reference: ctx.reference.clone(),
            what: format!("manifest {object} of {path}"),
        });
    }
    if !resp.status().is_success() {
        return Err(client.refused(ctx, &ep.host, path, Purpose::Pull, "GET manifest", resp));
    }
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let mut bytes = Vec::new();
    resp.take(MAX_JSON_BLOB + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RegistryError::BadResponse {
            host: ep.host.clone(),
            reference: ctx.reference.clone(),
            what: "manifest body".into(),
            detail: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_JSON_BLOB {
        return Err(RegistryError::BadResponse {
            host: ep.host.clone(),
            reference: ctx.reference.clone(),
            what: "manifest".into(),
            detail: format!("larger than {MAX_JSON_BLOB} bytes"),
        });
    }
    let actual = Digest::of(&bytes);
    if let Some(want) = expected.or(header_digest.as_ref()) {
        if want != &actual {
            return Err(RegistryError::DigestMismatch {
                host: ep.host.clone(),
                reference: ctx.reference.clone(),
                what: format!("manifest {object}"),
                expected: want.clone(),
                actual,
            });
        }
    }
    let media_type = if manifest_kind(&content_type).is_some() {
        content_type
    } else {
        media_type_in(&bytes).unwrap_or_else(|| {
            match sniff_manifest_kind(&bytes) {
                Some(ManifestKind::Index) => MEDIA_OCI_INDEX,
                _ => MEDIA_OCI_MANIFEST,
            }
            .to_string()
        })
    };
    Ok((bytes, media_type, actual))
}

fn media_type_in(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Mt {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Mt>(bytes)
        .ok()?
        .media_type
        .filter(|m| manifest_kind(m).is_some())
}

/// Stream one blob into the store, verified; a connection dropped mid-body starts it over.
fn fetch_blob(
    client: &RegistryClient,
    ctx: &Ctx,
    ep: &Endpoint,
    path: &str,
    desc: &Descriptor,
    store: &Store,
    note: &dyn Fn(Progress),
) -> Result<(), RegistryError> {
    note(Progress::BlobStarted {
        digest: desc.digest.clone(),
        size: desc.size,
    });
    let url = ep.url(client, ctx, path, &format!("blobs/{}", desc.digest))?;
    let mut attempt = 0;
    loop {
        let req = Req {
            method: Method::GET,
            url: url.clone(),
            host: &ep.host,
            path,
            scopes: pull_scope(path),
            purpose: Purpose::Pull,
            headers: Vec::new(),
            body: None,
            retry: true,
        };
        let resp = client.send(ctx, &req, note)?;
        if resp.status().as_u16() == 404 {
            return Err(RegistryError::NotFound {
                host: ep.host.clone(),
                reference: ctx.reference.clone(),
                what: format!("blob {}", desc.digest),
            });
        }
        if !resp.status().is_success() {
            return Err(client.refused(ctx, &ep.host, path, Purpose::Pull, "GET blob", resp));
        }
        let store_err = |action: String, source: StoreError| RegistryError::Store {
            host: ep.host.clone(),
            reference: ctx.reference.clone(),
            action,
            source: Box::new(source),
        };
        let mut ingest = store
            .ingest()
            .map_err(|e| store_err(format!("storing blob {}", desc.digest), e))?;
        // One byte past the size shows a longer body; the size is the registry's number, and
        // u64::MAX + 1 would overflow (the commit then reports the size mismatch).
        let mut reader = resp.take(desc.size.saturating_add(1));
        let (copied, done) = copy_body(&mut reader, &mut ingest, desc, note)?;
        if let Err(e) = copied {
            if attempt + 1 < client.retry.attempts {
                note(Progress::Retrying {
                    host: ep.host.clone(),
                    attempt: attempt + 1,
                    reason: format!("download of {} broke off: {e}", desc.digest),
                });
                std::thread::sleep(client.retry.delay(attempt));
                attempt += 1;
                continue;
            }
            return Err(RegistryError::BadResponse {
                host: ep.host.clone(),
                reference: ctx.reference.clone(),
                what: format!("blob {}", desc.digest),
                detail: format!("download broke off after {done} bytes: {e}"),
            });
        }
        return commit_blob(ingest, ctx, ep, desc, note);
    }
}

/// Copy a blob's body into its ingest, reporting progress. Returns how the read ended (a body
/// that broke off is the caller's to retry) and the bytes copied; a failed write is an error.
fn copy_body(
    reader: &mut impl Read,
    ingest: &mut crate::store::Ingest,
    desc: &Descriptor,
    note: &dyn Fn(Progress),
) -> Result<(io::Result<()>, u64), RegistryError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok((Ok(()), done)),
            Ok(n) => {
                ingest.write_all(&buf[..n]).map_err(|source| {
                    RegistryError::Io(crate::report::IoError {
                        action: "writing blob to",
                        path: ingest.temp_path().to_path_buf(),
                        source,
                    })
                })?;
                done += n as u64;
                note(Progress::BlobBytes {
                    digest: desc.digest.clone(),
                    done,
                    total: desc.size,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok((Err(e), done)),
        }
    }
}

/// Commit a downloaded blob, verified against its descriptor; a mismatch names the registry.
fn commit_blob(
    ingest: crate::store::Ingest,
    ctx: &Ctx,
    ep: &Endpoint,
    desc: &Descriptor,
    note: &dyn Fn(Progress),
) -> Result<(), RegistryError> {
    match ingest.commit(Some(&desc.digest), Some(desc.size)) {
        Ok(_) => {
            note(Progress::BlobDone {
                digest: desc.digest.clone(),
                outcome: BlobOutcome::Downloaded,
            });
            Ok(())
        }
        Err(StoreError::DigestMismatch {
            expected, actual, ..
        }) => Err(RegistryError::DigestMismatch {
            host: ep.host.clone(),
            reference: ctx.reference.clone(),
            what: format!("blob {}", desc.digest),
            expected,
            actual,
        }),
        Err(StoreError::SizeMismatch {
            digest,
            expected,
            actual,
        }) => Err(RegistryError::SizeMismatch {
            host: ep.host.clone(),
            reference: ctx.reference.clone(),
            digest,
            expected,
            actual,
        }),
        Err(e) => Err(RegistryError::Store {
            host: ep.host.clone(),
            reference: ctx.reference.clone(),
            action: format!("storing blob {}", desc.digest),
            source: Box::new(e),
        }),
    }
}

/// GET the manifest `reference` names, without storing anything: an index is followed to the
/// entry for `platform`. Returns the manifest's bytes (digest-verified) and descriptor. Used to
/// read cache artifacts and images whose inline cache a build imports.
pub fn fetch_manifest(
    client: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
) -> Result<(Vec<u8>, Descriptor), RegistryError> {
    let ctx = Ctx::new(&reference.domain, &reference.to_string());
    let eps = endpoints(client, &reference.domain);
    let mut last = None;
    for ep in &eps {
        let mut object = reference.object();
        let mut expected = reference.digest.clone();
        let attempt = (|| {
            for _ in 0..4 {
                let (bytes, media_type, digest) = get_manifest(
                    client,
                    &ctx,
                    ep,
                    &reference.path,
                    &object,
                    expected.as_ref(),
                )?;
                if manifest_kind(&media_type) != Some(ManifestKind::Index) {
                    let d = Descriptor::new(media_type, digest, bytes.len() as u64);
                    return Ok((bytes, d));
                }
                let index = Index::from_slice(&bytes).map_err(|e| RegistryError::BadResponse {
                    host: ep.host.clone(),
                    reference: ctx.reference.clone(),
                    what: "image index".into(),
                    detail: super::error::chain(&e),
                })?;
                let next = index
                    .select(platform)
                    .ok_or_else(|| RegistryError::NoPlatform {
                        host: ep.host.clone(),
                        reference: ctx.reference.clone(),
                        platform: platform.to_string(),
                        available: String::new(),
                    })?;
                object = next.digest.to_string();
                expected = Some(next.digest.clone());
            }
            Err(RegistryError::BadResponse {
                host: ep.host.clone(),
                reference: ctx.reference.clone(),
                what: "image index".into(),
                detail: "indexes nested more than 4 deep".into(),
            })
        })();
        match attempt {
            Ok(r) => return Ok(r),
            Err(e) if ep.mirror => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| RegistryError::NotFound {
        host: ctx.host.clone(),
        reference: ctx.reference.clone(),
        what: "any endpoint".into(),
    }))
}

/// Download `blobs` of `reference`'s repository into the store in parallel (up to the host's
/// limit), each from the first of `eps` that has it: a mirror that fails gives way to the next,
/// the registry itself has the last word.
fn download(
    client: &RegistryClient,
    ctx: &Ctx,
    eps: &[Endpoint],
    reference: &Reference,
    store: &Store,
    blobs: &[Descriptor],
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(), RegistryError> {
    let path = reference.path.as_str();
    let work = |b: &Descriptor, note: &dyn Fn(Progress)| -> Result<(), RegistryError> {
        let _slot = client.acquire(&reference.domain);
        let mut last = None;
        for ep in eps {
            match fetch_blob(client, ctx, ep, path, b, store, note) {
                Ok(()) => return Ok(()),
                Err(e) if ep.mirror => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::NotFound {
            host: ctx.host.clone(),
            reference: ctx.reference.clone(),
            what: format!("blob {}", b.digest),
        }))
    };
    run_parallel(
        blobs,
        client.max_concurrency(&reference.domain),
        on_progress,
        &work,
    )
}

/// Stream the blobs of `reference`'s repository that the store lacks into it, verified (mirrors
/// first, as a pull does), and remember the repository as their source so a later push to the same
/// registry mounts them instead of uploading.
pub fn fetch_blobs(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    blobs: &[Descriptor],
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(), RegistryError> {
    let ctx = Ctx::new(&reference.domain, &reference.to_string());
    let eps = endpoints(client, &reference.domain);
    let missing: Vec<Descriptor> = blobs
        .iter()
        .filter(|b| !store.has_blob(&b.digest))
        .cloned()
        .collect();
    download(client, &ctx, &eps, reference, store, &missing, on_progress)?;
    remember_source(store, reference, blobs);
    Ok(())
}

/// Note that `reference`'s repository holds `blobs` (pulled from it, or pushed to it), so a push to
/// another repository of that registry can mount them.
pub fn remember_source(store: &Store, reference: &Reference, blobs: &[Descriptor]) {
    let digests: Vec<Digest> = blobs.iter().map(|b| b.digest.clone()).collect();
    record_sources(store, &reference.repository(), &digests);
}
