//! Conda lines: match specs per conda's grammar
//! `(channel(/subdir):(namespace):)name(version(build))[key1=value1,…]`, optionally after a
//! `-c CHANNEL` / `--channel CHANNEL` option (`-c conda-forge::numpy==1.17*` names the channel in
//! the spec itself; `-c conda-forge` alone only adds a channel).

/// One parsed match spec. `text` is the spec as given, which conda, mamba and micromamba read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchSpec {
    pub channel: Option<String>,
    pub subdir: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub version: Option<String>,
    pub build: Option<String>,
    /// `[key=value,…]`, values unquoted.
    pub brackets: Vec<(String, String)>,
    pub text: String,
}

/// A conda line: channels it adds, and the spec it installs (if any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CondaLine {
    pub channels: Vec<String>,
    pub spec: Option<MatchSpec>,
}

const SUBDIRS: [&str; 14] = [
    "noarch",
    "linux-32",
    "linux-64",
    "linux-aarch64",
    "linux-armv6l",
    "linux-armv7l",
    "linux-ppc64le",
    "linux-s390x",
    "osx-64",
    "osx-arm64",
    "win-32",
    "win-64",
    "win-arm64",
    "zos-z",
];

const KEYS: [&str; 14] = [
    "name",
    "version",
    "build",
    "build_number",
    "channel",
    "subdir",
    "namespace",
    "md5",
    "sha256",
    "license",
    "fn",
    "url",
    "track_features",
    "features",
];

/// A channel: a name (letters, digits, `-`, `_`, `.`, with `/label/…` paths) or an http(s) URL.
fn channel_ok(c: &str) -> bool {
    let body = c
        .strip_prefix("https://")
        .or_else(|| c.strip_prefix("http://"))
        .unwrap_or(c);
    !body.is_empty()
        && !body.starts_with('/')
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        && (c.contains("://") || !body.contains(".."))
}

fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.*".contains(&b))
}

/// Versions: conda's version-spec language (`1.8*`, `>=1.8,<2|1.9`, `==1.17.*`, `!=1.0`, `~=1.2`).
fn version_ok(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._*+!,|<>=~-()".contains(&b))
}

fn build_ok(b: &str) -> bool {
    !b.is_empty()
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._*+-".contains(&c))
}

/// Split on commas that are not inside '…' or "…".
fn split_outside_quotes(s: &str) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.last_mut().expect("never empty").push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                out.last_mut().expect("never empty").push(c);
            }
            (None, ',') => out.push(String::new()),
            (_, c) => out.last_mut().expect("never empty").push(c),
        }
    }
    match quote {
        Some(_) => Err("unterminated quote in the brackets".into()),
        None => Ok(out),
    }
}

