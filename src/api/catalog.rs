//! Wire types of the image catalog (`/v1/catalog`) and of a build spec's `"catalog"` field: the
//! platform's list of images (display name, generated image name, type, URLs, visibility, status).
//!
//! Must not: store anything or decide who may see an entry (the daemon's catalog and policy do).

use serde::{Deserialize, Serialize};

/// `cpu`, `gpu`, or `universal` (a CPU and a GPU image URL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    #[default]
    Cpu,
    Gpu,
    Universal,
}

/// Where an entry's image stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogStatus {
    Building,
    Ready,
    Failed,
}

/// A build spec's `"catalog"`: the entry the build creates (as `building`) and completes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogSpec {
    pub display_name: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub image_type: ImageType,
    pub gpu_url: Option<String>,
    /// Visible to every caller (default when no groups are given).
    pub global: Option<bool>,
    /// Visible to these groups only.
    pub groups: Vec<String>,
    /// A reference to the pull secret the platform uses (a name, never the secret itself).
    pub pull_secret: Option<String>,
}

/// `POST /v1/catalog` (an existing image) and `PUT /v1/catalog/{name}` (changes; fields not given
/// stay as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogUpdate {
    pub display_name: Option<String>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub image_type: Option<ImageType>,
    pub url: Option<String>,
    pub gpu_url: Option<String>,
    pub global: Option<bool>,
    pub groups: Option<Vec<String>>,
    pub pull_secret: Option<String>,
}

/// One catalog entry, as `GET /v1/catalog[/{name}]` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The image name generated from the display name; the entry's key.
    pub name: String,
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type")]
    pub image_type: ImageType,
    pub url: Option<String>,
    /// The GPU image of a `universal` entry (defaults to `url`).
    pub gpu_url: Option<String>,
    pub pull_secret: Option<String>,
    pub global: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    pub status: CatalogStatus,
    /// The build making (or that last made) the image.
    pub build_id: Option<String>,
    /// The GPU build of a `universal` entry built from two bases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_build_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created: i64,
    pub updated: i64,
}

/// Display names: lowercase letters, digits, `-` and `.`, starting with a letter or digit.
pub fn check_display_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 128 {
        return Err("display_name must be 1-128 characters".into());
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
    {
        return Err(format!(
            "display_name {s:?}: only lowercase letters, digits, '-' and '.' are allowed"
        ));
    }
    if !(b[0].is_ascii_lowercase() || b[0].is_ascii_digit()) {
        return Err(format!(
            "display_name {s:?} must start with a lowercase letter or a digit"
        ));
    }
    Ok(())
}

/// The image name generated from a display name: a valid repository path component (separators
/// never doubled, never at either end).
pub fn image_name(display_name: &str) -> String {
    let mut out = String::new();
    for c in display_name.chars() {
        let sep = c == '-' || c == '.';
        if sep && (out.is_empty() || out.ends_with(['-', '.'])) {
            continue;
        }
        out.push(c);
    }
    out.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_and_image_names() {
        check_display_name("py-tools.3.11").unwrap();
        for bad in ["Py", "a_b", "-a", "", "a b", "a/b"] {
            assert!(check_display_name(bad).is_err(), "{bad}");
        }
        assert_eq!(image_name("py--tools..x-"), "py-tools.x");
        assert_eq!(image_name("data.science"), "data.science");
    }
}
