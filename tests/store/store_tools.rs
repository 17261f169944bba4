//! The store's layout, exports and fsck checked with real peers: skopeo, umoci, oci-image-tool.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use kiln::digest::{hash_reader, Digest};
use kiln::image::{
    rfc3339, Descriptor, ImageConfig, Index, Manifest, Platform, MEDIA_OCI_LAYER_GZIP,
};
use kiln::store::{import_oci_layout, write_docker_archive, write_oci_layout, Store};

/// Run a peer tool; a missing tool or a failure fails the test loudly with its output.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (install it: see scripts/): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A gzip layer tar with the given files; returns (blob bytes, diff_id).
fn layer(files: &[(&str, &[u8])]) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let diff_id = Digest::of(&tar);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

struct Built {
    desc: Descriptor,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    config: Digest,
}

/// Assemble a two-layer image for the host platform in the store and tag it.
fn build_image(store: &Store, tag: &str, salt: &str) -> Built {
    let mut config = ImageConfig::new(&Platform::host());
    config.created = Some(rfc3339(1_700_000_000));
    config.config.cmd = Some(vec!["/bin/hello".into()]);
    config.config.env_set("PATH", "/bin");
    config
        .config
        .labels
        .insert("org.example.salt".into(), salt.into());
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, files) in [
        vec![(
            "bin/hello",
            format!("#!/bin/sh\necho {salt}\n").into_bytes(),
        )],
        vec![
            ("etc/motd", b"hi\n".to_vec()),
            ("srv/data.bin", vec![7u8; 100_000]),
        ],
    ]
    .iter()
    .enumerate()
    {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let (blob, diff_id) = layer(&files);
        let d = store.put_bytes(&blob, None).unwrap();
        layers.push(Descriptor::new(MEDIA_OCI_LAYER_GZIP, d, blob.len() as u64));
        config.push_layer(diff_id.clone(), &format!("COPY layer{i} /"), None);
        diff_ids.push(diff_id);
    }
    config.push_empty("CMD [\"/bin/hello\"]", None);
    let (cfg_bytes, cfg_desc) = config.to_blob().unwrap();
    store.put_bytes(&cfg_bytes, Some(&cfg_desc.digest)).unwrap();
    let (m_bytes, m_desc) = Manifest::new(cfg_desc.clone(), layers.clone())
        .to_blob()
        .unwrap();
    store.put_bytes(&m_bytes, Some(&m_desc.digest)).unwrap();
    store.tag(tag, &m_desc).unwrap();
    Built {
        desc: m_desc,
        layers,
        diff_ids,
        config: cfg_desc.digest,
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON ({e}): {s}"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn peers_read_the_store_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let img = build_image(&store, "example.com/team/app:1.0", "a");
    build_image(&store, "demo", "b");
    let content = p(store.content_dir());

    let out = json(&run(
        "skopeo",
        &[
            "inspect",
            &format!("oci:{content}:example.com/team/app:1.0"),
        ],
    ));
    assert_eq!(out["Digest"], img.desc.digest.to_string());
    let layers: Vec<String> = out["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = img.layers.iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(layers, want);
    assert_eq!(out["Labels"]["org.example.salt"], "a");

    let stat = json(&run(
        "umoci",
        &["stat", "--json", "--image", &format!("{content}:demo")],
    ));
    assert_eq!(stat["history"].as_array().unwrap().len(), 3, "{stat}");

    for tag in ["example.com/team/app:1.0", "demo"] {
        run(
            "oci-image-tool",
            &[
                "validate",
                "--type",
                "image",
                "--ref",
                &format!("name={tag}"),
                content,
            ],
        );
    }
    let report = store.fsck().unwrap();
    assert!(report.is_clean(), "{report}");
    // 2 manifests, 2 configs, 2 different first layers, 1 shared second layer.
    assert_eq!(report.blobs_checked, 7);
}

#[test]
fn fsck_names_a_flipped_byte_and_a_deleted_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let img = build_image(&store, "app:1", "fsck");
    let flipped = img.layers[1].digest.clone();
    let deleted = img.layers[0].digest.clone();
    let path = store.blob_path(&flipped);
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    fs::remove_file(store.blob_path(&deleted)).unwrap();

    let report = store.fsck().unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.damaged.len(), 1, "{report}");
    assert_eq!(report.damaged[0].digest, flipped);
    assert_eq!(report.damaged[0].actual, Some(Digest::of(&bytes)));
    assert_eq!(report.missing.len(), 1, "{report}");
    assert_eq!(report.missing[0].digest, deleted);
    assert_eq!(report.missing[0].tag, "app:1");
    let text = report.to_string();
    assert!(text.contains(&format!("damaged blob {flipped}")), "{text}");
    assert!(
        text.contains(&format!("missing blob {deleted}")) && text.contains("tag app:1"),
        "{text}"
    );
    // Export refuses an incomplete image, naming the missing blob.
    let err = write_oci_layout(
        &store,
        &[("app:1".into(), img.desc.clone())],
        &dir.path().join("out"),
    )
    .unwrap_err();
    assert!(err.to_string().contains(&deleted.to_string()), "{err}");
}

