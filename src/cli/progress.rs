//! Rendering build events: a live view when stderr is a terminal, plain lines otherwise, NDJSON with
//! `--progress json`. The renderer only reads events; it never changes what the build does.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::build::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    Auto,
    Plain,
    Tty,
    Json,
}

pub struct Renderer {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl Renderer {
    pub fn new(mode: ProgressMode) -> Renderer {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        Renderer { mode, bar: None }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    pub fn event(&mut self, e: &Event) {
        if self.mode == ProgressMode::Json {
            if let Ok(s) = serde_json::to_string(e) {
                let _ = writeln!(std::io::stdout(), "{s}");
            }
            return;
        }
        match e {
            Event::Planned { stages, steps } => {
                self.line(&format!("planned {stages} stage(s), {steps} step(s)"))
            }
            Event::Warning { message } => self.line(&format!("WARNING: {message}")),
            Event::StageStarted { stage, base } => self.line(&format!("[{stage}] FROM {base}")),
            Event::StepStarted {
                step,
                total,
                stage,
                instruction,
                ..
            } => {
                let first = instruction.lines().next().unwrap_or("");
                let text = format!("[{stage} {step}/{total}] {first}");
                if self.mode == ProgressMode::Tty {
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar.set_message(text);
                    self.bar = Some(bar);
                } else {
                    self.line(&text);
                }
            }
            Event::Sandbox {
                rung,
                snapshotter,
                warnings,
            } => {
                self.line(&format!("sandbox: {rung} rung, {snapshotter} snapshots"));
                for w in warnings {
                    self.line(&format!("WARNING: {w}"));
                }
            }
            Event::StepProgress { bytes, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_prefix(human(*bytes));
                }
            }
            Event::Log { line, .. } => self.line(&format!("  {line}")),
            Event::StepFinished {
                step,
                duration_ms,
                layer,
            } => {
                let secs = *duration_ms as f64 / 1000.0;
                let what = match layer {
                    Some(l) => format!(
                        "layer {} {} ({} uncompressed, {:.1} MB/s)",
                        l.digest.short(),
                        human(l.size),
                        human(l.uncompressed_size),
                        l.uncompressed_size as f64 / 1e6 / secs.max(0.001)
                    ),
                    None => "config".to_string(),
                };
                let text = format!("  #{step} done in {secs:.2}s: {what}");
                if let Some(bar) = self.bar.take() {
                    let msg = bar.message();
                    bar.finish_and_clear();
                    let _ = writeln!(std::io::stderr(), "{msg}");
                }
                self.line(&text);
            }
            Event::Exported { kind, dest } => self.line(&format!("exported {kind}: {dest}")),
            Event::Finished {
                manifest,
                tags,
                size,
                duration_ms,
                ..
            } => {
                self.line(&format!(
                    "built {manifest} ({}) in {:.2}s{}",
                    human(*size),
                    *duration_ms as f64 / 1000.0,
                    if tags.is_empty() {
                        String::new()
                    } else {
                        format!(", tagged {}", tags.join(", "))
                    }
                ));
            }
        }
    }
}
