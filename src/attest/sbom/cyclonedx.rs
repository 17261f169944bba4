//! CycloneDX 1.5 JSON (predicate `https://cyclonedx.org/bom`, buildah's other SBOM format): a
//! `container` metadata component for the image and a `library` component per package, each
//! with its purl as `bom-ref`. The serial number is derived from the image digest and scan name,
//! so the same build gives the same document.
//!
//! Must not: invent facts the databases do not hold.

use serde_json::{json, Value};

use super::{Scan, Subject};

pub const PREDICATE: &str = "https://cyclonedx.org/bom";

/// The document for `scan`.
pub fn document(scan: &Scan, s: &Subject<'_>) -> Value {
    let name = s
        .image_names
        .first()
        .cloned()
        .unwrap_or_else(|| s.name.to_string());
    let seed = crate::digest::Digest::of(format!("{}{}", s.digest, s.name).as_bytes());
    let h = seed.hex();
    // An RFC 4122 version-4 shape (the variant and version nibbles set) from the digest.
    let serial = format!(
        "urn:uuid:{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    );
    let components: Vec<Value> = scan
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = json!({
                "type": "library",
                "bom-ref": format!("{}#{i}", p.purl),
                "name": p.name,
                "version": p.version,
                "purl": p.purl,
                "properties": [{ "name": "kiln:package:location", "value": p.found_at }],
            });
            if let Some(l) = &p.license {
                c["licenses"] = json!([{ "license": { "name": l } }]);
            }
            c
        })
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": crate::attest::timestamp(s.created),
            "tools": { "components": [{ "type": "application", "name": "kiln", "version": env!("CARGO_PKG_VERSION") }] },
            "component": { "type": "container", "bom-ref": "image", "name": name, "version": s.digest.to_string() },
        },
        "components": components,
    })
}
