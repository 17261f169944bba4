//! COPY and ADD with Docker's semantics, decided once ([`copy_into`]) for two sinks — a staging
//! directory ([`stage_copy`]: ADD's archives, WORKDIR) or the layer plan ([`super::planner`]):
//! a directory source copies its contents, several sources (counted after wildcards matched) need
//! a directory destination ending in `/`, an existing directory at the destination receives
//! files, new entries belong to 0:0 unless `--chown` (a `COPY --from` keeps the source's owners),
//! `--chmod` applies to everything created, and ADD unpacks local files that are tar archives by
//! content (see [`super::add`]). The destination is resolved through the image's own symlinks.
//! Follows tonistiigi/fsutil `copy/copy.go` (`Copy`, `prepareTargetDir`, `MkdirAll`): missing
//! destination and parent directories are created with the octal `--chmod` (else 0755) and the
//! `--chown` owner, directories that exist keep their metadata, and hard links within one source
//! operand stay hard links ([`super::hardlink`]).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use super::fsutil::{copy_entry, try_lchown};
use super::hardlink::HardLinks;
use crate::context::ignore::DockerIgnore;
use crate::context::{ContextError, SourceRoot};
use crate::plan::Chmod;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    #[error(transparent)]
    Source(#[from] ContextError),
    #[error("when using {0} with more than one source file, the destination must be a directory and end with a /")]
    DestNotDir(&'static str),
    #[error("copying {from} to {to}")]
    Io {
        from: PathBuf,
        to: String,
        #[source]
        source: io::Error,
    },
    #[error("unpacking archive {path} (ADD)")]
    Unpack {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What one COPY/ADD step asks for, with every value already expanded by the plan.
pub(crate) struct CopySpec<'a> {
    pub instruction: &'static str,
    pub sources: &'a [String],
    /// Files ADD downloaded from URLs (each named after its URL), copied like single local files.
    pub downloads: Vec<PathBuf>,
    /// Whether downloads that are archives are unpacked (`ADD --unpack=true <URL>`).
    pub unpack_downloads: bool,
    /// `COPY <<EOF /dest`: (name, content) pairs.
    pub heredocs: Vec<(String, String)>,
    /// Absolute destination inside the image (WORKDIR already applied), as written (trailing `/` kept).
    pub dest: String,
    /// The owner of what the step creates, and of every copied entry unless `keep_source_owners`.
    pub owner: (u32, u32),
    /// Copied entries keep the source's uid/gid: `COPY --from` without `--chown` (fsutil's
    /// `copyFileInfo` keeps the owner when no chowner is given; BuildKit
    /// `testCopyChownExistingDir`). Context files are sent to BuildKit as 0:0, so a context copy
    /// resets them.
    pub keep_source_owners: bool,
    /// Whether `--chown` was given: then entries extracted by ADD get `owner` too (else they keep
    /// the archive's owners).
    pub explicit_owner: bool,
    pub chmod: Option<Chmod>,
    pub excludes: Option<DockerIgnore>,
    pub parents: bool,
    pub unpack_archives: bool,
    /// mtime of directories and heredoc files the step creates (SOURCE_DATE_EPOCH, else 0) so that
    /// the same sources always give the same layer.
    pub created_mtime: i64,
}

/// The outcome: whether on-disk owners could be set (else the layer writer overrides them).
pub(crate) struct Staged {
    pub owners_applied: bool,
}

/// What one source operand (a match of a source pattern, or a download) does.
pub(crate) enum Action {
    /// A directory: its contents are copied into `target`.
    Dir,
    /// A local tar archive ADD unpacks into the destination.
    Unpack,
    /// Anything else: copied to `target`.
    File,
}

/// One source operand with where it lands (relative to the image root).
pub(crate) struct Operand {
    pub m: crate::context::Matched,
    pub meta: fs::Metadata,
    pub target: PathBuf,
    pub action: Action,
}

/// A COPY/ADD resolved against its sources and the image: every operand and heredoc with its
/// place. Computing this reads the sources' metadata and the image's own symlinks only.
pub(crate) struct Resolved {
    pub operands: Vec<Operand>,
    pub heredocs: Vec<(PathBuf, String, Vec<u8>)>,
    pub dest_rel: PathBuf,
}

impl Resolved {
    /// Whether the step can be written straight into its layer ([`super::planner`]): only ADD's
    /// archive extraction needs a staged tree.
    pub(crate) fn is_direct(&self) -> bool {
        !self
            .operands
            .iter()
            .any(|o| matches!(o.action, Action::Unpack))
    }
}

/// Where a copy goes: a staging directory ([`Stager`]) or a layer plan ([`super::planner`]).
/// [`copy_into`] decides Docker's semantics once; a sink only records or writes entries.
pub(crate) trait Sink {
    /// The next entries come from source operand `index` (hard links stay within one operand).
    fn begin_operand(&mut self, index: usize);
    /// Create `rel` and its missing parents, a new one with `mode` and the copy's owner; one the
    /// image already has keeps the image's metadata.
    fn ensure_dir(&mut self, rel: &Path, mode: u32) -> Result<(), CopyError>;
    /// Copy the entry at `src` to `rel`, owned by the copy's owner, `--chmod` applied.
    fn put(&mut self, src: &Path, meta: &fs::Metadata, rel: &Path) -> Result<(), CopyError>;
    /// Give the directory at `rel` the mtime of `meta` (after its children were added).
    fn dir_time(&mut self, rel: &Path, meta: &fs::Metadata) -> Result<(), CopyError>;
    /// Extract a local archive into `dest_rel` (ADD).
    fn unpack(&mut self, archive: &Path, dest_rel: &Path) -> Result<(), CopyError>;
    /// A heredoc file at `rel` holding `content`.
    fn heredoc(&mut self, name: &str, rel: &Path, content: &[u8]) -> Result<(), CopyError>;
}

/// Resolve what the step copies and where each operand lands, with Docker's rules.
pub(crate) fn resolve(
    spec: &CopySpec<'_>,
    from: &SourceRoot,
    image: &SourceRoot,
) -> Result<Resolved, CopyError> {
    let mut matches = Vec::new();
    for pattern in spec.sources {
        matches.extend(
            from.resolve(pattern)?
                .into_iter()
                .map(|m| (m, spec.unpack_archives)),
        );
    }
    for file in &spec.downloads {
        let rel = PathBuf::from(file.file_name().unwrap_or_default());
        let m = crate::context::Matched {
            rel,
            path: file.clone(),
        };
        matches.push((m, spec.unpack_downloads));
    }
    // Decided on what the patterns matched, not on how they are written: a wildcard with one
    // match is one source and lands at the destination path (BuildKit `testCopyWildcards`:
    // `COPY f*.go foo2.go`; fsutil `Copy` runs `prepareTargetDir` once per match).
    let many = matches.len() + spec.heredocs.len() > 1;
    let trailing = spec.dest.ends_with('/') || spec.dest.ends_with("/.");
    if many && !trailing {
        return Err(CopyError::DestNotDir(spec.instruction));
    }
    // Resolve the destination through the image's symlinks (COPY x /var/run/ lands in /run).
    let dest_rel = image.resolve_rel(Path::new(&spec.dest))?;
    let dest_is_dir = trailing || many || image.lstat(&dest_rel).is_ok_and(|m| m.is_dir());
    let mut operands = Vec::with_capacity(matches.len());
    for (m, unpack) in matches {
        let meta = fs::metadata(&m.path).map_err(|source| CopyError::Io {
            from: m.path.clone(),
            to: spec.dest.clone(),
            source,
        })?;
        let name = m.rel.file_name().map(PathBuf::from).unwrap_or_default();
        let target = if spec.parents {
            dest_rel.join(parents_rel(&m.rel))
        } else if meta.is_dir() || !dest_is_dir {
            dest_rel.clone()
        } else {
            dest_rel.join(&name)
        };
        let action = if meta.is_dir() {
            Action::Dir
        } else if unpack && super::add::is_tar_archive(&m.path) {
            Action::Unpack
        } else {
            Action::File
        };
        operands.push(Operand {
            m,
            meta,
            target,
            action,
        });
    }
    let heredocs = spec
        .heredocs
        .iter()
        .map(|(name, content)| {
            let target = if dest_is_dir {
                dest_rel.join(name)
            } else {
                dest_rel.clone()
            };
            (target, name.clone(), content.clone().into_bytes())
        })
        .collect();
    Ok(Resolved {
        operands,
        heredocs,
        dest_rel,
    })
}

/// The mode of a directory the copy creates (missing destination and parents): fsutil's
/// `MkdirAll(…, perm)` with `perm` the octal `--chmod` when given (`ci.Mode`), else 0755 — a
/// symbolic `--chmod` (`ci.ModeStr`) does not apply to them.
pub(crate) fn created_dir_mode(spec: &CopySpec<'_>) -> u32 {
    match spec.chmod.as_ref().and_then(Chmod::octal) {
        Some(m) => m & 0o777,
        None => 0o755,
    }
}

/// Copy what `resolved` names into `sink`, in source walk order.
pub(crate) fn copy_into(
    spec: &CopySpec<'_>,
    from: &SourceRoot,
    resolved: &Resolved,
    sink: &mut dyn Sink,
) -> Result<(), CopyError> {
    let dir_mode = created_dir_mode(spec);
    for (i, op) in resolved.operands.iter().enumerate() {
        sink.begin_operand(i);
        match op.action {
            Action::Dir => copy_dir(spec, from, op, sink)?,
            Action::Unpack => {
                sink.ensure_dir(&resolved.dest_rel, 0o755)?;
                sink.unpack(&op.m.path, &resolved.dest_rel)?;
            }
            Action::File => {
                if let Some(parent) = op.target.parent() {
                    sink.ensure_dir(parent, dir_mode)?;
                }
                sink.put(&op.m.path, &op.meta, &op.target)?;
            }
        }
    }
    for (target, name, content) in &resolved.heredocs {
        if let Some(parent) = target.parent() {
            sink.ensure_dir(parent, dir_mode)?;
        }
        sink.heredoc(name, target, content)?;
    }
    Ok(())
}

fn excluded(spec: &CopySpec<'_>, from: &SourceRoot, context_rel: &Path, within: &Path) -> bool {
    if from.is_excluded(context_rel) {
        return true;
    }
    match (&spec.excludes, within.to_str()) {
        (Some(ex), Some(s)) if !s.is_empty() => ex.is_excluded(s),
        _ => false,
    }
}

/// A directory operand: its entries in sorted walk order, then the directories' mtimes (children
/// changed them), deepest first, the target last with the source directory's own.
fn copy_dir(
    spec: &CopySpec<'_>,
    from: &SourceRoot,
    op: &Operand,
    sink: &mut dyn Sink,
) -> Result<(), CopyError> {
    let io = |p: &Path, source| CopyError::Io {
        from: p.to_path_buf(),
        to: spec.dest.clone(),
        source,
    };
    let dir_mode = created_dir_mode(spec);
    sink.ensure_dir(&op.target, dir_mode)?;
    let walker = walkdir::WalkDir::new(&op.m.path)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1);
    let mut dirs = Vec::new();
    let mut parent_done: Option<PathBuf> = None;
    for entry in walker {
        let entry = entry.map_err(|e| {
            let p = e.path().map(Path::to_path_buf).unwrap_or_default();
            io(&p, io::Error::other(e))
        })?;
        let within = entry
            .path()
            .strip_prefix(&op.m.path)
            .unwrap_or(entry.path())
            .to_path_buf();
        if excluded(spec, from, &op.m.rel.join(&within), &within) {
            continue;
        }
        let meta = entry.metadata().map_err(|e| {
            io(
                entry.path(),
                e.into_io_error().unwrap_or(io::Error::other("walk")),
            )
        })?;
        let rel = op.target.join(&within);
        // Parents of an entry are made once per directory, not once per file.
        if let Some(parent) = rel.parent() {
            if parent_done.as_deref() != Some(parent) {
                sink.ensure_dir(parent, dir_mode)?;
                parent_done = Some(parent.to_path_buf());
            }
        }
        sink.put(entry.path(), &meta, &rel)?;
        if meta.is_dir() {
            dirs.push((rel, meta));
        }
    }
    dirs.push((op.target.clone(), op.meta.clone()));
    for (rel, meta) in dirs.iter().rev() {
        sink.dir_time(rel, meta)?;
    }
    Ok(())
}

/// The staging sink: writes every entry into a directory tree.
struct Stager<'a> {
    spec: &'a CopySpec<'a>,
    staging: &'a Path,
    image: &'a SourceRoot,
    owners_applied: bool,
    links: HardLinks,
}

