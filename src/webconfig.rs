//! `--web.config.file`: TLS and basic authentication for `/metrics`, in the YAML format of the
//! Prometheus exporter-toolkit, so a file written for node_exporter works here unchanged.
//!
//! Supported, as documented by exporter-toolkit's `web-configuration.md`:
//! - `tls_server_config`: `cert_file`, `key_file`, `min_version`, `max_version` (`TLS12`,
//!   `TLS13`), `client_auth_type` (`NoClientCert`, `VerifyClientCertIfGiven`,
//!   `RequireAndVerifyClientCert`) with `client_ca_file`, `prefer_server_cipher_suites`.
//!   Relative paths are relative to the configuration file's directory, as in exporter-toolkit.
//! - `basic_auth_users`: user name → bcrypt hash.
//! - `http_server_config.headers`: the security headers exporter-toolkit allows; `http2` is
//!   accepted and ignored (the server speaks HTTP/1.1 only).
//!
//! Keys this implementation cannot honour (`cipher_suites`, `curve_preferences`, inline `cert`
//! and `key`, `client_allowed_sans`, `rate_limit`, the `RequestClientCert` and
//! `RequireAnyClientCert` policies, TLS 1.0/1.1) are refused with an error that names them,
//! rather than silently ignored: a user who asked for a restriction must not believe they have it.
//! Unknown keys are refused too, because a misspelt key would otherwise switch protection off.
//!
//! Unlike exporter-toolkit, the file is read once at start, not on every connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use subtle::{Choice, ConstantTimeEq};

/// The realm of the `WWW-Authenticate` header a caller sends with a 401.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"qonto-exporter\"";

/// Headers `http_server_config.headers` may set (exporter-toolkit's list): security headers,
/// not a way to rewrite the response.
const ALLOWED_HEADERS: &[&str] = &[
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "x-xss-protection",
    "strict-transport-security",
];

/// How many (user, password) outcomes are remembered. Successful checks are what matter (a
/// scraper sends the same credentials every 15 s); failures are remembered too, so repeating one
/// wrong password does not cost a bcrypt run each time.
const AUTH_CACHE_CAPACITY: usize = 128;

/// Why a web configuration file cannot be used. Every message names the file and, where there
/// is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read web config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and wrong types, with serde's location (`key: ... at line N`).
    #[error("web config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A key whose value cannot be used, or that qonto-exporter does not support.
    #[error("web config file {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map of web settings")]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
    /// Newer exporter-toolkit key; refused as unsupported.
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map of TLS settings")]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    // Known to exporter-toolkit, refused here (see module docs).
    cert: Option<serde_norway::Value>,
    key: Option<serde_norway::Value>,
    client_ca: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map of HTTP server settings")]
struct RawHttp {
    #[serde(default)]
    headers: HashMap<String, String>,
    /// Accepted for compatibility; the server only speaks HTTP/1.1.
    #[allow(dead_code)]
    http2: Option<bool>,
}

/// A loaded and validated web configuration.
pub struct WebConfig {
    tls: Option<Arc<ServerConfig>>,
    auth: Option<BasicAuth>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field(
                "basic_auth_users",
                &self.auth.as_ref().map(|a| a.users.len()).unwrap_or(0),
            )
            .field("headers", &self.headers)
            .finish()
    }
}

/// The verdict on a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No users are configured, or the credentials are right.
    Allowed,
    /// Missing, malformed or wrong credentials: answer 401 with
    /// `WWW-Authenticate: Basic realm="qonto-exporter"` ([`WWW_AUTHENTICATE`]).
    Unauthorized,
}

