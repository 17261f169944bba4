//! BuildKit's build-check vocabulary: rule names, the `# check=` directive (`skip=`, `error=`),
//! the "did you mean" suggestion (`util/suggest`, Levenshtein distance < 3) and Go's
//! `time.ParseDuration` used by HEALTHCHECK options.
//!
//! Must not: run checks (they need expansion context; `plan` runs them).

pub const STAGE_NAME_CASING: &str = "StageNameCasing";
pub const FROM_AS_CASING: &str = "FromAsCasing";
pub const NO_EMPTY_CONTINUATION: &str = "NoEmptyContinuation";
pub const CONSISTENT_INSTRUCTION_CASING: &str = "ConsistentInstructionCasing";
pub const DUPLICATE_STAGE_NAME: &str = "DuplicateStageName";
pub const RESERVED_STAGE_NAME: &str = "ReservedStageName";
pub const JSON_ARGS_RECOMMENDED: &str = "JSONArgsRecommended";
pub const MAINTAINER_DEPRECATED: &str = "MaintainerDeprecated";
pub const UNDEFINED_ARG_IN_FROM: &str = "UndefinedArgInFrom";
pub const WORKDIR_RELATIVE_PATH: &str = "WorkdirRelativePath";
pub const UNDEFINED_VAR: &str = "UndefinedVar";
pub const MULTIPLE_INSTRUCTIONS_DISALLOWED: &str = "MultipleInstructionsDisallowed";
pub const LEGACY_KEY_VALUE_FORMAT: &str = "LegacyKeyValueFormat";
pub const REDUNDANT_TARGET_PLATFORM: &str = "RedundantTargetPlatform";
pub const SECRETS_USED_IN_ARG_OR_ENV: &str = "SecretsUsedInArgOrEnv";
pub const INVALID_DEFAULT_ARG_IN_FROM: &str = "InvalidDefaultArgInFrom";
pub const FROM_PLATFORM_FLAG_CONST_DISALLOWED: &str = "FromPlatformFlagConstDisallowed";
pub const EXPOSE_PROTO_CASING: &str = "ExposeProtoCasing";
/// Not a BuildKit check rule: Docker's "[Warning] One or more build-args … were not consumed".
pub const UNUSED_BUILD_ARGS: &str = "UnusedBuildArgs";

/// The `# check=` directive (or the `BUILDKIT_DOCKERFILE_CHECK` build argument).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: Vec<String>,
    pub error: bool,
}

impl CheckConfig {
    /// BuildKit's `linter.ParseLintOptions`; the error text is BuildKit's.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let mut cfg = CheckConfig::default();
        if s.is_empty() {
            return Ok(cfg);
        }
        for part in s.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}"));
            };
            match k.trim() {
                "skip" => {
                    let v = v.trim();
                    if v == "all" {
                        cfg.skip_all = true;
                    } else {
                        cfg.skip = v.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "error" => {
                    cfg.error = parse_go_bool(v.trim())
                        .ok_or_else(|| format!("failed to parse check option {part:?}"))?
                }
                "experimental" => {}
                k => return Err(format!("invalid check option {k:?}")),
            }
        }
        Ok(cfg)
    }

    pub fn enabled(&self, rule: &str) -> bool {
        !self.skip_all && !self.skip.iter().any(|r| r == rule)
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// BuildKit's `suggest.WrapErrorMaybe`: the closest option at distance < 3, none on an exact match.
pub fn suggest<'a>(
    val: &str,
    options: impl IntoIterator<Item = &'a str>,
    case_sensitive: bool,
) -> Option<String> {
    let v = if case_sensitive {
        val.to_string()
    } else {
        val.to_lowercase()
    };
    let mut best: Option<String> = None;
    let mut min = 3;
    for o in options {
        let o = if case_sensitive {
            o.to_string()
        } else {
            o.to_lowercase()
        };
        if o == v {
            return None;
        }
        let d = levenshtein(&v, &o);
        if d < min {
            min = d;
            best = Some(if case_sensitive {
                o
            } else if val == val.to_lowercase() {
                o.to_lowercase()
            } else if val == val.to_uppercase() {
                o.to_uppercase()
            } else {
                o
            });
        }
    }
    best
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total += n * unit;
    }
    if total > i64::MAX as f64 {
        return Err(bad());
    }
    let v = total.round() as i64;
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("5x").is_err());
    }

    #[test]
    fn check_directive() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended,StageNameCasing;error=true").unwrap();
        assert!(c.error && !c.enabled("StageNameCasing") && c.enabled("UndefinedVar"));
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert!(CheckConfig::parse("nonsense").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("RUNN", ["run", "cmd"], false).as_deref(),
            Some("RUN")
        );
        assert_eq!(
            suggest("form", ["from", "chown"], true).as_deref(),
            Some("from")
        );
        assert_eq!(suggest("zzzzzz", ["from"], true), None);
    }
}
