//! The OpenAPI 3.1 description served at `/v1/openapi.json`. `ROUTES` is the one list of routes;
//! the daemon test calls every one of them and checks the router answers (not 404/405), so the
//! document cannot drift from the router.
//!
//! Must not: describe a route the router does not serve.

use serde_json::{json, Map, Value};

/// (method, path, summary, success status)
pub const ROUTES: &[(&str, &str, &str, u16)] = &[
    ("get", "/v1/info", "Version, rootless, sandbox rung, snapshotter, storage use", 200),
    ("get", "/v1/openapi.json", "This document", 200),
    ("post", "/v1/builds", "Start a build (JSON BuildSpec, or an application/x-tar context with the spec in the X-Kiln-Build header)", 202),
    ("get", "/v1/builds", "Build records, newest first (?status=, ?limit=)", 200),
    ("get", "/v1/builds/{id}", "One build record: spec (secrets redacted), status, steps, result, Dockerfile", 200),
    ("get", "/v1/builds/{id}/events", "NDJSON event stream, replayed from the start or ?offset=N events, followed until the build ends", 200),
    ("get", "/v1/builds/{id}/logs", "The build's log as plain text (?offset=N events)", 200),
    ("post", "/v1/builds/{id}/cancel", "Cancel a queued or running build", 202),
    ("post", "/v1/builds/{id}/rebuild", "Start a new build from a record's spec with optional changes (credentials must be given again)", 202),
    ("get", "/v1/catalog", "Catalog entries the caller may see (?q= keyword search over name, display name, description, URL)", 200),
    ("post", "/v1/catalog", "Add an existing image to the catalog: {display_name, url, type, gpu_url, description, global | groups, pull_secret}", 201),
    ("get", "/v1/catalog/{name}", "One catalog entry: type, URL(s), visibility, status (building with the build id, ready, failed)", 200),
    ("put", "/v1/catalog/{name}", "Change a catalog entry's fields", 200),
    ("delete", "/v1/catalog/{name}", "Remove a catalog entry", 200),
    ("get", "/v1/config", "Registry settings, secrets redacted", 200),
    ("put", "/v1/config", "Update registry settings: {insecure_registries} and/or {config_content} (TOML)", 200),
    ("get", "/v1/images", "Images in the store", 200),
    ("get", "/v1/images/{name}", "One image: digest and manifest", 200),
    ("delete", "/v1/images/{name}", "Untag an image", 200),
    ("post", "/v1/prune", "Remove build cache like docker buildx prune (body: all, filters, keep_storage, reserved_space, max_used_space, min_free_space)", 200),
    ("get", "/metrics", "Prometheus text metrics", 200),
];

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["kind", "message"],
            "properties": {"kind": {"type": "string"}, "message": {"type": "string"}}}}
    })
}

fn build_spec_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    let mut v = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "context": s("Context directory: absolute or relative to the first allowed root (default /build)"),
            "dockerfile": s("Dockerfile path relative to the context (default Dockerfile)"),
            "dockerfile_text": s("Inline Dockerfile"),
            "tags": {"type": "array", "items": {"type": "string"}},
            "name": s("Image name; with tag, adds name:tag to tags"),
            "tag": s("Tag for name"),
            "build_args": {"type": "object", "additionalProperties": {"type": "string"}},
            "target": s("Stage to build"),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "no_cache": {"type": "boolean"},
            "no_pull": {"type": "boolean"},
            "push": {"type": "boolean", "description": "alias push_image"},
            "outputs": {"type": "array", "items": {"type": "string"}, "description": "type=oci|docker,dest=PATH under an allowed root"},
            "cache_from": {"type": "array", "items": {"type": "string"}, "description": "BuildKit --cache-from: type=registry,ref=R | type=local,src=DIR under an allowed root | an image reference; tried in order"},
            "cache_to": {"type": "array", "items": {"type": "string"}, "description": "BuildKit --cache-to: type=registry,ref=R[,mode=min|max][,mounts=true][,ignore-error=true] | type=local,dest=DIR | type=inline"},
            "platforms": {"type": "array", "items": {"type": "string"}, "description": "target platforms (linux/amd64, linux/arm64, linux/arm/v7; an item may list several, comma-separated): two or more build one image index"},
            "compression": {"enum": ["gzip", "zstd", "uncompressed"]},
            "compression_level": {"type": "integer"},
            "source_date_epoch": {"type": "integer"},
            "registry_credentials": {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3}, "description": "[host, user, password]; never stored"},
            "insecure_registry": {"type": "boolean"},
            "insecure_registries": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "resources": {"type": "object", "additionalProperties": false, "properties": {
                "cpus": {"type": "number"},
                "memory": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                "capacity": {"type": "integer", "minimum": 1, "maximum": 100}}},
            "network": {"enum": ["default", "host", "none"]},
            "secrets": {"type": "array", "items": {"type": "object", "required": ["id"], "additionalProperties": false,
                "properties": {"id": {"type": "string"}, "value": {"type": "string"}, "src": {"type": "string"}}}},
            "sandbox": {"enum": ["full", "no-proc", "single-uid", "chroot"]},
            "snapshotter": {"enum": ["auto", "overlayfs", "fuse-overlayfs", "native"]},
            "step_timeout": {"type": "integer"}
        }
    });
    ci_flags_schema(&mut v["properties"]);
    v["properties"]["packages"] = packages_schema();
    v["properties"]["catalog"] = catalog_schema();
    for (k, d) in attest_fields() {
        v["properties"][k] = d;
    }
    v
}

