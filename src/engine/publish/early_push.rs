//! Pushing while building: with `--push`, each layer of the final image starts uploading as soon as
//! it is in the store (base layers when the stage starts, new and cached layers after each step),
//! on a few background threads, while later steps still run. The manifest is pushed last by
//! `push_tags`, after `registry::push` has confirmed every blob (HEAD finds what was uploaded here),
//! so a build killed mid-way never leaves a manifest naming a missing blob.
//!
//! A layer being written can go up while it is compressed ([`EarlyPush::stream`], chunked PATCHes
//! following the blob's temp file, `registry::upload_growing`): with one destination, the upload
//! then ends moments after the layer is committed instead of starting there.
//!
//! Early uploads are an optimisation only: a failed one is retried by the final push, which reports
//! the error. Only stages whose layers end up in the image (the target and its `FROM stage` chain)
//! feed it.
//!
//! Must not: push a manifest, or hold a layer in memory (blobs stream from the store).

use std::collections::BTreeSet;
use std::path::Path;
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
use crate::sync::lock;

/// Uploads at once per build (the registry client's per-host limit still applies).
const WORKERS: usize = 2;

pub(crate) struct EarlyPush {
    tx: Mutex<Option<Sender<Descriptor>>>,
    seen: Mutex<BTreeSet<Digest>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Stages whose layers are the image's: the target and its FROM-stage ancestors.
    lineage: BTreeSet<usize>,
    /// Bytes uploaded here (the final push reports them with its own).
    uploaded: Arc<AtomicU64>,
    client: Arc<RegistryClient>,
    dests: Arc<Vec<Reference>>,
}

/// A layer uploading while it is written; the writer says how it ended.
pub(crate) struct Streaming<'a> {
    push: &'a EarlyPush,
    growing: Arc<crate::registry::Growing>,
    blob: Arc<Mutex<Option<Descriptor>>>,
    ended: bool,
}

impl Streaming<'_> {
    /// The layer is in the store as `blob`: the upload sends the rest and closes the session.
    /// The ordinary early push skips it (a failed stream queues it there again).
    pub(crate) fn committed(mut self, blob: &Descriptor) {
        *lock(&self.blob) = Some(blob.clone());
        lock(&self.push.seen).insert(blob.digest.clone());
        self.growing.committed(blob.digest.clone(), blob.size);
        self.ended = true;
    }
}

impl Drop for Streaming<'_> {
    /// Not committed (the layer failed): the upload stops.
    fn drop(&mut self) {
        if !self.ended {
            self.growing.abandon();
        }
    }
}

impl EarlyPush {
    /// Start the uploaders for `tags` (store names). Nothing starts when there is nothing to push.
    pub(crate) fn start(
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
            client,
            dests,
        })
    }

    /// Start uploading the layer stage `index` is writing at `temp` (its store temp file), when
    /// the stage's layers are the image's and there is one destination.
    pub(crate) fn stream(&self, index: usize, temp: &Path) -> Option<Streaming<'_>> {
        if !self.lineage.contains(&index) || self.dests.len() != 1 {
            return None;
        }
        let file = std::fs::File::open(temp).ok()?;
        let growing = Arc::new(crate::registry::Growing::new(file));
        let blob = Arc::new(Mutex::new(None::<Descriptor>));
        let tx = lock(&self.tx).clone()?;
        let (g, b, client, dests, uploaded) = (
            growing.clone(),
            blob.clone(),
            self.client.clone(),
            self.dests.clone(),
            self.uploaded.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("kiln-push-stream".into())
            .spawn(move || {
                let done = crate::registry::upload_growing(&client, &dests[0], &g, &|_| {});
                let blob = lock(&b).clone();
                match (done, blob) {
                    (Ok(Some(_)), Some(blob)) => {
                        uploaded.fetch_add(blob.size, Ordering::SeqCst);
                    }
                    // Refused or failed: the ordinary early push (and the final push) take it.
                    (Err(_), Some(blob)) => {
                        let _ = tx.send(blob);
                    }
                    _ => {}
                }
            })
            .ok()?;
        lock(&self.workers).push(handle);
        Some(Streaming {
            push: self,
            growing,
            blob,
            ended: false,
        })
    }

    /// Queue the layers of stage `index` that were not queued yet.
    pub(crate) fn offer(&self, index: usize, layers: &[Descriptor]) {
        if !self.lineage.contains(&index) {
            return;
        }
        let mut seen = lock(&self.seen);
        let tx = lock(&self.tx);
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
    pub(crate) fn finish(&self) -> u64 {
        lock(&self.tx).take();
        let workers = std::mem::take(&mut *lock(&self.workers));
        for w in workers {
            let _ = w.join();
        }
        self.uploaded.load(Ordering::SeqCst)
    }
}

impl Drop for EarlyPush {
    fn drop(&mut self) {
        // Queued uploads end with the build; nothing waits for them to be reported.
        lock(&self.tx).take();
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
pub(crate) fn lineage(plan: &Plan) -> BTreeSet<usize> {
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
