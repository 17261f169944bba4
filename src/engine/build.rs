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
use super::{attestations, base, inputs, named, nospace, platforms, schedule, stage, workspace};
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
/// and the plan options (SOURCE_DATE_EPOCH from the request or its build arg, as BuildKit); each
/// platform plans with these options and its own target platform.
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
        named_contexts: named::plan_sources(&req.named_contexts),
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

/// What every platform's build shares: the request, the parsed Dockerfile, the shared caches.
struct Shared<'a> {
    store: &'a Store,
    req: &'a BuildRequest,
    parsed: &'a Parsed,
    remote: &'a remote_cache::RemoteCaches,
    cache_client: Option<std::sync::Arc<crate::registry::RegistryClient>>,
    lease: &'a store::Lease<'a>,
    /// The build context (its `.dockerignore` read), opened once for every platform.
    context: &'a crate::context::SourceRoot,
    /// Local `--build-context` directories, opened once.
    named: &'a std::collections::BTreeMap<String, crate::context::SourceRoot>,
    /// `--ssh` agents, one set for every platform.
    ssh: &'a super::ssh::Agents,
    /// When the build started (unix seconds), for the provenance.
    started_unix: i64,
}

/// One platform's image, made and stored, with what publishing it needs.
struct Built {
    plan: plan::Plan,
    records: Vec<cache_export::StepRecord>,
    layers: Vec<Descriptor>,
    config: Descriptor,
    /// The manifest, its `platform` the target's (an index entry needs it).
    manifest: Descriptor,
    /// Its attestation manifest (`--provenance`, `--sbom`).
    attestation: Option<Descriptor>,
    early_bytes: u64,
}

/// The build itself, under the lease `build` took and with its ENOSPC watch: every platform (one
/// unless `--platform` names several, in parallel then), then the image or index published.
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
    let cache_client = publish::cache_registry_client(req)?;
    let remote = remote_cache::RemoteCaches::import(req, store, cache_client.clone(), on_event);
    let context = build_context(req)?;
    let named_roots = named::open_local(req)?;
    // Key files' agents start before any step and stop when the build ends, however it ends.
    let ssh_agents =
        super::ssh::Agents::start(req.ssh.iter().map(|s| (s.id.as_str(), s.paths.as_slice())))?;
    let shared = Shared {
        store,
        req,
        parsed: &parsed,
        remote: &remote,
        cache_client,
        lease,
        context: &context,
        named: &named_roots,
        ssh: &ssh_agents,
        started_unix,
    };
    let images = match req.platforms.as_slice() {
        [] | [_] => {
            let p = req.platforms.first().cloned().unwrap_or_default();
            let one = Target {
                platform: &p,
                index: 0,
                threads: req.threads,
                gate: &platforms::Solo,
                slots: None,
                cancel,
            };
            vec![build_platform(&shared, one, on_event)?]
        }
        many => build_platforms(&shared, many, on_event, cancel)?,
    };
    publish_images(&shared, images, started, on_event)
}

/// Every platform on its own thread, within the build's parallelism; their events renumbered
/// into one build's and handed to `on_event` on this thread. The first platform to fail stops
/// the others.
fn build_platforms(
    shared: &Shared<'_>,
    targets: &[plan::Platform],
    on_event: &mut dyn FnMut(&Event),
    cancel: &crate::exec::Cancel,
) -> Result<Vec<Built>, BuildError> {
    let rendezvous = platforms::Rendezvous::new(targets.len());
    let siblings = cancel.child();
    // Within max-parallelism: at most that many platforms at once, each with its share.
    let running = shared.req.threads.clamp(1, targets.len());
    let slots = platforms::Slots::new(running);
    let threads = (shared.req.threads / running).max(1);
    let (tx, rx) = std::sync::mpsc::channel::<Event>();
    let results: Vec<Result<Built, BuildError>> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let (tx, rendezvous, siblings, slots) =
                    (tx.clone(), &rendezvous, &siblings, &slots);
                s.spawn(move || {
                    let member = rendezvous.member(index, p.to_string());
                    let mut send = |e: &Event| {
                        let _ = tx.send(member.relabel(e));
                    };
                    let one = Target {
                        platform: p,
                        index,
                        threads,
                        gate: &member,
                        slots: Some(slots),
                        cancel: siblings,
                    };
                    let r = build_platform(shared, one, &mut send);
                    if r.is_err() {
                        rendezvous.fail();
                        siblings.cancel();
                    }
                    r
                })
            })
            .collect();
        drop(tx);
        // Every platform tells the whole build's size and the sandbox it got: said once.
        let (mut planned, mut sandbox) = (false, false);
        for e in rx {
            let seen = match e {
                Event::Planned { .. } => &mut planned,
                Event::Sandbox { .. } => &mut sandbox,
                _ => {
                    on_event(&e);
                    continue;
                }
            };
            if !std::mem::replace(seen, true) {
                on_event(&e);
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    if cancel.is_cancelled() {
        return Err(BuildError::Cancelled);
    }
    // The failure that stopped the others, not the cancellations it caused.
    let (ok, errs): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let mut errs: Vec<BuildError> = errs.into_iter().filter_map(Result::err).collect();
    if let Some(i) = errs
        .iter()
        .position(|e| !matches!(e, BuildError::Cancelled))
    {
        return Err(errs.swap_remove(i));
    }
    if let Some(e) = errs.pop() {
        return Err(e);
    }
    Ok(ok.into_iter().filter_map(Result::ok).collect())
}

/// Which platform a [`build_platform`] call builds, and how it fits into the whole build.
struct Target<'a> {
    platform: &'a plan::Platform,
    index: usize,
    /// Stages of this platform at once.
    threads: usize,
    gate: &'a dyn platforms::Gate,
    /// Platforms running at once (None: the only one).
    slots: Option<&'a platforms::Slots>,
    cancel: &'a crate::exec::Cancel,
}

