//! The single-uid rung's faked credentials. Only one id is mapped, so the kernel refuses
//! `setgroups` and any switch to another id: apt's privilege drop to `_apt`, `su`, `runuser`
//! and `USER app` would fail. With the id calls sent to pid 1 by the same seccomp
//! user-notification filter that records chowns (see `seccomp`), pid 1 keeps each process's
//! credentials itself — real, effective, saved and filesystem uid and gid, supplementary groups —
//! applies the kernel's permission rules to them (credentials(7), setresuid(2): only an effective
//! uid 0 may pick arbitrary ids) and answers the get calls from them, as proot and fakeroot-ng do
//! with ptrace. The process really stays the one mapped id, so files it creates are owned by it.
//!
//! A process first seen inherits the credentials of its thread group leader, or else of its
//! nearest known ancestor (fork copies credentials), or else the step's `USER`. Entries carry the
//! process's start time, so a reused pid never inherits a dead process's ids.
//! Must NOT: change a real id, or answer for a syscall it does not model.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// An id call the filter sends to pid 1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum IdCall {
    SetUid,
    SetGid,
    SetReUid,
    SetReGid,
    SetResUid,
    SetResGid,
    SetFsUid,
    SetFsGid,
    SetGroups,
    GetUid,
    GetGid,
    GetEUid,
    GetEGid,
    GetResUid,
    GetResGid,
    GetGroups,
}

use IdCall::*;

/// x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl).
pub(super) const X86_64: [(u32, IdCall); 16] = [
    (102, GetUid),
    (104, GetGid),
    (105, SetUid),
    (106, SetGid),
    (107, GetEUid),
    (108, GetEGid),
    (113, SetReUid),
    (114, SetReGid),
    (115, GetGroups),
    (116, SetGroups),
    (117, SetResUid),
    (118, GetResUid),
    (119, SetResGid),
    (120, GetResGid),
    (122, SetFsUid),
    (123, SetFsGid),
];

/// aarch64 numbers (include/uapi/asm-generic/unistd.h).
pub(super) const AARCH64: [(u32, IdCall); 16] = [
    (143, SetReGid),
    (144, SetGid),
    (145, SetReUid),
    (146, SetUid),
    (147, SetResUid),
    (148, GetResUid),
    (149, SetResGid),
    (150, GetResGid),
    (151, SetFsUid),
    (152, SetFsGid),
    (158, GetGroups),
    (159, SetGroups),
    (174, GetUid),
    (175, GetEUid),
    (176, GetGid),
    (177, GetEGid),
];

/// NGROUPS_MAX (include/uapi/linux/limits.h).
const NGROUPS_MAX: u64 = 65536;

/// One process's ids: `[real, effective, saved, filesystem]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Creds {
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
}

impl Creds {
    pub(super) fn of_user(uid: u32, gid: u32, groups: &[u32]) -> Creds {
        Creds {
            uid: [uid; 4],
            gid: [gid; 4],
            groups: groups.to_vec(),
        }
    }
}

/// The answer to one id call.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Value(i64),
    Errno(i32),
}

/// Every process's credentials, keyed by its /proc directory's pid.
pub(super) struct Table {
    initial: Creds,
    procs: HashMap<u32, (u64, Creds)>,
}

