//! Turning a wire `BuildSpec` into a validated `engine::BuildRequest`: paths resolved under the
//! allowed roots (symlinks followed, escapes refused), tags, outputs, secrets and limits checked.
//! Everything a client can get wrong is a 4xx here, before the build is accepted.
//!
//! Must not: run the build or keep credentials anywhere but the in-memory `Prepared`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::api::{self, kind, BuildSpec, Memory};
use crate::engine::{BuildRequest, Output, SecretSource};
use crate::layer::Compression;
use crate::reference::Reference;

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
    // A missing parent is created (owned by the caller) when the build runs: super::outputs.
    let dir = super::outputs::resolve_parent(roots, &parent)?;
    let full = dir.join(name);
    if let Ok(meta) = fs::symlink_metadata(&full) {
        if meta.file_type().is_symlink() {
            // Writing through a symlink could land anywhere.
            return Err(outside("output dest", p, roots));
        }
    }
    Ok(full)
}

fn bad(msg: String) -> ApiError {
    ApiError::bad(kind::INVALID_REQUEST, msg)
}

/// Validate `spec` and build the engine's request. `context_dir` is an unpacked tar body, if any.
pub(super) fn prepare(
    config: &crate::config::Config,
    settings: &DaemonSettings,
    roots: &[PathBuf],
    spec: &BuildSpec,
    context_dir: Option<tempfile::TempDir>,
    secrets_root: &Path,
) -> Result<Prepared, ApiError> {
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
    let mut req = BuildRequest::new(&context);
    let context_roots: Vec<PathBuf> = match &context_dir {
        Some(_) => vec![context.clone()],
        None => roots.to_vec(),
    };
    let mut dockerfile_text = spec.dockerfile_text.clone();
    if let Some(t) = &spec.dockerfile_text {
        if t.trim().is_empty() {
            return Err(bad("dockerfile_text is empty".into()));
        }
        req.dockerfile_text = Some(t.clone());
    } else {
        let rel = spec.dockerfile.as_deref().unwrap_or("Dockerfile");
        let joined = context.join(rel).display().to_string();
        let path = resolve_under(&context_roots, &joined, "dockerfile")?;
        let meta = fs::metadata(&path).map_err(|e| {
            ApiError::bad(kind::CONTEXT_NOT_FOUND, format!("dockerfile {rel:?}: {e}"))
        })?;
        if meta.len() <= MAX_DOCKERFILE {
            dockerfile_text = fs::read_to_string(&path).ok();
        }
        req.dockerfile = Some(path);
    }

    req.tags = spec.all_tags();
    for t in &req.tags {
        t.parse::<Reference>()
            .map_err(|e| bad(format!("invalid tag {t:?}: {e}")))?;
    }
    if spec.push && req.tags.is_empty() {
        return Err(bad(
            "push needs at least one tag (tags, or name and tag)".into()
        ));
    }
    for (what, map) in [("build_args", &spec.build_args), ("labels", &spec.labels)] {
        if map.keys().any(|k| k.is_empty() || k.contains('=')) {
            return Err(bad(format!(
                "{what}: keys must be non-empty and contain no '='"
            )));
        }
    }
    req.build_args = spec.build_args.clone();
    req.labels = spec.labels.clone();
    req.target = spec.target.clone();
    for o in &spec.outputs {
        let out: Output = o.parse().map_err(|e| bad(format!("{e}")))?;
        req.outputs.push(match out {
            Output::Oci { dest } => Output::Oci {
                dest: resolve_dest(roots, &dest.to_string_lossy())?,
            },
            Output::Docker { dest } => Output::Docker {
                dest: resolve_dest(roots, &dest.to_string_lossy())?,
            },
        });
    }
    if let Some(c) = &spec.compression {
        req.compression = c
            .parse::<Compression>()
            .map_err(|e| bad(format!("invalid compression {c:?}: {e}")))?;
    }
    req.compression_level = spec.compression_level;
    req.source_date_epoch = spec.source_date_epoch;
    // kiln.toml's [worker.oci] sandbox / snapshotter, unless the request chooses.
    if let Some(r) = spec.sandbox.as_ref().or(config.worker.sandbox.as_ref()) {
        req.sandbox.rung = Some(r.parse().map_err(bad)?);
    }
    if let Some(s) = spec
        .snapshotter
        .as_ref()
        .or(config.worker.snapshotter.as_ref())
    {
        req.sandbox.snapshotter = s.parse().map_err(bad)?;
    }
    req.sandbox.step_timeout = spec.step_timeout.map(std::time::Duration::from_secs);
    req.sandbox.helper = settings.helper.clone();
    req.sandbox.network = match spec.network.as_deref() {
        None | Some("default") | Some("host") => crate::exec::Network::Host,
        Some("none") => crate::exec::Network::None,
        Some(o) => return Err(bad(format!("invalid network {o:?} (default, host, none)"))),
    };
    apply_resources(settings, &spec.resources, &mut req)?;

    let mut sensitive = Vec::new();
    for c in &spec.registry_credentials {
        if c.host.trim().is_empty() || c.user.is_empty() || c.password.is_empty() {
            return Err(bad(format!(
                "registry_credentials entry for {:?}: host, user and password must all be given",
                c.host
            )));
        }
        sensitive.push(c.password.clone());
    }
    let mut insecure_hosts = spec.insecure_registries.0.clone();
    for h in &insecure_hosts {
        if h.contains("://") || h.contains('/') || h.contains(char::is_whitespace) {
            return Err(bad(format!(
                "insecure_registries: {h:?} is not a host[:port]"
            )));
        }
    }
    if spec.insecure_registry {
        for t in &req.tags {
            if let Ok(r) = t.parse::<Reference>() {
                insecure_hosts.push(r.store_name().split('/').next().unwrap_or("").to_string());
            }
        }
    }

    let mut secret_dir = None;
    let mut ids = BTreeSet::new();
    for s in &spec.secrets {
        if s.id.is_empty() || !ids.insert(s.id.clone()) {
            return Err(bad(format!("secret id {:?} is empty or repeated", s.id)));
        }
        let src = match (&s.value, &s.src) {
            (Some(v), None) => {
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
                let dir = secret_dir
                    .as_ref()
                    .map(|d| d.path())
                    .unwrap_or(secrets_root);
                let path = dir.join(format!("secret-{}", ids.len()));
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(ApiError::internal)?;
                f.write_all(v.as_bytes()).map_err(ApiError::internal)?;
                path
            }
            (None, Some(p)) => resolve_under(roots, p, "secret src")?,
            _ => {
                return Err(bad(format!(
                    "secret {:?}: give exactly one of value or src",
                    s.id
                )))
            }
        };
        req.secrets.push(SecretSource {
            id: s.id.clone(),
            src: Some(src),
            env: None,
        });
    }
    sensitive.retain(|s| s.len() >= 3);
    let mut credentials = crate::registry::Credentials::new();
    for c in &spec.registry_credentials {
        // `push:host` / `pull:host` give separate credentials for the same registry.
        let (purpose, host) = if let Some(h) = c.host.strip_prefix("push:") {
            (crate::registry::Purpose::Push, h)
        } else if let Some(h) = c.host.strip_prefix("pull:") {
            (crate::registry::Purpose::Pull, h)
        } else {
            (crate::registry::Purpose::Any, c.host.as_str())
        };
        credentials.add_for(purpose, host.trim(), &c.user, &c.password);
    }
    req.push = spec.push;
    req.no_cache = spec.no_cache;
    req.pull = !spec.no_pull;
    req.registry = crate::engine::RegistryAccess {
        config: config.clone(),
        credentials,
        insecure: insecure_hosts,
    };
    Ok(Prepared {
        req,
        dockerfile_text,
        sensitive,
        _secret_dir: secret_dir,
        _context_dir: context_dir,
    })
}

fn apply_resources(
    settings: &DaemonSettings,
    r: &api::Resources,
    req: &mut BuildRequest,
) -> Result<(), ApiError> {
    if let Some(c) = r.cpus {
        if !(c > 0.0 && c.is_finite()) {
            return Err(bad(format!("resources.cpus must be > 0, got {c}")));
        }
        req.sandbox.resources.cpus = Some(c);
    }
    if let Some(m) = &r.memory {
        let bytes = match m {
            Memory::Bytes(b) => *b,
            Memory::Text(t) => parse_bytes(t)
                .ok_or_else(|| bad(format!("resources.memory {t:?} is not a size (512m, 2g)")))?,
        };
        if bytes < 4 << 20 {
            return Err(bad(format!(
                "resources.memory {bytes} bytes is below the 4 MiB minimum"
            )));
        }
        req.sandbox.resources.memory = Some(bytes);
    }
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

/// `512m`, `2g`, `1048576` → bytes.
pub(super) fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n >= 0.0 && n.is_finite()).then_some((n * mult as f64) as u64)
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
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("x"), None);
    }
}
