//! The step cache: a rebuild reuses layers instead of re-running steps, a changed input re-runs its
//! step and every later one (and nothing earlier), mtimes alone change nothing, `--no-cache` runs
//! everything, and a pruned layer is a miss, not a broken image.

use std::fs;

use crate::support::*;

const DOCKERFILE: &str = "FROM busybox\n\
ARG FLAVOUR=plain\n\
COPY a.txt /a.txt\n\
RUN --mount=type=cache,target=/runs echo x >> /runs/count && wc -l < /runs/count > /first-run-count\n\
COPY b.txt /b.txt\n\
RUN echo \"$FLAVOUR\" > /flavour\n";

fn cached(stderr: &str) -> Vec<usize> {
    step_outcomes(stderr)
        .into_iter()
        .filter(|s| s.1)
        .map(|s| s.0)
        .collect()
}

#[test]
fn rebuilds_reuse_layers_and_changes_invalidate_from_the_changed_step_on() {
    let root = store_with_busybox();
    let ctx = context(&[("Dockerfile", DOCKERFILE), ("a.txt", "a"), ("b.txt", "b")]);
    let (first, err1) = build_to_layout(root.path(), ctx.path(), &["--source-date-epoch", "0"]);
    assert!(cached(&err1).is_empty(), "{err1}");

    let (second, err2) = build_to_layout(root.path(), ctx.path(), &["--source-date-epoch", "0"]);
    assert_eq!(
        cached(&err2),
        [2, 3, 4, 5],
        "every layer step is a hit:\n{err2}"
    );
    assert!(!err2.contains("sandbox:"), "no RUN ran:\n{err2}");
    assert_eq!(second.manifest_digest, first.manifest_digest);

    // Only b.txt's mtime changes: still all hits.
    let t = filetime::FileTime::from_unix_time(12345, 0);
    filetime::set_file_times(ctx.path().join("b.txt"), t, t).unwrap();
    let (_, err3) = build_to_layout(root.path(), ctx.path(), &["--source-date-epoch", "0"]);
    assert_eq!(cached(&err3), [2, 3, 4, 5], "{err3}");

    // b.txt's content changes: COPY b.txt and the RUN after it re-run; COPY a.txt and the first
    // RUN stay cached (its cache-mount counter proves it did not run again).
    fs::write(ctx.path().join("b.txt"), "b2").unwrap();
    let (fourth, err4) = build_to_layout(root.path(), ctx.path(), &["--source-date-epoch", "0"]);
    assert_eq!(cached(&err4), [2, 3], "{err4}");
    let tree = all_entries(&fourth);
    assert_eq!(
        tree["first-run-count"].content.as_deref(),
        Some(&b"1\n"[..])
    );
    assert_eq!(tree["b.txt"].content.as_deref(), Some(&b"b2"[..]));

    // A build arg is in the environment of every RUN after its ARG, so (as in BuildKit) a new value
    // re-runs the first RUN and everything after it; the COPY before it stays cached.
    let (fifth, err5) = build_to_layout(
        root.path(),
        ctx.path(),
        &["--source-date-epoch", "0", "--build-arg", "FLAVOUR=spicy"],
    );
    assert_eq!(cached(&err5), [2], "{err5}");
    assert_eq!(
        all_entries(&fifth)["flavour"].content.as_deref(),
        Some(&b"spicy\n"[..])
    );

    // --no-cache runs everything again (the cache mount's counter moves on: 1 first, 2 with the new
    // FLAVOUR, 3 now).
    let (sixth, err6) = build_to_layout(
        root.path(),
        ctx.path(),
        &["--source-date-epoch", "0", "--no-cache"],
    );
    assert!(cached(&err6).is_empty(), "{err6}");
    assert_eq!(
        all_entries(&sixth)["first-run-count"].content.as_deref(),
        Some(&b"3\n"[..])
    );
}

