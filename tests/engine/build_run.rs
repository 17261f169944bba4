//! RUN steps end to end (issue 4) through the real CLI: the layers hold exactly what the commands
//! changed (owners, whiteouts, opaque directories), secrets and caches never reach them, sandboxes
//! isolate, limits and cancellation work — as root and, for real, as the rootless user `kilntest`.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// kind, mode, uid, gid of one path.
type Meta = (char, u32, u64, u64);

/// The merged file tree of an image's layers (OCI whiteouts applied).
fn merged_tree(img: &LayoutImage) -> BTreeMap<String, Meta> {
    let mut tree: BTreeMap<String, Meta> = BTreeMap::new();
    for l in &img.layers {
        let entries = layer_entries(l);
        for path in entries.keys() {
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n),
                None => (String::new(), path.as_str()),
            };
            if name == ".wh..wh..opq" {
                tree.retain(|p, _| !p.starts_with(&dir) || p.len() == dir.len());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = format!("{dir}{hidden}");
                tree.retain(|p, _| p != &gone && !p.starts_with(&format!("{gone}/")));
                continue;
            }
        }
        for (path, e) in entries {
            if !path.rsplit('/').next().unwrap_or("").starts_with(".wh.") {
                tree.insert(path, (e.kind, e.mode, e.uid, e.gid));
            }
        }
    }
    tree
}

const MULTI_STEP: &str = r#"FROM busybox
RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd \
 && echo 'app:x:1000:' >> /etc/group \
 && mkdir -p /home/app /srv/data && touch /srv/data/owned \
 && chown -R app:app /home/app && chown 1234:5678 /srv/data/owned \
 && chmod 4750 /srv/data/owned
RUN rm /bin/vi && rm -rf /home && mkdir /home && echo new > /home/fresh
USER app
RUN id -un > /tmp/whoami && ln -s /srv/data /tmp/link
"#;

#[test]
fn multi_step_run_builds_the_expected_tree_as_root() {
    let root = store_with_busybox();
    let ctx = context(&[("Dockerfile", MULTI_STEP)]);
    let (img, stderr) = build_to_layout(root.path(), ctx.path(), &[]);
    assert!(stderr.contains("sandbox: full rung"), "{stderr}");
    // Layer 2: passwd changes and the chowns; layer 3: a whiteout and an opaque /home.
    let l2 = layer_entries(&img.layers[1]);
    assert_eq!(l2["srv/data/owned"].uid, 1234);
    assert_eq!(l2["srv/data/owned"].gid, 5678);
    assert_eq!(l2["srv/data/owned"].mode, 0o4750);
    assert_eq!((l2["home/app"].uid, l2["home/app"].gid), (1000, 1000));
    let l3 = layer_entries(&img.layers[2]);
    assert!(
        l3.contains_key("bin/.wh.vi"),
        "rm of a base file is a whiteout: {:?}",
        l3.keys()
    );
    assert!(
        l3.contains_key("home/.wh..wh..opq"),
        "a replaced directory is opaque: {:?}",
        l3.keys()
    );
    let tree = merged_tree(&img);
    let expect: &[(&str, Meta)] = &[
        ("srv/data/owned", ('f', 0o4750, 1234, 5678)),
        ("home/fresh", ('f', 0o644, 0, 0)),
        ("tmp/whoami", ('f', 0o644, 1000, 1000)),
        ("tmp/link", ('l', 0o777, 1000, 1000)),
    ];
    for (p, want) in expect {
        assert_eq!(tree.get(*p), Some(want), "{p}");
    }
    assert!(!tree.contains_key("bin/vi") && !tree.contains_key("home/app"));
    assert!(tree.contains_key("bin/busybox"));
    let whoami = layer_entries(img.layers.last().unwrap());
    assert_eq!(whoami["tmp/whoami"].content.as_deref(), Some(&b"app\n"[..]));
    // Mount points the sandbox made never reach a layer.
    for l in &img.layers[1..] {
        let e = layer_entries(l);
        assert!(
            !e.contains_key("proc")
                && !e.contains_key("etc/resolv.conf")
                && !e.contains_key("dev/null"),
            "{:?}",
            e.keys()
        );
    }
}

#[test]
fn secrets_and_cache_mounts_never_reach_layers_or_history() {
    let root = store_with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /toklen\n\
         RUN --mount=type=secret,id=tok,env=TOKEN test \"${#TOKEN}\" = 14 && echo ok > /envok\n\
         RUN --mount=type=cache,target=/var/cache/x echo run >> /var/cache/x/log && wc -l < /var/cache/x/log > /runs\n",
    )]);
    let secret = ctx
        .path()
        .join("..")
        .join(format!("secret-{}", std::process::id()));
    fs::write(&secret, "hunter2-secret").unwrap();
    let sflag = format!("id=tok,src={}", secret.display());
    let (img, stderr) = build_to_layout(root.path(), ctx.path(), &["--secret", &sflag]);
    assert!(!stderr.contains("hunter2"), "secret in the progress output");
    for l in &img.layers {
        let raw = fs::read(l).unwrap();
        let entries = layer_entries(l);
        assert!(
            !entries
                .keys()
                .any(|k| k.starts_with("run/secrets") || k.starts_with("var/cache/x")),
            "{:?}",
            entries.keys()
        );
        for e in entries.values() {
            if let Some(c) = &e.content {
                assert!(!String::from_utf8_lossy(c).contains("hunter2"));
            }
        }
        assert!(!String::from_utf8_lossy(&raw).contains("hunter2"));
    }
    assert!(
        !img.config.to_string().contains("hunter2"),
        "secret in config/history"
    );
    let tree = all_entries(&img);
    assert_eq!(tree["toklen"].content.as_deref(), Some(&b"14\n"[..]));
    assert_eq!(tree["envok"].content.as_deref(), Some(&b"ok\n"[..]));
    assert_eq!(tree["runs"].content.as_deref(), Some(&b"1\n"[..]));
    // The cache persists across builds; the layer does not carry it.
    let (img2, _) = build_to_layout(root.path(), ctx.path(), &["--secret", &sflag, "--no-cache"]);
    let tree2 = all_entries(&img2);
    assert_eq!(tree2["runs"].content.as_deref(), Some(&b"2\n"[..]));
    let _ = fs::remove_file(secret);
}

