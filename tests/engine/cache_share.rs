//! Issue 13 part A, end to end: many builders, one cache. Builder A pushes its image and its step
//! cache; builders with empty stores (fresh CLI stores, or `kiln daemon`s) build the same
//! Dockerfile from that cache with no RUN run and no file copied, and get the same digest. Through
//! the real `kiln` binary against Debian's real `docker-registry`. Needs root (RUN steps, owners).

use crate::support::registry as registry_support;

use std::fs;
use std::path::Path;

use crate::support::*;
use serde_json::{json, Value};

/// Two stages; each RUN writes random bytes, so a RUN that ran again would change the digest.
const DOCKERFILE: &str = "FROM busybox AS deps\n\
COPY a.txt /a.txt\n\
RUN head -c 32 /dev/urandom | od -x > /rand-deps\n\
FROM busybox\n\
COPY --from=deps /rand-deps /rand-deps\n\
COPY b.txt /b.txt\n\
RUN head -c 32 /dev/urandom | od -x > /rand-final\n";

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "tests/engine/cache_share.rs needs root: RUN steps and cache-mount owners"
    );
}

fn ran(stderr: &str) -> Vec<usize> {
    step_outcomes(stderr)
        .into_iter()
        .filter(|s| !s.1)
        .map(|s| s.0)
        .collect()
}

fn build(root: &Path, args: &[&str], ctx: &Path) -> (String, String) {
    let mut all = vec!["build", "--progress", "plain", "--source-date-epoch", "0"];
    all.extend_from_slice(args);
    all.push(ctx.to_str().unwrap());
    let out = kiln(root, &all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln build failed:\n{stderr}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr,
    )
}

/// `kiln fsck` exits non-zero when a tag names a missing or damaged blob.
fn fsck_clean(root: &Path) {
    kiln_ok(root, &["fsck"]);
}

