//! Base images unpacked while they download. A pull fetches a base's layers in parallel; without
//! this, the first step that needs the base's filesystem (a RUN, a COPY into it) would start
//! unpacking only after the last byte arrived. Here a thread per pulled base commits layer `i`'s
//! snapshot (`store::snapshots`) as soon as its blob is in the store, while later layers still
//! download, so the unpack of all but the last layer hides behind the network. The snapshots are
//! the store's, shared: a stage that needs the base meanwhile waits on the snapshot's lock and
//! finds it committed; the next build finds them all.
//!
//! Preparation starts only for bases actually pulled by this build (a base already in the store
//! costs nothing here), and a build that never needs the filesystem (every step cached) stops it
//! between layers when the build ends.
//!
//! Must not: decide whether a stage needs its filesystem (the stage does, in `materialize`), or
//! apply a layer that is not verified in the store (layers are read back from the store, never
//! from the download stream).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::digest::Digest;
use crate::image::ImageConfig;
use crate::layer::{self, ApplyOptions};
use crate::store::{Store, StoredImage};
use crate::sync::lock;

/// How far one base's download got.
#[derive(Default)]
struct State {
    /// Blobs present in the store (downloaded, or there before the pull).
    present: HashSet<Digest>,
    /// The pull ended (all present, or failed: `failed`).
    pull_over: bool,
    failed: bool,
}

struct Preparation {
    config: Digest,
    layers: Vec<Digest>,
    state: Mutex<State>,
    changed: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Every base this build is preparing, by manifest digest.
pub struct Preparer<'a> {
    store: &'a Store,
    cancel: Arc<AtomicBool>,
    bases: Mutex<HashMap<Digest, Arc<Preparation>>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<'a> Preparer<'a> {
    pub fn new(store: &'a Store) -> Preparer<'a> {
        Preparer {
            store,
            cancel: Arc::new(AtomicBool::new(false)),
            bases: Mutex::new(HashMap::new()),
        }
    }

    /// A pull of `manifest` is about to fetch `config` and `layers` (in image order): start
    /// committing the layers' snapshots as they arrive (the pull reports those already in the
    /// store as done too).
    pub fn start(&self, manifest: &Digest, config: &Digest, layers: Vec<Digest>) {
        let mut bases = lock(&self.bases);
        if bases.contains_key(manifest) || layers.is_empty() {
            return;
        }
        let prep = Arc::new(Preparation {
            config: config.clone(),
            layers,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            thread: Mutex::new(None),
        });
        let (p, cancel) = (Arc::clone(&prep), Arc::clone(&self.cancel));
        // The thread outlives no build but cannot borrow the engine's Store: it opens its own on
        // the same root (a session of its own; the snapshots and their locks are shared).
        let root = self.store.root().to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("kiln-base-unpack".into())
            .spawn(move || {
                if let Ok(store) = Store::open(&root) {
                    // A failure here is not the build's: the stage makes what is missing itself.
                    let _ = p.commit_all(&store, &cancel);
                }
            });
        match spawned {
            Ok(h) => *lock(&prep.thread) = Some(h),
            Err(_) => return,
        }
        bases.insert(manifest.clone(), prep);
    }

    /// Wait until the preparation of every base that has one of `layers` is over, so a stage
    /// finds the snapshots it made rather than racing it for each layer.
    pub fn wait_for(&self, layers: &[Digest]) {
        let preps: Vec<Arc<Preparation>> = lock(&self.bases)
            .values()
            .filter(|p| p.layers.iter().any(|l| layers.contains(l)))
            .cloned()
            .collect();
        for prep in preps {
            if let Some(h) = lock(&prep.thread).take() {
                let _ = h.join();
            }
        }
    }

    /// A blob of a pull landed in the store.
    pub fn blob_present(&self, digest: &Digest) {
        for prep in lock(&self.bases).values() {
            if prep.config == *digest || prep.layers.contains(digest) {
                lock(&prep.state).present.insert(digest.clone());
                prep.changed.notify_all();
            }
        }
    }

    /// The pull of `manifest` ended; `ok` false when it failed (the preparation stops).
    pub fn pull_over(&self, manifest: &Digest, ok: bool) {
        if let Some(prep) = lock(&self.bases).get(manifest) {
            let mut st = lock(&prep.state);
            st.pull_over = true;
            st.failed |= !ok;
            prep.changed.notify_all();
        }
    }
}

impl Drop for Preparer<'_> {
    /// Stop preparations between layers and wait for them, so nothing is unpacked for a build
    /// that is over.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
        for prep in lock(&self.bases).values() {
            prep.changed.notify_all();
            if let Some(h) = lock(&prep.thread).take() {
                let _ = h.join();
            }
        }
    }
}

