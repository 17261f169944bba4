//! The module map in src/lib.rs is the architecture: data flows one way, so each module may use only
//! the modules listed above it. This test reads the map and every source file and fails on an
//! import that points down the pipeline (e.g. `store` using `build`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Module names in the order of the map's table rows (`//! | \`name\` | job |`).
fn map_order() -> Vec<String> {
    let lib = fs::read_to_string(manifest_dir().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::name` a line refers to, including `crate::{a, b::c}` groups.
fn crate_refs(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn imports_only_point_up_the_module_map() {
    let order = map_order();
    assert!(
        order.len() >= 10,
        "module map not found in src/lib.rs: {order:?}"
    );
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let lib = fs::read_to_string(manifest_dir().join("src/lib.rs")).unwrap();
    for m in &order {
        assert!(
            lib.contains(&format!("pub mod {m};")),
            "{m} is in the map but not declared"
        );
    }
    let mut violations = Vec::new();
    for m in &order {
        let dir = manifest_dir().join("src").join(m);
        let mut files = Vec::new();
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(manifest_dir().join("src").join(format!("{m}.rs")));
        }
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for r in crate_refs(line) {
                    if let Some(&used) = rank.get(r.as_str()) {
                        if used > rank[m.as_str()] {
                            violations.push(format!(
                                "{}:{}: `{m}` uses `{r}`, which comes after it",
                                f.display(),
                                n + 1
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the pipeline:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_imports() {
    assert_eq!(
        crate_refs("use crate::{digest::Digest, store};"),
        ["digest", "store"]
    );
    assert_eq!(
        crate_refs("let x = crate::engine::run(a, crate::exec::Cancel::new());"),
        ["engine", "exec"]
    );
}

/// The engine's wings in the order of its own table (`src/engine/mod.rs`, `//! | \`name\``).
fn wing_order() -> Vec<String> {
    let m = fs::read_to_string(manifest_dir().join("src/engine/mod.rs")).unwrap();
    m.lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| l.split('`').next())
        .map(|w| w.trim_end_matches('/').trim_end_matches(".rs").to_string())
        .filter(|w| w != "file or folder")
        .collect()
}

/// The first path segment after a prefix: `name`, or each name of a `{a, b::c}` group.
fn names_after(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    match rest.strip_prefix('{') {
        Some(group) => group[..group.find('}').unwrap_or(group.len())]
            .split(',')
            .map(ident)
            .filter(|n| !n.is_empty())
            .collect(),
        None => vec![ident(rest)],
    }
}

/// The engine wings a line names: `crate::engine::X`, and `super::X` (in `src/engine/<file>.rs`
/// or a wing's `mod.rs`) or `super::super::X` (in a wing's other files) — the engine's children.
fn wing_refs(line: &str, nested: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::engine::") {
        rest = &rest[i + "crate::engine::".len()..];
        out.extend(names_after(rest));
    }
    let prefix = if nested { "super::super::" } else { "super::" };
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        let before = &rest[..i];
        rest = &rest[i + prefix.len()..];
        // `super::super::` seen from a non-nested file is no wing of this engine.
        if !before.ends_with("super::") && !rest.starts_with("super::") {
            out.extend(names_after(rest));
        }
    }
    out
}

#[test]
fn engine_wings_only_use_the_wings_above_them() {
    let order = wing_order();
    assert!(order.len() >= 8, "the engine's wing table: {order:?}");
    let rank = |w: &str| order.iter().position(|o| o == w);
    let root = manifest_dir().join("src/engine");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut violations = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        let comps: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        let Some(own) = rank(&comps[0]) else {
            continue; // mod.rs: the table and the re-exports
        };
        let nested = comps.len() > 1 && comps[1] != "mod";
        let text = fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for w in wing_refs(line, nested) {
                if rank(&w).is_some_and(|r| r > own) {
                    violations.push(format!(
                        "{}:{}: `{}` uses `{w}`, listed after it",
                        f.display(),
                        n + 1,
                        comps[0]
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "engine imports against its wing order:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_wing_checker_resolves_super_from_the_files_place() {
    assert_eq!(wing_refs("use super::stage::Engine;", false), ["stage"]);
    // Inside a wing, `super::` is the wing itself.
    assert_eq!(wing_refs("use super::rules;", true), Vec::<String>::new());
    assert_eq!(
        wing_refs("use super::super::{inputs::Inputs, stage::lock};", true),
        ["inputs", "stage"]
    );
    assert_eq!(wing_refs("crate::engine::build(x)", false), ["build"]);
}
