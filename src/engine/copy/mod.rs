//! COPY and ADD: Docker's copy rules decided once (`rules.rs`) for two sinks — a staging
//! directory or a layer written straight from the sources (`planner.rs`) — the step that turns
//! the instruction into a copy (`step.rs`), ADD's URLs (`url.rs`) and local archives (`add.rs`),
//! and the file helpers they share (`fsutil.rs`, `hardlink.rs`).
//!
//! Must not: commit a layer or change a stage's state; the stage loop (`stage.rs`) does.

pub(crate) mod add;
pub(crate) mod fsutil;
pub(crate) mod hardlink;
pub(crate) mod planner;
pub(crate) mod rules;
pub(crate) mod step;
pub(crate) mod url;
