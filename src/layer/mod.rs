//! Layers: change set → deterministic tar → gzip/zstd (parallel) → diff_id + digest; and applying a
//! layer blob into a directory (whiteouts, escape guards).
//!
//! Must not: buffer a whole layer in memory, know about snapshots, stores or registries.
pub mod gzip;
