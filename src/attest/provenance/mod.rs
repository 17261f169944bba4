//! SLSA v1 provenance (`https://slsa.dev/provenance/v1`) in BuildKit's shape
//! (`solver/llbsolver/provenance/types`, `predicate.go`, `solver/llbsolver/provenance.go`):
//! `buildDefinition.externalParameters` holds the request as BuildKit's Dockerfile frontend sees it
//! (`frontend: dockerfile.v0`, `args` with `build-arg:K` / `label:K` / `target`, the `context` and
//! `dockerfile` locals, `configSource.path` and — kiln's addition in the field SLSA defines — the
//! Dockerfile's digest); `resolvedDependencies` lists each base image as
//! `pkg:docker/NAME@TAG?platform=…` with its digest; `runDetails` carries `builder.id`, the
//! invocation id and the times. `mode=min` drops build args, labels, secret and ssh ids and marks
//! the request incomplete (`scrubMinRequest`); `mode=max` adds the steps
//! (`internalParameters.buildConfig.llbDefinition`, see `llb.rs`) and the Dockerfile source.
//!
//! Must not: read a secret (only the ids of `--secret`s are named), or touch the filesystem.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::{ProvenanceMode, ProvenanceOptions};
use crate::digest::Digest;
use crate::image::Platform;
use crate::plan::Plan;

pub const PREDICATE_SLSA1: &str = "https://slsa.dev/provenance/v1";
pub const BUILD_TYPE: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";

mod llb;

/// What the provenance says about a build.
pub struct BuildFacts<'a> {
    pub plan: &'a Plan,
    /// The Dockerfile's name as given (`configSource.path`).
    pub dockerfile_name: &'a str,
    pub dockerfile: &'a [u8],
    /// Build args as the caller gave them (kiln's own SOURCE_DATE_EPOCH arg excluded).
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
    /// `--secret` ids (never values).
    pub secret_ids: Vec<String>,
    /// Each base image reference as the plan names it → the digest it resolved to.
    pub bases: &'a BTreeMap<String, Digest>,
    pub platform: &'a Platform,
    pub started: i64,
    pub finished: i64,
    pub invocation_id: String,
}

/// The predicate for `facts` in `opts`' mode.
pub fn predicate(facts: &BuildFacts<'_>, opts: &ProvenanceOptions) -> Value {
    let max = opts.mode == ProvenanceMode::Max;
    let mut args = Map::new();
    for (k, v) in facts.build_args {
        args.insert(format!("build-arg:{k}"), json!(v));
    }
    for (k, v) in facts.labels {
        args.insert(format!("label:{k}"), json!(v));
    }
    // `scrubMinRequest`: build args and labels only with mode=max.
    let scrubbed = !max && !args.is_empty();
    if !max {
        args.clear();
    }
    if let Some(t) = facts.target {
        args.insert("target".into(), json!(t));
    }
    let mut request = json!({
        "frontend": "dockerfile.v0",
        "locals": [{"name": "context"}, {"name": "dockerfile"}],
    });
    if !args.is_empty() {
        request["args"] = Value::Object(args);
    }
    if max && !facts.secret_ids.is_empty() {
        let ids: Vec<Value> = facts
            .secret_ids
            .iter()
            .map(|id| json!({"id": id}))
            .collect();
        request["secrets"] = Value::Array(ids);
    }
    let df_digest = Digest::of(facts.dockerfile);
    let mut internal = json!({ "builderPlatform": Platform::host().to_string() });
    let mut buildkit_metadata = json!({});
    if max {
        internal["buildConfig"] = llb::build_config(facts);
        buildkit_metadata["source"] = json!({
            "infos": [{
                "filename": facts.dockerfile_name,
                "language": "Dockerfile",
                "data": base64::engine::general_purpose::STANDARD.encode(facts.dockerfile),
            }],
        });
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": {
                    "path": facts.dockerfile_name,
                    "digest": { df_digest.algorithm(): df_digest.hex() },
                },
                "request": request,
            },
            "internalParameters": internal,
            "resolvedDependencies": resolved_dependencies(facts),
        },
        "runDetails": {
            "builder": { "id": opts.builder_id },
            "metadata": {
                "invocationID": facts.invocation_id,
                "startedOn": super::timestamp(facts.started),
                "finishedOn": super::timestamp(facts.finished),
                "buildkit_completeness": {
                    "request": !scrubbed,
                    // The local context is a source no digest names (BuildKit: `Local` sources
                    // make the materials incomplete, and the build not hermetic).
                    "resolvedDependencies": false,
                },
                "buildkit_metadata": buildkit_metadata,
            },
        },
    })
}

/// Each base image once, in the order the built stages name them.
fn resolved_dependencies(facts: &BuildFacts<'_>) -> Vec<Value> {
    image_references(facts.plan)
        .iter()
        .filter_map(|r| {
            let parsed: crate::reference::Reference = r.parse().ok()?;
            let mut d = json!({ "uri": super::purl::image(&parsed, Some(facts.platform)) });
            if let Some(dg) = facts.bases.get(r) {
                d["digest"] = json!({ dg.algorithm(): dg.hex() });
            }
            Some(d)
        })
        .collect()
}

/// Every image the built stages read (FROM, `COPY --from`, `RUN --mount from=`), each once: what
/// the caller resolves to digests for [`BuildFacts::bases`].
pub fn image_references(plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in llb::image_references(plan) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}
