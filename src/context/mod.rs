//! The build context: which files a build may read, and how COPY/ADD source patterns name them.
//!
//! `.dockerignore` rules (see [`ignore`]) hide files from every COPY; source patterns use Go's
//! `filepath.Match` per path component, as BuildKit does; no source may name anything outside the
//! root it is resolved in (the context directory, or a stage's root filesystem for `COPY --from`), and
//! symlinks met on the way are resolved inside that root, never on the host.
//!
//! Must not: write anything, or know about layers and images.

pub mod ignore;
pub mod layers;

pub use layers::View;

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use ignore::DockerIgnore;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("opening build context {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("build context {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("reading {path}")]
    ReadIgnore {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {path}")]
    ParseIgnore {
        path: PathBuf,
        #[source]
        source: ignore::IgnoreError,
    },
    #[error("source {pattern:?}: forbidden path outside the {what}")]
    Escapes { pattern: String, what: &'static str },
    #[error("source {pattern:?}: invalid wildcard pattern: {message}")]
    BadPattern { pattern: String, message: String },
    #[error("source {pattern:?}: file not found in {what}{hint}")]
    NotFound {
        pattern: String,
        what: &'static str,
        hint: &'static str,
    },
    #[error("reading {path} in the {what}")]
    Read {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("resolving symlink {path} in the {what}: too many levels of symbolic links")]
    SymlinkLoop { path: PathBuf, what: &'static str },
}

/// The Dockerfile a build uses when `-f` is not given: BuildKit's dockerui default `Dockerfile`, else
/// its lower-case fallback `dockerfile`, else — for podman/buildah users — `Containerfile`. When
/// none exists the answer is `<context>/Dockerfile`, so the error names the Docker name.
pub fn default_dockerfile(context: &Path) -> PathBuf {
    ["Dockerfile", "dockerfile", "Containerfile"]
        .iter()
        .map(|n| context.join(n))
        .find(|p| p.is_file())
        .unwrap_or_else(|| context.join("Dockerfile"))
}

/// A root that COPY sources are resolved in, with an optional ignore filter: a directory, or a
/// stage's chain of committed snapshots read through a [`View`].
pub struct SourceRoot {
    root: PathBuf,
    layers: Option<View>,
    ignore: Option<DockerIgnore>,
    what: &'static str,
}

/// A source that a pattern matched: its path relative to the root (symlinks in parents resolved) and
/// the on-disk path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub rel: PathBuf,
    pub path: PathBuf,
}

impl SourceRoot {
    /// The build context directory, filtered by `<dockerfile>.dockerignore` beside the Dockerfile
    /// (when there is a Dockerfile file) or the context's `.dockerignore`.
    pub fn context(dir: &Path, dockerfile: Option<&Path>) -> Result<SourceRoot, ContextError> {
        let meta = fs::metadata(dir).map_err(|source| ContextError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ContextError::NotADirectory(dir.to_path_buf()));
        }
        let root = dir.canonicalize().map_err(|source| ContextError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut ignore = None;
        let [own, docker, podman] = ignore::ignore_file_for(
            &dockerfile
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
        // dockerui `ReadEntrypoint` reads `<filename>.dockerignore` from the Dockerfile's own
        // directory (its `dockerfile` local), wherever that is; only without it the context's.
        let candidates = dockerfile
            .map(|_| PathBuf::from(own))
            .into_iter()
            .chain([root.join(docker), root.join(podman)]);
        for path in candidates {
            match fs::read_to_string(&path) {
                Ok(text) => {
                    ignore = Some(
                        DockerIgnore::parse(&text)
                            .map_err(|source| ContextError::ParseIgnore { path, source })?,
                    );
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ContextError::ReadIgnore { path, source }),
            }
        }
        Ok(SourceRoot {
            root,
            layers: None,
            ignore,
            what: "build context",
        })
    }

    /// A stage's or an image's root filesystem (`COPY --from`): no ignore rules.
    pub fn rootfs(dir: &Path) -> SourceRoot {
        SourceRoot {
            root: dir.to_path_buf(),
            layers: None,
            ignore: None,
            what: "source stage's filesystem",
        }
    }

    /// A stage's filesystem as the merged view of its committed snapshots (top-most first).
    pub fn layered(view: View) -> SourceRoot {
        SourceRoot {
            root: view.layers().first().cloned().unwrap_or_default(),
            layers: Some(view),
            ignore: None,
            what: "stage's filesystem",
        }
    }

    /// The directory of a plain root (for a layered one: its top-most snapshot, which holds only
    /// that layer's files — use [`SourceRoot::lstat`] and [`SourceRoot::real_path`] instead).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The entry at `rel` (no symlink followed).
    pub fn lstat(&self, rel: &Path) -> io::Result<fs::Metadata> {
        match &self.layers {
            None => fs::symlink_metadata(self.root.join(rel)),
            Some(v) => match v.lookup(rel)? {
                Some((_, m)) => Ok(m),
                None => Err(io::Error::from(io::ErrorKind::NotFound)),
            },
        }
    }

    /// Where the entry at `rel` is on disk, to read it (None: nothing there).
    pub fn real_path(&self, rel: &Path) -> Option<PathBuf> {
        match &self.layers {
            None => Some(self.root.join(rel)),
            Some(v) => v.lookup(rel).ok().flatten().map(|(p, _)| p),
        }
    }

    fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        let path = self
            .real_path(rel)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        fs::read_link(path)
    }

    /// Whether `.dockerignore` hides this relative path.
    pub fn is_excluded(&self, rel: &Path) -> bool {
        match (&self.ignore, rel.to_str()) {
            (Some(ig), Some(s)) if !s.is_empty() => ig.is_excluded(s),
            _ => false,
        }
    }

    /// Expand one COPY/ADD source pattern into the entries it names, sorted.
    pub fn resolve(&self, pattern: &str) -> Result<Vec<Matched>, ContextError> {
        let comps = clean(pattern).ok_or_else(|| ContextError::Escapes {
            pattern: pattern.to_string(),
            what: self.what,
        })?;
        let mut current = vec![PathBuf::new()];
        for comp in &comps {
            let mut next = Vec::new();
            let wild = has_wildcard(comp);
            let matcher = if wild {
                Some(component_matcher(pattern, comp)?)
            } else {
                None
            };
            for base in &current {
                let dir = self.resolve_in_root(base)?;
                if let Some(m) = &matcher {
                    let entries = match fs::read_dir(&dir) {
                        Ok(e) => e,
                        Err(e)
                            if e.kind() == io::ErrorKind::NotFound
                                || e.raw_os_error() == Some(libc::ENOTDIR) =>
                        {
                            continue
                        }
                        Err(source) => {
                            return Err(ContextError::Read {
                                path: dir,
                                what: self.what,
                                source,
                            })
                        }
                    };
                    let mut names: Vec<String> = Vec::new();
                    for e in entries {
                        let e = e.map_err(|source| ContextError::Read {
                            path: dir.clone(),
                            what: self.what,
                            source,
                        })?;
                        if let Some(n) = e.file_name().to_str() {
                            if m.is_match(n) {
                                names.push(n.to_string());
                            }
                        }
                    }
                    names.sort();
                    next.extend(names.into_iter().map(|n| base.join(n)));
                } else {
                    next.push(base.join(comp));
                }
            }
            current = next;
        }
        let mut out = Vec::new();
        for rel in current {
            if self.is_excluded(&rel) {
                continue;
            }
            let path = self.resolve_in_root(&rel)?;
            if fs::symlink_metadata(&path).is_ok() {
                out.push(Matched { rel, path });
            }
        }
        if out.is_empty() {
            return Err(ContextError::NotFound {
                pattern: pattern.to_string(),
                what: self.what,
                hint: if self.ignore.is_some() {
                    " (or excluded by .dockerignore)"
                } else {
                    ""
                },
            });
        }
        Ok(out)
    }

    /// Follow `rel` from the root, resolving every symlink met inside the root (an absolute link
    /// target means the root, `..` never climbs above it) — the scoping chroot(2) would give.
    pub fn resolve_in_root(&self, rel: &Path) -> Result<PathBuf, ContextError> {
        Ok(self.root.join(self.resolve_rel(rel)?))
    }

    /// [`SourceRoot::resolve_in_root`] as a path relative to the root (the only form a layered
    /// root has).
    pub fn resolve_rel(&self, rel: &Path) -> Result<PathBuf, ContextError> {
        let mut resolved = PathBuf::new();
        let mut pending: Vec<PathBuf> = rel
            .components()
            .rev()
            .map(|c| PathBuf::from(c.as_os_str()))
            .collect();
        let mut hops = 0;
        while let Some(comp) = pending.pop() {
            match comp.to_str() {
                Some("..") => {
                    resolved.pop();
                    continue;
                }
                Some(".") | Some("/") | Some("") => continue,
                _ => {}
            }
            let candidate = resolved.join(&comp);
            match self.lstat(&candidate) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(ContextError::SymlinkLoop {
                            path: candidate,
                            what: self.what,
                        });
                    }
                    let target =
                        self.read_link(&candidate)
                            .map_err(|source| ContextError::Read {
                                path: candidate.clone(),
                                what: self.what,
                                source,
                            })?;
                    if target.is_absolute() {
                        resolved = PathBuf::new();
                    }
                    for c in target.components().rev() {
                        pending.push(PathBuf::from(c.as_os_str()));
                    }
                }
                _ => resolved = candidate,
            }
        }
        Ok(resolved)
    }
}

