//! The single-uid rung's supervisor: a seccomp filter in the command's process sends every
//! chown-family syscall to kiln's pid 1 (`SECCOMP_RET_USER_NOTIF`, Linux ≥ 5.0), which resolves the
//! target path in the container, appends (path, uid, gid) to a JSON-lines file in the run dir,
//! keeps the owner beside the file (`owners`) and answers success without changing anything —
//! only one id is mapped, so the kernel would refuse the call with EINVAL. Calls whose ids are all
//! 0 or -1 (mappable) are let through (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`, Linux ≥ 5.5) and
//! recorded too, so that the last chown of a path wins. The same filter sends the id calls
//! (setuid, setresgid, setgroups, getresuid, …), answered from pid 1's credentials table
//! (`ids`), and the stat calls, answered with the recorded owner for a file that has one.
//!
//! pid 1 reads the caller's /proc/<pid>; where /proc is not its own (a container's masked /proc
//! refuses a fresh mount and the host's is bound), notification pids are translated through
//! `NSpid` (proc(5)).
//!
//! The filter is not a security boundary: it allows everything but those calls of the native
//! ABIs (x86_64, aarch64); x32 and 32-bit compat calls pass unchanged.
//! Must NOT: apply a chown to an unmapped id, or decide what reaches a layer (the build does).

use super::ids::{Creds, IdCall, Reply, Table};
use super::owners::{self, StatKind};
use super::pids::Pids;
use super::RecordedChown;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The record file in the run dir, one [`RecordedChown`] as JSON per line.
pub(crate) const RECORD_FILE: &str = "chowns.jsonl";

// linux/audit.h: AUDIT_ARCH_* = EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE (not in the libc crate).
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// What a syscall number means for the recorder.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Call {
    /// chown(path, uid, gid) / lchown (`follow` false).
    Path { follow: bool },
    /// fchown(fd, uid, gid).
    Fd,
    /// fchownat(dirfd, path, uid, gid, flags).
    At,
    /// An id call, answered from pid 1's credentials table (see `ids`).
    Id(IdCall),
    /// A stat call, answered with the recorded owner when the file has one (see `owners`).
    Stat(StatCall),
    /// A call that may create a file, noted when the caller appears as another user.
    Create(Creates),
}

/// Where a creating call's path is: the dir fd argument (None: AT_FDCWD) and the path argument.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Creates {
    dirfd: Option<usize>,
    path: usize,
    /// symlink, symlinkat: what they make cannot hold an xattr; its owner goes to the record.
    link: bool,
}

const fn creates(dirfd: Option<usize>, path: usize) -> Creates {
    Creates {
        dirfd,
        path,
        link: false,
    }
}

const fn link(dirfd: Option<usize>, path: usize) -> Creates {
    Creates {
        dirfd,
        path,
        link: true,
    }
}

/// The creating calls, and the flags argument the filter checks for O_CREAT (open, openat:
/// only those that may create reach pid 1).
const CREATES: [(u32, u32, Creates, Option<u32>); 13] = [
    (AUDIT_ARCH_X86_64, 2, creates(None, 0), Some(1)),
    (AUDIT_ARCH_X86_64, 257, creates(Some(0), 1), Some(2)),
    (AUDIT_ARCH_X86_64, 85, creates(None, 0), None),
    (AUDIT_ARCH_X86_64, 83, creates(None, 0), None),
    (AUDIT_ARCH_X86_64, 258, creates(Some(0), 1), None),
    (AUDIT_ARCH_X86_64, 133, creates(None, 0), None),
    (AUDIT_ARCH_X86_64, 259, creates(Some(0), 1), None),
    (AUDIT_ARCH_X86_64, 88, link(None, 1), None),
    (AUDIT_ARCH_X86_64, 266, link(Some(1), 2), None),
    (AUDIT_ARCH_AARCH64, 56, creates(Some(0), 1), Some(2)),
    (AUDIT_ARCH_AARCH64, 34, creates(Some(0), 1), None),
    (AUDIT_ARCH_AARCH64, 33, creates(Some(0), 1), None),
    (AUDIT_ARCH_AARCH64, 36, link(Some(1), 2), None),
];

