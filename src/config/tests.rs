//! Unit tests of the config parser: buildkitd.toml compatibility, unknown keys, redaction.

use super::*;

const BUILDKIT_STYLE: &str = r#"
debug = true
insecure_registries = "a.example:5000, b.example"

[registry."registry.example.com"]
  http = false
  insecure = true
  ca = ["/usr/local/share/ca-certificates/corp.crt"]
  client = ["/etc/ssl/certs/client-cert.pem", "/etc/ssl/private/client-key.pem"]
  [[registry."registry.example.com".keypair]]
    cert = "/etc/ssl/certs/c2.pem"
    key = "/etc/ssl/private/k2.pem"
  tlsconfigdir = ["/etc/kiln/certs.d/registry.example.com"]

[registry."index.docker.io"]
  mirrors = ["mirror.example.com", "other.example/prefix"]

[registry."127.0.0.1:5000"]
  http = true
  upload = "chunked"
  chunk-size = "4MiB"
  max-concurrency = 2
  username = "ci"
  password = "hunter2-very-secret"

[worker.oci]
  max-parallelism = 8
  snapshotter = "auto"
  gc = true
  gckeepstorage = "20GB"
  reservedSpace = "10%"
  maxUsedSpace = 1000000
  platforms = ["linux/amd64"]
  bogus = 1

[daemon]
  socket = "/run/kiln/kiln.sock"
  socket_mode = "0660"
  socket_group = "kiln"
  allowed_uids = [1000, 1001]
  allowed_gids = [100]
  context_roots = ["/build"]
  max_concurrent_builds = 4
  capacity = 75

[build]
  compression = "zstd"
  compression_level = 3
  source_date_epoch = 0

[nonsense]
  x = 1
"#;

#[test]
fn buildkit_file_parses_with_every_section() {
    let c = Config::from_toml_str(BUILDKIT_STYLE, "/etc/kiln/kiln.toml").unwrap();
    let r = c.registry("registry.example.com");
    assert!(r.insecure && !r.http);
    assert_eq!(
        r.ca,
        vec![PathBuf::from("/usr/local/share/ca-certificates/corp.crt")]
    );
    assert_eq!(r.keypairs.len(), 2);
    assert_eq!(
        r.keypairs[0].key,
        PathBuf::from("/etc/ssl/private/client-key.pem")
    );
    assert_eq!(r.keypairs[1].cert, PathBuf::from("/etc/ssl/certs/c2.pem"));
    assert_eq!(r.tlsconfigdir.len(), 1);
    // Docker Hub's three names are one registry.
    for h in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
        assert_eq!(
            c.registry(h).mirrors,
            vec!["mirror.example.com", "other.example/prefix"]
        );
    }
    let local = c.registry("127.0.0.1:5000");
    assert!(local.http);
    assert_eq!(local.upload, UploadMode::Chunked);
    assert_eq!(local.chunk_size, Some(4 << 20));
    assert_eq!(local.max_concurrency, Some(2));
    assert_eq!(c.worker.max_parallelism, Some(8));
    assert_eq!(c.worker.gckeepstorage, Some(DiskSpace::Bytes(20 << 30)));
    assert_eq!(c.worker.reserved_space, Some(DiskSpace::Percent(10)));
    assert_eq!(c.worker.max_used_space, Some(DiskSpace::Bytes(1_000_000)));
    assert_eq!(c.daemon.socket_mode, Some(0o660));
    assert_eq!(c.daemon.allowed_uids, vec![1000, 1001]);
    assert_eq!(c.daemon.capacity, Some(75));
    assert_eq!(c.build.compression.as_deref(), Some("zstd"));
    assert_eq!(c.build.source_date_epoch, Some(0));
    // The insecure list marks hosts insecure without a section of their own.
    assert!(c.registry("a.example:5000").insecure);
    assert!(c.registry("b.example").insecure);
    assert!(!c.registry("c.example").insecure);
}

