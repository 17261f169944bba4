//! Package builds (issue 14) for real: a Debian base made by mmdebstrap from Debian's archive,
//! imported into a ROOTLESS `kiln daemon` (run as the non-root user kilntest with subuid ranges),
//! then package builds through the API, the CLI and the Python client that install real APT
//! packages and a pinned pip package from PyPI inside kiln's sandbox; the installed files checked
//! in the image; the catalog entry going building → ready; bad lines refused with a 400 naming
//! the line; cancel and rebuild-with-changes through the same entry; a `universal` build.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};

/// The mmdebstrap-made bookworm layout, once per test binary, readable by kilntest.
pub(crate) fn debian_layout() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require_tool("mmdebstrap");
        sweep_dead_test_dirs("kiln-test-debian-");
        let dir = PathBuf::from(format!("/tmp/kiln-test-debian-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("bash")
            .arg(manifest_dir().join("testdata/packages/make-debian-image.sh"))
            .arg(&dir)
            .arg("bookworm")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-debian-image.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .unwrap()
            .success());
        dir
    })
    .clone()
}

/// `kiln daemon` run as kilntest on its own store, socket and context root.
struct RootlessDaemon {
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
}

impl RootlessDaemon {
    fn start() -> RootlessDaemon {
        ensure_kilntest();
        let dir = tempfile::Builder::new()
            .prefix("kiln-pkg-")
            .tempdir_in("/tmp")
            .unwrap();
        let bin = dir.path().join("kiln");
        std::fs::copy(kiln_bin(), &bin).unwrap();
        std::fs::create_dir_all(dir.path().join("build")).unwrap();
        assert!(Command::new("chown")
            .args(["-R", "kilntest:kilntest"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success());
        let mut d = RootlessDaemon {
            dir,
            bin,
            child: None,
        };
        let layout = debian_layout();
        for tag in ["debian:bookworm", "debian:bookworm-gpu"] {
            d.as_kilntest(&[
                "import",
                &format!("{}:bookworm", layout.display()),
                "--tag",
                tag,
            ]);
        }
        let log = std::fs::File::create(d.dir.path().join("daemon.log")).unwrap();
        let child = d
            .cmd()
            .arg("daemon")
            .arg("--socket")
            .arg(d.socket())
            .arg("--context-root")
            .arg(d.build_root())
            .stderr(log)
            .spawn()
            .unwrap();
        d.child = Some(child);
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(d.socket()).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "{}", d.daemon_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "kilntest", "--"])
            .arg(&self.bin)
            .arg("--root")
            .arg(self.dir.path().join("state"))
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("KILN_HOST");
        c
    }

