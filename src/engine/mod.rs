//! The one place that wires the pipeline: Dockerfile → plan → stages (FROM, COPY/ADD, metadata) →
//! layers in the store → image config and manifest → tags and outputs.
//!
//! A stage's filesystem is the chain of its layers' committed snapshots (`store::snapshots`),
//! brought up to date only when a step reads or changes it: COPY reads its destination and
//! `--chown` names through a merged view of them, RUN mounts them as overlay lowers, and
//! `COPY --from` reads a hard-linked flat tree of the source stage. A layer holds exactly what the
//! step adds, so it never depends on the base.
//!
//! Must not: parse Dockerfiles, write tar or hash bytes itself — it calls the modules that do.

mod add;
mod base;
mod cache_export;
mod cached;
mod early_push;
mod flight;
mod history;
pub use base::StoreBases;
mod copy;
mod copy_plan;
mod copy_step;
mod event;
mod fsutil;
mod hardlink;
mod metadata;
mod nospace;
mod prepare;
mod publish;
mod remote_cache;
mod run;
mod schedule;
mod stage;
mod stage_defaults;
mod url;
mod workspace;

pub use event::{Event, LayerSummary};
pub use metadata::{apply_metadata, MetaState};
pub use run::SecretSource;
pub use workspace::{empty_trash, scratch_dirs};

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use crate::digest::Digest;
use crate::image::{self, Descriptor, Manifest};
use crate::layer::Compression;
use crate::plan;
use crate::reference::Reference;
use crate::store::{self, Store};

/// Why a build failed. Each variant names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading Dockerfile {path}")]
    ReadDockerfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] crate::dockerfile::ParseError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error("invalid tag {tag:?}")]
    BadTag {
        tag: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("invalid --output {value:?}: {why}")]
    BadOutput { value: String, why: String },
    #[error("{file}:{line}: {instruction}: {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("base image {reference}: {message}")]
    Base {
        reference: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("preparing the build workspace {path}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("pushing {reference}")]
    Push {
        reference: String,
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
    #[error("setting up the registry client")]
    Registry(#[source] Box<crate::registry::RegistryError>),
    #[error("step cache")]
    Cache(#[source] Box<crate::cache::CacheError>),
    #[error("exporting the build cache to --cache-to {spec}: {message}")]
    CacheExport { spec: String, message: String },
    #[error("build cancelled")]
    Cancelled,
    #[error(
        "no space left on device while writing {what}; free space on the filesystem of {root} \
         (`kiln prune` removes build cache) and build again"
    )]
    NoSpace {
        what: String,
        root: PathBuf,
        #[source]
        source: Box<BuildError>,
    },
}

/// Where a built image goes besides the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout: a directory, or a tar of one when `dest` ends in `.tar`.
    Oci { dest: PathBuf },
    /// A `docker save` style archive (`docker load`, `skopeo docker-archive:`).
    Docker { dest: PathBuf },
}

impl FromStr for Output {
    type Err = BuildError;

    /// `type=oci,dest=DIR|FILE.tar`, `type=docker,dest=FILE.tar` (BuildKit's `--output` syntax).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| BuildError::BadOutput {
            value: s.to_string(),
            why: why.to_string(),
        };
        let mut kind = None;
        let mut dest = None;
        for field in s.split(',') {
            match field.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("dest", v)) => dest = Some(PathBuf::from(v)),
                Some((k, _)) => return Err(bad(&format!("unknown key {k:?} (type, dest)"))),
                None => return Err(bad(&format!("{field:?} is not key=value"))),
            }
        }
        let dest = dest.ok_or_else(|| bad("missing dest=PATH"))?;
        match kind.as_deref() {
            Some("oci") => Ok(Output::Oci { dest }),
            Some("docker") | Some("docker-archive") => Ok(Output::Docker { dest }),
            Some(other) => Err(bad(&format!("unsupported type {other:?} (oci, docker)"))),
            None => Err(bad("missing type=oci|docker")),
        }
    }
}

