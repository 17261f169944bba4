//! One request to a registry, done right: the host's transport (pinged once, which also learns
//! its auth challenge and, for insecure hosts, whether it speaks TLS), the Authorization header
//! for the scopes, a fresh challenge answered once on 401, refused basic credentials asked again
//! twice (a registry reloading its password file refuses good ones for a moment), and retries
//! with backoff on 5xx, 429 and dropped connections.

use std::sync::Arc;

use reqwest::blocking::{Body, Response};
use reqwest::Method;

use super::auth::{self, parse_challenge, Challenge};
use super::error::{chain, is_tls_error, transport_error};
pub(crate) use super::error::{status_error, Ctx};
use super::transport::HostTransport;
use super::{Progress, Purpose, RegistryClient, RegistryError};

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

impl RegistryClient {
    /// The transport for a registry host, pinged (`GET /v2/`) on first use.
    pub(crate) fn transport(
        &self,
        ctx: &Ctx,
        host: &str,
    ) -> Result<Arc<HostTransport>, RegistryError> {
        let t = self.transport_raw(ctx, host)?;
        let known = t.http || crate::sync::lock(&t.scheme).is_some();
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
                        *crate::sync::lock(&t.scheme) = Some(scheme);
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
        let mut refusals = 0;
        loop {
            let authz =
                auth::authorization(self, ctx, req.host, req.path, &req.scopes, req.purpose)?;
            let mut rb = t.client.request(req.method.clone(), &req.url);
            for (k, v) in &req.headers {
                rb = rb.header(*k, v);
            }
            let sent_basic = authz.as_deref().is_some_and(|a| a.starts_with("Basic "));
            if let Some(a) = &authz {
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
                    if st == 401 {
                        if let Some(ch) = www_authenticate(&resp) {
                            self.auth
                                .forget_token(req.host, &req.scopes, authz.as_deref());
                            self.auth.set_challenge(req.host, ch.clone());
                            let refused = ch == Challenge::Basic && sent_basic;
                            if !refused && !reauthed {
                                reauthed = true;
                                continue;
                            }
                            // Basic credentials refused. A registry re-reading its password file
                            // refuses good ones for a moment (distribution's htpasswd reloads the
                            // file on every change and can read it half-written): ask again a
                            // few times, after a pause, before taking the refusal as final.
                            if refused && refusals < BASIC_REFUSALS_RETRIED {
                                refusals += 1;
                                note(Progress::Retrying {
                                    host: req.host.to_string(),
                                    attempt: refusals,
                                    reason: "HTTP 401: the credentials were refused; asking again"
                                        .into(),
                                });
                                std::thread::sleep(self.retry.delay(refusals));
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

/// How many times a request whose basic credentials were refused is sent again (issue 24: one
/// push in ~31 failed with a 401 while the registry's htpasswd file was being rewritten). A wrong
/// password costs these pauses (`RetryPolicy::delay(1) + delay(2)`, 1.2 s by default) before it
/// fails.
const BASIC_REFUSALS_RETRIED: u32 = 2;

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
        let t = super::super::transport::build(&crate::config::Config::default(), &host).unwrap();
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
