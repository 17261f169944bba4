//! The step cache: a key for every step from everything that decides its result, and a record of
//! the layer that step produced, so a rebuild reuses layers instead of re-running steps.
//!
//! A key is the sha256 of canonical JSON `{"schema": N, "parent": <key>, "step": <inputs>}`: the
//! parent chains every earlier step of the stage (and the base image's manifest digest), the inputs
//! are the expanded instruction plus what it reads — build args and environment for RUN, the content
//! of COPY/ADD sources (type, mode, link target, content digest; mtimes excluded, as BuildKit does)
//! — and the layer settings. `SCHEMA` is part of every key: changing what a key covers means bumping
//! it, and old records simply stop matching.
//!
//! Cache mounts (`RUN --mount=type=cache`) are build cache too: `mounts` names their directories and
//! records their use, so GC can collect them like BuildKit's `exec.cachemount` records.
//!
//! The same records travel between builders (`remote`: the artifact format and its checks,
//! `export`: making one, `import`: reading a local one back and seeding cache mounts, `spec`: the
//! `--cache-to`/`--cache-from` values); the engine moves them through the registry client.
//!
//! Must not: run steps, write layers or decide policy (`--no-cache` is the build's business); records
//! never hold secrets (secret mounts are keyed by id, never by value).

pub mod export;
pub mod import;
pub mod remote;
pub mod spec;

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub mod mounts;

use crate::context::SourceRoot;
use crate::digest::Digest;
use crate::image::{canonical_json, Descriptor};
use crate::store::{Store, StoreError, Tracked};

/// Bump when the inputs a key covers change, or what a step makes from the same inputs. 2: a
/// single-match wildcard copies to the destination path, `COPY --from` keeps the source's owners.
/// 3: a `FROM scratch` stage's root names its platform (a base image's root is its
/// platform's manifest digest already), so no step of one platform is taken for another's.
pub const SCHEMA: u32 = 3;
const NAMESPACE: &str = "step-cache";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("hashing cache inputs")]
    Encode(#[source] crate::image::ImageError),
    #[error("checksumming source {path}")]
    Checksum {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Source(#[from] crate::context::ContextError),
    #[error("reading or writing a cache record")]
    Store(#[from] StoreError),
    #[error("cache layout {path}: {why}")]
    Layout {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("cache mount {path}")]
    Mount {
        path: std::path::PathBuf,
        #[source]
        source: Box<crate::layer::LayerError>,
    },
}

/// A step's cache key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheKey(pub Digest);

impl CacheKey {
    /// The key of a stage's starting point (`scratch`, a base image's manifest digest, or the key
    /// of the stage it is built FROM).
    pub fn root(what: &str) -> CacheKey {
        CacheKey(Digest::of(format!("kiln-cache-{SCHEMA}:{what}").as_bytes()))
    }

    /// The key of a step after `parent`, from its inputs (any serialisable value).
    pub fn chain<T: Serialize>(parent: &CacheKey, inputs: &T) -> Result<CacheKey, CacheError> {
        #[derive(Serialize)]
        struct Key<'a, T> {
            schema: u32,
            parent: &'a Digest,
            step: &'a T,
        }
        let bytes = canonical_json(&Key {
            schema: SCHEMA,
            parent: &parent.0,
            step: inputs,
        })
        .map_err(CacheError::Encode)?;
        Ok(CacheKey(Digest::of(&bytes)))
    }
}

/// What a cached step produced: its layer, or nothing (a RUN that changed no file, an existing
/// WORKDIR).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub layer: Option<CachedLayer>,
    /// When the layer was made (RFC 3339): a replay writes it as the history entry's `created`,
    /// so a rebuild from cache is the same image (BuildKit keeps a ref's `createdAt`). Absent in
    /// records of steps without a layer and in those of an older kiln.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// Look a key up (a hit counts as a use, which GC's keepDuration and LRU order go on); a record
/// whose layer blob is no longer in the store (pruned) is a miss.
pub fn lookup(store: &Store, key: &CacheKey) -> Result<Option<Record>, CacheError> {
    let Some(text) = store.use_record(NAMESPACE, key.0.hex())? else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_str::<Record>(&text) else {
        return Ok(None);
    };
    match &record.layer {
        Some(l) if !store.has_blob(&l.descriptor.digest) => Ok(None),
        _ => Ok(Some(record)),
    }
}

pub fn save(store: &Store, key: &CacheKey, record: &Record) -> Result<(), CacheError> {
    let text = serde_json::to_string(record).map_err(|e| {
        CacheError::Encode(crate::image::ImageError::Serialize {
            what: "cache record",
            source: e,
        })
    })?;
    // BuildKit's record type for a step's result is `regular`; GC removes the layer with the
    // record when no tag and no other record needs it.
    let tracked = Tracked {
        kind: "regular".into(),
        blobs: record
            .layer
            .iter()
            .map(|l| l.descriptor.digest.clone())
            .collect(),
        dir: None,
        description: match &record.layer {
            Some(l) => format!(
                "layer {} ({} bytes)",
                l.descriptor.digest, l.descriptor.size
            ),
            None => "step without a layer".into(),
        },
    };
    store.put_tracked(NAMESPACE, key.0.hex(), &text, &tracked)?;
    Ok(())
}

/// A checksum of the COPY/ADD sources `patterns` name in `root`: every entry's relative path, type,
/// permission bits, link target and content digest, in walk order. Files hidden by `.dockerignore`
/// or `--exclude` are not part of the copy, so they are not part of the key either.
///
/// The walk is sequential (its order is the checksum's); the contents are hashed on every core,
/// because on a cold build this read is the one step before the layer pipeline can start.
pub fn sources_checksum(
    root: &SourceRoot,
    patterns: &[String],
    excluded: &dyn Fn(&Path) -> bool,
) -> Result<Digest, CacheError> {
    // Items are described a window at a time, so memory stays flat however many files there are.
    const WINDOW: usize = 4096;
    let mut h = crate::digest::Hasher::new();
    let mut items: Vec<Item> = Vec::with_capacity(WINDOW);
    let mut flush = |items: &mut Vec<Item>| -> Result<(), CacheError> {
        for line in hash_items(items)? {
            h.update(line.as_bytes());
        }
        items.clear();
        Ok(())
    };
    for pattern in patterns {
        items.push(Item::Text(format!("pattern {pattern}\n")));
        for m in root.resolve(pattern)? {
            let walker = walkdir::WalkDir::new(&m.path)
                .follow_links(false)
                .sort_by_file_name();
            for entry in walker {
                let entry = entry.map_err(|e| CacheError::Checksum {
                    path: m.path.clone(),
                    source: io::Error::other(e),
                })?;
                let within = entry.path().strip_prefix(&m.path).unwrap_or(entry.path());
                let rel = m.rel.join(within);
                if !within.as_os_str().is_empty() && (root.is_excluded(&rel) || excluded(within)) {
                    continue;
                }
                items.push(Item::Entry(entry.into_path(), rel));
                if items.len() == WINDOW {
                    flush(&mut items)?;
                }
            }
        }
    }
    flush(&mut items)?;
    Ok(h.finish())
}

/// One line of the checksum: fixed text, or an entry (on-disk path, relative path) to describe.
enum Item {
    Text(String),
    Entry(std::path::PathBuf, std::path::PathBuf),
}

/// Describe every item, on up to `available_parallelism` threads, keeping the items' order.
fn hash_items(items: &[Item]) -> Result<Vec<String>, CacheError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || -> Result<Vec<(usize, String)>, CacheError> {
        let mut buf = vec![0u8; 128 * 1024];
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return Ok(done);
            };
            let line = match item {
                Item::Text(t) => t.clone(),
                Item::Entry(path, rel) => entry_line(path, rel, &mut buf)?,
            };
            done.push((i, line));
        }
    };
    let parts: Vec<Result<Vec<(usize, String)>, CacheError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut parts = vec![work()];
        parts.extend(handles.into_iter().map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(CacheError::Checksum {
                    path: Default::default(),
                    source: io::Error::other("a checksum thread panicked"),
                })
            })
        }));
        parts
    });
    let mut lines = vec![String::new(); items.len()];
    for part in parts {
        for (i, line) in part? {
            lines[i] = line;
        }
    }
    Ok(lines)
}

