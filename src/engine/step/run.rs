//! RUN steps: a writable layer over the stage's root filesystem, the command in the sandbox with its
//! `--mount`s, and the change set turned into a layer. Secrets and cache mounts live outside the
//! snapshot, so they can never reach the layer; build args reach the environment but not the config.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::engine::request::SecretSource;
use crate::exec::{self, ExtraMount, SandboxSpec};
use crate::layer::{self, ChangeSet};
use crate::plan::{self, Mount, Step};
use crate::snapshot::{self, Snapshotter};

/// What a RUN step needs from the engine besides the step itself.
pub(crate) struct RunContext<'a> {
    pub sandbox: &'a exec::SandboxConfig,
    pub probe: &'a exec::Probe,
    pub rung: exec::Rung,
    /// The stage's committed snapshots, top-most first.
    pub lowers: &'a [PathBuf],
    pub scratch: &'a Path,
    pub context_dir: &'a Path,
    pub stage_roots: &'a BTreeMap<usize, PathBuf>,
    /// Cache mounts live in the store (`cache::mounts`), which records each use for GC.
    pub store: &'a crate::store::Store,
    pub secrets: &'a [SecretSource],
    /// Local `--build-context` directories (`--mount from=NAME`).
    pub named: &'a BTreeMap<String, crate::context::SourceRoot>,
    pub ssh: &'a crate::engine::ssh::Agents,
    pub cancel: &'a exec::Cancel,
    /// Network, limits, timeout; `--add-host`, `--shm-size`, `--ulimit`.
    pub options: &'a crate::engine::SandboxOptions,
    /// The static emulator to run the step through (a foreign platform with no binfmt handler).
    pub emulator: Option<&'a Path>,
}

/// The emulator a RUN step of stage `index` runs through, when its platform is foreign and the
/// kernel has no binfmt_misc handler for it (decided before the build, `platforms.rs`).
pub(crate) fn emulator<'a>(
    inputs: &'a crate::engine::inputs::Inputs<'_>,
    index: usize,
) -> Option<&'a Path> {
    let arch = &inputs.plan.stages[index].platform.architecture;
    match inputs.runners.get(arch) {
        Some(exec::Runner::Mount(p)) => Some(p.as_path()),
        _ => None,
    }
}

