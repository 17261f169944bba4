//! Why a build failed: one error type for the whole engine, each variant naming what was being
//! done (the CLI prints its cause chain, the daemon maps it to an error kind).

use std::path::PathBuf;

use crate::{image, plan, store};

/// Why a build failed. Each variant names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading Dockerfile {path}")]
    ReadDockerfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] crate::dockerfile::ParseError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error("invalid tag {tag:?}")]
    BadTag {
        tag: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("invalid --output {value:?}: {why}")]
    BadOutput { value: String, why: String },
    #[error("{file}:{line}: {instruction}: {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("preparing RUN steps for a foreign platform")]
    Emulation(#[source] crate::exec::EmulateError),
    #[error("base image {reference}: {message}")]
    Base {
        reference: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("preparing the build workspace {path}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("pushing {reference}")]
    Push {
        reference: String,
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
    #[error("setting up the registry client")]
    Registry(#[source] Box<crate::registry::RegistryError>),
    #[error("step cache")]
    Cache(#[source] Box<crate::cache::CacheError>),
    #[error("exporting the build cache to --cache-to {spec}: {message}")]
    CacheExport { spec: String, message: String },
    #[error("attaching attestations to the image")]
    Attest(#[source] Box<crate::attest::AttestError>),
    #[error("writing the build's metadata files")]
    MetadataFiles(#[source] Box<crate::attest::AttestError>),
    #[error("build cancelled")]
    Cancelled,
    #[error(transparent)]
    Ssh(#[from] super::ssh::SshError),
    #[error(
        "no space left on device while writing {what}; free space on the filesystem of {root} \
         (`kiln prune` removes build cache) and build again"
    )]
    NoSpace {
        what: String,
        root: PathBuf,
        #[source]
        source: Box<BuildError>,
    },
}
