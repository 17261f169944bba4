//! `WWW-Authenticate` challenges and the token cache: bearer tokens (anonymous, exchanged with
//! basic credentials, or from an OAuth2 refresh token) kept per host and scope set until they
//! expire; basic auth sent directly once a host asked for it.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::error::{transport_error, Ctx};
use super::{Auth, Purpose, RegistryClient, RegistryError};
use crate::config::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Default)]
struct HostAuth {
    challenge: Option<Challenge>,
    tokens: HashMap<String, (Secret, Instant)>,
}

/// Per-host challenges and tokens, shared by every request of one client.
#[derive(Default)]
pub(crate) struct AuthCache {
    hosts: Mutex<HashMap<String, HostAuth>>,
    /// Held while asking a token service, so parallel transfers needing the same scopes ask once.
    fetching: Mutex<()>,
}

impl AuthCache {
    pub(crate) fn set_challenge(&self, host: &str, ch: Challenge) {
        let mut m = crate::sync::lock(&self.hosts);
        m.entry(host.to_string()).or_default().challenge = Some(ch);
    }

    pub(crate) fn challenge(&self, host: &str) -> Option<Challenge> {
        let m = crate::sync::lock(&self.hosts);
        m.get(host).and_then(|h| h.challenge.clone())
    }

    fn token(&self, host: &str, key: &str) -> Option<Secret> {
        let m = crate::sync::lock(&self.hosts);
        let (tok, until) = m.get(host)?.tokens.get(key)?;
        (Instant::now() < *until).then(|| tok.clone())
    }

    fn put_token(&self, host: &str, key: &str, tok: Secret, ttl: Duration) {
        let mut m = crate::sync::lock(&self.hosts);
        m.entry(host.to_string())
            .or_default()
            .tokens
            .insert(key.to_string(), (tok, Instant::now() + ttl));
    }

    /// Drop the cached token for `scopes` when it is the one a refused request carried
    /// (`sent`, its `Authorization` value). A 401 to a request sent without that token says
    /// nothing of it: with parallel uploads, the late 401 of a request sent before the challenge
    /// was known must not throw away the token another request has just fetched.
    pub(crate) fn forget_token(&self, host: &str, scopes: &[String], sent: Option<&str>) {
        let mut m = crate::sync::lock(&self.hosts);
        let Some(h) = m.get_mut(host) else { return };
        let key = scope_key(scopes);
        let refused = match (h.tokens.get(&key), sent) {
            (Some((tok, _)), Some(sent)) => sent == format!("Bearer {}", tok.expose()),
            _ => false,
        };
        if refused {
            h.tokens.remove(&key);
        }
    }
}

fn scope_key(scopes: &[String]) -> String {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort_unstable();
    s.dedup();
    s.join(" ")
}

/// Parse `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            return out;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                val.push(*c);
                chars.next();
            }
        }
        out.insert(key, val.trim().to_string());
    }
}

/// The user named in errors: ` for user "x"`, or nothing when anonymous.
pub(crate) fn user_note(auth: &Option<Auth>) -> String {
    match auth {
        Some(a) if !a.username.is_empty() => format!(" for user {:?}", a.username),
        Some(_) => " (identity token)".to_string(),
        None => " (anonymous)".to_string(),
    }
}

/// The `Authorization` header value for a request to `host` needing `scopes`, if the host asked
/// for authentication.
pub(crate) fn authorization(
    client: &RegistryClient,
    ctx: &Ctx,
    host: &str,
    path: &str,
    scopes: &[String],
    purpose: Purpose,
) -> Result<Option<String>, RegistryError> {
    match client.auth.challenge(host) {
        None => Ok(None),
        Some(Challenge::Basic) => Ok(client
            .resolve_auth(host, path, purpose)?
            .filter(|a| !a.username.is_empty())
            .map(|a| basic(&a.username, a.password.expose()))),
        Some(Challenge::Bearer { realm, service }) => {
            let key = scope_key(scopes);
            if let Some(t) = client.auth.token(host, &key) {
                return Ok(Some(format!("Bearer {}", t.expose())));
            }
            let _one = crate::sync::lock(&client.auth.fetching);
            if let Some(t) = client.auth.token(host, &key) {
                return Ok(Some(format!("Bearer {}", t.expose())));
            }
            let auth = client.resolve_auth(host, path, purpose)?;
            let (tok, ttl) =
                fetch_token(client, ctx, host, &realm, service.as_deref(), scopes, &auth)?;
            let header = format!("Bearer {}", tok.expose());
            client.auth.put_token(host, &key, tok, ttl);
            Ok(Some(header))
        }
    }
}

