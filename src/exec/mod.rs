//! exec — run one process in a sandbox over given mounts.
//!
//! The multi-threaded kiln process never forks into namespaces itself: [`run`] spawns the kiln
//! binary again (`SandboxConfig::helper`, default `/proc/self/exe`) with the hidden subcommand
//! `__sandbox` ([`sandbox_main`]), hands it a JSON spec on stdin and reads the command's output
//! (stdout and stderr merged) from the helper's stdout and the helper's JSON status lines from its
//! stderr. The single-threaded helper unshares namespaces, forks the pid-1 process of the new pid
//! namespace, mounts the rootfs, `/proc`, `/dev`, `/sys`, `resolv.conf`/`hosts` and the extra
//! mounts, `pivot_root`s, and forks the command with Docker's default capabilities,
//! `no_new_privs` and the requested user. Rootless kiln first re-execs itself into a user
//! namespace ([`maybe_reexec_into_userns`]); the helper inherits it. On the single-uid rung a
//! seccomp user-notification filter lets pid 1 record the command's chowns instead of the kernel
//! refusing them ([`Outcome::recorded_chowns`], and [`OWNER_XATTR`] beside the file), fake the
//! id calls (apt's drop to `_apt`, `USER`) and show recorded owners to stat.
//!
//! Each rung that fails steps down to the next and the probe keeps why ([`Probe::reasons`]):
//! newuidmap refused (no_new_privs) → single-uid; user namespaces denied → no rung, builds
//! without RUN still work; sethostname refused → a warning; no /proc of its own → the host's.
//!
//! Mount points missing from the rootfs are never written into an overlay upper directory: they
//! live in a per-run skeleton directory added as the lowest overlay layer. On a plain directory
//! rootfs (native snapshotter) they are created and removed again afterwards (parent times kept).
//!
//! The only module with `unsafe`, each block with a `// SAFETY:` comment.
//! Must NOT: know build steps, Dockerfiles, digests or layers.

mod cgroup;
pub mod emulate;
mod helper;
mod ids;
mod limits;
mod mounts;
mod owners;
mod pids;
mod probe;
mod seccomp;
mod user;
mod userns;

pub use cgroup::CgroupStatus;
pub use emulate::{EmulateError, Emulation, Runner};
pub use helper::sandbox_main;
pub use limits::{HostEntry, Ulimit};
pub use mounts::{overlay_opaque_xattr, platform_ca_bundle, step_env, CA_TARGET, PLATFORM_CA_DIR};
pub use owners::OWNER_XATTR;
pub use probe::{identity, probe, Probe};
pub use userns::maybe_reexec_into_userns;

use crate::snapshot::{Mounts, SnapshotterKind};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The hidden subcommand that main dispatches to [`sandbox_main`].
pub const HELPER_SUBCOMMAND: &str = "__sandbox";
/// Lines of output kept for error messages.
const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("starting the sandbox helper {helper}")]
    SpawnHelper {
        helper: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] crate::report::IoError),
    #[error("setting up the sandbox ({rung:?} rung): {message}")]
    Setup { rung: Rung, message: String },
    #[error("the sandbox helper ended without reporting a result")]
    HelperVanished,
    #[error("command exited with code {code}; last output:\n{}", tail.join("\n"))]
    Failed { code: i32, tail: Vec<String> },
    #[error("command killed by signal {signal}; last output:\n{}", tail.join("\n"))]
    Signaled { signal: i32, tail: Vec<String> },
    #[error("command killed: it hit the memory limit of {limit} bytes; last output:\n{}", tail.join("\n"))]
    OutOfMemory { limit: u64, tail: Vec<String> },
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    #[error("command cancelled")]
    Cancelled,
    #[error("setting resource limits: {0}")]
    Cgroup(String),
    #[error("entering a user namespace: {0}")]
    UserNamespace(String),
    #[error("no sandbox rung works here: {}", no_rung_text(.0))]
    NoRung(Vec<(Rung, String)>),
}

