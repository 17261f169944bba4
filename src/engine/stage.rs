//! The stage loop: FROM (scratch, an earlier stage, or an image), then each step in order — its
//! cache key, a hit replayed or the step run (`step/`, `copy/`) — and what it made committed.
//! RUN, COPY/ADD and WORKDIR produce layers; every other instruction only changes the config and
//! history. The engine's types live here: [`Engine`] (the build's [`Inputs`] and shared progress)
//! and [`StageState`].
//!
//! Must not: be bypassed — only this file commits layers, commits a stage's snapshots and changes
//! a stage's state; steps get `&Inputs` and what they read, and return what they made.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::base::is_root;
use super::copy::rules::CopySpec;
use super::copy::step::{self as copy_step, Made};
use super::inputs::Inputs;
use super::step::metadata::{apply_metadata, MetaState};
use super::step::{cached, history};
use super::{BuildError, Event, LayerSummary};
use crate::cache::{CacheKey, Record};
use crate::context::{SourceRoot, View};
use crate::exec::{self, Probe, SandboxConfig};
use crate::image::{Descriptor, ImageConfig};
use crate::layer::{self, ApplyOptions, ChangeSet, LayerOptions};
use crate::plan::{self, Base, Instruction, Step};
use crate::snapshot;
use crate::store::Committed;
use crate::sync::lock;

/// Where a stage starts (`FROM`): the config and layers it inherits, its name for the log, the
/// cache key its steps chain from.
struct StageBase {
    config: ImageConfig,
    layers: Vec<Descriptor>,
    name: String,
    key: CacheKey,
}

/// A built (or being built) stage: its image config, its layers, and its filesystem — the
/// committed snapshots of its first layers (`store::snapshots`, shared with every other stage and
/// build on the same chain). They are brought up to date only when a step needs to read or change
/// the filesystem, so a rebuild whose steps all come from the cache touches none.
#[derive(Clone)]
pub(super) struct StageState {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// Committed snapshots of `layers[..snapshots.len()]`, bottom first.
    pub snapshots: Vec<Committed>,
    /// A plain hard-linked tree of the finished stage, made once when `COPY --from` or
    /// `RUN --mount from=` reads it (`snapshot::flatten`).
    pub flat: Option<PathBuf>,
    /// The stage's index in the plan.
    pub index: usize,
}

/// A stage that has finished: the cache key it ended with (for FROM stage and COPY --from) and
/// its state, locked because dependents running in parallel may bring its rootfs up to date.
pub(super) struct Finished {
    pub key: CacheKey,
    pub state: Mutex<StageState>,
}

/// What a build accumulates as it runs, shared by the stages running in parallel: finished
/// stages, the sandbox once probed, whether it was announced.
#[derive(Default)]
pub(super) struct Progress {
    pub sandbox: Mutex<Option<(SandboxConfig, Probe)>>,
    pub finished: Mutex<BTreeMap<usize, Arc<Finished>>>,
    pub sandbox_announced: AtomicBool,
    /// Held while an image named by `COPY --from=IMAGE` is unpacked, so two stages unpack it once.
    pub image_unpack: Mutex<()>,
    /// Every layer step's key and result, by stage (what `--cache-to` exports).
    pub records: Mutex<Vec<super::publish::cache_export::StepRecord>>,
}

impl Progress {
    pub(super) fn finished(&self, index: usize) -> Option<Arc<Finished>> {
        lock(&self.finished).get(&index).cloned()
    }
}

