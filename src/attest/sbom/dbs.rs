//! The package databases an image carries, parsed as their own tools read them:
//! - dpkg `status` (and distroless' `status.d/*`): deb822 paragraphs; a package is listed unless
//!   its `Status` says `not-installed` or `config-files` (what `dpkg-query -W` shows of a fresh
//!   image); purl `pkg:deb/ID/NAME@VERSION?arch=…&upstream=SOURCE&distro=ID-VERSION_ID` (Syft's).
//! - apk `installed`: `P:`/`V:`/`A:`/`L:`/`o:` records; purl `pkg:apk/ID/NAME@V?arch=…`.
//! - Python core metadata (`*.dist-info/METADATA`, `*.egg-info[/PKG-INFO]`): RFC 822 headers;
//!   purl `pkg:pypi/NAME@V` with the name normalised (PEP 503: lower case, runs of `-_.` → `-`).
//! - conda `conda-meta/*.json`; npm `node_modules/[@scope/]NAME/package.json`.
//!
//! Must not: read files (the scanner hands the bytes in).

use serde_json::Value;

use super::{Ecosystem, Package};
use crate::attest::purl::purl;

/// `/etc/os-release`'s `ID` and `VERSION_ID` (`debian`, `12`).
#[derive(Debug, Clone, Default)]
pub struct Distro {
    pub id: String,
    pub version_id: String,
}

impl Distro {
    pub fn parse(text: &str) -> Distro {
        let mut d = Distro::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            match k.trim() {
                "ID" => d.id = v,
                "VERSION_ID" => d.version_id = v,
                _ => {}
            }
        }
        d
    }

    fn qualifier(&self) -> String {
        match (self.id.is_empty(), self.version_id.is_empty()) {
            (true, _) => String::new(),
            (false, true) => self.id.clone(),
            (false, false) => format!("{}-{}", self.id, self.version_id),
        }
    }
}

/// deb822 paragraphs → (field, value) lists; continuation lines are dropped (no field kiln reads
/// spans lines).
fn paragraphs(text: &str) -> Vec<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if !line.starts_with([' ', '\t']) {
            if let Some((k, v)) = line.split_once(':') {
                cur.push((k, v.trim()));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn field<'a>(p: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// A dpkg status file (or one `status.d` entry).
pub fn dpkg(text: &str, distro: &Distro, found_at: &str) -> Vec<Package> {
    let ns = if distro.id.is_empty() {
        "debian"
    } else {
        distro.id.as_str()
    };
    let dq = distro.qualifier();
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let (Some(name), Some(version)) = (field(&p, "Package"), field(&p, "Version")) else {
            continue;
        };
        if let Some(st) = field(&p, "Status") {
            let state = st.split_whitespace().last().unwrap_or("");
            if matches!(state, "not-installed" | "config-files") {
                continue;
            }
        }
        let arch = field(&p, "Architecture").unwrap_or("");
        let source = field(&p, "Source")
            .and_then(|s| s.split_whitespace().next())
            .filter(|s| *s != name)
            .unwrap_or("");
        let q = [
            ("arch", arch),
            ("upstream", source),
            ("distro", dq.as_str()),
        ];
        out.push(Package {
            ecosystem: Ecosystem::Deb,
            name: name.to_string(),
            version: version.to_string(),
            purl: purl("deb", ns, name, version, &q),
            license: None,
            found_at: found_at.to_string(),
        });
    }
    out
}

/// apk's `lib/apk/db/installed`.
pub fn apk(text: &str, distro: &Distro, found_at: &str) -> Vec<Package> {
    let ns = if distro.id.is_empty() {
        "alpine"
    } else {
        distro.id.as_str()
    };
    let dq = distro.qualifier();
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let get = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
                .unwrap_or("")
        };
        let (name, version) = (get("P"), get("V"));
        if name.is_empty() || version.is_empty() {
            continue;
        }
        let origin = Some(get("o")).filter(|o| *o != name).unwrap_or("");
        let q = [
            ("arch", get("A")),
            ("upstream", origin),
            ("distro", dq.as_str()),
        ];
        out.push(Package {
            ecosystem: Ecosystem::Apk,
            name: name.to_string(),
            version: version.to_string(),
            purl: purl("apk", ns, name, version, &q),
            license: Some(get("L").to_string()).filter(|l| !l.is_empty()),
            found_at: found_at.to_string(),
        });
    }
    out
}

