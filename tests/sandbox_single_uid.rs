//! The single-uid sandbox rung (issue 4): with one id mapped, chown inside RUN is recorded (seccomp
//! user notification) and lands in the layer instead of failing — through the real CLI, as root
//! and as the rootless user `kilntest`. Chowns inside cache mounts never reach a layer.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

const DOCKERFILE: &str = r#"FROM busybox
RUN --mount=type=cache,target=/cache touch /f && chown 1234:5678 /f && mkdir /d && chown -h 42 /d \
 && touch /cache/c && chown 99:99 /cache/c && ln -s /f /link && chown -h 7:8 /link \
 && touch /g && chown 0:0 /g \
 && echo chowned-ok
"#;

/// What every run of the Dockerfile above must produce, whoever runs kiln.
fn check(img: &LayoutImage, stderr: &str) {
    assert!(stderr.contains("sandbox: single-uid rung"), "{stderr}");
    assert!(
        stderr.contains("chowned-ok"),
        "chown failed in the step:\n{stderr}"
    );
    assert!(
        stderr.contains("recorded in the layer but not applied"),
        "the single-uid warning is missing:\n{stderr}"
    );
    let l = layer_entries(img.layers.last().unwrap());
    let owner = |p: &str| {
        let e = l
            .get(p)
            .unwrap_or_else(|| panic!("{p} not in the layer: {:?}", l.keys()));
        (e.kind, e.uid, e.gid)
    };
    assert_eq!(owner("f"), ('f', 1234, 5678));
    assert_eq!(owner("d"), ('d', 42, 0), "-1 keeps the gid");
    assert_eq!(
        owner("link"),
        ('l', 7, 8),
        "chown -h acts on the symlink itself"
    );
    assert_eq!(
        owner("g"),
        ('f', 0, 0),
        "a chown to the mapped id is applied"
    );
    assert!(
        !l.keys().any(|k| k.starts_with("cache")),
        "the cache mount reached the layer: {:?}",
        l.keys()
    );
}

#[test]
fn chown_is_recorded_in_the_layer_as_root() {
    let root = store_with_busybox();
    let ctx = context(&[("Dockerfile", DOCKERFILE)]);
    let (img, stderr) = build_to_layout(root.path(), ctx.path(), &["--sandbox", "single-uid"]);
    check(&img, &stderr);
    // The file in the cache kept its real owner: the chown was recorded, not applied.
    let caches: Vec<_> = walk(&root.path().join("cache"))
        .into_iter()
        .filter(|p| p.ends_with("c"))
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let md = fs::metadata(&caches[0]).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&md),
            std::os::unix::fs::MetadataExt::gid(&md)
        ),
        (0, 0)
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn chown_is_recorded_in_the_layer_as_kilntest() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "LOUD: this test must start as root to become kilntest"
    );
    ensure_kilntest();
    let dir = tempfile::Builder::new()
        .prefix("kiln-single-uid-")
        .tempdir_in("/tmp")
        .unwrap();
    let bin = dir.path().join("kiln");
    fs::copy(kiln_bin(), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let layout = dir.path().join("busybox");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(busybox_layout())
        .arg(&layout)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("chown")
        .args(["-R", "kilntest:kilntest"])
        .arg(dir.path())
        .status()
        .unwrap()
        .success());
    let as_user = |args: &[&str]| {
        let out = Command::new("runuser")
            .args(["-u", "kilntest", "--"])
            .arg(&bin)
            .arg("--root")
            .arg(dir.path().join("state"))
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_ROOT")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kiln {args:?} as kilntest:\n{text}");
        text
    };
    as_user(&[
        "import",
        &format!("{}:latest", layout.display()),
        "--tag",
        "busybox",
    ]);
    let oci = dir.path().join("out");
    let stderr = as_user(&[
        "build",
        "--progress",
        "plain",
        "--sandbox",
        "single-uid",
        "-t",
        "t:1",
        "-o",
        &format!("type=oci,dest={}", oci.display()),
        ctx.to_str().unwrap(),
    ]);
    check(&layout_image(&oci, "1"), &stderr);
}
