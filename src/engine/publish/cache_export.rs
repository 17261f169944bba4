//! `--cache-to`: the build's step records (and, with `mounts=true`, its cache mounts) as a cache
//! artifact, pushed to a registry or written as an OCI layout; `type=inline` puts the records into the
//! image config instead (`inline_config`, before the config is hashed).
//!
//! A registry export runs on its own thread while the image is pushed: blobs that are not the
//! image's (other stages' layers with `mode=max`, mount tars) upload at once; the image's own layers
//! wait for the image push and are then cross-repository mounted from the image's repository, so no
//! blob goes up twice. The manifest goes last, after every blob it lists is on the registry.
//!
//! Must not: fail the build for an export marked `ignore-error=true` (it becomes a warning), or hold
//! a layer in memory.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};

use super::remote_cache::{chain, plan_cache_mounts, RemoteCaches};
use crate::cache::export::{self, Artifact};
use crate::cache::remote::{CacheConfig, INLINE_KEY};
use crate::cache::spec::{ExportSpec, ExportTarget, Mode};
use crate::cache::{CacheKey, Record};
use crate::digest::Digest;
use crate::engine::{BuildError, BuildRequest, Event};
use crate::image::{Descriptor, ImageConfig, Platform};
use crate::plan::Plan;
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::Store;

/// Which stage made a record, the key and the record.
pub(crate) type StepRecord = (usize, CacheKey, Record);

/// Opens once: whether the image push is over (true: its blobs are on the registry).
#[derive(Default)]
pub(crate) struct Latch {
    state: Mutex<Option<bool>>,
    cv: Condvar,
}

impl Latch {
    pub(crate) fn open(&self, pushed: bool) {
        let mut s = crate::sync::lock(&self.state);
        if s.is_none() {
            *s = Some(pushed);
        }
        self.cv.notify_all();
    }

    fn wait(&self) -> bool {
        let mut s = crate::sync::lock(&self.state);
        while s.is_none() {
            s = crate::sync::wait(&self.cv, s);
        }
        s.unwrap_or(false)
    }
}

/// Opens its latch (as "not pushed") when dropped, whatever happened before.
pub(crate) struct OpenOnDrop<'a>(pub &'a Latch);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        let mut s = crate::sync::lock(&self.0.state);
        if s.is_none() {
            *s = Some(false);
            self.0.cv.notify_all();
        }
    }
}

/// What an export reads from the finished build.
pub(crate) struct Inputs<'a> {
    pub store: &'a Store,
    pub req: &'a BuildRequest,
    pub plan: &'a Plan,
    pub records: &'a [StepRecord],
    /// Stages whose layers are the image's (the target and its FROM-stage chain).
    pub lineage: &'a BTreeSet<usize>,
    pub image_layers: &'a [Descriptor],
    pub remote: &'a RemoteCaches,
    pub client: Option<Arc<RegistryClient>>,
}

fn records_for(inputs: &Inputs<'_>, mode: Mode) -> Vec<(CacheKey, Record)> {
    let mut out: Vec<(CacheKey, Record)> = Vec::new();
    for (stage, key, record) in inputs.records {
        let wanted = mode == Mode::Max || inputs.lineage.contains(stage);
        if wanted && !out.iter().any(|(k, _)| k == key) {
            out.push((key.clone(), record.clone()));
        }
    }
    out
}

/// Put the inline cache (mode=min records) into the image config when `type=inline` is asked for;
/// an inline cache inherited from a base image is always dropped (it names the base's steps).
pub(crate) fn inline_config(
    config: &mut ImageConfig,
    inputs: &Inputs<'_>,
) -> Result<(), BuildError> {
    config.extra.remove(INLINE_KEY);
    if !inputs
        .req
        .cache_to
        .iter()
        .any(|s| s.target == ExportTarget::Inline)
    {
        return Ok(());
    }
    let records = records_for(inputs, Mode::Min);
    let value = export::inline_value(&export::cache_config(&records, &[], &Platform::host()))
        .map_err(|e| BuildError::Cache(Box::new(e)))?;
    config.extra.insert(INLINE_KEY.to_string(), value);
    Ok(())
}