/// How a foreign-platform RUN step is emulated, for its log (None: the host's platform).
pub(crate) fn emulation_line(
    inputs: &crate::engine::inputs::Inputs<'_>,
    index: usize,
) -> Option<String> {
    let platform = &inputs.plan.stages[index].platform;
    let via = match inputs.runners.get(&platform.architecture)? {
        exec::Runner::Native => return None,
        exec::Runner::Binfmt(name) => format!("the kernel's binfmt_misc handler {name}"),
        exec::Runner::Mount(p) => format!("{} (mounted read-only)", p.display()),
    };
    Some(format!("emulated {platform}: through {via}"))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("reading the step's changes")]
    Layer(#[from] layer::LayerError),
    #[error("--mount {0}")]
    Mount(String),
    #[error("secret {id:?}: {why}")]
    Secret { id: String, why: String },
    #[error("--mount type=ssh")]
    Ssh(#[from] crate::engine::ssh::SshError),
    #[error("--mount type=ssh,id={id}: giving the socket to uid={uid},gid={gid} in the {rung} sandbox rung")]
    SshOwner {
        id: String,
        uid: u32,
        gid: u32,
        rung: exec::Rung,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] crate::report::IoError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunError {
    let at = crate::report::IoError::at(action, path);
    move |source| RunError::Io(at(source))
}

/// Run the step; returns the change set (pointing into `scratch`) for the layer writer, and the
/// upper directory when it holds exactly that layer in overlayfs' format (it can then become the
/// next committed snapshot once the layer is written).
pub(crate) fn run_step(
    ctx: &RunContext<'_>,
    step: &Step,
    run: &plan::Run,
    on_line: &mut dyn FnMut(String),
) -> Result<(ChangeSet, Option<PathBuf>), RunError> {
    // Not removed here: the change set points into the active's upper directory until the layer
    // is written; the engine deletes the whole scratch directory after that.
    let active = Snapshotter::new(ctx.probe.snapshotter, ctx.probe.userxattr)?
        .prepare(ctx.lowers, &ctx.scratch.join("snapshot"))?;
    let shell = if step.shell.is_empty() {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    } else {
        step.shell.clone()
    };
    let mut spec = SandboxSpec::new(active.mounts(), run.argv(&shell), ctx.rung);
    spec.env = step
        .run_env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    spec.cwd = if step.workdir.is_empty() {
        "/".into()
    } else {
        step.workdir.clone()
    };
    spec.user = (!step.user.is_empty()).then(|| step.user.clone());
    spec.network = match run.network {
        plan::Network::None => exec::Network::None,
        plan::Network::Host => exec::Network::Host,
        plan::Network::Default => ctx.options.network,
    };
    spec.resources = ctx.options.resources;
    spec.extra_hosts = ctx.options.extra_hosts.clone();
    spec.shm_size = ctx.options.shm_size;
    spec.ulimits = ctx.options.ulimits.clone();
    spec.timeout = ctx.options.step_timeout;
    spec.emulator = ctx.emulator.map(Path::to_path_buf);
    // `sharing=locked` cache mounts: held exclusively until the step ends.
    let mut _locks = Vec::new();
    for (i, m) in run.mounts.iter().enumerate() {
        _locks.extend(add_mount(ctx, &mut spec, m, i)?);
    }
    add_platform_ca(ctx, &mut spec)?;
    let result = exec::run(ctx.sandbox, &spec, ctx.cancel, &mut |l| on_line(l.0));
    // Secret files copied for env= secrets are removed whatever happened.
    let _ = fs::remove_dir_all(ctx.scratch.join("secrets"));
    let outcome = result?;
    let mut set = ChangeSet::new();
    for c in active.diff()? {
        set.push(match c {
            snapshot::Change::Added { path, on_disk }
            | snapshot::Change::Modified { path, on_disk } => layer::Change::Add {
                path: path.to_string_lossy().into_owned(),
                source: on_disk,
            },
            snapshot::Change::Deleted { path } => layer::Change::Whiteout {
                path: path.to_string_lossy().into_owned(),
            },
            snapshot::Change::Opaque { dir } => layer::Change::Opaque {
                dir: dir.to_string_lossy().into_owned(),
            },
        });
    }
    // Owners the single-uid rung only recorded are in the layer, not on disk.
    let upper = active
        .commit_dir()
        .filter(|_| outcome.recorded_chowns.is_empty() && ctx.rung != exec::Rung::SingleUid)
        .map(Path::to_path_buf);
    apply_recorded_chowns(&mut set, &outcome.recorded_chowns);
    Ok((set, upper))
}

/// CA injection: the platform's bundle bound at `exec::CA_TARGET` (and by exec over the image's
/// CA files), the CA and proxy variables in the step's environment only.
fn add_platform_ca(ctx: &RunContext<'_>, spec: &mut SandboxSpec) -> Result<(), RunError> {
    let out = ctx.scratch.join("ca-bundle.crt");
    let ca = if ctx.sandbox.ca_injection {
        exec::platform_ca_bundle(Path::new(exec::PLATFORM_CA_DIR), &out)
            .map_err(io("writing the platform CA bundle", &out))?
    } else {
        None
    };
    exec::step_env(&mut spec.env, ca.is_some(), |k| std::env::var(k).ok());
    if let Some(source) = ca {
        spec.mounts.push(ExtraMount::Bind {
            source,
            target: exec::CA_TARGET.into(),
            readonly: true,
        });
    }
    Ok(())
}

/// The single-uid rung records chowns instead of applying them: they become owners in the layer.
/// Paths the step did not add or change (in mounts, deleted or renamed since) own nothing here.
fn apply_recorded_chowns(set: &mut ChangeSet, chowns: &[exec::RecordedChown]) {
    if chowns.is_empty() {
        return;
    }
    let added: std::collections::HashSet<String> = set
        .iter()
        .filter_map(|c| match c {
            layer::Change::Add { path, .. } => Some(path.trim_start_matches('/').to_string()),
            _ => None,
        })
        .collect();
    for c in chowns {
        let path = c.path.trim_start_matches('/');
        if added.contains(path) {
            set.set_owner(path, c.uid, c.gid);
        }
    }
}

fn source_root(ctx: &RunContext<'_>, from: &Option<plan::CopySource>) -> Result<PathBuf, RunError> {
    match from {
        None => Ok(ctx.context_dir.to_path_buf()),
        Some(plan::CopySource::Stage(i)) => ctx
            .stage_roots
            .get(i)
            .cloned()
            .ok_or_else(|| RunError::Mount(format!("from=stage {i}: the stage was not built"))),
        Some(plan::CopySource::Context(key)) => ctx
            .named
            .get(key)
            .map(|r| r.root().to_path_buf())
            .ok_or_else(|| RunError::Mount(format!("from={key}: no such named context"))),
        Some(plan::CopySource::Image(r)) => Err(RunError::Mount(format!(
            "from={r}: mounting an image that is not a stage of this Dockerfile is not supported yet"
        ))),
    }
}

/// `source=` inside a mount's root, never escaping it.
fn inside(root: &Path, source: &Option<String>) -> Result<PathBuf, RunError> {
    let rel = source.as_deref().unwrap_or("");
    let sr = crate::context::SourceRoot::rootfs(root);
    let p = sr
        .resolve_in_root(Path::new(rel))
        .map_err(|e| RunError::Mount(e.to_string()))?;
    if !p.exists() {
        return Err(RunError::Mount(format!("source {rel:?} does not exist")));
    }
    Ok(p)
}

/// What a mount keeps for as long as the step runs (dropped after it).
enum Held {
    /// A `sharing=locked` cache's lock.
    Lock { _file: fs::File },
    /// An ssh mount's proxy socket.
    Proxy { _proxy: crate::engine::ssh::Proxy },
}

/// Adds `m` to the sandbox's mounts; returns what must be held for the step (a `sharing=locked`
/// cache's lock, an ssh proxy).
fn add_mount(
    ctx: &RunContext<'_>,
    spec: &mut SandboxSpec,
    m: &Mount,
    i: usize,
) -> Result<Option<Held>, RunError> {
    match m {
        Mount::Bind { .. } => add_bind(ctx, spec, m, i)?,
        Mount::Cache { .. } => return Ok(add_cache(ctx, spec, m)?.map(|f| Held::Lock { _file: f })),
        Mount::Tmpfs { target, size } => spec.mounts.push(ExtraMount::Tmpfs {
            target: target.clone(),
            size: size.map(|s| s.max(0) as u64),
        }),
        Mount::Secret { .. } => add_secret(ctx, spec, m, i)?,
        Mount::Ssh { .. } => return add_ssh(ctx, spec, m, i),
    }
    Ok(None)
}

/// `--mount=type=ssh`: a proxy socket to the `--ssh` agent of the id at `target`, and
/// `SSH_AUTH_SOCK` naming it when the step has none (BuildKit's `AddSSHSocket` sets it to the
/// first ssh mount). An optional mount whose id was not given is left out, as BuildKit's.
fn add_ssh(
    ctx: &RunContext<'_>,
    spec: &mut SandboxSpec,
    m: &Mount,
    i: usize,
) -> Result<Option<Held>, RunError> {
    let Mount::Ssh {
        id,
        target,
        required,
        mode,
        uid,
        gid,
    } = m
    else {
        unreachable!("add_mount passes ssh mounts")
    };
    let Some(agent) = ctx.ssh.socket(id) else {
        if *required {
            return Err(RunError::Mount(format!(
                "type=ssh,id={id} is required but no --ssh {id}=… was given"
            )));
        }
        return Ok(None);
    };
    // Only the single-uid rung gives the step a user namespace of its own (one id); the others
    // share kiln's ids, so the socket chowned here is owned by uid/gid inside the step too.
    if (*uid, *gid) != (0, 0) && ctx.rung == exec::Rung::SingleUid {
        return Err(RunError::Mount(format!(
            "type=ssh,id={id}: uid={uid},gid={gid} cannot be given to the socket in the {} \
             sandbox rung (it maps one id; only 0 works there)",
            ctx.rung
        )));
    }
    // In a directory only kiln's user enters, whatever mode the mount gives the socket.
    let dir = ctx.scratch.join("ssh");
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io("securing", &dir))?;
    let path = dir.join(format!("{i}.sock"));
    let proxy = crate::engine::ssh::Proxy::start(agent, &path, *mode)?;
    if (*uid, *gid) != (0, 0) {
        std::os::unix::fs::chown(&path, Some(*uid), Some(*gid)).map_err(|source| {
            RunError::SshOwner {
                id: id.clone(),
                uid: *uid,
                gid: *gid,
                rung: ctx.rung,
                source,
            }
        })?;
    }
    spec.mounts.push(ExtraMount::Bind {
        source: path,
        target: target.clone(),
        readonly: false,
    });
    if !spec.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
        spec.env.push(format!("SSH_AUTH_SOCK={target}"));
    }
    Ok(Some(Held::Proxy { _proxy: proxy }))
}

