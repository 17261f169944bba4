//! COPY and ADD as steps: the instruction's flags become a [`CopySpec`] (owner, `--chmod`,
//! excludes, destination under WORKDIR, the source stage's or image's tree), then the layer's
//! changes are made straight from the sources (`planner.rs`) or, for ADD's archives and WORKDIR,
//! from a staged tree that can become the stage's next snapshot. BuildKit's `dispatchCopy`.
//! A step reads the build's [`Inputs`] and the stage's filesystem it is handed, and returns
//! [`Made`]; the stage loop (`stage.rs`) commits it.
//!
//! Must not: decide Docker's copy rules (`rules.rs` does), commit a layer or change a stage.

use std::path::Path;

use super::fsutil;
use super::rules::CopySpec;
use super::url::{self, Downloaded};
use crate::context::ignore::DockerIgnore;
use crate::context::SourceRoot;
use crate::engine::inputs::Inputs;
use crate::engine::BuildError;
use crate::layer::ChangeSet;
use crate::plan::{self, CopyKind, Step};

/// Gives the tree a `--from` copies out of (None: the context); the stage loop owns it.
pub(crate) type SourceRootOf<'a> =
    dyn FnMut(Option<&plan::CopySource>) -> Result<Option<std::path::PathBuf>, BuildError> + 'a;

/// What a COPY, ADD or WORKDIR step made, for the stage loop to commit.
pub(crate) struct Made {
    pub changes: ChangeSet,
    /// The staged tree the changes read from; it lives until the layer is written.
    pub staging: Option<tempfile::TempDir>,
    /// The staged tree is the layer's files as they are (owners applied): it can become the
    /// stage's next snapshot, so they are written once.
    pub adopt: bool,
}

/// Download an ADD source URL for `step` into the build's workspace.
pub(crate) fn download(
    inputs: &Inputs<'_>,
    step: &Step,
    url: &str,
    checksum: Option<&str>,
) -> Result<Downloaded, BuildError> {
    url::fetch(&inputs.workspace.join("downloads"), url, checksum)
        .map_err(|e| inputs.step_err(step, e.to_string(), None))
}

/// COPY or ADD into the stage whose filesystem reads as `image`; `source_root` gives the tree a
/// `--from` copies out of (None: the context).
pub(crate) fn copy(
    inputs: &Inputs<'_>,
    step: &Step,
    image: &SourceRoot,
    copy: &plan::Copy,
    source_root: &mut SourceRootOf<'_>,
) -> Result<Made, BuildError> {
    let (checksum, unpack_archives, unpack_urls, parents) = match &copy.kind {
        CopyKind::Copy { parents, .. } => (None, false, false, *parents),
        CopyKind::Add {
            checksum, unpack, ..
        } => (
            checksum.as_deref(),
            unpack.unwrap_or(true),
            *unpack == Some(true),
            false,
        ),
    };
    let mut downloads = Vec::new();
    for u in copy.urls() {
        downloads.push(download(inputs, step, u, checksum)?.path);
    }
    let owner = match &copy.chown {
        Some(spec) => fsutil::resolve_chown(image, spec)
            .map_err(|e| inputs.step_err(step, format!("--chown={spec}"), Some(Box::new(e))))?,
        None => (0, 0),
    };
    let excludes = if copy.excludes.is_empty() {
        None
    } else {
        Some(
            DockerIgnore::parse(&copy.excludes.join("\n"))
                .map_err(|e| inputs.step_err(step, "--exclude", Some(Box::new(e))))?,
        )
    };
    let local = copy.local_sources();
    let spec = CopySpec {
        instruction: if copy.is_add() { "ADD" } else { "COPY" },
        sources: &local,
        downloads,
        unpack_downloads: unpack_urls,
        heredocs: copy
            .heredocs
            .iter()
            .map(|h| (h.name.clone(), h.content.clone()))
            .collect(),
        dest: copy.target.clone(),
        owner,
        // A local named context is a context: its owners are reset like the main one's.
        keep_source_owners: matches!(
            copy.from(),
            Some(plan::CopySource::Stage(_) | plan::CopySource::Image(_))
        ) && copy.chown.is_none(),
        explicit_owner: copy.chown.is_some(),
        chmod: copy.chmod.clone(),
        excludes,
        parents,
        unpack_archives,
        created_mtime: inputs.sde.unwrap_or(0),
    };
    if let Some(plan::CopySource::Context(key)) = copy.from() {
        let root = crate::engine::named::local(inputs.named, key)?;
        return make_layer_from(inputs, step, image, &spec, root);
    }
    let from_root = source_root(copy.from())?;
    make_layer(inputs, step, image, &spec, from_root.as_deref())
}

/// Make the step's layer changes. A COPY is written straight from its sources into the layer
/// (`planner.rs`) and the rootfs catches up only if a later step reads it; ADD's archives and
/// WORKDIR are staged, and the staged tree can become the next snapshot.
pub(crate) fn make_layer(
    inputs: &Inputs<'_>,
    step: &Step,
    image: &SourceRoot,
    spec: &CopySpec<'_>,
    from_root: Option<&Path>,
) -> Result<Made, BuildError> {
    let rootfs_source;
    let from = match from_root {
        Some(dir) => {
            rootfs_source = SourceRoot::rootfs(dir);
            &rootfs_source
        }
        None => inputs.context,
    };
    make_layer_from(inputs, step, image, spec, from)
}

/// [`make_layer`] reading the sources from `from`.
fn make_layer_from(
    inputs: &Inputs<'_>,
    step: &Step,
    image: &SourceRoot,
    spec: &CopySpec<'_>,
    from: &SourceRoot,
) -> Result<Made, BuildError> {
    let resolved = if spec.instruction == "WORKDIR" {
        None
    } else {
        Some(
            super::rules::resolve(spec, from, image)
                .map_err(|e| inputs.step_err(step, e.to_string(), None))?,
        )
    };
    if let Some(resolved) = resolved.as_ref().filter(|r| r.is_direct()) {
        let mut planner = super::planner::Planner::new(spec, image);
        super::rules::copy_into(spec, from, resolved, &mut planner)
            .map_err(|e| inputs.step_err(step, e.to_string(), None))?;
        return Ok(Made {
            changes: planner.into_changes(),
            staging: None,
            adopt: false,
        });
    }
    let staging = tempfile::Builder::new()
        .prefix("layer-")
        .tempdir_in(inputs.workspace)
        .map_err(|source| BuildError::Workspace {
            path: inputs.workspace.to_path_buf(),
            source,
        })?;
    let staged = match &resolved {
        Some(resolved) => super::rules::stage_copy(spec, resolved, from, image, staging.path())
            .map_err(|e| inputs.step_err(step, e.to_string(), None))?,
        None => {
            // WORKDIR: only the directory itself.
            let dest = spec.dest.trim_matches('/').to_string();
            super::rules::stage_dir_only(spec, image, staging.path(), &dest)
                .map_err(|e| inputs.step_err(step, "creating the directory", Some(Box::new(e))))?
        }
    };
    let mut changes = ChangeSet::from_dir(staging.path())
        .map_err(|e| inputs.step_err(step, "reading the staged files", Some(Box::new(e))))?;
    if !staged.owners_applied {
        changes = changes.with_owner(spec.owner.0, spec.owner.1);
    }
    // A directory over one of the image's merges with it, as the layer's entry does.
    Ok(Made {
        changes,
        staging: Some(staging),
        adopt: staged.owners_applied,
    })
}