#[test]
fn a_pruned_layer_is_a_miss_not_a_broken_image() {
    let root = store_with_busybox();
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY a.txt /a.txt\n"),
        ("a.txt", "a"),
    ]);
    let out = kiln(
        root.path(),
        &["build", "--progress", "plain", ctx.path().to_str().unwrap()],
    );
    assert!(out.status.success());
    // Untagged: prune removes the image's blobs, and with them the cached layer.
    kiln_ok(root.path(), &["prune"]);
    let (img, err) = build_to_layout(root.path(), ctx.path(), &[]);
    assert!(
        cached(&err).is_empty(),
        "the pruned layer cannot be a hit:\n{err}"
    );
    assert_eq!(
        all_entries(&img)["a.txt"].content.as_deref(),
        Some(&b"a"[..])
    );
    kiln_ok(root.path(), &["fsck"]);
}

#[test]
fn copy_from_a_stage_follows_that_stage() {
    let root = store_with_busybox();
    let df = "FROM busybox AS gen\nCOPY v.txt /v.txt\nRUN cat /v.txt > /out\n\nFROM scratch\nCOPY --from=gen /out /out\n";
    let ctx = context(&[("Dockerfile", df), ("v.txt", "one")]);
    build_to_layout(root.path(), ctx.path(), &[]);
    let (_, err) = build_to_layout(root.path(), ctx.path(), &[]);
    assert_eq!(cached(&err), [1, 2, 3], "{err}");
    fs::write(ctx.path().join("v.txt"), "two").unwrap();
    let (img, err) = build_to_layout(root.path(), ctx.path(), &[]);
    assert!(
        cached(&err).is_empty(),
        "a changed source stage re-runs the COPY --from:\n{err}"
    );
    assert_eq!(
        all_entries(&img)["out"].content.as_deref(),
        Some(&b"two"[..])
    );
}

#[test]
fn a_step_after_cached_ones_sees_their_files() {
    // Cached layers are not unpacked until a step needs the filesystem; when one does, every
    // earlier layer (base and cached) must be there.
    let root = store_with_busybox();
    let df = "FROM busybox AS base\nCOPY a.txt /a.txt\nRUN cp /a.txt /a-copy\n\n\
              FROM base\nARG N=1\nRUN cat /a.txt /a-copy > /both && echo \"$N\" >> /both\n\n\
              FROM scratch\nCOPY --from=1 /both /both\n";
    let ctx = context(&[("Dockerfile", df), ("a.txt", "A\n")]);
    build_to_layout(root.path(), ctx.path(), &[]);
    let (img, err) = build_to_layout(root.path(), ctx.path(), &["--build-arg", "N=2"]);
    assert_eq!(cached(&err), [1, 2], "the first stage is cached:\n{err}");
    assert_eq!(
        all_entries(&img)["both"].content.as_deref(),
        Some(&b"A\nA\n2\n"[..]),
        "the re-run step saw the cached layers' files"
    );
}

/// The snapshot directories of a store, by name, with their inode numbers (a re-made snapshot
/// gets a new inode).
fn snapshot_dirs(root: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(root.join("snapshots"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| {
                    let ino = e.metadata().unwrap().ino();
                    (e.file_name().to_string_lossy().into_owned(), ino)
                })
                .collect()
        })
        .unwrap_or_default()
}

const EDIT_LOOP: &str = "FROM busybox\n\
RUN mkdir -p /data && echo hi > /data/x && rm -rf /etc/group && mkdir -p /opt/d && touch /opt/d/old\n\
RUN rm -rf /opt/d && mkdir /opt/d && echo new > /opt/d/new\n\
COPY app /app\n\
WORKDIR /work\n\
RUN test ! -e /etc/group && test ! -e /opt/d/old && cat /opt/d/new /data/x /app/main.txt > /work/seen\n";

