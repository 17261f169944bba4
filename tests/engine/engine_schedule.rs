//! The scheduler, as a user sees it: independent stages run at the same time (each waits for a file
//! the other writes into a shared cache mount, so the build succeeds only if they overlap), a failed
//! stage cancels its siblings and the build reports that failure, `sharing=locked` cache mounts are
//! never used by two steps at once, and step numbers do not depend on which stage started first.

use std::path::Path;

use crate::support::*;

/// kiln.toml allowing two stages at once (the default is the machine's core count).
fn two_at_once(dir: &Path) -> String {
    let p = dir.join("kiln.toml");
    std::fs::write(&p, "[worker.oci]\nmax-parallelism = 2\n").unwrap();
    p.display().to_string()
}

fn build(ctx: &Path, config: &str) -> (bool, String, String) {
    let root = store_with_busybox();
    let out = std::process::Command::new(kiln_bin())
        .args(["--root"])
        .arg(root.path())
        .args([
            "--config",
            config,
            "build",
            "--progress",
            "plain",
            "--no-cache",
        ])
        .arg(ctx)
        .env_remove("KILN_HOST")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each stage announces itself in the shared cache, then waits (10 s at most) for the other.
const RENDEZVOUS: &str = r#"FROM busybox AS left
RUN --mount=type=cache,id=rendezvous,target=/c touch /c/left && for i in $(seq 100); do [ -e /c/right ] && exit 0; sleep 0.1; done; echo "right never ran alongside"; exit 1
FROM busybox AS right
RUN --mount=type=cache,id=rendezvous,target=/c touch /c/right && for i in $(seq 100); do [ -e /c/left ] && exit 0; sleep 0.1; done; echo "left never ran alongside"; exit 1
FROM busybox
COPY --from=left /etc/passwd /left
COPY --from=right /etc/passwd /right
"#;

#[test]
fn independent_stages_run_at_the_same_time() {
    let ctx = context(&[("Dockerfile", RENDEZVOUS)]);
    let (ok, stdout, stderr) = build(ctx.path(), &two_at_once(ctx.path()));
    assert!(ok, "the two stages did not overlap:\n{stderr}");
    assert!(stdout.trim().starts_with("sha256:"), "{stdout}");
    // Step numbers come from the plan, whichever stage starts first.
    assert!(
        stderr.contains("[left 1/4] RUN") && stderr.contains("[right 2/4] RUN"),
        "{stderr}"
    );
}

const ONE_FAILS: &str = r#"FROM busybox AS slow
RUN sleep 60 && echo "slow finished: $((40+2))"
FROM busybox AS broken
RUN echo about to fail && exit 3
FROM busybox
COPY --from=slow /etc/passwd /slow
COPY --from=broken /etc/passwd /broken
"#;

#[test]
fn a_failed_stage_cancels_its_siblings_and_the_build_reports_the_failure() {
    let ctx = context(&[("Dockerfile", ONE_FAILS)]);
    let (ok, _, stderr) = build(ctx.path(), &two_at_once(ctx.path()));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("RUN echo about to fail && exit 3"),
        "the failure is named:\n{stderr}"
    );
    assert!(stderr.contains("exit"), "{stderr}");
    assert!(
        !stderr.contains("slow finished: 42"),
        "the sibling ran to its end:\n{stderr}"
    );
    assert!(
        !stderr.contains("build cancelled"),
        "the failure, not a cancel, ends the build:\n{stderr}"
    );
}

/// Both stages hold a locked cache for a while and record overlapping use; with the lock they
/// never overlap, so neither finds the other's marker.
const LOCKED: &str = r#"FROM busybox AS a
RUN --mount=type=cache,id=apt,target=/c,sharing=locked [ ! -e /c/busy ] && touch /c/busy && sleep 1 && rm /c/busy
FROM busybox AS b
RUN --mount=type=cache,id=apt,target=/c,sharing=locked [ ! -e /c/busy ] && touch /c/busy && sleep 1 && rm /c/busy
FROM busybox
COPY --from=a /etc/passwd /a
COPY --from=b /etc/passwd /b
"#;

#[test]
fn locked_cache_mounts_are_used_by_one_step_at_a_time() {
    let ctx = context(&[("Dockerfile", LOCKED)]);
    let (ok, _, stderr) = build(ctx.path(), &two_at_once(ctx.path()));
    assert!(
        ok,
        "two steps used a sharing=locked cache at once:\n{stderr}"
    );
}
