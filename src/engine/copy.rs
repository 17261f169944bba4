//! COPY and ADD with Docker's semantics, staged into a directory that becomes the step's layer:
//! a directory source copies its contents, several sources need a directory destination ending in
//! `/`, an existing directory at the destination receives files, new entries belong to 0:0 unless
//! `--chown`, `--chmod` applies to everything created, and ADD unpacks local files that are tar
//! archives by content (see [`super::add`]). The destination is resolved through the image's own
//! symlinks. Follows tonistiigi/fsutil `copy/copy.go` (`Copy`, `prepareTargetDir`, `MkdirAll`):
//! missing destination and parent directories are created with the octal `--chmod` (else 0755) and
//! the `--chown` owner, directories that exist keep their metadata, and hard links within one
//! source operand stay hard links ([`super::hardlink`]).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use super::chmod::Chmod;
use super::fsutil::{copy_entry, try_lchown};
use super::hardlink::HardLinks;
use crate::context::ignore::DockerIgnore;
use crate::context::{ContextError, SourceRoot};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
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
pub struct CopySpec<'a> {
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
    pub owner: (u32, u32),
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
pub struct Staged {
    pub owners_applied: bool,
}

struct Stager<'a> {
    spec: &'a CopySpec<'a>,
    staging: &'a Path,
    rootfs: &'a Path,
    owners_applied: bool,
}

pub fn stage_copy(
    spec: &CopySpec<'_>,
    from: &SourceRoot,
    rootfs: &Path,
    staging: &Path,
) -> Result<Staged, CopyError> {
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
    let wildcard = spec.sources.iter().any(|s| s.contains(['*', '?', '[']));
    let many = matches.len() + spec.heredocs.len() > 1 || wildcard;
    let trailing = spec.dest.ends_with('/') || spec.dest.ends_with("/.");
    if many && !trailing {
        return Err(CopyError::DestNotDir(spec.instruction));
    }
    // Resolve the destination through the image's symlinks (COPY x /var/run/ lands in /run).
    let image_root = SourceRoot::rootfs(rootfs);
    let dest_on_disk = image_root.resolve_in_root(Path::new(&spec.dest))?;
    let dest_rel = dest_on_disk
        .strip_prefix(rootfs)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let dest_is_dir = trailing || many || dest_on_disk.is_dir();

    let mut st = Stager {
        spec,
        staging,
        rootfs,
        owners_applied: true,
    };
    for (m, unpack) in &matches {
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
        if meta.is_dir() {
            st.copy_dir(from, m, &target)?;
        } else if *unpack && super::add::is_tar_archive(&m.path) {
            st.ensure_dir(&dest_rel, 0o755)?;
            st.unpack(&m.path, &dest_rel)?;
        } else {
            if let Some(parent) = target.parent() {
                st.ensure_dir(parent, st.created_dir_mode())?;
            }
            st.put(&m.path, &meta, &target, &mut HardLinks::default())?;
        }
    }
    for (name, content) in &spec.heredocs {
        let target = if dest_is_dir {
            dest_rel.join(name)
        } else {
            dest_rel.clone()
        };
        if let Some(parent) = target.parent() {
            st.ensure_dir(parent, st.created_dir_mode())?;
        }
        let on_disk = staging.join(&target);
        let io_err = |source| CopyError::Io {
            from: PathBuf::from(format!("<<{name}")),
            to: spec.dest.clone(),
            source,
        };
        fs::write(&on_disk, content).map_err(io_err)?;
        fs::set_permissions(&on_disk, fs::Permissions::from_mode(0o644)).map_err(io_err)?;
        st.finish_entry(&on_disk, false).map_err(io_err)?;
        let t = FileTime::from_unix_time(spec.created_mtime, 0);
        filetime::set_file_times(&on_disk, t, t).map_err(io_err)?;
    }
    Ok(Staged {
        owners_applied: st.owners_applied,
    })
}

