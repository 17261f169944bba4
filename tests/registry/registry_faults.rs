//! Pushing through a fault-injecting proxy in front of a real registry: 503s and connections
//! dropped mid-upload are retried to success; a push that cannot finish leaves no manifest;
//! chunked uploads, falling back between chunked and monolithic when one is refused; the
//! per-registry concurrency limit.

use crate::support::registry as registry_support;

use kiln::image::Platform;
use kiln::reference::Reference;
use kiln::registry::{pull, push, Credentials, Progress};
use kiln::store::Store;
use registry_support::*;

fn r(s: &str) -> Reference {
    s.parse().unwrap()
}

fn retries(ev: &[Progress]) -> usize {
    ev.iter()
        .filter(|p| matches!(p, Progress::Retrying { .. }))
        .count()
}

fn readable(reg: &Registry, repo_tag: &str) -> bool {
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/{repo_tag}", reg.addr),
    ])
    .0
}

#[test]
fn retries_complete_the_push_after_503s_and_a_dropped_upload() {
    let reg = Registry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let toml = format!("[registry.\"{}\"]\nhttp = true\n", proxy.addr);
    let c = client(&toml, Credentials::new());
    let (_d, store, _) = store_with_busybox();
    let img = random_image(&store, 300_000, "amd64");
    proxy.inject(
        Fault::Status503 {
            matching: "HEAD /v2/faults/app/blobs".into(),
        },
        1,
    );
    proxy.inject(
        Fault::Status503 {
            matching: "POST /v2/faults/app/blobs/uploads".into(),
        },
        1,
    );
    proxy.inject(
        Fault::DropAfter {
            matching: "PUT /v2/faults/app/blobs/uploads".into(),
            bytes: 100,
        },
        1,
    );
    proxy.inject(
        Fault::Status503 {
            matching: "PUT /v2/faults/app/manifests".into(),
        },
        2,
    );
    let mut ev = Vec::new();
    let dest = r(&format!("{}/faults/app:1", proxy.addr));
    push(&c, &store, &img, &dest, &mut |p| ev.push(p)).unwrap();
    assert_eq!(proxy.hits(), 5, "{:?}", proxy.seen.lock().unwrap());
    assert!(retries(&ev) >= 5, "{ev:?}");
    assert!(readable(&reg, "faults/app:1"));
    // What was pushed reads back intact.
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let got = pull(
        &c,
        &s,
        &dest,
        &Platform::new("linux", "amd64", None),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(got.digest, img.digest);
}

#[test]
fn a_push_that_cannot_finish_leaves_no_manifest() {
    let reg = Registry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let c = client(
        &format!("[registry.\"{}\"]\nhttp = true\n", proxy.addr),
        Credentials::new(),
    );
    let (_d, store, _) = store_with_busybox();
    let img = random_image(&store, 200_000, "amd64");
    proxy.inject(
        Fault::DropAfter {
            matching: "PUT /v2/abort/app/blobs/uploads".into(),
            bytes: 50_000,
        },
        1000,
    );
    let dest = r(&format!("{}/abort/app:1", proxy.addr));
    let e = push(&c, &store, &img, &dest, &mut |_| {}).unwrap_err();
    let msg = chain(&e);
    assert!(
        msg.contains(&proxy.addr) && msg.contains("abort/app:1"),
        "{msg}"
    );
    assert!(
        !readable(&reg, "abort/app:1"),
        "a manifest was pushed despite missing blobs"
    );
    assert!(
        !proxy
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|(w, _)| w.contains("/manifests/")),
        "the manifest was attempted"
    );
}

#[test]
fn chunked_uploads_and_fallback_between_modes() {
    let reg = Registry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let chunked = format!(
        "[registry.\"{}\"]\nhttp = true\nupload = \"chunked\"\nchunk-size = \"64KiB\"\n",
        proxy.addr
    );
    let c = client(&chunked, Credentials::new());
    let (_d, store, _) = store_with_busybox();
    let img = random_image(&store, 300_000, "amd64");
    push(
        &c,
        &store,
        &img,
        &r(&format!("{}/chunk/app:1", proxy.addr)),
        &mut |_| {},
    )
    .unwrap();
    let patches = proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(w, _)| w.starts_with("PATCH /v2/chunk/app"))
        .count();
    // 300 000 bytes in 64 KiB chunks is 5 PATCHes for the layer, 1 for the config.
    assert_eq!(patches, 6);
    assert!(readable(&reg, "chunk/app:1"));

    // The registry refuses PATCH: chunked falls back to monolithic.
    let img2 = random_image(&store, 100_000, "amd64");
    proxy.inject(
        Fault::Refuse {
            matching: "PATCH /v2/nochunk/".into(),
            status: 405,
        },
        1000,
    );
    push(
        &c,
        &store,
        &img2,
        &r(&format!("{}/nochunk/app:1", proxy.addr)),
        &mut |_| {},
    )
    .unwrap();
    assert!(readable(&reg, "nochunk/app:1"));

    // The registry refuses a monolithic PUT (413): monolithic falls back to chunked.
    let mono = client(
        &format!("[registry.\"{}\"]\nhttp = true\n", proxy.addr),
        Credentials::new(),
    );
    let img3 = random_image(&store, 100_000, "amd64");
    proxy.inject(
        Fault::Refuse {
            matching: "PUT /v2/nomono/app/blobs/uploads".into(),
            status: 413,
        },
        2,
    );
    push(
        &mono,
        &store,
        &img3,
        &r(&format!("{}/nomono/app:1", proxy.addr)),
        &mut |_| {},
    )
    .unwrap();
    assert!(proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|(w, _)| w.starts_with("PATCH /v2/nomono/app")));
    assert!(readable(&reg, "nomono/app:1"));
}

#[test]
fn per_registry_concurrency_limit() {
    let reg = Registry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let toml = format!(
        "[registry.\"{}\"]\nhttp = true\nmax-concurrency = 2\n",
        proxy.addr
    );
    let c = client(&toml, Credentials::new());
    let (_d, store, _) = store_with_busybox();
    let img = random_image_layers(&store, &[400_000; 6], "amd64");
    push(
        &c,
        &store,
        &img,
        &r(&format!("{}/limit/app:1", proxy.addr)),
        &mut |_| {},
    )
    .unwrap();
    let max = proxy.in_flight.1.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=2).contains(&max),
        "{max} requests in flight at once, limit 2"
    );
    assert!(readable(&reg, "limit/app:1"));
}
