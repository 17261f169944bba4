//! Attestations and metadata files (issue 21) the way a CI pipeline uses them: a build with
//! `--provenance mode=max --sbom true --push` to a real registry, read back with `skopeo inspect
//! --raw` (BuildKit's layout: attestation manifest for `unknown/unknown`, in-toto layers, subject);
//! the runnable manifest's digest equal to that of the same build without attestations; the SPDX
//! document validated by `pyspdxtools`; the metadata files read by `jq` and as kaniko's digest
//! lines; and on a real Debian base (mmdebstrap) the SBOM's packages equal to what `dpkg-query -W`
//! lists inside the built image.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::registry as registry_support;
use crate::support::*;
use serde_json::Value;

/// `pyspdxtools` from scripts/test.sh's venv, else from PATH.
fn pyspdxtools() -> PathBuf {
    let venv = PathBuf::from("/opt/kiln-test-venv/bin/pyspdxtools");
    if venv.exists() {
        return venv;
    }
    require_tool("pyspdxtools");
    PathBuf::from("pyspdxtools")
}

fn validate_spdx(doc: &Value, dir: &Path) {
    let file = dir.join("sbom.spdx.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = Command::new(pyspdxtools())
        .arg("-i")
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "pyspdxtools refused the SBOM:\n{text}"
    );
    assert!(!text.contains("validation"), "pyspdxtools: {text}");
}

fn skopeo_raw(reference: &str) -> Value {
    let (ok, out, err) =
        registry_support::skopeo(&["inspect", "--raw", "--tls-verify=false", reference]);
    assert!(ok, "skopeo inspect --raw {reference}: {err}");
    serde_json::from_str(&out).unwrap()
}

