//! The daemon: the JSON API on a Unix socket (axum over a tokio `UnixListener`), a build queue of
//! `max_concurrent_builds` slots, per-build event logs with replay, build records in SQLite, peer
//! checks (SO_PEERCRED), runtime registry settings, metrics, graceful shutdown and systemd socket
//! activation.
//!
//! Must not: fork (builds run on blocking threads and the sandbox re-executes `/proc/self/exe`
//! itself), hold credentials beyond one build's memory, or answer bad input with a 500.

mod catalog;
mod config_api;
mod events;
mod gc;
mod hooks;
mod http;
mod jobs;
pub mod log;
mod metrics;
pub mod openapi;
mod outputs;
mod policy;
mod records;
mod resolve;
pub mod systemd;

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::net::UnixListener;

use crate::api::{self, kind, ErrorBody};
use crate::store::Store;

/// Why the daemon could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("opening the store at {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: Box<crate::store::StoreError>,
    },
    #[error("binding the socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("taking the socket passed by systemd (LISTEN_FDS)")]
    Activation(#[source] std::io::Error),
    #[error("setting owner/mode of the socket {path}")]
    SocketPerms {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown socket group {0:?}")]
    UnknownGroup(String),
    #[error("marking interrupted builds")]
    Recover(#[source] Box<crate::store::StoreError>),
    #[error("serving the API")]
    Serve(#[source] std::io::Error),
}

/// What the daemon needs to know; filled from CLI flags (and, later, from `[daemon]` in kiln.toml).
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// Store root (`--root`).
    pub root: PathBuf,
    pub socket: PathBuf,
    /// Octal permission bits of the socket file (default 0660).
    pub socket_mode: u32,
    /// Group owning the socket (name or number); its members are allowed too.
    pub socket_group: Option<String>,
    /// Besides root and the daemon's own uid.
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    /// Where contexts, secret files and outputs may be (default `/build`).
    pub context_roots: Vec<PathBuf>,
    pub max_concurrent_builds: usize,
    /// Default build capacity in percent of the machine (cpus, memory, threads).
    pub capacity: Option<u8>,
    /// `[worker.oci] max-parallelism`: compression threads per build.
    pub max_parallelism: Option<usize>,
    /// On SIGTERM: cancel running builds (true) or let them finish (false).
    pub cancel_on_shutdown: bool,
    /// How long SIGTERM waits for builds to end.
    pub shutdown_timeout: Duration,
    /// Where `PUT /v1/config` persists the registry settings (default `<root>/daemon/config.toml`).
    pub config_path: Option<PathBuf>,
    /// Largest JSON request body.
    pub max_json_body: usize,
    /// Largest tar context body.
    pub max_context_body: u64,
    /// Sandbox helper binary (default /proc/self/exe).
    pub helper: Option<PathBuf>,
    /// `--log-format`: text lines or JSON objects on stderr.
    pub log_format: log::LogFormat,
}

impl DaemonSettings {
    pub fn new(root: PathBuf) -> DaemonSettings {
        DaemonSettings {
            root,
            socket: api::default_socket(),
            socket_mode: 0o660,
            socket_group: None,
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            context_roots: vec![PathBuf::from("/build")],
            max_concurrent_builds: 4,
            capacity: None,
            max_parallelism: None,
            cancel_on_shutdown: true,
            shutdown_timeout: Duration::from_secs(30),
            config_path: None,
            max_json_body: 1 << 20,
            max_context_body: 8 << 30,
            helper: None,
            log_format: log::LogFormat::Text,
        }
    }
}

/// A JSON error answer: `{"error": {"kind", "message"}}` with a fitting status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }
    pub(crate) fn bad(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, message)
    }
    pub(crate) fn forbidden(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, kind::NOT_FOUND, message)
    }
    /// A failure on the daemon's side (disk, database): the only 5xx.
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            kind::INTERNAL,
            e.to_string(),
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(error_chain(&e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody::new(self.kind, self.message)),
        )
            .into_response()
    }
}

/// `outer: cause: cause` — every cause in the chain, as the CLI prints errors.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    crate::report::chain(e)
}

/// The connection's peer (SO_PEERCRED), taken when the connection is accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerCred(pub Option<api::Peer>);

impl Connected<IncomingStream<'_, UnixListener>> for PeerCred {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        PeerCred(stream.io().peer_cred().ok().map(|c| api::Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        }))
    }
}