/// Everything a build needs, already validated by the caller (CLI or API).
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub context: PathBuf,
    /// Dockerfile path; default `<context>/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    /// Inline Dockerfile text (takes precedence over `dockerfile`).
    pub dockerfile_text: Option<String>,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub outputs: Vec<Output>,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    pub source_date_epoch: Option<i64>,
    pub threads: usize,
    /// `--secret` sources, read only by the RUN steps that mount them.
    pub secrets: Vec<SecretSource>,
    pub sandbox: SandboxOptions,
    /// Pull a base image that is not in the local store from its registry.
    pub pull: bool,
    /// Run every step even when the step cache has its result.
    pub no_cache: bool,
    /// Push every tag to its registry once the image is built.
    pub push: bool,
    pub registry: RegistryAccess,
    /// `--cache-from`: shared caches read after the local step cache, in order.
    pub cache_from: Vec<crate::cache::spec::ImportSpec>,
    /// `--cache-to`: where the build's step records go (registry, OCI layout, inline).
    pub cache_to: Vec<crate::cache::spec::ExportSpec>,
}

/// Registry settings and this build's credentials, for pulling bases and pushing results. Held in
/// memory for one build only; `Credentials`' Debug redacts.
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    pub config: crate::config::Config,
    pub credentials: crate::registry::Credentials,
    /// Extra insecure hosts for this build (`--insecure-registry`).
    pub insecure: Vec<String>,
}

impl RegistryAccess {
    pub fn client(&self) -> Result<crate::registry::RegistryClient, BuildError> {
        let mut cfg = self.config.clone();
        if !self.insecure.is_empty() {
            cfg.merge_insecure_registries(&self.insecure.join(","));
        }
        crate::registry::RegistryClient::new(&cfg, self.credentials.clone())
            .map_err(|e| BuildError::Registry(Box::new(e)))
    }
}

/// How RUN steps are sandboxed (from kiln.toml and per-build flags).
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Force a rung instead of the strongest that works.
    pub rung: Option<crate::exec::Rung>,
    pub snapshotter: crate::snapshot::SnapshotterKind,
    /// The kiln binary to re-exec as the sandbox helper (default /proc/self/exe).
    pub helper: Option<PathBuf>,
    pub resources: crate::exec::Resources,
    pub step_timeout: Option<std::time::Duration>,
    /// The network of RUN steps that do not say `--network` (BuildKit's `--network` build flag).
    pub network: crate::exec::Network,
    /// `[worker.oci] ca-injection` (not given: on when the platform mounted a CA).
    pub ca_injection: Option<bool>,
}

impl SandboxOptions {
    /// The build-wide network, as a cache input.
    pub fn network_name(&self) -> &'static str {
        match self.network {
            crate::exec::Network::Host => "host",
            crate::exec::Network::None => "none",
        }
    }
}

impl BuildRequest {
    pub fn new(context: impl Into<PathBuf>) -> BuildRequest {
        BuildRequest {
            context: context.into(),
            dockerfile: None,
            dockerfile_text: None,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            outputs: Vec::new(),
            compression: Compression::Gzip,
            compression_level: None,
            source_date_epoch: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            secrets: Vec::new(),
            sandbox: SandboxOptions::default(),
            pull: true,
            no_cache: false,
            push: false,
            registry: RegistryAccess::default(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
        }
    }
}

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub manifest: Descriptor,
    pub config: Digest,
    /// Tags as stored (`docker.io/library/app:latest`).
    pub tags: Vec<String>,
}

/// Run a build on the embedded engine.
pub fn run(
    store: &Store,
    req: &BuildRequest,
    on_event: &mut dyn FnMut(&Event),
    cancel: &crate::exec::Cancel,
) -> Result<BuildResult, BuildError> {
    // What this build uses or makes is safe from a concurrent GC until it returns (store/lease.rs).
    let lease = store.lease("build")?;
    let mut run_saw_enospc = false;
    let mut watch = |e: &Event| {
        if let Event::Log { line, .. } = e {
            run_saw_enospc |= line.contains(nospace::ENOSPC_TEXT);
        }
        on_event(e)
    };
    let result = build(store, req, &mut watch, cancel, &lease);
    result.map_err(|e| nospace::explain(e, store.root(), run_saw_enospc))
}

