//! Integration tests of the daemon and its clients: the socket API, catalog, records, the sidecar
//! pod, kill and restart, soak, a burst under a memory cap, the Python client, CLI/API parity, a closed stdout.
//!
//! One test binary per area, so kiln is linked once per area rather than once per file: each
//! `tests/daemon/<name>.rs` is the module `<name>` (its tests are `<name>::<test>`), and
//! `tests/support/` holds the helpers every binary shares.

#[path = "../support/mod.rs"]
mod support;

mod api_resolve_parity;
mod cli_closed_stdout;
mod client_python;
mod daemon_api;
mod daemon_attest;
mod daemon_burst;
mod daemon_catalog;
mod daemon_flags;
mod daemon_kill;
mod daemon_platforms;
mod daemon_records;
mod daemon_sidecar;
mod daemon_soak;
