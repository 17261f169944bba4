//! The one helper module every integration-test binary shares (each `tests/<area>/main.rs` declares
//! it with `#[path = "../support/mod.rs"] mod support;`): run the real `kiln` binary, make the
//! busybox base image with the testdata script, and read back what kiln wrote (layouts, layers,
//! configs); the registry harness, the scripted HTTP server and the fuzz generators are its
//! submodules. No binary uses all of it, hence `dead_code` allowed here.
#![allow(dead_code)]

pub mod json_gen;
pub mod registry;
pub mod sandbox;
pub mod scripted_http;
pub mod tar_gen;

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
        sweep_dead_test_dirs("kiln-test-busybox-");
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

/// Mount points under `dir` in this mount namespace (a daemon's or a CLI's: tests run in the
/// host's), from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
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

/// One HTTP request to a kiln socket with curl, as root or (through runuser) as `as_user`, so the
/// daemon sees that uid through SO_PEERCRED; returns (status, body).
pub fn socket_request(
    socket: &Path,
    as_user: Option<&str>,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::Write as _;
    let mut cmd = match as_user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    cmd.args([
        "-s",
        "-N",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "--unix-socket",
    ])
    .arg(socket);
    if let Some(ct) = ctype {
        cmd.args(["-H", &format!("Content-Type: {ct}"), "--data-binary", "@-"]);
    }
    cmd.arg(format!("http://kiln{path}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("running curl");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(body.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A live `kiln daemon` on a temp socket, with its own store (busybox imported) and context root.
/// Dropping it sends SIGTERM and waits.
pub struct Daemon {
    base: tempfile::TempDir,
    child: Option<std::process::Child>,
    extra: Vec<String>,
}

impl Daemon {
    pub fn start(extra: &[&str]) -> Daemon {
        let base = tempfile::tempdir().unwrap();
        // Others (the kilntest user) must reach the socket to be refused by the peer check.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(base.path().join("build")).unwrap();
        let layout = busybox_layout();
        kiln_ok(
            &base.path().join("root"),
            &[
                "import",
                &format!("{}:latest", layout.display()),
                "--tag",
                "busybox:latest",
            ],
        );
        let mut d = Daemon {
            base,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    /// A daemon on an existing state directory (`root` is linked as its root; nothing imported).
    pub fn start_on(root: &Path, extra: &[&str]) -> Daemon {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("build")).unwrap();
        std::os::unix::fs::symlink(root, base.path().join("root")).unwrap();
        let mut d = Daemon {
            base,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.base.path().join("daemon.log")).unwrap();
        let child = Command::new(kiln_bin())
            .arg("--root")
            .arg(self.root())
            .arg("daemon")
            .arg("--socket")
            .arg(self.socket())
            .arg("--context-root")
            .arg(self.build_root())
            .args(&self.extra)
            .env_remove("KILN_HOST")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .stderr(log)
            .spawn()
            .expect("starting kiln daemon");
        self.child = Some(child);
        let t = std::time::Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(20),
                "the daemon did not come up: {}",
                std::fs::read_to_string(self.base.path().join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }
    pub fn socket(&self) -> PathBuf {
        self.base.path().join("kiln.sock")
    }
    pub fn build_root(&self) -> PathBuf {
        self.base.path().join("build")
    }

    /// Write a context directory under the build root.
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.build_root().join(name);
        for (p, c) in files {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        dir
    }

    /// One request with curl; returns (status, body).
    pub fn raw(&self, method: &str, path: &str, ctype: Option<&str>, body: &str) -> (u16, String) {
        socket_request(&self.socket(), None, method, path, ctype, body)
    }

    pub fn raw_json(
        &self,
        method: &str,
        path: &str,
        ctype: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let (s, b) = self.raw(method, path, ctype, body);
        let v = serde_json::from_str(&b).unwrap_or(serde_json::Value::String(b));
        (s, v)
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.raw_json("GET", path, None, "")
    }

    pub fn post_json(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        self.raw_json("POST", path, Some("application/json"), body)
    }

    /// All events of a build, following it to its end.
    pub fn events(&self, id: &str) -> Vec<serde_json::Value> {
        self.events_from(id, 0)
    }

    pub fn events_from(&self, id: &str, offset: usize) -> Vec<serde_json::Value> {
        let (s, body) = self.raw(
            "GET",
            &format!("/v1/builds/{id}/events?offset={offset}"),
            None,
            "",
        );
        assert_eq!(s, 200, "{body}");
        body.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn log_text(&self, id: &str) -> String {
        self.raw("GET", &format!("/v1/builds/{id}/logs"), None, "")
            .1
    }

    /// Crash the daemon (no graceful shutdown).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop (SIGTERM) if running, then start again on the same store and socket.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A kiln set up for the non-root user `kilntest`: the binary copied where that user can run it
/// (whatever the checkout's permissions), the busybox image imported into its own store, and a
/// context directory it owns.
pub struct Rootless {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Rootless {
    /// Writes `files` into `ctx/` and imports busybox as `busybox`, all as `kilntest`.
    pub fn new(files: &[(&str, &str)]) -> Rootless {
        assert!(
            rustix::process::geteuid().is_root(),
            "LOUD: this test must start as root to become kilntest"
        );
        ensure_kilntest();
        let dir = tempfile::Builder::new()
            .prefix("kiln-rootless-")
            .tempdir_in("/tmp")
            .unwrap();
        let bin = dir.path().join("kiln");
        std::fs::copy(kiln_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let ctx = dir.path().join("ctx");
        for (p, c) in files {
            let path = ctx.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        let layout = dir.path().join("busybox");
        assert!(Command::new("cp")
            .arg("-a")
            .arg(busybox_layout())
            .arg(&layout)
            .status()
            .unwrap()
            .success());
        assert!(Command::new("chown")
            .args(["-R", "kilntest:kilntest"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success());
        let r = Rootless { dir, bin };
        r.kiln(&[
            "import",
            &format!("{}:latest", layout.display()),
            "--tag",
            "busybox",
        ]);
        r
    }

    pub fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    /// Run `kiln --root <own state> ARGS` as kilntest; insists on success; returns stderr.
    pub fn kiln(&self, args: &[&str]) -> String {
        let out = Command::new("runuser")
            .args(["-u", "kilntest", "--"])
            .arg(&self.bin)
            .arg("--root")
            .arg(self.dir.path().join("state"))
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_ROOT")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kiln {args:?} as kilntest:\n{text}");
        text
    }

    /// Build the context as kilntest into an OCI layout; returns the image and stderr.
    pub fn build(&self, extra: &[&str]) -> (LayoutImage, String) {
        let oci = self.dir.path().join("out");
        let dest = format!("type=oci,dest={}", oci.display());
        let ctx = self.ctx();
        let mut args = vec!["build", "--progress", "plain", "-t", "t:1", "-o", &dest];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        let stderr = self.kiln(&args);
        (layout_image(&oci, "1"), stderr)
    }
}

/// `n` incompressible bytes (xorshift64, fixed seed): a layer of them is as big as they are.
pub fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `(step, cached)` of every finished step in a `--progress plain` log ("  #N CACHED: …" or
/// "  #N done in …: layer …").
pub fn step_outcomes(stderr: &str) -> Vec<(usize, bool)> {
    stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix('#'))
        .filter_map(|l| {
            let (n, rest) = l.split_once(' ')?;
            Some((n.parse().ok()?, rest.starts_with("CACHED")))
        })
        .collect()
}

/// Pids whose command line contains `marker` (`pgrep -f`; processes this test started).
pub fn pids_of(marker: &str) -> Vec<i32> {
    let out = Command::new("pgrep").args(["-f", marker]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A host binary and the libraries it loads, copied below `dest` at their own paths, so that
/// it runs inside a busybox image (busybox has no ssh-add).
pub fn host_binary_tree(bin: &str, dest: &Path) {
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    let libs: Vec<PathBuf> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    for f in std::iter::once(PathBuf::from(bin)).chain(libs) {
        let to = dest.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
}

/// Every file under `dir` that contains `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if e.file_type().is_file() {
            if let Ok(b) = std::fs::read(e.path()) {
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(e.path().to_path_buf());
                }
            }
        }
    }
    hits
}

/// Remove `/tmp/<prefix><pid>` directories of test processes that are gone (each test binary
/// makes its base images once, under its pid, and cannot clean up at exit).
pub fn sweep_dead_test_dirs(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
