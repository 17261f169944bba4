//! Rootless start-up: re-exec kiln inside a new user namespace (like `podman unshare`), uid/gid 0
//! mapped to the caller and 1..=65536 to the caller's /etc/subuid and /etc/subgid ranges.

use super::ExecError;
use nix::fcntl::OFlag;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// Set in the re-executed kiln: "multi" (subordinate ids mapped) or "single".
pub const USERNS_ENV: &str = "_KILN_USERNS";
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

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes plain integers.
        unsafe { libc::kill(pid, sig) };
    }
}

fn map_ids(pid: i32, uid: u32, gid: u32, name: &str) -> Result<bool, ExecError> {
    let su = subid_range("/etc/subuid", name, uid);
    let sg = subid_range("/etc/subgid", name, gid);
    if let (Some((us, uc)), Some((gs, gc))) = (su, sg) {
        let n = uc.min(gc).min(RANGE);
        for (tool, id, start) in [("newuidmap", uid, us), ("newgidmap", gid, gs)] {
            let out = std::process::Command::new(tool)
                .args([pid.to_string(), "0".into(), id.to_string(), "1".into()])
                .args(["1".to_string(), start.to_string(), n.to_string()])
                .output()
                .map_err(|e| err(format!("running {tool}: {e}")))?;
            if !out.status.success() {
                return Err(err(format!(
                    "{tool} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        return Ok(true);
    }
    // Without subordinate ranges only our own ids can be mapped (the single-uid rung).
    let w = |f: &str, s: String| {
        std::fs::write(format!("/proc/{pid}/{f}"), s).map_err(|e| err(format!("writing {f}: {e}")))
    };
    w("uid_map", format!("0 {uid} 1"))?;
    w("setgroups", "deny".into())?;
    w("gid_map", format!("0 {gid} 1"))?;
    Ok(false)
}

/// Called first thing by main. As root, or when already inside kiln's user namespace, returns
/// Ok at once. Otherwise runs kiln again inside a new user namespace, proxies signals to it, and
/// exits with its exit code (never returns Ok in that case).
pub fn maybe_reexec_into_userns() -> Result<(), ExecError> {
    if nix::unistd::geteuid().is_root() || std::env::var_os(USERNS_ENV).is_some() {
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
    let mode = if subid_range("/etc/subuid", &name, uid).is_some() {
        "multi"
    } else {
        "single"
    };
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1)).env(USERNS_ENV, mode);
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
    if let Some(Err(e)) = mapped {
        return Err(e);
    }
    let mut child =
        child.map_err(|e| err(format!("re-executing kiln in a user namespace: {e}")))?;
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

/// Whether kiln runs in its own user namespace with subordinate ids (false: one id, or root).
pub(crate) fn rootless_mode() -> Option<&'static str> {
    match std::env::var(USERNS_ENV).ok().as_deref() {
        Some("multi") => Some("multi"),
        Some(_) => Some("single"),
        None => None,
    }
}
