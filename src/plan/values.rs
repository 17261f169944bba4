//! Validators and parsers for expanded instruction values, as BuildKit and its libraries apply them:
//! `RUN --mount` CSV options (`instructions/commands_runmount.go`), EXPOSE port specs
//! (`go-connections/nat`), STOPSIGNAL names (`moby/sys/signal`), tmpfs
//! sizes (`go-units.RAMInBytes`) and image references (`distribution/reference`).
//!
//! Must not: look up stages or expand variables itself (callers pass an expander).

use super::types::{CopySource, Mount, Sharing};

/// `(what is wrong, offending text)`
pub(crate) type ValueError = (String, String);

/// Go's `encoding/csv` on one record (no lazy quotes).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        field.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        field.push(*c);
                        i += 1;
                    }
                }
            }
            if !matches!(chars.get(i), None | Some(',')) {
                return Err("extraneous or missing \" in quoted-field".into());
            }
        } else {
            while let Some(c) = chars.get(i).filter(|c| **c != ',') {
                if *c == '"' {
                    return Err("bare \" in non-quoted-field".into());
                }
                field.push(*c);
                i += 1;
            }
        }
        out.push(field);
        if chars.get(i) == Some(&',') {
            i += 1;
        } else {
            return Ok(out);
        }
    }
}

