//! kiln — a native, rootless OCI image builder.
//!
//! Data flows one way through the pipeline:
//!
//! ```text
//! Dockerfile ─► dockerfile (parse, expand) ─► plan (stages → DAG of steps, cache keys)
//!           ─► engine
//!                per step: snapshot.prepare ─► exec (RUN) | context copy (COPY/ADD)
//!                          ─► layer (diff → tar → compress → digest) ─► store (verified ingest)
//!           ─► image (config, manifest, history) ─► output: store tag | OCI layout | docker-archive
//! ```
//!
//! Module map (each module may use only those listed above it):
//!
//! | module       | job                                                                      |
//! |--------------|--------------------------------------------------------------------------|
//! | `atomic`     | durable whole-file replace (temp → fsync → rename → fsync dir)           |
//! | `digest`     | typed `Digest`, streaming sha256 (aws-lc-rs)                             |
//! | `reference`  | image references, normalised like Docker (`busybox` → docker.io/library) |
//! | `config`     | kiln.toml (buildkitd.toml's registry/worker sections + kiln's own)       |
//! | `dockerfile` | text → typed instructions with spans; directives, heredocs, expansion    |
//! | `plan`       | instructions + build args + target → stages, DAG, steps                  |
//! | `packages`   | package build spec (base + apt/conda/pip lines) → a generated Dockerfile |
//! | `context`    | build context: `.dockerignore`, walking, path-escape guards              |
//! | `snapshot`   | containerd-style snapshots: overlayfs, fuse-overlayfs, native copy       |
//! | `exec`       | one process in a sandbox (namespaces, id maps, cgroups); the only unsafe |
//! | `layer`      | tree → deterministic tar → parallel gzip/zstd → diff_id + digest; apply  |
//! | `image`      | config (keeps Docker's fields), manifest, index, history; canonical JSON |
//! | `store`      | OCI image layout: verified atomic ingest, tags, fsck, SQLite metadata    |
//! | `cache`      | step cache keys (schema-versioned) and records of the layers they made   |
//! | `registry`   | distribution client: pull, push, auth, per-host TLS/HTTP, mirrors        |
//! | `engine`     | the one place that wires the pipeline                                    |
//! | `api`        | the daemon's wire types: requests, records, events, error kinds          |
//! | `daemon`     | Unix-socket JSON API, build queue, event logs, records, systemd          |
//! | `cli`        | flags → validated commands → embedded engine → rendering                 |

pub mod api;
pub mod atomic;
pub mod cache;
pub mod cli;
pub mod config;
pub mod context;
pub mod daemon;
pub mod digest;
pub mod dockerfile;
pub mod engine;
pub mod exec;
pub mod image;
pub mod layer;
pub mod packages;
pub mod plan;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
