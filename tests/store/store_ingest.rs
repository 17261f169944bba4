//! Store ingest, tags and metadata: verified commits, concurrency, crash leftovers.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use kiln::digest::Digest;
use kiln::image::{Descriptor, Manifest, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST};
use kiln::store::{BuildRecord, Store, StoreError};

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The blob files in the store (index.json/oci-layout excluded).
fn blobs(store: &Store) -> Vec<String> {
    entries(&store.content_dir().join("blobs/sha256"))
}

/// Files in tmp/, ignoring this process's own session directory and its lock file.
fn tmp_leftovers(store: &Store) -> Vec<String> {
    let own = store
        .tmp_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut v: Vec<String> = entries(&store.root().join("tmp"))
        .into_iter()
        .filter(|n| n != &own)
        .collect();
    v.extend(
        entries(store.tmp_dir())
            .into_iter()
            .filter(|n| n != "lock")
            .map(|n| format!("{own}/{n}")),
    );
    v
}

#[test]
fn open_creates_an_oci_layout_and_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layout = fs::read_to_string(dir.path().join("content/oci-layout")).unwrap();
    assert_eq!(layout, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = fs::read_to_string(dir.path().join("content/index.json")).unwrap();
    assert_eq!(
        index,
        r#"{"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#
    );
    assert!(dir.path().join("content/blobs/sha256").is_dir());
    assert!(dir.path().join("kiln.db").is_file());
    let mode: String = {
        let c = rusqlite::Connection::open(dir.path().join("kiln.db")).unwrap();
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(mode, "wal");
    assert_eq!(store.db().schema_version().unwrap(), 4);
}

#[test]
fn wrong_digest_commits_nothing_and_names_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let claimed = Digest::of(b"what the registry promised");
    let mut w = store.ingest().unwrap();
    w.write_all(b"what arrived instead").unwrap();
    let err = w.commit(Some(&claimed), None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&claimed.to_string()), "{msg}");
    assert!(
        msg.contains(&Digest::of(b"what arrived instead").to_string()),
        "{msg}"
    );
    assert!(blobs(&store).is_empty(), "blobs: {:?}", blobs(&store));
    assert!(
        tmp_leftovers(&store).is_empty(),
        "{:?}",
        tmp_leftovers(&store)
    );
    assert!(!store.has_blob(&Digest::of(b"what arrived instead")));

    // Right digest, wrong size: refused as well.
    let data = b"sized";
    let mut w = store.ingest().unwrap();
    w.write_all(data).unwrap();
    let err = w.commit(Some(&Digest::of(data)), Some(99)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SizeMismatch {
                expected: 99,
                actual: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(blobs(&store).is_empty());
    assert!(
        tmp_leftovers(&store).is_empty(),
        "{:?}",
        tmp_leftovers(&store)
    );

    // put_bytes with a wrong expected digest, too.
    assert!(store.put_bytes(b"abc", Some(&claimed)).is_err());
    assert!(blobs(&store).is_empty());
}

#[test]
fn dropped_ingest_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut w = store.ingest().unwrap();
    w.write_all(b"half a blob").unwrap();
    let tmp = w.temp_path().to_path_buf();
    assert!(tmp.exists());
    drop(w);
    assert!(!tmp.exists());
    assert!(tmp_leftovers(&store).is_empty());
}

#[test]
fn committed_blob_reads_back_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = store.ingest().unwrap();
    for chunk in data.chunks(4097) {
        w.write_all(chunk).unwrap();
    }
    let (d, n) = w.commit(None, Some(data.len() as u64)).unwrap();
    assert_eq!(d, Digest::of(&data));
    assert_eq!(n, data.len() as u64);
    assert_eq!(blobs(&store), vec![d.hex().to_string()]);
    assert_eq!(fs::read(store.blob_path(&d)).unwrap(), data);
    assert_eq!(store.read_blob(&d, 2_000_000).unwrap(), data);
    assert!(matches!(
        store.read_blob(&d, 10),
        Err(StoreError::TooLarge { .. })
    ));
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o644);
    let missing = Digest::of(b"never stored");
    assert!(matches!(
        store.open_blob(&missing),
        Err(StoreError::BlobNotFound(_))
    ));
}

#[test]
fn eight_threads_ingesting_the_same_blob_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let data: Arc<Vec<u8>> = Arc::new((0..3_000_000u32).map(|i| (i * 7) as u8).collect());
    let want = Digest::of(&data);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (store, data, want) = (store.clone(), data.clone(), want.clone());
            std::thread::spawn(move || {
                let mut w = store.ingest().unwrap();
                for c in data.chunks(65536) {
                    w.write_all(c).unwrap();
                }
                w.commit(Some(&want), Some(data.len() as u64)).unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().0, want);
    }
    assert_eq!(blobs(&store), vec![want.hex().to_string()]);
    assert_eq!(Digest::of(&fs::read(store.blob_path(&want)).unwrap()), want);
    assert!(
        tmp_leftovers(&store).is_empty(),
        "{:?}",
        tmp_leftovers(&store)
    );
}

