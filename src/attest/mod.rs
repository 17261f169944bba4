//! Attestations and the files a CI step reads after a build, made the way BuildKit and buildx make
//! them so that tools written for their images read kiln's:
//!
//! | file            | job                                                                     |
//! |-----------------|-------------------------------------------------------------------------|
//! | `options.rs`    | `--provenance`, `--sbom`, `--attest`, `--annotation` values → typed     |
//! | `purl.rs`       | package URLs (`pkg:docker/…`, `pkg:deb/…`, …) as packageurl-go writes   |
//! | `provenance.rs` | SLSA v1 provenance predicate, `mode=min` / `mode=max`                   |
//! | `sbom/`         | packages read from an image's own databases → SPDX 2.3 / CycloneDX JSON |
//! | `layout.rs`     | in-toto statements → attestation manifest → the image index             |
//! | `files.rs`      | `--iidfile`, `--metadata-file`, kaniko's `--digest-file`s               |
//!
//! Must not: run a scanner or any process, pull anything, or put a secret's value (or anything but
//! its id) into a statement. Off unless asked for, as with `buildctl`.

pub mod files;
pub mod layout;
pub mod options;
pub mod provenance;
pub mod purl;
pub mod sbom;

pub use files::{MetadataFiles, Written};
pub use layout::Statement;
pub use options::{
    Annotations, AttestOptions, ProvenanceMode, ProvenanceOptions, SbomFormat, SbomOptions,
};

use std::path::PathBuf;

/// What went wrong making an attestation or a metadata file.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("invalid {flag} {value:?}: {why}")]
    BadOption {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("scanning {what} for packages")]
    Scan {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding the {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: crate::image::ImageError,
    },
    #[error("storing the {what}")]
    Store {
        what: &'static str,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("writing {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn bad(flag: &'static str, value: &str, why: impl Into<String>) -> AttestError {
    AttestError::BadOption {
        flag,
        value: value.to_string(),
        why: why.into(),
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` (SPDX's and SLSA's timestamp form) for Unix seconds.
pub(crate) fn timestamp(unix: i64) -> String {
    crate::image::rfc3339(unix)
}
