//! A software bill of materials read from the image kiln just built — no scanner image (BuildKit
//! runs a Syft container for this). One walk over the merged snapshot chain (`walk.rs`) finds the
//! package databases (`dbs.rs`); only those files are read. The packages become an SPDX 2.3
//! document (`spdx.rs`, predicate `https://spdx.dev/Document`, as Syft writes for BuildKit) or a
//! CycloneDX 1.5 one (`cyclonedx.rs`).
//!
//! Must not: read anything but the package databases and `os-release`, or follow a symlink.

pub mod cyclonedx;
pub mod dbs;
pub mod spdx;
pub mod walk;

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{AttestError, SbomFormat};
use crate::context::View;
use walk::Descend;

/// Where a package was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ecosystem {
    Deb,
    Apk,
    Python,
    Conda,
    Npm,
}

impl Ecosystem {
    /// The package manager named in SPDX `sourceInfo` and SPDX ids.
    pub fn label(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Python => "python",
            Ecosystem::Conda => "conda",
            Ecosystem::Npm => "npm",
        }
    }
}

/// One package of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub purl: String,
    /// As the database declares it (kept out of SPDX's license fields, which need valid
    /// expressions).
    pub license: Option<String>,
    /// The database file, absolute in the image (`/var/lib/dpkg/status`).
    pub found_at: String,
}

/// What a scan produced.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub packages: Vec<Package>,
    /// Files walked (for the record).
    pub entries: u64,
}

/// A database file found by the walk, by its path in the image (read through the merged view:
/// a file inside a found directory may come from a lower layer than the directory entry).
enum Found {
    Dpkg(PathBuf),
    Apk(PathBuf),
    Python(PathBuf),
    Conda(PathBuf),
    Npm(PathBuf),
}

/// The bytes of the regular file at `rel` in the merged tree; None when it is absent or anything
/// but a regular file (a symlink is never followed: it could point at the host's files).
fn read_regular(view: &View, rel: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match view.lookup(rel)? {
        Some((path, meta)) if meta.is_file() => std::fs::read(path).map(Some),
        _ => Ok(None),
    }
}

/// Scan the merged tree of `layers` (snapshot directories, top-most first; one plain directory
/// is a tree of one layer).
pub fn scan(layers: &[PathBuf], what: &str) -> Result<Scan, AttestError> {
    let err = |source| AttestError::Scan {
        what: what.to_string(),
        source,
    };
    let mut found = Vec::new();
    let mut os_release: Option<PathBuf> = None;
    let mut entries = 0u64;
    walk::walk(layers, &mut |rel, ft| {
        entries += 1;
        classify(rel, ft, &mut found, &mut os_release)
    })
    .map_err(err)?;
    let view = View::new(layers.to_vec());
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let distro = match os_release {
        Some(p) => read_regular(&view, &p).map_err(err)?,
        None => None,
    }
    .map(|b| dbs::Distro::parse(&text(b)))
    .unwrap_or_default();
    let mut packages = Vec::new();
    for f in found {
        let (Found::Dpkg(rel)
        | Found::Apk(rel)
        | Found::Python(rel)
        | Found::Conda(rel)
        | Found::Npm(rel)) = &f;
        let at = format!("/{}", rel.display());
        // A broken record of one package is skipped, as Syft skips it.
        let Some(bytes) = read_regular(&view, rel).map_err(err)? else {
            continue;
        };
        match f {
            Found::Dpkg(_) => packages.extend(dbs::dpkg(&text(bytes), &distro, &at)),
            Found::Apk(_) => packages.extend(dbs::apk(&text(bytes), &distro, &at)),
            Found::Python(_) => packages.extend(dbs::python(&text(bytes), &at)),
            Found::Conda(_) => packages.extend(dbs::conda(&bytes, &at)),
            Found::Npm(_) => packages.extend(dbs::npm(&bytes, &at)),
        }
    }
    packages.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.found_at).cmp(&(
            b.ecosystem,
            &b.name,
            &b.version,
            &b.found_at,
        ))
    });
    packages.dedup_by(|a, b| a.purl == b.purl && a.found_at == b.found_at);
    Ok(Scan { packages, entries })
}

