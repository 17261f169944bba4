//! The daemon's own log on stderr (what `kubectl logs` of the sidecar shows): one structured line
//! per thing an operator looks for — listening, a build accepted (with the peer's uid), started,
//! finished / failed / cancelled (with duration and digest), config changed (with its warnings),
//! shutting down. `--log-format text` (default) writes `time LEVEL event key=value…`, `json` one JSON
//! object per line.
//!
//! Must not: log a secret. Callers pass only ids, tags, paths, counts, digests and error messages
//! already scrubbed of the build's secrets — never a spec, a credential or a config text.

use std::io::Write;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "invalid log format {other:?}: expected text or json"
            )),
        }
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Choose the format (first call wins; the default is text).
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
}

pub(crate) fn info(event: &str, fields: &[(&str, Value)]) {
    write("info", event, fields);
}

pub(crate) fn warn(event: &str, fields: &[(&str, Value)]) {
    write("warn", event, fields);
}

pub(crate) fn error(event: &str, fields: &[(&str, Value)]) {
    write("error", event, fields);
}

fn write(level: &str, event: &str, fields: &[(&str, Value)]) {
    let line = render(
        FORMAT.get().copied().unwrap_or_default(),
        &utc_now(),
        level,
        event,
        fields,
    );
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
}

fn render(
    format: LogFormat,
    time: &str,
    level: &str,
    event: &str,
    fields: &[(&str, Value)],
) -> String {
    match format {
        LogFormat::Json => {
            let mut m = Map::new();
            m.insert("time".into(), time.into());
            m.insert("level".into(), level.into());
            m.insert("event".into(), event.into());
            for (k, v) in fields {
                m.insert((*k).to_string(), v.clone());
            }
            format!("{}\n", Value::Object(m))
        }
        LogFormat::Text => {
            let mut s = format!("{time} {:<5} {event}", level.to_ascii_uppercase());
            for (k, v) in fields {
                s.push(' ');
                s.push_str(k);
                s.push('=');
                s.push_str(&text_value(v));
            }
            s.push('\n');
            s
        }
    }
}

/// Bare when it is one plain word, else JSON-quoted (newlines and quotes escaped).
fn text_value(v: &Value) -> String {
    match v {
        Value::String(s)
            if !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) =>
        {
            s.clone()
        }
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// RFC 3339 UTC with milliseconds.
fn utc_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_utc(d.as_secs() as i64, d.subsec_millis())
}

/// `secs` since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_utc(secs: i64, millis: u32) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_both_formats() {
        let f = [("id", Value::from("abc")), ("tags", Value::from("a:1 b:2"))];
        let t = render(LogFormat::Text, "T", "info", "build.accepted", &f);
        assert_eq!(t, "T INFO  build.accepted id=abc tags=\"a:1 b:2\"\n");
        let j = render(LogFormat::Json, "T", "warn", "x", &f);
        let v: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["tags"], "a:1 b:2");
        assert_eq!(format_utc(0, 5), "1970-01-01T00:00:00.005Z");
        assert_eq!(format_utc(1_709_251_199, 0), "2024-02-29T23:59:59.000Z");
    }
}
