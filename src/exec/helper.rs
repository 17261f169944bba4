//! The `__sandbox` helper: a fresh, single-threaded kiln process that unshares namespaces, forks
//! pid 1 (which builds the mount table and forks the command), and reports on stderr.

use super::mounts;
use super::seccomp;
use super::{HelperSpec, Network, Rung, Status};
use crate::snapshot::Mount;
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Docker's default capability set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP).
const DEFAULT_CAPS: [i32; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

fn report(st: &Status) {
    if let Ok(mut line) = serde_json::to_string(st) {
        line.push('\n');
        // One write below PIPE_BUF: lines from the helper and pid 1 never interleave.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Entry point of `kiln __sandbox`; returns the helper's exit code (the command's own result
/// travels as a status line).
pub fn sandbox_main() -> i32 {
    match helper() {
        Ok(()) => 0,
        Err(e) => {
            report(&Status::Error(e));
            1
        }
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn helper() -> Result<(), String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the spec: {e}"))?;
    let hs: HelperSpec =
        serde_json::from_slice(&buf).map_err(|e| format!("decoding the spec: {e}"))?;
    if threads() != 1 {
        return Err("the sandbox helper must be single-threaded".into());
    }
    let pid = std::process::id().to_string();
    for p in &hs.cgroup_procs {
        std::fs::write(p, &pid).map_err(|e| format!("joining cgroup {}: {e}", p.display()))?;
    }
    let rootfs = hs.run_dir.join("rootfs");
    let skel = hs.run_dir.join("skel");
    let secrets = hs.run_dir.join("secrets");
    for d in [&rootfs, &skel, &secrets] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let points = mounts::mount_points(&hs.spec);
    // Overlays get their missing mount points from the skeleton lower layer; a plain directory
    // rootfs gets them created now and removed afterwards.
    let plain: Option<PathBuf> = hs.spec.rootfs.iter().find_map(|m| match m {
        Mount::Bind {
            source,
            readonly: false,
        } => Some(source.clone()),
        _ => None,
    });
    let mut created = Vec::new();
    let mut times = Vec::new();
    for (rel, file) in &points {
        mounts::create_point(&skel, rel, *file)?;
        if let Some(dir) = &plain {
            let parent = rel
                .parent()
                .map(|p| dir.join(p))
                .unwrap_or_else(|| dir.clone());
            let before = std::fs::symlink_metadata(&parent).ok();
            let made = mounts::create_point(dir, rel, *file)?;
            if let (Some(b), false) = (before, made.is_empty()) {
                times.push((parent, b));
            }
            created.extend(made);
        }
    }
    let res = sandbox(&hs, &rootfs, &skel, &secrets);
    for p in created.iter().rev() {
        let _ = std::fs::remove_dir(p).or_else(|_| std::fs::remove_file(p));
    }
    for (p, meta) in times.iter().rev() {
        let at = filetime::FileTime::from_last_access_time(meta);
        let mt = filetime::FileTime::from_last_modification_time(meta);
        let _ = filetime::set_symlink_file_times(p, at, mt);
    }
    res
}

fn write_file(p: &str, s: &str) -> Result<(), String> {
    std::fs::write(p, s).map_err(|e| format!("writing {p}: {e}"))
}

fn sandbox(hs: &HelperSpec, rootfs: &Path, skel: &Path, secrets: &Path) -> Result<(), String> {
    let spec = &hs.spec;
    let mut flags = CloneFlags::empty();
    if spec.rung != Rung::Chroot {
        flags |= CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    }
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let single = spec.rung == Rung::SingleUid && multi_id_mapped();
    if single {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let (uid, gid) = (Uid::current(), Gid::current());
    // Opened before the user namespace and pivot_root: pid 1 appends to it from inside.
    let record = if spec.rung == Rung::SingleUid && !hs.probe_only {
        let p = hs.run_dir.join(seccomp::RECORD_FILE);
        Some(File::create(&p).map_err(|e| format!("creating {}: {e}", p.display()))?)
    } else {
        None
    };
    nix::sched::unshare(flags).map_err(|e| format!("unshare({flags:?}): {e}"))?;
    if single {
        // One id: our own, which an unprivileged process may always map for itself.
        write_file("/proc/self/uid_map", &format!("0 {uid} 1"))?;
        write_file("/proc/self/setgroups", "deny")?;
        write_file("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    }
    // SAFETY: checked above that this process has exactly one thread, so the child may run
    // arbitrary code (allocate, spawn) after fork without inheriting a held lock.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let code = match pid1(hs, rootfs, skel, secrets, record) {
                Ok(()) => 0,
                Err(e) => {
                    report(&Status::Error(e));
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            report(&Status::Pid1(child.as_raw()));
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(..)) => return Ok(()),
                    Ok(WaitStatus::Signaled(_, sig, _)) => {
                        report(&Status::Signal(sig as i32));
                        return Ok(());
                    }
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("waiting for pid 1: {e}")),
                }
            }
        }
    }
}

/// Whether more than one uid is mapped into our user namespace.
fn multi_id_mapped() -> bool {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let total: u64 = map
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    total > 1
}

fn pid1(
    hs: &HelperSpec,
    rootfs: &Path,
    skel: &Path,
    secrets: &Path,
    record: Option<File>,
) -> Result<(), String> {
    let spec = &hs.spec;
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // Its own process group, so that the chroot rung (no pid namespace) can still kill the tree.
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mounts::make_private()?;
    mounts::mount_rootfs(&spec.rootfs, rootfs, skel)?;
    mounts::secrets_tmpfs(secrets)?;
    for w in mounts::setup(rootfs, spec, secrets)? {
        report(&Status::Warning(w));
    }
    if let Some(emu) = &spec.emulator {
        mounts::bind_emulator(rootfs, emu)?;
    }
    if spec.rung != Rung::Chroot {
        // Only cosmetic: a refused sethostname (the runtime's default seccomp profile allows it
        // only with CAP_SYS_ADMIN in the container) leaves the pod's name and steps down nothing.
        // Said once, by the probe (`kiln info`, the build's sandbox line), not at every step.
        let set = nix::unistd::sethostname(&spec.hostname);
        if let (Err(e), true) = (set, hs.probe_only) {
            report(&Status::Warning(format!(
                "sethostname was refused ({e}): RUN sees the container's hostname, not {:?} \
                 (the runtime's default seccomp profile allows sethostname only with \
                 CAP_SYS_ADMIN; deploy/seccomp/kiln.json allows it)",
                spec.hostname
            )));
        }
    }
    mounts::pivot(rootfs)?;
    if spec.network == Network::None {
        loopback_up()?;
    }
    if hs.probe_only {
        report(&Status::Exit(0));
        return Ok(());
    }
    let user = super::user::resolve(spec.user.as_deref(), "")?;
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    std::fs::create_dir_all(cwd)
        .map_err(|e| format!("creating the working directory {cwd}: {e}"))?;
    // The recorder reads the command's /proc/<pid>. Its pids are of our pid namespace; a /proc
    // that is not our own (a container's masked /proc refuses a fresh mount, so the host's was
    // bound) numbers them in the outer namespace, and the recorder translates.
    let own_proc = std::fs::read_link("/proc/self").ok() == Some(PathBuf::from("1"))
        || spec.rung == Rung::Chroot;
    let channel = match record {
        Some(_) => Some(seccomp::channel()?),
        None => None,
    };
    // SAFETY: pid 1 is single-threaded (a fork of the single-threaded helper); the recorder's
    // thread starts only after this fork.
    let cmd = match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let e = exec_command(hs, &user, cwd, channel.as_ref().map(|c| &c.0));
            report(&Status::Error(e));
            std::process::exit(127);
        }
        ForkResult::Parent { child } => child,
    };
    let mut made = None;
    if let (Some((theirs, ours)), Some(record)) = (channel, record) {
        // Our copy of the command's end closed, a command that dies before sending reads as EOF.
        drop(theirs);
        if let Some(listener) = seccomp::receive(ours)? {
            let creds = super::ids::Creds::of_user(user.uid, user.gid, &user.groups);
            made = Some(seccomp::supervise(listener, record, own_proc, creds));
        }
    }
    // Reap everything (orphans re-parent to pid 1); the command's status is the result.
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p == cmd => {
                // Owners of files made as another user, before the step's changes are read.
                if let Some(m) = &made {
                    super::owners::flush(m);
                }
                report(&Status::Exit(code));
                break;
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p == cmd => {
                report(&Status::Signal(sig as i32));
                break;
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the command: {e}")),
        }
    }
    if spec.rung == Rung::Chroot {
        let _ = nix::sys::signal::kill(Pid::from_raw(0), nix::sys::signal::Signal::SIGKILL);
    }
    Ok(())
}