    fn as_kilntest(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kiln {args:?} as kilntest:\n{err}");
        err
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("kiln.sock")
    }
    fn build_root(&self) -> PathBuf {
        self.dir.path().join("build")
    }
    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        // As kilntest: inside the daemon's user namespace root is unmapped (nobody), kilntest is 0.
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let ctype = body.map(|_| "application/json");
        let (code, b) =
            socket_request(&self.socket(), Some("kilntest"), method, path, ctype, &text);
        (code, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    fn submit(&self, body: Value) -> String {
        let (s, v) = self.call("POST", "/v1/builds", Some(&body));
        assert_eq!(s, 202, "POST /v1/builds {body}: {v}\n{}", self.daemon_log());
        v["id"].as_str().unwrap().to_string()
    }

    /// Wait for a build's end; returns its record.
    fn wait(&self, id: &str) -> Value {
        let t = Instant::now();
        loop {
            let (_, v) = self.call("GET", &format!("/v1/builds/{id}"), None);
            if ["succeeded", "failed", "cancelled"].contains(&v["status"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(
                t.elapsed() < Duration::from_secs(600),
                "build {id} never ended: {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn entry(&self, name: &str) -> Value {
        let (s, v) = self.call("GET", &format!("/v1/catalog/{name}"), None);
        assert_eq!(s, 200, "{v}");
        v
    }

    fn log(&self, id: &str) -> String {
        let (_, v) = self.call("GET", &format!("/v1/builds/{id}/logs"), None);
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    }
}

impl Drop for RootlessDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

/// Path → content of the file in the image's layers (later layers win).
fn file_in(img: &LayoutImage, path: &str) -> Option<String> {
    let e = all_entries(img);
    e.get(path)
        .and_then(|e| e.content.clone())
        .map(|c| String::from_utf8_lossy(&c).into_owned())
}

fn paths(img: &LayoutImage) -> Vec<String> {
    img.layers
        .iter()
        .skip(1)
        .flat_map(|l| layer_entries(l).into_keys())
        .collect()
}

fn check_image(layout: &Path) {
    let img = layout_image(layout, "1");
    let all = all_entries(&img);
    assert!(all.contains_key("usr/bin/jq"), "jq is not in the image");
    let six = file_in(&img, "usr/local/lib/python3.11/dist-packages/six.py")
        .expect("six from PyPI is not in the image");
    assert!(six.contains("__version__ = \"1.16.0\""));
    // The package steps' layers hold no APT lists or caches, no pip cache, no injected CA.
    for p in paths(&img) {
        let leaked = (p.starts_with("var/lib/apt/lists/") && p.len() > "var/lib/apt/lists/".len())
            || p.starts_with("var/cache/apt/archives/")
            || p.starts_with("var/cache/kiln-")
            || p.starts_with("root/.cache/pip")
            || p.starts_with("run/kiln");
        assert!(!leaked, "{p} reached a layer");
    }
    let platform_ca = std::fs::read_dir("/usr/local/share/ca-certificates")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .next();
    if let (Some(ca), Some(bundle)) = (
        platform_ca,
        file_in(&img, "etc/ssl/certs/ca-certificates.crt"),
    ) {
        let body: String = ca
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .take(3)
            .collect();
        assert!(
            !bundle.replace('\n', "").contains(&body),
            "the platform CA reached a layer"
        );
    }
    let env = img.config["config"]["Env"].to_string();
    for k in [
        "SSL_CERT_FILE",
        "PIP_CERT",
        "REQUESTS_CA_BUNDLE",
        "PIP_BREAK_SYSTEM_PACKAGES",
    ] {
        assert!(!env.contains(k), "{k} in the image config: {env}");
    }
}

#[test]
fn package_builds_catalog_cancel_rebuild_and_universal_rootless() {
    let mut d = RootlessDaemon::start();
    let out = d.build_root().join("tools-oci");
    let spec = json!({
        "packages": {"base": "debian:bookworm", "apt": ["jq", "python3-pip"], "pip": ["six==1.16.0"]},
        "tags": ["registry.example.com/team/py-tools:1"],
        "outputs": [format!("type=oci,dest={}", out.display())],
        "catalog": {"display_name": "py-tools", "description": "jq and six", "type": "cpu"},
    });
    // A bad line is a 400 naming the line, before anything runs.
    let mut bad = spec.clone();
    bad["packages"]["apt"] = json!(["jq", "curl; rm -rf /"]);
    let (s, v) = d.call("POST", "/v1/builds", Some(&bad));
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("packages.apt line 2") && msg.contains("curl; rm -rf /"),
        "{msg}"
    );
    let mut bad = spec.clone();
    bad["packages"]["pip"] = json!(["--index-url=https://evil.example.com"]);
    assert_eq!(d.call("POST", "/v1/builds", Some(&bad)).0, 400);

    let id = d.submit(spec.clone());
    let e = d.entry("py-tools");
    assert_eq!(e["status"], "building", "{e}");
    assert_eq!(e["build_id"], id.as_str());
    let rec = d.wait(&id);
    assert_eq!(rec["status"], "succeeded", "{rec}\n{}", d.log(&id));
    let df = rec["dockerfile"].as_str().unwrap();
    assert!(
        df.contains("apt-get install -y --no-install-recommends"),
        "{df}"
    );
    assert!(df.contains("'six==1.16.0'"), "{df}");
    let log = d.log(&id);
    assert!(
        log.contains("sandbox:") || log.contains("Setting up jq"),
        "{log}"
    );
    check_image(&out);
    let e = d.entry("py-tools");
    assert_eq!(e["status"], "ready", "{e}");
    assert_eq!(e["url"], "registry.example.com/team/py-tools:1");
    let (_, list) = d.call("GET", "/v1/catalog?q=six", None);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // universal: the same packages on the CPU and the GPU base, two images, both URLs recorded.
    let uid = d.submit(json!({
        "packages": {"base": "debian:bookworm", "gpu_base": "debian:bookworm-gpu", "apt": ["jq"]},
        "tags": ["registry.example.com/team/uni:1"],
        "catalog": {"display_name": "uni", "type": "universal"},
    }));
    let e = d.entry("uni");
    let gpu_id = e["gpu_build_id"].as_str().expect("a GPU build").to_string();
    let urec = d.wait(&uid);
    assert_eq!(urec["status"], "succeeded", "{urec}\n{}", d.log(&uid));
    let grec = d.wait(&gpu_id);
    assert_eq!(grec["status"], "succeeded", "{}", d.log(&gpu_id));
    assert!(grec["dockerfile"]
        .as_str()
        .unwrap()
        .contains("FROM debian:bookworm-gpu"));
    let e = d.entry("uni");
    assert_eq!(e["status"], "ready", "{e}");
    assert_eq!(e["url"], "registry.example.com/team/uni:1");
    assert_eq!(e["gpu_url"], "registry.example.com/team/uni:1-gpu");

    // Cancel: the entry fails with the build.
    let cid = d.submit(json!({
        "packages": {"base": "debian:bookworm", "apt": ["tree"]},
        "tags": ["registry.example.com/team/cancel-me:1"], "no_cache": true,
        "catalog": {"display_name": "cancel-me"},
    }));
    let t = Instant::now();
    while d.call("GET", &format!("/v1/builds/{cid}"), None).1["status"] != "running" {
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.call("POST", &format!("/v1/builds/{cid}/cancel"), None).0,
        202
    );
    assert_eq!(d.wait(&cid)["status"], "cancelled");
    assert_eq!(d.entry("cancel-me")["status"], "failed");

    // Rebuild with changes goes through the same entry.
    let (s, v) = d.call(
        "POST",
        &format!("/v1/builds/{id}/rebuild"),
        Some(&json!({"packages": {"base": "debian:bookworm", "apt": ["jq", "python3-pip", "tree"], "pip": ["six==1.16.0"]}})),
    );
    assert_eq!(s, 202, "{v}");
    let rid = v["id"].as_str().unwrap().to_string();
    assert_eq!(d.entry("py-tools")["build_id"], rid.as_str());
    assert_eq!(d.wait(&rid)["status"], "succeeded", "{}", d.log(&rid));
    assert!(all_entries(&layout_image(&out, "1")).contains_key("usr/bin/tree"));
    assert_eq!(d.entry("py-tools")["status"], "ready");

    // The CLI: a package build through the daemon, then the catalog commands.
    let host = format!("unix://{}", d.socket().display());
    let cli = |args: &[&str]| {
        let o = Command::new("runuser")
            .args(["-u", "kilntest", "--"])
            .arg(&d.bin)
            .arg("--host")
            .arg(&host)
            .args(args)
            .current_dir(d.dir.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "kiln {args:?}:\n{text}");
        text
    };
    cli(&[
        "build",
        "--progress",
        "plain",
        "--base",
        "debian:bookworm",
        "--apt",
        "jq",
        "-t",
        "registry.example.com/team/cli-tools:1",
        "--catalog",
        "cli-tools",
    ]);
    assert_eq!(d.entry("cli-tools")["status"], "ready");
    let ls = cli(&["catalog", "ls", "-q", "cli"]);
    assert!(ls.contains("cli-tools") && !ls.contains("py-tools"), "{ls}");
    cli(&["catalog", "edit", "cli-tools", "--description", "just jq"]);
    assert_eq!(d.entry("cli-tools")["description"], "just jq");
    cli(&[
        "catalog",
        "add",
        "upstream-debian",
        "--url",
        "docker.io/library/debian:bookworm",
    ]);
    assert!(cli(&["catalog", "show", "upstream-debian"]).contains("\"ready\""));
    cli(&["catalog", "rm", "upstream-debian"]);
    assert_eq!(d.call("GET", "/v1/catalog/upstream-debian", None).0, 404);

    // The Python client: build_packages with a catalog entry, then the catalog calls.
    let pydir = d.dir.path().join("python");
    std::fs::create_dir_all(&pydir).unwrap();
    for f in ["kiln_client.py", "kiln_catalog.py"] {
        std::fs::copy(manifest_dir().join("clients/python").join(f), pydir.join(f)).unwrap();
    }
    let py = Command::new("runuser")
        .args(["-u", "kilntest", "--", "env"])
        .arg(format!("PYTHONPATH={}", pydir.display()))
        .arg(format!("KILN_HOST={host}"))
        .arg("python3")
        .arg("-c")
        .arg(
            r#"
import kiln_catalog, kiln_client, io
buf = io.StringIO()
ok = kiln_catalog.build_packages("registry.example.com/team/py-client", "1", base="debian:bookworm",
                                 apt=["jq"], catalog={"display_name": "py-client"}, out=buf)
assert ok, buf.getvalue()
assert kiln_catalog.get_image("py-client")["status"] == "ready"
try:
    kiln_catalog.build_packages("x", "1", base="debian:bookworm", apt=["bad;name"])
    raise SystemExit("a bad line was accepted")
except kiln_client.KilnError as e:
    assert e.status == 400 and "packages.apt line 1" in e.message, e
kiln_catalog.update_image("py-client", description="from python")
names = [i["name"] for i in kiln_catalog.list_images(q="python")]
assert names == ["py-client"], names
kiln_catalog.delete_image("py-client")
print("python ok")
"#,
        )
        .current_dir(d.dir.path())
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );

    // The catalog survives a restart of the daemon (kiln.db).
    if let Some(mut c) = d.child.take() {
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let _ = c.wait();
    }
    let log = std::fs::File::create(d.dir.path().join("daemon2.log")).unwrap();
    d.child = Some(
        d.cmd()
            .arg("daemon")
            .arg("--socket")
            .arg(d.socket())
            .arg("--context-root")
            .arg(d.build_root())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(d.socket()).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.entry("py-tools")["status"], "ready");
    let _ = std::fs::remove_dir_all(debian_layout());
}
