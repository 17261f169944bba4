//! The command line's output: every write to stdout returns its error (never a panic, as
//! `println!` does on a closed pipe), and a closed stdout ends kiln quietly with status 0 — the
//! reader of `kiln images | head -1` has all it wanted, as ripgrep treats it. Writes to stderr are
//! best effort: there is nowhere left to report their failure.
//!
//! Must not: hide any other failure — only `EPIPE` on stdout counts as the reader leaving.

use std::io::Write as _;

/// A write to the command's output failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum OutputError {
    #[error("writing to standard output")]
    Stdout(#[source] std::io::Error),
}

/// Stdout, locked; `writeln!(out, …)` on it returns [`OutputError`].
pub(super) struct Out(std::io::StdoutLock<'static>);

/// Stdout for `writeln!`/`write!` (see [`Out`]).
pub(super) fn stdout() -> Out {
    Out(std::io::stdout().lock())
}

impl Out {
    /// What `write!` calls: an inherent method, so the error is this module's, not a bare
    /// `io::Error` that could have come from anywhere.
    pub(super) fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> Result<(), OutputError> {
        self.0.write_fmt(args).map_err(OutputError::Stdout)
    }

    pub(super) fn flush(&mut self) -> Result<(), OutputError> {
        self.0.flush().map_err(OutputError::Stdout)
    }
}

/// `println!` that returns `Result<(), OutputError>` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!($crate::cli::out::stdout(), $($arg)*)
    };
}

/// `print!` that returns `Result<(), OutputError>` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        let mut o = $crate::cli::out::stdout();
        write!(o, $($arg)*).and_then(|()| o.flush())
    }};
}

/// `eprintln!` that never panics (a closed or full stderr loses the line).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that never panics.
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut e = std::io::stderr();
        let _ = write!(e, $($arg)*);
        let _ = e.flush();
    }};
}

pub(crate) use {err, errln, out, outln};

/// Whether `e` is stdout closed by its reader (`EPIPE`): the command ends quietly, status 0.
pub(super) fn reader_left(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<OutputError>(),
            Some(OutputError::Stdout(io)) if io.kind() == std::io::ErrorKind::BrokenPipe
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_stdout_counts_as_the_reader_leaving() {
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let closed = anyhow::Error::new(OutputError::Stdout(pipe())).context("listing images");
        assert!(reader_left(&closed));
        // EPIPE from anything else (a registry socket, a helper's stdin) is a real failure.
        let elsewhere = anyhow::Error::new(pipe()).context("writing to the helper");
        assert!(!reader_left(&elsewhere));
        let full = anyhow::Error::new(OutputError::Stdout(std::io::Error::from(
            std::io::ErrorKind::StorageFull,
        )));
        assert!(!reader_left(&full));
    }
}
