//! The local-store subcommands, one `cmd_*` each: `kiln images`, `export`, `import`, `rmi`,
//! `prune`, `fsck`, `info`. Each takes the opened store (or the root) and prints its result.
//!
//! Must not: touch the store's files itself — every change goes through `store`'s verified calls.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::out::{self, errln, outln};
use crate::engine::Output;
use crate::exec;
use crate::reference::Reference;
use crate::store::{self, Store};

/// A user's image name → the store's key: references are normalised (`app` →
/// `docker.io/library/app:latest`), digests are kept.
pub(super) fn store_key(image: &str) -> String {
    if image.starts_with("sha256:") {
        return image.to_string();
    }
    image
        .parse::<Reference>()
        .map(|r| r.store_name())
        .unwrap_or_else(|_| image.to_string())
}

pub(super) fn cmd_images(store: &Store) -> Result<i32> {
    let mut out = out::stdout();
    writeln!(out, "{:<50} {:<20} {:>10}", "IMAGE", "DIGEST", "SIZE")?;
    for (name, desc) in store.tags()? {
        let size = store
            .image(&name)
            .map(|i| i.manifest.layers.iter().map(|l| l.size).sum::<u64>() + i.manifest.config.size)
            .unwrap_or(0);
        writeln!(out, "{:<50} {:<20} {:>10}", name, desc.digest.short(), size)?;
    }
    Ok(0)
}

pub(super) fn cmd_export(store: &Store, image: &str, outputs: &[String]) -> Result<i32> {
    let key = store_key(image);
    let img = store
        .image(&key)
        .with_context(|| format!("finding {image} in the local store"))?;
    for o in outputs {
        match o.parse::<Output>()? {
            Output::Oci { dest } => {
                let name = key
                    .parse::<Reference>()
                    .map(|r| r.tag_or_latest().to_string())
                    .unwrap_or_else(|_| "latest".into());
                store::write_oci_layout(store, &[(name, img.manifest_desc.clone())], &dest)?;
                errln!("exported oci: {}", dest.display());
            }
            Output::Docker { dest } => {
                let name = key
                    .parse::<Reference>()
                    .map(|r| r.familiar())
                    .unwrap_or_default();
                store::write_docker_archive(store, &[(name, img.manifest_desc.clone())], &dest)?;
                errln!("exported docker: {}", dest.display());
            }
        }
    }
    Ok(0)
}

/// `DIR[:TAG]`: the layout's image with ref name TAG (or its only one), tagged `--tag` or TAG.
pub(super) fn cmd_import(store: &Store, layout: &str, tag: Option<String>) -> Result<i32> {
    let (dir, ref_name) = match layout.rfind(':') {
        Some(i) if !layout[i..].contains('/') => {
            (layout[..i].to_string(), Some(layout[i + 1..].to_string()))
        }
        _ => (layout.to_string(), None),
    };
    // Imported blobs are unreferenced until the tag: a concurrent GC must leave them (lease.rs).
    let _lease = store.lease("import")?;
    let desc = store::import_oci_layout(store, Path::new(&dir), ref_name.as_deref())
        .with_context(|| format!("importing OCI layout {dir}"))?;
    let name = tag.or(ref_name).unwrap_or_else(|| "latest".to_string());
    let key = name
        .parse::<Reference>()
        .with_context(|| format!("invalid tag {name:?}"))?
        .store_name();
    store.tag(&key, &desc)?;
    unpack_now(store, &desc.digest.to_string())?;
    outln!("{key} {}", desc.digest)?;
    Ok(0)
}

/// Commit the snapshots of the image `name` (this machine's platform) now, as `docker load`
/// unpacks: the first build on it then finds its filesystem ready (`kiln import`, `kiln pull`).
pub(super) fn unpack_now(store: &Store, name: &str) -> Result<()> {
    unpack_for(store, name, &crate::image::Platform::host())
}

/// [`unpack_now`] for the image's manifest of `platform`.
pub(super) fn unpack_for(
    store: &Store,
    name: &str,
    platform: &crate::image::Platform,
) -> Result<()> {
    let img = store.image_for(name, platform)?;
    crate::engine::commit_image_snapshots(store, &img)
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("unpacking {name} into committed snapshots"))?;
    Ok(())
}

pub(super) fn cmd_rmi(store: &Store, image: &str) -> Result<i32> {
    if !store.untag(&store_key(image))? {
        bail!("no image {image} in the local store");
    }
    outln!("untagged {image}")?;
    Ok(0)
}

/// `kiln prune`'s flags: `docker buildx prune`'s.
#[derive(clap::Args, Debug, Default)]
pub(super) struct PruneArgs {
    /// Remove shared records too (their layers stay while a tag needs them).
    #[arg(short, long)]
    all: bool,
    /// `type==regular|exec.cachemount|…`, `id==…`, `description~=…`, or `until=DURATION`
    /// (keep what was used within it, e.g. 24h). Repeatable: any filter may match.
    #[arg(long = "filter")]
    filters: Vec<String>,
    /// Keep this much build cache (deprecated in buildx: same as --reserved-space).
    #[arg(long = "keep-storage", value_parser = parse_size_arg)]
    keep_storage: Option<u64>,
    /// Never prune the build cache below this size.
    #[arg(long = "reserved-space", value_parser = parse_size_arg)]
    reserved_space: Option<u64>,
    /// Prune until the build cache is at most this size.
    #[arg(long = "max-used-space", value_parser = parse_size_arg)]
    max_used_space: Option<u64>,
    /// Prune until the disk has this much free (never below --reserved-space).
    #[arg(long = "min-free-space", value_parser = parse_size_arg)]
    min_free_space: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::config::parse_size(s).map_err(|e| e.to_string())
}

