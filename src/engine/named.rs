//! Named build contexts (`--build-context`): the plan's view of the request's contexts (images
//! and OCI layouts become base references the base resolver already takes), and the local
//! directories opened as source roots (their own `.dockerignore` applies, as BuildKit's
//! `NamedContext.Load` reads it) for `COPY --from=NAME` and `RUN --mount from=NAME`.
//!
//! Must not: pull or import images (the base resolver does when the plan asks).

use std::collections::BTreeMap;

use super::request::NamedContext;
use super::{BuildError, BuildRequest};
use crate::context::SourceRoot;
use crate::plan::NamedSource;

/// What the plan looks names up in (`kiln plan` asks too).
pub fn plan_sources(named: &BTreeMap<String, NamedContext>) -> BTreeMap<String, NamedSource> {
    named
        .iter()
        .map(|(k, c)| {
            let src = match c {
                NamedContext::Local(_) => NamedSource::Local,
                NamedContext::Image(r) => NamedSource::Image(r.clone()),
                NamedContext::OciLayout { path, tag, digest } => {
                    let mut r = format!("oci-layout://{}", path.display());
                    match (digest, tag) {
                        (Some(d), _) => r.push_str(&format!("@{d}")),
                        (None, Some(t)) => r.push_str(&format!(":{t}")),
                        (None, None) => {}
                    }
                    NamedSource::Image(r)
                }
            };
            (k.clone(), src)
        })
        .collect()
}

/// The local contexts, opened (a missing directory fails here, before any step runs).
pub(super) fn open_local(req: &BuildRequest) -> Result<BTreeMap<String, SourceRoot>, BuildError> {
    let mut out = BTreeMap::new();
    for (k, c) in &req.named_contexts {
        if let NamedContext::Local(dir) = c {
            out.insert(k.clone(), SourceRoot::context(dir, None)?);
        }
    }
    Ok(out)
}

/// The source root of a local context the plan named.
pub(crate) fn local<'a>(
    named: &'a BTreeMap<String, SourceRoot>,
    key: &str,
) -> Result<&'a SourceRoot, BuildError> {
    named.get(key).ok_or_else(|| BuildError::Base {
        reference: key.to_string(),
        message: "named context is not a local directory of this build".into(),
        source: None,
    })
}

/// The directory of a local context the plan named.
pub(crate) fn local_dir(
    named: &BTreeMap<String, SourceRoot>,
    key: &str,
) -> Result<std::path::PathBuf, BuildError> {
    Ok(local(named, key)?.root().to_path_buf())
}