/// One build on the embedded engine: borrowed inputs, shared progress. Stages run on their own
/// threads through `&Engine`.
pub(super) struct Engine<'a> {
    pub inputs: Inputs<'a>,
    pub progress: Progress,
    /// The number of the first step of each stage, so step numbers do not depend on which of
    /// two parallel stages started first.
    pub first_step: BTreeMap<usize, usize>,
    pub total_steps: usize,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Engine<'_> {
    pub(super) fn step_err(
        &self,
        step: &Step,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> BuildError {
        self.inputs.step_err(step, message, source)
    }

    fn stage_label(&self, index: usize) -> String {
        let s = &self.inputs.plan.stages[index];
        match &s.name {
            Some(n) => n.clone(),
            None => format!("stage-{index}"),
        }
    }

    pub(super) fn build_stage(
        &self,
        index: usize,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(), BuildError> {
        let total = self.total_steps;
        let stage = &self.inputs.plan.stages[index];
        let label = self.stage_label(index);
        let StageBase {
            mut config,
            layers,
            name: base_name,
            mut key,
        } = self.stage_base(stage)?;
        super::step::stage_defaults::init_stage_config(&mut config);
        on_event(&Event::StageStarted {
            stage: label.clone(),
            base: base_name,
        });
        let mut state = StageState {
            config,
            layers,
            snapshots: Vec::new(),
            flat: None,
            index,
        };
        let offer = |st: &StageState| {
            if let Some(p) = self.inputs.early_push {
                p.offer(index, &st.layers);
            }
        };
        offer(&state);
        let mut meta = MetaState::default();
        let first = self.first_step.get(&index).copied().unwrap_or(1);
        for (offset, step) in stage.steps.iter().enumerate() {
            if self.inputs.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            let n = first + offset;
            let started = Instant::now();
            on_event(&Event::StepStarted {
                step: n,
                total,
                stage: label.clone(),
                line: step.span.line,
                instruction: step.source.clone(),
            });
            // Only steps that make layers extend the key chain: what metadata steps change that a
            // later layer depends on (env, user, workdir, shell) is an input of that later step.
            let mut cached = false;
            let layer = if !super::step::cached::produces_layer(step) {
                self.step(step, &mut state, &mut meta, n, on_event)?
            } else {
                let stage_key = |i: usize| self.progress.finished(i).map(|f| f.key.clone());
                key = cached::step_key(&self.inputs, &stage_key, step, &key)?;
                let mut hit = cached::cached(&self.inputs, stage, &key)?;
                // Identical steps of concurrent builds run once (flight.rs); the lead is held
                // until the record is saved, then the others find it in the cache.
                let mut _lead = None;
                if hit.is_none() && !cached::skips_cache(&self.inputs, stage) {
                    match super::step::flight::join(&key) {
                        super::step::flight::Turn::Lead(l) => _lead = Some(l),
                        super::step::flight::Turn::Followed => {
                            hit = cached::cached(&self.inputs, stage, &key)?
                        }
                    }
                }
                match hit {
                    Some(record) => {
                        cached = true;
                        lock(&self.progress.records).push((index, key.clone(), record.clone()));
                        self.replay(step, &mut state, record)?
                    }
                    None => {
                        if let Some(line) = self.materialize(&mut state)? {
                            on_event(&Event::Log { step: n, line });
                        }
                        self.materialize_sources(step)?;
                        let made = self.step(step, &mut state, &mut meta, n, on_event)?;
                        let last = state.layers.last();
                        let record = cached::remember(&self.inputs, stage, &key, last, &made)?;
                        lock(&self.progress.records)
                            .extend(record.map(|r| (index, key.clone(), r)));
                        made
                    }
                }
            };
            on_event(&Event::StepFinished {
                step: n,
                duration_ms: started.elapsed().as_millis() as u64,
                layer,
                cached,
            });
            offer(&state);
        }
        lock(&self.progress.finished).insert(
            index,
            Arc::new(Finished {
                key: cached::finished_key(&self.inputs, stage, key, &state.layers)?,
                state: Mutex::new(state),
            }),
        );
        Ok(())
    }

    /// Where a stage starts: `scratch`, a finished stage, or a base image (resolved, pulled if
    /// missing).
    fn stage_base(&self, stage: &plan::Stage) -> Result<StageBase, BuildError> {
        Ok(match &stage.base {
            Base::Scratch => StageBase {
                config: ImageConfig::new(&super::base::image_platform(&stage.platform)),
                layers: Vec::new(),
                name: "scratch".to_string(),
                // The platform is part of every key: a base image's root is its platform's
                // manifest digest, scratch's names the platform.
                key: super::step::cached::root_key(&format!("scratch {}", stage.platform)),
            },
            Base::Stage(parent) => {
                let p = self
                    .progress
                    .finished(*parent)
                    .ok_or_else(|| BuildError::Base {
                        reference: self.stage_label(*parent),
                        message: "stage was not built before its dependent".into(),
                        source: None,
                    })?;
                let st = lock(&p.state);
                StageBase {
                    config: st.config.clone(),
                    layers: st.layers.clone(),
                    name: self.stage_label(*parent),
                    key: p.key.clone(),
                }
            }
            Base::Image(reference) => {
                let img = self.inputs.bases.resolve_for(reference, &stage.platform)?;
                StageBase {
                    config: img.config.clone(),
                    layers: img.manifest.layers.clone(),
                    name: reference.clone(),
                    key: super::step::cached::root_key(&img.manifest_desc.digest.to_string()),
                }
            }
        })
    }

    /// Bring a stage's filesystem up to date with its layers: the committed snapshot of each
    /// layer, made from its blob where there is none yet (a pulled base's were made while it
    /// downloaded, `prepare.rs`; a RUN's when it committed).
    /// Returns what it did for the log: "N layer(s) from committed snapshots, M unpacked".
    pub(super) fn materialize(&self, st: &mut StageState) -> Result<Option<String>, BuildError> {
        let diff_ids = st.config.rootfs.diff_ids.clone();
        if st.snapshots.len() < st.layers.len() {
            self.inputs
                .bases
                .wait_prepared(&st.layers[st.snapshots.len()..]);
        }
        let more = self.snapshots_of(&st.layers, &diff_ids, &st.snapshots)?;
        let made = more.iter().filter(|c| c.made).count();
        let line = (!more.is_empty()).then(|| {
            format!(
                "filesystem: {} layer(s) from committed snapshots, {made} unpacked",
                more.len() - made
            )
        });
        st.snapshots.extend(more);
        Ok(line)
    }

    /// The committed snapshots of `layers[have.len()..]` on top of `have`.
    pub(super) fn snapshots_of(
        &self,
        layers: &[Descriptor],
        diff_ids: &[crate::digest::Digest],
        have: &[Committed],
    ) -> Result<Vec<Committed>, BuildError> {
        let mut parent = have.last().map(|c| c.chain.clone());
        let mut out = Vec::new();
        for (i, l) in layers.iter().enumerate().skip(have.len()) {
            let err = |message: String, source| BuildError::Base {
                reference: l.digest.to_string(),
                message,
                source,
            };
            let Some(diff_id) = diff_ids.get(i) else {
                return Err(err(
                    format!("the image config lists no diff_id for layer {i}"),
                    None,
                ));
            };
            let c = self
                .inputs
                .store
                .commit_snapshot(parent.as_ref(), diff_id, Some(&l.digest), |dir| {
                    let got = self.apply_blob(&l.digest, dir, true)?;
                    self.inputs.remote.check_diff_id(&l.digest, &got)?;
                    if &got != diff_id {
                        return Err(format!(
                            "layer {} unpacks to {got}, the image config says {diff_id}",
                            l.digest
                        )
                        .into());
                    }
                    Ok(())
                })
                .map_err(|e| err(format!("unpacking layer {}", l.digest), Some(Box::new(e))))?;
            parent = Some(c.chain.clone());
            out.push(c);
        }
        Ok(out)
    }

    /// The stage's filesystem for reading (COPY's destination, `--chown` names, WORKDIR), once
    /// `materialize` brought it up to date. A stage without layers reads an empty directory.
    pub(super) fn image_root(&self, st: &StageState) -> Result<SourceRoot, BuildError> {
        if st.snapshots.is_empty() {
            let empty = self.inputs.workspace.join("empty");
            fs::create_dir_all(&empty).map_err(|source| BuildError::Workspace {
                path: empty.clone(),
                source,
            })?;
            return Ok(SourceRoot::rootfs(&empty));
        }
        let top_first = st.snapshots.iter().rev().map(|c| c.dir.clone()).collect();
        Ok(SourceRoot::layered(View::new(top_first)))
    }

    /// A finished stage as one plain directory (`COPY --from`, `RUN --mount from=`), made once.
    pub(super) fn flat_of(&self, st: &mut StageState) -> Result<PathBuf, BuildError> {
        if let Some(p) = &st.flat {
            return Ok(p.clone());
        }
        self.materialize(st)?;
        let dir = self.inputs.workspace.join(format!("stage-{}", st.index));
        let top_first = st.snapshots.iter().rev().map(|c| c.dir.clone()).collect();
        snapshot::flatten(&View::new(top_first), &dir, true).map_err(|e| BuildError::Base {
            reference: self.stage_label(st.index),
            message: "reading the stage's filesystem".into(),
            source: Some(Box::new(e)),
        })?;
        st.flat = Some(dir.clone());
        Ok(dir)
    }

    /// Bring up to date the stages a step reads (`COPY --from`, `RUN --mount from=`).
    fn materialize_sources(&self, step: &Step) -> Result<(), BuildError> {
        let mut wanted = Vec::new();
        match &step.instruction {
            Instruction::Copy(c) => {
                if let Some(plan::CopySource::Stage(i)) = c.from() {
                    wanted.push(*i);
                }
            }
            Instruction::Run(r) => {
                for m in &r.mounts {
                    if let plan::Mount::Bind {
                        from: Some(plan::CopySource::Stage(i)),
                        ..
                    }
                    | plan::Mount::Cache {
                        from: Some(plan::CopySource::Stage(i)),
                        ..
                    } = m
                    {
                        wanted.push(*i);
                    }
                }
            }
            _ => {}
        }
        for i in wanted {
            if let Some(f) = self.progress.finished(i) {
                self.flat_of(&mut lock(&f.state))?;
            }
        }
        Ok(())
    }

    /// Apply a stored layer onto `rootfs`, or into an empty snapshot directory in overlayfs'
    /// format (`snapshot`); returns its diff_id.
    pub(super) fn apply_blob(
        &self,
        digest: &crate::digest::Digest,
        rootfs: &Path,
        snapshot: bool,
    ) -> Result<crate::digest::Digest, BoxError> {
        // A layer replayed from a shared cache is fetched only now, when its files are needed.
        self.inputs.remote.ensure_local(self.inputs.store, digest)?;
        let blob = self.inputs.store.open_blob(digest)?;
        let opts = ApplyOptions {
            allow_devices: is_root(),
            preserve_owners: is_root(),
            overlay_opaque_xattr: snapshot.then(exec::overlay_opaque_xattr),
        };
        let stats = layer::apply_layer(std::io::BufReader::new(blob), rootfs, &opts)?;
        Ok(stats.diff_id)
    }

    /// The `created` of an entry without a layer (history.rs).
    fn empty_created(&self) -> Option<&str> {
        history::empty_created(self.inputs.sde, &self.inputs.created)
    }

    /// COPY or ADD: the step makes the layer's changes, then they are committed here.
    fn copy(
        &self,
        step: &Step,
        st: &mut StageState,
        copy: &plan::Copy,
        created: &str,
    ) -> Result<Option<LayerSummary>, BuildError> {
        let image = self.image_root(st)?;
        let made = copy_step::copy(&self.inputs, step, &image, copy, &mut |from| {
            self.copy_source_root(step, from)
        })?;
        self.commit_made(step, st, made, created)
    }

    /// Commit what a COPY, ADD or WORKDIR step made; its staged tree, when it holds the layer's
    /// files as they are, becomes the next snapshot.
    fn commit_made(
        &self,
        step: &Step,
        st: &mut StageState,
        made: Made,
        created: &str,
    ) -> Result<Option<LayerSummary>, BuildError> {
        let summary = self.commit_changes(step, st, made.changes, created)?;
        if let (Some(staging), true) = (&made.staging, made.adopt) {
            self.adopt_snapshot(st, &summary.diff_id, staging.path());
        }
        Ok(Some(summary))
    }

    /// The tree a `--from` copies out of: a finished stage's filesystem, or an image's, as one
    /// plain hard-linked directory over their committed snapshots (two stages copying from one
    /// image wait for one). None: the context.
    fn copy_source_root(
        &self,
        step: &Step,
        from: Option<&plan::CopySource>,
    ) -> Result<Option<std::path::PathBuf>, BuildError> {
        Ok(match from {
            None => None,
            Some(plan::CopySource::Stage(i)) => {
                let f = self
                    .progress
                    .finished(*i)
                    .ok_or_else(|| self.step_err(step, "source stage was not built", None))?;
                let dir = self.flat_of(&mut lock(&f.state))?;
                Some(dir)
            }
            Some(plan::CopySource::Image(reference)) => {
                let dir = self.inputs.workspace.join(format!(
                    "image-{}",
                    crate::digest::Digest::of(reference.as_bytes()).hex()
                ));
                let _unpacking = lock(&self.progress.image_unpack);
                if !dir.exists() {
                    let img = self.inputs.bases.resolve(reference)?;
                    let diff_ids = &img.config.rootfs.diff_ids;
                    let snaps = self.snapshots_of(&img.manifest.layers, diff_ids, &[])?;
                    let top_first = snaps.iter().rev().map(|c| c.dir.clone()).collect();
                    crate::snapshot::flatten(&crate::context::View::new(top_first), &dir, true)
                        .map_err(|e| BuildError::Base {
                            reference: reference.clone(),
                            message: "reading the image's filesystem".into(),
                            source: Some(Box::new(e)),
                        })?;
                }
                Some(dir)
            }
            // Not reached: `copy::step::copy` reads local contexts as source roots of their own.
            Some(plan::CopySource::Context(k)) => {
                Some(super::named::local_dir(self.inputs.named, k)?)
            }
        })
    }

    /// Replay a cached step: its layer joins the image; config effects still apply.
    pub(super) fn replay(
        &self,
        step: &Step,
        st: &mut StageState,
        record: Record,
    ) -> Result<Option<LayerSummary>, BuildError> {
        if let Instruction::Workdir(dir) = &step.instruction {
            st.config.config.working_dir = Some(dir.clone());
        }
        let history = Self::history_text(step);
        let created =
            history::replayed_created(self.inputs.sde, &self.inputs.created, &record).to_string();
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

    /// The history's `created_by` of a step that makes a layer (history.rs).
    pub(super) fn history_text(step: &Step) -> String {
        super::step::history::created_by(step).unwrap_or_default()
    }

    /// One step: config-only instructions go through `apply_metadata`; RUN, COPY/ADD and a
    /// WORKDIR that creates a directory make layers.
    fn step(
        &self,
        step: &Step,
        st: &mut StageState,
        meta: &mut MetaState,
        n: usize,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Option<LayerSummary>, BuildError> {
        let created = self.inputs.created.clone();
        match &step.instruction {
            Instruction::Workdir(dir) => {
                apply_metadata(&mut st.config, &step.instruction, meta);
                return self.workdir(step, st, dir, &created);
            }
            Instruction::Run(run) => return self.run(step, st, run, n, on_event, &created),
            Instruction::Copy(copy) => return self.copy(step, st, copy, &created),
            other => {
                apply_metadata(&mut st.config, other, meta);
            }
        }
        // ARG writes an entry too; ONBUILD none (BuildKit's dispatchArg, dispatchOnbuild).
        if let Some(text) = super::step::history::created_by(step) {
            st.config.push_empty(&text, self.empty_created());
        }
        Ok(None)
    }

    fn workdir(
        &self,
        step: &Step,
        st: &mut StageState,
        dir: &str,
        created: &str,
    ) -> Result<Option<LayerSummary>, BuildError> {
        let image = self.image_root(st)?;
        let exists = image
            .resolve_rel(Path::new(dir))
            .map(|p| image.lstat(&p).is_ok_and(|m| m.is_dir()))
            .unwrap_or(false);
        if exists {
            st.config
                .push_empty(&Self::history_text(step), self.empty_created());
            return Ok(None);
        }
        // BuildKit creates a missing WORKDIR as a layer of its own, owned by the current USER.
        let owner =
            super::step::stage_defaults::workdir_owner(&image, st.config.config.user.as_deref())
                .map_err(|e| self.step_err(step, "resolving USER", Some(Box::new(e))))?;
        let spec = CopySpec {
            instruction: "WORKDIR",
            sources: &[],
            downloads: Vec::new(),
            unpack_downloads: false,
            heredocs: Vec::new(),
            dest: format!("{}/", dir.trim_end_matches('/')),
            owner,
            keep_source_owners: false,
            explicit_owner: true,
            chmod: None,
            excludes: None,
            parents: false,
            unpack_archives: false,
            created_mtime: self.inputs.sde.unwrap_or(0),
        };
        let image = self.image_root(st)?;
        let made = copy_step::make_layer(&self.inputs, step, &image, &spec, None)?;
        self.commit_made(step, st, made, created)
    }

    /// The sandbox, probed at the first RUN (a build without RUN never needs one).
    fn sandbox(&self, step: &Step) -> Result<(SandboxConfig, Probe, exec::Rung), BuildError> {
        let mut sandbox = lock(&self.progress.sandbox);
        if sandbox.is_none() {
            let mut cfg = SandboxConfig::new(&self.inputs.store.root().join("exec"));
            cfg.rung = self.inputs.req.sandbox.rung;
            cfg.snapshotter = self.inputs.req.sandbox.snapshotter;
            cfg.ca_injection = self.inputs.req.sandbox.ca_injection.unwrap_or(true);
            if let Some(h) = &self.inputs.req.sandbox.helper {
                cfg.helper = h.clone();
            }
            let probe = exec::probe(&cfg);
            *sandbox = Some((cfg, probe));
        }
        let (cfg, probe) = sandbox.clone().expect("set above");
        drop(sandbox);
        let rung = probe.rung.ok_or_else(|| {
            self.step_err(
                step,
                "no sandbox can run RUN steps here",
                Some(Box::new(exec::ExecError::NoRung(probe.reasons.clone()))),
            )
        })?;
        Ok((cfg, probe, rung))
    }

    fn run(
        &self,
        step: &Step,
        st: &mut StageState,
        run: &plan::Run,
        n: usize,
        on_event: &mut dyn FnMut(&Event),
        created: &str,
    ) -> Result<Option<LayerSummary>, BuildError> {
        let (cfg, probe, rung) = self.sandbox(step)?;
        if !self.progress.sandbox_announced.swap(true, Ordering::SeqCst) {
            on_event(&Event::Sandbox {
                rung: rung.to_string(),
                snapshotter: probe.snapshotter.to_string(),
                warnings: probe.warnings.clone(),
                unavailable: probe
                    .reasons
                    .iter()
                    .map(|(r, why)| format!("{r}: {why}"))
                    .collect(),
            });
        }
        let scratch = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(self.inputs.workspace)
            .map_err(|source| BuildError::Workspace {
                path: self.inputs.workspace.to_path_buf(),
                source,
            })?;
        // The stages this step mounts were flattened by `materialize_sources`.
        let stage_roots: BTreeMap<usize, PathBuf> = lock(&self.progress.finished)
            .iter()
            .filter_map(|(i, f)| Some((*i, lock(&f.state).flat.clone()?)))
            .collect();
        let lowers: Vec<PathBuf> = st.snapshots.iter().rev().map(|c| c.dir.clone()).collect();
        let ctx = super::step::run::RunContext {
            sandbox: &cfg,
            probe: &probe,
            rung,
            lowers: &lowers,
            scratch: scratch.path(),
            context_dir: self.inputs.context.root(),
            stage_roots: &stage_roots,
            store: self.inputs.store,
            secrets: &self.inputs.req.secrets,
            named: self.inputs.named,
            ssh: self.inputs.ssh,
            cancel: self.inputs.cancel,
            emulator: super::step::run::emulator(&self.inputs, st.index),
            options: &self.inputs.req.sandbox,
        };
        if let Some(line) = super::step::run::emulation_line(&self.inputs, st.index) {
            on_event(&Event::Log { step: n, line });
        }
        let (changes, upper) = super::step::run::run_step(&ctx, step, run, &mut |line| {
            on_event(&Event::Log { step: n, line })
        })
        .map_err(|e| match e {
            super::step::run::RunError::Exec(exec::ExecError::Cancelled) => BuildError::Cancelled,
            e => self.step_err(step, "RUN failed", Some(Box::new(e))),
        })?;
        if changes.is_empty() {
            st.config
                .push_empty(&Self::history_text(step), self.empty_created());
            return Ok(None);
        }
        let summary = self.commit_changes(step, st, changes, created)?;
        if let Some(upper) = upper {
            // containerd's Commit: the upper directory the step wrote is the next snapshot.
            self.adopt_snapshot(st, &summary.diff_id, &upper);
        }
        Ok(Some(summary))
    }

    /// Make `dir` (a tree in overlayfs' format holding exactly the layer just committed) the
    /// stage's next committed snapshot, when every layer below has one. Best effort: on failure
    /// the snapshot is made from the layer's blob when a later step needs it.
    pub(super) fn adopt_snapshot(
        &self,
        st: &mut StageState,
        diff_id: &crate::digest::Digest,
        dir: &Path,
    ) {
        if st.snapshots.len() + 1 != st.layers.len() {
            return;
        }
        let parent = st.snapshots.last().map(|c| c.chain.clone());
        let taken = self.inputs.store.commit_snapshot(
            parent.as_ref(),
            diff_id,
            st.layers.last().map(|l| &l.digest),
            |into| {
                fs::remove_dir(into)?;
                fs::rename(dir, into)?;
                // The merged root's mode comes from the top-most snapshot (a temp dir is 0700).
                fs::set_permissions(into, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
                Ok(())
            },
        );
        if let Ok(c) = taken {
            st.snapshots.push(c);
        }
    }

    /// Write a change set as a layer, store it, apply it to the stage's rootfs, record history.
    pub(super) fn commit_changes(
        &self,
        step: &Step,
        st: &mut StageState,
        changes: ChangeSet,
        created: &str,
    ) -> Result<LayerSummary, BuildError> {
        let opts = LayerOptions {
            compression: self.inputs.req.compression,
            level: self.inputs.req.compression_level,
            threads: self.inputs.req.threads,
            source_date_epoch: self.inputs.sde,
        };
        let ingest = self.inputs.store.ingest()?;
        // With --push, the layer goes up while it is compressed (early_push.rs).
        let streaming = self
            .inputs
            .early_push
            .and_then(|p| p.stream(st.index, ingest.temp_path()));
        let (ingest, info) = layer::write_layer(&changes, &opts, ingest)
            .map_err(|e| self.step_err(step, "writing the layer", Some(Box::new(e))))?;
        let (digest, size) = ingest.commit(Some(&info.digest), Some(info.size))?;
        let desc = Descriptor::new(info.media_type.clone(), digest.clone(), size);
        if let Some(s) = streaming {
            s.committed(&desc);
        }
        // The rootfs catches up lazily (`materialize`), or at once by moving a staged tree in
        // (`commit_made`): a layer kiln has just written is never applied twice.
        st.layers.push(desc);
        st.config.push_layer(
            info.diff_id.clone(),
            &Self::history_text(step),
            Some(created),
        );
        Ok(LayerSummary {
            digest,
            diff_id: info.diff_id,
            size,
            uncompressed_size: info.uncompressed_size,
        })
    }
}
