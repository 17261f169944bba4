//! Integration tests of the sandbox and the snapshotters: exec as root and rootless, single-uid
//! mode, the snapshotter suite, CA injection into RUN steps, kiln in a restricted pod (podman).
//!
//! One test binary per area, so kiln is linked once per area rather than once per file: each
//! `tests/sandbox/<name>.rs` is the module `<name>` (its tests are `<name>::<test>`), and
//! `tests/support/` holds the helpers every binary shares.

#[path = "../support/mod.rs"]
mod support;

mod exec_ca_injection;
mod pod;
mod sandbox_exec;
mod sandbox_single_uid;
mod snapshot_suite;
