//! The OCI distribution client: pull images into the store, push images from it. Per-host transport
//! (plain HTTP, TLS with extra CAs, client certificates, or unverified TLS) from the config file,
//! `WWW-Authenticate` challenges (bearer tokens cached by scope, basic auth), credentials (per build,
//! then the config, then `~/.docker/config.json` and `docker-credential-*` helpers), mirrors with
//! fallback to the origin, retries with backoff, a per-registry concurrency limit.
//!
//! The public API is synchronous (the build engine and the daemon's build threads are plain
//! threads); reqwest's blocking client runs the I/O.
//!
//! Must not: read plans or know how images are built, write anything to the store except verified
//! blobs and the pulled tag, or let a credential reach a log, an error, progress or Debug output.

mod auth;
mod creds;
mod error;
mod http;
mod pull;
mod push;
mod stream;
mod transport;

pub use creds::{
    login_store, parse_credential_flag, Credential, Credentials, DockerConfig, Purpose,
};
pub use error::RegistryError;
pub use pull::{fetch_blobs, fetch_manifest, pull, remember_source};
pub use push::{push, push_blob_early};
pub use stream::{upload_growing, Growing};
pub use transport::conventional_ca_bundles;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::config::{Config, Secret};
use crate::digest::Digest;

/// What a pull or push is doing, for progress display. Never carries credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The reference resolved to this manifest (or index) digest, from this endpoint.
    Resolved {
        reference: String,
        digest: Digest,
        endpoint: String,
    },
    /// A mirror failed and the next endpoint is tried.
    MirrorFailed {
        mirror: String,
        reason: String,
    },
    /// A pull resolved its image manifest and is about to fetch what the store lacks; `layers`
    /// are all the image's layers, in order (some may be in the store already).
    Fetching {
        manifest: Digest,
        config: Digest,
        layers: Vec<Digest>,
    },
    BlobStarted {
        digest: Digest,
        size: u64,
    },
    BlobBytes {
        digest: Digest,
        done: u64,
        total: u64,
    },
    BlobDone {
        digest: Digest,
        outcome: BlobOutcome,
    },
    /// A request failed transiently and is tried again after a pause.
    Retrying {
        host: String,
        attempt: u32,
        reason: String,
    },
    ManifestPushed {
        reference: String,
        digest: Digest,
    },
}

/// How a blob got where it needed to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Pull: already in the local store, not fetched.
    AlreadyLocal,
    Downloaded,
    /// Push: the registry already had it (HEAD).
    AlreadyRemote,
    /// Push: cross-repository mount from this repository.
    Mounted {
        from: String,
    },
    Uploaded,
}

/// Retry policy for transient failures (5xx, 429, dropped connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let d = self.base_delay.saturating_mul(1 << attempt.min(16));
        d.min(self.max_delay)
    }
}

/// Default transfers in flight per registry when the config does not say.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;

/// A registry client for one build (or one CLI command): config, credentials, caches of tokens,
/// connections and credential-helper answers. Cheap to share by reference between threads.
pub struct RegistryClient {
    pub(crate) cfg: Config,
    pub(crate) creds: Credentials,
    pub(crate) docker: DockerConfig,
    pub(crate) retry: RetryPolicy,
    pub(crate) hosts: Mutex<HashMap<String, Arc<transport::HostTransport>>>,
    pub(crate) auth: auth::AuthCache,
    limits: Mutex<HashMap<String, Arc<Limit>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("config", &self.cfg.origin)
            .field("creds", &self.creds)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client with `cfg`'s per-host settings and `creds` (most specific first). Docker's
    /// config is read from `$DOCKER_CONFIG` or `~/.docker` when a registry asks for credentials.
    pub fn new(cfg: &Config, creds: Credentials) -> Result<Self, RegistryError> {
        Ok(RegistryClient {
            cfg: cfg.clone(),
            creds,
            docker: DockerConfig::from_env(),
            retry: RetryPolicy::default(),
            hosts: Mutex::new(HashMap::new()),
            auth: auth::AuthCache::default(),
            limits: Mutex::new(HashMap::new()),
        })
    }

