//! Integration tests of across modules: fuzzing what comes from outside the machine, the module
//! map, and the rootless defaults as a real non-root user.
//!
//! One test binary per area, so kiln is linked once per area rather than once per file: each
//! `tests/misc/<name>.rs` is the module `<name>` (its tests are `<name>::<test>`), and
//! `tests/support/` holds the helpers every binary shares.

#[path = "../support/mod.rs"]
mod support;

mod fuzz_inputs;
mod module_map;
mod rootless_defaults;
