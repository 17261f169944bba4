//! One resolver for both paths: `kiln build` on the embedded engine and the same `kiln build` through
//! `kiln daemon` read the same kiln.toml the same way, so they make the same image — same manifest
//! digest, same layer media types. A flag typed with kiln's default value (`--compression gzip`)
//! still wins over kiln.toml, on both paths.

use std::path::Path;
use std::process::Command;

use crate::support::*;

const DOCKERFILE: &str =
    "FROM busybox\nCOPY hello.txt /srv/hello.txt\nWORKDIR /srv/app\nENV GREETING=hi\n";

/// kiln.toml with every `[build]` setting away from its default.
fn non_default_config(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("kiln.toml");
    std::fs::write(
        &p,
        "[build]\ncompression = \"zstd\"\ncompression_level = 5\nsource_date_epoch = 0\n",
    )
    .unwrap();
    p
}

/// `kiln [--host H] --config F build … CTX` → (manifest digest printed, layer media types).
fn build(
    root: &Path,
    host: Option<&str>,
    config: &Path,
    ctx: &Path,
    out: &Path,
    extra: &[&str],
) -> (String, Vec<String>) {
    let mut cmd = Command::new(kiln_bin());
    cmd.arg("--root").arg(root).arg("--config").arg(config);
    if let Some(h) = host {
        cmd.args(["--host", h]);
    }
    let dest = format!("type=oci,dest={}", out.display());
    cmd.args([
        "build",
        "--progress",
        "plain",
        "-t",
        "parity:1",
        "-o",
        &dest,
    ])
    .args(extra)
    .arg(ctx)
    .env_remove("SOURCE_DATE_EPOCH")
    .env_remove("KILN_HOST")
    .env_remove("KILN_CONFIG");
    let o = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "kiln build (host {host:?}) failed:\n{stderr}"
    );
    let digest = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}\n{stderr}");
    let img = layout_image(out, "1");
    assert_eq!(
        img.manifest_digest, digest,
        "the layout holds what was printed"
    );
    let types = img.manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect();
    (digest, types)
}

fn embedded_and_daemon(extra: &[&str]) -> ((String, Vec<String>), (String, Vec<String>)) {
    let cfg_dir = tempfile::tempdir().unwrap();
    let config = non_default_config(cfg_dir.path());
    let d = Daemon::start(&["--config", config.to_str().unwrap()]);
    let files = [
        ("Dockerfile", DOCKERFILE),
        ("hello.txt", "same bytes either way\n"),
    ];
    let ctx = d.context("parity", &files);

    let local = store_with_busybox();
    let embedded = build(
        local.path(),
        None,
        &config,
        &ctx,
        &cfg_dir.path().join("out-embedded"),
        extra,
    );
    let host = format!("unix://{}", d.socket().display());
    let daemon_out = d.build_root().join("out-daemon");
    let via_daemon = build(local.path(), Some(&host), &config, &ctx, &daemon_out, extra);
    (embedded, via_daemon)
}

#[test]
fn kiln_toml_build_settings_give_the_same_image_embedded_and_through_the_daemon() {
    let (embedded, via_daemon) = embedded_and_daemon(&[]);
    assert_eq!(embedded, via_daemon);
    assert!(
        // The busybox base layer keeps its own (gzip) blob; the build's layers follow kiln.toml.
        embedded.1[1..]
            .iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "[build] compression = \"zstd\" was not applied: {:?}",
        embedded.1
    );
}

#[test]
fn a_flag_typed_with_the_default_value_wins_over_kiln_toml_on_both_paths() {
    let (embedded, via_daemon) = embedded_and_daemon(&["--compression", "gzip"]);
    assert_eq!(embedded, via_daemon);
    assert!(
        embedded
            .1
            .iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar+gzip"),
        "--compression gzip lost to kiln.toml: {:?}",
        embedded.1
    );
}
