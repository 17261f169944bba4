//! The offline build (issue 2): kiln's main job end to end through the real CLI, checked the way a
//! user would — with skopeo, umoci and oci-image-tool, and by reading the layers and config.

use crate::support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::*;

fn build_demo(root: &Path, out: &Path) -> String {
    let oci = out.join("oci");
    let docker = out.join("demo.tar");
    kiln_ok(
        root,
        &[
            "build",
            "--progress",
            "plain",
            "--source-date-epoch",
            "1700000000",
            "-t",
            "demo:1.0",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            "--output",
            &format!("type=docker,dest={}", docker.display()),
            manifest_dir().join("testdata/demo").to_str().unwrap(),
        ],
    )
    .trim()
    .to_string()
}

#[test]
fn demo_builds_reproducibly_and_peers_read_it() {
    require_tool("skopeo");
    require_tool("oci-image-tool");
    require_tool("umoci");
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (store_with_busybox(), store_with_busybox());
    let (out_a, out_b) = (out.path().join("a"), out.path().join("b"));
    let d1 = build_demo(a.path(), &out_a);
    let d2 = build_demo(b.path(), &out_b);
    assert!(d1.starts_with("sha256:"), "build printed {d1:?}");
    assert_eq!(
        d1, d2,
        "the same context built twice must give the same manifest digest"
    );

    let oci = out_a.join("oci");
    let img = layout_image(&oci, "1.0");
    assert_eq!(img.manifest_digest, d1);

    // oci-image-tool validates the layout and the image it names.
    let v = Command::new("oci-image-tool")
        .args(["validate", "--type", "image", "--ref", "name=1.0"])
        .arg(&oci)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "oci-image-tool: {}",
        String::from_utf8_lossy(&v.stderr)
    );

    // skopeo reads the layout and the docker-archive, and both name the same layers.
    let inspect = |src: String| -> serde_json::Value {
        let o = Command::new("skopeo")
            .args(["inspect", &src])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo inspect {src}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let from_oci = inspect(format!("oci:{}:1.0", oci.display()));
    let from_docker = inspect(format!(
        "docker-archive:{}",
        out_a.join("demo.tar").display()
    ));
    assert_eq!(
        from_oci["Layers"].as_array().unwrap().len(),
        img.layers.len()
    );
    assert_eq!(from_oci["Env"], from_docker["Env"]);

    // docker-archive → skopeo copy → OCI layout round-trips with the same uncompressed content.
    let rt = out.path().join("roundtrip");
    let o = Command::new("skopeo")
        .args([
            "copy",
            &format!("docker-archive:{}", out_a.join("demo.tar").display()),
        ])
        .arg(format!("oci:{}:rt", rt.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let back = layout_image(&rt, "rt");
    assert_eq!(
        back.config["rootfs"]["diff_ids"],
        img.config["rootfs"]["diff_ids"]
    );

    // umoci unpacks it (rootless mode maps owners) and finds the demo program.
    let bundle = out.path().join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1.0", oci.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let hello = bundle.join("rootfs/opt/app/bin/hello");
    assert_eq!(
        fs::metadata(&hello).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(bundle.join("rootfs/bin/busybox").exists());

    // The store itself is an OCI layout skopeo reads, and fsck finds it clean.
    let store_layout = a.path().join("content");
    inspect(format!(
        "oci:{}:docker.io/library/demo:1.0",
        store_layout.display()
    ));
    kiln_ok(a.path(), &["fsck"]);
}

#[test]
fn demo_image_has_the_files_owners_and_config_a_user_expects() {
    let out = tempfile::tempdir().unwrap();
    let root = store_with_busybox();
    build_demo(root.path(), out.path());
    let img = layout_image(&out.path().join("oci"), "1.0");
    let c = &img.config;
    assert_eq!(c["architecture"], "amd64");
    assert_eq!(c["created"], "2023-11-14T22:13:20Z");
    let cfg = &c["config"];
    assert_eq!(cfg["User"], "nobody");
    assert_eq!(cfg["WorkingDir"], "/opt/app");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["hello"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["world"]));
    assert_eq!(cfg["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(cfg["Labels"]["org.opencontainers.image.title"], "kiln demo");
    assert_eq!(cfg["Healthcheck"]["Interval"], 30_000_000_000i64);
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "hello", "--check"])
    );
    let env: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"APP_HOME=/opt/app"), "{env:?}");
    assert!(
        env.contains(
            &"PATH=/opt/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ),
        "ENV PATH must expand the base image's PATH: {env:?}"
    );
    // History: one entry per instruction; metadata ones are empty layers.
    let history = c["history"].as_array().unwrap();
    let layered = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(layered, img.layers.len());
    assert_eq!(
        c["rootfs"]["diff_ids"].as_array().unwrap().len(),
        img.layers.len()
    );

    // Layer 1 is busybox; then WORKDIR /opt/app, then the three COPYs.
    let all: Vec<_> = img.layers.iter().map(|l| layer_entries(l)).collect();
    let find = |p: &str| all.iter().rev().find_map(|l| l.get(p).cloned());
    let hello = find("opt/app/bin/hello").expect("hello in a layer");
    assert_eq!(
        (hello.uid, hello.gid),
        (65534, 65534),
        "--chown=nobody:nogroup"
    );
    assert_eq!(hello.mode, 0o755);
    let readme = find("opt/app/docs/README.md").expect("docs copied");
    assert_eq!((readme.uid, readme.gid, readme.mode), (0, 0, 0o644));
    let greeting = find("opt/app/greeting.txt").expect("RUN output");
    assert_eq!(
        greeting.content.as_deref(),
        Some(&b"hello, kiln, from demo 1.0\n"[..])
    );
    let version = find("opt/app/VERSION").expect("heredoc file");
    assert_eq!(version.content.as_deref(), Some(&b"demo 1.0\n"[..]));
    assert!(find("opt/app/notes.tmp").is_none() && find("src/notes.tmp").is_none());
    // Layer entries never carry timestamps newer than SOURCE_DATE_EPOCH.
    for l in &img.layers[1..] {
        let bytes = fs::read(l).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert!(
                e.header().mtime().unwrap() <= 1_700_000_000,
                "{:?}",
                e.path()
            );
        }
    }
}

