//! kiln run the way a restricted pod runs it (issue 23). The pod is podman (runc, cgroupfs) with
//! the security context of Kubernetes' "restricted" standard as podman spells it — `--user
//! 1000:1000 --cap-drop=ALL --security-opt no-new-privileges` and a seccomp profile — over
//! kiln's own sidecar image: deploy/Dockerfile built by kiln here (scripts/build-image.sh, twice:
//! the same digest) on an mmdebstrap Debian base and unpacked with umoci, the test's kiln bound
//! over the image's. The image's root stays read-only; each test binds its own store.
//!
//! - the shipped profile deploy/seccomp/kiln.json: the ladder steps down to single-uid (set-uid
//!   newuidmap is useless under no_new_privs) and `apt-get install jq` + `useradd -m app` +
//!   `USER app` + a RUN making files as app gives the root build's file tree, owners included;
//! - podman's default profile: builds, with one warning naming sethostname and kiln.json; a
//!   containerd-like profile refusing unshare: COPY-only builds, RUN fails at once with one
//!   message naming unshare(CLONE_NEWUSER) and the profile;
//! - a user-namespaced pod (root in a user namespace, `hostUsers: false`; podman `--uidmap` as
//!   the stand-in: Debian 12's podman 4.3 refuses `--userns=auto` over a `--rootfs` even with a
//!   `containers` range in /etc/subuid — runc: "User namespaces enabled, but no uid mappings
//!   found"): real ids without subordinate ranges; without capabilities it says why not.
//!
//! Where podman cannot start a container, each test says so loudly and skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::support::*;

const APT_USERADD: &str = "FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends jq
RUN useradd -m app
USER app
RUN mkdir /home/app/d && echo hi > /home/app/d/f && ln -s f /home/app/d/l
";

/// Files whose content records when or in which order things ran, on any two builds.
const VOLATILE: [&str; 9] = [
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/cache/ldconfig/aux-cache",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/cache/debconf/templates.dat",
];