impl WebConfig {
    /// Reads and validates the file: certificates and keys are loaded now, so a mistake is
    /// reported at start and not at the first scrape.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // exporter-toolkit treats an empty file as "no TLS, no auth".
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| WebConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?
        };
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let ctx = Ctx { path, base };
        if raw.rate_limit.is_some() {
            return Err(ctx.unsupported("rate_limit"));
        }
        let tls = raw.tls_server_config.map(|t| ctx.tls(t)).transpose()?;
        let auth = if raw.basic_auth_users.is_empty() {
            None
        } else {
            Some(ctx.basic_auth(raw.basic_auth_users)?)
        };
        let headers = ctx.headers(raw.http_server_config.unwrap_or_default().headers)?;
        Ok(WebConfig { tls, auth, headers })
    }

    /// The TLS acceptor when `tls_server_config` is set; `None` means plain HTTP.
    pub fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.tls.clone().map(tokio_rustls::TlsAcceptor::from)
    }

    /// True when `basic_auth_users` is set and requests must carry credentials.
    pub fn requires_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// Checks the `Authorization` header against `basic_auth_users`.
    ///
    /// A cache miss costs one bcrypt verification (tens of milliseconds at cost 10), so call
    /// this from `tokio::task::spawn_blocking` (wrap the config in an `Arc`). Outcomes are cached
    /// under an HMAC of (user, password) with a per-process random key, so the cache holds no
    /// password and its lookups reveal nothing; the lookup compares every entry in constant
    /// time. An unknown user is checked against a dummy hash of the same cost as the real ones,
    /// so it costs as much as a wrong password.
    pub fn authorize(&self, headers: &http::HeaderMap) -> AuthOutcome {
        match &self.auth {
            None => AuthOutcome::Allowed,
            Some(auth) => auth.check(headers),
        }
    }

    /// Headers from `http_server_config.headers`, to add to every response.
    pub fn extra_headers(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        &self.headers
    }
}

/// Loading context: the file for error messages, its directory for relative paths.
struct Ctx<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> WebConfigError {
        WebConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn unsupported(&self, key: &str) -> WebConfigError {
        self.invalid(
            key,
            "is an exporter-toolkit option that qonto-exporter does not support; remove it",
        )
    }

    fn resolve(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn tls(&self, t: RawTls) -> Result<Arc<ServerConfig>, WebConfigError> {
        for (key, present) in [
            ("cert", t.cert.is_some()),
            ("key", t.key.is_some()),
            ("client_ca", t.client_ca.is_some()),
            ("client_allowed_sans", t.client_allowed_sans.is_some()),
            ("cipher_suites", t.cipher_suites.is_some()),
            ("curve_preferences", t.curve_preferences.is_some()),
        ] {
            if present {
                return Err(self.unsupported(&format!("tls_server_config.{key}")));
            }
        }
        let cert_file = non_empty(t.cert_file).ok_or_else(|| {
            self.invalid(
                "tls_server_config.cert_file",
                "is required when TLS is configured",
            )
        })?;
        let key_file = non_empty(t.key_file).ok_or_else(|| {
            self.invalid(
                "tls_server_config.key_file",
                "is required when TLS is configured",
            )
        })?;
        let certs = self.load_certs("tls_server_config.cert_file", &cert_file)?;
        let key_path = self.resolve(&key_file);
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
            self.invalid(
                "tls_server_config.key_file",
                format!("cannot load a private key from {}: {e}", key_path.display()),
            )
        })?;

        let min = self.version("tls_server_config.min_version", t.min_version, 12)?;
        let max = self.version("tls_server_config.max_version", t.max_version, 13)?;
        if min > max {
            return Err(self.invalid(
                "tls_server_config.min_version",
                "is above tls_server_config.max_version",
            ));
        }
        let versions: Vec<&'static SupportedProtocolVersion> =
            [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
                .into_iter()
                .filter(|(v, _)| (min..=max).contains(v))
                .map(|(_, p)| p)
                .collect();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| self.invalid("tls_server_config.min_version", e.to_string()))?;

        let policy = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
        let ca_file = non_empty(t.client_ca_file);
        let builder = match (policy, ca_file) {
            ("NoClientCert", None) => builder.with_no_client_auth(),
            ("NoClientCert", Some(_)) => {
                return Err(self.invalid(
                    "tls_server_config.client_ca_file",
                    "is set but client_auth_type is NoClientCert; set client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven",
                ));
            }
            ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
                return Err(self.invalid(
                    "tls_server_config.client_ca_file",
                    format!("is required with client_auth_type {policy}"),
                ));
            }
            ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", Some(ca)) => {
                let mut roots = RootCertStore::empty();
                for cert in self.load_certs("tls_server_config.client_ca_file", &ca)? {
                    roots.add(cert).map_err(|e| {
                        self.invalid("tls_server_config.client_ca_file", e.to_string())
                    })?;
                }
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if policy == "VerifyClientCertIfGiven" {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| self.invalid("tls_server_config.client_ca_file", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            ("RequestClientCert" | "RequireAnyClientCert", _) => {
                return Err(self.invalid(
                    "tls_server_config.client_auth_type",
                    format!(
                        "{policy} (a client certificate that is not verified) is not supported; use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
                    ),
                ));
            }
            (other, _) => {
                return Err(self.invalid(
                    "tls_server_config.client_auth_type",
                    format!(
                        "unknown value {other:?}; expected NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                    ),
                ));
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            self.invalid(
                "tls_server_config.key_file",
                format!("does not fit the certificate: {e}"),
            )
        })?;
        config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(false);
        // The metrics server speaks HTTP/1.1 only; saying so stops clients from trying h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn load_certs(
        &self,
        key: &str,
        file: &str,
    ) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
        let path = self.resolve(file);
        let fail = |e: rustls_pki_types::pem::Error| {
            self.invalid(
                key,
                format!("cannot load certificates from {}: {e}", path.display()),
            )
        };
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        if certs.is_empty() {
            return Err(self.invalid(key, format!("{} holds no PEM certificate", path.display())));
        }
        Ok(certs)
    }

