//! Making a cache artifact from a build's step records: the config and manifest (canonical JSON,
//! stored in the local store like any blob), cache-mount directories as tar blobs, the inline form
//! for an image config, and the `type=local` OCI layout.
//!
//! Must not: push or fetch (the engine hands the artifact to the registry client), decide which
//! steps are exported (mode min/max is the engine's choice of records), or recompress a layer.

use std::path::Path;

use super::remote::{CacheConfig, ARTIFACT_TYPE, MEDIA_CONFIG, MEDIA_MOUNT_PREFIX};
use super::{CacheError, CacheKey, Record};
use crate::image::{canonical_json, Descriptor, Manifest, Platform};
use crate::layer::{self, ChangeSet, Compression, LayerOptions};
use crate::store::Store;

/// A cache artifact in the local store: its manifest and every blob it lists.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub manifest: Descriptor,
    pub config: Descriptor,
    /// Layers and mount blobs (not the config), each once.
    pub blobs: Vec<Descriptor>,
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, CacheError> {
    canonical_json(v).map_err(CacheError::Encode)
}

/// The cache config of `records` and `mounts` (id → tar blob) for `platform`.
pub fn cache_config(
    records: &[(CacheKey, Record)],
    mounts: &[(String, Descriptor)],
    platform: &Platform,
) -> CacheConfig {
    let mut config = CacheConfig::new(platform.clone());
    for (key, record) in records {
        config
            .records
            .insert(key.0.hex().to_string(), record.clone());
    }
    for (id, desc) in mounts {
        config.mounts.insert(id.clone(), desc.clone());
    }
    config
}

/// Write the artifact's config and manifest into the store.
pub fn build_artifact(store: &Store, config: &CacheConfig) -> Result<Artifact, CacheError> {
    let config_bytes = encode(config)?;
    let config_desc = Descriptor::for_bytes(MEDIA_CONFIG, &config_bytes);
    store.put_bytes(&config_bytes, Some(&config_desc.digest))?;
    let blobs = config.blobs();
    let mut manifest = Manifest::new(config_desc.clone(), blobs.clone());
    manifest.artifact_type = Some(ARTIFACT_TYPE.to_string());
    let (bytes, desc) = manifest.to_blob().map_err(CacheError::Encode)?;
    store.put_bytes(&bytes, Some(&desc.digest))?;
    Ok(Artifact {
        manifest: desc,
        config: config_desc,
        blobs,
    })
}

/// The value stored under `remote::INLINE_KEY` in an image config.
pub fn inline_value(config: &CacheConfig) -> Result<serde_json::Value, CacheError> {
    serde_json::to_value(config).map_err(|e| {
        CacheError::Encode(crate::image::ImageError::Serialize {
            what: "inline cache",
            source: e,
        })
    })
}

/// A cache mount directory as one tar blob in the store (owners, modes and xattrs kept, like a
/// layer's); None when the directory is missing or empty.
pub fn mount_blob(
    store: &Store,
    dir: &Path,
    compression: Compression,
    level: Option<i32>,
    threads: usize,
) -> Result<Option<Descriptor>, CacheError> {
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if empty {
        return Ok(None);
    }
    let mount_err = |e: layer::LayerError| CacheError::Mount {
        path: dir.to_path_buf(),
        source: Box::new(e),
    };
    let changes = ChangeSet::from_dir(dir).map_err(mount_err)?;
    let opts = LayerOptions {
        compression,
        level,
        threads,
        source_date_epoch: None,
    };
    let (ingest, info) = layer::write_layer(&changes, &opts, store.ingest()?).map_err(mount_err)?;
    let (digest, size) = ingest.commit(Some(&info.digest), Some(info.size))?;
    let suffix = match compression {
        Compression::Gzip => "+gzip",
        Compression::Zstd => "+zstd",
        Compression::Uncompressed => "",
    };
    Ok(Some(Descriptor::new(
        format!("{MEDIA_MOUNT_PREFIX}{suffix}"),
        digest,
        size,
    )))
}

/// Write the artifact as an OCI image layout at `dest` (merged into one already there), under `tag`.
pub fn write_local(
    store: &Store,
    artifact: &Artifact,
    dest: &Path,
    tag: &str,
) -> Result<(), CacheError> {
    crate::store::write_oci_layout(store, &[(tag.to_string(), artifact.manifest.clone())], dest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_list_every_blob_once_and_are_deterministic() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let layer = Descriptor::new(
            crate::image::MEDIA_OCI_LAYER_GZIP,
            crate::digest::Digest::of(b"l"),
            1,
        );
        let rec = Record {
            layer: Some(super::super::CachedLayer {
                descriptor: layer.clone(),
                diff_id: crate::digest::Digest::of(b"d"),
                uncompressed_size: 2,
            }),
            created: None,
        };
        let records = vec![
            (CacheKey::root("a"), rec.clone()),
            (CacheKey::root("b"), rec),
            (
                CacheKey::root("c"),
                Record {
                    layer: None,
                    created: None,
                },
            ),
        ];
        let c = cache_config(&records, &[], &Platform::host());
        let a = build_artifact(&store, &c).unwrap();
        let b = build_artifact(&store, &c).unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.blobs, vec![layer]);
        let bytes = store.read_blob(&a.config.digest, 1 << 20).unwrap();
        let back: CacheConfig = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.records.len(), 3);
    }
}
