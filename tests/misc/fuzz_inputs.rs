//! Fuzzing what comes from outside the machine: layer blobs applied during pulls, and what
//! registries and token services answer (manifests, indexes, config blobs, `WWW-Authenticate`
//! challenges, token responses, error bodies). Property: no panic, an `Ok` or an `Err`, nothing
//! written outside the destination, no allocation driven by a number the remote chose.
//!
//! Targets:
//! - `layer_tars_never_escape` — structured hostile tars (tests/support/tar_gen.rs), 1–3 layers in
//!   a row, plain/gzip/zstd, header and byte mutations, applied into `sandbox/target`
//!   (tests/support/sandbox.rs), which holds pre-placed symlinks to `sandbox/sentinel` as traps.
//!   After every layer the whole sandbox outside the target (modes, owners, mtimes, contents,
//!   link counts, xattrs, inode numbers) is byte-for-byte what it was, the target's own metadata
//!   too, and no file in the target shares an inode with a file outside it.
//! - `layer_blobs_of_random_bytes` — arbitrary bytes, also behind gzip/zstd magic.
//! - `manifest_json_parsers` — `Manifest`/`Index`/`ImageConfig::from_slice`, `sniff_manifest_kind`
//!   and `Index::select` on mutated valid documents (OCI and Docker schema 2) and on garbage.
//! - `pulls_from_a_hostile_registry` — the real `registry::pull` into a real store against a scripted
//!   HTTP registry serving those mutated manifests, indexes and blobs.
//! - `challenges_tokens_and_error_bodies` — `RegistryClient::check_login` against scripted
//!   `WWW-Authenticate` headers, token answers and error bodies.
//!
//! Each runs a bounded number of cases (well under a minute for the file in a debug build);
//! `KILN_FUZZ_CASES=N` sets the number of cases of every target for a long run, e.g.
//! `KILN_FUZZ_CASES=20000 cargo test --release --test misc fuzz_inputs::`. Failing cases are
//! shrunk by proptest and kept in `tests/proptest-regressions/fuzz_inputs.txt` for the next run.

use crate::support::json_gen;
use crate::support::sandbox;
use crate::support::scripted_http;
use crate::support::tar_gen;

use std::fs;

use std::sync::atomic::Ordering;

use kiln::digest::Digest;
use kiln::image::{
    sniff_manifest_kind, Descriptor, ImageConfig, Index, Manifest, Platform, MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_LAYER_GZIP, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_MANIFEST_LIST, MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX, MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST,
};
use kiln::layer::{apply_layer, ApplyOptions};
use kiln::registry::{pull, Credentials, RegistryClient};
use kiln::store::{Store, MAX_JSON_BLOB};
use proptest::prelude::*;
use sandbox::{assert_contained, outside, sandbox, Sandbox};
use scripted_http::{Body, Request, Response, Server};
use serde_json::{json, Value};

