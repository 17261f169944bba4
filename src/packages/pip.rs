//! pip lines: PEP 508 dependency specifiers — `name[extras] (version specifiers) ; marker` or
//! `name[extras] @ URL ; marker`. Options (`-r`, `--index-url`…) are refused: a line names one
//! requirement, never changes where pip looks.

/// One validated requirement; `text` is the line as given (trimmed), which pip reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub name: String,
    pub extras: Vec<String>,
    /// `(operator, version)` pairs.
    pub specifiers: Vec<(String, String)>,
    pub url: Option<String>,
    pub marker: Option<String>,
    pub text: String,
}

const OPS: [&str; 8] = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"];

const MARKER_VARS: [&str; 13] = [
    "python_version",
    "python_full_version",
    "os_name",
    "sys_platform",
    "platform_release",
    "platform_system",
    "platform_version",
    "platform_machine",
    "platform_python_implementation",
    "implementation_name",
    "implementation_version",
    "extra",
    "dependency_groups",
];

fn ident_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

fn version_ok(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.*+!-".contains(&c))
}

/// `a,b` → specifiers, each an operator then a version.
fn specifiers(s: &str) -> Result<Vec<(String, String)>, String> {
    let s = s.trim();
    let s = match s.strip_prefix('(') {
        Some(inner) => inner
            .strip_suffix(')')
            .ok_or("unbalanced '(' in the version specifier")?,
        None => s,
    };
    let mut out = Vec::new();
    for one in s.split(',') {
        let one = one.trim();
        let op = OPS
            .iter()
            .find(|o| one.starts_with(**o))
            .ok_or_else(|| format!("{one:?} is not a version specifier (==, >=, ~=, <, …)"))?;
        let v = one[op.len()..].trim();
        if !version_ok(v) {
            return Err(format!("{v:?} is not a version"));
        }
        out.push((op.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Marker tokens: names, quoted strings, operators, parentheses.
fn marker_tokens(m: &str) -> Result<Vec<String>, String> {
    let mut toks = Vec::new();
    let cs: Vec<char> = m.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = cs[i + 1..]
                .iter()
                .position(|&d| d == c)
                .ok_or("unterminated string in the marker")?;
            toks.push(cs[i..i + end + 2].iter().collect());
            i += end + 2;
        } else if c == '(' || c == ')' {
            toks.push(c.to_string());
            i += 1;
        } else if "<>=!~".contains(c) {
            let mut j = i;
            while j < cs.len() && "<>=!~".contains(cs[j]) {
                j += 1;
            }
            toks.push(cs[i..j].iter().collect());
            i = j;
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            let mut j = i;
            while j < cs.len() && (cs[j].is_ascii_alphanumeric() || cs[j] == '_' || cs[j] == '.') {
                j += 1;
            }
            toks.push(cs[i..j].iter().collect());
            i = j;
        } else {
            return Err(format!("unexpected {c:?} in the marker"));
        }
    }
    Ok(toks)
}

/// PEP 508's marker grammar over the tokens: or / and / (…) / var op var.
struct MarkerParser {
    toks: Vec<String>,
    pos: usize,
}

impl MarkerParser {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }
    fn next(&mut self) -> Option<String> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Result<(), String> {
        self.and()?;
        while self.peek() == Some("or") {
            self.pos += 1;
            self.and()?;
        }
        Ok(())
    }
    fn and(&mut self) -> Result<(), String> {
        self.expr()?;
        while self.peek() == Some("and") {
            self.pos += 1;
            self.expr()?;
        }
        Ok(())
    }
    fn expr(&mut self) -> Result<(), String> {
        if self.peek() == Some("(") {
            self.pos += 1;
            self.or()?;
            return match self.next().as_deref() {
                Some(")") => Ok(()),
                _ => Err("missing ')' in the marker".into()),
            };
        }
        self.var()?;
        match self.next().as_deref() {
            Some("in") => {}
            Some("not") if self.peek() == Some("in") => self.pos += 1,
            Some(op) if OPS.contains(&op) => {}
            other => {
                return Err(format!(
                    "expected a comparison in the marker, got {other:?}"
                ))
            }
        }
        self.var()
    }
    fn var(&mut self) -> Result<(), String> {
        match self.next() {
            Some(t) if t.starts_with('\'') || t.starts_with('"') => Ok(()),
            Some(t) if MARKER_VARS.contains(&t.as_str()) => Ok(()),
            Some(t) => Err(format!("{t:?} is not a marker variable or a quoted string")),
            None => Err("the marker ends early".into()),
        }
    }
}

fn check_marker(m: &str) -> Result<(), String> {
    let mut p = MarkerParser {
        toks: marker_tokens(m)?,
        pos: 0,
    };
    p.or()?;
    match p.peek() {
        None => Ok(()),
        Some(t) => Err(format!("unexpected {t:?} in the marker")),
    }
}

fn check_url(u: &str) -> Result<(), String> {
    let schemes = [
        "https://",
        "http://",
        "git+https://",
        "git+http://",
        "file://",
    ];
    if !schemes.iter().any(|s| u.starts_with(s)) {
        return Err(format!(
            "URL {u:?}: https://, http://, git+https:// or file:// only"
        ));
    }
    if u.chars()
        .any(|c| c.is_whitespace() || c == '\'' || c == '"')
    {
        return Err(format!("URL {u:?} holds whitespace or quotes"));
    }
    Ok(())
}

impl Requirement {
    pub fn parse(line: &str) -> Result<Requirement, String> {
        if line.starts_with('-') {
            return Err(
                "pip options (-r, --index-url, …) are not allowed, only requirements".into(),
            );
        }
        let (req, marker) = match line.split_once(';') {
            Some((r, m)) => (r.trim(), Some(m.trim().to_string())),
            None => (line.trim(), None),
        };
        if let Some(m) = &marker {
            check_marker(m)?;
        }
        let end = req
            .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
            .unwrap_or(req.len());
        let name = &req[..end];
        if !ident_ok(name) {
            return Err(format!(
                "{name:?} is not a project name (letters, digits, . _ -; starting and ending with a letter or digit)"
            ));
        }
        let mut rest = req[end..].trim_start();
        let mut extras = Vec::new();
        if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or("unbalanced '[' in the extras")?;
            for e in r[..close]
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
            {
                if !ident_ok(e) {
                    return Err(format!("{e:?} is not an extra name"));
                }
                extras.push(e.to_string());
            }
            rest = r[close + 1..].trim_start();
        }
        let (specs, url) = if let Some(u) = rest.strip_prefix('@') {
            let u = u.trim();
            check_url(u)?;
            (Vec::new(), Some(u.to_string()))
        } else if rest.is_empty() {
            (Vec::new(), None)
        } else {
            (specifiers(rest)?, None)
        };
        Ok(Requirement {
            name: name.to_string(),
            extras,
            specifiers: specs,
            url,
            marker,
            text: line.trim().to_string(),
        })
    }
}
