//! Credentials: the per-build list, then kiln's config, then Docker's `config.json` (`auths`,
//! `credsStore`, `credHelpers` through `docker-credential-*`), and `kiln login`'s writer.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use base64::Engine as _;

use super::{Auth, RegistryError};
use crate::config::Secret;
use crate::reference::{normalize_domain, DEFAULT_DOMAIN};

/// The key Docker files Docker Hub credentials under (in `auths` and for helpers).
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Which operations a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Any,
    Pull,
    Push,
}

impl Purpose {
    /// `pull:HOST`, `push:HOST` or `HOST`: the one reading of the purpose prefix, for flags and
    /// the API's `[host, user, password]` triples alike.
    pub fn split_host(host: &str) -> (Purpose, &str) {
        if let Some(h) = host.strip_prefix("pull:") {
            (Purpose::Pull, h)
        } else if let Some(h) = host.strip_prefix("push:") {
            (Purpose::Push, h)
        } else {
            (Purpose::Any, host)
        }
    }
}

/// `--registry-credential [pull:|push:]HOST=USER:PASSWORD` → (`[pull:|push:]HOST`, USER, PASSWORD).
/// The error shows the host only, never the password.
pub fn parse_credential_flag(spec: &str) -> Result<(String, String, String), RegistryError> {
    let redacted = || match spec.split_once('=') {
        Some((h, _)) => RegistryError::BadCredentialSpec(format!(
            "{h}=<redacted> (expected [pull:|push:]HOST=USER:PASSWORD)"
        )),
        None => RegistryError::BadCredentialSpec(
            "<redacted> (expected [pull:|push:]HOST=USER:PASSWORD)".into(),
        ),
    };
    let (host, userpass) = spec.split_once('=').ok_or_else(redacted)?;
    let (user, pass) = userpass.split_once(':').ok_or_else(redacted)?;
    if Purpose::split_host(host).1.is_empty() || user.is_empty() {
        return Err(redacted());
    }
    Ok((host.to_string(), user.to_string(), pass.to_string()))
}

/// One per-build credential for `host` or `host/path-prefix`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub host: String,
    pub purpose: Purpose,
    pub username: String,
    pub secret: Secret,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("host", &self.host)
            .field("purpose", &self.purpose)
            .field("username", &"<redacted>")
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The per-build credentials, most specific first. `Debug` redacts users and secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    entries: Vec<Credential>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.entries).finish()
    }
}

impl Credentials {
    pub fn new() -> Credentials {
        Credentials::default()
    }

    /// A credential for pulls and pushes on `host` (or `host/path-prefix`).
    pub fn add(&mut self, host: &str, username: &str, secret: &str) -> &mut Self {
        self.add_for(Purpose::Any, host, username, secret)
    }

    pub fn add_for(
        &mut self,
        purpose: Purpose,
        host: &str,
        username: &str,
        secret: &str,
    ) -> &mut Self {
        let host = match host.split_once('/') {
            Some((h, rest)) => format!("{}/{}", normalize_domain(h), rest.trim_end_matches('/')),
            None => normalize_domain(host).to_string(),
        };
        self.entries.push(Credential {
            host,
            purpose,
            username: username.to_string(),
            secret: Secret::new(secret),
        });
        self
    }

    /// From the API's list of `(host, user, secret)`.
    pub fn from_list<'a>(list: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Self {
        let mut c = Credentials::new();
        for (h, u, s) in list {
            c.add(h, u, s);
        }
        c
    }

    /// Parse `--registry-credential [pull:|push:]HOST=USER:PASSWORD`. The error never echoes
    /// the password.
    pub fn add_flag(&mut self, spec: &str) -> Result<&mut Self, RegistryError> {
        let (host, user, pass) = parse_credential_flag(spec)?;
        self.add_spec(&host, &user, &pass)
    }

    /// One credential as the API carries it: `[pull:|push:]HOST`, user, password.
    pub fn add_spec(
        &mut self,
        host: &str,
        user: &str,
        pass: &str,
    ) -> Result<&mut Self, RegistryError> {
        let (purpose, bare) = Purpose::split_host(host.trim());
        if bare.is_empty() || user.is_empty() || pass.is_empty() {
            return Err(RegistryError::BadCredentialSpec(format!(
                "{host}: host, user and password must all be given"
            )));
        }
        Ok(self.add_for(purpose, bare, user, pass))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first entry for this host whose path prefix covers `path` and whose purpose fits.
    pub(crate) fn lookup(&self, host: &str, path: &str, purpose: Purpose) -> Option<Auth> {
        let host = normalize_domain(host);
        self.entries
            .iter()
            .filter(|c| c.purpose == Purpose::Any || c.purpose == purpose)
            .filter(|c| match c.host.split_once('/') {
                Some((h, prefix)) => {
                    h == host && (path == prefix || path.starts_with(&format!("{prefix}/")))
                }
                None => c.host == host,
            })
            // Most specific first: a longer prefix wins, then a purpose-specific entry, then order.
            .max_by_key(|c| (c.host.len(), c.purpose != Purpose::Any))
            .map(|c| Auth {
                username: c.username.clone(),
                password: c.secret.clone(),
                identity_token: None,
            })
    }
}

