//! The command line: flags are parsed (clap), then resolved into validated requests for the embedded
//! engine, then the results rendered. `anyhow` lives here and only here; errors print with `{:#}` so
//! every cause in the chain shows.
//!
//! Must not: build, parse Dockerfiles or touch the store's files itself — it calls the modules.

mod client;
mod progress;
mod registry;
mod remote;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::{self, BuildRequest, Output};
use crate::config::Config;
use crate::exec::{self, Cancel};
use crate::layer::Compression;
use crate::reference::Reference;
use crate::store::{self, Store};
use progress::{ProgressMode, Renderer};

#[derive(Parser, Debug)]
#[command(name = "kiln", version, about = "A native, rootless OCI image builder")]
pub struct Cli {
    /// State directory (default /var/lib/kiln as root, $XDG_DATA_HOME/kiln otherwise).
    #[arg(long, global = true, env = "KILN_ROOT")]
    root: Option<PathBuf>,
    /// The daemon to use (unix:///path/to/kiln.sock); default: the default socket when it answers,
    /// else the embedded engine.
    #[arg(long, global = true, env = "KILN_HOST")]
    host: Option<String>,
    /// Config file (default /etc/kiln/kiln.toml as root, ~/.config/kiln/kiln.toml otherwise).
    #[arg(long, global = true, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a Dockerfile (on the daemon when one answers, else embedded).
    Build(Box<BuildArgs>),
    /// Pull an image from a registry into the local store.
    Pull(registry::PullArgs),
    /// Push an image from the local store to a registry.
    Push(registry::PushArgs),
    /// Store registry credentials in ~/.docker/config.json, as docker login does.
    Login(registry::LoginArgs),
    /// Serve the JSON API on a Unix socket.
    Daemon(remote::DaemonArgs),
    /// Build records on the daemon.
    Builds {
        #[command(subcommand)]
        cmd: remote::BuildsCmd,
    },
    /// The daemon's registry settings.
    Config {
        #[command(subcommand)]
        cmd: remote::ConfigCmd,
    },
    /// Print the build plan of a Dockerfile: stages, dependencies, expanded steps.
    Plan(PlanArgs),
    /// List the images in the local store.
    Images,
    /// Write an image from the local store out as an OCI layout or a docker-archive.
    Export {
        /// Image reference or digest in the local store.
        image: String,
        /// type=oci,dest=DIR|FILE.tar or type=docker,dest=FILE.tar (repeatable).
        #[arg(short, long = "output", required = true)]
        outputs: Vec<String>,
    },
    /// Copy an image from an OCI layout (DIR[:TAG]) into the local store, verifying every blob.
    Import {
        /// The layout directory, optionally with the tag (ref name) to take.
        layout: String,
        /// Name to tag it with in the store (default: the layout's ref name).
        #[arg(short = 't', long = "tag")]
        tag: Option<String>,
    },
    /// Remove a tag from the local store (blobs go at the next `kiln prune`).
    Rmi { image: String },
    /// Delete blobs no tag reaches.
    Prune,
    /// Re-hash every blob and check every tag's closure; non-zero exit on damage.
    Fsck,
    /// Where kiln keeps its state and what it holds.
    Info,
}

#[derive(Args, Debug)]
struct DockerfileArgs {
    /// Path to the Dockerfile (default CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Build-time variable KEY=VALUE (KEY alone takes the value from the environment).
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Build only up to this stage.
    #[arg(long)]
    target: Option<String>,
    /// The build context directory.
    context: PathBuf,
}

