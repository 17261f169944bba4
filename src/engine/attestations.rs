//! The built image's attestations (`--provenance`, `--sbom`, `--attest`) and the index that carries
//! them, in BuildKit's layout (`attest::layout`): the provenance from the plan and the request,
//! the SBOM from the target stage's committed snapshots (brought up to date first), plus the
//! extra SBOMs BuildKit's Dockerfile frontend asks for with `BUILDKIT_SBOM_SCAN_STAGE` (each other
//! built stage that enables it) and `BUILDKIT_SBOM_SCAN_CONTEXT` (the context, when the target
//! enables it; `dockerfile2llb/convert.go`, `isEnabledForStage`).
//!
//! Must not: change the image manifest (its digest is the same with or without attestations), or
//! name a secret's value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use super::stage::{Engine, Finished};
use super::{BuildError, Event};
use crate::attest::{self, layout, provenance, sbom, Statement};
use crate::image::Descriptor;
use crate::reference::Reference;

const SCAN_STAGE: &str = "BUILDKIT_SBOM_SCAN_STAGE";
const SCAN_CONTEXT: &str = "BUILDKIT_SBOM_SCAN_CONTEXT";

/// What the driver knows besides the engine: the Dockerfile as read, the global ARGs' values
/// (declared before the first FROM, build args applied), when the build started.
pub(super) struct Facts<'a> {
    pub dockerfile_text: &'a str,
    pub global_args: &'a BTreeMap<String, String>,
    pub started: i64,
}

fn err(e: attest::AttestError) -> BuildError {
    BuildError::Attest(Box::new(e))
}

