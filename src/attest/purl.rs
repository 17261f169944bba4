//! Package URLs as packageurl-go writes them (what BuildKit and Syft emit): namespace segments and
//! the name `url.QueryEscape`d, the version and qualifier values `url.PathEscape`d, qualifiers in
//! the order given. Image references become `pkg:docker/…` as BuildKit's `util/purl.RefToPURL`
//! makes them.
//!
//! Must not: parse anything but an image reference.

use crate::image::Platform;
use crate::reference::Reference;

/// A package URL from its parts.
pub fn purl(
    kind: &str,
    namespace: &str,
    name: &str,
    version: &str,
    qualifiers: &[(&str, &str)],
) -> String {
    let mut s = format!("pkg:{kind}/");
    for seg in namespace.split('/').filter(|s| !s.is_empty()) {
        s.push_str(&escape(seg, false));
        s.push('/');
    }
    s.push_str(&escape(name, false));
    if !version.is_empty() {
        s.push('@');
        s.push_str(&escape(version, true));
    }
    let q: Vec<String> = qualifiers
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", escape(v, true)))
        .collect();
    if !q.is_empty() {
        s.push('?');
        s.push_str(&q.join("&"));
    }
    s
}

/// `pkg:docker/NAMESPACE/NAME@TAG?digest=…&platform=os%2Farch` for an image reference (familiar
/// name: `busybox`, `team/app`, `host:5000/app`).
pub fn image(reference: &Reference, platform: Option<&Platform>) -> String {
    let familiar = match reference.domain.as_str() {
        crate::reference::DEFAULT_DOMAIN => reference
            .path
            .strip_prefix("library/")
            .unwrap_or(&reference.path)
            .to_string(),
        _ => reference.repository(),
    };
    let (ns, name) = match familiar.rsplit_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => (String::new(), familiar.clone()),
    };
    let digest = reference.digest.as_ref().map(|d| d.to_string());
    // distribution's TagNameOnly: an untagged, undigested name means :latest.
    let version = match (&reference.tag, &reference.digest) {
        (Some(t), _) => t.clone(),
        (None, Some(_)) => String::new(),
        (None, None) => "latest".into(),
    };
    let plat = platform.map(|p| p.to_string());
    let mut q: Vec<(&str, &str)> = Vec::new();
    if let Some(d) = &digest {
        q.push(("digest", d));
    }
    if let Some(p) = &plat {
        q.push(("platform", p));
    }
    purl("docker", &ns, &name, &version, &q)
}

/// Go's `url.QueryEscape` (`path = false`) or `url.PathEscape` (`path = true`).
fn escape(s: &str, path: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (path && matches!(b, b'$' | b'&' | b'+' | b'=' | b':' | b'@'));
        if keep {
            out.push(b as char);
        } else if b == b' ' && !path {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_read_as_buildkit_writes_them() {
        let amd64 = Platform::new("linux", "amd64", None);
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(
            image(&r, Some(&amd64)),
            "pkg:docker/busybox@latest?platform=linux%2Famd64"
        );
        let r: Reference = "localhost:5000/team/app:1.0".parse().unwrap();
        assert_eq!(image(&r, None), "pkg:docker/localhost%3A5000/team/app@1.0");
    }

    #[test]
    fn versions_keep_epochs_and_npm_scopes_are_escaped() {
        assert_eq!(
            purl(
                "deb",
                "debian",
                "login",
                "1:4.13+dfsg1-1",
                &[("arch", "amd64"), ("distro", "debian-12")]
            ),
            "pkg:deb/debian/login@1:4.13+dfsg1-1?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            purl("npm", "@babel", "core", "7.0.0", &[]),
            "pkg:npm/%40babel/core@7.0.0"
        );
    }
}