#[derive(Args, Debug)]
struct BuildArgs {
    #[command(flatten)]
    df: DockerfileArgs,
    /// Name and optionally a tag (name:tag); repeatable.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Image label KEY=VALUE; repeatable.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// type=oci,dest=DIR|FILE.tar or type=docker,dest=FILE.tar; repeatable.
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Layer compression: gzip, zstd or uncompressed.
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long = "compression-level")]
    compression_level: Option<i32>,
    /// Clamp timestamps (layer mtimes, created) to this Unix time; also read from $SOURCE_DATE_EPOCH.
    #[arg(long = "source-date-epoch", env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<i64>,
    /// A secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR (repeatable).
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// Force a sandbox rung for RUN: full, no-proc, single-uid, chroot (default: the strongest that works).
    #[arg(long = "sandbox")]
    sandbox: Option<String>,
    /// Snapshotter for RUN steps: auto, overlayfs, fuse-overlayfs, native.
    #[arg(long = "snapshotter", default_value = "auto")]
    snapshotter: String,
    /// Memory limit for each RUN step, in bytes or with a k/m/g suffix.
    #[arg(long = "memory")]
    memory: Option<String>,
    /// CPU limit for each RUN step (e.g. 1.5).
    #[arg(long = "cpus")]
    cpus: Option<f64>,
    /// Network of RUN steps that do not set --network: host (default) or none.
    #[arg(long = "network", default_value = "host")]
    network: String,
    /// Kill a RUN step that runs longer than this many seconds.
    #[arg(long = "step-timeout")]
    step_timeout: Option<u64>,
    /// Push every tag to its registry after the build.
    #[arg(long)]
    push: bool,
    /// Never pull: base images must be in the local store.
    #[arg(long = "no-pull")]
    no_pull: bool,
    #[command(flatten)]
    registry: registry::RegistryFlags,
    /// Run every step even when the step cache holds its result.
    #[arg(long = "no-cache")]
    no_cache: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    df: DockerfileArgs,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    format: PlanFormat,
    /// List the build-check warnings only; exit non-zero when a check is configured as an error.
    #[arg(long)]
    check: bool,
}

/// Entry point of the `kiln` binary. Returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn open_store(root: &Option<PathBuf>) -> Result<Store> {
    let root = root.clone().unwrap_or_else(Store::default_root);
    Store::open(&root).with_context(|| format!("opening the kiln store at {}", root.display()))
}

fn parse_kv(values: &[String], what: &str, from_env: bool) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for v in values {
        match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => {
                out.insert(k.to_string(), val.to_string());
            }
            None if from_env && !v.is_empty() => {
                // docker build: `--build-arg KEY` takes KEY's value from the environment, if set.
                if let Ok(val) = std::env::var(v) {
                    out.insert(v.clone(), val);
                }
            }
            _ => bail!("invalid {what} {v:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Build(args) => match client::Client::select(&cli.host)? {
            Some(c) => client::remote_build(&c, &args),
            None => cmd_build(&cli.root, &load_config(&cli.config)?, *args),
        },
        Command::Pull(args) => {
            registry::cmd_pull(&open_store(&cli.root)?, &load_config(&cli.config)?, args)
        }
        Command::Push(args) => {
            registry::cmd_push(&open_store(&cli.root)?, &load_config(&cli.config)?, args)
        }
        Command::Login(args) => registry::cmd_login(&load_config(&cli.config)?, args),
        Command::Daemon(args) => remote::daemon(&cli.root, &cli.config, args),
        Command::Builds { cmd } => remote::builds(&cli.host, cmd),
        Command::Config { cmd } => remote::config(&cli.host, cmd),
        Command::Plan(args) => cmd_plan(&cli.root, args),
        Command::Images => {
            let store = open_store(&cli.root)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<50} {:<20} {:>10}", "IMAGE", "DIGEST", "SIZE")?;
            for (name, desc) in store.tags()? {
                let size = store
                    .image(&name)
                    .map(|i| {
                        i.manifest.layers.iter().map(|l| l.size).sum::<u64>()
                            + i.manifest.config.size
                    })
                    .unwrap_or(0);
                writeln!(out, "{:<50} {:<20} {:>10}", name, desc.digest.short(), size)?;
            }
            Ok(0)
        }
        Command::Export { image, outputs } => {
            let store = open_store(&cli.root)?;
            let key = store_key(&image);
            let img = store
                .image(&key)
                .with_context(|| format!("finding {image} in the local store"))?;
            let tag = key.clone();
            for o in outputs {
                let out: Output = o.parse()?;
                match out {
                    Output::Oci { dest } => {
                        let name = tag
                            .parse::<Reference>()
                            .map(|r| r.tag_or_latest().to_string())
                            .unwrap_or_else(|_| "latest".into());
                        store::write_oci_layout(
                            &store,
                            &[(name, img.manifest_desc.clone())],
                            &dest,
                        )?;
                        eprintln!("exported oci: {}", dest.display());
                    }
                    Output::Docker { dest } => {
                        let name = tag
                            .parse::<Reference>()
                            .map(|r| r.familiar())
                            .unwrap_or_default();
                        store::write_docker_archive(
                            &store,
                            &[(name, img.manifest_desc.clone())],
                            &dest,
                        )?;
                        eprintln!("exported docker: {}", dest.display());
                    }
                }
            }
            Ok(0)
        }
        Command::Import { layout, tag } => {
            let store = open_store(&cli.root)?;
            let (dir, ref_name) = match layout.rfind(':') {
                Some(i) if !layout[i..].contains('/') => {
                    (layout[..i].to_string(), Some(layout[i + 1..].to_string()))
                }
                _ => (layout.clone(), None),
            };
            let desc =
                store::import_oci_layout(&store, std::path::Path::new(&dir), ref_name.as_deref())
                    .with_context(|| format!("importing OCI layout {dir}"))?;
            let name = tag.or(ref_name).unwrap_or_else(|| "latest".to_string());
            let key = name
                .parse::<Reference>()
                .with_context(|| format!("invalid tag {name:?}"))?
                .store_name();
            store.tag(&key, &desc)?;
            println!("{key} {}", desc.digest);
            Ok(0)
        }
        Command::Rmi { image } => {
            let store = open_store(&cli.root)?;
            if !store.untag(&store_key(&image))? {
                bail!("no image {image} in the local store");
            }
            println!("untagged {image}");
            Ok(0)
        }
        Command::Prune => {
            let store = open_store(&cli.root)?;
            let report = store.gc()?;
            println!(
                "removed {} blob(s), freed {} bytes, kept {}",
                report.removed.len(),
                report.bytes_freed,
                report.kept
            );
            Ok(0)
        }
        Command::Fsck => {
            let store = open_store(&cli.root)?;
            let report = store.fsck()?;
            println!("{report}");
            Ok(if report.is_clean() { 0 } else { 2 })
        }
        Command::Info => {
            let root = cli.root.clone().unwrap_or_else(Store::default_root);
            let store = open_store(&cli.root)?;
            println!("version: {}", env!("CARGO_PKG_VERSION"));
            println!("root: {}", root.display());
            println!("images: {}", store.tags()?.len());
            let cfg = exec::SandboxConfig::new(&root.join("exec"));
            let probe = exec::probe(&cfg);
            match probe.rung {
                Some(r) => println!("sandbox: {r}"),
                None => println!("sandbox: none works here"),
            }
            for (rung, why) in &probe.reasons {
                println!(
                    "  {} unavailable: {why}",
                    format!("{rung:?}").to_lowercase()
                );
            }
            println!(
                "snapshotter: {}",
                format!("{:?}", probe.snapshotter).to_lowercase()
            );
            for (kind, why) in &probe.snapshotter_reasons {
                println!(
                    "  {} unavailable: {why}",
                    format!("{kind:?}").to_lowercase()
                );
            }
            println!("cgroups: {}", probe.cgroup);
            for ca in crate::registry::conventional_ca_bundles() {
                println!("trusted CA bundle: {}", ca.display());
            }
            for w in &probe.warnings {
                println!("warning: {w}");
            }
            Ok(0)
        }
    }
}

