//! How kiln's errors read: one line from an error and its causes, the way every layer of kiln
//! shows one (the CLI's `error:` line, the daemon's records and events, fsck findings, registry
//! and cache warnings), and the one shape of a failed filesystem action ([`IoError`]) that every
//! module's error enum wraps.
//!
//! Must not: decide what is an error or which kind (that is each module's `thiserror` enum and
//! `api::kinds`), or print anything.

use std::path::{Path, PathBuf};

/// A failed filesystem action: what kiln was doing, to which path, and the kernel's answer
/// (kept as the source, so `ENOSPC` and friends stay visible to whoever matches on them).
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct IoError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// The error for `action` on `path`, for `map_err`.
    pub fn at(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IoError {
        let path = path.to_path_buf();
        move |source| IoError {
            action,
            path,
            source,
        }
    }
}

/// `outer: cause: cause` from an error's source chain (see [`error_text`]).
pub fn chain(e: &dyn std::error::Error) -> String {
    error_text(std::iter::successors(Some(e), |c| c.source()).map(|c| c.to_string()))
}

/// An error's causes on one line, each once: `outer: cause: cause`, where a cause already said
/// is dropped and a cause that repeats the last word of what precedes it drops it ("pushing REF"
/// + "REF: cannot reach …" names REF once).
pub fn error_text(causes: impl IntoIterator<Item = String>) -> String {
    let mut s = String::new();
    for t in causes {
        if s.contains(&t) {
            continue;
        }
        if s.is_empty() {
            s = t;
            continue;
        }
        let last = s.rsplit(' ').next().unwrap_or("").to_string();
        let t = t
            .strip_prefix(&format!("{last}: "))
            .filter(|_| !last.is_empty())
            .unwrap_or(&t);
        s.push_str(": ");
        s.push_str(t);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_once_and_a_repeated_name_once() {
        let e = E(
            "pushing r/x:1",
            Some(Box::new(E(
                "r/x:1: cannot reach r",
                Some(Box::new(E("cannot reach r", None))),
            ))),
        );
        assert_eq!(chain(&e), "pushing r/x:1: cannot reach r");
    }
}