/// Only the directory `dest` and its missing parents (a WORKDIR that does not exist yet), mode 0755
/// and owned by `spec.owner`. The path is first resolved through the image's symlinks (absolute
/// targets and `..` kept inside the root, dangling ones too), so a symlink on the way stays one and
/// the missing tail is created under where it points.
pub fn stage_dir_only(
    spec: &CopySpec<'_>,
    rootfs: &Path,
    staging: &Path,
    dest: &str,
) -> Result<Staged, CopyError> {
    let mut st = Stager {
        spec,
        staging,
        rootfs,
        owners_applied: true,
    };
    let resolved = SourceRoot::rootfs(rootfs).resolve_in_root(Path::new(dest))?;
    let rel = resolved.strip_prefix(rootfs).unwrap_or(Path::new(""));
    st.ensure_dir(rel, 0o755)?;
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

impl Stager<'_> {
    fn io(&self, from: &Path, source: io::Error) -> CopyError {
        CopyError::Io {
            from: from.to_path_buf(),
            to: self.spec.dest.clone(),
            source,
        }
    }

    /// The mode of a directory the copy creates (missing destination and parents): fsutil's
    /// `MkdirAll(…, perm)` with `perm` the octal `--chmod` when given (`ci.Mode`), else 0755 — a
    /// symbolic `--chmod` (`ci.ModeStr`) does not apply to them.
    fn created_dir_mode(&self) -> u32 {
        match &self.spec.chmod {
            Some(Chmod::Octal(m)) => m & 0o777,
            _ => 0o755,
        }
    }

    /// Create `rel` and its parents in the staging tree. A directory the image already has keeps its
    /// metadata (the layer must not change it); a new one gets `mode`, owned like the copied files.
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
            match fs::symlink_metadata(self.rootfs.join(&cur)) {
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

    /// Owner and `--chmod` of an entry the step creates.
    fn finish_entry(&mut self, path: &Path, is_dir: bool) -> io::Result<()> {
        let (uid, gid) = self.spec.owner;
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

    fn put(
        &mut self,
        src: &Path,
        meta: &fs::Metadata,
        rel: &Path,
        links: &mut HardLinks,
    ) -> Result<(), CopyError> {
        let dst = self.staging.join(rel);
        if let Some(first) = links.source_for(meta, &dst) {
            // The shared inode already has its owner, mode and mtime (fsutil: `os.Link`).
            if fs::symlink_metadata(&dst).is_ok() {
                fs::remove_file(&dst).map_err(|e| self.io(src, e))?;
            }
            return fs::hard_link(&first, &dst).map_err(|e| self.io(src, e));
        }
        copy_entry(src, &dst, meta).map_err(|e| self.io(src, e))?;
        self.finish_entry(&dst, meta.is_dir())
            .map_err(|e| self.io(src, e))?;
        // chmod/chown touch the inode's ctime only; put back the source mtime on directories that
        // copy_entry created before their metadata changed.
        let t = FileTime::from_last_modification_time(meta);
        filetime::set_symlink_file_times(&dst, t, t).map_err(|e| self.io(src, e))?;
        Ok(())
    }

    fn excluded(&self, from: &SourceRoot, context_rel: &Path, within: &Path) -> bool {
        if from.is_excluded(context_rel) {
            return true;
        }
        match (&self.spec.excludes, within.to_str()) {
            (Some(ex), Some(s)) if !s.is_empty() => ex.is_excluded(s),
            _ => false,
        }
    }

    fn copy_dir(
        &mut self,
        from: &SourceRoot,
        m: &crate::context::Matched,
        target: &Path,
    ) -> Result<(), CopyError> {
        self.ensure_dir(target, self.created_dir_mode())?;
        let top = fs::metadata(&m.path).map_err(|e| self.io(&m.path, e))?;
        let mut links = HardLinks::default();
        let walker = walkdir::WalkDir::new(&m.path)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1);
        let mut dirs = Vec::new();
        for entry in walker {
            let entry = entry.map_err(|e| {
                let p = e.path().map(Path::to_path_buf).unwrap_or_default();
                self.io(&p, io::Error::other(e))
            })?;
            let within = entry
                .path()
                .strip_prefix(&m.path)
                .unwrap_or(entry.path())
                .to_path_buf();
            if self.excluded(from, &m.rel.join(&within), &within) {
                continue;
            }
            let meta = entry.metadata().map_err(|e| {
                self.io(
                    entry.path(),
                    e.into_io_error().unwrap_or(io::Error::other("walk")),
                )
            })?;
            let rel = target.join(&within);
            if let Some(parent) = rel.parent() {
                self.ensure_dir(parent, self.created_dir_mode())?;
            }
            self.put(entry.path(), &meta, &rel, &mut links)?;
            if meta.is_dir() {
                dirs.push((rel, meta));
            }
        }
        // Children changed the directories' mtimes: restore them, deepest first.
        dirs.push((target.to_path_buf(), top));
        for (rel, meta) in dirs.iter().rev() {
            let t = FileTime::from_last_modification_time(meta);
            let p = self.staging.join(rel);
            filetime::set_file_times(&p, t, t).map_err(|e| self.io(&p, e))?;
        }
        Ok(())
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
}
