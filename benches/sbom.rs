//! `cargo bench --bench sbom`: kiln's native SBOM scan (`attest::sbom::scan`) over a chain of
//! snapshot directories. Layers: `KILN_BENCH_SBOM_LAYERS=top:…:bottom` (a built image's committed
//! snapshots, e.g. `<root>/snapshots/<id>` of each layer), else a synthetic three-layer tree of
//! 40 000 files with 1 000 dpkg packages, 300 Python dist-infos and 500 npm packages. Best of 3
//! runs, inputs in the page cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// Three layers: a base with dpkg and many files, Python packages, npm packages.
fn synthetic(dir: &Path) -> Vec<PathBuf> {
    let (base, py, npm) = (dir.join("l0"), dir.join("l1"), dir.join("l2"));
    let mut status = String::new();
    for i in 0..1000 {
        status.push_str(&format!(
            "Package: pkg{i}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.{i}-1\nDescription: package {i}\n long text\n\n"
        ));
    }
    write(&base, "var/lib/dpkg/status", &status);
    write(&base, "etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    for d in 0..2000 {
        for f in 0..15 {
            write(&base, &format!("usr/share/d{}/s{d}/f{f}", d % 50), "x");
        }
    }
    for i in 0..300 {
        let rel = format!("usr/local/lib/python3.11/dist-packages/p{i}-1.0.dist-info");
        write(
            &py,
            &format!("{rel}/METADATA"),
            &format!("Metadata-Version: 2.1\nName: p{i}\nVersion: 1.0\n\nbody\n"),
        );
        for f in 0..20 {
            write(
                &py,
                &format!("usr/local/lib/python3.11/dist-packages/p{i}/m{f}.py"),
                "pass\n",
            );
        }
    }
    for i in 0..500 {
        write(
            &npm,
            &format!("app/node_modules/n{i}/package.json"),
            &format!("{{\"name\":\"n{i}\",\"version\":\"1.0.{i}\"}}"),
        );
        write(&npm, &format!("app/node_modules/n{i}/index.js"), "");
    }
    vec![npm, py, base]
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let layers: Vec<PathBuf> = match std::env::var("KILN_BENCH_SBOM_LAYERS") {
        Ok(v) => v.split(':').map(PathBuf::from).collect(),
        Err(_) => synthetic(tmp.path()),
    };
    let mut best = f64::MAX;
    let mut scan = None;
    for _ in 0..3 {
        let t = Instant::now();
        let s = kiln::attest::sbom::scan(&layers, "bench").unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        scan = Some(s);
    }
    let s = scan.unwrap();
    println!(
        "sbom scan: {} entries, {} packages, best of 3: {:.1} ms",
        s.entries,
        s.packages.len(),
        best * 1000.0
    );
}
