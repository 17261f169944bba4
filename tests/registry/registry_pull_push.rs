//! Pull and push against a real plain-HTTP registry: skopeo reads back what kiln pushed byte for
//! byte; kiln pulls OCI and Docker schema 2 manifests and indexes with platform choice; blobs
//! already present are neither uploaded nor downloaded again; errors name host and reference.

use crate::support::registry as registry_support;

use kiln::image::{Descriptor, Index, Platform, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX};
use kiln::reference::Reference;
use kiln::registry::{pull, push, BlobOutcome, Credentials, Progress, RegistryError};
use kiln::store::{Store, MAX_JSON_BLOB};
use registry_support::*;

fn r(s: &str) -> Reference {
    s.parse().unwrap()
}

fn outcomes(events: &[Progress]) -> Vec<BlobOutcome> {
    events
        .iter()
        .filter_map(|p| match p {
            Progress::BlobDone { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .collect()
}

fn fresh_store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("root")).unwrap();
    (d, s)
}

#[test]
fn push_then_skopeo_reads_it_back_and_pull_round_trips() {
    let reg = Registry::plain();
    let c = client(&reg.config_section(), Credentials::new());
    let (_d, store, desc) = store_with_busybox();
    let dest = r(&format!("{}/kiln/busybox:1.0", reg.addr));

    let mut ev = Vec::new();
    let pushed = push(&c, &store, &desc, &dest, &mut |p| ev.push(p)).unwrap();
    assert_eq!(pushed.digest, desc.digest);
    assert_eq!(
        outcomes(&ev),
        vec![BlobOutcome::Uploaded, BlobOutcome::Uploaded]
    );

    // skopeo sees exactly the manifest bytes kiln has.
    let url = format!("docker://{}/kiln/busybox:1.0", reg.addr);
    let (ok, raw, err) = skopeo(&["inspect", "--tls-verify=false", "--raw", &url]);
    assert!(ok, "{err}");
    let local = store.read_blob(&desc.digest, MAX_JSON_BLOB).unwrap();
    assert_eq!(raw.as_bytes(), &local[..]);
    let (ok, out, err) = skopeo(&["inspect", "--tls-verify=false", &url]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], desc.digest.to_string());
    assert_eq!(v["Os"], "linux");

    // A second push (another tag) finds every blob there already.
    let mut ev = Vec::new();
    let dest2 = r(&format!("{}/kiln/busybox:2.0", reg.addr));
    push(&c, &store, &desc, &dest2, &mut |p| ev.push(p)).unwrap();
    assert_eq!(outcomes(&ev), vec![BlobOutcome::AlreadyRemote; 2]);

    // Pull into an empty store: same digest, blobs verified in, tagged.
    let (_d2, s2) = fresh_store();
    let mut ev = Vec::new();
    let got = pull(&c, &s2, &dest, &Platform::host(), &mut |p| ev.push(p)).unwrap();
    assert_eq!(got.digest, desc.digest);
    assert_eq!(outcomes(&ev), vec![BlobOutcome::Downloaded; 2]);
    assert_eq!(
        s2.resolve(&dest.store_name()).unwrap().unwrap().digest,
        desc.digest
    );
    let img = s2.image(&dest.store_name()).unwrap();
    assert!(s2.has_blob(&img.manifest.layers[0].digest));
    assert!(s2.fsck().unwrap().is_clean());

    // Pull again: nothing is fetched.
    let mut ev = Vec::new();
    pull(&c, &s2, &dest, &Platform::host(), &mut |p| ev.push(p)).unwrap();
    assert_eq!(outcomes(&ev), vec![BlobOutcome::AlreadyLocal; 2]);

    // By digest too.
    let by_digest = r(&format!("{}/kiln/busybox@{}", reg.addr, desc.digest));
    let (_d3, s3) = fresh_store();
    assert_eq!(
        pull(&c, &s3, &by_digest, &Platform::host(), &mut |_| {})
            .unwrap()
            .digest,
        desc.digest
    );
}

