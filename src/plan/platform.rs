//! OCI platforms (`os/arch[/variant]`) parsed and normalised as containerd's `platforms.Parse` does.
//!
//! Must not: probe anything but the compile-time host architecture.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.map(str::to_ascii_lowercase);
    match arch.as_str() {
        "i386" => ("386".into(), None),
        "x86_64" | "x86-64" | "amd64" => {
            let v = variant.filter(|v| v != "v1");
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = variant.filter(|v| v != "8" && v != "v8");
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") => "v7".to_string(),
                Some("5") | Some("6") | Some("8") => format!("v{}", variant.unwrap_or_default()),
                Some(v) => v.to_string(),
            };
            ("arm".into(), Some(v))
        }
        _ => (arch, variant),
    }
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

impl Platform {
    /// The platform kiln runs on (always Linux).
    pub fn host() -> Self {
        let (architecture, variant) = normalize_arch(std::env::consts::ARCH, None);
        Platform {
            os: "linux".into(),
            architecture,
            variant,
        }
    }

    /// `platforms.Parse`: `linux/arm64`, `linux/arm/v7`, `arm64` (host OS), `linux` (host arch).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{why}: {s:?}");
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(bad("invalid platform specifier"));
        }
        let valid = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !parts.iter().all(|p| valid(p)) {
            return Err(bad("invalid platform specifier"));
        }
        let host = Platform::host();
        match parts.as_slice() {
            [one] => {
                let lower = one.to_ascii_lowercase();
                if KNOWN_OS.contains(&lower.as_str()) {
                    return Ok(Platform { os: lower, ..host });
                }
                let (architecture, variant) = normalize_arch(one, None);
                if architecture == *one && !is_known_arch(&architecture) {
                    return Err(bad("unknown operating system or architecture"));
                }
                Ok(Platform {
                    os: host.os,
                    architecture,
                    variant,
                })
            }
            [os, arch] => {
                let (architecture, variant) = normalize_arch(arch, None);
                Ok(Platform {
                    os: os.to_ascii_lowercase(),
                    architecture,
                    variant,
                })
            }
            [os, arch, variant] => {
                let (architecture, variant) = normalize_arch(arch, Some(variant));
                Ok(Platform {
                    os: os.to_ascii_lowercase(),
                    architecture,
                    variant,
                })
            }
            _ => Err(bad("invalid platform specifier")),
        }
    }
}

/// `--platform linux/amd64,linux/arm64` (repeatable, each value comma-separated, as buildx takes
/// it): every platform once, in the order first given. An empty list means the host's platform.
pub fn parse_list<S: AsRef<str>>(values: &[S]) -> Result<Vec<Platform>, String> {
    let mut out: Vec<Platform> = Vec::new();
    for v in values {
        for one in v
            .as_ref()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let p = Platform::parse(one)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

fn is_known_arch(a: &str) -> bool {
    matches!(
        a,
        "386"
            | "amd64"
            | "arm"
            | "arm64"
            | "loong64"
            | "mips"
            | "mips64"
            | "mips64le"
            | "mipsle"
            | "ppc64"
            | "ppc64le"
            | "riscv64"
            | "s390x"
            | "wasm"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(
            Platform::parse("linux/aarch64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert!(Platform::parse("linux//amd64").is_err());
    }

    #[test]
    fn lists_split_on_commas_and_drop_repeats() {
        let l = parse_list(&["linux/amd64,linux/arm64", "linux/aarch64", "linux/arm/v6"]).unwrap();
        let names: Vec<String> = l.iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64", "linux/arm/v6"]);
        assert!(parse_list(&["linux/amd64,linux//x"]).is_err());
        assert!(parse_list::<&str>(&[]).unwrap().is_empty());
    }
}
