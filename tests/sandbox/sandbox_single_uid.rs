//! The single-uid sandbox rung (issue 4): with one id mapped, chown inside RUN is recorded (seccomp
//! user notification) and lands in the layer instead of failing — through the real CLI, as root
//! and as the rootless user `kilntest`. Chowns inside cache mounts never reach a layer.

use std::fs;
use std::path::Path;

use crate::support::*;

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
        stderr.contains("other owners and ids are faked"),
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
    let user = Rootless::new(&[("Dockerfile", DOCKERFILE)]);
    let (img, stderr) = user.build(&["--sandbox", "single-uid"]);
    check(&img, &stderr);
}

/// `USER` with ids that are not mapped: the command appears as that user (id, stat of what it
/// made), and what it makes is that user's in the layer — the files through their recorded
/// owner, the symlink through the record.
#[test]
fn user_and_its_files_are_faked_as_root() {
    let root = store_with_busybox();
    let dockerfile = "FROM busybox
USER 1234:5678
RUN mkdir /d && touch /d/f && ln -s f /d/l && echo ids=$(id -u):$(id -g) \\
 && echo owner=$(stat -c %u:%g /d/f)
";
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let (img, stderr) = build_to_layout(root.path(), ctx.path(), &["--sandbox", "single-uid"]);
    assert!(stderr.contains("sandbox: single-uid rung"), "{stderr}");
    assert!(stderr.contains("ids=1234:5678"), "{stderr}");
    assert!(stderr.contains("owner=1234:5678"), "{stderr}");
    let l = layer_entries(img.layers.last().unwrap());
    for p in ["d", "d/f", "d/l"] {
        assert_eq!((l[p].uid, l[p].gid), (1234, 5678), "{p}");
    }
}
