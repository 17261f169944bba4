//! COPY and ADD as steps: the instruction's flags become a [`CopySpec`] (owner, `--chmod`,
//! excludes, destination under WORKDIR, the source stage's or image's tree), then the layer is made
//! straight from the sources (`copy_plan.rs`) or, for ADD's archives and WORKDIR, from a staged
//! tree moved into the rootfs afterwards (`merge.rs`). BuildKit's `dispatchCopy`.
//!
//! Must not: decide Docker's copy rules (`copy.rs` does) or write a layer another way than
//! `commit_changes`.

use std::path::Path;

use super::fsutil;
use super::rules::CopySpec;
use crate::context::ignore::DockerIgnore;
use crate::context::SourceRoot;
use crate::engine::stage::{Engine, StageState};
use crate::engine::{BuildError, LayerSummary};
use crate::layer::ChangeSet;
use crate::plan::{self, Instruction, Step};
use crate::sync::lock;

/// COPY and ADD seen through one shape (ADD has no `--from`/`--parents`; COPY never unpacks).
pub(crate) struct CopyArgs<'a> {
    pub from: Option<&'a plan::CopySource>,
    pub sources: &'a [String],
    pub heredocs: &'a [plan::Heredoc],
    pub dest: &'a str,
    pub chown: Option<&'a str>,
    pub chmod: Option<&'a crate::plan::Chmod>,
    pub parents: bool,
    pub excludes: &'a [String],
    pub unpack: bool,
    /// ADD only: `--checksum`, and whether downloaded URLs are unpacked (`--unpack=true`).
    pub checksum: Option<&'a str>,
    pub unpack_urls: bool,
}

impl Engine<'_> {
    pub(crate) fn copy(
        &self,
        step: &Step,
        st: &mut StageState,
        copy: &CopyArgs<'_>,
        created: &str,
    ) -> Result<Option<LayerSummary>, BuildError> {
        let instruction = if matches!(step.instruction, Instruction::Add(_)) {
            "ADD"
        } else {
            "COPY"
        };
        let (urls, local): (Vec<String>, Vec<String>) = copy
            .sources
            .iter()
            .cloned()
            .partition(|s| instruction == "ADD" && super::url::is_url(s));
        if let Some(src) = local.iter().find(|s| is_remote(s)) {
            return Err(self.step_err(
                step,
                format!("{instruction} from a URL or git repository ({src}) is not supported here (ADD downloads http(s) URLs; COPY takes none)"),
                None,
            ));
        }
        let mut downloads = Vec::new();
        for u in &urls {
            downloads.push(self.download(step, u, copy.checksum)?.path);
        }
        let owner = match copy.chown {
            Some(spec) => fsutil::resolve_chown(&self.image_root(st)?, spec)
                .map_err(|e| self.step_err(step, format!("--chown={spec}"), Some(Box::new(e))))?,
            None => (0, 0),
        };
        let excludes = if copy.excludes.is_empty() {
            None
        } else {
            Some(
                DockerIgnore::parse(&copy.excludes.join("\n"))
                    .map_err(|e| self.step_err(step, "--exclude", Some(Box::new(e))))?,
            )
        };
        let dest = if copy.dest.starts_with('/') {
            copy.dest.to_string()
        } else {
            let base = if step.workdir.is_empty() {
                "/"
            } else {
                &step.workdir
            };
            format!("{}/{}", base.trim_end_matches('/'), copy.dest)
        };
        let spec = CopySpec {
            instruction,
            sources: &local,
            downloads,
            unpack_downloads: copy.unpack_urls,
            heredocs: copy
                .heredocs
                .iter()
                .map(|h| (h.name.clone(), h.content.clone()))
                .collect(),
            dest,
            owner,
            keep_source_owners: copy.from.is_some() && copy.chown.is_none(),
            explicit_owner: copy.chown.is_some(),
            chmod: copy.chmod.cloned(),
            excludes,
            parents: copy.parents,
            unpack_archives: copy.unpack,
            created_mtime: self.inputs.sde.unwrap_or(0),
        };
        let from_root = self.copy_source_root(step, copy.from)?;
        self.commit_staged(step, st, &spec, from_root.as_deref(), created)
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
        })
    }

    /// Make the step's layer. A COPY is written straight from its sources into the layer
    /// (`copy_plan.rs`) and the rootfs catches up only if a later step reads it; ADD's archives
    /// and WORKDIR are staged, and the staged tree is then moved into the rootfs (`merge.rs`).
    pub(crate) fn commit_staged(
        &self,
        step: &Step,
        st: &mut StageState,
        spec: &CopySpec<'_>,
        from_root: Option<&Path>,
        created: &str,
    ) -> Result<Option<LayerSummary>, BuildError> {
        let rootfs_source;
        let from = match from_root {
            Some(dir) => {
                rootfs_source = SourceRoot::rootfs(dir);
                &rootfs_source
            }
            None => self.inputs.context,
        };
        let image = self.image_root(st)?;
        let resolved = if spec.instruction == "WORKDIR" {
            None
        } else {
            Some(
                super::rules::resolve(spec, from, &image)
                    .map_err(|e| self.step_err(step, e.to_string(), None))?,
            )
        };
        if let Some(resolved) = resolved.as_ref().filter(|r| r.is_direct()) {
            let mut planner = super::planner::Planner::new(spec, &image);
            super::rules::copy_into(spec, from, resolved, &mut planner)
                .map_err(|e| self.step_err(step, e.to_string(), None))?;
            let changes = planner.into_changes();
            return self.commit_changes(step, st, changes, created).map(Some);
        }
        let staging = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(self.inputs.workspace)
            .map_err(|source| BuildError::Workspace {
                path: self.inputs.workspace.to_path_buf(),
                source,
            })?;
        let staged = match &resolved {
            Some(resolved) => {
                super::rules::stage_copy(spec, resolved, from, &image, staging.path())
                    .map_err(|e| self.step_err(step, e.to_string(), None))?
            }
            None => {
                // WORKDIR: only the directory itself.
                let dest = spec.dest.trim_matches('/').to_string();
                super::rules::stage_dir_only(spec, &image, staging.path(), &dest)
                    .map_err(|e| self.step_err(step, "creating the directory", Some(Box::new(e))))?
            }
        };
        let mut changes = ChangeSet::from_dir(staging.path())
            .map_err(|e| self.step_err(step, "reading the staged files", Some(Box::new(e))))?;
        if !staged.owners_applied {
            changes = changes.with_owner(spec.owner.0, spec.owner.1);
        }
        let summary = self.commit_changes(step, st, changes, created)?;
        if staged.owners_applied {
            // The staged tree is the layer's files as they are: it becomes the next snapshot, so
            // they are written once. A directory over one of the image's merges with it, as the
            // layer's entry does.
            self.adopt_snapshot(st, &summary.diff_id, staging.path());
        }
        Ok(Some(summary))
    }
}

fn is_remote(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://") || src.starts_with("git@")
}