/// Docker's client configuration directory (`config.json`), read lazily, helpers' answers cached.
pub struct DockerConfig {
    dir: PathBuf,
    cache: Mutex<HashMap<String, Option<Auth>>>,
}

impl std::fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerConfig")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl DockerConfig {
    /// `$DOCKER_CONFIG`, else `~/.docker`.
    pub fn from_env() -> DockerConfig {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
                    .join(".docker")
            });
        DockerConfig::at(&dir)
    }

    pub fn at(dir: &Path) -> DockerConfig {
        DockerConfig {
            dir: dir.to_path_buf(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    fn read(&self) -> Result<serde_json::Map<String, serde_json::Value>, RegistryError> {
        let p = self.path();
        match std::fs::read(&p) {
            Ok(b) => match serde_json::from_slice::<serde_json::Value>(&b) {
                Ok(serde_json::Value::Object(m)) => Ok(m),
                _ => Err(RegistryError::Io(crate::report::IoError {
                    action: "parsing (not a JSON object)",
                    path: p,
                    source: std::io::Error::from(std::io::ErrorKind::InvalidData),
                })),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(source) => Err(RegistryError::Io(crate::report::IoError {
                action: "reading",
                path: p,
                source,
            })),
        }
    }

    /// Credentials Docker would use for `host`, if any.
    pub(crate) fn lookup(&self, host: &str) -> Result<Option<Auth>, RegistryError> {
        let host = normalize_domain(host);
        if let Some(hit) = crate::sync::lock(&self.cache).get(host) {
            return Ok(hit.clone());
        }
        let found = self.lookup_uncached(host)?;
        crate::sync::lock(&self.cache).insert(host.to_string(), found.clone());
        Ok(found)
    }

    fn lookup_uncached(&self, host: &str) -> Result<Option<Auth>, RegistryError> {
        let cfg = self.read()?;
        let helper = cfg
            .get("credHelpers")
            .and_then(|h| h.as_object())
            .and_then(|h| {
                h.iter()
                    .find(|(k, _)| key_host(k) == host)
                    .and_then(|(_, v)| v.as_str())
            })
            .or_else(|| cfg.get("credsStore").and_then(|v| v.as_str()))
            .filter(|s| !s.is_empty());
        if let Some(helper) = helper {
            if let Some(a) = helper_get(helper, host)? {
                return Ok(Some(a));
            }
        }
        let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        for (k, v) in auths {
            if key_host(k) != host {
                continue;
            }
            let token = v
                .get("identitytoken")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .map(Secret::new);
            let (user, pass) = if let Some(enc) = v.get("auth").and_then(|a| a.as_str()) {
                let dec = base64::engine::general_purpose::STANDARD
                    .decode(enc.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                match dec.split_once(':') {
                    Some((u, p)) => (u.to_string(), p.to_string()),
                    None => continue,
                }
            } else {
                let s = |f: &str| v.get(f).and_then(|x| x.as_str()).unwrap_or("").to_string();
                (s("username"), s("password"))
            };
            if user.is_empty() && token.is_none() {
                continue;
            }
            return Ok(Some(Auth {
                username: user,
                password: Secret::new(pass),
                identity_token: token,
            }));
        }
        Ok(None)
    }
}

/// The registry host a config.json key names (`https://index.docker.io/v1/` → `docker.io`).
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    normalize_domain(k)
}

fn server_url(host: &str) -> String {
    if host == DEFAULT_DOMAIN {
        DOCKER_HUB_KEY.to_string()
    } else {
        host.to_string()
    }
}

fn run_helper(
    helper: &str,
    host: &str,
    verb: &str,
    input: &[u8],
) -> Result<(bool, String, String), RegistryError> {
    let prog = format!("docker-credential-{helper}");
    let err = |detail: String| RegistryError::Helper {
        helper: helper.to_string(),
        host: host.to_string(),
        detail,
    };
    let mut child = Command::new(&prog)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("running {prog} {verb}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| err(format!("writing to {prog}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for {prog}: {e}")))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn helper_get(helper: &str, host: &str) -> Result<Option<Auth>, RegistryError> {
    let (ok, stdout, stderr) = run_helper(helper, host, "get", server_url(host).as_bytes())?;
    if !ok {
        // The protocol's "not found" answer; anything else is a real failure.
        if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
            return Ok(None);
        }
        return Err(RegistryError::Helper {
            helper: helper.to_string(),
            host: host.to_string(),
            // Helper output may echo secrets on some failures: print only the first line, cut short.
            detail: format!(
                "get failed: {}",
                stderr
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(120)
                    .collect::<String>()
            ),
        });
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_str(&stdout).map_err(|e| RegistryError::Helper {
        helper: helper.to_string(),
        host: host.to_string(),
        detail: format!("get answered invalid JSON: {e}"),
    })?;
    // `<token>` as the user name marks the secret as an identity (refresh) token.
    Ok(Some(if a.username == "<token>" {
        Auth {
            username: String::new(),
            password: Secret::default(),
            identity_token: Some(Secret::new(a.secret)),
        }
    } else {
        Auth {
            username: a.username,
            password: Secret::new(a.secret),
            identity_token: None,
        }
    }))
}

/// Store credentials for `host` the way `docker login` does: through the configured helper when
/// there is one, else base64 `auth` in `config.json` (mode 0600). Returns where they went.
pub fn login_store(
    docker: &DockerConfig,
    host: &str,
    username: &str,
    password: &str,
) -> Result<String, RegistryError> {
    let host = normalize_domain(host);
    let mut cfg = docker.read()?;
    let helper = cfg
        .get("credHelpers")
        .and_then(|h| h.get(host).or_else(|| h.get(server_url(host).as_str())))
        .and_then(|v| v.as_str())
        .or_else(|| cfg.get("credsStore").and_then(|v| v.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(helper) = helper {
        let input = serde_json::json!({
            "ServerURL": server_url(host),
            "Username": username,
            "Secret": password,
        });
        let (ok, _, stderr) = run_helper(&helper, host, "store", input.to_string().as_bytes())?;
        if !ok {
            return Err(RegistryError::Helper {
                helper,
                host: host.to_string(),
                detail: format!("store failed: {}", stderr.lines().next().unwrap_or("")),
            });
        }
        return Ok(format!("docker-credential-{helper}"));
    }
    let auths = cfg
        .entry("auths")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !auths.is_object() {
        *auths = serde_json::Value::Object(Default::default());
    }
    if let Some(map) = auths.as_object_mut() {
        map.retain(|k, _| key_host(k) != host);
        let enc =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        map.insert(server_url(host), serde_json::json!({ "auth": enc }));
    }
    let bytes = serde_json::to_vec_pretty(&cfg).map_err(|e| {
        RegistryError::Io(crate::report::IoError {
            action: "encoding",
            path: docker.path(),
            source: e.into(),
        })
    })?;
    write_private(&docker.dir, &docker.path(), &bytes)?;
    crate::sync::lock(&docker.cache).remove(host);
    Ok(docker.path().display().to_string())
}

/// Replace `path` atomically with a 0600 file (the directory is created 0700).
fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |action: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| {
            RegistryError::Io(crate::report::IoError {
                action,
                path,
                source,
            })
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating", dir))?;
    // 0600 from the start: the file holds credentials.
    crate::atomic::atomic_write(path, bytes, 0o600, None).map_err(io("replacing", path))
}

impl super::RegistryClient {
    /// Credentials for `host`: per build, then kiln's config, then Docker's config.
    pub(crate) fn resolve_auth(
        &self,
        host: &str,
        path: &str,
        purpose: Purpose,
    ) -> Result<Option<Auth>, RegistryError> {
        if let Some(a) = self.creds.lookup(host, path, purpose) {
            return Ok(Some(a));
        }
        let rc = self.cfg.registry(host);
        if rc.username.is_some() || rc.identitytoken.is_some() {
            return Ok(Some(Auth {
                username: rc.username.unwrap_or_default(),
                password: rc.password.unwrap_or_default(),
                identity_token: rc.identitytoken,
            }));
        }
        self.docker.lookup(host)
    }
}