/// Cases per target: `KILN_FUZZ_CASES`, else the target's default.
fn cases(default: u32) -> u32 {
    std::env::var("KILN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        // A shrink of a filesystem case costs a sandbox each step; keep it bounded.
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Layer tars
// ---------------------------------------------------------------------------------------------

/// Apply `blob`; it may fail, it must not panic or write outside the target. An accepted
/// uncompressed blob's diff_id is its own digest (every byte, padding included, was hashed).
fn apply_contained(s: &Sandbox, blob: &[u8], opts: &ApplyOptions, plain: bool) {
    let before = outside(s);
    let result = apply_layer(blob, &s.target, opts);
    assert_contained(s, &before);
    if let (Ok(stats), true) = (&result, plain) {
        assert_eq!(stats.diff_id, Digest::of(blob));
        assert_eq!(stats.uncompressed_size, blob.len() as u64);
    }
}

fn options() -> impl Strategy<Value = ApplyOptions> {
    (prop::bool::weighted(0.3), prop::bool::weighted(0.3)).prop_map(|(d, o)| ApplyOptions {
        allow_devices: d,
        preserve_owners: o,
        overlay_opaque_xattr: None,
    })
}

proptest! {
    #![proptest_config(config(160))]

    #[test]
    fn layer_tars_never_escape(
        layers in prop::collection::vec(tar_gen::layer(), 1..=3),
        opts in options(),
    ) {
        let s = sandbox();
        let sentinel = s.sentinel.to_str().unwrap().to_string();
        for l in &layers {
            let blob = l.encode(&sentinel);
            let plain = matches!(l.compress, tar_gen::Compress::None);
            apply_contained(&s, &blob, &opts, plain);
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn layer_blobs_of_random_bytes(
        prefix in prop::sample::select(vec![
            &b""[..], &[0x1f, 0x8b, 0x08][..], &[0x28, 0xb5, 0x2f, 0xfd][..], &b"BZh"[..],
        ]),
        body in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        let s = sandbox();
        let mut blob = prefix.to_vec();
        blob.extend_from_slice(&body);
        apply_contained(&s, &blob, &ApplyOptions::default(), prefix.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Registry JSON
// ---------------------------------------------------------------------------------------------

/// A small real layer (gzip tar with one file) and the image config naming it.
fn layer_and_config(docker: bool) -> (Vec<u8>, Vec<u8>) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "hi", &b"hi"[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut g, &tar).unwrap();
    let layer = g.finish().unwrap();
    let mut config = ImageConfig::new(&Platform::host());
    config.push_layer(
        Digest::of(&tar),
        if docker { "docker" } else { "oci" },
        None,
    );
    (layer, config.to_blob().unwrap().0)
}

/// A manifest (OCI or Docker schema 2) naming `config` and `layer`, as JSON.
fn manifest_doc(docker: bool, config: &[u8], layer: &[u8]) -> Value {
    let (mt, cmt, lmt) = if docker {
        (
            MEDIA_DOCKER_MANIFEST,
            MEDIA_DOCKER_CONFIG,
            MEDIA_DOCKER_LAYER_GZIP,
        )
    } else {
        (MEDIA_OCI_MANIFEST, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER_GZIP)
    };
    let mut m = Manifest::new(
        Descriptor::for_bytes(cmt, config),
        vec![Descriptor::for_bytes(lmt, layer)],
    );
    m.media_type = mt.to_string();
    m.annotations.insert("org.example".into(), "a".into());
    serde_json::to_value(&m).unwrap()
}

/// An index (OCI) or manifest list (Docker) whose entries name `manifest` for two platforms.
fn index_doc(docker: bool, manifest: &[u8]) -> Value {
    let (mt, entry) = if docker {
        (MEDIA_DOCKER_MANIFEST_LIST, MEDIA_DOCKER_MANIFEST)
    } else {
        (MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST)
    };
    let mut other = Descriptor::for_bytes(entry, manifest);
    other.platform = Some(Platform::new("linux", "s390x", None));
    let mut here = Descriptor::for_bytes(entry, manifest);
    here.platform = Some(Platform::host());
    let mut i = Index::new(vec![other, here]);
    i.media_type = mt.to_string();
    serde_json::to_value(&i).unwrap()
}

/// Every parser a pulled JSON document meets; what parses must serialise canonically and parse
/// back the same (kiln hashes that canonical form).
fn check_parsers(bytes: &[u8]) {
    let _ = sniff_manifest_kind(bytes);
    if let Ok(m) = Manifest::from_slice(bytes) {
        let (blob, desc) = m.to_blob().unwrap();
        assert_eq!(desc.size, blob.len() as u64);
        assert_eq!(
            Manifest::from_slice(&blob).unwrap(),
            m,
            "manifest round trip"
        );
    }
    if let Ok(i) = Index::from_slice(bytes) {
        let _ = i.select(&Platform::host());
        let blob = kiln::image::canonical_json(&i).unwrap();
        assert_eq!(Index::from_slice(&blob).unwrap(), i, "index round trip");
    }
    if let Ok(c) = ImageConfig::from_slice(bytes) {
        let (blob, _) = c.to_blob().unwrap();
        ImageConfig::from_slice(&blob).expect("config round trip");
        let _ = c.platform();
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn manifest_json_parsers(
        docker in any::<bool>(),
        which in 0usize..3,
        muts in json_gen::mutations(),
        text in json_gen::text_mutations(),
    ) {
        let (layer, config) = layer_and_config(docker);
        let manifest = manifest_doc(docker, &config, &layer);
        let doc = match which {
            0 => manifest,
            1 => index_doc(docker, &serde_json::to_vec(&manifest).unwrap()),
            _ => serde_json::from_slice(&config).unwrap(),
        };
        check_parsers(&json_gen::mutate(&doc, &muts, &text));
    }

    #[test]
    fn manifest_json_parsers_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_parsers(&bytes);
    }
}

fn client(server: &Server, creds: Credentials) -> RegistryClient {
    scripted_http::kiln_client(server, creds)
}

/// What the tag's manifest GET says its content type is.
#[derive(Debug, Clone, Copy)]
enum ContentType {
    Right,
    Other,
    Missing,
    WithParams,
    Garbage,
}

/// What the hostile registry serves for one pull.
#[derive(Debug, Clone)]
struct PullCase {
    docker: bool,
    via_index: bool,
    config_muts: Vec<json_gen::JsonMut>,
    manifest_muts: Vec<json_gen::JsonMut>,
    index_muts: Vec<json_gen::JsonMut>,
    manifest_descs: Vec<json_gen::DescMut>,
    index_descs: Vec<json_gen::DescMut>,
    top_text: Vec<json_gen::TextMut>,
    content_type: ContentType,
    /// Docker-Content-Digest on the tag's answer: none, the right one, a wrong one.
    header_digest: u8,
    /// The layer blob served with a byte more, a byte less, or as is.
    layer_fault: u8,
}

fn pull_case() -> impl Strategy<Value = PullCase> {
    (
        (any::<bool>(), any::<bool>()),
        (
            json_gen::mutations(),
            json_gen::mutations(),
            json_gen::mutations(),
        ),
        (json_gen::desc_mutations(), json_gen::desc_mutations()),
        json_gen::text_mutations(),
        prop::sample::select(vec![
            ContentType::Right,
            ContentType::Right,
            ContentType::Other,
            ContentType::Missing,
            ContentType::WithParams,
            ContentType::Garbage,
        ]),
        (0u8..3, prop_oneof![4 => Just(0u8), 1 => 1u8..3]),
    )
        .prop_map(
            |((docker, via_index), (c, m, i), (md, id), top_text, content_type, (hd, lf))| {
                PullCase {
                    docker,
                    via_index,
                    config_muts: c,
                    manifest_muts: m,
                    index_muts: i,
                    manifest_descs: md,
                    index_descs: id,
                    top_text,
                    content_type,
                    header_digest: hd,
                    layer_fault: lf,
                }
            },
        )
}

/// Serve `case` from `server`: the tag, manifests by digest, blobs by digest.
fn script_pull(server: &Server, case: &PullCase) {
    let (mut layer, config) = layer_and_config(case.docker);
    let config_doc: Value = serde_json::from_slice(&config).unwrap();
    let config = json_gen::mutate(&config_doc, &case.config_muts, &[]);
    let mut doc = manifest_doc(case.docker, &config, &layer);
    json_gen::apply_desc(&mut doc, &case.manifest_descs);
    let manifest = json_gen::mutate(&doc, &case.manifest_muts, &[]);
    let (mut top, kind) = if case.via_index {
        let mut doc = index_doc(case.docker, &manifest);
        json_gen::apply_desc(&mut doc, &case.index_descs);
        let kind = if case.docker {
            MEDIA_DOCKER_MANIFEST_LIST
        } else {
            MEDIA_OCI_INDEX
        };
        (json_gen::mutate(&doc, &case.index_muts, &[]), kind)
    } else {
        let kind = if case.docker {
            MEDIA_DOCKER_MANIFEST
        } else {
            MEDIA_OCI_MANIFEST
        };
        (manifest.clone(), kind)
    };
    json_gen::apply_text(&mut top, &case.top_text);
    let mut by_digest: Vec<(String, Vec<u8>)> = vec![
        (Digest::of(&config).to_string(), config),
        (Digest::of(&manifest).to_string(), manifest),
    ];
    let layer_digest = Digest::of(&layer).to_string();
    match case.layer_fault {
        1 => layer.push(0),
        2 => {
            layer.pop();
        }
        _ => {}
    }
    by_digest.push((layer_digest, layer));
    let content_type = match case.content_type {
        ContentType::Right => kind.to_string(),
        ContentType::Other if case.via_index => MEDIA_OCI_MANIFEST.to_string(),
        ContentType::Other => MEDIA_OCI_INDEX.to_string(),
        ContentType::Missing => String::new(),
        ContentType::WithParams => format!("{kind}; charset=utf-8"),
        ContentType::Garbage => "application/json ;; x=\"".to_string(),
    };
    let header_digest = match case.header_digest {
        1 => Some(Digest::of(&top).to_string()),
        2 => Some(Digest::of(b"other").to_string()),
        _ => None,
    };
    server.set(move |r: &Request| {
        let not_found =
            || Response::new(404, r#"{"errors":[{"code":"NOT_FOUND","message":"no"}]}"#);
        if r.path == "/v2/" {
            return Response::new(200, "{}");
        }
        let Some(rest) = r.path.strip_prefix("/v2/fuzz/img/") else {
            return not_found();
        };
        let (what, object) = rest.split_once('/').unwrap_or((rest, ""));
        let mut resp = if what == "manifests" && object == "t" {
            Response::new(200, top.clone())
        } else if let Some((_, b)) = by_digest.iter().find(|(d, _)| d == object) {
            Response::new(200, b.clone())
        } else {
            return not_found();
        };
        if what == "manifests" {
            if !content_type.is_empty() {
                resp = resp.header("Content-Type", content_type.clone());
            }
            if let (Some(d), "t") = (&header_digest, object) {
                resp = resp.header("Docker-Content-Digest", d.clone());
            }
        }
        resp
    });
}

proptest! {
    #![proptest_config(config(48))]

    /// The real pull into a real store; an accepted image is complete and verified in the store.
    #[test]
    fn pulls_from_a_hostile_registry(case in pull_case()) {
        let server = Server::start();
        script_pull(&server, &case);
        let c = client(&server, Credentials::new());
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let reference = format!("{}/fuzz/img:t", server.addr).parse().unwrap();
        if let Ok(desc) = pull(&c, &store, &reference, &Platform::host(), &mut |_| {}) {
            let m = Manifest::from_slice(&store.read_blob(&desc.digest, MAX_JSON_BLOB).unwrap())
                .unwrap();
            for b in std::iter::once(&m.config).chain(&m.layers) {
                let bytes = fs::read(store.blob_path(&b.digest)).unwrap();
                prop_assert_eq!(Digest::of(&bytes), b.digest.clone());
                prop_assert_eq!(bytes.len() as u64, b.size);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Challenges, token answers, error bodies
// ---------------------------------------------------------------------------------------------

/// Where a body stops: endless bodies end here, and a client that reached it read one whole.
const ENDLESS: u64 = 32 << 20;
const PASSWORD: &str = "pw-never-shown";
const TOKEN: &str = "tok-7f3a";

/// One `WWW-Authenticate` header: a scheme and parameters, the realm kept to hosts that need no
/// DNS (loopback only); noise lands anywhere but in the realm.
#[derive(Debug, Clone)]
struct ChallengeCase {
    scheme: &'static str,
    params: Vec<(&'static str, String, bool)>,
    sep: &'static str,
    noise: Vec<(usize, u8)>,
}

const OWN_REALM: &str = "@REALM@";

fn challenge_case() -> impl Strategy<Value = ChallengeCase> {
    let realm = prop::sample::select(vec![
        OWN_REALM,
        OWN_REALM,
        OWN_REALM,
        "@REALM@?scope=x&service=",
        "http://127.0.0.1:1/token",
        "",
        "not a url",
        "http://",
        "file:///etc/passwd",
        "http://[::1]:1/",
    ])
    .prop_map(str::to_string);
    let param = (
        prop::sample::select(vec![
            "realm", "realm", "service", "scope", "error", "REALM", "",
        ]),
        prop_oneof![2 => realm, 1 => "[ -~]{0,12}"],
        prop::bool::weighted(0.85),
    );
    let own = prop_oneof![
        3 => Just(vec![("realm", OWN_REALM.to_string(), true)]),
        1 => Just(Vec::new()),
    ];
    (
        prop::sample::select(vec![
            "Bearer",
            "Bearer",
            "Bearer",
            "bearer",
            "BASIC",
            "Basic",
            "Negotiate",
            "",
        ]),
        (own, prop::collection::vec(param, 0..4)).prop_map(|(mut a, b)| {
            a.extend(b);
            a
        }),
        prop::sample::select(vec![",", ", ", " ", ",,", ""]),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(
                (any::<usize>(), prop_oneof![9 => 0x20u8..0x7f, 1 => any::<u8>()]),
                1..4
            ),
        ],
    )
        .prop_map(|(scheme, params, sep, noise)| ChallengeCase {
            scheme,
            params,
            sep,
            noise,
        })
}

impl ChallengeCase {
    fn header(&self, own_realm: &str) -> Vec<u8> {
        // (text, may noise land here)
        let mut parts: Vec<(Vec<u8>, bool)> =
            vec![(format!("{} ", self.scheme).into_bytes(), true)];
        for (i, (k, v, quoted)) in self.params.iter().enumerate() {
            let sep = if i == 0 { "" } else { self.sep };
            let q = if *quoted { "\"" } else { "" };
            parts.push((format!("{sep}{k}={q}").into_bytes(), true));
            parts.push((v.replace(OWN_REALM, own_realm).into_bytes(), *k != "realm"));
            parts.push((q.as_bytes().to_vec(), true));
        }
        let noisy: usize = parts.iter().filter(|p| p.1).map(|p| p.0.len()).sum();
        for (at, b) in &self.noise {
            let mut at = at % noisy.max(1);
            for (text, ok) in parts.iter_mut().filter(|p| p.1) {
                if at < text.len() && *ok {
                    text[at] = *b;
                    break;
                }
                at -= text.len().min(at);
            }
        }
        parts.into_iter().flat_map(|p| p.0).collect()
    }
}

/// A body: JSON built from optional fields (then mutated), bytes, or one that never ends.
#[derive(Debug, Clone)]
enum BodyCase {
    Json(Vec<(&'static str, Value)>, Vec<json_gen::TextMut>),
    Bytes(Vec<u8>),
    Endless,
}

impl BodyCase {
    fn body(&self) -> Body {
        match self {
            BodyCase::Json(fields, text) => {
                let doc: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                Body::Bytes(json_gen::mutate(&Value::Object(doc), &[], text))
            }
            BodyCase::Bytes(b) => Body::Bytes(b.clone()),
            BodyCase::Endless => Body::Endless {
                chunk: b"{\"token\":\"".repeat(6000),
                limit: ENDLESS,
            },
        }
    }
}

fn token_body() -> impl Strategy<Value = BodyCase> {
    let tok = prop_oneof![
        4 => Just(json!(TOKEN)),
        1 => prop::sample::select(vec![json!(""), json!(1), json!(null), json!([TOKEN])]),
        1 => Just(Value::String("t".repeat(200_000))),
    ];
    let field = prop_oneof![
        3 => tok.clone().prop_map(|v| ("token", v)),
        1 => tok.prop_map(|v| ("access_token", v)),
        2 => prop_oneof![
            3 => prop::sample::select(vec![
                json!(u64::MAX), json!(i64::MIN), json!(-1), json!(0), json!(300),
                json!(1.5), json!(1e300), json!("300"), json!(null),
            ]),
            1 => json_gen::nasty(),
        ]
        .prop_map(|v| ("expires_in", v)),
        1 => prop::sample::select(vec![json!("2020-01-01T00:00:00Z"), json!("garbage"), json!(5)])
            .prop_map(|v| ("issued_at", v)),
        1 => prop::sample::select(vec![json!("refresh"), json!(1), json!({})])
            .prop_map(|v| ("refresh_token", v)),
    ];
    prop_oneof![
        8 => (prop::collection::vec(field, 0..5), json_gen::text_mutations())
            .prop_map(|(f, t)| BodyCase::Json(f, t)),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(BodyCase::Bytes),
        1 => Just(BodyCase::Endless),
    ]
}

fn error_body() -> impl Strategy<Value = BodyCase> {
    let entry = (json_gen::nasty(), json_gen::nasty(), json_gen::nasty())
        .prop_map(|(c, m, d)| json!({"code": c, "message": m, "detail": d}));
    prop_oneof![
        4 => (prop::collection::vec(entry, 0..4), json_gen::text_mutations()).prop_map(|(e, t)| {
            BodyCase::Json(vec![("errors", Value::Array(e))], t)
        }),
        1 => (
            prop::sample::select(vec![json!([]), json!(null), json!({}), json!("x")]),
            json_gen::text_mutations()
        )
            .prop_map(|(e, t)| BodyCase::Json(vec![("errors", e)], t)),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(BodyCase::Bytes),
        1 => Just(BodyCase::Endless),
    ]
}

#[derive(Debug, Clone)]
struct AuthCase {
    challenges: Vec<ChallengeCase>,
    token_status: u16,
    token: BodyCase,
    final_status: u16,
    final_body: BodyCase,
}

fn auth_case() -> impl Strategy<Value = AuthCase> {
    (
        prop_oneof![4 => challenge_case().prop_map(|c| vec![c]), 1 => prop::collection::vec(challenge_case(), 0..3)],
        prop::sample::select(vec![200u16, 200, 200, 201, 401, 403, 404, 500]),
        token_body(),
        prop::sample::select(vec![200u16, 200, 400, 401, 403, 404, 429, 500, 503]),
        error_body(),
    )
        .prop_map(|(challenges, token_status, token, final_status, final_body)| AuthCase {
            challenges,
            token_status,
            token,
            final_status,
            final_body,
        })
}

fn script_auth(server: &Server, case: &AuthCase) {
    let realm = format!("http://{}/token", server.addr);
    let challenges: Vec<Vec<u8>> = case.challenges.iter().map(|c| c.header(&realm)).collect();
    let with_challenges = move |mut r: Response| {
        for c in &challenges {
            r = r.header("WWW-Authenticate", c.clone());
        }
        r
    };
    let token = Response {
        status: case.token_status,
        headers: vec![("Content-Type".into(), b"application/json".to_vec())],
        body: case.token.body(),
    };
    let fin = Response {
        status: case.final_status,
        headers: Vec::new(),
        body: case.final_body.body(),
    };
    let fin = if case.final_status == 401 {
        with_challenges(fin)
    } else {
        fin
    };
    let unauthorized = with_challenges(Response::new(401, ""));
    server.set(move |r: &Request| {
        if r.path.starts_with("/token") {
            token.clone()
        } else if r.header("authorization").is_some() {
            fin.clone()
        } else {
            unauthorized.clone()
        }
    });
}

proptest! {
    #![proptest_config(config(200))]

    /// `kiln login`'s check: challenge → token service → authorised request, every answer
    /// hostile. The error never shows the password or a token, and no body is read to its end.
    #[test]
    fn challenges_tokens_and_error_bodies(case in auth_case()) {
        let server = Server::start();
        script_auth(&server, &case);
        let mut creds = Credentials::new();
        creds.add(&server.addr, "user", PASSWORD);
        let c = client(&server, creds);
        if let Err(e) = c.check_login(&server.addr) {
            let mut text = format!("{e:?}");
            let mut src: Option<&dyn std::error::Error> = Some(&e);
            while let Some(cause) = src {
                text += &format!(": {cause}");
                src = cause.source();
            }
            let basic = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("user:{PASSWORD}"),
            );
            for secret in [PASSWORD, TOKEN, basic.as_str()] {
                prop_assert!(!text.contains(secret), "{secret} in the error: {text}");
            }
        }
        let read = server.endless_written.load(Ordering::Relaxed);
        prop_assert!(read < ENDLESS, "an endless body was read to the end ({read} bytes)");
    }
}
