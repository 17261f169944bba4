//! The build's side of the step cache: which inputs make a step's key, and how a hit is replayed
//! (the recorded layer added to the image, the step not run; its snapshot is committed later only
//! if a later step has to read or change the filesystem, and only once for every build).

use serde::Serialize;

use crate::cache::{self, CacheKey, CachedLayer, Record};
use crate::context::ignore::DockerIgnore;
use crate::engine::stage::{Engine, StageState};
use crate::engine::{BuildError, LayerSummary};
use crate::plan::{CopySource, Instruction, Mount, Step};

/// Steps whose result is a layer (or nothing) and worth caching; the rest only edit the config.
pub fn produces_layer(step: &Step) -> bool {
    matches!(
        step.instruction,
        Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_) | Instruction::Workdir(_)
    )
}

/// Everything a step's result depends on besides its parent.
#[derive(Serialize)]
struct Inputs<'a> {
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
}

fn key_err(e: cache::CacheError) -> BuildError {
    BuildError::Cache(Box::new(e))
}

impl Engine<'_> {
    /// What a `--from` (COPY or RUN --mount) names, as a cache input.
    fn source_input(&self, from: &CopySource) -> Result<String, BuildError> {
        Ok(match from {
            CopySource::Stage(i) => match self.progress.finished(*i) {
                Some(f) => format!("stage {}", f.key.0),
                None => format!("stage {i} (unbuilt)"),
            },
            CopySource::Image(r) => {
                format!(
                    "image {}",
                    self.inputs.bases.resolve(r)?.manifest_desc.digest
                )
            }
        })
    }

    fn context_checksum(
        &self,
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
        match cache::sources_checksum(self.inputs.context, patterns, &excluded) {
            Ok(d) => Ok(format!("context {d}")),
            // A missing or ignored source is the user's error, told like the copy would tell it.
            Err(cache::CacheError::Source(e)) => Err(self.step_err(step, e.to_string(), None)),
            Err(e) => Err(key_err(e)),
        }
    }

    /// The key of `step` after `parent`.
    pub fn step_key(&self, step: &Step, parent: &CacheKey) -> Result<CacheKey, BuildError> {
        let mut sources = Vec::new();
        let mut run_env = None;
        let mut network = None;
        match &step.instruction {
            Instruction::Copy(c) => match &c.from {
                Some(from) => sources.push(self.source_input(from)?),
                None if !c.sources.is_empty() => {
                    sources.push(self.context_checksum(step, &c.sources, &c.excludes)?)
                }
                None => {}
            },
            Instruction::Add(a) if !a.sources.is_empty() => {
                let (urls, local): (Vec<String>, Vec<String>) = a
                    .sources
                    .iter()
                    .cloned()
                    .partition(|s| crate::engine::copy::url::is_url(s));
                for u in &urls {
                    sources.push(self.url_input(step, u, a.checksum.as_deref())?);
                }
                if !local.is_empty() {
                    sources.push(self.context_checksum(step, &local, &a.excludes)?)
                }
            }
            Instruction::Run(r) => {
                run_env = Some(step.run_env.as_slice());
                network = Some(self.inputs.req.sandbox.network_name().to_string());
                for m in &r.mounts {
                    if let Mount::Bind { from, source, .. } = m {
                        sources.push(match from {
                            Some(f) => self.source_input(f)?,
                            None => {
                                let p = source.clone().unwrap_or_else(|| ".".into());
                                self.context_checksum(step, &[p], &[])?
                            }
                        });
                    }
                }
            }
            _ => {}
        }
        let inputs = Inputs {
            instruction: &step.instruction,
            workdir: &step.workdir,
            user: &step.user,
            shell: &step.shell,
            run_env,
            network,
            sources,
            compression: self.inputs.req.compression.to_string(),
            level: self.inputs.req.compression_level,
            source_date_epoch: self.inputs.sde,
        };
        CacheKey::chain(parent, &inputs).map_err(key_err)
    }

    /// A recorded result, when caching is on: the local record if its layer is still in the
    /// store, else the first `--cache-from` source's (its layer fetched only when needed).
    pub fn cached(&self, key: &CacheKey) -> Result<Option<Record>, BuildError> {
        if self.inputs.req.no_cache {
            return Ok(None);
        }
        match cache::lookup(self.inputs.store, key).map_err(key_err)? {
            Some(r) => Ok(Some(r)),
            None => Ok(self.inputs.remote.lookup(self.inputs.store, key)),
        }
    }

    /// Remember what a step produced: the stage's newest layer when the step made one.
    pub fn remember(
        &self,
        key: &CacheKey,
        st: &StageState,
        made: &Option<LayerSummary>,
    ) -> Result<Record, BuildError> {
        let layer = match (made, st.layers.last()) {
            (Some(s), Some(desc)) => Some(CachedLayer {
                descriptor: desc.clone(),
                diff_id: s.diff_id.clone(),
                uncompressed_size: s.uncompressed_size,
            }),
            _ => None,
        };
        // The layer's time travels with it (history.rs): a replay writes the same entry.
        let created = layer.as_ref().map(|_| self.inputs.created.clone());
        let record = Record { layer, created };
        cache::save(self.inputs.store, key, &record).map_err(key_err)?;
        Ok(record)
    }

    /// Replay a cached step: its layer joins the image; config effects still apply.
    pub fn replay(
        &self,
        step: &Step,
        st: &mut StageState,
        record: Record,
    ) -> Result<Option<LayerSummary>, BuildError> {
        if let Instruction::Workdir(dir) = &step.instruction {
            st.config.config.working_dir = Some(dir.clone());
        }
        let history = Self::history_text(step);
        let created = self.replayed_created(&record).to_string();
        match record.layer {
            None => {
                st.config.push_empty(&history, self.empty_created());
                Ok(None)
            }
            Some(l) => {
                // Not unpacked here: the stage's rootfs catches up only if a later step needs it.
                st.layers.push(l.descriptor.clone());
                st.config
                    .push_layer(l.diff_id.clone(), &history, Some(&created));
                Ok(Some(LayerSummary {
                    digest: l.descriptor.digest,
                    diff_id: l.diff_id,
                    size: l.descriptor.size,
                    uncompressed_size: l.uncompressed_size,
                }))
            }
        }
    }
}

/// The key a stage starts from when it is built FROM scratch or an image.
pub fn root_key(base: &str) -> CacheKey {
    CacheKey::root(base)
}
