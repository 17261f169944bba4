//! `GET/PUT /v1/config`: the registry settings the daemon hands to builds, changed at run time
//! without a restart and persisted to `<root>/daemon/config.toml` (or `--config`).
//!
//! Until `crate::config` is declared in the crate, validation here is the TOML syntax (errors name
//! the line) plus the top-level keys buildkitd.toml and kiln.toml know; the lead replaces
//! `validate` with `Config::from_toml_str` (which checks every key) when that module lands.
//!
//! Must not: show a secret (passwords and tokens are redacted in every answer).

use std::path::PathBuf;

use toml::{Table, Value};

use crate::api::{kind, ConfigUpdate, ConfigView, REDACTED};

use super::{ApiError, DaemonSettings};

/// Top-level keys of buildkitd.toml plus kiln's own.
const KNOWN_TOP: &[&str] = &[
    "registry",
    "worker",
    "daemon",
    "build",
    "insecure_registries",
    "insecure-entitlements",
    "entitlements",
    "debug",
    "trace",
    "root",
    "grpc",
    "otel",
    "dns",
    "history",
    "frontend",
    "cdi",
    "log",
    "system",
];

const SECRET_KEYS: &[&str] = &["password", "identitytoken", "token", "secret", "auth"];

pub(crate) struct RuntimeConfig {
    path: PathBuf,
    table: Table,
    pub warnings: Vec<String>,
}

impl RuntimeConfig {
    pub fn load(settings: &DaemonSettings) -> RuntimeConfig {
        let path = settings
            .config_path
            .clone()
            .unwrap_or_else(|| settings.root.join("daemon").join("config.toml"));
        let mut warnings = Vec::new();
        let table = match std::fs::read_to_string(&path) {
            Ok(text) => match validate(&text) {
                Ok(t) => t,
                Err(e) => {
                    warnings.push(format!(
                        "{}: {} (ignored; starting with no registry settings)",
                        path.display(),
                        e.message
                    ));
                    Table::new()
                }
            },
            Err(_) => Table::new(),
        };
        RuntimeConfig {
            path,
            table,
            warnings,
        }
    }

    pub fn insecure_registries(&self) -> Vec<String> {
        match self.table.get("insecure_registries") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn view(&self) -> ConfigView {
        let mut shown = self.table.clone();
        redact(&mut shown);
        ConfigView {
            insecure_registries: self.insecure_registries(),
            config: toml::to_string(&shown).unwrap_or_default(),
            warnings: self.warnings.clone(),
        }
    }

    /// Apply an update; the file is written before the new settings are used.
    pub fn update(&mut self, u: &ConfigUpdate) -> Result<(), ApiError> {
        if u.insecure_registries.is_none() && u.config_content.is_none() {
            return Err(ApiError::bad(
                kind::INVALID_REQUEST,
                "give insecure_registries and/or config_content",
            ));
        }
        let mut table = match &u.config_content {
            Some(text) => validate(text)?,
            None => self.table.clone(),
        };
        if let Some(hosts) = &u.insecure_registries {
            for h in &hosts.0 {
                if h.contains("://") || h.contains('/') || h.contains(char::is_whitespace) {
                    return Err(ApiError::bad(
                        kind::INVALID_CONFIG,
                        format!("insecure_registries: {h:?} is not a host[:port]"),
                    ));
                }
            }
            table.insert(
                "insecure_registries".into(),
                Value::Array(hosts.0.iter().cloned().map(Value::String).collect()),
            );
        }
        let text = toml::to_string(&table).map_err(ApiError::internal)?;
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d).map_err(ApiError::internal)?;
        }
        let tmp = self.path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(ApiError::internal)?;
        std::fs::rename(&tmp, &self.path).map_err(ApiError::internal)?;
        self.table = table;
        self.warnings.clear();
        Ok(())
    }
}

/// Parse TOML text; syntax errors and unknown top-level keys name the line.
fn validate(text: &str) -> Result<Table, ApiError> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let msg = e.message().to_string();
        ApiError::bad(
            kind::INVALID_CONFIG,
            match line {
                Some(l) => format!("invalid TOML at line {l}: {msg}"),
                None => format!("invalid TOML: {msg}"),
            },
        )
    })?;
    for key in table.keys() {
        if !KNOWN_TOP.contains(&key.as_str()) {
            let line = text
                .lines()
                .position(|l| {
                    let t = l.trim_start().trim_start_matches('[').trim_start();
                    t.starts_with(key.as_str()) || t.starts_with(&format!("\"{key}\""))
                })
                .map(|i| i + 1)
                .unwrap_or(0);
            return Err(ApiError::bad(
                kind::INVALID_CONFIG,
                format!("unknown key {key:?} at line {line}"),
            ));
        }
    }
    Ok(table)
}

fn redact(t: &mut Table) {
    for (k, v) in t.iter_mut() {
        if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
            *v = Value::String(REDACTED.into());
            continue;
        }
        match v {
            Value::Table(inner) => redact(inner),
            Value::Array(items) => {
                for i in items {
                    if let Value::Table(inner) = i {
                        redact(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_toml_and_unknown_keys_name_the_line() {
        let e = validate("[registry.\"a\"]\nhttp = true\nfoo = [\n").unwrap_err();
        assert!(e.message.contains("line"), "{}", e.message);
        let e = validate("debug = true\n\nbogus = 1\n").unwrap_err();
        assert!(e.message.contains("\"bogus\" at line 3"), "{}", e.message);
        let mut t = validate("[registry.\"r\"]\npassword = \"hunter2\"\n").unwrap();
        redact(&mut t);
        assert!(!toml::to_string(&t).unwrap().contains("hunter2"));
    }
}
