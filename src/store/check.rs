//! fsck: re-hash every blob, check every tag's closure (gc.rs collects garbage).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::{io_err, Store, StoreError, MAX_JSON_BLOB};
use crate::digest::{hash_reader, Digest};
use crate::image::{manifest_kind, Descriptor, Index, Manifest, ManifestKind};

/// A blob whose bytes do not hash to its name (or that could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    pub digest: Digest,
    /// What the bytes hash to now; None when they could not be read.
    pub actual: Option<Digest>,
    pub path: PathBuf,
    pub problem: String,
}

/// A blob a tag needs that is not in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
}

/// What `fsck` found. Damage is named by digest; missing blobs by the tag that needs them.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    pub damaged: Vec<Damaged>,
    pub missing: Vec<Missing>,
    /// (tag, digest, why): a manifest/index/config present and intact that does not parse.
    pub unreadable: Vec<(String, Digest, String)>,
    /// Files under `blobs/sha256` that are not named by a digest.
    pub stray: Vec<PathBuf>,
    pub snapshots_checked: usize,
    /// (chain ID, why): a snapshot record a later build would trust but cannot use.
    pub broken_snapshots: Vec<(String, String)>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
            && self.missing.is_empty()
            && self.unreadable.is_empty()
            && self.stray.is_empty()
            && self.broken_snapshots.is_empty()
    }
}

impl fmt::Display for FsckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} blobs ({} bytes)",
            self.blobs_checked, self.bytes_checked
        )?;
        for d in &self.damaged {
            match &d.actual {
                Some(a) => writeln!(
                    f,
                    "damaged blob {} ({}): content hashes to {a}",
                    d.digest,
                    d.path.display()
                )?,
                None => writeln!(
                    f,
                    "damaged blob {} ({}): {}",
                    d.digest,
                    d.path.display(),
                    d.problem
                )?,
            }
        }
        for m in &self.missing {
            writeln!(
                f,
                "missing blob {} ({}) needed by tag {}",
                m.digest, m.media_type, m.tag
            )?;
        }
        for (tag, d, why) in &self.unreadable {
            writeln!(f, "unreadable {d} needed by tag {tag}: {why}")?;
        }
        for p in &self.stray {
            writeln!(f, "stray file {} (not named by a digest)", p.display())?;
        }
        for (chain, why) in &self.broken_snapshots {
            writeln!(f, "broken snapshot {chain}: {why}")?;
        }
        if self.is_clean() {
            writeln!(f, "no damage found")?;
        }
        Ok(())
    }
}

/// The blobs reachable from one root descriptor.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Present blobs, root first, each once.
    pub present: Vec<Descriptor>,
    pub missing: Vec<Descriptor>,
    pub unreadable: Vec<(Descriptor, String)>,
}

impl Store {
    /// Everything `root` references (manifest → config + layers, index → manifests), recursively.
    pub(crate) fn walk(&self, root: &Descriptor) -> Walk {
        let mut w = Walk::default();
        let mut seen = BTreeSet::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            if !seen.insert(d.digest.clone()) {
                continue;
            }
            if !self.has_blob(&d.digest) {
                w.missing.push(d);
                continue;
            }
            let kind = manifest_kind(&d.media_type);
            if let Some(kind) = kind {
                let children = self.read_blob(&d.digest, MAX_JSON_BLOB).and_then(|b| {
                    let r = match kind {
                        ManifestKind::Manifest => Manifest::from_slice(&b).map(|m| {
                            let mut c = vec![m.config];
                            c.extend(m.layers);
                            c
                        }),
                        ManifestKind::Index => Index::from_slice(&b).map(|i| i.manifests),
                    };
                    r.map_err(|source| StoreError::Image {
                        what: "manifest",
                        digest: d.digest.clone(),
                        source,
                    })
                });
                match children {
                    // Reverse so that the pop order follows document order.
                    Ok(c) => stack.extend(c.into_iter().rev()),
                    Err(e) => {
                        w.unreadable.push((d.clone(), crate::report::chain(&e)));
                    }
                }
            }
            w.present.push(d);
        }
        w
    }

    /// Re-hash every blob and check that every tag's closure is present and readable.
    pub fn fsck(&self) -> Result<FsckReport, StoreError> {
        let mut report = FsckReport::default();
        let dir = self.content.join("blobs").join("sha256");
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(io_err("listing", &dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io_err("listing", &dir))?;
        names.sort();
        for path in names {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                report.stray.push(path);
                continue;
            };
            report.blobs_checked += 1;
            match fs::File::open(&path).and_then(hash_reader) {
                Ok((actual, size)) => {
                    report.bytes_checked += size;
                    if actual != digest {
                        report.damaged.push(Damaged {
                            digest,
                            actual: Some(actual),
                            path,
                            problem: "content does not match its digest".into(),
                        });
                    }
                }
                Err(e) => report.damaged.push(Damaged {
                    digest,
                    actual: None,
                    path,
                    problem: e.to_string(),
                }),
            }
        }
        let damaged: BTreeSet<Digest> = report.damaged.iter().map(|d| d.digest.clone()).collect();
        for (tag, desc) in self.tags()? {
            let w = self.walk(&desc);
            for m in w.missing {
                report.missing.push(Missing {
                    tag: tag.clone(),
                    digest: m.digest,
                    media_type: m.media_type,
                });
            }
            for (d, why) in w.unreadable {
                if !damaged.contains(&d.digest) {
                    report.unreadable.push((tag.clone(), d.digest, why));
                }
            }
        }
        self.check_snapshots(&mut report)?;
        Ok(report)
    }

    /// Every snapshot record names a directory inside the store, and its key is the chain ID of
    /// its parent and diff_id (what `store::snapshots` trusts when it finds one).
    fn check_snapshots(&self, report: &mut FsckReport) -> Result<(), StoreError> {
        for (key, rec) in self.snapshot_records()? {
            report.snapshots_checked += 1;
            let parent = rec.parent.as_deref().map(str::parse::<Digest>);
            let why = match (rec.diff_id.parse::<Digest>(), parent) {
                (Ok(d), None) if d.to_string() != key => Some("key is not its chain ID".into()),
                (Ok(d), Some(Ok(p))) if super::chain_id(Some(&p), &d).to_string() != key => {
                    Some("key is not its chain ID".into())
                }
                (Err(_), _) | (_, Some(Err(_))) => Some("unreadable record".into()),
                _ => match self.record_dir(Path::new(&rec.dir)) {
                    Some(d) if d.is_dir() => None,
                    _ => Some(format!("directory {} is missing", rec.dir)),
                },
            };
            if let Some(why) = why {
                report.broken_snapshots.push((key, why));
            }
        }
        Ok(())
    }
}
