//! Integration tests of Dockerfile parsing and planning (golden cases, fuzzing), `.dockerignore`,
//! and the CLI's `plan`/`export`/`images` commands.
//!
//! One test binary per area, so kiln is linked once per area rather than once per file: each
//! `tests/frontend/<name>.rs` is the module `<name>` (its tests are `<name>::<test>`), and
//! `tests/support/` holds the helpers every binary shares.

#[path = "../support/mod.rs"]
mod support;

mod cli_plan_export;
mod dockerfile_golden;
mod dockerignore;
mod frontend_fuzz;