pub(super) fn cmd_prune(store: &Store, a: &PruneArgs) -> Result<i32> {
    let policy = store::GcPolicy::from_prune(
        &a.filters,
        a.all,
        a.keep_storage.or(a.reserved_space),
        a.max_used_space,
        a.min_free_space,
    )?;
    crate::engine::empty_trash(store.root())
        .with_context(|| format!("emptying {}/builds/trash", store.root().display()))?;
    let report = store.collect(&store::GcOptions {
        policies: vec![policy],
        scratch: crate::engine::scratch_dirs(),
        trigger: "prune".into(),
    })?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(0);
    }
    for r in &report.records {
        outln!(
            "removed {} {} ({} bytes freed)",
            r.kind,
            r.description,
            r.bytes
        )?;
    }
    for d in &report.dirs {
        outln!("removed scratch {d}")?;
    }
    let snapshots = report
        .records
        .iter()
        .filter(|r| r.namespace == store::SNAPSHOT_NAMESPACE)
        .count();
    outln!(
        "removed {} blob(s), {} record(s), {snapshots} snapshot(s), {} scratch dir(s), freed {} bytes, kept {} blob(s)",
        report.removed.len(),
        report.records.len() - snapshots,
        report.dirs.len(),
        report.bytes_freed,
        report.kept
    )?;
    Ok(0)
}

/// `kiln info`'s usage lines (and `GET /v1/info`'s `usage`).
fn print_usage(store: &Store) -> Result<()> {
    let u = store.usage(&crate::engine::scratch_dirs())?;
    outln!("usage:")?;
    outln!(
        "  images: {} bytes in {} tag(s)",
        u.images.bytes,
        u.images.items
    )?;
    for kind in store::RECORD_TYPES {
        let b = u.records.get(*kind).copied().unwrap_or_default();
        if b.items > 0 || ["regular", "exec.cachemount"].contains(kind) {
            outln!(
                "  {} ({kind}): {} bytes in {} record(s)",
                crate::cache::mounts::kind_label(kind),
                b.bytes,
                b.items
            )?;
        }
    }
    outln!(
        "  snapshots (unpacked layers): {} bytes in {} snapshot(s)",
        u.snapshots.bytes,
        u.snapshots.items
    )?;
    outln!(
        "  unreferenced blobs: {} bytes in {} blob(s)",
        u.unreferenced.bytes,
        u.unreferenced.items
    )?;
    outln!(
        "  workspaces (builds/): {} bytes in {} entr(ies)",
        u.scratch.bytes,
        u.scratch.items
    )?;
    match store.last_gc()? {
        Some(g) => outln!(
            "last gc: at {} ({}): freed {} bytes, {} item(s)",
            g.at,
            g.trigger,
            g.bytes_freed,
            g.items()
        )?,
        None => outln!("last gc: never")?,
    }
    Ok(())
}

/// Exit 2 when the store is damaged, so scripts can tell damage from a failure to check.
pub(super) fn cmd_fsck(store: &Store, snapshots: bool) -> Result<i32> {
    let mut report = store.fsck()?;
    if snapshots {
        let (checked, bad) = store.verify_snapshots(exec::overlay_opaque_xattr())?;
        outln!("re-applied the layers of {checked} snapshot(s)")?;
        report.broken_snapshots.extend(bad);
    }
    outln!("{report}")?;
    Ok(if report.is_clean() { 0 } else { 2 })
}

/// Where state lives, what the sandbox probe found, which CA bundles are trusted.
pub(super) fn cmd_info(root: &Option<PathBuf>) -> Result<i32> {
    let root = root.clone().unwrap_or_else(Store::default_root);
    let store = Store::open(&root)
        .with_context(|| format!("opening the kiln store at {}", root.display()))?;
    outln!("version: {}", env!("CARGO_PKG_VERSION"))?;
    outln!("root: {}", root.display())?;
    outln!("images: {}", store.tags()?.len())?;
    print_usage(&store)?;
    let probe = exec::probe(&exec::SandboxConfig::new(&root.join("exec")));
    outln!("running as: {}", exec::identity())?;
    match probe.rung {
        Some(r) => outln!("sandbox: {r}")?,
        None => outln!("sandbox: none works here (builds without RUN still work)")?,
    }
    for (rung, why) in &probe.reasons {
        outln!("  {rung} unavailable: {why}")?;
    }
    outln!(
        "snapshotter: {}",
        format!("{:?}", probe.snapshotter).to_lowercase()
    )?;
    for (kind, why) in &probe.snapshotter_reasons {
        outln!(
            "  {} unavailable: {why}",
            format!("{kind:?}").to_lowercase()
        )?;
    }
    outln!("cgroups: {}", probe.cgroup)?;
    for ca in crate::registry::conventional_ca_bundles() {
        outln!("trusted CA bundle: {}", ca.display())?;
    }
    for w in &probe.warnings {
        outln!("warning: {w}")?;
    }
    Ok(0)
}
