//! `--ssh` for `RUN --mount=type=ssh`: the build's agents, and the socket each step sees.
//!
//! An `ID=SOCKET` source is an agent already running (`default` is `$SSH_AUTH_SOCK`, filled in by
//! the CLI). An `ID=KEYFILE[,KEYFILE]` source gets an agent of its own: kiln starts the real
//! `ssh-agent -D` on a private socket and loads the files with `ssh-add`, where BuildKit runs an
//! agent in-process (`session/sshforward/sshprovider`). Either way kiln never reads the key
//! material itself; the agent process holds it in memory and dies with the build.
//!
//! A step does not get the agent's socket: it gets a proxy socket of its own in its scratch
//! directory (BuildKit forwards through the session the same way), created with the mount's
//! `mode` (its `uid`/`gid` are set by the RUN step), which every connection is relayed from. So
//! the agent's peer-uid check sees kiln whatever ids the sandbox maps, and the host socket's mode
//! is never changed.
//!
//! Must not: log, store or copy anything an agent answers, or start agents for a build that
//! gives no `--ssh`.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("--ssh {id}: {message}")]
    Source {
        id: String,
        message: String,
        #[source]
        source: Option<io::Error>,
    },
    #[error("forwarding the ssh agent to {path}")]
    Proxy {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn source_err(id: &str, message: impl Into<String>, source: Option<io::Error>) -> SshError {
    SshError::Source {
        id: id.to_string(),
        message: message.into(),
        source,
    }
}

/// The build's agents by id.
#[derive(Default)]
pub(super) struct Agents {
    sockets: Vec<(String, PathBuf)>,
    /// Agents kiln started for key files; killed on drop.
    _own: Vec<KeyAgent>,
}

impl Agents {
    /// Checks every source and starts the key files' agents.
    /// `sources` are the `--ssh` (id, paths) pairs.
    pub(super) fn start<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a [PathBuf])>,
    ) -> Result<Agents, SshError> {
        let mut out = Agents::default();
        for (id, paths) in sources {
            let is_socket = |p: &Path| {
                std::fs::metadata(p)
                    .map(|m| m.file_type().is_socket())
                    .unwrap_or(false)
            };
            let socket = match paths {
                [one] if is_socket(one) => {
                    // Said now, not as a silent missing agent in the step.
                    UnixStream::connect(one).map_err(|e| {
                        source_err(
                            id,
                            format!("connecting to the agent at {}", one.display()),
                            Some(e),
                        )
                    })?;
                    one.clone()
                }
                paths => {
                    if let Some(p) = paths.iter().find(|p| is_socket(p)) {
                        return Err(source_err(
                            id,
                            format!(
                                "{} is a socket: give one socket or only key files",
                                p.display()
                            ),
                            None,
                        ));
                    }
                    let agent = KeyAgent::start(id, paths)?;
                    let sock = agent.socket.clone();
                    out._own.push(agent);
                    sock
                }
            };
            out.sockets.push((id.to_string(), socket));
        }
        Ok(out)
    }

    /// The agent socket of `id`.
    pub(super) fn socket(&self, id: &str) -> Option<&Path> {
        self.sockets
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p.as_path())
    }
}

/// `ssh-agent -D` on a private socket, holding the key files `ssh-add` loaded.
struct KeyAgent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl KeyAgent {
    fn start(id: &str, keys: &[PathBuf]) -> Result<KeyAgent, SshError> {
        for k in keys {
            if !k.is_file() {
                return Err(source_err(
                    id,
                    format!("{} is not a socket or a key file", k.display()),
                    None,
                ));
            }
        }
        // Short path under /tmp: a socket path must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("kiln-ssh-")
            .tempdir_in("/tmp")
            .map_err(|e| source_err(id, "creating the agent's directory", Some(e)))?;
        let socket = dir.path().join("agent.sock");
        let mut cmd = Command::new("ssh-agent");
        cmd.arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Dies with the build's thread even if kiln is killed before the agent is dropped.
        let child = crate::exec::spawn_tied_to_thread(&mut cmd)
            .map_err(|e| source_err(id, "starting ssh-agent (install openssh-client)", Some(e)))?;
        let mut agent = KeyAgent {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&agent.socket).is_err() {
            if Instant::now() > deadline || matches!(agent.child.try_wait(), Ok(Some(_))) {
                return Err(source_err(id, "ssh-agent did not start", None));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // No terminal and no askpass: a key with a passphrase fails instead of prompting.
        let out = Command::new("ssh-add")
            .args(keys)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY")
            .env("SSH_ASKPASS_REQUIRE", "never")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| source_err(id, "running ssh-add", Some(e)))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let _ = agent.child.kill();
            return Err(source_err(
                id,
                format!("ssh-add refused the key files: {why}"),
                None,
            ));
        }
        Ok(agent)
    }
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A step's socket relaying every connection to an agent; stops accepting on drop.
pub(super) struct Proxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listens at `path` (mode `mode`) and relays to `agent`.
    pub(super) fn start(agent: &Path, path: &Path, mode: u32) -> Result<Proxy, SshError> {
        let err = |source| SshError::Proxy {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (agent, flag) = (agent.to_path_buf(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("kiln-ssh-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(c) = conn {
                        let agent = agent.clone();
                        let _ = std::thread::Builder::new()
                            .name("kiln-ssh-conn".into())
                            .spawn(move || relay(c, &agent));
                    }
                }
            })
            .map_err(err)?;
        Ok(Proxy {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies both ways until either side closes.
fn relay(client: UnixStream, agent: &Path) {
    let Ok(upstream) = UnixStream::connect(agent) else {
        return;
    };
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let (mut c, mut u) = (client, upstream);
    let _ = io::copy(&mut u, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