/// The attestation manifest of one platform's image `manifest` (its descriptor carries the
/// platform), stored; None when the build asked for no attestation. Run while the platform's
/// engine still holds its stages: the SBOM reads the target stage's snapshots.
pub(super) fn attestation_for(
    engine: &Engine<'_>,
    facts: &Facts<'_>,
    manifest: &Descriptor,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Option<Descriptor>, BuildError> {
    let inputs = &engine.inputs;
    let (req, plan, store) = (inputs.req, inputs.plan, inputs.store);
    if req.attest.is_empty() {
        return Ok(None);
    }
    let target = engine
        .progress
        .finished(plan.target)
        .ok_or(BuildError::Cancelled)?;
    let platform = manifest
        .platform
        .clone()
        .unwrap_or_else(|| super::base::image_platform(&plan.target_platform));
    // The frontend's SBOMs first, then the provenance BuildKit's solver appends after them
    // (`solver/llbsolver/proc/provenance.go`).
    let mut statements = Vec::new();
    if let Some(s) = &req.attest.sbom {
        if let Some(g) = &s.generator {
            on_event(&Event::Warning {
                message: format!("--sbom generator={g}: kiln reads the image's package databases itself and runs no scanner image"),
            });
        }
        statements.extend(sboms(engine, facts, &target, manifest, s.format, on_event)?);
    }
    if let Some(p) = &req.attest.provenance {
        statements.push(provenance_statement(engine, facts, &platform, p));
        on_event(&Event::Exported {
            kind: "attestation".into(),
            dest: match p.mode {
                attest::ProvenanceMode::Min => "provenance: SLSA v1, mode=min".into(),
                attest::ProvenanceMode::Max => "provenance: SLSA v1, mode=max".into(),
            },
        });
    }
    if statements.is_empty() {
        return Ok(None);
    }
    let names: Vec<Reference> = req.tags.iter().filter_map(|t| t.parse().ok()).collect();
    let subjects = layout::subjects(&names, &platform, manifest);
    let mut bare = manifest.clone();
    bare.platform = None;
    let m = layout::attestation_manifest(store, &bare, &subjects, &statements).map_err(err)?;
    Ok(Some(m))
}

/// The index the tags name, stored: every platform's image manifest (with its platform and the
/// `manifest-descriptor` annotations), then their attestation manifests, as BuildKit's image
/// exporter lists them; `index` and `index-descriptor` annotations on the index and its
/// descriptor.
pub(super) fn index_of(
    store: &crate::store::Store,
    req: &super::BuildRequest,
    images: &[Descriptor],
    attestations: Vec<Descriptor>,
) -> Result<Descriptor, BuildError> {
    let mut listed = Vec::with_capacity(images.len());
    for m in images {
        let mut m = m.clone();
        m.annotations = match &m.platform {
            Some(p) => platform_annotations(req, p)?.manifest_descriptor,
            None => req.annotations.manifest_descriptor.clone(),
        };
        listed.push(m);
    }
    let images = listed;
    let mut index =
        layout::image_index(store, &images, attestations, &req.annotations.index).map_err(err)?;
    index.annotations = req.annotations.index_descriptor.clone();
    Ok(index)
}

/// The `--annotation` values that apply to an image of `platform`.
pub(super) fn platform_annotations(
    req: &super::BuildRequest,
    platform: &crate::image::Platform,
) -> Result<crate::attest::Annotations, BuildError> {
    req.annotations
        .for_platform(platform)
        .map_err(|e| BuildError::Attest(Box::new(e)))
}

fn provenance_statement(
    engine: &Engine<'_>,
    facts: &Facts<'_>,
    platform: &crate::image::Platform,
    opts: &attest::ProvenanceOptions,
) -> Statement {
    let inputs = &engine.inputs;
    let req = inputs.req;
    // The digest BuildKit pins a base to: what the reference resolves to (an index when the tag
    // names one), the platform manifest when that is all the store knows. Bases were resolved
    // while planning; `resolve` reads the memo.
    let bases: BTreeMap<String, crate::digest::Digest> = provenance::image_references(inputs.plan)
        .into_iter()
        .filter_map(|r| {
            let parsed: Reference = r.parse().ok()?;
            let root = match &parsed.digest {
                Some(d) => Some(d.clone()),
                None => inputs
                    .store
                    .resolve(&parsed.store_name())
                    .ok()
                    .flatten()
                    .map(|d| d.digest),
            };
            let d = match root {
                Some(d) => d,
                None => inputs.bases.resolve(&r).ok()?.manifest_desc.digest,
            };
            Some((r, d))
        })
        .collect();
    let name = std::path::Path::new(inputs.file_name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let now = now_unix();
    let bf = provenance::BuildFacts {
        plan: inputs.plan,
        dockerfile_name: &name,
        dockerfile: facts.dockerfile_text.as_bytes(),
        build_args: &req.build_args,
        labels: &req.labels,
        target: req.target.as_deref(),
        secret_ids: req.secrets.iter().map(|s| s.id.clone()).collect(),
        bases: &bases,
        platform,
        started: facts.started,
        finished: now,
        invocation_id: invocation_id(facts.started),
    };
    Statement {
        predicate_type: provenance::PREDICATE_SLSA1.into(),
        predicate: provenance::predicate(&bf, opts),
    }
}

/// The core SBOM, then the stages and the context that ask to be scanned.
fn sboms(
    engine: &Engine<'_>,
    facts: &Facts<'_>,
    target: &Finished,
    manifest: &Descriptor,
    format: attest::SbomFormat,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Vec<Statement>, BuildError> {
    let inputs = &engine.inputs;
    let plan = inputs.plan;
    let mut scans: Vec<(String, Vec<PathBuf>)> = vec![("sbom".into(), layers_of(engine, target)?)];
    for &i in &plan.order {
        if i == plan.target || !enabled(engine, facts, i, SCAN_STAGE) {
            continue;
        }
        if let Some(f) = engine.progress.finished(i) {
            let name = plan.stages[i].name.clone().unwrap_or_else(|| i.to_string());
            scans.push((format!("sbom-{name}"), layers_of(engine, &f)?));
        }
    }
    if enabled(engine, facts, plan.target, SCAN_CONTEXT) {
        scans.push(("sbom-context".into(), vec![inputs.req.context.clone()]));
    }
    // In the order BuildKit unbundles the scanner's output directory: by file name
    // (`sbom-NAME.spdx.json` before `sbom.spdx.json`).
    scans.sort_by_key(|(name, _)| format!("{name}.spdx.json"));
    let names: Vec<String> = inputs.req.tags.clone();
    let created = inputs.sde.unwrap_or(facts.started);
    let mut out = Vec::new();
    for (name, layers) in scans {
        let t = Instant::now();
        let scan = sbom::scan(&layers, &name).map_err(err)?;
        let subject = sbom::Subject {
            name: &name,
            image_names: &names,
            digest: &manifest.digest,
            created,
        };
        let (predicate_type, predicate) = sbom::document(&scan, format, &subject);
        on_event(&Event::Exported {
            kind: "attestation".into(),
            dest: format!(
                "{name}: {} package(s), {} entries scanned in {} ms",
                scan.packages.len(),
                scan.entries,
                t.elapsed().as_millis()
            ),
        });
        out.push(Statement {
            predicate_type,
            predicate,
        });
    }
    Ok(out)
}

/// A finished stage's committed snapshots (top-most first), its layers fetched from a shared
/// cache and unpacked first when a build skipped that.
fn layers_of(engine: &Engine<'_>, f: &Finished) -> Result<Vec<PathBuf>, BuildError> {
    let inputs = &engine.inputs;
    let mut st = crate::sync::lock(&f.state);
    for b in inputs.remote.missing(inputs.store, &st.layers) {
        inputs.remote.ensure_local(inputs.store, &b.digest)?;
    }
    engine.materialize(&mut st)?;
    Ok(st.snapshots.iter().rev().map(|c| c.dir.clone()).collect())
}

/// BuildKit's `isEnabledForStage` over the stage's own ARG value, else the global ARG's.
fn enabled(engine: &Engine<'_>, facts: &Facts<'_>, stage: usize, arg: &str) -> bool {
    let st = &engine.inputs.plan.stages[stage];
    let value = st
        .steps
        .iter()
        .rev()
        .find_map(|s| s.args.get(arg))
        .or_else(|| facts.global_args.get(arg));
    let Some(v) = value else { return false };
    match v.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
        "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
        list => st
            .name
            .as_deref()
            .is_some_and(|n| list.split(',').any(|s| s == n)),
    }
}

/// A 25-character id like BuildKit's `identity.NewID`, from the start time and this process.
fn invocation_id(started: i64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let d =
        crate::digest::Digest::of(format!("{started}:{nanos}:{}", std::process::id()).as_bytes());
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    d.hex()
        .as_bytes()
        .chunks(2)
        .take(25)
        .map(|c| {
            ALPHABET[(u8::from_str_radix(std::str::from_utf8(c).unwrap_or("0"), 16).unwrap_or(0)
                % 36) as usize] as char
        })
        .collect()
}

pub(super) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
