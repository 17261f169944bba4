//! The shared cache's artifact format, and checking one before any of it is believed.
//!
//! A cache is an OCI image manifest (an "artifact"): its config, media type [`MEDIA_CONFIG`], maps
//! schema-versioned step keys (the same keys as the local step cache) to layer descriptors; its
//! layers list every blob the config names — the image's own layers (so a registry keeps them and
//! a push can cross-repository mount them) and one tar blob per exported cache mount. BuildKit's
//! cache (`application/vnd.buildkit.cacheconfig.v0`, `cache/remotecache/v1`) keys steps by its own
//! LLB digests, which kiln cannot compute: such a cache is recognised and refused with a warning.
//!
//! An inline cache is the same config stored under [`INLINE_KEY`] in an image's config JSON (as
//! BuildKit stores `moby.buildkit.cache.v0`), naming only that image's layers.
//!
//! Must not: fetch anything, or trust a descriptor the manifest does not list (a record naming a
//! blob the artifact does not carry is dropped, so a partial cache can only cost a rebuild).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CacheKey, Record, SCHEMA};
use crate::digest::Digest;
use crate::image::{Descriptor, ImageConfig, Manifest, Platform, MEDIA_OCI_MANIFEST};

/// The cache config's media type (the manifest's `config.mediaType`).
pub const MEDIA_CONFIG: &str = "application/vnd.kiln.cache.config.v1+json";
/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1";
/// An exported cache mount: a tar of the mount directory, compressed like a layer but never one.
pub const MEDIA_MOUNT_PREFIX: &str = "application/vnd.kiln.cache.mount.v1.tar";
/// The key of an inline cache in an image config.
pub const INLINE_KEY: &str = "kiln.cache.v1";
/// Version of the artifact layout (bump when the config's shape changes).
pub const FORMAT: u32 = 1;
const BUILDKIT_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";
const BUILDKIT_INLINE_KEY: &str = "moby.buildkit.cache.v0";

/// Why a cache was not used. Every variant is a warning for the build, never a failure.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "it is a BuildKit cache ({BUILDKIT_CONFIG}); kiln keys steps differently and cannot use it"
    )]
    BuildKit,
    #[error("it is not a kiln cache (config media type {0:?})")]
    NotKiln(String),
    #[error("the image has no kiln inline cache (build it with --cache-to type=inline)")]
    NoInline,
    #[error("cache format {found} is not the format this kiln reads ({FORMAT})")]
    Format { found: u32 },
    #[error("cache key schema {found} differs from this kiln's ({SCHEMA}); its keys cannot match")]
    Schema { found: u32 },
    #[error("cache was made for {found}, this build is for {want}")]
    Platform { found: String, want: String },
    #[error("damaged cache: {what}: {detail}")]
    Damaged { what: &'static str, detail: String },
}

fn damaged(what: &'static str, detail: impl ToString) -> RemoteError {
    RemoteError::Damaged {
        what,
        detail: detail.to_string(),
    }
}

/// The cache config document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheConfig {
    pub format: u32,
    /// `cache::SCHEMA` of the kiln that wrote it.
    #[serde(rename = "keySchema")]
    pub key_schema: u32,
    pub platform: Platform,
    /// Step key (hex) → what the step produced.
    pub records: BTreeMap<String, Record>,
    /// Cache mount id → its tar blob.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mounts: BTreeMap<String, Descriptor>,
}

impl CacheConfig {
    pub fn new(platform: Platform) -> CacheConfig {
        CacheConfig {
            format: FORMAT,
            key_schema: SCHEMA,
            platform,
            records: BTreeMap::new(),
            mounts: BTreeMap::new(),
        }
    }

    /// Every blob the config names (layers first, then mounts), each once, in a stable order.
    pub fn blobs(&self) -> Vec<Descriptor> {
        let mut out: Vec<Descriptor> = Vec::new();
        let layers = self
            .records
            .values()
            .filter_map(|r| r.layer.as_ref().map(|l| &l.descriptor));
        for d in layers.chain(self.mounts.values()) {
            if !out.iter().any(|x| x.digest == d.digest) {
                out.push(d.clone());
            }
        }
        out
    }
}

