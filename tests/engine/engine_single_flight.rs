//! Identical steps of concurrent daemon builds run once: two builds of one context submitted
//! together share the RUN (its output is random, so two runs would make two different layers) —
//! both images carry the same layer, and exactly one of the two builds reports the step cached.

use crate::support::*;

const DOCKERFILE: &str =
    "FROM busybox\nRUN sleep 2 && head -c 32 /dev/urandom | od -An -tx1 > /random\n";

#[test]
fn concurrent_builds_run_an_identical_step_once() {
    let d = Daemon::start(&[]);
    d.context("same", &[("Dockerfile", DOCKERFILE)]);
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let (status, v) = d.post_json("/v1/builds", r#"{"context":"same"}"#);
            assert_eq!(status, 202, "{v}");
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    let mut layers = Vec::new();
    let mut cached = 0;
    for id in &ids {
        let events = d.events(id);
        assert_eq!(events.last().unwrap()["type"], "succeeded", "{events:?}");
        let run = events
            .iter()
            .find(|e| e["type"] == "step_finished" && e["step"] == 1)
            .unwrap_or_else(|| panic!("no RUN step in {events:?}"));
        if run["cached"] == true {
            cached += 1;
        }
        layers.push(run["layer"]["digest"].as_str().unwrap().to_string());
    }
    assert_eq!(layers[0], layers[1], "the RUN ran twice");
    assert_eq!(cached, 1, "exactly one build followed the other");
}