/// `path.Join` + `path.Clean` for absolute results.
pub(crate) fn join_clean(base: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parse_bool(key: &str, v: &str, spec: &str) -> Result<bool, ValueError> {
    crate::dockerfile::checks::parse_go_bool(v)
        .ok_or_else(|| (format!("invalid value for {key}: {v}"), spec.to_string()))
}

fn parse_u32(key: &str, v: &str, radix: u32, spec: &str) -> Result<u32, ValueError> {
    u32::from_str_radix(v, radix)
        .map_err(|_| (format!("invalid value {v} for {key}"), spec.to_string()))
}

#[derive(Default)]
struct RawMount {
    typ: String,
    from: Option<String>,
    source: Option<String>,
    target: Option<String>,
    readonly: Option<bool>,
    required: bool,
    size: Option<i64>,
    id: Option<String>,
    sharing: Option<Sharing>,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    env: Option<String>,
}

/// Parses one `--mount` value. `expand` expands a value; `resolve` maps `from=` to a stage or image;
/// `ssh_index` numbers default SSH socket targets. Ports BuildKit's `parseMount`
/// (`frontend/dockerfile/instructions/commands_runmount.go`) as one function, hence its length.
pub(crate) fn parse_mount(
    spec: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, ValueError>,
    resolve: &dyn Fn(&str) -> Result<CopySource, ValueError>,
    workdir: &str,
    ssh_index: usize,
) -> Result<Mount, ValueError> {
    let fields = csv_fields(spec)
        .map_err(|e| (format!("failed to parse csv mounts: {e}"), spec.to_string()))?;
    let mut m = RawMount {
        typ: "bind".into(),
        ..Default::default()
    };
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => m.readonly = Some(true),
                "readwrite" | "rw" => m.readonly = Some(false),
                "required" if m.typ == "secret" || m.typ == "ssh" => m.required = true,
                "required" => {
                    return Err((
                        format!("unexpected key '{key}' for mount type '{}'", m.typ),
                        spec.to_string(),
                    ))
                }
                _ => {
                    return Err((
                        format!("invalid field '{field}' must be a key=value pair"),
                        spec.to_string(),
                    ))
                }
            }
            continue;
        };
        if key == "from" {
            if let Some(i) = value.find('$') {
                if i != value.len() - 1 {
                    return Err((
                        "'from' doesn't support variable expansion, define alias stage instead"
                            .into(),
                        spec.to_string(),
                    ));
                }
            }
        }
        let value = expand(&value)?;
        match key.as_str() {
            "type" => {
                let t = value.to_ascii_lowercase();
                const TYPES: [&str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];
                if !TYPES.contains(&t.as_str()) {
                    let mut what = format!("unsupported mount type {value:?}");
                    if let Some(s) = crate::dockerfile::checks::suggest(&value, TYPES, true) {
                        what.push_str(&format!(" (did you mean {s}?)"));
                    }
                    return Err((what, spec.to_string()));
                }
                m.typ = t;
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => m.readonly = Some(parse_bool(&key, &value, spec)?),
            "readwrite" | "rw" => m.readonly = Some(!parse_bool(&key, &value, spec)?),
            "required" if m.typ == "secret" || m.typ == "ssh" => {
                m.required = parse_bool(&key, &value, spec)?
            }
            "size" if m.typ == "tmpfs" => {
                m.size = Some(ram_in_bytes(&value).ok_or_else(|| {
                    (
                        format!("invalid value for {key}: {value}"),
                        spec.to_string(),
                    )
                })?)
            }
            "required" | "size" => {
                return Err((
                    format!("unexpected key '{key}' for mount type '{}'", m.typ),
                    spec.to_string(),
                ))
            }
            "id" => m.id = Some(value),
            "sharing" => {
                // Checked against the mount type once all fields are read, as BuildKit's
                // `validateMount` does (`sharing=locked,type=cache` is valid).
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err((
                            format!("unsupported sharing value {value:?}"),
                            spec.to_string(),
                        ))
                    }
                });
            }
            "mode" => m.mode = Some(parse_u32("mode", &value, 8, spec)?),
            "uid" => m.uid = Some(parse_u32("uid", &value, 10, spec)?),
            "gid" => m.gid = Some(parse_u32("gid", &value, 10, spec)?),
            "env" => m.env = Some(value),
            _ => {
                return Err((
                    format!("unexpected key '{key}' in '{field}'"),
                    spec.to_string(),
                ))
            }
        }
    }
    let file_info_ok = matches!(m.typ.as_str(), "secret" | "ssh" | "cache");
    if !file_info_ok {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err((
                    format!("{name} not allowed for {:?} type mounts", m.typ),
                    spec.to_string(),
                ));
            }
        }
    }
    if m.typ == "secret" {
        if m.from.is_some() {
            return Err((
                "secret mount should not have a from".into(),
                spec.to_string(),
            ));
        }
        if m.sharing.is_some() {
            return Err((
                "secret mount should not define sharing".into(),
                spec.to_string(),
            ));
        }
    }
    if m.sharing.is_some() && m.typ != "cache" {
        return Err((
            format!("invalid cache sharing set for {} mount", m.typ),
            spec.to_string(),
        ));
    }
    let readonly = m
        .readonly
        .unwrap_or(!matches!(m.typ.as_str(), "cache" | "tmpfs"));
    let dir_target = |t: &Option<String>| -> Result<String, ValueError> {
        let raw = t.clone().unwrap_or_default();
        let target = join_clean(workdir, &raw);
        if target == "/" {
            return Err((format!("invalid mount target {target:?}"), spec.to_string()));
        }
        Ok(target)
    };
    let from = match &m.from {
        Some(f) => Some(resolve(f)?),
        None => None,
    };
    Ok(match m.typ.as_str() {
        "bind" => Mount::Bind {
            target: dir_target(&m.target)?,
            source: m.source,
            from,
            readonly,
        },
        "cache" => Mount::Cache {
            target: dir_target(&m.target)?,
            id: m
                .id
                .clone()
                .unwrap_or_else(|| m.target.clone().unwrap_or_default()),
            sharing: m.sharing.unwrap_or(Sharing::Shared),
            from,
            source: m.source,
            readonly,
            mode: m.mode.unwrap_or(0o755),
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
        },
        "tmpfs" => Mount::Tmpfs {
            target: dir_target(&m.target)?,
            size: m.size,
        },
        "secret" => {
            if m.source.is_some() && m.id.is_some() {
                return Err(("both source and id can't be set".into(), spec.to_string()));
            }
            let id = match m.source.clone().or(m.id.clone()) {
                Some(id) => id,
                None => match &m.target {
                    Some(t) => base_name(t),
                    None => {
                        return Err((
                            "invalid secret mount. one of source, target required".into(),
                            spec.to_string(),
                        ))
                    }
                },
            };
            let target = match (&m.target, &m.env) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{}", base_name(&id))),
            };
            Mount::Secret {
                id,
                target,
                env: m.env,
                required: m.required,
                mode: m.mode.unwrap_or(0o400),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            }
        }
        _ => Mount::Ssh {
            id: m.id.unwrap_or_else(|| "default".into()),
            target: m
                .target
                .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_index}")),
            required: m.required,
            mode: m.mode.unwrap_or(0o600),
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
        },
    })
}

