//! `kiln build --base REF --apt … --conda … --pip …` (a package build, with an optional catalog
//! entry) and `kiln catalog ls|add|show|edit|rm`: flags → the API's `PackageSpec` /
//! `CatalogSpec` / `CatalogUpdate` → the daemon's `/v1/catalog` → printed results.
//!
//! Must not: validate package lines itself (the one resolver does, for the embedded engine and the
//! daemon alike) or keep a catalog of its own (the daemon's SQLite holds it).

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};

use crate::api::{self, CatalogEntry, CatalogSpec, CatalogUpdate, ImageType, PackageSpec};

use super::client::Client;
use super::out;

/// Package-build and catalog flags of `kiln build`.
#[derive(Args, Debug, Default)]
pub(super) struct PackageFlags {
    /// Build from packages instead of a Dockerfile: the base image to install into.
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// APT packages (`name`, `name=1.2*`, `name/release`); repeatable, several per flag.
    #[arg(long = "apt", num_args = 1.., value_name = "PKG")]
    apt: Vec<String>,
    /// A conda match spec, optionally after `-c CHANNEL` (`--conda '-c conda-forge::numpy==1.17*'`);
    /// one per flag, repeatable.
    #[arg(long = "conda", allow_hyphen_values = true, value_name = "SPEC")]
    conda: Vec<String>,
    /// pip requirements (PEP 508: `six==1.16.0`); repeatable, several per flag.
    #[arg(long = "pip", num_args = 1.., value_name = "REQ")]
    pip: Vec<String>,
    /// The GPU base of a `universal` catalog image (default: --base).
    #[arg(long = "gpu-base", value_name = "REF")]
    gpu_base: Option<String>,
    /// A packages file (TOML, or JSON when named *.json): base, apt, conda, pip, gpu_base.
    #[arg(long = "packages", value_name = "FILE")]
    packages_file: Option<PathBuf>,
    /// Create or update the catalog entry with this display name (daemon builds only).
    #[arg(long = "catalog", value_name = "DISPLAY_NAME")]
    catalog: Option<String>,
    /// The catalog entry's type: cpu, gpu or universal.
    #[arg(long = "catalog-type", value_parser = parse_type)]
    catalog_type: Option<ImageType>,
    #[arg(long = "catalog-description")]
    catalog_description: Option<String>,
    /// Groups that may see the entry (repeatable; none: global).
    #[arg(long = "catalog-group")]
    catalog_groups: Vec<String>,
    /// A reference to the pull secret the platform uses (a name, not the secret).
    #[arg(long = "pull-secret")]
    pull_secret: Option<String>,
}

fn parse_type(s: &str) -> Result<ImageType, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?}: cpu, gpu or universal"))
}

impl PackageFlags {
    /// The spec's `packages`: from the file, with flag lines appended and `--base` winning.
    pub(super) fn packages(&self) -> Result<Option<PackageSpec>> {
        let mut spec = match &self.packages_file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading packages file {}", f.display()))?;
                if f.extension().is_some_and(|e| e == "json") {
                    serde_json::from_str(&text)
                        .with_context(|| format!("packages file {}", f.display()))?
                } else {
                    toml::from_str(&text)
                        .with_context(|| format!("packages file {}", f.display()))?
                }
            }
            None if self.base.is_none()
                && self.apt.is_empty()
                && self.conda.is_empty()
                && self.pip.is_empty() =>
            {
                return Ok(None)
            }
            None => PackageSpec::default(),
        };
        if let Some(b) = &self.base {
            spec.base.clone_from(b);
        }
        if self.gpu_base.is_some() {
            spec.gpu_base.clone_from(&self.gpu_base);
        }
        spec.apt.extend(self.apt.iter().cloned());
        spec.conda.extend(self.conda.iter().cloned());
        spec.pip.extend(self.pip.iter().cloned());
        if spec.base.is_empty() {
            bail!("a package build needs --base REF (or base in the packages file)");
        }
        Ok(Some(spec))
    }

    /// The spec's `catalog`, when `--catalog` is given.
    pub(super) fn catalog(&self) -> Option<CatalogSpec> {
        let display_name = self.catalog.clone()?;
        Some(CatalogSpec {
            display_name,
            description: self.catalog_description.clone(),
            image_type: self.catalog_type.unwrap_or_default(),
            gpu_url: None,
            global: Some(self.catalog_groups.is_empty()),
            groups: self.catalog_groups.clone(),
            pull_secret: self.pull_secret.clone(),
        })
    }
}

