//! What a build is asked to do and what it hands back: [`BuildRequest`] (validated by the CLI or
//! the API before it gets here), its `--output`s, registry access and sandbox options, and
//! [`BuildResult`].
//!
//! Must not: read files or start anything; the driver (`build.rs`) does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use super::BuildError;
use crate::digest::Digest;
use crate::image::Descriptor;
use crate::layer::Compression;

/// Where a built image goes besides the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout: a directory, or a tar of one when `dest` ends in `.tar`.
    Oci { dest: PathBuf },
    /// A `docker save` style archive (`docker load`, `skopeo docker-archive:`).
    Docker { dest: PathBuf },
}

impl FromStr for Output {
    type Err = BuildError;

    /// `type=oci,dest=DIR|FILE.tar`, `type=docker,dest=FILE.tar` (BuildKit's `--output` syntax).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| BuildError::BadOutput {
            value: s.to_string(),
            why: why.to_string(),
        };
        let mut kind = None;
        let mut dest = None;
        for field in s.split(',') {
            match field.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("dest", v)) => dest = Some(PathBuf::from(v)),
                Some((k, _)) => return Err(bad(&format!("unknown key {k:?} (type, dest)"))),
                None => return Err(bad(&format!("{field:?} is not key=value"))),
            }
        }
        let dest = dest.ok_or_else(|| bad("missing dest=PATH"))?;
        match kind.as_deref() {
            Some("oci") => Ok(Output::Oci { dest }),
            Some("docker") | Some("docker-archive") => Ok(Output::Docker { dest }),
            Some(other) => Err(bad(&format!("unsupported type {other:?} (oci, docker)"))),
            None => Err(bad("missing type=oci|docker")),
        }
    }
}

/// Everything a build needs, already validated by the caller (CLI or API).
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub context: PathBuf,
    /// Dockerfile path; default `<context>/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    /// Inline Dockerfile text (takes precedence over `dockerfile`).
    pub dockerfile_text: Option<String>,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub outputs: Vec<Output>,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    pub source_date_epoch: Option<i64>,
    pub threads: usize,
    /// `--secret` sources, read only by the RUN steps that mount them.
    pub secrets: Vec<SecretSource>,
    pub sandbox: SandboxOptions,
    /// Pull a base image that is not in the local store from its registry.
    pub pull: bool,
    /// Run every step even when the step cache has its result.
    pub no_cache: bool,
    /// Push every tag to its registry once the image is built.
    pub push: bool,
    pub registry: RegistryAccess,
    /// `--cache-from`: shared caches read after the local step cache, in order.
    pub cache_from: Vec<crate::cache::spec::ImportSpec>,
    /// `--cache-to`: where the build's step records go (registry, OCI layout, inline).
    pub cache_to: Vec<crate::cache::spec::ExportSpec>,
    /// `--platform`: the target platforms. None or one: one image manifest (none: the host's);
    /// two or more: one image index over a manifest per platform.
    pub platforms: Vec<crate::plan::Platform>,
    /// `--pull`: re-resolve every base against its registry even when the store has it
    /// (BuildKit's `image-resolve-mode=pull`); `pull` alone pulls only what is missing.
    pub pull_always: bool,
    /// `--no-cache-filter`: stages (by name, lower case, or index) whose steps skip the cache.
    pub no_cache_filter: Vec<String>,
    /// `--ssh`: agent sockets or key files for `RUN --mount=type=ssh`.
    pub ssh: Vec<SshSource>,
    /// `--build-context NAME=…`: named contexts, keyed by BuildKit's normalised name.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `--provenance`, `--sbom`, `--attest`: none by default, as with buildctl.
    pub attest: crate::attest::AttestOptions,
    /// `--annotation` values for the image manifest, the index and their descriptors.
    pub annotations: crate::attest::Annotations,
    /// `--iidfile`, `--metadata-file`, `--digest-file`, `--image-name-with-digest-file`.
    pub metadata_files: crate::attest::MetadataFiles,
}

/// One `--ssh ID=PATH[,PATH]`: a socket is forwarded as is; other paths are private keys loaded
/// into an agent kiln starts for the build. Paths only: kiln never reads the key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSource {
    pub id: String,
    pub paths: Vec<PathBuf>,
}

/// What a `--build-context` name stands for (BuildKit's `dockerui.NamedContext` sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A directory: `FROM NAME` starts from its files, `COPY --from=NAME` reads them.
    Local(PathBuf),
    /// `docker-image://REF`: an image, as `FROM REF` would take it.
    Image(String),
    /// `oci-layout://PATH[@DIGEST|:TAG]`.
    OciLayout {
        path: PathBuf,
        tag: Option<String>,
        digest: Option<Digest>,
    },
}

/// Registry settings and this build's credentials, for pulling bases and pushing results. Held in
/// memory for one build only; `Credentials`' Debug redacts.
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    pub config: crate::config::Config,
    pub credentials: crate::registry::Credentials,
    /// Extra insecure hosts for this build (`--insecure-registry`).
    pub insecure: Vec<String>,
}

