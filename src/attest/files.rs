//! The files the step after a build reads, in the exact forms their tools write them:
//! - `--iidfile` (buildx `commands/build.go` `getImageID`): the config digest of a single-manifest
//!   image, else the image's (index) digest; no newline.
//! - `--metadata-file` (buildx `decodeExporterResponse` + `json.MarshalIndent(…, "", "  ")`):
//!   `containerimage.digest`, `containerimage.descriptor` (a JSON object), `image.name` (the names
//!   as given, comma-joined) and, for a single-manifest image, `containerimage.config.digest`.
//! - `--digest-file` (kaniko `pkg/executor/push.go`): the image digest, no newline.
//! - `--image-name-with-digest-file` (kaniko): `REPOSITORY@DIGEST\n` per destination, the
//!   repository as go-containerregistry names it (`index.docker.io/library/x` for Docker Hub).
//!
//! Each file is replaced atomically (temp file, fsync, rename) with mode 0644.
//!
//! Must not: write anything but these files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::AttestError;
use crate::digest::Digest;
use crate::image::Descriptor;
use crate::reference::Reference;

/// Where a build writes its metadata files (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataFiles {
    pub iidfile: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    pub digest_file: Option<PathBuf>,
    pub image_name_with_digest_file: Option<PathBuf>,
}

impl MetadataFiles {
    pub fn is_empty(&self) -> bool {
        self.paths().next().is_none()
    }

    /// Every path given.
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [
            &self.iidfile,
            &self.metadata_file,
            &self.digest_file,
            &self.image_name_with_digest_file,
        ]
        .into_iter()
        .flatten()
    }

    /// Every path given, mutably (the daemon resolves them under its roots).
    pub fn paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        [
            &mut self.iidfile,
            &mut self.metadata_file,
            &mut self.digest_file,
            &mut self.image_name_with_digest_file,
        ]
        .into_iter()
        .flatten()
    }
}

/// What a finished build produced, as the files tell it.
pub struct Written<'a> {
    /// What the tags point to: the image manifest, or the index over it and its attestations.
    pub image: &'a Descriptor,
    /// The image config's digest, when `image` is a single manifest.
    pub config: Option<&'a Digest>,
    /// The names as the caller gave them (`-t`).
    pub names: &'a [String],
}

/// Write every file asked for.
pub fn write(files: &MetadataFiles, w: &Written<'_>) -> Result<(), AttestError> {
    let digest = w.image.digest.to_string();
    if let Some(p) = &files.iidfile {
        let id = w
            .config
            .map(|c| c.to_string())
            .unwrap_or_else(|| digest.clone());
        put(p, id.as_bytes())?;
    }
    if let Some(p) = &files.metadata_file {
        put(p, &metadata_json(w)?)?;
    }
    if let Some(p) = &files.digest_file {
        put(p, digest.as_bytes())?;
    }
    if let Some(p) = &files.image_name_with_digest_file {
        let mut text = String::new();
        for n in w.names {
            if let Ok(r) = n.parse::<Reference>() {
                text.push_str(&format!("{}@{digest}\n", ggcr_repository(&r)));
            }
        }
        put(p, text.as_bytes())?;
    }
    Ok(())
}

/// buildx's metadata file: the exporter response, base64-JSON values decoded, indented by two.
pub fn metadata_json(w: &Written<'_>) -> Result<Vec<u8>, AttestError> {
    let mut m: BTreeMap<&str, Value> = BTreeMap::new();
    m.insert(
        "containerimage.digest",
        Value::String(w.image.digest.to_string()),
    );
    let desc = serde_json::to_value(w.image).map_err(|e| AttestError::WriteFile {
        path: PathBuf::from("--metadata-file"),
        source: e.into(),
    })?;
    m.insert("containerimage.descriptor", desc);
    if let Some(c) = w.config {
        m.insert("containerimage.config.digest", Value::String(c.to_string()));
    }
    if !w.names.is_empty() {
        m.insert("image.name", Value::String(w.names.join(",")));
    }
    serde_json::to_vec_pretty(&m).map_err(|e| AttestError::WriteFile {
        path: PathBuf::from("--metadata-file"),
        source: e.into(),
    })
}

/// go-containerregistry's `Repository.Name()`: Docker Hub is `index.docker.io`.
fn ggcr_repository(r: &Reference) -> String {
    match r.domain.as_str() {
        crate::reference::DEFAULT_DOMAIN => format!("index.docker.io/{}", r.path),
        _ => r.repository(),
    }
}

fn put(path: &Path, bytes: &[u8]) -> Result<(), AttestError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| AttestError::WriteFile {
            path: path.to_path_buf(),
            source,
        })?;
    }
    crate::atomic::atomic_write(path, bytes, 0o644, None).map_err(|source| AttestError::WriteFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hold_what_buildx_and_kaniko_write() {
        let dir = tempfile::tempdir().unwrap();
        let config = Digest::of(b"config");
        let mut image = Descriptor::for_bytes(crate::image::MEDIA_OCI_MANIFEST, b"manifest");
        image.platform = Some(crate::image::Platform::new("linux", "amd64", None));
        let files = MetadataFiles {
            iidfile: Some(dir.path().join("iid")),
            metadata_file: Some(dir.path().join("sub/meta.json")),
            digest_file: Some(dir.path().join("digest")),
            image_name_with_digest_file: Some(dir.path().join("names")),
        };
        let names = vec!["busybox:1".to_string(), "localhost:5000/a/b:2".to_string()];
        let w = Written {
            image: &image,
            config: Some(&config),
            names: &names,
        };
        write(&files, &w).unwrap();
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("iid"), config.to_string());
        assert_eq!(read("digest"), image.digest.to_string());
        assert_eq!(
            read("names"),
            format!(
                "index.docker.io/library/busybox@{0}\nlocalhost:5000/a/b@{0}\n",
                image.digest
            )
        );
        let meta: Value = serde_json::from_str(&read("sub/meta.json")).unwrap();
        assert_eq!(
            meta["containerimage.descriptor"]["platform"]["architecture"],
            "amd64"
        );
        assert_eq!(meta["image.name"], "busybox:1,localhost:5000/a/b:2");
    }
}
