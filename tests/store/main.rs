//! Integration tests of the content store: ingest, garbage collection, layouts and archives, a full
//! disk, and canonical image JSON.
//!
//! One test binary per area, so kiln is linked once per area rather than once per file: each
//! `tests/store/<name>.rs` is the module `<name>` (its tests are `<name>::<test>`), and
//! `tests/support/` holds the helpers every binary shares.

#[path = "../support/mod.rs"]
mod support;

mod image_canonical;
mod store_disk_full;
mod store_gc;
mod store_ingest;
mod store_tools;
mod store_upgrade;
