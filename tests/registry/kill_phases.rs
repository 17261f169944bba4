//! `kill -9` in every phase that moves data between a store and a registry: a pull of a
//! multi-layer image, a build exporting its cache (`--cache-to type=registry,mode=max`), a build
//! importing it into an empty store (`--cache-from type=registry`), and `kiln prune --all` on a
//! store full of records, snapshots and cache mounts. Each phase is killed `KILLS` times at points
//! spread over a measured uninterrupted run (kill i lands at (i + ½)/KILLS of it). After every
//! kill: no kiln process of that store left, no mount under it, `kiln fsck` clean, (for the export,
//! which pushes) every tag in the registry names only blobs the registry has, and the same command
//! then runs to success, after which the killed run's scratch is gone from `tmp/`. Each test prints
//! how far its killed runs got (blobs stored or pushed, snapshots left) and insists most were
//! killed before finishing.

use crate::support::registry as registry_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const KILLS: u32 = 10;

/// Three RUN layers of 3 MB of /dev/urandom each (incompressible) on a base pulled from `reg`.
fn layered_dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         RUN head -c 3000000 /dev/urandom > /l1\n\
         RUN head -c 3000000 /dev/urandom > /l2\n\
         RUN head -c 3000000 /dev/urandom > /l3\n"
    )
}

/// Push busybox to `reg` as `library/busybox:1`; returns that reference.
fn push_base(reg: &registry_support::Registry) -> String {
    let seeded = store_with_busybox();
    let base = format!("{}/library/busybox:1", reg.addr);
    kiln_ok(
        seeded.path(),
        &[
            "push",
            "busybox:latest",
            &base,
            "--insecure-registry",
            &reg.addr,
        ],
    );
    base
}

/// Run `kiln --root ROOT ARGS` to its end; insists on success; returns how long it took and its
/// output (stdout, then stderr).
fn timed(root: &Path, args: &[&str]) -> (Duration, String) {
    let t = Instant::now();
    let out = kiln(root, args);
    let took = t.elapsed();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln {args:?} failed:\n{text}");
    (took, text)
}

/// Kill points are spread over at most this much of a run: on a loaded machine (a CI run beside
/// this one) an uninterrupted run can take seconds, and every kill point before its end still
/// lands inside it; the cap keeps the file's time bounded.
const SPREAD_CAP: Duration = Duration::from_millis(1500);

/// When kill `i` of `KILLS` lands in a run that takes `full`.
fn kill_point(full: Duration, i: u32) -> Duration {
    full.min(SPREAD_CAP) * (2 * i + 1) / (2 * KILLS)
}

/// Start `kiln --root ROOT ARGS`, SIGKILL it after `after` unless it already ended; true when it
/// was killed before finishing. A run that ended by itself sooner lowers `full` to its time, so
/// the later kill points land inside runs even when `full` was measured on a busier machine.
fn kill_after(root: &Path, args: &[&str], after: Duration, full: &mut Duration) -> bool {
    let mut child = Command::new(kiln_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KILN_ROOT")
        .env_remove("KILN_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting kiln");
    let t = Instant::now();
    while t.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            *full = (*full).min(t.elapsed());
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    killed
}

/// What must hold after any kill: nothing of the store's left running (any process whose command
/// line names the store's root) or mounted, fsck clean.
fn nothing_left_and_fsck_clean(root: &Path, what: &str) {
    let marker = root.to_string_lossy().into_owned();
    let t = Instant::now();
    while !pids_of(&marker).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what}: processes of the killed kiln still run: {:?}",
            pids_of(&marker)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        mounts_under(root),
        Vec::<String>::new(),
        "{what}: mounts left under the store"
    );
    let out = kiln(root, &["fsck"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("no damage found"),
        "{what}: fsck after the kill:\n{text}"
    );
}

