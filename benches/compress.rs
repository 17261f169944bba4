use std::io::Write;
use std::time::Instant;
fn main() {
    let data = std::fs::read("/tmp/kb/corpus.tar").unwrap();
    for t in [2usize] {
        let t0 = Instant::now();
        let mut g = kiln::layer::gzip::ParallelGzip::new(Vec::new(), 6, t);
        g.write_all(&data).unwrap();
        let out = g.finish().unwrap();
        let dt = t0.elapsed().as_secs_f64();
        println!("threads {t}: {:.1} MB/s, size {}", data.len() as f64 / dt / 1e6, out.len());
    }
}