/// A cache that passed every check: records by key, mount blobs by id, and how many entries were
/// dropped because the artifact does not carry their blobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imported {
    pub records: BTreeMap<CacheKey, Record>,
    pub mounts: BTreeMap<String, Descriptor>,
    pub dropped: usize,
}

/// What a manifest fetched at a cache reference is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A kiln cache artifact; its config blob must be fetched next.
    Artifact(Manifest),
    /// An image: its config may hold an inline cache.
    Image(Manifest),
}

/// Classify manifest bytes: a kiln artifact, an image (inline cache), or an error naming what else
/// it is (a BuildKit cache, garbage).
pub fn classify(bytes: &[u8]) -> Result<Kind, RemoteError> {
    let m =
        Manifest::from_slice(bytes).map_err(|e| damaged("manifest", crate::report::chain(&e)))?;
    if !m.media_type.is_empty()
        && m.media_type != MEDIA_OCI_MANIFEST
        && m.media_type != crate::image::MEDIA_DOCKER_MANIFEST
    {
        return Err(damaged(
            "manifest",
            format!("media type {:?} is not an image manifest", m.media_type),
        ));
    }
    match m.config.media_type.as_str() {
        MEDIA_CONFIG => Ok(Kind::Artifact(m)),
        BUILDKIT_CONFIG => Err(RemoteError::BuildKit),
        crate::image::MEDIA_OCI_CONFIG | crate::image::MEDIA_DOCKER_CONFIG => Ok(Kind::Image(m)),
        other => Err(RemoteError::NotKiln(other.to_string())),
    }
}

/// Check an artifact's config blob against its manifest and this build's platform.
pub fn verify_artifact(
    manifest: &Manifest,
    config_bytes: &[u8],
    want: &Platform,
) -> Result<Imported, RemoteError> {
    check_blob(&manifest.config, config_bytes)?;
    let config: CacheConfig =
        serde_json::from_slice(config_bytes).map_err(|e| damaged("cache config", e))?;
    verify_config(config, &manifest.layers, want)
}

/// The inline cache of an image whose config is `config_bytes`.
pub fn verify_inline(
    manifest: &Manifest,
    config_bytes: &[u8],
    want: &Platform,
) -> Result<Imported, RemoteError> {
    check_blob(&manifest.config, config_bytes)?;
    let image = ImageConfig::from_slice(config_bytes)
        .map_err(|e| damaged("image config", crate::report::chain(&e)))?;
    let Some(value) = image.extra.get(INLINE_KEY) else {
        return Err(if image.extra.contains_key(BUILDKIT_INLINE_KEY) {
            RemoteError::BuildKit
        } else {
            RemoteError::NoInline
        });
    };
    let config: CacheConfig =
        serde_json::from_value(value.clone()).map_err(|e| damaged("inline cache", e))?;
    if !config.mounts.is_empty() {
        return Err(damaged("inline cache", "names cache mounts (never inline)"));
    }
    verify_config(config, &manifest.layers, want)
}

fn check_blob(desc: &Descriptor, bytes: &[u8]) -> Result<(), RemoteError> {
    let actual = Digest::of(bytes);
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        return Err(damaged(
            "config",
            format!(
                "{} bytes hashing to {actual}, the manifest says {} bytes of {}",
                bytes.len(),
                desc.size,
                desc.digest
            ),
        ));
    }
    Ok(())
}

