//! GC policies: what one prune pass may remove and until when, ported from BuildKit —
//! `client.PruneInfo` (filters, all, keepDuration, reservedSpace/maxUsedSpace/minFreeSpace),
//! buildkitd's defaults (`cmd/buildkitd/config/gcpolicy.go`, `gcpolicy_unix.go`), the
//! percentage → bytes rule (`DiskSpace.AsBytes`) and `calculateKeepBytes` (`cache/manager.go`).
//!
//! Filters are containerd's syntax as `docker buildx prune --filter` passes it: a list of
//! alternatives (any may match), each a comma-separated conjunction of `field==value`,
//! `field!=value` or `field~=value` (kiln: substring; containerd: regexp) over `type`, `id` and
//! `description`. `until=DURATION` (buildx's spelling, also `unused-for`) is not a filter but the
//! policy's keepDuration, as buildx turns it into one.
//!
//! Must not: look at the store (gc.rs evaluates a policy against it).

use std::path::Path;
use std::time::Duration;

use super::StoreError;
use crate::config::{parse_duration, DiskSpace, GcPolicyConfig, WorkerConfig};

/// One prune pass (BuildKit's `client.PruneInfo`, sizes already in bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPolicy {
    /// Also remove records still shared with a tagged image (their blobs stay: the tag needs them).
    pub all: bool,
    /// Alternatives; empty matches everything.
    pub filters: Vec<Filter>,
    /// Keep what was used within this long (zero: no such limit).
    pub keep_duration: Duration,
    pub reserved_space: u64,
    pub max_used_space: u64,
    pub min_free_space: u64,
}

/// A conjunction of conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    text: String,
    conds: Vec<(Field, Op, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Type,
    Id,
    Description,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Contains,
}

