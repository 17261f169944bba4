//! Base images for FROM and `COPY --from=<image>`: the local store (by normalised tag or digest) or
//! an OCI layout on disk (`oci-layout://PATH[:tag]`, imported into the store and verified on the way).
//! Pulling from registries belongs to the registry client, not here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use crate::plan::{BaseImageInfo, BaseImages, Platform};
use crate::reference::Reference;
use crate::store::{self, StoredImage};

use super::BuildError;

pub struct StoreBases<'a> {
    store: &'a store::Store,
    resolved: Mutex<BTreeMap<String, StoredImage>>,
    /// Where to pull bases missing from the store (None: the store only).
    registry: Option<&'a super::RegistryAccess>,
    client: Mutex<Option<crate::registry::RegistryClient>>,
    /// Images pulled while resolving (name, digest, bytes), reported once the plan is made.
    pulled: Mutex<Vec<(String, String, u64)>>,
}

impl<'a> StoreBases<'a> {
    pub fn new(store: &'a store::Store) -> StoreBases<'a> {
        StoreBases {
            store,
            resolved: Mutex::new(BTreeMap::new()),
            registry: None,
            client: Mutex::new(None),
            pulled: Mutex::new(Vec::new()),
        }
    }

    pub fn with_registry(mut self, registry: Option<&'a super::RegistryAccess>) -> Self {
        self.registry = registry;
        self
    }

    /// Tell what was pulled (during planning there is no event sink yet).
    pub fn report(&self, on_event: &mut dyn FnMut(&super::Event)) {
        for (reference, digest, bytes) in lock(&self.pulled).drain(..) {
            on_event(&super::Event::Transferred {
                kind: "pulled".into(),
                reference: reference.clone(),
                bytes,
            });
            on_event(&super::Event::Exported {
                kind: "pulled".into(),
                dest: format!("{reference}@{digest}"),
            });
        }
    }

    /// Pull `r` into the store (tagged under its store name).
    fn pull(&self, r: &Reference) -> Result<(), BuildError> {
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
        let desc = crate::registry::pull(
            client,
            self.store,
            r,
            &crate::image::Platform::host(),
            &mut |p| super::count_transfer(&p, &mut sizes, &mut bytes),
        )
        .map_err(|e| BuildError::Base {
            reference: r.to_string(),
            message: "pulling it".into(),
            source: Some(Box::new(e)),
        })?;
        lock(&self.pulled).push((r.store_name(), desc.digest.to_string(), bytes));
        Ok(())
    }

    /// The image a FROM or `--from` names, imported from an OCI layout when it is one.
    pub fn resolve(&self, reference: &str) -> Result<StoredImage, BuildError> {
        if let Some(img) = lock(&self.resolved).get(reference) {
            return Ok(img.clone());
        }
        let base_err =
            |message: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
                BuildError::Base {
                    reference: reference.to_string(),
                    message,
                    source,
                }
            };
        let image = if let Some(rest) = reference.strip_prefix("oci-layout://") {
            // PATH[:tag] — a ':' after the last '/' separates the tag, like BuildKit's oci-layout source.
            let (path, tag) = match rest.rfind(':') {
                Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
                _ => (rest, None),
            };
            let desc = store::import_oci_layout(self.store, Path::new(path), tag)
                .map_err(|e| base_err("importing the OCI layout".into(), Some(Box::new(e))))?;
            self.store
                .image(&desc.digest.to_string())
                .map_err(|e| base_err("reading the imported image".into(), Some(Box::new(e))))?
        } else {
            let r: Reference = reference
                .parse()
                .map_err(|e| base_err("invalid image reference".into(), Some(Box::new(e))))?;
            let name = r.store_name();
            let key = match &r.digest {
                Some(d) => d.to_string(),
                None => name.clone(),
            };
            match self.store.image(&key) {
                Ok(img) => img,
                Err(store::StoreError::ImageNotFound(_)) if self.registry.is_some() => {
                    self.pull(&r)?;
                    self.store
                        .image(&key)
                        .map_err(|e| base_err("reading the pulled image".into(), Some(Box::new(e))))?
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
        };
        lock(&self.resolved).insert(reference.to_string(), image.clone());
        Ok(image)
    }
}

impl BaseImages for StoreBases<'_> {
    fn lookup(&self, reference: &str, _platform: &Platform) -> Option<BaseImageInfo> {
        let img = self.resolve(reference).ok()?;
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

/// Stages resolve bases from several threads; a panic elsewhere never makes the cache unusable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