fn entry_line(path: &Path, rel: &Path, buf: &mut [u8]) -> Result<String, CacheError> {
    let err = |source| CacheError::Checksum {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(err)?;
    let mode = meta.permissions().mode() & 0o7777;
    let ft = meta.file_type();
    let what = if ft.is_symlink() {
        format!("link {}", fs::read_link(path).map_err(err)?.display())
    } else if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_file() {
        let f = fs::File::open(path).map_err(err)?;
        let (d, n) = crate::digest::hash_reader_with(f, buf).map_err(err)?;
        format!("file {n} {d}")
    } else {
        format!("special {}", meta.rdev())
    };
    Ok(format!("{:?} {mode:o} {what}\n", rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain_and_carry_the_schema() {
        let root = CacheKey::root("scratch");
        let a = CacheKey::chain(&root, &("RUN", "echo hi")).unwrap();
        let b = CacheKey::chain(&root, &("RUN", "echo hi")).unwrap();
        let c = CacheKey::chain(&root, &("RUN", "echo ho")).unwrap();
        let d = CacheKey::chain(&a, &("RUN", "echo hi")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d, "the same step after another parent is another key");
        assert_ne!(CacheKey::root("scratch"), CacheKey::root("sha256:00"));
    }

    #[test]
    fn checksums_follow_content_and_mode_not_mtime() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("src")).unwrap();
        fs::write(d.path().join("src/a"), "one").unwrap();
        let root = SourceRoot::rootfs(d.path());
        let sum = |r: &SourceRoot| sources_checksum(r, &["src".to_string()], &|_| false).unwrap();
        let first = sum(&root);
        let t = filetime::FileTime::from_unix_time(1, 0);
        filetime::set_file_times(d.path().join("src/a"), t, t).unwrap();
        assert_eq!(sum(&root), first, "mtime is not an input");
        fs::set_permissions(d.path().join("src/a"), fs::Permissions::from_mode(0o600)).unwrap();
        let moded = sum(&root);
        assert_ne!(moded, first, "mode is an input");
        fs::write(d.path().join("src/a"), "two").unwrap();
        assert_ne!(sum(&root), moded, "content is an input");
        let skipping =
            sources_checksum(&root, &["src".to_string()], &|p| p == Path::new("a")).unwrap();
        fs::write(d.path().join("src/a"), "three").unwrap();
        let skipping2 =
            sources_checksum(&root, &["src".to_string()], &|p| p == Path::new("a")).unwrap();
        assert_eq!(skipping, skipping2, "excluded files are not inputs");
    }
}
