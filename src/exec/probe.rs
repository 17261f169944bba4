//! Start-up probe: which sandbox rung and which snapshotter work here, and why stronger ones
//! do not. Each candidate is tried for real by the helper (namespaces and mounts, no command).
//! Results are cached per configuration for the life of the process.

use super::cgroup::{self, CgroupStatus};
use super::{run_in, Cancel, Rung, SandboxConfig, SandboxSpec};
use crate::snapshot::{Mount, SnapshotterKind};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The strongest working rung (None: nothing works; see `reasons`).
    pub rung: Option<Rung>,
    /// Each stronger (or forced) rung that failed, and why.
    pub reasons: Vec<(Rung, String)>,
    pub cgroup: CgroupStatus,
    /// The snapshotter to open (never `Auto`).
    pub snapshotter: SnapshotterKind,
    /// Snapshotters that were tried and failed, and why.
    pub snapshotter_reasons: Vec<(SnapshotterKind, String)>,
    /// Overlays are mounted inside a user namespace (`userxattr`).
    pub userxattr: bool,
    pub warnings: Vec<String>,
}

static CACHE: Mutex<Option<HashMap<SandboxConfig, Probe>>> = Mutex::new(None);

pub fn probe(cfg: &SandboxConfig) -> Probe {
    let mut cache = crate::sync::lock(&CACHE);
    if let Some(p) = cache.as_ref().and_then(|c| c.get(cfg)) {
        return p.clone();
    }
    let p = probe_uncached(cfg);
    cache
        .get_or_insert_with(HashMap::new)
        .insert(cfg.clone(), p.clone());
    p
}

fn precheck(rung: Rung) -> Result<(), String> {
    let root = nix::unistd::geteuid().is_root();
    match (rung, super::userns::rootless_mode()) {
        // Root lands here only without CAP_SYS_ADMIN (see `userns`): nothing to try either.
        (_, None) if !root || super::userns::no_userns_reason().is_some() => {
            Err(match super::userns::no_userns_reason() {
                Some(why) => why.to_string(),
                None => "not root and not inside kiln's user namespace \
                     (main must call maybe_reexec_into_userns first)"
                    .into(),
            })
        }
        (Rung::Full | Rung::NoProc, Some("single")) => Err(super::userns::single_reason()),
        _ => Ok(()),
    }
}

/// Where kiln runs, for `kiln info`: root, root in a user namespace (a user-namespaced pod,
/// `hostUsers: false`), or rootless in kiln's own user namespace.
pub fn identity() -> String {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let ids: u64 = map
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    let nnp = super::userns::status_field("NoNewPrivs").as_deref() == Some("1");
    let nnp = if nnp { ", no_new_privs set" } else { "" };
    match super::userns::rootless_mode() {
        Some(mode) => {
            format!("rootless, in kiln's own user namespace ({mode}: {ids} id(s) mapped){nnp}")
        }
        None if !nix::unistd::geteuid().is_root() => {
            format!(
                "uid {} without a user namespace{nnp}",
                nix::unistd::geteuid()
            )
        }
        None if super::mounts::in_user_namespace() => format!(
            "root inside a user namespace ({ids} id(s) mapped, no subordinate ranges needed){nnp}"
        ),
        None => format!("root{nnp}"),
    }
}

/// Sets up `rung` over `rootfs` for real; Ok holds the helper's warnings.
fn try_mount(
    cfg: &SandboxConfig,
    rung: Rung,
    rootfs: Mount,
    dir: &Path,
    n: usize,
) -> Result<Vec<String>, String> {
    let run_dir = dir.join(format!("run{n}"));
    let spec = SandboxSpec::new(vec![rootfs], Vec::new(), rung);
    let mut warnings = Vec::new();
    let res = run_in(
        cfg,
        &spec,
        &Cancel::new(),
        // The helper's warnings (sethostname denied, no /proc of its own) come as output lines.
        &mut |l| warnings.extend(l.0.strip_prefix("kiln: ").map(str::to_string)),
        &run_dir,
        &Err("probe".into()),
        true,
    );
    res.map(|_| warnings).map_err(|e| e.to_string())
}

fn probe_uncached(cfg: &SandboxConfig) -> Probe {
    let dir = cfg.state_dir.join(format!("probe-{}", std::process::id()));
    let userxattr = super::mounts::in_user_namespace();
    let mut p = Probe {
        rung: None,
        reasons: Vec::new(),
        cgroup: cgroup::status(&cfg.cgroup_parent),
        snapshotter: SnapshotterKind::Native,
        snapshotter_reasons: Vec::new(),
        userxattr,
        warnings: Vec::new(),
    };
    for d in ["lower", "upper", "work", "plain"] {
        if let Err(e) = std::fs::create_dir_all(dir.join(d)) {
            p.reasons
                .push((Rung::Full, format!("creating {}: {e}", dir.display())));
            return p;
        }
    }
    let plain = Mount::Bind {
        source: dir.join("plain"),
        readonly: false,
    };
    let candidates = cfg
        .rung
        .map(|r| vec![r])
        .unwrap_or_else(|| Rung::ALL.to_vec());
    let mut n = 0;
    for rung in candidates {
        n += 1;
        match precheck(rung).and_then(|()| try_mount(cfg, rung, plain.clone(), &dir, n)) {
            Ok(warnings) => {
                p.rung = Some(rung);
                p.warnings.extend(warnings);
                break;
            }
            Err(why) => p.reasons.push((rung, why)),
        }
    }
    if p.rung == Some(Rung::SingleUid) {
        p.warnings.push(
            "single-uid sandbox: only one id is mapped; other owners and ids are \
            faked (chown, stat, setuid/setgroups answered by kiln through seccomp user \
            notification) and written into the layer, but files a command creates while it \
            appears as another user belong to root in the layer: add /etc/subuid and /etc/subgid \
            ranges (without no_new_privs) for real ids"
                .into(),
        );
    }
    let kinds = match cfg.snapshotter {
        SnapshotterKind::Auto => vec![
            SnapshotterKind::Overlayfs,
            SnapshotterKind::FuseOverlayfs,
            SnapshotterKind::Native,
        ],
        k => vec![k],
    };
    if let Some(rung) = p.rung {
        for kind in kinds {
            n += 1;
            let (lower, upper, work) = (
                vec![dir.join("lower")],
                Some(dir.join("upper")),
                Some(dir.join("work")),
            );
            let mnt = match kind {
                SnapshotterKind::Overlayfs => Mount::Overlay {
                    lower,
                    upper,
                    work,
                    userxattr,
                },
                SnapshotterKind::FuseOverlayfs if !Path::new("/dev/fuse").exists() => {
                    p.snapshotter_reasons
                        .push((kind, "/dev/fuse does not exist".into()));
                    continue;
                }
                SnapshotterKind::FuseOverlayfs => Mount::FuseOverlay { lower, upper, work },
                _ => plain.clone(),
            };
            match try_mount(cfg, rung, mnt, &dir, n) {
                Ok(_) => {
                    p.snapshotter = kind;
                    break;
                }
                Err(why) => p.snapshotter_reasons.push((kind, why)),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    p
}
