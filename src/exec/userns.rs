//! Rootless start-up: re-exec kiln inside a new user namespace (like `podman unshare`), uid/gid 0
//! mapped to the caller and 1..=65536 to the caller's /etc/subuid and /etc/subgid ranges.
//!
//! Each step that fails steps down instead of stopping kiln: `newuidmap` refused (set-uid helpers
//! cannot raise privileges under `no_new_privs`, i.e. a pod with `allowPrivilegeEscalation:
//! false`) → only the caller's own ids are mapped (the single-uid rung); user namespaces denied
//! (a seccomp profile without `unshare`, `user.max_user_namespaces` = 0) → kiln runs on without
//! one and says why ([`no_userns_reason`]): builds without RUN still work. Root without
//! CAP_SYS_ADMIN (root in a user-namespaced pod, `hostUsers: false`) takes the rootless path too.
//! Must NOT: start a thread before the re-exec, or fail kiln for a sandbox it may never need.

use super::ExecError;
use nix::fcntl::OFlag;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// Set in the re-executed kiln: "multi" (subordinate ids mapped) or "single".
pub(super) const USERNS_ENV: &str = "_KILN_USERNS";
const RANGE: u64 = 65536;

fn err(msg: impl Into<String>) -> ExecError {
    ExecError::UserNamespace(msg.into())
}

/// The first range of `file` (/etc/subuid format) for `name` or `id`: (start, count).
fn subid_range(file: &str, name: &str, id: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != name && who != id.to_string() {
            return None;
        }
        Some((start.parse().ok()?, count.parse().ok()?))
    })
}

fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
        })
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default()
}

static CHILD: AtomicI32 = AtomicI32::new(0);
/// Why kiln runs without a user namespace of its own (set when creating one failed).
static NO_USERNS: OnceLock<String> = OnceLock::new();

/// Why kiln is not in a user namespace of its own although it needs one (None: it is, or it is
/// privileged root and needs none).
pub(crate) fn no_userns_reason() -> Option<&'static str> {
    NO_USERNS.get().map(String::as_str)
}

/// Whether the effective capability set holds CAP_SYS_ADMIN (bit 21 of `CapEff`).
fn has_sys_admin() -> bool {
    status_field("CapEff")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0)
}

