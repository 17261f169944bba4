//! Parsed Dockerfile + build args + target → [`Plan`]: stages with resolved bases, the DAG of stage
//! dependencies pruned to the target, every step fully expanded, and BuildKit's build checks.
//! Follows BuildKit's `dockerfile2llb` (global ARGs, FROM expansion, `COPY --from`/`--mount from`
//! resolution, ONBUILD triggers, circular-dependency detection): [`plan`] runs the whole-build
//! phases of `convert` (one function per phase of BuildKit's `toDispatchState`), and `convert`
//! hands each instruction to `dispatch` (one `dispatch_<instruction>` per BuildKit `dispatch*`).
//!
//! Must not: do I/O (base image facts come through [`BaseImages`]) or compute cache keys of file
//! content.

pub mod chmod;
mod convert;
mod dispatch;
mod lint;
mod named;
pub mod platform;
mod render;
mod types;
mod values;

use std::collections::BTreeMap;

pub use chmod::{Chmod, ChmodError};
pub use lint::secret_name;
pub use named::{named_context_key, NamedSource};
pub use platform::Platform;
pub use types::*;

use crate::dockerfile::shell::{EnvList, Lex};
use crate::dockerfile::{Dockerfile, Span};
use convert::DispatchContext;

/// What a plan is computed for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Target platform (default: the host's, linux/<arch>).
    pub platform: Platform,
    pub file_name: String,
    /// `--build-context`s by [`named_context_key`].
    pub named_contexts: BTreeMap<String, NamedSource>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            platform: Platform::host(),
            file_name: "Dockerfile".into(),
            named_contexts: BTreeMap::new(),
        }
    }
}

/// Config facts of a base image that expansion needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImageInfo {
    /// `K=V` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub shell: Option<Vec<String>>,
    pub on_build: Vec<String>,
}

/// Looks up base image configs (the store, a registry, or nothing).
pub trait BaseImages {
    /// Config facts of a FROM image, for expansion (`ENV PATH=$PATH:/x` needs the base's env).
    fn lookup(&self, reference: &str, platform: &Platform) -> Option<BaseImageInfo>;
}

/// No image configs known (`kiln plan` without a store): images start with Docker's default PATH.
pub struct NoBaseImages;

impl BaseImages for NoBaseImages {
    fn lookup(&self, _: &str, _: &Platform) -> Option<BaseImageInfo> {
        None
    }
}

/// Why no plan could be made: `<file>:<line>:<col>: <what is wrong>: <offending text>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{file}:{span}: {what}: {text}")]
    At {
        file: String,
        span: Span,
        what: String,
        text: String,
    },
    #[error("{file}: {what}: {text}")]
    File {
        file: String,
        what: String,
        text: String,
    },
}

/// Docker's default PATH for Linux images.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_proxy_arg(k: &str) -> bool {
    matches!(
        k,
        "HTTP_PROXY"
            | "http_proxy"
            | "HTTPS_PROXY"
            | "https_proxy"
            | "FTP_PROXY"
            | "ftp_proxy"
            | "NO_PROXY"
            | "no_proxy"
            | "ALL_PROXY"
            | "all_proxy"
    )
}

/// Computes the plan: BuildKit's `toDispatchState`, phase by phase (see [`convert`]).
pub fn plan(d: &Dockerfile, opts: &PlanOptions, bases: &dyn BaseImages) -> Result<Plan, PlanError> {
    let mut dctx = DispatchContext::new(d, opts)?;
    let build = Platform::host();
    let predefined = dctx.default_args(&build);
    let meta = dctx.build_meta_args(&predefined)?;
    let headers = dctx.build_dispatch_states(&meta, bases)?;
    let target = dctx.resolve_target()?;
    let graph = dctx.build_stage_dependency_graph(&headers)?;
    convert::check_cycles(&graph.deps, &d.stages, dctx.file)?;
    let order = convert::reachable(target, &graph.deps);
    let stages = dctx.dispatch_stages(&meta, &headers, &graph, &order)?;
    dctx.finalize(stages, order, target, build, &predefined)
}

/// `COPY --from` takes no variables: BuildKit processes the value with no environment and fails
/// when that changes it (`$X`, `${X}`, escapes, quotes).
pub(crate) fn check_from_unexpanded(lex: &Lex, from: &str) -> Result<(), String> {
    const WHAT: &str = "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround";
    match lex.process_word(from, &EnvList::default()) {
        Ok(r) if r == from => Ok(()),
        Ok(_) => Err(WHAT.into()),
        Err(e) => Err(e.0),
    }
}
