//! Issue 5's end to end: push the busybox base to a real registry with `kiln push`, build FROM it in
//! an empty store (the build pulls it), push the result with `kiln build --push`, and read it back
//! with skopeo — through the CLI, as a user would.

use crate::support::registry as registry_support;

use std::fs;

use crate::support::*;

#[test]
fn build_from_a_pushed_base_and_push_the_result() {
    let reg = registry_support::Registry::start(registry_support::Options {
        htpasswd: true,
        ..Default::default()
    });
    let cred = format!(
        "{}={}:{}",
        reg.addr,
        registry_support::USER,
        registry_support::PASSWORD
    );
    let base = format!("{}/library/busybox:1", reg.addr);
    let seeded = store_with_busybox();
    kiln_ok(
        seeded.path(),
        &[
            "push",
            "busybox:latest",
            &base,
            "--insecure-registry",
            &reg.addr,
            "--registry-credential",
            &cred,
        ],
    );

    let empty = tempfile::tempdir().unwrap();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN echo built-on-pulled-base > /marker\n"),
    )]);
    let app = format!("{}/team/app:2", reg.addr);
    let out = kiln(
        empty.path(),
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            &app,
            "--push",
            "--insecure-registry",
            &reg.addr,
            "--registry-credential",
            &cred,
            ctx.path().to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("exported pulled:") && stderr.contains("exported registry:"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(registry_support::PASSWORD),
        "the password leaked into the output"
    );
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let (ok, json, err) = registry_support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &format!("{}:{}", registry_support::USER, registry_support::PASSWORD),
        &format!("docker://{app}"),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    assert_eq!(
        v["Layers"].as_array().unwrap().len(),
        2,
        "busybox + the RUN layer: {v}"
    );

    // A wrong password fails the push naming the registry, and never shows the password.
    let bad = format!("{}={}:not-the-password", reg.addr, registry_support::USER);
    let e = kiln_err(
        empty.path(),
        &[
            "build",
            "-t",
            &app,
            "--push",
            "--insecure-registry",
            &reg.addr,
            "--registry-credential",
            &bad,
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(
        e.contains(&reg.addr) && !e.contains("not-the-password"),
        "{e}"
    );
    let db = fs::read(empty.path().join("kiln.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains(registry_support::PASSWORD));
}

/// A base pulled by the build is unpacked while it downloads (engine/base/prepare.rs) into committed
/// snapshots, which the stage finds made: every layer in order (a later layer's whiteout removes
/// an earlier file, a later layer's opaque directory hides an earlier one's entries). A second
/// build, base already local, re-makes nothing; neither does the first build on an image
/// `kiln pull` stored.
#[test]
fn a_pulled_base_is_unpacked_while_it_downloads_layer_order_kept() {
    let reg = registry_support::Registry::start(registry_support::Options::default());
    let seeded = store_with_busybox();
    let layered = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         RUN echo one > /f && echo gone > /g && mkdir -p /dir && echo x > /dir/x\n\
         RUN echo two > /f && rm /g\n\
         RUN rm -r /dir && mkdir /dir && echo y > /dir/y\n",
    )]);
    let base = format!("{}/library/layered:1", reg.addr);
    kiln_ok(
        seeded.path(),
        &[
            "build",
            "-t",
            &base,
            "--push",
            "--insecure-registry",
            &reg.addr,
            layered.path().to_str().unwrap(),
        ],
    );
    let empty = tempfile::tempdir().unwrap();
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM {base}\nRUN cat /f > /seen && ls /dir >> /seen && (test -e /g || echo no-g >> /seen)\n"
        ),
    )]);
    let build = |root: &std::path::Path| {
        let out = kiln(
            root,
            &[
                "build",
                "--progress",
                "plain",
                "--no-cache",
                "--insecure-registry",
                &reg.addr,
                "-o",
                &format!("type=oci,dest={}", root.join("out").display()),
                "-t",
                "t:1",
                ctx.path().to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let img = layout_image(&root.join("out"), "1");
        let seen = all_entries(&img)["seen"].content.clone().unwrap();
        (String::from_utf8(seen).unwrap(), stderr)
    };
    let (seen, stderr) = build(empty.path());
    assert_eq!(seen, "two\ny\nno-g\n", "layers applied out of order");
    assert!(
        stderr.contains("from committed snapshots, 0 unpacked"),
        "the pulled base was not unpacked during the pull:\n{stderr}"
    );
    let inodes = |root: &std::path::Path| -> Vec<u64> {
        use std::os::unix::fs::MetadataExt;
        let mut v: Vec<u64> = std::fs::read_dir(root.join("snapshots"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.metadata().unwrap().ino())
            .collect();
        v.sort();
        v
    };
    let before = inodes(empty.path());
    let (seen, stderr) = build(empty.path());
    assert_eq!(seen, "two\ny\nno-g\n");
    assert!(
        stderr.contains("from committed snapshots, 0 unpacked"),
        "a local base was unpacked again:\n{stderr}"
    );
    let after = inodes(empty.path());
    assert!(
        before.iter().all(|i| after.contains(i)),
        "the base's snapshots were re-made"
    );

    // `kiln pull` unpacks what it stores, as `docker pull` does: the first build on it unpacks
    // nothing, and sees every layer in order.
    let pulled = tempfile::tempdir().unwrap();
    kiln_ok(
        pulled.path(),
        &["pull", "--insecure-registry", &reg.addr, &base],
    );
    assert!(
        !inodes(pulled.path()).is_empty(),
        "kiln pull made no snapshot"
    );
    let (seen, stderr) = build(pulled.path());
    assert_eq!(seen, "two\ny\nno-g\n");
    assert!(
        stderr.contains("from committed snapshots, 0 unpacked"),
        "the pulled image was unpacked again by its first build:\n{stderr}"
    );
}

/// `--pull` (BuildKit's meaning): a base tag the store already has is resolved again against its
/// registry, so a moved tag is seen; without it the stored base is used (offline builds work).
#[test]
fn pull_reresolves_a_moved_tag_the_store_has() {
    let reg = registry_support::Registry::start(registry_support::Options::default());
    let base = format!("{}/library/base:1", reg.addr);
    let seeded = store_with_busybox();
    let insecure = ["--insecure-registry", reg.addr.as_str()];
    let mut push = vec!["push", "busybox:latest", base.as_str()];
    push.extend_from_slice(&insecure);
    kiln_ok(seeded.path(), &push);

    let store = tempfile::tempdir().unwrap();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN cat /version > /seen 2>/dev/null || echo one > /seen\n"),
    )]);
    let (img, _) = build_to_layout(store.path(), ctx.path(), &insecure);
    assert_eq!(seen(&img), "one\n");

    // The tag moves to an image with /version.
    let v2 = context(&[("Dockerfile", "FROM busybox\nRUN echo two > /version\n")]);
    let mut args = vec!["build", "-t", base.as_str(), "--push"];
    args.extend_from_slice(&insecure);
    args.push(v2.path().to_str().unwrap());
    kiln_ok(seeded.path(), &args);

    let (img, _) = build_to_layout(store.path(), ctx.path(), &insecure);
    assert_eq!(
        seen(&img),
        "one\n",
        "without --pull the stored base is used"
    );
    let mut flags = vec!["--pull"];
    flags.extend_from_slice(&insecure);
    let (img, stderr) = build_to_layout(store.path(), ctx.path(), &flags);
    assert_eq!(seen(&img), "two\n", "{stderr}");
    assert!(stderr.contains("exported pulled:"), "{stderr}");
}

fn seen(img: &LayoutImage) -> String {
    let e = all_entries(img);
    String::from_utf8(e["seen"].content.clone().unwrap()).unwrap()
}
