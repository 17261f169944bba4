//! Writing images out of the store (OCI layout directory or tar, docker-archive) and importing an
//! OCI layout directory into it. Blobs are streamed and verified, never read whole into memory.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::Path;

use super::{io_err, set_mode, Store, StoreError, MAX_JSON_BLOB};
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::image::{
    canonical_json, manifest_kind, Descriptor, Index, Manifest, ManifestKind, Platform,
    ANNOTATION_REF_NAME,
};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// containerd's (and Docker 25+'s `docker save`) annotation for the full image name.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

fn layout_err(msg: String) -> StoreError {
    StoreError::Layout(msg)
}

fn encode<T: serde::Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    canonical_json(v).map_err(|source| StoreError::Encode { what, source })
}

/// The complete closure of each image, in a stable order (each blob once); an error names the first
/// blob that is missing or unreadable.
fn closure(store: &Store, images: &[(String, Descriptor)]) -> Result<Vec<Descriptor>, StoreError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, desc) in images {
        let w = store.walk(desc);
        if let Some(m) = w.missing.first() {
            return Err(layout_err(format!(
                "cannot export {name}: blob {} ({}) is not in the store",
                m.digest, m.media_type
            )));
        }
        if let Some((d, why)) = w.unreadable.first() {
            return Err(layout_err(format!(
                "cannot export {name}: {} is unreadable: {why}",
                d.digest
            )));
        }
        for d in w.present {
            if seen.insert(d.digest.clone()) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

fn named(desc: &Descriptor, name: &str) -> Descriptor {
    let mut d = desc.clone();
    d.annotations.remove(ANNOTATION_REF_NAME);
    if !name.is_empty() {
        d.annotations
            .insert(ANNOTATION_REF_NAME.to_string(), name.to_string());
    }
    d
}

/// Write images as an OCI image layout: a directory (merged into an existing layout there), or a
/// tar of one when `dest` ends in `.tar`. Each image is listed in `index.json` under its ref name.
pub fn write_oci_layout(
    store: &Store,
    images: &[(String, Descriptor)],
    dest: &Path,
) -> Result<(), StoreError> {
    let blobs = closure(store, images)?;
    let entries: Vec<Descriptor> = images.iter().map(|(n, d)| named(d, n)).collect();
    if dest.extension().is_some_and(|e| e == "tar") {
        let index = encode("index.json", &Index::new(entries))?;
        return write_tar(store, &blobs, &index, None, dest);
    }
    let blob_dir = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(io_err("creating directory", &blob_dir))?;
    for d in &blobs {
        copy_blob(store, d, &blob_dir.join(d.digest.hex()))?;
    }
    // Blobs are durable before the index that names them is written (verify, then publish).
    crate::atomic::sync_dir(&blob_dir).map_err(io_err("syncing directory", &blob_dir))?;
    let index_path = dest.join("index.json");
    let mut index = match fs::read(&index_path) {
        Ok(b) => Index::from_slice(&b).map_err(|source| StoreError::Json {
            path: index_path.clone(),
            source,
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Index::default(),
        Err(e) => return Err(io_err("reading", &index_path)(e)),
    };
    for e in entries {
        if let Some(name) = e.ref_name() {
            index.manifests.retain(|d| d.ref_name() != Some(name));
        }
        index.manifests.push(e);
    }
    write_file_atomic(&dest.join("oci-layout"), OCI_LAYOUT)?;
    write_file_atomic(&index_path, &encode("index.json", &index)?)
}

/// Write images in `docker save` format (as Docker 25+ writes it: an OCI layout plus
/// `manifest.json`), which `docker load` and `skopeo … docker-archive:` read. An image that is an
/// index is written as its host-platform manifest. `repo:tag` names without a tag get `:latest`.
pub fn write_docker_archive(
    store: &Store,
    images: &[(String, Descriptor)],
    dest: &Path,
) -> Result<(), StoreError> {
    #[derive(serde::Serialize)]
    struct Item {
        #[serde(rename = "Config")]
        config: String,
        #[serde(rename = "RepoTags")]
        repo_tags: Vec<String>,
        #[serde(rename = "Layers")]
        layers: Vec<String>,
    }
    let host = Platform::host();
    let mut items: Vec<(Digest, Item)> = Vec::new();
    let mut resolved = Vec::new();
    for (name, desc) in images {
        let repo_tag = with_default_tag(name);
        let mdesc = store.platform_manifest(name, desc, &host)?;
        let bytes = store.read_blob(&mdesc.digest, MAX_JSON_BLOB)?;
        let m = Manifest::from_slice(&bytes).map_err(|source| StoreError::Image {
            what: "image manifest",
            digest: mdesc.digest.clone(),
            source,
        })?;
        match items.iter_mut().find(|(d, _)| d == &mdesc.digest) {
            Some((_, item)) => item.repo_tags.push(repo_tag.clone()),
            None => items.push((
                mdesc.digest.clone(),
                Item {
                    config: blob_name(&m.config.digest),
                    repo_tags: vec![repo_tag.clone()],
                    layers: m.layers.iter().map(|l| blob_name(&l.digest)).collect(),
                },
            )),
        }
        let mut entry = named(&mdesc, &repo_tag);
        entry
            .annotations
            .insert(ANNOTATION_CONTAINERD_NAME.to_string(), repo_tag.clone());
        resolved.push((repo_tag, entry));
    }
    let blobs = closure(store, &resolved)?;
    let items: Vec<Item> = items.into_iter().map(|(_, i)| i).collect();
    let manifest_json = encode("manifest.json", &items)?;
    let index = encode(
        "index.json",
        &Index::new(resolved.into_iter().map(|(_, d)| d).collect()),
    )?;
    write_tar(store, &blobs, &index, Some(&manifest_json), dest)
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// `name` with `:latest` appended when it has neither a tag nor a digest.
fn with_default_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// A deterministic tar (fixed order, owner 0:0, mtime 0) of an OCI layout, written to a temp file
/// beside `dest` and renamed into place once complete.
fn write_tar(
    store: &Store,
    blobs: &[Descriptor],
    index_json: &[u8],
    manifest_json: Option<&[u8]>,
    dest: &Path,
) -> Result<(), StoreError> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempfile_in(parent)
        .map_err(io_err("creating temp file in", parent))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(256 * 1024, tmp));
    let w = |e| io_err("writing tar", dest)(e);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, dir, io::empty()).map_err(w)?;
    }
    let mut files: Vec<(&str, &[u8])> =
        vec![("oci-layout", OCI_LAYOUT), ("index.json", index_json)];
    if let Some(m) = manifest_json {
        files.push(("manifest.json", m));
    }
    for (name, bytes) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        tar.append_data(&mut h, name, bytes).map_err(w)?;
    }
    let mut sorted: Vec<&Descriptor> = blobs.iter().collect();
    sorted.sort_by(|a, b| a.digest.cmp(&b.digest));
    for d in sorted {
        let f = store.open_blob(&d.digest)?;
        let path = store.blob_path(&d.digest);
        let size = f.metadata().map_err(io_err("inspecting", &path))?.len();
        if size != d.size {
            return Err(StoreError::SizeMismatch {
                digest: d.digest.clone(),
                expected: d.size,
                actual: size,
            });
        }
        let mut h = header(tar::EntryType::Regular, 0o644, size);
        let mut r = HashingReader::new(f.take(size));
        tar.append_data(&mut h, blob_name(&d.digest), &mut r)
            .map_err(w)?;
        let (_, actual, _) = r.finish();
        if actual != d.digest {
            // The temp file is dropped (removed) on return: no partial archive appears at dest.
            return Err(StoreError::DigestMismatch {
                expected: d.digest.clone(),
                actual,
                size,
            });
        }
    }
    let tmp = tar
        .into_inner()
        .map_err(w)?
        .into_inner()
        .map_err(|e| w(e.into_error()))?;
    tmp.as_file().sync_all().map_err(w)?;
    set_mode(tmp.path(), 0o644)?;
    tmp.persist(dest)
        .map_err(|e| io_err("renaming into place", dest)(e.error))?;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::atomic::sync_dir(dir).map_err(io_err("syncing directory", dir))
}

