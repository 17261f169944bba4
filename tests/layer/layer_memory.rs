//! Memory stays bounded while writing a large layer.
//!
//! Method: the parent test re-runs this test binary as a child process (`rss_child`, selected by the
//! `KILN_LAYER_RSS_CHILD` environment variable) so that nothing else in the test harness touches the
//! measured process. The child generates a ~300 MiB file set (10 sparse files of 30 MiB with 1 MiB of
//! pseudo-random data every 4 MiB, so ~80 MiB hits the disk), reads its peak RSS (`VmHWM` in
//! /proc/self/status), writes the layer to `io::sink()`, reads `VmHWM` again and prints both. The
//! parent asserts the increase is under 64 MiB for gzip and for zstd.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::process::Command;

use kiln::layer::{write_layer, ChangeSet, Compression, LayerOptions};

const MIB: u64 = 1024 * 1024;

fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn rss_child() {
    let Ok(which) = std::env::var("KILN_LAYER_RSS_CHILD") else {
        return; // only meaningful when spawned by `peak_rss_increase_stays_under_64_mib`
    };
    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut chunk = vec![0u8; MIB as usize];
    for i in 0..10 {
        let mut f = File::create(dir.path().join(format!("f{i}"))).unwrap();
        f.set_len(30 * MIB).unwrap();
        for off in (0..30 * MIB).step_by(4 * MIB as usize) {
            for b in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&chunk).unwrap();
        }
    }
    drop(chunk);
    let compression = which.parse::<Compression>().unwrap();
    let cs = ChangeSet::from_dir(dir.path()).unwrap();
    let before = vm_hwm_kib();
    let opts = LayerOptions {
        compression,
        level: None,
        threads: 2,
        source_date_epoch: Some(0),
    };
    let (_, info) = write_layer(&cs, &opts, std::io::sink()).unwrap();
    let after = vm_hwm_kib();
    assert!(info.uncompressed_size > 300 * MIB);
    println!(
        "RSS_RESULT before_kib={before} after_kib={after} size={}",
        info.size
    );
}

#[test]
fn peak_rss_increase_stays_under_64_mib() {
    let exe = std::env::current_exe().unwrap();
    for which in ["gzip", "zstd"] {
        let out = Command::new(&exe)
            .args([
                "layer_memory::rss_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KILN_LAYER_RSS_CHILD", which)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split("RSS_RESULT ").nth(1))
            .unwrap_or_else(|| panic!("no RSS_RESULT in child output: {stdout}"));
        let field = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k))
                .unwrap()
                .parse()
                .unwrap()
        };
        let grew_kib = field("after_kib=").saturating_sub(field("before_kib="));
        eprintln!(
            "{which}: peak RSS grew by {} KiB while writing a 300 MiB layer",
            grew_kib
        );
        assert!(
            grew_kib < 64 * 1024,
            "{which}: peak RSS grew by {grew_kib} KiB"
        );
    }
}
