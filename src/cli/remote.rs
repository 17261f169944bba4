//! `kiln daemon`, `kiln builds ls|show|logs|cancel|rebuild` and `kiln config show|set`: flags →
//! daemon settings or API calls → printed results.
//!
//! Must not: serve or build itself — `crate::daemon` serves, the client talks to it.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};

use crate::api::{self, BuildInfo, ConfigView};
use crate::daemon::DaemonSettings;
use crate::store::Store;

use super::client::{self, Client};
use super::out::{self, errln, out, outln};
use super::progress::ProgressMode;

#[derive(Args, Debug)]
pub(super) struct DaemonArgs {
    /// Socket path (default /run/kiln/kiln.sock, rootless $XDG_RUNTIME_DIR/kiln/kiln.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Socket permission bits, octal (default: [daemon] socket_mode, else 0660).
    #[arg(long = "socket-mode")]
    socket_mode: Option<String>,
    /// Group owning the socket (name or gid); its members may use the daemon.
    #[arg(long = "socket-group")]
    socket_group: Option<String>,
    /// A uid allowed besides root and the daemon's own (repeatable).
    #[arg(long = "allowed-uid")]
    allowed_uids: Vec<u32>,
    /// A gid allowed (repeatable).
    #[arg(long = "allowed-gid")]
    allowed_gids: Vec<u32>,
    /// A directory contexts, secrets and outputs may be under (repeatable; default /build).
    #[arg(long = "context-root")]
    context_roots: Vec<PathBuf>,
    /// Builds running at once; more wait in the queue (default: [daemon] max_concurrent_builds,
    /// else 4).
    #[arg(long = "max-concurrent-builds")]
    max_concurrent_builds: Option<usize>,
    /// Default share of the machine per build, in percent.
    #[arg(long)]
    capacity: Option<u8>,
    /// On SIGTERM let running builds finish instead of cancelling them.
    #[arg(long = "finish-on-shutdown")]
    finish_on_shutdown: bool,
    /// The daemon's log on stderr: `text` lines or `json` objects, one per build event.
    #[arg(long = "log-format", env = "KILN_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    log_format: String,
}