/// Record types kiln knows (BuildKit's `UsageRecordType`s); a filter naming another is refused.
pub const RECORD_TYPES: &[&str] = &[
    "regular",
    "exec.cachemount",
    "source.local",
    "source.git.checkout",
    "internal",
    "frontend",
];

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, StoreError> {
        let bad = |message: String| StoreError::BadFilter {
            filter: text.to_string(),
            message,
        };
        let mut conds = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, op, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, Op::Ne, v)
            } else if let Some((f, v)) = part.split_once("~=") {
                (f, Op::Contains, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, Op::Eq, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, Op::Eq, v)
            } else {
                return Err(bad(format!("{part:?} is not field==value")));
            };
            let field = match field.trim() {
                "type" => Field::Type,
                "id" => Field::Id,
                "description" => Field::Description,
                f => {
                    return Err(bad(format!(
                        "unknown field {f:?} (type, id, description; until=DURATION)"
                    )))
                }
            };
            let value = value.trim().trim_matches('"').to_string();
            if field == Field::Type && op != Op::Contains && !RECORD_TYPES.contains(&&*value) {
                return Err(bad(format!(
                    "unknown type {value:?} (one of {})",
                    RECORD_TYPES.join(", ")
                )));
            }
            conds.push((field, op, value));
        }
        if conds.is_empty() {
            return Err(bad("empty filter".into()));
        }
        Ok(Filter {
            text: text.to_string(),
            conds,
        })
    }

    /// Does a record with these fields match every condition?
    pub fn matches(&self, get: &dyn Fn(Field) -> String) -> bool {
        self.conds.iter().all(|(f, op, v)| {
            let have = get(*f);
            match op {
                Op::Eq => &have == v,
                Op::Ne => &have != v,
                Op::Contains => have.contains(v.as_str()),
            }
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl GcPolicy {
    /// What `kiln prune` / `POST /v1/prune` ask for, in buildx prune's terms: `filters` may hold
    /// `until=DURATION`, `keep_storage` is the deprecated name of reserved space.
    pub fn from_prune(
        filters: &[String],
        all: bool,
        keep_storage: Option<u64>,
        max_used_space: Option<u64>,
        min_free_space: Option<u64>,
    ) -> Result<GcPolicy, StoreError> {
        let mut p = GcPolicy {
            all,
            reserved_space: keep_storage.unwrap_or(0),
            max_used_space: max_used_space.unwrap_or(0),
            min_free_space: min_free_space.unwrap_or(0),
            ..GcPolicy::default()
        };
        for f in filters {
            let until = f
                .strip_prefix("until=")
                .or_else(|| f.strip_prefix("unused-for="));
            match until {
                Some(d) => {
                    p.keep_duration = parse_duration(d).map_err(|e| StoreError::BadFilter {
                        filter: f.clone(),
                        message: e.to_string(),
                    })?
                }
                None => p.filters.push(Filter::parse(f)?),
            }
        }
        Ok(p)
    }

    /// True when the policy has a size target (BuildKit's "gc mode": remove least recently used
    /// first, one at a time, until under it).
    pub fn has_limits(&self) -> bool {
        self.reserved_space != 0 || self.max_used_space != 0 || self.min_free_space != 0
    }

    /// How many bytes of build cache may stay (0: no cap) — `calculateKeepBytes`.
    pub fn keep_bytes(&self, total: u64, disk: &DiskStat) -> u64 {
        if !self.has_limits() {
            return 0;
        }
        let total = total as i128;
        let mut keep = self.max_used_space as i128;
        let excess = self.min_free_space as i128 - disk.free as i128;
        if excess > 0 {
            keep = if keep == 0 {
                total - excess
            } else {
                keep.min(total - excess)
            };
        } else if self.min_free_space != 0 && keep == 0 {
            keep = total;
        }
        keep.max(self.reserved_space as i128).max(0) as u64
    }
}

/// Size and free space of the filesystem holding the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStat {
    pub total: u64,
    pub free: u64,
}

impl DiskStat {
    pub fn of(path: &Path) -> DiskStat {
        match rustix::fs::statvfs(path) {
            Ok(s) => DiskStat {
                total: s.f_blocks * s.f_frsize,
                free: s.f_bavail * s.f_frsize,
            },
            Err(_) => DiskStat::default(),
        }
    }
}

/// BuildKit's `DiskSpace.AsBytes`: a percentage of the disk, rounded up to whole GB (10⁹) per
/// GiB; 2 GB when the disk size is unknown.
pub fn as_bytes(d: Option<DiskSpace>, disk: &DiskStat) -> u64 {
    match d {
        None | Some(DiskSpace::Percent(0)) => 0,
        Some(DiskSpace::Bytes(b)) => b,
        Some(DiskSpace::Percent(_)) if disk.total == 0 => 2_000_000_000,
        Some(DiskSpace::Percent(p)) => {
            let avail = disk.total * u64::from(p) / 100;
            (avail / (1 << 30) + 1) * 1_000_000_000
        }
    }
}

/// The policies `[worker.oci]` asks for; empty when `gc` is not `true` (kiln collects only when
/// asked to: it never did before, and a store is the user's images too). The rules of
/// `[[worker.oci.gcpolicy]]`, or BuildKit's four defaults (`DefaultGCPolicy`).
pub fn policies_from_config(
    w: &WorkerConfig,
    disk: &DiskStat,
) -> Result<Vec<GcPolicy>, StoreError> {
    if w.gc != Some(true) {
        return Ok(Vec::new());
    }
    let rules = if w.gcpolicy.is_empty() {
        default_rules(w, disk)
    } else {
        w.gcpolicy.clone()
    };
    rules
        .iter()
        .map(|r| {
            let reserved = r.reserved_space.or(r.keep_bytes);
            Ok(GcPolicy {
                all: r.all,
                filters: r
                    .filters
                    .iter()
                    .map(|f| Filter::parse(f))
                    .collect::<Result<_, _>>()?,
                keep_duration: r.keep_duration.unwrap_or_default(),
                reserved_space: as_bytes(reserved, disk),
                max_used_space: as_bytes(r.max_used_space, disk),
                min_free_space: as_bytes(r.min_free_space, disk),
            })
        })
        .collect()
}

/// `DefaultGCPolicy` + `DetectDefaultGCCap` (unix constants: reserve 10% ≤ 10 GB, free 20%,
/// max 80% ≤ 100 GB).
fn default_rules(w: &WorkerConfig, disk: &DiskStat) -> Vec<GcPolicyConfig> {
    let (mut reserved, mut max_used, mut min_free) =
        (w.reserved_space, w.max_used_space, w.min_free_space);
    let unset = |r: &Option<DiskSpace>, m: &Option<DiskSpace>, f: &Option<DiskSpace>| {
        r.is_none() && m.is_none() && f.is_none()
    };
    if unset(&reserved, &max_used, &min_free) {
        reserved = w.gckeepstorage;
    }
    if unset(&reserved, &max_used, &min_free) {
        let cap = |pct: u8, max: u64| {
            let p = Some(DiskSpace::Percent(pct));
            if as_bytes(p, disk) > max {
                Some(DiskSpace::Bytes(max))
            } else {
                p
            }
        };
        reserved = cap(10, 10_000_000_000);
        min_free = Some(DiskSpace::Percent(20));
        max_used = cap(80, 100_000_000_000);
    }
    let limits = GcPolicyConfig {
        reserved_space: reserved,
        max_used_space: max_used,
        min_free_space: min_free,
        ..GcPolicyConfig::default()
    };
    vec![
        // Cache mounts and local sources not used for 2 days, once the cache is over 512 MB.
        GcPolicyConfig {
            filters: [
                "type==source.local",
                "type==exec.cachemount",
                "type==source.git.checkout",
            ]
            .map(String::from)
            .to_vec(),
            keep_duration: Some(Duration::from_secs(48 * 3600)),
            max_used_space: Some(DiskSpace::Bytes(512_000_000)),
            ..GcPolicyConfig::default()
        },
        // Anything not used for 60 days.
        GcPolicyConfig {
            keep_duration: Some(Duration::from_secs(60 * 86400)),
            ..limits.clone()
        },
        // The unshared cache under the cap.
        limits.clone(),
        // Then shared records too.
        GcPolicyConfig {
            all: true,
            ..limits
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_match_and_refuse_nonsense() {
        let f = Filter::parse("type==exec.cachemount").unwrap();
        let rec = |t: &'static str| {
            move |field: Field| match field {
                Field::Type => t.to_string(),
                _ => "x".to_string(),
            }
        };
        assert!(f.matches(&rec("exec.cachemount")));
        assert!(!f.matches(&rec("regular")));
        let ne = Filter::parse("type!=regular,description~=x").unwrap();
        assert!(ne.matches(&rec("exec.cachemount")) && !ne.matches(&rec("regular")));
        for bad in ["type==nope", "colour==red", "typeregular", ""] {
            let e = Filter::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        let p = GcPolicy::from_prune(&["until=24h".into()], false, Some(5), None, None).unwrap();
        assert_eq!(p.keep_duration, Duration::from_secs(86400));
        assert!(p.filters.is_empty() && p.reserved_space == 5);
    }

    #[test]
    fn keep_bytes_is_buildkits_calculation() {
        let disk = DiskStat {
            total: 1000,
            free: 100,
        };
        let p = |r, m, f| GcPolicy {
            reserved_space: r,
            max_used_space: m,
            min_free_space: f,
            ..GcPolicy::default()
        };
        assert_eq!(p(0, 0, 0).keep_bytes(500, &disk), 0, "no limit");
        assert_eq!(p(0, 300, 0).keep_bytes(500, &disk), 300);
        assert_eq!(
            p(400, 300, 0).keep_bytes(500, &disk),
            400,
            "never below reserved"
        );
        // 150 free wanted, 100 free: 50 over → keep 450 of 500.
        assert_eq!(p(0, 0, 150).keep_bytes(500, &disk), 450);
        assert_eq!(p(0, 0, 50).keep_bytes(500, &disk), 500, "enough free");
        assert_eq!(p(0, 300, 150).keep_bytes(500, &disk), 300);
    }

    #[test]
    fn defaults_are_buildkits_four_rules_and_only_when_gc_is_true() {
        let disk = DiskStat {
            total: 50 << 30,
            free: 10 << 30,
        };
        let mut w = WorkerConfig::default();
        assert!(policies_from_config(&w, &disk).unwrap().is_empty());
        w.gc = Some(true);
        let p = policies_from_config(&w, &disk).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].max_used_space, 512_000_000);
        assert_eq!(p[0].keep_duration, Duration::from_secs(48 * 3600));
        assert_eq!(p[0].filters.len(), 3);
        // 10% of 50 GiB = 5 GiB → 6 GB; 80% = 40 GiB → 41 GB; 20% = 10 GiB → 11 GB.
        assert_eq!(p[2].reserved_space, 6_000_000_000);
        assert_eq!(p[2].max_used_space, 41_000_000_000);
        assert_eq!(p[2].min_free_space, 11_000_000_000);
        assert!(p[3].all && !p[2].all);
        w.gckeepstorage = Some(DiskSpace::Bytes(1 << 20));
        let p = policies_from_config(&w, &disk).unwrap();
        assert_eq!((p[1].reserved_space, p[1].max_used_space), (1 << 20, 0));
    }
}
