//! Per-build event logs: every event appended as one NDJSON line to `<root>/daemon/builds/<id>.ndjson`
//! (so a log outlives the daemon), with a watch channel that wakes live readers. Readers replay from
//! the start or from an event offset, then follow until the build's last event.
//!
//! Must not: keep a build's events in memory (logs can be large) or write a secret: every line is
//! scrubbed of the build's passwords and inline secret values before it is written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use crate::api::{Event, REDACTED};

/// (bytes written, finished)
type Progress = (u64, bool);

pub(crate) struct EventLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
    tx: watch::Sender<Progress>,
    sensitive: Vec<String>,
}

impl EventLog {
    pub(crate) fn create(path: PathBuf, sensitive: Vec<String>) -> std::io::Result<EventLog> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let (tx, _) = watch::channel((0, false));
        Ok(EventLog {
            path,
            file: Mutex::new(Some(file)),
            tx,
            sensitive,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Append one event; a terminal event closes the log.
    pub(crate) fn append(&self, e: &Event) {
        let Ok(mut line) = serde_json::to_string(e) else {
            return;
        };
        for s in &self.sensitive {
            line = scrub(&line, s);
        }
        line.push('\n');
        let mut guard = crate::sync::lock(&self.file);
        let Some(f) = guard.as_mut() else {
            return;
        };
        if let Err(err) = f.write_all(line.as_bytes()) {
            // A line that did not fit (a full disk) ends the log where it was whole: readers
            // stop there instead of waiting for a terminal event that cannot come, and the
            // build's record says how it ended.
            super::log::error(
                "build.log_write_failed",
                &[
                    ("path", self.path.display().to_string().into()),
                    ("error", err.to_string().into()),
                ],
            );
            *guard = None;
            self.tx.send_modify(|(_, done)| *done = true);
            return;
        }
        let terminal = e.is_terminal();
        if terminal {
            let _ = f.sync_data();
            *guard = None;
        }
        self.tx.send_modify(|(n, done)| {
            *n += line.len() as u64;
            *done |= terminal;
        });
    }

    /// `text` with this build's secrets replaced.
    pub(crate) fn scrub_text(&self, text: &str) -> String {
        self.sensitive
            .iter()
            .fold(text.to_string(), |acc, s| acc.replace(s.as_str(), REDACTED))
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Progress> {
        self.tx.subscribe()
    }
}

/// Replace `secret` (raw and as JSON escapes it) in `line`.
fn scrub(line: &str, secret: &str) -> String {
    let mut out = line.replace(secret, REDACTED);
    if let Ok(quoted) = serde_json::to_string(secret) {
        let escaped = &quoted[1..quoted.len() - 1];
        if escaped != secret {
            out = out.replace(escaped, REDACTED);
        }
    }
    out
}

/// Append a terminal event to a log whose daemon died (no live writer).
/// A line the dead daemon left half-written is ended first, so the event stays a line of its own.
pub(crate) fn append_offline(path: &Path, e: &Event) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    let line = serde_json::to_string(e)?;
    let mut f = OpenOptions::new().read(true).append(true).open(path)?;
    let mut last = [0u8; 1];
    let whole = match f.seek(std::io::SeekFrom::End(-1)) {
        Ok(_) => f.read_exact(&mut last).map(|()| last[0] == b'\n')?,
        // Empty: nothing to end.
        Err(_) => true,
    };
    let sep = if whole { "" } else { "\n" };
    writeln!(f, "{sep}{line}")
}

/// Follow a log from event `offset`: yields whole NDJSON lines (with their newline). With no live
/// receiver the file is read to its end.
pub(crate) fn follow(
    path: PathBuf,
    offset: usize,
    rx: Option<watch::Receiver<Progress>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct St {
        path: PathBuf,
        file: Option<tokio::fs::File>,
        pos: u64,
        skip: usize,
        partial: Vec<u8>,
        rx: Option<watch::Receiver<Progress>>,
        ended: bool,
    }
    let st = St {
        path,
        file: None,
        pos: 0,
        skip: offset,
        partial: Vec::new(),
        rx,
        ended: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.ended {
                return None;
            }
            if st.file.is_none() {
                match tokio::fs::File::open(&st.path).await {
                    Ok(f) => st.file = Some(f),
                    Err(e) => {
                        st.ended = true;
                        return Some((Err(e), st));
                    }
                }
            }
            let (avail, done) = match &st.rx {
                Some(rx) => *rx.borrow(),
                None => {
                    let len = tokio::fs::metadata(&st.path)
                        .await
                        .map(|m| m.len())
                        .unwrap_or(0);
                    (len, true)
                }
            };
            if st.pos < avail {
                let want = (avail - st.pos).min(64 << 10) as usize;
                let mut buf = vec![0u8; want];
                let file = st.file.as_mut()?;
                if let Err(e) = file.seek(std::io::SeekFrom::Start(st.pos)).await {
                    st.ended = true;
                    return Some((Err(e), st));
                }
                let n = match file.read(&mut buf).await {
                    Ok(0) => {
                        st.ended = true;
                        continue;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        st.ended = true;
                        return Some((Err(e), st));
                    }
                };
                st.pos += n as u64;
                st.partial.extend_from_slice(&buf[..n]);
                let Some(last_nl) = st.partial.iter().rposition(|&b| b == b'\n') else {
                    continue;
                };
                let rest = st.partial.split_off(last_nl + 1);
                let whole = std::mem::replace(&mut st.partial, rest);
                let mut out = Vec::with_capacity(whole.len());
                for line in whole.split_inclusive(|&b| b == b'\n') {
                    if st.skip > 0 {
                        st.skip -= 1;
                    } else {
                        out.extend_from_slice(line);
                    }
                }
                if out.is_empty() {
                    continue;
                }
                return Some((Ok(Bytes::from(out)), st));
            }
            if done {
                return None;
            }
            let rx = st.rx.as_mut()?;
            if rx.changed().await.is_err() {
                // The writer is gone: read whatever the file holds and stop.
                st.rx = None;
            }
        }
    })
}

/// One NDJSON event line as plain log text (`GET /v1/builds/{id}/logs`); None for silent events.
pub(crate) fn plain_line(line: &[u8]) -> Option<String> {
    let e: Event = serde_json::from_slice(line).ok()?;
    Some(match e {
        Event::Queued { position, .. } => format!("queued (position {position})"),
        Event::Started { id } => format!("build {id} started"),
        Event::PushProgress { .. } => return None,
        Event::Error { kind, message, .. } => format!("ERROR ({kind}): {message}"),
        Event::Cancelled { reason } => format!("CANCELLED: {reason}"),
        Event::Succeeded { manifest, .. } => format!("succeeded: {manifest}"),
        Event::Build(b) => return b.plain_line(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_raw_and_escaped() {
        assert_eq!(scrub("pw=hunter2", "hunter2"), format!("pw={REDACTED}"));
        let line = serde_json::to_string("a\"b").unwrap();
        assert!(!scrub(&line, "a\"b").contains("a\\\"b"));
    }
}