#[test]
fn gc_removes_only_unreachable_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keep = build_image(&store, "keep:1", "k");
    let drop_ = build_image(&store, "drop:1", "d");
    let stray = store.put_bytes(b"unreferenced", None).unwrap();
    assert!(store.untag("drop:1").unwrap());
    let report = store.gc().unwrap();
    assert!(report.removed.contains(&stray));
    assert!(report.removed.contains(&drop_.desc.digest));
    assert!(report.removed.contains(&drop_.config));
    assert_eq!(report.kept, 4);
    assert!(store.has_blob(&keep.desc.digest));
    for l in &keep.layers {
        assert!(store.has_blob(&l.digest));
    }
    assert!(store.fsck().unwrap().is_clean());
}

#[test]
fn oci_layout_export_dir_and_tar_validate_and_import_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store").as_path()).unwrap();
    let img = build_image(&store, "app:1", "x");
    let out = dir.path().join("layout");
    write_oci_layout(&store, &[("app:1".into(), img.desc.clone())], &out).unwrap();
    run(
        "oci-image-tool",
        &[
            "validate",
            "--type",
            "image",
            "--ref",
            "name=app:1",
            p(&out),
        ],
    );
    let ins = json(&run(
        "skopeo",
        &["inspect", &format!("oci:{}:app:1", p(&out))],
    ));
    assert_eq!(ins["Digest"], img.desc.digest.to_string());
    // Same filesystem: blobs are hard links to the store's.
    use std::os::unix::fs::MetadataExt;
    let exported = out.join("blobs/sha256").join(img.layers[0].digest.hex());
    assert_eq!(
        fs::metadata(&exported).unwrap().ino(),
        fs::metadata(store.blob_path(&img.layers[0].digest))
            .unwrap()
            .ino()
    );

    let tar_path = dir.path().join("layout.tar");
    write_oci_layout(&store, &[("app:1".into(), img.desc.clone())], &tar_path).unwrap();
    let ins = json(&run(
        "skopeo",
        &["inspect", &format!("oci-archive:{}:app:1", p(&tar_path))],
    ));
    assert_eq!(ins["Digest"], img.desc.digest.to_string());
    // Deterministic: the same export twice gives the same bytes.
    let tar2 = dir.path().join("again.tar");
    write_oci_layout(&store, &[("app:1".into(), img.desc.clone())], &tar2).unwrap();
    assert_eq!(fs::read(&tar_path).unwrap(), fs::read(&tar2).unwrap());

    // A layout written by skopeo imports into a fresh store, every blob verified.
    let sk = dir.path().join("skopeo-layout");
    run(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:app:1", store.content_dir().display()),
            &format!("oci:{}:copied", p(&sk)),
        ],
    );
    let fresh = Store::open(dir.path().join("fresh").as_path()).unwrap();
    let d = import_oci_layout(&fresh, &sk, Some("copied")).unwrap();
    assert_eq!(d.digest, img.desc.digest);
    assert!(d.ref_name().is_none());
    let back = fresh.image(&d.digest.to_string()).unwrap();
    assert_eq!(back.config.rootfs.diff_ids, img.diff_ids);
    let err = import_oci_layout(&fresh, &sk, Some("nope")).unwrap_err();
    assert!(err.to_string().contains("copied"), "{err}");
    // A corrupted blob in the source layout is refused and nothing is committed.
    let other = Store::open(dir.path().join("other").as_path()).unwrap();
    let victim = sk.join("blobs/sha256").join(img.layers[1].digest.hex());
    let mut bytes = fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::remove_file(&victim).unwrap();
    fs::write(&victim, &bytes).unwrap();
    let err = import_oci_layout(&other, &sk, None).unwrap_err();
    assert!(
        err.to_string().contains(&img.layers[1].digest.to_string()),
        "{err}"
    );
    assert!(!other.has_blob(&img.layers[1].digest));
}