/// Put a verified copy of a store blob at `dst`: a hard link when on the same filesystem, else a
/// streamed copy checked against the digest.
fn copy_blob(store: &Store, d: &Descriptor, dst: &Path) -> Result<(), StoreError> {
    if fs::metadata(dst).is_ok_and(|m| m.len() == d.size) {
        return Ok(());
    }
    let src = store.blob_path(&d.digest);
    let dir = dst.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-blob-")
        .tempfile_in(dir)
        .map_err(io_err("creating temp file in", dir))?;
    let tmp_path = tmp.into_temp_path();
    // Link to a temp name then rename, so an existing (damaged) file is replaced atomically.
    let _ = fs::remove_file(&tmp_path);
    if fs::hard_link(&src, &tmp_path).is_ok() {
        return tmp_path
            .persist(dst)
            .map_err(|e| io_err("renaming into place", dst)(e.error));
    }
    let mut out = HashingWriter::new(BufWriter::new(
        File::create(&tmp_path).map_err(io_err("creating", &tmp_path))?,
    ));
    let f = store.open_blob(&d.digest)?;
    io::copy(&mut f.take(d.size + 1), &mut out).map_err(io_err("copying blob to", dst))?;
    let (buf, actual, size) = out.finish();
    let file = buf
        .into_inner()
        .map_err(|e| io_err("writing", dst)(e.into_error()))?;
    if actual != d.digest || size != d.size {
        return Err(StoreError::DigestMismatch {
            expected: d.digest.clone(),
            actual,
            size,
        });
    }
    file.sync_all().map_err(io_err("syncing", &tmp_path))?;
    tmp_path
        .persist(dst)
        .map_err(|e| io_err("renaming into place", dst)(e.error))
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    crate::atomic::atomic_write(path, bytes, 0o644, None).map_err(io_err("replacing", path))
}

