//! Issue 22's end to end: a two-platform busybox base (Debian's busybox-static for amd64 and arm64,
//! assembled by testdata/busybox/make-index.sh) pushed as an index to a real registry with skopeo;
//! `kiln build --platform linux/amd64,linux/arm64 --push` of a Dockerfile with a
//! `FROM --platform=$BUILDPLATFORM` builder stage copied into a final stage that RUNs `uname -m`;
//! the pushed index read back with skopeo, as a user would check it.
//!
//! The arm64 RUN steps run under QEMU twice: through kiln's read-only emulator mount (forced with
//! `[worker.oci] binfmt = false`, so the host's binfmt_misc state does not matter and is never
//! touched), and through a binfmt_misc handler with the F flag (registered by the test for its
//! duration when the host has none, then removed: the kernel's table is the only way to test that
//! path, and the emulator-mount test does not read it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::support::registry as registry_support;
use crate::support::*;

/// The two-platform busybox layout (tag `multi`), once per test binary.
fn busybox_index_layout() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        sweep_dead_test_dirs("kiln-test-busybox-index-");
        let dir = std::env::temp_dir().join(format!("kiln-test-busybox-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = std::process::Command::new("bash")
            .arg(manifest_dir().join("testdata/busybox/make-index.sh"))
            .arg(&dir)
            .arg("multi")
            .output()
            .expect("running make-index.sh");
        assert!(
            out.status.success(),
            "testdata/busybox/make-index.sh failed (scripts/test.sh adds the arm64 architecture):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

const DOCKERFILE: &str = "\
FROM --platform=$BUILDPLATFORM BASE AS builder
RUN uname -m > /built-on && cat /proc/sys/kernel/random/uuid > /stamp

FROM BASE
ARG TARGETARCH
COPY --from=builder /built-on /stamp /
RUN uname -m > /arch && echo \"$TARGETARCH\" > /targetarch
";

/// One platform of the pushed index: its `platform` and the files the Dockerfile wrote.
struct Pushed {
    platform: String,
    config_arch: String,
    files: BTreeMap<String, String>,
}

/// Push the base, build both platforms with `kiln.toml` text `config`, read the result back;
/// returns the platforms and the build's stderr.
fn build_both(config: &str) -> (Vec<Pushed>, String) {
    require_tool("qemu-aarch64-static");
    let reg = registry_support::Registry::plain();
    let base = format!("{}/library/busybox:multi", reg.addr);
    let layout = busybox_index_layout();
    let (ok, _, err) = registry_support::skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{base}"),
    ]);
    assert!(ok, "pushing the two-platform base: {err}");

    let root = tempfile::tempdir().unwrap();
    let cfg = root.path().join("kiln.toml");
    std::fs::write(&cfg, config).unwrap();
    let ctx = context(&[("Dockerfile", &DOCKERFILE.replace("BASE", &base))]);
    let app = format!("{}/team/app:1", reg.addr);
    let out = kiln(
        &root.path().join("store"),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &app,
            "--push",
            "--insecure-registry",
            &reg.addr,
            ctx.path().to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");

    // What the registry serves, copied out by skopeo (not kiln) and read from the layout.
    let got = tempfile::tempdir().unwrap();
    let (ok, _, err) = registry_support::skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{app}"),
        &format!("oci:{}:app", got.path().display()),
    ]);
    assert!(ok, "reading the pushed image back: {err}");
    (read_index(got.path()), stderr)
}

fn read_index(layout: &Path) -> Vec<Pushed> {
    let top = read_json(&layout.join("index.json"));
    let index_digest = top["manifests"][0]["digest"].as_str().unwrap();
    let index = read_json(&blob_path(layout, index_digest));
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let mut out = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let p = &m["platform"];
        let platform = format!(
            "{}/{}",
            p["os"].as_str().unwrap(),
            p["architecture"].as_str().unwrap()
        );
        let manifest = read_json(&blob_path(layout, m["digest"].as_str().unwrap()));
        let config = read_json(&blob_path(
            layout,
            manifest["config"]["digest"].as_str().unwrap(),
        ));
        let mut files = BTreeMap::new();
        for l in manifest["layers"].as_array().unwrap() {
            for (path, e) in layer_entries(&blob_path(layout, l["digest"].as_str().unwrap())) {
                if let (Some(c), false) = (e.content, path.contains('/')) {
                    files.insert(path, String::from_utf8_lossy(&c).trim().to_string());
                }
            }
        }
        out.push(Pushed {
            platform,
            config_arch: config["architecture"].as_str().unwrap().to_string(),
            files,
        });
    }
    out
}