#[test]
fn unknown_keys_warn_naming_key_and_file() {
    let c = Config::from_toml_str(BUILDKIT_STYLE, "/etc/kiln/kiln.toml").unwrap();
    let w = c.warnings.join("\n");
    for key in [
        "worker.oci.bogus",
        "nonsense",
        "debug",
        "worker.oci.platforms",
        "keypair.tlsconfigdir",
    ] {
        assert!(
            c.warnings
                .iter()
                .any(|l| l.contains(key) && l.contains("/etc/kiln/kiln.toml")),
            "no warning for {key}: {w}"
        );
    }
    // The five unknown keys; gc = true is applied (store::gc), so not warned about.
    assert!(!w.contains("worker.oci.gc"), "{w}");
    assert_eq!(c.warnings.len(), 5, "{w}");
}

#[test]
fn invalid_toml_names_the_line() {
    let text = "[registry.\"a\"]\nhttp = true\ninsecure = = 1\n";
    let e = Config::from_toml_str(text, "my.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("my.toml") && e.contains("line 3"), "{e}");
}

#[test]
fn wrong_types_name_the_key() {
    let e = Config::from_toml_str("[registry.\"h\"]\nhttp = \"yes\"\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("registry.\"h\".http") && e.contains("f.toml"),
        "{e}"
    );
    let e = Config::from_toml_str("[worker.oci]\nmax-parallelism = \"four\"\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("worker.oci.max-parallelism"), "{e}");
    // A snapshotter buildkit has and kiln has not is a warning: the file stays usable.
    let c = Config::from_toml_str("[worker.oci]\nsnapshotter = \"stargz\"\n", "f.toml").unwrap();
    assert_eq!(c.worker.snapshotter, None);
    assert!(c.warnings[0].contains("stargz"), "{:?}", c.warnings);
}

#[test]
fn a_real_buildkitd_toml_is_applied_with_every_unused_key_warned() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/config/buildkitd.toml"
    );
    let c = Config::load(Path::new(path)).unwrap();
    let hub = c.registry("docker.io");
    assert_eq!(hub.mirrors.len(), 2);
    assert!(hub.http && hub.insecure);
    assert_eq!(hub.keypairs.len(), 1);
    assert!(c.registry("yourmirror.local:5000").http);
    assert_eq!(c.worker.max_parallelism, Some(4));
    // Both [[worker.oci.gcpolicy]] rules, as buildkitd reads them.
    assert_eq!(c.worker.gc, Some(true));
    assert_eq!(c.worker.gcpolicy.len(), 2);
    let p0 = &c.worker.gcpolicy[0];
    assert_eq!(p0.reserved_space, Some(DiskSpace::Bytes(512 << 20)));
    assert_eq!(
        p0.keep_duration,
        Some(std::time::Duration::from_secs(48 * 3600))
    );
    assert_eq!(p0.filters.len(), 3);
    assert!(!p0.all && c.worker.gcpolicy[1].all);
    assert_eq!(
        c.worker.gcpolicy[1].reserved_space,
        Some(DiskSpace::Bytes(1_024_000_000))
    );
    let w = c.warnings.join("\n");
    assert!(
        !w.contains("gcpolicy") && !w.contains("worker.oci.gc "),
        "{w}"
    );
    for key in [
        "debug",
        "trace",
        "root",
        "insecure-entitlements",
        "log",
        "dns",
        "grpc",
        "otel",
        "cdi",
        "history",
        "system",
        "frontend",
        "worker.containerd",
        "worker.oci.enabled",
        "worker.oci.platforms",
        "worker.oci.rootless",
        "worker.oci.noProcessSandbox",
        "worker.oci.cniPoolSize",
        "worker.oci.apparmor-profile",
        "worker.oci.selinux",
        "worker.oci.labels",
    ] {
        assert!(
            c.warnings
                .iter()
                .any(|l| l.contains(key) && l.contains(path)),
            "no warning for {key}:\n{w}"
        );
    }
}

#[test]
fn display_and_debug_redact_secrets() {
    let c = Config::from_toml_str(BUILDKIT_STYLE, "x.toml").unwrap();
    let shown = c.to_string();
    let debug = format!("{c:?}");
    let json = serde_json::to_string(&c).unwrap();
    for out in [&shown, &debug, &json] {
        assert!(!out.contains("hunter2"), "secret leaked: {out}");
        assert!(out.contains("redacted"), "{out}");
    }
    // The shown TOML is itself a valid config carrying the same settings.
    let back = Config::from_toml_str(&shown.replace("\"<redacted>\"", "\"x\""), "shown").unwrap();
    assert_eq!(back.registry("127.0.0.1:5000").chunk_size, Some(4 << 20));
    assert_eq!(back.worker.reserved_space, Some(DiskSpace::Percent(10)));
    assert_eq!(back.registry("docker.io").mirrors.len(), 2);
}

