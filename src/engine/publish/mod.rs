//! The end of a build with shared caches: the local tag (never naming a blob the store lacks),
//! `--push` and the `--cache-to` exports running side by side, and remote records kept locally
//! once their blobs are here.
//!
//! Must not: build anything, or write a manifest before its blobs are confirmed (that is
//! `registry::push`'s rule, kept by calling it).
//!
//! The wing: this file (tags, push), `early_push.rs` (layers upload while later steps run),
//! `remote_cache.rs` (`--cache-from`), `cache_export.rs` (`--cache-to`).

pub(crate) mod cache_export;
pub(crate) mod early_push;
pub(crate) mod remote_cache;

use crate::engine::{BuildError, BuildRequest, Event};
use crate::image::Descriptor;
use crate::reference::Reference;
use crate::store::Store;

/// A registry client when a `--cache-from` or `--cache-to` names a registry.
pub(crate) fn cache_registry_client(
    req: &BuildRequest,
) -> Result<Option<std::sync::Arc<crate::registry::RegistryClient>>, BuildError> {
    use crate::cache::spec::{ExportTarget, ImportSource};
    let needed = req
        .cache_from
        .iter()
        .any(|s| matches!(s.source, ImportSource::Registry { .. }))
        || req
            .cache_to
            .iter()
            .any(|s| matches!(s.target, ExportTarget::Registry { .. }));
    Ok(match needed {
        true => Some(std::sync::Arc::new(req.registry.client()?)),
        false => None,
    })
}

/// Tag the image in the local store. A store tag must never name a blob the store lacks (`kiln
/// fsck` stays clean), so layers replayed from a shared cache are fetched first — unless the build
/// only pushes (no `--output`): then those layers go registry to registry by mount and the image
/// is not tagged locally, which is said in a warning.
pub(crate) fn tag_locally(
    store: &Store,
    req: &BuildRequest,
    remote: &remote_cache::RemoteCaches,
    tags: &[String],
    manifest: &Descriptor,
    layers: &[Descriptor],
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), BuildError> {
    let missing = remote.missing(store, layers);
    let needs_bytes = !req.outputs.is_empty() || (!req.push && !tags.is_empty());
    if needs_bytes {
        for b in &missing {
            remote.ensure_local(store, &b.digest)?;
        }
    } else if !missing.is_empty() && !tags.is_empty() {
        on_event(&Event::Warning {
            message: format!(
                "not tagged in the local store: {} layer(s) of the image are only in the shared cache (pushed by cross-repository mount; `kiln pull` fetches the image)",
                missing.len()
            ),
        });
        return Ok(());
    }
    for t in tags {
        store.tag(t, manifest)?;
        on_event(&Event::Exported {
            kind: "store".into(),
            dest: t.clone(),
        });
    }
    Ok(())
}

/// After a build that read shared caches: keep what it fetched as local records, and say how much
/// it fetched.
pub(crate) fn after_remote_caches(
    store: &Store,
    remote: &self::remote_cache::RemoteCaches,
    records: &[cache_export::StepRecord],
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), BuildError> {
    if !remote.is_empty() {
        keep_fetched_records(store, records)?;
    }
    if remote.fetched_bytes() > 0 {
        on_event(&Event::Cache {
            action: "fetched".into(),
            source: "--cache-from".into(),
            detail: format!("{} bytes of cached blobs", remote.fetched_bytes()),
        });
    }
    Ok(())
}

/// Records taken from a shared cache whose blobs are now in the store become local records, so
/// the next build on this store hits without `--cache-from`.
fn keep_fetched_records(
    store: &Store,
    records: &[cache_export::StepRecord],
) -> Result<(), BuildError> {
    let err = |e| BuildError::Cache(Box::new(e));
    for (_, key, record) in records {
        let local = match &record.layer {
            Some(l) => store.has_blob(&l.descriptor.digest),
            None => true,
        };
        if local && crate::cache::lookup(store, key).map_err(err)?.is_none() {
            crate::cache::save(store, key, record).map_err(err)?;
        }
    }
    Ok(())
}

/// `--push` and the `--cache-to` exports, in parallel: the exports upload what is not the image's
/// while the image goes up, then mount the image's layers from its repository.
pub(crate) fn push_and_export(
    export: &cache_export::Inputs<'_>,
    tags: &[String],
    manifest: &Descriptor,
    early_bytes: u64,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), BuildError> {
    let req = export.req;
    let latch = cache_export::Latch::default();
    let (pushed, exported) = std::thread::scope(|s| {
        let exporter = s.spawn(|| cache_export::export(export, &latch));
        // Opens the latch even if the push panics, so the exporter never waits forever.
        let guard = cache_export::OpenOnDrop(&latch);
        let pushed = if req.push {
            push_image(export, tags, manifest, early_bytes, on_event)
        } else {
            Ok(())
        };
        latch.open(req.push && pushed.is_ok());
        drop(guard);
        let exported = exporter
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (pushed, exported)
    });
    pushed?;
    for e in exported? {
        on_event(&e);
    }
    Ok(())
}

fn push_image(
    export: &cache_export::Inputs<'_>,
    tags: &[String],
    manifest: &Descriptor,
    early_bytes: u64,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), BuildError> {
    let (req, store) = (export.req, export.store);
    let dests: Vec<Reference> = tags.iter().filter_map(|t| t.parse().ok()).collect();
    if !export.remote.is_empty() && !dests.is_empty() {
        let client = req.registry.client()?;
        cache_export::prepare_push(store, export.remote, &client, &dests, export.image_layers)?;
    }
    push_tags(req, store, tags, manifest, early_bytes, on_event)?;
    for d in &dests {
        crate::registry::remember_source(store, d, export.image_layers);
    }
    Ok(())
}

/// Push the built manifest to every tag's registry: blobs first, the manifest last.
pub(crate) fn push_tags(
    req: &BuildRequest,
    store: &Store,
    tags: &[String],
    manifest: &Descriptor,
    early_bytes: u64,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), BuildError> {
    let mut early_bytes = early_bytes;
    if tags.is_empty() {
        return Err(BuildError::BadOutput {
            value: "--push".into(),
            why: "pushing needs at least one tag (-t registry.example.com/team/app:1.0)".into(),
        });
    }
    let client = req.registry.client()?;
    for t in tags {
        let r: Reference = t.parse().map_err(|source| BuildError::BadTag {
            tag: t.clone(),
            source,
        })?;
        let mut desc = manifest.clone();
        desc.annotations.clear();
        let mut sizes = std::collections::BTreeMap::new();
        // What went up while building counts for the first tag's push.
        let mut bytes = std::mem::take(&mut early_bytes);
        let pushed = crate::registry::push(&client, store, &desc, &r, &mut |p| {
            crate::engine::event::count_transfer(&p, &mut sizes, &mut bytes)
        })
        .map_err(|source| BuildError::Push {
            reference: t.clone(),
            source: Box::new(source),
        })?;
        on_event(&Event::Transferred {
            kind: "pushed".into(),
            reference: t.clone(),
            bytes,
        });
        on_event(&Event::Exported {
            kind: "registry".into(),
            dest: format!("{t}@{}", pushed.digest),
        });
    }
    Ok(())
}