/// The flags argument the filter tests for O_CREAT before notifying, if any.
fn flags_arg(arch: u32, nr: u32) -> Option<u32> {
    CREATES
        .iter()
        .find(|c| c.0 == arch && c.1 == nr)
        .and_then(|c| c.3)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StatCall {
    /// stat(path, buf) / lstat (`follow` false).
    Path { follow: bool },
    /// fstat(fd, buf).
    Fd,
    /// newfstatat(dirfd, path, buf, flags).
    At,
    /// statx(dirfd, path, flags, mask, buf).
    Statx,
}

/// The stat calls (same tables as `CALLS`).
const STATS: [(u32, u32, StatCall); 8] = [
    (AUDIT_ARCH_X86_64, 4, StatCall::Path { follow: true }),
    (AUDIT_ARCH_X86_64, 5, StatCall::Fd),
    (AUDIT_ARCH_X86_64, 6, StatCall::Path { follow: false }),
    (AUDIT_ARCH_X86_64, 262, StatCall::At),
    (AUDIT_ARCH_X86_64, 332, StatCall::Statx),
    (AUDIT_ARCH_AARCH64, 79, StatCall::At),
    (AUDIT_ARCH_AARCH64, 80, StatCall::Fd),
    (AUDIT_ARCH_AARCH64, 291, StatCall::Statx),
];

/// (arch, syscall number, call), both ABIs whatever kiln was built for: the filter checks the arch
/// field itself. Numbers from arch/x86/entry/syscalls/syscall_64.tbl and
/// include/uapi/asm-generic/unistd.h (aarch64 has no chown/lchown).
const CALLS: [(u32, u32, Call); 6] = [
    (AUDIT_ARCH_X86_64, 92, Call::Path { follow: true }),
    (AUDIT_ARCH_X86_64, 93, Call::Fd),
    (AUDIT_ARCH_X86_64, 94, Call::Path { follow: false }),
    (AUDIT_ARCH_X86_64, 260, Call::At),
    (AUDIT_ARCH_AARCH64, 54, Call::At),
    (AUDIT_ARCH_AARCH64, 55, Call::Fd),
];

/// The chown calls and the id calls, arch by arch.
fn calls() -> Vec<(u32, u32, Call)> {
    let ids = |arch: u32, table: &[(u32, IdCall)]| -> Vec<(u32, u32, Call)> {
        table
            .iter()
            .map(|(n, c)| (arch, *n, Call::Id(*c)))
            .collect()
    };
    let mut v = Vec::new();
    for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64] {
        v.extend(CALLS.iter().filter(|c| c.0 == arch).copied());
        let stats = STATS.iter().filter(|c| c.0 == arch);
        v.extend(stats.map(|(a, n, c)| (*a, *n, Call::Stat(*c))));
        let made = CREATES.iter().filter(|c| c.0 == arch);
        v.extend(made.map(|(a, n, c, _)| (*a, *n, Call::Create(*c))));
        v.extend(match arch {
            AUDIT_ARCH_X86_64 => ids(arch, &super::ids::X86_64),
            _ => ids(arch, &super::ids::AARCH64),
        });
    }
    v
}

fn call_of(arch: u32, nr: i32) -> Option<Call> {
    calls()
        .into_iter()
        .find(|(a, n, _)| *a == arch && i64::from(*n) == i64::from(nr))
        .map(|c| c.2)
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: usize, jf: usize) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: jt as u8,
        jf: jf as u8,
        k,
    }
}