/// Each rung and why; one reason when every rung failed for the same one (user namespaces denied).
fn no_rung_text(reasons: &[(Rung, String)]) -> String {
    match reasons {
        [(_, first), rest @ ..] if rest.iter().all(|(_, w)| w == first) => first.clone(),
        _ => reasons
            .iter()
            .map(|(r, w)| format!("{r}: {w}"))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ExecError {
    let at = crate::report::IoError::at(action, path);
    move |source| ExecError::Io(at(source))
}

/// The sandbox ladder, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rung {
    /// user (rootless) + mount, pid, ipc, uts namespaces, fresh /proc.
    Full,
    /// As full, with the host's /proc bind-mounted.
    NoProc,
    /// One id mapped: chown to other ids is recorded (see [`Outcome::recorded_chowns`]), not
    /// applied.
    SingleUid,
    /// Mount namespace only (already root, no user namespaces).
    Chroot,
}

impl Rung {
    pub const ALL: [Rung; 4] = [Rung::Full, Rung::NoProc, Rung::SingleUid, Rung::Chroot];
}

impl Rung {
    /// The name used in config files, flags and reports (`no-proc`).
    pub fn name(self) -> &'static str {
        match self {
            Rung::Full => "full",
            Rung::NoProc => "no-proc",
            Rung::SingleUid => "single-uid",
            Rung::Chroot => "chroot",
        }
    }
}

impl std::fmt::Display for Rung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Rung {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Rung::Full),
            "no-proc" => Ok(Rung::NoProc),
            "single-uid" => Ok(Rung::SingleUid),
            "chroot" => Ok(Rung::Chroot),
            o => Err(format!(
                "unknown sandbox rung {o:?} (full, no-proc, single-uid, chroot)"
            )),
        }
    }
}

/// Machine-level settings (from kiln.toml), not per step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SandboxConfig {
    /// The kiln binary to re-exec as the helper.
    pub helper: PathBuf,
    /// Force a rung instead of the strongest that works.
    pub rung: Option<Rung>,
    pub snapshotter: SnapshotterKind,
    /// Per-run scratch directories (`<root>/exec`); must not be inside a snapshot.
    pub state_dir: PathBuf,
    /// Name of kiln's cgroup below each hierarchy.
    pub cgroup_parent: String,
    /// Bind the platform's CA bundle into RUN steps (`[worker.oci] ca-injection`).
    pub ca_injection: bool,
}

impl SandboxConfig {
    pub fn new(state_dir: &Path) -> Self {
        SandboxConfig {
            helper: PathBuf::from("/proc/self/exe"),
            rung: None,
            snapshotter: SnapshotterKind::Auto,
            state_dir: state_dir.to_path_buf(),
            cgroup_parent: "kiln".into(),
            ca_injection: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Host,
    /// A fresh network namespace with only loopback.
    None,
}

/// Mounts added on top of the rootfs; targets are absolute paths inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExtraMount {
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// A persistent host directory, read-write.
    Cache {
        source: PathBuf,
        target: String,
    },
    /// A file copied onto a private tmpfs and bound read-only at `target`.
    Secret {
        source: PathBuf,
        target: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl ExtraMount {
    fn target(&self) -> &str {
        match self {
            ExtraMount::Bind { target, .. }
            | ExtraMount::Tmpfs { target, .. }
            | ExtraMount::Cache { target, .. }
            | ExtraMount::Secret { target, .. } => target,
        }
    }
    /// Whether the mount point is a file (else a directory).
    fn is_file(&self) -> bool {
        match self {
            ExtraMount::Secret { .. } => true,
            ExtraMount::Bind { source, .. } => !source.is_dir(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
}

/// One command to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub rootfs: Mounts,
    pub argv: Vec<String>,
    /// `KEY=value` entries; PATH gets Docker's default when absent.
    pub env: Vec<String>,
    /// Absolute; created (as root) when missing.
    pub cwd: String,
    /// "name", "uid", "name:group", "uid:gid"; resolved in the rootfs's /etc/passwd, /etc/group.
    pub user: Option<String>,
    pub hostname: String,
    pub mounts: Vec<ExtraMount>,
    pub network: Network,
    pub timeout: Option<Duration>,
    pub resources: Resources,
    /// The rung to use (normally `probe(cfg).rung`).
    pub rung: Rung,
    /// A static QEMU user-mode emulator on the host: bound read-only at
    /// [`emulate::EMULATOR_PATH`] and the command run through it (a foreign-architecture step
    /// with no binfmt_misc handler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator: Option<PathBuf>,
    /// `--add-host` lines appended to the step's `/etc/hosts` (a private copy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostEntry>,
    /// Size of `/dev/shm` in bytes (`--shm-size`; default 64 MiB, Docker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// `--ulimit`s set before the command's exec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
}

impl SandboxSpec {
    pub fn new(rootfs: Mounts, argv: Vec<String>, rung: Rung) -> Self {
        SandboxSpec {
            rootfs,
            argv,
            env: Vec::new(),
            cwd: "/".into(),
            user: None,
            hostname: "kiln".into(),
            mounts: Vec::new(),
            network: Network::Host,
            timeout: None,
            resources: Resources::default(),
            rung,
            emulator: None,
            extra_hosts: Vec::new(),
            shm_size: None,
            ulimits: Vec::new(),
        }
    }
}

/// One line of the command's output (stdout and stderr merged, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine(pub String);

/// A chown the single-uid rung recorded instead of applying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedChown {
    /// Absolute path inside the sandbox, symlinks in it resolved (the last component not, for
    /// lchown and `AT_SYMLINK_NOFOLLOW`).
    pub path: String,
    /// None: left unchanged (-1).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// What a successful run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub rung: Rung,
    pub cgroup: CgroupStatus,
    pub duration: Duration,
    /// single-uid rung: the chowns the command made, one per path (sorted), later calls winning
    /// id by id. Paths may be inside mounts or deleted since; the caller decides what they own.
    pub recorded_chowns: Vec<RecordedChown>,
}

/// Cancels a running command: the whole pid namespace is killed and its mounts go with it.
/// A [`child`](Cancel::child) is cancelled with its parent, and can be cancelled alone (a failed
/// stage stops its sibling stages without marking the whole build as cancelled by the user).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>, Vec<Arc<AtomicBool>>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) || self.1.iter().any(|p| p.load(Ordering::SeqCst))
    }
    /// A token cancelled by this one (or by itself); cancelling it leaves this one alone.
    pub fn child(&self) -> Cancel {
        let mut ancestors = self.1.clone();
        ancestors.push(Arc::clone(&self.0));
        Cancel(Arc::new(AtomicBool::new(false)), ancestors)
    }
}

/// What the helper receives on stdin.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HelperSpec {
    pub spec: SandboxSpec,
    pub run_dir: PathBuf,
    pub cgroup_procs: Vec<PathBuf>,
    /// Set up everything but run nothing (used by `probe`).
    pub probe_only: bool,
}

/// What the helper (and its pid 1) report on the helper's stderr, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Pid1(i32),
    Error(String),
    Warning(String),
    Exit(i32),
    Signal(i32),
}

