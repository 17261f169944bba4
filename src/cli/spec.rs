//! `kiln build` flags → the API's `BuildSpec`, the one form every build request takes (the low half
//! of ripgrep's split). A flag not typed stays `None`; kiln.toml and kiln's defaults are filled in by
//! `crate::resolve`, the same resolver the daemon runs, so a build makes the same image whether or not
//! a daemon answers.
//!
//! Must not: apply a default or read kiln.toml (that is the resolver's job), or print a secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::BuildArgs;
use crate::api::{self, BuildSpec};

/// Who will read the spec's paths: this process, or a daemon that sees only what is under its
/// context roots (secrets are then sent inline, Dockerfiles outside the context as text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reader {
    Local,
    Daemon,
}

/// The spec `kiln build` asks for.
pub(super) fn from_flags(args: &BuildArgs, reader: Reader) -> Result<BuildSpec> {
    let context = std::fs::canonicalize(&args.df.context)
        .with_context(|| format!("context {}", args.df.context.display()))?;
    let mut spec = BuildSpec {
        context: Some(context.display().to_string()),
        tags: args.tags.clone(),
        build_args: super::parse_kv(&args.df.build_args, "--build-arg", true)?,
        labels: super::parse_kv(&args.labels, "--label", false)?,
        target: args.df.target.clone(),
        no_cache: args.no_cache,
        no_pull: args.no_pull,
        push: args.push,
        compression: args.compression.clone(),
        compression_level: args.compression_level,
        source_date_epoch: args.source_date_epoch,
        sandbox: args.sandbox.clone(),
        snapshotter: args.snapshotter.clone(),
        network: args.network.clone(),
        step_timeout: args.step_timeout,
        outputs: args.outputs.iter().map(|o| absolute_output(o)).collect(),
        insecure_registries: api::HostList(args.registry.insecure.clone()),
        cache_from: args.cache_from.iter().map(|c| absolute_paths(c)).collect(),
        cache_to: args.cache_to.iter().map(|c| absolute_paths(c)).collect(),
        platforms: args.platforms.clone(),
        ..BuildSpec::default()
    };
    let a = &args.attest;
    spec.provenance = a.provenance.clone();
    spec.sbom = a.sbom.clone();
    spec.attest = a.attest.clone();
    spec.annotations = a.annotations.clone();
    let file = |p: &Option<PathBuf>| p.as_ref().map(|p| absolute(p).display().to_string());
    spec.iidfile = file(&a.iidfile);
    spec.metadata_file = file(&a.metadata_file);
    spec.digest_file = file(&a.digest_file);
    spec.image_name_with_digest_file = file(&a.image_name_with_digest_file);
    spec.resources.cpus = args.cpus;
    spec.resources.memory = args.memory.clone().map(api::Memory::Text);
    for c in &args.registry.credentials {
        let (host, user, password) = crate::registry::parse_credential_flag(c)?;
        spec.registry_credentials.push(api::Credential {
            host,
            user,
            password,
        });
    }
    if let Some(f) = &args.df.file {
        let abs =
            std::fs::canonicalize(f).with_context(|| format!("Dockerfile {}", f.display()))?;
        match (reader, abs.strip_prefix(&context)) {
            (Reader::Local, _) => spec.dockerfile = Some(abs.display().to_string()),
            (Reader::Daemon, Ok(rel)) => spec.dockerfile = Some(rel.display().to_string()),
            (Reader::Daemon, Err(_)) => {
                spec.dockerfile_text = Some(
                    std::fs::read_to_string(&abs)
                        .with_context(|| format!("reading Dockerfile {}", abs.display()))?,
                )
            }
        }
    }
    if let Some(text) = &args.stdin_dockerfile {
        spec.dockerfile = None;
        spec.dockerfile_text = Some(text.clone());
    }
    for s in &args.secrets {
        spec.secrets.push(secret(s, reader)?);
    }
    ci_flags(args, &mut spec)?;
    spec.packages = args.packages.packages()?;
    spec.catalog = args.packages.catalog();
    if spec.catalog.is_some() && reader == Reader::Local {
        bail!("--catalog: the catalog lives in the daemon; build through one (--host unix:///path/to/kiln.sock)");
    }
    if spec.packages.is_some() && reader == Reader::Daemon && args.df.context == Path::new(".") {
        // A package build reads no context: the daemon makes an empty one.
        spec.context = None;
    }
    Ok(spec)
}

