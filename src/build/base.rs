//! Base images for FROM and `COPY --from=<image>`: the local store (by normalised tag or digest) or
//! an OCI layout on disk (`oci-layout://PATH[:tag]`, imported into the store and verified on the way).
//! Pulling from registries belongs to the registry client, not here.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use crate::plan::{BaseImageInfo, BaseImages, Platform};
use crate::reference::Reference;
use crate::store::{self, StoredImage};

use super::BuildError;

pub struct StoreBases<'a> {
    store: &'a store::Store,
    resolved: RefCell<BTreeMap<String, StoredImage>>,
}

impl<'a> StoreBases<'a> {
    pub fn new(store: &'a store::Store) -> StoreBases<'a> {
        StoreBases {
            store,
            resolved: RefCell::new(BTreeMap::new()),
        }
    }

    /// The image a FROM or `--from` names, imported from an OCI layout when it is one.
    pub fn resolve(&self, reference: &str) -> Result<StoredImage, BuildError> {
        if let Some(img) = self.resolved.borrow().get(reference) {
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
                Err(store::StoreError::ImageNotFound(_)) => {
                    return Err(base_err(
                        format!(
                            "not found in the local store as {name} (import it with FROM oci-layout://PATH, or build it first; registry pulls need `kiln pull`)"
                        ),
                        None,
                    ))
                }
                Err(e) => return Err(base_err("reading it from the store".into(), Some(Box::new(e)))),
            }
        };
        self.resolved
            .borrow_mut()
            .insert(reference.to_string(), image.clone());
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
