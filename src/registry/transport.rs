//! Per-host transport: one reqwest client per registry host, with that host's TLS settings —
//! system roots plus conventional CA bundles, the config's `ca`, `tlsconfigdir` (`*.crt` CAs,
//! `X.cert` + `X.key` client identities), `keypair` / `client` certificates, or no verification
//! at all for `insecure` hosts; plain HTTP for `http` hosts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::Ctx;
use super::RegistryError;
use crate::config::{Config, KeyPair};

/// Directories whose `*.crt` files are trusted for every host without configuration: where
/// Debian's and Red Hat's tooling expect locally added CAs (a pod may mount a bundle there
/// without running update-ca-certificates).
const GLOBAL_CA_DIRS: &[&str] = &[
    "/usr/local/share/ca-certificates",
    "/etc/pki/ca-trust/source/anchors",
];

/// Per-host certificate directories (`<dir>/<host[:port]>/`), as Docker and containers/image use.
fn host_cert_dirs(host: &str) -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/etc/kiln/certs.d").join(host),
        PathBuf::from("/etc/docker/certs.d").join(host),
        PathBuf::from("/etc/containers/certs.d").join(host),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".config/kiln/certs.d").join(host));
    }
    dirs
}

/// The CA bundle files trusted for every host besides the system roots (for `kiln info`).
pub fn conventional_ca_bundles() -> Vec<PathBuf> {
    GLOBAL_CA_DIRS
        .iter()
        .flat_map(|d| files_with(Path::new(d), &["crt", "pem"]))
        .collect()
}

fn files_with(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| exts.contains(&e))
        })
        .collect();
    out.sort();
    out
}

/// How to reach one registry host.
pub(crate) struct HostTransport {
    pub client: reqwest::blocking::Client,
    /// Plain HTTP only.
    pub http: bool,
    /// TLS without verification; plain HTTP when the host turns out not to speak TLS.
    pub insecure: bool,
    /// A loopback host (127.0.0.0/8, ::1, localhost): verified TLS first, plain HTTP when it
    /// answers in plain HTTP — as Docker treats loopback registries by default.
    pub loopback: bool,
    /// The scheme that worked, once known (`insecure` hosts try https first).
    pub scheme: Mutex<Option<&'static str>>,
    /// CA files loaded for this host beyond the system roots.
    pub ca_files: Vec<PathBuf>,
}

impl HostTransport {
    pub(crate) fn scheme(&self) -> &'static str {
        if self.http {
            return "http";
        }
        crate::sync::lock(&self.scheme).unwrap_or("https")
    }
}

/// Build the transport for `host`; the error is a human-readable detail (file and reason).
pub(crate) fn build(cfg: &Config, host: &str) -> Result<HostTransport, String> {
    let rc = cfg.registry(host);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);

    let mut ca_files = conventional_ca_bundles();
    let mut identity: Option<KeyPair> = rc.keypairs.first().cloned();
    let mut dirs: Vec<PathBuf> = rc.tlsconfigdir.clone();
    dirs.extend(host_cert_dirs(host));
    for dir in &dirs {
        ca_files.extend(files_with(dir, &["crt"]));
        if identity.is_none() {
            identity = files_with(dir, &["cert"]).into_iter().find_map(|cert| {
                let key = cert.with_extension("key");
                key.is_file().then_some(KeyPair { cert, key })
            });
        }
    }
    if rc.tlsconfigdir.iter().any(|d| !d.is_dir()) {
        let missing: Vec<String> = rc
            .tlsconfigdir
            .iter()
            .filter(|d| !d.is_dir())
            .map(|d| d.display().to_string())
            .collect();
        return Err(format!(
            "tlsconfigdir {} is not a directory",
            missing.join(", ")
        ));
    }
    ca_files.extend(rc.ca.iter().cloned());
    for f in &ca_files {
        let certs = read_certs(f)?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 && rc.ca.contains(f) {
            return Err(format!(
                "CA file {} holds no usable certificate",
                f.display()
            ));
        }
    }

    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = if rc.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut tls = match &identity {
        Some(kp) => {
            let chain = read_certs(&kp.cert)?;
            if chain.is_empty() {
                return Err(format!(
                    "client certificate {} holds no certificate",
                    kp.cert.display()
                ));
            }
            let key = PrivateKeyDer::from_pem_file(&kp.key)
                .map_err(|e| format!("reading client key {}: {e}", kp.key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {}: {e}", kp.cert.display()))?
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        // Layers can take long; a total timeout would cut big transfers. Connecting must not hang.
        .timeout(None::<Duration>)
        .connect_timeout(Duration::from_secs(30))
        .tcp_keepalive(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    Ok(HostTransport {
        client,
        http: rc.http,
        insecure: rc.insecure,
        loopback: is_loopback(host),
        scheme: Mutex::new(None),
        ca_files,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("parsing certificates in {}: {e}", path.display()))
}

/// `insecure = true`: accept any server certificate, but still check the handshake signatures
/// (the connection is encrypted, just not authenticated).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `host[:port]` on the loopback interface: 127.0.0.0/8, `[::1]`, `localhost`.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

impl super::RegistryClient {
    /// The transport for `host` without pinging (token services, realms).
    pub(crate) fn transport_raw(
        &self,
        ctx: &Ctx,
        host: &str,
    ) -> Result<Arc<HostTransport>, RegistryError> {
        let mut map = crate::sync::lock(&self.hosts);
        if let Some(t) = map.get(host) {
            return Ok(t.clone());
        }
        let t = Arc::new(
            build(&self.cfg, host).map_err(|detail| RegistryError::TlsSetup {
                host: host.to_string(),
                reference: ctx.reference.clone(),
                detail,
            })?,
        );
        map.insert(host.to_string(), t.clone());
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:5000",
            "127.8.9.1",
            "[::1]:5000",
            "localhost:443",
            "LOCALHOST",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "10.0.0.1:5000",
            "registry.example.com",
            "[fe80::1]:5000",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