enum Event {
    Line(String),
    Status(Status),
    OutputClosed,
}

/// A name no other process uses: pid, a counter, and the start time (pids are reused, and a
/// killed process can leave its run directory or cgroup behind).
fn unique_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Spawns `cmd` so that it is killed when the calling thread ends (`PR_SET_PDEATHSIG`), as the
/// sandbox helper is: a helper process of a build (the `--ssh` key agent) never outlives a daemon
/// killed with -9.
pub fn spawn_tied_to_thread(
    cmd: &mut std::process::Command,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and makes one async-signal-safe syscall
    // (prctl) with integer arguments; it allocates nothing and touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Runs `spec` to completion, streaming its output lines to `on_output`.
pub fn run(
    cfg: &SandboxConfig,
    spec: &SandboxSpec,
    cancel: &Cancel,
    on_output: &mut dyn FnMut(OutputLine),
) -> Result<Outcome, ExecError> {
    let name = unique_name();
    let run_dir = cfg.state_dir.join(&name);
    std::fs::create_dir_all(&run_dir).map_err(io_err("creating", &run_dir))?;
    let cg = cgroup::Cgroup::create(&cfg.cgroup_parent, &name, &spec.resources);
    let res = run_in(cfg, spec, cancel, on_output, &run_dir, &cg, false);
    if let Ok(cg) = &cg {
        cg.destroy();
    }
    let _ = std::fs::remove_dir_all(&run_dir);
    res
}

/// Start the sandbox helper with `hs` on its stdin; its stdout lines (the step's output) and
/// stderr lines (JSON status reports) arrive on the returned channel, read by two threads.
fn spawn_helper(
    cfg: &SandboxConfig,
    hs: &HelperSpec,
) -> Result<(std::process::Child, mpsc::Receiver<Event>), ExecError> {
    let mut child = Command::new(&cfg.helper)
        .arg(HELPER_SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ExecError::SpawnHelper {
            helper: cfg.helper.clone(),
            source,
        })?;
    let json = serde_json::to_vec(hs).map_err(|e| ExecError::Setup {
        rung: hs.spec.rung,
        message: format!("encoding the helper spec: {e}"),
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // The helper reads to EOF before doing anything; a failed write shows up as its error.
        let _ = stdin.write_all(&json);
    }
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let _ = tx.send(Event::Line(String::from_utf8_lossy(&line).into_owned()));
            }
            let _ = tx.send(Event::OutputClosed);
        });
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let st = serde_json::from_str(&line).unwrap_or(Status::Error(line));
                let _ = tx.send(Event::Status(st));
            }
        });
    }
    drop(tx);
    Ok((child, rx))
}

