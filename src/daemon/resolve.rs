//! The daemon's checks on top of the one resolver (`crate::resolve`): paths resolved under the
//! allowed roots (symlinks followed, escapes refused), inline secrets written to private files,
//! the daemon's capacity share. Everything a client can get wrong is a 4xx here, before the build
//! is accepted.
//!
//! Must not: run the build or keep credentials anywhere but the in-memory `Prepared`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::api::{self, kind, BuildSpec};
use crate::engine::{BuildRequest, Output};

use super::{ApiError, DaemonSettings};

/// Largest Dockerfile kept in a build record.
const MAX_DOCKERFILE: u64 = 1 << 20;

/// A request ready to run. Holds the inline secrets' private directory (deleted on drop) and the
/// credentials, which live only here.
pub(super) struct Prepared {
    pub req: BuildRequest,
    pub dockerfile_text: Option<String>,
    /// Strings scrubbed from every event (passwords, inline secret values).
    pub sensitive: Vec<String>,
    pub _secret_dir: Option<tempfile::TempDir>,
    pub _context_dir: Option<tempfile::TempDir>,
}

/// The canonical form of each configured root (roots that do not exist are skipped).
pub(super) fn canonical_roots(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots
        .iter()
        .filter_map(|r| fs::canonicalize(r).ok())
        .collect()
}

/// `p` (absolute, or relative to the first root) with every symlink resolved, if it stays under
/// one of `roots`.
pub(super) fn resolve_under(roots: &[PathBuf], p: &str, what: &str) -> Result<PathBuf, ApiError> {
    if p.is_empty() {
        return Err(ApiError::bad(
            kind::INVALID_REQUEST,
            format!("{what} must not be empty"),
        ));
    }
    let first = roots.first().ok_or_else(|| {
        ApiError::forbidden(
            kind::CONTEXT_OUTSIDE_ROOTS,
            "no context root exists on the daemon's side (create /build or set context_roots)",
        )
    })?;
    let joined = if Path::new(p).is_absolute() {
        PathBuf::from(p)
    } else {
        first.join(p)
    };
    let canon = match fs::canonicalize(&joined) {
        Ok(c) => c,
        Err(e) => {
            // Lexically outside is refused before existence is reported, so that probing paths
            // outside the roots tells a client nothing.
            if !lexically_under(roots, &joined) {
                return Err(outside(what, p, roots));
            }
            return Err(ApiError::bad(
                kind::CONTEXT_NOT_FOUND,
                format!("{what} {p:?}: {e}"),
            ));
        }
    };
    if roots.iter().any(|r| canon.starts_with(r)) {
        Ok(canon)
    } else {
        Err(outside(what, p, roots))
    }
}

fn lexically_under(roots: &[PathBuf], p: &Path) -> bool {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    roots.iter().any(|r| out.starts_with(r))
}

fn outside(what: &str, p: &str, roots: &[PathBuf]) -> ApiError {
    let list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    ApiError::forbidden(
        kind::CONTEXT_OUTSIDE_ROOTS,
        format!(
            "{what} {p:?} is outside the allowed roots ({}) once symlinks and '..' are resolved",
            list.join(", ")
        ),
    )
}

/// A file that may not exist yet (an output): its parent resolved under the roots.
fn resolve_dest(roots: &[PathBuf], p: &str) -> Result<PathBuf, ApiError> {
    let path = Path::new(p);
    let name = match path.file_name() {
        Some(n) if path.components().next_back() == Some(Component::Normal(n)) => n,
        _ => {
            return Err(ApiError::bad(
                kind::INVALID_REQUEST,
                format!("output dest {p:?} must name a file or directory"),
            ))
        }
    };
    let parent = match path.parent().map(|q| q.to_string_lossy().into_owned()) {
        Some(q) if !q.is_empty() => q,
        _ => ".".to_string(),
    };
    let dir = resolve_parent(roots, &parent)?;
    let full = dir.join(name);
    if let Ok(meta) = fs::symlink_metadata(&full) {
        if meta.file_type().is_symlink() {
            // Writing through a symlink could land anywhere.
            return Err(outside("output dest", p, roots));
        }
    }
    Ok(full)
}

/// An output's parent directory under the roots, which may not exist yet: the nearest existing
/// ancestor is resolved (symlinks followed, escapes refused) and the missing plain names are
/// appended; `outputs.rs` creates them, owned by the caller, when the build runs.
fn resolve_parent(roots: &[PathBuf], parent: &str) -> Result<PathBuf, ApiError> {
    let mut at = PathBuf::from(parent);
    let mut missing: Vec<std::ffi::OsString> = Vec::new();
    loop {
        let text = match at.as_os_str().is_empty() {
            true => ".".to_string(),
            false => at.to_string_lossy().into_owned(),
        };
        match resolve_under(roots, &text, "output dest") {
            Ok(dir) => return Ok(missing.iter().rev().fold(dir, |d, n| d.join(n))),
            Err(e) if e.kind == kind::CONTEXT_NOT_FOUND => {
                match at.components().next_back() {
                    Some(Component::Normal(n)) => missing.push(n.to_os_string()),
                    _ => return Err(e),
                }
                at.pop();
            }
            Err(e) => return Err(e),
        }
    }
}