/// Note a database file; say whether to enter a directory.
fn classify(
    rel: &Path,
    ft: std::fs::FileType,
    found: &mut Vec<Found>,
    os_release: &mut Option<PathBuf>,
) -> Descend {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let parent = rel
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if ft.is_symlink() {
        return Descend::No;
    }
    if ft.is_dir() {
        if rel.parent() == Some(Path::new("")) && matches!(name.as_ref(), "proc" | "sys" | "dev") {
            return Descend::No;
        }
        if name.ends_with(".dist-info") {
            found.push(Found::Python(rel.join("METADATA")));
            return Descend::No;
        }
        if name.ends_with(".egg-info") {
            found.push(Found::Python(rel.join("PKG-INFO")));
            return Descend::No;
        }
        let grand = rel
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name);
        let in_modules = parent == "node_modules"
            || (parent.starts_with('@') && grand.is_some_and(|g| g == "node_modules"));
        if in_modules && !name.starts_with('.') && !name.starts_with('@') {
            found.push(Found::Npm(rel.join("package.json")));
        }
        return Descend::Yes;
    }
    if !ft.is_file() {
        return Descend::No;
    }
    let path = rel.to_string_lossy();
    let rel = rel.to_path_buf();
    match path.as_ref() {
        "var/lib/dpkg/status" => found.push(Found::Dpkg(rel)),
        "lib/apk/db/installed" | "usr/lib/apk/db/installed" => found.push(Found::Apk(rel)),
        "etc/os-release" => *os_release = Some(rel),
        "usr/lib/os-release" if os_release.is_none() => *os_release = Some(rel),
        _ if parent == "status.d"
            && path.starts_with("var/lib/dpkg/status.d/")
            && !name.ends_with(".md5sums") =>
        {
            found.push(Found::Dpkg(rel))
        }
        _ if name.ends_with(".egg-info") => found.push(Found::Python(rel)),
        _ if parent == "conda-meta" && name.ends_with(".json") => found.push(Found::Conda(rel)),
        _ => {}
    }
    Descend::No
}

/// What the document describes.
pub struct Subject<'a> {
    /// The scanned thing's name (`core`, a stage name, `context`) and the image names.
    pub name: &'a str,
    pub image_names: &'a [String],
    /// Makes the document's namespace unique: the image manifest's digest.
    pub digest: &'a crate::digest::Digest,
    /// Unix seconds (SOURCE_DATE_EPOCH when set: the same build gives the same document).
    pub created: i64,
}

/// The predicate type and document for `scan` in `format`.
pub fn document(scan: &Scan, format: SbomFormat, subject: &Subject<'_>) -> (String, Value) {
    match format {
        SbomFormat::Spdx => (spdx::PREDICATE.to_string(), spdx::document(scan, subject)),
        SbomFormat::CycloneDx => (
            cyclonedx::PREDICATE.to_string(),
            cyclonedx::document(scan, subject),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn the_merged_tree_is_read_through_layers_whiteouts_and_never_through_symlinks() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let site = "usr/lib/python3/dist-packages";
        let meta = |n: &str| format!("Metadata-Version: 2.1\nName: {n}\nVersion: 1.0\n");
        write(
            lower.path(),
            &format!("{site}/a-1.0.dist-info/METADATA"),
            &meta("a"),
        );
        write(
            lower.path(),
            &format!("{site}/b-1.0.dist-info/METADATA"),
            &meta("b"),
        );
        // The upper layer adds a file to a's directory: a's METADATA still comes from below.
        write(
            upper.path(),
            &format!("{site}/a-1.0.dist-info/INSTALLER"),
            "pip\n",
        );
        // A record that is a symlink out of the image is not followed.
        let evil = upper.path().join(format!("{site}/evil-1.0.dist-info"));
        fs::create_dir_all(&evil).unwrap();
        std::os::unix::fs::symlink("/etc/os-release", evil.join("METADATA")).unwrap();
        // A whiteout (0/0 character device) hides b, where the test may make one.
        let wh = upper.path().join(format!("{site}/b-1.0.dist-info"));
        let whiteout = rustix::fs::mknodat(
            rustix::fs::CWD,
            &wh,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .is_ok();
        let layers = vec![upper.path().to_path_buf(), lower.path().to_path_buf()];
        let names: Vec<String> = scan(&layers, "test")
            .unwrap()
            .packages
            .into_iter()
            .map(|p| p.name)
            .collect();
        match whiteout {
            true => assert_eq!(names, ["a"]),
            false => {
                eprintln!("SKIPPED whiteout check: mknod needs CAP_MKNOD");
                assert_eq!(names, ["a", "b"]);
            }
        }
    }
}