/// `ld arch; per arch: jeq arch (else next arch); ld nr; jeq nr → notify …; allow`; then
/// `allow` (unknown arch) and the shared `notify` at the end. A call with a flags argument
/// (open, openat) notifies only with O_CREAT set: `jeq nr; ld args[i]; jset O_CREAT → notify;
/// allow`.
fn filter() -> Vec<libc::sock_filter> {
    let ld = |off: usize| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, off as u32);
    let ret = |k: u32| stmt(libc::BPF_RET | libc::BPF_K, k);
    let jset = |k: u32| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    // offsetof(struct seccomp_data, nr) = 0, arch = 4, args = 16 (u64 each, low word first on
    // these little-endian arches).
    let all = calls();
    let mut arches: Vec<u32> = all.iter().map(|c| c.0).collect();
    arches.dedup();
    let mut prog = vec![ld(4)];
    // Instructions whose true branch goes to `notify`, patched once its place is known.
    let mut to_notify = Vec::new();
    for arch in arches {
        let arch_check = prog.len();
        prog.push(jeq(arch, 0, 0));
        prog.push(ld(0));
        for (_, nr, _) in all.iter().filter(|c| c.0 == arch) {
            match flags_arg(arch, *nr) {
                None => {
                    to_notify.push(prog.len());
                    prog.push(jeq(*nr, 0, 0));
                }
                Some(i) => {
                    prog.push(jeq(*nr, 0, 3));
                    prog.push(ld(16 + 8 * i as usize));
                    to_notify.push(prog.len());
                    prog.push(jset(libc::O_CREAT as u32));
                    prog.push(ret(libc::SECCOMP_RET_ALLOW));
                }
            }
        }
        prog.push(ret(libc::SECCOMP_RET_ALLOW));
        // A different arch skips to the next arch check (or the final allow).
        prog[arch_check].jf = (prog.len() - arch_check - 1) as u8;
    }
    prog.push(ret(libc::SECCOMP_RET_ALLOW));
    let notify_at = prog.len();
    prog.push(ret(libc::SECCOMP_RET_USER_NOTIF));
    for i in to_notify {
        prog[i].jt = (notify_at - i - 1) as u8;
    }
    prog
}

/// The channel on which the command hands its listener fd to pid 1: (command's end, pid 1's end).
pub(super) fn channel() -> Result<(OwnedFd, OwnedFd), String> {
    socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::Stream,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))
}

fn seccomp_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// In the command's process (no_new_privs set, single-threaded, before exec): install the
/// filter and send the listener to pid 1 over `sock`.
pub(super) fn install(sock: &OwnedFd) -> Result<(), String> {
    // SAFETY: seccomp_notif_sizes is plain old data; zeroed is a valid value.
    let mut sizes: libc::seccomp_notif_sizes = unsafe { std::mem::zeroed() };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one seccomp_notif_sizes into `sizes`, which lives
    // across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0 as libc::c_uint,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if r != 0 {
        return Err(seccomp_err(
            "seccomp(SECCOMP_GET_NOTIF_SIZES) (chown recording needs Linux ≥ 5.0)",
        ));
    }
    // The kernel copies its own struct sizes in and out; larger ones would overrun ours.
    if usize::from(sizes.seccomp_notif) > std::mem::size_of::<libc::seccomp_notif>()
        || usize::from(sizes.seccomp_notif_resp) > std::mem::size_of::<libc::seccomp_notif_resp>()
    {
        return Err(format!(
            "the kernel's seccomp notification structs are larger than kiln's ({} and {} bytes)",
            sizes.seccomp_notif, sizes.seccomp_notif_resp
        ));
    }
    let mut prog = filter();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, a valid classic-BPF program that outlives the call (the
    // kernel copies it); no_new_privs is set by the caller, so an unprivileged process may
    // install it. The return value is a new fd (close-on-exec) or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(seccomp_err("installing the chown-recording seccomp filter"));
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let listener = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let fds = [listener.as_raw_fd()];
    socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(b"L")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sending the seccomp listener to pid 1: {e}"))?;
    Ok(())
}

/// In pid 1: the listener the command sent, or None when it ended before sending one.
pub(super) fn receive(sock: OwnedFd) -> Result<Option<OwnedFd>, String> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        let msg = match socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("receiving the seccomp listener: {e}")),
            Ok(m) => m,
        };
        let cmsgs = msg
            .cmsgs()
            .map_err(|e| format!("receiving the seccomp listener: {e}"))?;
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: SCM_RIGHTS just installed this fd in our table; we own it now.
                    return Ok(Some(unsafe { OwnedFd::from_raw_fd(*fd) }));
                }
            }
        }
        return Ok(None);
    }
}