fn step_layers(stderr: &str) -> Vec<String> {
    // "#N CACHED: layer abcdef123456 ..." → short digests
    stderr
        .lines()
        .filter_map(|l| l.split_once(": layer ").map(|(_, r)| r))
        .filter_map(|r| r.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn a_fresh_store_builds_from_the_registry_cache_without_running_anything() {
    require_root();
    let reg = registry_support::Registry::plain();
    let a = store_with_busybox();
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")]);
    let cache = format!("{}/team/cache:main", reg.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let from = format!("type=registry,ref={cache}");
    let img1 = format!("{}/team/app:1", reg.addr);
    let insecure = ["--insecure-registry", reg.addr.as_str()];
    // The first CI run: the cache does not exist yet, which is a warning, not a failure.
    let missing = format!("type=registry,ref={}/team/cache:none", reg.addr);
    let (d1, err1) = build(
        a.path(),
        &[
            &[
                "-t",
                &img1,
                "--push",
                "--cache-to",
                &to,
                "--cache-from",
                &missing,
            ][..],
            &insecure,
        ]
        .concat(),
        ctx.path(),
    );
    assert_eq!(ran(&err1), [1, 2, 3, 4, 5], "{err1}");
    assert!(
        err1.contains(&format!("WARNING: cache {missing} not used")),
        "{err1}"
    );
    assert!(err1.contains(&format!("cache exported {cache}@")), "{err1}");

    // B: empty store, pushes to another repository of the same registry. Nothing runs, nothing is
    // copied, no cached layer is downloaded (they are mounted registry-side), no local tag.
    let b = store_with_busybox();
    let img2 = format!("{}/team/app:2", reg.addr);
    let (d2, err2) = build(
        b.path(),
        &[
            &["-t", &img2, "--push", "--cache-from", &from][..],
            &insecure,
        ]
        .concat(),
        ctx.path(),
    );
    assert!(ran(&err2).is_empty(), "every step is CACHED:\n{err2}");
    assert_eq!(step_outcomes(&err2).len(), 5, "{err2}");
    assert!(!err2.contains("sandbox:"), "no RUN ran:\n{err2}");
    assert_eq!(d2, d1, "same image digest from the cache");
    assert!(err2.contains("cache imported"), "{err2}");
    assert!(!err2.contains("cache fetched"), "nothing fetched:\n{err2}");
    assert!(err2.contains("not tagged in the local store"), "{err2}");
    let (ok, json, e) = registry_support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{img2}"),
    ]);
    assert!(ok, "{e}");
    let pushed = kiln::digest::Digest::of(json.trim_end().as_bytes()).to_string();
    assert_eq!(pushed, d1, "the registry serves the same manifest");
    let layers: Vec<String> = step_layers(&err2);
    assert_eq!(layers.len(), 5, "every step made a layer:\n{err2}");
    for short in &layers {
        let present = fs::read_dir(b.path().join("content/blobs/sha256"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(short));
        assert!(!present, "layer {short} was fetched into B's store");
    }
    fsck_clean(b.path());

    // C: empty store, tags locally (no push): the layers are fetched then, and only then.
    let c = store_with_busybox();
    let (d3, err3) = build(
        c.path(),
        &[&["-t", "app:local", "--cache-from", &from][..], &insecure].concat(),
        ctx.path(),
    );
    assert!(ran(&err3).is_empty(), "{err3}");
    assert_eq!(d3, d1);
    assert!(err3.contains("cache fetched"), "{err3}");
    fsck_clean(c.path());
    assert!(kiln_ok(c.path(), &["images"]).contains("app"));

    // Changing one COPY source re-runs exactly the steps after it: COPY b.txt (#4) and RUN (#5).
    fs::write(ctx.path().join("b.txt"), "b changed").unwrap();
    let d = store_with_busybox();
    let (d4, err4) = build(
        d.path(),
        &[&["--cache-from", &from][..], &insecure].concat(),
        ctx.path(),
    );
    assert_eq!(ran(&err4), [4, 5], "{err4}");
    assert_ne!(d4, d1);
}

#[test]
fn a_local_layout_cache_round_trips() {
    require_root();
    let a = store_with_busybox();
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")]);
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("ci-cache");
    let to = format!("type=local,dest={},mode=max", cache_dir.display());
    let (first, err1) = build_to_layout(
        a.path(),
        ctx.path(),
        &["--source-date-epoch", "0", "--cache-to", &to],
    );
    assert!(err1.contains("cache exported"), "{err1}");
    assert!(cache_dir.join("index.json").is_file());

    let b = store_with_busybox();
    let from = format!("type=local,src={}", cache_dir.display());
    let (second, err2) = build_to_layout(
        b.path(),
        ctx.path(),
        &["--source-date-epoch", "0", "--cache-from", &from],
    );
    assert!(ran(&err2).is_empty(), "{err2}");
    assert!(!err2.contains("sandbox:"), "{err2}");
    assert_eq!(second.manifest_digest, first.manifest_digest);
    fsck_clean(b.path());
}

#[test]
fn an_inline_cache_is_read_back_from_the_image() {
    require_root();
    let reg = registry_support::Registry::plain();
    let df = "FROM busybox\nCOPY a.txt /a.txt\nRUN head -c 32 /dev/urandom | od -x > /rand\n";
    let ctx = context(&[("Dockerfile", df), ("a.txt", "a")]);
    let img1 = format!("{}/team/inline:1", reg.addr);
    let img2 = format!("{}/team/inline:2", reg.addr);
    let insecure = ["--insecure-registry", reg.addr.as_str()];
    let a = store_with_busybox();
    let (d1, _) = build(
        a.path(),
        &[
            &["-t", &img1, "--push", "--cache-to", "type=inline"][..],
            &insecure,
        ]
        .concat(),
        ctx.path(),
    );
    let b = store_with_busybox();
    let (d2, err2) = build(
        b.path(),
        &[
            &[
                "-t",
                &img2,
                "--push",
                "--cache-to",
                "type=inline",
                "--cache-from",
                &img1,
            ][..],
            &insecure,
        ]
        .concat(),
        ctx.path(),
    );
    assert!(ran(&err2).is_empty(), "{err2}");
    assert!(!err2.contains("sandbox:"), "{err2}");
    assert_eq!(d2, d1, "the same image, inline cache included");
    // An image without an inline cache is a warning, and the build goes on.
    let c = store_with_busybox();
    let plain = format!("{}/team/plain:1", reg.addr);
    build(
        c.path(),
        &[&["-t", &plain, "--push"][..], &insecure].concat(),
        ctx.path(),
    );
    let d = store_with_busybox();
    let (_, err4) = build(
        d.path(),
        &[&["--cache-from", &plain][..], &insecure].concat(),
        ctx.path(),
    );
    assert!(err4.contains("has no kiln inline cache"), "{err4}");
    assert_eq!(ran(&err4), [1, 2], "{err4}");
}

/// A change to a cache layout's manifest and config JSON.
type Mutation = dyn Fn(&mut Value, &mut Value);

/// Rewrite the cache config of the layout at `dir` (its manifest and index follow the new digest).
fn mutate_layout(dir: &Path, f: &dyn Fn(&mut Value, &mut Value)) {
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = kiln::digest::Digest::of(bytes).to_string();
        fs::write(blob(&d), bytes).unwrap();
        (d, bytes.len())
    };
    let mut index = read_json(&dir.join("index.json"));
    let mdesc = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: Value = serde_json::from_slice(&fs::read(blob(&mdesc)).unwrap()).unwrap();
    let cdesc = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: Value = serde_json::from_slice(&fs::read(blob(&cdesc)).unwrap()).unwrap();
    f(&mut manifest, &mut config);
    let (cd, cn) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = json!(cd);
    manifest["config"]["size"] = json!(cn);
    let (md, mn) = put(&serde_json::to_vec(&manifest).unwrap());
    index["manifests"][0]["digest"] = json!(md);
    index["manifests"][0]["size"] = json!(mn);
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn mismatched_or_damaged_caches_warn_and_build() {
    require_root();
    let a = store_with_busybox();
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")]);
    let base = tempfile::tempdir().unwrap();
    let good = base.path().join("good");
    let to = format!("type=local,dest={},mode=max", good.display());
    build_to_layout(a.path(), ctx.path(), &["--cache-to", &to]);

    let variants: Vec<(&str, Box<Mutation>, &str)> = vec![
        (
            "schema",
            Box::new(|_, c| c["keySchema"] = json!(999)),
            "key schema 999 differs",
        ),
        (
            "platform",
            Box::new(|_, c| c["platform"]["architecture"] = json!("s390x")),
            "was made for linux/s390x",
        ),
        (
            "buildkit",
            Box::new(|m, _| {
                m["config"]["mediaType"] = json!("application/vnd.buildkit.cacheconfig.v0")
            }),
            "BuildKit cache",
        ),
        (
            "partial",
            Box::new(|m, _| m["layers"] = json!([])),
            "dropped: the artifact does not carry their blobs",
        ),
    ];
    for (name, f, warning) in variants {
        let dir = base.path().join(name);
        copy_dir(&good, &dir);
        mutate_layout(&dir, &*f);
        let b = store_with_busybox();
        let from = format!("type=local,src={}", dir.display());
        let (_, err) = build_to_layout(b.path(), ctx.path(), &["--cache-from", &from]);
        assert!(err.contains(warning), "{name}: {err}");
        assert_eq!(
            ran(&err),
            [1, 2, 3, 4, 5],
            "{name}: built everything\n{err}"
        );
    }
    // A cache whose records lie about what their layers hold: caught as soon as bytes are
    // fetched (before any output or tag uses them), and the build fails saying so.
    let dir = base.path().join("poisoned");
    copy_dir(&good, &dir);
    mutate_layout(&dir, &|_, c| {
        for (_, r) in c["records"].as_object_mut().unwrap().iter_mut() {
            if r["layer"].is_object() {
                r["layer"]["diff_id"] = json!(kiln::digest::Digest::of(b"lie").to_string());
            }
        }
    });
    let b = store_with_busybox();
    let from = format!("type=local,src={}", dir.display());
    let out = ctx.path().join("poisoned-out");
    let err = kiln_err(
        b.path(),
        &[
            "build",
            "--cache-from",
            &from,
            "-o",
            &format!("type=oci,dest={}", out.display()),
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(err.contains("the cache is wrong"), "{err}");
    kiln_ok(b.path(), &["fsck"]);
    // A manifest that is not JSON at all.
    let dir = base.path().join("garbage");
    copy_dir(&good, &dir);
    let index = read_json(&dir.join("index.json"));
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    fs::write(
        dir.join("blobs/sha256")
            .join(m.trim_start_matches("sha256:")),
        "{not json",
    )
    .unwrap();
    let b = store_with_busybox();
    let from = format!("type=local,src={}", dir.display());
    let (_, err) = build_to_layout(b.path(), ctx.path(), &["--cache-from", &from]);
    assert!(err.contains("not used"), "{err}");
    assert_eq!(ran(&err), [1, 2, 3, 4, 5], "{err}");
    // A cache that does not exist is a warning too.
    let b = store_with_busybox();
    let from = format!("type=local,src={}", base.path().join("nowhere").display());
    let (_, err) = build_to_layout(b.path(), ctx.path(), &["--cache-from", &from]);
    assert!(err.contains("not used"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn cache_mounts_are_exported_and_seed_a_fresh_store() {
    require_root();
    let reg = registry_support::Registry::plain();
    let writer = "FROM busybox\n\
RUN --mount=type=cache,id=pip,target=/root/.cache/pip,uid=1000,gid=1000,mode=0750 \
echo wheel-bytes > /root/.cache/pip/w1.whl\n";
    let reader = "FROM busybox\n\
RUN --mount=type=cache,id=pip,target=/root/.cache/pip,uid=1000,gid=1000,mode=0750 \
cat /root/.cache/pip/w1.whl > /got\n";
    let insecure = ["--insecure-registry", reg.addr.as_str()];
    let cache = format!("{}/team/cache:mounts", reg.addr);
    let a = store_with_busybox();
    let ctx_w = context(&[("Dockerfile", writer)]);
    let (_, err1) = build(
        a.path(),
        &[
            &[
                "--cache-to",
                &format!("type=registry,ref={cache},mounts=true"),
            ][..],
            &insecure,
        ]
        .concat(),
        ctx_w.path(),
    );
    assert!(err1.contains("1 cache mount(s)"), "{err1}");

    let b = store_with_busybox();
    let ctx_r = context(&[("Dockerfile", reader)]);
    let from = format!("type=registry,ref={cache}");
    let (img, err2) = build_to_layout(
        b.path(),
        ctx_r.path(),
        &[&["--cache-from", &from][..], &insecure].concat(),
    );
    assert!(err2.contains("cache seeded"), "{err2}");
    let entries = all_entries(&img);
    assert!(entries.contains_key("got"), "{:?}", entries.keys());
    let got = layer_file(&img, "got");
    assert_eq!(got.trim(), "wheel-bytes");
    // The seeded directory has the mount's owner and mode.
    use std::os::unix::fs::MetadataExt;
    let dir = b
        .path()
        .join("cache")
        .join(kiln::digest::Digest::of(b"pip").hex());
    let meta = fs::metadata(&dir).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert_eq!(meta.mode() & 0o7777, 0o750);
    // Mounts are never part of an image: the exported image layers do not hold the wheel.
    assert!(!entries.keys().any(|k| k.contains("w1.whl")));
}

/// The content of `path` in the image's layers (the last layer holding it).
fn layer_file(img: &LayoutImage, path: &str) -> String {
    for l in img.layers.iter().rev() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("tar -xzOf {} {path} 2>/dev/null", l.display()))
            .output()
            .unwrap();
        if out.status.success() && !out.stdout.is_empty() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
    }
    panic!("{path} is in no layer");
}

#[test]
fn two_daemons_build_concurrently_from_one_cache() {
    require_root();
    let reg = registry_support::Registry::plain();
    let a = store_with_busybox();
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")]);
    let cache = format!("{}/team/cache:shared", reg.addr);
    let (d1, _) = build(
        a.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            "--insecure-registry",
            &reg.addr,
        ],
        ctx.path(),
    );
    let daemons = [Daemon::start(&[]), Daemon::start(&[])];
    let mut ids = Vec::new();
    for (i, d) in daemons.iter().enumerate() {
        d.context(
            "app",
            &[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")],
        );
        let body = json!({
            "context": "app",
            "tags": [format!("{}/team/app:d{i}", reg.addr)],
            "push": true,
            "source_date_epoch": 0,
            "cache_from": [format!("type=registry,ref={cache}")],
            "insecure_registries": [reg.addr.clone()],
        });
        let (status, v) = d.post_json("/v1/builds", &body.to_string());
        assert_eq!(status, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    for (d, id) in daemons.iter().zip(&ids) {
        let events = d.events(id);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "succeeded", "{}", d.log_text(id));
        let finished: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "step_finished")
            .collect();
        assert_eq!(finished.len(), 5, "{}", d.log_text(id));
        assert!(
            finished.iter().all(|e| e["cached"] == true),
            "every step hit the shared cache: {}",
            d.log_text(id)
        );
        assert!(!events.iter().any(|e| e["type"] == "sandbox"));
        let result = events.iter().find(|e| e["type"] == "finished").unwrap();
        assert_eq!(result["manifest"], d1.as_str());
    }
}

#[test]
fn a_cache_on_another_registry_is_fetched_for_the_push() {
    require_root();
    let cache_reg = registry_support::Registry::plain();
    let image_reg = registry_support::Registry::plain();
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")]);
    let cache = format!("{}/team/cache:x", cache_reg.addr);
    let a = store_with_busybox();
    let (d1, _) = build(
        a.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            "--insecure-registry",
            &cache_reg.addr,
        ],
        ctx.path(),
    );
    // The layers cannot be mounted across registries: they are fetched, then uploaded.
    let b = store_with_busybox();
    let img = format!("{}/team/app:1", image_reg.addr);
    let (d2, err) = build(
        b.path(),
        &[
            "-t",
            &img,
            "--push",
            "--cache-from",
            &format!("type=registry,ref={cache}"),
            "--insecure-registry",
            &cache_reg.addr,
            "--insecure-registry",
            &image_reg.addr,
        ],
        ctx.path(),
    );
    assert!(ran(&err).is_empty(), "{err}");
    assert_eq!(d2, d1);
    assert!(err.contains("cache fetched"), "{err}");
    let (ok, _, e) =
        registry_support::skopeo(&["inspect", "--tls-verify=false", &format!("docker://{img}")]);
    assert!(ok, "{e}");
}

#[test]
fn a_failed_export_fails_the_build_unless_ignore_error() {
    let root = store_with_busybox();
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY a.txt /a.txt\n"),
        ("a.txt", "a"),
    ]);
    // Nothing listens on port 1.
    let to = "type=registry,ref=127.0.0.1:1/team/cache:x";
    let err = kiln_err(
        root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--cache-to",
            to,
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("--cache-to type=registry,ref=127.0.0.1:1/team/cache:x"),
        "{err}"
    );
    let (_, err) = build(
        root.path(),
        &["--cache-to", &format!("{to},ignore-error=true")],
        ctx.path(),
    );
    assert!(err.contains("failed (ignore-error=true)"), "{err}");
    // An unknown attribute is refused before anything runs.
    let err = kiln_err(
        root.path(),
        &[
            "build",
            "--cache-to",
            "type=registry,ref=r/x,colour=red",
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(err.contains("unknown attribute \"colour\""), "{err}");
}