/// What the request says before anything is planned: store names of the tags, the Dockerfile,
/// and the plan options (SOURCE_DATE_EPOCH from the request or its build arg, as BuildKit).
struct Parsed {
    tags: Vec<String>,
    file_name: String,
    df: crate::dockerfile::Dockerfile,
    opts: plan::PlanOptions,
    sde: Option<i64>,
}

fn parse_request(req: &BuildRequest) -> Result<Parsed, BuildError> {
    let tags = req
        .tags
        .iter()
        .map(|t| {
            Reference::from_str(t)
                .map(|r| r.store_name())
                .map_err(|source| BuildError::BadTag {
                    tag: t.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (file_name, text) = read_dockerfile(req)?;
    let df = crate::dockerfile::parse(&text, &file_name)?;
    let mut build_args = req.build_args.clone();
    let sde = req.source_date_epoch.or_else(|| {
        build_args
            .get("SOURCE_DATE_EPOCH")
            .and_then(|v| v.parse().ok())
    });
    if let Some(t) = sde {
        build_args
            .entry("SOURCE_DATE_EPOCH".to_string())
            .or_insert_with(|| t.to_string());
    }
    let opts = plan::PlanOptions {
        build_args,
        target: req.target.clone(),
        platform: plan::Platform::host(),
        file_name: file_name.clone(),
    };
    Ok(Parsed {
        tags,
        file_name,
        df,
        opts,
        sde,
    })
}

fn build(
    store: &Store,
    req: &BuildRequest,
    on_event: &mut dyn FnMut(&Event),
    cancel: &crate::exec::Cancel,
    lease: &store::Lease<'_>,
) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    let Parsed {
        tags,
        file_name,
        df,
        opts,
        sde,
    } = parse_request(req)?;
    // The workspace comes first: bases pulled while planning are unpacked into it as they
    // download (prepare.rs), and it outlives the preparer's threads.
    let workspace_root = store.root().join("builds");
    let workspace =
        workspace::Workspace::create(&workspace_root).map_err(|source| BuildError::Workspace {
            path: workspace_root.clone(),
            source,
        })?;
    lease.protect_dir(workspace.path())?;
    let preparer = prepare::Preparer::new(store);
    let bases = base::StoreBases::new(store)
        .with_registry(req.pull.then_some(&req.registry))
        .with_preparer(&preparer);
    let plan = plan::plan(&df, &opts, &bases)?;
    bases.report(on_event);
    for w in &plan.warnings {
        on_event(&Event::Warning {
            message: warning_text(&plan.file_name, w),
        });
    }

    // The Dockerfile-specific ignore file sits beside a Dockerfile read from disk; inline text
    // has none.
    let dockerfile_path = match (&req.dockerfile_text, &req.dockerfile) {
        (Some(_), _) => None,
        (None, Some(p)) => Some(p.clone()),
        (None, None) => Some(crate::context::default_dockerfile(&req.context)),
    };
    let context = crate::context::SourceRoot::context(&req.context, dockerfile_path.as_deref())?;
    let cache_client = publish::cache_registry_client(req)?;
    let remote = remote_cache::RemoteCaches::import(req, store, cache_client.clone(), on_event);
    remote.seed_mounts(store, &plan, on_event);
    // With --push, layers upload while later steps run (early_push.rs); the manifest goes last.
    let early = match req.push {
        true => Some(std::sync::Arc::new(req.registry.client()?))
            .zip(Store::open(store.root()).ok())
            .and_then(|(client, handle)| {
                early_push::EarlyPush::start(client, handle, &tags, &plan)
            }),
        false => None,
    };
    // Stages stop each other through this child token; the caller's cancel still reaches them.
    let siblings = cancel.child();
    let mut first_step = BTreeMap::new();
    let mut total = 0;
    for &i in &plan.order {
        first_step.insert(i, total + 1);
        total += plan.stages[i].steps.len();
    }
    let engine = stage::Engine {
        inputs: stage::Inputs {
            store,
            req,
            plan: &plan,
            bases: &bases,
            context: &context,
            workspace: workspace.path(),
            file_name: &file_name,
            sde,
            created: engine_created(sde),
            cancel: &siblings,
            early_push: early.as_ref(),
            remote: &remote,
        },
        progress: stage::Progress::default(),
        first_step,
        total_steps: total,
    };
    on_event(&Event::Planned {
        stages: plan.order.len(),
        steps: total,
    });
    if cancel.is_cancelled() {
        return Err(BuildError::Cancelled);
    }
    schedule::run_stages(&engine, &plan.order, req.threads, &siblings, on_event)?;
    let finish = Finish {
        engine: &engine,
        tags,
        cache_client,
        early: early.as_ref(),
        started,
    };
    finish_image(finish, on_event)
}

/// What the end of a build needs besides the engine that ran it.
struct Finish<'a> {
    engine: &'a stage::Engine<'a>,
    tags: Vec<String>,
    cache_client: Option<std::sync::Arc<crate::registry::RegistryClient>>,
    early: Option<&'a early_push::EarlyPush>,
    started: Instant,
}

/// The target stage becomes the image: config (labels, created, inline cache), manifest, local
/// tags, outputs, then the push and the cache export side by side (publish.rs).
fn finish_image(
    f: Finish<'_>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<BuildResult, BuildError> {
    let inputs = &f.engine.inputs;
    let (store, req, plan) = (inputs.store, inputs.req, inputs.plan);
    let target = f
        .engine
        .progress
        .finished(plan.target)
        .ok_or_else(|| BuildError::Step {
            file: inputs.file_name.to_string(),
            line: 0,
            instruction: "FROM".into(),
            message: "the target stage was not built".into(),
            source: None,
        })?;
    let mut final_state = crate::sync::lock(&target.state).clone();
    match inputs.sde {
        Some(_) => final_state.config.created = Some(engine_created(inputs.sde)),
        // Times come from the layers (history.rs), so a rebuild from cache is the same image.
        None => history::normalize(&mut final_state.config),
    }
    for (k, v) in &req.labels {
        final_state
            .config
            .config
            .labels
            .insert(k.clone(), v.clone());
    }
    let records = std::mem::take(&mut *crate::sync::lock(&f.engine.progress.records));
    let lineage = early_push::lineage(plan);
    let export = cache_export::Inputs {
        store,
        req,
        plan,
        records: &records,
        lineage: &lineage,
        image_layers: &final_state.layers,
        remote: inputs.remote,
        client: f.cache_client,
    };
    cache_export::inline_config(&mut final_state.config, &export)?;
    let (config_bytes, config_desc) = final_state.config.to_blob()?;
    store.put_bytes(&config_bytes, Some(&config_desc.digest))?;
    let manifest = Manifest::new(config_desc.clone(), final_state.layers.clone());
    let manifest_bytes = image::canonical_json(&manifest)?;
    let digest = store.put_bytes(&manifest_bytes, None)?;
    let manifest_desc = Descriptor::new(
        image::MEDIA_OCI_MANIFEST,
        digest,
        manifest_bytes.len() as u64,
    );
    let tags = &f.tags;
    publish::tag_locally(
        store,
        req,
        inputs.remote,
        tags,
        &manifest_desc,
        &final_state.layers,
        on_event,
    )?;
    export_outputs(store, req, tags, &manifest_desc, on_event)?;
    let early_bytes = f.early.map_or(0, |e| e.finish());
    publish::push_and_export(&export, tags, &manifest_desc, early_bytes, on_event)?;
    publish::after_remote_caches(store, inputs.remote, &records, on_event)?;
    let size = config_desc.size
        + manifest_desc.size
        + final_state.layers.iter().map(|l| l.size).sum::<u64>();
    on_event(&Event::Finished {
        manifest: manifest_desc.digest.clone(),
        config: config_desc.digest.clone(),
        tags: f.tags.clone(),
        size,
        duration_ms: f.started.elapsed().as_millis() as u64,
    });
    Ok(BuildResult {
        manifest: manifest_desc,
        config: config_desc.digest,
        tags: f.tags,
    })
}

/// `file:line: Rule: message`, the way BuildKit prints a build check.
pub fn warning_text(file: &str, w: &plan::Warning) -> String {
    if w.span.line == 0 {
        format!("{file}: {}: {}", w.rule, w.message)
    } else {
        format!("{file}:{}: {}: {}", w.span.line, w.rule, w.message)
    }
}

fn export_outputs(
    store: &Store,
    req: &BuildRequest,
    tags: &[String],
    manifest: &Descriptor,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), BuildError> {
    for out in &req.outputs {
        match out {
            Output::Oci { dest } => {
                // BuildKit's OCI exporter names the image by its tag in the layout.
                let names: Vec<(String, Descriptor)> = if tags.is_empty() {
                    vec![("latest".to_string(), manifest.clone())]
                } else {
                    tags.iter()
                        .map(|t| (oci_ref_name(t), manifest.clone()))
                        .collect()
                };
                store::write_oci_layout(store, &names, dest)?;
                on_event(&Event::Exported {
                    kind: "oci".into(),
                    dest: dest.display().to_string(),
                });
            }
            Output::Docker { dest } => {
                let names: Vec<(String, Descriptor)> = tags
                    .iter()
                    .map(|t| {
                        let r: Reference = t.parse().expect("tags were validated");
                        (r.familiar(), manifest.clone())
                    })
                    .collect();
                let names = if names.is_empty() {
                    vec![(String::new(), manifest.clone())]
                } else {
                    names
                };
                store::write_docker_archive(store, &names, dest)?;
                on_event(&Event::Exported {
                    kind: "docker".into(),
                    dest: dest.display().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Add a blob's size to `bytes` when it was really moved (not found on the other side already).
pub(crate) fn count_transfer(
    p: &crate::registry::Progress,
    sizes: &mut std::collections::BTreeMap<Digest, u64>,
    bytes: &mut u64,
) {
    use crate::registry::{BlobOutcome, Progress};
    match p {
        Progress::BlobStarted { digest, size } => {
            sizes.insert(digest.clone(), *size);
        }
        Progress::BlobDone {
            digest,
            outcome: BlobOutcome::Uploaded | BlobOutcome::Downloaded,
        } => *bytes += sizes.get(digest).copied().unwrap_or(0),
        _ => {}
    }
}

/// Push the built manifest to every tag's registry: blobs first, the manifest last.
pub(super) fn push_tags(
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
            count_transfer(&p, &mut sizes, &mut bytes)
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

/// The `org.opencontainers.image.ref.name` for a tag in an exported layout: the tag part, as
/// BuildKit writes it, so `skopeo inspect oci:DIR:TAG` finds it.
fn oci_ref_name(store_name: &str) -> String {
    store_name
        .parse::<Reference>()
        .map(|r| r.tag_or_latest().to_string())
        .unwrap_or_else(|_| store_name.to_string())
}

fn read_dockerfile(req: &BuildRequest) -> Result<(String, String), BuildError> {
    if let Some(text) = &req.dockerfile_text {
        return Ok(("Dockerfile".to_string(), text.clone()));
    }
    let path = req
        .dockerfile
        .clone()
        .unwrap_or_else(|| crate::context::default_dockerfile(&req.context));
    let text = fs::read_to_string(&path).map_err(|source| BuildError::ReadDockerfile {
        path: path.clone(),
        source,
    })?;
    Ok((path.display().to_string(), text))
}

fn engine_created(sde: Option<i64>) -> String {
    image::rfc3339(sde.unwrap_or_else(now_unix))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_like_buildkit() {
        assert_eq!(
            "type=oci,dest=out".parse::<Output>().unwrap(),
            Output::Oci {
                dest: PathBuf::from("out")
            }
        );
        assert_eq!(
            "type=docker,dest=a.tar".parse::<Output>().unwrap(),
            Output::Docker {
                dest: PathBuf::from("a.tar")
            }
        );
        let e = "type=local".parse::<Output>().unwrap_err().to_string();
        assert!(e.contains("missing dest"), "{e}");
        let e = "type=zip,dest=x".parse::<Output>().unwrap_err().to_string();
        assert!(e.contains("\"zip\""), "{e}");
    }
}