/// One platform: plan (bases resolved, pulled while planning), workspace, early push, the
/// stages (`schedule.rs`), then the target stage made into a stored config and manifest.
fn build_platform(
    shared: &Shared<'_>,
    one: Target<'_>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Built, BuildError> {
    let (store, req, parsed) = (shared.store, shared.req, shared.parsed);
    // The workspace comes first: bases pulled while planning are unpacked into it as they
    // download (prepare.rs), and it outlives the preparer's threads.
    let workspace_root = store.root().join("builds");
    let workspace =
        workspace::Workspace::create(&workspace_root).map_err(|source| BuildError::Workspace {
            path: workspace_root.clone(),
            source,
        })?;
    shared.lease.protect_dir(workspace.path())?;
    let preparer = base::prepare::Preparer::new(store);
    let bases = base::StoreBases::new(store)
        .with_registry(req.pull.then_some(&req.registry))
        .pull_always(req.pull_always)
        .with_preparer(&preparer);
    let mut opts = parsed.opts.clone();
    opts.platform = one.platform.clone();
    let plan = plan::plan(&parsed.df, &opts, &bases)?;
    bases.report(on_event);
    // Warnings are the Dockerfile's, the same for every platform: told once.
    if one.index == 0 {
        for w in &plan.warnings {
            on_event(&Event::Warning {
                message: warning_text(&plan.file_name, w),
            });
        }
    }
    if one.index == 0 {
        shared.remote.seed_mounts(store, &plan, on_event);
    }
    // Before any step runs: a foreign RUN step with no way to run is an error now.
    let runners = platforms::runners(&plan, req)?;
    let mut first_step = BTreeMap::new();
    let mut total = 0;
    for &i in &plan.order {
        first_step.insert(i, total + 1);
        total += plan.stages[i].steps.len();
    }
    let offsets = one.gate.ready(plan.order.len(), total)?;
    let early = start_early_push(store, req, &parsed.tags, &plan)?;
    // Stages stop each other through this child token; the caller's cancel still reaches them.
    let siblings = one.cancel.child();
    let engine = stage::Engine {
        inputs: inputs::Inputs {
            store,
            req,
            plan: &plan,
            bases: &bases,
            context: shared.context,
            named: shared.named,
            ssh: shared.ssh,
            workspace: workspace.path(),
            file_name: &parsed.file_name,
            sde: parsed.sde,
            created: engine_created(parsed.sde),
            cancel: &siblings,
            early_push: early.as_ref(),
            remote: shared.remote,
            runners: &runners,
        },
        progress: stage::Progress::default(),
        first_step,
        total_steps: total,
    };
    on_event(&Event::Planned {
        stages: offsets.stages,
        steps: offsets.steps,
    });
    let slot = match one.slots {
        Some(s) => Some(s.acquire(one.cancel).ok_or(BuildError::Cancelled)?),
        None => None,
    };
    if one.cancel.is_cancelled() {
        return Err(BuildError::Cancelled);
    }
    schedule::build_stages(&engine, &plan.order, one.threads, &siblings, on_event)?;
    drop(slot);
    // The index entry names the platform asked for, even when the final stage is
    // `FROM --platform=…` another (BuildKit's dockerui `makeExportPlatform`).
    let platform = base::image_platform(one.platform);
    let mut made = make_image(&engine, shared, &platform)?;
    made.manifest.platform = Some(platform);
    let facts = attestations::Facts {
        dockerfile_text: &parsed.text,
        global_args: &parsed.global_args,
        started: shared.started_unix,
    };
    let attestation = attestations::attestation_for(&engine, &facts, &made.manifest, on_event)?;
    let early_bytes = early.as_ref().map_or(0, |e| e.finish());
    drop(engine);
    Ok(Built {
        plan,
        records: made.records,
        layers: made.layers,
        config: made.config,
        manifest: made.manifest,
        attestation,
        early_bytes,
    })
}

