//! Integration tests of pull and push against real registries: auth, credentials, TLS, mirrors,
//! faults, hostile registries, builds that push.
//!
//! One test binary per area, so kiln is linked once per area rather than once per file: each
//! `tests/registry/<name>.rs` is the module `<name>` (its tests are `<name>::<test>`), and
//! `tests/support/` holds the helpers every binary shares.

#[path = "../support/mod.rs"]
mod support;

mod kill_phases;
mod registry_auth;
mod registry_auth_load;
mod registry_build;
mod registry_credentials;
mod registry_faults;
mod registry_hostile;
mod registry_mirror;
mod registry_platforms;
mod registry_pull_push;
mod registry_tls;
