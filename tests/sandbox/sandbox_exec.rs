//! The sandbox for real: a busybox rootfs in overlay/native snapshots, commands run by the kiln
//! helper binary, as root and (re-executed through runuser) as the non-root user `kilntest`.

use crate::support;

use kiln::exec::{self, Cancel, ExecError, ExtraMount, Network, Rung, SandboxConfig, SandboxSpec};
use kiln::snapshot::{Active, Change, Mounts, Snapshotter, SnapshotterKind};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const HELPER: &str = env!("CARGO_BIN_EXE_kiln");

fn busybox_rootfs(root: &Path) {
    for d in ["bin", "etc", "tmp", "root", "opt/d", "home"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    let list = std::process::Command::new("/usr/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/motd"), "hello\n").unwrap();
    std::fs::write(root.join("opt/d/old"), "old\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

struct Env {
    dir: tempfile::TempDir,
    cfg: SandboxConfig,
    snap: Snapshotter,
    /// The busybox rootfs every step's active snapshot is prepared over.
    lower: PathBuf,
    actives: RefCell<BTreeMap<String, Active>>,
    rung: Rung,
}

/// An active snapshot `key` over the busybox rootfs; its mounts for the sandbox.
fn prepare(e: &Env, key: &str) -> Mounts {
    let a = e
        .snap
        .prepare(std::slice::from_ref(&e.lower), &e.dir.path().join(key))
        .unwrap();
    let mounts = a.mounts();
    e.actives.borrow_mut().insert(key.into(), a);
    mounts
}

fn changes(e: &Env, key: &str) -> Vec<Change> {
    e.actives.borrow()[key].diff().unwrap()
}

fn env(kind: SnapshotterKind, rung: Option<Rung>) -> Env {
    let dir = tempfile::Builder::new()
        .prefix("kiln-sbx-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut cfg = SandboxConfig::new(&dir.path().join("exec"));
    cfg.helper = HELPER.into();
    cfg.rung = rung;
    cfg.snapshotter = kind;
    let p = exec::probe(&cfg);
    let Some(rung) = p.rung else {
        panic!("LOUD: no sandbox rung works here: {:?}", p.reasons)
    };
    assert_eq!(
        p.snapshotter, kind,
        "snapshotter failures: {:?}",
        p.snapshotter_reasons
    );
    let snap = Snapshotter::new(kind, p.userxattr).unwrap();
    let lower = dir.path().join("base");
    busybox_rootfs(&lower);
    Env {
        dir,
        cfg,
        snap,
        lower,
        actives: RefCell::new(BTreeMap::new()),
        rung,
    }
}

fn sh(
    e: &Env,
    key: &str,
    script: &str,
    f: impl FnOnce(&mut SandboxSpec),
) -> Result<Vec<String>, ExecError> {
    let mounts = prepare(e, key);
    let mut spec = SandboxSpec::new(
        mounts,
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        e.rung,
    );
    spec.hostname = "kiln-test".into();
    f(&mut spec);
    let mut out = Vec::new();
    exec::run(&e.cfg, &spec, &Cancel::new(), &mut |l| out.push(l.0)).map(|_| out)
}

fn find<'a>(changes: &'a [Change], path: &str) -> Option<&'a Change> {
    changes.iter().find(|c| c.path() == Path::new(path))
}

fn on_disk(c: Option<&Change>) -> PathBuf {
    match c {
        Some(Change::Added { on_disk, .. } | Change::Modified { on_disk, .. }) => on_disk.clone(),
        other => panic!("expected an added/modified entry, got {other:?}"),
    }
}

/// Debian's busybox-static has no `adduser` applet: add the user the way adduser does.
const MULTI_ID: &str = "echo bob:x:1234:1234::/home/bob:/bin/sh >> /etc/passwd && \
    echo bob:x:1234: >> /etc/group && mkdir -p /home/bob && chown bob:bob /home/bob && \
    mkdir /data && echo x > /data/f && echo y > /data/g && chown -R bob:bob /data && \
    chown 65534:65534 /data/g && rm /etc/motd && rm -rf /opt/d && mkdir /opt/d && touch /opt/d/new";

/// adduser/chown/rm/replaced dir → owners, Deleted, Opaque in the change set.
fn multi_id_scenario(e: &Env) {
    let out = sh(e, "step", MULTI_ID, |_| {}).unwrap_or_else(|err| panic!("{err}"));
    assert!(out.is_empty(), "{out:?}");
    let ch = changes(e, "step");
    let f = on_disk(find(&ch, "data/f")).metadata().unwrap();
    assert_eq!((f.uid(), f.gid()), (1234, 1234), "{ch:?}");
    let g = on_disk(find(&ch, "data/g")).metadata().unwrap();
    assert_eq!((g.uid(), g.gid()), (65534, 65534), "{ch:?}");
    let passwd = std::fs::read_to_string(on_disk(find(&ch, "etc/passwd"))).unwrap();
    assert!(passwd.contains("bob:x:1234:1234"), "{passwd}");
    assert!(
        matches!(find(&ch, "etc/motd"), Some(Change::Deleted { .. })),
        "{ch:?}"
    );
    if e.snap.kind() != SnapshotterKind::Native {
        assert!(
            ch.contains(&Change::Opaque {
                dir: "opt/d".into()
            }),
            "{ch:?}"
        );
    } else {
        assert!(
            matches!(find(&ch, "opt/d/old"), Some(Change::Deleted { .. })),
            "{ch:?}"
        );
    }
    assert!(
        matches!(find(&ch, "opt/d/new"), Some(Change::Added { .. })),
        "{ch:?}"
    );
    for p in ["proc", "dev", "sys", "etc/resolv.conf", "etc/hosts"] {
        assert!(
            find(&ch, p).is_none(),
            "mount point {p} leaked into the changes: {ch:?}"
        );
    }
    let mut sorted = ch
        .iter()
        .map(|c| c.path().to_path_buf())
        .collect::<Vec<_>>();
    sorted.sort();
    assert_eq!(
        sorted,
        ch.iter()
            .map(|c| c.path().to_path_buf())
            .collect::<Vec<_>>()
    );
    let active = e.actives.borrow_mut().remove("step").unwrap();
    let scratch = e.dir.path().join("step");
    active.remove().unwrap();
    assert!(!scratch.exists(), "remove deletes the scratch directory");
}

#[test]
fn isolation_user_and_hostname() {
    let e = env(SnapshotterKind::Overlayfs, None);
    assert_eq!(e.rung, Rung::Full);
    let out = sh(
        &e,
        "s1",
        "echo pid=$$; hostname; id; ls /proc | grep -c '^[0-9]'",
        |s| s.user = Some("app".into()),
    )
    .unwrap();
    assert_eq!(
        out[0], "pid=2",
        "pid 1 is kiln's init, the command is pid 2: {out:?}"
    );
    assert_eq!(out[1], "kiln-test");
    assert_eq!(
        out[2],
        "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)"
    );
    assert!(
        out[3].parse::<u32>().unwrap() <= 6,
        "fresh /proc shows only the sandbox: {out:?}"
    );
    let out = sh(
        &e,
        "s2",
        "cd; pwd; id -u; grep CapBnd /proc/self/status",
        |s| {
            s.user = Some("1000:2000".into());
            s.cwd = "/work/dir".into();
        },
    )
    .unwrap();
    assert_eq!(out[0], "/home");
    assert_eq!(out[1], "1000");
    assert_eq!(
        out[2], "CapBnd:\t00000000a80425fb",
        "Docker's default capabilities"
    );
    assert!(
        find(&changes(&e, "s2"), "work/dir").is_some(),
        "WORKDIR created in the layer"
    );
}

#[test]
fn overlay_changes_as_root() {
    multi_id_scenario(&env(SnapshotterKind::Overlayfs, None));
}

#[test]
fn native_changes_as_root() {
    multi_id_scenario(&env(SnapshotterKind::Native, None));
}

#[test]
fn fuse_overlay_changes_as_root() {
    multi_id_scenario(&env(SnapshotterKind::FuseOverlayfs, None));
}

#[test]
fn network_none_has_only_loopback() {
    let e = env(SnapshotterKind::Overlayfs, None);
    let out = sh(
        &e,
        "n",
        "tail -n +3 /proc/net/dev | cut -d: -f1; wc -l < /proc/net/route",
        |s| s.network = Network::None,
    )
    .unwrap();
    assert_eq!(
        out.iter().map(|l| l.trim()).collect::<Vec<_>>(),
        ["lo", "1"],
        "{out:?}"
    );
}

#[test]
fn failing_command_reports_code_and_tail() {
    let e = env(SnapshotterKind::Overlayfs, None);
    let err = sh(
        &e,
        "f",
        "for i in $(seq 1 30); do echo line$i; done; exit 3",
        |_| {},
    )
    .unwrap_err();
    match &err {
        ExecError::Failed { code: 3, tail } => {
            assert_eq!(tail.len(), 20);
            assert_eq!(tail.last().map(String::as_str), Some("line30"));
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string().starts_with("command exited with code 3"),
        "{err}"
    );
}

#[test]
fn memory_limit_kills_a_hog() {
    let e = env(SnapshotterKind::Overlayfs, None);
    let err = sh(
        &e,
        "m",
        "echo start; dd if=/dev/zero of=/dev/null bs=300M count=1 && echo survived",
        |s| s.resources.memory = Some(64 << 20),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ExecError::OutOfMemory { limit, .. } if limit == 64 << 20),
        "{msg}"
    );
    assert!(msg.contains("memory limit of 67108864 bytes"), "{msg}");
}

fn procs_with(marker: &str) -> Vec<String> {
    let mut v = Vec::new();
    for d in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(d.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).replace('\0', " ").trim_end() == marker {
                v.push(d.file_name().to_string_lossy().into_owned());
            }
        }
    }
    v
}

