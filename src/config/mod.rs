//! kiln's configuration file (`kiln.toml`), which also accepts buildkitd.toml's sections so an operator
//! can hand over an existing file: `[registry."host"]` (http, insecure, ca, keypair / client,
//! tlsconfigdir, mirrors), `[worker.oci]`, plus kiln's own `[daemon]` and `[build]`.
//!
//! Unknown keys are collected as warnings naming the key and the file, never silently ignored; a
//! value of the wrong type is an error naming the key; invalid TOML is an error naming the line.
//! Secrets (registry passwords and identity tokens) are redacted in `Debug`, `Display` and
//! serialisation, so `kiln config show` and `GET /v1/config` never print them.
//!
//! Must not: open network connections, read certificate files or apply any setting itself — the
//! modules that own each setting (registry, daemon, build) do that.

pub mod defaults;
mod duration;
mod parse;
pub mod policy;
mod size;

pub use duration::{parse_duration, DurationError};
pub use size::{parse_size, SizeError};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::reference::normalize_domain;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config {origin}: line {line}, column {column}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config {origin}: key {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

/// A secret string (password, token): compared and used normally, never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it (an Authorization header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// One client certificate and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How blobs are uploaded to a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadMode {
    /// One PUT with the whole blob (falls back to chunked when the registry refuses it).
    #[default]
    Monolithic,
    /// PATCH chunks, then PUT (falls back to monolithic when the registry refuses chunks).
    Chunked,
}

/// `[registry."host"]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryConfig {
    /// Plain HTTP.
    pub http: bool,
    /// TLS without certificate verification (and plain HTTP when the host does not speak TLS).
    pub insecure: bool,
    /// Extra CA certificates (system roots are kept).
    pub ca: Vec<PathBuf>,
    /// Client certificates (`keypair` tables and the `client = [cert, key]` alias).
    #[serde(rename = "keypair")]
    pub keypairs: Vec<KeyPair>,
    /// Directories holding `*.crt` (CAs) and `X.cert` + `X.key` (client identities).
    pub tlsconfigdir: Vec<PathBuf>,
    /// Mirrors tried in order for pulls (`host[:port][/path]`), falling back to this registry.
    pub mirrors: Vec<String>,
    /// kiln: at most this many blob transfers at once to this registry.
    pub max_concurrency: Option<usize>,
    /// kiln: upload mode and chunk size.
    pub upload: UploadMode,
    pub chunk_size: Option<u64>,
    /// kiln: credentials for this registry (after per-build ones, before ~/.docker/config.json).
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub identitytoken: Option<Secret>,
}

/// buildkit's disk-space setting: bytes, or a percentage of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSpace {
    Bytes(u64),
    Percent(u8),
}

impl Serialize for DiskSpace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DiskSpace::Bytes(b) => s.serialize_u64(*b),
            DiskSpace::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

/// `[worker.oci]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct WorkerConfig {
    #[serde(rename = "max-parallelism")]
    pub max_parallelism: Option<usize>,
    /// `auto` (default), `overlayfs`, `fuse-overlayfs` or `native`.
    pub snapshotter: Option<String>,
    /// kiln's own: force a sandbox rung (`full`, `no-proc`, `single-uid`, `chroot`).
    pub sandbox: Option<String>,
    pub gc: Option<bool>,
    pub gckeepstorage: Option<DiskSpace>,
    #[serde(rename = "reservedSpace")]
    pub reserved_space: Option<DiskSpace>,
    #[serde(rename = "maxUsedSpace")]
    pub max_used_space: Option<DiskSpace>,
    #[serde(rename = "minFreeSpace")]
    pub min_free_space: Option<DiskSpace>,
    /// kiln's own: bind the platform's CA bundle into RUN steps (default: when one exists).
    #[serde(rename = "ca-injection")]
    pub ca_injection: Option<bool>,
    /// kiln's own: run foreign-platform RUN steps through a kernel binfmt_misc handler when one is
    /// registered with the F flag (default true); false always mounts the emulator instead.
    pub binfmt: Option<bool>,
    /// kiln's own: `emulators = { arm64 = "/usr/bin/qemu-aarch64-static" }`, the static QEMU
    /// user-mode emulator per architecture (OCI names; default: `qemu-<arch>-static` or
    /// `qemu-<arch>` on PATH).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub emulators: std::collections::BTreeMap<String, std::path::PathBuf>,
    /// `[[worker.oci.gcpolicy]]`, in order (none: BuildKit's defaults when `gc = true`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gcpolicy: Vec<GcPolicyConfig>,
}

