//! Registry errors, and what they are about: [`RegistryError`] (each variant names the host, the
//! user's reference and the failed action, and keeps its cause), [`Ctx`], and the classifiers
//! that turn a transport failure or an unexpected status into one. Every other file of the
//! registry client uses these; this file uses none of them (the module's one-way base).
//!
//! Must not: send requests or hold credentials.

use std::io::Read;

use reqwest::blocking::Response;

use crate::digest::Digest;
use crate::store::StoreError;

/// Why a registry operation failed. Every variant names the registry host and the reference.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: cannot reach registry {host}: {detail}")]
    Connect {
        host: String,
        reference: String,
        detail: String,
        /// The transport error; `detail` already spells out its chain, so it is not reported as
        /// `source` (that would print the chain twice).
        cause: reqwest::Error,
    },
    #[error("{reference}: TLS with registry {host} failed: {detail} (trust its CA with `ca` or `tlsconfigdir` in [registry.\"{host}\"], or set insecure = true)")]
    Tls {
        host: String,
        reference: String,
        detail: String,
        /// The transport error; `detail` already spells out its chain, so it is not reported as
        /// `source` (that would print the chain twice).
        cause: reqwest::Error,
    },
    #[error("{reference}: the registry {host} answered plain HTTP to a TLS connection: add it to insecure_registries (or set http = true in [registry.\"{host}\"])")]
    PlainHttp {
        host: String,
        reference: String,
        /// The transport error (rustls' `InvalidContentType`), not repeated in the message.
        cause: reqwest::Error,
    },
    #[error("{reference}: setting up TLS for registry {host}: {detail}")]
    TlsSetup {
        host: String,
        reference: String,
        detail: String,
    },
    #[error("{reference}: registry {host} refused the credentials{user} ({detail})")]
    Unauthorized {
        host: String,
        reference: String,
        /// ` for user "name"`, or empty when anonymous.
        user: String,
        detail: String,
    },
    #[error("{reference}: {what} not found on registry {host}")]
    NotFound {
        host: String,
        reference: String,
        what: String,
    },
    #[error("{reference}: registry {host} answered {action} with HTTP {status}: {message}")]
    Status {
        host: String,
        reference: String,
        action: String,
        status: u16,
        message: String,
    },
    #[error("{reference}: registry {host} sent {what} with digest {actual}, expected {expected}; nothing was stored")]
    DigestMismatch {
        host: String,
        reference: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{reference}: registry {host} sent {actual} bytes for {digest}, expected {expected}; nothing was stored")]
    SizeMismatch {
        host: String,
        reference: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{reference}: registry {host} sent an invalid {what}: {detail}")]
    BadResponse {
        host: String,
        reference: String,
        what: String,
        detail: String,
    },
    #[error("{reference}: registry {host} has no manifest for platform {platform} (available: {available})")]
    NoPlatform {
        host: String,
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{reference} ({host}): {action}")]
    Store {
        host: String,
        reference: String,
        action: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("credential helper docker-credential-{helper} for {host}: {detail}")]
    Helper {
        helper: String,
        host: String,
        detail: String,
    },
    #[error(transparent)]
    Io(#[from] crate::report::IoError),
    #[error("invalid registry credential {0}")]
    BadCredentialSpec(String),
}

/// What an operation is about, for errors: the registry host and the user's reference.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub host: String,
    pub reference: String,
}

impl Ctx {
    pub(crate) fn new(host: &str, reference: &str) -> Ctx {
        Ctx {
            host: host.to_string(),
            reference: reference.to_string(),
        }
    }
}

pub(crate) fn transport_error(ctx: &Ctx, host: &str, e: reqwest::Error) -> RegistryError {
    let detail = chain(&e);
    if is_plain_http_answer(&e) {
        RegistryError::PlainHttp {
            host: host.to_string(),
            reference: ctx.reference.clone(),
            cause: e,
        }
    } else if is_tls_error(&e) {
        RegistryError::Tls {
            host: host.to_string(),
            reference: ctx.reference.clone(),
            detail,
            cause: e,
        }
    } else {
        RegistryError::Connect {
            host: host.to_string(),
            reference: ctx.reference.clone(),
            detail,
            cause: e,
        }
    }
}

/// Bytes of an error body read, and characters of the registry's messages kept.
const MAX_ERROR_BODY: u64 = 64_000;
const MAX_ERROR_MESSAGE: usize = 1000;

/// The error for an unexpected status, with the registry's own error message when it sent one.
pub(crate) fn status_error(ctx: &Ctx, host: &str, action: &str, resp: Response) -> RegistryError {
    let status = resp.status().as_u16();
    // containerd reads at most 64000 bytes of an error body (remotes/errors, `NewUnexpectedStatusErr`);
    // a registry streaming more must not be buffered whole.
    let mut raw = Vec::new();
    let _ = resp.take(MAX_ERROR_BODY).read_to_end(&mut raw);
    let body = String::from_utf8_lossy(&raw);
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let message = match serde_json::from_str::<Errs>(&body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| format!("{} {}", e.code, e.message).trim().to_string())
            .collect::<Vec<_>>()
            .join("; ")
            .chars()
            .take(MAX_ERROR_MESSAGE)
            .collect(),
        _ => body
            .chars()
            .take(200)
            .collect::<String>()
            .trim()
            .to_string(),
    };
    RegistryError::Status {
        host: host.to_string(),
        reference: ctx.reference.clone(),
        action: action.to_string(),
        status,
        message,
    }
}

/// Whether a TLS handshake got a plain-HTTP answer (rustls: a record of an invalid content type).
pub(crate) fn is_plain_http_answer(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.to_string().contains("InvalidContentType") {
            return true;
        }
        src = s.source();
    }
    false
}

/// Whether a request error came from TLS (certificate, handshake) rather than the network.
pub(crate) fn is_tls_error(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        let msg = s.to_string();
        if msg.contains("certificate") || msg.contains("InvalidContentType") || msg.contains("tls")
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// An error's whole cause chain on one line (reqwest's top level says little).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::report::chain(e)
}