#[test]
fn cancel_leaves_no_process_and_no_mount() {
    let e = env(SnapshotterKind::Overlayfs, None);
    let mounts = prepare(&e, "c");
    let script = "sleep 1017 & sleep 1018 & echo started; wait";
    let spec = SandboxSpec::new(
        mounts,
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        e.rung,
    );
    let cancel = Cancel::new();
    let mut seen = Vec::new();
    let res = exec::run(&e.cfg, &spec, &cancel, &mut |l| {
        if l.0 == "started" {
            // The shell forks before the children exec sleep: give them a moment.
            for _ in 0..100 {
                seen = [procs_with("sleep 1017"), procs_with("sleep 1018")].concat();
                if seen.len() == 2 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            cancel.cancel();
        }
    });
    assert!(matches!(res, Err(ExecError::Cancelled)), "{res:?}");
    assert_eq!(seen.len(), 2, "both sleeps were running before the cancel");
    assert!(
        procs_with("sleep 1017").is_empty() && procs_with("sleep 1018").is_empty(),
        "a process outlived its step"
    );
    let upper = e.dir.path().join("c/fs");
    for pid in std::fs::read_dir("/proc").unwrap().flatten() {
        let mi = std::fs::read_to_string(pid.path().join("mountinfo")).unwrap_or_default();
        assert!(
            !mi.contains(upper.to_str().unwrap()),
            "a mount outlived its step: {mi}"
        );
    }
    assert!(!e
        .cfg
        .state_dir
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false));
}

