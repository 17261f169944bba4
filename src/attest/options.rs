//! The attestation and annotation flags as buildx spells them, typed once: `--provenance V` and
//! `--sbom V` are buildx's shorthands for `--attest type=provenance,V` / `--attest type=sbom,V`
//! (buildx `util/buildflags.CanonicalizeAttest`: a boolean becomes `disabled=!V`), appended after
//! the `--attest` values; the last value for a type wins (`removeAttestDupes`). `--annotation [TYPE[,TYPE…]:]KEY=VALUE` follows buildx's
//! `buildflags.ParseAnnotations` (types `manifest` — the default —, `index`, `manifest-descriptor`,
//! `index-descriptor`, each with an optional `[os/arch]`).
//!
//! Must not: read files or the environment.

use std::collections::BTreeMap;

use super::{bad, AttestError};
use crate::image::Platform;

/// BuildKit's provenance modes (`solver/llbsolver/provenance.go`); BuildKit's default is `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenanceMode {
    /// Request without build args, labels, secrets or ssh ids; no build steps.
    Min,
    /// Everything, with the build steps (`buildConfig.llbDefinition`) and the Dockerfile.
    Max,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceOptions {
    pub mode: ProvenanceMode,
    /// `runDetails.builder.id` (BuildKit's `builder-id` parameter; empty by default).
    pub builder_id: String,
}

/// The document an SBOM attestation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON, predicate `https://spdx.dev/Document` (what BuildKit's Syft scanner writes).
    Spdx,
    /// CycloneDX 1.5 JSON, predicate `https://cyclonedx.org/bom` (buildah's other format).
    CycloneDx,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomOptions {
    pub format: SbomFormat,
    /// `generator=IMAGE` as given: kiln scans natively and runs no scanner image, which the engine
    /// says in a warning.
    pub generator: Option<String>,
}

/// Which attestations a build attaches. Default: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestOptions {
    pub provenance: Option<ProvenanceOptions>,
    pub sbom: Option<SbomOptions>,
}

impl AttestOptions {
    /// `--attest` values, then the `--provenance` and `--sbom` shorthands (buildx's order), later
    /// ones winning.
    pub fn parse(
        provenance: Option<&str>,
        sbom: Option<&str>,
        attest: &[String],
    ) -> Result<AttestOptions, AttestError> {
        let mut out = AttestOptions::default();
        for a in attest {
            let mut kind = None;
            let mut rest = Vec::new();
            for field in a.split(',') {
                match field.split_once('=') {
                    Some(("type", t)) => kind = Some(t),
                    _ => rest.push(field),
                }
            }
            match kind {
                Some(t @ ("provenance" | "sbom")) => out.apply(t, &rest.join(","), "--attest")?,
                Some(t) => {
                    return Err(bad(
                        "--attest",
                        a,
                        format!("unknown type {t:?} (provenance, sbom)"),
                    ))
                }
                None => return Err(bad("--attest", a, "missing type=provenance|sbom")),
            }
        }
        if let Some(v) = provenance {
            out.apply("provenance", v, "--provenance")?;
        }
        if let Some(v) = sbom {
            out.apply("sbom", v, "--sbom")?;
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.provenance.is_none() && self.sbom.is_none()
    }

    fn apply(&mut self, kind: &str, value: &str, flag: &'static str) -> Result<(), AttestError> {
        let mut fields: Vec<(&str, &str)> = Vec::new();
        match parse_bool(value.trim()) {
            Some(on) => fields.push(("disabled", if on { "false" } else { "true" })),
            None => {
                for f in value.split(',').filter(|f| !f.is_empty()) {
                    let kv = f
                        .split_once('=')
                        .ok_or_else(|| bad(flag, value, format!("{f:?} is not key=value")))?;
                    fields.push(kv);
                }
            }
        }
        let disabled = fields
            .iter()
            .find(|(k, _)| *k == "disabled")
            .map(|(_, v)| {
                parse_bool(v).ok_or_else(|| bad(flag, value, "disabled= takes a boolean"))
            })
            .transpose()?
            .unwrap_or(false);
        let others = fields.iter().filter(|(k, _)| *k != "disabled");
        if kind == "provenance" {
            let mut p = ProvenanceOptions {
                mode: ProvenanceMode::Max,
                builder_id: String::new(),
            };
            for (k, v) in others {
                match *k {
                    "mode" => {
                        p.mode = match *v {
                            "min" => ProvenanceMode::Min,
                            "max" => ProvenanceMode::Max,
                            _ => return Err(bad(flag, value, format!("mode {v:?} (min, max)"))),
                        }
                    }
                    "builder-id" => p.builder_id = v.to_string(),
                    "version" if *v == "v1" => {}
                    "version" => {
                        return Err(bad(
                            flag,
                            value,
                            "kiln writes SLSA provenance v1 only (version=v1)",
                        ))
                    }
                    // buildx's default provenance asks for these; they change nothing here.
                    "inline-only" | "reproducible" => {}
                    _ => {
                        return Err(bad(
                            flag,
                            value,
                            format!("unknown key {k:?} (mode, builder-id, version, disabled)"),
                        ))
                    }
                }
            }
            self.provenance = (!disabled).then_some(p);
        } else {
            let mut s = SbomOptions {
                format: SbomFormat::Spdx,
                generator: None,
            };
            for (k, v) in others {
                match *k {
                    "format" => {
                        s.format = match *v {
                            "spdx" | "spdx-json" => SbomFormat::Spdx,
                            "cyclonedx" | "cyclonedx-json" => SbomFormat::CycloneDx,
                            _ => {
                                return Err(bad(
                                    flag,
                                    value,
                                    format!("format {v:?} (spdx, cyclonedx)"),
                                ))
                            }
                        }
                    }
                    "generator" => s.generator = Some(v.to_string()),
                    _ => {
                        return Err(bad(
                            flag,
                            value,
                            format!("unknown key {k:?} (format, generator, disabled)"),
                        ))
                    }
                }
            }
            self.sbom = (!disabled).then_some(s);
        }
        Ok(())
    }
}

/// Go's `strconv.ParseBool`, which buildx uses for these values.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `--annotation` values for this build's platform, by where they go (BuildKit's
/// `exporter/containerimage/annotations.go`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    pub index: BTreeMap<String, String>,
    pub index_descriptor: BTreeMap<String, String>,
    pub manifest: BTreeMap<String, String>,
    pub manifest_descriptor: BTreeMap<String, String>,
    /// The values as given (already checked), for another platform of the build.
    values: Vec<String>,
}