fn status_field(dir: &Path, name: &str) -> Option<u32> {
    let s = std::fs::read_to_string(dir.join("status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Field 22 of /proc/<pid>/stat (after the parenthesised command, which may hold spaces).
fn start_time(dir: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(dir.join("stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn pid_of(dir: &Path) -> Option<u32> {
    dir.file_name()?.to_str()?.parse().ok()
}

/// A -1 (as a 32-bit id) leaves the id unchanged.
fn arg(v: u64) -> Option<u32> {
    let v = v as u32;
    (v != u32::MAX).then_some(v)
}

impl Table {
    pub(super) fn new(initial: Creds) -> Table {
        Table {
            initial,
            procs: HashMap::new(),
        }
    }

    fn known(&self, dir: &Path) -> Option<&Creds> {
        let (start, c) = self.procs.get(&pid_of(dir)?)?;
        (start_time(dir) == Some(*start)).then_some(c)
    }

    /// The credentials of the process at `dir`: its own, its leader's, its nearest known
    /// ancestor's, or the step's user.
    fn creds(&self, dir: &Path) -> Creds {
        let proc_root = dir.parent().unwrap_or(Path::new("/proc"));
        let mut at = dir.to_path_buf();
        for _ in 0..64 {
            if let Some(c) = self.known(&at) {
                return c.clone();
            }
            let me = pid_of(&at);
            let next = match status_field(&at, "Tgid") {
                Some(tgid) if Some(tgid) != me => tgid,
                _ => match status_field(&at, "PPid") {
                    Some(p) if p > 0 => p,
                    _ => break,
                },
            };
            at = proc_root.join(next.to_string());
        }
        self.initial.clone()
    }

    /// The filesystem uid and gid of the process at `dir` (what a file it makes would get).
    pub(super) fn fs_ids(&self, dir: &Path) -> (u32, u32) {
        let c = self.creds(dir);
        (c.uid[3], c.gid[3])
    }

    fn store(&mut self, dir: &Path, c: Creds) {
        if let (Some(pid), Some(start)) = (pid_of(dir), start_time(dir)) {
            self.procs.insert(pid, (start, c));
        }
    }

    /// Answers `call` with arguments `a` for the process at `dir`.
    pub(super) fn handle(&mut self, call: IdCall, a: &[u64; 6], dir: &Path) -> Reply {
        let mut c = self.creds(dir);
        let before = c.clone();
        let reply = match call {
            GetUid => Reply::Value(i64::from(c.uid[0])),
            GetEUid => Reply::Value(i64::from(c.uid[1])),
            GetGid => Reply::Value(i64::from(c.gid[0])),
            GetEGid => Reply::Value(i64::from(c.gid[1])),
            GetResUid => write_ids(dir, &a[..3], &c.uid[..3]),
            GetResGid => write_ids(dir, &a[..3], &c.gid[..3]),
            GetGroups => get_groups(dir, a[0], a[1], &c.groups),
            SetGroups if c.uid[1] != 0 => Reply::Errno(libc::EPERM),
            SetGroups if a[0] > NGROUPS_MAX => Reply::Errno(libc::EINVAL),
            SetGroups => match read_ids(dir, a[1], a[0] as usize) {
                Ok(g) => {
                    c.groups = g;
                    Reply::Value(0)
                }
                Err(e) => Reply::Errno(e),
            },
            SetUid | SetReUid | SetResUid | SetFsUid => {
                let root = c.uid[1] == 0;
                set_ids(&mut c.uid, call, a, root)
            }
            SetGid | SetReGid | SetResGid | SetFsGid => {
                let root = c.uid[1] == 0;
                set_ids(&mut c.gid, call, a, root)
            }
        };
        if c != before {
            self.store(dir, c);
        }
        reply
    }
}

/// The kernel's rules for the uid (or gid) calls; `root`: the effective uid is 0 (CAP_SETUID,
/// CAP_SETGID). `ids` is `[real, effective, saved, fs]`.
fn set_ids(ids: &mut [u32; 4], call: IdCall, a: &[u64; 6], root: bool) -> Reply {
    let old = *ids;
    let may = |v: u32, from: &[u32]| root || from.contains(&v);
    match call {
        SetUid | SetGid => {
            let v = a[0] as u32;
            if root {
                *ids = [v; 4];
            } else if v == old[0] || v == old[2] {
                ids[1] = v;
                ids[3] = v;
            } else {
                return Reply::Errno(libc::EPERM);
            }
        }
        SetReUid | SetReGid => {
            let (r, e) = (arg(a[0]), arg(a[1]));
            if r.is_some_and(|r| !may(r, &[old[0], old[1]]))
                || e.is_some_and(|e| !may(e, &[old[0], old[1], old[2]]))
            {
                return Reply::Errno(libc::EPERM);
            }
            ids[0] = r.unwrap_or(old[0]);
            ids[1] = e.unwrap_or(old[1]);
            // setreuid(2): the saved id follows a changed real id, or an effective id set to
            // something other than the old real id.
            if r.is_some() || e.is_some_and(|e| e != old[0]) {
                ids[2] = ids[1];
            }
            ids[3] = ids[1];
        }
        SetResUid | SetResGid => {
            let v = [arg(a[0]), arg(a[1]), arg(a[2])];
            if v.iter().flatten().any(|x| !may(*x, &old[..3])) {
                return Reply::Errno(libc::EPERM);
            }
            for (i, x) in v.iter().enumerate() {
                ids[i] = x.unwrap_or(old[i]);
            }
            ids[3] = ids[1];
        }
        SetFsUid | SetFsGid => {
            // Returns the previous fs id whether or not it changed (setfsuid(2)).
            let v = a[0] as u32;
            if may(v, &old) {
                ids[3] = v;
            }
            return Reply::Value(i64::from(old[3]));
        }
        _ => return Reply::Errno(libc::ENOSYS),
    }
    Reply::Value(0)
}

fn mem(dir: &Path, write: bool) -> Result<File, i32> {
    File::options()
        .read(true)
        .write(write)
        .open(PathBuf::from(dir).join("mem"))
        .map_err(|_| libc::EFAULT)
}

/// getresuid(&r, &e, &s): one u32 to each pointer.
fn write_ids(dir: &Path, ptrs: &[u64], ids: &[u32]) -> Reply {
    let Ok(m) = mem(dir, true) else {
        return Reply::Errno(libc::EFAULT);
    };
    for (p, id) in ptrs.iter().zip(ids) {
        if m.write_all_at(&id.to_ne_bytes(), *p).is_err() {
            return Reply::Errno(libc::EFAULT);
        }
    }
    Reply::Value(0)
}

/// getgroups(size, list): the count when size is 0, EINVAL when the list does not fit.
fn get_groups(dir: &Path, size: u64, list: u64, groups: &[u32]) -> Reply {
    let n = groups.len() as u64;
    if size == 0 {
        return Reply::Value(n as i64);
    }
    if (size as i32) < 0 || size < n {
        return Reply::Errno(libc::EINVAL);
    }
    let bytes: Vec<u8> = groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    match mem(dir, true).map(|m| m.write_all_at(&bytes, list)) {
        Ok(Ok(())) => Reply::Value(n as i64),
        _ => Reply::Errno(libc::EFAULT),
    }
}

fn read_ids(dir: &Path, list: u64, n: usize) -> Result<Vec<u32>, i32> {
    let mut buf = vec![0u8; n * 4];
    if n > 0 {
        mem(dir, false)?
            .read_exact_at(&mut buf, list)
            .map_err(|_| libc::EFAULT)?;
    }
    let mut g: Vec<u32> = buf
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // The kernel keeps groups sorted (groups_sort); getgroups returns them so.
    g.sort_unstable();
    g.dedup();
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[i64]) -> [u64; 6] {
        let mut a = [0u64; 6];
        for (i, x) in v.iter().enumerate() {
            a[i] = *x as u32 as u64;
        }
        a
    }

    #[test]
    fn apt_drop_then_regain_is_refused() {
        let mut uid = [0u32; 4];
        assert_eq!(
            set_ids(&mut uid, SetResUid, &args(&[42, 42, 42]), true),
            Reply::Value(0)
        );
        assert_eq!(uid, [42; 4]);
        // apt's check that privileges cannot come back.
        assert_eq!(
            set_ids(&mut uid, SetUid, &args(&[0]), false),
            Reply::Errno(libc::EPERM)
        );
        assert_eq!(
            set_ids(&mut uid, SetResUid, &args(&[-1, 0, -1]), false),
            Reply::Errno(libc::EPERM)
        );
        assert_eq!(uid, [42; 4]);
    }

    #[test]
    fn seteuid_and_back_keeps_the_saved_id() {
        let mut uid = [0u32; 4];
        // seteuid(42) is setresuid(-1, 42, -1) in glibc.
        assert_eq!(
            set_ids(&mut uid, SetResUid, &args(&[-1, 42, -1]), true),
            Reply::Value(0)
        );
        assert_eq!(uid, [0, 42, 0, 42]);
        // Unprivileged now, but 0 is still the real and saved id.
        assert_eq!(
            set_ids(&mut uid, SetResUid, &args(&[-1, 0, -1]), false),
            Reply::Value(0)
        );
        assert_eq!(uid, [0; 4]);
        assert_eq!(
            set_ids(&mut uid, SetReUid, &args(&[-1, 7]), true),
            Reply::Value(0)
        );
        assert_eq!(
            uid,
            [0, 7, 7, 7],
            "setreuid to a new euid moves the saved id"
        );
        assert_eq!(
            set_ids(&mut uid, SetFsUid, &args(&[9]), false),
            Reply::Value(7)
        );
        assert_eq!(
            uid[3], 7,
            "an unprivileged setfsuid to a foreign id is ignored"
        );
    }
}