/// Copy into the staging directory `staging` (ADD's archives, WORKDIR): the tree that becomes the
/// layer and then becomes the stage's next committed snapshot.
pub(crate) fn stage_copy(
    spec: &CopySpec<'_>,
    resolved: &Resolved,
    from: &SourceRoot,
    image: &SourceRoot,
    staging: &Path,
) -> Result<Staged, CopyError> {
    let mut st = Stager::new(spec, staging, image);
    copy_into(spec, from, resolved, &mut st)?;
    Ok(Staged {
        owners_applied: st.owners_applied,
    })
}

/// Only the directory `dest` and its missing parents (a WORKDIR that does not exist yet), mode 0755
/// and owned by `spec.owner`. The path is first resolved through the image's symlinks (absolute
/// targets and `..` kept inside the root, dangling ones too), so a symlink on the way stays one and
/// the missing tail is created under where it points.
pub(crate) fn stage_dir_only(
    spec: &CopySpec<'_>,
    image: &SourceRoot,
    staging: &Path,
    dest: &str,
) -> Result<Staged, CopyError> {
    let mut st = Stager::new(spec, staging, image);
    let rel = image.resolve_rel(Path::new(dest))?;
    st.ensure_dir(&rel, 0o755)?;
    Ok(Staged {
        owners_applied: st.owners_applied,
    })
}