/// A RUN after cached steps sees exactly the chain's tree (a whiteout hides the base's file, an
/// opaque directory hides the base's entries), built over the snapshots the first build committed;
/// an edit re-makes only what follows it, and a rebuild with nothing changed makes no snapshot.
fn edit_loop_on(snapshotter: &str) {
    let root = store_with_busybox();
    let ctx = context(&[("Dockerfile", EDIT_LOOP), ("app/main.txt", "v1\n")]);
    let args = ["--source-date-epoch", "0", "--snapshotter", snapshotter];
    let (first, _) = build_to_layout(root.path(), ctx.path(), &args);
    let seen = |img: &LayoutImage| all_entries(img)["work/seen"].content.clone().unwrap();
    assert_eq!(seen(&first), b"new\nhi\nv1\n");
    let after_first = snapshot_dirs(root.path());
    assert!(
        after_first.len() >= 3,
        "the base and both RUNs have snapshots: {after_first:?}"
    );

    fs::write(ctx.path().join("app/main.txt"), "v2\n").unwrap();
    let (second, err2) = build_to_layout(root.path(), ctx.path(), &args);
    assert_eq!(cached(&err2), [1, 2], "{err2}");
    assert_eq!(seen(&second), b"new\nhi\nv2\n", "{err2}");
    let after_second = snapshot_dirs(root.path());
    for (name, ino) in &after_first {
        if let Some(now) = after_second.get(name) {
            assert_eq!(now, ino, "snapshot {name} was re-made:\n{err2}");
        }
    }

    let _ = build_to_layout(root.path(), ctx.path(), &args);
    assert_eq!(
        snapshot_dirs(root.path()),
        after_second,
        "a fully cached rebuild makes no snapshot"
    );
    let fsck = kiln_ok(root.path(), &["fsck"]);
    assert!(fsck.contains("no damage found"), "{fsck}");
}

#[test]
fn an_edit_rebuild_reuses_committed_snapshots_on_overlayfs() {
    edit_loop_on("overlayfs");
}

#[test]
fn an_edit_rebuild_reuses_committed_snapshots_on_native() {
    edit_loop_on("native");
}

