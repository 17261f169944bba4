//! `kiln pull REF`, `kiln push REF [DEST]` and `kiln login HOST`: flags → a registry client →
//! progress lines on stderr. The lead's `Command` enum holds the `Args` structs and calls the
//! `cmd_*` handlers.
//!
//! Must not: speak the registry protocol itself or print a credential.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::out::{err, errln, outln};
use crate::config::Config;
use crate::image::{Descriptor, Platform};
use crate::reference::Reference;
use crate::registry::{
    self, login_store, BlobOutcome, Credentials, DockerConfig, Progress, RegistryClient,
};
use crate::store::Store;

/// Flags shared by pull and push.
#[derive(Args, Debug, Clone, Default)]
pub(super) struct RegistryFlags {
    /// Credential for a registry: [pull:|push:]HOST=USER:PASSWORD (repeatable; most specific
    /// first). Prefer `kiln login`: flags are visible in the process list.
    #[arg(
        long = "registry-credential",
        value_name = "[pull:|push:]HOST=USER:PASSWORD"
    )]
    pub credentials: Vec<String>,
    /// Treat HOST as insecure: TLS without verification, or plain HTTP (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
    /// Print nothing but the result.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub(super) struct PullArgs {
    /// Image reference (`busybox`, `host:5000/team/app:1`, `repo@sha256:…`).
    pub reference: String,
    /// Platform os/arch[/variant] to choose from a multi-platform image (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub flags: RegistryFlags,
}

#[derive(Args, Debug, Clone)]
pub(super) struct PushArgs {
    /// Image in the local store (name or sha256 digest).
    pub source: String,
    /// Where to push (default: SOURCE as a registry reference).
    pub dest: Option<String>,
    #[command(flatten)]
    pub flags: RegistryFlags,
}

#[derive(Args, Debug, Clone)]
pub(super) struct LoginArgs {
    /// Registry host[:port] (`docker.io` for Docker Hub).
    pub host: String,
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password (visible in the process list; prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `os/arch[/variant]`.
pub(super) fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(os, arch, None)),
        [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
            Ok(Platform::new(os, arch, Some(v)))
        }
        _ => bail!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/arm64"),
    }
}

/// `--registry-credential` flags as per-build credentials.
pub(super) fn credentials_from_flags(flags: &RegistryFlags) -> Result<Credentials> {
    let mut creds = Credentials::new();
    for spec in &flags.credentials {
        creds.add_flag(spec)?;
    }
    Ok(creds)
}

fn client_for(cfg: &Config, flags: &RegistryFlags) -> Result<RegistryClient> {
    let mut cfg = cfg.clone();
    for h in &flags.insecure {
        cfg.merge_insecure_registries(h);
    }
    Ok(RegistryClient::new(&cfg, credentials_from_flags(flags)?)?)
}

/// One line per finished blob and per retry, on stderr.
fn printer(quiet: bool) -> impl FnMut(Progress) {
    move |p| {
        if quiet {
            return;
        }
        let line = match p {
            Progress::Resolved {
                reference, digest, ..
            } => format!("{reference}: resolved to {digest}"),
            Progress::MirrorFailed { mirror, reason } => {
                format!("mirror {mirror} failed, trying the next source: {reason}")
            }
            Progress::BlobDone { digest, outcome } => {
                let what = match outcome {
                    BlobOutcome::AlreadyLocal => "already present".to_string(),
                    BlobOutcome::Downloaded => "downloaded".to_string(),
                    BlobOutcome::AlreadyRemote => "already on the registry".to_string(),
                    BlobOutcome::Mounted { from } => format!("mounted from {from}"),
                    BlobOutcome::Uploaded => "uploaded".to_string(),
                };
                format!("  {}: {what}", digest.short())
            }
            Progress::Retrying {
                host,
                attempt,
                reason,
            } => format!("  {host}: retrying (attempt {attempt}): {reason}"),
            Progress::ManifestPushed { reference, digest } => {
                format!("{reference}: pushed manifest {digest}")
            }
            _ => return,
        };
        errln!("{line}");
    }
}