/// Shared by every handler and job.
pub(crate) struct State {
    pub store: Arc<Store>,
    pub settings: DaemonSettings,
    pub roots: Vec<PathBuf>,
    pub socket_gid: Option<u32>,
    pub jobs: jobs::Jobs,
    pub metrics: metrics::Metrics,
    pub config: Mutex<config_api::RuntimeConfig>,
    pub shutting_down: AtomicBool,
    pub gc: gc::AutoGc,
    /// Build ends kiln.db refused, served in place of the stale rows until written.
    pub unwritten: records::Unwritten,
}

impl State {
    fn allowed(&self, peer: &api::Peer) -> bool {
        peer.uid == 0
            || peer.uid == rustix::process::geteuid().as_raw()
            || self.settings.allowed_uids.contains(&peer.uid)
            || self.settings.allowed_gids.contains(&peer.gid)
            || self.socket_gid == Some(peer.gid)
    }

    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.settings.root.join("daemon").join("builds")
    }
}

/// Bind the socket at `settings.socket` (or take the one systemd passed) with the configured mode
/// and group. Returns a std listener so the caller may bind before starting a runtime.
pub fn bind(settings: &DaemonSettings) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    if let Some(l) = systemd::listener_from_env().map_err(DaemonError::Activation)? {
        return Ok(l);
    }
    let path = &settings.socket;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Bind {
            path: path.clone(),
            source,
        })?;
    }
    // A stale socket from a crashed daemon is replaced; a live one is not (connect succeeds).
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(DaemonError::Bind {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another daemon answers on this socket",
            ),
        });
    }
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path).map_err(|source| DaemonError::Bind {
        path: path.clone(),
        source,
    })?;
    let perms = |source| DaemonError::SocketPerms {
        path: path.clone(),
        source,
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.socket_mode))
        .map_err(perms)?;
    if let Some(g) = socket_gid(settings)? {
        std::os::unix::fs::chown(path, None, Some(g)).map_err(perms)?;
    }
    Ok(l)
}

fn socket_gid(settings: &DaemonSettings) -> Result<Option<u32>, DaemonError> {
    let Some(g) = &settings.socket_group else {
        return Ok(None);
    };
    if let Ok(n) = g.parse::<u32>() {
        return Ok(Some(n));
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(grp)) => Ok(Some(grp.gid.as_raw())),
        _ => Err(DaemonError::UnknownGroup(g.clone())),
    }
}

