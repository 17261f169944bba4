//! Fuzzing what comes from outside the machine: layer blobs applied during pulls, and what
//! registries and token services answer (manifests, indexes, config blobs, `WWW-Authenticate`
//! challenges, token responses, error bodies). Property: no panic, an `Ok` or an `Err`, nothing
//! written outside the destination, no allocation driven by a number the remote chose.
//!
//! Targets:
//! - `layer_tars_never_escape` — structured hostile tars (tests/support/tar_gen.rs), 1–3 layers in
//!   a row, plain/gzip/zstd, header and byte mutations, applied into `sandbox/target`, which holds
//!   pre-placed symlinks to `sandbox/sentinel` as traps. After every layer the whole sandbox
//!   outside the target (modes, owners, mtimes, contents, link counts, xattrs, inode numbers) is
//!   byte-for-byte what it was, the target's own metadata too, and no file in the target shares
//!   an inode with a file outside it.
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
//! `KILN_FUZZ_CASES=20000 cargo test --release --test fuzz_inputs`. Failing cases are shrunk by
//! proptest and kept in `tests/fuzz_inputs.proptest-regressions` for the next run.

#[path = "support/tar_gen.rs"]
mod tar_gen;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use kiln::digest::Digest;
use kiln::layer::{apply_layer, ApplyOptions};
use proptest::prelude::*;

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

/// `sandbox/{target,sentinel,sibling}`: layers go into `target`, which holds traps pointing out.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    target: PathBuf,
    sentinel: PathBuf,
}

fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let target = root.join("target");
    let sentinel = root.join("sentinel");
    for d in ["target/d", "sentinel/a", "sentinel/b", "sentinel/d"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(sentinel.join("file"), "secret").unwrap();
    fs::write(sentinel.join("a/file"), "secret a").unwrap();
    fs::write(root.join("sibling"), "outside").unwrap();
    fs::write(target.join("f"), "lower").unwrap();
    fs::write(target.join("d/f"), "lower").unwrap();
    // The traps: a relative and an absolute symlink to the sentinel, one to a file in it.
    symlink("../sentinel", target.join("trap")).unwrap();
    symlink(&sentinel, target.join("abs")).unwrap();
    symlink("../sentinel/file", target.join("trapf")).unwrap();
    Sandbox {
        _tmp: tmp,
        root,
        target,
        sentinel,
    }
}

/// Everything observable about one path, without following symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    nlink: u64,
    ino: u64,
    content: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn meta(p: &Path) -> Meta {
    let md = fs::symlink_metadata(p).unwrap();
    let content = if md.file_type().is_symlink() {
        fs::read_link(p)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else if md.is_file() {
        fs::read(p).unwrap()
    } else {
        Vec::new()
    };
    let mut xattrs: Vec<_> = xattr::list(p)
        .map(|l| {
            l.map(|k| {
                let v = xattr::get(p, &k).ok().flatten().unwrap_or_default();
                (k.to_string_lossy().into_owned(), v)
            })
            .collect()
        })
        .unwrap_or_default();
    xattrs.sort();
    Meta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec()),
        nlink: md.nlink(),
        ino: md.ino(),
        content,
        xattrs,
    }
}

/// The sandbox outside the target (the sandbox root itself included), and the target's own mode
/// and owner, which a layer never changes.
fn outside(s: &Sandbox) -> (BTreeMap<PathBuf, Meta>, (u32, u32, u32)) {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(&s.root)
        .into_iter()
        .filter_entry(|e| e.path() != s.target)
    {
        let e = e.unwrap();
        m.insert(e.path().to_path_buf(), meta(e.path()));
    }
    let t = fs::symlink_metadata(&s.target).expect("the target itself was removed");
    assert!(t.is_dir(), "the target is no longer a directory");
    (m, (t.mode(), t.uid(), t.gid()))
}

fn assert_contained(s: &Sandbox, before: &(BTreeMap<PathBuf, Meta>, (u32, u32, u32))) {
    let after = outside(s);
    for (p, m) in &before.0 {
        let now = after.0.get(p);
        assert_eq!(now, Some(m), "{} changed outside the target", p.display());
    }
    for p in after.0.keys() {
        assert!(
            before.0.contains_key(p),
            "{} was created outside the target",
            p.display()
        );
    }
    assert_eq!(after.1, before.1, "the target's own mode or owner changed");
    let outside_inodes: HashSet<(u64, u64)> = walkdir::WalkDir::new(&s.root)
        .into_iter()
        .filter_entry(|e| e.path() != s.target)
        .map(|e| {
            let md = e.unwrap().metadata().unwrap();
            (md.dev(), md.ino())
        })
        .collect();
    for e in walkdir::WalkDir::new(&s.target).min_depth(1) {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        assert!(
            !outside_inodes.contains(&(md.dev(), md.ino())),
            "{} is a hard link to an inode outside the target",
            e.path().display()
        );
    }
}

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
