//! systemd integration: socket activation (`LISTEN_FDS`, `LISTEN_PID`; the socket is fd 3) and
//! `sd_notify` (`READY=1`, `STOPPING=1` as a datagram to `$NOTIFY_SOCKET`, abstract when it starts
//! with `@`).
//!
//! Must not: do anything when not started by systemd (no variables, no effect).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};

static ACTIVATED: AtomicBool = AtomicBool::new(false);

/// The listening socket systemd passed, if any. A rootless kiln re-executes itself into a user
/// namespace first, so `LISTEN_PID` may name the parent that systemd started.
pub fn listener_from_env() -> io::Result<Option<UnixListener>> {
    let Some(pid) = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return Ok(None);
    };
    let me = std::process::id();
    let parent = std::os::unix::process::parent_id();
    if pid != me && pid != parent {
        return Ok(None);
    }
    std::env::set_var("LISTEN_PID", me.to_string());
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let l = fds.take_unix_listener(0)?;
    if l.is_some() {
        ACTIVATED.store(true, Ordering::SeqCst);
    }
    Ok(l)
}

/// True when the socket came from systemd (the daemon then leaves the socket file alone).
pub fn activated() -> bool {
    ACTIVATED.load(Ordering::SeqCst)
}

/// Send `state` to systemd's notify socket; silently nothing when not under systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    if let Ok(addr) = addr {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
