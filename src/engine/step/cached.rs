//! The build's side of the step cache: which inputs make a step's key, the lookup (local, then
//! `--cache-from`) and the record a step leaves. A hit is replayed by the stage loop
//! (`Engine::replay` in `stage.rs`: the recorded layer added to the image, the step not run; its
//! snapshot is committed later only if a later step has to read or change the filesystem, and
//! only once for every build).
//!
//! Must not: change a stage's state; it reads the build's [`Inputs`] and what it is handed.

use serde::Serialize;

use crate::cache::{self, CacheKey, CachedLayer, Record};
use crate::context::ignore::DockerIgnore;
use crate::engine::inputs::Inputs;
use crate::engine::{BuildError, LayerSummary};
use crate::image::Descriptor;
use crate::plan::{CopySource, Instruction, Mount, Step};

/// Steps whose result is a layer (or nothing) and worth caching; the rest only edit the config.
pub(crate) fn produces_layer(step: &Step) -> bool {
    matches!(
        step.instruction,
        Instruction::Run(_) | Instruction::Copy(_) | Instruction::Workdir(_)
    )
}

/// Everything a step's result depends on besides its parent.
#[derive(Serialize)]
struct KeyInputs<'a> {
    instruction: &'a Instruction,
    workdir: &'a str,
    user: &'a str,
    shell: &'a [String],
    /// RUN only: the environment it sees (build args included; values are inputs, not output).
    run_env: Option<&'a [(String, String)]>,
    /// RUN only: the network steps without `--network` get.
    network: Option<String>,
    /// COPY/ADD sources and RUN bind mounts: content checksums or the source stage's key.
    sources: Vec<String>,
    compression: String,
    level: Option<i32>,
    source_date_epoch: Option<i64>,
    /// RUN only, when given: `--add-host`, `--shm-size`, `--ulimit` (BuildKit keeps them in the
    /// exec op's meta, so they are part of its cache key). Absent, keys stay as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_options: Option<serde_json::Value>,
}

fn key_err(e: cache::CacheError) -> BuildError {
    BuildError::Cache(Box::new(e))
}

/// What a `--from` (COPY or RUN --mount) names, as a cache input; `stage_key` is the key a
/// finished stage ended with.
fn source_input(
    inputs: &Inputs<'_>,
    stage_key: &dyn Fn(usize) -> Option<CacheKey>,
    from: &CopySource,
) -> Result<String, BuildError> {
    Ok(match from {
        CopySource::Stage(i) => match stage_key(*i) {
            Some(k) => format!("stage {}", k.0),
            None => format!("stage {i} (unbuilt)"),
        },
        CopySource::Image(r) => {
            format!("image {}", inputs.bases.resolve(r)?.manifest_desc.digest)
        }
        // The whole directory (less its .dockerignore), as BuildKit's local source is one input.
        CopySource::Context(key) => {
            let root = crate::engine::named::local(inputs.named, key)?;
            match cache::sources_checksum(root, &[".".to_string()], &|_| false) {
                Ok(d) => format!("named context {key} {d}"),
                Err(e) => return Err(key_err(e)),
            }
        }
    })
}

fn context_checksum(
    inputs: &Inputs<'_>,
    step: &Step,
    patterns: &[String],
    excludes: &[String],
) -> Result<String, BuildError> {
    let ex = if excludes.is_empty() {
        None
    } else {
        DockerIgnore::parse(&excludes.join("\n")).ok()
    };
    let excluded = |p: &std::path::Path| match (&ex, p.to_str()) {
        (Some(ex), Some(s)) => ex.is_excluded(s),
        _ => false,
    };
    match cache::sources_checksum(inputs.context, patterns, &excluded) {
        Ok(d) => Ok(format!("context {d}")),
        // A missing or ignored source is the user's error, told like the copy would tell it.
        Err(cache::CacheError::Source(e)) => Err(inputs.step_err(step, e.to_string(), None)),
        Err(e) => Err(key_err(e)),
    }
}

/// The cache-key input of an ADD source URL: the URL and the digest of what it serves.
fn url_input(
    inputs: &Inputs<'_>,
    step: &Step,
    url: &str,
    checksum: Option<&str>,
) -> Result<String, BuildError> {
    let d = crate::engine::copy::step::download(inputs, step, url, checksum)?;
    Ok(format!("url {url} {}", d.digest))
}