#[test]
fn network_none_has_only_loopback_and_failures_name_the_step() {
    let root = store_with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN --network=none ip -o link | cut -d: -f2 | tr -d ' ' > /links && ip route > /routes\n",
    )]);
    let (img, _) = build_to_layout(root.path(), ctx.path(), &[]);
    let l = layer_entries(img.layers.last().unwrap());
    assert_eq!(l["links"].content.as_deref(), Some(&b"lo\n"[..]));
    assert_eq!(l["routes"].content.as_deref(), Some(&b""[..]));

    // The build-wide --network none applies to RUN steps that do not choose.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN ip -o link | cut -d: -f2 | tr -d ' ' > /links\n",
    )
    .unwrap();
    let (img, _) = build_to_layout(root.path(), ctx.path(), &["--network", "none"]);
    let l = layer_entries(img.layers.last().unwrap());
    assert_eq!(l["links"].content.as_deref(), Some(&b"lo\n"[..]));

    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\n\nRUN echo about to fail; exit 7\n",
    )
    .unwrap();
    let e = kiln_err(root.path(), &["build", ctx.path().to_str().unwrap()]);
    assert!(
        e.contains("Dockerfile:3") && e.contains("code 7") && e.contains("about to fail"),
        "{e}"
    );
}

#[test]
fn a_memory_limit_kills_a_hog_with_a_clear_error() {
    let root = store_with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN dd if=/dev/zero of=/dev/null bs=300M count=1\n",
    )]);
    let e = kiln_err(
        root.path(),
        &["build", "--memory", "64m", ctx.path().to_str().unwrap()],
    );
    assert!(e.contains("memory limit"), "{e}");
}

#[test]
fn every_rung_forced_runs_a_step() {
    let root = store_with_busybox();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo hi > /hi && cat /proc/1/cmdline > /pid1 || true\n",
    )]);
    for rung in ["full", "no-proc", "single-uid", "chroot"] {
        let (img, stderr) =
            build_to_layout(root.path(), ctx.path(), &["--sandbox", rung, "--no-cache"]);
        assert!(
            stderr.contains(&format!("sandbox: {rung} rung")),
            "{rung}: {stderr}"
        );
        let l = layer_entries(img.layers.last().unwrap());
        assert_eq!(l["hi"].content.as_deref(), Some(&b"hi\n"[..]), "{rung}");
    }
    // The same, forced by kiln.toml's [worker.oci] sandbox.
    for rung in ["no-proc", "chroot"] {
        let cfg = ctx.path().join(format!("kiln-{rung}.toml"));
        fs::write(&cfg, format!("[worker.oci]\nsandbox = \"{rung}\"\n")).unwrap();
        let (_, stderr) = build_to_layout(
            root.path(),
            ctx.path(),
            &["--config", cfg.to_str().unwrap(), "--no-cache"],
        );
        assert!(
            stderr.contains(&format!("sandbox: {rung} rung")),
            "config {rung}: {stderr}"
        );
    }
}

fn sleeping_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() {
            if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
                if String::from_utf8_lossy(&cmd).replace('\0', " ").trim() == "sleep 1000" {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

#[test]
fn ctrl_c_cancels_a_run_and_leaves_no_process_or_mount() {
    let root = store_with_busybox();
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN sleep 1000\n")]);
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "--progress", "plain"])
        .arg(ctx.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while sleeping_pids().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "sleep never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("cancelled"), "{err}");
    assert!(
        sleeping_pids().is_empty(),
        "a sleep outlived its cancelled step"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(root.path().to_str().unwrap()),
        "a mount outlived its step"
    );
    // The workspace leaves builds/ at once (moved to builds/trash, deleted in the background,
    // swept by the next build or `kiln prune` if the process exited first).
    let builds = root.path().join("builds");
    let left: Vec<_> = fs::read_dir(&builds)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let left: Vec<_> = left.iter().filter(|p| !p.ends_with("trash")).collect();
    assert!(left.is_empty(), "build workspace left behind: {left:?}");
    kiln_ok(root.path(), &["prune"]);
    assert!(!builds.join("trash").exists(), "kiln prune left the trash");
}

#[test]
fn rootless_build_as_kilntest_keeps_owners_on_the_full_rung() {
    let dockerfile = format!("{MULTI_STEP}COPY --chown=1000:1000 note /home/note\n");
    let user = Rootless::new(&[("Dockerfile", &dockerfile), ("note", "copied")]);
    let (img, stderr) = user.build(&[]);
    assert!(stderr.contains("sandbox: full rung"), "{stderr}");
    let tree = merged_tree(&img);
    assert_eq!(tree.get("srv/data/owned"), Some(&('f', 0o4750, 1234, 5678)));
    assert_eq!(
        tree.get("tmp/whoami").map(|t| (t.2, t.3)),
        Some((1000, 1000))
    );
    assert_eq!(
        tree.get("home/note").map(|t| (t.2, t.3)),
        Some((1000, 1000))
    );
    let l3 = layer_entries(&img.layers[2]);
    assert!(
        l3.contains_key("bin/.wh.vi") && l3.contains_key("home/.wh..wh..opq"),
        "{:?}",
        l3.keys()
    );
}
