//! Parallel gzip the pigz way: one gzip member whose bytes do not depend on the number of threads.
//!
//! The input is cut into fixed [`BLOCK_SIZE`] blocks (128 KiB, pigz's default `-b 128`). Each block is
//! deflated independently as a raw deflate stream that is first primed with the previous 32 KiB of input
//! as its dictionary (`deflateSetDictionary`, so back-references across the block boundary still work),
//! and ended with a sync flush (an empty stored block, which byte-aligns the output so the pieces can be
//! concatenated); the last block is ended with `Z_FINISH` instead. The CRC-32 of each block is computed by
//! the worker and combined in order (`crc32fast::Hasher::combine`). Because block boundaries, dictionaries
//! and flushes depend only on the input bytes, 1, 2 or 16 workers produce the same bytes.
//!
//! Header: fixed 10 bytes `1f 8b 08 00 00000000 XFL ff`: no name, mtime 0, and OS 255 ("unknown"), as Go's
//! `compress/gzip` writes (so as Docker and BuildKit layers carry), because a layer's bytes must not depend
//! on the machine that produced them. XFL is 2 for level 9 and 4 for level 1, as gzip and pigz set it.
//!
//! Incompressible blocks (already-compressed files: archives, images, wheels) are not deflated:
//! a block whose byte entropy is at least [`STORED_ENTROPY`] bits per byte is written as deflate
//! stored blocks (RFC 1951 §3.2.4), which costs a copy instead of a fruitless match search. The
//! decision reads only the block's bytes, so the output still does not depend on the thread count.
//!
//! Memory: at most `2 × threads + 2` blocks are in flight (input plus compressed output each), so the
//! encoder holds a few MiB whatever the stream length. The compressed output is written to `out` on the
//! caller's thread, in order.
//!
//! Workers: one pool per process, one thread per core, shared by every encoder (parallel stages,
//! concurrent daemon builds). Blocks are served first come, first served, so two layers written at
//! once share the cores block by block instead of each starting a thread per core and making the
//! kernel juggle `builds × cores` compressors against the RUN steps; and a small layer does not pay
//! for spawning threads.
//!
//! Must not: decide which compression a layer uses (that is `compress`), buffer the whole stream.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input block size; pigz's default (`-b 128`).
pub const BLOCK_SIZE: usize = 128 * 1024;
/// Deflate's window: the dictionary each block is primed with.
const DICT_SIZE: usize = 32 * 1024;
/// Order-0 entropy (bits per byte) from which a block is stored, not deflated. Random and
/// compressed data measure ≥ 7.99 on 128 KiB; text and binaries stay well below 7.5, and a block
/// this close to 8 cannot shrink by more than a fraction of a percent through Huffman coding.
pub const STORED_ENTROPY: f64 = 7.97;

struct Job {
    level: u32,
    data: Arc<Vec<u8>>,
    dict: Option<Arc<Vec<u8>>>,
    last: bool,
    reply: SyncSender<io::Result<Done>>,
}

struct Done {
    out: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// A streaming gzip encoder compressing 128 KiB blocks on `threads` worker threads.
pub struct ParallelGzip<W: Write> {
    out: Option<W>,
    xfl: u8,
    cur: Vec<u8>,
    prev: Option<Arc<Vec<u8>>>,
    pending: VecDeque<Receiver<io::Result<Done>>>,
    max_pending: usize,
    level: u32,
    crc: crc32fast::Hasher,
    header_written: bool,
}

/// The process's compression workers and the queue they serve.
struct Pool {
    jobs: SyncSender<Job>,
}

/// The shared pool, started on first use with one worker per core.
fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (tx, rx) = mpsc::sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            // A worker that cannot start leaves the others; with none, sends fail (see dispatch).
            let _ = std::thread::Builder::new()
                .name(format!("kiln-gzip-{i}"))
                .spawn(move || worker(rx));
        }
        Pool { jobs: tx }
    })
}

