//! Image references (`[domain[:port]/]path[:tag][@digest]`) parsed and normalised the way Docker does:
//! `busybox` is `docker.io/library/busybox:latest`, and `index.docker.io` / `registry-1.docker.io` are
//! `docker.io`.
//!
//! Must not: resolve anything (no store, no network) — it only names images.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAINS: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("parsing image reference {0:?}: it is empty")]
    Empty(String),
    #[error("parsing image reference {reference:?}: invalid repository path component {component:?} (lowercase letters, digits and separators . _ __ - only)")]
    BadComponent {
        reference: String,
        component: String,
    },
    #[error("parsing image reference {reference:?}: invalid tag {tag:?}")]
    BadTag { reference: String, tag: String },
    #[error("parsing image reference {reference:?}: invalid digest")]
    BadDigest {
        reference: String,
        #[source]
        source: crate::digest::DigestError,
    },
    #[error("parsing image reference {0:?}: repository name longer than 255 characters")]
    TooLong(String),
    #[error("{0:?} is not a registry host[:port] (no scheme, path or spaces: registry.example.com:5000)")]
    BadHost(String),
}

/// A normalised image reference.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    /// Registry host (and port), normalised: `docker.io` for Docker Hub.
    pub domain: String,
    /// Repository path; `library/` is added for official Docker Hub images.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// `domain/path`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, `latest` when neither a tag nor a digest was given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// What to ask a registry for: the digest when pinned, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The name a store tag is kept under: `domain/path:tag` (or `@digest` when only pinned).
    pub fn store_name(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), _) => format!("{}:{}", self.repository(), t),
            (None, Some(d)) => format!("{}@{}", self.repository(), d),
            (None, None) => format!("{}:latest", self.repository()),
        }
    }

    /// The short name Docker prints (`busybox:latest`, `user/app:1`, `host:5000/app:1`).
    pub fn familiar(&self) -> String {
        let repo = if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.repository()
        };
        match (&self.tag, &self.digest) {
            (_, Some(d)) if self.tag.is_none() => format!("{repo}@{d}"),
            (Some(t), _) => format!("{repo}:{t}"),
            _ => format!("{repo}:latest"),
        }
    }
}

/// A registry `host[:port]` as settings name one (insecure lists, `[registry."host"]`, credentials):
/// distribution/reference's domain grammar — dot-separated labels of letters, digits and `-`, an
/// optional numeric port, or a bracketed IPv6 address. The one check every place that takes a host
/// shares.
pub fn check_host(host: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::BadHost(host.to_string());
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (addr, tail) = rest.split_once(']').ok_or_else(bad)?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match tail {
            "" => return Ok(()),
            t => ("", t.strip_prefix(':').ok_or_else(bad)?),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, p),
            None => (host, "0"),
        }
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err(bad());
    }
    if host.starts_with('[') {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(())
}

/// Map Docker Hub's historical host names onto `docker.io`.
pub fn normalize_domain(host: &str) -> &str {
    if LEGACY_DOMAINS.contains(&host) {
        DEFAULT_DOMAIN
    } else {
        host
    }
}

fn valid_component(c: &str) -> bool {
    // distribution/reference: [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || sep.is_empty() {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty(s.to_string()));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(
                    d.parse::<Digest>()
                        .map_err(|source| ReferenceError::BadDigest {
                            reference: s.to_string(),
                            source,
                        })?,
                ),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'; a ':' before it is a port.
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(ReferenceError::BadTag {
                        reference: s.to_string(),
                        tag: tag.to_string(),
                    });
                }
                (&name[..last_slash + i], Some(tag.to_string()))
            }
            None => (name, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Empty(s.to_string()));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (normalize_domain(first).to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.len() > 255 {
            return Err(ReferenceError::TooLong(s.to_string()));
        }
        if let Some(bad) = path.split('/').find(|c| !valid_component(c)) {
            return Err(ReferenceError::BadComponent {
                reference: s.to_string(),
                component: bad.to_string(),
            });
        }
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_are_host_and_port_only() {
        for ok in [
            "registry.example.com",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[::1]",
            "a-b.c",
        ] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "http://r.example.com",
            "r.example.com/team",
            "a b",
            "r:",
            "r:x",
            "-a.com",
            "a..b",
            "[zz]:1",
            "r:99999",
        ] {
            assert_eq!(
                check_host(bad),
                Err(ReferenceError::BadHost(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn short_names_normalise_like_docker() {
        assert_eq!(
            r("busybox").store_name(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(r("user/app:1.0").store_name(), "docker.io/user/app:1.0");
        assert_eq!(r("index.docker.io/library/busybox").domain, "docker.io");
        assert_eq!(
            r("registry-1.docker.io/x/y:2").repository(),
            "docker.io/x/y"
        );
        assert_eq!(r("busybox").familiar(), "busybox:latest");
    }

    #[test]
    fn ports_and_tags_and_digests() {
        let x = r("localhost:5000/team/app:v1");
        assert_eq!(x.domain, "localhost:5000");
        assert_eq!(x.path, "team/app");
        assert_eq!(x.tag.as_deref(), Some("v1"));
        let d = Digest::of(b"x");
        let y = r(&format!("127.0.0.1:5000/app@{d}"));
        assert_eq!(y.digest.as_ref(), Some(&d));
        assert_eq!(y.tag, None);
        assert_eq!(y.object(), d.to_string());
        assert_eq!(r("host.example.com/a/b/c").path, "a/b/c");
    }

    #[test]
    fn bad_references_name_the_part() {
        let e = "Busybox".parse::<Reference>().unwrap_err();
        assert!(e.to_string().contains("\"Busybox\""), "{e}");
        let e = "app:bad tag".parse::<Reference>().unwrap_err();
        assert!(matches!(e, ReferenceError::BadTag { .. }), "{e}");
        assert!("app@sha256:zz".parse::<Reference>().is_err());
        assert!("".parse::<Reference>().is_err());
        assert!("a//b".parse::<Reference>().is_err());
    }
}