#[test]
fn insecure_list_merges_and_normalises() {
    let mut c = Config::default();
    c.merge_insecure_registries("x:1, ,index.docker.io,x:1");
    assert_eq!(c.insecure_registries, vec!["x:1", "docker.io"]);
    assert!(c.registry("registry-1.docker.io").insecure);
}

#[test]
fn missing_default_file_gives_defaults_but_explicit_load_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("none.toml");
    assert!(Config::load_or_default(&p).unwrap().registry.is_empty());
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.contains("none.toml"), "{e}");
}

#[test]
fn sizes() {
    // Docker's binary units, as BuildKit's DiskSpace reads them (go-units RAMInBytes).
    assert_eq!(super::parse_size("20GB"), Ok(20 << 30));
    assert_eq!(super::parse_size("1.5MiB"), Ok(1_572_864));
    assert_eq!(super::parse_size("12"), Ok(12));
    assert!(super::parse_size("12 parsecs").is_err());
}

#[test]
fn gcpolicy_rules_name_the_bad_key() {
    let text = "[worker.oci]\ngc = true\n[[worker.oci.gcpolicy]]\nkeepDuration = \"soon\"\n";
    let e = Config::from_toml_str(text, "k.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("worker.oci.gcpolicy[0].keepDuration") && e.contains("soon"),
        "{e}"
    );
    let text =
        "[worker.oci]\n[[worker.oci.gcpolicy]]\nkeepBytes = \"1g\"\nkeepDuration = 60\nbogus = 1\n";
    let c = Config::from_toml_str(text, "k.toml").unwrap();
    assert_eq!(
        c.worker.gcpolicy[0].keep_bytes,
        Some(DiskSpace::Bytes(1 << 30))
    );
    assert_eq!(
        c.worker.gcpolicy[0].keep_duration,
        Some(std::time::Duration::from_secs(60))
    );
    assert!(
        c.warnings[0].contains("worker.oci.gcpolicy[0].bogus"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn gcpolicy_rules_show_as_buildkitd_writes_them() {
    let text = "[worker.oci]\ngc = true\n[[worker.oci.gcpolicy]]\nfilters = [\"type==regular\"]\nkeepDuration = \"48h\"\n[[worker.oci.gcpolicy]]\nall = true\nmaxUsedSpace = \"10%\"\n";
    let c = Config::from_toml_str(text, "k.toml").unwrap();
    let shown = c.to_redacted_toml();
    assert!(shown.contains("[[worker.oci.gcpolicy]]"), "{shown}");
    assert!(shown.contains("keepDuration = \"172800s\""), "{shown}");
    assert!(shown.contains("maxUsedSpace = \"10%\""), "{shown}");
    let again = Config::from_toml_str(&shown, "shown").unwrap();
    assert_eq!(again.worker.gcpolicy, c.worker.gcpolicy, "{shown}");
}

#[test]
fn emulators_and_binfmt_are_read_and_their_unknown_neighbours_warned() {
    let text = "[worker.oci]\nbinfmt = false\nemulators = { arm64 = \"/opt/qemu-aarch64-static\", riscv64 = \"/opt/qemu-riscv64\" }\nemulatorz = 1\n";
    let c = Config::from_toml_str(text, "/etc/kiln/kiln.toml").unwrap();
    assert_eq!(c.worker.binfmt, Some(false));
    assert_eq!(
        c.worker
            .emulators
            .get("arm64")
            .map(|p| p.display().to_string()),
        Some("/opt/qemu-aarch64-static".to_string())
    );
    assert_eq!(c.worker.emulators.len(), 2);
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("worker.oci.emulatorz"),
        "{:?}",
        c.warnings
    );
    let e = Config::from_toml_str("[worker.oci]\nemulators = { arm64 = 1 }\n", "k.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("worker.oci.emulators.arm64"), "{e}");
}