/// A user's image name → the store's key: references are normalised (`app` →
/// `docker.io/library/app:latest`), digests are kept.
fn store_key(image: &str) -> String {
    if image.starts_with("sha256:") {
        return image.to_string();
    }
    image
        .parse::<Reference>()
        .map(|r| r.store_name())
        .unwrap_or_else(|_| image.to_string())
}

/// The config file, with its unknown-key warnings printed (never silently ignored).
fn load_config(path: &Option<PathBuf>) -> Result<Config> {
    let path = path.clone().unwrap_or_else(Config::default_path);
    let cfg = Config::load_or_default(&path)
        .with_context(|| format!("loading config {}", path.display()))?;
    for w in &cfg.warnings {
        eprintln!("WARNING: {w}");
    }
    Ok(cfg)
}

fn cmd_build(root: &Option<PathBuf>, cfg: &Config, args: BuildArgs) -> Result<i32> {
    let mut req = BuildRequest::new(&args.df.context);
    // kiln.toml's [build] and [worker.oci] give the defaults; flags win.
    if let Some(c) = &cfg.build.compression {
        if args.compression == "gzip" {
            req.compression = c
                .parse()
                .with_context(|| format!("invalid [build] compression {c:?}"))?;
        }
    }
    if let Some(n) = cfg.worker.max_parallelism {
        req.threads = n.max(1);
    }
    req.push = args.push;
    req.pull = !args.no_pull;
    req.registry = engine::RegistryAccess {
        config: cfg.clone(),
        credentials: registry::credentials_from_flags(&args.registry)?,
        insecure: args.registry.insecure.clone(),
    };
    req.dockerfile = args.df.file.clone();
    req.tags = args.tags.clone();
    for t in &req.tags {
        t.parse::<Reference>()
            .with_context(|| format!("invalid tag {t:?}"))?;
    }
    req.build_args = parse_kv(&args.df.build_args, "--build-arg", true)?;
    req.labels = parse_kv(&args.labels, "--label", false)?;
    req.target = args.df.target.clone();
    req.outputs = args
        .outputs
        .iter()
        .map(|o| o.parse::<Output>())
        .collect::<Result<_, _>>()?;
    if args.compression != "gzip" || cfg.build.compression.is_none() {
        req.compression = args
            .compression
            .parse::<Compression>()
            .with_context(|| format!("invalid --compression {:?}", args.compression))?;
    }
    req.compression_level = args.compression_level.or(cfg.build.compression_level);
    req.source_date_epoch = args.source_date_epoch.or(cfg.build.source_date_epoch);
    req.no_cache = args.no_cache;
    req.secrets = args
        .secrets
        .iter()
        .map(|s| s.parse::<engine::SecretSource>().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    req.sandbox.rung = match args.sandbox.as_ref().or(cfg.worker.sandbox.as_ref()) {
        Some(r) => Some(r.parse().map_err(anyhow::Error::msg)?),
        None => None,
    };
    let snapshotter = match (&cfg.worker.snapshotter, args.snapshotter.as_str()) {
        (Some(from_config), "auto") => from_config.as_str(),
        (_, flag) => flag,
    };
    req.sandbox.snapshotter = snapshotter.parse().map_err(anyhow::Error::msg)?;
    req.sandbox.resources.memory = match &args.memory {
        Some(m) => Some(parse_bytes(m).with_context(|| format!("invalid --memory {m:?}"))?),
        None => None,
    };
    req.sandbox.resources.cpus = args.cpus;
    req.sandbox.step_timeout = args.step_timeout.map(std::time::Duration::from_secs);
    req.sandbox.network = match args.network.as_str() {
        "host" | "default" => exec::Network::Host,
        "none" => exec::Network::None,
        other => bail!("invalid --network {other:?} (host, none)"),
    };

    let store = open_store(root)?;
    let cancel = Cancel::new();
    {
        // Ctrl-C cancels the build: the running step's pid namespace is killed, its mounts and
        // scratch snapshot removed, and kiln exits non-zero.
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || cancel.cancel());
    }
    let mut renderer = Renderer::new(args.progress);
    let result = engine::run(&store, &req, &mut |e| renderer.event(e), &cancel)?;
    if args.progress != ProgressMode::Json {
        println!("{}", result.manifest.digest);
    }
    Ok(0)
}