    /// Use this Docker config directory instead of `$DOCKER_CONFIG` / `~/.docker`.
    pub fn with_docker_config(mut self, docker: DockerConfig) -> Self {
        self.docker = docker;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Check that `host` accepts the credentials this client resolves for it (`kiln login`).
    pub fn check_login(&self, host: &str) -> Result<(), RegistryError> {
        let host = crate::reference::normalize_domain(host);
        let ctx = http::Ctx::new(host, host);
        http::login_check(self, &ctx)
    }

    /// The CA files trusted for `host` besides the system roots (conventional bundles, the
    /// config's `ca`, `tlsconfigdir` and per-host certs.d files), for `kiln info`.
    pub fn trusted_ca_files(&self, host: &str) -> Result<Vec<PathBuf>, RegistryError> {
        let host = crate::reference::normalize_domain(host);
        let ctx = http::Ctx::new(host, host);
        Ok(self.transport_raw(&ctx, host)?.ca_files.clone())
    }

    /// At most `max-concurrency` transfers to one registry at a time, across every operation
    /// sharing this client.
    pub(crate) fn acquire(&self, host: &str) -> LimitGuard {
        let limit = {
            let mut map = crate::sync::lock(&self.limits);
            map.entry(host.to_string())
                .or_insert_with(|| {
                    let n = self
                        .cfg
                        .registry(host)
                        .max_concurrency
                        .unwrap_or(DEFAULT_MAX_CONCURRENCY);
                    Arc::new(Limit {
                        free: Mutex::new(n),
                        cv: Condvar::new(),
                    })
                })
                .clone()
        };
        let mut free = crate::sync::lock(&limit.free);
        while *free == 0 {
            free = crate::sync::wait(&limit.cv, free);
        }
        *free -= 1;
        drop(free);
        LimitGuard { limit }
    }

    pub(crate) fn max_concurrency(&self, host: &str) -> usize {
        self.cfg
            .registry(host)
            .max_concurrency
            .unwrap_or(DEFAULT_MAX_CONCURRENCY)
    }
}

/// A unit of parallel work: one item, with a way to report progress.
pub(crate) type Work<'a, T> =
    dyn Fn(&T, &dyn Fn(Progress)) -> Result<(), RegistryError> + Sync + 'a;

/// Run `work` over `items` on up to `workers` threads, forwarding their progress to
/// `on_progress` on this thread; the first error stops the others taking new items.
pub(crate) fn run_parallel<T: Sync>(
    items: &[T],
    workers: usize,
    on_progress: &mut dyn FnMut(Progress),
    work: &Work<'_, T>,
) -> Result<(), RegistryError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<Progress>();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.clamp(1, items.len().max(1)))
            .map(|_| {
                let tx = tx.clone();
                let (next, failed) = (&next, &failed);
                s.spawn(move || -> Result<(), RegistryError> {
                    let note = |p: Progress| {
                        let _ = tx.send(p);
                    };
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(());
                        };
                        if let Err(e) = work(item, &note) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for p in rx {
            on_progress(p);
        }
        let mut first = None;
        for h in handles {
            match h.join() {
                Ok(Err(e)) if first.is_none() => first = Some(e),
                Ok(_) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        first.map_or(Ok(()), Err)
    })
}

/// Which repositories of which registries a blob was pulled from, so a push to the same registry
/// can mount it instead of uploading: `<root>/registry-sources`, one `digest domain/path` a line,
/// appended (a small append is atomic), read back deduplicated.
pub(crate) fn record_sources(store: &crate::store::Store, repo: &str, digests: &[Digest]) {
    use std::io::Write;
    let mut text = String::new();
    for d in digests {
        text.push_str(&format!("{d} {repo}\n"));
    }
    let path = store.root().join("registry-sources");
    // Best effort: losing a hint costs an upload, never correctness.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

/// The repositories (`domain/path`) `digest` was pulled from, most recent first.
pub(crate) fn sources_of(store: &crate::store::Store, digest: &Digest) -> Vec<String> {
    use std::io::BufRead;
    let Ok(f) = std::fs::File::open(store.root().join("registry-sources")) else {
        return Vec::new();
    };
    let d = digest.to_string();
    let mut out: Vec<String> = Vec::new();
    // Streamed line by line: the file only grows, memory must not.
    for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
        if let Some((ld, repo)) = line.split_once(' ') {
            if ld == d {
                out.retain(|r| r != repo);
                out.insert(0, repo.to_string());
            }
        }
    }
    out
}

pub(crate) struct Limit {
    free: Mutex<usize>,
    cv: Condvar,
}

pub(crate) struct LimitGuard {
    limit: Arc<Limit>,
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        let mut free = crate::sync::lock(&self.limit.free);
        *free += 1;
        self.limit.cv.notify_one();
    }
}

/// Username + secret resolved for one host (never Debug-printed in clear).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Auth {
    pub username: String,
    pub password: Secret,
    /// An OAuth2 refresh token (`identitytoken`), used instead of the password for bearer tokens.
    pub identity_token: Option<Secret>,
}

#[cfg(test)]
mod tests;
