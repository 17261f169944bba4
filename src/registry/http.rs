//! One request to a registry, done right: the host's transport (pinged once, which also learns
//! its auth challenge and, for insecure hosts, whether it speaks TLS), the Authorization header
//! for the scopes, a fresh challenge answered once on 401, and retries with backoff on 5xx, 429
//! and dropped connections.

use std::sync::Arc;

use reqwest::blocking::{Body, Response};
use reqwest::Method;

use super::auth::{self, parse_challenge, Challenge};
use super::transport::{self, chain, is_plain_http_answer, is_tls_error, HostTransport};
use super::{Auth, Progress, Purpose, RegistryClient, RegistryError};

/// What an operation is about, for errors: the registry host and the user's reference.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub host: String,
    pub reference: String,
}

impl Ctx {
    pub fn new(host: &str, reference: &str) -> Ctx {
        Ctx {
            host: host.to_string(),
            reference: reference.to_string(),
        }
    }
}

/// A request to send (and maybe re-send): the body is made anew for every attempt.
pub(crate) struct Req<'a> {
    pub method: Method,
    pub url: String,
    /// The host the URL points to (a mirror's, or the registry's).
    pub host: &'a str,
    /// Repository path, for credential lookup.
    pub path: &'a str,
    pub scopes: Vec<String>,
    pub purpose: Purpose,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<&'a (dyn Fn() -> Result<Body, RegistryError> + Sync)>,
    /// Whether transient failures are retried here (uploads retry whole sessions instead).
    pub retry: bool,
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

