//! Group policy at the daemon's door: the peer (SO_PEERCRED) → its groups under kiln.toml's
//! `[policy]` → may it pull these bases, push these tags, manage the catalog, see an entry.
//! Without a `[policy]`, everything the peer check lets in is allowed (kiln's behaviour before
//! policies). Root and the daemon's own user are exempt.
//!
//! Must not: parse kiln.toml (config::policy does) or look at anything but the request.

use crate::api::{self, kind, BuildSpec};
use crate::config::policy::Policy;
use crate::reference::Reference;

use super::{ApiError, Shared};

/// Who is asking, as far as the policy cares.
pub(super) struct Caller {
    who: String,
    groups: Vec<String>,
    /// `None`: no `[policy]`, or an exempt caller.
    policy: Option<Policy>,
}

/// The caller behind `peer` under the daemon's current configuration.
pub(super) fn caller(state: &Shared, peer: Option<api::Peer>) -> Caller {
    let cfg = crate::sync::lock(&state.config).config();
    let own = rustix::process::geteuid().as_raw();
    match (cfg.policy, peer) {
        (Some(_), Some(p)) if p.uid == 0 || p.uid == own => exempt(),
        (Some(pol), Some(p)) => Caller {
            who: format!("uid {} (gid {})", p.uid, p.gid),
            groups: pol.groups_of(p.uid, p.gid),
            policy: Some(pol),
        },
        (Some(pol), None) => Caller {
            who: "an unknown peer".into(),
            groups: Vec::new(),
            policy: Some(pol),
        },
        (None, _) => exempt(),
    }
}

fn exempt() -> Caller {
    Caller {
        who: String::new(),
        groups: Vec::new(),
        policy: None,
    }
}

fn denied(e: impl std::fmt::Display) -> ApiError {
    ApiError::forbidden(kind::FORBIDDEN, e.to_string())
}

fn repo(r: &str) -> Option<String> {
    r.parse::<Reference>().ok().map(|r| r.repository())
}

/// The base images a Dockerfile names (`FROM x`; stages, `scratch` and `$ARG`s skipped: what
/// these resolve to is pulled by name and checked when it can be known here).
fn dockerfile_bases(text: &str) -> Vec<String> {
    let Ok(df) = crate::dockerfile::parse(text, "Dockerfile") else {
        return Vec::new();
    };
    let stages: Vec<String> = df.stages.iter().filter_map(|s| s.name.clone()).collect();
    df.stages
        .iter()
        .map(|s| s.base.clone())
        .filter(|b| b != "scratch" && !b.contains('$') && !b.contains("://"))
        .filter(|b| !stages.contains(&b.to_lowercase()))
        .collect()
}

impl Caller {
    pub(super) fn may_see(&self, global: bool, groups: &[String]) -> bool {
        self.policy.is_none() || global || groups.iter().any(|g| self.groups.contains(g))
    }

    pub(super) fn may_manage_catalog(&self) -> Result<(), ApiError> {
        match &self.policy {
            Some(p) => p.check_manage(&self.who, &self.groups).map_err(denied),
            None => Ok(()),
        }
    }