/// `--mount=type=bind`: read-only as it is, read-write as a copy whose writes are discarded.
fn add_bind(
    ctx: &RunContext<'_>,
    spec: &mut SandboxSpec,
    m: &Mount,
    i: usize,
) -> Result<(), RunError> {
    let Mount::Bind {
        target,
        source,
        from,
        readonly,
    } = m
    else {
        unreachable!("add_mount passes binds")
    };
    let src = inside(&source_root(ctx, from)?, source)?;
    let src = if *readonly {
        src
    } else {
        // BuildKit discards writes to a rw bind mount: give the step a copy.
        let copy = ctx.scratch.join(format!("bind-{i}"));
        if src.is_dir() {
            snapshot::copy_tree(&src, &copy)?;
        } else {
            fs::copy(&src, &copy).map_err(io("copying", &src))?;
        }
        copy
    };
    spec.mounts.push(ExtraMount::Bind {
        source: src,
        target: target.clone(),
        readonly: *readonly,
    });
    Ok(())
}

/// `--mount=type=cache`: the cache id's directory, kept across builds; returns the lock of a
/// `sharing=locked` (or `private`) cache.
fn add_cache(
    ctx: &RunContext<'_>,
    spec: &mut SandboxSpec,
    m: &Mount,
) -> Result<Option<fs::File>, RunError> {
    let Mount::Cache {
        target,
        id,
        mode,
        uid,
        gid,
        readonly,
        sharing,
        ..
    } = m
    else {
        unreachable!("add_mount passes caches")
    };
    // One directory per cache id, kept across builds, never part of a layer.
    let dir = crate::cache::mounts::used(ctx.store, id)
        .map_err(|e| RunError::Mount(format!("recording cache mount {id:?}: {e}")))?;
    if !dir.exists() {
        fs::create_dir_all(&dir).map_err(io("creating cache", &dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(*mode))
            .map_err(io("setting the mode of", &dir))?;
        let _ = std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid));
    }
    if *readonly {
        spec.mounts.push(ExtraMount::Bind {
            source: dir,
            target: target.clone(),
            readonly: true,
        });
    } else {
        // `locked` (and `private`: BuildKit gives it a fresh directory when the cache is
        // busy; kiln waits for it instead, same isolation) take an exclusive flock for the
        // step, so parallel stages and concurrent daemon builds never share a writer.
        let lock = if *sharing != plan::Sharing::Shared {
            let path = dir.with_extension("lock");
            let f = fs::File::create(&path).map_err(io("creating", &path))?;
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| io("locking", &path)(e.into()))?;
            Some(f)
        } else {
            None
        };
        spec.mounts.push(ExtraMount::Cache {
            source: dir,
            target: target.clone(),
        });
        return Ok(lock);
    }
    Ok(None)
}

