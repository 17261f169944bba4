//! The daemon's wire types: build requests, records, events and errors, as JSON (serde). Shared by
//! the daemon (which serves them) and the CLI client (which sends and renders them).
//!
//! Must not: do I/O, validate paths against the filesystem or run anything — the daemon resolves and
//! checks what these types carry; they only describe shapes and redaction.

mod catalog;
mod event;

pub use crate::packages::PackageSpec;
pub use catalog::{
    check_display_name, image_name, CatalogEntry, CatalogSpec, CatalogStatus, CatalogUpdate,
    ImageType,
};
pub use event::{BuildEvent, Event, LayerSummary};

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What replaces a secret wherever a request is shown or stored.
pub const REDACTED: &str = "<redacted>";

/// Where the daemon listens and clients look by default: `/run/kiln/kiln.sock` when kiln was
/// started as root, else `$XDG_RUNTIME_DIR/kiln/kiln.sock`, else `/tmp/kiln-<uid>/kiln.sock` (the
/// Python client's fallback is the same).
pub fn default_socket() -> std::path::PathBuf {
    crate::config::defaults::socket()
}

/// `POST /v1/builds` (and the changes of `POST /v1/builds/{id}/rebuild`). Unknown fields are refused
/// so that a typo never silently changes a build.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BuildSpec {
    /// The context directory: absolute, or relative to the first allowed root (default `/build`).
    /// Ignored when the context is sent as a tar body.
    pub context: Option<String>,
    /// Dockerfile path, relative to the context (default `Dockerfile`).
    pub dockerfile: Option<String>,
    /// Inline Dockerfile text (takes precedence over `dockerfile`).
    pub dockerfile_text: Option<String>,
    /// Full references (`registry.example.com/team/app:1.0`).
    pub tags: Vec<String>,
    /// `build_image(name=…, tag=…)` style: adds `name:tag` to `tags`.
    pub name: Option<String>,
    pub tag: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub no_cache: bool,
    /// Never pull base images: they must be in the daemon's store (`kiln build --no-pull`).
    pub no_pull: bool,
    /// Push every tag to its registry after the build.
    #[serde(alias = "push_image")]
    pub push: bool,
    /// BuildKit `--output` syntax: `type=oci,dest=PATH` or `type=docker,dest=FILE.tar`; dest under
    /// an allowed root.
    pub outputs: Vec<String>,
    /// `gzip`, `zstd` or `uncompressed` (not given: kiln.toml's `[build] compression`, else gzip).
    pub compression: Option<String>,
    pub compression_level: Option<i32>,
    pub source_date_epoch: Option<i64>,
    /// `[host, user, password]` triples for pulls and pushes of this build only; never stored.
    pub registry_credentials: Vec<Credential>,
    /// Treat every registry of this build's tags as insecure (plain HTTP / unverified TLS).
    pub insecure_registry: bool,
    /// Hosts to treat as insecure for this build: a list or a comma-separated string.
    pub insecure_registries: HostList,
    pub resources: Resources,
    /// `default` (= `host`) or `none`.
    pub network: Option<String>,
    pub secrets: Vec<SecretSpec>,
    /// Force a sandbox rung: `full`, `no-proc`, `single-uid`, `chroot`.
    pub sandbox: Option<String>,
    /// `auto`, `overlayfs`, `fuse-overlayfs`, `native`.
    pub snapshotter: Option<String>,
    /// Kill a RUN step running longer than this many seconds.
    pub step_timeout: Option<u64>,
    /// BuildKit `--cache-from` values, tried in order: `type=registry,ref=R`,
    /// `type=local,src=DIR[,tag=T]` (src under an allowed root), or a bare image reference.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    /// BuildKit `--cache-to` values: `type=registry,ref=R[,mode=min|max][,mounts=true]…`,
    /// `type=local,dest=DIR` (dest under an allowed root), `type=inline`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_to: Vec<String>,
    /// A package build instead of a Dockerfile: base image + APT / conda / pip lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<PackageSpec>,
    /// The catalog entry this build creates (`building`) and completes (`ready` / `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogSpec>,
    /// Target platforms (`linux/amd64`, `linux/arm64`, `linux/arm/v7`; an entry may list several
    /// separated by commas). Two or more make one image index; none: the daemon's platform.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// `--build-context NAME=VALUE`: `PATH` (a directory under an allowed root),
    /// `docker-image://REF` or `oci-layout://PATH[@DIGEST|:TAG]`, used by `FROM NAME` and
    /// `COPY --from=NAME` as BuildKit's named contexts are.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub build_contexts: BTreeMap<String, String>,
    /// `--ssh` values `ID=PATH[,PATH]`: an agent socket, or private key files loaded into a
    /// private agent for this build (paths under an allowed root).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<String>,
    /// `--add-host NAME:IP` entries for RUN steps' `/etc/hosts` (never in the image).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add_hosts: Vec<String>,
    /// Re-resolve every base image against its registry even when the store has it (BuildKit's
    /// `--pull`); `no_pull` and `pull` together are refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pull: bool,
    /// Stages whose steps run without the step cache (`--no-cache-filter`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub no_cache_filter: Vec<String>,
    /// Size of RUN steps' `/dev/shm` (bytes or `"128m"`; default 64 MiB as Docker's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Memory>,
    /// `--ulimit TYPE=SOFT[:HARD]` values for RUN steps (`nofile=1024:2048`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<String>,
    /// buildx `--provenance`: `true`, `false` or `mode=min|max[,builder-id=URL]` (not given:
    /// kiln.toml's `[build] provenance`, else none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// buildx `--sbom`: `true`, `false` or `format=spdx|cyclonedx` (not given: kiln.toml's
    /// `[build] sbom`, else none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<String>,
    /// buildx `--attest` values: `type=provenance,mode=max`, `type=sbom`, ….
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attest: Vec<String>,
    /// buildx `--annotation` values: `[index:|manifest:|manifest-descriptor:|index-descriptor:]K=V`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Where to write the image id (buildx `--iidfile`); under an allowed root for the daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iidfile: Option<String>,
    /// Where to write buildx's metadata JSON (`--metadata-file`); under an allowed root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_file: Option<String>,
    /// kaniko `--digest-file`: the image digest, no newline; under an allowed root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_file: Option<String>,
    /// kaniko `--image-name-with-digest-file`: `REPOSITORY@DIGEST` lines; under an allowed root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_name_with_digest_file: Option<String>,
}

