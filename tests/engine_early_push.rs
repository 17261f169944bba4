//! `kiln build --push` uploads each layer of the image as soon as it exists, while later steps still
//! run, and pushes the manifest only at the end: a build that fails after its COPY has already put
//! that layer on the registry, and left no manifest (nothing names a blob the registry lacks).

mod common;
#[path = "support/registry.rs"]
mod registry_support;

use common::*;

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
