//! APT lines: `name`, `name:arch`, `name=version` (apt's `*` glob allowed: `pkg=1.2*`) or
//! `name/release`, per Debian policy §5.6.1 (names) and §5.6.12 (versions).

/// One validated APT package line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptPackage {
    pub name: String,
    pub arch: Option<String>,
    pub version: Option<String>,
    pub release: Option<String>,
}

fn name_ok(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(c))
}

fn version_ok(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_digit() || b[0] == b'*')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b".+~:-*".contains(c))
}

impl AptPackage {
    pub fn parse(line: &str) -> Result<AptPackage, String> {
        if line.starts_with('-') {
            return Err("apt options are not allowed, only package names".into());
        }
        let (head, version, release) = if let Some((h, v)) = line.split_once('=') {
            if !version_ok(v) {
                return Err(format!(
                    "version {v:?} is not a Debian version (digits first; letters, digits, . + ~ : - and * only)"
                ));
            }
            (h, Some(v.to_string()), None)
        } else if let Some((h, r)) = line.split_once('/') {
            let ok = !r.is_empty()
                && r.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b".+~_-".contains(&c));
            if !ok {
                return Err(format!("release {r:?} is not a release name"));
            }
            (h, None, Some(r.to_string()))
        } else {
            (line, None, None)
        };
        let (name, arch) = match head.split_once(':') {
            Some((n, a)) => {
                let ok = !a.is_empty()
                    && a.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
                if !ok {
                    return Err(format!("architecture {a:?} is not an architecture name"));
                }
                (n, Some(a.to_string()))
            }
            None => (head, None),
        };
        if !name_ok(name) {
            return Err(format!(
                "{name:?} is not a Debian package name (lowercase letters, digits, + - . ; at least 2 characters, starting with a letter or digit)"
            ));
        }
        Ok(AptPackage {
            name: name.to_string(),
            arch,
            version,
            release,
        })
    }

    /// The argument apt-get install takes.
    pub fn arg(&self) -> String {
        let mut s = self.name.clone();
        if let Some(a) = &self.arch {
            s = format!("{s}:{a}");
        }
        if let Some(v) = &self.version {
            s = format!("{s}={v}");
        }
        if let Some(r) = &self.release {
            s = format!("{s}/{r}");
        }
        s
    }
}