/// Python core metadata (`METADATA`, `PKG-INFO`).
pub fn python(text: &str, found_at: &str) -> Option<Package> {
    let mut name = None;
    let mut version = None;
    let mut license = None;
    for line in text.lines() {
        if line.is_empty() {
            break; // the body (description) follows the headers
        }
        if let Some((k, v)) = line.split_once(':') {
            match k {
                "Name" => name = Some(v.trim().to_string()),
                "Version" => version = Some(v.trim().to_string()),
                "License-Expression" => license = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let (name, version) = (name?, version?);
    let norm = normalise_pypi(&name);
    Some(Package {
        ecosystem: Ecosystem::Python,
        purl: purl("pypi", "", &norm, &version, &[]),
        name,
        version,
        license,
        found_at: found_at.to_string(),
    })
}

/// PEP 503 name normalisation.
fn normalise_pypi(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// A `conda-meta/*.json` record.
pub fn conda(bytes: &[u8], found_at: &str) -> Option<Package> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (name, version) = (s("name"), s("version"));
    if name.is_empty() || version.is_empty() {
        return None;
    }
    let (build, channel, subdir) = (s("build"), s("channel"), s("subdir"));
    let q = [
        ("build", build.as_str()),
        ("channel", channel.as_str()),
        ("subdir", subdir.as_str()),
    ];
    Some(Package {
        ecosystem: Ecosystem::Conda,
        purl: purl("conda", "", &name, &version, &q),
        license: Some(s("license")).filter(|l| !l.is_empty()),
        name,
        version,
        found_at: found_at.to_string(),
    })
}

/// A package's `package.json` under `node_modules`.
pub fn npm(bytes: &[u8], found_at: &str) -> Option<Package> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let version = v.get("version")?.as_str()?.to_string();
    let (ns, short) = match name.split_once('/') {
        Some((scope, n)) if scope.starts_with('@') => (scope, n),
        _ => ("", name.as_str()),
    };
    Some(Package {
        ecosystem: Ecosystem::Npm,
        purl: purl("npm", ns, short, &version, &[]),
        license: v.get("license").and_then(Value::as_str).map(str::to_string),
        name: name.clone(),
        version,
        found_at: found_at.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_lists_installed_packages_with_syft_purls() {
        let status = "Package: jq\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.6-2.1\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc (2.36-9)\nVersion: 2.36-9\n";
        let d = Distro::parse("ID=debian\nVERSION_ID=\"12\"\n");
        let p = dpkg(status, &d, "/var/lib/dpkg/status");
        let purls: Vec<&str> = p.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:deb/debian/jq@1.6-2.1?arch=amd64&distro=debian-12",
                "pkg:deb/debian/libc6@2.36-9?arch=amd64&upstream=glibc&distro=debian-12"
            ]
        );
    }

    #[test]
    fn apk_conda_and_npm_records_become_purls() {
        let d = Distro::parse("ID=alpine\nVERSION_ID=3.19.1\n");
        let p = apk("C:Q1x\nP:busybox\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\no:busybox\n\nP:ssl_client\nV:1.36.1-r15\nA:x86_64\no:busybox\n", &d, "/lib/apk/db/installed");
        let purls: Vec<&str> = p.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1",
                "pkg:apk/alpine/ssl_client@1.36.1-r15?arch=x86_64&upstream=busybox&distro=alpine-3.19.1"
            ]
        );
        let c = conda(br#"{"name":"numpy","version":"1.26.4","build":"py311h_0","channel":"https://conda.anaconda.org/conda-forge","subdir":"linux-64"}"#, "x").unwrap();
        assert_eq!(c.purl, "pkg:conda/numpy@1.26.4?build=py311h_0&channel=https:%2F%2Fconda.anaconda.org%2Fconda-forge&subdir=linux-64");
        assert!(
            npm(br#"{"name":"left-pad"}"#, "x").is_none(),
            "no version: not a package"
        );
    }

    #[test]
    fn python_names_are_normalised_in_purls_only() {
        let p = python(
            "Metadata-Version: 2.1\nName: Foo_Bar.baz\nVersion: 1.0\n\nName: no\n",
            "x",
        )
        .unwrap();
        assert_eq!(p.name, "Foo_Bar.baz");
        assert_eq!(p.purl, "pkg:pypi/foo-bar-baz@1.0");
    }
}
