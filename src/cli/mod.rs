//! The command line: flags are parsed (clap), then resolved into validated requests for the embedded
//! engine, then the results rendered. `anyhow` lives here and only here; errors print with `{:#}` so
//! every cause in the chain shows.
//!
//! Must not: build, parse Dockerfiles or touch the store's files itself — it calls the modules.

mod catalog;
mod client;
mod local;
mod out;
mod progress;
mod registry;
mod remote;
mod spec;
mod stdin;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::engine;
use crate::exec::Cancel;
use crate::store::Store;
use out::{errln, out, outln};
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
    /// The daemon's image catalog.
    Catalog {
        #[command(subcommand)]
        cmd: catalog::CatalogCmd,
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
    /// Remove build cache (step-cache records, cache mounts) and blobs no tag reaches, like
    /// `docker buildx prune`; with size flags, least recently used first until under them.
    Prune(local::PruneArgs),
    /// Re-hash every blob and check every tag's closure; non-zero exit on damage.
    Fsck {
        /// Also check every committed snapshot against its layer, applied again (slow: a full
        /// unpack of every layer).
        #[arg(long)]
        snapshots: bool,
    },
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
    /// The build context directory (default: the current directory).
    #[arg(default_value = ".")]
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
    /// Layer compression: gzip, zstd or uncompressed (default: kiln.toml's [build] compression,
    /// else gzip).
    #[arg(long)]
    compression: Option<String>,
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
    /// Snapshotter for RUN steps: auto, overlayfs, fuse-overlayfs, native (default: kiln.toml's
    /// [worker.oci] snapshotter, else auto).
    #[arg(long = "snapshotter")]
    snapshotter: Option<String>,
    /// Memory limit for each RUN step: bytes, or Docker's binary units (512m, 2g = 2·2³⁰).
    #[arg(long = "memory")]
    memory: Option<String>,
    /// CPU limit for each RUN step (e.g. 1.5).
    #[arg(long = "cpus")]
    cpus: Option<f64>,
    /// Network of RUN steps that do not set --network: host (default) or none.
    #[arg(long = "network")]
    network: Option<String>,
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
    /// Import a shared step cache (BuildKit syntax; repeatable, tried in order):
    /// type=registry,ref=REF | type=local,src=DIR[,tag=T] | REF (an image with an inline cache).
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// Export the step cache (BuildKit syntax; repeatable): type=registry,ref=REF[,mode=min|max]
    /// [,mounts=true][,ignore-error=true] | type=local,dest=DIR[,mode=…] | type=inline.
    #[arg(long = "cache-to")]
    cache_to: Vec<String>,
    /// Target platform(s): linux/amd64,linux/arm64[,linux/arm/v7] (repeatable or comma-separated).
    /// Two or more build one image index; foreign RUN steps run under QEMU emulation.
    #[arg(long = "platform")]
    platforms: Vec<String>,
    #[command(flatten)]
    packages: catalog::PackageFlags,
    /// A named context for FROM NAME / COPY --from=NAME: NAME=PATH | NAME=docker-image://REF |
    /// NAME=oci-layout://PATH[@DIGEST|:TAG] (repeatable).
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh: default | ID=SOCKET | ID=KEYFILE[,KEYFILE]
    /// (repeatable; default and a bare ID use $SSH_AUTH_SOCK).
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET|KEY[,KEY]]")]
    ssh: Vec<String>,
    /// Add NAME:IP to RUN steps' /etc/hosts (repeatable; not in the image).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_hosts: Vec<String>,
    /// Ask the registry for every base image even when the local store has it.
    #[arg(long, conflicts_with = "no_pull")]
    pull: bool,
    /// Run these stages' steps without the step cache (STAGE[,STAGE]; repeatable).
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    no_cache_filter: Vec<String>,
    /// Size of RUN steps' /dev/shm: bytes, or 64m, 1g (default 64m).
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    /// Resource limit of RUN steps, TYPE=SOFT[:HARD] (e.g. nofile=1024:2048; repeatable).
    #[arg(long = "ulimit", value_name = "TYPE=SOFT[:HARD]")]
    ulimits: Vec<String>,
    /// The Dockerfile read from stdin (`-f -`, or a non-tar on stdin with context `-`).
    #[arg(skip)]
    stdin_dockerfile: Option<String>,
    #[command(flatten)]
    attest: AttestFlags,
}

