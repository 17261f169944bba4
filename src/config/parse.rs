//! TOML text → [`Config`], walking the document by hand so that every unknown key becomes a
//! warning (naming key and file) and every mistyped value an error naming the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use toml::{Table, Value};

use super::{
    BuildConfig, Config, ConfigError, DaemonConfig, DiskSpace, GcPolicyConfig, KeyPair,
    RegistryConfig, Secret, UploadMode, WorkerConfig,
};
use crate::reference::normalize_domain;

/// buildkitd.toml settings kiln accepts in the file but has no use for: warned about as such.
const BUILDKIT_IGNORED: &[&str] = &[
    "debug",
    "trace",
    "root",
    "insecure-entitlements",
    "entitlements",
    "grpc",
    "otel",
    "cdi",
    "history",
    "system",
    "log",
    "dns",
    "frontend",
    "worker.containerd",
    "worker.oci.enabled",
    "worker.oci.platforms",
    "worker.oci.rootless",
    "worker.oci.noProcessSandbox",
    "worker.oci.binary",
    "worker.oci.apparmor-profile",
    "worker.oci.selinux",
    "worker.oci.cniPoolSize",
    "worker.oci.cniBinaryPath",
    "worker.oci.cniConfigPath",
    "worker.oci.labels",
    "worker.oci.networkMode",
    "worker.oci.userRemapUnsupported",
    "worker.oci.gcKeepStorage",
    "worker.oci.gckeepbytes",
];

struct Walker<'a> {
    origin: &'a str,
    text: &'a str,
    warnings: Vec<String>,
}

impl Walker<'_> {
    /// `origin:line` of the first line that defines `key` (as `key =`, `"key" =` or a table header).
    fn place(&self, key: &str) -> String {
        // `worker.oci.enabled`: the `enabled =` line after the `[worker.oci]` header.
        if let Some((table, leaf)) = key.rsplit_once('.') {
            let header = self.text.lines().position(|l| {
                let t = l.trim();
                t.trim_start_matches('[').trim_end_matches(']').trim() == table
                    && t.starts_with('[')
            });
            if let Some(h) = header {
                let sub = Walker {
                    origin: self.origin,
                    text: &self.text[self
                        .text
                        .lines()
                        .take(h + 1)
                        .map(|l| l.len() + 1)
                        .sum::<usize>()
                        .min(self.text.len())..],
                    warnings: Vec::new(),
                };
                if let Some(rest) = sub.place(leaf).strip_prefix(&format!("{}:", self.origin)) {
                    if let Ok(n) = rest.parse::<usize>() {
                        return format!("{}:{}", self.origin, n + h + 1);
                    }
                }
            }
        }
        let quoted = format!("\"{key}\"");
        let line = self.text.lines().position(|l| {
            let t = l.trim_start().trim_start_matches('[').trim_start();
            [key, quoted.as_str()].iter().any(|k| {
                t.strip_prefix(k)
                    .is_some_and(|rest| rest.trim_start().starts_with(['=', ']', '.']))
            }) || t.contains(&format!(".{key}]"))
                || t.contains(&format!(".{quoted}]"))
        });
        match line {
            Some(i) => format!("{}:{}", self.origin, i + 1),
            None => self.origin.to_string(),
        }
    }

    fn unknown(&mut self, key: &str) {
        let place = self.place(key);
        let msg = if BUILDKIT_IGNORED.contains(&key) {
            format!("{place}: buildkit setting {key} is not used by kiln (ignored)")
        } else {
            format!("{place}: unknown key {key} (ignored)")
        };
        self.warnings.push(msg);
    }

    fn bad(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn table<'v>(&self, key: &str, v: &'v Value) -> Result<&'v Table, ConfigError> {
        v.as_table()
            .ok_or_else(|| self.bad(key, "expected a table"))
    }

    fn bool(&self, key: &str, v: &Value) -> Result<bool, ConfigError> {
        v.as_bool()
            .ok_or_else(|| self.bad(key, "expected true or false"))
    }

    fn string(&self, key: &str, v: &Value) -> Result<String, ConfigError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.bad(key, "expected a string"))
    }

    /// A string or an array of strings (buildkit accepts both in several places).
    fn strings(&self, key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(items) => items.iter().map(|i| self.string(key, i)).collect(),
            _ => Err(self.bad(key, "expected a string or an array of strings")),
        }
    }

    fn paths(&self, key: &str, v: &Value) -> Result<Vec<PathBuf>, ConfigError> {
        Ok(self
            .strings(key, v)?
            .into_iter()
            .map(PathBuf::from)
            .collect())
    }

    fn uint(&self, key: &str, v: &Value) -> Result<u64, ConfigError> {
        v.as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| self.bad(key, "expected a non-negative integer"))
    }

    fn ids(&self, key: &str, v: &Value) -> Result<Vec<u32>, ConfigError> {
        let items = v
            .as_array()
            .ok_or_else(|| self.bad(key, "expected an array of integers"))?;
        items
            .iter()
            .map(|i| {
                self.uint(key, i)
                    .and_then(|n| u32::try_from(n).map_err(|_| self.bad(key, "id out of range")))
            })
            .collect()
    }

    /// Bytes as an integer, or `"20GB"`, `"512MiB"`, `"10%"`.
    fn disk_space(&self, key: &str, v: &Value) -> Result<DiskSpace, ConfigError> {
        if let Some(i) = v.as_integer() {
            return u64::try_from(i)
                .map(DiskSpace::Bytes)
                .map_err(|_| self.bad(key, "expected a non-negative size"));
        }
        let s = v
            .as_str()
            .ok_or_else(|| self.bad(key, "expected a size (\"20GB\", \"10%\" or bytes)"))?;
        if let Some(p) = s.trim().strip_suffix('%') {
            return p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .map(DiskSpace::Percent)
                .ok_or_else(|| self.bad(key, format!("invalid percentage {s:?}")));
        }
        super::parse_size(s)
            .map(DiskSpace::Bytes)
            .map_err(|e| self.bad(key, e.to_string()))
    }
}

