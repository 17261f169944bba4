//! The local-store subcommands, one `cmd_*` each: `kiln images`, `export`, `import`, `rmi`,
//! `prune`, `fsck`, `info`. Each takes the opened store (or the root) and prints its result.
//!
//! Must not: touch the store's files itself — every change goes through `store`'s verified calls.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

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
    let mut out = std::io::stdout().lock();
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
                eprintln!("exported oci: {}", dest.display());
            }
            Output::Docker { dest } => {
                let name = key
                    .parse::<Reference>()
                    .map(|r| r.familiar())
                    .unwrap_or_default();
                store::write_docker_archive(store, &[(name, img.manifest_desc.clone())], &dest)?;
                eprintln!("exported docker: {}", dest.display());
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
    let desc = store::import_oci_layout(store, Path::new(&dir), ref_name.as_deref())
        .with_context(|| format!("importing OCI layout {dir}"))?;
    let name = tag.or(ref_name).unwrap_or_else(|| "latest".to_string());
    let key = name
        .parse::<Reference>()
        .with_context(|| format!("invalid tag {name:?}"))?
        .store_name();
    store.tag(&key, &desc)?;
    println!("{key} {}", desc.digest);
    Ok(0)
}

pub(super) fn cmd_rmi(store: &Store, image: &str) -> Result<i32> {
    if !store.untag(&store_key(image))? {
        bail!("no image {image} in the local store");
    }
    println!("untagged {image}");
    Ok(0)
}

pub(super) fn cmd_prune(store: &Store) -> Result<i32> {
    crate::engine::empty_trash(store.root())
        .with_context(|| format!("emptying {}/builds/trash", store.root().display()))?;
    let report = store.gc()?;
    println!(
        "removed {} blob(s), freed {} bytes, kept {}",
        report.removed.len(),
        report.bytes_freed,
        report.kept
    );
    Ok(0)
}

/// Exit 2 when the store is damaged, so scripts can tell damage from a failure to check.
pub(super) fn cmd_fsck(store: &Store) -> Result<i32> {
    let report = store.fsck()?;
    println!("{report}");
    Ok(if report.is_clean() { 0 } else { 2 })
}

/// Where state lives, what the sandbox probe found, which CA bundles are trusted.
pub(super) fn cmd_info(root: &Option<PathBuf>) -> Result<i32> {
    let root = root.clone().unwrap_or_else(Store::default_root);
    let store = Store::open(&root)
        .with_context(|| format!("opening the kiln store at {}", root.display()))?;
    println!("version: {}", env!("CARGO_PKG_VERSION"));
    println!("root: {}", root.display());
    println!("images: {}", store.tags()?.len());
    let probe = exec::probe(&exec::SandboxConfig::new(&root.join("exec")));
    match probe.rung {
        Some(r) => println!("sandbox: {r}"),
        None => println!("sandbox: none works here"),
    }
    for (rung, why) in &probe.reasons {
        println!(
            "  {} unavailable: {why}",
            format!("{rung:?}").to_lowercase()
        );
    }
    println!(
        "snapshotter: {}",
        format!("{:?}", probe.snapshotter).to_lowercase()
    );
    for (kind, why) in &probe.snapshotter_reasons {
        println!(
            "  {} unavailable: {why}",
            format!("{kind:?}").to_lowercase()
        );
    }
    println!("cgroups: {}", probe.cgroup);
    for ca in crate::registry::conventional_ca_bundles() {
        println!("trusted CA bundle: {}", ca.display());
    }
    for w in &probe.warnings {
        println!("warning: {w}");
    }
    Ok(0)
}