/// In pid 1: answer notifications on a thread of their own until the process exits.
/// `own_proc`: /proc numbers pids in pid 1's pid namespace (else they are translated).
/// `creds`: the step's user, which every process starts as. Returns the files made by
/// processes that appear as another user, for pid 1 to [`owners::flush`] once the command ended.
pub(super) fn supervise(
    listener: OwnedFd,
    record: File,
    own_proc: bool,
    creds: Creds,
) -> owners::Pending {
    let mut pids = Pids::new(own_proc);
    let mut table = Table::new(creds);
    let pending = owners::Pending::default();
    let made = pending.clone();
    std::thread::spawn(move || serve(&listener, &record, &mut pids, &mut table, &made));
    pending
}

fn id_valid(fd: RawFd, id: u64) -> bool {
    let mut id = id;
    // SAFETY: NOTIF_ID_VALID reads one u64 from `id`, which lives across the call.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id as *mut u64) == 0 }
}

/// What to answer.
enum Answer {
    /// Pretend success.
    Done,
    /// Return this value.
    Value(i64),
    /// Let the kernel perform the call.
    Continue,
    Errno(i32),
}

fn serve(
    listener: &OwnedFd,
    record: &File,
    pids: &mut Pids,
    table: &mut Table,
    made: &owners::Pending,
) {
    let fd = listener.as_raw_fd();
    loop {
        // SAFETY: seccomp_notif is plain old data; the kernel wants it zeroed before RECV.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV fills one seccomp_notif (checked not larger than ours in `install`) in
        // `req`, which lives across the call.
        let r = unsafe {
            libc::ioctl(
                fd,
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut req as *mut libc::seccomp_notif,
            )
        };
        if r != 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                // Interrupted, or the caller died before we read its notification.
                Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                _ => return,
            }
        }
        let answer = match (pids.dir(req.pid), call_of(req.data.arch, req.data.nr)) {
            (None, _) => Answer::Errno(libc::ESRCH),
            (Some(dir), Some(Call::Id(c))) => match table.handle(c, &req.data.args, &dir) {
                Reply::Value(v) => Answer::Value(v),
                Reply::Errno(e) => Answer::Errno(e),
            },
            (Some(dir), Some(Call::Stat(c))) => {
                // A file made since is stat()ed with the owner it was made with.
                owners::flush(made);
                stat(fd, &req, &dir, c)
            }
            (Some(dir), Some(Call::Create(c))) => {
                owners::flush(made);
                created(fd, &req, &dir, c, table.fs_ids(&dir), record, made);
                Answer::Continue
            }
            (Some(dir), _) => handle(fd, &req, &dir, record),
        };
        // The target may have died and its pid been reused while we looked at /proc/<pid>:
        // answer only a notification that is still pending (seccomp_unotify(2)).
        if !id_valid(fd, req.id) {
            continue;
        }
        let mut resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: 0,
            flags: 0,
        };
        match answer {
            Answer::Done => {}
            Answer::Value(v) => resp.val = v,
            Answer::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            Answer::Errno(e) => resp.error = -e,
        }
        // SAFETY: SEND reads one seccomp_notif_resp from `resp`, which lives across the call.
        // ENOENT (the caller died meanwhile) needs no handling.
        unsafe {
            libc::ioctl(
                fd,
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp as *mut libc::seccomp_notif_resp,
            )
        };
    }
}