#[test]
fn timeout_kills_the_step() {
    let e = env(SnapshotterKind::Overlayfs, None);
    let err = sh(&e, "t", "sleep 1019", |s| {
        s.timeout = Some(std::time::Duration::from_millis(500))
    })
    .unwrap_err();
    assert!(matches!(err, ExecError::Timeout(_)), "{err}");
    assert!(procs_with("sleep 1019").is_empty());
}

#[test]
fn secrets_and_cache_stay_out_of_the_layer() {
    let e = env(SnapshotterKind::Overlayfs, None);
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("tok"), "s3cret").unwrap();
    std::fs::create_dir(host.path().join("cache")).unwrap();
    let out = sh(&e, "sec", "cat /run/secrets/tok; echo; echo hi > /cache/y; echo no > /run/secrets/tok || echo ro; echo t > /tmpfs/z", |s| {
        s.mounts = vec![
            ExtraMount::Secret { source: host.path().join("tok"), target: "/run/secrets/tok".into(), mode: 0o400, uid: 0, gid: 0 },
            ExtraMount::Cache { source: host.path().join("cache"), target: "/cache".into() },
            ExtraMount::Tmpfs { target: "/tmpfs".into(), size: None },
        ]
    })
    .unwrap();
    assert_eq!(out.first().map(String::as_str), Some("s3cret"));
    assert_eq!(out.last().map(String::as_str), Some("ro"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("cache/y")).unwrap(),
        "hi\n"
    );
    let ch = changes(&e, "sec");
    assert!(ch.is_empty(), "mounts leaked into the layer: {ch:?}");
}

