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
        (_, None) if !root => Err("not root and not inside kiln's user namespace \
                                   (main must call maybe_reexec_into_userns first)"
            .into()),
        (Rung::Full | Rung::NoProc, Some("single")) => Err("only one uid is mapped: no \
            /etc/subuid and /etc/subgid range for this user (add one with usermod --add-subuids)"
            .into()),
        _ => Ok(()),
    }
}

fn try_mount(
    cfg: &SandboxConfig,
    rung: Rung,
    rootfs: Mount,
    dir: &Path,
    n: usize,
) -> Result<(), String> {
    let run_dir = dir.join(format!("run{n}"));
    let spec = SandboxSpec::new(vec![rootfs], Vec::new(), rung);
    let res = run_in(
        cfg,
        &spec,
        &Cancel::new(),
        &mut |_| {},
        &run_dir,
        &Err("probe".into()),
        true,
    );
    res.map(|_| ()).map_err(|e| e.to_string())
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
            Ok(()) => {
                p.rung = Some(rung);
                break;
            }
            Err(why) => p.reasons.push((rung, why)),
        }
    }
    if p.rung == Some(Rung::SingleUid) {
        p.warnings.push("single-uid sandbox: only one id is mapped; chown inside RUN is \
            recorded in the layer but not applied, so later commands in the same step still see the \
            old owner (stat, ls -l); tools like apt still need more ids (setgroups/setuid to an \
            unmapped id fails): add /etc/subuid and /etc/subgid ranges"
            .into());
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
                Ok(()) => {
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
