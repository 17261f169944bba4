//! Shared helpers for kiln's integration tests: run the real `kiln` binary, make the busybox base
//! image with the testdata script, and read back what kiln wrote (layouts, layers, configs).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn kiln_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `kiln --root ROOT ARGS…`; returns the output (not checked).
pub fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KILN_ROOT")
        .output()
        .expect("running kiln")
}

/// Run kiln and insist it succeeded, printing its output when it did not.
pub fn kiln_ok(root: &Path, args: &[&str]) -> String {
    let out = kiln(root, args);
    assert!(
        out.status.success(),
        "kiln {:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run kiln and insist it failed; returns stderr.
pub fn kiln_err(root: &Path, args: &[&str]) -> String {
    let out = kiln(root, args);
    assert!(
        !out.status.success(),
        "kiln {:?} succeeded but should have failed:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The busybox OCI layout made by testdata/busybox/make-image.sh, once per test binary.
pub fn busybox_layout() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-test-busybox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("bash")
            .arg(manifest_dir().join("testdata/busybox/make-image.sh"))
            .arg(&dir)
            .arg("latest")
            .output()
            .expect("running make-image.sh");
        assert!(
            out.status.success(),
            "testdata/busybox/make-image.sh failed (is busybox-static installed? scripts/test.sh installs it):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

/// A fresh store with busybox imported as `busybox:latest`.
pub fn store_with_busybox() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let layout = busybox_layout();
    kiln_ok(
        root.path(),
        &[
            "import",
            &format!("{}:latest", layout.display()),
            "--tag",
            "busybox:latest",
        ],
    );
    root
}

pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run scripts/test.sh, which installs it"
    );
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    )
    .unwrap()
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// One entry of a layer, as a user inspecting the tar would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub link: Option<String>,
    pub content: Option<Vec<u8>>,
}

/// Read a (gzip, zstd or plain) layer blob into path → entry.
pub fn layer_entries(path: &Path) -> BTreeMap<String, Entry> {
    let bytes = std::fs::read(path).unwrap();
    let reader: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(&bytes[..]).unwrap())
    } else {
        Box::new(&bytes[..])
    };
    let mut ar = tar::Archive::new(reader);
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            _ => '?',
        };
        let mut content = None;
        if kind == 'f' && h.size().unwrap() < 1 << 20 {
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).unwrap();
            content = Some(buf);
        }
        out.insert(
            path,
            Entry {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                size: h.size().unwrap(),
                link: e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
                content,
            },
        );
    }
    out
}

/// An image read back from an OCI layout: manifest, config, and layer blob paths.
pub struct LayoutImage {
    pub manifest_digest: String,
    pub manifest: serde_json::Value,
    pub config: serde_json::Value,
    pub layers: Vec<PathBuf>,
}

pub fn layout_image(layout: &Path, ref_name: &str) -> LayoutImage {
    let index = read_json(&layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == ref_name)
        .unwrap_or_else(|| panic!("no {ref_name} in {}: {index}", layout.display()))
        .clone();
    let digest = desc["digest"].as_str().unwrap().to_string();
    let manifest = read_json(&blob_path(layout, &digest));
    let config = read_json(&blob_path(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob_path(layout, l["digest"].as_str().unwrap()))
        .collect();
    LayoutImage {
        manifest_digest: digest,
        manifest,
        config,
        layers,
    }
}

/// Write a context directory from (path, content) pairs.
pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let path = d.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
    d
}

/// Build `ctx` (tagged `t:1`) into an OCI layout inside the context; returns the image and stderr.
pub fn build_to_layout(root: &Path, ctx: &Path, extra: &[&str]) -> (LayoutImage, String) {
    let oci = ctx.join("out-oci");
    let dest = format!("type=oci,dest={}", oci.display());
    let mut args = vec!["build", "--progress", "plain", "-t", "t:1", "-o", &dest];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = kiln(root, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln build failed:\n{stderr}");
    (layout_image(&oci, "1"), stderr)
}

/// Every entry of every layer, later layers replacing earlier ones (whiteouts kept as entries).
pub fn all_entries(img: &LayoutImage) -> BTreeMap<String, Entry> {
    img.layers.iter().flat_map(|l| layer_entries(l)).collect()
}

/// The non-root test user with subordinate id ranges (scripts/test.sh creates it too).
pub fn ensure_kilntest() {
    let ok = Command::new("id")
        .arg("kilntest")
        .output()
        .unwrap()
        .status
        .success();
    if !ok {
        assert!(
            Command::new("useradd")
                .args(["-m", "kilntest"])
                .status()
                .unwrap()
                .success(),
            "useradd kilntest"
        );
    }
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuid.lines().any(|l| l.starts_with("kilntest:")) {
        let st = Command::new("usermod")
            .args([
                "--add-subuids",
                "200000-265535",
                "--add-subgids",
                "200000-265535",
                "kilntest",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "usermod --add-subuids kilntest");
    }
}
