//! The golden image suite: every case under `testdata/images/<case>/` is built with kiln (as root,
//! and rootless as the `kilntest` user) and the image, as `scripts/image-listing` prints it, must
//! equal the case's `expected.txt` (or the build must fail with `expected-error`'s text).
//!
//! A case is a directory with:
//! - `Dockerfile` — the first comment line cites the BuildKit test or source the case follows. Left
//!   out when the case is about finding the Dockerfile in the context (then `-f` is not passed);
//! - `Dockerfile.dockerignore` — optional, put beside the Dockerfile (BuildKit reads it there);
//! - `context/` — the build context (optional). Files are made 0644 and directories 0755 first, so
//!   the checkout's umask does not matter;
//! - `setup.sh` — optional, run by `sh -e` inside the copied context (hard links, symlinks, modes,
//!   archives, OCI layouts: what git cannot hold), with `$TESTDATA` naming `testdata/`;
//! - `flags` — optional extra `kiln build` arguments, one per line (`{ctx}` is the context path,
//!   `{http}` the base URL of a loopback HTTP server that serves the context: `ADD <URL>` cases);
//! - `expected.txt` — the listing (`scripts/image-listing OUT --base BUSYBOX`), or
//! - `expected-error` — a text the failed build's stderr must contain.
//!
//! `KILN_GOLDEN_UPDATE=1` rewrites `expected.txt` from what kiln built (root run only): review the
//! diff before committing. `KILN_GOLDEN_CASE=substring` runs only matching cases.
//!
//! All cases build in one store with the busybox base imported once, so the suite stays within a
//! couple of minutes on two cores.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

struct Case {
    name: String,
    dir: PathBuf,
}

fn cases() -> Vec<Case> {
    let root = manifest_dir().join("testdata/images");
    let only = std::env::var("KILN_GOLDEN_CASE").ok();
    let mut out: Vec<Case> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|dir| Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            dir,
        })
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no golden cases under {}", root.display());
    out
}

/// Copy the case's context to `dest`, normalise modes, run `setup.sh` in it; the Dockerfile goes
/// to `df_dir` (outside the context, readable by the rootless user).
fn prepare_context(case: &Case, dest: &Path, df_dir: &Path) {
    fs::create_dir_all(dest).unwrap();
    let df = case.dir.join("Dockerfile");
    if df.exists() {
        fs::create_dir_all(df_dir).unwrap();
        fs::copy(&df, df_dir.join("Dockerfile")).unwrap();
        let own_ignore = case.dir.join("Dockerfile.dockerignore");
        if own_ignore.exists() {
            fs::copy(&own_ignore, df_dir.join("Dockerfile.dockerignore")).unwrap();
        }
    }
    let src = case.dir.join("context");
    if src.is_dir() {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(dest)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{}: copying the context", case.name);
    }
    for e in walkdir::WalkDir::new(dest).follow_links(false) {
        let e = e.unwrap();
        let ft = e.file_type();
        let mode = if ft.is_dir() {
            0o755
        } else if ft.is_file() {
            0o644
        } else {
            continue;
        };
        fs::set_permissions(e.path(), fs::Permissions::from_mode(mode)).unwrap();
    }
    let setup = case.dir.join("setup.sh");
    if setup.exists() {
        let out = Command::new("sh")
            .arg("-e")
            .arg(&setup)
            .current_dir(dest)
            .env("TESTDATA", manifest_dir().join("testdata"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: setup.sh failed:\n{}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A tiny HTTP/1.0 file server on 127.0.0.1 serving `root` (GET only; 404 for what is missing),
/// for the `ADD <URL>` cases. It lives as long as the test.
fn serve(root: PathBuf) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let path = path.split('?').next().unwrap_or("");
            let file = root.join(path.trim_start_matches('/'));
            let reply = match fs::read(&file) {
                Ok(body) if !path.contains("..") => {
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                        body.len()
                    );
                    [head.into_bytes(), body].concat()
                }
                _ => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    format!("http://{addr}")
}

/// The `kiln build` arguments of a case (without the leading `--root`).
fn build_args(case: &Case, ctx: &Path, df_dir: &Path, out: &Path, http: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "build",
        "--progress",
        "plain",
        "--compression",
        "gzip",
        "--no-pull",
        "-t",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("golden:{}", case.name));
    args.push("-o".into());
    args.push(format!("type=oci,dest={}", out.display()));
    if case.dir.join("Dockerfile").exists() {
        args.push("-f".into());
        args.push(df_dir.join("Dockerfile").display().to_string());
    }
    if let Ok(flags) = fs::read_to_string(case.dir.join("flags")) {
        args.extend(
            flags
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    l.replace("{ctx}", &ctx.display().to_string())
                        .replace("{http}", &format!("{http}/{}", case.name))
                }),
        );
    }
    args.push(ctx.display().to_string());
    args
}

