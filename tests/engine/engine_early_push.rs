//! `kiln build --push` uploads each layer of the image as soon as it exists, while later steps still
//! run, and pushes the manifest only at the end: a build that fails after its COPY has already put
//! that layer on the registry, and left no manifest (nothing names a blob the registry lacks).

use crate::support::registry as registry_support;

use crate::support::*;

#[test]
fn layers_upload_during_the_build_and_a_failed_build_leaves_no_manifest() {
    let reg = registry_support::Registry::plain();
    let payload = "early bytes\n".repeat(10_000);
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY payload /payload\nRUN sleep 2; exit 7\n",
        ),
        ("payload", &payload),
    ]);
    let root = store_with_busybox();
    let tag = format!("{}/team/early:1", reg.addr);
    let out = kiln(
        root.path(),
        &[
            "build",
            "--progress",
            "json",
            "-t",
            &tag,
            "--push",
            "--insecure-registry",
            &reg.addr,
            ctx.path().to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "the RUN fails the build");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let copy_layer = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|e| {
            (e["type"] == "step_finished" && e["step"] == 1)
                .then(|| e["layer"]["digest"].as_str().map(str::to_string))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no COPY layer in the events:\n{stdout}"));
    assert!(
        reg.blob_data(&copy_layer).exists(),
        "the COPY layer {copy_layer} was not uploaded while the RUN ran"
    );
    let manifests = reg.blob_data(&copy_layer);
    let v2 = manifests.ancestors().nth(5).unwrap();
    assert!(
        v2.join("repositories/team/early/_layers").exists(),
        "{}",
        v2.display()
    );
    let tags = v2.join("repositories/team/early/_manifests/tags");
    assert!(!tags.exists(), "a manifest was pushed for a failed build");
}

/// The last layer of a build goes up while it is compressed: chunked PATCHes of the layer being
/// written (registry access seen through a proxy), then the PUT once it is committed — kiln's
/// default upload is one monolithic PUT, so PATCHes only come from the stream. A registry that
/// refuses chunks still gets the image (the ordinary push takes over).
#[test]
fn a_layer_uploads_while_it_is_compressed_and_a_registry_refusing_chunks_still_gets_it() {
    use registry_support::{Fault, FaultProxy, Registry};
    let reg = Registry::plain();
    let proxy = FaultProxy::start(&reg.addr);
    let build = |repo: &str, seed: u8| {
        let ctx = context(&[("Dockerfile", "FROM scratch\nCOPY big /big\n")]);
        let mut data = noise(20 << 20);
        data[0] = seed;
        std::fs::write(ctx.path().join("big"), data).unwrap();
        let root = tempfile::tempdir().unwrap();
        let tag = format!("{}/team/{repo}:1", proxy.addr);
        let out = kiln(
            root.path(),
            &[
                "build",
                "-t",
                &tag,
                "--push",
                "--insecure-registry",
                &proxy.addr,
                ctx.path().to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let (ok, raw, err) = registry_support::skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{tag}"),
        ]);
        assert!(ok, "the pushed image is not readable: {err}");
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{raw}");
    };
    let patches = |repo: &str| {
        proxy
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, hit)| {
                !hit && w.starts_with(&format!("PATCH /v2/team/{repo}/blobs/uploads/"))
            })
            .count()
    };
    build("stream", 1);
    // 20 MiB: at least one 8 MiB chunk sent as it appeared, then the rest at the commit.
    assert!(
        patches("stream") >= 2,
        "the layer was not streamed: {:?}",
        proxy.seen.lock().unwrap()
    );

    proxy.inject(
        Fault::Refuse {
            matching: "PATCH /v2/team/nochunk/".into(),
            status: 405,
        },
        1000,
    );
    build("nochunk", 2);
    assert_eq!(patches("nochunk"), 0);
}