    /// Maps `TLS12`/`TLS13` to 12/13; older versions are refused (rustls does not offer them).
    fn version(&self, key: &str, value: Option<String>, default: u8) -> Result<u8, WebConfigError> {
        match value.as_deref() {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some("TLS10" | "TLS11") => Err(self.invalid(
                key,
                "TLS 1.0 and 1.1 are not supported (insecure, and rustls does not offer them); use TLS12 or TLS13",
            )),
            Some(other) => Err(self.invalid(
                key,
                format!("unknown TLS version {other:?}; expected TLS12 or TLS13"),
            )),
        }
    }

    fn basic_auth(&self, users: HashMap<String, String>) -> Result<BasicAuth, WebConfigError> {
        let mut max_cost = 0;
        for (user, hash) in &users {
            let key = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return Err(self.invalid(
                    key,
                    "a user name cannot contain ':' (HTTP basic auth splits on it)",
                ));
            }
            // The hash is not shown: it is not the password, but it is not for logs either.
            let parts: bcrypt::HashParts = hash.parse().map_err(|_| {
                self.invalid(
                    key.clone(),
                    "is not a bcrypt hash (expected $2y$..., e.g. from `htpasswd -nBC 10 user`)",
                )
            })?;
            max_cost = max_cost.max(parts.get_cost());
        }
        // A wrong user must cost what a wrong password costs: same work factor as the
        // most expensive real hash.
        let dummy_hash = bcrypt::hash(random_bytes(), max_cost).map_err(|e| {
            self.invalid("basic_auth_users", format!("cannot make a dummy hash: {e}"))
        })?;
        Ok(BasicAuth {
            users,
            dummy_hash,
            hmac_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &random_bytes()),
            cache: Mutex::new(AuthCache::default()),
        })
    }

    fn headers(
        &self,
        headers: HashMap<String, String>,
    ) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, WebConfigError> {
        let mut out = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let key = format!("http_server_config.headers.{name}");
            let header_name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.invalid(key.clone(), "is not a valid header name"))?;
            if !ALLOWED_HEADERS.contains(&header_name.as_str()) {
                return Err(self.invalid(
                    key,
                    format!(
                        "is not one of the headers that may be set: {}",
                        "Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, Strict-Transport-Security"
                    ),
                ));
            }
            let header_value = http::HeaderValue::from_str(&value)
                .map_err(|_| self.invalid(key, "is not a valid header value"))?;
            out.push((header_name, header_value));
        }
        // A stable order makes responses reproducible (HashMap order is random).
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(out)
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

fn random_bytes() -> [u8; 32] {
    rand::random()
}

/// `basic_auth_users` with the cache of recent outcomes.
struct BasicAuth {
    users: HashMap<String, String>,
    dummy_hash: String,
    hmac_key: ring::hmac::Key,
    cache: Mutex<AuthCache>,
}

impl BasicAuth {
    fn check(&self, headers: &http::HeaderMap) -> AuthOutcome {
        let Some((user, password)) = parse_basic(headers) else {
            return AuthOutcome::Unauthorized;
        };
        let mut message = Vec::with_capacity(user.len() + 1 + password.len());
        message.extend_from_slice(user.as_bytes());
        // The user never contains ':' (the header is split at the first one): unambiguous.
        message.push(b':');
        message.extend_from_slice(&password);
        let tag = ring::hmac::sign(&self.hmac_key, &message);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(tag.as_ref());

        if let Some(allowed) = self.lock_cache().get(&digest) {
            return outcome(allowed);
        }
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.as_str(), true),
            None => (self.dummy_hash.as_str(), false),
        };
        // Always run bcrypt, even for an unknown user, so both failures take as long.
        let verified = bcrypt::verify(&password, hash).unwrap_or(false);
        let allowed = known && verified;
        self.lock_cache().insert(digest, allowed);
        outcome(allowed)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, AuthCache> {
        // The cache holds no invariant a panic could break; keep using it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn outcome(allowed: bool) -> AuthOutcome {
    if allowed {
        AuthOutcome::Allowed
    } else {
        AuthOutcome::Unauthorized
    }
}