/// `scripts/image-listing OUT --base BUSYBOX`.
fn listing(out: &Path) -> String {
    let o = Command::new("python3")
        .arg(manifest_dir().join("scripts/image-listing"))
        .arg(out)
        .arg("--base")
        .arg(busybox_layout())
        .output()
        .expect("running python3 scripts/image-listing");
    assert!(
        o.status.success(),
        "image-listing {}:\n{}",
        out.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let mut out = String::new();
    for l in &e {
        if !a.contains(l) {
            out.push_str(&format!("  - {l}\n"));
        }
    }
    for l in &a {
        if !e.contains(l) {
            out.push_str(&format!("  + {l}\n"));
        }
    }
    if out.is_empty() {
        out.push_str("  (same lines, different order)\n");
    }
    out
}

/// Check one build's outcome against the case; returns a failure description.
fn check(case: &Case, ok: bool, stderr: &str, out: &Path, update: bool) -> Option<String> {
    let err_file = case.dir.join("expected-error");
    if let Ok(want) = fs::read_to_string(&err_file) {
        let want = want.trim();
        return match (ok, stderr.contains(want)) {
            (false, true) => None,
            (true, _) => Some(format!("built, but should fail with {want:?}")),
            (false, false) => Some(format!("failed without {want:?}:\n{stderr}")),
        };
    }
    if !ok {
        return Some(format!("build failed:\n{stderr}"));
    }
    let actual = listing(out);
    let exp_file = case.dir.join("expected.txt");
    if update {
        fs::write(&exp_file, &actual).unwrap();
        return None;
    }
    let expected = fs::read_to_string(&exp_file).unwrap_or_default();
    (expected != actual).then(|| {
        format!(
            "listing differs from {}:\n{}",
            exp_file.display(),
            diff(&expected, &actual)
        )
    })
}

fn report(who: &str, failures: Vec<(String, String)>, total: usize) {
    if failures.is_empty() {
        eprintln!("golden images ({who}): {total} cases match");
        return;
    }
    let mut msg = format!(
        "golden images ({who}): {} of {total} cases differ\n",
        failures.len()
    );
    for (name, why) in &failures {
        msg.push_str(&format!("--- {name}: {why}\n"));
    }
    panic!("{msg}");
}

/// `kiln --root ROOT ARGS` with a private copy of the binary: the shared target directory may be
/// rebuilt by another checkout while the suite runs.
fn run_kiln(bin: &Path, root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KILN_ROOT")
        .env_remove("KILN_HOST")
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("running kiln")
}

#[test]
fn golden_images_as_root() {
    let update = std::env::var("KILN_GOLDEN_UPDATE").is_ok_and(|v| v == "1");
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("kiln");
    fs::copy(kiln_bin(), &bin).unwrap();
    let store = work.path().join("store");
    let import = format!("{}:latest", busybox_layout().display());
    let o = run_kiln(
        &bin,
        &store,
        &["import", &import, "--tag", "busybox:latest"],
    );
    assert!(o.status.success(), "import busybox: {o:?}");
    let http = serve(work.path().join("ctx"));
    let all = cases();
    let mut failures = Vec::new();
    for case in &all {
        let ctx = work.path().join("ctx").join(&case.name);
        let out = work.path().join("out").join(&case.name);
        let df = work.path().join("df").join(&case.name);
        prepare_context(case, &ctx, &df);
        let args = build_args(case, &ctx, &df, &out, &http);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run_kiln(&bin, &store, &args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        if let Some(why) = check(case, o.status.success(), &stderr, &out, update) {
            failures.push((case.name.clone(), why));
        }
    }
    report("root", failures, all.len());
}

/// Files under `dir` with set-uid or set-gid bits, and their modes.
fn special_modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let mode = e.metadata().ok()?.permissions().mode() & 0o7777;
            (mode & 0o6000 != 0).then(|| (e.into_path(), mode))
        })
        .collect()
}

/// The same cases built by a non-root user. If rootless kiln cannot run here, this fails: it never
/// passes by skipping.
#[test]
fn golden_images_rootless() {
    let r = Rootless::new(&[]);
    let http = serve(r.dir.path().join("golden/ctx"));
    let all = cases();
    let mut failures = Vec::new();
    for case in &all {
        let ctx = r.dir.path().join("golden/ctx").join(&case.name);
        let df = r.dir.path().join("golden/df").join(&case.name);
        let out = r.dir.path().join("golden/out").join(&case.name);
        prepare_context(case, &ctx, &df);
        // chown(2) clears set-uid/set-gid bits: put back what setup.sh set.
        let special = special_modes(&ctx);
        let st = Command::new("chown")
            .args(["-R", "kilntest:kilntest"])
            .arg(r.dir.path().join("golden"))
            .status()
            .unwrap();
        assert!(st.success(), "chown the rootless contexts");
        for (path, mode) in special {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
        let args = build_args(case, &ctx, &df, &out, &http);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Rootless::kiln insists on success; an expected failure shows as its panic message.
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.kiln(&args)));
        let (ok, stderr) = match res {
            Ok(stderr) => (true, stderr),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                (false, msg)
            }
        };
        if let Some(why) = check(case, ok, &stderr, &out, false) {
            failures.push((case.name.clone(), why));
        }
    }
    report("rootless", failures, all.len());
}
