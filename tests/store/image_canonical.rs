//! canonical_json gives the same bytes (and so the same digest) on every serialisation, whatever
//! order the labels and env were gathered in.

use std::collections::HashMap;

use kiln::digest::Digest;
use kiln::image::{canonical_json, rfc3339, Healthcheck, ImageConfig, Platform};

fn config_from(labels: &HashMap<String, String>, env: &HashMap<String, String>) -> ImageConfig {
    let mut c = ImageConfig::new(&Platform::new("linux", "amd64", None));
    c.created = Some(rfc3339(1_700_000_000));
    // HashMap iteration order differs between instances (random SipHash keys), so labels are
    // inserted in a different order every round.
    for (k, v) in labels {
        c.config.labels.insert(k.clone(), v.clone());
    }
    let mut keys: Vec<&String> = env.keys().collect();
    keys.sort();
    for k in keys {
        c.config.env_set(k, &env[k]);
    }
    c.config.healthcheck = Some(Healthcheck {
        test: vec!["CMD".into(), "true".into()],
        interval: Some(1_000_000_000),
        ..Healthcheck::default()
    });
    c.config
        .exposed_ports
        .insert("8080/tcp".into(), Default::default());
    c.push_layer(
        Digest::of(b"layer"),
        "COPY . /app",
        Some("2023-11-14T22:13:20Z"),
    );
    c.push_empty("LABEL many", None);
    // An unknown field whose value is a map built from a HashMap: canonical_json must sort it too.
    let extra: HashMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
    c.extra
        .insert("x_extra".into(), serde_json::to_value(extra).unwrap());
    c
}

#[test]
fn hundred_serialisations_are_byte_identical() {
    let mut first: Option<Vec<u8>> = None;
    for round in 0..100 {
        let labels: HashMap<String, String> = (0..200)
            .map(|i| (format!("org.example.label.{i}"), format!("value {i}")))
            .collect();
        let env: HashMap<String, String> = (0..100)
            .map(|i| (format!("VAR_{i}"), format!("v{i}")))
            .collect();
        let bytes = canonical_json(&config_from(&labels, &env)).unwrap();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert!(
                f == &bytes,
                "round {round}: digest {} != {}",
                Digest::of(&bytes),
                Digest::of(f)
            ),
        }
    }
    let bytes = first.unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(!text.contains('\n'));
    assert!(!text.contains("\": "), "whitespace after a colon: {text}");
    // Sorted keys at every level.
    assert!(
        text.starts_with(r#"{"architecture":"amd64","config":{"Env":["#),
        "{text}"
    );
    assert!(
        text.contains(r#""x_extra":{"k0":0,"k1":1,"k10":10,"#),
        "{text}"
    );
    let parsed = ImageConfig::from_slice(&bytes).unwrap();
    assert_eq!(canonical_json(&parsed).unwrap(), bytes);
}
