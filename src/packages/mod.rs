//! Package builds: a base image plus APT, Conda and pip lines (one package per line) → validated
//! lines → a generated Dockerfile text. The engine then builds that text like any other
//! Dockerfile, so the cache, logs, records and cancel of a package build are those of any build.
//!
//! Every line is checked against its tool's grammar (Debian package names and version pins,
//! PEP 508 requirements, conda match specs) before anything runs, and every value that reaches
//! the generated `RUN` lines is single-quoted, so nothing a user types reaches a shell unquoted.
//!
//! Must not: do I/O, look at the base image, or run anything — it only turns a spec into text.

mod apt;
mod conda;
mod pip;
mod render;

pub use apt::AptPackage;
pub use conda::{CondaLine, MatchSpec};
pub use pip::Requirement;
pub use render::shell_quote;

use serde::{Deserialize, Serialize};

/// `"packages": {"base", "apt", "conda", "pip", "gpu_base"}` of a build spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackageSpec {
    /// The base image (CPU base of a `universal` image).
    pub base: String,
    pub apt: Vec<String>,
    pub conda: Vec<String>,
    pub pip: Vec<String>,
    /// The GPU base of a `universal` image (default: `base`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_base: Option<String>,
}

/// A package spec that cannot be built, naming the list, the line (1-based) and the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("packages.base: missing (give the base image to install into)")]
    NoBase,
    #[error("packages.{field}: {value:?} is not an image reference: {why}")]
    BadBase {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("packages: nothing to install (give apt, conda or pip lines)")]
    Nothing,
    #[error("packages.{list} line {line} {text:?}: {why}")]
    Line {
        list: &'static str,
        line: usize,
        text: String,
        why: String,
    },
}

/// The validated lines of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub apt: Vec<AptPackage>,
    pub conda: CondaInstall,
    pub pip: Vec<Requirement>,
}

/// The conda lines: specs and the channels named by `-c CHANNEL` lines or spec prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CondaInstall {
    pub channels: Vec<String>,
    pub specs: Vec<MatchSpec>,
}

/// Characters no line may hold whatever its tool: they would end the Dockerfile line, continue
/// it, open a heredoc or carry control bytes.
fn check_common(list: &'static str, line: usize, text: &str) -> Result<(), PackageError> {
    let why = if text.chars().any(|c| c.is_control()) {
        Some("control characters (newline, tab…) are not allowed")
    } else if text.contains('\\') {
        Some("backslashes are not allowed")
    } else if text.contains("<<") {
        Some("'<<' is not allowed")
    } else if text.len() > 512 {
        Some("longer than 512 characters")
    } else {
        None
    };
    match why {
        Some(w) => Err(PackageError::Line {
            list,
            line,
            text: text.to_string(),
            why: w.to_string(),
        }),
        None => Ok(()),
    }
}

/// Lines as given, minus blank lines and `#` comments, with their 1-based numbers.
fn lines(list: &[String]) -> impl Iterator<Item = (usize, &str)> {
    list.iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn check_base(field: &'static str, value: &str) -> Result<(), PackageError> {
    if value.chars().any(|c| c.is_whitespace() || c == '$') {
        return Err(PackageError::BadBase {
            field,
            value: value.to_string(),
            why: "whitespace and '$' are not allowed".into(),
        });
    }
    value
        .parse::<crate::reference::Reference>()
        .map(|_| ())
        .map_err(|e| PackageError::BadBase {
            field,
            value: value.to_string(),
            why: e.to_string(),
        })
}

impl PackageSpec {
    /// Check the bases and every line; the first bad one is the error.
    pub fn validate(&self) -> Result<Validated, PackageError> {
        if self.base.trim().is_empty() {
            return Err(PackageError::NoBase);
        }
        check_base("base", &self.base)?;
        if let Some(g) = &self.gpu_base {
            check_base("gpu_base", g)?;
        }
        let mut apt_out = Vec::new();
        for (n, l) in lines(&self.apt) {
            check_common("apt", n, l)?;
            apt_out.push(AptPackage::parse(l).map_err(|why| PackageError::Line {
                list: "apt",
                line: n,
                text: l.to_string(),
                why,
            })?);
        }
        let mut conda_out = CondaInstall::default();
        for (n, l) in lines(&self.conda) {
            check_common("conda", n, l)?;
            let parsed = CondaLine::parse(l).map_err(|why| PackageError::Line {
                list: "conda",
                line: n,
                text: l.to_string(),
                why,
            })?;
            conda_out.add(parsed);
        }
        let mut pip_out = Vec::new();
        for (n, l) in lines(&self.pip) {
            check_common("pip", n, l)?;
            pip_out.push(Requirement::parse(l).map_err(|why| PackageError::Line {
                list: "pip",
                line: n,
                text: l.to_string(),
                why,
            })?);
        }
        if apt_out.is_empty() && conda_out.specs.is_empty() && pip_out.is_empty() {
            return Err(PackageError::Nothing);
        }
        Ok(Validated {
            apt: apt_out,
            conda: conda_out,
            pip: pip_out,
        })
    }

    /// The GPU base of a `universal` image: `gpu_base`, else `base`.
    pub fn gpu_base(&self) -> &str {
        self.gpu_base.as_deref().unwrap_or(&self.base)
    }

    /// The Dockerfile that installs the spec's packages on `base` (the spec's own `base`, or its
    /// GPU base for the GPU image of a `universal` build).
    pub fn dockerfile(&self, base: &str) -> Result<String, PackageError> {
        let v = self.validate()?;
        check_base("base", base)?;
        Ok(render::dockerfile(base, &v))
    }
}

impl CondaInstall {
    fn add(&mut self, line: CondaLine) {
        for c in line.channels {
            if !self.channels.contains(&c) {
                self.channels.push(c);
            }
        }
        if let Some(s) = line.spec {
            self.specs.push(s);
        }
    }
}

#[cfg(test)]
mod tests;
