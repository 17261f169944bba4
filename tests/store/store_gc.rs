//! Garbage collection as a user meets it: real builds with the real `kiln` binary fill a store,
//! `kiln prune` (buildx prune's flags) or the daemon's configured policy collects it, and the test
//! checks exactly what remains — which tags' blobs, which step-cache records, which cache mounts —
//! plus that a running build's lease protects what it uses and that `kiln info` adds up like `du`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use kiln::digest::Digest;
use kiln::store::{Store, TrackedRecord};
use serde_json::{json, Value};

/// Incompressible bytes (xorshift), so a layer's size is about its content's.
fn noise(n: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect()
}

/// Build `ctx` (tagged when `tag` is given); the manifest digest kiln prints.
fn build(root: &Path, ctx: &Path, tag: Option<&str>) -> String {
    let mut args = vec!["build", "--progress", "plain"];
    if let Some(t) = tag {
        args.extend(["-t", t]);
    }
    args.push(ctx.to_str().unwrap());
    kiln_ok(root, &args).trim().to_string()
}

/// The tracked records (read with the store library; reading stamps nothing).
fn records(root: &Path) -> Vec<TrackedRecord> {
    Store::open(root).unwrap().tracked_records().unwrap()
}

/// Step-cache and cache-mount records of `kind` (committed snapshots, also `regular`, apart).
fn kinds(root: &Path, kind: &str) -> Vec<TrackedRecord> {
    records(root)
        .into_iter()
        .filter(|r| r.tracked.kind == kind && r.namespace != "snapshot")
        .collect()
}

fn blob(root: &Path, d: &str) -> PathBuf {
    root.join("content/blobs/sha256")
        .join(d.trim_start_matches("sha256:"))
}

fn read_json(root: &Path, d: &str) -> Value {
    serde_json::from_slice(&std::fs::read(blob(root, d)).unwrap()).unwrap()
}

/// A manifest's layer digests, read from the blob file itself (no stamping).
fn layers(root: &Path, manifest: &str) -> Vec<String> {
    read_json(root, manifest)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The record that keeps `layer`, if any.
fn record_of(root: &Path, layer: &str) -> Option<TrackedRecord> {
    let d: Digest = layer.parse().unwrap();
    records(root)
        .into_iter()
        .find(|r| r.tracked.blobs.contains(&d))
}

fn cache_dir(root: &Path, id: &str) -> PathBuf {
    root.join("cache").join(Digest::of(id.as_bytes()).hex())
}

fn fsck_clean(root: &Path) {
    let out = kiln_ok(root, &["fsck"]);
    assert!(out.contains("no damage found"), "{out}");
}

/// Every blob a tag reaches: (digest, size), from index.json and the JSON blobs.
fn tagged_blobs(root: &Path) -> BTreeSet<(String, u64)> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(root.join("content/index.json")).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    for m in index["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        out.insert((d.to_string(), m["size"].as_u64().unwrap()));
        let man = read_json(root, d);
        for c in std::iter::once(&man["config"]).chain(man["layers"].as_array().unwrap()) {
            out.insert((
                c["digest"].as_str().unwrap().to_string(),
                c["size"].as_u64().unwrap(),
            ));
        }
    }
    out
}

const CACHE_DOCKERFILE: &str = "FROM busybox\nCOPY a /a\n\
RUN --mount=type=cache,target=/c,id=cm1 echo cached > /c/f && echo y > /y\n";

