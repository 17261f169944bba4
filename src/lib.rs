//! kiln — a native, rootless OCI image builder.
//!
//! Data flows one way through the pipeline:
//!
//! ```text
//! Dockerfile ─► dockerfile (parse, expand) ─► plan (stages, DAG pruned to the target, steps)
//!           ─► engine: each stage on its own thread once its dependencies finished (schedule),
//!                steps of a stage one after another; per step
//!                cache (key → recorded layer: reuse it and stop here; identical steps of
//!                concurrent builds run once)
//!                RUN:      snapshot.prepare (writable layer over the stage's committed snapshots)
//!                          ─► exec mounts it and runs the command ─► snapshot.diff ─► the upper
//!                          becomes the next committed snapshot (store)
//!                COPY/ADD: written into the layer straight from the context (or another stage);
//!                          its snapshot is made from the layer only when a later step needs it
//!                metadata: image config only (ENV, CMD, LABEL, …)
//!                ─► layer (changes → tar → compress → digest) ─► store (verified ingest)
//!           ─► image (config, manifest, history) ─► output: store tag | OCI layout | docker-archive
//!              | registry (layers upload while later steps run; the manifest last)
//! ```
//!
//! `unsafe` is denied crate-wide; only `exec` (namespaces, mounts, seccomp, fork/exec) may use it.
//!
//! Module map (each module may use only those listed above it):
//!
//! | module       | job                                                                      |
//! |--------------|--------------------------------------------------------------------------|
//! | `sync`       | poison-tolerant `lock`/`wait` for every module's mutexes                 |
//! | `report`     | one line from an error's cause chain (CLI, daemon, fsck, warnings)       |
//! | `atomic`     | durable whole-file replace (temp → fsync → rename → fsync dir)           |
//! | `digest`     | typed `Digest`, streaming sha256 (aws-lc-rs)                             |
//! | `reference`  | image references, normalised like Docker (`busybox` → docker.io/library) |
//! | `config`     | kiln.toml (buildkitd.toml's registry/worker sections + kiln's own)       |
//! | `dockerfile` | text → typed instructions with spans; directives, heredocs, expansion    |
//! | `plan`       | instructions + build args + target → stages, DAG, steps                  |
//! | `packages`   | package build spec (base + apt/conda/pip lines) → a generated Dockerfile |
//! | `api`        | the wire contract, a leaf: requests, records, build events, error kinds  |
//! | `context`    | source roots: `.dockerignore`, walking, escape guards, snapshot views    |
//! | `snapshot`   | RUN's writable layer over committed snapshots: prepare, diff, commit     |
//! | `exec`       | one process in a sandbox (namespaces, id maps, cgroups); the only unsafe |
//! | `layer`      | tree → deterministic tar → parallel gzip/zstd → diff_id + digest; apply  |
//! | `image`      | config (keeps Docker's fields), manifest, index, history; canonical JSON |
//! | `store`      | OCI layout: verified ingest, tags, committed snapshots, fsck, GC, leases |
//! | `attest`     | SLSA provenance, native SBOM, attestation manifests; metadata files      |
//! | `cache`      | step cache keys (schema-versioned), records; shared-cache artifact format |
//! | `registry`   | distribution client: pull, push, auth, per-host TLS/HTTP, mirrors        |
//! | `engine`     | the one place that wires the pipeline                                    |
//! | `resolve`    | one resolver: a build spec (flags, JSON, kiln.toml) → the engine request |
//! | `daemon`     | Unix-socket JSON API, build queue, event logs, records, systemd          |
//! | `cli`        | flags → validated commands → embedded engine → rendering                 |

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(unreachable_pub)]

pub mod api;
pub mod atomic;
pub mod attest;
pub mod cache;
pub mod cli;
pub mod config;
pub mod context;
pub mod daemon;
pub mod digest;
pub mod dockerfile;
pub mod engine;
#[allow(unsafe_code)]
pub mod exec;
pub mod image;
pub mod layer;
pub mod packages;
pub mod plan;
pub mod reference;
pub mod registry;
pub mod report;
pub mod resolve;
pub mod snapshot;
pub mod store;
pub mod sync;