impl BuildSpec {
    /// The spec as it may be stored and shown: credentials' passwords and secret values replaced.
    pub fn redacted(&self) -> BuildSpec {
        let mut s = self.clone();
        for c in &mut s.registry_credentials {
            c.password = REDACTED.to_string();
        }
        for sec in &mut s.secrets {
            if sec.value.is_some() {
                sec.value = Some(REDACTED.to_string());
            }
        }
        s
    }

    /// The spec to keep for a rebuild: credentials and inline secret values removed entirely
    /// (they must be given again).
    pub fn without_secrets(&self) -> BuildSpec {
        let mut s = self.clone();
        s.registry_credentials.clear();
        s.secrets.retain(|sec| sec.value.is_none());
        s
    }

    /// `tags` plus `name:tag` when a name is given.
    pub fn all_tags(&self) -> Vec<String> {
        let mut tags = self.tags.clone();
        if let Some(name) = &self.name {
            tags.push(match &self.tag {
                Some(t) => format!("{name}:{t}"),
                None => name.clone(),
            });
        }
        tags
    }
}

/// One registry login: `[host, user, password]` on the wire (an object is accepted too).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CredentialWire", into = "(String, String, String)")]
pub struct Credential {
    pub host: String,
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, {}, {REDACTED})", self.host, self.user)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CredentialWire {
    Triple(String, String, String),
    Object {
        host: String,
        #[serde(alias = "username")]
        user: String,
        password: String,
    },
}

impl From<CredentialWire> for Credential {
    fn from(w: CredentialWire) -> Credential {
        match w {
            CredentialWire::Triple(host, user, password)
            | CredentialWire::Object {
                host,
                user,
                password,
            } => Credential {
                host,
                user,
                password,
            },
        }
    }
}

impl From<Credential> for (String, String, String) {
    fn from(c: Credential) -> Self {
        (c.host, c.user, c.password)
    }
}

/// Hosts as a JSON list or a comma-separated string (`"a.example.com,b.example.com"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HostListWire", into = "Vec<String>")]
pub struct HostList(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum HostListWire {
    Text(String),
    List(Vec<String>),
}

impl From<HostListWire> for HostList {
    fn from(w: HostListWire) -> HostList {
        let items = match w {
            HostListWire::Text(s) => s.split(',').map(str::to_string).collect(),
            HostListWire::List(l) => l,
        };
        HostList(
            items
                .into_iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
        )
    }
}

impl From<HostList> for Vec<String> {
    fn from(h: HostList) -> Self {
        h.0
    }
}

/// Limits for each RUN step of a build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    pub cpus: Option<f64>,
    /// Bytes, or a string with a k/m/g suffix (`"512m"`).
    pub memory: Option<Memory>,
    /// Share of the machine in percent (1-100): caps cpus and memory when they are not given.
    pub capacity: Option<u8>,
}