/// What [`make_image`] stored: the step records, the image's layers, config and manifest.
struct Made {
    records: Vec<cache_export::StepRecord>,
    layers: Vec<Descriptor>,
    config: Descriptor,
    manifest: Descriptor,
}

/// With --push, layers upload while later steps run (early_push.rs); the manifest goes last.
fn start_early_push(
    store: &Store,
    req: &BuildRequest,
    tags: &[String],
    plan: &plan::Plan,
) -> Result<Option<early_push::EarlyPush>, BuildError> {
    if !req.push {
        return Ok(None);
    }
    let client = std::sync::Arc::new(req.registry.client()?);
    Ok(Store::open(store.root())
        .ok()
        .and_then(|handle| early_push::EarlyPush::start(client, handle, tags, plan)))
}

/// The build context, with the Dockerfile-specific ignore file that sits beside a Dockerfile read
/// from disk (inline text has none).
fn build_context(req: &BuildRequest) -> Result<crate::context::SourceRoot, BuildError> {
    let dockerfile_path = match (&req.dockerfile_text, &req.dockerfile) {
        (Some(_), _) => None,
        (None, Some(p)) => Some(p.clone()),
        (None, None) => Some(crate::context::default_dockerfile(&req.context)),
    };
    Ok(crate::context::SourceRoot::context(
        &req.context,
        dockerfile_path.as_deref(),
    )?)
}

/// The target stage becomes the image: config (labels, created, inline cache) and manifest, in
/// the store.
fn make_image(
    engine: &stage::Engine<'_>,
    shared: &Shared<'_>,
    platform: &image::Platform,
) -> Result<Made, BuildError> {
    let inputs = &engine.inputs;
    let (store, req, plan) = (inputs.store, inputs.req, inputs.plan);
    let target = engine
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
    // Labels go into every platform's config (BuildKit's `--label` is per image config).
    for (k, v) in &req.labels {
        final_state
            .config
            .config
            .labels
            .insert(k.clone(), v.clone());
    }
    let records = std::mem::take(&mut *crate::sync::lock(&engine.progress.records));
    let lineage = early_push::lineage(plan);
    let export = cache_export::Inputs {
        store,
        req,
        plan,
        records: &records,
        lineage: &lineage,
        image_layers: &final_state.layers,
        remote: inputs.remote,
        client: shared.cache_client.clone(),
    };
    cache_export::inline_config(&mut final_state.config, &export)?;
    let (config_bytes, config_desc) = final_state.config.to_blob()?;
    store.put_bytes(&config_bytes, Some(&config_desc.digest))?;
    let mut manifest = Manifest::new(config_desc.clone(), final_state.layers.clone());
    manifest.annotations = attestations::platform_annotations(req, platform)?.manifest;
    let manifest_bytes = image::canonical_json(&manifest)?;
    let digest = store.put_bytes(&manifest_bytes, None)?;
    let manifest_desc = Descriptor::new(
        image::MEDIA_OCI_MANIFEST,
        digest,
        manifest_bytes.len() as u64,
    );
    Ok(Made {
        records,
        layers: final_state.layers,
        config: config_desc,
        manifest: manifest_desc,
    })
}

