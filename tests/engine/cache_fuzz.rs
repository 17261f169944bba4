//! Property tests: no cache manifest or config a registry (or a CI cache directory) hands kiln
//! makes the cache parser panic — arbitrary bytes, and valid artifacts with one field mutated or
//! bytes flipped. Whatever comes back is an error or a cache whose every record names a blob the
//! manifest carries.

use kiln::cache::remote::{self, CacheConfig, Kind};
use kiln::cache::{CacheKey, CachedLayer, Record};
use kiln::digest::Digest;
use kiln::image::{canonical_json, Descriptor, Manifest, Platform};
use proptest::prelude::*;

fn valid_artifact(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut c = CacheConfig::new(Platform::host());
    let mut layers = Vec::new();
    for i in 0..n {
        let d = Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Digest::of(&[i as u8]),
            100 + i as u64,
        );
        layers.push(d.clone());
        c.records.insert(
            CacheKey::root(&i.to_string()).0.hex().to_string(),
            Record {
                layer: Some(CachedLayer {
                    descriptor: d,
                    diff_id: Digest::of(b"diff"),
                    uncompressed_size: 5,
                }),
                created: None,
            },
        );
    }
    let config = canonical_json(&c).unwrap();
    let m = Manifest::new(Descriptor::for_bytes(remote::MEDIA_CONFIG, &config), layers);
    (canonical_json(&m).unwrap(), config)
}

/// Parse like an import does; when a cache comes out, every record must be backed by the manifest.
fn import(manifest: &[u8], config: &[u8]) {
    let Ok(kind) = remote::classify(manifest) else {
        return;
    };
    let (Kind::Artifact(m) | Kind::Image(m)) = &kind;
    let got = match &kind {
        Kind::Artifact(m) => remote::verify_artifact(m, config, &Platform::host()),
        Kind::Image(m) => remote::verify_inline(m, config, &Platform::host()),
    };
    if let Ok(cache) = got {
        for r in cache.records.values() {
            if let Some(l) = &r.layer {
                assert!(m.layers.iter().any(|x| x.digest == l.descriptor.digest));
            }
        }
    }
}

fn json_mutation() -> impl Strategy<Value = (String, serde_json::Value)> {
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        "[ -~]{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!({"layer": {"descriptor": 1}})),
    ];
    let field = prop_oneof![
        Just("format"),
        Just("keySchema"),
        Just("platform"),
        Just("records"),
        Just("mounts"),
    ];
    (field.prop_map(str::to_string), value)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(m in prop::collection::vec(any::<u8>(), 0..300),
                                   c in prop::collection::vec(any::<u8>(), 0..300)) {
        import(&m, &c);
    }

    #[test]
    fn flipped_bytes_never_panic(n in 0usize..4, at in any::<prop::sample::Index>(),
                                 byte in any::<u8>(), in_config in any::<bool>()) {
        let (mut m, mut c) = valid_artifact(n);
        let target = if in_config { &mut c } else { &mut m };
        let i = at.index(target.len());
        target[i] = byte;
        import(&m, &c);
    }

    #[test]
    fn mutated_fields_never_panic(n in 0usize..4, (field, value) in json_mutation()) {
        let (_, c) = valid_artifact(n);
        let mut v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        v[field.as_str()] = value;
        let c2 = serde_json::to_vec(&v).unwrap();
        // The manifest names the mutated config, so only the config's content is under test.
        let (m, _) = valid_artifact(n);
        let mut mv: serde_json::Value = serde_json::from_slice(&m).unwrap();
        mv["config"]["digest"] = serde_json::json!(Digest::of(&c2).to_string());
        mv["config"]["size"] = serde_json::json!(c2.len());
        import(&serde_json::to_vec(&mv).unwrap(), &c2);
    }
}