impl RegistryAccess {
    pub fn client(&self) -> Result<crate::registry::RegistryClient, BuildError> {
        let mut cfg = self.config.clone();
        if !self.insecure.is_empty() {
            cfg.merge_insecure_registries(&self.insecure.join(","));
        }
        crate::registry::RegistryClient::new(&cfg, self.credentials.clone())
            .map_err(|e| BuildError::Registry(Box::new(e)))
    }
}

/// How RUN steps are sandboxed (from kiln.toml and per-build flags).
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Force a rung instead of the strongest that works.
    pub rung: Option<crate::exec::Rung>,
    pub snapshotter: crate::snapshot::SnapshotterKind,
    /// The kiln binary to re-exec as the sandbox helper (default /proc/self/exe).
    pub helper: Option<PathBuf>,
    pub resources: crate::exec::Resources,
    pub step_timeout: Option<std::time::Duration>,
    /// The network of RUN steps that do not say `--network` (BuildKit's `--network` build flag).
    pub network: crate::exec::Network,
    /// `[worker.oci] ca-injection` (not given: on when the platform mounted a CA).
    pub ca_injection: Option<bool>,
    /// `[worker.oci] binfmt` and `emulators`: how foreign-platform RUN steps run.
    pub emulation: crate::exec::Emulation,
    /// `--add-host` entries for RUN steps' `/etc/hosts`.
    pub extra_hosts: Vec<crate::exec::HostEntry>,
    /// `--shm-size` in bytes.
    pub shm_size: Option<u64>,
    /// `--ulimit`s of RUN steps.
    pub ulimits: Vec<crate::exec::Ulimit>,
}

impl SandboxOptions {
    /// The build-wide network, as a cache input.
    pub fn network_name(&self) -> &'static str {
        match self.network {
            crate::exec::Network::Host => "host",
            crate::exec::Network::None => "none",
        }
    }
}

impl BuildRequest {
    pub fn new(context: impl Into<PathBuf>) -> BuildRequest {
        BuildRequest {
            context: context.into(),
            dockerfile: None,
            dockerfile_text: None,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            outputs: Vec::new(),
            compression: Compression::Gzip,
            compression_level: None,
            source_date_epoch: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            secrets: Vec::new(),
            sandbox: SandboxOptions::default(),
            pull: true,
            no_cache: false,
            push: false,
            registry: RegistryAccess::default(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            platforms: Vec::new(),
            pull_always: false,
            no_cache_filter: Vec::new(),
            ssh: Vec::new(),
            named_contexts: BTreeMap::new(),
            attest: crate::attest::AttestOptions::default(),
            annotations: crate::attest::Annotations::default(),
            metadata_files: crate::attest::MetadataFiles::default(),
        }
    }
}

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image manifest (the same with or without attestations).
    pub manifest: Descriptor,
    /// The index over the manifest and its attestation manifest, when the build made one: what
    /// the tags, outputs and registry name.
    pub index: Option<Descriptor>,
    pub config: Digest,
    /// Tags as stored (`docker.io/library/app:latest`).
    pub tags: Vec<String>,
}

/// `--secret id=ID,src=PATH` or `--secret id=ID,env=VAR` (BuildKit's syntax). The value is read at
/// the step that mounts it and never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSource {
    pub id: String,
    pub src: Option<PathBuf>,
    pub env: Option<String>,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only where the secret comes from — the value is never held here.
        write!(f, "SecretSource({}", self.id)?;
        if let Some(p) = &self.src {
            write!(f, ", src={}", p.display())?;
        }
        if let Some(e) = &self.env {
            write!(f, ", env={e}")?;
        }
        write!(f, ")")
    }
}

impl std::str::FromStr for SecretSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for field in s.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src", v)) | Some(("source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file")) | Some(("type", "env")) => {}
                _ => {
                    return Err(format!(
                        "invalid --secret {s:?}: expected id=ID,src=PATH or id=ID,env=VAR"
                    ))
                }
            }
        }
        let id = id.ok_or_else(|| format!("invalid --secret {s:?}: missing id=ID"))?;
        if src.is_none() && env.is_none() {
            // BuildKit: a bare id reads the environment variable of the same name.
            env = Some(id.clone());
        }
        Ok(SecretSource { id, src, env })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_like_buildkit() {
        assert_eq!(
            "type=oci,dest=out".parse::<Output>().unwrap(),
            Output::Oci {
                dest: PathBuf::from("out")
            }
        );
        assert_eq!(
            "type=docker,dest=a.tar".parse::<Output>().unwrap(),
            Output::Docker {
                dest: PathBuf::from("a.tar")
            }
        );
        let e = "type=local".parse::<Output>().unwrap_err().to_string();
        assert!(e.contains("missing dest"), "{e}");
        let e = "type=zip,dest=x".parse::<Output>().unwrap_err().to_string();
        assert!(e.contains("\"zip\""), "{e}");
    }
}
