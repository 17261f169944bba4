//! The `docker buildx build` flags CI scripts type (issue 21), through the real CLI on the busybox
//! base: `--add-host`, `--shm-size`, `--ulimit`, `--no-cache-filter`, a context or Dockerfile on
//! stdin, `--build-context` (BuildKit's `testNamedLocalContext`, `testNamedImageContext`,
//! `testNamedOCILayoutContext`), `--ssh` with a real `ssh-agent`, and the errors of values kiln
//! cannot use.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};

use crate::support::*;

/// `kiln build ARGS…` with `stdin` as its standard input.
fn build_with_stdin(root: &Path, args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn file_of(img: &LayoutImage, path: &str) -> String {
    let e = all_entries(img);
    let c = e
        .get(path)
        .and_then(|e| e.content.clone())
        .unwrap_or_else(|| panic!("no {path} in the image: {:?}", e.keys()));
    String::from_utf8(c).unwrap()
}

#[test]
fn add_host_shm_size_and_ulimit_reach_run_steps_but_not_the_image() {
    let root = store_with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN grep db.internal /etc/hosts > /hosts-line; \
             df -k /dev/shm | tail -1 | awk '{print $2}' > /shm-kb; \
             ulimit -n > /nofile; ulimit -Hn > /nofile-hard\n",
    )]);
    let flags = [
        "--add-host",
        "db.internal:10.1.2.3",
        "--shm-size",
        "16m",
        "--ulimit",
        "nofile=512:1024",
    ];
    let (img, _) = build_to_layout(root.path(), ctx.path(), &flags);
    assert_eq!(file_of(&img, "hosts-line"), "10.1.2.3\tdb.internal\n");
    assert_eq!(file_of(&img, "shm-kb"), "16384\n");
    assert_eq!(file_of(&img, "nofile"), "512\n");
    assert_eq!(file_of(&img, "nofile-hard"), "1024\n");
    let layer = layer_entries(img.layers.last().unwrap());
    assert!(
        !layer.contains_key("etc/hosts") && !layer.keys().any(|k| k.starts_with("dev/")),
        "/etc/hosts and /dev/shm are the step's, not the image's: {:?}",
        layer.keys()
    );
    // The entries are inputs of the step's key (BuildKit keeps them in the exec op): another
    // address runs the step again.
    let (img, stderr) = build_to_layout(
        root.path(),
        ctx.path(),
        &["--add-host", "db.internal:10.9.9.9"],
    );
    assert_eq!(file_of(&img, "hosts-line"), "10.9.9.9\tdb.internal\n");
    assert!(!step_outcomes(&stderr).iter().any(|(_, c)| *c), "{stderr}");
}

#[test]
fn no_cache_filter_reruns_only_the_named_stage() {
    let root = store_with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS deps\nRUN cat /proc/sys/kernel/random/uuid > /deps\n\
         FROM busybox\nCOPY --from=deps /deps /deps\nRUN cat /proc/sys/kernel/random/uuid > /app\n",
    )]);
    let (first, _) = build_to_layout(root.path(), ctx.path(), &[]);
    let (again, stderr) =
        build_to_layout(root.path(), ctx.path(), &["--no-cache-filter", "stage-1"]);
    assert_eq!(file_of(&first, "deps"), file_of(&again, "deps"), "{stderr}");
    assert_ne!(file_of(&first, "app"), file_of(&again, "app"), "{stderr}");
    let (named, stderr) = build_to_layout(root.path(), ctx.path(), &["--no-cache-filter", "DEPS"]);
    assert_ne!(file_of(&again, "deps"), file_of(&named, "deps"), "{stderr}");
    // What ran afresh reached the stage that copies from it (above), and left the cache as the
    // first build recorded it.
    let (plain, stderr) = build_to_layout(root.path(), ctx.path(), &[]);
    assert_eq!(plain.manifest_digest, first.manifest_digest, "{stderr}");
    assert!(step_outcomes(&stderr).iter().all(|(_, c)| *c), "{stderr}");
}

#[test]
fn context_tar_and_dockerfile_on_stdin() {
    let root = store_with_busybox();
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY hello /hello\n"),
        ("hello", "from the tar\n"),
    ]);
    let tar = Command::new("tar")
        .arg("-C")
        .arg(ctx.path())
        .args(["-cf", "-", "Dockerfile", "hello"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=oci,dest={}", out.path().join("a").display());
    let (ok, stderr) = build_with_stdin(
        root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "t:1",
            "-o",
            &dest,
            "-",
        ],
        &tar.stdout,
    );
    assert!(ok, "{stderr}");
    let img = layout_image(&out.path().join("a"), "1");
    assert_eq!(file_of(&img, "hello"), "from the tar\n");

    // `-f -`: the Dockerfile from stdin, the context from the directory.
    let dest = format!("type=oci,dest={}", out.path().join("b").display());
    let df = b"FROM busybox\nCOPY hello /copied\n";
    let ctx_arg = ctx.path().to_str().unwrap();
    let (ok, stderr) = build_with_stdin(
        root.path(),
        &["build", "-t", "t:1", "-o", &dest, "-f", "-", ctx_arg],
        df,
    );
    assert!(ok, "{stderr}");
    let img = layout_image(&out.path().join("b"), "1");
    assert_eq!(file_of(&img, "copied"), "from the tar\n");

    // Not a tar on `-`: the Dockerfile, with an empty context (docker build - < Dockerfile).
    let (ok, stderr) = build_with_stdin(
        root.path(),
        &["build", "-t", "t:1", "-"],
        b"FROM busybox\nCOPY hello /x\n",
    );
    assert!(!ok && stderr.contains("hello"), "{stderr}");
    let (ok, stderr) = build_with_stdin(root.path(), &["build", "-f", "-", "-"], df);
    assert!(!ok && stderr.contains("both"), "{stderr}");
}

