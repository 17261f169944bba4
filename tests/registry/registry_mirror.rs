//! Mirrors: a second real registry acting as a pull-through cache (`proxy.remoteurl`) serves the
//! pull; with the mirror stopped, the pull falls back to the origin.

use crate::support::registry as registry_support;

use kiln::image::Platform;
use kiln::reference::Reference;
use kiln::registry::{pull, push, Credentials, Progress};
use kiln::store::Store;
use registry_support::*;

#[test]
fn pulls_go_through_the_mirror_and_fall_back_to_the_origin() {
    let origin = Registry::plain();
    let mut mirror = Registry::start(Options {
        mirror_of: Some(format!("http://{}", origin.addr)),
        ..Options::default()
    });
    let toml = format!(
        "[registry.\"{o}\"]\nhttp = true\nmirrors = [\"{m}\"]\n[registry.\"{m}\"]\nhttp = true\n",
        o = origin.addr,
        m = mirror.addr
    );
    let c = client(&toml, Credentials::new());
    let (_d, store, desc) = store_with_busybox();
    let reference: Reference = format!("{}/mirrored/app:1", origin.addr).parse().unwrap();
    push(&c, &store, &desc, &reference, &mut |_| {}).unwrap();

    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let mut ev = Vec::new();
    let got = pull(&c, &s, &reference, &Platform::host(), &mut |p| ev.push(p)).unwrap();
    assert_eq!(got.digest, desc.digest);
    assert!(
        ev.iter()
            .any(|p| matches!(p, Progress::Resolved { endpoint, .. } if endpoint == &mirror.addr)),
        "{ev:?}"
    );
    let mlog = mirror.log();
    assert!(mlog.contains("GET /v2/mirrored/app/manifests/1"), "{mlog}");
    assert!(mlog.contains("GET /v2/mirrored/app/blobs/"), "{mlog}");

    mirror.stop();
    let d2 = tempfile::tempdir().unwrap();
    let s2 = Store::open(d2.path()).unwrap();
    let mut ev = Vec::new();
    let got = pull(&c, &s2, &reference, &Platform::host(), &mut |p| ev.push(p)).unwrap();
    assert_eq!(got.digest, desc.digest);
    assert!(
        ev.iter()
            .any(|p| matches!(p, Progress::MirrorFailed { mirror: m, .. } if m == &mirror.addr)),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|p| matches!(p, Progress::Resolved { endpoint, .. } if endpoint == &origin.addr)),
        "{ev:?}"
    );
}