/// `kiln import` commits the image's snapshots, as `docker load` unpacks what it loads: the first
/// build on it unpacks nothing.
#[test]
fn an_imported_base_is_unpacked_at_import_not_by_the_first_build() {
    let root = store_with_busybox();
    let base_layers = layout_image(&busybox_layout(), "latest").layers.len();
    assert_eq!(snapshot_dirs(root.path()).len(), base_layers);
    let ctx = context(&[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")]);
    let (img, err) = build_to_layout(root.path(), ctx.path(), &[]);
    assert!(
        err.contains(&format!(
            "filesystem: {base_layers} layer(s) from committed snapshots, 0 unpacked"
        )),
        "{err}"
    );
    assert_eq!(
        all_entries(&img)["hi"].content.as_deref(),
        Some(&b"hi\n"[..])
    );
}

/// Ten `kiln build` processes at once on one store and one base: the base's layers are unpacked
/// once (an flock per chain ID; whoever waited finds the record), each RUN commits its own.
#[test]
fn concurrent_builds_on_one_base_share_its_snapshots() {
    let root = store_with_busybox();
    let ctxs: Vec<_> = (0..10)
        .map(|i| {
            let df = format!("FROM busybox\nRUN echo {i} > /n && cat /etc/passwd > /p\n");
            context(&[("Dockerfile", &df)])
        })
        .collect();
    let children: Vec<_> = ctxs
        .iter()
        .map(|c| {
            std::process::Command::new(kiln_bin())
                .arg("--root")
                .arg(root.path())
                .args(["build", "--progress", "plain"])
                .arg(c.path())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One snapshot per base layer plus one per RUN: none made twice under another name, no
    // half-made one left beside them.
    let base_layers = layout_image(&busybox_layout(), "latest").layers.len();
    let dirs = snapshot_dirs(root.path());
    let fsck = kiln_ok(root.path(), &["fsck"]);
    assert!(fsck.contains("no damage found"), "{fsck}");
    assert_eq!(dirs.len(), base_layers + 10, "{dirs:?}");
}

/// Whether a snapshot is being filled right now (a `snapshot-*` directory in a session's temp).
fn filling(root: &std::path::Path) -> bool {
    let Ok(sessions) = fs::read_dir(root.join("tmp")) else {
        return false;
    };
    sessions.flatten().any(|s| {
        fs::read_dir(s.path()).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
        })
    })
}

#[test]
fn a_build_killed_while_unpacking_leaves_nothing_a_later_build_trusts() {
    let root = store_with_busybox();
    let mut files = vec![(
        "Dockerfile".to_string(),
        "FROM busybox\nCOPY files /files\n".to_string(),
    )];
    for i in 0..4000 {
        files.push((format!("files/d{}/f{i}", i % 40), "x".repeat(2048)));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let base = context(&refs);
    kiln_ok(
        root.path(),
        &["build", "-t", "big:1", base.path().to_str().unwrap()],
    );
    let ctx = context(&[(
        "Dockerfile",
        "FROM big:1\nRUN find /files -type f | wc -l > /count\n",
    )]);
    let mut killed = 0;
    for _ in 0..3 {
        let mut child = std::process::Command::new(kiln_bin())
            .arg("--root")
            .arg(root.path())
            .args(["build", "--no-cache", ctx.path().to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !filling(root.path()) && std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        let fsck = kiln_ok(root.path(), &["fsck"]);
        assert!(fsck.contains("no damage found"), "{fsck}");
        let left = kiln_ok(root.path(), &["images"]);
        assert!(left.contains("big"), "{left}");
        // Remove what a finished run committed, so the next run unpacks (and is killed) again.
        kiln_ok(root.path(), &["prune", "--all"]);
    }
    assert!(
        killed > 0,
        "LOUD: no run was caught unpacking; the test proved nothing"
    );
    let (img, err) = build_to_layout(root.path(), ctx.path(), &[]);
    assert_eq!(
        all_entries(&img)["count"].content.as_deref(),
        Some(&b"4000\n"[..]),
        "{err}"
    );
    let fsck = kiln_ok(root.path(), &["fsck"]);
    assert!(fsck.contains("no damage found"), "{fsck}");
}

#[test]
fn an_edit_rebuild_reuses_committed_snapshots_rootless() {
    let r = Rootless::new(&[("Dockerfile", EDIT_LOOP), ("app/main.txt", "v1\n")]);
    let state = r.dir.path().join("state");
    let (first, _) = r.build(&["--source-date-epoch", "0"]);
    let seen = |img: &LayoutImage| all_entries(img)["work/seen"].content.clone().unwrap();
    assert_eq!(seen(&first), b"new\nhi\nv1\n");
    let after_first = snapshot_dirs(&state);
    assert!(after_first.len() >= 3, "{after_first:?}");
    let ctx = r.ctx();
    fs::write(ctx.join("app/main.txt"), "v2\n").unwrap();
    let (second, err2) = r.build(&["--source-date-epoch", "0"]);
    assert_eq!(cached(&err2), [1, 2], "{err2}");
    assert_eq!(seen(&second), b"new\nhi\nv2\n", "{err2}");
    let after_second = snapshot_dirs(&state);
    for (name, ino) in &after_first {
        if let Some(now) = after_second.get(name) {
            assert_eq!(now, ino, "snapshot {name} was re-made:\n{err2}");
        }
    }
    let fsck = r.kiln(&["fsck"]);
    assert!(!fsck.contains("broken"), "{fsck}");
}

#[test]
fn fsck_snapshots_rechecks_each_snapshot_against_its_layer() {
    let root = store_with_busybox();
    let ctx = context(&[("Dockerfile", EDIT_LOOP), ("app/main.txt", "v1\n")]);
    build_to_layout(root.path(), ctx.path(), &["--source-date-epoch", "0"]);
    let clean = kiln_ok(root.path(), &["fsck", "--snapshots"]);
    assert!(clean.contains("no damage found"), "{clean}");
    let n: usize = clean
        .split("re-applied the layers of ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(
        n >= 3,
        "the base, both RUNs' uppers and the rest are checked:\n{clean}"
    );
    // A file of a committed snapshot changed behind kiln's back.
    let victim = fs::read_dir(root.path().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("data/x"))
        .find(|p| p.is_file())
        .expect("the first RUN's snapshot holds /data/x");
    fs::write(&victim, "tampered\n").unwrap();
    let out = kiln(root.path(), &["fsck", "--snapshots"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("broken snapshot") && text.contains("data/x differs"),
        "{text}"
    );
}