#[test]
fn docker_schema2_manifests_pull() {
    let reg = Registry::plain();
    let layout = busybox_layout();
    let src = format!("oci:{}:latest", layout.display());
    let dst = format!("docker://{}/v2s2/busybox:latest", reg.addr);
    let (ok, _, err) = skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &src,
        &dst,
    ]);
    assert!(ok, "{err}");
    let c = client(&reg.config_section(), Credentials::new());
    let (_d, s) = fresh_store();
    let reference = r(&format!("{}/v2s2/busybox", reg.addr));
    let got = pull(&c, &s, &reference, &Platform::host(), &mut |_| {}).unwrap();
    assert_eq!(got.media_type, MEDIA_DOCKER_MANIFEST);
    let img = s.image(&reference.store_name()).unwrap();
    assert_eq!(
        img.config.platform.architecture,
        Platform::host().architecture
    );
    // kiln pushes what it pulled, unchanged: skopeo sees the same digest.
    let (ok, out, err) = skopeo(&["inspect", "--tls-verify=false", &dst]);
    assert!(ok, "{err}");
    assert!(out.contains(&got.digest.to_string()));
}

#[test]
fn index_push_and_platform_choice_on_pull() {
    let reg = Registry::plain();
    let c = client(&reg.config_section(), Credentials::new());
    let (_d, store, bb) = store_with_busybox();
    let other = random_image(&store, 4096, "arm64");
    let mut amd = bb.clone();
    amd.annotations.clear();
    amd.platform = Some(Platform::host());
    let mut arm = other.clone();
    arm.platform = Some(Platform::new("linux", "arm64", Some("v8")));
    let index = Index::new(vec![amd, arm]);
    let bytes = kiln::image::canonical_json(&index).unwrap();
    let idx = Descriptor::for_bytes(MEDIA_OCI_INDEX, &bytes);
    store.put_bytes(&bytes, Some(&idx.digest)).unwrap();
    let dest = r(&format!("{}/multi/app:v1", reg.addr));
    push(&c, &store, &idx, &dest, &mut |_| {}).unwrap();

    let (ok, raw, err) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{dest}"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(raw.as_bytes(), &bytes[..]);

    for (platform, want) in [
        (Platform::new("linux", "arm64", None), &other.digest),
        (Platform::host(), &bb.digest),
    ] {
        let (_d, s) = fresh_store();
        let got = pull(&c, &s, &dest, &platform, &mut |_| {}).unwrap();
        assert_eq!(&got.digest, want, "platform {platform}");
        assert_eq!(
            got.platform.as_ref().map(|p| p.architecture.clone()),
            Some(platform.architecture.clone())
        );
    }
    let (_d, s) = fresh_store();
    let e = pull(
        &c,
        &s,
        &dest,
        &Platform::new("linux", "s390x", None),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::NoPlatform { .. }), "{msg}");
    assert!(
        msg.contains(&reg.addr) && msg.contains("multi/app:v1") && msg.contains("linux/arm64"),
        "{msg}"
    );
}

#[test]
fn missing_tag_and_unknown_host_name_host_and_reference() {
    let reg = Registry::plain();
    let c = client(
        &format!(
            "{}\n[registry.\"no-such-host.invalid\"]\nhttp = true\n",
            reg.config_section()
        ),
        Credentials::new(),
    );
    let (_d, s) = fresh_store();
    let e = pull(
        &c,
        &s,
        &r(&format!("{}/nothing/here:nope", reg.addr)),
        &Platform::host(),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains(&reg.addr) && msg.contains("nothing/here:nope"),
        "{msg}"
    );

    let e = pull(
        &c,
        &s,
        &r("no-such-host.invalid/app:1"),
        &Platform::host(),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = chain(&e);
    assert!(matches!(e, RegistryError::Connect { .. }), "{msg}");
    assert!(
        msg.contains("no-such-host.invalid") && msg.contains("app:1"),
        "{msg}"
    );
}

#[test]
fn corrupted_blob_is_a_digest_mismatch_and_nothing_is_stored() {
    let reg = Registry::plain();
    let c = client(&reg.config_section(), Credentials::new());
    let (_d, store, _) = store_with_busybox();
    let img = random_image(&store, 10_000, "amd64");
    let dest = r(&format!("{}/corrupt/app:1", reg.addr));
    push(&c, &store, &img, &dest, &mut |_| {}).unwrap();
    let m = store.load_manifest(&img).unwrap().manifest;
    let layer = &m.layers[0].digest;
    // Same length, different bytes: only the digest check can notice.
    let data = reg.blob_data(&layer.to_string());
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let (_d2, s2) = fresh_store();
    let e = pull(
        &c,
        &s2,
        &dest,
        &Platform::new("linux", "amd64", None),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&reg.addr)
            && msg.contains("corrupt/app:1")
            && msg.contains(&layer.to_string()),
        "{msg}"
    );
    assert!(!s2.has_blob(layer));
    assert!(s2.resolve(&dest.store_name()).unwrap().is_none());
}