    /// A group admin may make an entry visible to its own groups only; global entries are the
    /// administrators' (root, the daemon's user).
    pub(super) fn may_use_groups(&self, global: bool, groups: &[String]) -> Result<(), ApiError> {
        if self.policy.is_none() {
            return Ok(());
        }
        if global {
            return Err(denied(format!(
                "policy: {} may not make a catalog entry global: only root and the daemon's user may (give groups instead)",
                self.who
            )));
        }
        match groups.iter().find(|g| !self.groups.contains(g)) {
            Some(g) => Err(denied(format!(
                "policy: {} may not share a catalog entry with group {g:?}: it is not a member (its groups: {})",
                self.who,
                self.groups.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// May the caller settle the daemon's configuration (which holds the policy)?
    pub(super) fn must_be_exempt(&self, action: &str) -> Result<(), ApiError> {
        match &self.policy {
            Some(_) => Err(denied(format!(
                "policy: {} may not {action}: only root and the daemon's user may while a [policy] is set",
                self.who
            ))),
            None => Ok(()),
        }
    }

    /// A build: its base images must be pullable, its tags pushable (when pushed), and a
    /// `"catalog"` field needs catalog management.
    pub(super) fn check_build(
        &self,
        spec: &BuildSpec,
        dockerfile: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(p) = &self.policy else {
            return Ok(());
        };
        let mut bases = Vec::new();
        match &spec.packages {
            Some(pk) => {
                bases.push(pk.base.clone());
                bases.extend(pk.gpu_base.clone());
            }
            None => bases.extend(dockerfile.map(dockerfile_bases).unwrap_or_default()),
        }
        // A name with a `--build-context` is not pulled (the context is); an image context is.
        let named: Vec<String> = spec
            .build_contexts
            .keys()
            .filter_map(|k| crate::plan::named_context_key(k).ok())
            .collect();
        bases.retain(|b| crate::plan::named_context_key(b).map_or(true, |k| !named.contains(&k)));
        bases.extend(
            spec.build_contexts
                .values()
                .filter_map(|v| v.strip_prefix("docker-image://").map(str::to_string)),
        );
        for b in bases {
            if let Some(r) = repo(&b) {
                p.check_pull(&self.who, &self.groups, &r).map_err(denied)?;
            }
        }
        if spec.push {
            for t in spec.all_tags() {
                if let Some(r) = repo(&t) {
                    p.check_push(&self.who, &self.groups, &r).map_err(denied)?;
                }
            }
        }
        // A shared cache is read like a base and written like a tag.
        for v in &spec.cache_from {
            if let Ok(crate::cache::spec::ImportSpec {
                source: crate::cache::spec::ImportSource::Registry { reference },
                ..
            }) = v.parse()
            {
                p.check_pull(&self.who, &self.groups, &reference.repository())
                    .map_err(denied)?;
            }
        }
        for v in &spec.cache_to {
            if let Ok(crate::cache::spec::ExportSpec {
                target: crate::cache::spec::ExportTarget::Registry { reference },
                ..
            }) = v.parse()
            {
                p.check_push(&self.who, &self.groups, &reference.repository())
                    .map_err(denied)?;
            }
        }
        if let Some(c) = &spec.catalog {
            self.may_manage_catalog()?;
            self.may_use_groups(c.global.unwrap_or(c.groups.is_empty()), &c.groups)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_contexts_are_checked_as_what_they_pull() {
        let cfg = crate::config::Config::from_toml_str(
            "[policy.groups.a]\nuids = [1000]\npull = [\"docker.io/library/busybox\"]\n",
            "kiln.toml",
        )
        .unwrap();
        let pol = cfg.policy.unwrap();
        let caller = Caller {
            who: "uid 1000".into(),
            groups: vec!["a".into()],
            policy: Some(pol),
        };
        let mut spec = BuildSpec::default();
        // `base` is a local context: not pulled, so not checked against the policy.
        spec.build_contexts
            .insert("base".into(), "/build/dir".into());
        caller.check_build(&spec, Some("FROM base\n")).unwrap();
        spec.build_contexts
            .insert("other".into(), "docker-image://debian:12".into());
        let e = caller.check_build(&spec, Some("FROM base\n")).unwrap_err();
        assert!(format!("{e:?}").contains("debian"), "{e:?}");
    }

    #[test]
    fn bases_of_a_dockerfile() {
        let df = "ARG V=1\nFROM busybox AS a\nFROM a\nFROM scratch\nFROM debian:$V\nFROM registry.example.com/x/y:2\n";
        assert_eq!(
            dockerfile_bases(df),
            ["busybox", "registry.example.com/x/y:2"]
        );
    }
}
