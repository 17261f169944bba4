//! Golden cases under testdata/dockerfile/<case>/: a Dockerfile plus `expected.txt` (the plan's
//! `render_text`, with optional `args` (K=V per line), `target` and `platform` files) or `error.txt`
//! (the expected error, file:line:col included). `KILN_BLESS=1` rewrites the expectations; every
//! blessed file must be reviewed against what BuildKit does.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use kiln::plan::{plan, NoBaseImages, PlanOptions, Platform};

fn run_case(dir: &Path) -> String {
    let text = fs::read_to_string(dir.join("Dockerfile")).unwrap_or_default();
    let mut opts = PlanOptions {
        platform: Platform::parse("linux/amd64").unwrap(),
        ..PlanOptions::default()
    };
    if let Ok(args) = fs::read_to_string(dir.join("args")) {
        let mut m = BTreeMap::new();
        for l in args.lines().filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            m.insert(k.to_string(), v.to_string());
        }
        opts.build_args = m;
    }
    if let Ok(t) = fs::read_to_string(dir.join("target")) {
        opts.target = Some(t.trim().to_string());
    }
    if let Ok(p) = fs::read_to_string(dir.join("platform")) {
        opts.platform = Platform::parse(p.trim()).unwrap();
    }
    match kiln::dockerfile::parse(&text, "Dockerfile") {
        Err(e) => format!("{e}\n"),
        Ok(df) => match plan(&df, &opts, &NoBaseImages) {
            Ok(p) => p.render_text(),
            Err(e) => format!("{e}\n"),
        },
    }
}

#[test]
fn golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dockerfile");
    let root = if root.exists() {
        root
    } else {
        Path::new("/work/main/testdata/dockerfile").to_path_buf()
    };
    let bless = std::env::var("KILN_BLESS").is_ok_and(|v| v == "1");
    let mut dirs: Vec<_> = fs::read_dir(&root)
        .expect("testdata/dockerfile missing")
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 80,
        "expected at least 80 golden cases, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    let (mut pos, mut neg) = (0, 0);
    for dir in dirs {
        let got = run_case(&dir);
        let err_file = dir.join("error.txt");
        let exp_file = dir.join("expected.txt");
        let is_err = err_file.exists();
        if is_err {
            neg += 1
        } else {
            pos += 1
        }
        let file = if is_err { err_file } else { exp_file };
        if bless {
            fs::write(&file, &got).unwrap();
            continue;
        }
        let want = fs::read_to_string(&file).unwrap_or_default();
        if want != got {
            failures.push(format!(
                "== {}\n--- want\n{want}--- got\n{got}",
                dir.display()
            ));
        }
    }
    assert!(
        neg >= 20,
        "expected at least 20 negative cases, found {neg}"
    );
    assert!(pos >= 60, "found {pos} positive cases");
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