fn errno(e: &std::io::Error) -> Answer {
    Answer::Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

/// A uid_t/gid_t argument: -1 (as a 32-bit value) leaves the id unchanged.
fn id_arg(v: u64) -> Option<u32> {
    let v = v as u32;
    (v != u32::MAX).then_some(v)
}

fn handle(fd: RawFd, req: &libc::seccomp_notif, proc_dir: &Path, record: &File) -> Answer {
    let call = match call_of(req.data.arch, req.data.nr) {
        Some(Call::Id(_) | Call::Stat(_) | Call::Create(_)) | None => return Answer::Continue,
        Some(c) => c,
    };
    let a = req.data.args;
    let (uid, gid) = match call {
        Call::At => (id_arg(a[2]), id_arg(a[3])),
        _ => (id_arg(a[1]), id_arg(a[2])),
    };
    let target = match call {
        Call::Path { follow } => read_path(fd, req, proc_dir, a[0])
            .and_then(|p| resolve(proc_dir, libc::AT_FDCWD, &p, follow)),
        Call::At => {
            let flags = a[4] as i32;
            let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
            match read_path(fd, req, proc_dir, a[1]) {
                Ok(p) if p.is_empty() && flags & libc::AT_EMPTY_PATH != 0 => {
                    fd_path(proc_dir, a[0] as i32)
                }
                Ok(p) => resolve(proc_dir, a[0] as i32, &p, follow),
                Err(e) => Err(e),
            }
        }
        _ => fd_path(proc_dir, a[0] as i32),
    };
    let mappable = [uid, gid].iter().all(|id| matches!(id, None | Some(0)));
    let target = match target {
        Ok(t) => t,
        // The kernel reports its own error for a call it can perform.
        Err(_) if mappable => return Answer::Continue,
        Err(e) => return errno(&e),
    };
    let Some(path) = target else {
        // An fd without a path (pipe, socket, anonymous inode): nothing a layer could hold.
        return if mappable {
            Answer::Continue
        } else {
            Answer::Done
        };
    };
    if !mappable {
        if let Ok(st) = nix::sys::statvfs::statvfs(&path) {
            if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
                return Answer::Errno(libc::EROFS);
            }
        }
    }
    if uid.is_some() || gid.is_some() {
        // Beside the file too: it survives a rename, and later stats show it.
        owners::chowned(&path, uid, gid);
        let rec = RecordedChown {
            path: path.to_string_lossy().into_owned(),
            uid,
            gid,
        };
        if let Err(e) = append(record, &rec) {
            // Unrecorded, the chown would be lost silently: fail it instead.
            return errno(&e);
        }
    }
    if mappable {
        Answer::Continue
    } else {
        Answer::Done
    }
}

/// A stat call of a file with a recorded owner is performed here, with that owner; any other
/// (or any failure) is left to the kernel.
fn stat(fd: RawFd, req: &libc::seccomp_notif, proc_dir: &Path, call: StatCall) -> Answer {
    let a = req.data.args;
    // (dirfd, path address, flags, buffer)
    let (dirfd, addr, flags, buf) = match call {
        StatCall::Path { follow } => {
            let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
            (libc::AT_FDCWD, Some(a[0]), flags, a[1])
        }
        StatCall::Fd => (a[0] as i32, None, libc::AT_EMPTY_PATH, a[1]),
        StatCall::At => (a[0] as i32, Some(a[1]), a[3] as i32, a[2]),
        StatCall::Statx => (a[0] as i32, Some(a[1]), a[2] as i32, a[4]),
    };
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    let path = match addr.map(|p| read_path(fd, req, proc_dir, p)) {
        None => fd_path(proc_dir, dirfd),
        Some(Ok(p)) if p.is_empty() && flags & libc::AT_EMPTY_PATH != 0 => fd_path(proc_dir, dirfd),
        Some(Ok(p)) => resolve(proc_dir, dirfd, &p, false),
        Some(Err(_)) => return Answer::Continue,
    };
    // An fd's path names the object itself; a path's last component is followed as asked.
    let follow = follow && addr.is_some();
    let Ok(Some(path)) = path else {
        return Answer::Continue;
    };
    let kind = match call {
        StatCall::Statx => StatKind::Statx {
            flags,
            mask: a[3] as u32,
        },
        _ => StatKind::Stat,
    };
    // The caller may have gone (and its pid been reused) while we looked.
    if !id_valid(fd, req.id) {
        return Answer::Continue;
    }
    match owners::fake_stat(proc_dir, &path, follow, kind, buf) {
        Some(()) => Answer::Value(0),
        None => Answer::Continue,
    }
}