/// One `[[worker.oci.gcpolicy]]` rule, as buildkitd.toml writes it (`store::gc` applies it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct GcPolicyConfig {
    pub all: bool,
    pub filters: Vec<String>,
    /// Keep what was used within this long (seconds in the file's `keepDuration` syntax).
    #[serde(rename = "keepDuration", serialize_with = "seconds")]
    pub keep_duration: Option<std::time::Duration>,
    /// Deprecated in BuildKit: `reservedSpace` when that is unset.
    #[serde(rename = "keepBytes")]
    pub keep_bytes: Option<DiskSpace>,
    #[serde(rename = "reservedSpace")]
    pub reserved_space: Option<DiskSpace>,
    #[serde(rename = "maxUsedSpace")]
    pub max_used_space: Option<DiskSpace>,
    #[serde(rename = "minFreeSpace")]
    pub min_free_space: Option<DiskSpace>,
}

fn seconds<S: serde::Serializer>(d: &Option<std::time::Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format!("{}s", d.as_secs())),
        None => s.serialize_none(),
    }
}

/// `[daemon]` (kiln's own).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DaemonConfig {
    pub socket: Option<PathBuf>,
    /// Octal in the file (`"0660"`) or an integer.
    pub socket_mode: Option<u32>,
    pub socket_group: Option<String>,
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    pub context_roots: Vec<PathBuf>,
    pub max_concurrent_builds: Option<usize>,
    /// Default build capacity in percent of the machine.
    pub capacity: Option<u8>,
}

/// `[build]` (kiln's own).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct BuildConfig {
    /// `gzip`, `zstd` or `uncompressed`.
    pub compression: Option<String>,
    pub compression_level: Option<i32>,
    pub source_date_epoch: Option<i64>,
    /// Provenance for every build, as `--provenance` takes it (`true`, `mode=max`, …).
    pub provenance: Option<String>,
    /// An SBOM for every build, as `--sbom` takes it (`true`, `format=cyclonedx`, …).
    pub sbom: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Config {
    /// Where it came from (a path, or a caller-given name such as `<api>`); empty for defaults.
    #[serde(skip)]
    pub origin: String,
    /// Keyed by normalised host (`docker.io` for all of Docker Hub's names).
    pub registry: BTreeMap<String, RegistryConfig>,
    /// Hosts treated as `insecure = true` (the daemon's list, `--insecure-registry`).
    pub insecure_registries: Vec<String>,
    pub worker: WorkerConfig,
    pub daemon: DaemonConfig,
    pub build: BuildConfig,
    /// `[policy]`: groups and what they may pull, push and manage (none: no restriction).
    pub policy: Option<policy::Policy>,
    /// Unknown keys and ignored buildkit settings, each naming the key and the file.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Config {
    /// `/etc/kiln/kiln.toml` as root, else `$XDG_CONFIG_HOME/kiln/kiln.toml` (default
    /// `~/.config/kiln/kiln.toml`). The CLI's `--config` / `KILN_CONFIG` override this.
    pub fn default_path() -> PathBuf {
        defaults::config_file()
    }

    /// Read and parse `path`. A missing file is an error (see [`Config::load_or_default`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// As [`Config::load`], but a file that does not exist gives the defaults (the default path
    /// is optional; an explicit `--config` should use `load`).
    pub fn load_or_default(path: &Path) -> Result<Config, ConfigError> {
        match Config::load(path) {
            Err(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Config {
                    origin: path.display().to_string(),
                    ..Config::default()
                })
            }
            r => r,
        }
    }

    /// Parse TOML text; `origin` names it in warnings and errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        parse::parse(text, origin)
    }

    /// The settings for `host` (`host[:port]`; Docker Hub's names are one registry).
    pub fn registry(&self, host: &str) -> RegistryConfig {
        let host = normalize_domain(host);
        let mut rc = self.registry.get(host).cloned().unwrap_or_default();
        if self
            .insecure_registries
            .iter()
            .any(|h| normalize_domain(h) == host)
        {
            rc.insecure = true;
        }
        rc
    }

    /// Add hosts to the insecure list from `"a,b"` (the daemon's `insecure_registries` and the
    /// repeatable `--insecure-registry`); blanks and duplicates are dropped.
    pub fn merge_insecure_registries(&mut self, list: &str) {
        for h in list.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let h = normalize_domain(h).to_string();
            if !self.insecure_registries.contains(&h) {
                self.insecure_registries.push(h);
            }
        }
    }

    /// The configuration as TOML with secrets redacted (for `kiln config show`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(&parse::ShowView::from(self))
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_redacted_toml())
    }
}

#[cfg(test)]
mod tests;