/// With `--parents`, the part of a source path after a `/./` pivot, else the whole relative path.
fn parents_rel(rel: &Path) -> PathBuf {
    let s = rel.to_string_lossy();
    match s.find("/./") {
        Some(i) => PathBuf::from(&s[i + 3..]),
        None => rel.to_path_buf(),
    }
}

impl<'a> Stager<'a> {
    fn new(spec: &'a CopySpec<'a>, staging: &'a Path, image: &'a SourceRoot) -> Stager<'a> {
        Stager {
            spec,
            staging,
            image,
            owners_applied: true,
            links: HardLinks::default(),
        }
    }

    fn io(&self, from: &Path, source: io::Error) -> CopyError {
        CopyError::Io {
            from: from.to_path_buf(),
            to: self.spec.dest.clone(),
            source,
        }
    }

    /// Owner and `--chmod` of an entry the step creates.
    fn finish_entry(&mut self, path: &Path, is_dir: bool, owner: (u32, u32)) -> io::Result<()> {
        let (uid, gid) = owner;
        if !try_lchown(path, uid, gid)? {
            self.owners_applied = false;
        }
        if let Some(chmod) = &self.spec.chmod {
            let meta = fs::symlink_metadata(path)?;
            if !meta.file_type().is_symlink() {
                let mode = chmod.apply(meta.mode() & 0o7777, is_dir);
                fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            }
        }
        Ok(())
    }
}