/// Attestations, annotations and the files a CI step reads after the build (buildx's and
/// kaniko's flags).
#[derive(Args, Debug)]
struct AttestFlags {
    /// SLSA provenance attestation: true, false or mode=min|max[,builder-id=URL] (buildx's
    /// shorthand for --attest type=provenance; off by default, as with buildctl).
    #[arg(long)]
    provenance: Option<String>,
    /// SBOM attestation read natively from the image's package databases: true, false or
    /// format=spdx|cyclonedx (off by default).
    #[arg(long)]
    sbom: Option<String>,
    /// Attestation: type=provenance[,mode=min|max] or type=sbom[,format=…] (repeatable).
    #[arg(long = "attest")]
    attest: Vec<String>,
    /// Annotation [index:|manifest:|manifest-descriptor:|index-descriptor:]KEY=VALUE (default:
    /// manifest; repeatable).
    #[arg(long = "annotation")]
    annotations: Vec<String>,
    /// Write the image id to this file (buildx: the config digest, or the index digest when the
    /// image is an index).
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Write buildx's build metadata JSON (containerimage.digest, …) to this file.
    #[arg(long = "metadata-file")]
    metadata_file: Option<PathBuf>,
    /// Write the image digest to this file, without a newline (kaniko).
    #[arg(long = "digest-file")]
    digest_file: Option<PathBuf>,
    /// Write REPOSITORY@DIGEST lines, one per tag, to this file (kaniko).
    #[arg(long = "image-name-with-digest-file")]
    image_name_with_digest_file: Option<PathBuf>,
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
    /// A named context, as for `kiln build` (NAME=PATH | NAME=docker-image://REF |
    /// NAME=oci-layout://PATH[@DIGEST|:TAG]; repeatable): the plan shows what FROM NAME and
    /// COPY --from=NAME read.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
}

/// Entry point of the `kiln` binary. Returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // `kiln images | head -1`: the reader has what it wanted.
        Err(e) if out::reader_left(&e) => 0,
        Err(e) => {
            errln!("error: {}", progress::error_line(&e));
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
        Command::Build(mut args) => {
            // Held until the build ends: the context read from stdin lives in it.
            let _stdin = stdin::take(&mut args)?;
            match client::Client::select(&cli.host)? {
                Some(c) => client::remote_build(&c, &args),
                None => cmd_build(&cli.root, &load_config(&cli.config)?, *args),
            }
        }
        Command::Pull(args) => {
            registry::cmd_pull(&open_store(&cli.root)?, &load_config(&cli.config)?, args)
        }
        Command::Push(args) => {
            registry::cmd_push(&open_store(&cli.root)?, &load_config(&cli.config)?, args)
        }
        Command::Login(args) => registry::cmd_login(&load_config(&cli.config)?, args),
        Command::Daemon(args) => remote::daemon(&cli.root, &cli.config, args),
        Command::Builds { cmd } => remote::builds(&cli.host, cmd),
        Command::Catalog { cmd } => catalog::catalog(&cli.host, cmd),
        Command::Config { cmd } => remote::config(&cli.host, cmd),
        Command::Plan(args) => cmd_plan(&cli.root, args),
        Command::Images => local::cmd_images(&open_store(&cli.root)?),
        Command::Export { image, outputs } => {
            local::cmd_export(&open_store(&cli.root)?, &image, &outputs)
        }
        Command::Import { layout, tag } => local::cmd_import(&open_store(&cli.root)?, &layout, tag),
        Command::Rmi { image } => local::cmd_rmi(&open_store(&cli.root)?, &image),
        Command::Prune(args) => local::cmd_prune(&open_store(&cli.root)?, &args),
        Command::Fsck { snapshots } => local::cmd_fsck(&open_store(&cli.root)?, snapshots),
        Command::Info => local::cmd_info(&cli.root),
    }
}

/// The config file, with its unknown-key warnings printed (never silently ignored).
fn load_config(path: &Option<PathBuf>) -> Result<Config> {
    let path = path.clone().unwrap_or_else(Config::default_path);
    let cfg = Config::load_or_default(&path)
        .with_context(|| format!("loading config {}", path.display()))?;
    for w in &cfg.warnings {
        errln!("WARNING: {w}");
    }
    Ok(cfg)
}

fn cmd_build(root: &Option<PathBuf>, cfg: &Config, args: BuildArgs) -> Result<i32> {
    let spec = spec::from_flags(&args, spec::Reader::Local)?;
    let req = crate::resolve::resolve(&spec, cfg)?;
    let store = open_store(root)?;
    let cancel = Cancel::new();
    {
        // Ctrl-C cancels the build: the running step's pid namespace is killed, its mounts and
        // scratch snapshot removed, and kiln exits non-zero.
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || cancel.cancel());
    }
    let mut renderer = Renderer::new(args.progress);
    let result = engine::build(
        &store,
        &req,
        &mut |e| {
            // Progress that cannot be written (`--progress json | head`) stops the build, as the
            // reader leaving would kill a process that did not ignore SIGPIPE.
            if !renderer.event(e) {
                cancel.cancel();
            }
        },
        &cancel,
    );
    if let Some(e) = renderer.take_error() {
        return Err(e).context("writing the build's progress");
    }
    let result = result?;
    if args.progress != ProgressMode::Json {
        // What the tags name: the index when attestations made one.
        outln!(
            "{}",
            result.index.as_ref().unwrap_or(&result.manifest).digest
        )?;
    }
    Ok(0)
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
        named_contexts: engine::plan_sources(&crate::resolve::flags::named_contexts(
            &spec::build_contexts(&args.build_contexts)?,
        )?),
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
            outln!("{}", engine::warning_text(&plan.file_name, w))?;
        }
        return Ok(if plan.check_failed() { 1 } else { 0 });
    }
    match args.format {
        PlanFormat::Text => out!("{}", plan.render_text())?,
        PlanFormat::Json => outln!("{}", serde_json::to_string_pretty(&plan)?)?,
    }
    Ok(0)
}
