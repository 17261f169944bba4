//! Applying layers: whiteouts and opaque directories, and hand-crafted malicious tars that must be
//! refused with an error naming the entry while nothing outside the destination is written.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use kiln::layer::{apply_layer, ApplyOptions, LayerError};
use tar::{EntryType, Header};

/// A raw tar built header by header, so names can hold what a well-behaved writer refuses.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(mut self, name: &str, kind: EntryType, link: Option<&str>, data: &[u8]) -> Self {
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }
    fn file(self, name: &str, data: &str) -> Self {
        self.entry(name, EntryType::Regular, None, data.as_bytes())
    }
    fn dir(self, name: &str) -> Self {
        self.entry(name, EntryType::Directory, None, b"")
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, EntryType::Symlink, Some(target), b"")
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, EntryType::Link, Some(target), b"")
    }
    fn done(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// `sandbox/dest` is where layers go; `sandbox/outside` holds a victim file that must stay intact.
struct Sandbox {
    _tmp: tempfile::TempDir,
    dest: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let outside = tmp.path().join("outside");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), "original").unwrap();
    Sandbox {
        _tmp: tmp,
        dest,
        outside,
    }
}

/// Everything under `outside` is exactly what `sandbox()` put there.
fn assert_outside_untouched(s: &Sandbox) {
    let names: Vec<_> = fs::read_dir(&s.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["secret"], "something was written outside dest");
    assert_eq!(
        fs::read_to_string(s.outside.join("secret")).unwrap(),
        "original"
    );
    assert!(!s.dest.parent().unwrap().join("evil").exists());
}

fn refused(s: &Sandbox, tarball: &[u8], entry: &str) -> String {
    let err = apply_layer(tarball, &s.dest, &ApplyOptions::default())
        .expect_err("malicious layer was accepted");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{entry:?}")),
        "error does not name {entry:?}: {msg}"
    );
    assert!(
        matches!(err, LayerError::Escape { .. }),
        "expected an escape refusal, got {err:?}"
    );
    assert_outside_untouched(s);
    msg
}

#[test]
fn dotdot_components_are_refused() {
    let s = sandbox();
    refused(
        &s,
        &RawTar::default().file("../evil", "x").done(),
        "../evil",
    );
    refused(
        &s,
        &RawTar::default().file("a/../../outside/secret", "x").done(),
        "a/../../outside/secret",
    );
}

#[test]
fn writing_through_a_symlink_planted_by_an_earlier_entry_is_refused() {
    let s = sandbox();
    let target = s.outside.to_str().unwrap().to_string();
    let tarball = RawTar::default()
        .symlink("link", &target)
        .file("link/secret", "pwned")
        .done();
    let msg = refused(&s, &tarball, "link/secret");
    assert!(msg.contains("symlink"), "{msg}");
    // Same with a relative symlink climbing out.
    let s = sandbox();
    let tarball = RawTar::default()
        .symlink("up", "../outside")
        .file("up/evil", "pwned")
        .done();
    refused(&s, &tarball, "up/evil");
}

#[test]
fn writing_through_a_symlink_already_in_dest_is_refused() {
    let s = sandbox();
    symlink(&s.outside, s.dest.join("pre")).unwrap();
    refused(
        &s,
        &RawTar::default().file("pre/evil", "pwned").done(),
        "pre/evil",
    );
    // Whiteouts and opaque markers through it are refused too (they would delete outside).
    refused(
        &s,
        &RawTar::default().file("pre/.wh.secret", "").done(),
        "pre/.wh.secret",
    );
    refused(
        &s,
        &RawTar::default().file("pre/.wh..wh..opq", "").done(),
        "pre/.wh..wh..opq",
    );
}

#[test]
fn hardlinks_out_of_dest_are_refused() {
    let s = sandbox();
    refused(
        &s,
        &RawTar::default().hardlink("h", "../outside/secret").done(),
        "h",
    );
    let s = sandbox();
    let tarball = RawTar::default()
        .symlink("link", s.outside.to_str().unwrap())
        .hardlink("h", "link/secret")
        .done();
    refused(&s, &tarball, "h");
    assert!(!s.dest.join("h").exists());
}

#[test]
fn absolute_paths_land_inside_dest() {
    let s = sandbox();
    let secret = format!("{}/secret", s.outside.display());
    let tarball = RawTar::default().file(&secret, "inside").done();
    apply_layer(&tarball[..], &s.dest, &ApplyOptions::default()).unwrap();
    let landed = s.dest.join(secret.trim_start_matches('/'));
    assert_eq!(fs::read_to_string(landed).unwrap(), "inside");
    assert_outside_untouched(&s);
    // An absolute hardlink target is resolved under dest as well.
    let tarball = RawTar::default().hardlink("h", &secret).done();
    apply_layer(&tarball[..], &s.dest, &ApplyOptions::default()).unwrap();
    assert_eq!(fs::read_to_string(s.dest.join("h")).unwrap(), "inside");
    assert_outside_untouched(&s);
}