/// Before a creating call of a process that appears as another user (`fs`: its filesystem ids):
/// notes the file it will make, to be given those ids ([`owners::flush`]); a symlink, which
/// cannot hold the xattr, gets them through the record file instead. Best effort: a lost note
/// leaves the one mapped id as the owner.
fn created(
    fd: RawFd,
    req: &libc::seccomp_notif,
    dir: &Path,
    c: Creates,
    fs: (u32, u32),
    record: &File,
    made: &owners::Pending,
) {
    if fs == (0, 0) {
        return;
    }
    match new_path(fd, req, dir, c) {
        Some(p) if c.link => {
            let (uid, gid) = (Some(fs.0), Some(fs.1));
            let path = p.to_string_lossy().into_owned();
            let _ = append(record, &RecordedChown { path, uid, gid });
        }
        Some(p) => owners::note(made, p, fs),
        None => {}
    }
}

/// One line of the record file.
fn append(record: &File, rec: &RecordedChown) -> std::io::Result<()> {
    let mut line = serde_json::to_string(rec).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut w: &File = record;
    w.write_all(line.as_bytes())
}

/// The NUL-terminated string at `addr` in the caller's memory (at most PATH_MAX bytes).
fn read_path(
    fd: RawFd,
    req: &libc::seccomp_notif,
    proc_dir: &Path,
    addr: u64,
) -> std::io::Result<String> {
    let mem = File::open(proc_dir.join("mem"))?;
    // The fd must be the caller's, not a process that took over its pid (seccomp_unotify(2)).
    if !id_valid(fd, req.id) {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    let mut out = Vec::new();
    let mut at = addr;
    // Chunks never cross a 4 KiB boundary, so a string ending just before an unmapped page reads.
    while out.len() < libc::PATH_MAX as usize {
        let n = 4096 - (at % 4096) as usize;
        let mut buf = vec![0u8; n];
        let got = mem
            .read_at(&mut buf, at)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EFAULT))?;
        if got == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        }
        if let Some(end) = buf[..got].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&buf[..got]);
        at += got as u64;
    }
    Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

/// The path behind the caller's fd (pid 1's root is the container's root), or None when the fd
/// has no path.
fn fd_path(proc_dir: &Path, n: i32) -> std::io::Result<Option<PathBuf>> {
    let p = if n == libc::AT_FDCWD {
        std::fs::read_link(proc_dir.join("cwd"))
    } else {
        std::fs::read_link(proc_dir.join("fd").join(n.to_string()))
    }
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => std::io::Error::from_raw_os_error(libc::EBADF),
        _ => e,
    })?;
    Ok(p.is_absolute().then_some(p))
}

/// The in-container absolute path a chown of `path` (relative to `dirfd`) acts on; the last
/// component is a symlink itself when `follow` is false.
fn resolve(
    proc_dir: &Path,
    dirfd: i32,
    path: &str,
    follow: bool,
) -> std::io::Result<Option<PathBuf>> {
    let joined = join(proc_dir, dirfd, path)?;
    let resolved = match (follow, joined.parent(), joined.file_name()) {
        (false, Some(parent), Some(name)) => {
            let p = std::fs::canonicalize(parent)?.join(name);
            std::fs::symlink_metadata(&p)?;
            p
        }
        _ => std::fs::canonicalize(&joined)?,
    };
    Ok(Some(resolved))
}

/// `path` (relative to the caller's `dirfd`) as seen from pid 1, nothing resolved.
fn join(proc_dir: &Path, dirfd: i32, path: &str) -> std::io::Result<PathBuf> {
    if path.is_empty() {
        return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
    }
    if let Some(rel) = path.strip_prefix('/') {
        // The caller's root (it may have chrooted) as seen from pid 1's root.
        return Ok(std::fs::read_link(proc_dir.join("root"))?.join(rel));
    }
    match fd_path(proc_dir, dirfd)? {
        Some(base) => Ok(base.join(path)),
        None => Err(std::io::Error::from_raw_os_error(libc::ENOTDIR)),
    }
}

/// The file a creating call will make: its parent resolved, its name not there yet (None when
/// it exists already, as an O_CREAT open of an existing file makes nothing).
fn new_path(fd: RawFd, req: &libc::seccomp_notif, proc_dir: &Path, c: Creates) -> Option<PathBuf> {
    let a = req.data.args;
    let dirfd = c.dirfd.map_or(libc::AT_FDCWD, |i| a[i] as i32);
    let p = read_path(fd, req, proc_dir, a[c.path]).ok()?;
    let joined = join(proc_dir, dirfd, &p).ok()?;
    let made = std::fs::canonicalize(joined.parent()?)
        .ok()?
        .join(joined.file_name()?);
    std::fs::symlink_metadata(&made).is_err().then_some(made)
}

