//! `kiln fsck --snapshots`: each committed snapshot checked against the layer it was made from or
//! made into. A snapshot directory has no digest of its own (a RUN's upper directory is never
//! hashed as a tree), so the layer blob is applied again into a temp directory, in the same
//! overlayfs format, and the two trees are compared entry by entry: type, mode, owner, content
//! (sha256), link target, device number, opaque marker and xattrs. Times are left out: a layer
//! written with SOURCE_DATE_EPOCH clamps them, the upper directory it came from keeps the real
//! ones.
//!
//! Must not: change a snapshot (a damaged one is reported; `kiln prune` removes it and the next
//! build re-makes it from its layer).

use std::collections::BTreeMap;
use std::fs;
use std::io::BufReader;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Store, StoreError};
use crate::context::layers::is_opaque;
use crate::digest::{hash_reader, Digest};
use crate::layer::{self, ApplyOptions};

/// What a snapshot entry must agree on with the layer re-applied.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    content: Option<Digest>,
    link: Option<std::path::PathBuf>,
    opaque: bool,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn shapes(root: &Path) -> Result<BTreeMap<std::path::PathBuf, Shape>, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.map_err(|e| e.to_string())?;
        let m = e.path().symlink_metadata().map_err(|e| e.to_string())?;
        let ft = m.file_type();
        let content = if ft.is_file() {
            let f = fs::File::open(e.path()).map_err(|e| e.to_string())?;
            Some(hash_reader(f).map_err(|e| e.to_string())?.0)
        } else {
            None
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = xattr::list(e.path())
            .map(|names| {
                names
                    .filter(|n| !crate::snapshot::is_private_xattr(n))
                    .filter_map(|n| {
                        let v = xattr::get(e.path(), &n).ok()??;
                        Some((n.to_string_lossy().into_owned(), v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap_or(e.path())
            .to_path_buf();
        out.insert(
            rel,
            Shape {
                kind: m.mode() & libc::S_IFMT,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                rdev: m.rdev(),
                content,
                link: ft
                    .is_symlink()
                    .then(|| fs::read_link(e.path()).ok())
                    .flatten(),
                opaque: ft.is_dir() && is_opaque(e.path()),
                xattrs,
            },
        );
    }
    Ok(out)
}

impl Store {
    /// Every snapshot whose files differ from its layer applied again: (chain ID, why). Records
    /// without a layer blob, or whose blob is gone, are skipped (nothing to check against).
    pub fn verify_snapshots(
        &self,
        opaque_xattr: &'static str,
    ) -> Result<(usize, Vec<(String, String)>), StoreError> {
        let mut checked = 0;
        let mut bad = Vec::new();
        for (key, rec) in self.snapshot_records()? {
            let Some(blob) = rec.blob.as_deref().and_then(|b| b.parse::<Digest>().ok()) else {
                continue;
            };
            let (Some(dir), true) = (self.record_dir(Path::new(&rec.dir)), self.has_blob(&blob))
            else {
                continue;
            };
            checked += 1;
            if let Err(why) = self.compare_snapshot(&dir, &blob, &rec.diff_id, opaque_xattr) {
                bad.push((key, why));
            }
        }
        Ok((checked, bad))
    }

    fn compare_snapshot(
        &self,
        dir: &Path,
        blob: &Digest,
        diff_id: &str,
        opaque_xattr: &'static str,
    ) -> Result<(), String> {
        let tmp = tempfile::Builder::new()
            .prefix("fsck-")
            .tempdir_in(&self.session)
            .map_err(|e| e.to_string())?;
        let root = rustix::process::geteuid().is_root();
        let opts = ApplyOptions {
            allow_devices: root,
            preserve_owners: root,
            overlay_opaque_xattr: Some(opaque_xattr),
        };
        let f = self.open_blob(blob).map_err(|e| e.to_string())?;
        let stats = layer::apply_layer(BufReader::new(f), tmp.path(), &opts)
            .map_err(|e| format!("re-applying layer {blob}: {e}"))?;
        if stats.diff_id.to_string() != diff_id {
            return Err(format!(
                "layer {blob} unpacks to {}, not {diff_id}",
                stats.diff_id
            ));
        }
        let (want, have) = (shapes(tmp.path())?, shapes(dir)?);
        for (path, w) in &want {
            match have.get(path) {
                None => return Err(format!("{} is missing", path.display())),
                Some(h) if h != w => {
                    return Err(format!(
                        "{} differs: {h:?}, layer has {w:?}",
                        path.display()
                    ))
                }
                _ => {}
            }
        }
        if let Some(extra) = have.keys().find(|p| !want.contains_key(*p)) {
            return Err(format!("{} is not in the layer", extra.display()));
        }
        Ok(())
    }
}
