//! The streaming layer pipeline: tar → diff_id hash → compress → digest hash → sink.
//!
//! Threads: the tar writer runs on its own thread and hashes the uncompressed stream (diff_id) as it
//! produces it, handing 256 KiB chunks over a bounded channel (4 chunks) to the caller's thread, which
//! feeds the compressor (whose gzip/zstd workers are further threads, themselves bounded) and hashes the
//! compressed bytes (digest) on their way to `out`. Chunk buffers are recycled, so memory stays at a few
//! MiB for gzip and at libzstd's window-sized job buffers for zstd, whatever the layer size.
//!
//! Must not: buffer the layer, pick where the blob is stored.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use crate::digest::{Hasher, HashingWriter};

use super::compress::Encoder;
use super::tar::write_tar;
use super::{ChangeSet, LayerError, LayerInfo, LayerOptions};

const CHUNK: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// Write `changes` as one layer blob into `out`; returns `out` and the layer's descriptors.
pub fn write_layer<W: Write + Send>(
    changes: &ChangeSet,
    opts: &LayerOptions,
    out: W,
) -> Result<(W, LayerInfo), LayerError> {
    let sink_failed = Arc::new(AtomicBool::new(false));
    let mut encoder = Encoder::new(
        HashingWriter::new(Sink {
            inner: out,
            failed: Arc::clone(&sink_failed),
        }),
        opts.compression,
        opts.level,
        opts.threads,
    )?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
    let sde = opts.source_date_epoch;

    let (tar_result, sink_result) = std::thread::scope(|s| {
        let tar = std::thread::Builder::new()
            .name("kiln-layer-tar".into())
            .spawn_scoped(s, move || {
                let w = ChunkWriter {
                    cur: Vec::with_capacity(CHUNK),
                    tx,
                    recycled: back_rx,
                    hasher: Hasher::new(),
                };
                let mut w = write_tar(changes, sde, w)?;
                w.send_current()
                    .map_err(|source| LayerError::WriteTar { source })?;
                let len = w.hasher.len();
                Ok::<_, LayerError>((w.hasher.finish(), len))
            });
        let tar = match tar {
            Ok(t) => t,
            Err(source) => return (Err(LayerError::WriteTar { source }), Ok(())),
        };
        // The sink side: runs here so `out` never crosses a thread boundary mid-stream.
        let mut sink = Ok(());
        for chunk in rx.iter() {
            if let Err(source) = encoder.write_all(&chunk) {
                sink = Err(source);
                break;
            }
            let _ = back_tx.send(chunk);
        }
        // On a sink error, dropping `rx` here makes the tar thread's next send fail and stop.
        drop(rx);
        let tar_result = tar
            .join()
            .unwrap_or(Err(LayerError::ThreadPanicked("tar writer")));
        (tar_result, sink)
    });
    let sink_error = |source| {
        if sink_failed.load(Ordering::Relaxed) {
            LayerError::WriteOutput { source }
        } else {
            LayerError::Compress { source }
        }
    };
    if let Err(source) = sink_result {
        return Err(sink_error(source));
    }
    let (diff_id, uncompressed_size) = tar_result?;
    let hashing = encoder.finish().map_err(sink_error)?;
    let (sink, digest, size) = hashing.finish();
    let out = sink.inner;
    Ok((
        out,
        LayerInfo {
            diff_id,
            digest,
            size,
            uncompressed_size,
            media_type: opts.compression.media_type().to_string(),
        },
    ))
}

/// The caller's writer, remembering whether it failed: the compressors pass its errors through as
/// plain `io::Error`s, and the report must say whether compressing or writing broke.
struct Sink<W> {
    inner: W,
    failed: Arc<AtomicBool>,
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| {
            self.failed.store(true, Ordering::Relaxed);
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| {
            self.failed.store(true, Ordering::Relaxed);
        })
    }
}

/// Hashes the tar stream (diff_id) and ships it in fixed chunks over a bounded channel.
struct ChunkWriter {
    cur: Vec<u8>,
    tx: mpsc::SyncSender<Vec<u8>>,
    recycled: mpsc::Receiver<Vec<u8>>,
    hasher: Hasher,
}

impl ChunkWriter {
    fn send_current(&mut self) -> io::Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        let next = match self.recycled.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(_) => Vec::with_capacity(CHUNK),
        };
        let full = std::mem::replace(&mut self.cur, next);
        self.hasher.update(&full);
        self.tx
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "layer sink stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = (CHUNK - self.cur.len()).min(buf.len());
        self.cur.extend_from_slice(&buf[..take]);
        if self.cur.len() == CHUNK {
            self.send_current()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
