//! `GET/PUT /v1/config`: the registry settings the daemon hands to builds, changed at run time
//! without a restart.
//!
//! Two layers, combined for every build:
//! - the TOML layer: a whole kiln.toml / buildkitd.toml (`config_content`), persisted to `--config`
//!   (or `<root>/daemon/config.toml`). An operator's real buildkitd.toml is accepted: what kiln
//!   understands is applied and every key it does not use comes back as a warning, all at once, in
//!   the answer and the daemon log. Only syntax errors and wrong types are refused.
//! - the insecure layer: the `insecure_registries` list, persisted to
//!   `<root>/daemon/insecure_registries.json` and kept until it is set again (a later
//!   `config_content` does not drop it). Builds treat as insecure the union of this list and the
//!   TOML layer's own `insecure_registries`.
//!
//! Must not: show or log a secret (passwords and tokens are redacted in every answer).

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::api::{kind, ConfigUpdate, ConfigView, REDACTED};
use crate::config::Config;

use super::log;
use super::{ApiError, DaemonSettings};

const SECRET_KEYS: &[&str] = &["password", "identitytoken", "token", "secret", "auth"];

pub(crate) struct RuntimeConfig {
    /// Where the TOML layer is persisted.
    path: PathBuf,
    /// Where the insecure layer is persisted.
    insecure_path: PathBuf,
    /// The TOML layer as it was given (comments kept).
    text: String,
    parsed: Config,
    /// The insecure layer.
    insecure: Vec<String>,
    pub warnings: Vec<String>,
}

impl RuntimeConfig {
    pub(crate) fn load(settings: &DaemonSettings) -> RuntimeConfig {
        let path = settings
            .config_path
            .clone()
            .unwrap_or_else(|| settings.root.join("daemon").join("config.toml"));
        let insecure_path = settings
            .root
            .join("daemon")
            .join("insecure_registries.json");
        let mut warnings = Vec::new();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let parsed = match Config::from_toml_str(&text, &origin) {
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!("{e} (ignored; starting with no registry settings)"));
                Config::default()
            }
        };
        warnings.extend(parsed.warnings.iter().cloned());
        let insecure = std::fs::read(&insecure_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
            .unwrap_or_default();
        RuntimeConfig {
            path,
            insecure_path,
            text,
            parsed,
            insecure,
            warnings,
        }
    }

    /// The settings builds use (registry TLS, auth, mirrors, insecure hosts of both layers).
    pub(crate) fn config(&self) -> Config {
        let mut c = self.parsed.clone();
        c.merge_insecure_registries(&self.insecure.join(","));
        c
    }

    /// Every host builds treat as insecure: the TOML layer's list, then the insecure layer's.
    pub(crate) fn insecure_registries(&self) -> Vec<String> {
        self.config().insecure_registries
    }

    pub(crate) fn view(&self) -> ConfigView {
        let mut shown = syntax(&self.text).unwrap_or_default();
        redact(&mut shown);
        ConfigView {
            insecure_registries: self.insecure_registries(),
            config: toml::to_string(&shown).unwrap_or_default(),
            warnings: self.warnings.clone(),
        }
    }

    /// Apply an update; files are written before the new settings are used, and nothing is
    /// changed when any part is refused.
    pub(crate) fn update(&mut self, u: &ConfigUpdate) -> Result<(), ApiError> {
        if u.insecure_registries.is_none() && u.config_content.is_none() {
            return Err(ApiError::bad(
                kind::INVALID_REQUEST,
                "give insecure_registries and/or config_content",
            ));
        }
        let parsed = match &u.config_content {
            Some(text) => {
                syntax(text)?;
                Some(
                    Config::from_toml_str(text, "config_content")
                        .map_err(|e| ApiError::bad(kind::INVALID_CONFIG, e.to_string()))?,
                )
            }
            None => None,
        };
        let insecure = match &u.insecure_registries {
            Some(hosts) => Some(checked_hosts(&hosts.0)?),
            None => None,
        };
        if let (Some(text), Some(parsed)) = (&u.config_content, parsed) {
            write_atomic(&self.path, text.as_bytes())?;
            self.text = text.clone();
            self.warnings = parsed.warnings.clone();
            self.parsed = parsed;
        }
        if let Some(hosts) = insecure {
            let json = serde_json::to_vec(&hosts).map_err(ApiError::internal)?;
            write_atomic(&self.insecure_path, &json)?;
            self.insecure = hosts;
        }
        log::info(
            "config.changed",
            &[
                ("config_content", u.config_content.is_some().into()),
                (
                    "insecure_registries",
                    self.insecure_registries().join(",").into(),
                ),
                ("warnings", self.warnings.len().into()),
            ],
        );
        if u.config_content.is_some() {
            for w in &self.warnings {
                log::warn("config.warning", &[("message", w.as_str().into())]);
            }
        }
        Ok(())
    }
}

/// `host[:port]` entries, or a 400 naming the first that is not one.
fn checked_hosts(hosts: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for h in hosts {
        if let Err(e) = crate::reference::check_host(h) {
            return Err(ApiError::bad(
                kind::INVALID_CONFIG,
                format!("insecure_registries: {e}"),
            ));
        }
        if !out.contains(h) {
            out.push(h.clone());
        }
    }
    Ok(out)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ApiError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(ApiError::internal)?;
    }
    // 0600: the file may hold registry passwords.
    crate::atomic::atomic_write(path, bytes, 0o600, None).map_err(ApiError::internal)
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
