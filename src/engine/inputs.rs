//! What every part of a build reads and never changes: the request, the plan, where sources come
//! from, where scratch space is. Steps take it (and what else they need, passed in) instead of the
//! whole engine, so they cannot reach a stage's state.
//!
//! Must not: hold anything that changes while the build runs.

use std::path::Path;

use super::base::StoreBases;
use super::publish::early_push::EarlyPush;
use super::publish::remote_cache::RemoteCaches;
use super::{BuildError, BuildRequest};
use crate::context::SourceRoot;
use crate::exec::Cancel;
use crate::plan::{Plan, Step};
use crate::store::Store;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a build reads and never changes, borrowed from the caller for the whole build: the
/// request, the plan, where sources come from, where scratch space is.
pub(super) struct Inputs<'a> {
    pub store: &'a Store,
    pub req: &'a BuildRequest,
    pub plan: &'a Plan,
    pub bases: &'a StoreBases<'a>,
    pub context: &'a SourceRoot,
    /// Local `--build-context` directories by key (`COPY --from=NAME`).
    pub named: &'a std::collections::BTreeMap<String, SourceRoot>,
    /// `--ssh` agents for `RUN --mount=type=ssh`.
    pub ssh: &'a super::ssh::Agents,
    pub workspace: &'a Path,
    pub file_name: &'a str,
    pub sde: Option<i64>,
    pub created: String,
    pub cancel: &'a Cancel,
    /// Uploads layers of the image while the build goes on (`--push` only).
    pub early_push: Option<&'a EarlyPush>,
    /// `--cache-from` sources, read after the local step cache.
    pub remote: &'a RemoteCaches,
    /// How RUN steps of each architecture the plan runs them on are run (`platforms.rs`).
    pub runners: &'a std::collections::BTreeMap<String, crate::exec::Runner>,
}

impl Inputs<'_> {
    /// A step's failure, told as `file:line: instruction: message`.
    pub(super) fn step_err(
        &self,
        step: &Step,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> BuildError {
        BuildError::Step {
            file: self.file_name.to_string(),
            line: step.span.line,
            instruction: step.source.lines().next().unwrap_or("").to_string(),
            message: message.into(),
            source,
        }
    }
}