#[test]
fn plain_prune_keeps_what_tags_share_and_all_drops_records_but_never_tagged_blobs() {
    let root = store_with_busybox();
    let r = root.path();
    let a = context(&[("Dockerfile", CACHE_DOCKERFILE), ("a", "aaa")]);
    let ma = build(r, a.path(), Some("a:1"));
    let b = context(&[("Dockerfile", "FROM busybox\nCOPY b /b\n"), ("b", "bbb")]);
    let mb = build(r, b.path(), None);
    let a_layers = layers(r, &ma);
    let b_layer = layers(r, &mb).last().unwrap().clone();
    assert!(
        record_of(r, &b_layer).is_some(),
        "the untagged build's COPY is cached"
    );
    assert!(cache_dir(r, "cm1").join("f").is_file());
    assert_eq!(kinds(r, "exec.cachemount").len(), 1);

    let out = kiln_ok(r, &["prune"]);
    assert!(
        out.contains("removed exec.cachemount cache mount cm1"),
        "{out}"
    );
    // The untagged image and its cached layer are gone, with the cache mount.
    assert!(
        !blob(r, &mb).exists() && !blob(r, &b_layer).exists(),
        "{out}"
    );
    assert!(record_of(r, &b_layer).is_none());
    assert!(!cache_dir(r, "cm1").exists());
    assert!(kinds(r, "exec.cachemount").is_empty());
    // a:1 is whole and its steps stay cached: a tag shares their layers.
    for l in &a_layers {
        assert!(blob(r, l).exists(), "tagged layer {l} removed: {out}");
    }
    for l in &a_layers[a_layers.len() - 2..] {
        assert!(record_of(r, l).is_some(), "shared record of {l} removed");
    }
    fsck_clean(r);

    // --all: the shared records go too, the tagged blobs stay.
    let out = kiln_ok(r, &["prune", "--all"]);
    assert!(out.contains("2 record(s)"), "{out}");
    assert!(kinds(r, "regular").is_empty(), "{:?}", records(r));
    for l in &a_layers {
        assert!(blob(r, l).exists(), "--all removed tagged layer {l}");
    }
    assert!(blob(r, &ma).exists());
    fsck_clean(r);
    let err = kiln(
        r,
        &["build", "--progress", "plain", a.path().to_str().unwrap()],
    );
    assert!(!String::from_utf8_lossy(&err.stderr).contains("CACHED"));
}

#[test]
fn until_keeps_what_was_used_recently_and_filters_pick_the_type() {
    let root = store_with_busybox();
    let r = root.path();
    let old = context(&[("Dockerfile", "FROM busybox\nCOPY o /o\n"), ("o", "old")]);
    let m_old = build(r, old.path(), None);
    // Margins wide enough for a loaded CI machine: "old" is 6 s old, "recent" under 4 s.
    std::thread::sleep(Duration::from_secs(6));
    let new = context(&[("Dockerfile", CACHE_DOCKERFILE), ("a", "new")]);
    let m_new = build(r, new.path(), None);
    let old_layer = layers(r, &m_old).last().unwrap().clone();
    let new_layers: Vec<String> = layers(r, &m_new).into_iter().skip(1).collect();

    // A filter picks one type: only the cache mount goes.
    let out = kiln_ok(r, &["prune", "--filter", "type==exec.cachemount"]);
    assert!(out.contains("1 record(s)"), "{out}");
    assert!(!cache_dir(r, "cm1").exists());
    assert_eq!(kinds(r, "regular").len(), 3, "{out}");

    // until=4s: the old build's record (used 6 s ago) goes, the new ones stay.
    let out = kiln_ok(r, &["prune", "--filter", "until=4s"]);
    assert!(record_of(r, &old_layer).is_none(), "{out}");
    assert!(!blob(r, &old_layer).exists());
    for l in &new_layers {
        assert!(record_of(r, l).is_some(), "recent {l} removed: {out}");
        assert!(blob(r, l).exists());
    }
    // A use is a use: a cache hit now keeps the record through until=4s after it would expire.
    std::thread::sleep(Duration::from_secs(6));
    build(r, new.path(), None);
    let out = kiln_ok(r, &["prune", "--filter", "until=4s"]);
    for l in &new_layers {
        assert!(record_of(r, l).is_some(), "{l} was just used: {out}");
    }
    // Mistakes name the filter.
    let e = kiln_err(r, &["prune", "--filter", "type==snapshot"]);
    assert!(
        e.contains("\"type==snapshot\"") && e.contains("unknown type"),
        "{e}"
    );
    let e = kiln_err(r, &["prune", "--filter", "until=soon"]);
    assert!(e.contains("until=soon"), "{e}");
    fsck_clean(r);
}