/// `--build-context`, `--ssh`, `--add-host`, `--pull`, `--no-cache-filter`, `--shm-size`,
/// `--ulimit`: as typed, with paths made absolute and `--ssh default` given its socket.
fn ci_flags(args: &BuildArgs, spec: &mut BuildSpec) -> Result<()> {
    spec.add_hosts = args.add_hosts.clone();
    spec.pull = args.pull;
    spec.no_cache_filter = args.no_cache_filter.clone();
    spec.shm_size = args.shm_size.clone().map(api::Memory::Text);
    spec.ulimits = args.ulimits.clone();
    for v in &args.ssh {
        spec.ssh
            .push(ssh_flag(v, std::env::var("SSH_AUTH_SOCK").ok())?);
    }
    spec.build_contexts = build_contexts(&args.build_contexts)?;
    Ok(())
}

/// `--build-context NAME=VALUE` values (`kiln build`, `kiln plan`), local paths made absolute.
pub(super) fn build_contexts(values: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for v in values {
        let Some((name, value)) = v.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            bail!("invalid --build-context {v:?}: expected NAME=VALUE");
        };
        let value = match value.strip_prefix("oci-layout://") {
            Some(rest) => format!("oci-layout://{}", absolute(Path::new(rest)).display()),
            None if value.contains("://") => value.to_string(),
            None => absolute(Path::new(value.strip_prefix("local:").unwrap_or(value)))
                .display()
                .to_string(),
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

/// buildx's `--ssh`: `default` or a bare `ID` is the agent at `$SSH_AUTH_SOCK`; `ID=P[,P]` paths
/// (sockets or key files) are made absolute.
fn ssh_flag(v: &str, auth_sock: Option<String>) -> Result<String> {
    let (id, paths) = match v.split_once('=') {
        Some((id, p)) => (id, p.to_string()),
        None => match auth_sock.filter(|s| !s.is_empty()) {
            Some(sock) => (v, sock),
            None => bail!(
                "--ssh {v}: SSH_AUTH_SOCK is not set (start ssh-agent, or give {v}=SOCKET|KEYFILE)"
            ),
        },
    };
    let paths: Vec<String> = paths
        .split(',')
        .map(|p| absolute(Path::new(p)).display().to_string())
        .collect();
    Ok(format!("{id}={}", paths.join(",")))
}

/// `--secret id=ID,src=PATH|env=VAR`: by reference for this process, by value for a daemon.
fn secret(flag: &str, reader: Reader) -> Result<api::SecretSpec> {
    let src: crate::engine::SecretSource = flag.parse().map_err(anyhow::Error::msg)?;
    let mut spec = api::SecretSpec {
        id: src.id.clone(),
        value: None,
        src: None,
        env: None,
    };
    match (reader, &src.src, &src.env) {
        (Reader::Local, Some(p), _) => spec.src = Some(absolute(p).display().to_string()),
        (Reader::Local, None, Some(v)) => spec.env = Some(v.clone()),
        (Reader::Daemon, Some(p), _) => {
            spec.value = Some(
                std::fs::read_to_string(p).with_context(|| format!("reading secret {}", src.id))?,
            )
        }
        (Reader::Daemon, None, Some(v)) => spec.value = Some(std::env::var(v).unwrap_or_default()),
        (_, None, None) => bail!("--secret {}: give src= or env=", src.id),
    }
    Ok(spec)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// `type=…,dest=REL` → `dest=ABS`, so the destination means the same to a daemon.
fn absolute_output(o: &str) -> String {
    absolute_paths(o)
}

/// `dest=REL` / `src=REL` fields of a BuildKit CSV value (`--output`, `--cache-to`,
/// `--cache-from`) made absolute; a bare reference is left alone.
fn absolute_paths(o: &str) -> String {
    if !o.contains('=') {
        return o.to_string();
    }
    o.split(',')
        .map(|f| match f.split_once('=') {
            Some((k @ ("dest" | "src"), d)) => {
                format!("{k}={}", absolute(Path::new(d)).display())
            }
            _ => f.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
