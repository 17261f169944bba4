//! Unit tests of the image types: Docker field names, round trips, canonical JSON.

use super::*;

#[test]
fn rfc3339_known_values() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_704_164_645), "2024-01-02T03:04:05Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
}

#[test]
fn canonical_json_sorts_nested_keys_without_whitespace() {
    let v = serde_json::json!({"b": {"z": 1, "a": [ {"y": 2, "x": "<&>"} ]}, "a": null});
    let out = String::from_utf8(canonical_json(&v).unwrap()).unwrap();
    assert_eq!(out, r#"{"a":null,"b":{"a":[{"x":"<&>","y":2}],"z":1}}"#);
}

#[test]
fn docker_config_with_nulls_and_unknown_fields_round_trips() {
    let raw = br#"{"architecture":"amd64","os":"linux","docker_version":"24.0.7",
      "container_config":{"Hostname":"abc","Cmd":["/bin/sh"]},
      "config":{"Hostname":"","Env":["PATH=/bin"],"Cmd":null,"Entrypoint":null,"OnBuild":null,
        "Labels":null,"Volumes":null,"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":30000000000},
        "Shell":["/bin/bash","-c"],"ArgsEscaped":true,"ExposedPorts":{"80/tcp":{}}},
      "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
      "history":[{"created":"2024-01-02T03:04:05Z","created_by":"ADD x","empty_layer":false},{"created_by":"CMD","empty_layer":true}]}"#;
    let c = ImageConfig::from_slice(raw).unwrap();
    assert_eq!(c.config.cmd, None);
    assert_eq!(c.config.shell, vec!["/bin/bash", "-c"]);
    assert_eq!(
        c.config.healthcheck.as_ref().unwrap().interval,
        Some(30_000_000_000)
    );
    assert_eq!(c.config.env_get("PATH"), Some("/bin"));
    assert!(c.extra.contains_key("docker_version"));
    assert!(c.config.extra.contains_key("Hostname"));
    let out = String::from_utf8(canonical_json(&c).unwrap()).unwrap();
    assert!(out.contains(r#""docker_version":"24.0.7""#), "{out}");
    assert!(
        out.contains(r#""container_config":{"Cmd":["/bin/sh"],"Hostname":"abc"}"#),
        "{out}"
    );
    assert!(out.contains(r#""Healthcheck":{"Interval":30000000000,"Test":["CMD-SHELL","true"]}"#));
    assert!(out.contains(r#""ExposedPorts":{"80/tcp":{}}"#));
    assert!(!out.contains("null"), "{out}");
    assert!(!out.contains(r#""empty_layer":false"#), "{out}");
    let again = ImageConfig::from_slice(out.as_bytes()).unwrap();
    assert_eq!(again, c);
    assert_eq!(canonical_json(&again).unwrap(), out.as_bytes());
}

#[test]
fn entrypoint_cleared_is_kept_as_empty_list() {
    let mut c = ImageConfig::new(&Platform::new("linux", "amd64", None));
    c.config.entrypoint = Some(vec![]);
    let out = String::from_utf8(canonical_json(&c).unwrap()).unwrap();
    assert!(out.contains(r#""Entrypoint":[]"#), "{out}");
}

#[test]
fn env_set_replaces_in_place() {
    let mut c = ContainerConfig::default();
    c.env_set("A", "1");
    c.env_set("B", "2");
    c.env_set("A", "3");
    assert_eq!(c.env, vec!["A=3", "B=2"]);
}

#[test]
fn manifest_and_index_parse_and_select_platform() {
    let d = Digest::of(b"x");
    let mut amd = Descriptor::new(MEDIA_OCI_MANIFEST, d.clone(), 1);
    amd.platform = Some(Platform::new("linux", "amd64", None));
    let mut arm = Descriptor::new(MEDIA_DOCKER_MANIFEST, Digest::of(b"y"), 1);
    arm.platform = Some(Platform::new("linux", "arm64", None));
    let idx = Index::new(vec![arm.clone(), amd.clone()]);
    let bytes = canonical_json(&idx).unwrap();
    let back = Index::from_slice(&bytes).unwrap();
    assert_eq!(
        back.select(&Platform::new("linux", "amd64", None)),
        Some(&amd)
    );
    assert_eq!(
        back.select(&Platform::new("linux", "arm64", Some("v8"))),
        Some(&arm)
    );
    assert_eq!(back.select(&Platform::new("linux", "s390x", None)), None);
    assert_eq!(sniff_manifest_kind(&bytes), Some(ManifestKind::Index));

    let m = Manifest::new(
        Descriptor::new(MEDIA_OCI_CONFIG, d.clone(), 2),
        vec![Descriptor::new(MEDIA_OCI_LAYER_GZIP, d, 3)],
    );
    let (bytes, desc) = m.to_blob().unwrap();
    assert_eq!(desc.media_type, MEDIA_OCI_MANIFEST);
    assert_eq!(desc.size, bytes.len() as u64);
    let s = String::from_utf8(bytes.clone()).unwrap();
    assert!(s.starts_with(r#"{"config":{"digest":"sha256:"#), "{s}");
    assert_eq!(Manifest::from_slice(&bytes).unwrap(), m);
    let mut no_mt: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    no_mt.as_object_mut().unwrap().remove("mediaType");
    let no_mt = serde_json::to_vec(&no_mt).unwrap();
    assert_eq!(sniff_manifest_kind(&no_mt), Some(ManifestKind::Manifest));
    let bad = br#"{"schemaVersion":1,"config":{"mediaType":"x","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
    assert!(Manifest::from_slice(bad)
        .unwrap_err()
        .to_string()
        .contains("schemaVersion 1"));
}

#[test]
fn platform_fields_are_shared_with_descriptors_and_tolerate_docker_nulls() {
    let raw = br#"{"architecture":"arm64","os":"linux","variant":"v8","os.features":null,"container":"abc","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let c = ImageConfig::from_slice(raw).unwrap();
    assert_eq!(c.platform, Platform::new("linux", "arm64", Some("v8")));
    assert!(
        c.extra.contains_key("container"),
        "unknown keys survive: {:?}",
        c.extra
    );
    assert!(
        !c.extra.contains_key("architecture"),
        "platform keys are not duplicated into extra"
    );
    let out = String::from_utf8(canonical_json(&c).unwrap()).unwrap();
    assert_eq!(
        out,
        r#"{"architecture":"arm64","config":{},"container":"abc","os":"linux","rootfs":{"diff_ids":[],"type":"layers"},"variant":"v8"}"#
    );
}

#[test]
fn index_select_tells_arm_variants_apart() {
    let entry = |n: &[u8], v: Option<&str>| {
        let mut d = Descriptor::new(MEDIA_OCI_MANIFEST, Digest::of(n), 1);
        d.platform = Some(Platform::new("linux", "arm", v));
        d
    };
    let (v6, v7) = (entry(b"6", Some("v6")), entry(b"7", Some("v7")));
    let idx = Index::new(vec![v7.clone(), v6.clone()]);
    assert_eq!(
        idx.select(&Platform::new("linux", "arm", Some("v6"))),
        Some(&v6)
    );
    assert_eq!(
        idx.select(&Platform::new("linux", "arm", Some("v7"))),
        Some(&v7)
    );
    assert_eq!(idx.select(&Platform::new("linux", "arm", Some("v5"))), None);
    assert_eq!(idx.select(&Platform::new("linux", "arm64", None)), None);
}