/// The key of `step` after `parent`; `stage_key` gives a finished stage's key (`--from`).
pub(crate) fn step_key(
    inputs: &Inputs<'_>,
    stage_key: &dyn Fn(usize) -> Option<CacheKey>,
    step: &Step,
    parent: &CacheKey,
) -> Result<CacheKey, BuildError> {
    let mut sources = Vec::new();
    let mut run_env = None;
    let mut network = None;
    match &step.instruction {
        Instruction::Copy(c) => {
            if let Some(from) = c.from() {
                sources.push(source_input(inputs, stage_key, from)?);
            }
            for u in c.urls() {
                let checksum = match &c.kind {
                    crate::plan::CopyKind::Add { checksum, .. } => checksum.as_deref(),
                    crate::plan::CopyKind::Copy { .. } => None,
                };
                sources.push(url_input(inputs, step, u, checksum)?);
            }
            let local = c.local_sources();
            if c.from().is_none() && !local.is_empty() {
                sources.push(context_checksum(inputs, step, &local, &c.excludes)?)
            }
        }
        Instruction::Run(r) => {
            run_env = Some(step.run_env.as_slice());
            network = Some(inputs.req.sandbox.network_name().to_string());
            for m in &r.mounts {
                if let Mount::Bind { from, source, .. } = m {
                    sources.push(match from {
                        Some(f) => source_input(inputs, stage_key, f)?,
                        None => {
                            let p = source.clone().unwrap_or_else(|| ".".into());
                            context_checksum(inputs, step, &[p], &[])?
                        }
                    });
                }
            }
        }
        _ => {}
    }
    let key_inputs = KeyInputs {
        instruction: &step.instruction,
        workdir: &step.workdir,
        user: &step.user,
        shell: &step.shell,
        run_env,
        network,
        sources,
        compression: inputs.req.compression.to_string(),
        level: inputs.req.compression_level,
        source_date_epoch: inputs.sde,
        run_options: run_env.and(run_options(&inputs.req.sandbox)),
    };
    CacheKey::chain(parent, &key_inputs).map_err(key_err)
}

/// The sandbox options a RUN's result can depend on, when any is given.
fn run_options(o: &crate::engine::SandboxOptions) -> Option<serde_json::Value> {
    if o.extra_hosts.is_empty() && o.shm_size.is_none() && o.ulimits.is_empty() {
        return None;
    }
    Some(serde_json::json!({
        "extra_hosts": o.extra_hosts,
        "shm_size": o.shm_size,
        "ulimits": o.ulimits,
    }))
}

/// A recorded result, when caching is on: the local record if its layer is still in the
/// store, else the first `--cache-from` source's (its layer fetched only when needed).
pub(crate) fn cached(
    inputs: &Inputs<'_>,
    stage: &crate::plan::Stage,
    key: &CacheKey,
) -> Result<Option<Record>, BuildError> {
    if skips_cache(inputs, stage) {
        return Ok(None);
    }
    match cache::lookup(inputs.store, key).map_err(key_err)? {
        Some(r) => Ok(Some(r)),
        None => Ok(inputs.remote.lookup(inputs.store, key)),
    }
}

/// `--no-cache`, or `--no-cache-filter` naming the stage: BuildKit's `IsNoCache(stageName)`,
/// where an unnamed stage is `stage-N` and names compare case-insensitively.
pub(crate) fn skips_cache(inputs: &Inputs<'_>, stage: &crate::plan::Stage) -> bool {
    if inputs.req.no_cache {
        return true;
    }
    let filter = &inputs.req.no_cache_filter;
    if filter.is_empty() {
        return false;
    }
    let name = stage
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", stage.index));
    filter.iter().any(|f| f.eq_ignore_ascii_case(&name))
}

/// Remember what a step produced: `newest`, the stage's newest layer, when the step made one.
/// None for a `--no-cache-filter` stage: its result is neither recorded nor exported (`--cache-to`),
/// as its key would then name two results.
pub(crate) fn remember(
    inputs: &Inputs<'_>,
    stage: &crate::plan::Stage,
    key: &CacheKey,
    newest: Option<&Descriptor>,
    made: &Option<LayerSummary>,
) -> Result<Option<Record>, BuildError> {
    let layer = match (made, newest) {
        (Some(s), Some(desc)) => Some(CachedLayer {
            descriptor: desc.clone(),
            diff_id: s.diff_id.clone(),
            uncompressed_size: s.uncompressed_size,
        }),
        _ => None,
    };
    // The layer's time travels with it (history.rs): a replay writes the same entry.
    let created = layer.as_ref().map(|_| inputs.created.clone());
    let record = Record { layer, created };
    // A later build's steps keyed on this stage (`COPY --from`) would mix the two results.
    if filtered(inputs, stage) {
        return Ok(None);
    }
    cache::save(inputs.store, key, &record).map_err(key_err)?;
    Ok(Some(record))
}

/// Whether `stage` skips the cache because `--no-cache-filter` names it (not `--no-cache`).
fn filtered(inputs: &Inputs<'_>, stage: &crate::plan::Stage) -> bool {
    !inputs.req.no_cache && skips_cache(inputs, stage)
}

/// The key a finished stage hands its dependents. A `--no-cache-filter` stage ran afresh, so its
/// key is extended with the layers it made: steps that read it run again when its content
/// changed, as BuildKit's content-based keys of file-op inputs would have them.
pub(crate) fn finished_key(
    inputs: &Inputs<'_>,
    stage: &crate::plan::Stage,
    key: CacheKey,
    layers: &[Descriptor],
) -> Result<CacheKey, BuildError> {
    if !filtered(inputs, stage) {
        return Ok(key);
    }
    let digests: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    CacheKey::chain(&key, &digests).map_err(key_err)
}

/// The key a stage starts from when it is built FROM scratch or an image.
pub(crate) fn root_key(base: &str) -> CacheKey {
    CacheKey::root(base)
}
