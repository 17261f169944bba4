//! Per-step process settings from the build flags that are not mounts: `--ulimit` (resource limits
//! set in the sandbox before the command's exec) and `--add-host` (extra `/etc/hosts` lines written
//! to the step's private tmpfs and bound over the rootfs's `/etc/hosts`, so they never reach a
//! layer).
//!
//! Must not: decide which steps get them (the engine does) or touch the rootfs.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Rung;

/// Docker's ulimit names (go-units `ulimits.go`), each with the rlimit resource it sets.
const NAMES: [(&str, rustix::process::Resource); 15] = {
    use rustix::process::Resource as R;
    [
        ("core", R::Core),
        ("cpu", R::Cpu),
        ("data", R::Data),
        ("fsize", R::Fsize),
        ("locks", R::Locks),
        ("memlock", R::Memlock),
        ("msgqueue", R::Msgqueue),
        ("nice", R::Nice),
        ("nofile", R::Nofile),
        ("nproc", R::Nproc),
        ("rss", R::Rss),
        ("rtprio", R::Rtprio),
        ("rttime", R::Rttime),
        ("sigpending", R::Sigpending),
        ("stack", R::Stack),
    ]
};

/// One `--ulimit TYPE=SOFT[:HARD]`; `None` is unlimited (Docker's `-1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl std::str::FromStr for Ulimit {
    type Err = String;

    /// go-units' `ParseUlimit`: `nofile=1024:2048`, `nproc=512` (hard = soft), `-1` unlimited.
    fn from_str(s: &str) -> Result<Ulimit, String> {
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| format!("invalid ulimit {s:?}: expected TYPE=SOFT[:HARD]"))?;
        if !NAMES.iter().any(|(n, _)| *n == name) {
            let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "invalid ulimit type {name:?} (one of {})",
                names.join(", ")
            ));
        }
        let num = |v: &str| -> Result<Option<u64>, String> {
            match v.parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if n >= 0 => Ok(Some(n as u64)),
                _ => Err(format!("invalid ulimit value {v:?} in {s:?}")),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let v = num(values)?;
                (v, v)
            }
        };
        let above = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, Some(_)) => true,
            (Some(a), Some(b)) => a > b,
            _ => false,
        };
        if above(soft, hard) {
            return Err(format!(
                "ulimit soft limit must be less than hard limit: {s:?}"
            ));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }
}

/// Sets `limits` on this process (the command inherits them through exec). Raising a hard limit
/// above kiln's own needs CAP_SYS_RESOURCE in the initial user namespace: the error says which
/// rung refused it instead of running the step with the wrong limit.
pub(crate) fn apply(limits: &[Ulimit], rung: Rung) -> Result<(), String> {
    for l in limits {
        let Some((_, res)) = NAMES.iter().find(|(n, _)| *n == l.name) else {
            return Err(format!("unknown ulimit {:?}", l.name));
        };
        let lim = rustix::process::Rlimit {
            current: l.soft,
            maximum: l.hard,
        };
        rustix::process::setrlimit(*res, lim).map_err(|e| {
            format!(
                "--ulimit {}={}:{} cannot be set in the {rung} sandbox rung: {e} (raising a hard \
                 limit above kiln's own needs CAP_SYS_RESOURCE)",
                l.name,
                show(l.soft),
                show(l.hard)
            )
        })?;
    }
    Ok(())
}

fn show(v: Option<u64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "-1".into())
}

/// One `--add-host NAME:IP` (`NAME=IP` too, as buildx accepts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    pub ip: IpAddr,
}

impl std::str::FromStr for HostEntry {
    type Err = String;

    /// Docker's `ValidateExtraHost`: the name before the first `:` (or `=`), the rest an IP
    /// (IPv6 may be bracketed). `host-gateway` needs a bridge network kiln does not have.
    fn from_str(s: &str) -> Result<HostEntry, String> {
        let bad = |why: &str| format!("invalid --add-host {s:?}: {why}");
        let (name, ip) = match s.split_once('=') {
            Some(p) => p,
            None => s.split_once(':').ok_or_else(|| bad("expected NAME:IP"))?,
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
            return Err(bad("empty or blank host name"));
        }
        if ip == "host-gateway" {
            return Err(bad(
                "host-gateway needs a bridge network; kiln's RUN steps use the host's network, \
                 where 127.0.0.1 is the host",
            ));
        }
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
        Ok(HostEntry {
            name: name.to_string(),
            ip,
        })
    }
}

/// `base` (the host's `/etc/hosts`, which RUN steps see today) with `entries` appended, as
/// BuildKit's `GetHostsFile` appends `extraHosts` to the hosts file it generates.
pub(crate) fn hosts_file(base: &str, entries: &[HostEntry]) -> String {
    // A host without /etc/hosts: BuildKit's own localhost lines (`executor/oci/hosts.go`).
    let base = match base.trim() {
        "" => "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        _ => base,
    };
    let mut out = base.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for e in entries {
        out.push_str(&format!("{}\t{}\n", e.ip, e.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_parse_like_docker() {
        let u: Ulimit = "nofile=1024:2048".parse().unwrap();
        assert_eq!((u.soft, u.hard), (Some(1024), Some(2048)));
        let u: Ulimit = "nproc=-1".parse().unwrap();
        assert_eq!((u.soft, u.hard), (None, None));
        let e = "nofile=10:5".parse::<Ulimit>().unwrap_err();
        assert!(e.contains("less than hard"), "{e}");
        let e = "files=1".parse::<Ulimit>().unwrap_err();
        assert!(e.contains("nofile"), "{e}");
    }

    #[test]
    fn add_host_entries_parse_and_append() {
        let e: HostEntry = "db:10.0.0.5".parse().unwrap();
        let v6: HostEntry = "v6:[::1]".parse().unwrap();
        assert_eq!(
            hosts_file("127.0.0.1\tlocalhost", &[e, v6]),
            "127.0.0.1\tlocalhost\n10.0.0.5\tdb\n::1\tv6\n"
        );
        assert!("db".parse::<HostEntry>().is_err());
        assert!("db:nope".parse::<HostEntry>().unwrap_err().contains("IP"));
        assert!("gw:host-gateway".parse::<HostEntry>().is_err());
    }
}