pub(crate) fn run_in(
    cfg: &SandboxConfig,
    spec: &SandboxSpec,
    cancel: &Cancel,
    on_output: &mut dyn FnMut(OutputLine),
    run_dir: &Path,
    cg: &Result<cgroup::Cgroup, String>,
    probe_only: bool,
) -> Result<Outcome, ExecError> {
    let start = Instant::now();
    let wants_limits = spec.resources != Resources::default();
    let (cgroup_procs, cg_status) = match cg {
        Ok(c) => (c.procs_files(), c.status()),
        Err(why) if wants_limits => return Err(ExecError::Cgroup(why.clone())),
        Err(why) => (Vec::new(), CgroupStatus::Unavailable(why.clone())),
    };
    let hs = HelperSpec {
        spec: spec.clone(),
        run_dir: run_dir.to_path_buf(),
        cgroup_procs,
        probe_only,
    };
    let (mut child, rx) = spawn_helper(cfg, &hs)?;
    let mut tail: VecDeque<String> = VecDeque::new();
    let (mut pid1, mut result, mut errors) = (None, None, Vec::new());
    let mut stop: Option<ExecError> = None;
    loop {
        let ev = rx.recv_timeout(Duration::from_millis(50));
        match ev {
            Ok(Event::Line(l)) => {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(l.clone());
                on_output(OutputLine(l));
            }
            Ok(Event::Status(Status::Pid1(p))) => pid1 = Some(p),
            Ok(Event::Status(Status::Warning(w))) => on_output(OutputLine(format!("kiln: {w}"))),
            Ok(Event::Status(Status::Error(e))) => errors.push(e),
            Ok(Event::Status(s)) => {
                // pid 1's report comes first; the helper may add pid 1's own death after it.
                if result.is_none() {
                    result = Some(s)
                }
            }
            Ok(Event::OutputClosed) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if stop.is_none() {
            if cancel.is_cancelled() {
                stop = Some(ExecError::Cancelled);
            } else if spec.timeout.is_some_and(|t| start.elapsed() > t) {
                stop = Some(ExecError::Timeout(spec.timeout.unwrap_or_default()));
            }
            if stop.is_some() {
                kill_sandbox(pid1, &mut child, cg);
            }
        }
    }
    let _ = child.wait();
    if let Ok(c) = cg {
        c.kill_all();
    }
    if let Some(e) = stop {
        return Err(e);
    }
    let tail: Vec<String> = tail.into();
    match result {
        Some(Status::Exit(0)) if errors.is_empty() => Ok(Outcome {
            rung: spec.rung,
            cgroup: cg_status,
            duration: start.elapsed(),
            recorded_chowns: seccomp::read_records(run_dir),
        }),
        _ if !errors.is_empty() => Err(ExecError::Setup {
            rung: spec.rung,
            message: errors.join("; "),
        }),
        // A failure after the OOM killer fired in the step's cgroup is the memory limit's doing.
        Some(Status::Exit(_) | Status::Signal(_)) if oom(cg, &spec.resources).is_some() => {
            let limit = spec.resources.memory.unwrap_or_default();
            Err(ExecError::OutOfMemory { limit, tail })
        }
        Some(Status::Exit(code)) => Err(ExecError::Failed { code, tail }),
        Some(Status::Signal(signal)) => Err(ExecError::Signaled { signal, tail }),
        _ => Err(ExecError::HelperVanished),
    }
}

fn oom(cg: &Result<cgroup::Cgroup, String>, r: &Resources) -> Option<u64> {
    match cg {
        Ok(c) if r.memory.is_some() && c.oom_killed() => r.memory,
        _ => None,
    }
}

/// Killing pid 1 of the namespace kills every process in it; the mount namespace, held only by
/// those processes, goes with them. Without a pid namespace, pid 1 leads a process group.
fn kill_sandbox(
    pid1: Option<i32>,
    helper: &mut std::process::Child,
    cg: &Result<cgroup::Cgroup, String>,
) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if let Some(p) = pid1 {
        let _ = kill(Pid::from_raw(-p), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    } else {
        let _ = helper.kill();
    }
    if let Ok(c) = cg {
        c.kill_all();
    }
}
