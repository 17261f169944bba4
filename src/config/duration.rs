//! Durations as buildkitd.toml and `docker buildx prune --filter until=` write them: Go's
//! `time.ParseDuration` (`48h`, `1h30m`, `90s`, `1.5h`), or a bare integer of seconds (buildkitd's
//! `config.Duration.UnmarshalText` accepts both); kiln also takes `d` for days (`60d`), which
//! BuildKit's own defaults are written in.
//!
//! Must not: accept negative or overflowing durations.

use std::time::Duration;

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a duration (e.g. 48h, 1h30m, 90s, 60d, or seconds as an integer)")]
pub struct DurationError {
    pub value: String,
}

/// Go's `time.ParseDuration` grammar plus `d`, or integer seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        value: s.to_string(),
    };
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = t;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let num: f64 = rest[..n].parse().map_err(|_| err())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(err()),
        };
        total += num * secs;
        rest = &rest[u..];
    }
    if !total.is_finite() || total > u64::MAX as f64 / 2.0 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_seconds_and_days() {
        assert_eq!(parse_duration("48h"), Ok(Duration::from_secs(48 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("60d"), Ok(Duration::from_secs(60 * 86400)));
        for bad in ["", "h", "-1h", "1x", "1h2", "soon"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
