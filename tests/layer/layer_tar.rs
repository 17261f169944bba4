//! Deterministic layer tars: same tree → same bytes and digests, whatever the creation order; the
//! entries GNU tar sees; compression round trips through the real CLIs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use kiln::digest::Digest;
use kiln::layer::{
    apply_layer, write_layer, ApplyOptions, Change, ChangeSet, Compression, LayerOptions,
};

const LONG: &str = "a-very-long-directory-name-that-keeps-going-and-going-past-the-ustar-limit-of-one-hundred-bytes";

fn opts(c: Compression, threads: usize) -> LayerOptions {
    LayerOptions {
        compression: c,
        level: None,
        threads,
        source_date_epoch: Some(1_700_000_000),
    }
}

type Step = Box<dyn Fn(&Path)>;

/// Build the same tree in two different orders, with different (later than epoch) mtimes.
fn make_tree(root: &Path, reverse: bool) {
    let mut steps: Vec<Step> = vec![
        Box::new(|r| {
            fs::create_dir_all(r.join("etc")).unwrap();
            fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        }),
        Box::new(|r| {
            fs::create_dir_all(r.join("bin")).unwrap();
            fs::write(r.join("bin/tool"), vec![b'x'; 70_000]).unwrap();
            fs::set_permissions(r.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        }),
        Box::new(|r| {
            let d = r.join(LONG).join(LONG);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("file-with-a-long-path.txt"), "long\n").unwrap();
        }),
    ];
    if reverse {
        steps.reverse();
    }
    for s in &steps {
        s(root);
    }
    // Links need their targets.
    fs::hard_link(root.join("bin/tool"), root.join("bin/tool-again")).unwrap();
    symlink("../etc/hosts", root.join("bin/hosts-link")).unwrap();
    symlink(
        format!("/{LONG}/{LONG}/file-with-a-long-path.txt"),
        root.join("long-link"),
    )
    .unwrap();
    let fifo = root.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    if xattr::set(root.join("etc/hosts"), "user.kiln.test", b"v1").is_err() {
        eprintln!(
            "NOTE: filesystem refuses user xattrs; xattr coverage comes from the unit tests only"
        );
    }
}

fn build(c: Compression, tree_reverse: bool, threads: usize) -> (Vec<u8>, kiln::layer::LayerInfo) {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), tree_reverse);
    let cs = ChangeSet::from_dir(dir.path()).unwrap();
    write_layer(&cs, &opts(c, threads), Vec::new()).unwrap()
}

#[test]
fn same_tree_twice_and_in_another_order_gives_identical_bytes() {
    let (a, ia) = build(Compression::Uncompressed, false, 1);
    let (b, ib) = build(Compression::Uncompressed, true, 2);
    assert_eq!(a, b, "tar bytes differ between builds");
    assert_eq!(ia, ib);
    assert_eq!(ia.diff_id, Digest::of(&a));
    assert_eq!(ia.digest, ia.diff_id);
    assert_eq!(ia.size, a.len() as u64);

    let (ga, gia) = build(Compression::Gzip, false, 1);
    let (gb, gib) = build(Compression::Gzip, true, 4);
    assert_eq!(ga, gb, "gzip bytes differ between 1 and 4 threads");
    assert_eq!(
        gia.diff_id, ia.diff_id,
        "diff_id must not depend on compression"
    );
    assert_eq!(gia.digest, Digest::of(&ga));
    assert_eq!(
        gib.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
}

fn run(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} must be installed for this test: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd} {args:?} failed");
    out.stdout
}