#[test]
fn keep_storage_removes_least_recently_used_first_until_under_it() {
    let root = store_with_busybox();
    let r = root.path();
    let mut layer = Vec::new();
    let mut ctxs = Vec::new();
    for (i, n) in [50_000, 60_000, 70_000].into_iter().enumerate() {
        let f = format!("f{i}");
        let ctx = context(&[
            ("Dockerfile", &format!("FROM busybox\nCOPY {f} /{f}\n")),
            (&f, &noise(n, i as u64 + 1)),
        ]);
        let m = build(r, ctx.path(), None);
        layer.push(layers(r, &m).last().unwrap().clone());
        ctxs.push(ctx);
    }
    // The first is used again (a cache hit): now the second is the least recently used.
    let again = kiln_ok(
        r,
        &[
            "build",
            "--progress",
            "plain",
            ctxs[0].path().to_str().unwrap(),
        ],
    );
    assert!(!again.is_empty());
    let size = |l: &String| std::fs::metadata(blob(r, l)).unwrap().len();
    // Committed snapshots count against the cap too; the base's was used by the third build,
    // after the second layer's last use.
    let keep = size(&layer[0]) + size(&layer[2]) + du(&r.join("snapshots")) + 1;
    let out = kiln_ok(r, &["prune", "--keep-storage", &keep.to_string()]);
    assert!(!blob(r, &layer[1]).exists(), "the LRU layer stays: {out}");
    assert!(record_of(r, &layer[1]).is_none());
    for l in [&layer[0], &layer[2]] {
        assert!(
            blob(r, l).exists(),
            "{l} removed although under the cap: {out}"
        );
        assert!(record_of(r, l).is_some());
    }
    // Under the cap already: nothing more goes.
    let out = kiln_ok(r, &["prune", "--keep-storage", &keep.to_string()]);
    assert!(out.contains("0 record(s)"), "{out}");
    fsck_clean(r);
}

fn leases(root: &Path) -> i64 {
    let c = rusqlite::Connection::open(root.join("kiln.db")).unwrap();
    c.query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_running_builds_lease_protects_its_blobs_from_a_concurrent_prune_all() {
    let d = Daemon::start(&[]);
    let payload = noise(100_000, 7);
    d.context(
        "slow",
        &[
            (
                "Dockerfile",
                "FROM busybox:latest\nCOPY payload /payload\nRUN sleep 3.217 && echo slept > /s\n",
            ),
            ("payload", &payload),
        ],
    );
    let (status, v) = d.post_json(
        "/v1/builds",
        r#"{"context":"slow","name":"slow","tag":"1"}"#,
    );
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    while pids_of("sleep 3.217").is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", d.log_text(&id));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(leases(&d.root()), 1, "the build holds a lease");
    // The COPY layer is committed and cached, but no tag reaches it yet.
    let copy_layer = records(&d.root())
        .into_iter()
        .filter(|r| r.tracked.kind == "regular")
        .flat_map(|r| r.tracked.blobs)
        .next()
        .expect("the COPY step's record");
    let out = kiln_ok(&d.root(), &["prune", "--all"]);
    assert!(
        d.root()
            .join("content/blobs/sha256")
            .join(copy_layer.hex())
            .exists(),
        "prune removed a layer the running build made: {out}"
    );
    assert!(out.contains("0 record(s)"), "{out}");
    let events = d.events(&id);
    assert_eq!(events.last().unwrap()["type"], "succeeded", "{events:?}");
    assert_eq!(leases(&d.root()), 0, "the lease ends with the build");
    fsck_clean(&d.root());
    // Now nothing protects the records: --all takes them, the tag keeps the blobs.
    let out = kiln_ok(&d.root(), &["prune", "--all"]);
    assert!(out.contains("2 record(s)"), "{out}");
    fsck_clean(&d.root());
}

fn info_bytes(info: &str, prefix: &str) -> (u64, u64) {
    let line = info
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix) && l.contains(" bytes"))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{info}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

