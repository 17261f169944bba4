//! A reader that leaves early (`kiln images | head -1`) ends kiln quietly with status 0, as ripgrep
//! does — never a panic (exit 101) from `println!` on a closed pipe — for the local commands, an
//! embedded build (digest or `--progress json`) and a build followed through the daemon. Only a
//! closed stdout is quiet: another write failure still fails loudly.
//!
//! Each run gets a stdout pipe whose read end is closed before kiln starts, so every write fails
//! with EPIPE at once; one run goes through a real shell pipeline into `head -1`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::*;

/// Run `kiln --root ROOT ARGS` with stdout a pipe nobody reads (read end already closed).
fn kiln_into_closed_pipe(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    Command::new(kiln_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("KILN_HOST")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .expect("running kiln")
}

/// Status 0 and nothing on stderr but what `allowed` lets through (progress lines).
fn ended_quietly(what: &str, out: &Output, allowed: impl Fn(&str) -> bool) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{what}: {stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    let unexpected: Vec<&str> = stderr.lines().filter(|l| !allowed(l)).collect();
    assert!(unexpected.is_empty(), "{what}: {unexpected:?}");
}

fn nothing(_: &str) -> bool {
    false
}

/// Plain progress on stderr is expected; an error line is not.
fn progress_line(l: &str) -> bool {
    !l.starts_with("error") && !l.contains("ERROR")
}

#[test]
fn local_commands_end_quietly_with_status_0_when_stdout_is_closed() {
    let root = store_with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")]);
    let ctx_arg = ctx.path().to_str().unwrap();
    for args in [
        vec!["images"],
        vec!["info"],
        vec!["fsck"],
        vec!["plan", ctx_arg],
        vec!["plan", "--format", "json", ctx_arg],
    ] {
        let out = kiln_into_closed_pipe(root.path(), &args, &[]);
        ended_quietly(&format!("kiln {args:?}"), &out, nothing);
    }
}

#[test]
fn an_embedded_build_ends_quietly_when_nobody_reads_its_output() {
    let root = store_with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")]);
    let ctx_arg = ctx.path().to_str().unwrap();
    // The digest at the end cannot be written: the build itself succeeded and is tagged.
    let out = kiln_into_closed_pipe(
        root.path(),
        &["build", "--progress", "plain", "-t", "quiet:1", ctx_arg],
        &[],
    );
    ended_quietly("kiln build", &out, progress_line);
    assert!(kiln_ok(root.path(), &["images"]).contains("quiet:1"));
    // NDJSON progress on stdout: the first event cannot be written, the build stops there.
    let out = kiln_into_closed_pipe(
        root.path(),
        &["build", "--progress", "json", "-t", "json:1", ctx_arg],
        &[],
    );
    ended_quietly("kiln build --progress json", &out, nothing);
    let out = kiln_ok(root.path(), &["fsck"]);
    assert!(out.contains("no damage found"), "{out}");
}

#[test]
fn a_build_followed_through_the_daemon_ends_quietly_when_stdout_is_closed() {
    let d = Daemon::start(&[]);
    let ctx = d.context(
        "app",
        &[("Dockerfile", "FROM busybox:latest\nRUN echo hi > /hi\n")],
    );
    let host = format!("unix://{}", d.socket().display());
    for progress in ["plain", "json"] {
        let out = kiln_into_closed_pipe(
            &d.root(),
            &[
                "--host",
                &host,
                "build",
                "--progress",
                progress,
                ctx.to_str().unwrap(),
            ],
            &[],
        );
        ended_quietly(
            &format!("kiln build --progress {progress}"),
            &out,
            progress_line,
        );
    }
    let out = kiln_into_closed_pipe(&d.root(), &["--host", &host, "builds", "ls"], &[]);
    ended_quietly("kiln builds ls", &out, nothing);
}

/// The shell pipeline a user types: a plan larger than a pipe's buffer, so kiln is still writing
/// when `head -1` exits.
#[test]
fn plan_piped_into_head_exits_0() {
    let mut df = String::from("FROM busybox\n");
    for i in 0..3000 {
        df.push_str(&format!("RUN echo step-{i} > /dev/null\n"));
    }
    let ctx = context(&[("Dockerfile", &df)]);
    let root = tempfile::tempdir().unwrap();
    let script = format!(
        "set -o pipefail; {:?} --root {:?} plan {:?} | head -1 > /dev/null",
        kiln_bin(),
        root.path(),
        ctx.path()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{script}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// Only a closed pipe is quiet: stdout on a full disk (`/dev/full`) is an error, status 1.
#[test]
fn stdout_on_a_full_device_is_still_an_error() {
    let root = store_with_busybox();
    let out = Command::new(kiln_bin())
        .arg("--root")
        .arg(root.path())
        .arg("images")
        .stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writing to standard output") && stderr.contains("No space left"),
        "{stderr}"
    );
}