impl Preparation {
    fn commit_all(&self, store: &Store, cancel: &AtomicBool) -> Result<(), BoxError> {
        self.wait_for(&self.config, cancel)?;
        let config = ImageConfig::from_slice(&fs::read(store.blob_path(&self.config))?)?;
        commit_chain(store, &self.layers, &config.rootfs.diff_ids, |digest| {
            self.wait_for(digest, cancel)
        })?;
        Ok(())
    }

    /// Block until `digest` is in the store, the pull failed, or the build is over.
    fn wait_for(&self, digest: &Digest, cancel: &AtomicBool) -> Result<(), BoxError> {
        let mut st = lock(&self.state);
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Err("the build ended first".into());
            }
            if st.present.contains(digest) {
                return Ok(());
            }
            if st.failed {
                return Err("the pull failed".into());
            }
            if st.pull_over {
                return Err(format!("blob {digest} was not pulled").into());
            }
            st =
                crate::sync::wait_timeout(&self.changed, st, std::time::Duration::from_millis(200));
        }
    }
}

/// Commit the snapshots of a stored image now, as `docker load` and `podman pull` unpack what
/// they store: `kiln import` and `kiln pull` call it, so the first build on the image finds its
/// filesystem ready instead of unpacking it. Returns how many snapshots were made (the others
/// existed).
pub fn commit_image_snapshots(store: &Store, image: &StoredImage) -> Result<usize, BoxError> {
    let layers: Vec<Digest> = image
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.clone())
        .collect();
    commit_chain(store, &layers, &image.config.rootfs.diff_ids, |_| Ok(()))
}

/// Commit the snapshot chain of `layers` (image order, each verified in the store), calling
/// `before` ahead of unpacking each; returns how many were made.
fn commit_chain(
    store: &Store,
    layers: &[Digest],
    diff_ids: &[Digest],
    mut before: impl FnMut(&Digest) -> Result<(), BoxError>,
) -> Result<usize, BoxError> {
    if layers.len() != diff_ids.len() {
        return Err(format!(
            "the image has {} layers and its config {} diff_ids",
            layers.len(),
            diff_ids.len()
        )
        .into());
    }
    let opts = ApplyOptions {
        allow_devices: is_root(),
        preserve_owners: is_root(),
        overlay_opaque_xattr: Some(crate::exec::overlay_opaque_xattr()),
    };
    let (mut parent, mut made) = (None, 0);
    for (digest, diff_id) in layers.iter().zip(diff_ids) {
        let c = store.commit_snapshot(parent.as_ref(), diff_id, Some(digest), |dir| {
            before(digest)?;
            // The pull or import verified and committed it before reporting it done.
            let blob = fs::File::open(store.blob_path(digest))?;
            let stats = layer::apply_layer(BufReader::new(blob), dir, &opts)?;
            if &stats.diff_id != diff_id {
                return Err(format!("layer {digest} unpacks to {}", stats.diff_id).into());
            }
            Ok(())
        })?;
        made += usize::from(c.made);
        parent = Some(c.chain);
    }
    Ok(made)
}

/// Whether this process is root (in its user namespace): owners and devices can be applied.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
