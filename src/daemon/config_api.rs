//! `GET/PUT /v1/config`: the registry settings the daemon hands to builds, changed at run time
//! without a restart and persisted to `<root>/daemon/config.toml` (or `--config`).
//!
//! Validation is `Config::from_toml_str`: syntax errors name the line, and an update with keys the
//! config does not know is refused (a file loaded at start-up only warns about them).
//!
//! Must not: show a secret (passwords and tokens are redacted in every answer).

use std::path::PathBuf;

use toml::{Table, Value};

use crate::api::{kind, ConfigUpdate, ConfigView, REDACTED};
use crate::config::Config;

use super::{ApiError, DaemonSettings};

const SECRET_KEYS: &[&str] = &["password", "identitytoken", "token", "secret", "auth"];

pub(crate) struct RuntimeConfig {
    path: PathBuf,
    table: Table,
    parsed: Config,
    pub warnings: Vec<String>,
}

impl RuntimeConfig {
    pub fn load(settings: &DaemonSettings) -> RuntimeConfig {
        let path = settings
            .config_path
            .clone()
            .unwrap_or_else(|| settings.root.join("daemon").join("config.toml"));
        let mut warnings = Vec::new();
        let origin = path.display().to_string();
        let table = match std::fs::read_to_string(&path) {
            Ok(text) => match syntax(&text) {
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
        let parsed = parse(&table, &origin).unwrap_or_default();
        warnings.extend(parsed.warnings.iter().cloned());
        RuntimeConfig {
            path,
            table,
            parsed,
            warnings,
        }
    }

    /// The settings builds use (registry TLS, auth, mirrors, insecure hosts).
    pub fn config(&self) -> Config {
        self.parsed.clone()
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
            Some(text) => {
                let t = syntax(text)?;
                // Every key must be known: an update is refused, not half-applied.
                let checked = Config::from_toml_str(text, "config_content")
                    .map_err(|e| ApiError::bad(kind::INVALID_CONFIG, e.to_string()))?;
                if let Some(w) = checked.warnings.first() {
                    return Err(ApiError::bad(kind::INVALID_CONFIG, w.clone()));
                }
                t
            }
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
        self.parsed = parse(&table, &self.path.display().to_string())?;
        self.table = table;
        self.warnings.clear();
        Ok(())
    }
}

/// The typed config of a (validated) table.
fn parse(table: &Table, origin: &str) -> Result<Config, ApiError> {
    let text = toml::to_string(table).map_err(ApiError::internal)?;
    Config::from_toml_str(&text, origin)
        .map_err(|e| ApiError::bad(kind::INVALID_CONFIG, e.to_string()))
}

/// Parse TOML text; syntax errors name the line.
fn syntax(text: &str) -> Result<Table, ApiError> {
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
        let e = syntax("[registry.\"a\"]\nhttp = true\nfoo = [\n").unwrap_err();
        assert!(e.message.contains("line"), "{}", e.message);
        let mut t = syntax("[registry.\"r\"]\npassword = \"hunter2\"\n").unwrap();
        redact(&mut t);
        assert!(!toml::to_string(&t).unwrap().contains("hunter2"));
    }
}