fn du(path: &Path) -> u64 {
    if !path.exists() {
        return 0;
    }
    let out = Command::new("du").arg("-sb").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn info_usage_adds_up_like_du() {
    let root = store_with_busybox();
    let r = root.path();
    let a = context(&[("Dockerfile", CACHE_DOCKERFILE), ("a", &noise(30_000, 3))]);
    build(r, a.path(), Some("a:1"));
    let b = context(&[
        ("Dockerfile", "FROM busybox\nCOPY b /b\n"),
        ("b", &noise(40_000, 4)),
    ]);
    let mb = build(r, b.path(), None);
    let b_layer = layers(r, &mb).last().unwrap().clone();
    let info = kiln_ok(r, &["info"]);

    let tagged = tagged_blobs(r);
    let images: u64 = tagged.iter().map(|(_, s)| s).sum();
    assert_eq!(info_bytes(&info, "images:"), (images, 2), "{info}");
    // The build cache no tag shares: the untagged COPY layer.
    let b_size = std::fs::metadata(blob(r, &b_layer)).unwrap().len();
    let regular = kinds(r, "regular").len() as u64;
    assert_eq!(
        info_bytes(&info, "build cache (regular):"),
        (b_size, regular),
        "{info}"
    );
    assert_eq!(
        info_bytes(&info, "cache mounts (exec.cachemount):"),
        (du(&cache_dir(r, "cm1")), 1),
        "{info}"
    );
    // The untagged image's manifest and config.
    let man = read_json(r, &mb);
    let unref =
        std::fs::metadata(blob(r, &mb)).unwrap().len() + man["config"]["size"].as_u64().unwrap();
    assert_eq!(
        info_bytes(&info, "unreferenced blobs:"),
        (unref, 2),
        "{info}"
    );
    // Committed snapshots on their own line: the base's and each RUN's, as du counts them.
    let snaps: Vec<TrackedRecord> = records(r)
        .into_iter()
        .filter(|x| x.namespace == "snapshot")
        .collect();
    let snap_bytes: u64 = snaps
        .iter()
        .map(|x| du(&r.join(x.tracked.dir.as_ref().unwrap())))
        .sum();
    assert!(!snaps.is_empty());
    assert_eq!(
        info_bytes(&info, "snapshots (unpacked layers):"),
        (snap_bytes, snaps.len() as u64),
        "{info}"
    );
    let ws = info_bytes(&info, "workspaces (builds/):").0;
    assert_eq!(ws, du(&r.join("builds")), "{info}");
    // Together they are every blob.
    let all_blobs =
        du(&r.join("content/blobs/sha256")) - du_dir_only(&r.join("content/blobs/sha256"));
    assert_eq!(images + b_size + unref, all_blobs, "{info}");
    assert!(info.contains("last gc: never"), "{info}");
    let out = kiln_ok(r, &["prune"]);
    let info = kiln_ok(r, &["info"]);
    let freed: u64 = out
        .lines()
        .last()
        .unwrap()
        .split("freed ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        info.contains(&format!("(prune): freed {freed} bytes")),
        "{info}\n{out}"
    );
    assert_eq!(info_bytes(&info, "unreferenced blobs:"), (0, 0), "{info}");
}

/// The size `du -sb` gives a directory itself.
fn du_dir_only(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().size()
}

/// Wait until `/v1/info`'s last GC was triggered by `trigger`; returns it.
fn wait_gc(d: &Daemon, trigger: &str) -> Value {
    let t = Instant::now();
    loop {
        let (_, info) = d.get("/v1/info");
        if info["last_gc"]["trigger"] == trigger {
            return info;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no {trigger} GC: {info}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_daemon_collects_after_a_build_with_its_configured_policy() {
    let cfg = tempfile::tempdir().unwrap();
    let toml = cfg.path().join("kiln.toml");
    // Tiny: at most 1 byte of build cache, least recently used first; tags keep their own.
    std::fs::write(
        &toml,
        "[worker.oci]\ngc = true\n[[worker.oci.gcpolicy]]\nmaxUsedSpace = 1\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", toml.to_str().unwrap()]);
    wait_gc(&d, "timer");
    // Leftovers of an untagged CLI build on the daemon's store.
    let left = context(&[
        ("Dockerfile", "FROM busybox\nCOPY l /l\n"),
        ("l", &noise(20_000, 9)),
    ]);
    let ml = build(&d.root(), left.path(), None);
    let left_layer = layers(&d.root(), &ml).last().unwrap().clone();
    assert!(record_of(&d.root(), &left_layer).is_some());

    d.context(
        "app",
        &[
            ("Dockerfile", "FROM busybox:latest\nCOPY f /f\n"),
            ("f", "payload"),
        ],
    );
    let (status, v) = d.post_json(
        "/v1/builds",
        &json!({"context": "app", "name": "app", "tag": "1"}).to_string(),
    );
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let events = d.events(&id);
    assert_eq!(events.last().unwrap()["type"], "succeeded", "{events:?}");
    let manifest = events.last().unwrap()["manifest"]
        .as_str()
        .unwrap()
        .to_string();

    let info = wait_gc(&d, "after-build");
    assert!(info["last_gc"]["records"].as_u64().unwrap() >= 1, "{info}");
    assert!(!blob(&d.root(), &left_layer).exists(), "{info}");
    assert!(!blob(&d.root(), &ml).exists());
    assert!(record_of(&d.root(), &left_layer).is_none());
    // The new image is whole, and its step stays cached (its layer is shared with the tag).
    let app_layer = layers(&d.root(), &manifest).last().unwrap().clone();
    assert!(record_of(&d.root(), &app_layer).is_some());
    fsck_clean(&d.root());
    // /v1/info's usage: images as the tags reach them, no unshared build cache left.
    let (_, info) = d.get("/v1/info");
    let images: u64 = tagged_blobs(&d.root()).iter().map(|(_, s)| s).sum();
    assert_eq!(info["usage"]["images"]["bytes"], images, "{info}");
    assert_eq!(info["usage"]["images"]["items"], 2, "{info}");
    assert_eq!(info["usage"]["build_cache"]["bytes"], 0, "{info}");
    assert_eq!(info["usage"]["unreferenced_blobs"]["bytes"], 0, "{info}");
    let log = std::fs::read_to_string(d.root().parent().unwrap().join("daemon.log")).unwrap();
    assert!(
        log.contains("gc.finished") && log.contains("after-build"),
        "{log}"
    );
    // POST /v1/prune takes buildx's fields.
    let (s, v) = d.post_json("/v1/prune", r#"{"all": true, "keep_storage": "1g"}"#);
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.post_json("/v1/prune", r#"{"filters": ["type==nope"]}"#);
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("type==nope"), "{v}");
    let (s, v) = d.post_json("/v1/prune", r#"{"all": true}"#);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"].as_array().unwrap().len(), 1, "{v}");
    fsck_clean(&d.root());
}

#[test]
fn a_crashed_daemons_lease_is_cleared_when_it_starts_again() {
    let mut d = Daemon::start(&[]);
    d.context(
        "slow",
        &[
            (
                "Dockerfile",
                "FROM busybox:latest\nCOPY p /p\nRUN sleep 1019\n",
            ),
            ("p", "payload"),
        ],
    );
    let (_, v) = d.post_json("/v1/builds", r#"{"context":"slow"}"#);
    let id = v["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    while pids_of("sleep 1019").is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "{}", d.log_text(&id));
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill9();
    for pid in pids_of("sleep 1019") {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert_eq!(leases(&d.root()), 1, "a crash leaves its lease behind");
    d.restart();
    // The socket listens before the daemon has started up; its first answer comes after.
    let (s, _) = d.get("/v1/info");
    assert_eq!(s, 200);
    assert_eq!(leases(&d.root()), 0, "cleared at start-up");
    // With the lease gone, the interrupted build's COPY record is ordinary garbage.
    let out = kiln_ok(&d.root(), &["prune"]);
    assert!(out.contains("1 record(s)"), "{out}");
    fsck_clean(&d.root());
}
