//! The one build-spec resolver (ripgrep's low/high split). Flags (`kiln build`), the API's JSON
//! (`POST /v1/builds`) and kiln.toml each produce a [`BuildSpec`] whose fields say "not given" with
//! `None`; [`resolve`] layers the request over kiln.toml's spec and fills in kiln's defaults, so the
//! embedded engine and the daemon build the same image from the same inputs. The daemon first
//! checks and rewrites paths under its context roots (and writes inline secrets to private files);
//! that is its business, not this module's. It sits above the engine and below the daemon and the
//! CLI: the wire types (`api`) stay a leaf that never names the engine.
//!
//! Precedence, most specific first: the request (a flag typed on the command line, even with the
//! default value, or a JSON field) → kiln.toml (`[build]`, `[worker.oci]`) → kiln's defaults.
//!
//! Must not: touch the filesystem (paths are taken as given), read the environment, or hold a
//! credential anywhere but the returned request.

pub mod flags;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::{BuildSpec, Memory};
use crate::config::Config;
use crate::engine::{BuildRequest, Output, RegistryAccess, SecretSource};
use crate::exec::{Network, Rung};
use crate::layer::Compression;
use crate::reference::Reference;
use crate::registry::Credentials;
use crate::snapshot::SnapshotterKind;

/// A spec field that cannot be used, named as the API spells it.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The smallest memory limit a RUN step may be given (the kernel refuses much less).
const MIN_MEMORY: u64 = 4 << 20;

impl BuildSpec {
    /// kiln.toml's build settings as a spec: the layer under every request.
    pub fn from_config(cfg: &Config) -> BuildSpec {
        BuildSpec {
            compression: cfg.build.compression.clone(),
            compression_level: cfg.build.compression_level,
            source_date_epoch: cfg.build.source_date_epoch,
            sandbox: cfg.worker.sandbox.clone(),
            snapshotter: cfg.worker.snapshotter.clone(),
            provenance: cfg.build.provenance.clone(),
            sbom: cfg.build.sbom.clone(),
            ..BuildSpec::default()
        }
    }

    /// This spec with every field it does not give taken from `lower`.
    pub fn over(&self, lower: &BuildSpec) -> BuildSpec {
        let mut s = self.clone();
        let pick = |a: &mut Option<String>, b: &Option<String>| {
            if a.is_none() {
                a.clone_from(b);
            }
        };
        pick(&mut s.compression, &lower.compression);
        pick(&mut s.sandbox, &lower.sandbox);
        pick(&mut s.snapshotter, &lower.snapshotter);
        pick(&mut s.network, &lower.network);
        // kiln.toml's attestation setting yields to a request that names the type either way.
        let attests = |t: &str| {
            let want = format!("type={t}");
            s.attest.iter().any(|a| a.split(',').any(|f| f == want))
        };
        if !attests("provenance") {
            pick(&mut s.provenance, &lower.provenance);
        }
        if !attests("sbom") {
            pick(&mut s.sbom, &lower.sbom);
        }
        s.compression_level = s.compression_level.or(lower.compression_level);
        s.source_date_epoch = s.source_date_epoch.or(lower.source_date_epoch);
        s.step_timeout = s.step_timeout.or(lower.step_timeout);
        s
    }
}