pub(super) fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let doc: Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        ConfigError::Syntax {
            origin: origin.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    let mut w = Walker {
        origin,
        text,
        warnings: Vec::new(),
    };
    let mut cfg = Config {
        origin: origin.to_string(),
        ..Config::default()
    };
    for (k, v) in &doc {
        match k.as_str() {
            "registry" => {
                for (host, section) in w.table("registry", v)? {
                    let key = format!("registry.\"{host}\"");
                    let t = w.table(&key, section)?;
                    let rc = registry(&mut w, &key, t)?;
                    let host = normalize_domain(host).to_string();
                    cfg.registry.insert(host, rc);
                }
            }
            "insecure_registries" | "insecure-registries" => {
                for h in w.strings(k, v)? {
                    cfg.merge_insecure_registries(&h);
                }
            }
            "worker" => {
                for (wk, wv) in w.table("worker", v)? {
                    let key = format!("worker.{wk}");
                    if wk == "oci" {
                        let t = w.table(&key, wv)?;
                        cfg.worker = worker(&mut w, t)?;
                    } else {
                        w.unknown(&key);
                    }
                }
            }
            "daemon" => {
                let t = w.table("daemon", v)?;
                cfg.daemon = daemon(&mut w, t)?;
            }
            "build" => {
                let t = w.table("build", v)?;
                cfg.build = build(&mut w, t)?;
            }
            "policy" => {
                let (p, warnings) = super::policy::parse(w.table("policy", v)?, origin)?;
                w.warnings.extend(warnings);
                cfg.policy = Some(p);
            }
            other => w.unknown(other),
        }
    }
    cfg.warnings = w.warnings;
    Ok(cfg)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

fn registry(w: &mut Walker, section: &str, t: &Table) -> Result<RegistryConfig, ConfigError> {
    let mut rc = RegistryConfig::default();
    for (k, v) in t {
        let key = format!("{section}.{k}");
        match k.as_str() {
            "http" => rc.http = w.bool(&key, v)?,
            "insecure" => rc.insecure = w.bool(&key, v)?,
            "ca" => rc.ca = w.paths(&key, v)?,
            "tlsconfigdir" => rc.tlsconfigdir = w.paths(&key, v)?,
            "mirrors" => rc.mirrors = w.strings(&key, v)?,
            "client" => {
                let pair = w.paths(&key, v)?;
                match pair.as_slice() {
                    [cert, key_file] => rc.keypairs.push(KeyPair {
                        cert: cert.clone(),
                        key: key_file.clone(),
                    }),
                    _ => return Err(w.bad(&key, "expected [cert, key]")),
                }
            }
            "keypair" => {
                let items = match v {
                    Value::Array(a) => a.clone(),
                    Value::Table(_) => vec![v.clone()],
                    _ => return Err(w.bad(&key, "expected [[keypair]] tables")),
                };
                for item in &items {
                    let kt = w.table(&key, item)?;
                    let (mut cert, mut key_file) = (None, None);
                    for (kk, kv) in kt {
                        let kkey = format!("{key}.{kk}");
                        match kk.as_str() {
                            "cert" => cert = Some(PathBuf::from(w.string(&kkey, kv)?)),
                            "key" => key_file = Some(PathBuf::from(w.string(&kkey, kv)?)),
                            // A TOML trap (DESIGN.md's own example falls into it): a key written
                            // after `[[…keypair]]` belongs to the keypair table. Apply it, say so.
                            "tlsconfigdir" => {
                                rc.tlsconfigdir.extend(w.paths(&kkey, kv)?);
                                w.warnings.push(format!(
                                    "{}: {kkey} is inside a [[keypair]] table; applied to \
                                     {section} (move it above the [[keypair]] line)",
                                    w.origin
                                ));
                            }
                            _ => w.unknown(&kkey),
                        }
                    }
                    match (cert, key_file) {
                        (Some(cert), Some(key_file)) => rc.keypairs.push(KeyPair {
                            cert,
                            key: key_file,
                        }),
                        _ => return Err(w.bad(&key, "needs both cert and key")),
                    }
                }
            }
            "max-concurrency" | "max_concurrency" => {
                let n = w.uint(&key, v)?;
                if n == 0 {
                    return Err(w.bad(&key, "must be at least 1"));
                }
                rc.max_concurrency = Some(n as usize);
            }
            "upload" => {
                rc.upload = match w.string(&key, v)?.as_str() {
                    "monolithic" => UploadMode::Monolithic,
                    "chunked" => UploadMode::Chunked,
                    other => {
                        return Err(
                            w.bad(&key, format!("{other:?}: expected monolithic or chunked"))
                        )
                    }
                }
            }
            "chunk-size" | "chunk_size" => {
                let size = match w.disk_space(&key, v)? {
                    DiskSpace::Bytes(b) if b > 0 => b,
                    _ => return Err(w.bad(&key, "expected a size in bytes")),
                };
                rc.chunk_size = Some(size);
            }
            "username" => rc.username = Some(w.string(&key, v)?),
            "password" => rc.password = Some(Secret::new(w.string(&key, v)?)),
            "identitytoken" => rc.identitytoken = Some(Secret::new(w.string(&key, v)?)),
            _ => w.unknown(&key),
        }
    }
    Ok(rc)
}

fn worker(w: &mut Walker, t: &Table) -> Result<WorkerConfig, ConfigError> {
    let mut wc = WorkerConfig::default();
    for (k, v) in t {
        let key = format!("worker.oci.{k}");
        match k.as_str() {
            "max-parallelism" => wc.max_parallelism = Some(w.uint(&key, v)? as usize),
            "snapshotter" => {
                let s = w.string(&key, v)?;
                let s = if s == "overlay" {
                    "overlayfs".into()
                } else {
                    s
                };
                if ["auto", "overlayfs", "fuse-overlayfs", "native"].contains(&s.as_str()) {
                    wc.snapshotter = Some(s);
                } else {
                    // buildkit's other snapshotters (stargz, nydus, …): the file is still valid.
                    let place = w.place("snapshotter");
                    w.warnings.push(format!(
                        "{place}: {key} = {s:?} is not a kiln snapshotter (auto, overlayfs, \
                         fuse-overlayfs, native); using auto"
                    ));
                }
            }
            "sandbox" => {
                let s = w.string(&key, v)?;
                if !["full", "no-proc", "single-uid", "chroot"].contains(&s.as_str()) {
                    return Err(w.bad(
                        &key,
                        format!("{s:?}: expected full, no-proc, single-uid or chroot"),
                    ));
                }
                wc.sandbox = Some(s);
            }
            "ca-injection" => wc.ca_injection = Some(w.bool(&key, v)?),
            "binfmt" => wc.binfmt = Some(w.bool(&key, v)?),
            "emulators" => {
                for (arch, path) in w.table(&key, v)? {
                    let p = w.string(&format!("{key}.{arch}"), path)?;
                    wc.emulators.insert(arch.clone(), p.into());
                }
            }
            "gc" => wc.gc = Some(w.bool(&key, v)?),
            "gckeepstorage" => wc.gckeepstorage = Some(w.disk_space(&key, v)?),
            "reservedSpace" => wc.reserved_space = Some(w.disk_space(&key, v)?),
            "maxUsedSpace" => wc.max_used_space = Some(w.disk_space(&key, v)?),
            "minFreeSpace" => wc.min_free_space = Some(w.disk_space(&key, v)?),
            "gcpolicy" => {
                let rules = v
                    .as_array()
                    .ok_or_else(|| w.bad(&key, "expected [[worker.oci.gcpolicy]] tables"))?;
                for (i, rule) in rules.iter().enumerate() {
                    let t = w.table(&format!("{key}[{i}]"), rule)?;
                    wc.gcpolicy.push(gc_policy(w, &format!("{key}[{i}]"), t)?);
                }
            }
            _ => w.unknown(&key),
        }
    }
    Ok(wc)
}

/// One `[[worker.oci.gcpolicy]]` (buildkitd's `config.GCPolicy`; filters are checked when the
/// policy is applied, by the store, which owns their grammar).
fn gc_policy(w: &mut Walker, prefix: &str, t: &Table) -> Result<GcPolicyConfig, ConfigError> {
    let mut p = GcPolicyConfig::default();
    for (k, v) in t {
        let key = format!("{prefix}.{k}");
        match k.as_str() {
            "all" => p.all = w.bool(&key, v)?,
            "filters" => p.filters = w.strings(&key, v)?,
            "keepDuration" => {
                let d = match v {
                    Value::Integer(i) if *i >= 0 => Ok(std::time::Duration::from_secs(*i as u64)),
                    Value::String(s) => super::parse_duration(s).map_err(|e| e.to_string()),
                    _ => Err("expected a duration such as \"48h\" or seconds".to_string()),
                };
                p.keep_duration = Some(d.map_err(|m| w.bad(&key, m))?);
            }
            "keepBytes" => p.keep_bytes = Some(w.disk_space(&key, v)?),
            "reservedSpace" => p.reserved_space = Some(w.disk_space(&key, v)?),
            "maxUsedSpace" => p.max_used_space = Some(w.disk_space(&key, v)?),
            "minFreeSpace" => p.min_free_space = Some(w.disk_space(&key, v)?),
            _ => w.unknown(&key),
        }
    }
    Ok(p)
}

fn daemon(w: &mut Walker, t: &Table) -> Result<DaemonConfig, ConfigError> {
    let mut d = DaemonConfig::default();
    for (k, v) in t {
        let key = format!("daemon.{k}");
        match k.as_str() {
            "socket" => d.socket = Some(PathBuf::from(w.string(&key, v)?)),
            "socket_mode" => {
                let mode = match v {
                    Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
                    Value::Integer(i) => u32::try_from(*i).ok(),
                    _ => None,
                };
                d.socket_mode = Some(
                    mode.filter(|m| *m <= 0o7777)
                        .ok_or_else(|| w.bad(&key, "expected an octal mode such as \"0660\""))?,
                );
            }
            "socket_group" => d.socket_group = Some(w.string(&key, v)?),
            "allowed_uids" => d.allowed_uids = w.ids(&key, v)?,
            "allowed_gids" => d.allowed_gids = w.ids(&key, v)?,
            "context_roots" => d.context_roots = w.paths(&key, v)?,
            "max_concurrent_builds" => d.max_concurrent_builds = Some(w.uint(&key, v)? as usize),
            "capacity" => {
                let c = w.uint(&key, v)?;
                if c == 0 || c > 100 {
                    return Err(w.bad(&key, "expected a percentage from 1 to 100"));
                }
                d.capacity = Some(c as u8);
            }
            _ => w.unknown(&key),
        }
    }
    Ok(d)
}

fn build(w: &mut Walker, t: &Table) -> Result<BuildConfig, ConfigError> {
    let mut b = BuildConfig::default();
    for (k, v) in t {
        let key = format!("build.{k}");
        match k.as_str() {
            "compression" => {
                let c = w.string(&key, v)?;
                if !["gzip", "zstd", "uncompressed"].contains(&c.as_str()) {
                    return Err(w.bad(&key, format!("{c:?}: expected gzip, zstd or uncompressed")));
                }
                b.compression = Some(c);
            }
            "compression_level" => {
                b.compression_level = Some(
                    v.as_integer()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| w.bad(&key, "expected an integer"))?,
                )
            }
            "source_date_epoch" => {
                b.source_date_epoch = Some(
                    v.as_integer()
                        .ok_or_else(|| w.bad(&key, "expected seconds since the epoch"))?,
                )
            }
            // `true`/`false` or the flag's text (`mode=max`, `format=cyclonedx`).
            "provenance" | "sbom" => {
                let text = match v {
                    Value::Boolean(b) => b.to_string(),
                    Value::String(t) => t.clone(),
                    _ => {
                        return Err(w.bad(
                            &key,
                            "expected true, false or the flag's value (\"mode=max\")",
                        ))
                    }
                };
                match k.as_str() {
                    "provenance" => b.provenance = Some(text),
                    _ => b.sbom = Some(text),
                }
            }
            _ => w.unknown(&key),
        }
    }
    Ok(b)
}

/// The shape `kiln config show` prints: buildkitd.toml's nesting (`[worker.oci]`).
#[derive(Serialize)]
pub(super) struct ShowView<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    insecure_registries: &'a Vec<String>,
    registry: &'a BTreeMap<String, RegistryConfig>,
    worker: WorkerView<'a>,
    daemon: &'a DaemonConfig,
    build: &'a BuildConfig,
}

#[derive(Serialize)]
struct WorkerView<'a> {
    oci: &'a WorkerConfig,
}

impl<'a> From<&'a Config> for ShowView<'a> {
    fn from(c: &'a Config) -> Self {
        ShowView {
            insecure_registries: &c.insecure_registries,
            registry: &c.registry,
            worker: WorkerView { oci: &c.worker },
            daemon: &c.daemon,
            build: &c.build,
        }
    }
}
