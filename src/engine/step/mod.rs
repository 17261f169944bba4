//! Steps that are not COPY/ADD: RUN in the sandbox (`run.rs`), config-only instructions
//! (`metadata.rs`), a new stage's defaults and WORKDIR's owner (`stage_defaults.rs`), the history
//! entries BuildKit writes (`history.rs`), and the step cache — keys, lookup, records (`cached.rs`)
//! — with identical steps of concurrent builds run once (`flight.rs`).
//!
//! Must not: commit a layer or change a stage's state; the stage loop (`stage.rs`) does.

pub(crate) mod cached;
pub(crate) mod flight;
pub(crate) mod history;
pub(crate) mod metadata;
pub(crate) mod run;
pub(crate) mod stage_defaults;