/// Copy one image of the OCI layout directory `src` into the store, verifying every blob, and
/// return its (manifest or index) descriptor. `tag` picks the `ref.name`; without it the layout
/// must hold exactly one image.
pub fn import_oci_layout(
    store: &Store,
    src: &Path,
    tag: Option<&str>,
) -> Result<Descriptor, StoreError> {
    let layout = src.join("oci-layout");
    if !layout.is_file() {
        return Err(layout_err(format!(
            "{} is not an OCI image layout directory (no oci-layout file)",
            src.display()
        )));
    }
    let index_path = src.join("index.json");
    let bytes = fs::read(&index_path).map_err(io_err("reading", &index_path))?;
    let index = Index::from_slice(&bytes).map_err(|source| StoreError::Json {
        path: index_path.clone(),
        source,
    })?;
    let names: Vec<&str> = index
        .manifests
        .iter()
        .map(|d| d.ref_name().unwrap_or("<unnamed>"))
        .collect();
    let root = match tag {
        // `PATH@sha256:…` (BuildKit's oci-layout named contexts pin a digest): a tag has no ':'.
        Some(t) if t.starts_with("sha256:") => {
            index.manifests.iter().find(|d| d.digest.to_string() == t)
        }
        Some(t) => index.manifests.iter().find(|d| d.ref_name() == Some(t)),
        None if index.manifests.len() == 1 => index.manifests.first(),
        None => None,
    }
    .ok_or_else(|| {
        layout_err(format!(
            "{}: {} (images in it: {})",
            src.display(),
            match tag {
                Some(t) => format!("no image named {t:?}"),
                None => "holds more than one image; name one with :<tag>".to_string(),
            },
            names.join(", ")
        ))
    })?;
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        if !store.has_blob(&d.digest) {
            let p = src
                .join("blobs")
                .join(d.digest.algorithm())
                .join(d.digest.hex());
            let f = File::open(&p).map_err(io_err("opening layout blob", &p))?;
            store.ingest_reader(f, Some(&d.digest), Some(d.size))?;
        }
        match manifest_kind(&d.media_type) {
            Some(ManifestKind::Manifest) => {
                let b = store.read_blob(&d.digest, MAX_JSON_BLOB)?;
                let m = Manifest::from_slice(&b).map_err(|source| StoreError::Image {
                    what: "image manifest",
                    digest: d.digest.clone(),
                    source,
                })?;
                stack.push(m.config);
                stack.extend(m.layers);
            }
            Some(ManifestKind::Index) => {
                let b = store.read_blob(&d.digest, MAX_JSON_BLOB)?;
                let i = Index::from_slice(&b).map_err(|source| StoreError::Image {
                    what: "image index",
                    digest: d.digest.clone(),
                    source,
                })?;
                stack.extend(i.manifests);
            }
            None => {}
        }
    }
    let mut out = root.clone();
    out.annotations.remove(ANNOTATION_REF_NAME);
    Ok(out)
}
