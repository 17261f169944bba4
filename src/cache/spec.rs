//! `--cache-to` / `--cache-from` values: BuildKit's CSV syntax (`type=registry,ref=R,mode=max`) →
//! typed specs. The attribute names and meanings follow BuildKit's `cache/remotecache/` exporters and
//! importers and `docs/reference/buildctl.md`: `mode=min|max`, `ignore-error=true`, `image-manifest`,
//! `oci-mediatypes`, `compression`, `compression-level`, `registry.insecure`, local `dest`/`src`/`tag`/
//! `digest`. An attribute kiln does not know is an error, never silently dropped; kiln's own
//! `mounts=true` exports and seeds `RUN --mount=type=cache` contents.
//!
//! Must not: touch the filesystem or the network (paths and references are only parsed here).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::digest::Digest;
use crate::layer::Compression;
use crate::reference::Reference;

/// A cache flag that cannot be used, with the value and the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid cache {flag} {value:?}: {why}")]
pub struct SpecError {
    pub flag: &'static str,
    pub value: String,
    pub why: String,
}

/// Which steps an export covers (BuildKit's `mode`): `min` the steps whose layers are in the
/// image (the target stage and the stages it is built FROM), `max` every stage's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTarget {
    /// A cache manifest pushed to `reference` (a tag).
    Registry { reference: Reference },
    /// An OCI image layout directory holding the cache manifest under `tag`.
    Local { dest: PathBuf, tag: String },
    /// The cache config inside the pushed image's config.
    Inline,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    pub target: ExportTarget,
    pub mode: Mode,
    /// Compression of exported cache-mount blobs (layers are the image's own, never recompressed).
    pub compression: Option<Compression>,
    pub compression_level: Option<i32>,
    /// Export failures are warnings instead of failing the build.
    pub ignore_error: bool,
    /// Also export `RUN --mount=type=cache` contents (kiln's own attribute).
    pub mounts: bool,
    /// `registry.insecure=true`: plain HTTP / unverified TLS for the cache registry.
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    /// A cache manifest, or an image with an inline cache, at `reference`.
    Registry { reference: Reference },
    /// An OCI image layout directory written by `type=local,dest=`; `tag` (default `latest`) or
    /// `digest` picks the manifest.
    Local {
        src: PathBuf,
        tag: String,
        digest: Option<Digest>,
    },
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSpec {
    pub source: ImportSource,
    /// Seed empty cache mounts from the cache's mount blobs (default on; `mounts=false` skips).
    pub mounts: bool,
    pub insecure: bool,
}

impl fmt::Display for ImportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            ImportSource::Registry { reference } => write!(f, "type=registry,ref={reference}"),
            ImportSource::Local { src, tag, .. } => {
                write!(f, "type=local,src={},tag={tag}", src.display())
            }
        }
    }
}

impl fmt::Display for ExportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            ExportTarget::Registry { reference } => write!(f, "type=registry,ref={reference}"),
            ExportTarget::Local { dest, tag } => {
                write!(f, "type=local,dest={},tag={tag}", dest.display())
            }
            ExportTarget::Inline => f.write_str("type=inline"),
        }
    }
}

/// `k=v,k=v` → pairs, refusing repeated keys and fields that are not `key=value`.
fn fields<'a>(flag: &'static str, value: &'a str) -> Result<Vec<(&'a str, &'a str)>, SpecError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for field in value.split(',').filter(|f| !f.trim().is_empty()) {
        let (k, v) = field.split_once('=').ok_or_else(|| SpecError {
            flag,
            value: value.to_string(),
            why: format!("{field:?} is not key=value"),
        })?;
        let k = k.trim();
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(SpecError {
                flag,
                value: value.to_string(),
                why: format!("{k:?} is given twice"),
            });
        }
        out.push((k, v.trim()));
    }
    Ok(out)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{key}={v:?}: expected true or false")),
    }
}

fn parse_ref(v: &str) -> Result<Reference, String> {
    if v.is_empty() {
        return Err("ref= is empty".into());
    }
    v.parse::<Reference>()
        .map_err(|e| format!("ref={v:?}: {e}"))
}

impl FromStr for ExportSpec {
    type Err = SpecError;

