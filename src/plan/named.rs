//! Named build contexts (`--build-context NAME=…`) as the plan sees them, after BuildKit's
//! `dockerui.Client.NamedContext` and `dockerfile2llb`: a stage whose name has a context is
//! replaced by it (its instructions are not run), and a `FROM NAME` or `--from=NAME` that is no
//! stage looks NAME up before it is taken as an image reference. Names are normalised as BuildKit
//! does (`docker.io/library/alpine:latest` and `alpine` are one name); `scratch` and `context`
//! never are.
//!
//! Must not: read the contexts (the engine does) or do I/O.

use super::dispatch::DispatchState;
use super::types::{Base, Copy, CopyKind, CopySource, Instruction, Source, Step};
use super::{BaseImageInfo, BaseImages, PlanOptions, Platform};
use crate::dockerfile as df;
use crate::dockerfile::Span;

/// A stage's FROM line, resolved.
pub(super) struct Header {
    pub base: Base,
    pub platform: Platform,
    pub info: Option<BaseImageInfo>,
    /// Replaced by a named context: its instructions are not run (BuildKit's `ds.namedContext`).
    pub replaced: bool,
    /// The key of the local context it starts from (its first step copies the files in).
    pub named_local: Option<String>,
}

/// What a named context gives the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedSource {
    /// An image: a reference, or `oci-layout://PATH[@DIGEST|:TAG]` (the engine's base forms).
    Image(String),
    /// A local directory, read by the engine under the context's key.
    Local,
}

/// BuildKit's key for a context name: the familiar reference without `:latest`.
pub fn named_context_key(name: &str) -> Result<String, String> {
    let r: crate::reference::Reference = name
        .parse()
        .map_err(|e| format!("invalid context name: {e}"))?;
    let f = r.familiar();
    Ok(f.strip_suffix(":latest").map(str::to_string).unwrap_or(f))
}

/// The named context `name` stands for, with its key (never for `scratch` or `context`).
pub(super) fn lookup<'o>(opts: &'o PlanOptions, name: &str) -> Option<(String, &'o NamedSource)> {
    if opts.named_contexts.is_empty()
        || name.eq_ignore_ascii_case("scratch")
        || name.eq_ignore_ascii_case("context")
    {
        return None;
    }
    let key = named_context_key(name).ok()?;
    let src = opts.named_contexts.get(&key)?;
    Some((key, src))
}

/// The context replacing stage `i`, when its name has one.
pub(super) fn replacing<'o>(
    opts: &'o PlanOptions,
    stages: &[df::StageDef],
    i: usize,
) -> Option<(String, &'o NamedSource)> {
    lookup(opts, stages[i].name.as_deref()?)
}

/// A `--from` after stage lookup: a stage replaced by a local context reads the context; an
/// image name that has a context reads that context instead.
pub(super) fn redirect(opts: &PlanOptions, stages: &[df::StageDef], src: CopySource) -> CopySource {
    match src {
        CopySource::Stage(i) => match replacing(opts, stages, i) {
            Some((key, NamedSource::Local)) => CopySource::Context(key),
            _ => CopySource::Stage(i),
        },
        CopySource::Image(name) => match lookup(opts, &name) {
            Some((key, NamedSource::Local)) => CopySource::Context(key),
            Some((_, NamedSource::Image(r))) => CopySource::Image(r.clone()),
            None => CopySource::Image(name),
        },
        other => other,
    }
}

/// The header of stage `i` when a named context replaces it: an image context is its base with
/// no instructions run; a local one leaves it empty, usable only as a `--from` source.
pub(super) fn replaced_header(
    opts: &PlanOptions,
    stages: &[df::StageDef],
    i: usize,
    platform: &Platform,
    bases: &dyn BaseImages,
) -> Option<Header> {
    let (key, src) = replacing(opts, stages, i)?;
    Some(match src {
        NamedSource::Image(r) => Header {
            base: Base::Image(r.clone()),
            platform: platform.clone(),
            info: bases.lookup(r, platform),
            replaced: true,
            named_local: None,
        },
        NamedSource::Local => Header {
            base: Base::Scratch,
            platform: platform.clone(),
            info: None,
            replaced: true,
            named_local: Some(key),
        },
    })
}

/// The first step of a stage that starts from a local context (`FROM NAME`, or a stage named
/// `NAME` replaced by it): the directory's files copied onto `scratch`, as BuildKit's
/// `llb.Local` state becomes the stage's root filesystem (owners reset, `.dockerignore` applied,
/// an empty image config).
pub(super) fn base_step(key: &str, span: Span, st: &DispatchState) -> Step {
    Step {
        span,
        source: format!("COPY --from={key} . /"),
        instruction: Instruction::Copy(Copy {
            kind: CopyKind::Copy {
                from: Some(CopySource::Context(key.to_string())),
                parents: false,
            },
            sources: vec![Source::Local(".".to_string())],
            heredocs: Vec::new(),
            dest: "/".to_string(),
            target: "/".to_string(),
            chown: None,
            chmod: None,
            link: false,
            excludes: Vec::new(),
        }),
        on_build: false,
        args: st.arg_values.clone(),
        declared_args: st.declared.clone(),
        env: st.image_env.0.clone(),
        run_env: st.env.0.clone(),
        workdir: st.workdir.clone(),
        user: st.user.clone(),
        shell: st.shell.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_like_buildkit() {
        assert_eq!(named_context_key("alpine").unwrap(), "alpine");
        assert_eq!(
            named_context_key("docker.io/library/alpine:latest").unwrap(),
            "alpine"
        );
        assert_eq!(named_context_key("alpine:3.19").unwrap(), "alpine:3.19");
        assert_eq!(named_context_key("base").unwrap(), "base");
        assert!(named_context_key("Base").is_err());
    }
}
