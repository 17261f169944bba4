//! Disk full: a build that ran out of space says so first, naming what it was writing, instead of
//! leaving "No space left on device (os error 28)" at the end of a long error chain.
//!
//! ENOSPC surfaces deep in many places — a blob ingest (`store::Ingest`, a layer or a pulled
//! blob), COPY staging and applying layers to a stage's root filesystem (`builds/`), a cache mount,
//! the metadata database — and already travels up as an `io::Error` inside each module's own error
//! (which names the action and the path). So nothing is re-plumbed: the finished error is
//! inspected once, here, and wrapped in [`BuildError::NoSpace`] when its chain holds ENOSPC/EDQUOT.
//! A RUN command that hit it inside the sandbox only prints it: the step's log lines say so, and
//! the caller passes that along.
//!
//! Must not: retry, free space, or change any other error.

use std::path::Path;

use super::BuildError;

/// The text programs print for ENOSPC (glibc, musl and busybox all use strerror's).
pub(super) const ENOSPC_TEXT: &str = "No space left on device";

/// `e`, wrapped in [`BuildError::NoSpace`] when it was caused by a full disk (or quota).
pub(super) fn explain(e: BuildError, root: &Path, run_saw_enospc: bool) -> BuildError {
    if matches!(e, BuildError::Cancelled | BuildError::NoSpace { .. }) {
        return e;
    }
    let chain: Vec<&(dyn std::error::Error + 'static)> =
        std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |c| {
            c.source()
        })
        .collect();
    let full = chain.iter().position(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                || io.kind() == std::io::ErrorKind::StorageFull
        })
    });
    // Otherwise only a program said so (a RUN command's output, in its log or its error).
    let printed = run_saw_enospc || chain.iter().any(|c| c.to_string().contains(ENOSPC_TEXT));
    let what = match full {
        // The error just above the io::Error says what it was doing and where.
        Some(i) => {
            let doing = chain[i.saturating_sub(1)].to_string();
            // The path is in the action (`copying into /…`) or in the io error itself (tempfile's
            // `… at path "/…"`).
            let place = format!("{doing} {}", chain[i]);
            format!("{} ({doing})", describe(&place, root))
        }
        None if printed && matches!(e, BuildError::Step { .. }) => {
            "the RUN step's files (its changes live in the build workspace under builds/)".into()
        }
        None => return e,
    };
    BuildError::NoSpace {
        what,
        root: root.to_path_buf(),
        source: Box::new(e),
    }
}

/// What a path in `doing` is, by where it lives in the store root.
fn describe(doing: &str, root: &Path) -> String {
    let paths: Vec<&str> = doing
        .split_whitespace()
        .map(|w| w.trim_matches(['"', '\'', ':', ',', '(', ')']))
        .filter(|w| w.starts_with('/'))
        .collect();
    let inside = paths.iter().find(|p| Path::new(p).starts_with(root));
    let path = inside.or(paths.first()).copied();
    let Some(rel) = path.and_then(|p| Path::new(p).strip_prefix(root).ok()) else {
        return match path {
            Some(p) => p.to_string(),
            None => "to disk".into(),
        };
    };
    let top = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    match top.as_str() {
        "tmp" => "a blob into the store (a layer, config or pulled blob being ingested)".into(),
        "content" => "the store's content (blobs, index.json)".into(),
        "builds" => {
            "the build workspace (a stage's root filesystem, staged COPY files or RUN changes)"
                .into()
        }
        "cache" => "a cache mount".into(),
        t if t.starts_with("kiln.db") => "the metadata database".into(),
        _ => rel.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn enospc_deep_in_a_chain_names_the_place_and_keeps_the_cause() {
        let root = Path::new("/var/lib/kiln");
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let store = StoreError::Io(crate::report::IoError {
            action: "copying into",
            path: root.join("tmp/session-1/ingest-2"),
            source: io,
        });
        let e = BuildError::Step {
            file: "Dockerfile".into(),
            line: 3,
            instruction: "RUN make".into(),
            message: "writing the layer".into(),
            source: Some(Box::new(store)),
        };
        let e = explain(e, root, false);
        let text = e.to_string();
        assert!(
            text.starts_with("no space left on device while writing a blob into the store"),
            "{text}"
        );
        assert!(
            text.contains("/var/lib/kiln/tmp/session-1/ingest-2"),
            "{text}"
        );
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(cause.contains("Dockerfile:3: RUN make"), "{cause}");
    }

    #[test]
    fn other_errors_pass_through_and_a_run_that_printed_enospc_is_named() {
        let root = Path::new("/r");
        let step = || BuildError::Step {
            file: "Dockerfile".into(),
            line: 2,
            instruction: "RUN dd".into(),
            message: "RUN failed".into(),
            source: None,
        };
        assert!(matches!(
            explain(step(), root, false),
            BuildError::Step { .. }
        ));
        let e = explain(step(), root, true).to_string();
        assert!(e.contains("while writing the RUN step's files"), "{e}");
        assert!(matches!(
            explain(BuildError::Cancelled, root, true),
            BuildError::Cancelled
        ));
    }
}