/// BuildKit's `testNamedLocalContext` (a stage replaced by a directory, its `.dockerignore`
/// honoured), `testNamedImageContext` (an image name redirected) and `testNamedOCILayoutContext`
/// (a stage and a FROM name from an OCI layout pinned by digest), in one build.
#[test]
fn named_contexts_replace_stages_and_images() {
    let root = store_with_busybox();
    let layout = busybox_layout();
    let digest = read_json(&layout.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox AS base\nRUN cat /etc/alpine-release > /out\n\
         FROM foo AS imported\nRUN echo -n imported > /outfoo\n\
         FROM upstream AS renamed\nRUN echo -n renamed > /renamed\n\
         FROM scratch\nCOPY --from=base /o* /\nCOPY --from=imported /outfoo /\n\
         COPY --from=renamed /renamed /\nCOPY --from=ctx2 /extra /\n",
    )]);
    let dir = context(&[
        ("out", "dummy-result"),
        ("out2", "dummy-result"),
        (".dockerignore", "out2\n"),
    ]);
    let extra = context(&[("extra", "second local")]);
    let flags = [
        format!("--build-context=base={}", dir.path().display()),
        format!(
            "--build-context=foo=oci-layout://{}@{digest}",
            layout.display()
        ),
        "--build-context=upstream=docker-image://busybox:latest".to_string(),
        format!("--build-context=ctx2={}", extra.path().display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (img, stderr) = build_to_layout(root.path(), ctx.path(), &flags);
    let tree = all_entries(&img);
    assert_eq!(file_of(&img, "out"), "dummy-result");
    assert!(
        !tree.contains_key("out2"),
        "the context's .dockerignore: {:?}",
        tree.keys()
    );
    assert_eq!(file_of(&img, "outfoo"), "imported");
    assert_eq!(file_of(&img, "renamed"), "renamed");
    assert_eq!(file_of(&img, "extra"), "second local");
    // The replaced stage's RUN never ran (it would have failed: busybox has no alpine-release).
    assert!(!stderr.contains("alpine-release"), "{stderr}");

    // A directory as a base: the stage it replaces (whose RUN would fail) and a FROM of it start
    // from its files.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS base\nRUN false\nFROM base\nCOPY --from=busybox /bin/busybox /bb\n",
    )
    .unwrap();
    let flag = format!("--build-context=base={}", dir.path().display());
    let (img, _) = build_to_layout(root.path(), ctx.path(), &[&flag]);
    let tree = all_entries(&img);
    assert_eq!(file_of(&img, "out"), "dummy-result");
    assert!(
        tree.contains_key("bb") && !tree.contains_key("out2"),
        "{:?}",
        tree.keys()
    );
    assert_eq!(
        img.layers.len(),
        2,
        "the directory's layer, then the COPY's"
    );
    let err = kiln_err(
        root.path(),
        &[
            "build",
            "--build-context",
            "x=git://example.com/r",
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(err.contains("not supported"), "{err}");
}

#[test]
fn ssh_forwards_a_real_agent_and_the_key_never_leaves_it() {
    for t in ["ssh-agent", "ssh-add", "ssh-keygen", "ldd"] {
        require_tool(t);
    }
    let root = store_with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nCOPY sshroot/ /\n\
         RUN --mount=type=ssh ssh-add -l > /keys && echo \"$SSH_AUTH_SOCK\" > /sock\n\
         RUN --mount=type=ssh,target=/tmp/a.sock,mode=0640,uid=1000,gid=2000 \
             stat -c '%a %u %g' /tmp/a.sock > /mode \
             && SSH_AUTH_SOCK=/tmp/a.sock ssh-add -l > /keys2\n",
    )]);
    host_binary_tree("/usr/bin/ssh-add", &ctx.path().join("sshroot"));
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id");
    let gen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    // A line of the private key's body: the material that must appear nowhere.
    let pem = fs::read_to_string(&key).unwrap();
    let secret_line = pem.lines().nth(2).unwrap().to_string();

    // Key file: kiln's own agent holds it.
    let flag = format!("default={}", key.display());
    let (img, stderr) = build_to_layout(root.path(), ctx.path(), &["--ssh", &flag]);
    assert!(
        file_of(&img, "keys").contains("kiln-test-key (ED25519)"),
        "{stderr}"
    );
    assert_eq!(file_of(&img, "sock"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(
        file_of(&img, "mode"),
        "640 1000 2000\n",
        "the mount's mode= on the socket"
    );
    assert!(file_of(&img, "keys2").contains("kiln-test-key"));

    // A running agent's socket, as `--ssh default` takes it from SSH_AUTH_SOCK.
    let sock = keys.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while !sock.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let add = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let oci = ctx.path().join("out-agent");
    let dest = format!("type=oci,dest={}", oci.display());
    let out = Command::new(kiln_bin())
        .arg("--root")
        .arg(root.path())
        .args([
            "build",
            "--progress",
            "plain",
            "--no-cache",
            "--ssh",
            "default",
            "-t",
            "t:2",
        ])
        .args(["-o", &dest])
        .arg(ctx.path())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let stderr2 = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr2}");
    assert!(file_of(&layout_image(&oci, "2"), "keys").contains("kiln-test-key"));

    for text in [&stderr, &stderr2] {
        assert!(!text.contains(&secret_line), "key material in the log");
    }
    let leaks: Vec<PathBuf> = [root.path(), &ctx.path().join("out-oci"), &oci]
        .iter()
        .flat_map(|d| files_containing(d, secret_line.as_bytes()))
        .collect();
    assert!(leaks.is_empty(), "key material in {leaks:?}");

    // An id the Dockerfile requires but the build does not give is an error, not a skip.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=ssh,id=git,required=true true\n",
    )
    .unwrap();
    let err = kiln_err(
        root.path(),
        &["build", "--ssh", &flag, ctx.path().to_str().unwrap()],
    );
    assert!(err.contains("id=git is required"), "{err}");
}

