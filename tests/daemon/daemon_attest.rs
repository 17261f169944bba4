//! Attestations and metadata files through the daemon (issue 21): kiln.toml's `[build]
//! provenance` / `sbom` turn them on for every build; a worker running as another uid (the real
//! user `kilntest`) asks through the Python client for an OCI output and buildx's metadata file in
//! folders that do not exist yet, and owns what it gets; a metadata file outside the allowed roots
//! is refused before anything runs.

use std::process::Command;

use crate::daemon_sidecar::{kilntest_uid, owner_as_worker, worker_python};
use crate::support::*;

#[test]
fn kiln_toml_attests_every_build_and_the_worker_owns_its_metadata_file() {
    ensure_kilntest();
    let uid = kilntest_uid();
    let cfg = tempfile::tempdir().unwrap();
    let toml = cfg.path().join("kiln.toml");
    std::fs::write(
        &toml,
        "[build]\nprovenance = \"mode=min\"\nsbom = true\nsource_date_epoch = 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(cfg.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(&[
        "--config",
        toml.to_str().unwrap(),
        "--socket-mode",
        "0666",
        "--allowed-uid",
        &uid,
    ]);
    d.context(
        "app",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nARG V=1\nRUN echo $V > /v\n",
        )],
    );
    assert!(Command::new("chown")
        .args(["-R", "kilntest:kilntest"])
        .arg(d.build_root())
        .status()
        .unwrap()
        .success());

    let out = worker_python(
        &d,
        "ok = kiln_client.build_image('attest/app', '1', push_image=False, context='app', \
         build_args={'V': '2'}, outputs=['type=oci,dest=out/app-oci'], \
         metadata_file='out/meta/build.json', iidfile='out/iid')\n\
         assert ok, 'build failed'\n",
    );
    assert!(!out.contains("ERROR"), "{out}");
    let meta = d.build_root().join("out/meta/build.json");
    let want = format!("{uid}:{uid}");
    for p in [
        d.build_root().join("out/meta"),
        meta.clone(),
        d.build_root().join("out/iid"),
    ] {
        assert_eq!(owner_as_worker(&p), want, "{}", p.display());
    }
    let m = read_json(&meta);
    assert_eq!(
        m["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let digest = m["containerimage.digest"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(d.build_root().join("out/iid")).unwrap(),
        digest
    );

    // The build's record and its last event name the index too.
    let (_, builds) = d.get("/v1/builds");
    let rec = &builds.as_array().unwrap()[0];
    assert_eq!(rec["result"]["index"], digest, "{rec}");
    let events = d.events(rec["id"].as_str().unwrap());
    assert_eq!(events.last().unwrap()["index"], digest);

    // The OCI output holds the index the file names, with kiln.toml's attestations.
    let oci = d.build_root().join("out/app-oci");
    let index = read_json(&blob_path(&oci, digest));
    let att = read_json(&blob_path(
        &oci,
        index["manifests"][1]["digest"].as_str().unwrap(),
    ));
    let types: Vec<&str> = att["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        types,
        [
            "https://spdx.dev/Document",
            "https://slsa.dev/provenance/v1"
        ]
    );
    let prov = read_json(&blob_path(
        &oci,
        att["layers"][1]["digest"].as_str().unwrap(),
    ));
    let p = &prov["predicate"];
    assert!(
        p["buildDefinition"]["externalParameters"]["request"]["args"]
            .get("build-arg:V")
            .is_none(),
        "mode=min keeps no build args: {p}"
    );
    assert_eq!(
        p["runDetails"]["metadata"]["buildkit_completeness"]["request"],
        false
    );
    assert!(p["buildDefinition"]["internalParameters"]
        .get("buildConfig")
        .is_none());

    // `kiln build` through the daemon prints what the tags name, as the embedded engine does.
    let iid = d.build_root().join("out/cli-iid");
    let out = Command::new(kiln_bin())
        .arg("--host")
        .arg(format!("unix://{}", d.socket().display()))
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "attest/cli:1",
            "--iidfile",
        ])
        .arg(&iid)
        .arg(d.build_root().join("app"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(printed, std::fs::read_to_string(&iid).unwrap());
    assert!(
        read_json(
            &d.root()
                .join("content/blobs/sha256")
                .join(printed.trim_start_matches("sha256:"))
        )["manifests"][1]["annotations"]["vnd.docker.reference.type"]
            == "attestation-manifest"
    );

    // A metadata file outside the roots: refused, nothing built.
    let (status, body) = d.post_json(
        "/v1/builds",
        r#"{"context":"app","iidfile":"/etc/kiln-iid"}"#,
    );
    assert!(status >= 400, "{status} {body}");
    assert!(
        body.to_string().contains("outside the allowed roots"),
        "{body}"
    );
    assert!(!std::path::Path::new("/etc/kiln-iid").exists());
}
