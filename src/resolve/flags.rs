//! The resolver's half for the `docker buildx build` flags CI scripts type (issue 21): named
//! build contexts, `--ssh`, `--add-host`, `--pull`, `--no-cache-filter`, `--shm-size`,
//! `--ulimit`. Each value is checked here and refused with the field's name, so the embedded
//! engine and the daemon accept and refuse the same values.
//!
//! Must not: touch the filesystem or read the environment (the CLI turns `--ssh default` into
//! `default=$SSH_AUTH_SOCK` before the spec is made; the daemon checks paths against its roots).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{bad, SpecError};
use crate::api::BuildSpec;
use crate::engine::{BuildRequest, NamedContext, SshSource};
use crate::exec::{HostEntry, Ulimit};

/// The flags' fields of `s` into `req`.
pub(super) fn resolve_ci_flags(s: &BuildSpec, req: &mut BuildRequest) -> Result<(), SpecError> {
    if s.pull && s.no_pull {
        return Err(bad(
            "pull",
            "pull (re-resolve every base) and no_pull (never pull) contradict each other",
        ));
    }
    req.pull_always = s.pull;
    for v in &s.no_cache_filter {
        for stage in v.split(',').map(str::trim) {
            if stage.is_empty() {
                return Err(bad("no_cache_filter", format!("empty stage name in {v:?}")));
            }
            req.no_cache_filter.push(stage.to_ascii_lowercase());
        }
    }
    for h in &s.add_hosts {
        let e: HostEntry = h.parse().map_err(|e: String| bad("add_hosts", e))?;
        req.sandbox.extra_hosts.push(e);
    }
    if let Some(m) = &s.shm_size {
        let bytes = m.bytes().map_err(|e| bad("shm_size", e.to_string()))?;
        if bytes == 0 {
            return Err(bad("shm_size", "must be more than 0 bytes"));
        }
        req.sandbox.shm_size = Some(bytes);
    }
    let mut names = BTreeSet::new();
    for u in &s.ulimits {
        let l: Ulimit = u.parse().map_err(|e: String| bad("ulimits", e))?;
        if !names.insert(l.name.clone()) {
            return Err(bad("ulimits", format!("{} given twice", l.name)));
        }
        req.sandbox.ulimits.push(l);
    }
    req.ssh = ssh_sources(&s.ssh)?;
    req.named_contexts = named_contexts(&s.build_contexts)?;
    Ok(())
}

/// `build_contexts` (`--build-context NAME=VALUE`) keyed by BuildKit's normalised name.
pub fn named_contexts(
    values: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, NamedContext>, SpecError> {
    let mut out = BTreeMap::new();
    for (name, value) in values {
        let key = crate::plan::named_context_key(name)
            .map_err(|e| bad("build_contexts", format!("name {name:?}: {e}")))?;
        let ctx = named_context(value)
            .map_err(|e| bad("build_contexts", format!("{name}={value}: {e}")))?;
        if out.insert(key, ctx).is_some() {
            return Err(bad(
                "build_contexts",
                format!("{name:?} names a context given twice"),
            ));
        }
    }
    Ok(out)
}

/// `ID=PATH[,PATH]` values (buildx's `--ssh` syntax once `default` has its socket).
fn ssh_sources(values: &[String]) -> Result<Vec<SshSource>, SpecError> {
    let mut out: Vec<SshSource> = Vec::new();
    for v in values {
        let Some((id, paths)) = v.split_once('=') else {
            return Err(bad(
                "ssh",
                format!("{v:?}: give ID=SOCKET or ID=KEYFILE[,KEYFILE] (`kiln build --ssh default` fills in $SSH_AUTH_SOCK)"),
            ));
        };
        if id.is_empty() || out.iter().any(|s| s.id == id) {
            return Err(bad("ssh", format!("id {id:?} is empty or repeated")));
        }
        let paths: Vec<PathBuf> = paths
            .split(',')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        if paths.is_empty() {
            return Err(bad("ssh", format!("{id}: no socket or key path given")));
        }
        out.push(SshSource {
            id: id.to_string(),
            paths,
        });
    }
    Ok(out)
}

/// buildx's `--build-context` values: `docker-image://REF`, `oci-layout://PATH[@DIGEST|:TAG]`,
/// or a local directory (a path, or `local:PATH` as the frontend attribute spells it).
fn named_context(value: &str) -> Result<NamedContext, String> {
    if let Some(r) = value.strip_prefix("docker-image://") {
        r.parse::<crate::reference::Reference>()
            .map_err(|e| format!("invalid image reference: {e}"))?;
        return Ok(NamedContext::Image(r.to_string()));
    }
    if let Some(rest) = value.strip_prefix("oci-layout://") {
        let (rest, digest) = match rest.rsplit_once('@') {
            Some((p, d)) => (
                p,
                Some(
                    d.parse::<crate::digest::Digest>()
                        .map_err(|e| format!("invalid digest {d:?}: {e}"))?,
                ),
            ),
            None => (rest, None),
        };
        // A ':' after the last '/' separates a tag (buildx resolves it in the layout's index).
        let (path, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        if path.is_empty() {
            return Err("oci-layout:// needs a PATH".into());
        }
        return Ok(NamedContext::OciLayout {
            path: PathBuf::from(path),
            tag,
            digest,
        });
    }
    let path = value.strip_prefix("local:").unwrap_or(value);
    if let Some((scheme, _)) = path.split_once("://") {
        return Err(format!(
            "{scheme}:// contexts are not supported (docker-image://, oci-layout:// or a directory)"
        ));
    }
    if path.is_empty() {
        return Err("empty path".into());
    }
    Ok(NamedContext::Local(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_context_values_parse_like_buildx() {
        assert_eq!(
            named_context("docker-image://busybox:1").unwrap(),
            NamedContext::Image("busybox:1".into())
        );
        let d = "sha256:".to_string() + &"a".repeat(64);
        match named_context(&format!("oci-layout:///l/x@{d}")).unwrap() {
            NamedContext::OciLayout { path, tag, digest } => {
                assert_eq!(path, PathBuf::from("/l/x"));
                assert_eq!(tag, None);
                assert_eq!(digest.unwrap().to_string(), d);
            }
            o => panic!("{o:?}"),
        }
        match named_context("oci-layout:///l/x:v1").unwrap() {
            NamedContext::OciLayout { tag, .. } => assert_eq!(tag.as_deref(), Some("v1")),
            o => panic!("{o:?}"),
        }
        assert_eq!(
            named_context("/src/dir").unwrap(),
            NamedContext::Local("/src/dir".into())
        );
        assert!(named_context("git://x/y")
            .unwrap_err()
            .contains("not supported"));
    }

    #[test]
    fn ssh_values_need_a_path() {
        let s = ssh_sources(&["default=/run/agent.sock".into()]).unwrap();
        assert_eq!(s[0].paths, vec![PathBuf::from("/run/agent.sock")]);
        let s = ssh_sources(&["git=/k/a,/k/b".into()]).unwrap();
        assert_eq!(s[0].paths.len(), 2);
        let e = ssh_sources(&["default".into()]).unwrap_err().to_string();
        assert!(e.contains("SSH_AUTH_SOCK"), "{e}");
    }
}