fn jq(filter: &str, file: &Path) -> String {
    require_tool("jq");
    let out = Command::new("jq")
        .args(["-r", filter])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jq {filter}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

const DOCKERFILE: &str = "FROM busybox
ARG GREETING=hi
COPY status /var/lib/dpkg/status
COPY os-release /etc/os-release
COPY pkgs/ /usr/lib/python3/dist-packages/
RUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo $GREETING > /greeting
";

const STATUS: &str = "Package: jq\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.6-2.1\n\nPackage: libjq1\nStatus: install ok installed\nArchitecture: amd64\nSource: jq\nVersion: 1.6-2.1\n";

#[test]
fn provenance_and_sbom_push_in_buildkit_layout_and_the_manifest_is_unchanged() {
    let reg = registry_support::Registry::plain();
    let ctx = context(&[
        ("Dockerfile", DOCKERFILE),
        ("status", STATUS),
        ("os-release", "ID=debian\nVERSION_ID=\"12\"\n"),
        (
            "pkgs/Requests-2.31.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: Requests\nVersion: 2.31.0\n",
        ),
        ("secret.txt", "s3cr3t-value-never-stored"),
    ]);
    let root = store_with_busybox();
    let out = tempfile::tempdir().unwrap();
    let tag = format!("{}/team/attest:1", reg.addr);
    let f = |n: &str| out.path().join(n).display().to_string();
    let secret = format!("id=tok,src={}", ctx.path().join("secret.txt").display());
    let stdout = kiln_ok(
        root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--source-date-epoch",
            "0",
            "--provenance",
            "mode=max",
            "--sbom",
            "true",
            "--push",
            "--insecure-registry",
            &reg.addr,
            "-t",
            &tag,
            "--build-arg",
            "GREETING=hello",
            "--secret",
            &secret,
            "--annotation",
            "index:org.opencontainers.image.description=attested",
            "--metadata-file",
            &f("meta.json"),
            "--iidfile",
            &f("iid"),
            "--digest-file",
            &f("digest"),
            "--image-name-with-digest-file",
            &f("names"),
            ctx.path().to_str().unwrap(),
        ],
    );
    let index_digest = stdout.trim().to_string();

    // The index as a registry client sees it.
    let index = skopeo_raw(&format!("docker://{tag}"));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        index["annotations"]["org.opencontainers.image.description"],
        "attested"
    );
    let m = index["manifests"].as_array().unwrap();
    assert_eq!(m.len(), 2, "{index}");
    assert_eq!(m[0]["platform"]["os"], "linux");
    let image_digest = m[0]["digest"].as_str().unwrap().to_string();
    assert_eq!(m[1]["platform"]["os"], "unknown");
    assert_eq!(m[1]["platform"]["architecture"], "unknown");
    assert_eq!(
        m[1]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        m[1]["annotations"]["vnd.docker.reference.digest"],
        image_digest.as_str()
    );
    let att = skopeo_raw(&format!(
        "docker://{}/team/attest@{}",
        reg.addr,
        m[1]["digest"].as_str().unwrap()
    ));
    assert_eq!(
        att["artifactType"],
        "application/vnd.docker.attestation.manifest.v1+json"
    );
    assert_eq!(
        att["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(att["subject"]["digest"], image_digest.as_str());
    let layers = att["layers"].as_array().unwrap();
    let types: Vec<&str> = layers
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
    let statement = |i: usize| -> Value {
        assert_eq!(layers[i]["mediaType"], "application/vnd.in-toto+json");
        read_json(&reg.blob_data(layers[i]["digest"].as_str().unwrap()))
    };

    let prov = statement(1);
    assert_eq!(prov["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        prov["subject"][0]["digest"]["sha256"],
        image_digest.trim_start_matches("sha256:")
    );
    let subject = prov["subject"][0]["name"].as_str().unwrap();
    assert!(
        subject.starts_with("pkg:docker/") && subject.contains("team/attest@1?platform=linux%2F"),
        "{subject}"
    );
    let p = &prov["predicate"];
    let ext = &p["buildDefinition"]["externalParameters"];
    assert_eq!(ext["request"]["frontend"], "dockerfile.v0");
    assert_eq!(ext["request"]["args"]["build-arg:GREETING"], "hello");
    assert_eq!(ext["request"]["secrets"][0]["id"], "tok");
    assert_eq!(ext["configSource"]["path"], "Dockerfile");
    assert!(ext["configSource"]["digest"]["sha256"].is_string());
    let dep = &p["buildDefinition"]["resolvedDependencies"][0];
    assert!(
        dep["uri"]
            .as_str()
            .unwrap()
            .starts_with("pkg:docker/busybox@latest?platform=linux%2F"),
        "{dep}"
    );
    assert!(dep["digest"]["sha256"].is_string(), "{dep}");
    let steps =
        p["buildDefinition"]["internalParameters"]["buildConfig"]["llbDefinition"].to_string();
    assert!(
        steps.contains("echo $GREETING > /greeting") && steps.contains("\"src\":\"status\""),
        "{steps}"
    );
    assert!(p["runDetails"]["builder"]["id"].is_string());
    assert!(
        !prov.to_string().contains("s3cr3t"),
        "a secret value reached the provenance"
    );

    let sbom = statement(0);
    let purls: Vec<String> = sbom["predicate"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:deb/debian/jq@1.6-2.1?arch=amd64&distro=debian-12",
            "pkg:deb/debian/libjq1@1.6-2.1?arch=amd64&upstream=jq&distro=debian-12",
            "pkg:pypi/requests@2.31.0",
        ]
    );
    validate_spdx(&sbom["predicate"], out.path());

    // What the next CI step reads.
    assert_eq!(
        index_digest,
        jq(".\"containerimage.digest\"", &out.path().join("meta.json"))
    );
    assert_eq!(
        jq(
            ".\"containerimage.descriptor\".mediaType",
            &out.path().join("meta.json")
        ),
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(jq(".\"image.name\"", &out.path().join("meta.json")), tag);
    assert_eq!(
        std::fs::read_to_string(out.path().join("iid")).unwrap(),
        index_digest
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("digest")).unwrap(),
        index_digest
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("names")).unwrap(),
        format!("{}/team/attest@{index_digest}\n", reg.addr)
    );
    let (ok, _, err) = registry_support::skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/team/attest@{index_digest}", reg.addr),
    ]);
    assert!(
        ok,
        "the digest in the files does not name the pushed image: {err}"
    );

    // The same build without attestations (nothing from the cache): the same runnable manifest.
    let plain_meta = f("plain.json");
    kiln_ok(
        root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--source-date-epoch",
            "0",
            "--no-cache",
            "-t",
            "plain:1",
            "--build-arg",
            "GREETING=hello",
            "--secret",
            &secret,
            "--metadata-file",
            &plain_meta,
            ctx.path().to_str().unwrap(),
        ],
    );
    let plain = Path::new(&plain_meta);
    assert_eq!(jq(".\"containerimage.digest\"", plain), image_digest);
    assert!(jq(".\"containerimage.config.digest\"", plain).starts_with("sha256:"));
    assert_eq!(
        jq(".\"containerimage.descriptor\".platform.os", plain),
        "linux"
    );
}

