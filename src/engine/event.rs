//! What a build reports while it runs: the engine emits the wire contract's [`BuildEvent`]s
//! (defined in `api`, so the daemon's stream, `--progress json` and the Python client read one
//! format and an engine change cannot alter it unseen), and counts transferred bytes for them.
//!
//! Must not: define event shapes of its own.

use crate::digest::Digest;

pub use crate::api::{BuildEvent as Event, LayerSummary};

/// Add a blob's size to `bytes` when it was really moved (not found on the other side already).
pub(crate) fn count_transfer(
    p: &crate::registry::Progress,
    sizes: &mut std::collections::BTreeMap<Digest, u64>,
    bytes: &mut u64,
) {
    use crate::registry::{BlobOutcome, Progress};
    match p {
        Progress::BlobStarted { digest, size } => {
            sizes.insert(digest.clone(), *size);
        }
        Progress::BlobDone {
            digest,
            outcome: BlobOutcome::Uploaded | BlobOutcome::Downloaded,
        } => *bytes += sizes.get(digest).copied().unwrap_or(0),
        _ => {}
    }
}
