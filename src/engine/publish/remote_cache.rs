//! `--cache-from`: the shared caches a build reads, after the local step cache. Each source (a
//! registry cache artifact, an image's inline cache, or a `type=local` layout) is fetched and checked
//! once at the start (`cache::remote`); one that is missing, damaged, of another key schema or
//! platform, or a BuildKit cache, is a warning and the build goes on without it. Sources are tried in
//! the order given; the first holding a key wins.
//!
//! Blobs are lazy: a hit replays the record (the layer joins the image) without fetching its bytes.
//! They are fetched only when a later step needs the stage's filesystem (`materialize`), when an
//! output or a local tag needs them, or when a push cannot cross-repository mount them — the
//! source repository is remembered as the blob's origin so the push mounts it instead.
//!
//! Must not: write a record into the local step cache for a blob that is not in the store, or tag
//! anything (the engine decides tags, `build.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::cache::import::{self, MountOwner};
use crate::cache::remote::{self, Imported, Kind, RemoteError};
use crate::cache::spec::{ImportSource, ImportSpec};
use crate::cache::{CacheKey, Record};
use crate::digest::Digest;
use crate::engine::{BuildError, BuildRequest, Event};
use crate::image::{Descriptor, Platform};
use crate::plan::{Instruction, Mount, Plan};
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::{Store, MAX_JSON_BLOB};
use crate::sync::lock;

enum Origin {
    Registry(Reference),
    Local(PathBuf),
}

struct Source {
    label: String,
    origin: Origin,
    seed_mounts: bool,
    cache: Imported,
}

/// The imported caches of one build and the blobs it took from them without fetching.
#[derive(Default)]
pub(crate) struct RemoteCaches {
    sources: Vec<Source>,
    /// Blobs of replayed records that were not in the store: digest → (source, descriptor).
    lazy: Mutex<BTreeMap<Digest, (usize, Descriptor)>>,
    /// Every layer a replayed remote record named, with the diff_id the record claims.
    taken: Mutex<BTreeMap<Digest, Digest>>,
    client: Option<Arc<RegistryClient>>,
    /// Bytes fetched from the caches (lazy blobs, configs, mounts).
    fetched: AtomicU64,
}

fn cache_err(e: crate::cache::CacheError) -> BuildError {
    BuildError::Cache(Box::new(e))
}

impl RemoteCaches {
    /// Read every `--cache-from` of `req`; a source that cannot be used is reported and skipped.
    pub(crate) fn import(
        req: &BuildRequest,
        store: &Store,
        client: Option<Arc<RegistryClient>>,
        on_event: &mut dyn FnMut(&Event),
    ) -> RemoteCaches {
        let mut out = RemoteCaches {
            client,
            ..RemoteCaches::default()
        };
        if req.no_cache {
            return out;
        }
        let platform = Platform::host();
        for spec in &req.cache_from {
            let label = spec.to_string();
            match out.read_source(store, spec, &platform) {
                Ok(Ok(cache)) => {
                    let mut detail = format!(
                        "{} step record(s), {} cache mount(s)",
                        cache.records.len(),
                        cache.mounts.len()
                    );
                    if cache.dropped > 0 {
                        detail.push_str(&format!(
                            "; {} entr(ies) dropped: the artifact does not carry their blobs",
                            cache.dropped
                        ));
                    }
                    on_event(&Event::Cache {
                        action: "imported".into(),
                        source: label.clone(),
                        detail,
                    });
                    let origin = match &spec.source {
                        ImportSource::Registry { reference } => {
                            let blobs: Vec<Descriptor> = cache
                                .records
                                .values()
                                .filter_map(|r| r.layer.as_ref().map(|l| l.descriptor.clone()))
                                .collect();
                            // A push to this registry mounts these blobs from the cache's repository.
                            crate::registry::remember_source(store, reference, &blobs);
                            Origin::Registry(reference.clone())
                        }
                        ImportSource::Local { src, .. } => Origin::Local(src.clone()),
                    };
                    out.sources.push(Source {
                        label,
                        origin,
                        seed_mounts: spec.mounts,
                        cache,
                    });
                }
                Ok(Err(why)) => on_event(&Event::Warning {
                    message: format!("cache {label} not used: {why}"),
                }),
                Err(why) => on_event(&Event::Warning {
                    message: format!("cache {label} not used: {why}"),
                }),
            }
        }
        out
    }