    fn from_str(value: &str) -> Result<Self, SpecError> {
        let err = |why: String| SpecError {
            flag: "--cache-to",
            value: value.to_string(),
            why,
        };
        let pairs = fields("--cache-to", value)?;
        let get = |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let kind = get("type").ok_or_else(|| err("missing type=registry|local|inline".into()))?;
        let allowed: &[&str] = match kind {
            "registry" => &["ref"],
            "local" => &["dest", "tag"],
            "inline" => &[],
            other => {
                return Err(err(format!(
                    "unsupported type {other:?} (registry, local, inline)"
                )))
            }
        };
        const COMMON: &[&str] = &[
            "type",
            "mode",
            "ignore-error",
            "image-manifest",
            "oci-mediatypes",
            "compression",
            "compression-level",
            "force-compression",
            "mounts",
            "registry.insecure",
        ];
        if let Some((k, _)) = pairs
            .iter()
            .find(|(k, _)| !COMMON.contains(k) && !allowed.contains(k))
        {
            return Err(err(format!("unknown attribute {k:?} for type={kind}")));
        }
        let mut spec = ExportSpec {
            target: ExportTarget::Inline,
            mode: Mode::Min,
            compression: None,
            compression_level: None,
            ignore_error: false,
            mounts: false,
            insecure: false,
        };
        for (k, v) in &pairs {
            match *k {
                "mode" => {
                    spec.mode = match *v {
                        "min" => Mode::Min,
                        "max" => Mode::Max,
                        _ => return Err(err(format!("mode={v:?}: expected min or max"))),
                    }
                }
                "ignore-error" => spec.ignore_error = parse_bool(k, v).map_err(err)?,
                "mounts" => spec.mounts = parse_bool(k, v).map_err(err)?,
                "registry.insecure" => spec.insecure = parse_bool(k, v).map_err(err)?,
                // kiln always writes an OCI image manifest with OCI media types; the values are
                // checked so a typo is still an error.
                "image-manifest" | "oci-mediatypes" | "force-compression" => {
                    parse_bool(k, v).map_err(err)?;
                }
                "compression" => {
                    spec.compression = Some(
                        v.parse::<Compression>()
                            .map_err(|e| err(format!("compression={v:?}: {e}")))?,
                    )
                }
                "compression-level" => {
                    spec.compression_level = Some(
                        v.parse::<i32>()
                            .map_err(|_| err(format!("compression-level={v:?} is not a number")))?,
                    )
                }
                _ => {}
            }
        }
        spec.target = match kind {
            "registry" => ExportTarget::Registry {
                reference: parse_ref(get("ref").unwrap_or("")).map_err(err)?,
            },
            "local" => ExportTarget::Local {
                dest: PathBuf::from(
                    get("dest")
                        .filter(|d| !d.is_empty())
                        .ok_or_else(|| err("missing dest=DIR".into()))?,
                ),
                tag: get("tag").unwrap_or("latest").to_string(),
            },
            _ => {
                // BuildKit's inline exporter only knows mode=min: the image holds only its own layers.
                if spec.mode == Mode::Max {
                    return Err(err("type=inline supports mode=min only".into()));
                }
                if spec.mounts {
                    return Err(err(
                        "type=inline cannot carry cache mounts (mounts=true needs registry or local)"
                            .into(),
                    ));
                }
                ExportTarget::Inline
            }
        };
        Ok(spec)
    }
}

impl FromStr for ImportSpec {
    type Err = SpecError;