/// The recorded chowns of a run, one per path, ids merged in order (a later -1 keeps an earlier id).
pub(crate) fn read_records(run_dir: &Path) -> Vec<RecordedChown> {
    let Ok(f) = File::open(run_dir.join(RECORD_FILE)) else {
        return Vec::new();
    };
    let mut by_path: BTreeMap<String, (Option<u32>, Option<u32>)> = BTreeMap::new();
    for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
        if let Ok(r) = serde_json::from_str::<RecordedChown>(&line) {
            let e = by_path.entry(r.path).or_default();
            *e = (r.uid.or(e.0), r.gid.or(e.1));
        }
    }
    by_path
        .into_iter()
        .map(|(path, (uid, gid))| RecordedChown { path, uid, gid })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_arch_k(k: u32) -> bool {
        k == AUDIT_ARCH_X86_64 || k == AUDIT_ARCH_AARCH64
    }

    #[test]
    fn filter_jumps_land_on_notify_and_arches_skip_their_block() {
        let p = filter();
        let notify = p.len() - 1;
        assert_eq!(u32::from(p[notify].code), libc::BPF_RET | libc::BPF_K);
        assert_eq!(p[notify].k, libc::SECCOMP_RET_USER_NOTIF);
        let mut nrs = Vec::new();
        for (i, ins) in p.iter().enumerate() {
            let is_jeq = u32::from(ins.code) == (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K);
            if is_jeq && ins.jt > 0 && !is_arch_k(ins.k) {
                assert_eq!(i + 1 + ins.jt as usize, notify, "jeq {} at {i}", ins.k);
                nrs.push(ins.k);
            }
            let is_arch = ins.k == AUDIT_ARCH_X86_64 || ins.k == AUDIT_ARCH_AARCH64;
            if is_jeq && is_arch {
                // An arch check: skipping lands on the next arch check or the final allow.
                let to = &p[i + 1 + ins.jf as usize];
                assert!(to.k == AUDIT_ARCH_AARCH64 || to.k == libc::SECCOMP_RET_ALLOW);
            }
            let is_jset = u32::from(ins.code) == (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K);
            if is_jset {
                // open/openat: only with O_CREAT, after loading the flags argument.
                assert_eq!(ins.k, libc::O_CREAT as u32);
                assert_eq!(i + 1 + ins.jt as usize, notify);
                nrs.push(p[i - 2].k);
            }
        }
        let want: Vec<u32> = calls().iter().map(|c| c.1).collect();
        assert_eq!(nrs, want);
        assert!(nrs.starts_with(&[92, 93, 94, 260, 4, 5, 6, 262, 332, 2, 257]));
        assert_eq!(
            call_of(AUDIT_ARCH_X86_64, 117),
            Some(Call::Id(IdCall::SetResUid))
        );
        assert_eq!(
            call_of(AUDIT_ARCH_AARCH64, 291),
            Some(Call::Stat(StatCall::Statx))
        );
        assert_eq!(call_of(AUDIT_ARCH_AARCH64, 54), Some(Call::At));
        assert_eq!(call_of(AUDIT_ARCH_X86_64, 54), None);
    }

    #[test]
    fn records_merge_per_path_and_a_later_minus_one_keeps_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            r#"{"path":"/h","uid":555,"gid":null}"#,
            r#"{"path":"/a","uid":1,"gid":2}"#,
            r#"{"path":"/h","uid":null,"gid":0}"#,
            r#"{"path":"/a","uid":3,"gid":4}"#,
        ];
        std::fs::write(dir.path().join(RECORD_FILE), lines.join("\n")).unwrap();
        let rec = |path: &str, uid, gid| RecordedChown {
            path: path.into(),
            uid,
            gid,
        };
        assert_eq!(
            read_records(dir.path()),
            [rec("/a", Some(3), Some(4)), rec("/h", Some(555), Some(0))]
        );
        assert!(read_records(&dir.path().join("missing")).is_empty());
    }
}
