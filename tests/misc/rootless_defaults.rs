//! Rootless kiln as a new user meets it (issue 12, item 1): the non-root user `kilntest`, no
//! flags, no config, no `KILN_*` variables — the README's "Rootless" section walked through. The
//! store, the config file and the daemon's socket are the user's own (`~/.local/share/kiln`,
//! `~/.config/kiln/kiln.toml`, `$XDG_RUNTIME_DIR/kiln/kiln.sock`, else `/tmp/kiln-<uid>/kiln.sock`),
//! though kiln runs inside a user namespace where it looks like root; and the Python client finds
//! that daemon by the same default.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A home directory for kilntest with the kiln binary and the busybox layout in it.
struct User {
    home: tempfile::TempDir,
    uid: u32,
}

impl User {
    fn new() -> User {
        assert!(
            rustix::process::geteuid().is_root(),
            "LOUD: this test must start as root to become kilntest"
        );
        ensure_kilntest();
        let home = tempfile::Builder::new()
            .prefix("kiln-home-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::copy(kiln_bin(), home.path().join("kiln")).unwrap();
        assert!(Command::new("cp")
            .arg("-a")
            .arg(busybox_layout())
            .arg(home.path().join("busybox"))
            .status()
            .unwrap()
            .success());
        let ctx = home.path().join("app");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM busybox\nRUN id -u > /uid && echo built-rootless\n",
        )
        .unwrap();
        assert!(Command::new("chown")
            .args(["-R", "kilntest:kilntest"])
            .arg(home.path())
            .status()
            .unwrap()
            .success());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let uid = String::from_utf8(
            Command::new("id")
                .args(["-u", "kilntest"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        User { home, uid }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// `cmd ARGS` as kilntest with only HOME (and PATH) set, plus `env`.
    fn command(&self, prog: &str, args: &[&str], env: &[(&str, String)]) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "kilntest", "--", "env", "-i"])
            .arg(format!("HOME={}", self.home().display()))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.arg(prog).args(args).current_dir(self.home());
        c
    }

    fn kiln(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        let bin = self.home().join("kiln").display().to_string();
        self.command(&bin, args, env).output().unwrap()
    }

    fn kiln_ok(&self, args: &[&str], env: &[(&str, String)]) -> String {
        let out = self.kiln(args, env);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kiln {args:?} as kilntest:\n{text}");
        text
    }
}

fn wait_for_socket(path: &Path, log: &Path) {
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the rootless daemon did not listen on {}:\n{}",
            path.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the daemon (SIGTERM to the runuser process group's kiln) when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &self.0.id().to_string()])
            .status();
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// One test, in order: the daemon half listens on the fallback socket the CLI half would find.
#[test]
fn rootless_without_flags_or_config_works_end_to_end() {
    let u = User::new();
    cli_without_flags_uses_the_users_own_store(&u);
    daemon_without_flags_listens_where_clients_look(&u);
}

/// The README's "Rootless use" section states the defaults this test checks.
#[test]
fn the_readme_states_the_rootless_defaults() {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let section = readme
        .split("## Rootless use")
        .nth(1)
        .expect("README has a Rootless use section");
    for want in [
        "~/.local/share/kiln",
        "~/.config/kiln/kiln.toml",
        "$XDG_RUNTIME_DIR/kiln/kiln.sock",
        "/tmp/kiln-<uid>/kiln.sock",
        "kiln daemon &",
        "kiln builds ls",
    ] {
        assert!(
            section.contains(want),
            "no {want:?} in the Rootless section"
        );
    }
}

fn cli_without_flags_uses_the_users_own_store(u: &User) {
    let info = u.kiln_ok(&["info"], &[]);
    let root = u.home().join(".local/share/kiln");
    assert!(
        info.contains(&format!("root: {}", root.display())),
        "kiln info as kilntest names its own store:\n{info}"
    );
    assert!(!info.contains("/var/lib/kiln"), "{info}");
    let layout = format!("{}:latest", u.home().join("busybox").display());
    u.kiln_ok(&["import", &layout, "--tag", "busybox"], &[]);
    let images = u.kiln_ok(&["images"], &[]);
    assert!(images.contains("busybox"), "{images}");
    let out = u.kiln_ok(
        &["build", "--progress", "plain", "-t", "mine:1", "app"],
        &[],
    );
    assert!(out.contains("built-rootless"), "{out}");
    assert!(root.join("content/index.json").is_file());
    let st = std::fs::metadata(&root).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(st.uid(), u.uid, "the store belongs to the user");
    // XDG_DATA_HOME moves it, as the README says.
    let data = u.home().join("data");
    let info = u.kiln_ok(&["info"], &[("XDG_DATA_HOME", data.display().to_string())]);
    assert!(
        info.contains(&format!("root: {}", data.join("kiln").display())),
        "{info}"
    );
}

/// `kiln daemon` with no flags as a rootless user: its socket, then the CLI and the Python client
/// with no `--host`/`KILN_HOST` find it at the same default.
fn daemon_default_socket_is_found_by_clients(u: &User, env: &[(&str, String)], expect: &Path) {
    let log_path = u.home().join(format!("daemon-{}.log", env.len()));
    let log = std::fs::File::create(&log_path).unwrap();
    let bin = u.home().join("kiln").display().to_string();
    let child = u
        .command(&bin, &["daemon"], env)
        .stderr(log)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    wait_for_socket(expect, &log_path);
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains(&format!("socket={}", expect.display())) && text.contains("daemon.listening"),
        "the daemon says where it listens:\n{text}"
    );
    // The CLI finds it without --host.
    let out = u.kiln_ok(&["builds", "ls"], env);
    assert!(out.contains("ID"), "{out}");
    // So does the Python client (the system python, as the user's notebook would).
    let client = manifest_dir().join("clients/python");
    let script = format!(
        "import sys; sys.path.insert(0, {:?}); import kiln_client\n\
         print(kiln_client.daemon_socket()); print(kiln_client.info()['version'])",
        client.display().to_string()
    );
    let out = u
        .command("/usr/bin/python3", &["-c", &script], env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python as kilntest: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{}\n", expect.display())),
        "{stdout}"
    );
    drop(running);
}

fn daemon_without_flags_listens_where_clients_look(u: &User) {
    // No XDG_RUNTIME_DIR (a container, `su`): /tmp/kiln-<uid>/kiln.sock for daemon and clients.
    let fallback = PathBuf::from(format!("/tmp/kiln-{}/kiln.sock", u.uid));
    let _ = std::fs::remove_file(&fallback);
    daemon_default_socket_is_found_by_clients(u, &[], &fallback);
    // A login session's XDG_RUNTIME_DIR.
    let run = u.home().join("run");
    std::fs::create_dir_all(&run).unwrap();
    assert!(Command::new("chown")
        .args(["kilntest:kilntest"])
        .arg(&run)
        .status()
        .unwrap()
        .success());
    daemon_default_socket_is_found_by_clients(
        u,
        &[("XDG_RUNTIME_DIR", run.display().to_string())],
        &run.join("kiln/kiln.sock"),
    );
}