pub(super) fn cmd_pull(store: &Store, cfg: &Config, args: PullArgs) -> Result<i32> {
    let reference: Reference = args.reference.parse()?;
    let platform = match &args.platform {
        Some(p) => parse_platform(p)?,
        None => Platform::host(),
    };
    let client = client_for(cfg, &args.flags)?;
    // Pulled blobs are unreferenced until the tag: a concurrent GC must leave them (lease.rs).
    let _lease = store.lease("pull")?;
    let desc = registry::pull(
        &client,
        store,
        &reference,
        &platform,
        &mut printer(args.flags.quiet),
    )?;
    super::local::unpack_for(store, &desc.digest.to_string(), &platform)?;
    outln!("{} {}", reference.store_name(), desc.digest)?;
    Ok(0)
}

/// The image `name` names in the store: as written, as a normalised reference, or a digest.
fn find_local(store: &Store, name: &str) -> Result<Descriptor> {
    if let Some(d) = store.resolve(name)? {
        return Ok(d);
    }
    if let Ok(r) = name.parse::<Reference>() {
        for candidate in [r.store_name(), r.familiar()] {
            if let Some(d) = store.resolve(&candidate)? {
                return Ok(d);
            }
        }
    }
    if let Ok(d) = name.parse::<crate::digest::Digest>() {
        if store.has_blob(&d) {
            return Ok(store.describe(&d)?);
        }
    }
    bail!("image {name:?} not found in the local store")
}

pub(super) fn cmd_push(store: &Store, cfg: &Config, args: PushArgs) -> Result<i32> {
    let mut desc = find_local(store, &args.source)?;
    // What the push reads stays even if the tag is removed and pruned meanwhile.
    let lease = store.lease("push")?;
    lease.protect_closure(&desc)?;
    desc.annotations.clear();
    let dest: Reference = args
        .dest
        .as_deref()
        .unwrap_or(&args.source)
        .parse()
        .context("parsing the destination reference")?;
    let client = client_for(cfg, &args.flags)?;
    let pushed = registry::push(&client, store, &desc, &dest, &mut printer(args.flags.quiet))?;
    outln!("{dest} {}", pushed.digest)?;
    Ok(0)
}

fn read_password_from_tty(prompt: &str) -> Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    err!("{prompt}");
    std::io::stderr().flush().ok();
    let saved = tcgetattr(&stdin).context("reading terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning off echo")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    errln!();
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub(super) fn cmd_login(cfg: &Config, args: LoginArgs) -> Result<i32> {
    let host = crate::reference::normalize_domain(args.host.trim_end_matches('/')).to_string();
    let stdin = std::io::stdin();
    let username = match args.username {
        Some(u) => u,
        None if stdin.is_terminal() => {
            err!("Username: ");
            std::io::stderr().flush().ok();
            let mut u = String::new();
            stdin.lock().read_line(&mut u)?;
            u.trim().to_string()
        }
        None => bail!("--username is required when standard input is not a terminal"),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin exclude each other"),
        (Some(p), false) => {
            errln!("WARNING: --password is visible to other users; prefer --password-stdin");
            p
        }
        (None, true) => {
            let mut p = String::new();
            stdin.lock().read_line(&mut p)?;
            p.trim_end_matches(['\r', '\n']).to_string()
        }
        (None, false) if stdin.is_terminal() => read_password_from_tty("Password: ")?,
        (None, false) => bail!("no password: use --password-stdin or a terminal"),
    };
    if username.is_empty() || password.is_empty() {
        bail!("username and password must not be empty");
    }
    let mut creds = Credentials::new();
    creds.add(&host, &username, &password);
    let client = RegistryClient::new(cfg, creds)?;
    client.check_login(&host)?;
    let docker = DockerConfig::from_env();
    let place = login_store(&docker, &host, &username, &password)?;
    errln!("Login to {host} succeeded; credentials stored in {place}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse() {
        assert_eq!(
            parse_platform("linux/arm64/v8").unwrap().variant.as_deref(),
            Some("v8")
        );
        assert_eq!(parse_platform("linux/amd64").unwrap().architecture, "amd64");
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("linux//").is_err());
    }
}
