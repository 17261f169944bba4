//! `POST /v1/builds` with `platforms` (issue 22): the daemon builds every platform into one image
//! index in its store, each manifest with its platform and its own config; a bad platform is a 400
//! naming the field. (No RUN here: emulation is tested end to end in tests/registry.)

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
                      "platforms": ["linux/amd64,linux/arm64", "linux/arm/v7"]});
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
    let mut seen = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
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