#[derive(Args, Debug)]
pub(super) struct EntryFlags {
    #[arg(long)]
    description: Option<String>,
    #[arg(long = "type", value_parser = parse_type)]
    image_type: Option<ImageType>,
    /// The image URL (registry/repository:tag).
    #[arg(long)]
    url: Option<String>,
    /// The GPU image URL of a universal entry.
    #[arg(long = "gpu-url")]
    gpu_url: Option<String>,
    /// A group that may see the entry (repeatable; replaces the list).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Visible to every caller.
    #[arg(long)]
    global: bool,
    #[arg(long = "pull-secret")]
    pull_secret: Option<String>,
}

impl EntryFlags {
    fn update(self, display_name: Option<String>) -> CatalogUpdate {
        CatalogUpdate {
            display_name,
            description: self.description,
            image_type: self.image_type,
            url: self.url,
            gpu_url: self.gpu_url,
            global: match (self.global, self.groups.is_empty()) {
                (true, _) => Some(true),
                (false, false) => Some(false),
                (false, true) => None,
            },
            groups: (!self.groups.is_empty()).then_some(self.groups),
            pull_secret: self.pull_secret,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum CatalogCmd {
    /// List the catalog entries this caller may see (`-q` searches name, display name,
    /// description and URL).
    Ls {
        #[arg(short = 'q', long = "query")]
        query: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add an existing image to the catalog (status ready).
    Add {
        display_name: String,
        #[command(flatten)]
        flags: EntryFlags,
    },
    /// One entry as JSON.
    Show { name: String },
    /// Change an entry (fields not given stay).
    Edit {
        name: String,
        #[arg(long = "display-name")]
        display_name: Option<String>,
        #[command(flatten)]
        flags: EntryFlags,
    },
    /// Remove an entry (the images stay in their registry).
    Rm { name: String },
}

fn need(host: &Option<String>) -> Result<Client> {
    match Client::select(host)? {
        Some(c) => Ok(c),
        None => bail!(
            "the catalog lives in the daemon: no kiln daemon answers on {} (start `kiln daemon`, or give --host unix:///path)",
            crate::api::default_socket().display()
        ),
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn catalog(host: &Option<String>, cmd: CatalogCmd) -> Result<i32> {
    let c = need(host)?;
    let mut out = out::stdout();
    let json = "application/json";
    match cmd {
        CatalogCmd::Ls {
            query,
            json: as_json,
        } => {
            let path = match &query {
                Some(q) => format!("/v1/catalog?q={}", encode(q)),
                None => "/v1/catalog".into(),
            };
            let list: Vec<CatalogEntry> = c.request("GET", &path, None, &[])?.json()?;
            if as_json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                return Ok(0);
            }
            writeln!(out, "{:<28} {:<9} {:<9} URL", "NAME", "TYPE", "STATUS")?;
            for e in list {
                let t = serde_json::to_value(e.image_type)?;
                let s = serde_json::to_value(e.status)?;
                writeln!(
                    out,
                    "{:<28} {:<9} {:<9} {}",
                    e.name,
                    t.as_str().unwrap_or(""),
                    s.as_str().unwrap_or(""),
                    e.url.unwrap_or_default()
                )?;
            }
        }
        CatalogCmd::Add {
            display_name,
            flags,
        } => {
            api::check_display_name(&display_name).map_err(anyhow::Error::msg)?;
            let body = serde_json::to_vec(&flags.update(Some(display_name)))?;
            let e: CatalogEntry = c
                .request("POST", "/v1/catalog", Some(json), &body)?
                .json()?;
            writeln!(out, "{}", e.name)?;
        }
        CatalogCmd::Show { name } => {
            let e: CatalogEntry = c
                .request("GET", &format!("/v1/catalog/{}", encode(&name)), None, &[])?
                .json()?;
            writeln!(out, "{}", serde_json::to_string_pretty(&e)?)?;
        }
        CatalogCmd::Edit {
            name,
            display_name,
            flags,
        } => {
            let body = serde_json::to_vec(&flags.update(display_name))?;
            let e: CatalogEntry = c
                .request(
                    "PUT",
                    &format!("/v1/catalog/{}", encode(&name)),
                    Some(json),
                    &body,
                )?
                .json()?;
            writeln!(out, "{}", serde_json::to_string_pretty(&e)?)?;
        }
        CatalogCmd::Rm { name } => {
            let _: serde_json::Value = c
                .request(
                    "DELETE",
                    &format!("/v1/catalog/{}", encode(&name)),
                    None,
                    &[],
                )?
                .json()?;
            writeln!(out, "removed {name}")?;
        }
    }
    Ok(0)
}