pub(crate) fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Ask the token service for a token covering `scopes` (distribution's token protocol, or the
/// OAuth2 refresh-token grant when the credential is an identity token).
pub(crate) fn fetch_token(
    client: &RegistryClient,
    ctx: &Ctx,
    host: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    auth: &Option<Auth>,
) -> Result<(Secret, Duration), RegistryError> {
    let bad = |detail: String| RegistryError::BadResponse {
        host: host.to_string(),
        reference: ctx.reference.clone(),
        what: "token service answer".into(),
        detail,
    };
    let mut url = reqwest::Url::parse(realm).map_err(|e| bad(format!("realm {realm:?}: {e}")))?;
    let realm_host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => return Err(bad(format!("realm {realm:?} has no host"))),
    };
    let transport = client.transport_raw(ctx, &realm_host)?;
    let refresh = auth.as_ref().and_then(|a| a.identity_token.clone());
    let req = if let Some(refresh) = refresh {
        let mut form = reqwest::Url::parse("http://form/").map_err(|e| bad(e.to_string()))?;
        {
            let mut q = form.query_pairs_mut();
            q.append_pair("grant_type", "refresh_token");
            q.append_pair("client_id", "kiln");
            q.append_pair("refresh_token", refresh.expose());
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if !scopes.is_empty() {
                q.append_pair("scope", &scopes.join(" "));
            }
        }
        transport
            .client
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.query().unwrap_or("").to_string())
    } else {
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let mut rb = transport.client.get(url);
        if let Some(a) = auth.as_ref().filter(|a| !a.username.is_empty()) {
            rb = rb.header("Authorization", basic(&a.username, a.password.expose()));
        }
        rb
    };
    let resp = req
        .send()
        .map_err(|e| transport_error(ctx, &realm_host, e))?;
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return Err(RegistryError::Unauthorized {
            host: host.to_string(),
            reference: ctx.reference.clone(),
            user: user_note(auth),
            detail: format!("token service {realm_host} answered HTTP {status}"),
        });
    }
    if !(200..300).contains(&status) {
        return Err(bad(format!("HTTP {status} from {realm_host}")));
    }
    #[derive(serde::Deserialize)]
    struct TokenAnswer {
        #[serde(default)]
        token: String,
        #[serde(default)]
        access_token: String,
        #[serde(default)]
        expires_in: Option<serde_json::Number>,
    }
    // A token answer is a few KiB; a service streaming more is refused once it passes the limit
    // instead of being buffered whole.
    let mut body = Vec::new();
    resp.take(MAX_TOKEN_ANSWER + 1)
        .read_to_end(&mut body)
        .map_err(|e| bad(format!("reading the answer: {e}")))?;
    if body.len() as u64 > MAX_TOKEN_ANSWER {
        return Err(bad(format!("larger than {MAX_TOKEN_ANSWER} bytes")));
    }
    let a: TokenAnswer =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not token JSON: {e}")))?;
    let tok = if a.token.is_empty() {
        a.access_token
    } else {
        a.token
    };
    if tok.is_empty() {
        return Err(bad("no token in the answer".into()));
    }
    // Any whole number: one past i64 (a u64) is as good as "very long".
    let expires_in = match a.expires_in {
        None => None,
        Some(n) => Some(
            n.as_i64()
                .or_else(|| n.as_u64().map(|_| i64::MAX))
                .ok_or_else(|| bad(format!("expires_in {n} is not a whole number")))?,
        ),
    };
    Ok((Secret::new(tok), token_ttl(expires_in)))
}

/// Largest token-service answer read.
const MAX_TOKEN_ANSWER: u64 = 1 << 20;

/// How long to keep a token: distribution's default of 60 s when `expires_in` is missing, zero or
/// negative (containerd's `getExpirationTime` ignores a lifetime ≤ 0 too), at most a day (the
/// number is the service's, and `Instant + Duration` panics past the clock's range), renewed a
/// little early.
fn token_ttl(expires_in: Option<i64>) -> Duration {
    let secs = expires_in.filter(|s| *s > 0).unwrap_or(60);
    Duration::from_secs(secs.clamp(10, 24 * 3600) as u64 - 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_a_refused_request_carried_is_forgotten() {
        let cache = AuthCache::default();
        let scopes = vec!["repository:a/b:pull,push".to_string()];
        let key = scope_key(&scopes);
        let fresh = || cache.token("h", &key).map(|t| t.expose().to_string());
        cache.put_token(
            "h",
            &key,
            Secret::new("t1".to_string()),
            Duration::from_secs(60),
        );
        // A request sent before the challenge was known (no token), or with an older token.
        cache.forget_token("h", &scopes, None);
        cache.forget_token("h", &scopes, Some("Bearer t0"));
        assert_eq!(fresh().as_deref(), Some("t1"));
        cache.forget_token("h", &scopes, Some("Bearer t1"));
        assert_eq!(fresh(), None);
    }

    #[test]
    fn challenges_parse_with_commas_in_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            scope_key(&["b".into(), "a".into(), "b".into()]),
            "a b".to_string()
        );
    }

    #[test]
    fn token_lifetimes_are_bounded() {
        assert_eq!(token_ttl(None), Duration::from_secs(55));
        assert_eq!(token_ttl(Some(-1)), Duration::from_secs(55));
        assert_eq!(token_ttl(Some(0)), Duration::from_secs(55));
        assert_eq!(token_ttl(Some(3)), Duration::from_secs(5));
        assert_eq!(token_ttl(Some(300)), Duration::from_secs(295));
        assert_eq!(
            token_ttl(Some(i64::MAX)),
            Duration::from_secs(24 * 3600 - 5)
        );
    }
}