/// The image (one platform: its manifest, as before; several: an index over them) tagged
/// locally, written to the `--output`s, pushed, and the step records exported.
fn publish_images(
    shared: &Shared<'_>,
    images: Vec<Built>,
    started: Instant,
    on_event: &mut dyn FnMut(&Event),
) -> Result<BuildResult, BuildError> {
    let (store, req) = (shared.store, shared.req);
    let tags = &shared.parsed.tags;
    let all_layers: Vec<Descriptor> = images.iter().flat_map(|b| b.layers.clone()).collect();
    // One platform without attestations or index annotations: the manifest is the image.
    // Otherwise an index over every platform's manifest and attestations is what tags name.
    let attested: Vec<Descriptor> = images
        .iter()
        .filter_map(|b| b.attestation.clone())
        .collect();
    let index = match images.as_slice() {
        [_] if attested.is_empty() && !req.annotations.wants_index() => None,
        many => {
            let manifests: Vec<Descriptor> = many.iter().map(|b| b.manifest.clone()).collect();
            Some(attestations::index_of(store, req, &manifests, attested)?)
        }
    };
    let image_desc = match &index {
        Some(i) => i.clone(),
        None => {
            let mut d = images[0].manifest.clone();
            d.annotations = match &d.platform {
                Some(p) => attestations::platform_annotations(req, p)?.manifest_descriptor,
                None => req.annotations.manifest_descriptor.clone(),
            };
            d.platform = None;
            d
        }
    };
    publish::tag_locally(
        store,
        req,
        shared.remote,
        tags,
        &image_desc,
        &all_layers,
        on_event,
    )?;
    if images.len() > 1
        && req
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Docker { .. }))
    {
        // `docker load` takes no index (BuildKit's docker exporter refuses a multi-platform
        // result); the archive holds the host's platform, as store::write_docker_archive writes.
        on_event(&Event::Warning {
            message: "type=docker holds one platform: the archive has this machine's platform only (type=oci keeps every platform)".into(),
        });
    }
    export_outputs(store, req, tags, &image_desc, on_event)?;
    // Every platform's records travel in the one cache export; stage numbers are per plan, so
    // they are spread apart (the export only asks whether a stage is in the image's lineage).
    const STRIDE: usize = 1 << 16;
    let mut records = Vec::new();
    let mut lineage = std::collections::BTreeSet::new();
    for (k, b) in images.iter().enumerate() {
        records.extend(
            b.records
                .iter()
                .map(|(st, key, r)| (k * STRIDE + st, key.clone(), r.clone())),
        );
        lineage.extend(
            early_push::lineage(&b.plan)
                .iter()
                .map(|st| k * STRIDE + st),
        );
    }
    let export = cache_export::Inputs {
        store,
        req,
        plan: &images[0].plan,
        records: &records,
        lineage: &lineage,
        image_layers: &all_layers,
        remote: shared.remote,
        client: shared.cache_client.clone(),
    };
    let early_bytes = images.iter().map(|b| b.early_bytes).sum();
    publish::push_and_export(&export, tags, &image_desc, early_bytes, on_event)?;
    publish::after_remote_caches(store, shared.remote, &records, on_event)?;
    let single = (images.len() == 1).then(|| (&images[0].config.digest, &images[0].manifest));
    write_metadata_files(req, &image_desc, single, index.is_some())?;
    let size = image_desc.size
        + images
            .iter()
            .map(|b| {
                b.config.size
                    + if index.is_some() { b.manifest.size } else { 0 }
                    + b.layers.iter().map(|l| l.size).sum::<u64>()
            })
            .sum::<u64>();
    let config = images[0].config.digest.clone();
    // One platform: the image manifest (the same with or without attestations); several: the
    // index, which is all that names them together.
    let manifest = match images.as_slice() {
        [one] => {
            let mut m = one.manifest.clone();
            m.platform = None;
            m
        }
        _ => image_desc.clone(),
    };
    on_event(&Event::Finished {
        manifest: manifest.digest.clone(),
        config: config.clone(),
        tags: tags.clone(),
        size,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    Ok(BuildResult {
        manifest,
        index,
        config,
        tags: tags.clone(),
    })
}

/// `--iidfile`, `--metadata-file` and kaniko's digest files, once the image is where it goes.
/// `single` is the one platform's config digest and manifest, when the build had one platform.
fn write_metadata_files(
    req: &BuildRequest,
    image: &Descriptor,
    single: Option<(&crate::digest::Digest, &Descriptor)>,
    indexed: bool,
) -> Result<(), BuildError> {
    if req.metadata_files.is_empty() {
        return Ok(());
    }
    // BuildKit's exporter response: a single manifest's descriptor carries its platform.
    let mut shown = image.clone();
    shown.annotations.remove(image::ANNOTATION_REF_NAME);
    let config = match single {
        Some((config, manifest)) if !indexed => {
            shown.platform.clone_from(&manifest.platform);
            Some(config)
        }
        _ => None,
    };
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
