//! Resource limits through cgroupfs (v2 `cpu.max`/`memory.max`/`pids.max`, or v1
//! `cpu.cfs_quota_us`/`memory.limit_in_bytes`/`pids.max`), one cgroup per run, written directly.

use super::Resources;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
const CFS_PERIOD: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupStatus {
    V1 { base: PathBuf },
    V2 { base: PathBuf },
    Unavailable(String),
}

impl std::fmt::Display for CgroupStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CgroupStatus::V1 { base } => write!(f, "v1, under {}", base.display()),
            CgroupStatus::V2 { base } => write!(f, "v2, under {}", base.display()),
            CgroupStatus::Unavailable(why) => {
                write!(f, "unavailable, --memory/--cpus cannot be enforced: {why}")
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Cgroup {
    v2: bool,
    /// v2: one directory; v1: one per controller (cpu, memory, pids).
    dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

fn v2_base(parent: &str) -> Result<PathBuf, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
    // A cgroup with processes cannot delegate controllers (no internal processes): use a sibling.
    let mine = Path::new(ROOT).join(rel.trim_start_matches('/'));
    let at = mine.parent().unwrap_or(Path::new(ROOT)).join(parent);
    Ok(at)
}

impl Cgroup {
    /// Creates the run's cgroup and writes the limits; Err is the reason none is usable.
    pub(crate) fn create(parent: &str, name: &str, r: &Resources) -> Result<Cgroup, String> {
        let v2 = Path::new(ROOT).join("cgroup.controllers").exists();
        sweep_stale(parent, v2);
        let cg = if v2 {
            let base = v2_base(parent)?;
            std::fs::create_dir_all(&base)
                .map_err(|e| format!("creating {}: {e}", base.display()))?;
            // Enabling may fail for controllers that are not delegated; limits then fail below.
            let _ = write(&base.join("cgroup.subtree_control"), "+cpu +memory +pids");
            let dir = base.join(name);
            std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            Cgroup {
                v2,
                dirs: vec![dir],
            }
        } else {
            let mut dirs = Vec::new();
            for ctl in ["cpu", "memory", "pids"] {
                let base = Path::new(ROOT).join(ctl).join(parent);
                let dir = base.join(name);
                // The leaf must be new: adopting a stale directory (left by a killed process
                // whose pid this one reuses, possibly root's) would make joining it fail.
                let made = std::fs::create_dir_all(&base).and_then(|_| std::fs::create_dir(&dir));
                if let Err(e) = made {
                    let cg = Cgroup { v2, dirs };
                    cg.destroy();
                    return Err(format!("creating {}: {e}", dir.display()));
                }
                dirs.push(dir);
            }
            Cgroup { v2, dirs }
        };
        if let Err(e) = cg.limit(r) {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn dir(&self, ctl: &str) -> &Path {
        let i = match ctl {
            "cpu" => 0,
            "memory" => 1,
            _ => 2,
        };
        if self.v2 {
            &self.dirs[0]
        } else {
            &self.dirs[i]
        }
    }

    fn limit(&self, r: &Resources) -> Result<(), String> {
        if let Some(cpus) = r.cpus {
            let quota = ((cpus * CFS_PERIOD as f64) as u64).max(1000);
            if self.v2 {
                write(
                    &self.dir("cpu").join("cpu.max"),
                    &format!("{quota} {CFS_PERIOD}"),
                )?;
            } else {
                write(
                    &self.dir("cpu").join("cpu.cfs_period_us"),
                    &CFS_PERIOD.to_string(),
                )?;
                write(
                    &self.dir("cpu").join("cpu.cfs_quota_us"),
                    &quota.to_string(),
                )?;
            }
        }
        if let Some(mem) = r.memory {
            let m = self.dir("memory");
            if self.v2 {
                write(&m.join("memory.max"), &mem.to_string())?;
                let _ = write(&m.join("memory.swap.max"), "0");
            } else {
                write(&m.join("memory.limit_in_bytes"), &mem.to_string())?;
                // Without swap accounting the file is absent; the RAM limit alone then applies.
                let sw = m.join("memory.memsw.limit_in_bytes");
                if sw.exists() {
                    write(&sw, &mem.to_string())?;
                }
            }
        }
        if let Some(p) = r.pids {
            write(&self.dir("pids").join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }

    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub(crate) fn status(&self) -> CgroupStatus {
        let base = self.dirs[0]
            .parent()
            .unwrap_or(Path::new(ROOT))
            .to_path_buf();
        if self.v2 {
            CgroupStatus::V2 { base }
        } else {
            CgroupStatus::V1 { base }
        }
    }

    /// Whether the kernel's OOM killer fired in this cgroup.
    pub(crate) fn oom_killed(&self) -> bool {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let text = std::fs::read_to_string(self.dir("memory").join(file)).unwrap_or_default();
        text.lines().any(|l| {
            let mut it = l.split_whitespace();
            it.next() == Some(key) && it.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) > 0
        })
    }

    pub(crate) fn kill_all(&self) {
        for d in &self.dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    pub(crate) fn destroy(&self) {
        for d in &self.dirs {
            for _ in 0..50 {
                self.kill_all();
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Remove the step cgroups of processes that are gone (a kiln killed mid-step cannot destroy its
/// own): leaves named `<pid>-…`, an hour old, whose pid no longer exists. rmdir(2) of a cgroup
/// only succeeds when it is empty, so one with processes is never touched.
fn sweep_stale(parent: &str, v2: bool) {
    let bases: Vec<PathBuf> = if v2 {
        v2_base(parent).into_iter().collect()
    } else {
        ["cpu", "memory", "pids"]
            .iter()
            .map(|c| Path::new(ROOT).join(c).join(parent))
            .collect()
    };
    for base in bases {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            // An hour old at least: a kiln in another pid namespace sharing this cgroupfs may
            // have just made a leaf it has not joined yet.
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600);
            if let (Some(pid), true) = (pid, old) {
                if !Path::new("/proc").join(pid.to_string()).exists() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
}

/// Whether a cgroup can be created here, for `kiln info`.
pub(crate) fn status(parent: &str) -> CgroupStatus {
    match Cgroup::create(
        parent,
        &format!("probe-{}", std::process::id()),
        &Resources::default(),
    ) {
        Ok(cg) => {
            let s = cg.status();
            cg.destroy();
            s
        }
        Err(e) => CgroupStatus::Unavailable(e),
    }
}
