//! BuildKit's attestation layout (`exporter/containerimage/writer.go`, compatibility v0.31, the
//! default): each statement is an in-toto Statement v1 blob (`application/vnd.in-toto+json`,
//! annotated with `in-toto.io/predicate-type`); they are the layers of an OCI artifact manifest
//! (`artifactType` `application/vnd.docker.attestation.manifest.v1+json`, the empty-JSON config,
//! `subject` = the image manifest); the image index lists the image manifest (with its platform)
//! and then the attestation manifest (platform `unknown/unknown`, annotations
//! `vnd.docker.reference.type: attestation-manifest` and `vnd.docker.reference.digest`). The image
//! manifest itself is not touched, so its digest is that of the same build without attestations.
//!
//! Must not: change the image manifest's bytes; store a blob not verified against its digest
//! (`Store::put_bytes` hashes what it stores).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::AttestError;
use crate::image::{canonical_json, Descriptor, Index, Manifest, Platform, MEDIA_OCI_MANIFEST};
use crate::store::Store;

pub const MEDIA_IN_TOTO: &str = "application/vnd.in-toto+json";
pub const ARTIFACT_ATTESTATION_MANIFEST: &str =
    "application/vnd.docker.attestation.manifest.v1+json";
pub const MEDIA_EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const REFERENCE_TYPE_ATTESTATION: &str = "attestation-manifest";

/// One attestation before it is wrapped: its predicate type and predicate.
#[derive(Debug, Clone)]
pub struct Statement {
    pub predicate_type: String,
    pub predicate: Value,
}

/// The statement's subjects: one per image name, `pkg:docker/NAME@TAG?platform=…` with the image
/// manifest's digest (BuildKit's `defaultSubjects`); none when the image has no name.
pub fn subjects(
    names: &[crate::reference::Reference],
    platform: &Platform,
    image: &Descriptor,
) -> Vec<Value> {
    names
        .iter()
        .map(|r| {
            json!({
                "name": super::purl::image(r, Some(platform)),
                "digest": { image.digest.algorithm(): image.digest.hex() },
            })
        })
        .collect()
}

/// The in-toto statement blob for `s`.
pub fn statement_bytes(s: &Statement, subjects: &[Value]) -> Result<Vec<u8>, AttestError> {
    let v = json!({
        "_type": STATEMENT_V1,
        "predicateType": s.predicate_type,
        "subject": subjects,
        "predicate": s.predicate,
    });
    canonical_json(&v).map_err(|source| AttestError::Encode {
        what: "in-toto statement",
        source,
    })
}

/// Store the statements and their attestation manifest for `image`; returns the descriptor the
/// index lists it under.
pub fn attestation_manifest(
    store: &Store,
    image: &Descriptor,
    subjects: &[Value],
    statements: &[Statement],
) -> Result<Descriptor, AttestError> {
    let put = |bytes: &[u8], what| {
        store
            .put_bytes(bytes, None)
            .map_err(|source| AttestError::Store { what, source })
    };
    let mut layers = Vec::new();
    for s in statements {
        let bytes = statement_bytes(s, subjects)?;
        let mut d = Descriptor::new(
            MEDIA_IN_TOTO,
            put(&bytes, "in-toto statement")?,
            bytes.len() as u64,
        );
        d.annotations
            .insert(ANNOTATION_PREDICATE_TYPE.into(), s.predicate_type.clone());
        layers.push(d);
    }
    // ocispec.DescriptorEmptyJSON, `data` included as Go marshals it.
    let empty = b"{}";
    let mut config = Descriptor::new(MEDIA_EMPTY_JSON, put(empty, "empty config")?, 2);
    config.data = Some("e30=".into());
    let mut m = Manifest::new(config, layers);
    m.artifact_type = Some(ARTIFACT_ATTESTATION_MANIFEST.into());
    m.subject = Some(Descriptor::new(
        image.media_type.clone(),
        image.digest.clone(),
        image.size,
    ));
    let (bytes, _) = m.to_blob().map_err(|source| AttestError::Encode {
        what: "attestation manifest",
        source,
    })?;
    let mut d = Descriptor::new(
        MEDIA_OCI_MANIFEST,
        put(&bytes, "attestation manifest")?,
        bytes.len() as u64,
    );
    d.annotations.insert(
        ANNOTATION_REFERENCE_TYPE.into(),
        REFERENCE_TYPE_ATTESTATION.into(),
    );
    d.annotations
        .insert(ANNOTATION_REFERENCE_DIGEST.into(), image.digest.to_string());
    d.platform = Some(Platform::new("unknown", "unknown", None));
    Ok(d)
}

/// Store the index over the `images` (each given its platform and descriptor annotations) and the
/// attestation manifests; returns the index's descriptor.
pub fn image_index(
    store: &Store,
    images: &[Descriptor],
    attestations: Vec<Descriptor>,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor, AttestError> {
    let mut manifests = images.to_vec();
    manifests.extend(attestations);
    let mut index = Index::new(manifests);
    index.annotations = annotations.clone();
    let bytes = canonical_json(&index).map_err(|source| AttestError::Encode {
        what: "image index",
        source,
    })?;
    let digest = store
        .put_bytes(&bytes, None)
        .map_err(|source| AttestError::Store {
            what: "image index",
            source,
        })?;
    Ok(Descriptor::new(
        crate::image::MEDIA_OCI_INDEX,
        digest,
        bytes.len() as u64,
    ))
}
