//! BuildKit's build checks that need no expansion context (stage names, FROM/AS casing, instruction
//! casing) and the warning collector honouring `# check=skip=…`.
//!
//! Must not: fail a plan (the caller decides what `error=true` means).

use std::collections::BTreeSet;

use super::types::Warning;
use crate::dockerfile::checks::{self, CheckConfig};
use crate::dockerfile::{Dockerfile, Span};

/// Collects warnings for enabled rules.
pub(crate) struct Lints {
    pub cfg: CheckConfig,
    pub warnings: Vec<Warning>,
    pub called: BTreeSet<String>,
}

impl Lints {
    pub(super) fn new(cfg: CheckConfig) -> Self {
        Lints {
            cfg,
            warnings: Vec::new(),
            called: BTreeSet::new(),
        }
    }

    pub(super) fn add(&mut self, rule: &str, message: String, span: Span) {
        if !self.cfg.enabled(rule) {
            return;
        }
        let w = Warning {
            rule: rule.to_string(),
            message,
            span,
        };
        if !self.warnings.contains(&w) {
            self.called.insert(rule.to_string());
            self.warnings.push(w);
        }
    }

    /// `SecretsUsedInArgOrEnv`: `(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`
    /// unless a `public` token appears.
    pub(super) fn secret_key(&mut self, instruction: &str, key: &str, span: Span) {
        if secret_name(key) {
            self.add(
                checks::SECRETS_USED_IN_ARG_OR_ENV,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
                ),
                span,
            );
        }
    }
}

/// Whether BuildKit's `SecretsUsedInArgOrEnv` rule takes `key` for a secret's name:
/// `(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`
/// unless a `public` token appears. The build also keeps such build-arg values out of history.
pub fn secret_name(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let tokens: Vec<&str> = lower.split('_').collect();
    let deny = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    tokens.iter().any(|t| deny.contains(t)) && !tokens.contains(&"public")
}

fn is_lower(s: &str) -> bool {
    s == s.to_lowercase()
}

fn self_consistent(s: &str) -> bool {
    s == s.to_lowercase() || s == s.to_uppercase()
}

/// Stage-name and casing checks over the whole file.
pub(crate) fn static_checks(df: &Dockerfile, lints: &mut Lints) {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for st in &df.stages {
        let span = st.from.span;
        if let Some(name) = &st.name {
            if name == "scratch" || name == "context" {
                lints.add(
                    checks::RESERVED_STAGE_NAME,
                    format!("Stage name should not use the same name as reserved stage {name:?}"),
                    span,
                );
            }
            if !seen.insert(name) {
                lints.add(
                    checks::DUPLICATE_STAGE_NAME,
                    format!("Duplicate stage name {name:?}, stage names should be unique"),
                    span,
                );
            }
        }
        if let Some(w) = &st.name_as_written {
            if !is_lower(w) {
                lints.add(
                    checks::STAGE_NAME_CASING,
                    format!("Stage name '{w}' should be lowercase"),
                    span,
                );
            }
        }
        if let Some(as_kw) = &st.as_keyword {
            let from = &st.from.keyword;
            if is_lower(from) != is_lower(as_kw) || !self_consistent(as_kw) {
                lints.add(
                    checks::FROM_AS_CASING,
                    format!("'{as_kw}' and '{from}' keywords' casing do not match"),
                    span,
                );
            }
        }
    }
    let all = || {
        df.stages
            .iter()
            .flat_map(|s| std::iter::once(&s.from).chain(s.instructions.iter()))
    };
    let (mut lower, mut upper) = (0, 0);
    for ins in all() {
        if self_consistent(&ins.keyword) {
            if is_lower(&ins.keyword) {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for ins in all() {
        let k = &ins.keyword;
        let correct = if majority_lower && k.to_lowercase() != *k {
            "lowercase"
        } else if !majority_lower && k.to_uppercase() != *k {
            "uppercase"
        } else {
            continue;
        };
        lints.add(
            checks::CONSISTENT_INSTRUCTION_CASING,
            format!("Command '{k}' should match the case of the command majority ({correct})"),
            ins.span,
        );
    }
}