impl Annotations {
    /// Values for `platform`: those without a platform and those naming it.
    pub fn parse(values: &[String], platform: &Platform) -> Result<Annotations, AttestError> {
        let mut out = Annotations::default();
        for v in values.iter().filter(|v| !v.is_empty()) {
            let (k, val) = v
                .split_once('=')
                .ok_or_else(|| bad("--annotation", v, "expected key=value"))?;
            let (types, key) = match k.split_once(':') {
                Some((t, key)) => (t, key),
                None => ("", k),
            };
            if key.is_empty() {
                return Err(bad("--annotation", v, "empty key"));
            }
            for tp in types.split(',') {
                let (typ, plat) = match tp.split_once('[') {
                    Some((t, p)) => match p.strip_suffix(']') {
                        Some(p) if !p.is_empty() => (t, Some(p)),
                        _ => return Err(bad("--annotation", v, format!("invalid annotation type {tp:?}, expected type and optional platform in square brackets"))),
                    },
                    None => (tp, None),
                };
                if plat.is_some_and(|p| !platform_matches(p, platform)) {
                    continue;
                }
                let map = match typ {
                    "" | "manifest" => &mut out.manifest,
                    "manifest-descriptor" => &mut out.manifest_descriptor,
                    "index" => &mut out.index,
                    "index-descriptor" => &mut out.index_descriptor,
                    other => return Err(bad("--annotation", v, format!("unknown annotation type {other:?} (manifest, index, manifest-descriptor, index-descriptor)"))),
                };
                map.insert(key.to_string(), val.to_string());
            }
        }
        out.values = values.to_vec();
        Ok(out)
    }

    /// The values for another platform of the build (`manifest[linux/arm64]:K=V` goes only to
    /// that platform's manifest, as BuildKit's exporter applies them per platform).
    pub fn for_platform(&self, platform: &Platform) -> Result<Annotations, AttestError> {
        Annotations::parse(&self.values, platform)
    }

    /// Whether any value needs an image index to go on.
    pub fn wants_index(&self) -> bool {
        !self.index.is_empty()
    }
}

fn platform_matches(text: &str, platform: &Platform) -> bool {
    let mut parts = text.split('/');
    let os = parts.next().unwrap_or("");
    let arch = parts.next().unwrap_or("");
    let want = Platform::new(os, arch, parts.next());
    platform.satisfies(&want) && want.satisfies(platform)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_buildx_canonicalises_them() {
        let a = AttestOptions::parse(Some("mode=min"), Some("true"), &[]).unwrap();
        assert_eq!(a.provenance.unwrap().mode, ProvenanceMode::Min);
        assert_eq!(a.sbom.unwrap().format, SbomFormat::Spdx);
        let a = AttestOptions::parse(Some("true"), None, &["type=sbom,format=cyclonedx".into()])
            .unwrap();
        assert_eq!(a.provenance.unwrap().mode, ProvenanceMode::Max);
        assert_eq!(a.sbom.unwrap().format, SbomFormat::CycloneDx);
        let a = AttestOptions::parse(Some("false"), Some("false"), &[]).unwrap();
        assert!(a.is_empty());
        let a = AttestOptions::parse(None, None, &["type=provenance,disabled=true".into()]);
        assert!(a.unwrap().is_empty());
        // The shorthand comes after --attest, so it wins.
        let a = AttestOptions::parse(Some("false"), None, &["type=provenance,mode=max".into()]);
        assert!(a.unwrap().is_empty());
        let e = AttestOptions::parse(Some("mode=all"), None, &[]).unwrap_err();
        assert!(e.to_string().contains("mode \"all\""), "{e}");
        let e = AttestOptions::parse(None, None, &["type=vuln".into()]).unwrap_err();
        assert!(e.to_string().contains("unknown type"), "{e}");
    }

    #[test]
    fn annotations_go_where_their_type_says() {
        let host = Platform::new("linux", "amd64", None);
        let a = Annotations::parse(
            &[
                "a=1".into(),
                "index,manifest:b=2".into(),
                "manifest-descriptor:c=3".into(),
                "manifest[linux/arm64]:d=4".into(),
                "manifest[linux/amd64]:e=5".into(),
            ],
            &host,
        )
        .unwrap();
        assert_eq!(a.manifest.keys().collect::<Vec<_>>(), ["a", "b", "e"]);
        assert_eq!(a.index.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(a.manifest_descriptor.keys().collect::<Vec<_>>(), ["c"]);
        let e = Annotations::parse(&["bogus:x=1".into()], &host).unwrap_err();
        assert!(e.to_string().contains("unknown annotation type"), "{e}");
    }
}