/// A field of /proc/self/status (`NoNewPrivs`, `CapEff`).
pub(crate) fn status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim().to_string())
    })
}

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Maps the subordinate ranges with newuidmap/newgidmap; when either is refused (or there are
/// none), only our own ids (the single-uid rung; the re-executed kiln reads which from its maps).
fn map_ids(pid: i32, uid: u32, gid: u32, name: &str) -> Result<(), ExecError> {
    if let Some(n) = root_range() {
        return map_root_range(pid, n);
    }
    let su = subid_range("/etc/subuid", name, uid);
    let sg = subid_range("/etc/subgid", name, gid);
    let mut uid_mapped = false;
    if let (Some((us, uc)), Some((gs, gc))) = (su, sg) {
        let n = uc.min(gc).min(RANGE);
        let run = |tool: &str, id: u32, start: u64| {
            std::process::Command::new(tool)
                .args([pid.to_string(), "0".into(), id.to_string(), "1".into()])
                .args(["1".to_string(), start.to_string(), n.to_string()])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        uid_mapped = run("newuidmap", uid, us);
        if uid_mapped && run("newgidmap", gid, gs) {
            return Ok(());
        }
    }
    // An unprivileged process may always map its own ids (user_namespaces(7)); the gid map of
    // such a process needs setgroups denied first.
    let w = |f: &str, s: String| {
        std::fs::write(format!("/proc/{pid}/{f}"), s).map_err(|e| err(format!("writing {f}: {e}")))
    };
    if !uid_mapped {
        w("uid_map", format!("0 {uid} 1"))?;
    }
    w("setgroups", "deny".into())?;
    w("gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// Root inside a user namespace (a user-namespaced pod, `hostUsers: false`) has no subordinate
/// ranges but may map the ids it has itself, given CAP_SETUID, CAP_SETGID and CAP_SETFCAP (the
/// last for uid 0, Linux ≥ 5.12 `verify_root_map`): how many, when all of this holds.
fn root_range() -> Option<u64> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let caps = status_field("CapEff").and_then(|v| u64::from_str_radix(&v, 16).ok())?;
    // linux/capability.h: CAP_SETGID 6, CAP_SETUID 7, CAP_SETFCAP 31.
    let needed: u64 = (1 << 6) | (1 << 7) | (1 << 31);
    if caps & needed != needed {
        return None;
    }
    // The ids 0..n of our own namespace, whatever they are outside.
    let first = |f: &str| -> Option<u64> {
        let map = std::fs::read_to_string(f).ok()?;
        let v: Vec<u64> = map
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        (v.len() == 3 && v[0] == 0).then_some(v[2])
    };
    let n = first("/proc/self/uid_map")?.min(first("/proc/self/gid_map")?);
    (n > 1).then_some(n.min(RANGE + 1))
}

fn map_root_range(pid: i32, n: u64) -> Result<(), ExecError> {
    for f in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{f}"), format!("0 0 {n}"))
            .map_err(|e| err(format!("writing {f}: {e}")))?;
    }
    Ok(())
}

/// Called first thing by main. As root, or when already inside kiln's user namespace, returns
/// Ok at once. Otherwise runs kiln again inside a new user namespace, proxies signals to it, and
/// exits with its exit code (never returns Ok in that case).
pub fn maybe_reexec_into_userns() -> Result<(), ExecError> {
    let root = nix::unistd::geteuid().is_root();
    if (root && has_sys_admin()) || std::env::var_os(USERNS_ENV).is_some() {
        return Ok(());
    }
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let name = user_name(uid);
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| err(format!("pipe: {e}")));
    let (pid_r, pid_w): (OwnedFd, OwnedFd) = pipe()?;
    let (go_r, go_w): (OwnedFd, OwnedFd) = pipe()?;
    let (pw, gr) = (pid_w.as_raw_fd(), go_r.as_raw_fd());
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1)).env(USERNS_ENV, "1");
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // (unshare, getpid, write, read) on integers and a stack buffer; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = libc::getpid().to_ne_bytes();
            libc::write(pw, pid.as_ptr().cast(), pid.len());
            let mut ok = [0u8; 1];
            if libc::read(gr, ok.as_mut_ptr().cast(), 1) != 1 || ok[0] != b'1' {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        });
    }
    // spawn() returns only after exec, which waits for the maps: spawn from another thread.
    let spawner = std::thread::spawn(move || {
        let r = cmd.spawn();
        drop(pid_w);
        drop(go_r);
        r
    });
    let mut buf = [0u8; 4];
    let got = nix::unistd::read(&pid_r, &mut buf)
        .map_err(|e| err(format!("reading the child's pid: {e}")))?;
    let mapped = if got == 4 {
        let pid = i32::from_ne_bytes(buf);
        let r = map_ids(pid, uid, gid, &name);
        let _ = nix::unistd::write(&go_w, if r.is_ok() { b"1" } else { b"0" });
        Some(r)
    } else {
        None
    };
    drop(go_w);
    let child = spawner
        .join()
        .map_err(|_| err("the spawning thread panicked"))?;
    let mut child = match child {
        Ok(c) => c,
        // No ids could be mapped (root without CAP_SETFCAP may not map uid 0): go on without.
        Err(_) if matches!(mapped, Some(Err(_))) => {
            let why = mapped.and_then(Result::err).map(|e| e.to_string());
            let root = if nix::unistd::geteuid().is_root() {
                " (root without CAP_SETFCAP may not map uid 0 into a user namespace, Linux ≥ \
                 5.12; keep CAP_SETUID, CAP_SETGID and CAP_SETFCAP, or run kiln as a non-root \
                 user)"
            } else {
                ""
            };
            let _ = NO_USERNS.set(format!(
                "mapping ids into kiln's user namespace was refused: {}{root}",
                why.unwrap_or_default()
            ));
            return Ok(());
        }
        // The child never reached its maps: unshare(CLONE_NEWUSER) itself was refused. Go on
        // without a user namespace; the sandbox probe reports this as the reason RUN cannot run.
        Err(e) if mapped.is_none() => {
            let _ = NO_USERNS.set(format!(
                "creating a user namespace was refused: unshare(CLONE_NEWUSER): {e}{}",
                userns_hint(&e)
            ));
            return Ok(());
        }
        Err(e) => return Err(err(format!("re-executing kiln in a user namespace: {e}"))),
    };
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: `forward` is an extern "C" fn that only calls async-signal-safe kill().
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    let status = child
        .wait()
        .map_err(|e| err(format!("waiting for kiln: {e}")))?;
    use std::os::unix::process::ExitStatusExt;
    std::process::exit(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    );
}

/// What to do about a refused unshare(CLONE_NEWUSER).
fn userns_hint(e: &std::io::Error) -> &'static str {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        " (user.max_user_namespaces is 0 on this host)"
    } else if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
        " (most likely the container's seccomp profile, such as the runtime's default: run kiln \
         with the Localhost profile deploy/seccomp/kiln.json)"
    } else {
        ""
    }
}

/// How kiln runs in its own user namespace: `Some("multi")` (subordinate ids mapped),
/// `Some("single")` (only its own id), None (not re-executed: privileged root, or no user
/// namespace could be made — see [`no_userns_reason`]).
pub(crate) fn rootless_mode() -> Option<&'static str> {
    std::env::var_os(USERNS_ENV)?;
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let total: u64 = map
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    Some(if total > 1 { "multi" } else { "single" })
}

/// Why only one id is mapped: no subordinate range for the user, or newuidmap/newgidmap refused
/// to map it (set-uid binaries cannot raise privileges under `no_new_privs`).
pub(crate) fn single_reason() -> String {
    // Our uid 0 is the caller's uid outside: the first line of the map says which.
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let outer: Option<u32> = map.split_whitespace().nth(1).and_then(|v| v.parse().ok());
    let has_range = outer.is_some_and(|u| subid_range("/etc/subuid", &user_name(u), u).is_some());
    if !has_range {
        return "only one uid is mapped: no /etc/subuid and /etc/subgid range for this user \
                (add one with usermod --add-subuids)"
            .into();
    }
    let nnp = status_field("NoNewPrivs").as_deref() == Some("1");
    format!(
        "only one uid is mapped: newuidmap/newgidmap refused to map this user's /etc/subuid range{}",
        if nnp {
            " (no_new_privs is set, e.g. allowPrivilegeEscalation: false or --security-opt \
             no-new-privileges: the set-uid newuidmap cannot raise privileges)"
        } else {
            " (are newuidmap and newgidmap installed set-uid root or with file capabilities?)"
        }
    )
}
