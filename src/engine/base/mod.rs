//! Base images for FROM and `COPY --from=<image>`: the local store (by normalised tag or digest) or
//! an OCI layout on disk (`oci-layout://PATH[:tag]`, imported into the store and verified on the way).
//! Pulling from registries belongs to the registry client, not here.
//!
//! The platform a stage asks for (`FROM --platform`, else the target's) picks the manifest from a
//! multi-platform base, as BuildKit's `convert.go` resolves the image config for `d.platform`; a
//! single-platform base of another platform is an error naming the platforms the base has, not a
//! silent build of the wrong architecture.
//!
//! `prepare.rs` unpacks a pulled base's layers into committed snapshots while they download.

pub(crate) mod prepare;

pub(crate) use prepare::is_root;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use crate::plan::{BaseImageInfo, BaseImages, Platform};
use crate::reference::Reference;
use crate::store::{self, StoredImage};

use crate::engine::BuildError;
use crate::sync::lock;

pub struct StoreBases<'a> {
    store: &'a store::Store,
    resolved: Mutex<BTreeMap<String, StoredImage>>,
    /// Where to pull bases missing from the store (None: the store only).
    registry: Option<&'a crate::engine::RegistryAccess>,
    client: Mutex<Option<crate::registry::RegistryClient>>,
    /// Images pulled while resolving (name, digest, bytes), reported once the plan is made.
    pulled: Mutex<Vec<(String, String, u64)>>,
    /// Unpacks pulled bases while they download (prepare.rs).
    preparer: Option<&'a self::prepare::Preparer<'a>>,
    /// `--pull`: ask the registry for every tagged base, even one the store has.
    always: bool,
}

