//! `[policy]` of kiln.toml: peer uids/gids (SO_PEERCRED) → groups, and per group which
//! registries/repositories it may pull from and push to and whether it may manage the catalog.
//!
//! ```toml
//! [policy.groups.team-a]
//!   uids = [1000]
//!   gids = [2000]
//!   pull = ["docker.io/library/*", "registry.example.com/team-a/*"]
//!   push = ["registry.example.com/team-a/*"]
//!   manage_catalog = true
//! ```
//!
//! A pattern is `host` (the whole registry), or `host/path` where `*` matches any characters
//! (`/` included); `*` alone matches everything. Names are matched normalised (`busybox` is
//! `docker.io/library/busybox`).
//!
//! Must not: know sockets or peers (the daemon asks with ids), or read files.

use std::collections::BTreeMap;

use serde::Serialize;
use toml::{Table, Value};

use super::ConfigError;

/// The whole `[policy]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub groups: BTreeMap<String, GroupPolicy>,
}

/// One `[policy.groups.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupPolicy {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub pull: Vec<String>,
    pub push: Vec<String>,
    pub manage_catalog: bool,
}

/// What a denied request was refused by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("policy: {who} may not {action} {target}: {rule}")]
    Access {
        who: String,
        action: &'static str,
        target: String,
        rule: String,
    },
}

/// `*` matches any run of characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Whether `pattern` allows the repository `repo` (`host/path`, normalised).
pub fn pattern_allows(pattern: &str, repo: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if !pattern.contains('/') && !pattern.contains('*') {
        return repo.split('/').next() == Some(pattern);
    }
    glob(pattern, repo)
}

impl Policy {
    /// The groups `uid`/`gid` belong to, by name.
    pub fn groups_of(&self, uid: u32, gid: u32) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, g)| g.uids.contains(&uid) || g.gids.contains(&gid))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn check(
        &self,
        who: &str,
        groups: &[String],
        action: &'static str,
        repo: &str,
        rules: impl Fn(&GroupPolicy) -> &Vec<String>,
    ) -> Result<(), Denied> {
        let mut have = Vec::new();
        for name in groups {
            if let Some(g) = self.groups.get(name) {
                if rules(g).iter().any(|p| pattern_allows(p, repo)) {
                    return Ok(());
                }
                have.push(format!("[policy.groups.{name}] {action} = {:?}", rules(g)));
            }
        }
        let rule = if have.is_empty() {
            "it is in no [policy.groups.*] (only root and the daemon's user are exempt)".to_string()
        } else {
            format!("no rule allows it ({})", have.join("; "))
        };
        Err(Denied::Access {
            who: who.to_string(),
            action,
            target: repo.to_string(),
            rule,
        })
    }

    /// May a member of `groups` pull `repo`?
    pub fn check_pull(&self, who: &str, groups: &[String], repo: &str) -> Result<(), Denied> {
        self.check(who, groups, "pull", repo, |g| &g.pull)
    }

    /// May a member of `groups` push to `repo`?
    pub fn check_push(&self, who: &str, groups: &[String], repo: &str) -> Result<(), Denied> {
        self.check(who, groups, "push", repo, |g| &g.push)
    }

    /// May a member of `groups` create, change and remove catalog entries?
    pub fn check_manage(&self, who: &str, groups: &[String]) -> Result<(), Denied> {
        if groups
            .iter()
            .any(|n| self.groups.get(n).is_some_and(|g| g.manage_catalog))
        {
            return Ok(());
        }
        Err(Denied::Access {
            who: who.to_string(),
            action: "manage",
            target: "the catalog".into(),
            rule: format!(
                "none of its groups ({}) has manage_catalog = true",
                if groups.is_empty() {
                    "none".to_string()
                } else {
                    groups.join(", ")
                }
            ),
        })
    }
}

fn bad(origin: &str, key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        key: key.to_string(),
        message: message.to_string(),
    }
}

fn strings(origin: &str, key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
    v.as_array()
        .and_then(|a| a.iter().map(|i| i.as_str().map(str::to_string)).collect())
        .ok_or_else(|| bad(origin, key, "expected an array of strings"))
}

