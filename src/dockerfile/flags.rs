//! BuildKit's `BFlags`: per-instruction `--name=value` flags (string, repeated string, bool) with
//! its errors for unknown, duplicate and malformed flags.
//!
//! Must not: expand flag values (expansion is `plan`'s job).

use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Strings,
    Bool,
}

/// Parsed flag values.
#[derive(Default)]
pub(crate) struct Flags {
    strings: BTreeMap<&'static str, Vec<String>>,
    bools: BTreeMap<&'static str, bool>,
}

impl Flags {
    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.strings.get(name).and_then(|v| v.last().cloned())
    }
    pub(super) fn strings(&self, name: &str) -> Vec<String> {
        self.strings.get(name).cloned().unwrap_or_default()
    }
    pub(super) fn bool(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }
}

/// Why a flag was refused: `(what, offending text)`.
pub(crate) type FlagError = (String, String);

/// Parses `args` (each `--name[=value]`) against the allowed `spec`.
pub(crate) fn parse(args: &[String], spec: &[(&'static str, Kind)]) -> Result<Flags, FlagError> {
    let mut out = Flags::default();
    let mut used: Vec<&str> = Vec::new();
    for a in args {
        let Some(body) = a.strip_prefix("--") else {
            return Err(("arg should start with --".into(), a.clone()));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(key, kind)) = spec.iter().find(|(n, _)| *n == name) else {
            // BuildKit: `unknown flag: <name>` + suggest.WrapError's ` (did you mean <s>?)`; the
            // caller appends the instruction as the offending text.
            let mut what = format!("unknown flag: {name}");
            if let Some(s) =
                crate::dockerfile::checks::suggest(name, spec.iter().map(|(n, _)| *n), true)
            {
                what.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err((what, String::new()));
        };
        if used.contains(&key) && kind != Kind::Strings {
            return Err(("duplicate flag specified".into(), name.to_string()));
        }
        used.push(key);
        match kind {
            Kind::Bool => {
                if value == Some("") {
                    return Err(("missing a value on flag".into(), name.to_string()));
                }
                let v = match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(_) => {
                        return Err((
                            format!("expecting boolean value for flag {name}, not"),
                            value.unwrap_or("").into(),
                        ))
                    }
                };
                out.bools.insert(key, v);
            }
            Kind::Str | Kind::Strings => {
                let Some(v) = value else {
                    return Err(("missing a value on flag".into(), name.to_string()));
                };
                out.strings.entry(key).or_default().push(v.to_string());
            }
        }
    }
    Ok(out)
}