/// The step numbers of the builder stage's RUN in a plain log (one per platform).
fn builder_run_steps(stderr: &str) -> Vec<usize> {
    stderr
        .lines()
        .filter(|l| l.contains(" builder ") && l.contains("] RUN uname -m > /built-on"))
        .filter_map(|l| l.split(" builder ").nth(1)?.split('/').next()?.parse().ok())
        .collect()
}

fn check(images: &[Pushed], stderr: &str) {
    let platforms: Vec<&str> = images.iter().map(|p| p.platform.as_str()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{stderr}");
    let want = [("amd64", "x86_64"), ("arm64", "aarch64")];
    for (img, (arch, uname)) in images.iter().zip(want) {
        assert_eq!(img.config_arch, arch);
        assert_eq!(img.files["arch"], uname, "{}", img.platform);
        assert_eq!(img.files["targetarch"], arch, "{}", img.platform);
        // The builder stage ran natively on the build platform, for both targets.
        assert_eq!(img.files["built-on"], "x86_64", "{}", img.platform);
    }
    // Ran once: both images carry the same random stamp, and the log ran its step once.
    assert_eq!(images[0].files["stamp"], images[1].files["stamp"]);
    let builder = builder_run_steps(stderr);
    assert_eq!(
        builder.len(),
        2,
        "one builder RUN per platform planned:\n{stderr}"
    );
    let outcomes = step_outcomes(stderr);
    let ran: Vec<_> = outcomes
        .iter()
        .filter(|(n, cached)| builder.contains(n) && !cached)
        .collect();
    assert_eq!(ran.len(), 1, "the builder RUN must run once:\n{stderr}");
    // Nothing of the emulator is in any layer.
    for img in images {
        assert!(
            !img.files.keys().any(|f| f.contains("qemu")),
            "{:?}",
            img.files.keys()
        );
    }
}

#[test]
fn two_platforms_with_the_emulator_mounted() {
    let (images, stderr) = build_both("[worker.oci]\nbinfmt = false\n");
    assert!(
        stderr.contains(
            "emulated linux/arm64: through /usr/bin/qemu-aarch64-static (mounted read-only)"
        ),
        "{stderr}"
    );
    check(&images, &stderr);
}

/// A `qemu-aarch64` binfmt_misc handler with the F flag for the test's duration: the host's own
/// when it has one, else registered here (binfmt_misc mounted if it is not) and removed on drop.
struct Handler {
    registered: bool,
    mounted: bool,
}

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

impl Handler {
    fn ensure() -> Handler {
        let entry = Path::new(BINFMT).join("qemu-aarch64");
        let usable = |t: String| {
            t.starts_with("enabled")
                && t.lines()
                    .filter_map(|l| l.strip_prefix("flags:"))
                    .any(|f| f.contains('F'))
        };
        if std::fs::read_to_string(&entry).is_ok_and(usable) {
            return Handler {
                registered: false,
                mounted: false,
            };
        }
        assert!(
            rustix::process::geteuid().is_root(),
            "LOUD: registering a binfmt_misc handler needs root (run the tests as root)"
        );
        let mut mounted = false;
        if !Path::new(BINFMT).join("register").exists() {
            let st = std::process::Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc", BINFMT])
                .status()
                .unwrap();
            assert!(st.success(), "LOUD: cannot mount binfmt_misc at {BINFMT}");
            mounted = true;
        }
        // Debian's qemu-user-static rule (/usr/lib/binfmt.d/qemu-aarch64.conf), pointed at the
        // static binary with F, so the kernel opens it now and it works inside the sandbox.
        let conf = std::fs::read_to_string("/usr/lib/binfmt.d/qemu-aarch64.conf")
            .expect("qemu-user-static's binfmt rule (apt-get install qemu-user-static)");
        let fields: Vec<&str> = conf.trim().split(':').collect();
        let rule = format!(
            ":qemu-aarch64:M::{}:{}:/usr/bin/qemu-aarch64-static:F",
            fields[4], fields[5]
        );
        std::fs::write(Path::new(BINFMT).join("register"), rule).expect("registering the handler");
        Handler {
            registered: true,
            mounted,
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        if self.registered {
            let _ = std::fs::write(Path::new(BINFMT).join("qemu-aarch64"), "-1");
        }
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(BINFMT).status();
        }
    }
}

#[test]
fn two_platforms_with_a_binfmt_handler() {
    let _handler = Handler::ensure();
    let (images, stderr) = build_both("");
    assert!(
        stderr.contains(
            "emulated linux/arm64: through the kernel's binfmt_misc handler qemu-aarch64"
        ),
        "{stderr}"
    );
    check(&images, &stderr);
}

#[test]
fn no_emulator_is_an_error_before_any_step_and_a_missing_platform_names_the_others() {
    let root = tempfile::tempdir().unwrap();
    kiln_ok(
        root.path(),
        &[
            "import",
            &format!("{}:multi", busybox_index_layout().display()),
            "--tag",
            "busybox:multi",
        ],
    );
    let cfg = root.path().join("kiln.toml");
    std::fs::write(&cfg, "[worker.oci]\nbinfmt = false\n").unwrap();
    let ctx = context(&[("Dockerfile", &DOCKERFILE.replace("BASE", "busybox:multi"))]);
    let out = std::process::Command::new(kiln_bin())
        .args([
            "--root",
            root.path().to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args([
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .arg(ctx.path())
        .env("PATH", "/nonexistent")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for want in [
        "linux/arm64",
        "apt-get install qemu-user-static",
        "emulators = { arm64",
    ] {
        assert!(stderr.contains(want), "{want:?} missing:\n{stderr}");
    }
    assert!(step_outcomes(&stderr).is_empty(), "a step ran:\n{stderr}");

    let err = kiln_err(
        root.path(),
        &[
            "build",
            "--platform",
            "linux/arm/v7",
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("no image for platform linux/arm/v7")
            && err.contains("available: linux/amd64, linux/arm64"),
        "{err}"
    );
}

#[test]
fn cache_to_carries_every_platform_and_a_cold_store_rebuilds_from_it() {
    require_tool("qemu-aarch64-static");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("kiln.toml");
    std::fs::write(&cfg, "[worker.oci]\nbinfmt = false\n").unwrap();
    let ctx = context(&[("Dockerfile", &DOCKERFILE.replace("BASE", "busybox:multi"))]);
    let cache = tmp.path().join("cache");
    let build = |store: &str, cache_flag: String| {
        let root = tmp.path().join(store);
        let layout = format!("{}:multi", busybox_index_layout().display());
        kiln_ok(&root, &["import", &layout, "--tag", "busybox:multi"]);
        let out = kiln(
            &root,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "build",
                "--progress",
                "plain",
                "--platform",
                "linux/amd64,linux/arm64",
                &cache_flag,
                ctx.path().to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr,
        )
    };
    let (first, _) = build(
        "a",
        format!("--cache-to=type=local,dest={},mode=max", cache.display()),
    );
    let (second, stderr) = build(
        "b",
        format!("--cache-from=type=local,src={}", cache.display()),
    );
    assert_eq!(first, second, "the same index from the shared cache");
    // Every layer step of both platforms came from the cache (the ARG steps only edit the config).
    let layer_steps: Vec<&str> = stderr.lines().filter(|l| l.contains(": layer ")).collect();
    assert_eq!(layer_steps.len(), 6, "{stderr}");
    assert!(layer_steps.iter().all(|l| l.contains("CACHED")), "{stderr}");

    // One --platform keeps a single manifest: the index's arm64 entry, byte for byte (in the
    // store that made the records; "b" took them from the shared cache without their layers).
    let root = tmp.path().join("a");
    let index = read_json(&blob_path(&root.join("content"), &first));
    let arm64 = kiln_ok(
        &root,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "build",
            "--platform",
            "linux/arm64",
            ctx.path().to_str().unwrap(),
        ],
    );
    assert_eq!(index["manifests"][1]["platform"]["architecture"], "arm64");
    assert_eq!(index["manifests"][1]["digest"], arm64.trim());
    let single = read_json(&blob_path(&root.join("content"), arm64.trim()));
    assert_eq!(
        single["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{single}"
    );
}