#[test]
fn docker_manifest_list_pulls_with_platform_choice() {
    let reg = Registry::plain();
    let c = client(&reg.config_section(), Credentials::new());
    let (_d, store, bb) = store_with_busybox();
    let other = random_image(&store, 2048, "arm64");
    let mut amd = bb.clone();
    amd.annotations.clear();
    amd.platform = Some(Platform::host());
    let mut arm = other.clone();
    arm.platform = Some(Platform::new("linux", "arm64", None));
    let bytes = kiln::image::canonical_json(&Index::new(vec![amd, arm])).unwrap();
    let idx = Descriptor::for_bytes(MEDIA_OCI_INDEX, &bytes);
    store.put_bytes(&bytes, Some(&idx.digest)).unwrap();
    push(
        &c,
        &store,
        &idx,
        &r(&format!("{}/list/oci:1", reg.addr)),
        &mut |_| {},
    )
    .unwrap();
    // skopeo converts the index and its manifests to Docker's list and schema 2 types.
    let (ok, _, err) = skopeo(&[
        "copy",
        "--all",
        "--format",
        "v2s2",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}/list/oci:1", reg.addr),
        &format!("docker://{}/list/docker:1", reg.addr),
    ]);
    assert!(ok, "{err}");
    let dest = r(&format!("{}/list/docker:1", reg.addr));
    let (ok, raw, err) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{dest}"),
    ]);
    assert!(ok, "{err}");
    assert!(
        raw.contains(kiln::image::MEDIA_DOCKER_MANIFEST_LIST),
        "{raw}"
    );
    let (_d2, s2) = fresh_store();
    let got = pull(
        &c,
        &s2,
        &dest,
        &Platform::new("linux", "arm64", None),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(got.media_type, MEDIA_DOCKER_MANIFEST);
    assert_eq!(
        s2.image(&dest.store_name())
            .unwrap()
            .config
            .platform
            .architecture,
        "arm64"
    );
}

/// Throughput on loopback:
/// `cargo test --test registry registry_pull_push::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let reg = Registry::plain();
    let c = client(&reg.config_section(), Credentials::new());
    let (_d, store, _) = store_with_busybox();
    let size = 256 << 20;
    let img = random_image_layers(&store, &[size / 4; 4], "amd64");
    let dest = r(&format!("{}/speed/app:1", reg.addr));
    let t = std::time::Instant::now();
    push(&c, &store, &img, &dest, &mut |_| {}).unwrap();
    let push_s = t.elapsed().as_secs_f64();
    let (_d2, s2) = fresh_store();
    let t = std::time::Instant::now();
    pull(
        &c,
        &s2,
        &dest,
        &Platform::new("linux", "amd64", None),
        &mut |_| {},
    )
    .unwrap();
    let pull_s = t.elapsed().as_secs_f64();
    let mib = (size >> 20) as f64;
    println!(
        "push {mib} MiB in {push_s:.2}s ({:.0} MiB/s); pull in {pull_s:.2}s ({:.0} MiB/s)",
        mib / push_s,
        mib / pull_s
    );
}