/// `spec` over kiln.toml over kiln's defaults → the engine's request. Paths (context, Dockerfile,
/// output destinations, secret sources) are used as given.
pub fn resolve(spec: &BuildSpec, cfg: &Config) -> Result<BuildRequest, SpecError> {
    let s = spec.over(&BuildSpec::from_config(cfg));
    let context = s
        .context
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            bad(
                "context",
                "missing: give a context directory (or send the context as a tar)",
            )
        })?;
    let mut req = BuildRequest::new(context);
    if let Some(p) = &s.packages {
        req.dockerfile_text = Some(package_dockerfile(&s, p)?);
    }
    match (&s.dockerfile_text, &s.dockerfile) {
        _ if s.packages.is_some() => {}
        (Some(t), _) if t.trim().is_empty() => return Err(bad("dockerfile_text", "is empty")),
        (Some(t), _) => req.dockerfile_text = Some(t.clone()),
        (None, Some(f)) => req.dockerfile = Some(req.context.join(f)),
        (None, None) => {}
    }
    req.tags = s.all_tags();
    for t in &req.tags {
        t.parse::<Reference>()
            .map_err(|e| bad("tags", format!("invalid tag {t:?}: {e}")))?;
    }
    if s.push && req.tags.is_empty() {
        return Err(bad(
            "push",
            "needs at least one tag (tags, or name and tag)",
        ));
    }
    req.build_args = checked_map("build_args", &s.build_args)?;
    req.labels = checked_map("labels", &s.labels)?;
    req.target = s.target.clone();
    req.platforms =
        crate::plan::platform::parse_list(&s.platforms).map_err(|e| bad("platforms", e))?;
    req.outputs = s
        .outputs
        .iter()
        .map(|o| {
            o.parse::<Output>()
                .map_err(|e| bad("outputs", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    req.compression = match &s.compression {
        Some(c) => c
            .parse::<Compression>()
            .map_err(|e| bad("compression", format!("{c:?}: {e}")))?,
        None => Compression::Gzip,
    };
    req.compression_level = s.compression_level;
    req.source_date_epoch = s.source_date_epoch;
    if let Some(n) = cfg.worker.max_parallelism {
        req.threads = n.max(1);
    }
    resolve_sandbox(&s, &mut req)?;
    req.sandbox.ca_injection = cfg.worker.ca_injection;
    req.sandbox.emulation = crate::exec::Emulation {
        binfmt: cfg.worker.binfmt.unwrap_or(true),
        emulators: cfg.worker.emulators.clone(),
    };
    req.secrets = resolve_secrets(&s)?;
    req.push = s.push;
    req.no_cache = s.no_cache;
    req.pull = !s.no_pull;
    req.registry = resolve_registry(&s, cfg, &req.tags)?;
    resolve_cache(&s, &mut req)?;
    flags::resolve_ci_flags(&s, &mut req)?;
    resolve_attest(&s, &mut req)?;
    Ok(req)
}

/// Attestations, annotations (for the host platform: kiln builds for it) and metadata files.
fn resolve_attest(s: &BuildSpec, req: &mut BuildRequest) -> Result<(), SpecError> {
    req.attest =
        crate::attest::AttestOptions::parse(s.provenance.as_deref(), s.sbom.as_deref(), &s.attest)
            .map_err(|e| bad("attest", e.to_string()))?;
    req.annotations =
        crate::attest::Annotations::parse(&s.annotations, &crate::image::Platform::host())
            .map_err(|e| bad("annotations", e.to_string()))?;
    let path = |p: &Option<String>| p.as_ref().filter(|p| !p.is_empty()).map(PathBuf::from);
    req.metadata_files = crate::attest::MetadataFiles {
        iidfile: path(&s.iidfile),
        metadata_file: path(&s.metadata_file),
        digest_file: path(&s.digest_file),
        image_name_with_digest_file: path(&s.image_name_with_digest_file),
    };
    Ok(())
}

/// `cache_from` / `cache_to` (BuildKit's CSV values) → typed specs; `registry.insecure=true` adds
/// the cache's registry to this build's insecure hosts.
fn resolve_cache(s: &BuildSpec, req: &mut BuildRequest) -> Result<(), SpecError> {
    use crate::cache::spec::{ExportSpec, ExportTarget, ImportSource, ImportSpec};
    for v in &s.cache_from {
        let spec: ImportSpec = v.parse().map_err(|e| bad("cache_from", format!("{e}")))?;
        if let (true, ImportSource::Registry { reference }) = (spec.insecure, &spec.source) {
            req.registry.insecure.push(reference.domain.clone());
        }
        req.cache_from.push(spec);
    }
    for v in &s.cache_to {
        let spec: ExportSpec = v.parse().map_err(|e| bad("cache_to", format!("{e}")))?;
        if let (true, ExportTarget::Registry { reference }) = (spec.insecure, &spec.target) {
            req.registry.insecure.push(reference.domain.clone());
        }
        req.cache_to.push(spec);
    }
    Ok(())
}

/// A package build's generated Dockerfile (the daemon builds the GPU image of a `universal`
/// entry from a copy of the spec whose `base` is the GPU base).
fn package_dockerfile(
    s: &BuildSpec,
    p: &crate::packages::PackageSpec,
) -> Result<String, SpecError> {
    if s.dockerfile.is_some() || s.dockerfile_text.is_some() {
        return Err(bad(
            "packages",
            "give either packages or a Dockerfile (dockerfile, dockerfile_text), not both",
        ));
    }
    // A `gpu` catalog image is built on the GPU base.
    let base = match &s.catalog {
        Some(c) if c.image_type == crate::api::ImageType::Gpu => p.gpu_base(),
        _ => &p.base,
    };
    p.dockerfile(base)
        .map_err(|e| bad("packages", e.to_string()))
}

fn checked_map(
    field: &str,
    map: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SpecError> {
    if let Some(k) = map.keys().find(|k| k.is_empty() || k.contains('=')) {
        return Err(bad(
            field,
            format!("key {k:?}: keys must be non-empty and contain no '='"),
        ));
    }
    Ok(map.clone())
}

/// Rung, snapshotter, network, step timeout and per-step limits.
fn resolve_sandbox(s: &BuildSpec, req: &mut BuildRequest) -> Result<(), SpecError> {
    if let Some(r) = &s.sandbox {
        req.sandbox.rung = Some(r.parse::<Rung>().map_err(|e| bad("sandbox", e))?);
    }
    if let Some(k) = &s.snapshotter {
        req.sandbox.snapshotter = k
            .parse::<SnapshotterKind>()
            .map_err(|e| bad("snapshotter", e))?;
    }
    req.sandbox.network = match s.network.as_deref() {
        None | Some("default") | Some("host") => Network::Host,
        Some("none") => Network::None,
        Some(o) => return Err(bad("network", format!("{o:?} (default, host, none)"))),
    };
    req.sandbox.step_timeout = s.step_timeout.map(Duration::from_secs);
    if let Some(c) = s.resources.cpus {
        if !(c > 0.0 && c.is_finite()) {
            return Err(bad("resources.cpus", format!("must be > 0, got {c}")));
        }
        req.sandbox.resources.cpus = Some(c);
    }
    if let Some(m) = &s.resources.memory {
        let bytes = match m {
            Memory::Bytes(b) => *b,
            Memory::Text(t) => {
                crate::config::parse_size(t).map_err(|e| bad("resources.memory", e.to_string()))?
            }
        };
        if bytes < MIN_MEMORY {
            return Err(bad(
                "resources.memory",
                format!("{bytes} bytes is below the 4 MiB minimum"),
            ));
        }
        req.sandbox.resources.memory = Some(bytes);
    }
    Ok(())
}

/// Secrets by file or environment variable. Inline values are the daemon's to write to a file
/// first; one reaching here is refused rather than silently dropped.
fn resolve_secrets(s: &BuildSpec) -> Result<Vec<SecretSource>, SpecError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for sec in &s.secrets {
        if sec.id.is_empty() || !seen.insert(sec.id.clone()) {
            return Err(bad(
                "secrets",
                format!("secret id {:?} is empty or repeated", sec.id),
            ));
        }
        let (src, env) = match (&sec.value, &sec.src, &sec.env) {
            (None, Some(p), None) => (Some(PathBuf::from(p)), None),
            (None, None, Some(v)) => (None, Some(v.clone())),
            _ => {
                return Err(bad(
                    "secrets",
                    format!("secret {:?}: give exactly one of value, src or env", sec.id),
                ))
            }
        };
        out.push(SecretSource {
            id: sec.id.clone(),
            src,
            env,
        });
    }
    Ok(out)
}

/// Credentials, and the insecure hosts of this build (its list, plus its tags' registries when
/// `insecure_registry` is set).
fn resolve_registry(
    s: &BuildSpec,
    cfg: &Config,
    tags: &[String],
) -> Result<RegistryAccess, SpecError> {
    let mut credentials = Credentials::new();
    for c in &s.registry_credentials {
        credentials
            .add_spec(&c.host, &c.user, &c.password)
            .map_err(|e| bad("registry_credentials", e.to_string()))?;
    }
    let mut insecure = Vec::new();
    for h in &s.insecure_registries.0 {
        crate::reference::check_host(h).map_err(|e| bad("insecure_registries", e.to_string()))?;
        insecure.push(h.clone());
    }
    if s.insecure_registry {
        for t in tags {
            if let Ok(r) = t.parse::<Reference>() {
                insecure.push(r.domain.clone());
            }
        }
    }
    Ok(RegistryAccess {
        config: cfg.clone(),
        credentials,
        insecure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::ProvenanceMode;

    #[test]
    fn the_resolver_generates_the_dockerfile_of_a_package_build() {
        use crate::api::{BuildSpec, CatalogSpec, ImageType, PackageSpec};
        let cfg = crate::config::Config::default();
        let mut spec = BuildSpec {
            context: Some("/tmp".into()),
            packages: Some(PackageSpec {
                base: "debian:bookworm".into(),
                gpu_base: Some("nvidia/cuda:12.4.1-base-ubuntu22.04".into()),
                apt: vec!["jq".into()],
                ..PackageSpec::default()
            }),
            ..BuildSpec::default()
        };
        let text = resolve(&spec, &cfg).unwrap().dockerfile_text.unwrap();
        assert!(text.contains("FROM debian:bookworm\n"), "{text}");
        spec.catalog = Some(CatalogSpec {
            display_name: "g".into(),
            image_type: ImageType::Gpu,
            ..CatalogSpec::default()
        });
        let text = resolve(&spec, &cfg).unwrap().dockerfile_text.unwrap();
        assert!(
            text.contains("FROM nvidia/cuda:12.4.1-base-ubuntu22.04\n"),
            "{text}"
        );
        spec.dockerfile = Some("Dockerfile".into());
        assert!(resolve(&spec, &cfg)
            .unwrap_err()
            .to_string()
            .contains("not both"));
        spec.dockerfile = None;
        spec.packages.as_mut().unwrap().apt = vec!["jq".into(), "x y".into()];
        let e = resolve(&spec, &cfg).unwrap_err().to_string();
        assert!(e.contains("packages.apt line 2 \"x y\""), "{e}");
    }

    #[test]
    fn kiln_toml_attests_unless_the_request_names_the_type() {
        let cfg =
            Config::from_toml_str("[build]\nprovenance = \"mode=min\"\nsbom = true\n", "test")
                .unwrap();
        let spec = BuildSpec {
            context: Some("/build/app".into()),
            ..BuildSpec::default()
        };
        let req = resolve(&spec, &cfg).unwrap();
        assert_eq!(req.attest.provenance.unwrap().mode, ProvenanceMode::Min);
        assert!(req.attest.sbom.is_some());
        let spec = BuildSpec {
            attest: vec![
                "type=provenance,mode=max".into(),
                "type=sbom,disabled=true".into(),
            ],
            ..spec
        };
        let req = resolve(&spec, &cfg).unwrap();
        assert_eq!(req.attest.provenance.unwrap().mode, ProvenanceMode::Max);
        assert!(req.attest.sbom.is_none());
    }
}
