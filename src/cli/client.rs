//! The CLI's side of the daemon: HTTP/1.1 over a Unix socket (one request per connection,
//! `Connection: close`, chunked or sized bodies), finding the daemon (`--host unix:///path`,
//! `KILN_HOST`, then the default socket), and the remote build: same flags and rendering as the
//! embedded engine, Ctrl-C cancels the build on the daemon.
//!
//! Must not: build anything itself, or print a credential.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::api::{self, BuildSpec, ErrorBody, Event};

use super::out::{errln, outln};
use super::progress::{ProgressMode, Renderer};
use super::BuildArgs;

/// A daemon reachable on a Unix socket.
#[derive(Debug, Clone)]
pub(super) struct Client {
    socket: PathBuf,
}

/// A response whose body is read as it arrives.
pub(super) struct Response {
    pub status: u16,
    pub body: Box<dyn BufRead>,
}

impl Response {
    pub(super) fn text(mut self) -> Result<String> {
        let mut s = String::new();
        self.body.read_to_string(&mut s)?;
        Ok(s)
    }

    /// The body as JSON when 2xx, else the daemon's error as an `anyhow` error.
    pub(super) fn json<T: serde::de::DeserializeOwned>(self) -> Result<T> {
        let status = self.status;
        let text = self.text()?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &text));
        }
        serde_json::from_str(&text).with_context(|| format!("daemon answered {status}: {text}"))
    }
}

fn api_error(status: u16, text: &str) -> anyhow::Error {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(e) => anyhow!(
            "daemon: {} ({}, HTTP {status})",
            e.error.message,
            e.error.kind
        ),
        Err(_) => anyhow!("daemon answered HTTP {status}: {text}"),
    }
}

impl Client {
    /// `unix:///path/to/kiln.sock` (or a bare path).
    pub(super) fn from_host(host: &str) -> Result<Client> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if path.is_empty() || host.contains("://") && !host.starts_with("unix://") {
            bail!("invalid --host {host:?}: expected unix:///path/to/kiln.sock");
        }
        Ok(Client {
            socket: PathBuf::from(path),
        })
    }

    /// The daemon to use: `--host`/`KILN_HOST` when given (it must answer), else the default socket
    /// when it answers, else none (embedded engine).
    pub(super) fn select(host: &Option<String>) -> Result<Option<Client>> {
        if let Some(h) = host {
            let c = Client::from_host(h)?;
            c.request("GET", "/v1/info", None, &[])
                .with_context(|| format!("reaching the kiln daemon at {h}"))?;
            return Ok(Some(c));
        }
        let c = Client {
            socket: crate::api::default_socket(),
        };
        Ok(c.socket
            .exists()
            .then_some(c)
            .filter(|c| c.request("GET", "/v1/info", None, &[]).is_ok()))
    }

    fn connect(&self) -> Result<UnixStream> {
        let s = UnixStream::connect(&self.socket)
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        Ok(s)
    }

    /// One request with a body from memory.
    pub(super) fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Response> {
        self.send(method, path, content_type, &[], body.len() as u64, body)
    }

    /// One request with a streamed body of `len` bytes and extra headers.
    pub(super) fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, String)],
        len: u64,
        mut body: impl Read,
    ) -> Result<Response> {
        let mut s = self.connect()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\nContent-Length: {len}\r\n"
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        std::io::copy(&mut body, &mut s).context("sending the request body")?;
        read_response(s)
    }
}

fn read_response(s: UnixStream) -> Result<Response> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line from the daemon: {line:?}"))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<u64>().ok();
            }
        }
    }
    let body: Box<dyn BufRead> = if chunked {
        Box::new(BufReader::new(Chunked {
            inner: r,
            left: 0,
            done: false,
        }))
    } else if let Some(n) = length {
        Box::new(BufReader::new(r.take(n)))
    } else {
        Box::new(r)
    };
    Ok(Response { status, body })
}

/// HTTP/1.1 chunked transfer decoding.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.done = true;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Run a build on the daemon: submit (a path, or a tar when the daemon cannot see the context),
/// render its events, cancel it on Ctrl-C.
pub(super) fn remote_build(client: &Client, args: &BuildArgs) -> Result<i32> {
    let spec = super::spec::from_flags(args, super::spec::Reader::Daemon)?;
    let body = serde_json::to_vec(&spec)?;
    let resp = client.request("POST", "/v1/builds", Some("application/json"), &body)?;
    let status = resp.status;
    let text = resp.text()?;
    let accepted: api::Accepted =
        if status == 403 && text.contains(api::kind::CONTEXT_OUTSIDE_ROOTS) {
            send_tar(client, &spec, &args.df.context)?
        } else if (200..300).contains(&status) {
            serde_json::from_str(&text)?
        } else {
            return Err(api_error(status, &text));
        };
    let id = accepted.id;
    {
        let (c, id) = (client.clone(), id.clone());
        let _ = ctrlc::set_handler(move || {
            let _ = c.request("POST", &format!("/v1/builds/{id}/cancel"), None, &[]);
        });
    }
    if args.progress != ProgressMode::Json {
        errln!("build {id} on the daemon");
    }
    follow(client, &id, args.progress)
}

fn send_tar(client: &Client, spec: &BuildSpec, context: &Path) -> Result<api::Accepted> {
    let tmp = tempfile::NamedTempFile::new()?;
    {
        let mut b = tar::Builder::new(tmp.reopen()?);
        b.follow_symlinks(false);
        b.append_dir_all(".", context)
            .with_context(|| format!("packing context {}", context.display()))?;
        b.finish()?;
    }
    let mut spec = spec.clone();
    spec.context = None;
    let len = tmp.as_file().metadata()?.len();
    client
        .send(
            "POST",
            "/v1/builds",
            Some("application/x-tar"),
            &[("X-Kiln-Build", serde_json::to_string(&spec)?)],
            len,
            tmp.reopen()?,
        )?
        .json()
}

/// Render a build's events until its end; the exit code says how it ended.
pub(super) fn follow(client: &Client, id: &str, mode: ProgressMode) -> Result<i32> {
    let mut renderer = Renderer::new(mode);
    let resp = client.request("GET", &format!("/v1/builds/{id}/events"), None, &[])?;
    if resp.status != 200 {
        let status = resp.status;
        return Err(api_error(status, &resp.text()?));
    }
    for line in resp.body.lines() {
        let line = line?;
        let Ok(e) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        if mode == ProgressMode::Json {
            outln!("{line}")?;
        } else if let Some(be) = e.to_build_event() {
            renderer.event(&be);
        }
        match e {
            Event::Succeeded { manifest, index } => {
                if mode != ProgressMode::Json {
                    // As the embedded engine prints: what the tags name.
                    outln!("{}", index.as_ref().unwrap_or(&manifest))?;
                }
                return Ok(0);
            }
            Event::Error { kind, message, .. } => bail!("{message} ({kind})"),
            Event::Cancelled { reason } => bail!("build {id} cancelled: {reason}"),
            _ => {}
        }
    }
    bail!("the daemon closed the event stream of build {id} before it ended")
}
