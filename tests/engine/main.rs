//! Integration tests of the build engine through the CLI: RUN, the local and shared cache, history,
//! offline builds, scheduling, golden images against BuildKit, package builds.
//!
//! One test binary per area, so kiln is linked once per area rather than once per file: each
//! `tests/engine/<name>.rs` is the module `<name>` (its tests are `<name>::<test>`), and
//! `tests/support/` holds the helpers every binary shares.

#[path = "../support/mod.rs"]
mod support;

mod attest_build;
mod build_cache;
mod build_flags;
mod build_history;
mod build_offline;
mod build_run;
mod cache_fuzz;
mod cache_share;
mod engine_copy_direct;
mod engine_early_push;
mod engine_golden_images;
mod engine_schedule;
mod engine_single_flight;
mod packages_build;
