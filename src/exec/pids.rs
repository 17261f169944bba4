//! Notification pids → /proc directories for the single-uid supervisor (`seccomp`). Where
//! pid 1's /proc is its own, a pid is its directory; where it is an outer namespace's (a
//! container's masked /proc refuses a fresh mount, so the host's was bound), the pid is found
//! through `NSpid` (proc(5)) among the tasks of pid 1's pid namespace, and remembered.
//! Must NOT: read anything of a process but its status and namespace links.

use std::path::{Path, PathBuf};

/// Notification pids (numbered in pid 1's pid namespace) → their /proc directories.
pub(super) struct Pids {
    /// pid 1's pid namespace (`pid:[…]`) when /proc is an outer namespace's; None: /proc is ours.
    ns: Option<PathBuf>,
    /// Translations found so far (checked again before use: pids are reused).
    seen: std::collections::HashMap<u32, PathBuf>,
}

/// The innermost pid of the task at `dir` (the last NSpid field, proc(5)).
fn inner_pid(dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    nspid.split_whitespace().last()?.parse::<u32>().ok()
}

impl Pids {
    pub(super) fn new(own_proc: bool) -> Pids {
        // In an outer procfs, `self` is pid 1 under its outer number; its ns link names the
        // namespace its children live in.
        let ns = (!own_proc)
            .then(|| std::fs::read_link("/proc/self/ns/pid").ok())
            .flatten();
        Pids {
            ns,
            seen: Default::default(),
        }
    }

    fn ours(&self, dir: &Path, pid: u32) -> bool {
        std::fs::read_link(dir.join("ns/pid")).ok().as_ref() == self.ns.as_ref()
            && inner_pid(dir) == Some(pid)
    }

    /// The /proc directory of task `pid` (of pid 1's namespace); None when it has gone.
    pub(super) fn dir(&mut self, pid: u32) -> Option<PathBuf> {
        if self.ns.is_none() {
            return Some(PathBuf::from(format!("/proc/{pid}")));
        }
        if let Some(d) = self.seen.get(&pid).filter(|d| self.ours(d, pid)) {
            return Some(d.clone());
        }
        // /proc lists thread group leaders only; other threads are under their task/.
        let mut found = None;
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(n) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let dir = e.path();
            if std::fs::read_link(dir.join("ns/pid")).ok().as_ref() != self.ns.as_ref() {
                continue;
            }
            if inner_pid(&dir) == Some(pid) {
                found = Some(dir);
                break;
            }
            let tasks = std::fs::read_dir(dir.join("task")).into_iter().flatten();
            let tid = tasks.flatten().find_map(|t| {
                let t = t.file_name().to_str()?.parse::<u32>().ok()?;
                let d = PathBuf::from(format!("/proc/{t}"));
                (t != n && inner_pid(&d) == Some(pid)).then_some(d)
            });
            if tid.is_some() {
                found = tid;
                break;
            }
        }
        let dir = found?;
        self.seen.insert(pid, dir.clone());
        Some(dir)
    }
}