/// chown works on every rung; the single-uid rung records it instead of applying it, and shows
/// the recorded owner to stat.
fn chown_on_rung(e: &Env, rung: Rung) {
    let mounts = prepare(e, "r");
    let script = "id -u; touch /made; chown 5 /made 2>&1 || echo chown-refused; stat -c %u /made";
    let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let mut out = Vec::new();
    let outcome = exec::run(
        &e.cfg,
        &SandboxSpec::new(mounts, argv, rung),
        &Cancel::new(),
        &mut |l| out.push(l.0),
    )
    .unwrap_or_else(|err| panic!("{rung:?}: {err}"));
    assert_eq!(out[0], "0", "{rung:?}: {out:?}");
    assert!(
        !out.iter().any(|l| l == "chown-refused"),
        "{rung:?}: {out:?}"
    );
    let recorded = outcome.recorded_chowns;
    if rung == Rung::SingleUid {
        // Recorded, not applied, yet the step sees it: stat answers from the recorded owner.
        assert_eq!(out.last().map(String::as_str), Some("5"), "{out:?}");
        let made = exec::RecordedChown {
            path: "/made".into(),
            uid: Some(5),
            // busybox chown passes the owner it stat()ed for the id it keeps.
            gid: Some(0),
        };
        assert_eq!(recorded, [made]);
    } else {
        assert_eq!(
            out.last().map(String::as_str),
            Some("5"),
            "{rung:?}: {out:?}"
        );
        assert!(recorded.is_empty(), "{rung:?}: {recorded:?}");
    }
}

#[test]
fn each_rung_forced_works_as_root() {
    for rung in Rung::ALL {
        let e = env(SnapshotterKind::Overlayfs, Some(rung));
        assert_eq!(e.rung, rung);
        chown_on_rung(&e, rung);
    }
}

/// Re-runs `sandbox_exec::rootless_inner` of this test binary as `kilntest`.
#[test]
fn rootless_multi_id_as_kilntest() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "LOUD: this test must start as root to become kilntest"
    );
    support::ensure_kilntest();
    let me = std::env::current_exe().unwrap();
    let out = std::process::Command::new("runuser")
        .args(["-u", "kilntest", "--", "env", "KILN_TEST_ROOTLESS=1"])
        .arg(&me)
        .args([
            "--exact",
            "sandbox_exec::rootless_inner",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir("/tmp")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("ROOTLESS OK rung=Full"),
        "{text}"
    );
}

#[test]
#[ignore = "run as kilntest by rootless_multi_id_as_kilntest"]
fn rootless_inner() {
    if std::env::var_os("KILN_TEST_ROOTLESS").is_none() {
        return;
    }
    exec::maybe_reexec_into_userns().unwrap();
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "uid 0 inside kiln's user namespace"
    );
    let e = env(SnapshotterKind::Overlayfs, None);
    multi_id_scenario(&e);
    let e = env(SnapshotterKind::Native, None);
    multi_id_scenario(&e);
    for rung in Rung::ALL {
        let r = env(SnapshotterKind::Overlayfs, Some(rung));
        chown_on_rung(&r, rung);
    }
    println!("ROOTLESS OK rung={:?}", e.rung);
}

/// A chain deeper than one page of absolute `lowerdir=` paths (committed snapshots live side by
/// side, so the helper mounts them by relative name from their parent, as containerd does): every
/// layer is seen, the top-most first.
#[test]
fn a_chain_of_150_snapshots_mounts_in_one_overlay() {
    let e = env(SnapshotterKind::Overlayfs, None);
    let parent = e.dir.path().join("snapshots");
    let mut lowers = Vec::new();
    for i in 0..150 {
        let dir = parent.join(format!("{i:016x}"));
        std::fs::create_dir_all(dir.join("layers")).unwrap();
        std::fs::write(dir.join("layers").join(format!("n{i}")), "").unwrap();
        std::fs::write(dir.join("layers/top"), format!("{i}\n")).unwrap();
        lowers.push(dir);
    }
    lowers.reverse();
    let absolute: usize = lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(
        absolute > 4096,
        "the chain must not fit as absolute paths ({absolute} bytes)"
    );
    lowers.push(e.lower.clone());
    let a = e.snap.prepare(&lowers, &e.dir.path().join("deep")).unwrap();
    let mut spec = SandboxSpec::new(
        a.mounts(),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "ls /layers | grep -c '^n' && cat /layers/top /etc/motd".into(),
        ],
        e.rung,
    );
    spec.hostname = "kiln-test".into();
    let mut out = Vec::new();
    exec::run(&e.cfg, &spec, &Cancel::new(), &mut |l| out.push(l.0))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(out, ["150", "149", "hello"]);
}