/// `[k=v, k2='v2']` → pairs (the brackets already stripped).
fn brackets(inner: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for kv in split_outside_quotes(inner)?
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("bracket item {kv:?} is not key=value"))?;
        let k = k.trim();
        if !KEYS.contains(&k) {
            return Err(format!("unknown bracket key {k:?}"));
        }
        let v = v.trim();
        let v = ['\'', '"']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|x| x.strip_suffix(*q)))
            .unwrap_or(v);
        let ok = !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._*+!<>=~|,-/:@".contains(&b));
        if !ok {
            return Err(format!(
                "bracket value {v:?} of {k:?} holds characters conda does not use"
            ));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Split `version+build` the way conda does: `1.0=py27_0`, `==1.0=py27_0`, `>=1.8,<2`.
fn version_build(s: &str) -> (String, Option<String>) {
    let b = s.as_bytes();
    // A `=` that is neither part of an operator nor doubled separates the build.
    for i in (1..b.len()).rev() {
        if b[i] == b'=' && !b"<>!=~".contains(&b[i - 1]) && b.get(i + 1).is_none_or(|c| *c != b'=')
        {
            return (s[..i].to_string(), Some(s[i + 1..].to_string()));
        }
    }
    (s.to_string(), None)
}

impl MatchSpec {
    pub fn parse(text: &str) -> Result<MatchSpec, String> {
        let text = text.trim();
        let mut spec = MatchSpec {
            text: text.to_string(),
            ..MatchSpec::default()
        };
        let mut s = text;
        if let Some(open) = s.find('[') {
            let inner = s[open + 1..]
                .strip_suffix(']')
                .ok_or("'[' without a closing ']' at the end")?;
            spec.brackets = brackets(inner)?;
            s = &s[..open];
        }
        // channel(/subdir):namespace:rest — split on the last two colons, as conda does.
        let parts: Vec<&str> = s.rsplitn(3, ':').collect();
        if parts.len() == 3 {
            let (chan, ns) = (parts[2], parts[1]);
            let (chan, sub) = match chan.rsplit_once('/') {
                Some((c, d)) if SUBDIRS.contains(&d) => (c, Some(d)),
                _ => (chan, None),
            };
            if chan != "*" && !channel_ok(chan) {
                return Err(format!("{chan:?} is not a channel name or URL"));
            }
            if chan != "*" {
                spec.channel = Some(chan.to_string());
            }
            spec.subdir = sub.map(str::to_string);
            if !ns.is_empty() {
                if !name_ok(ns) {
                    return Err(format!("{ns:?} is not a namespace"));
                }
                spec.namespace = Some(ns.to_string());
            }
            s = parts[0];
        } else if parts.len() == 2 {
            return Err("a channel needs '::' before the name (channel::name)".into());
        }
        let s = s.trim();
        let end = s.find(|c: char| " =<>!~".contains(c)).unwrap_or(s.len());
        let name = &s[..end];
        if !name_ok(name) {
            return Err(format!(
                "{name:?} is not a package name (letters, digits, - _ . and the * wildcard)"
            ));
        }
        spec.name = name.to_string();
        let rest = s[end..].trim();
        let mut words: Vec<String> = Vec::new();
        for w in rest.split_whitespace() {
            // `numpy >= 1.8`: an operator standing alone belongs to the version after it.
            match words.last_mut() {
                Some(prev) if prev.bytes().all(|b| b"<>=!~".contains(&b)) => prev.push_str(w),
                _ => words.push(w.to_string()),
            }
        }
        let (version, build) = match words.as_slice() {
            [] => (None, None),
            [vb] => {
                let vb = vb.as_str();
                // `=1.0=py27_0`: one leading '=' is conda's fuzzy "1.0.*" shorthand.
                let vb = match vb.strip_prefix('=') {
                    Some(x) if !x.starts_with('=') => x,
                    _ => vb,
                };
                let (v, b) = version_build(vb);
                (Some(v), b)
            }
            [v, b] => (Some(v.to_string()), Some(b.to_string())),
            _ => return Err(format!("{rest:?}: expected at most a version and a build")),
        };
        if let Some(v) = &version {
            if !version_ok(v) {
                return Err(format!("{v:?} is not a conda version spec"));
            }
        }
        if let Some(b) = &build {
            if !build_ok(b) {
                return Err(format!("{b:?} is not a build string"));
            }
        }
        if spec.name.contains('*') && spec.brackets.is_empty() && version.is_none() {
            return Err("a wildcard name installs nothing definite; name the package".into());
        }
        spec.version = version;
        spec.build = build;
        Ok(spec)
    }
}

impl CondaLine {
    pub fn parse(line: &str) -> Result<CondaLine, String> {
        let mut out = CondaLine::default();
        let mut words = line.split_whitespace().peekable();
        let mut rest: Vec<&str> = Vec::new();
        while let Some(w) = words.next() {
            match w {
                "-c" | "--channel" => {
                    let c = words.next().ok_or("-c needs a channel")?;
                    if c.contains("::") {
                        // `-c conda-forge::numpy==1.17*`: the channel is the spec's own.
                        let spec = MatchSpec::parse(c)?;
                        out.channels.extend(spec.channel.clone());
                        rest.push(c);
                    } else if channel_ok(c) {
                        out.channels.push(c.to_string());
                    } else {
                        return Err(format!("{c:?} is not a channel name or URL"));
                    }
                }
                w if w.starts_with('-') => {
                    return Err(format!("option {w:?} is not allowed (only -c/--channel)"))
                }
                w => rest.push(w),
            }
        }
        if !rest.is_empty() {
            let spec = MatchSpec::parse(&rest.join(" "))?;
            if let Some(c) = &spec.channel {
                if !out.channels.contains(c) {
                    out.channels.push(c.clone());
                }
            }
            out.spec = Some(spec);
        }
        if out.channels.is_empty() && out.spec.is_none() {
            return Err("empty conda line".into());
        }
        Ok(out)
    }
}
