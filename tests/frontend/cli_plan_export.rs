//! `kiln plan`, `kiln images`, `kiln export`, `kiln rmi` and `kiln prune` as a user runs them.

use std::fs;
use std::process::Command;

use crate::support::*;

#[test]
fn plan_prints_expanded_steps_as_text_and_json() {
    let root = tempfile::tempdir().unwrap();
    let demo = manifest_dir().join("testdata/demo");
    let text = kiln_ok(
        root.path(),
        &[
            "plan",
            "--build-arg",
            "BASE=busybox:1.36",
            demo.to_str().unwrap(),
        ],
    );
    assert!(
        text.contains("busybox:1.36"),
        "build args reach FROM: {text}"
    );
    assert!(text.contains("assets"), "{text}");
    assert!(
        text.contains("/opt/app"),
        "WORKDIR ${{APP_HOME}} is expanded: {text}"
    );
    let json = kiln_ok(
        root.path(),
        &["plan", "--format", "json", demo.to_str().unwrap()],
    );
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stages = plan["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["name"], "assets");
    assert_eq!(plan["order"], serde_json::json!([0, 1]));
    // --target prunes the final stage.
    let json = kiln_ok(
        root.path(),
        &[
            "plan",
            "--format",
            "json",
            "--target",
            "assets",
            demo.to_str().unwrap(),
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(plan["order"], serde_json::json!([0]));
}

#[test]
fn plan_errors_name_file_line_and_text() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY --frm=x a /b\n")]);
    let e = kiln_err(root.path(), &["plan", ctx.path().to_str().unwrap()]);
    assert!(e.contains("Dockerfile:2") && e.contains("frm"), "{e}");
    let ctx = context(&[("Dockerfile", "FROM scratch\nFROBNICATE x\n")]);
    let e = kiln_err(root.path(), &["plan", ctx.path().to_str().unwrap()]);
    assert!(
        e.contains("Dockerfile:2") && e.to_lowercase().contains("frobnicate"),
        "{e}"
    );
}

/// COPY and ADD sources are split once, by the plan, so what the build cannot do is refused by
/// `kiln plan` already: a URL for COPY (BuildKit's `dispatchCopy` message) and a git source for
/// ADD; an ADD URL is a download and a COPY `git@…` name is a path, as in BuildKit.
#[test]
fn copy_sources_the_build_cannot_take_are_refused_by_the_plan() {
    let root = tempfile::tempdir().unwrap();
    for (df, want) in [
        (
            "FROM scratch\nCOPY https://example.com/a /a\n",
            "source can't be a URL for COPY",
        ),
        (
            "FROM scratch\nADD git@github.com:moby/buildkit.git /src\n",
            "ADD from a git repository (git@github.com:moby/buildkit.git)",
        ),
    ] {
        let ctx = context(&[("Dockerfile", df)]);
        let e = kiln_err(root.path(), &["plan", ctx.path().to_str().unwrap()]);
        assert!(e.contains("Dockerfile:2") && e.contains(want), "{df}: {e}");
    }
    let ctx = context(&[(
        "Dockerfile",
        "FROM scratch\nWORKDIR /w\nADD https://example.com/a.txt local rel/\nCOPY git@x /abs\n",
    )]);
    let json = kiln_ok(
        root.path(),
        &["plan", "--format", "json", ctx.path().to_str().unwrap()],
    );
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    let steps = &plan["stages"][0]["steps"];
    let add = &steps[1]["instruction"]["ADD"];
    assert_eq!(
        add["sources"],
        serde_json::json!(["https://example.com/a.txt", "local"])
    );
    assert_eq!(
        add["dest"], "rel/",
        "the plan shows the destination as written"
    );
    assert_eq!(
        steps[2]["instruction"]["COPY"]["sources"],
        serde_json::json!(["git@x"])
    );
}

/// `kiln plan --build-context` shows what `kiln build` with the same flags reads: FROM NAME the
/// image the name stands for, COPY --from=NAME the local context (BuildKit's named contexts).
#[test]
fn plan_takes_named_contexts_like_build() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&[
        ("Dockerfile", "FROM base\nCOPY --from=src a /a\n"),
        ("other/a", "a\n"),
    ]);
    let dir = ctx.path().to_str().unwrap();
    let src = format!("src={dir}/other");
    let json = kiln_ok(
        root.path(),
        &[
            "plan",
            "--format",
            "json",
            "--build-context",
            "base=docker-image://alpine:3.19",
            "--build-context",
            &src,
            dir,
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stage = &plan["stages"][0];
    assert_eq!(
        stage["base"],
        serde_json::json!({"image": "alpine:3.19"}),
        "{plan}"
    );
    assert_eq!(
        stage["steps"][0]["instruction"]["COPY"]["from"],
        serde_json::json!({"context": "src"}),
        "{plan}"
    );
    let e = kiln_err(root.path(), &["plan", "--build-context", "bad", dir]);
    assert!(
        e.contains("--build-context \"bad\": expected NAME=VALUE"),
        "{e}"
    );
}

#[test]
fn plan_check_lists_build_check_warnings() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&[("Dockerfile", "FROM scratch as base\nENV a b\nCMD echo hi\n")]);
    let out = kiln(
        root.path(),
        &["plan", "--check", ctx.path().to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "--check fails when there are findings: {text}"
    );
    for rule in [
        "FromAsCasing",
        "LegacyKeyValueFormat",
        "JSONArgsRecommended",
    ] {
        assert!(text.contains(rule), "{rule} missing from:\n{text}");
    }
}

#[test]
fn images_export_rmi_and_prune() {
    let root = store_with_busybox();
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY f /f\n"),
        ("f", "payload"),
    ]);
    let digest = kiln_ok(
        root.path(),
        &["build", "-t", "app:2", ctx.path().to_str().unwrap()],
    );
    let images = kiln_ok(root.path(), &["images"]);
    assert!(
        images.contains("docker.io/library/app:2")
            && images.contains("docker.io/library/busybox:latest"),
        "{images}"
    );

    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("layout.tar");
    let archive = out.path().join("app.tar");
    kiln_ok(
        root.path(),
        &[
            "export",
            "app:2",
            "-o",
            &format!("type=oci,dest={}", oci.display()),
            "-o",
            &format!("type=docker,dest={}", archive.display()),
        ],
    );
    let o = Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}:2", oci.display())])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Digest"], digest.trim());
    let o = Command::new("skopeo")
        .args(["inspect", &format!("docker-archive:{}", archive.display())])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    kiln_ok(root.path(), &["rmi", "app:2"]);
    let e = kiln_err(
        root.path(),
        &["export", "app:2", "-o", "type=oci,dest=/tmp/never"],
    );
    assert!(e.contains("app:2"), "{e}");
    let pruned = kiln_ok(root.path(), &["prune"]);
    assert!(
        pruned.contains("removed 3 blob(s)"),
        "manifest, config and the COPY layer go: {pruned}"
    );
    kiln_ok(root.path(), &["fsck"]);
    assert!(!fs::read_to_string(root.path().join("content/index.json"))
        .unwrap()
        .contains("app:2"));
}