#[test]
fn copy_semantics_match_docker() {
    let root = store_with_busybox();
    let ctx = support::context(&[
        ("a.txt", "a"),
        ("b.txt", "b"),
        ("dir/x/y.txt", "y"),
        ("dir/z.txt", "z"),
        ("skip.log", "no"),
        (".dockerignore", "*.log\n"),
    ]);
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\n\
         COPY a.txt /file-renamed\n\
         COPY a.txt b.txt /multi/\n\
         COPY dir /contents/\n\
         COPY --chmod=u+x,go-r *.txt /glob/\n\
         WORKDIR /w\n\
         COPY a.txt rel/\n\
         COPY --parents dir/x/y.txt /par/\n\
         COPY --exclude=**/*.txt dir /excl/\n",
    )
    .unwrap();
    let (img, _) = build_to_layout(root.path(), ctx.path(), &[]);
    let all = all_entries(&img);
    let has = |p: &str| all.contains_key(p);
    assert!(all["file-renamed"].kind == 'f');
    assert!(has("multi/a.txt") && has("multi/b.txt"));
    assert!(has("contents/x/y.txt") && has("contents/z.txt") && !has("contents/dir"));
    assert_eq!(all["glob/a.txt"].mode, 0o700, "0644 + u+x,go-r");
    assert!(has("w/rel/a.txt"), "relative dest resolves against WORKDIR");
    assert!(has("par/dir/x/y.txt"), "--parents keeps the source path");
    assert!(
        has("excl/x") && !has("excl/z.txt") && !has("excl/x/y.txt"),
        "--exclude"
    );
    assert!(!all.keys().any(|k| k.ends_with("skip.log")));

    // Several sources into a destination without a trailing slash is refused, naming the rule.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY a.txt b.txt /notadir\n",
    )
    .unwrap();
    let e = kiln_err(root.path(), &["build", ctx.path().to_str().unwrap()]);
    assert!(
        e.contains("Dockerfile:2") && e.contains("must be a directory and end with a /"),
        "{e}"
    );
    // A missing or ignored source names the file and the line.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\n\nCOPY skip.log /\n",
    )
    .unwrap();
    let e = kiln_err(root.path(), &["build", ctx.path().to_str().unwrap()]);
    assert!(
        e.contains("Dockerfile:3") && e.contains("skip.log") && e.contains(".dockerignore"),
        "{e}"
    );
    // Escaping the context is refused.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY ../../etc/passwd /\n",
    )
    .unwrap();
    let e = kiln_err(root.path(), &["build", ctx.path().to_str().unwrap()]);
    assert!(e.contains("outside the build context"), "{e}");
}

#[test]
fn add_unpacks_local_archives_of_every_compression() {
    let root = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    let src = ctx.path().join("src");
    fs::create_dir_all(src.join("pkg")).unwrap();
    fs::write(src.join("pkg/data.txt"), "payload").unwrap();
    let mut df = String::from("FROM scratch\n");
    for (flag, ext) in [
        ("-z", "gz"),
        ("-j", "bz2"),
        ("-J", "xz"),
        ("--zstd", "zst"),
        ("", "plain"),
    ] {
        let name = format!("a.tar.{ext}");
        let mut cmd = Command::new("tar");
        cmd.arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(ctx.path().join(&name));
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        assert!(cmd.arg("pkg").status().unwrap().success(), "tar {flag}");
        df.push_str(&format!("ADD {name} /{ext}/\n"));
    }
    df.push_str("COPY a.tar.gz /copied/\n");
    fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let (img, _) = build_to_layout(root.path(), ctx.path(), &[]);
    let all = all_entries(&img);
    for ext in ["gz", "bz2", "xz", "zst", "plain"] {
        let e = all
            .get(&format!("{ext}/pkg/data.txt"))
            .unwrap_or_else(|| panic!("ADD a.tar.{ext} not unpacked: {:?}", all.keys()));
        assert_eq!(e.content.as_deref(), Some(&b"payload"[..]));
    }
    assert!(all.contains_key("copied/a.tar.gz"), "COPY never unpacks");
}

#[test]
fn target_prunes_unneeded_stages() {
    let root = store_with_busybox();
    let ctx = support::context(&[("f", "x")]);
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS broken\nRUN echo never-built; exit 3\n\nFROM scratch AS files\nCOPY f /f\n",
    )
    .unwrap();
    // The failing stage is not needed for --target files, so it is never built.
    let out = kiln(
        root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--target",
            "files",
            "-t",
            "files:1",
            ctx.path().to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("never-built"), "{err}");
    let e = kiln_err(
        root.path(),
        &["build", "--target", "broken", ctx.path().to_str().unwrap()],
    );
    assert!(
        e.contains("Dockerfile:2") && e.contains("code 3") && e.contains("never-built"),
        "{e}"
    );
}

#[test]
fn chown_by_name_comes_from_the_image_and_unknown_names_are_root() {
    let root = store_with_busybox();
    let ctx = support::context(&[("f", "x")]);
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY --chown=daemon:wheel f /f\n",
    )
    .unwrap();
    let (img, _) = build_to_layout(root.path(), ctx.path(), &[]);
    let last = layer_entries(img.layers.last().unwrap());
    assert_eq!((last["f"].uid, last["f"].gid), (1, 10));
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY --chown=ghost f /f\n",
    )
    .unwrap();
    // BuildKit's readUser (solver/llbsolver/ops/user_linux.go): a name missing from the image's
    // /etc/passwd is not an error, it leaves uid and gid 0.
    let (img, _) = build_to_layout(root.path(), ctx.path(), &[]);
    let last = layer_entries(img.layers.last().unwrap());
    assert_eq!((last["f"].uid, last["f"].gid), (0, 0));
}

#[test]
fn progress_json_is_ndjson_events() {
    let root = store_with_busybox();
    let ctx = support::context(&[("f", "x")]);
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY f /f\nENV A=1\n",
    )
    .unwrap();
    let stdout = kiln_ok(
        root.path(),
        &[
            "build",
            "--progress",
            "json",
            "-t",
            "j:1",
            ctx.path().to_str().unwrap(),
        ],
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"planned"));
    assert_eq!(types.last(), Some(&"finished"));
    assert_eq!(types.iter().filter(|t| **t == "step_finished").count(), 2);
    let layer_step = events
        .iter()
        .find(|e| e["type"] == "step_finished" && e["layer"].is_object())
        .unwrap();
    assert!(layer_step["layer"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

#[test]
fn fsck_names_a_damaged_blob_and_exits_nonzero() {
    let root = store_with_busybox();
    let ctx = support::context(&[("f", "some content")]);
    fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nCOPY f /f\n").unwrap();
    let digest = kiln_ok(
        root.path(),
        &["build", "-t", "d:1", ctx.path().to_str().unwrap()],
    );
    let manifest = read_json(&blob_path(&root.path().join("content"), digest.trim()));
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = blob_path(&root.path().join("content"), &layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, bytes).unwrap();
    let out = kiln(root.path(), &["fsck"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(layer.trim_start_matches("sha256:")),
        "fsck must name the blob: {text}"
    );
}

#[test]
fn from_oci_layout_needs_no_import_and_missing_bases_are_named() {
    let root = tempfile::tempdir().unwrap();
    let layout = busybox_layout();
    let ctx = support::context(&[("f", "x")]);
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM oci-layout://{}:latest\nCOPY f /f\n", layout.display()),
    )
    .unwrap();
    let (img, _) = build_to_layout(root.path(), ctx.path(), &[]);
    assert_eq!(img.layers.len(), 2);
    assert!(layer_entries(&img.layers[0]).contains_key("bin/busybox"));

    // Nothing listens on port 1 of loopback: the pull fails fast, naming registry and image.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM 127.0.0.1:1/team/missing:1.0\nCOPY f /f\n",
    )
    .unwrap();
    let e = kiln_err(
        root.path(),
        &["build", "--no-pull", ctx.path().to_str().unwrap()],
    );
    assert!(
        e.contains("127.0.0.1:1/team/missing:1.0") && e.contains("not found"),
        "{e}"
    );
    let e = kiln_err(root.path(), &["build", ctx.path().to_str().unwrap()]);
    assert!(
        e.contains("127.0.0.1:1/team/missing:1.0") && e.contains("pulling"),
        "{e}"
    );
}
