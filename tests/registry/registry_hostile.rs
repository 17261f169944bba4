//! A hostile or broken registry and token service (a scripted HTTP server, not the real
//! registry: these are answers a real one never gives): numbers chosen to overflow, bodies that
//! never end. Each is an error (or a sane default), never a panic or an unbounded read. The
//! cases here were found by tests/misc/fuzz_inputs.rs.

use crate::support::scripted_http;

use kiln::digest::Digest;
use kiln::image::{Descriptor, ImageConfig, Manifest, Platform, MEDIA_OCI_MANIFEST};
use kiln::registry::{pull, Credentials, RegistryClient, RegistryError};
use kiln::store::Store;
use scripted_http::{Body, Request, Response, Server};

fn client(server: &Server, creds: Credentials) -> RegistryClient {
    scripted_http::kiln_client(server, creds)
}

fn login_creds(server: &Server) -> Credentials {
    let mut c = Credentials::new();
    c.add(&server.addr, "user", "pw-never-shown");
    c
}

/// `/v2/` asks for a bearer token from this server's `/token`, which answers `token`.
fn bearer_registry(server: &Server, token: Response) {
    let realm = format!("http://{}/token", server.addr);
    server.set(move |r: &Request| {
        if r.path.starts_with("/token") {
            token.clone()
        } else if r.header("authorization") == Some("Bearer tok") {
            Response::new(200, "{}")
        } else {
            Response::new(401, "").header(
                "WWW-Authenticate",
                format!("Bearer realm=\"{realm}\",service=\"reg\""),
            )
        }
    });
}

#[test]
fn token_lifetimes_beyond_the_clock_or_below_zero_are_accepted_and_bounded() {
    for expires in ["18446744073709551615", "9223372036854775807", "-1", "0"] {
        let server = Server::start();
        let body = format!("{{\"token\":\"tok\",\"expires_in\":{expires}}}");
        bearer_registry(&server, Response::new(200, body));
        let c = client(&server, login_creds(&server));
        c.check_login(&server.addr)
            .unwrap_or_else(|e| panic!("expires_in {expires}: {e}"));
    }
}

#[test]
fn an_endless_token_answer_is_cut_off() {
    let server = Server::start();
    let body = Body::Endless {
        chunk: vec![b' '; 64 * 1024],
        limit: 1 << 30,
    };
    bearer_registry(
        &server,
        Response {
            status: 200,
            headers: Vec::new(),
            body,
        },
    );
    let c = client(&server, login_creds(&server));
    let err = c.check_login(&server.addr).unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");
    let sent = server
        .endless_written
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "the client read {sent} bytes of a token answer"
    );
}

/// A registry whose `/v2/fuzz/img/manifests/t` GET answers `manifest`, and blobs from `blobs`.
fn image_registry(server: &Server, manifest: Response, blobs: Vec<(Digest, Vec<u8>)>) {
    server.set(move |r: &Request| {
        if r.path == "/v2/" {
            return Response::new(200, "{}");
        }
        if r.path.ends_with("/manifests/t") {
            return manifest.clone();
        }
        for (d, b) in &blobs {
            if r.path.ends_with(&format!("/blobs/{d}")) {
                return Response::new(200, b.clone());
            }
        }
        Response::new(
            404,
            r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}"#,
        )
    });
}

fn one_layer_manifest(layer_size: u64) -> (Vec<u8>, Vec<(Digest, Vec<u8>)>) {
    let layer = b"not really a tar".to_vec();
    let mut config = ImageConfig::new(&Platform::host());
    config.push_layer(Digest::of(&layer), "x", None);
    let (config_bytes, config_desc) = config.to_blob().unwrap();
    let mut layer_desc =
        Descriptor::for_bytes("application/vnd.oci.image.layer.v1.tar+gzip", &layer);
    layer_desc.size = layer_size;
    let (bytes, _) = Manifest::new(config_desc.clone(), vec![layer_desc.clone()])
        .to_blob()
        .unwrap();
    (
        bytes,
        vec![
            (config_desc.digest, config_bytes),
            (layer_desc.digest, layer),
        ],
    )
}

#[test]
fn a_blob_size_of_u64_max_is_a_size_error() {
    let server = Server::start();
    let (manifest, blobs) = one_layer_manifest(u64::MAX);
    image_registry(
        &server,
        Response::new(200, manifest).header("Content-Type", MEDIA_OCI_MANIFEST),
        blobs,
    );
    let c = client(&server, Credentials::new());
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path()).unwrap();
    let reference = format!("{}/fuzz/img:t", server.addr).parse().unwrap();
    let err = pull(&c, &store, &reference, &Platform::host(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::SizeMismatch {
                expected: u64::MAX,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_endless_error_body_is_cut_off() {
    let server = Server::start();
    let body = Body::Endless {
        chunk: b"{\"errors\":[".repeat(4096),
        limit: 1 << 30,
    };
    image_registry(
        &server,
        Response {
            status: 400,
            headers: Vec::new(),
            body,
        },
        Vec::new(),
    );
    let c = client(&server, Credentials::new());
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path()).unwrap();
    let reference = format!("{}/fuzz/img:t", server.addr).parse().unwrap();
    let err = pull(&c, &store, &reference, &Platform::host(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    assert!(
        err.to_string().len() < 4096,
        "an unbounded error message: {err}"
    );
    let sent = server
        .endless_written
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "the client read {sent} bytes of an error body"
    );
}