impl Sink for Stager<'_> {
    fn begin_operand(&mut self, _index: usize) {
        self.links = HardLinks::default();
    }

    fn ensure_dir(&mut self, rel: &Path, mode: u32) -> Result<(), CopyError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            let staged = self.staging.join(&cur);
            if fs::symlink_metadata(&staged)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                continue;
            }
            fs::create_dir(&staged).map_err(|e| self.io(&staged, e))?;
            match self.image.lstat(&cur) {
                Ok(m) if m.is_dir() => {
                    fs::set_permissions(&staged, fs::Permissions::from_mode(m.mode() & 0o7777))
                        .map_err(|e| self.io(&staged, e))?;
                    if !try_lchown(&staged, m.uid(), m.gid()).map_err(|e| self.io(&staged, e))? {
                        self.owners_applied = false;
                    }
                    let t = FileTime::from_last_modification_time(&m);
                    filetime::set_file_times(&staged, t, t).map_err(|e| self.io(&staged, e))?;
                }
                _ => {
                    let (uid, gid) = self.spec.owner;
                    if !try_lchown(&staged, uid, gid).map_err(|e| self.io(&staged, e))? {
                        self.owners_applied = false;
                    }
                    fs::set_permissions(&staged, fs::Permissions::from_mode(mode))
                        .map_err(|e| self.io(&staged, e))?;
                    let t = FileTime::from_unix_time(self.spec.created_mtime, 0);
                    filetime::set_file_times(&staged, t, t).map_err(|e| self.io(&staged, e))?;
                }
            }
        }
        Ok(())
    }

    fn put(&mut self, src: &Path, meta: &fs::Metadata, rel: &Path) -> Result<(), CopyError> {
        let dst = self.staging.join(rel);
        if let Some(first) = self.links.source_for(meta, &dst) {
            // The shared inode already has its owner, mode and mtime (fsutil: `os.Link`).
            if fs::symlink_metadata(&dst).is_ok() {
                fs::remove_file(&dst).map_err(|e| self.io(src, e))?;
            }
            return fs::hard_link(&first, &dst).map_err(|e| self.io(src, e));
        }
        copy_entry(src, &dst, meta).map_err(|e| self.io(src, e))?;
        let owner = if self.spec.keep_source_owners {
            (meta.uid(), meta.gid())
        } else {
            self.spec.owner
        };
        self.finish_entry(&dst, meta.is_dir(), owner)
            .map_err(|e| self.io(src, e))?;
        // chmod/chown touch the inode's ctime only; put back the source mtime on directories that
        // copy_entry created before their metadata changed.
        let t = FileTime::from_last_modification_time(meta);
        filetime::set_symlink_file_times(&dst, t, t).map_err(|e| self.io(src, e))?;
        Ok(())
    }

    fn dir_time(&mut self, rel: &Path, meta: &fs::Metadata) -> Result<(), CopyError> {
        let t = FileTime::from_last_modification_time(meta);
        let p = self.staging.join(rel);
        filetime::set_file_times(&p, t, t).map_err(|e| self.io(&p, e))
    }

    fn unpack(&mut self, archive: &Path, dest_rel: &Path) -> Result<(), CopyError> {
        let unpack_err = |source| CopyError::Unpack {
            path: archive.to_path_buf(),
            source,
        };
        let dest = self.staging.join(dest_rel);
        super::add::extract(archive, &dest).map_err(unpack_err)?;
        if self.spec.explicit_owner {
            let (uid, gid) = self.spec.owner;
            if !super::add::chown_tree(&dest, uid, gid).map_err(|e| unpack_err(Box::new(e)))? {
                self.owners_applied = false;
            }
        }
        Ok(())
    }

    fn heredoc(&mut self, name: &str, rel: &Path, content: &[u8]) -> Result<(), CopyError> {
        let on_disk = self.staging.join(rel);
        let io_err = |source| CopyError::Io {
            from: PathBuf::from(format!("<<{name}")),
            to: self.spec.dest.clone(),
            source,
        };
        fs::write(&on_disk, content).map_err(io_err)?;
        fs::set_permissions(&on_disk, fs::Permissions::from_mode(0o644)).map_err(io_err)?;
        self.finish_entry(&on_disk, false, self.spec.owner)
            .map_err(io_err)?;
        let t = FileTime::from_unix_time(self.spec.created_mtime, 0);
        filetime::set_file_times(&on_disk, t, t).map_err(io_err)
    }
}