/// Serve the API on `listener` until `shutdown` resolves, then stop accepting, cancel (or let
/// finish, per settings) the running builds, and return.
pub async fn run(
    listener: UnixListener,
    settings: DaemonSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let store = Store::open(&settings.root).map_err(|source| DaemonError::Store {
        path: settings.root.clone(),
        source: Box::new(source),
    })?;
    let state = Arc::new(State {
        store: Arc::new(store),
        roots: resolve::canonical_roots(&settings.context_roots),
        socket_gid: socket_gid(&settings)?,
        jobs: jobs::Jobs::new(settings.max_concurrent_builds),
        metrics: metrics::Metrics::default(),
        config: Mutex::new(config_api::RuntimeConfig::load(&settings)),
        shutting_down: AtomicBool::new(false),
        gc: gc::AutoGc::default(),
        unwritten: records::Unwritten::default(),
        settings,
    });
    jobs::recover(&state).map_err(|e| DaemonError::Recover(Box::new(e)))?;
    // Leases of a crashed daemon (or CLI) protect nothing any more.
    match state.store.clear_dead_leases() {
        Ok(n) if n > 0 => log::info("gc.leases_cleared", &[("count", (n as u64).into())]),
        Ok(_) => {}
        Err(e) => log::warn(
            "gc.leases_not_cleared",
            &[("error", error_chain(&e).as_str().into())],
        ),
    }
    gc::spawn(state.clone());
    for w in &crate::sync::lock(&state.config).warnings {
        log::warn("config.warning", &[("message", w.as_str().into())]);
    }
    let app = http::router(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<PeerCred>(),
        )
        .with_graceful_shutdown(async {
            let _ = stop_rx.await;
        })
        .into_future(),
    );
    systemd::notify("READY=1\nSTATUS=serving the kiln API");
    let mut server = server;
    tokio::select! {
        r = &mut server => {
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(DaemonError::Serve(e)),
                Err(e) => Err(DaemonError::Serve(std::io::Error::other(e))),
            };
        }
        () = shutdown => {}
    }
    systemd::notify("STOPPING=1");
    state.shutting_down.store(true, Ordering::SeqCst);
    log::info(
        "daemon.shutting_down",
        &[
            ("running", state.jobs.running.load(Ordering::SeqCst).into()),
            ("queued", state.jobs.queued.load(Ordering::SeqCst).into()),
            (
                "builds",
                if state.settings.cancel_on_shutdown {
                    "cancel"
                } else {
                    "finish"
                }
                .into(),
            ),
        ],
    );
    if state.settings.cancel_on_shutdown {
        state.jobs.cancel_all("the daemon is shutting down");
    }
    let _ = stop_tx.send(());
    let deadline = tokio::time::Instant::now() + state.settings.shutdown_timeout;
    while state.jobs.active() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if state.jobs.active() > 0 {
        state
            .jobs
            .cancel_all("the daemon is shutting down (timeout)");
        let grace = tokio::time::Instant::now() + Duration::from_secs(10);
        while state.jobs.active() > 0 && tokio::time::Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Event streams end with their builds; idle connections get a short grace.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    // Ends kiln.db refused: a last try; what still fails is said, and the next start marks
    // those builds interrupted.
    let st = state.clone();
    if let Ok(left) = tokio::task::spawn_blocking(move || records::retry(&st)).await {
        if left > 0 {
            log::error(
                "daemon.records_unwritten",
                &[("builds", (left as u64).into())],
            );
        }
    }
    log::info("daemon.stopped", &[]);
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Blocking entry point for `kiln daemon`: binds, starts a multi-threaded runtime, serves until
/// SIGTERM/SIGINT.
pub fn serve_forever(settings: DaemonSettings) -> Result<(), DaemonError> {
    log::init(settings.log_format);
    let std_listener = bind(&settings).inspect_err(|e| {
        log::error("daemon.failed", &[("error", error_chain(e).into())]);
    })?;
    log::info(
        "daemon.listening",
        &[
            ("socket", settings.socket.display().to_string().into()),
            ("activated", systemd::activated().into()),
            ("root", settings.root.display().to_string().into()),
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("host_uid", crate::config::defaults::host_uid().into()),
            (
                "context_roots",
                settings
                    .context_roots
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
                    .into(),
            ),
            (
                "max_concurrent_builds",
                settings.max_concurrent_builds.into(),
            ),
        ],
    );
    std_listener
        .set_nonblocking(true)
        .map_err(|source| DaemonError::Bind {
            path: settings.socket.clone(),
            source,
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-daemon")
        .build()
        .map_err(DaemonError::Serve)?;
    let socket = settings.socket.clone();
    let activated = systemd::activated();
    let r = rt.block_on(async move {
        let listener =
            UnixListener::from_std(std_listener).map_err(|source| DaemonError::Bind {
                path: settings.socket.clone(),
                source,
            })?;
        run(listener, settings, shutdown_signal()).await
    });
    if !activated {
        let _ = std::fs::remove_file(&socket);
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

/// `/v1/info`'s `cgroups`: `{"version": "v2", "base": …, "limits": true}`, or
/// `{"version": null, "limits": false, "reason": …}` when --memory/--cpus cannot be enforced.
pub(crate) fn cgroup_json(c: &crate::exec::CgroupStatus) -> serde_json::Value {
    use crate::exec::CgroupStatus;
    match c {
        CgroupStatus::V1 { base } | CgroupStatus::V2 { base } => serde_json::json!({
            "version": if matches!(c, CgroupStatus::V1 { .. }) { "v1" } else { "v2" },
            "base": base.display().to_string(),
            "limits": true,
        }),
        CgroupStatus::Unavailable(why) => serde_json::json!({
            "version": null,
            "limits": false,
            "reason": why,
        }),
    }
}

/// Current Unix time in seconds.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) type Shared = Arc<State>;

/// The subscribers to the "build ended" hook (`hooks.rs`), in the order they run.
pub(crate) const BUILD_ENDED: [hooks::Subscriber; 2] = [
    ("catalog", catalog::on_build_ended),
    ("gc", gc::on_build_ended),
];

/// Jobs by id (running or queued) — re-exported for the routes.
pub(crate) type JobMap = HashMap<String, Arc<jobs::Job>>;

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("pushing r.example.com/a:1")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("r.example.com/a:1: cannot reach registry r.example.com")]
    struct Inner;

    #[test]
    fn error_chain_names_a_reference_once() {
        assert_eq!(
            super::error_chain(&Outer(Inner)),
            "pushing r.example.com/a:1: cannot reach registry r.example.com"
        );
    }
}