fn bad(msg: String) -> ApiError {
    ApiError::bad(kind::INVALID_REQUEST, msg)
}

/// Check `spec`'s paths against the roots, write inline secrets to private files, then hand the
/// rewritten spec to the one resolver (`crate::resolve`) that the embedded engine uses too, and add
/// what only the daemon decides (its helper binary, its capacity share). `context_dir` is an
/// unpacked tar body, if any.
pub(super) fn prepare(
    config: &crate::config::Config,
    settings: &DaemonSettings,
    roots: &[PathBuf],
    spec: &BuildSpec,
    context_dir: Option<tempfile::TempDir>,
    secrets_root: &Path,
) -> Result<Prepared, ApiError> {
    let context_dir = match context_dir {
        // A package build reads no context: it gets an empty one.
        None if spec.packages.is_some() && spec.context.is_none() => Some(
            tempfile::Builder::new()
                .prefix("pkg-")
                .tempdir_in(secrets_root.with_file_name("contexts"))
                .or_else(|_| tempfile::tempdir())
                .map_err(ApiError::internal)?,
        ),
        d => d,
    };
    let context = match (&context_dir, &spec.context) {
        (Some(d), _) => d.path().to_path_buf(),
        (None, Some(c)) => resolve_under(roots, c, "context")?,
        (None, None) => {
            return Err(bad(
                "missing context: give \"context\" (a path under an allowed root) or send the context as an application/x-tar body".into(),
            ))
        }
    };
    if !context.is_dir() {
        return Err(ApiError::bad(
            kind::CONTEXT_NOT_FOUND,
            format!("context {} is not a directory", context.display()),
        ));
    }
    let mut local = spec.clone();
    local.context = Some(context.display().to_string());
    let mut dockerfile_text = spec.dockerfile_text.clone();
    if spec.dockerfile_text.is_none() && spec.packages.is_none() {
        // The Dockerfile may be a symlink, but never to outside the context (or the roots).
        let context_roots: Vec<PathBuf> = match &context_dir {
            Some(_) => vec![context.clone()],
            None => roots.to_vec(),
        };
        // Without one named: Dockerfile, else dockerfile, else Containerfile (as the CLI does).
        let default = crate::context::default_dockerfile(&context);
        let rel = match spec.dockerfile.as_deref() {
            Some(f) => f.to_string(),
            None => default
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Dockerfile".into()),
        };
        let joined = context.join(&rel).display().to_string();
        let path = resolve_under(&context_roots, &joined, "dockerfile")?;
        let meta = fs::metadata(&path).map_err(|e| {
            ApiError::bad(kind::CONTEXT_NOT_FOUND, format!("dockerfile {rel:?}: {e}"))
        })?;
        if meta.len() <= MAX_DOCKERFILE {
            dockerfile_text = fs::read_to_string(&path).ok();
        }
        local.dockerfile = Some(path.display().to_string());
    }
    let mut sensitive: Vec<String> = spec
        .registry_credentials
        .iter()
        .map(|c| c.password.clone())
        .collect();
    let secret_dir = local_secrets(&mut local, roots, secrets_root, &mut sensitive)?;
    let mut req = crate::resolve::resolve(&local, config).map_err(|e| bad(e.to_string()))?;
    if spec.packages.is_some() {
        dockerfile_text.clone_from(&req.dockerfile_text);
    }
    for out in &mut req.outputs {
        let (Output::Oci { dest } | Output::Docker { dest }) = out;
        *dest = resolve_dest(roots, &dest.to_string_lossy())?;
    }
    // Metadata files land in the caller's folders: under the roots only, like outputs.
    for p in req.metadata_files.paths_mut() {
        *p = resolve_dest(roots, &p.to_string_lossy())?;
    }
    // `type=local` caches read and write the caller's directories: under the roots only.
    for c in &mut req.cache_to {
        if let crate::cache::spec::ExportTarget::Local { dest, .. } = &mut c.target {
            *dest = resolve_dest(roots, &dest.to_string_lossy())?;
        }
    }
    for c in &mut req.cache_from {
        if let crate::cache::spec::ImportSource::Local { src, .. } = &mut c.source {
            *src = resolve_under(roots, &src.to_string_lossy(), "cache_from src")?;
        }
    }
    named_and_ssh_paths(roots, &mut req)?;
    req.sandbox.helper = settings.helper.clone();
    apply_capacity(settings, &spec.resources, &mut req)?;
    sensitive.retain(|s| s.len() >= 3);
    Ok(Prepared {
        req,
        dockerfile_text,
        sensitive,
        _secret_dir: secret_dir,
        _context_dir: context_dir,
    })
}

