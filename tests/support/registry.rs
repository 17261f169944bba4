//! Test harness for the registry client: real CNCF distribution registries (Debian's
//! `docker-registry`) on free loopback ports — plain HTTP, TLS with a test CA, TLS requiring client
//! certificates, htpasswd basic auth, token auth with an in-process issuer signing real RS256 JWTs,
//! pull-through mirrors — plus a fault-injecting TCP proxy. Every process started is killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

pub const USER: &str = "kiln-user";
pub const PASSWORD: &str = "correct-horse-battery";
pub const IDENTITY_TOKEN: &str = "refresh-token-1234567890";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fail loudly when a tool the tests need is missing (never skip silently).
pub fn require_tools() {
    for t in ["docker-registry", "openssl", "htpasswd", "skopeo"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            .unwrap_or(false);
        assert!(found, "registry tests need `{t}` on PATH (apt-get install docker-registry openssl apache2-utils skopeo)");
    }
}

/// A test PKI made with the openssl CLI: a CA, server and client certificates signed by it, and a
/// self-signed token-signing certificate.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let p = Pki {
            dir: dir.to_path_buf(),
        };
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=kiln test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p.path("ca.key"))
            .arg("-out")
            .arg(p.path("ca.crt")));
        p.issue(
            "server",
            "serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        );
        p.issue("client", "clientAuth", "subjectAltName=DNS:kiln-client");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=kiln token issuer"])
            .args(["-addext", "keyUsage=critical,digitalSignature"])
            .arg("-keyout")
            .arg(p.path("token.key"))
            .arg("-out")
            .arg(p.path("token.crt")));
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(p.path("token.key"))
            .arg("-out")
            .arg(p.path("token.pk8")));
        run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(p.path("token.crt"))
            .arg("-out")
            .arg(p.path("token.der")));
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn issue(&self, name: &str, usage: &str, san: &str) {
        let ext = self.path(&format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!("basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n{san}\n"),
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(self.path(&format!("{name}.key")))
            .arg("-out")
            .arg(self.path(&format!("{name}.csr"))));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(self.path(&format!("{name}.csr")))
            .arg("-CA")
            .arg(self.path("ca.crt"))
            .arg("-CAkey")
            .arg(self.path("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(self.path(&format!("{name}.crt"))));
    }
}

/// How to start a registry.
#[derive(Default)]
pub struct Options {
    pub tls: bool,
    pub client_certs: bool,
    pub htpasswd: bool,
    pub token: bool,
    /// `proxy.remoteurl`: act as a pull-through mirror of this URL.
    pub mirror_of: Option<String>,
}

/// A running `docker-registry serve` (killed on drop).
pub struct Registry {
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub pki: Option<Pki>,
    pub issuer: Option<TokenIssuer>,
}

impl Registry {
    pub fn plain() -> Registry {
        Registry::start(Options::default())
    }

    pub fn start(opts: Options) -> Registry {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let pki = (opts.tls || opts.token).then(|| Pki::new(&dir.path().join("pki")));
        let mut yml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: kiln-test-secret\n",
            dir.path().join("data").display()
        );
        if opts.tls {
            let pki = pki.as_ref().unwrap();
            yml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                pki.path("server.crt").display(),
                pki.path("server.key").display()
            );
            if opts.client_certs {
                yml += &format!("    clientcas:\n      - {}\n", pki.path("ca.crt").display());
            }
        }
        let mut issuer = None;
        if opts.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("running htpasswd");
            assert!(out.status.success());
            let hp = dir.path().join("htpasswd");
            std::fs::write(&hp, &out.stdout).unwrap();
            yml += &format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                hp.display()
            );
        } else if opts.token {
            let pki = pki.as_ref().unwrap();
            let iss = TokenIssuer::start(pki);
            yml += &format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: kiln-test-registry\n    \
                 issuer: kiln-test-issuer\n    rootcertbundle: {}\n",
                iss.addr,
                pki.path("token.crt").display()
            );
            issuer = Some(iss);
        }
        if let Some(remote) = &opts.mirror_of {
            yml += &format!("proxy:\n  remoteurl: {remote}\n");
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, yml).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut r = Registry {
            addr,
            dir,
            child: Some(child),
            pki,
            issuer,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("docker-registry exited ({st}):\n{}", self.log());
            }
            if TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {}:\n{}",
            self.addr,
            self.log()
        );
    }

    /// The registry's own log (access log lines included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The file holding a blob's bytes in the registry's filesystem storage.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `[registry."addr"]` for a kiln.toml: http for plain registries, the test CA for TLS ones.
    pub fn config_section(&self) -> String {
        match &self.pki {
            Some(p) if p.path("server.crt").exists() && self.is_tls() => format!(
                "[registry.\"{}\"]\nca = [\"{}\"]\n",
                self.addr,
                p.path("ca.crt").display()
            ),
            _ => format!("[registry.\"{}\"]\nhttp = true\n", self.addr),
        }
    }

    pub fn is_tls(&self) -> bool {
        std::fs::read_to_string(self.dir.path().join("config.yml"))
            .map(|s| s.contains("  tls:"))
            .unwrap_or(false)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A token request seen: whether the caller authenticated, and the scopes asked for.
pub type TokenRequest = (bool, Vec<String>);

/// A token service in the harness: answers distribution's token protocol with RS256 JWTs whose
/// `x5c` header carries the signing certificate (the registry checks it against rootcertbundle).
/// Anonymous callers get pull access only; `USER`/`PASSWORD` or the refresh token get everything.
pub struct TokenIssuer {
    pub addr: String,
    /// Every scope asked for, with whether the caller authenticated, in order.
    pub requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
}

impl TokenIssuer {
    pub fn start(pki: &Pki) -> TokenIssuer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let key = std::fs::read(pki.path("token.pk8")).unwrap();
        let cert = std::fs::read(pki.path("token.der")).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, st) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&key).expect("token key");
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(c) = conn {
                    let _ = serve_token(c, &key, &cert, &reqs);
                }
            }
        });
        TokenIssuer {
            addr,
            requests,
            stop,
        }
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<(String, Vec<String>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let request_line = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        headers.push(line.trim_end().to_string());
    }
    Ok((request_line, headers))
}

fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn query_params(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), pct_decode(v)))
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(
    c: TcpStream,
    key: &aws_lc_rs::signature::RsaKeyPair,
    cert: &[u8],
    log: &Mutex<Vec<TokenRequest>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let (line, headers) = read_head(&mut r)?;
    let target = line.split(' ').nth(1).unwrap_or("");
    let mut params = query_params(target.split_once('?').map(|x| x.1).unwrap_or(""));
    if let Some(len) = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        params.extend(query_params(&String::from_utf8_lossy(&body)));
    }
    let basic_ok = header(&headers, "authorization")
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .map(|v| v == format!("{USER}:{PASSWORD}").as_bytes());
    let refresh_ok = params
        .iter()
        .find(|(k, _)| k == "refresh_token")
        .map(|(_, v)| v == IDENTITY_TOKEN);
    let mut w = c;
    if basic_ok == Some(false) || refresh_ok == Some(false) {
        return w.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let authed = basic_ok == Some(true) || refresh_ok == Some(true);
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    log.lock().unwrap().push((authed, scopes.clone()));
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (ty, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| authed || *a == "pull")
                .collect();
            Some(serde_json::json!({"type": ty, "name": name, "actions": actions}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header_json = serde_json::json!({
        "typ": "JWT", "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(cert)],
    });
    let claims = serde_json::json!({
        "iss": "kiln-test-issuer", "sub": if authed { USER } else { "" },
        "aud": "kiln-test-registry", "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", scopes.len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header_json.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &rng,
        signing_input.as_bytes(),
        &mut sig,
    )
    .expect("signing JWT");
    let token = format!("{signing_input}.{}", b64url(&sig));
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// What the proxy does to requests whose `METHOD path` contains `matching`.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer 503 without forwarding.
    Status503 { matching: String },
    /// Forward the head and this many body bytes, then drop both connections.
    DropAfter { matching: String, bytes: usize },
    /// Answer with this status without forwarding (e.g. 405 to refuse chunked uploads).
    Refuse { matching: String, status: u16 },
}

/// A TCP proxy in front of a registry that injects faults, one request per connection.
pub struct FaultProxy {
    pub addr: String,
    /// Faults to apply, each to `count` matching requests.
    pub faults: Arc<Mutex<Vec<(Fault, usize)>>>,
    /// `METHOD path` of every request seen, and whether a fault hit it.
    pub seen: Arc<Mutex<Vec<(String, bool)>>>,
    /// Upload requests (with a body) being served now, and the most ever at once.
    pub in_flight: Arc<(AtomicUsize, AtomicUsize)>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(target: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults: Arc<Mutex<Vec<(Fault, usize)>>> = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, st, target) = (
            faults.clone(),
            seen.clone(),
            stop.clone(),
            target.to_string(),
        );
        let in_flight = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let fl = in_flight.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(c) = conn else { continue };
                let (f, s, target, fl) = (f.clone(), s.clone(), target.clone(), fl.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(c, &target, &f, &s, &fl);
                });
            }
        });
        FaultProxy {
            addr,
            faults,
            seen,
            in_flight,
            stop,
        }
    }

    pub fn inject(&self, fault: Fault, count: usize) {
        self.faults.lock().unwrap().push((fault, count));
    }

    pub fn hits(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, hit)| *hit)
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn proxy_one(
    client: TcpStream,
    target: &str,
    faults: &Mutex<Vec<(Fault, usize)>>,
    seen: &Mutex<Vec<(String, bool)>>,
    in_flight: &(AtomicUsize, AtomicUsize),
) -> std::io::Result<()> {
    let mut r = BufReader::new(client.try_clone()?);
    let (line, headers) = read_head(&mut r)?;
    // Only requests with a body (uploads) are counted: they are the long ones, and counting them
    // from the first byte to the upstream's close cannot overlap a client's next request.
    let has_body = header(&headers, "content-length").is_some_and(|v| v != "0");
    struct Done<'a>(Option<&'a AtomicUsize>);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            if let Some(c) = self.0 {
                c.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    let _done = if has_body {
        let now = in_flight.0.fetch_add(1, Ordering::SeqCst) + 1;
        in_flight.1.fetch_max(now, Ordering::SeqCst);
        Done(Some(&in_flight.0))
    } else {
        Done(None)
    };
    let mut parts = line.split(' ');
    let what = format!(
        "{} {}",
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("")
    );
    let fault = {
        let mut fs = faults.lock().unwrap();
        let hit = fs.iter_mut().find(|(f, n)| {
            let m = match f {
                Fault::Status503 { matching }
                | Fault::DropAfter { matching, .. }
                | Fault::Refuse { matching, .. } => matching,
            };
            *n > 0 && what.contains(m.as_str())
        });
        hit.map(|(f, n)| {
            *n -= 1;
            f.clone()
        })
    };
    seen.lock().unwrap().push((what, fault.is_some()));
    let mut w = client.try_clone()?;
    let status = match &fault {
        Some(Fault::Status503 { .. }) => Some(503),
        Some(Fault::Refuse { status, .. }) => Some(*status),
        _ => None,
    };
    if let Some(st) = status {
        // Read the request body first, as a registry would, so the client sees the answer.
        let len: u64 = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        std::io::copy(&mut (&mut r).take(len), &mut std::io::sink())?;
        write!(
            w,
            "HTTP/1.1 {st} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let _ = w.shutdown(Shutdown::Both);
        return Ok(());
    }
    // One request per connection: ask the registry to close after answering, then pipe.
    let mut up = TcpStream::connect(target)?;
    let mut head = format!("{line}\r\n");
    for h in &headers {
        if !h.to_ascii_lowercase().starts_with("connection:") {
            head += &format!("{h}\r\n");
        }
    }
    head += "Connection: close\r\n\r\n";
    up.write_all(head.as_bytes())?;
    let len: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit = match &fault {
        Some(Fault::DropAfter { bytes, .. }) => Some(*bytes),
        _ => None,
    };
    let mut body = r.take(len as u64);
    let mut buf = vec![0; 64 * 1024];
    let mut sent = 0;
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let n = match limit {
            Some(l) if sent + n >= l => {
                up.write_all(&buf[..l - sent])?;
                let _ = up.shutdown(Shutdown::Both);
                let _ = w.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => n,
        };
        up.write_all(&buf[..n])?;
        sent += n;
    }
    let mut down = up.try_clone()?;
    std::io::copy(&mut down, &mut w)?;
    let _ = w.shutdown(Shutdown::Both);
    Ok(())
}

/// The busybox OCI layout from testdata/busybox/make-image.sh, made once per test binary.
pub fn busybox_layout() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        super::sweep_dead_test_dirs("kiln-registry-busybox-");
        let dir =
            std::env::temp_dir().join(format!("kiln-registry-busybox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/busybox/make-image.sh");
        let script = if script.exists() {
            script
        } else {
            PathBuf::from("/work/main/testdata/busybox/make-image.sh")
        };
        run(Command::new("bash").arg(&script).arg(&dir));
        dir
    })
    .clone()
}