/// A memory size as a number of bytes or a suffixed string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Memory {
    Bytes(u64),
    Text(String),
}

impl Memory {
    /// The size in bytes (`"512m"` read as `docker run --memory` reads it).
    pub fn bytes(&self) -> Result<u64, crate::config::SizeError> {
        match self {
            Memory::Bytes(b) => Ok(*b),
            Memory::Text(t) => crate::config::parse_size(t),
        }
    }
}

/// A secret for `RUN --mount=type=secret,id=ID`: an inline `value` (written to a private file for
/// the build and deleted after), a `src` file under an allowed root, or (embedded builds only: the
/// daemon refuses it, its environment is not the caller's) an `env` variable.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretSpec({}, src={:?}, env={:?})",
            self.id, self.src, self.env
        )
    }
}

/// `202` answer to a new build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
}

/// A build's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// Who asked for a build (SO_PEERCRED of the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// One step of a build record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    pub stage: String,
    pub line: usize,
    pub instruction: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerSummary>,
}

/// What a successful build produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildOutcome {
    pub manifest: String,
    /// The index over the manifest and its attestations, when the build made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    pub config: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub duration_ms: u64,
}

/// `GET /v1/builds/{id}` (and the items of `GET /v1/builds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub id: String,
    pub status: Status,
    /// The request with secrets redacted.
    pub spec: serde_json::Value,
    /// Unix seconds.
    pub created: i64,
    pub finished: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    /// The Dockerfile text the build used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<BuildOutcome>,
}

/// `PUT /v1/config`: an insecure-registry list, or a whole kiln.toml / buildkitd.toml text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigUpdate {
    pub insecure_registries: Option<HostList>,
    pub config_content: Option<String>,
}

/// `POST /v1/prune` (an empty body too): `docker buildx prune`'s options. Sizes are bytes or
/// suffixed strings (`"1g"`); `filters` may hold `until=DURATION`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneRequest {
    pub all: bool,
    pub filters: Vec<String>,
    /// Deprecated in buildx: the same as `reserved_space`.
    pub keep_storage: Option<Memory>,
    pub reserved_space: Option<Memory>,
    pub max_used_space: Option<Memory>,
    pub min_free_space: Option<Memory>,
}

/// `GET /v1/config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigView {
    pub insecure_registries: Vec<String>,
    /// The configuration text with secrets redacted.
    pub config: String,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Stable error kinds: clients match on these, never on messages.
pub mod kind {
    pub const INVALID_JSON: &str = "invalid_json";
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const FORBIDDEN: &str = "forbidden";
    pub const CONTEXT_OUTSIDE_ROOTS: &str = "context_outside_roots";
    pub const CONTEXT_NOT_FOUND: &str = "context_not_found";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const CONFLICT: &str = "conflict";
    pub const INVALID_CONFIG: &str = "invalid_config";
    pub const SHUTTING_DOWN: &str = "shutting_down";
    pub const BUILD_FAILED: &str = "build_failed";
    pub const INTERRUPTED: &str = "interrupted";
    pub const PUSH_FAILED: &str = "push_failed";
    pub const INTERNAL: &str = "internal";
    /// The build's record in kiln.db could not be written (a full disk, a read-only database).
    pub const RECORD_FAILED: &str = "record_failed";
}

pub use crate::report::error_text;

/// `{"error": {"kind", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub kind: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(kind: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                kind: kind.to_string(),
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_as_triples_and_are_redacted() {
        let s: BuildSpec = serde_json::from_str(
            r#"{"registry_credentials":[["r.example.com","u","hunter2"]],"push_image":true,
                "insecure_registries":"a.example.com, b.example.com"}"#,
        )
        .unwrap();
        assert!(s.push);
        assert_eq!(s.insecure_registries.0, ["a.example.com", "b.example.com"]);
        let shown = serde_json::to_string(&s.redacted()).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(s.without_secrets().registry_credentials.is_empty());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = serde_json::from_str::<BuildSpec>(r#"{"tagz":["a"]}"#).unwrap_err();
        assert!(e.to_string().contains("tagz"), "{e}");
    }
}