#[test]
fn the_sbom_of_a_debian_image_lists_what_dpkg_query_lists_inside_it() {
    let layout = crate::packages_build::debian_layout();
    let root = tempfile::tempdir().unwrap();
    kiln_ok(
        root.path(),
        &[
            "import",
            &format!("{}:bookworm", layout.display()),
            "--tag",
            "debian:bookworm",
        ],
    );
    let ctx = context(&[(
        "Dockerfile",
        "FROM debian:bookworm AS img\nRUN echo built > /built\n\
         FROM img AS query\nRUN dpkg-query -W -f '${Package} ${Version}\\n' > /dpkg.txt\n",
    )]);
    let oci = ctx.path().join("oci");
    let dest = format!("type=oci,dest={}", oci.display());
    let stderr = kiln_err_ok(
        root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--target",
            "img",
            "--sbom",
            "true",
            "-t",
            "deb:sbom",
            "-o",
            &dest,
            ctx.path().to_str().unwrap(),
        ],
    );
    let timing = stderr
        .lines()
        .find(|l| l.contains("scanned in"))
        .unwrap_or_default();
    eprintln!("sbom on the debian image: {timing}");
    let index = read_json(&oci.join("index.json"));
    let top = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let image_index = read_json(&blob_path(&oci, &top));
    let att = read_json(&blob_path(
        &oci,
        image_index["manifests"][1]["digest"].as_str().unwrap(),
    ));
    let spdx = read_json(&blob_path(
        &oci,
        att["layers"][0]["digest"].as_str().unwrap(),
    ));
    let doc = &spdx["predicate"];
    validate_spdx(doc, ctx.path());
    let mut listed: Vec<String> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .is_some_and(|l| l.starts_with("pkg:deb/debian/"))
        })
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();

    let (img, _) = build_to_layout(root.path(), ctx.path(), &["--target", "query"]);
    let entries = all_entries(&img);
    let dpkg = entries
        .iter()
        .find(|(k, _)| k.trim_start_matches('/') == "dpkg.txt")
        .and_then(|(_, e)| e.content.clone())
        .expect("/dpkg.txt in the query image");
    let mut want: Vec<String> = String::from_utf8(dpkg)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    want.sort();
    assert!(want.len() > 50, "dpkg-query listed {} packages", want.len());
    assert_eq!(
        listed, want,
        "the SBOM's deb packages differ from dpkg-query -W"
    );
}

/// `kiln` succeeding; its stderr (the plain progress).
fn kiln_err_ok(root: &Path, args: &[&str]) -> String {
    let out = kiln(root, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln {args:?} failed:\n{stderr}");
    stderr
}

#[test]
fn scan_stage_and_context_args_add_sboms_and_cyclonedx_and_annotations_land() {
    let root = store_with_busybox();
    let ctx = context(&[
        (
            "Dockerfile",
            "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\n\
             FROM busybox AS file\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY status /var/lib/dpkg/status\n\
             FROM busybox AS unused\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n\
             FROM busybox\nCOPY --from=file /var/lib/dpkg/status /copied\n",
        ),
        ("status", STATUS),
        ("node_modules/@scope/pkg/package.json", r#"{"name":"@scope/pkg","version":"1.2.3"}"#),
    ]);
    let oci = ctx.path().join("oci");
    let dest = format!("type=oci,dest={}", oci.display());
    kiln_ok(
        root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--sbom",
            "true",
            "-t",
            "scan:1",
            "-o",
            &dest,
            "--annotation",
            "org.example.m=1",
            "--annotation",
            "index-descriptor:org.example.d=2",
            ctx.path().to_str().unwrap(),
        ],
    );
    let top = read_json(&oci.join("index.json"))["manifests"][0].clone();
    assert_eq!(top["annotations"]["org.example.d"], "2", "{top}");
    let index = read_json(&blob_path(&oci, top["digest"].as_str().unwrap()));
    let image = read_json(&blob_path(
        &oci,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    assert_eq!(image["annotations"]["org.example.m"], "1");
    let att = read_json(&blob_path(
        &oci,
        index["manifests"][1]["digest"].as_str().unwrap(),
    ));
    let names: Vec<String> = att["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            read_json(&blob_path(&oci, l["digest"].as_str().unwrap()))["predicate"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // The stage that is not built is not scanned; BuildKit's order (by the scanner's file names).
    assert_eq!(
        names,
        [
            "scan:1 (sbom-context)",
            "scan:1 (sbom-file)",
            "scan:1 (sbom)"
        ]
    );
    let context_sbom = read_json(&blob_path(
        &oci,
        att["layers"][0]["digest"].as_str().unwrap(),
    ));
    assert!(
        context_sbom
            .to_string()
            .contains("pkg:npm/%40scope/pkg@1.2.3"),
        "{context_sbom}"
    );

    let cdx = ctx.path().join("cdx");
    let dest = format!("type=oci,dest={}", cdx.display());
    kiln_ok(
        root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--attest",
            "type=sbom,format=cyclonedx",
            "--build-arg",
            "BUILDKIT_SBOM_SCAN_CONTEXT=false",
            "-t",
            "scan:2",
            "-o",
            &dest,
            "--target",
            "file",
            ctx.path().to_str().unwrap(),
        ],
    );
    let top = read_json(&cdx.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let index = read_json(&blob_path(&cdx, &top));
    let att = read_json(&blob_path(
        &cdx,
        index["manifests"][1]["digest"].as_str().unwrap(),
    ));
    assert_eq!(att["layers"].as_array().unwrap().len(), 1, "{att}");
    assert_eq!(
        att["layers"][0]["annotations"]["in-toto.io/predicate-type"],
        "https://cyclonedx.org/bom"
    );
    let bom = read_json(&blob_path(
        &cdx,
        att["layers"][0]["digest"].as_str().unwrap(),
    ));
    assert_eq!(bom["predicate"]["bomFormat"], "CycloneDX");
    let purls: Vec<&str> = bom["predicate"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["purl"].as_str().unwrap())
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:deb/debian/jq@1.6-2.1?arch=amd64",
            "pkg:deb/debian/libjq1@1.6-2.1?arch=amd64&upstream=jq"
        ]
    );
}
