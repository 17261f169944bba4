//! The Python client (`clients/python`, issue 12 items 4 and 6) in a real `python3` subprocess
//! against a live `kiln daemon`: packaged (`pip install`), the notebook API (list, get, logs,
//! rebuild, info, config, build args as a dict or JSON text), the same lines as
//! `kiln build --progress plain`, and SIGINT during `build_image` cancelling the build.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn client_dir() -> String {
    manifest_dir().join("clients/python").display().to_string()
}

/// Run a Python script with the client importable and KILN_HOST pointing at `d`.
fn python(d: &Daemon, script: &str) -> (bool, String, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys\nsys.path.insert(0, {:?})\nimport kiln_client\n{script}",
            client_dir()
        ))
        .env("KILN_HOST", format!("unix://{}", d.socket().display()))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn python_ok(d: &Daemon, script: &str) -> String {
    let (ok, stdout, stderr) = python(d, script);
    assert!(ok, "python failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn python_unit_tests_pass() {
    require_tool("python3");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(manifest_dir().join("clients/python/tests"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pip_install_makes_the_client_importable() {
    require_tool("python3");
    let tmp = tempfile::tempdir().unwrap();
    // From a copy, as a user would from a checkout; offline (--no-index): nothing is fetched.
    let src = tmp.path().join("src");
    assert!(Command::new("cp")
        .arg("-r")
        .arg(manifest_dir().join("clients/python"))
        .arg(&src)
        .status()
        .unwrap()
        .success());
    // A fresh virtual environment, as a notebook user would install into.
    let venv = tmp.path().join("venv");
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 -m venv (scripts/test.sh installs python3-venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--no-index"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip install clients/python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import kiln_client; print(kiln_client.__file__, kiln_client.__version__)",
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with(&venv.display().to_string()),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const ARGS_DOCKERFILE: &str = "FROM busybox:latest\nARG N\nARG FLAG\nARG NAME\n\
    COPY hello.txt /hello.txt\nRUN echo \"n=$N flag=$FLAG name=$NAME\" && cat /hello.txt\n";

#[test]
fn notebook_api_and_the_same_lines_as_the_cli() {
    require_tool("python3");
    let d = Daemon::start(&[]);
    d.context(
        "nb",
        &[
            ("Dockerfile", ARGS_DOCKERFILE),
            ("hello.txt", "hi from nb\n"),
        ],
    );
    // build_args as a dict with a number and a boolean; the log printed is the daemon's log.
    let stdout = python_ok(
        &d,
        "ok = kiln_client.build_image('nbimg', '1', push_image=False, context='nb', \
         build_args={'N': 3, 'FLAG': True, 'NAME': 'x'})\n\
         assert ok\n\
         b = kiln_client.list_builds(limit=1)[0]\n\
         assert kiln_client.get_build(b['id'])['status'] == 'succeeded'\n\
         print('@@ID', b['id'])\n",
    );
    assert!(stdout.contains("n=3 flag=true name=x"), "{stdout}");
    let (printed, id) = stdout.split_once("@@ID ").unwrap();
    let id = id.trim();
    let logs = d.log_text(id);
    assert_eq!(
        printed.trim_end(),
        logs.trim_end(),
        "build_image prints the daemon's log lines"
    );
    for want in ["sandbox: ", "done in ", "[stage-0 ", "built sha256:"] {
        assert!(printed.contains(want), "no {want:?} in:\n{printed}");
    }
    // build_args as the JSON text of the CLI form; rebuild shows CACHED steps and the same lines.
    let script = format!(
        "ok = kiln_client.build_image('nbimg', '2', push_image=False, context='nb', \
         build_args='{{\"N\": 4, \"FLAG\": false, \"NAME\": \"y\"}}')\n\
         assert ok\n\
         print('@@REBUILD')\n\
         assert kiln_client.rebuild({id:?})\n\
         new = kiln_client.list_builds(limit=1)[0]['id']\n\
         print('@@ID', new)\n\
         assert 'version' in kiln_client.info()\n\
         assert 'insecure_registries' in kiln_client.get_build_config()\n"
    );
    let stdout = python_ok(&d, &script);
    assert!(stdout.contains("n=4 flag=false name=y"), "{stdout}");
    let (_, rest) = stdout.split_once("@@REBUILD\n").unwrap();
    let (printed, new_id) = rest.split_once("@@ID ").unwrap();
    assert!(printed.contains("CACHED"), "{printed}");
    assert_eq!(printed.trim_end(), d.log_text(new_id.trim()).trim_end());
    let logs = python_ok(&d, &format!("print(kiln_client.get_logs({id:?}))"));
    assert!(logs.contains("n=3 flag=true"), "{logs}");
}

#[test]
fn a_missing_daemon_is_one_clear_error_naming_the_socket() {
    require_tool("python3");
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys\nsys.path.insert(0, {:?})\nimport kiln_client\n\
             kiln_client.build_image('x', '1', context='app')",
            client_dir()
        ))
        .env("KILN_HOST", "unix:///nonexistent/kiln/kiln.sock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "DaemonUnreachable: cannot reach the kiln daemon at /nonexistent/kiln/kiln.sock"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("During handling"),
        "one error, not a chain: {stderr}"
    );
}

#[test]
fn sigint_in_build_image_cancels_the_build_on_the_daemon() {
    require_tool("python3");
    let d = Daemon::start(&[]);
    let marker = "sleep 4242";
    d.context(
        "slow",
        &[(
            "Dockerfile",
            &format!("FROM busybox:latest\nRUN echo slow-started && {marker}\n"),
        )],
    );
    let mut child = Command::new("python3")
        .arg("-u")
        .arg("-c")
        .arg(format!(
            // Python installs its SIGINT handler only when SIGINT is not ignored at start; a test
            // run launched in the background of a non-interactive shell inherits SIG_IGN, and the
            // notebook's interrupt would then never reach the client. A kernel has the handler.
            "import sys, signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n\
             sys.path.insert(0, {:?})\nimport kiln_client\n\
             kiln_client.build_image('slow', '1', push_image=False, context='slow')\n",
            client_dir()
        ))
        .env("KILN_HOST", format!("unix://{}", d.socket().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let t = Instant::now();
    while !seen.contains("slow-started") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the client ended early:\n{seen}"
        );
        seen.push_str(&line);
        assert!(t.elapsed() < Duration::from_secs(120), "{seen}");
    }
    // The build really runs: its step process exists.
    let t = Instant::now();
    while pids_of(marker).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(20), "no step process");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The notebook's "interrupt the kernel": SIGINT to the Python process.
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    seen.push_str(&rest);
    assert!(!status.success(), "{seen}");
    assert!(stderr.contains("KeyboardInterrupt"), "re-raised: {stderr}");
    assert!(
        seen.contains("interrupted: cancelling build") && seen.contains("CANCELLED"),
        "{seen}"
    );
    let id = seen
        .lines()
        .find_map(|l| l.strip_prefix("build ")?.strip_suffix(" started"))
        .expect("the started line names the build");
    let (_, rec) = d.get(&format!("/v1/builds/{id}"));
    assert_eq!(rec["status"], "cancelled", "{rec}");
    let t = Instant::now();
    while !pids_of(marker).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the step process outlived the cancel"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