fn ids(origin: &str, key: &str, v: &Value) -> Result<Vec<u32>, ConfigError> {
    v.as_array()
        .and_then(|a| {
            a.iter()
                .map(|i| i.as_integer().and_then(|n| u32::try_from(n).ok()))
                .collect()
        })
        .ok_or_else(|| bad(origin, key, "expected an array of ids"))
}

/// `[policy]` → the policy and its unknown-key warnings.
pub(super) fn parse(t: &Table, origin: &str) -> Result<(Policy, Vec<String>), ConfigError> {
    let mut p = Policy::default();
    let mut warnings = Vec::new();
    for (k, v) in t {
        if k != "groups" {
            warnings.push(format!("{origin}: unknown key policy.{k} (ignored)"));
            continue;
        }
        let groups = v
            .as_table()
            .ok_or_else(|| bad(origin, "policy.groups", "expected a table"))?;
        for (name, gv) in groups {
            let section = format!("policy.groups.{name}");
            let gt = gv
                .as_table()
                .ok_or_else(|| bad(origin, &section, "expected a table"))?;
            let mut g = GroupPolicy::default();
            for (gk, v) in gt {
                let key = format!("{section}.{gk}");
                match gk.as_str() {
                    "uids" => g.uids = ids(origin, &key, v)?,
                    "gids" => g.gids = ids(origin, &key, v)?,
                    "pull" => g.pull = strings(origin, &key, v)?,
                    "push" => g.push = strings(origin, &key, v)?,
                    "manage_catalog" | "manage-catalog" => {
                        g.manage_catalog = v
                            .as_bool()
                            .ok_or_else(|| bad(origin, &key, "expected true or false"))?
                    }
                    _ => warnings.push(format!("{origin}: unknown key {key} (ignored)")),
                }
            }
            p.groups.insert(name.clone(), g);
        }
    }
    Ok((p, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let t: Table = r#"
            [groups.team-a]
            uids = [1000]
            pull = ["docker.io/library/*", "registry.example.com/team-a/*"]
            push = ["registry.example.com/team-a/*"]
            manage_catalog = true
            [groups.team-b]
            gids = [2000]
            pull = ["registry.example.com"]
            colour = "blue"
        "#
        .parse()
        .unwrap();
        let (p, w) = parse(&t, "kiln.toml").unwrap();
        assert_eq!(
            w,
            ["kiln.toml: unknown key policy.groups.team-b.colour (ignored)"]
        );
        p
    }

    #[test]
    fn ids_map_to_groups_and_rules_name_themselves() {
        let p = policy();
        assert_eq!(p.groups_of(1000, 5), ["team-a"]);
        assert_eq!(p.groups_of(7, 2000), ["team-b"]);
        assert!(p.groups_of(7, 7).is_empty());
        let a = p.groups_of(1000, 0);
        p.check_pull("uid 1000", &a, "docker.io/library/debian")
            .unwrap();
        p.check_push("uid 1000", &a, "registry.example.com/team-a/app")
            .unwrap();
        let e = p
            .check_push("uid 1000", &a, "registry.example.com/team-b/app")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("may not push registry.example.com/team-b/app"),
            "{e}"
        );
        assert!(e.contains("[policy.groups.team-a] push"), "{e}");
        let b = p.groups_of(7, 2000);
        p.check_pull("gid 2000", &b, "registry.example.com/any/thing")
            .unwrap();
        assert!(p
            .check_pull("gid 2000", &b, "docker.io/library/debian")
            .is_err());
        assert!(p.check_manage("gid 2000", &b).is_err());
        p.check_manage("uid 1000", &a).unwrap();
        assert!(p
            .check_pull("uid 7", &[], "x.io/y")
            .unwrap_err()
            .to_string()
            .contains("no [policy.groups.*]"));
    }

    #[test]
    fn patterns() {
        assert!(pattern_allows("*", "a/b"));
        assert!(pattern_allows("r.io", "r.io/x/y"));
        assert!(!pattern_allows("r.io", "r.iox/y"));
        assert!(pattern_allows("r.io/team-*/app", "r.io/team-a/app"));
        assert!(!pattern_allows("r.io/team-a/*", "r.io/team-b/app"));
    }
}