/// Never returns on success.
fn exec_command(
    hs: &HelperSpec,
    user: &super::user::ExecUser,
    cwd: &str,
    recorder: Option<&OwnedFd>,
) -> String {
    use std::os::unix::process::CommandExt;
    let spec = &hs.spec;
    if spec.argv.is_empty() {
        return "empty command".into();
    }
    // A foreign-architecture step without a binfmt_misc handler runs through the mounted emulator
    // (BuildKit prepends qemuMountName to the args the same way, solver/llbsolver/ops/exec.go).
    let argv = match spec.emulator {
        Some(_) => {
            let path = spec
                .env
                .iter()
                .find_map(|kv| kv.strip_prefix("PATH="))
                .unwrap_or(DEFAULT_PATH);
            super::emulate::emulated_argv(&spec.argv, path, Path::new("/"))
        }
        None => spec.argv.clone(),
    };
    let Some((prog, args)) = argv.split_first() else {
        return "empty command".into();
    };
    // stdout is the output pipe; stderr (the status pipe) is replaced by it.
    if let Err(e) = nix::unistd::dup2_stderr(std::io::stdout()) {
        return format!("dup2: {e}");
    }
    match std::fs::File::open("/dev/null") {
        Ok(f) => {
            let _ = nix::unistd::dup2_stdin(f);
        }
        Err(e) => return format!("opening /dev/null: {e}"),
    }
    for cap in 0..64 {
        if !DEFAULT_CAPS.contains(&cap) {
            // SAFETY: PR_CAPBSET_DROP takes an integer and touches no memory of ours; EINVAL for
            // numbers beyond the kernel's last capability is expected and ignored.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    // Before dropping to the step's user: lowering needs nothing, raising within the hard limit
    // needs nothing either, and a refused raise is an error naming the rung.
    if let Err(e) = super::limits::apply(&spec.ulimits, spec.rung) {
        return e;
    }
    // The single-uid rung keeps the one mapped id for real: the recorder's credentials table
    // gives the command its user (see `ids`).
    if recorder.is_none() {
        if let Err(e) = set_user(spec.rung, user) {
            return e;
        }
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS with constant integer arguments touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return format!("no_new_privs: {}", std::io::Error::last_os_error());
    }
    if let Some(sock) = recorder {
        if let Err(e) = seccomp::install(sock) {
            return e;
        }
    }
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args).env_clear().current_dir(cwd);
    let mut has_path = false;
    let mut has_home = false;
    for kv in &spec.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        has_path |= k == "PATH";
        has_home |= k == "HOME";
        cmd.env(k, v);
    }
    if !has_path {
        cmd.env("PATH", DEFAULT_PATH);
    }
    if !has_home {
        cmd.env("HOME", &user.home);
    }
    cmd.env("HOSTNAME", &spec.hostname);
    let e = cmd.exec();
    format!("executing {prog:?}: {e}")
}

/// The step's user for real: groups, gid, uid.
fn set_user(rung: Rung, user: &super::user::ExecUser) -> Result<(), String> {
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // The single-uid rung cannot set groups (setgroups is denied there).
        if rung != Rung::SingleUid {
            return Err(format!("setgroups: {e}"));
        }
    }
    let gid = Gid::from_raw(user.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {}: {e}", user.gid))?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {}: {e}", user.uid))
}

/// A fresh network namespace has `lo` down; bring it up so that 127.0.0.1 works.
fn loopback_up() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq that outlives both calls; the socket fd is open.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(format!(
                "SIOCGIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(format!(
                "SIOCSIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