struct Fixture {
    /// The mmdebstrap layout (`debian:bookworm`), world-readable.
    debian: PathBuf,
    /// The sidecar image's root filesystem, unpacked by umoci.
    rootfs: PathBuf,
    /// Its manifest digest.
    image: String,
    /// Why podman cannot run here (the tests skip).
    skip: Option<String>,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A store on the host with the Debian base imported as `debian:bookworm`.
fn host_store(debian: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    kiln_ok(
        root.path(),
        &[
            "import",
            &format!("{}:bookworm", debian.display()),
            "--tag",
            "debian:bookworm",
        ],
    );
    root
}

/// scripts/build-image.sh with a placeholder binary (the tests bind the real one over it).
fn build_sidecar(debian: &Path, dest: &Path, extra: &[&str]) -> String {
    let store = host_store(debian);
    let dir = tempfile::tempdir().unwrap();
    let placeholder = dir.path().join("kiln");
    std::fs::write(&placeholder, "#!/bin/sh\necho placeholder\n").unwrap();
    run(Command::new("chmod").arg("755").arg(&placeholder));
    let out = run(Command::new("bash")
        .arg(manifest_dir().join("scripts/build-image.sh"))
        .arg(&placeholder)
        .arg(format!("type=oci,dest={}", dest.display()))
        .arg("--root")
        .arg(store.path())
        .args(extra)
        .env("KILN", kiln_bin())
        .env("TAG", "kiln:test")
        .env("SOURCE_DATE_EPOCH", "0"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        require_tool("podman");
        require_tool("umoci");
        require_tool("mmdebstrap");
        remove_stale_fixtures();
        let dir = PathBuf::from(format!("/tmp/kiln-test-pod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let debian = dir.join("debian");
        run(Command::new("bash")
            .arg(manifest_dir().join("testdata/packages/make-debian-image.sh"))
            .arg(&debian)
            .arg("bookworm"));
        run(Command::new("chmod").args(["-R", "a+rX"]).arg(&dir));
        let image = build_sidecar(&debian, &dir.join("image"), &[]);
        run(Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:test", dir.join("image").display()))
            .arg(dir.join("bundle")));
        // umoci makes the bundle 0700: a pod's root mapped to another host uid must get through.
        run(Command::new("chmod").arg("755").arg(dir.join("bundle")));
        let rootfs = dir.join("bundle/rootfs");
        // The tests' mount points, made now: a pod's root in a user namespace cannot make them.
        for d in ["work", "debian"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let probe = podman(&rootfs, &[], &["true"]);
        let skip = (!probe.status.success()).then(|| {
            format!(
                "podman cannot run a container here: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            )
        });
        Fixture {
            debian,
            rootfs,
            image,
            skip,
        }
    })
}

/// The fixture outlives its test binary (a static is never dropped): each run removes those of
/// runs that have ended (~330 MB each).
fn remove_stale_fixtures() {
    for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("kiln-test-pod-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The fixture, or None after saying loudly why these tests cannot run here.
fn ready() -> Option<&'static Fixture> {
    let f = fixture();
    match &f.skip {
        Some(why) => {
            eprintln!("LOUD: SKIPPED: {why}");
            None
        }
        None => Some(f),
    }
}

/// The limits this process may give (raising one needs CAP_SYS_RESOURCE, which a test machine
/// inside a container may lack; podman's defaults raise them).
fn ulimits() -> Vec<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = |name: &str| -> Option<String> {
        let l = limits.lines().find(|l| l.starts_with(name))?;
        l[name.len()..]
            .split_whitespace()
            .nth(1)
            .map(str::to_string)
    };
    let mut v = Vec::new();
    if let Some(n) = hard("Max open files").filter(|n| n != "unlimited") {
        v.push(format!("--ulimit=nofile={n}:{n}"));
    }
    v.push("--ulimit=nproc=4096:4096".into());
    v
}

/// `podman run` over the sidecar's root (read-only) with `opts`, running `args`.
fn podman(rootfs: &Path, opts: &[&str], args: &[&str]) -> Output {
    Command::new("podman")
        .args(["--cgroup-manager=cgroupfs", "run", "--rm", "--read-only"])
        .args(["--network=host", "--log-driver=none"])
        .args(ulimits())
        .arg("-v")
        .arg(format!("{}:/usr/local/bin/kiln:ro", kiln_bin().display()))
        .args(opts)
        .arg("--rootfs")
        .arg(rootfs)
        .args(args)
        .output()
        .expect("running podman")
}

/// A world-writable scratch directory bound at /work (the store, contexts, outputs).
fn work_dir(owner: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("kiln-pod-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{owner}:{owner}"))
        .arg(dir.path()));
    run(Command::new("chmod").arg("777").arg(dir.path()));
    dir
}

fn write_context(work: &Path, name: &str, dockerfile: &str) {
    let ctx = work.join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from the context\n").unwrap();
    run(Command::new("chmod").args(["-R", "a+rwX"]).arg(&ctx));
}

/// A shell script run inside the pod as its user: kiln with the store in /work/store.
fn in_pod(f: &Fixture, work: &Path, opts: &[&str], script: &str) -> Output {
    let mut all = vec![
        "-v".to_string(),
        format!("{}:/work", work.display()),
        "-v".to_string(),
        format!("{}:/debian:ro", f.debian.display()),
        "-e".to_string(),
        "KILN_ROOT=/work/store".to_string(),
    ];
    all.extend(opts.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let script =
        format!("set -e\nkiln import /debian:bookworm --tag debian:bookworm >/dev/null\n{script}");
    podman(&f.rootfs, &all, &["sh", "-c", &script])
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const RESTRICTED: [&str; 5] = [
    "--user=1000:1000",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--tmpfs=/tmp",
    "--tmpfs=/home/kiln",
];

fn profile() -> String {
    format!(
        "--security-opt=seccomp={}",
        manifest_dir().join("deploy/seccomp/kiln.json").display()
    )
}

#[test]
fn sidecar_image_is_built_by_kiln_reproducibly() {
    let Some(f) = ready() else { return };
    // Another store, no cache: the same Dockerfile, base and SOURCE_DATE_EPOCH, the same image.
    let dir = tempfile::tempdir().unwrap();
    let again = build_sidecar(&f.debian, &dir.path().join("image"), &["--no-cache"]);
    assert_eq!(again, f.image);
    let img = layout_image(&dir.path().join("image"), "test");
    assert_eq!(img.config["config"]["User"], "kiln");
    let files = all_entries(&img);
    for tool in [
        "usr/bin/newuidmap",
        "usr/bin/newgidmap",
        "usr/local/bin/kiln",
    ] {
        assert!(files.contains_key(tool), "{tool} missing");
    }
    assert!(files.contains_key("etc/ssl/certs/ca-certificates.crt"));
    let subuid = files["etc/subuid"].content.clone().unwrap();
    assert_eq!(String::from_utf8_lossy(&subuid), "kiln:100000:65536\n");
    assert_eq!(
        (files["var/lib/kiln"].uid, files["var/lib/kiln"].gid),
        (1000, 1000)
    );
}

#[test]
fn restricted_pod_builds_apt_and_useradd_like_root() {
    let Some(f) = ready() else { return };
    let work = work_dir(1000);
    write_context(work.path(), "ctx", APT_USERADD);
    let p = profile();
    let mut opts: Vec<&str> = RESTRICTED.to_vec();
    opts.push(&p);
    let out = in_pod(
        f,
        work.path(),
        &opts,
        "kiln info\nkiln build --progress plain -t app:1 --source-date-epoch 0 \
         -o type=oci,dest=/work/out /work/ctx",
    );
    let log = text(&out);
    assert!(out.status.success(), "the pod build failed:\n{log}");
    assert!(log.contains("sandbox: single-uid\n"), "{log}");
    assert!(
        log.contains("full unavailable: only one uid is mapped: newuidmap/newgidmap refused")
            && log.contains("no_new_privs is set"),
        "kiln info does not say why full is out:\n{log}"
    );
    assert!(log.contains("sandbox: single-uid rung"), "{log}");
    assert!(log.contains("  not full: only one uid is mapped"), "{log}");
    assert!(
        !log.contains("sethostname was refused"),
        "kiln.json allows it:\n{log}"
    );

    // The same build as root on the host.
    let store = host_store(&f.debian);
    let ctx = work.path().join("ctx");
    let (root_img, _) = build_to_layout(store.path(), &ctx, &["--source-date-epoch", "0"]);
    let pod_img = layout_image(&work.path().join("out"), "1");
    assert_eq!(pod_img.config["config"]["User"], "app");
    assert_eq!(pod_img.layers.len(), root_img.layers.len());
    for (i, (p, r)) in pod_img.layers.iter().zip(&root_img.layers).enumerate() {
        let (p, r) = (layer_entries(p), layer_entries(r));
        let paths =
            |m: &std::collections::BTreeMap<String, Entry>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(paths(&p), paths(&r), "layer {i}: different paths");
        for (path, pe) in &p {
            let re = &r[path];
            let meta = |e: &Entry| (e.kind, e.mode, e.uid, e.gid, e.link.clone());
            assert_eq!(meta(pe), meta(re), "layer {i}: {path}");
            if !VOLATILE.contains(&path.as_str()) {
                assert_eq!(pe.content, re.content, "layer {i}: content of {path}");
            }
        }
    }
    let useradd = layer_entries(&pod_img.layers[2]);
    let owner = |l: &std::collections::BTreeMap<String, Entry>, p: &str| (l[p].uid, l[p].gid);
    assert_eq!(owner(&useradd, "home/app"), (1000, 1000));
    assert_eq!(
        owner(&useradd, "etc/gshadow"),
        (0, 42),
        "shadow's group survives"
    );
    let last = layer_entries(pod_img.layers.last().unwrap());
    for made in ["home/app/d", "home/app/d/f", "home/app/d/l"] {
        assert_eq!(owner(&last, made), (1000, 1000), "{made}");
    }
    assert!(layer_entries(&pod_img.layers[1]).contains_key("usr/bin/jq"));
}

#[test]
fn default_profiles_build_without_run_and_name_what_is_missing() {
    let Some(f) = ready() else { return };
    let work = work_dir(1000);
    write_context(
        work.path(),
        "copy",
        "FROM debian:bookworm\nCOPY hello.txt /srv/\nENV A=b\nLABEL x=y\n",
    );
    write_context(
        work.path(),
        "run",
        "FROM debian:bookworm\nRUN echo ran-ok\n",
    );
    let build = "kiln build --progress plain -t c:1 -o type=oci,dest=/work/out-copy /work/copy\n\
                 kiln build --progress plain -t r:1 /work/run";

    // podman's own default profile: sethostname needs CAP_SYS_ADMIN there, and that is all.
    let out = in_pod(f, work.path(), &RESTRICTED, build);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("ran-ok"), "{log}");
    assert!(
        log.contains("sethostname was refused") && log.contains("deploy/seccomp/kiln.json"),
        "{log}"
    );
    let img = layout_image(&work.path().join("out-copy"), "1");
    let l = layer_entries(img.layers.last().unwrap());
    assert_eq!(
        l["srv/hello.txt"].content.as_deref(),
        Some(&b"hello from the context\n"[..])
    );

    // A containerd-like default: unshare refused without CAP_SYS_ADMIN.
    let base: serde_json::Value = read_json(Path::new("/usr/share/containers/seccomp.json"));
    let mut deny = base.clone();
    deny["syscalls"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}));
    for rule in deny["syscalls"].as_array_mut().unwrap().iter_mut() {
        if rule["action"] == "SCMP_ACT_ALLOW" {
            let names = rule["names"].as_array_mut().unwrap();
            names.retain(|n| n != "unshare");
        }
    }
    let deny_path = work.path().join("deny.json");
    std::fs::write(&deny_path, deny.to_string()).unwrap();
    let sec = format!("--security-opt=seccomp={}", deny_path.display());
    let mut opts = RESTRICTED.to_vec();
    opts.push(&sec);
    // A fresh store: a cached RUN needs no sandbox.
    let _ = std::fs::remove_dir_all(work.path().join("out-copy"));
    std::fs::remove_dir_all(work.path().join("store")).unwrap();
    std::fs::create_dir(work.path().join("store")).unwrap();
    run(Command::new("chown")
        .arg("1000:1000")
        .arg(work.path().join("store")));
    let out = in_pod(f, work.path(), &opts, build);
    let log = text(&out);
    assert!(!out.status.success(), "RUN cannot run here:\n{log}");
    assert!(
        work.path().join("out-copy/index.json").exists(),
        "the COPY-only build failed:\n{log}"
    );
    let err = log
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        err.contains(
            "no sandbox rung works here: creating a user namespace was refused: \
                      unshare(CLONE_NEWUSER)"
        ) && err.contains("deploy/seccomp/kiln.json"),
        "{err}"
    );
    assert_eq!(
        err.matches("unshare(CLONE_NEWUSER)").count(),
        1,
        "one reason, not one per rung: {err}"
    );
}

#[test]
fn user_namespaced_pod_uses_real_ids_without_subordinate_ranges() {
    let Some(f) = ready() else { return };
    // Root in the pod is host uid 300000.
    let work = work_dir(300000);
    write_context(
        work.path(),
        "ctx",
        "FROM debian:bookworm\nRUN touch /f && chown 1234:5678 /f && stat -c owner=%u:%g /f\n",
    );
    let userns = [
        "--uidmap=0:300000:65536",
        "--gidmap=0:300000:65536",
        "--user=0:0",
        "--tmpfs=/tmp",
    ];
    let p = profile();
    let mut opts = userns.to_vec();
    opts.push(&p);
    let script =
        "kiln info\nkiln build --progress plain -t u:1 -o type=oci,dest=/work/out /work/ctx";
    let out = in_pod(f, work.path(), &opts, script);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("(multi: 65536 id(s) mapped)"), "{log}");
    assert!(!log.contains("sandbox: single-uid"), "{log}");
    assert!(log.contains("owner=1234:5678"), "a real chown:\n{log}");
    let img = layout_image(&work.path().join("out"), "1");
    let l = layer_entries(img.layers.last().unwrap());
    assert_eq!((l["f"].uid, l["f"].gid), (1234, 5678));

    // Without capabilities root may not even map itself: it says so, and COPY still builds.
    let mut opts = userns.to_vec();
    opts.push("--cap-drop=ALL");
    opts.push(&p);
    let out = in_pod(f, work.path(), &opts, "kiln info");
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("sandbox: none works here"), "{log}");
    assert!(log.contains("CAP_SETFCAP"), "{log}");
}