impl<'a> StoreBases<'a> {
    pub fn new(store: &'a store::Store) -> StoreBases<'a> {
        StoreBases {
            store,
            resolved: Mutex::new(BTreeMap::new()),
            registry: None,
            client: Mutex::new(None),
            pulled: Mutex::new(Vec::new()),
            preparer: None,
            always: false,
        }
    }

    /// `--pull` (BuildKit's `image-resolve-mode=pull`): every base named by tag is resolved
    /// against its registry once per build, so a moved tag is seen; a digest-pinned base is
    /// content-addressed and taken from the store when there.
    pub fn pull_always(mut self, always: bool) -> Self {
        self.always = always;
        self
    }

    /// Unpack the bases this build pulls while they download.
    pub fn with_preparer(mut self, preparer: &'a self::prepare::Preparer<'a>) -> Self {
        self.preparer = Some(preparer);
        self
    }

    pub fn with_registry(mut self, registry: Option<&'a crate::engine::RegistryAccess>) -> Self {
        self.registry = registry;
        self
    }

    /// Wait for the snapshots of a base pulled by this build that has one of `layers` (prepare.rs).
    pub fn wait_prepared(&self, layers: &[crate::image::Descriptor]) {
        if let Some(prep) = self.preparer {
            let digests: Vec<_> = layers.iter().map(|l| l.digest.clone()).collect();
            prep.wait_for(&digests);
        }
    }

    /// Tell what was pulled (during planning there is no event sink yet).
    pub fn report(&self, on_event: &mut dyn FnMut(&crate::engine::Event)) {
        for (reference, digest, bytes) in lock(&self.pulled).drain(..) {
            on_event(&crate::engine::Event::Transferred {
                kind: "pulled".into(),
                reference: reference.clone(),
                bytes,
            });
            on_event(&crate::engine::Event::Exported {
                kind: "pulled".into(),
                dest: format!("{reference}@{digest}"),
            });
        }
    }

    /// Pull `r` for `platform` into the store (tagged under its store name); returns the
    /// platform's manifest.
    fn pull(
        &self,
        r: &Reference,
        platform: &crate::image::Platform,
    ) -> Result<crate::image::Descriptor, BuildError> {
        let Some(access) = self.registry else {
            return Err(BuildError::Base {
                reference: r.to_string(),
                message: "not found in the local store, and pulling is off".into(),
                source: None,
            });
        };
        let mut client = lock(&self.client);
        if client.is_none() {
            *client = Some(access.client()?);
        }
        let client = client.as_ref().expect("set above");
        let mut sizes = BTreeMap::new();
        let mut bytes = 0u64;
        let mut manifest = None;
        let pulled = crate::registry::pull(client, self.store, r, platform, &mut |p| {
            if let Some(prep) = self.preparer {
                use crate::registry::Progress;
                match &p {
                    Progress::Fetching {
                        manifest: m,
                        config,
                        layers,
                    } => {
                        manifest = Some(m.clone());
                        prep.start(m, config, layers.clone());
                    }
                    Progress::BlobDone { digest, .. } => prep.blob_present(digest),
                    _ => {}
                }
            }
            crate::engine::event::count_transfer(&p, &mut sizes, &mut bytes)
        });
        if let (Some(prep), Some(m)) = (self.preparer, &manifest) {
            prep.pull_over(m, pulled.is_ok());
        }
        let desc = pulled.map_err(|e| BuildError::Base {
            reference: r.to_string(),
            message: "pulling it".into(),
            source: Some(Box::new(e)),
        })?;
        lock(&self.pulled).push((r.store_name(), desc.digest.to_string(), bytes));
        Ok(desc)
    }

    /// The image a FROM or `--from` names for the host platform.
    pub fn resolve(&self, reference: &str) -> Result<StoredImage, BuildError> {
        self.resolve_for(reference, &Platform::host())
    }

    /// The image a FROM or `--from` names for `platform`, imported from an OCI layout when it is
    /// one; an index gives the platform's manifest.
    pub fn resolve_for(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<StoredImage, BuildError> {
        let memo = format!("{reference} {platform}");
        if let Some(img) = lock(&self.resolved).get(&memo) {
            return Ok(img.clone());
        }
        let want = image_platform(platform);
        let base_err =
            |message: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
                BuildError::Base {
                    reference: reference.to_string(),
                    message,
                    source,
                }
            };
        let image = if let Some(rest) = reference.strip_prefix("oci-layout://") {
            // PATH[:tag] — a ':' after the last '/' separates the tag, like BuildKit's oci-layout
            // source; PATH@sha256:… pins a manifest of the layout's index (named contexts).
            let (path, tag) = match (rest.rsplit_once('@'), rest.rfind(':')) {
                (Some((p, d)), _) if d.starts_with("sha256:") => (p, Some(d)),
                (_, Some(i)) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
                _ => (rest, None),
            };
            let desc = store::import_oci_layout(self.store, Path::new(path), tag)
                .map_err(|e| base_err("importing the OCI layout".into(), Some(Box::new(e))))?;
            let key = desc.digest.to_string();
            self.store
                .image_for(&key, &want)
                .map_err(|e| self.platform_err(reference, &key, &want, e))?
        } else {
            let r: Reference = reference
                .parse()
                .map_err(|e| base_err("invalid image reference".into(), Some(Box::new(e))))?;
            let name = r.store_name();
            let key = match &r.digest {
                Some(d) => d.to_string(),
                None => name.clone(),
            };
            // Read back by the pulled manifest's digest, not the name: another platform of the
            // same build may retag the name with its own manifest meanwhile.
            let pull = |this: &Self| -> Result<StoredImage, BuildError> {
                let desc = this.pull(&r, &want)?;
                let got = desc.digest.to_string();
                this.store
                    .image_for(&got, &want)
                    .map_err(|e| this.platform_err(reference, &key, &want, e))
            };
            // `--pull`: a base named by tag is resolved against its registry again.
            if self.always && r.digest.is_none() {
                pull(self)?
            } else {
                match self.store.image_for(&key, &want) {
                // The name holds the manifest of another platform (pulled for it, as Docker
                // pulls): `--platform` asked for this one, so pull it.
                Ok(img)
                    if *platform != Platform::host()
                        && !img.config.platform.satisfies(&want)
                        && self.registry.is_some()
                        && r.digest.is_none() =>
                {
                    pull(self)?
                }
                Ok(img) => img,
                Err(store::StoreError::ImageNotFound(_)) if self.registry.is_some() => pull(self)?,
                Err(e @ store::StoreError::NoPlatform { .. }) => {
                    return Err(self.platform_err(reference, &key, &want, e))
                }
                Err(store::StoreError::ImageNotFound(_)) => {
                    return Err(base_err(
                        format!(
                            "not found in the local store as {name} (pull it with `kiln pull`, import it with FROM oci-layout://PATH, or build it first)"
                        ),
                        None,
                    ))
                }
                Err(e) => return Err(base_err("reading it from the store".into(), Some(Box::new(e)))),
            }
            }
        };
        // A non-host platform here was asked for (`--platform` or `FROM --platform`): a base of
        // another platform is then an error. For the host's platform kiln keeps using the image
        // (BuildKit only lints that: InvalidBaseImagePlatform).
        if *platform != Platform::host() && !image.config.platform.satisfies(&want) {
            return Err(BuildError::Base {
                reference: reference.to_string(),
                message: format!(
                    "no image for platform {want}: it is a single-platform image for {} (available: {})",
                    image.config.platform,
                    image.config.platform
                ),
                source: None,
            });
        }
        lock(&self.resolved).insert(memo, image.clone());
        Ok(image)
    }

    /// A base that has no manifest for `want`: the error names the platforms its index has.
    fn platform_err(
        &self,
        reference: &str,
        key: &str,
        want: &crate::image::Platform,
        e: store::StoreError,
    ) -> BuildError {
        let available = self.index_platforms(key);
        let message = if matches!(e, store::StoreError::NoPlatform { .. }) {
            format!(
                "no image for platform {want} (available: {})",
                available.join(", ")
            )
        } else {
            "reading it from the store".to_string()
        };
        BuildError::Base {
            reference: reference.to_string(),
            message,
            source: Some(Box::new(e)),
        }
    }

    /// The platforms listed by the index a name or digest points to (empty when it is no index).
    fn index_platforms(&self, key: &str) -> Vec<String> {
        let root = match key.parse::<crate::digest::Digest>() {
            Ok(d) => self.store.describe(&d).ok(),
            Err(_) => self.store.resolve(key).ok().flatten(),
        };
        let Some(root) = root else {
            return Vec::new();
        };
        let Ok(bytes) = self.store.read_blob(&root.digest, 4 << 20) else {
            return Vec::new();
        };
        match crate::image::Index::from_slice(&bytes) {
            Ok(index) => index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The plan's platform as the image module's type (what configs and indexes carry).
pub(super) fn image_platform(p: &Platform) -> crate::image::Platform {
    let mut out = crate::image::Platform::host();
    out.os = p.os.clone();
    out.architecture = p.architecture.clone();
    out.variant = p.variant.clone();
    out.os_version = None;
    out
}

impl BaseImages for StoreBases<'_> {
    fn lookup(&self, reference: &str, platform: &Platform) -> Option<BaseImageInfo> {
        let img = self.resolve_for(reference, platform).ok()?;
        let c = &img.config.config;
        Some(BaseImageInfo {
            env: c.env.clone(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            user: c.user.clone().unwrap_or_default(),
            shell: if c.shell.is_empty() {
                None
            } else {
                Some(c.shell.clone())
            },
            on_build: c.on_build.clone(),
        })
    }
}
