//! The image config JSON (OCI image-spec config.md plus Docker's extra fields), with Docker's field
//! names. Fields kiln does not model are kept in `extra` maps so a pulled config survives a
//! read → write round trip.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{canonical_json, Descriptor, ImageError, Platform, MEDIA_OCI_CONFIG};
use crate::digest::Digest;

/// The `{}` value of Docker's set-like maps (`ExposedPorts`, `Volumes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

// Docker writes `null` for unset lists and maps (`"Env": null`, `"Labels": null`); treat it as empty.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The image config document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// architecture, os, variant, os.version, os.features — the same fields as a descriptor's
    /// platform, kept in one type.
    #[serde(flatten)]
    pub platform: Platform,
    #[serde(default, deserialize_with = "null_default")]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
    /// Fields kiln does not model (`container_config`, `docker_version`, …), kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The `config` object: how to run a container from the image. All fields optional; empty ones are
/// omitted, as Docker does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// `Some(vec![])` is meaningful (`ENTRYPOINT []` clears the base image's), so this is an Option.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(
        rename = "Labels",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    #[serde(
        rename = "ArgsEscaped",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub args_escaped: Option<bool>,
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        rename = "OnBuild",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
    #[serde(
        rename = "Shell",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shell: Vec<String>,
    /// Fields kiln does not model (`Hostname`, `AttachStdin`, `Image`, …), kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ContainerConfig {
    /// The value of `KEY` in `Env` (last one wins, as in a process environment).
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|kv| match kv.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                None if kv == key => Some(""),
                _ => None,
            })
    }

    /// Set `KEY=value` in `Env`, replacing an earlier entry in place (Docker keeps the position).
    pub fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let existing = self
            .env
            .iter()
            .position(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key);
        match existing {
            Some(i) => self.env[i] = entry,
            None => self.env.push(entry),
        }
    }
}

/// Docker's `HEALTHCHECK` settings. Durations are nanoseconds, as Docker's Go `time.Duration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    #[serde(
        rename = "Test",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(rename = "Timeout", default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(
        rename = "StartPeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start_period: Option<i64>,
    #[serde(
        rename = "StartInterval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start_interval: Option<i64>,
    #[serde(rename = "Retries", default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// The layer chain by uncompressed digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry; `empty_layer` marks steps that changed only metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// An empty config (no layers) for a platform — what `FROM scratch` starts from.
    pub fn new(platform: &Platform) -> ImageConfig {
        ImageConfig {
            created: None,
            author: None,
            platform: platform.clone(),
            config: ContainerConfig::default(),
            rootfs: RootFs::default(),
            history: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    pub fn from_slice(bytes: &[u8]) -> Result<ImageConfig, ImageError> {
        serde_json::from_slice(bytes).map_err(|source| ImageError::Parse {
            what: "image config",
            source,
        })
    }

    /// The platform this config says the image is for.
    pub fn platform(&self) -> Platform {
        self.platform.clone()
    }

    /// Record a step that added a layer with this diff_id.
    pub fn push_layer(&mut self, diff_id: Digest, created_by: &str, created: Option<&str>) {
        self.rootfs.diff_ids.push(diff_id);
        self.history.push(History {
            created: created.map(str::to_string),
            created_by: Some(created_by.to_string()),
            ..History::default()
        });
    }

    /// Record a metadata-only step (ENV, LABEL, CMD…).
    pub fn push_empty(&mut self, created_by: &str, created: Option<&str>) {
        self.history.push(History {
            created: created.map(str::to_string),
            created_by: Some(created_by.to_string()),
            empty_layer: true,
            ..History::default()
        });
    }

    /// Canonical bytes and their descriptor (OCI config media type).
    pub fn to_blob(&self) -> Result<(Vec<u8>, Descriptor), ImageError> {
        let bytes = canonical_json(self)?;
        let desc = Descriptor::for_bytes(MEDIA_OCI_CONFIG, &bytes);
        Ok((bytes, desc))
    }
}