/// Split a source path into components, dropping `.` and leading `/`; `None` when `..` would climb
/// above the root.
fn clean(pattern: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(pattern).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Go's filepath.Match for one path component: `*`, `?`, `[...]` and `\` escapes.
fn component_matcher(pattern: &str, comp: &str) -> Result<GlobMatcher, ContextError> {
    let go_class = comp.replace("[^", "[!");
    GlobBuilder::new(&go_class)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| ContextError::BadPattern {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("src/sub")).unwrap();
        fs::write(r.join("src/a.txt"), "a").unwrap();
        fs::write(r.join("src/b.txt"), "b").unwrap();
        fs::write(r.join("src/sub/c.md"), "c").unwrap();
        fs::write(r.join("secret.key"), "k").unwrap();
        fs::write(r.join(".dockerignore"), "*.key\n").unwrap();
        symlink("/src", r.join("abs-link")).unwrap();
        symlink("../../../../etc", r.join("up-link")).unwrap();
        d
    }

    #[test]
    fn dockerfile_names_docker_first_then_containerfile() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(default_dockerfile(d.path()), d.path().join("Dockerfile"));
        fs::write(d.path().join("Containerfile"), "").unwrap();
        assert_eq!(default_dockerfile(d.path()), d.path().join("Containerfile"));
        fs::write(d.path().join("dockerfile"), "").unwrap();
        assert_eq!(default_dockerfile(d.path()), d.path().join("dockerfile"));
        fs::write(d.path().join("Dockerfile"), "").unwrap();
        assert_eq!(default_dockerfile(d.path()), d.path().join("Dockerfile"));
    }

    #[test]
    fn wildcards_match_per_component_sorted() {
        let d = tree();
        let ctx = SourceRoot::context(d.path(), None).unwrap();
        let m = ctx.resolve("src/*.txt").unwrap();
        let rels: Vec<_> = m.iter().map(|m| m.rel.to_str().unwrap()).collect();
        assert_eq!(rels, ["src/a.txt", "src/b.txt"]);
        assert_eq!(ctx.resolve("s?c/sub/*").unwrap().len(), 1);
        assert_eq!(ctx.resolve("src/[ab].txt").unwrap().len(), 2);
        assert_eq!(ctx.resolve("src/[^a].txt").unwrap().len(), 1);
    }

    #[test]
    fn dockerignored_files_are_not_found() {
        let d = tree();
        let ctx = SourceRoot::context(d.path(), None).unwrap();
        let e = ctx.resolve("secret.key").unwrap_err().to_string();
        assert!(
            e.contains("secret.key") && e.contains(".dockerignore"),
            "{e}"
        );
    }

    #[test]
    fn escapes_are_refused_and_symlinks_stay_inside() {
        let d = tree();
        let ctx = SourceRoot::context(d.path(), None).unwrap();
        let e = ctx.resolve("../outside").unwrap_err().to_string();
        assert!(e.contains("outside the build context"), "{e}");
        let root = d.path().canonicalize().unwrap();
        // An absolute symlink target means the context root, not the host's /.
        let m = ctx.resolve("abs-link/a.txt").unwrap();
        assert_eq!(m[0].path, root.join("src/a.txt"));
        // `..` in a link target cannot climb above the root.
        let p = ctx.resolve_in_root(Path::new("up-link")).unwrap();
        assert_eq!(p, root.join("etc"));
    }
}