#[test]
fn leftovers_of_a_crashed_process_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let tmp = dir.path().join("tmp");
    // A crashed process: a loose temp file and a session directory whose lock nobody holds.
    fs::write(tmp.join("ingest-crashed"), b"partial").unwrap();
    fs::create_dir(tmp.join("session-dead")).unwrap();
    fs::write(tmp.join("session-dead/lock"), b"").unwrap();
    fs::write(tmp.join("session-dead/ingest-x"), b"partial").unwrap();
    // A process killed between creating its session and locking it: no lock file at all.
    fs::create_dir(tmp.join("session-unlocked")).unwrap();
    fs::write(tmp.join("session-unlocked/snapshot-y"), b"partial").unwrap();
    // An older kiln's session, locked through its `lock` file, is left alone.
    fs::create_dir(tmp.join("session-older")).unwrap();
    let older = fs::File::create(tmp.join("session-older/lock")).unwrap();
    rustix::fs::flock(&older, rustix::fs::FlockOperation::LockExclusive).unwrap();
    // A live process's session (its lock is held) must survive.
    let live = Store::open(dir.path()).unwrap();
    let mut w = live.ingest().unwrap();
    w.write_all(b"in flight").unwrap();
    let inflight = w.temp_path().to_path_buf();

    let store = Store::open(dir.path()).unwrap();
    let names = entries(&tmp);
    assert!(!names.contains(&"ingest-crashed".to_string()), "{names:?}");
    assert!(!names.contains(&"session-dead".to_string()), "{names:?}");
    assert!(
        !names.contains(&"session-unlocked".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"session-older".to_string()), "{names:?}");
    assert!(inflight.exists(), "a live ingest was swept");
    assert_eq!(names.len(), 3, "{names:?}");
    let (d, _) = w.commit(None, None).unwrap();
    assert!(store.has_blob(&d));
}

fn manifest_in(store: &Store, n: u32) -> Descriptor {
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"n":{n}}}"#
    );
    let d = store.put_bytes(cfg.as_bytes(), None).unwrap();
    let m = Manifest::new(
        Descriptor::new(MEDIA_OCI_CONFIG, d, cfg.len() as u64),
        vec![],
    );
    let (bytes, desc) = m.to_blob().unwrap();
    store.put_bytes(&bytes, Some(&desc.digest)).unwrap();
    desc
}

#[test]
fn concurrent_tags_from_threads_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    let desc = manifest_in(&store, t * 100 + i);
                    store
                        .tag(&format!("example.com/t{t}/app:v{i}"), &desc)
                        .unwrap();
                }
            })
        })
        .collect();
    // A second Store on the same root (another process, as far as locking is concerned).
    let other = Store::open(dir.path()).unwrap();
    for i in 0..10 {
        let d = manifest_in(&other, 10_000 + i);
        other.tag(&format!("other:{i}"), &d).unwrap();
    }
    for h in handles {
        h.join().unwrap();
    }
    let tags = store.tags().unwrap();
    assert_eq!(tags.len(), 16 * 5 + 10);
    for t in 0..16 {
        for i in 0..5 {
            let d = store
                .resolve(&format!("example.com/t{t}/app:v{i}"))
                .unwrap()
                .unwrap();
            assert_eq!(d.media_type, MEDIA_OCI_MANIFEST);
            let img = store.image(&format!("example.com/t{t}/app:v{i}")).unwrap();
            assert!(String::from_utf8(img.config_raw)
                .unwrap()
                .contains(&format!(r#""n":{}"#, t * 100 + i)));
        }
    }
    // Retagging replaces; untag removes.
    let d = manifest_in(&store, 7);
    store.tag("other:0", &d).unwrap();
    assert_eq!(store.resolve("other:0").unwrap().unwrap().digest, d.digest);
    assert_eq!(store.tags().unwrap().len(), 90);
    assert!(store.untag("other:0").unwrap());
    assert!(!store.untag("other:0").unwrap());
    assert_eq!(store.resolve("other:0").unwrap(), None);
    assert!(matches!(
        store.tag("bad tag", &d),
        Err(StoreError::BadTagName(_))
    ));
    assert!(matches!(
        store.image("nope:1"),
        Err(StoreError::ImageNotFound(_))
    ));
    // By digest, untagged content resolves too.
    let img = store.image(&d.digest.to_string()).unwrap();
    assert_eq!(img.manifest_desc.digest, d.digest);
}

#[test]
fn build_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let db = store.db();
    for i in 0..3 {
        db.insert_build(&BuildRecord {
            id: format!("b{i}"),
            status: "running".into(),
            spec_json: r#"{"tags":["app"]}"#.into(),
            result_digest: None,
            started: 1000 + i,
            finished: None,
            error: None,
        })
        .unwrap();
    }
    assert!(db
        .update_build("b1", "succeeded", Some("sha256:abc"), Some(2000), None)
        .unwrap());
    assert!(!db
        .update_build("zz", "failed", None, None, Some("x"))
        .unwrap());
    let b1 = db.get_build("b1").unwrap().unwrap();
    assert_eq!(b1.status, "succeeded");
    assert_eq!(b1.result_digest.as_deref(), Some("sha256:abc"));
    assert_eq!(b1.finished, Some(2000));
    let list = db.list_builds(2).unwrap();
    assert_eq!(
        list.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        ["b2", "b1"]
    );
    drop(store);
    // Reopening keeps the records and the schema.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.db().list_builds(10).unwrap().len(), 3);
}

/// Stores opened at once sweep each other's `tmp/` while setting up their own sessions: none
/// loses the session it was given (a sweep that wins the race for a fresh session's lock removes
/// it, and its creator makes another).
#[test]
fn stores_opened_at_once_never_sweep_each_others_sessions() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let root = dir.path().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let store = Store::open(&root).unwrap();
                    let mut w = store.ingest().unwrap();
                    w.write_all(b"in flight").unwrap();
                    assert!(store.tmp_dir().is_dir(), "a live session was swept");
                    w.commit(None, None).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(entries(&root.join("tmp")), Vec::<String>::new());
}
