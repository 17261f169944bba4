//! CA injection (issue 14): the platform's private CA (`/usr/local/share/ca-certificates/*.crt`,
//! which this machine has: its egress is TLS-intercepted) is seen by RUN steps — at
//! /run/kiln/ca-certificates.crt, read-only over the image's own bundle, and through
//! SSL_CERT_FILE & co. — and never reaches a layer or the image config; `[worker.oci]
//! ca-injection = false` turns it off; proxy variables reach RUN and not the image.

use std::process::Command;

use crate::support::*;

const DOCKERFILE: &str = "FROM busybox
RUN mkdir -p /etc/ssl/certs && echo image-roots > /etc/ssl/certs/ca-certificates.crt
RUN cat /etc/ssl/certs/ca-certificates.crt > /seen-image-bundle \\
 && (cat /run/kiln/ca-certificates.crt 2>/dev/null || echo none) > /seen-kiln-bundle \\
 && env | sort > /seen-env \\
 && (echo x > /etc/ssl/certs/ca-certificates.crt 2>/dev/null && echo writable || echo read-only) > /seen-write
";

/// A line from the middle of the platform CA's PEM (the base64 body), to look for.
fn platform_ca_line() -> String {
    let dir = std::fs::read_dir("/usr/local/share/ca-certificates")
        .expect("LOUD: this test needs a platform CA in /usr/local/share/ca-certificates/*.crt");
    let pem = dir
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "crt"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .next()
        .expect("LOUD: no *.crt in /usr/local/share/ca-certificates");
    pem.lines().nth(2).unwrap().to_string()
}

fn file(img: &LayoutImage, p: &str) -> String {
    let e = all_entries(img);
    let c = e.get(p).and_then(|e| e.content.clone()).unwrap_or_default();
    String::from_utf8_lossy(&c).into_owned()
}

fn nothing_leaked(img: &LayoutImage) {
    for l in &img.layers {
        for p in layer_entries(l).keys() {
            assert!(!p.starts_with("run/kiln"), "{p} reached a layer");
        }
    }
    assert_eq!(
        file(img, "etc/ssl/certs/ca-certificates.crt"),
        "image-roots\n"
    );
    let cfg = img.config.to_string();
    for k in [
        "SSL_CERT_FILE",
        "PIP_CERT",
        "CURL_CA_BUNDLE",
        "HTTPS_PROXY",
        "proxy.invalid",
    ] {
        assert!(!cfg.contains(k), "{k} in the image config/history: {cfg}");
    }
}

#[test]
fn rootless_run_steps_trust_the_platform_ca_without_it_reaching_the_image() {
    let ca = platform_ca_line();
    let r = Rootless::new(&[("Dockerfile", DOCKERFILE)]);
    let (img, _) = r.build(&[]);
    let seen = file(&img, "seen-image-bundle");
    assert!(
        seen.contains(&ca),
        "the image's bundle path did not show the platform CA: {seen:.200}"
    );
    assert!(file(&img, "seen-kiln-bundle").contains(&ca));
    assert_eq!(file(&img, "seen-write"), "read-only\n");
    let env = file(&img, "seen-env");
    for k in [
        "SSL_CERT_FILE",
        "PIP_CERT",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ] {
        assert!(
            env.contains(&format!("{k}=/run/kiln/ca-certificates.crt")),
            "{env}"
        );
    }
    nothing_leaked(&img);
}

#[test]
fn ca_injection_off_and_proxies_passed_through() {
    let store = store_with_busybox();
    let ctx = context(&[("Dockerfile", DOCKERFILE)]);
    let cfg = ctx.path().join("kiln.toml");
    std::fs::write(&cfg, "[worker.oci]\n  ca-injection = false\n").unwrap();
    let oci = ctx.path().join("out");
    let out = Command::new(kiln_bin())
        .arg("--root")
        .arg(store.path())
        .arg("--config")
        .arg(&cfg)
        .args(["build", "--progress", "plain", "-t", "t:1", "-o"])
        .arg(format!("type=oci,dest={}", oci.display()))
        .arg(ctx.path())
        .env("HTTPS_PROXY", "http://proxy.invalid:3128")
        .env("no_proxy", "localhost")
        .env_remove("KILN_HOST")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = layout_image(&oci, "1");
    assert_eq!(file(&img, "seen-image-bundle"), "image-roots\n");
    assert_eq!(file(&img, "seen-kiln-bundle"), "none\n");
    assert_eq!(file(&img, "seen-write"), "writable\n");
    let env = file(&img, "seen-env");
    assert!(!env.contains("SSL_CERT_FILE"), "{env}");
    assert!(
        env.contains("HTTPS_PROXY=http://proxy.invalid:3128"),
        "{env}"
    );
    assert!(env.contains("no_proxy=localhost"), "{env}");
    // The step wrote the image's bundle itself (injection off): that write is its layer's.
    let cfg_text = img.config.to_string();
    assert!(!cfg_text.contains("proxy.invalid"), "{cfg_text}");
}
