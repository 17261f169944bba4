//! The pigz-style encoder: bytes independent of the thread count, accepted by gzip and pigz.

use std::io::Write;
use std::process::{Command, Stdio};

use kiln::layer::ParallelGzip;

/// ~1.3 MiB of mixed text-like and noisy data, not a multiple of the block size.
fn sample() -> Vec<u8> {
    let mut data = Vec::new();
    let mut x: u32 = 12345;
    while data.len() < 1_300_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        if (x >> 20) % 3 == 0 {
            data.push((x >> 8) as u8);
        } else {
            data.extend_from_slice(format!("line {} of the layer sample\n", x % 977).as_bytes());
        }
    }
    data
}

fn gz(data: &[u8], threads: usize) -> Vec<u8> {
    let mut g = ParallelGzip::new(Vec::new(), 6, threads);
    for chunk in data.chunks(10_007) {
        g.write_all(chunk).unwrap();
    }
    g.finish().unwrap()
}

fn tool(cmd: &str, args: &[&str], input: &[u8]) -> (bool, Vec<u8>) {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} must be installed for this test: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    (out.status.success(), out.stdout)
}

#[test]
fn output_is_identical_for_1_2_and_4_threads() {
    let data = sample();
    let one = gz(&data, 1);
    assert_eq!(one, gz(&data, 2), "1 vs 2 threads");
    assert_eq!(one, gz(&data, 4), "1 vs 4 threads");
}

#[test]
fn gzip_and_pigz_accept_and_round_trip() {
    let data = sample();
    let z = gz(&data, 2);
    assert!(tool("gzip", &["-t"], &z).0, "gzip -t rejected the stream");
    assert!(tool("pigz", &["-t"], &z).0, "pigz -t rejected the stream");
    let (ok, back) = tool("gzip", &["-d", "-c"], &z);
    assert!(ok);
    assert_eq!(back, data, "gzip -d round trip");
    let (ok, back) = tool("pigz", &["-d", "-c"], &z);
    assert!(ok);
    assert_eq!(back, data, "pigz -d round trip");
}

#[test]
fn empty_input_is_a_valid_gzip_member() {
    let z = gz(b"", 2);
    let (ok, back) = tool("gzip", &["-d", "-c"], &z);
    assert!(ok && back.is_empty());
    // Fixed header: no name, mtime 0, OS 255.
    assert_eq!(&z[..4], &[0x1f, 0x8b, 8, 0]);
    assert_eq!(&z[4..8], &[0, 0, 0, 0]);
    assert_eq!(z[9], 255);
}

#[test]
fn compresses_about_as_well_as_gzip() {
    let data = sample();
    let ours = gz(&data, 2).len();
    let (ok, theirs) = tool("gzip", &["-6", "-c", "-n"], &data);
    assert!(ok);
    // Blocks restart the Huffman state and add a 5-byte sync marker per 128 KiB; allow 2 %.
    assert!(
        (ours as f64) < theirs.len() as f64 * 1.02,
        "ours {ours} vs gzip -6 {}",
        theirs.len()
    );
}

/// Encoders running at once share one worker pool: each still gets exactly its own bytes, in
/// order, at its own level (blocks of different streams and levels interleave in the queue).
#[test]
fn concurrent_encoders_sharing_the_pool_each_get_their_own_stream() {
    let base = sample();
    let streams: Vec<(Vec<u8>, u32)> = (0..4u8)
        .map(|i| {
            let data: Vec<u8> = base.iter().map(|b| b.wrapping_add(i)).collect();
            (data, [1, 6, 9, 6][i as usize])
        })
        .collect();
    let alone: Vec<Vec<u8>> = streams
        .iter()
        .map(|(d, level)| {
            let mut g = ParallelGzip::new(Vec::new(), *level, 2);
            g.write_all(d).unwrap();
            g.finish().unwrap()
        })
        .collect();
    let together: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = streams
            .iter()
            .map(|(d, level)| {
                s.spawn(move || {
                    let mut g = ParallelGzip::new(Vec::new(), *level, 2);
                    for chunk in d.chunks(4099) {
                        g.write_all(chunk).unwrap();
                    }
                    g.finish().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "stream {i} differs when encoded alongside others");
        let (ok, back) = tool("gzip", &["-d", "-c"], t);
        assert!(ok && back == streams[i].0, "stream {i} does not round-trip");
    }
}

/// A block's bytes do not depend on what the pool's workers compressed before (a reused,
/// reset deflate state once made the last blocks of a layer encode differently now and then).
#[test]
fn the_bytes_do_not_depend_on_what_the_workers_did_before() {
    let data = sample();
    let first = gz(&data, 2);
    for round in 0..30u8 {
        // Dirty the workers with other streams at other levels, at the same time.
        std::thread::scope(|s| {
            for level in [1u32, 9] {
                s.spawn(move || {
                    let other: Vec<u8> = sample().iter().map(|b| b ^ round).collect();
                    let mut g = ParallelGzip::new(Vec::new(), level, 2);
                    g.write_all(&other).unwrap();
                    g.finish().unwrap()
                });
            }
            assert_eq!(gz(&data, 1 + (round as usize % 3)), first, "round {round}");
        });
    }
}