    /// `type=registry,ref=R`, `type=local,src=DIR[,tag=T|digest=D]`, or a bare reference (what
    /// `docker buildx --cache-from IMAGE` accepts).
    fn from_str(value: &str) -> Result<Self, SpecError> {
        let err = |why: String| SpecError {
            flag: "--cache-from",
            value: value.to_string(),
            why,
        };
        if !value.contains('=') {
            return Ok(ImportSpec {
                source: ImportSource::Registry {
                    reference: parse_ref(value.trim()).map_err(err)?,
                },
                mounts: true,
                insecure: false,
            });
        }
        let pairs = fields("--cache-from", value)?;
        let get = |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let kind = get("type").ok_or_else(|| err("missing type=registry|local".into()))?;
        let allowed: &[&str] =
            match kind {
                "registry" => &["ref"],
                "local" => &["src", "tag", "digest"],
                "inline" => return Err(err(
                    "type=inline is an export; import an inline cache with type=registry,ref=IMAGE"
                        .into(),
                )),
                other => return Err(err(format!("unsupported type {other:?} (registry, local)"))),
            };
        const COMMON: &[&str] = &["type", "mounts", "registry.insecure"];
        if let Some((k, _)) = pairs
            .iter()
            .find(|(k, _)| !COMMON.contains(k) && !allowed.contains(k))
        {
            return Err(err(format!("unknown attribute {k:?} for type={kind}")));
        }
        let mounts = match get("mounts") {
            Some(v) => parse_bool("mounts", v).map_err(err)?,
            None => true,
        };
        let insecure = match get("registry.insecure") {
            Some(v) => parse_bool("registry.insecure", v).map_err(err)?,
            None => false,
        };
        let source = match kind {
            "registry" => ImportSource::Registry {
                reference: parse_ref(get("ref").unwrap_or("")).map_err(err)?,
            },
            _ => ImportSource::Local {
                src: PathBuf::from(
                    get("src")
                        .filter(|d| !d.is_empty())
                        .ok_or_else(|| err("missing src=DIR".into()))?,
                ),
                tag: get("tag").unwrap_or("latest").to_string(),
                digest: match get("digest") {
                    Some(d) => Some(
                        d.parse::<Digest>()
                            .map_err(|e| err(format!("digest={d:?}: {e}")))?,
                    ),
                    None => None,
                },
            },
        };
        Ok(ImportSpec {
            source,
            mounts,
            insecure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_parse_like_buildkit() {
        let s: ExportSpec = "type=registry,ref=reg.example.com/team/cache:main,mode=max,ignore-error=true,image-manifest=true"
            .parse()
            .unwrap();
        assert_eq!(s.mode, Mode::Max);
        assert!(s.ignore_error && !s.mounts);
        assert!(matches!(s.target, ExportTarget::Registry { .. }));
        let l: ExportSpec = "type=local,dest=/tmp/c,mounts=true".parse().unwrap();
        assert_eq!(
            l.target,
            ExportTarget::Local {
                dest: "/tmp/c".into(),
                tag: "latest".into()
            }
        );
        assert!(l.mounts);
        assert_eq!(
            "type=inline".parse::<ExportSpec>().unwrap().target,
            ExportTarget::Inline
        );
        for (bad, why) in [
            (
                "type=registry,ref=r/x,colour=red",
                "unknown attribute \"colour\"",
            ),
            ("type=registry", "ref= is empty"),
            ("type=local", "missing dest"),
            ("type=inline,mode=max", "mode=min only"),
            ("type=registry,ref=r/x,mode=most", "expected min or max"),
            ("type=s3,bucket=b", "unsupported type \"s3\""),
            (
                "type=registry,ref=r/x,ignore-error=yes",
                "expected true or false",
            ),
            ("type=registry,ref=r/x,mode=min,mode=max", "given twice"),
            ("type=local,dest=d,ref=r/x", "unknown attribute \"ref\""),
        ] {
            let e = bad.parse::<ExportSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn imports_parse_like_buildkit() {
        let r: ImportSpec = "type=registry,ref=localhost:5000/c:1".parse().unwrap();
        assert!(r.mounts);
        let bare: ImportSpec = "localhost:5000/c:1".parse().unwrap();
        assert_eq!(r, bare);
        let l: ImportSpec = "type=local,src=/tmp/c,tag=v2,mounts=false".parse().unwrap();
        assert!(!l.mounts);
        assert!(matches!(l.source, ImportSource::Local { ref tag, .. } if tag == "v2"));
        for (bad, why) in [
            ("type=local", "missing src"),
            ("type=inline", "is an export"),
            (
                "type=registry,ref=r/x,mode=max",
                "unknown attribute \"mode\"",
            ),
            ("type=local,src=d,digest=nope", "digest="),
        ] {
            let e = bad.parse::<ImportSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