fn gunzip_digest(path: &Path) -> Digest {
    let mut head = [0u8; 2];
    fs::File::open(path).unwrap().read_exact(&mut head).unwrap();
    if head == [0x1f, 0x8b] {
        hash_reader(GzDecoder::new(fs::File::open(path).unwrap()))
            .unwrap()
            .0
    } else {
        hash_reader(fs::File::open(path).unwrap()).unwrap().0
    }
}

#[test]
fn docker_archive_is_read_and_round_tripped_by_skopeo() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store").as_path()).unwrap();
    let img = build_image(&store, "example.com/app:1.0", "docker");
    let archive = dir.path().join("app.tar");
    write_docker_archive(
        &store,
        &[("example.com/app:1.0".into(), img.desc.clone())],
        &archive,
    )
    .unwrap();

    let ins = json(&run(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", p(&archive))],
    ));
    assert_eq!(ins["Labels"]["org.example.salt"], "docker");
    let inspected: Vec<String> = ins["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // skopeo serves docker-archive layers uncompressed, so it names them by their diff_ids.
    let diff_ids: Vec<String> = img.diff_ids.iter().map(|d| d.to_string()).collect();
    assert_eq!(inspected, diff_ids, "{ins}");

    let oci = dir.path().join("from-archive");
    run(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}:example.com/app:1.0", p(&archive)),
            &format!("oci:{}:rt", p(&oci)),
        ],
    );
    let index = Index::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    let mdesc = &index.manifests[0];
    let m =
        Manifest::from_slice(&fs::read(oci.join("blobs/sha256").join(mdesc.digest.hex())).unwrap())
            .unwrap();
    let cfg_bytes = fs::read(oci.join("blobs/sha256").join(m.config.digest.hex())).unwrap();
    let cfg = ImageConfig::from_slice(&cfg_bytes).unwrap();
    assert_eq!(cfg.rootfs.diff_ids, img.diff_ids);
    // skopeo re-serialises the config when it converts the manifest to OCI (Go field order), so
    // compare what it says, not its bytes.
    let ours = ImageConfig::from_slice(&store.read_blob(&img.config, 1 << 20).unwrap()).unwrap();
    assert_eq!(cfg, ours, "config changed in the round trip");
    // Every layer that came back decompresses to the diff_id we wrote.
    let got: Vec<Digest> = m
        .layers
        .iter()
        .map(|l| gunzip_digest(&oci.join("blobs/sha256").join(l.digest.hex())))
        .collect();
    assert_eq!(got, img.diff_ids);
    let same_blobs = m
        .layers
        .iter()
        .zip(&img.layers)
        .all(|(a, b)| a.digest == b.digest);
    eprintln!("layer blob digests preserved through skopeo: {same_blobs}");

    // Back into a store from skopeo's layout; same config, same diff_ids.
    let fresh = Store::open(dir.path().join("fresh").as_path()).unwrap();
    let d = import_oci_layout(&fresh, &oci, Some("rt")).unwrap();
    let back = fresh.image(&d.digest.to_string()).unwrap();
    assert_eq!(back.config_raw, cfg_bytes);
}

#[test]
fn a_tag_on_an_index_resolves_to_the_host_platform() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let img = build_image(&store, "single", "idx");
    let mut host = img.desc.clone();
    host.platform = Some(Platform::host());
    let mut foreign = Descriptor::new(kiln::image::MEDIA_OCI_MANIFEST, Digest::of(b"not here"), 8);
    foreign.platform = Some(Platform::new("linux", "s390x", None));
    let (bytes, idx) = kiln::image::canonical_json(&Index::new(vec![foreign, host]))
        .map(|b| {
            let d = Descriptor::for_bytes(kiln::image::MEDIA_OCI_INDEX, &b);
            (b, d)
        })
        .unwrap();
    store.put_bytes(&bytes, Some(&idx.digest)).unwrap();
    store.tag("multi:1", &idx).unwrap();
    let got = store.image("multi:1").unwrap();
    assert_eq!(got.manifest_desc.digest, img.desc.digest);
    assert_eq!(got.config.rootfs.diff_ids, img.diff_ids);
    let err = store
        .image_for("multi:1", &Platform::new("linux", "riscv64", None))
        .unwrap_err();
    assert!(err.to_string().contains("linux/riscv64"), "{err}");
    // fsck names the platform manifest the index lists but the store lacks.
    let report = store.fsck().unwrap();
    assert_eq!(report.missing.len(), 1, "{report}");
    assert_eq!(report.missing[0].digest, Digest::of(b"not here"));
    assert_eq!(report.missing[0].tag, "multi:1");
}