/// `--mount=type=secret`: a file (from `--secret src=` or `env=`), an environment variable, or
/// both; nothing when an optional secret was not given.
fn add_secret(
    ctx: &RunContext<'_>,
    spec: &mut SandboxSpec,
    m: &Mount,
    i: usize,
) -> Result<(), RunError> {
    let Mount::Secret {
        id,
        target,
        env,
        required,
        mode,
        uid,
        gid,
    } = m
    else {
        unreachable!("add_mount passes secrets")
    };
    let Some(src) = ctx.secrets.iter().find(|s| &s.id == id) else {
        if *required {
            return Err(RunError::Secret {
                id: id.clone(),
                why: "required but not given (--secret id=ID,src=PATH)".into(),
            });
        }
        return Ok(());
    };
    let value_file = match (&src.src, &src.env) {
        (Some(p), _) => p.clone(),
        (None, Some(var)) => {
            let value = std::env::var(var).map_err(|_| RunError::Secret {
                id: id.clone(),
                why: format!("environment variable {var} is not set"),
            })?;
            let dir = ctx.scratch.join("secrets");
            fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(io("securing", &dir))?;
            let f = dir.join(format!("{i}"));
            fs::write(&f, value).map_err(io("writing secret", &f))?;
            f
        }
        (None, None) => unreachable!("SecretSource always has src or env"),
    };
    if let Some(var) = env {
        let value = fs::read_to_string(&value_file).map_err(|e| RunError::Secret {
            id: id.clone(),
            why: format!("reading {}: {e}", value_file.display()),
        })?;
        spec.env
            .push(format!("{var}={}", value.trim_end_matches('\n')));
    }
    let target = match (target, env) {
        (Some(t), _) => Some(t.clone()),
        (None, None) => Some(format!("/run/secrets/{id}")),
        (None, Some(_)) => None,
    };
    if let Some(target) = target {
        spec.mounts.push(ExtraMount::Secret {
            source: value_file,
            target,
            mode: *mode,
            uid: *uid,
            gid: *gid,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_flags_parse_like_buildkit_and_debug_shows_no_value() {
        let s: SecretSource = "id=tok,src=/run/tok".parse().unwrap();
        assert_eq!(s.src.as_deref(), Some(Path::new("/run/tok")));
        let s: SecretSource = "id=API_KEY".parse().unwrap();
        assert_eq!(s.env.as_deref(), Some("API_KEY"));
        assert!("src=/x".parse::<SecretSource>().is_err());
        assert_eq!(format!("{s:?}"), "SecretSource(API_KEY, env=API_KEY)");
    }
}
