//! SPDX 2.3 JSON (`https://spdx.dev/Document`, the predicate BuildKit's scanner writes): the
//! document describes one root package for the scanned image (purpose `CONTAINER`), which
//! `CONTAINS` each package found; each package names its purl as a `PACKAGE-MANAGER` external
//! reference and its database in `sourceInfo` (as Syft does). License fields say `NOASSERTION`:
//! databases hold free text that is not a valid SPDX expression, and a document `pyspdxtools`
//! refuses helps nobody.
//!
//! Must not: invent facts the databases do not hold.

use serde_json::{json, Value};

use super::{Package, Scan, Subject};

pub const PREDICATE: &str = "https://spdx.dev/Document";
const ROOT: &str = "SPDXRef-DocumentRoot-Image";

/// The document for `scan`.
pub fn document(scan: &Scan, s: &Subject<'_>) -> Value {
    let name = match s.image_names.first() {
        Some(n) => n.clone(),
        None => s.name.to_string(),
    };
    let mut packages = vec![json!({
        "name": name,
        "SPDXID": ROOT,
        "versionInfo": s.digest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": ROOT,
    })];
    for (i, p) in scan.packages.iter().enumerate() {
        let id = spdx_id(p, i);
        packages.push(package(p, &id));
        relationships.push(json!({
            "spdxElementId": ROOT,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{name} ({})", s.name),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/kiln/{}/{}",
            s.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.', "-"),
            s.digest.hex()
        ),
        "creationInfo": {
            "created": crate::attest::timestamp(s.created),
            "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

fn package(p: &Package, id: &str) -> Value {
    json!({
        "name": p.name,
        "SPDXID": id,
        "versionInfo": p.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
        "sourceInfo": format!("acquired package info from {} database: {}", p.ecosystem.label(), p.found_at),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": p.purl,
        }],
    })
}

/// `SPDXRef-Package-ECOSYSTEM-NAME-N`: letters, digits, `.` and `-` only (SPDX's idstring).
fn spdx_id(p: &Package, i: usize) -> String {
    let clean: String = p
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-Package-{}-{clean}-{i}", p.ecosystem.label())
}