/// Decodes `Authorization: Basic base64(user:password)`. `None` for anything else.
fn parse_basic(headers: &http::HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// A small, bounded cache of (HMAC of credentials → allowed). Lookups scan every entry with a
/// constant-time comparison, so their duration says nothing about which entry matched.
#[derive(Default)]
struct AuthCache {
    entries: Vec<([u8; 32], bool)>,
    next_evict: usize,
}

impl AuthCache {
    fn get(&self, digest: &[u8; 32]) -> Option<bool> {
        let mut found = Choice::from(0);
        let mut allowed = Choice::from(0);
        for (d, a) in &self.entries {
            let hit = d.ct_eq(digest);
            found |= hit;
            allowed |= hit & Choice::from(u8::from(*a));
        }
        bool::from(found).then(|| bool::from(allowed))
    }

    fn insert(&mut self, digest: [u8; 32], allowed: bool) {
        if let Some(entry) = self.entries.iter_mut().find(|(d, _)| *d == digest) {
            entry.1 = allowed;
        } else if self.entries.len() < AUTH_CACHE_CAPACITY {
            self.entries.push((digest, allowed));
        } else {
            // Round-robin eviction: bounded memory whatever an attacker sends.
            self.entries[self.next_evict] = (digest, allowed);
            self.next_evict = (self.next_evict + 1) % AUTH_CACHE_CAPACITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::TokioIo;

    /// bcrypt's minimum cost keeps the tests fast; the code path is the same at cost 10.
    const COST: u32 = 4;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A self-signed certificate for `localhost`, written as cert.pem and key.pem.
    fn self_signed(dir: &Path) -> String {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let pem = ck.cert.pem();
        write(dir, "cert.pem", &pem);
        write(dir, "key.pem", &ck.signing_key.serialize_pem());
        pem
    }

    fn load(dir: &Path, yaml: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::load(&write(dir, "web.yml", yaml))
    }

    fn basic(user: &str, password: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
        h
    }

    fn users_yaml(users: &[(&str, &str)]) -> String {
        let mut y = String::from("basic_auth_users:\n");
        for (u, p) in users {
            y.push_str(&format!("  {u}: '{}'\n", bcrypt::hash(p, COST).unwrap()));
        }
        y
    }

    /// A tiny metrics server used the way the real one should use a WebConfig: TLS
    /// handshake, then authorize in a blocking task, then the extra headers.
    async fn serve(config: Arc<WebConfig>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = config.tls_acceptor().expect("TLS configured");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let config = config.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req: hyper::Request<_>| {
                        let config = config.clone();
                        async move {
                            let headers = req.headers().clone();
                            let c = config.clone();
                            let outcome =
                                tokio::task::spawn_blocking(move || c.authorize(&headers))
                                    .await
                                    .unwrap_or(AuthOutcome::Unauthorized);
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                            if outcome == AuthOutcome::Unauthorized {
                                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                                resp.headers_mut().insert(
                                    http::header::WWW_AUTHENTICATE,
                                    http::HeaderValue::from_static(WWW_AUTHENTICATE),
                                );
                            }
                            for (n, v) in config.extra_headers() {
                                resp.headers_mut().insert(n.clone(), v.clone());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn tls_and_basic_auth_end_to_end() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let pem = self_signed(dir.path());
        // Relative paths resolve against the config file's directory.
        let yaml = format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: {}\n  min_version: TLS12\n{}http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            dir.path().join("key.pem").display(),
            users_yaml(&[("prometheus", "right-password")]),
        );
        let config = Arc::new(load(dir.path(), &yaml).unwrap());
        let addr = serve(config).await;

        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
            .resolve("localhost", addr)
            .build()
            .unwrap();
        let url = format!("https://localhost:{}/metrics", addr.port());

        let ok = client
            .get(&url)
            .basic_auth("prometheus", Some("right-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["x-frame-options"], "deny");
        assert_eq!(ok.text().await.unwrap(), "ok");

        for request in [
            client
                .get(&url)
                .basic_auth("prometheus", Some("wrong-password")),
            client
                .get(&url)
                .basic_auth("intruder", Some("right-password")),
            client.get(&url),
        ] {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401);
            assert_eq!(r.headers()["www-authenticate"], WWW_AUTHENTICATE);
        }

        // Plain HTTP to the TLS port gets no answer.
        let plain = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/metrics", addr.port()))
            .basic_auth("prometheus", Some("right-password"))
            .send()
            .await;
        assert!(plain.is_err(), "{plain:?}");
    }

    #[tokio::test]
    async fn tls13_only_refuses_a_tls12_client() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let pem = self_signed(dir.path());
        let config = load(
            dir.path(),
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\n",
        )
        .unwrap();
        let addr = serve(Arc::new(config)).await;
        let client = |max: reqwest::tls::Version| {
            reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
                .tls_version_max(max)
                .resolve("localhost", addr)
                .build()
                .unwrap()
        };
        let url = format!("https://localhost:{}/", addr.port());
        assert!(
            client(reqwest::tls::Version::TLS_1_2)
                .get(&url)
                .send()
                .await
                .is_err()
        );
        let r = client(reqwest::tls::Version::TLS_1_3)
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "no users configured: open");
    }

    #[tokio::test]
    async fn client_certificates_are_required_and_verified() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let server_pem = self_signed(dir.path());
        // The client's self-signed certificate is its own CA.
        let client = rcgen::generate_simple_self_signed(vec!["scraper".to_string()]).unwrap();
        write(dir.path(), "client-ca.pem", &client.cert.pem());
        let config = load(
            dir.path(),
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n",
        )
        .unwrap();
        let addr = serve(Arc::new(config)).await;
        let builder = || {
            reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(server_pem.as_bytes()).unwrap()])
                .resolve("localhost", addr)
        };
        let url = format!("https://localhost:{}/", addr.port());
        let anonymous = builder().build().unwrap().get(&url).send().await;
        assert!(anonymous.is_err(), "{anonymous:?}");
        let identity = format!(
            "{}{}",
            client.cert.pem(),
            client.signing_key.serialize_pem()
        );
        let with_cert = builder()
            .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
            .build()
            .unwrap();
        assert_eq!(with_cert.get(&url).send().await.unwrap().status(), 200);
    }

    #[test]
    fn authorize_checks_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(
            dir.path(),
            &users_yaml(&[("alice", "pw-a"), ("bob", "pw:b")]),
        )
        .unwrap();
        assert!(config.tls_acceptor().is_none());
        assert!(config.requires_auth());
        use AuthOutcome::*;
        assert_eq!(config.authorize(&basic("alice", "pw-a")), Allowed);
        assert_eq!(
            config.authorize(&basic("bob", "pw:b")),
            Allowed,
            "':' in a password"
        );
        assert_eq!(config.authorize(&basic("alice", "pw:b")), Unauthorized);
        assert_eq!(config.authorize(&basic("carol", "pw-a")), Unauthorized);
        assert_eq!(config.authorize(&basic("alice", "")), Unauthorized);
        assert_eq!(config.authorize(&http::HeaderMap::new()), Unauthorized);
        for bad in [
            "Bearer abc",
            "Basic !!!notbase64",
            "Basic YWxpY2U=", /* no colon */
        ] {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_static(bad),
            );
            assert_eq!(config.authorize(&h), Unauthorized, "{bad}");
        }
        // The scheme is case-insensitive.
        let mut h = basic("alice", "pw-a");
        let v = h[http::header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .replace("Basic", "basic");
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&v).unwrap(),
        );
        assert_eq!(config.authorize(&h), Allowed);
    }

    #[test]
    fn no_users_means_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(dir.path(), "").unwrap();
        assert!(!config.requires_auth());
        assert_eq!(
            config.authorize(&http::HeaderMap::new()),
            AuthOutcome::Allowed
        );
    }

    #[test]
    fn outcomes_are_cached_without_confusing_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(dir.path(), &users_yaml(&[("alice", "pw-a")])).unwrap();
        let auth = config.auth.as_ref().unwrap();
        for _ in 0..3 {
            assert_eq!(
                config.authorize(&basic("alice", "wrong")),
                AuthOutcome::Unauthorized
            );
            assert_eq!(
                config.authorize(&basic("alice", "pw-a")),
                AuthOutcome::Allowed
            );
        }
        assert_eq!(auth.lock_cache().entries.len(), 2);
        // No password is stored in the cache, only keyed digests.
        for (d, _) in &auth.lock_cache().entries {
            assert!(!d.windows(4).any(|w| w == b"pw-a"));
        }
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut cache = AuthCache::default();
        for i in 0..(AUTH_CACHE_CAPACITY + 50) {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.insert(d, i % 2 == 0);
        }
        assert_eq!(cache.entries.len(), AUTH_CACHE_CAPACITY);
        let mut last = [0u8; 32];
        last[..8].copy_from_slice(&((AUTH_CACHE_CAPACITY + 49) as u64).to_le_bytes());
        assert_eq!(cache.get(&last), Some(false));
        assert_eq!(cache.get(&[0u8; 32]), None, "the oldest entry was evicted");
    }

    #[test]
    fn an_unknown_user_costs_a_bcrypt_run_at_the_highest_configured_cost() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "basic_auth_users:\n  a: '{}'\n  b: '{}'\n",
            bcrypt::hash("x", COST).unwrap(),
            bcrypt::hash("y", COST + 1).unwrap()
        );
        let config = load(dir.path(), &yaml).unwrap();
        let dummy: bcrypt::HashParts = config.auth.as_ref().unwrap().dummy_hash.parse().unwrap();
        assert_eq!(dummy.get_cost(), COST + 1);
    }

    /// Loads `yaml` and returns the error message, which must name the file.
    fn error(dir: &Path, yaml: &str) -> String {
        let e = load(dir, yaml).expect_err("should be refused").to_string();
        assert!(e.contains("web.yml"), "the file is named: {e}");
        e
    }

    #[test]
    fn yaml_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        self_signed(d);
        let tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
        let cases: Vec<(String, &str)> = vec![
            ("tls_config:\n  cert_file: x\n".into(), "tls_config"),
            ("basic_auth_users: [a, b]\n".into(), "basic_auth_users"),
            (format!("{tls}  cert_fiel: x\n"), "cert_fiel"),
            (
                format!("{tls}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
                "tls_server_config.cipher_suites",
            ),
            (
                format!("{tls}  min_version: TLS11\n"),
                "tls_server_config.min_version",
            ),
            (
                format!("{tls}  max_version: TLS99\n"),
                "tls_server_config.max_version",
            ),
            (
                format!("{tls}  min_version: TLS13\n  max_version: TLS12\n"),
                "min_version",
            ),
            (
                format!("{tls}  client_ca_file: cert.pem\n"),
                "tls_server_config.client_ca_file",
            ),
            (
                format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"),
                "tls_server_config.client_ca_file",
            ),
            (
                format!("{tls}  client_auth_type: RequireAnyClientCert\n"),
                "tls_server_config.client_auth_type",
            ),
            (
                "tls_server_config:\n  key_file: key.pem\n".into(),
                "tls_server_config.cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n".into(),
                "missing.pem",
            ),
            (
                "tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n".into(),
                "tls_server_config.cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: cert.pem\n  key_file: cert.pem\n".into(),
                "tls_server_config.key_file",
            ),
            (
                "basic_auth_users:\n  alice: plaintext-password\n".into(),
                "basic_auth_users.alice",
            ),
            (
                "http_server_config:\n  headers:\n    Set-Cookie: a=b\n".into(),
                "http_server_config.headers.Set-Cookie",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: \"a\\nb\"\n".into(),
                "X-Frame-Options",
            ),
            ("rate_limit:\n  interval: 1s\n".into(), "rate_limit"),
            ("tls_server_config: [\n".into(), "web.yml"),
        ];
        for (yaml, key) in cases {
            let e = error(d, &yaml);
            assert!(e.contains(key), "{yaml:?}: {e:?} should name {key}");
        }
        // The plaintext "hash" is not echoed back.
        assert!(
            !error(d, "basic_auth_users:\n  alice: plaintext-password\n")
                .contains("plaintext-password")
        );
    }

    #[test]
    fn toolkit_files_that_we_support_load() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        self_signed(d);
        let yaml = format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: cert.pem\n  max_version: TLS13\n  prefer_server_cipher_suites: true\nhttp_server_config:\n  http2: false\n  headers:\n    Strict-Transport-Security: max-age=31536000\n{}",
            users_yaml(&[("p", "q")])
        );
        let config = load(d, &yaml).unwrap();
        assert!(config.tls_acceptor().is_some());
        assert_eq!(config.extra_headers().len(), 1);
        assert_eq!(
            config.extra_headers()[0].0,
            http::header::STRICT_TRANSPORT_SECURITY
        );
        assert!(!format!("{config:?}").contains("$2"), "Debug shows no hash");
        let missing = WebConfig::load(&d.join("nope.yml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.yml"));
    }
}