impl<W: Write> ParallelGzip<W> {
    /// `level` 0–9 (clamped); `threads` (at least 1) bounds how many blocks this encoder keeps
    /// in the shared pool at once.
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let level = level.min(9);
        let threads = threads.max(1);
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        ParallelGzip {
            out: Some(out),
            xfl,
            cur: Vec::with_capacity(BLOCK_SIZE),
            prev: None,
            pending: VecDeque::new(),
            max_pending: 2 * threads + 1,
            level,
            crc: crc32fast::Hasher::new(),
            header_written: false,
        }
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, self.xfl, 255];
            self.out()?.write_all(&header)?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Hand the current block to the workers; write out whatever finished meanwhile.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let data = Arc::new(std::mem::replace(
            &mut self.cur,
            Vec::with_capacity(if last { 0 } else { BLOCK_SIZE }),
        ));
        let (reply, rx) = mpsc::sync_channel(1);
        let job = Job {
            level: self.level,
            data: Arc::clone(&data),
            dict: self.prev.take(),
            last,
            reply,
        };
        if self.out.is_none() {
            return Err(io::Error::other("gzip encoder already finished"));
        }
        if pool().jobs.send(job).is_err() {
            return Err(io::Error::other("gzip worker threads are gone"));
        }
        if !last {
            self.prev = Some(data);
        }
        self.pending.push_back(rx);
        while self.pending.len() > self.max_pending {
            self.write_one()?;
        }
        // Opportunistically write finished blocks so the sink sees steady progress.
        loop {
            let ready = match self.pending.front() {
                Some(rx) => match rx.try_recv() {
                    Ok(done) => Some(done),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => {
                        return Err(io::Error::other("gzip worker thread died"))
                    }
                },
                None => None,
            };
            match ready {
                Some(done) => {
                    self.pending.pop_front();
                    self.emit(done?)?;
                }
                None => break,
            }
        }
        Ok(())
    }

    fn write_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let done = rx
                .recv()
                .map_err(|_| io::Error::other("gzip worker thread died"))??;
            self.emit(done)?;
        }
        Ok(())
    }

    fn emit(&mut self, done: Done) -> io::Result<()> {
        self.crc.combine(&done.crc);
        self.out()?.write_all(&done.out)
    }

    /// Compress the rest, write the trailer (CRC-32, length mod 2³²) and return the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_header()?;
        self.dispatch(true)?;
        while !self.pending.is_empty() {
            self.write_one()?;
        }
        let crc = std::mem::take(&mut self.crc);
        let isize = (crc.total_len() & 0xffff_ffff) as u32;
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        out.write_all(&crc.finalize().to_le_bytes())?;
        out.write_all(&isize.to_le_bytes())?;
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_header()?;
        let mut rest = buf;
        while !rest.is_empty() {
            let take = (BLOCK_SIZE - self.cur.len()).min(rest.len());
            self.cur.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.cur.len() == BLOCK_SIZE {
                self.dispatch(false)?;
            }
        }
        Ok(buf.len())
    }

    /// Writes out finished blocks; does not cut the current block (that would change the bytes).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // A fresh deflate state for every block: a state reused after `reset()` was seen to
        // encode a block differently depending on what this worker had compressed before (the
        // layer's digest then depended on scheduling: 1 run in ~15 under load; not traced
        // further inside zlib-rs). A panic must not take the worker (and every later encoder's
        // blocks) with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut c = Compress::new(Compression::new(job.level.min(9)), false);
            compress_block(&mut c, &job)
        }))
        .unwrap_or_else(|_| Err(io::Error::other("deflating a block panicked")));
        let _ = job.reply.send(result);
    }
}