    /// Fetch and check one source. The outer error is "could not read it", the inner "read it,
    /// and it is not a cache kiln may use".
    fn read_source(
        &self,
        store: &Store,
        spec: &ImportSpec,
        platform: &Platform,
    ) -> Result<Result<Imported, RemoteError>, String> {
        match &spec.source {
            ImportSource::Local { src, tag, digest } => {
                import::read_local(src, tag, digest.as_ref(), platform).map_err(|e| chain(&e))
            }
            ImportSource::Registry { reference } => {
                let client = self
                    .client
                    .as_ref()
                    .ok_or("no registry client for this build")?;
                let (bytes, _) = crate::registry::fetch_manifest(client, reference, platform)
                    .map_err(|e| chain(&e))?;
                let kind = match remote::classify(&bytes) {
                    Ok(k) => k,
                    Err(e) => return Ok(Err(e)),
                };
                let (Kind::Artifact(m) | Kind::Image(m)) = &kind;
                if m.config.size > MAX_JSON_BLOB {
                    return Ok(Err(RemoteError::Damaged {
                        what: "config",
                        detail: format!("{} bytes is too large", m.config.size),
                    }));
                }
                let fetched = crate::registry::fetch_blobs(
                    client,
                    store,
                    reference,
                    std::slice::from_ref(&m.config),
                    &mut |_| {},
                );
                if let Err(e) = fetched {
                    return Ok(Err(RemoteError::Damaged {
                        what: "config",
                        detail: chain(&e),
                    }));
                }
                let config = store
                    .read_blob(&m.config.digest, MAX_JSON_BLOB)
                    .map_err(|e| chain(&e))?;
                Ok(match &kind {
                    Kind::Artifact(m) => remote::verify_artifact(m, &config, platform),
                    Kind::Image(m) => remote::verify_inline(m, &config, platform),
                })
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The first source's record for `key`. A layer not in the store is noted as lazy (fetched
    /// only if something needs its bytes).
    pub(crate) fn lookup(&self, store: &Store, key: &CacheKey) -> Option<Record> {
        for (i, s) in self.sources.iter().enumerate() {
            let Some(r) = s.cache.records.get(key) else {
                continue;
            };
            if let Some(l) = &r.layer {
                lock(&self.taken)
                    .entry(l.descriptor.digest.clone())
                    .or_insert(l.diff_id.clone());
                if !store.has_blob(&l.descriptor.digest) {
                    lock(&self.lazy)
                        .entry(l.descriptor.digest.clone())
                        .or_insert((i, l.descriptor.clone()));
                }
            }
            return Some(r.clone());
        }
        None
    }

    /// Bring a lazy blob into the store (verified). Blobs that are not lazy are left alone.
    pub(crate) fn ensure_local(&self, store: &Store, digest: &Digest) -> Result<(), BuildError> {
        if store.has_blob(digest) {
            return Ok(());
        }
        let Some((i, desc)) = lock(&self.lazy).get(digest).cloned() else {
            return Ok(());
        };
        self.fetch(store, i, &desc)
    }

    fn fetch(&self, store: &Store, source: usize, desc: &Descriptor) -> Result<(), BuildError> {
        let s = &self.sources[source];
        let failed = |message: String| BuildError::Base {
            reference: s.label.clone(),
            message,
            source: None,
        };
        match &s.origin {
            Origin::Local(src) => import::fetch_local(store, src, desc).map_err(cache_err)?,
            Origin::Registry(reference) => {
                let client = self
                    .client
                    .as_ref()
                    .ok_or_else(|| failed("no registry client to fetch a cached layer".into()))?;
                crate::registry::fetch_blobs(
                    client,
                    store,
                    reference,
                    std::slice::from_ref(desc),
                    &mut |_| {},
                )
                .map_err(|e| {
                    failed(format!(
                        "fetching cached layer {}: {}",
                        desc.digest,
                        chain(&e)
                    ))
                })?;
            }
        }
        self.fetched.fetch_add(desc.size, Ordering::SeqCst);
        // The blob's digest was verified on the way in; the diff_id its record claims is checked
        // here, before the bytes are used (a layer's config entry comes from the record).
        let claimed = lock(&self.taken).get(&desc.digest).cloned();
        if let Some(want) = claimed {
            let got = diff_id_of(store, &desc.digest)
                .map_err(|e| failed(format!("reading cached layer {}: {e}", desc.digest)))?;
            if got != want {
                return Err(failed(self.check_diff_id(&desc.digest, &got).unwrap_err()));
            }
        }
        Ok(())
    }

    /// The lazy blobs among `layers` that are still not in the store.
    pub(crate) fn missing(&self, store: &Store, layers: &[Descriptor]) -> Vec<Descriptor> {
        let lazy = lock(&self.lazy);
        layers
            .iter()
            .filter(|l| lazy.contains_key(&l.digest) && !store.has_blob(&l.digest))
            .cloned()
            .collect()
    }

    /// When `blob` came from a remote record and unpacked to `diff_id`, whether that is what the
    /// record said (a cache is trusted by digest; its diff_ids are checked whenever bytes are
    /// unpacked). Blobs of local origin are always fine here.
    pub(crate) fn check_diff_id(&self, blob: &Digest, diff_id: &Digest) -> Result<(), String> {
        match lock(&self.taken).get(blob) {
            Some(want) if want != diff_id => Err(format!(
                "layer {blob} from a shared cache unpacks to {diff_id}, but the cache record says {want}: the cache is wrong (build with --no-cache, or without that --cache-from)"
            )),
            _ => Ok(()),
        }
    }

    /// Bytes fetched from the caches so far.
    pub(crate) fn fetched_bytes(&self) -> u64 {
        self.fetched.load(Ordering::SeqCst)
    }

    /// Fill the plan's empty cache mounts from the first source that exported them.
    pub(crate) fn seed_mounts(&self, store: &Store, plan: &Plan, on_event: &mut dyn FnMut(&Event)) {
        for (id, owner) in plan_cache_mounts(plan) {
            let dir = crate::cache::mounts::path(store.root(), &id);
            let has_content = std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if has_content {
                continue;
            }
            let found = self.sources.iter().enumerate().find_map(|(i, s)| {
                s.seed_mounts
                    .then(|| s.cache.mounts.get(&id).map(|d| (i, d.clone())))
                    .flatten()
            });
            let Some((i, desc)) = found else { continue };
            let seeded = self.fetch(store, i, &desc).and_then(|()| {
                import::seed_mount(
                    store,
                    &desc.digest,
                    &dir,
                    &dir.with_extension("lock"),
                    owner,
                )
                .map_err(cache_err)
            });
            if let Ok(true) = seeded {
                // GC counts a seeded mount as used now, like one a RUN mounted.
                let _ = crate::cache::mounts::used(store, &id);
            }
            match seeded {
                Ok(true) => on_event(&Event::Cache {
                    action: "seeded".into(),
                    source: self.sources[i].label.clone(),
                    detail: format!("cache mount {id:?} ({} bytes)", desc.size),
                }),
                Ok(false) => {}
                Err(e) => on_event(&Event::Warning {
                    message: format!("cache mount {id:?} not seeded: {}", chain(&e)),
                }),
            }
        }
    }
}

/// The sha256 of a layer blob's uncompressed tar, streamed.
fn diff_id_of(store: &Store, digest: &Digest) -> std::io::Result<Digest> {
    use crate::layer::sniff::{read_prefix, Compressed, SNIFF_LEN};
    use std::io::Read;
    let mut f = store
        .open_blob(digest)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut head = [0u8; SNIFF_LEN];
    let n = read_prefix(&mut f, &mut head)?;
    let kind = Compressed::sniff(&head[..n]);
    let stream = std::io::Cursor::new(head[..n].to_vec()).chain(f);
    let (d, _) = crate::digest::hash_reader(kind.decoder(stream)?)?;
    Ok(d)
}

/// Every `RUN --mount=type=cache` id of the plan with how its directory is created (the first
/// mount naming an id decides, as the first step to use it creates the directory).
pub(crate) fn plan_cache_mounts(plan: &Plan) -> Vec<(String, MountOwner)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for stage in &plan.stages {
        for step in &stage.steps {
            let Instruction::Run(r) = &step.instruction else {
                continue;
            };
            for m in &r.mounts {
                if let Mount::Cache {
                    id, mode, uid, gid, ..
                } = m
                {
                    if seen.insert(id.clone()) {
                        let owner = MountOwner {
                            mode: *mode,
                            uid: *uid,
                            gid: *gid,
                        };
                        out.push((id.clone(), owner));
                    }
                }
            }
        }
    }
    out
}

pub(crate) use crate::report::chain;
