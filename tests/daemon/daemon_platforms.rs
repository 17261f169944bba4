//! `POST /v1/builds` with `platforms` (issue 22): the daemon builds every platform into one image
//! index in its store, each manifest with its platform, its own config, the annotations meant
//! for it and an attestation manifest of its own; a bad platform is a 400 naming the field. (No
//! RUN here: emulation is tested end to end in tests/registry.)

use crate::support::*;
use serde_json::{json, Value};

const DOCKERFILE: &str =
    "FROM scratch\nARG TARGETPLATFORM\nCOPY hello.txt /\nLABEL built.for=$TARGETPLATFORM\n";

fn blob(d: &Daemon, digest: &str) -> Value {
    read_json(&blob_path(&d.root().join("content"), digest))
}

#[test]
fn platforms_make_one_index_in_the_store() {
    let d = Daemon::start(&[]);
    d.context(
        "multi",
        &[("Dockerfile", DOCKERFILE), ("hello.txt", "hi\n")],
    );
    let body = json!({"context": "multi", "name": "plat", "tag": "1",
                      "platforms": ["linux/amd64,linux/arm64", "linux/arm/v7"],
                      "provenance": "mode=min",
                      "annotations": ["manifest:org.example.all=1",
                                      "manifest[linux/arm64]:org.example.arm=1",
                                      "manifest-descriptor[linux/arm/v7]:org.example.v7=1"]});
    let (status, v) = d.post_json("/v1/builds", &body.to_string());
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap();
    let events = d.events(id);
    assert_eq!(events.last().unwrap()["type"], "succeeded", "{events:?}");
    let (_, rec) = d.get(&format!("/v1/builds/{id}"));
    let index = blob(&d, rec["result"]["manifest"].as_str().unwrap());
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        6,
        "three images, then their attestations: {index}"
    );
    let (images, attestations) = listed.split_at(3);
    // BuildKit's exporter lists every platform's image, then each one's attestation manifest.
    for (image, att) in images.iter().zip(attestations) {
        assert_eq!(att["platform"]["architecture"], "unknown", "{att}");
        assert_eq!(
            att["annotations"]["vnd.docker.reference.digest"], image["digest"],
            "{att}"
        );
        // An OCI artifact whose `subject` is the image it attests.
        let artifact = blob(&d, att["digest"].as_str().unwrap());
        assert_eq!(artifact["subject"]["digest"], image["digest"], "{artifact}");
    }
    let mut seen = Vec::new();
    for m in images {
        let p = &m["platform"];
        let mut name = format!(
            "{}/{}",
            p["os"].as_str().unwrap(),
            p["architecture"].as_str().unwrap()
        );
        if let Some(v) = p["variant"].as_str() {
            name = format!("{name}/{v}");
        }
        let manifest = blob(&d, m["digest"].as_str().unwrap());
        let config = blob(&d, manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(config["architecture"], p["architecture"], "{config}");
        assert_eq!(
            config["config"]["Labels"]["built.for"],
            name.as_str(),
            "{config}"
        );
        // `manifest[linux/arm64]:` goes to that platform's manifest only, as BuildKit applies
        // annotations per platform; `manifest-descriptor[…]:` to its index entry.
        let ann = &manifest["annotations"];
        assert_eq!(ann["org.example.all"], "1", "{manifest}");
        assert_eq!(
            ann["org.example.arm"].as_str(),
            (name == "linux/arm64").then_some("1"),
            "{name}: {manifest}"
        );
        assert_eq!(
            m["annotations"]["org.example.v7"].as_str(),
            (name == "linux/arm/v7").then_some("1"),
            "{name}: {m}"
        );
        seen.push(name);
    }
    assert_eq!(seen, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);

    let (status, v) = d.post_json(
        "/v1/builds",
        &json!({"context": "multi", "platforms": ["linux//amd64"]}).to_string(),
    );
    assert_eq!(status, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("platforms") && msg.contains("linux//amd64"),
        "{msg}"
    );
}