fn verify_config(
    config: CacheConfig,
    carried: &[Descriptor],
    want: &Platform,
) -> Result<Imported, RemoteError> {
    if config.format != FORMAT {
        return Err(RemoteError::Format {
            found: config.format,
        });
    }
    if config.key_schema != SCHEMA {
        return Err(RemoteError::Schema {
            found: config.key_schema,
        });
    }
    // Keys of steps FROM scratch do not name the platform, so a cache of another one is refused
    // whole rather than risk a layer of the wrong architecture.
    if !config.platform.satisfies(want) {
        return Err(RemoteError::Platform {
            found: config.platform.to_string(),
            want: want.to_string(),
        });
    }
    let listed = |d: &Descriptor| {
        carried
            .iter()
            .any(|c| c.digest == d.digest && c.size == d.size)
    };
    let mut out = Imported::default();
    for (hex, record) in config.records {
        let key = match format!("sha256:{hex}").parse::<Digest>() {
            Ok(d) if d.hex() == hex => CacheKey(d),
            _ => {
                out.dropped += 1;
                continue;
            }
        };
        match &record.layer {
            Some(l) if !listed(&l.descriptor) => out.dropped += 1,
            _ => {
                out.records.insert(key, record);
            }
        }
    }
    for (id, desc) in config.mounts {
        if listed(&desc) && desc.media_type.starts_with(MEDIA_MOUNT_PREFIX) {
            out.mounts.insert(id, desc);
        } else {
            out.dropped += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CachedLayer;

    fn layer(n: u8) -> Descriptor {
        Descriptor::new(
            crate::image::MEDIA_OCI_LAYER_GZIP,
            Digest::of(&[n]),
            10 + n as u64,
        )
    }

    fn artifact(config: &CacheConfig, layers: Vec<Descriptor>) -> (Manifest, Vec<u8>) {
        let bytes = crate::image::canonical_json(config).unwrap();
        let m = Manifest::new(Descriptor::for_bytes(MEDIA_CONFIG, &bytes), layers);
        (m, bytes)
    }

    fn config_with(n: u8) -> CacheConfig {
        let mut c = CacheConfig::new(Platform::host());
        let key = CacheKey::root(&format!("k{n}"));
        c.records.insert(
            key.0.hex().to_string(),
            Record {
                layer: Some(CachedLayer {
                    descriptor: layer(n),
                    diff_id: Digest::of(b"diff"),
                    uncompressed_size: 99,
                }),
                created: None,
            },
        );
        c
    }

    #[test]
    fn a_good_artifact_round_trips() {
        let c = config_with(1);
        let (m, bytes) = artifact(&c, c.blobs());
        let mbytes = crate::image::canonical_json(&m).unwrap();
        let Kind::Artifact(m2) = classify(&mbytes).unwrap() else {
            panic!("not an artifact")
        };
        let got = verify_artifact(&m2, &bytes, &Platform::host()).unwrap();
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.dropped, 0);
    }

    #[test]
    fn mismatches_are_refused_and_partial_artifacts_drop_records() {
        let mut c = config_with(2);
        c.key_schema = SCHEMA + 1;
        let (m, bytes) = artifact(&c, c.blobs());
        assert!(matches!(
            verify_artifact(&m, &bytes, &Platform::host()),
            Err(RemoteError::Schema { .. })
        ));
        let mut c = config_with(3);
        c.platform = Platform::new("linux", "s390x", None);
        let (m, bytes) = artifact(&c, c.blobs());
        let e = verify_artifact(&m, &bytes, &Platform::new("linux", "amd64", None)).unwrap_err();
        assert!(e.to_string().contains("s390x"), "{e}");
        // The manifest does not carry the layer: the record is dropped, not trusted.
        let c = config_with(4);
        let (m, bytes) = artifact(&c, vec![]);
        let got = verify_artifact(&m, &bytes, &Platform::host()).unwrap();
        assert!(got.records.is_empty());
        assert_eq!(got.dropped, 1);
        // Config bytes that are not what the manifest names.
        let (m, _) = artifact(&c, c.blobs());
        assert!(matches!(
            verify_artifact(&m, b"{}", &Platform::host()),
            Err(RemoteError::Damaged { .. })
        ));
    }

    #[test]
    fn buildkit_caches_are_recognised() {
        let m = Manifest::new(
            Descriptor::new(BUILDKIT_CONFIG, Digest::of(b"x"), 1),
            vec![],
        );
        let bytes = crate::image::canonical_json(&m).unwrap();
        assert!(matches!(classify(&bytes), Err(RemoteError::BuildKit)));
        assert!(matches!(
            classify(b"not json"),
            Err(RemoteError::Damaged { .. })
        ));
    }
}