/// `512m`, `2g`, `1048576` → bytes.
fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.trim_end_matches('b').chars().last() {
        Some('k') => (&s[..s.trim_end_matches('b').len() - 1], 1u64 << 10),
        Some('m') => (&s[..s.trim_end_matches('b').len() - 1], 1 << 20),
        Some('g') => (&s[..s.trim_end_matches('b').len() - 1], 1 << 30),
        _ => (s.trim_end_matches('b'), 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("{num:?} is not a number"))?;
    Ok((n * mult as f64) as u64)
}

fn cmd_plan(root: &Option<PathBuf>, args: PlanArgs) -> Result<i32> {
    let path = args
        .df
        .file
        .clone()
        .unwrap_or_else(|| crate::context::default_dockerfile(&args.df.context));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading Dockerfile {}", path.display()))?;
    let file_name = path.display().to_string();
    let df = crate::dockerfile::parse(&text, &file_name)?;
    let opts = crate::plan::PlanOptions {
        build_args: parse_kv(&args.df.build_args, "--build-arg", true)?,
        target: args.df.target.clone(),
        platform: crate::plan::Platform::host(),
        file_name,
    };
    // Base images found in the local store make ENV expansion exact; without a store the plan
    // still prints, with base images' environments taken as empty.
    let root_dir = root.clone().unwrap_or_else(Store::default_root);
    let store = if root_dir.join("content").exists() {
        Store::open(&root_dir).ok()
    } else {
        None
    };
    let plan = match &store {
        Some(s) => crate::plan::plan(&df, &opts, &engine::StoreBases::new(s))?,
        None => crate::plan::plan(&df, &opts, &crate::plan::NoBaseImages)?,
    };
    if args.check {
        for w in &plan.warnings {
            println!("{}", engine::warning_text(&plan.file_name, w));
        }
        return Ok(if plan.check_failed() { 1 } else { 0 });
    }
    match args.format {
        PlanFormat::Text => print!("{}", plan.render_text()),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
    }
    Ok(0)
}
