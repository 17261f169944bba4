//! Integration tests of layer tars: writing them (reproducible, parallel gzip, bounded memory) and
//! applying them.
//!
//! One test binary per area, so kiln is linked once per area rather than once per file: each
//! `tests/layer/<name>.rs` is the module `<name>` (its tests are `<name>::<test>`), and
//! `tests/support/` holds the helpers every binary shares.

#[path = "../support/mod.rs"]
mod support;

mod layer_apply;
mod layer_gzip;
mod layer_memory;
mod layer_tar;
