//! The one place that wires the pipeline: Dockerfile → plan → stages (FROM, steps) → layers in the
//! store → image config and manifest → tags and outputs.
//!
//! A stage's filesystem is the chain of its layers' committed snapshots (`store::snapshots`),
//! brought up to date only when a step reads or changes it: COPY reads its destination and
//! `--chown` names through a merged view of them, RUN mounts them as overlay lowers, and
//! `COPY --from` reads a hard-linked flat tree of the source stage. A layer holds exactly what the
//! step adds, so it never depends on the base.
//!
//! The wings, each using only those listed above it (no import circle, by file or by folder):
//!
//! | file or folder | job                                                                      |
//! |----------------|--------------------------------------------------------------------------|
//! | `ssh.rs`       | `--ssh`: the build's agents (kiln's own for key files), step proxies     |
//! | `error.rs`     | [`BuildError`]                                                           |
//! | `event.rs`     | what a build reports as it goes ([`Event`])                              |
//! | `request.rs`   | [`BuildRequest`], `--output`, `--secret`, registry and sandbox options   |
//! | `workspace.rs` | the build's scratch directory, trash emptied in the background           |
//! | `nospace.rs`   | ENOSPC anywhere in a build told as one "free space" error                |
//! | `named.rs`     | `--build-context`: names for the plan, local directories as source roots |
//! | `base/`        | FROM images: resolve, pull, unpack into snapshots while downloading      |
//! | `publish/`     | local tags, push, layers pushed early, `--cache-from`/`--cache-to`       |
//! | `inputs.rs`    | what every step reads and never changes (`Inputs`)             |
//! | `copy/`        | COPY/ADD: Docker's copy rules, straight-to-layer planner, URLs, archives |
//! | `step/`        | RUN, metadata, WORKDIR defaults, history, cache keys and records, flight |
//! | `stage.rs`     | the stage loop: the only code that commits layers and changes a stage    |
//! | `schedule.rs`  | stages on threads once their dependencies finished                       |
//! | `platforms.rs` | many platforms: emulation check, plan rendezvous, event numbering, index |
//! | `attestations.rs` | provenance and SBOM of the built image, the index that carries them   |
//! | `build.rs`     | the driver: request → plan → stages → image → outputs ([`build`])        |
//!
//! Must not: parse Dockerfiles, write tar or hash bytes itself — it calls the modules that do.

mod attestations;
mod base;
mod build;
mod copy;
mod error;
mod event;
mod inputs;
mod named;
mod nospace;
mod platforms;
mod publish;
mod request;
mod schedule;
mod ssh;
mod stage;
mod step;
mod workspace;

pub use base::prepare::commit_image_snapshots;
pub use base::StoreBases;
pub use build::{build, warning_text};
pub use error::BuildError;
pub use event::{Event, LayerSummary};
pub use named::plan_sources;
pub use request::{
    BuildRequest, BuildResult, NamedContext, Output, RegistryAccess, SandboxOptions, SecretSource,
    SshSource,
};
pub use step::metadata::{apply_metadata, MetaState};
pub use workspace::{empty_trash, scratch_dirs};