#[test]
fn gnu_tar_sees_sorted_entries_links_and_clamped_mtimes() {
    let (tarball, _) = build(Compression::Uncompressed, false, 1);
    let listing = String::from_utf8(run(
        "tar",
        &["-tv", "--numeric-owner", "--full-time", "-f", "-"],
        &tarball,
    ))
    .unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.replace('/', "\0"));
    assert_eq!(names, sorted, "entries not sorted:\n{listing}");
    assert!(
        listing.contains("bin/tool-again link to bin/tool"),
        "{listing}"
    );
    assert!(
        listing.contains("bin/hosts-link -> ../etc/hosts"),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("{LONG}/{LONG}/file-with-a-long-path.txt")),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("long-link -> /{LONG}/{LONG}/")),
        "{listing}"
    );
    assert!(
        listing.contains("-rwsr-xr-x"),
        "setuid bit kept:\n{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('p') && l.ends_with(" fifo")),
        "{listing}"
    );
    // 1_700_000_000 = 2023-11-14 22:13:20 UTC; every entry was created later, so all are clamped.
    for line in listing.lines() {
        assert!(
            line.contains("2023-11-14 22:13:20"),
            "mtime not clamped: {line}"
        );
    }
}

#[test]
fn whiteouts_opaques_and_owner_override() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("app")).unwrap();
    fs::write(dir.path().join("app/new"), "n").unwrap();
    let mut cs = ChangeSet::new();
    cs.push(Change::Add {
        path: "app".into(),
        source: dir.path().join("app"),
    });
    cs.push(Change::Add {
        path: "app/new".into(),
        source: dir.path().join("app/new"),
    });
    cs.push(Change::Whiteout {
        path: "etc/old.conf".into(),
    });
    cs.push(Change::Opaque { dir: "app".into() });
    let cs = cs.with_owner(1234, 5678);
    let (tarball, info) =
        write_layer(&cs, &opts(Compression::Uncompressed, 1), Vec::new()).unwrap();
    let listing =
        String::from_utf8(run("tar", &["-tv", "--numeric-owner", "-f", "-"], &tarball)).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 4, "{listing}");
    assert!(
        lines[0].contains("1234/5678") && lines[0].ends_with(" app/"),
        "{listing}"
    );
    assert!(lines[1].ends_with(" app/.wh..wh..opq"), "{listing}");
    assert!(
        lines[2].contains("1234/5678") && lines[2].ends_with(" app/new"),
        "{listing}"
    );
    assert!(
        lines[3].contains("0/0") && lines[3].ends_with(" etc/.wh.old.conf"),
        "{listing}"
    );
    assert_eq!(info.uncompressed_size, tarball.len() as u64);
}

#[test]
fn zstd_and_gzip_blobs_decompress_with_the_clis_to_the_diff_id() {
    let (plain, pinfo) = build(Compression::Uncompressed, false, 1);
    for (c, cli) in [(Compression::Zstd, "zstd"), (Compression::Gzip, "gzip")] {
        let (blob, info) = build(c, false, 2);
        assert_eq!(info.media_type, c.media_type());
        let back = run(cli, &["-d", "-c"], &blob);
        assert_eq!(back, plain, "{cli} -d");
        assert_eq!(Digest::of(&back), info.diff_id);
        assert_eq!(info.diff_id, pinfo.diff_id);
        assert_eq!(info.digest, Digest::of(&blob));
    }
}

#[test]
fn round_trip_through_apply_reproduces_the_tree() {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let cs = ChangeSet::from_dir(src.path()).unwrap();
    let (blob, info) = write_layer(&cs, &opts(Compression::Zstd, 2), Vec::new()).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let stats = apply_layer(&blob[..], dest.path(), &ApplyOptions::default()).unwrap();
    assert_eq!(stats.diff_id, info.diff_id);
    assert_eq!(stats.hardlinks, 1);
    assert_eq!(stats.fifos, 1);
    // Re-archiving the applied tree gives the same layer.
    let cs2 = ChangeSet::from_dir(dest.path()).unwrap();
    let (_, info2) = write_layer(&cs2, &opts(Compression::Zstd, 2), Vec::new()).unwrap();
    assert_eq!(info2.diff_id, info.diff_id);
    use std::os::unix::fs::MetadataExt;
    let a = fs::metadata(dest.path().join("bin/tool")).unwrap();
    let b = fs::metadata(dest.path().join("bin/tool-again")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hardlink restored as a link");
    assert_eq!(a.mode() & 0o7777, 0o4755);
    assert_eq!(a.mtime(), 1_700_000_000);
}