/// Order-0 (byte histogram) entropy of `data`, in bits per byte.
fn entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// `data` as deflate stored blocks (≤ 65535 bytes each), byte-aligned as a sync flush leaves the
/// stream; the final one has BFINAL set when `last` (an empty final block ends an empty input).
fn stored_blocks(data: &[u8], last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 10);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.push(u8::from(last));
        out.extend_from_slice(&[0, 0, 0xff, 0xff]);
        return out;
    }
    while let Some(chunk) = chunks.next() {
        let final_block = last && chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(final_block));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn compress_block(c: &mut Compress, job: &Job) -> io::Result<Done> {
    if !job.data.is_empty() && entropy(&job.data) >= STORED_ENTROPY {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&job.data);
        return Ok(Done {
            out: stored_blocks(&job.data, job.last),
            crc,
        });
    }
    if let Some(dict) = &job.dict {
        let start = dict.len().saturating_sub(DICT_SIZE);
        c.set_dictionary(&dict[start..])
            .map_err(|e| io::Error::other(format!("priming deflate dictionary: {e}")))?;
    }
    let data: &[u8] = &job.data;
    // deflateBound-like: stored blocks add 5 bytes per 16 KiB in the worst case, plus the flush marker.
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 64);
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(|e| io::Error::other(format!("deflating block: {e}")))?;
        let consumed = c.total_in() as usize;
        match status {
            Status::StreamEnd => break,
            // zlib's contract: a flush is complete once a call returns with output space left over.
            Status::Ok | Status::BufError
                if !job.last && consumed == data.len() && out.len() < out.capacity() =>
            {
                break
            }
            Status::Ok | Status::BufError => {}
        }
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    Ok(Done { out, crc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], threads: usize, level: u32) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), level, threads);
        for chunk in data.chunks(7777) {
            g.write_all(chunk).unwrap();
        }
        g.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_thread_independent() {
        let mut data = Vec::new();
        for i in 0..(3 * BLOCK_SIZE + 1234) {
            data.push(((i * 31) % 251) as u8 ^ (i / 1000) as u8);
        }
        let one = gz(&data, 1, 6);
        assert_eq!(one, gz(&data, 3, 6));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    /// A deterministic incompressible stream (xorshift), the shape of a tar of compressed files.
    fn noise(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_blocks_are_stored_and_mixed_streams_round_trip() {
        let mut data = noise(2 * BLOCK_SIZE + 100, 42);
        data.extend(b"text compresses well; ".repeat(20_000));
        data.extend(noise(BLOCK_SIZE / 2, 7));
        assert!(entropy(&data[..BLOCK_SIZE]) >= STORED_ENTROPY);
        assert!(entropy(&data[3 * BLOCK_SIZE..4 * BLOCK_SIZE]) < 5.0);
        let one = gz(&data, 1, 6);
        assert_eq!(
            one,
            gz(&data, 4, 6),
            "stored or not, the bytes do not depend on threads"
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Stored noise costs 5 bytes per 64 KiB, not deflate's overhead on top of no gain.
        let noise_only = noise(4 * BLOCK_SIZE, 9);
        let z = gz(&noise_only, 2, 6);
        assert!(
            z.len() <= noise_only.len() + 64 + noise_only.len() / 65535 * 5,
            "{}",
            z.len()
        );
    }

    #[test]
    fn a_stored_last_block_ends_the_stream() {
        let data = noise(BLOCK_SIZE + 10, 3);
        let z = gz(&data, 2, 6);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // gzip(1) itself (scripts/test.sh installs it) accepts the stream.
        let mut child = std::process::Command::new("gzip")
            .arg("-t")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("gzip(1) is needed by this test");
        child.stdin.take().unwrap().write_all(&z).unwrap();
        assert!(
            child.wait().unwrap().success(),
            "gzip -t refuses the stream"
        );
    }

    #[test]
    fn empty_and_exact_block_inputs_decode() {
        for len in [0, BLOCK_SIZE, 2 * BLOCK_SIZE] {
            let data = vec![7u8; len];
            let z = gz(&data, 2, 6);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&z[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back.len(), len);
        }
    }
}