/// The error for an unexpected status, with the registry's own error message when it sent one.
pub(crate) fn status_error(ctx: &Ctx, host: &str, action: &str, resp: Response) -> RegistryError {
    let status = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
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
            .join("; "),
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

impl RegistryClient {
    /// The transport for `host` without pinging (token services, realms).
    pub(crate) fn transport_raw(
        &self,
        ctx: &Ctx,
        host: &str,
    ) -> Result<Arc<HostTransport>, RegistryError> {
        let mut map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(host) {
            return Ok(t.clone());
        }
        let t = Arc::new(transport::build(&self.cfg, host).map_err(|detail| {
            RegistryError::TlsSetup {
                host: host.to_string(),
                reference: ctx.reference.clone(),
                detail,
            }
        })?);
        map.insert(host.to_string(), t.clone());
        Ok(t)
    }

    /// The transport for a registry host, pinged (`GET /v2/`) on first use.
    pub(crate) fn transport(
        &self,
        ctx: &Ctx,
        host: &str,
    ) -> Result<Arc<HostTransport>, RegistryError> {
        let t = self.transport_raw(ctx, host)?;
        let known = t.http || t.scheme.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if !known {
            self.ping(ctx, host, &t)?;
        }
        Ok(t)
    }

    fn ping(&self, ctx: &Ctx, host: &str, t: &HostTransport) -> Result<(), RegistryError> {
        let schemes: &[&'static str] = if t.insecure || t.loopback {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last: Option<RegistryError> = None;
        for scheme in schemes {
            // A loopback host falls back to plain HTTP only when it answered TLS in plain HTTP;
            // a certificate problem stays an error (as it would for any other host).
            if *scheme == "http"
                && !t.insecure
                && !matches!(last, Some(RegistryError::PlainHttp { .. }))
            {
                break;
            }
            let mut attempt = 0;
            loop {
                match t.client.get(format!("{scheme}://{host}/v2/")).send() {
                    Ok(resp) => {
                        let st = resp.status().as_u16();
                        if st >= 500 && attempt + 1 < self.retry.attempts {
                            std::thread::sleep(self.retry.delay(attempt));
                            attempt += 1;
                            continue;
                        }
                        if st == 401 {
                            if let Some(ch) = www_authenticate(&resp) {
                                self.auth.set_challenge(host, ch);
                            }
                        }
                        *t.scheme.lock().unwrap_or_else(|e| e.into_inner()) = Some(scheme);
                        return Ok(());
                    }
                    Err(e) => {
                        let transient = !is_tls_error(&e) && !e.is_builder();
                        if transient && attempt + 1 < self.retry.attempts && !t.insecure {
                            std::thread::sleep(self.retry.delay(attempt));
                            attempt += 1;
                            continue;
                        }
                        last = Some(transport_error(ctx, host, e));
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::TlsSetup {
            host: host.to_string(),
            reference: ctx.reference.clone(),
            detail: "no scheme to try".into(),
        }))
    }

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

    /// `scheme://host` for a registry host (after its ping).
    pub(crate) fn base(&self, ctx: &Ctx, host: &str) -> Result<String, RegistryError> {
        let t = self.transport(ctx, host)?;
        Ok(format!("{}://{host}", t.scheme()))
    }

    pub(crate) fn send(
        &self,
        ctx: &Ctx,
        req: &Req,
        note: &dyn Fn(Progress),
    ) -> Result<Response, RegistryError> {
        let t = self.transport(ctx, req.host)?;
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            let authz =
                auth::authorization(self, ctx, req.host, req.path, &req.scopes, req.purpose)?;
            let mut rb = t.client.request(req.method.clone(), &req.url);
            for (k, v) in &req.headers {
                rb = rb.header(*k, v);
            }
            let sent_basic = authz.as_deref().is_some_and(|a| a.starts_with("Basic "));
            if let Some(a) = authz {
                rb = rb.header("Authorization", a);
            }
            if let Some(body) = req.body {
                rb = rb.body(body()?);
            }
            let retryable = req.retry && attempt + 1 < self.retry.attempts;
            match rb.send() {
                Err(e) => {
                    if retryable && !is_tls_error(&e) && !e.is_builder() {
                        note(Progress::Retrying {
                            host: req.host.to_string(),
                            attempt: attempt + 1,
                            reason: chain(&e),
                        });
                        std::thread::sleep(self.retry.delay(attempt));
                        attempt += 1;
                        continue;
                    }
                    return Err(transport_error(ctx, req.host, e));
                }
                Ok(resp) => {
                    let st = resp.status().as_u16();
                    if st == 401 && !reauthed {
                        if let Some(ch) = www_authenticate(&resp) {
                            self.auth.forget_token(req.host, &req.scopes);
                            self.auth.set_challenge(req.host, ch.clone());
                            // A basic challenge answered with credentials already is final.
                            if !(ch == Challenge::Basic && sent_basic) {
                                reauthed = true;
                                continue;
                            }
                        }
                    }
                    if (st >= 500 || st == 429) && retryable {
                        note(Progress::Retrying {
                            host: req.host.to_string(),
                            attempt: attempt + 1,
                            reason: format!("HTTP {st}"),
                        });
                        std::thread::sleep(self.retry.delay(attempt));
                        attempt += 1;
                        continue;
                    }
                    return Ok(resp);
                }
            }
        }
    }

    /// Map a 401/403 to the credentials error, anything else unexpected to a status error.
    pub(crate) fn refused(
        &self,
        ctx: &Ctx,
        host: &str,
        path: &str,
        purpose: Purpose,
        action: &str,
        resp: Response,
    ) -> RegistryError {
        let st = resp.status().as_u16();
        if st == 401 || st == 403 {
            let auth = self.resolve_auth(host, path, purpose).ok().flatten();
            return RegistryError::Unauthorized {
                host: host.to_string(),
                reference: ctx.reference.clone(),
                user: auth::user_note(&auth),
                detail: format!("HTTP {st} on {action}"),
            };
        }
        status_error(ctx, host, action, resp)
    }
}

fn www_authenticate(resp: &Response) -> Option<Challenge> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        // Prefer bearer when a registry offers both.
        .max_by_key(|c| matches!(c, Challenge::Bearer { .. }))
}

/// `kiln login`: the host must accept this client's credentials for it.
pub(crate) fn login_check(client: &RegistryClient, ctx: &Ctx) -> Result<(), RegistryError> {
    let host = ctx.host.as_str();
    client.transport(ctx, host)?;
    let auth = client.resolve_auth(host, "", Purpose::Any)?;
    if auth.is_none() {
        return Err(RegistryError::Unauthorized {
            host: host.to_string(),
            reference: ctx.reference.clone(),
            user: String::new(),
            detail: "no credentials given".into(),
        });
    }
    // GET /v2/ answers 401 with the challenge; `send` answers it with the credentials (a token
    // service refusing them fails there), so a success here means the registry accepted them.
    let url = format!("{}/v2/", client.base(ctx, host)?);
    let req = Req {
        method: Method::GET,
        url,
        host,
        path: "",
        scopes: Vec::new(),
        purpose: Purpose::Any,
        headers: Vec::new(),
        body: None,
        retry: true,
    };
    let resp = client.send(ctx, &req, &|_| {})?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(client.refused(ctx, host, "", Purpose::Any, "GET /v2/", resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real TLS handshake against a server that speaks plain HTTP: the error says so.
    #[test]
    fn tls_to_a_plain_http_server_says_plain_http() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let host = addr.to_string();
        let t = transport::build(&crate::config::Config::default(), &host).unwrap();
        let e = t
            .client
            .get(format!("https://{host}/v2/"))
            .send()
            .unwrap_err();
        let msg = transport_error(&Ctx::new(&host, "r/x:1"), &host, e).to_string();
        assert!(
            msg.contains("answered plain HTTP") && msg.contains("insecure_registries"),
            "{msg}"
        );
        assert!(!msg.contains("InvalidContentType"), "{msg}");
    }
}