/// Run every non-inline `--cache-to`; `pushed` tells when the image's blobs are on its registry.
/// Returns the events to report (this runs on another thread than the build's event sink).
pub(crate) fn export(inputs: &Inputs<'_>, pushed: &Latch) -> Result<Vec<Event>, BuildError> {
    let mut events = Vec::new();
    for spec in &inputs.req.cache_to {
        if spec.target == ExportTarget::Inline {
            continue;
        }
        match export_one(inputs, spec, pushed) {
            Ok(e) => events.push(e),
            Err(e) if spec.ignore_error => events.push(Event::Warning {
                message: format!(
                    "cache export {spec} failed (ignore-error=true): {}",
                    chain(&e)
                ),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(events)
}

fn export_err(spec: &ExportSpec, message: String) -> BuildError {
    BuildError::CacheExport {
        spec: spec.to_string(),
        message,
    }
}

fn export_one(inputs: &Inputs<'_>, spec: &ExportSpec, pushed: &Latch) -> Result<Event, BuildError> {
    let store = inputs.store;
    let cache_err = |e| BuildError::Cache(Box::new(e));
    let mounts = if spec.mounts {
        mount_blobs(inputs, spec)?
    } else {
        Vec::new()
    };
    let records = records_for(inputs, spec.mode);
    let config: CacheConfig = export::cache_config(&records, &mounts, &Platform::host());
    let artifact = export::build_artifact(store, &config).map_err(cache_err)?;
    let dest = match &spec.target {
        ExportTarget::Local { dest, tag } => {
            for b in &artifact.blobs {
                inputs.remote.ensure_local(store, &b.digest)?;
            }
            export::write_local(store, &artifact, dest, tag).map_err(cache_err)?;
            format!("{}:{tag}", dest.display())
        }
        ExportTarget::Registry { reference } => {
            push_artifact(inputs, spec, reference, &artifact, pushed)?;
            format!("{reference}@{}", artifact.manifest.digest)
        }
        ExportTarget::Inline => unreachable!("inline is written into the image config"),
    };
    Ok(Event::Cache {
        action: "exported".into(),
        source: dest,
        detail: format!(
            "{} step record(s), {} cache mount(s), {} blob(s)",
            records.len(),
            mounts.len(),
            artifact.blobs.len()
        ),
    })
}

/// The plan's cache mounts as tar blobs (empty ones skipped), each read under its lock.
fn mount_blobs(
    inputs: &Inputs<'_>,
    spec: &ExportSpec,
) -> Result<Vec<(String, Descriptor)>, BuildError> {
    let mut out = Vec::new();
    for (id, _) in plan_cache_mounts(inputs.plan) {
        let dir = crate::cache::mounts::path(inputs.store.root(), &id);
        let lock_path = dir.with_extension("lock");
        // Held while the tar is written so a locked step never half-writes what is exported.
        let _lock = std::fs::File::create(&lock_path).ok().inspect(|f| {
            let _ = rustix::fs::flock(f, rustix::fs::FlockOperation::LockExclusive);
        });
        let compression = spec.compression.unwrap_or(inputs.req.compression);
        let blob = export::mount_blob(
            inputs.store,
            &dir,
            compression,
            spec.compression_level,
            inputs.req.threads,
        )
        .map_err(|e| BuildError::Cache(Box::new(e)))?;
        if let Some(d) = blob {
            out.push((id, d));
        }
    }
    Ok(out)
}

/// Blobs first (the image's own after its push, by mount), the manifest last.
fn push_artifact(
    inputs: &Inputs<'_>,
    spec: &ExportSpec,
    reference: &Reference,
    artifact: &Artifact,
    pushed: &Latch,
) -> Result<(), BuildError> {
    let client = inputs
        .client
        .as_ref()
        .ok_or_else(|| export_err(spec, "no registry client".into()))?;
    let image: BTreeSet<&Digest> = inputs.image_layers.iter().map(|l| &l.digest).collect();
    let (own, extra): (Vec<&Descriptor>, Vec<&Descriptor>) = artifact
        .blobs
        .iter()
        .partition(|b| image.contains(&b.digest));
    for b in extra {
        confirm_blob(inputs, client, reference, b).map_err(|e| export_err(spec, e))?;
    }
    if inputs.req.push && !own.is_empty() {
        // The image's layers are mounted from its repository once its push has put them there.
        pushed.wait();
    }
    for b in own {
        confirm_blob(inputs, client, reference, b).map_err(|e| export_err(spec, e))?;
    }
    crate::registry::push(
        client,
        inputs.store,
        &artifact.manifest,
        reference,
        &mut |_| {},
    )
    .map_err(|e| export_err(spec, chain(&e)))?;
    Ok(())
}

/// Put one blob on the cache repository: HEAD, mount, or upload; a lazy blob the registry cannot
/// mount is fetched first.
fn confirm_blob(
    inputs: &Inputs<'_>,
    client: &RegistryClient,
    reference: &Reference,
    b: &Descriptor,
) -> Result<(), String> {
    let push = || crate::registry::push_blob_early(client, inputs.store, b, reference, &|_| {});
    match push() {
        Ok(()) => Ok(()),
        Err(_) if !inputs.store.has_blob(&b.digest) => {
            inputs
                .remote
                .ensure_local(inputs.store, &b.digest)
                .map_err(|e| chain(&e))?;
            push().map_err(|e| chain(&e))
        }
        Err(e) => Err(chain(&e)),
    }
}

/// Before an image push: every lazy layer of the image either mounts on each destination (from
/// the cache's repository) or is fetched, so the push never meets a blob it cannot send.
pub(crate) fn prepare_push(
    store: &Store,
    remote: &RemoteCaches,
    client: &RegistryClient,
    dests: &[Reference],
    layers: &[Descriptor],
) -> Result<(), BuildError> {
    for b in remote.missing(store, layers) {
        for d in dests {
            if crate::registry::push_blob_early(client, store, &b, d, &|_| {}).is_err() {
                remote.ensure_local(store, &b.digest)?;
                break;
            }
        }
    }
    Ok(())
}