/// The `docker buildx build` flags' fields (issue 21).
fn ci_flags_schema(p: &mut Value) {
    let list = |d: &str| json!({"type": "array", "items": {"type": "string"}, "description": d});
    p["build_contexts"] = json!({"type": "object", "additionalProperties": {"type": "string"},
        "description": "--build-context NAME: PATH under an allowed root | docker-image://REF | oci-layout://PATH[@DIGEST|:TAG]"});
    p["ssh"] = list("--ssh ID=SOCKET | ID=KEYFILE[,KEYFILE], paths under an allowed root");
    p["add_hosts"] = list("--add-host NAME:IP for RUN steps' /etc/hosts");
    p["pull"] =
        json!({"type": "boolean", "description": "re-resolve every base against its registry"});
    p["no_cache_filter"] = list("stages whose steps skip the step cache");
    p["shm_size"] = json!({"oneOf": [{"type": "integer"}, {"type": "string"}], "description": "RUN steps' /dev/shm size"});
    p["ulimits"] = list("--ulimit TYPE=SOFT[:HARD] for RUN steps");
}

/// Attestations, annotations and metadata files (issue 21).
fn attest_fields() -> Vec<(&'static str, Value)> {
    let s = |d: &str| json!({"type": "string", "description": d});
    let list = |d: &str| json!({"type": "array", "items": {"type": "string"}, "description": d});
    vec![
        ("provenance", s("buildx --provenance: true | false | mode=min|max[,builder-id=URL] (default: kiln.toml [build] provenance, else off)")),
        ("sbom", s("buildx --sbom: true | false | format=spdx|cyclonedx; read natively from the image's package databases (default: kiln.toml [build] sbom, else off)")),
        ("attest", list("buildx --attest: type=provenance[,mode=min|max] | type=sbom[,format=spdx|cyclonedx]")),
        ("annotations", list("buildx --annotation: [index:|manifest:|manifest-descriptor:|index-descriptor:]KEY=VALUE (default manifest)")),
        ("iidfile", s("buildx --iidfile, under an allowed root: the config digest, or the index digest when the image is an index")),
        ("metadata_file", s("buildx --metadata-file, under an allowed root: containerimage.digest, containerimage.descriptor, image.name, containerimage.config.digest")),
        ("digest_file", s("kaniko --digest-file, under an allowed root: the image digest without a newline")),
        ("image_name_with_digest_file", s("kaniko --image-name-with-digest-file, under an allowed root: REPOSITORY@DIGEST lines")),
    ]
}

fn packages_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({"type": "object", "additionalProperties": false, "required": ["base"],
                "description": "A package build instead of a Dockerfile: kiln generates the Dockerfile; a bad line is a 400 naming it",
                "properties": {
                    "base": s("Base image"),
                    "apt": {"type": "array", "items": {"type": "string"}, "description": "name, name=1.2*, name/release"},
                    "conda": {"type": "array", "items": {"type": "string"}, "description": "conda match specs, optionally after -c CHANNEL"},
                    "pip": {"type": "array", "items": {"type": "string"}, "description": "PEP 508 requirements"},
                    "gpu_base": s("GPU base of a universal catalog image")}})
}

fn catalog_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({"type": "object", "additionalProperties": false, "required": ["display_name"],
                "description": "The catalog entry this build creates (building) and completes (ready / failed)",
                "properties": {
                    "display_name": s("Lowercase letters, digits, - and .; the image name is generated from it"),
                    "description": s("Free text"),
                    "type": {"enum": ["cpu", "gpu", "universal"]},
                    "gpu_url": s("GPU image URL (universal; default: the same)"),
                    "global": {"type": "boolean"},
                    "groups": {"type": "array", "items": {"type": "string"}},
                    "pull_secret": s("A reference to the pull secret (a name, never the secret)")}})
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, ok) in ROUTES {
        let mut op = json!({
            "summary": summary,
            "responses": {
                ok.to_string(): {"description": "success"},
                "4XX": {"description": "bad request, forbidden, not found, conflict",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        let params: Vec<Value> = ["id", "name"]
            .iter()
            .filter(|p| path.contains(&format!("{{{p}}}")))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if *method == "post" && *path == "/v1/builds" {
            op["requestBody"] = json!({"content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BuildSpec"}},
                "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}});
        }
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "kiln daemon API", "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": "http://kiln", "description": "over the Unix socket (curl --unix-socket)"}],
        "paths": paths,
        "components": {"schemas": {"Error": error_schema(), "BuildSpec": build_spec_schema()}}
    })
}
