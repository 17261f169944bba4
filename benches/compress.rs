//! `cargo bench --bench compress`: kiln's compressors and layer path against pigz, zstd and tar.
//!
//! Corpus: a tar of /usr/lib (override with KILN_BENCH_CORPUS_DIR) cut at 200 MiB, in a temp file.
//! Layer path: ChangeSet::from_dir + write_layer (gzip, 2 threads, level 6) to a temp file, both
//! digests, against `tar -cf - DIR | pigz -p2 -6 | sha256sum` on the same directory (default
//! /usr/lib/gcc, override with KILN_BENCH_LAYER_DIR). Every measurement is the best of 3 runs, with
//! the inputs in the page cache. Ratios: throughput kiln / peer (> 1 is faster), size kiln / peer.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kiln::layer::{compress_stream, write_layer, ChangeSet, Compression, LayerOptions};

const CAP: u64 = 200 * 1024 * 1024;
const RUNS: usize = 3;

/// Counts bytes written.
struct Count(u64);
impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Best wall time of `RUNS` runs of `f`, and `f`'s last output size.
fn best(mut f: impl FnMut() -> u64) -> (f64, u64) {
    let mut t = f64::MAX;
    let mut size = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        size = f();
        t = t.min(start.elapsed().as_secs_f64());
    }
    (t, size)
}

/// Run a shell pipeline, counting its stdout bytes.
fn shell(cmd: &str) -> u64 {
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning sh");
    let n = io::copy(child.stdout.as_mut().unwrap(), &mut Count(0)).expect("reading peer output");
    assert!(child.wait().unwrap().success(), "{cmd} failed");
    n
}

fn kiln_compress(corpus: &Path, c: Compression, level: i32) -> u64 {
    let input = BufReader::with_capacity(1 << 20, File::open(corpus).unwrap());
    compress_stream(input, Count(0), c, Some(level), 2)
        .unwrap()
        .0
}

fn report(what: &str, bytes: u64, (tk, sk): (f64, u64), peer: &str, (tp, sp): (f64, u64)) {
    let mb = |t: f64| bytes as f64 / t / 1e6;
    println!("{what}");
    println!(
        "  kiln          {:8.2} s {:8.1} MB/s  {:>11} bytes",
        tk,
        mb(tk),
        sk
    );
    println!(
        "  {peer:<13} {:8.2} s {:8.1} MB/s  {:>11} bytes",
        tp,
        mb(tp),
        sp
    );
    println!(
        "  ratio         throughput kiln/peer = {:.2}×   size kiln/peer = {:.4}",
        tp / tk,
        sk as f64 / sp as f64
    );
}

fn main() {
    for tool in ["pigz", "zstd", "tar", "sha256sum"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "the bench needs {tool} installed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.tar");
    let src = std::env::var("KILN_BENCH_CORPUS_DIR").unwrap_or_else(|_| "/usr/lib".into());
    // `tar` exits non-zero when `head` closes the pipe; the cut is what we want.
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!(
                "tar -cf - {src} 2>/dev/null | head -c {CAP} > {}",
                corpus.display()
            ),
        ])
        .status();
    let bytes = std::fs::metadata(&corpus).unwrap().len();
    println!("corpus: tar of {src}, {bytes} bytes\n");
    let c = corpus.display();

    let kg = best(|| kiln_compress(&corpus, Compression::Gzip, 6));
    let pg = best(|| shell(&format!("pigz -p2 -6 -c {c}")));
    report("gzip level 6, 2 threads", bytes, kg, "pigz -p2 -6", pg);

    let kz = best(|| kiln_compress(&corpus, Compression::Zstd, 3));
    let pz = best(|| shell(&format!("zstd -q -T2 -3 -c {c}")));
    report("zstd level 3, 2 workers", bytes, kz, "zstd -T2 -3", pz);

    let dir = PathBuf::from(
        std::env::var("KILN_BENCH_LAYER_DIR").unwrap_or_else(|_| "/usr/lib/gcc".into()),
    );
    let tar_bytes = shell(&format!("tar -cf - -C {} .", dir.display()));
    let blob = tmp.path().join("layer.tar.gz");
    let opts = LayerOptions {
        compression: Compression::Gzip,
        level: Some(6),
        threads: 2,
        source_date_epoch: None,
    };
    let kl = best(|| {
        let cs = ChangeSet::from_dir(&dir).unwrap();
        let (_, info) = write_layer(&cs, &opts, File::create(&blob).unwrap()).unwrap();
        info.size
    });
    let mut digest_line = String::new();
    let pl = best(|| {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("tar -cf - -C {} . | pigz -p2 -6 | sha256sum", dir.display()),
            ])
            .output()
            .unwrap();
        digest_line = String::from_utf8_lossy(&out.stdout).into_owned();
        0
    });
    let peer_size = shell(&format!("tar -cf - -C {} . | pigz -p2 -6", dir.display()));
    report(
        &format!("layer path on {} (tar ≈ {tar_bytes} bytes)", dir.display()),
        tar_bytes,
        kl,
        "tar|pigz|sha",
        (pl.0, peer_size),
    );
    println!("  peer digest line: {}", digest_line.trim());
}
