//! One pass over the merged tree of a chain of committed snapshots (top-most first, overlayfs'
//! on-disk format: `context::layers` rules — the top-most entry wins, a whiteout hides lower ones,
//! an opaque directory ends the search below it), carrying each directory's contributing layers
//! down so that no path is looked up from the root again. Entries come from `readdir` (their
//! types from `d_type`); a stat happens only for a character device (whiteout?) and, with more
//! than one layer, for a directory's lower copies (and an xattr read when one exists: opaque?).
//!
//! Must not: follow a symlink, or write anything.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, FileType};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the visitor wants done with a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descend {
    Yes,
    No,
}

/// Visit every entry under the root of `layers` (top first): `visit(rel, type)`. Directories are
/// entered when the visitor says so; children are visited in name order.
pub fn walk(
    layers: &[PathBuf],
    visit: &mut dyn FnMut(&Path, FileType) -> Descend,
) -> io::Result<()> {
    let live: Vec<usize> = (0..layers.len()).collect();
    let mut stack = vec![(PathBuf::new(), live)];
    while let Some((rel, live)) = stack.pop() {
        let mut children = Vec::new();
        for (name, (top, ft)) in merged(layers, &rel, &live)? {
            let child = rel.join(&name);
            if visit(&child, ft) == Descend::Yes && ft.is_dir() {
                children.push((child, below(layers, &rel, &name, &live, top)));
            }
        }
        // Reversed, so the stack pops them in name order.
        stack.extend(children.into_iter().rev());
    }
    Ok(())
}

/// The merged listing of directory `rel`: name → (the layer providing it, its type).
fn merged(
    layers: &[PathBuf],
    rel: &Path,
    live: &[usize],
) -> io::Result<BTreeMap<OsString, (usize, FileType)>> {
    let mut out = BTreeMap::new();
    let mut hidden = std::collections::BTreeSet::new();
    for &i in live {
        let dir = layers[i].join(rel);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let name = e.file_name();
            if out.contains_key(&name) || hidden.contains(&name) {
                continue;
            }
            let ft = e.file_type()?;
            if ft.is_char_device() && e.metadata()?.rdev() == 0 {
                hidden.insert(name);
            } else {
                out.insert(name, (i, ft));
            }
        }
    }
    Ok(out)
}

/// The layers (top first) in which `rel/name` is a directory of the merged tree, starting at
/// `top` and stopping at an opaque directory or anything that is not a directory.
fn below(
    layers: &[PathBuf],
    rel: &Path,
    name: &OsString,
    live: &[usize],
    top: usize,
) -> Vec<usize> {
    if live.len() == 1 {
        return vec![top];
    }
    let start = live.iter().position(|&i| i == top).unwrap_or(0);
    let mut out = Vec::new();
    for &i in &live[start..] {
        let p = layers[i].join(rel).join(name);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                out.push(i);
                // Opacity matters only when a lower layer could still contribute.
                if i != *live.last().unwrap_or(&i) && crate::context::layers::is_opaque(&p) {
                    break;
                }
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    out
}
