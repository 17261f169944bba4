//! Reading a cache back: the `type=local` OCI layout (index → manifest → config, each verified),
//! copying one of its blobs into the store on demand (verified ingest), and seeding an empty cache
//! mount directory from a mount blob.
//!
//! Must not: fetch from a registry (the engine does, through `registry`), believe a blob it has not
//! hashed, or write into a cache mount that already has content.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::remote::{self, Imported, Kind};
use super::CacheError;
use crate::digest::Digest;
use crate::image::{Descriptor, Index, Platform};
use crate::layer::{self, ApplyOptions};
use crate::store::{Store, MAX_JSON_BLOB};

/// What a cache source yielded: a verified cache, or why it is not used (a warning).
pub type Outcome = Result<Imported, remote::RemoteError>;

fn layout_blob(src: &Path, d: &Digest) -> PathBuf {
    src.join("blobs").join(d.algorithm()).join(d.hex())
}

/// Read a small JSON blob of the layout, checking its digest and size.
fn read_json_blob(src: &Path, desc: &Descriptor) -> Result<Vec<u8>, CacheError> {
    let path = layout_blob(src, &desc.digest);
    if desc.size > MAX_JSON_BLOB {
        return Err(CacheError::Layout {
            path,
            why: format!("{} bytes is too large for a manifest", desc.size),
        });
    }
    let bytes = fs::read(&path).map_err(|e| CacheError::Layout {
        path: path.clone(),
        why: e.to_string(),
    })?;
    if Digest::of(&bytes) != desc.digest || bytes.len() as u64 != desc.size {
        return Err(CacheError::Layout {
            path,
            why: format!("content is not {} ({} bytes)", desc.digest, desc.size),
        });
    }
    Ok(bytes)
}

/// The cache in the layout at `src` (the manifest named `tag`, or `digest`). An unreadable layout
/// is an error (the caller warns); a readable one that is not a usable cache is the `Outcome`.
pub fn read_local(
    src: &Path,
    tag: &str,
    digest: Option<&Digest>,
    want: &Platform,
) -> Result<Outcome, CacheError> {
    let index_path = src.join("index.json");
    let bytes = fs::read(&index_path).map_err(|e| CacheError::Layout {
        path: index_path.clone(),
        why: e.to_string(),
    })?;
    let index = Index::from_slice(&bytes).map_err(|e| CacheError::Layout {
        path: index_path.clone(),
        why: e.to_string(),
    })?;
    let found = index.manifests.iter().find(|d| match digest {
        Some(want) => &d.digest == want,
        None => d.ref_name() == Some(tag),
    });
    let Some(desc) = found else {
        return Err(CacheError::Layout {
            path: index_path,
            why: match digest {
                Some(d) => format!("no manifest {d}"),
                None => format!("no manifest tagged {tag:?}"),
            },
        });
    };
    let manifest_bytes = read_json_blob(src, desc)?;
    let kind = match remote::classify(&manifest_bytes) {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let (Kind::Artifact(m) | Kind::Image(m)) = &kind;
    let config = match read_json_blob(src, &m.config) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Err(remote::RemoteError::Damaged {
                what: "config",
                detail: e.to_string(),
            }))
        }
    };
    Ok(match &kind {
        Kind::Artifact(m) => remote::verify_artifact(m, &config, want),
        Kind::Image(m) => remote::verify_inline(m, &config, want),
    })
}

/// Copy one blob of the layout at `src` into the store, verified.
pub fn fetch_local(store: &Store, src: &Path, desc: &Descriptor) -> Result<(), CacheError> {
    if store.has_blob(&desc.digest) {
        return Ok(());
    }
    let path = layout_blob(src, &desc.digest);
    let f = fs::File::open(&path).map_err(|e| CacheError::Layout {
        path: path.clone(),
        why: e.to_string(),
    })?;
    store.ingest_reader(f, Some(&desc.digest), Some(desc.size))?;
    Ok(())
}

/// How a cache mount's directory is created (the mount's `mode`, `uid`, `gid`).
#[derive(Debug, Clone, Copy)]
pub struct MountOwner {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Fill the cache mount directory `dir` from the blob `blob` (in the store) — only when `dir` is
/// absent or empty; `lock` is the mount's lock file, held so a `sharing=locked` step never sees a
/// half-seeded cache. Returns whether it seeded.
pub fn seed_mount(
    store: &Store,
    blob: &Digest,
    dir: &Path,
    lock: &Path,
    owner: MountOwner,
) -> Result<bool, CacheError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| CacheError::Checksum { path, source: e }
    };
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let lock_file = fs::File::create(lock).map_err(io(lock))?;
    rustix::fs::flock(&lock_file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io(lock)(e.into()))?;
    let has_content = fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_content {
        return Ok(false);
    }
    if !dir.exists() {
        // As `RUN --mount=type=cache` creates it: the mount's mode and owner.
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(owner.mode)).map_err(io(dir))?;
        let _ = std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid));
    }
    let root = rustix::process::geteuid().is_root();
    let opts = ApplyOptions {
        allow_devices: false,
        preserve_owners: root,
        overlay_opaque_xattr: None,
    };
    let f = store.open_blob(blob)?;
    layer::apply_layer(BufReader::new(f), dir, &opts).map_err(|e| CacheError::Mount {
        path: dir.to_path_buf(),
        source: Box::new(e),
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_round_trip_and_only_seed_empty_dirs() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("store")).unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("wheels")).unwrap();
        fs::write(src.join("wheels/a.whl"), "wheel").unwrap();
        let blob = super::super::export::mount_blob(
            &store,
            &src,
            crate::layer::Compression::Gzip,
            None,
            1,
        )
        .unwrap()
        .unwrap();
        let owner = MountOwner {
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        let dest = d.path().join("cache/x");
        let lock = d.path().join("cache/x.lock");
        assert!(seed_mount(&store, &blob.digest, &dest, &lock, owner).unwrap());
        assert_eq!(
            fs::read_to_string(dest.join("wheels/a.whl")).unwrap(),
            "wheel"
        );
        fs::write(dest.join("wheels/a.whl"), "changed").unwrap();
        assert!(!seed_mount(&store, &blob.digest, &dest, &lock, owner).unwrap());
        assert_eq!(
            fs::read_to_string(dest.join("wheels/a.whl")).unwrap(),
            "changed"
        );
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(super::super::export::mount_blob(
            &store,
            &empty,
            crate::layer::Compression::Gzip,
            None,
            1
        )
        .unwrap()
        .is_none());
    }
}
