//! An upload that follows a blob while it is still being written: the layer's compressed bytes go
//! to the registry in PATCH chunks (distribution's chunked upload, `Content-Range` from the last
//! offset) as the compressor produces them, and the PUT with the digest closes the session once the
//! layer is committed. The upload overlaps the compression instead of starting after it.
//!
//! It reads the blob through a file handle opened before the first byte, so the store renaming the
//! temp file into `blobs/` (or removing it, on failure) never changes what it reads. Only bytes
//! already written are read: the writer appends, and the file's length is read before each chunk.
//!
//! Best effort: any refusal or failure abandons the session and returns the error; the caller
//! then pushes the blob the ordinary way (HEAD, mount, upload), which also covers a registry that
//! does not take chunked uploads.
//!
//! Must not: push a manifest, or decide the digest (the writer's commit does).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use reqwest::blocking::Body;

use super::push::{close_session, open_session, patch_chunk, Target};
use super::{Progress, RegistryClient, RegistryError};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::sync::lock;

/// Send a chunk once this many new bytes are there (the last chunk may be smaller).
const CHUNK: u64 = 8 << 20;

/// How the writing ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Writing,
    Committed { digest: Digest, size: u64 },
    Abandoned,
}

/// A blob being written, as the uploader sees it.
pub struct Growing {
    file: File,
    end: Mutex<End>,
    changed: Condvar,
}

impl Growing {
    /// Follow the file behind `file` (opened by the caller before writing starts).
    pub fn new(file: File) -> Growing {
        Growing {
            file,
            end: Mutex::new(End::Writing),
            changed: Condvar::new(),
        }
    }

    /// The writer committed the blob: `size` bytes with this digest.
    pub fn committed(&self, digest: Digest, size: u64) {
        *lock(&self.end) = End::Committed { digest, size };
        self.changed.notify_all();
    }

    /// The writer gave up; the upload stops.
    pub fn abandon(&self) {
        *lock(&self.end) = End::Abandoned;
        self.changed.notify_all();
    }

    /// `len` bytes from `offset`, read through a duplicate of the handle.
    fn body(&self, offset: u64, len: u64) -> Result<Body, RegistryError> {
        let io = |source| {
            RegistryError::Io(crate::report::IoError {
                action: "reading the blob being written",
                path: Default::default(),
                source,
            })
        };
        let mut f = self.file.try_clone().map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        Ok(Body::sized(f.take(len), len))
    }

    fn len(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }

    /// Wait until `want` bytes are written or the writer is done; returns what is known then.
    fn wait(&self, want: u64) -> (u64, End) {
        let mut end = lock(&self.end);
        loop {
            let len = self.len();
            if len >= want || *end != End::Writing {
                return (len, end.clone());
            }
            end = crate::sync::wait_timeout(&self.changed, end, Duration::from_millis(50));
        }
    }
}

/// Upload `blob` to `dest` while it is written; returns the digest uploaded, or None when the
/// writer abandoned it.
pub fn upload_growing(
    client: &RegistryClient,
    dest: &Reference,
    blob: &Growing,
    note: &dyn Fn(Progress),
) -> Result<Option<Digest>, RegistryError> {
    let t = Target::of(dest);
    let _slot = client.acquire(t.domain);
    let base = format!("{}/v2/{}", client.base(&t.ctx, &t.host)?, t.path);
    let mut location = open_session(client, &t, &base, note)?;
    let mut offset = 0u64;
    loop {
        let (len, end) = blob.wait(offset + CHUNK);
        let upto = match &end {
            End::Abandoned => return Ok(None),
            End::Committed { size, .. } => *size,
            End::Writing => offset + (len - offset) / CHUNK * CHUNK,
        };
        if upto > offset {
            let len = upto - offset;
            let body = || blob.body(offset, len);
            location = patch_chunk(client, &t, &location, &base, (offset, len), &body, note)?;
            offset = upto;
        }
        if let End::Committed { digest, .. } = end {
            let empty = || Ok(Body::from(Vec::new()));
            close_session(client, &t, &location, &digest, &empty, note)?;
            return Ok(Some(digest));
        }
    }
}