/// A fresh store under a temp dir holding the busybox image tagged `busybox:latest`.
pub fn store_with_busybox() -> (
    tempfile::TempDir,
    kiln::store::Store,
    kiln::image::Descriptor,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = kiln::store::Store::open(&dir.path().join("root")).unwrap();
    let desc = kiln::store::import_oci_layout(&store, &busybox_layout(), None).unwrap();
    store.tag("busybox:latest", &desc).unwrap();
    (dir, store, desc)
}

/// An image with one random (incompressible) "layer" of `size` bytes and the given platform.
pub fn random_image(
    store: &kiln::store::Store,
    size: usize,
    arch: &str,
) -> kiln::image::Descriptor {
    random_image_layers(store, &[size], arch)
}

/// An image with one random layer per entry of `sizes`.
pub fn random_image_layers(
    store: &kiln::store::Store,
    sizes: &[usize],
    arch: &str,
) -> kiln::image::Descriptor {
    use kiln::image::{canonical_json, Descriptor, Manifest};
    static SEED: AtomicUsize = AtomicUsize::new(1);
    let mut x: u64 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (SEED.fetch_add(1, Ordering::Relaxed) as u64) << 40
        | 1;
    let mut layers = Vec::new();
    for &size in sizes {
        let mut layer = vec![0u8; size];
        for b in layer.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let ld = store.put_bytes(&layer, None).unwrap();
        layers.push(Descriptor::new(
            kiln::image::MEDIA_OCI_LAYER_GZIP,
            ld,
            size as u64,
        ));
    }
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    let cb = canonical_json(&config).unwrap();
    let cd = store.put_bytes(&cb, None).unwrap();
    let m = Manifest::new(
        Descriptor::new(kiln::image::MEDIA_OCI_CONFIG, cd, cb.len() as u64),
        layers,
    );
    let (bytes, desc) = m.to_blob().unwrap();
    store.put_bytes(&bytes, Some(&desc.digest)).unwrap();
    desc
}

/// Run skopeo; returns (success, stdout, stderr).
pub fn skopeo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("running skopeo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Counter for unique repository names within one test binary.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A client for `cfg` text (kiln.toml) and credentials.
pub fn client(toml: &str, creds: kiln::registry::Credentials) -> kiln::registry::RegistryClient {
    let cfg = kiln::config::Config::from_toml_str(toml, "test.toml").expect("test config");
    let empty = std::env::temp_dir().join("kiln-test-no-docker-config");
    kiln::registry::RegistryClient::new(&cfg, creds)
        .unwrap()
        .with_docker_config(kiln::registry::DockerConfig::at(&empty))
        .with_retry(kiln::registry::RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
        })
}

/// Every cause of an error, joined (what `{:#}` prints in the CLI).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s += &format!(": {c}");
        src = c.source();
    }
    s
}
