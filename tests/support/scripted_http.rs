//! A scripted HTTP/1.1 server on 127.0.0.1 standing in for a hostile registry or token service:
//! a handler maps each request to whatever status, headers and body the test wants — including
//! header bytes a real server would never send and bodies that never end (counted, so a test
//! can tell how much the client read before it hung up). One connection per request.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Vec<u8>),
    /// `chunk` repeated up to `limit` bytes with no Content-Length (ends when the connection closes).
    Endless {
        chunk: Vec<u8>,
        limit: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Raw header lines' names and values (CR and LF in values are replaced by spaces).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Bytes(body.into()),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

pub struct Server {
    pub addr: String,
    handler: Arc<Mutex<Arc<Handler>>>,
    /// Body bytes the server managed to write for `Endless` bodies, summed over requests.
    pub endless_written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handler: Arc<Mutex<Arc<Handler>>> =
            Arc::new(Mutex::new(Arc::new(|_: &Request| Response::new(404, ""))));
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, w, st) = (handler.clone(), written.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(c) = conn else { continue };
                let handler = h.lock().unwrap().clone();
                let w = w.clone();
                std::thread::spawn(move || {
                    let _ = serve(c, &*handler, &w);
                });
            }
        });
        Server {
            addr,
            handler,
            endless_written: written,
            stop,
        }
    }

    /// Replace the handler (for the next connections).
    pub fn set(&self, h: impl Fn(&Request) -> Response + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(h);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(c: TcpStream, handler: &Handler, written: &AtomicU64) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let req = Request {
        method,
        path,
        headers,
    };
    let len: u64 = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::io::copy(&mut (&mut r).take(len), &mut std::io::sink())?;
    let resp = handler(&req);
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status).into_bytes();
    for (k, v) in &resp.headers {
        head.extend_from_slice(k.as_bytes());
        head.extend_from_slice(b": ");
        head.extend(
            v.iter()
                .map(|b| if matches!(b, b'\r' | b'\n') { b' ' } else { *b }),
        );
        head.extend_from_slice(b"\r\n");
    }
    let mut w = c;
    match resp.body {
        Body::Bytes(b) => {
            head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            w.write_all(&head)?;
            if req.method != "HEAD" {
                w.write_all(&b)?;
            }
        }
        Body::Endless { chunk, limit } => {
            head.extend_from_slice(b"\r\n");
            w.write_all(&head)?;
            let mut sent = 0u64;
            while sent < limit {
                w.write_all(&chunk)?;
                sent += chunk.len() as u64;
                written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
    }
    w.flush()
}

/// A kiln registry client for `server`: plain HTTP, no retries (a retry only repeats the script's
/// answer), no docker config.
pub fn kiln_client(
    server: &Server,
    creds: kiln::registry::Credentials,
) -> kiln::registry::RegistryClient {
    let toml = format!("[registry.\"{}\"]\nhttp = true\n", server.addr);
    let cfg = kiln::config::Config::from_toml_str(&toml, "scripted.toml").unwrap();
    let empty = std::env::temp_dir().join("kiln-test-no-docker-config");
    kiln::registry::RegistryClient::new(&cfg, creds)
        .unwrap()
        .with_docker_config(kiln::registry::DockerConfig::at(&empty))
        .with_retry(kiln::registry::RetryPolicy {
            attempts: 1,
            base_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(1),
        })
}