/// `kiln daemon`: kiln.toml's `[daemon]` and `[worker.oci]` first, flags over them. The config file
/// (`--config`, else the default path when it exists, else `<root>/daemon/config.toml`) is where
/// `PUT /v1/config` persists registry settings.
pub(super) fn daemon(
    root: &Option<PathBuf>,
    config: &Option<PathBuf>,
    a: DaemonArgs,
) -> Result<i32> {
    let mut s = DaemonSettings::new(root.clone().unwrap_or_else(Store::default_root));
    let path = config
        .clone()
        .or_else(|| Some(crate::config::Config::default_path()).filter(|p| p.exists()));
    let cfg = match &path {
        Some(p) => crate::config::Config::load_or_default(p)
            .with_context(|| format!("loading config {}", p.display()))?,
        None => crate::config::Config::default(),
    };
    // The file's warnings are logged by the daemon once it runs (config.warning lines).
    let d = &cfg.daemon;
    s.socket = a.socket.or(d.socket.clone()).unwrap_or(s.socket);
    // A flag given (even with the default value) wins over [daemon], which wins over the default.
    s.socket_mode = match (&a.socket_mode, d.socket_mode) {
        (Some(flag), _) => u32::from_str_radix(flag.trim_start_matches("0o"), 8)
            .with_context(|| format!("invalid --socket-mode {flag:?}"))?,
        (None, Some(m)) => m,
        (None, None) => 0o660,
    };
    s.socket_group = a.socket_group.or(d.socket_group.clone());
    s.allowed_uids = [a.allowed_uids, d.allowed_uids.clone()].concat();
    s.allowed_gids = [a.allowed_gids, d.allowed_gids.clone()].concat();
    if !a.context_roots.is_empty() {
        s.context_roots = a.context_roots;
    } else if !d.context_roots.is_empty() {
        s.context_roots = d.context_roots.clone();
    }
    s.max_concurrent_builds = a
        .max_concurrent_builds
        .or(d.max_concurrent_builds)
        .unwrap_or(4)
        .max(1);
    s.capacity = a.capacity.or(d.capacity);
    s.max_parallelism = cfg.worker.max_parallelism;
    s.cancel_on_shutdown = !a.finish_on_shutdown;
    s.config_path = path;
    s.log_format = a.log_format.parse().map_err(anyhow::Error::msg)?;
    crate::daemon::serve_forever(s)?;
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub(super) enum BuildsCmd {
    /// List build records, newest first.
    Ls {
        /// Only builds with this status (queued, running, succeeded, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One build record as JSON.
    Show { id: String },
    /// A build's log (follows a running build).
    Logs {
        id: String,
        /// The raw NDJSON events instead of text.
        #[arg(long)]
        events: bool,
    },
    /// Cancel a queued or running build.
    Cancel { id: String },
    /// Build again from a record, with optional changes (JSON object); credentials are not kept.
    Rebuild {
        id: String,
        /// Changes to the spec, e.g. '{"no_cache": true}'.
        #[arg(long)]
        changes: Option<String>,
        /// Return at once instead of following the build.
        #[arg(long)]
        detach: bool,
    },
}

fn need(host: &Option<String>) -> Result<Client> {
    match Client::select(host)? {
        Some(c) => Ok(c),
        None => bail!(
            "no kiln daemon answers on {} (start `kiln daemon`, or give --host unix:///path)",
            crate::api::default_socket().display()
        ),
    }
}

pub(super) fn builds(host: &Option<String>, cmd: BuildsCmd) -> Result<i32> {
    match builds_inner(host, cmd) {
        // `kiln builds ls | head`: the reader went away; that is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(0)
        }
        r => r,
    }
}

/// A build's tags: `tags`, and `name:tag` of the `build_image(name, tag)` form.
fn spec_tags(spec: &serde_json::Value) -> String {
    let mut tags: Vec<String> = spec["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(name) = spec["name"].as_str() {
        let t = format!("{name}:{}", spec["tag"].as_str().unwrap_or("latest"));
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags.join(",")
}

/// `2026-11-30 18:30:34` (UTC) from Unix seconds.
fn when(secs: i64) -> String {
    let t = crate::daemon::log::format_utc(secs, 0);
    t[..19].replace('T', " ")
}

fn took(b: &BuildInfo) -> String {
    match b.finished {
        Some(f) if f >= b.created => {
            let s = f - b.created;
            if s >= 60 {
                format!("{}m{:02}s", s / 60, s % 60)
            } else {
                format!("{s}s")
            }
        }
        _ => "-".into(),
    }
}

fn builds_inner(host: &Option<String>, cmd: BuildsCmd) -> Result<i32> {
    let c = need(host)?;
    let mut out = out::stdout();
    match cmd {
        BuildsCmd::Ls { status, json } => {
            let path = match &status {
                Some(s) => format!("/v1/builds?status={s}"),
                None => "/v1/builds".to_string(),
            };
            let list: Vec<BuildInfo> = c.request("GET", &path, None, &[])?.json()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                return Ok(0);
            }
            writeln!(
                out,
                "{:<18} {:<10} {:<20} {:<8} TAGS",
                "ID", "STATUS", "CREATED (UTC)", "TOOK"
            )?;
            for b in list {
                writeln!(
                    out,
                    "{:<18} {:<10} {:<20} {:<8} {}",
                    b.id,
                    b.status.as_str(),
                    when(b.created),
                    took(&b),
                    spec_tags(&b.spec)
                )?;
            }
        }
        BuildsCmd::Show { id } => {
            let b: BuildInfo = c
                .request("GET", &format!("/v1/builds/{id}"), None, &[])?
                .json()?;
            writeln!(out, "{}", serde_json::to_string_pretty(&b)?)?;
        }
        BuildsCmd::Logs { id, events } => {
            let which = if events { "events" } else { "logs" };
            let r = c.request("GET", &format!("/v1/builds/{id}/{which}"), None, &[])?;
            if r.status != 200 {
                let _: serde_json::Value = r.json()?;
                return Ok(1);
            }
            for line in r.body.lines() {
                writeln!(out, "{}", line?)?;
            }
        }
        BuildsCmd::Cancel { id } => {
            let _: serde_json::Value = c
                .request("POST", &format!("/v1/builds/{id}/cancel"), None, &[])?
                .json()?;
            writeln!(out, "cancelling {id}")?;
        }
        BuildsCmd::Rebuild {
            id,
            changes,
            detach,
        } => {
            let body = changes.unwrap_or_default();
            let a: api::Accepted = c
                .request(
                    "POST",
                    &format!("/v1/builds/{id}/rebuild"),
                    Some("application/json"),
                    body.as_bytes(),
                )?
                .json()?;
            if detach {
                writeln!(out, "{}", a.id)?;
                return Ok(0);
            }
            drop(out);
            errln!("build {} on the daemon", a.id);
            return client::follow(&c, &a.id, ProgressMode::Auto);
        }
    }
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub(super) enum ConfigCmd {
    /// Print the daemon's registry settings (secrets redacted).
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Change them at run time (persisted by the daemon).
    Set {
        /// Comma-separated hosts to treat as insecure (replaces the list).
        #[arg(long = "insecure-registries")]
        insecure_registries: Option<String>,
        /// A whole kiln.toml / buildkitd.toml to use.
        #[arg(long = "file")]
        file: Option<PathBuf>,
    },
}

pub(super) fn config(host: &Option<String>, cmd: ConfigCmd) -> Result<i32> {
    let c = need(host)?;
    let view: ConfigView = match cmd {
        ConfigCmd::Show { json } => {
            let v: ConfigView = c.request("GET", "/v1/config", None, &[])?.json()?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&v)?)?;
                return Ok(0);
            }
            v
        }
        ConfigCmd::Set {
            insecure_registries,
            file,
        } => {
            let update = api::ConfigUpdate {
                insecure_registries: insecure_registries
                    .map(|s| api::HostList(s.split(',').map(|h| h.trim().to_string()).collect())),
                config_content: match file {
                    Some(f) => Some(
                        std::fs::read_to_string(&f)
                            .with_context(|| format!("reading {}", f.display()))?,
                    ),
                    None => None,
                },
            };
            if update.insecure_registries.is_none() && update.config_content.is_none() {
                bail!("give --insecure-registries and/or --file");
            }
            c.request(
                "PUT",
                "/v1/config",
                Some("application/json"),
                &serde_json::to_vec(&update)?,
            )?
            .json()?
        }
    };
    outln!(
        "insecure registries: {}",
        view.insecure_registries.join(", ")
    )?;
    out!("{}", view.config)?;
    for w in view.warnings {
        errln!("warning: {w}");
    }
    Ok(0)
}
