//! Tags (`org.opencontainers.image.ref.name` entries in `index.json`) and resolving a name or digest
//! to an image (manifest + config), choosing the host platform from an index.

use std::path::PathBuf;

use super::{io_err, Store, StoreError, MAX_JSON_BLOB};
use crate::digest::Digest;
use crate::image::{
    canonical_json, manifest_kind, sniff_manifest_kind, Descriptor, ImageConfig, Index, Manifest,
    ManifestKind, Platform, ANNOTATION_REF_NAME, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};

/// An image read from the store: its manifest (and the descriptor naming it) and its config.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The platform manifest (not the index, when the name pointed to one).
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub manifest_raw: Vec<u8>,
    pub config: ImageConfig,
    /// The config bytes as stored (their digest is `manifest.config.digest`).
    pub config_raw: Vec<u8>,
}

/// The OCI ref.name grammar: components of `[A-Za-z0-9]` joined by `-._:@/+`.
fn valid_tag(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 4096
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:@/+".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

impl Store {
    fn index_path(&self) -> PathBuf {
        self.content.join("index.json")
    }

    /// The store's `index.json` as it is now.
    pub fn read_index(&self) -> Result<Index, StoreError> {
        let p = self.index_path();
        let bytes = std::fs::read(&p).map_err(io_err("reading", &p))?;
        Index::from_slice(&bytes).map_err(|source| StoreError::Json { path: p, source })
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let bytes = canonical_json(index).map_err(|source| StoreError::Encode {
            what: "index.json",
            source,
        })?;
        self.write_atomic(&self.index_path(), &bytes)
    }

    /// Point `name` at `manifest` (a manifest or index already in the store), replacing any
    /// existing tag of that name.
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<(), StoreError> {
        if !valid_tag(name) {
            return Err(StoreError::BadTagName(name.to_string()));
        }
        if !self.has_blob(&manifest.digest) {
            return Err(StoreError::BlobNotFound(manifest.digest.clone()));
        }
        let mut desc = manifest.clone();
        desc.annotations
            .insert(ANNOTATION_REF_NAME.to_string(), name.to_string());
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        match index
            .manifests
            .iter()
            .position(|d| d.ref_name() == Some(name))
        {
            Some(i) => {
                index.manifests[i] = desc;
                // Drop any duplicates another tool may have written.
                let mut seen = false;
                index.manifests.retain(|d| {
                    if d.ref_name() != Some(name) {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => index.manifests.push(desc),
        }
        self.write_index(&index)
    }

    /// Remove a tag; false when there was none.
    pub fn untag(&self, name: &str) -> Result<bool, StoreError> {
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        index.manifests.retain(|d| d.ref_name() != Some(name));
        if index.manifests.len() == before {
            return Ok(false);
        }
        self.write_index(&index)?;
        Ok(true)
    }

    /// The descriptor a tag points to (with its ref.name annotation).
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .find(|d| d.ref_name() == Some(name)))
    }

    /// All tags, in `index.json` order.
    pub fn tags(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .filter_map(|d| d.ref_name().map(|n| (n.to_string(), d.clone())))
            .collect())
    }

    /// A descriptor for a manifest or index blob known only by digest.
    pub fn describe(&self, digest: &Digest) -> Result<Descriptor, StoreError> {
        let bytes = self.read_blob(digest, MAX_JSON_BLOB)?;
        let media_type = match sniff_manifest_kind(&bytes) {
            Some(ManifestKind::Index) => media_type_of(&bytes).unwrap_or(MEDIA_OCI_INDEX.into()),
            Some(ManifestKind::Manifest) => {
                media_type_of(&bytes).unwrap_or(MEDIA_OCI_MANIFEST.into())
            }
            None => {
                return Err(StoreError::NotAnImage {
                    name: digest.to_string(),
                    digest: digest.clone(),
                    media_type: "unknown JSON".into(),
                })
            }
        };
        Ok(Descriptor::new(
            media_type,
            digest.clone(),
            bytes.len() as u64,
        ))
    }

    /// The image a tag or a `sha256:` digest names, for the host platform.
    pub fn image(&self, name_or_digest: &str) -> Result<StoredImage, StoreError> {
        self.image_for(name_or_digest, &Platform::host())
    }

    /// The image a tag or digest names; an index is resolved to `platform`.
    pub fn image_for(
        &self,
        name_or_digest: &str,
        platform: &Platform,
    ) -> Result<StoredImage, StoreError> {
        let root = match name_or_digest.parse::<Digest>() {
            Ok(d) if self.has_blob(&d) => self.describe(&d)?,
            Ok(_) => return Err(StoreError::ImageNotFound(name_or_digest.to_string())),
            Err(_) => self
                .resolve(name_or_digest)?
                .ok_or_else(|| StoreError::ImageNotFound(name_or_digest.to_string()))?,
        };
        let desc = self.platform_manifest(name_or_digest, &root, platform)?;
        self.load_manifest(&desc)
    }

    /// Follow indexes (at most a few levels) down to the manifest for `platform`.
    pub fn platform_manifest(
        &self,
        name: &str,
        root: &Descriptor,
        platform: &Platform,
    ) -> Result<Descriptor, StoreError> {
        let mut desc = root.clone();
        for _ in 0..4 {
            let kind = match manifest_kind(&desc.media_type) {
                Some(k) => k,
                None => {
                    return Err(StoreError::NotAnImage {
                        name: name.to_string(),
                        digest: desc.digest.clone(),
                        media_type: desc.media_type.clone(),
                    })
                }
            };
            if kind == ManifestKind::Manifest {
                return Ok(desc);
            }
            let bytes = self.read_blob(&desc.digest, MAX_JSON_BLOB)?;
            let index = Index::from_slice(&bytes).map_err(|source| StoreError::Image {
                what: "image index",
                digest: desc.digest.clone(),
                source,
            })?;
            let next = index
                .select(platform)
                .or_else(|| {
                    // A nested index (no platform on the entry) is followed as is.
                    index.manifests.iter().find(|d| {
                        manifest_kind(&d.media_type) == Some(ManifestKind::Index)
                            && d.platform.is_none()
                    })
                })
                .cloned();
            desc = next.ok_or_else(|| StoreError::NoPlatform {
                name: name.to_string(),
                digest: desc.digest.clone(),
                platform: platform.to_string(),
            })?;
        }
        Err(StoreError::Layout(format!(
            "{name}: indexes nested more than 4 deep"
        )))
    }

    /// Read and parse a manifest and its config.
    pub fn load_manifest(&self, desc: &Descriptor) -> Result<StoredImage, StoreError> {
        let manifest_raw = self.read_blob(&desc.digest, MAX_JSON_BLOB)?;
        let manifest = Manifest::from_slice(&manifest_raw).map_err(|source| StoreError::Image {
            what: "image manifest",
            digest: desc.digest.clone(),
            source,
        })?;
        let config_raw = self.read_blob(&manifest.config.digest, MAX_JSON_BLOB)?;
        let config = ImageConfig::from_slice(&config_raw).map_err(|source| StoreError::Image {
            what: "image config",
            digest: manifest.config.digest.clone(),
            source,
        })?;
        // Loading an image is using it: a lease taken before protects it from GC (lease.rs).
        self.touch_blobs(
            [&desc.digest, &manifest.config.digest]
                .into_iter()
                .chain(manifest.layers.iter().map(|l| &l.digest)),
        )?;
        Ok(StoredImage {
            manifest_desc: desc.clone(),
            manifest,
            manifest_raw,
            config,
            config_raw,
        })
    }
}

fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Mt {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Mt>(bytes).ok()?.media_type
}
