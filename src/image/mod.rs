//! Image metadata: the image config (keeping Docker's Healthcheck/OnBuild/Shell/ArgsEscaped), manifests,
//! indexes, descriptors, platforms, and canonical JSON.
//!
//! Own serde types instead of `oci-spec`'s: its config type drops Docker's extra fields and its
//! HashMaps make the serialised bytes (and so the digest) change from run to run. Everything kiln
//! writes goes through [`canonical_json`], so the same image always has the same digest.
//!
//! Must not: do I/O (reading or writing blobs is the `store`'s job) or know about layers' contents.

mod config;

pub use config::{ContainerConfig, Empty, Healthcheck, History, ImageConfig, RootFs};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The OCI image layout annotation that names a tag in `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The OCI annotation for the image creation time.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// Why image metadata could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("serialising {what} to JSON")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("parsing {what} JSON")]
    Parse {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} has schemaVersion {found}, only 2 is supported")]
    SchemaVersion { what: &'static str, found: u32 },
}

/// What kind of JSON document a manifest-ish blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An OCI image manifest or a Docker schema 2 manifest.
    Manifest,
    /// An OCI image index or a Docker manifest list.
    Index,
}

/// The kind a media type names, if it names a manifest or an index.
pub fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => Some(ManifestKind::Manifest),
        MEDIA_OCI_INDEX | MEDIA_DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// The kind of a manifest-ish document from its bytes: its `mediaType` when set (OCI makes the field
/// optional), else its shape (`manifests` means an index, `layers`/`config` a manifest).
pub fn sniff_manifest_kind(bytes: &[u8]) -> Option<ManifestKind> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    if let Some(k) = p.media_type.as_deref().and_then(manifest_kind) {
        return Some(k);
    }
    if p.manifests.is_some() {
        Some(ManifestKind::Index)
    } else if p.config.is_some() || p.layers.is_some() {
        Some(ManifestKind::Manifest)
    } else {
        None
    }
}

/// Whether a layer media type is gzip-compressed, zstd-compressed or plain tar.
pub fn is_layer_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// A content descriptor (OCI image spec, descriptor.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// Embedded content, base64 (OCI descriptor `data`; BuildKit's empty-JSON config carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
            data: None,
        }
    }

    /// The descriptor of a JSON blob already serialised (digest and size of exactly these bytes).
    pub fn for_bytes(media_type: impl Into<String>, bytes: &[u8]) -> Descriptor {
        Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64)
    }

    /// The `org.opencontainers.image.ref.name` annotation, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }
}

/// The platform an image runs on (OCI image index spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "config::null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            variant: variant.map(str::to_string),
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// The platform of this process, in Go's GOOS/GOARCH vocabulary as registries use it.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform::new(std::env::consts::OS, arch, variant)
    }

    /// Whether an image for `self` runs on `want`: os and architecture equal, and the variant equal
    /// when both name one (arm64's "v8" is the default, so a missing one matches it).
    pub fn satisfies(&self, want: &Platform) -> bool {
        if self.os != want.os || self.architecture != want.architecture {
            return false;
        }
        let norm = |v: &Option<String>| -> Option<String> {
            match (self.architecture.as_str(), v.as_deref()) {
                ("arm64", Some("v8")) | ("arm64", None) => None,
                (_, v) => v.map(str::to_string),
            }
        };
        match (norm(&self.variant), norm(&want.variant)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (OCI image manifest or Docker schema 2; same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Optional in OCI (empty when the document had none), required by Docker schema 2.
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A new OCI manifest.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: MEDIA_OCI_MANIFEST.to_string(),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Manifest, ImageError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|source| ImageError::Parse {
            what: "image manifest",
            source,
        })?;
        if m.schema_version != 2 {
            return Err(ImageError::SchemaVersion {
                what: "image manifest",
                found: m.schema_version,
            });
        }
        Ok(m)
    }

    /// Canonical bytes and the descriptor naming them.
    pub fn to_blob(&self) -> Result<(Vec<u8>, Descriptor), ImageError> {
        let bytes = canonical_json(self)?;
        let mt = if self.media_type.is_empty() {
            MEDIA_OCI_MANIFEST
        } else {
            &self.media_type
        };
        let desc = Descriptor::for_bytes(mt, &bytes);
        Ok((bytes, desc))
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for Index {
    fn default() -> Self {
        Index::new(Vec::new())
    }
}

impl Index {
    pub fn new(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: MEDIA_OCI_INDEX.to_string(),
            manifests,
            annotations: BTreeMap::new(),
        }
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Index, ImageError> {
        let i: Index = serde_json::from_slice(bytes).map_err(|source| ImageError::Parse {
            what: "image index",
            source,
        })?;
        if i.schema_version != 2 {
            return Err(ImageError::SchemaVersion {
                what: "image index",
                found: i.schema_version,
            });
        }
        Ok(i)
    }

    /// The first manifest whose platform runs on `want` (entries without a platform never match).
    pub fn select(&self, want: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            manifest_kind(&d.media_type) == Some(ManifestKind::Manifest)
                && d.platform.as_ref().is_some_and(|p| p.satisfies(want))
        })
    }
}

/// Serialise to canonical JSON: object keys sorted (by bytes) at every level, no insignificant
/// whitespace. The same value gives the same bytes on every run, whatever map types it holds.
pub fn canonical_json<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, ImageError> {
    let value = serde_json::to_value(v).map_err(|source| ImageError::Serialize {
        what: std::any::type_name::<T>(),
        source,
    })?;
    let mut out = Vec::with_capacity(1024);
    write_canonical(&value, &mut out).map_err(|source| ImageError::Serialize {
        what: std::any::type_name::<T>(),
        source,
    })?;
    Ok(out)
}

// Sorting here rather than relying on serde_json's BTreeMap-backed `Map`: another crate in the graph
// enabling `preserve_order` would silently switch it to insertion order.
fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                write_canonical(val, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

/// RFC 3339 UTC timestamp with second precision (`2024-01-02T03:04:05Z`), as Docker writes `created`.
pub fn rfc3339(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

// Howard Hinnant's days-from-civil inverse (proleptic Gregorian), valid for all i64 day counts we meet.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests;
