//! The build driver: a request becomes a plan (bases resolved, pulled while planning), the
//! workspace, shared caches and early push are set up, the stages run (`schedule.rs`), and the
//! target stage becomes the image — config, manifest, local tags, `--output`s, then the push and
//! the cache export (`publish/`). BuildKit's `Solve` for one Dockerfile frontend request.
//!
//! Must not: parse Dockerfiles, write tar or hash bytes itself, or run a step — it calls the
//! modules that do.

use std::collections::BTreeMap;
use std::fs;
use std::str::FromStr;
use std::time::Instant;

use super::publish::{self, cache_export, early_push, remote_cache};
use super::step::history;
use super::{attestations, base, inputs, nospace, schedule, stage, workspace};
use super::{BuildError, BuildRequest, BuildResult, Event, Output};
use crate::image::{self, Descriptor, Manifest};
use crate::plan;
use crate::reference::Reference;
use crate::store::{self, Store};

/// Build on the embedded engine: what `kiln build` and the daemon's queue call.
pub fn build(
    store: &Store,
    req: &BuildRequest,
    on_event: &mut dyn FnMut(&Event),
    cancel: &crate::exec::Cancel,
) -> Result<BuildResult, BuildError> {
    // What this build uses or makes is safe from a concurrent GC until it returns (store/lease.rs).
    let lease = store.lease("build")?;
    let mut saw_enospc = false;
    let mut watch = |e: &Event| {
        if let Event::Log { line, .. } = e {
            saw_enospc |= line.contains(nospace::ENOSPC_TEXT);
        }
        on_event(e)
    };
    let result = drive(store, req, &mut watch, cancel, &lease);
    result.map_err(|e| nospace::explain(e, store.root(), saw_enospc))
}

/// What the request says before anything is planned: store names of the tags, the Dockerfile,
/// and the plan options (SOURCE_DATE_EPOCH from the request or its build arg, as BuildKit).
struct Parsed {
    tags: Vec<String>,
    file_name: String,
    df: crate::dockerfile::Dockerfile,
    opts: plan::PlanOptions,
    sde: Option<i64>,
    /// The Dockerfile as read (provenance names its digest).
    text: String,
    /// Global ARGs' values: the attestation wing reads `BUILDKIT_SBOM_SCAN_*` from them.
    global_args: BTreeMap<String, String>,
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
    let global_args = global_args(&df, &req.build_args);
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
        text,
        global_args,
    })
}

/// The ARGs declared before the first FROM with their values (a build arg, else the default as
/// written).
fn global_args(
    df: &crate::dockerfile::Dockerfile,
    build_args: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for ins in &df.global_args {
        if let crate::dockerfile::Command::Arg(pairs) = &ins.command {
            for (k, default) in pairs {
                if let Some(v) = build_args.get(k).or(default.as_ref()) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
}

/// The build itself, under the lease `build` took and with its ENOSPC watch.
fn drive(
    store: &Store,
    req: &BuildRequest,
    on_event: &mut dyn FnMut(&Event),
    cancel: &crate::exec::Cancel,
    lease: &store::Lease<'_>,
) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    let started_unix = attestations::now_unix();
    let parsed = parse_request(req)?;
    let (tags, file_name, sde) = (parsed.tags, parsed.file_name, parsed.sde);
    let (df, opts) = (parsed.df, parsed.opts);
    // The workspace comes first: bases pulled while planning are unpacked into it as they
    // download (prepare.rs), and it outlives the preparer's threads.
    let workspace_root = store.root().join("builds");
    let workspace =
        workspace::Workspace::create(&workspace_root).map_err(|source| BuildError::Workspace {
            path: workspace_root.clone(),
            source,
        })?;
    lease.protect_dir(workspace.path())?;
    let preparer = base::prepare::Preparer::new(store);
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
        inputs: inputs::Inputs {
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
    schedule::build_stages(&engine, &plan.order, req.threads, &siblings, on_event)?;
    let finish = Finish {
        engine: &engine,
        tags,
        cache_client,
        early: early.as_ref(),
        started,
        facts: attestations::Facts {
            dockerfile_text: &parsed.text,
            global_args: &parsed.global_args,
            started: started_unix,
        },
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
    facts: attestations::Facts<'a>,
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
    let mut manifest = Manifest::new(config_desc.clone(), final_state.layers.clone());
    manifest.annotations = req.annotations.manifest.clone();
    let manifest_bytes = image::canonical_json(&manifest)?;
    let digest = store.put_bytes(&manifest_bytes, None)?;
    let manifest_desc = Descriptor::new(
        image::MEDIA_OCI_MANIFEST,
        digest,
        manifest_bytes.len() as u64,
    );
    let index = attestations::index_for(f.engine, &f.facts, &target, &manifest_desc, on_event)?;
    // What the tags, outputs and registry name: the index when there is one.
    let image = index.clone().unwrap_or_else(|| {
        let mut m = manifest_desc.clone();
        m.annotations = req.annotations.manifest_descriptor.clone();
        m
    });
    let tags = &f.tags;
    publish::tag_locally(
        store,
        req,
        inputs.remote,
        tags,
        &image,
        &final_state.layers,
        on_event,
    )?;
    export_outputs(store, req, tags, &image, on_event)?;
    let early_bytes = f.early.map_or(0, |e| e.finish());
    publish::push_and_export(&export, tags, &image, early_bytes, on_event)?;
    publish::after_remote_caches(store, inputs.remote, &records, on_event)?;
    let platform = base::image_platform(&plan.target_platform);
    write_metadata_files(
        req,
        &image,
        index.is_none().then_some((&config_desc.digest, platform)),
    )?;
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
        index,
        config: config_desc.digest,
        tags: f.tags,
    })
}

/// `--iidfile`, `--metadata-file` and kaniko's digest files, once the image is where it goes.
fn write_metadata_files(
    req: &BuildRequest,
    image: &Descriptor,
    manifest: Option<(&crate::digest::Digest, image::Platform)>,
) -> Result<(), BuildError> {
    if req.metadata_files.is_empty() {
        return Ok(());
    }
    // BuildKit's exporter response: a single manifest's descriptor carries its platform.
    let mut shown = image.clone();
    shown.annotations.remove(image::ANNOTATION_REF_NAME);
    let config = manifest.map(|(c, p)| {
        shown.platform = Some(p);
        c
    });
    let written = crate::attest::Written {
        image: &shown,
        config,
        names: &req.tags,
    };
    crate::attest::files::write(&req.metadata_files, &written)
        .map_err(|e| BuildError::MetadataFiles(Box::new(e)))
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
    image::rfc3339(sde.unwrap_or_else(attestations::now_unix))
}
