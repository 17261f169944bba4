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

/// A database file found by the walk.
enum Found {
    Dpkg(PathBuf, String),
    Apk(PathBuf, String),
    Python(PathBuf, String),
    Conda(PathBuf, String),
    Npm(PathBuf, String),
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
    walk::walk(layers, &mut |rel, real, ft| {
        entries += 1;
        classify(rel, real, ft, &mut found, &mut os_release)
    })
    .map_err(err)?;
    let distro = os_release
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| dbs::Distro::parse(&t))
        .unwrap_or_default();
    let mut packages = Vec::new();
    for f in found {
        let read = |p: &Path| std::fs::read(p);
        match f {
            Found::Dpkg(p, at) => {
                let text = String::from_utf8_lossy(&read(&p).map_err(err)?).into_owned();
                packages.extend(dbs::dpkg(&text, &distro, &at));
            }
            Found::Apk(p, at) => {
                let text = String::from_utf8_lossy(&read(&p).map_err(err)?).into_owned();
                packages.extend(dbs::apk(&text, &distro, &at));
            }
            // A broken record of one package is skipped, as Syft skips it.
            Found::Python(p, at) => {
                if let Ok(b) = read(&p) {
                    packages.extend(dbs::python(&String::from_utf8_lossy(&b), &at));
                }
            }
            Found::Conda(p, at) => packages.extend(read(&p).ok().and_then(|b| dbs::conda(&b, &at))),
            Found::Npm(p, at) => packages.extend(read(&p).ok().and_then(|b| dbs::npm(&b, &at))),
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
    real: &Path,
    ft: std::fs::FileType,
    found: &mut Vec<Found>,
    os_release: &mut Option<PathBuf>,
) -> Descend {
    let at = format!("/{}", rel.display());
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
            found.push(Found::Python(
                real.join("METADATA"),
                format!("{at}/METADATA"),
            ));
            return Descend::No;
        }
        if name.ends_with(".egg-info") {
            found.push(Found::Python(
                real.join("PKG-INFO"),
                format!("{at}/PKG-INFO"),
            ));
            return Descend::No;
        }
        let grand = rel
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name);
        let in_modules = parent == "node_modules"
            || (parent.starts_with('@') && grand.is_some_and(|g| g == "node_modules"));
        if in_modules && !name.starts_with('.') && !name.starts_with('@') {
            found.push(Found::Npm(
                real.join("package.json"),
                format!("{at}/package.json"),
            ));
        }
        return Descend::Yes;
    }
    if !ft.is_file() {
        return Descend::No;
    }
    let path = rel.to_string_lossy();
    match path.as_ref() {
        "var/lib/dpkg/status" => found.push(Found::Dpkg(real.to_path_buf(), at)),
        "lib/apk/db/installed" | "usr/lib/apk/db/installed" => {
            found.push(Found::Apk(real.to_path_buf(), at))
        }
        "etc/os-release" => *os_release = Some(real.to_path_buf()),
        "usr/lib/os-release" if os_release.is_none() => *os_release = Some(real.to_path_buf()),
        _ if parent == "status.d"
            && path.starts_with("var/lib/dpkg/status.d/")
            && !name.ends_with(".md5sums") =>
        {
            found.push(Found::Dpkg(real.to_path_buf(), at))
        }
        _ if name.ends_with(".egg-info") => found.push(Found::Python(real.to_path_buf(), at)),
        _ if parent == "conda-meta" && name.ends_with(".json") => {
            found.push(Found::Conda(real.to_path_buf(), at))
        }
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