fn http_get(url: &str, accept: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Accept: {accept}"))
        .arg(url)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn blob_present(addr: &str, repo: &str, digest: &str) -> bool {
    let out = Command::new("curl")
        .args(["-s", "-I", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{addr}/v2/{repo}/blobs/{digest}"))
        .output()
        .expect("running curl");
    String::from_utf8_lossy(&out.stdout).trim() == "200"
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Check one manifest (and, for an index, each manifest it lists) names only present blobs;
/// returns how many blobs were checked.
fn manifest_whole(addr: &str, repo: &str, reference: &str, what: &str) -> usize {
    let (code, body) = http_get(
        &format!("http://{addr}/v2/{repo}/manifests/{reference}"),
        MANIFEST_TYPES,
    );
    assert_eq!(
        code, 200,
        "{what}: {repo}:{reference} is listed but: {body}"
    );
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut checked = 0;
    for child in m["manifests"].as_array().into_iter().flatten() {
        checked += manifest_whole(addr, repo, child["digest"].as_str().unwrap(), what);
    }
    let blobs = m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(m.get("config"));
    for b in blobs {
        let d = b["digest"].as_str().unwrap();
        assert!(
            blob_present(addr, repo, d),
            "{what}: {repo}:{reference} names blob {d}, which the registry lacks"
        );
        checked += 1;
    }
    checked
}

/// Every tag of every repository in the registry names only blobs it has; returns the number of
/// tags checked.
fn registry_whole(reg: &registry_support::Registry, what: &str) -> usize {
    let (code, body) = http_get(
        &format!("http://{}/v2/_catalog?n=1000", reg.addr),
        "application/json",
    );
    assert_eq!(code, 200, "{what}: catalog: {body}");
    let cat: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut tags_checked = 0;
    for repo in cat["repositories"].as_array().into_iter().flatten() {
        let repo = repo.as_str().unwrap();
        let (code, body) = http_get(
            &format!("http://{}/v2/{repo}/tags/list", reg.addr),
            "application/json",
        );
        // A repository holding only blobs (an export killed before its manifest) has no tags.
        if code == 404 && body.contains("NAME_UNKNOWN") {
            continue;
        }
        assert_eq!(code, 200, "{what}: tags of {repo}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for tag in v["tags"].as_array().into_iter().flatten() {
            manifest_whole(&reg.addr, repo, tag.as_str().unwrap(), what);
            tags_checked += 1;
        }
    }
    tags_checked
}

/// Entries of a directory, `*.lock` files aside (empty when it does not exist).
fn entries_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    v.sort();
    v
}

/// How many entries a directory holds: how far a killed run got.
fn entries(dir: &Path) -> usize {
    entries_of(dir).len()
}

/// After the run that follows a kill, the killed process's session (`tmp/session-*`, with its
/// half-written ingests and snapshots) is gone: the store swept it.
fn killed_session_swept(root: &Path, what: &str) {
    assert_eq!(
        entries_of(&root.join("tmp")),
        Vec::<String>::new(),
        "{what}: the killed run's scratch is left in tmp/"
    );
}

/// What a killed prune had begun, the next `prune --all` finished: no record names a snapshot or
/// a cache mount any more, and no directory is left under `snapshots/` or `cache/` but an orphan
/// no record names — a kill between a record's delete and its directory's rename away
/// (store/gc.rs `remove_record`), which GC's sweep removes once out of its grace period. Returns
/// how many such orphans there were.
fn prune_finished(root: &Path, what: &str) -> usize {
    let store = kiln::store::Store::open(root).unwrap();
    let named: Vec<_> = store
        .tracked_records()
        .unwrap()
        .into_iter()
        .filter_map(|r| r.tracked.dir)
        .collect();
    drop(store);
    assert_eq!(
        named,
        Vec::<std::path::PathBuf>::new(),
        "{what}: records left"
    );
    entries_of(&root.join("snapshots")).len() + entries_of(&root.join("cache")).len()
}

fn loud_if_too_few_killed(phase: &str, killed: u32) {
    eprintln!("{phase}: {killed}/{KILLS} runs killed before they finished");
    assert!(
        killed >= KILLS / 3,
        "LOUD: only {killed} of {KILLS} {phase} runs were killed before they finished; \
         the kill points missed the phase and the test proved little"
    );
}

#[test]
fn a_pull_killed_anywhere_leaves_a_clean_store_and_the_next_pull_succeeds() {
    require_tool("curl");
    let reg = registry_support::Registry::plain();
    let base = push_base(&reg);
    let seeded = store_with_busybox();
    let ctx = context(&[("Dockerfile", &layered_dockerfile(&base))]);
    let image = format!("{}/kp/layered:1", reg.addr);
    kiln_ok(
        seeded.path(),
        &[
            "build",
            "-t",
            &image,
            "--push",
            "--insecure-registry",
            &reg.addr,
            ctx.path().to_str().unwrap(),
        ],
    );
    let pull = ["pull", &image, "--insecure-registry", &reg.addr];
    let (mut full, _) = timed(tempfile::tempdir().unwrap().path(), &pull);
    let (mut killed, mut got) = (0, Vec::new());
    for i in 0..KILLS {
        let store = tempfile::tempdir().unwrap();
        let at = kill_point(full, i);
        let what = format!("pull killed after {at:?} (kill {i})");
        killed += kill_after(store.path(), &pull, at, &mut full) as u32;
        got.push((
            at.as_millis(),
            entries(&store.path().join("content/blobs/sha256")),
        ));
        nothing_left_and_fsck_clean(store.path(), &what);
        kiln_ok(store.path(), &pull);
        nothing_left_and_fsck_clean(store.path(), &what);
        killed_session_swept(store.path(), &what);
        let images = kiln_ok(store.path(), &["images"]);
        assert!(images.contains("kp/layered"), "{what}: {images}");
    }
    eprintln!("pull: shortest whole run {full:?}; (kill ms, blobs in the store): {got:?}");
    loud_if_too_few_killed("pull", killed);
}

#[test]
fn a_cache_export_killed_anywhere_leaves_no_manifest_naming_a_missing_blob() {
    require_tool("curl");
    let reg = registry_support::Registry::plain();
    let base = push_base(&reg);
    let store = tempfile::tempdir().unwrap();
    let ctx = context(&[("Dockerfile", &layered_dockerfile(&base))]);
    let ctx_path = ctx.path().to_str().unwrap();
    let insecure = ["--insecure-registry", reg.addr.as_str()];
    // Every step built and recorded locally: what the kills interrupt is the export.
    kiln_ok(
        store.path(),
        &[&["build", "-t", "kp:1"][..], &insecure, &[ctx_path]].concat(),
    );
    let export = |n: &str| format!("type=registry,ref={}/kc/cache{n}:main,mode=max", reg.addr);
    let args = |to: &str| -> Vec<String> {
        [
            "build",
            "--progress",
            "plain",
            "-t",
            "kp:1",
            "--cache-to",
            to,
        ]
        .iter()
        .chain(insecure.iter())
        .chain([&ctx_path])
        .map(|s| s.to_string())
        .collect()
    };
    let reference = args(&export("-reference"));
    let reference: Vec<&str> = reference.iter().map(String::as_str).collect();
    let (mut full, out) = timed(store.path(), &reference);
    assert!(out.contains("cache exported"), "{out}");
    let (mut killed, mut got) = (0, Vec::new());
    for i in 0..KILLS {
        // A fresh repository each time, so every export uploads its layers again.
        let a = args(&export(&i.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let at = kill_point(full, i);
        let what = format!("cache export killed after {at:?} (kill {i})");
        killed += kill_after(store.path(), &a, at, &mut full) as u32;
        got.push((
            at.as_millis(),
            entries(&reg.dir.path().join(format!(
                "data/docker/registry/v2/repositories/kc/cache{i}/_layers/sha256"
            ))),
        ));
        nothing_left_and_fsck_clean(store.path(), &what);
        registry_whole(&reg, &what);
        let (_, out) = timed(store.path(), &a);
        assert!(out.contains("cache exported"), "{what}: {out}");
        nothing_left_and_fsck_clean(store.path(), &what);
        killed_session_swept(store.path(), &what);
    }
    let tags = registry_whole(&reg, "after every kill");
    // base, reference cache, and one cache per kill, each exported whole by its rerun.
    assert_eq!(tags, 2 + KILLS as usize);
    eprintln!(
        "cache export: shortest whole run {full:?}; (kill ms, blobs in the cache repository): {got:?}"
    );
    loud_if_too_few_killed("cache export", killed);
}

#[test]
fn a_cache_import_killed_anywhere_leaves_a_clean_store_and_the_rerun_runs_nothing() {
    require_tool("curl");
    let reg = registry_support::Registry::plain();
    let base = push_base(&reg);
    let ctx = context(&[("Dockerfile", &layered_dockerfile(&base))]);
    let ctx_path = ctx.path().to_str().unwrap();
    let cache = format!("{}/kc/cache:main", reg.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let from = format!("type=registry,ref={cache}");
    let insecure = ["--insecure-registry", reg.addr.as_str()];
    let exporter = tempfile::tempdir().unwrap();
    kiln_ok(
        exporter.path(),
        &[&["build", "--cache-to", &to][..], &insecure, &[ctx_path]].concat(),
    );
    let import: Vec<&str> = [
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "kp:1",
            "--cache-from",
            &from,
        ][..],
        &insecure,
        &[ctx_path],
    ]
    .concat();
    let ran_nothing = |out: &str, what: &str| {
        let steps = step_outcomes(out);
        assert!(
            steps.len() == 3 && steps.iter().all(|(_, cached)| *cached),
            "{what}: every step comes from the imported cache:\n{out}"
        );
    };
    // The image digest: the first line of stdout.
    let digest = |out: &str| out.lines().next().unwrap_or_default().to_string();
    let (mut full, out) = timed(tempfile::tempdir().unwrap().path(), &import);
    ran_nothing(&out, "uninterrupted import");
    let want = digest(&out);
    assert!(want.starts_with("sha256:"), "{out}");
    let (mut killed, mut got) = (0, Vec::new());
    for i in 0..KILLS {
        let store = tempfile::tempdir().unwrap();
        let at = kill_point(full, i);
        let what = format!("cache import killed after {at:?} (kill {i})");
        killed += kill_after(store.path(), &import, at, &mut full) as u32;
        got.push((
            at.as_millis(),
            entries(&store.path().join("content/blobs/sha256")),
        ));
        nothing_left_and_fsck_clean(store.path(), &what);
        let (_, out) = timed(store.path(), &import);
        ran_nothing(&out, &what);
        assert_eq!(
            digest(&out),
            want,
            "{what}: another image from the same cache"
        );
        nothing_left_and_fsck_clean(store.path(), &what);
        killed_session_swept(store.path(), &what);
    }
    eprintln!("cache import: shortest whole run {full:?}; (kill ms, blobs in the store): {got:?}");
    loud_if_too_few_killed("cache import", killed);
}

/// Records, committed snapshots (one of many files), and a cache mount of many files: enough
/// for `prune --all` to take a while removing them.
const PRUNABLE: &str = "FROM busybox\n\
    RUN --mount=type=cache,target=/cache mkdir -p /cache/d && cd /cache/d && \
        i=0; while [ $i -lt 500 ]; do echo $i > c$i; i=$((i+1)); done\n\
    RUN mkdir /many && cd /many && i=0; while [ $i -lt 500 ]; do echo $i > m$i; i=$((i+1)); done\n\
    RUN echo kill-phases > /x\n";

#[test]
fn a_prune_killed_anywhere_leaves_a_clean_store_and_the_next_prune_succeeds() {
    let store = store_with_busybox();
    let ctx = context(&[("Dockerfile", PRUNABLE)]);
    let build = ["build", "--no-cache", ctx.path().to_str().unwrap()];
    let prune = ["prune", "--all"];
    let fill = |what: &str| {
        kiln_ok(store.path(), &build);
        assert!(
            entries(&store.path().join("snapshots")) >= 3
                && entries(&store.path().join("cache")) >= 1,
            "{what}: the build committed no snapshots or no cache mount"
        );
    };
    fill("reference");
    let (mut full, out) = timed(store.path(), &prune);
    assert!(
        out.contains("removed regular snapshot") && out.contains("exec.cachemount"),
        "the uninterrupted prune removes snapshots and the cache mount:\n{out}"
    );
    let (mut killed, mut got, mut orphans) = (0, Vec::new(), 0);
    for i in 0..KILLS {
        let at = kill_point(full, i);
        let what = format!("prune --all killed after {at:?} (kill {i})");
        fill(&what);
        killed += kill_after(store.path(), &prune, at, &mut full) as u32;
        got.push((
            at.as_millis(),
            entries(&store.path().join("snapshots")),
            entries(&store.path().join("cache")),
        ));
        nothing_left_and_fsck_clean(store.path(), &what);
        kiln_ok(store.path(), &prune);
        nothing_left_and_fsck_clean(store.path(), &what);
        killed_session_swept(store.path(), &what);
        orphans += prune_finished(store.path(), &what);
        let images = kiln_ok(store.path(), &["images"]);
        assert!(images.contains("busybox"), "{what}: {images}");
    }
    eprintln!("prune --all: shortest whole run {full:?}; (kill ms, snapshots left, cache mounts left): {got:?}; \
         orphaned directories seen after the next prune, summed over kills: {orphans}");
    loud_if_too_few_killed("prune --all", killed);
    // The store still builds.
    fill("after the kills");
}
