//! Base images unpacked while they download. A pull fetches a base's layers in parallel; without
//! this, the first step that needs the base's filesystem (a RUN, a COPY into it) would start
//! unpacking only after the last byte arrived. Here a thread per pulled base applies layer `i` into
//! `<workspace>/base-<manifest hex>` as soon as layers `0..=i` are in the store, while later layers
//! still download, so the unpack of all but the last layer hides behind the network.
//!
//! The first stage that needs a prepared base waits for its thread and takes the directory as its
//! rootfs (one rename); any other stage on the same base unpacks as before. Preparation starts only
//! for bases actually pulled by this build (a base already in the store costs nothing here), and a
//! build that never needs the filesystem (every step cached) stops it between layers when the
//! build ends.
//!
//! Must not: decide whether a stage needs its rootfs (the stage does, in `materialize`), or apply
//! a layer that is not verified in the store (layers are read back from the store, never from the
//! download stream).

use std::collections::HashMap;
use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::stage::lock;
use crate::digest::Digest;
use crate::layer::{self, ApplyOptions};
use crate::store::Store;

/// How far one base's preparation got.
#[derive(Default)]
struct State {
    /// Layers present in the store (downloaded, or there before the pull).
    present: std::collections::HashSet<Digest>,
    /// The pull ended (all present, or failed: `failed`).
    pull_over: bool,
    failed: bool,
    /// Layers applied into the directory, in order.
    applied: usize,
    error: Option<String>,
    claimed: bool,
}

struct Preparation {
    dir: PathBuf,
    layers: Vec<Digest>,
    /// Where each layer's blob is once the pull has committed it.
    blobs: Vec<PathBuf>,
    state: Mutex<State>,
    changed: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Every base this build is preparing, by manifest digest.
pub struct Preparer<'a> {
    store: &'a Store,
    workspace: PathBuf,
    cancel: Arc<AtomicBool>,
    bases: Mutex<HashMap<Digest, Arc<Preparation>>>,
}

impl<'a> Preparer<'a> {
    pub fn new(store: &'a Store, workspace: &Path) -> Preparer<'a> {
        Preparer {
            store,
            workspace: workspace.to_path_buf(),
            cancel: Arc::new(AtomicBool::new(false)),
            bases: Mutex::new(HashMap::new()),
        }
    }

    /// A pull of `manifest` is about to fetch `layers` (in image order): start applying them as
    /// they arrive (the pull reports those already in the store as done too).
    pub fn start(&self, manifest: &Digest, layers: Vec<Digest>) {
        let mut bases = lock(&self.bases);
        if bases.contains_key(manifest) || layers.is_empty() {
            return;
        }
        let prep = Arc::new(Preparation {
            dir: self.workspace.join(format!("base-{}", manifest.hex())),
            blobs: layers.iter().map(|d| self.store.blob_path(d)).collect(),
            layers,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            thread: Mutex::new(None),
        });
        let (p, cancel) = (Arc::clone(&prep), Arc::clone(&self.cancel));
        let spawned = std::thread::Builder::new()
            .name("kiln-base-unpack".into())
            .spawn(move || p.run(&cancel));
        match spawned {
            Ok(h) => *lock(&prep.thread) = Some(h),
            Err(_) => return,
        }
        bases.insert(manifest.clone(), prep);
    }

    /// A blob of a pull landed in the store.
    pub fn blob_present(&self, digest: &Digest) {
        for prep in lock(&self.bases).values() {
            if prep.layers.contains(digest) {
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

    /// The prepared rootfs of `manifest` for the first stage that asks: waits for the unpack to
    /// finish and returns the directory holding every base layer and their count, or None (not prepared here,
    /// already taken, or the preparation failed — the stage unpacks as it would have).
    pub fn claim(&self, manifest: &Digest) -> Option<(PathBuf, usize)> {
        let prep = lock(&self.bases).get(manifest).cloned()?;
        {
            let mut st = lock(&prep.state);
            if st.claimed {
                return None;
            }
            st.claimed = true;
        }
        if let Some(h) = lock(&prep.thread).take() {
            let _ = h.join();
        }
        let st = lock(&prep.state);
        (st.error.is_none() && st.applied == prep.layers.len())
            .then(|| (prep.dir.clone(), prep.layers.len()))
    }
}

impl Drop for Preparer<'_> {
    /// Stop unclaimed preparations between layers and wait for them, so nothing writes into the
    /// workspace once the build is over.
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
    fn run(&self, cancel: &AtomicBool) {
        let result = self.apply_all(cancel);
        let mut st = lock(&self.state);
        if let Err(e) = result {
            st.error = Some(e);
        }
    }

    fn apply_all(&self, cancel: &AtomicBool) -> Result<(), String> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let root = rustix::process::geteuid().is_root();
        let opts = ApplyOptions {
            allow_devices: root,
            preserve_owners: root,
        };
        for (i, (digest, path)) in self.layers.iter().zip(&self.blobs).enumerate() {
            self.wait_for(digest, cancel)?;
            // The pull verified and committed it before reporting it done.
            let blob = fs::File::open(path).map_err(|e| format!("opening layer {digest}: {e}"))?;
            layer::apply_layer(BufReader::new(blob), &self.dir, &opts)
                .map_err(|e| format!("unpacking layer {digest}: {e}"))?;
            lock(&self.state).applied = i + 1;
        }
        Ok(())
    }

    /// Block until `digest` is in the store, the pull failed, or the build is over.
    fn wait_for(&self, digest: &Digest, cancel: &AtomicBool) -> Result<(), String> {
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
                return Err(format!("layer {digest} was not pulled"));
            }
            st = self
                .changed
                .wait_timeout(st, std::time::Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