#[test]
fn a_symlink_replaced_by_a_file_is_not_written_through() {
    let s = sandbox();
    symlink(s.outside.join("secret"), s.dest.join("f")).unwrap();
    apply_layer(
        &RawTar::default().file("f", "mine").done()[..],
        &s.dest,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(s.dest.join("f")).unwrap(), "mine");
    assert!(!fs::symlink_metadata(s.dest.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_outside_untouched(&s);
}

#[test]
fn devices_are_skipped_unless_allowed() {
    let s = sandbox();
    let tarball = RawTar::default()
        .entry("dev/null", EntryType::Char, None, b"")
        .done();
    let stats = apply_layer(&tarball[..], &s.dest, &ApplyOptions::default()).unwrap();
    assert_eq!(stats.skipped_devices, ["dev/null"]);
    assert!(!s.dest.join("dev/null").exists());
}

fn tree(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn whiteouts_delete_and_opaque_dirs_keep_only_this_layer() {
    let s = sandbox();
    let lower = RawTar::default()
        .dir("etc/")
        .file("etc/keep", "k")
        .file("etc/gone", "g")
        .dir("app/")
        .file("app/old1", "1")
        .dir("app/sub/")
        .file("app/sub/old2", "2")
        .done();
    apply_layer(&lower[..], &s.dest, &ApplyOptions::default()).unwrap();
    // The upper layer puts one of its own entries *before* the opaque marker ("-" sorts before ".").
    let upper = RawTar::default()
        .dir("app/")
        .file("app/-early", "e")
        .file("app/.wh..wh..opq", "")
        .file("app/new", "n")
        .file("etc/.wh.gone", "")
        .done();
    let stats = apply_layer(&upper[..], &s.dest, &ApplyOptions::default()).unwrap();
    assert_eq!((stats.whiteouts, stats.opaques), (1, 1));
    assert_eq!(
        tree(&s.dest),
        ["app", "app/-early", "app/new", "etc", "etc/keep"]
    );
    assert_outside_untouched(&s);
}

#[test]
fn gzip_and_zstd_blobs_are_detected() {
    let tarball = RawTar::default().file("hello", "world").done();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tarball).unwrap();
    let gz = gz.finish().unwrap();
    let zs = zstd::encode_all(&tarball[..], 3).unwrap();
    for blob in [tarball.clone(), gz, zs] {
        let s = sandbox();
        let stats = apply_layer(&blob[..], &s.dest, &ApplyOptions::default()).unwrap();
        assert_eq!(fs::read_to_string(s.dest.join("hello")).unwrap(), "world");
        assert_eq!(stats.diff_id, kiln::digest::Digest::of(&tarball));
    }
}

/// Found by tests/misc/fuzz_inputs.rs: `.wh.` named the directory holding it and `.wh...` its parent,
/// so applying the marker at the root removed `dest` itself, or everything beside it.
#[test]
fn whiteouts_naming_the_directory_or_its_parent_are_refused() {
    for marker in [".wh.", ".wh..", ".wh...", "sub/.wh...", "sub/.wh."] {
        let s = sandbox();
        fs::create_dir(s.dest.join("sub")).unwrap();
        fs::write(s.dest.join("sub/kept"), "lower").unwrap();
        let tarball = RawTar::default().file(marker, "").done();
        refused(&s, &tarball, marker);
        assert_eq!(
            fs::read_to_string(s.dest.join("sub/kept")).unwrap(),
            "lower",
            "{marker} removed a lower-layer file"
        );
    }
}

/// Directory modes and mtimes are applied after the last entry; by then a later entry may have
/// replaced a parent with a symlink out of `dest`, and the deferred chmod/utimes must not follow it.
#[test]
fn deferred_directory_metadata_does_not_follow_a_later_symlink() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = sandbox();
    let victim = s.outside.join("sub");
    fs::create_dir(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
    let before = fs::metadata(&victim).unwrap();
    let mut tarball = RawTar::default().dir("a").dir("a/sub");
    // Make a/sub world-writable: what the escape would put on the victim.
    let h = tarball.0.len() - 512;
    tarball.0[h + 100..h + 108].copy_from_slice(b"0000777\0");
    let mut hdr = Header::from_byte_slice(&tarball.0[h..h + 512]).clone();
    hdr.set_cksum();
    tarball.0[h..h + 512].copy_from_slice(hdr.as_bytes());
    let tarball = tarball.symlink("a", "../outside").done();
    let _ = apply_layer(&tarball[..], &s.dest, &ApplyOptions::default());
    let after = fs::metadata(&victim).unwrap();
    assert_eq!(
        after.mode() & 0o7777,
        0o700,
        "the victim's mode was changed"
    );
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec()),
        "the victim's mtime was changed"
    );
    fs::remove_dir(&victim).unwrap();
    assert_outside_untouched(&s);
}