fn base_name(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// `go-units.RAMInBytes`: `64m`, `1.5GiB`, `1024` (binary multipliers).
fn ram_in_bytes(s: &str) -> Option<i64> {
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let n: f64 = s[..num_len].parse().ok()?;
    let unit = s[num_len..].trim_start_matches(' ').to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let mul: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    Some((n * mul) as i64)
}

/// EXPOSE entries → `port/proto` (ranges expanded), as `nat.ParsePortSpecs` produces.
pub(crate) fn parse_ports(raw: &str) -> Result<Vec<String>, ValueError> {
    let (spec, proto) = match raw.rsplit_once('/') {
        Some((s, p)) => (s, p.to_ascii_lowercase()),
        None => (raw, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(("invalid proto".into(), proto));
    }
    let container = spec.rsplit(':').next().unwrap_or(spec);
    let bad = || ("invalid containerPort".to_string(), container.to_string());
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = container.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

/// `signal.ParseSignal`: a non-zero number or a known name with or without `SIG`.
pub(crate) fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<i64>() {
        return n != 0;
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if SIGNALS.contains(&name) {
        return true;
    }
    let rt = |prefix: &str, sign: char| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(sign))
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=15).contains(&n) || (sign == '-' && n == 14))
    };
    rt("RTMIN", '+') || rt("RTMAX", '-')
}

/// `reference.ParseNormalizedNamed` validity (the text is distribution's error).
pub(crate) fn check_reference(r: &str) -> Result<(), String> {
    // kiln's local source: an OCI image layout on disk (`oci-layout://PATH[:tag]`), resolved by the
    // build, like BuildKit's oci-layout named contexts.
    if let Some(path) = r.strip_prefix("oci-layout://") {
        return if path.is_empty() {
            Err("invalid reference format: oci-layout:// needs a path".into())
        } else {
            Ok(())
        };
    }
    if r.is_empty() {
        return Err("invalid reference format".into());
    }
    if r.len() == 64
        && r.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return Err(
            "invalid repository name (64 hex), cannot specify 64-byte hexadecimal strings".into(),
        );
    }
    let (rest, digest) = match r.split_once('@') {
        Some((a, d)) => (a, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            alg.starts_with(|c: char| c.is_ascii_alphabetic())
                && alg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err("invalid reference format".into());
        }
    }
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = t.len() <= 128
            && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err("invalid reference format".into());
        }
    }
    let mut comps: Vec<&str> = name.split('/').collect();
    if comps.len() > 1
        && (comps[0].contains(['.', ':'])
            || comps[0] == "localhost"
            || comps[0].chars().any(|c| c.is_ascii_uppercase()))
    {
        let domain = comps.remove(0);
        let host = domain.split(':').next().unwrap_or("");
        let host_ok = !host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !host_ok {
            return Err("invalid reference format".into());
        }
    }
    // distribution/reference reports the normalised remote name (`library/` added for Docker Hub
    // official images).
    let remote = if comps.len() == 1 && !name.contains('/') {
        format!("library/{}", comps[0])
    } else {
        comps.join("/")
    };
    for c in &comps {
        if c.chars().any(|ch| ch.is_ascii_uppercase()) {
            return Err(format!(
                "invalid reference format: repository name ({remote}) must be lowercase"
            ));
        }
        let ok = !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && !c.contains("..")
            && !c.contains("___");
        if !ok {
            return Err("invalid reference format".into());
        }
    }
    if name.len() > 255 {
        return Err("repository name must not be more than 255 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        for ok in [
            "alpine",
            "alpine:3.20",
            "docker.io/library/alpine:latest",
            "localhost:5000/a/b@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_reference(ok), Ok(()), "{ok}");
        }
        for bad in ["", "alpine:", "Alpine", "a b", "alpine:3.20:x"] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_and_signals() {
        assert_eq!(
            parse_ports("8000-8002/udp").unwrap(),
            vec!["8000/udp", "8001/udp", "8002/udp"]
        );
        assert_eq!(parse_ports("80").unwrap(), vec!["80/tcp"]);
        assert!(parse_ports("80/xyz").is_err());
        assert!(
            valid_signal("SIGTERM")
                && valid_signal("9")
                && valid_signal("RTMIN+3")
                && !valid_signal("SIGFOO")
        );
    }
}