#[test]
fn flag_values_kiln_cannot_use_are_errors_naming_the_flag() {
    let root = store_with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN true\n")]);
    let c = ctx.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--ulimit", "files=1"], "nofile"),
        (&["--ulimit", "nofile=10:5"], "less than hard"),
        (&["--add-host", "db"], "--add-host"),
        (&["--add-host", "gw:host-gateway"], "host-gateway"),
        (&["--shm-size", "0"], "shm_size"),
        (&["--pull", "--no-pull"], "cannot be used with"),
        (
            &["--ssh", "default=/nonexistent"],
            "not a socket or a key file",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["build"];
        args.extend_from_slice(flags);
        args.push(c);
        let err = kiln_err(root.path(), &args);
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    let out = Command::new(kiln_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--ssh", "default", c])
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("SSH_AUTH_SOCK"),
        "{err}"
    );
}

/// `kiln --root <its state> ARGS` as kilntest, success or not.
fn kilntest_kiln(r: &Rootless, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "kilntest", "--"])
        .arg(r.dir.path().join("kiln"))
        .arg("--root")
        .arg(r.dir.path().join("state"))
        .args(args)
        .current_dir(r.dir.path())
        .env("HOME", r.dir.path())
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap()
}

/// Rootless (the `kilntest` user): lowering limits, extra hosts and /dev/shm work; raising the
/// hard limit above the user's own cannot be honoured in the sandbox and says which rung refused.
#[test]
fn rootless_honours_the_flags_and_names_the_rung_it_cannot_honour_them_in() {
    let r = Rootless::new(&[(
        "Dockerfile",
        "FROM busybox\nRUN grep db /etc/hosts > /h; ulimit -Hn > /n; \
         df -k /dev/shm | tail -1 | awk '{print $2}' > /s\n",
    )]);
    let (img, _) = r.build(&[
        "--add-host",
        "db:10.0.0.7",
        "--ulimit",
        "nofile=100:200",
        "--shm-size",
        "8m",
    ]);
    assert_eq!(file_of(&img, "h"), "10.0.0.7\tdb\n");
    assert_eq!(file_of(&img, "n"), "200\n");
    assert_eq!(file_of(&img, "s"), "8192\n");

    let hard = Command::new("runuser")
        .args(["-u", "kilntest", "--", "sh", "-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard: u64 = String::from_utf8_lossy(&hard.stdout)
        .trim()
        .parse()
        .unwrap();
    let flag = format!("nofile=64:{}", hard + 1);
    let ctx = r.ctx();
    let ctx = ctx.to_str().unwrap();
    let out = kilntest_kiln(&r, &["build", "--no-cache", "--ulimit", &flag, ctx]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "raising the hard limit as kilntest succeeded:\n{err}"
    );
    assert!(
        err.contains("--ulimit nofile=64:") && err.contains("sandbox rung"),
        "{err}"
    );

    // The single-uid rung maps one id: an ssh socket owned by another is refused, naming it.
    let key = r.dir.path().join("id");
    let gen = Command::new("runuser")
        .args([
            "-u",
            "kilntest",
            "--",
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    fs::write(
        r.ctx().join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=ssh,uid=1000 true\n",
    )
    .unwrap();
    let ssh = format!("default={}", key.display());
    let out = kilntest_kiln(
        &r,
        &["build", "--sandbox", "single-uid", "--ssh", &ssh, ctx],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "uid=1000,gid=0 cannot be given to the socket in the single-uid sandbox rung"
            ),
        "{err}"
    );
}
