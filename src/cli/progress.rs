//! Rendering build events: a live view when stderr is a terminal, plain lines otherwise, NDJSON with
//! `--progress json`. The renderer only reads events; it never changes what the build does — it
//! keeps the first failure to write NDJSON to stdout for its caller to act on.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::out::{self, OutputError};
use crate::engine::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum ProgressMode {
    Auto,
    Plain,
    Tty,
    Json,
}

pub(super) struct Renderer {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    /// The first failed write to stdout (NDJSON mode); nothing more is written after it.
    failed: Option<OutputError>,
}

impl Renderer {
    pub(super) fn new(mode: ProgressMode) -> Renderer {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Renderer {
            mode,
            bar: None,
            failed: None,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    /// The stdout write that failed, if one did.
    pub(super) fn take_error(&mut self) -> Option<OutputError> {
        self.failed.take()
    }

    /// Render one event; false once NDJSON cannot be written to stdout (see [`Self::take_error`]).
    pub(super) fn event(&mut self, e: &Event) -> bool {
        if self.mode == ProgressMode::Json {
            if self.failed.is_some() {
                return false;
            }
            if let Ok(s) = serde_json::to_string(e) {
                if let Err(err) = writeln!(out::stdout(), "{s}") {
                    self.failed = Some(err);
                    return false;
                }
            }
            return true;
        }
        match e {
            Event::StepStarted { .. } if self.mode == ProgressMode::Tty => {
                let text = e.plain_line().unwrap_or_default();
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {prefix} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar.set_message(text);
                self.bar = Some(bar);
            }
            Event::StepProgress { bytes, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_prefix(format!("{bytes} bytes"));
                }
            }
            Event::StepFinished { .. } => {
                if let Some(bar) = self.bar.take() {
                    let msg = bar.message();
                    bar.finish_and_clear();
                    let _ = writeln!(std::io::stderr(), "{msg}");
                }
                if let Some(text) = e.plain_line() {
                    self.line(&text);
                }
            }
            _ => {
                if let Some(text) = e.plain_line() {
                    self.line(&text);
                }
            }
        }
        true
    }
}

/// An error as the CLI prints it: every cause once (`pushing REF` + `REF: cannot reach …` names REF
/// once), and for a failed push, where the built image is.
pub(super) fn error_line(e: &anyhow::Error) -> String {
    let mut s = crate::api::error_text(e.chain().map(|c| c.to_string()));
    let pushed = e.chain().find_map(|c| match c.downcast_ref() {
        Some(crate::engine::BuildError::Push { reference, .. }) => Some(reference.clone()),
        _ => None,
    });
    if let Some(r) = pushed {
        s.push_str(&format!(
            " (the image was built and is tagged {r} in the local store; `kiln push {r}` retries)"
        ));
    }
    s
}