/// `build_contexts` directories and OCI layouts, and `ssh` sockets and key files: read by the
/// daemon on the caller's behalf, so under the roots like the main context.
fn named_and_ssh_paths(roots: &[PathBuf], req: &mut BuildRequest) -> Result<(), ApiError> {
    use crate::engine::NamedContext;
    for c in req.named_contexts.values_mut() {
        if let NamedContext::Local(p) | NamedContext::OciLayout { path: p, .. } = c {
            *p = resolve_under(roots, &p.to_string_lossy(), "build_contexts path")?;
        }
    }
    for s in &mut req.ssh {
        for p in &mut s.paths {
            *p = resolve_under(roots, &p.to_string_lossy(), "ssh path")?;
        }
    }
    Ok(())
}

/// Inline secret values → files in a private directory (deleted with the build); `src` paths
/// checked under the roots. `env` is refused: the daemon's environment is not the caller's.
fn local_secrets(
    spec: &mut BuildSpec,
    roots: &[PathBuf],
    secrets_root: &Path,
    sensitive: &mut Vec<String>,
) -> Result<Option<tempfile::TempDir>, ApiError> {
    let mut secret_dir: Option<tempfile::TempDir> = None;
    for (n, s) in spec.secrets.iter_mut().enumerate() {
        match (s.value.take(), &s.src, &s.env) {
            (Some(v), None, None) => {
                sensitive.push(v.clone());
                if secret_dir.is_none() {
                    fs::create_dir_all(secrets_root).map_err(ApiError::internal)?;
                    let d = tempfile::Builder::new()
                        .prefix("secrets-")
                        .tempdir_in(secrets_root)
                        .map_err(ApiError::internal)?;
                    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700))
                        .map_err(ApiError::internal)?;
                    secret_dir = Some(d);
                }
                let dir = secret_dir.as_ref().expect("created above").path();
                let path = dir.join(format!("secret-{n}"));
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(ApiError::internal)?;
                f.write_all(v.as_bytes()).map_err(ApiError::internal)?;
                s.src = Some(path.display().to_string());
            }
            (None, Some(p), None) => {
                s.src = Some(resolve_under(roots, p, "secret src")?.display().to_string())
            }
            (value, _, _) => {
                if let Some(v) = value {
                    sensitive.push(v);
                }
                return Err(bad(format!(
                    "secret {:?}: give exactly one of value or src (env is read on the client: send its value)",
                    s.id
                )));
            }
        }
    }
    Ok(secret_dir)
}

/// The daemon's share of the machine (`resources.capacity`, else `[daemon] capacity`): caps cpus,
/// memory and compression threads when the request does not set them.
fn apply_capacity(
    settings: &DaemonSettings,
    r: &api::Resources,
    req: &mut BuildRequest,
) -> Result<(), ApiError> {
    let capacity = r.capacity.or(settings.capacity);
    if let Some(cap) = capacity {
        if !(1..=100).contains(&cap) {
            return Err(bad(format!(
                "resources.capacity must be 1-100 (%), got {cap}"
            )));
        }
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let share = cpus * f64::from(cap) / 100.0;
        req.sandbox.resources.cpus.get_or_insert(share.max(0.1));
        req.threads = (share.floor() as usize).max(1);
        if req.sandbox.resources.memory.is_none() {
            if let Some(total) = mem_total() {
                req.sandbox.resources.memory = Some(total / 100 * u64::from(cap));
            }
        }
    } else if let Some(p) = settings.max_parallelism {
        req.threads = p.max(1);
    }
    Ok(())
}

fn mem_total() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused_and_symlinks_followed() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("build");
        fs::create_dir_all(root.join("app")).unwrap();
        fs::create_dir_all(base.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(base.path().join("secret"), root.join("evil")).unwrap();
        std::os::unix::fs::symlink(root.join("app"), root.join("good")).unwrap();
        let roots = canonical_roots(std::slice::from_ref(&root));
        assert!(resolve_under(&roots, "app", "context").is_ok());
        assert!(resolve_under(&roots, "good", "context").is_ok());
        for p in [
            "../secret",
            "evil",
            "/etc",
            "app/../../secret",
            "nope/../../x",
        ] {
            let e = resolve_under(&roots, p, "context").unwrap_err();
            assert_eq!(e.kind, kind::CONTEXT_OUTSIDE_ROOTS, "{p}: {}", e.message);
        }
    }
}
