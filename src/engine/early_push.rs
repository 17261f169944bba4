//! Pushing while building: with `--push`, each layer of the final image starts uploading as soon as
//! it is in the store (base layers when the stage starts, new and cached layers after each step),
//! on a few background threads, while later steps still run. The manifest is pushed last by
//! `push_tags`, after `registry::push` has confirmed every blob (HEAD finds what was uploaded here),
//! so a build killed mid-way never leaves a manifest naming a missing blob.
//!
//! Early uploads are an optimisation only: a failed one is retried by the final push, which reports
//! the error. Only stages whose layers end up in the image (the target and its `FROM stage` chain)
//! feed it.
//!
//! Must not: push a manifest, or hold a layer in memory (blobs stream from the store).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::digest::Digest;
use crate::image::Descriptor;
use crate::plan::{Base, Plan};
use crate::reference::Reference;
use crate::registry::{BlobOutcome, Progress, RegistryClient};
use crate::store::Store;

/// Uploads at once per build (the registry client's per-host limit still applies).
const WORKERS: usize = 2;

pub struct EarlyPush {
    tx: Mutex<Option<Sender<Descriptor>>>,
    seen: Mutex<BTreeSet<Digest>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Stages whose layers are the image's: the target and its FROM-stage ancestors.
    lineage: BTreeSet<usize>,
    /// Bytes uploaded here (the final push reports them with its own).
    uploaded: Arc<AtomicU64>,
}

impl EarlyPush {
    /// Start the uploaders for `tags` (store names). Nothing starts when there is nothing to push.
    pub fn start(
        client: Arc<RegistryClient>,
        store: Store,
        tags: &[String],
        plan: &Plan,
    ) -> Option<EarlyPush> {
        let dests: Vec<Reference> = tags.iter().filter_map(|t| t.parse().ok()).collect();
        if dests.is_empty() {
            return None;
        }
        let (tx, rx) = mpsc::channel::<Descriptor>();
        let rx = Arc::new(Mutex::new(rx));
        let store = Arc::new(store);
        let dests = Arc::new(dests);
        let uploaded = Arc::new(AtomicU64::new(0));
        let workers = (0..WORKERS)
            .filter_map(|i| {
                let (rx, client, store, dests, uploaded) = (
                    rx.clone(),
                    client.clone(),
                    store.clone(),
                    dests.clone(),
                    uploaded.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("kiln-push-{i}"))
                    .spawn(move || upload_loop(&rx, &client, &store, &dests, &uploaded))
                    .ok()
            })
            .collect();
        Some(EarlyPush {
            tx: Mutex::new(Some(tx)),
            seen: Mutex::new(BTreeSet::new()),
            workers: Mutex::new(workers),
            lineage: lineage(plan),
            uploaded,
        })
    }

    /// Queue the layers of stage `index` that were not queued yet.
    pub fn offer(&self, index: usize, layers: &[Descriptor]) {
        if !self.lineage.contains(&index) {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        for l in layers {
            if seen.insert(l.digest.clone()) {
                if let Some(tx) = tx.as_ref() {
                    let _ = tx.send(l.clone());
                }
            }
        }
    }

    /// Wait for the queued uploads (their failures are left to the final push to report);
    /// returns the bytes they uploaded.
    pub fn finish(&self) -> u64 {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in workers {
            let _ = w.join();
        }
        self.uploaded.load(Ordering::SeqCst)
    }
}

impl Drop for EarlyPush {
    fn drop(&mut self) {
        // Queued uploads end with the build; nothing waits for them to be reported.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

fn upload_loop(
    rx: &Mutex<Receiver<Descriptor>>,
    client: &RegistryClient,
    store: &Store,
    dests: &[Reference],
    uploaded: &AtomicU64,
) {
    loop {
        let next = {
            let Ok(rx) = rx.lock() else { return };
            rx.recv()
        };
        let Ok(blob) = next else { return };
        let note = |p: Progress| {
            if let Progress::BlobDone {
                outcome: BlobOutcome::Uploaded,
                ..
            } = p
            {
                uploaded.fetch_add(blob.size, Ordering::SeqCst);
            }
        };
        for d in dests {
            let _ = crate::registry::push_blob_early(client, store, &blob, d, &note);
        }
    }
}

/// The target and the stages it is built FROM, transitively.
pub(super) fn lineage(plan: &Plan) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut i = plan.target;
    while out.insert(i) {
        match plan.stages[i].base {
            Base::Stage(parent) => i = parent,
            _ => break,
        }
    }
    out
}
