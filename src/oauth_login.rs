//! `qonto-exporter oauth-login`: the one-time OAuth 2.0 authorization-code flow that gives a new
//! user the refresh token the exporter then keeps rotating.
//!
//! The flow, and why each step is there:
//! 1. A random `state` (256 bits) is made; it ties the browser's return to this run, so a
//!    redirect forged by another web page (login CSRF) is refused.
//! 2. The loopback listener is bound *before* the consent URL is shown, so a fast browser cannot
//!    come back to a closed port.
//! 3. The consent URL asks for `payment_link.read offline_access`: without `offline_access`
//!    Qonto issues no refresh token, and the exporter would be locked out after one hour.
//! 4. The redirect to the loopback address is checked (path, then `state` in constant time); a
//!    wrong or missing `state` gets a 400 page and the listener keeps waiting for the real one.
//! 5. The code is exchanged at the token endpoint; the refresh token is written atomically with
//!    mode 0600, and only then does the browser hear that it can close the tab.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use rand::Rng;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::oauth::{OAuthError, TokenEndpoint};
use crate::qonto::client::{BuildError, http_client};
use crate::secret::write_secret_file_atomic;
use crate::secret::{
    Secret, SecretFileError, SecretSourceError, check_writable, secret_from_file_or_value,
};

/// Environment variable holding the client secret itself (never a flag value: it would show
/// in `ps`).
pub const CLIENT_SECRET_ENV: &str = "QONTO_OAUTH_CLIENT_SECRET";

/// Prefix of the line that carries the consent URL on stdout (scripts may look for it).
pub const URL_LINE_PREFIX: &str = "Open this URL in a browser: ";

/// How long the browser's last response may take to be flushed once the flow is over.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of the request to the token endpoint.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Command-line arguments of `qonto-exporter oauth-login`.
#[derive(Debug, Clone, clap::Args)]
pub struct OAuthLoginArgs {
    /// The exporter's --config.file: take the OAuth client, its secret, the token URL and the
    /// refresh-token file from the entry of --organization instead of the flags below.
    #[arg(long = "config.file", value_name = "PATH", requires = "organization", conflicts_with_all = ["client_id", "client_secret_file", "refresh_token_file"])]
    pub config_file: Option<PathBuf>,

    /// The organisation of --config.file whose refresh-token file to write.
    #[arg(long = "organization", value_name = "NAME", requires = "config_file")]
    pub organization: Option<String>,

    /// OAuth 2.0 client id registered with Qonto.
    #[arg(
        long = "qonto.oauth.client-id",
        env = "QONTO_OAUTH_CLIENT_ID",
        required_unless_present = "config_file"
    )]
    pub client_id: Option<String>,

    /// The client secret, when --config.file named it (its file or variable).
    #[arg(skip)]
    pub client_secret: Option<Secret>,

    /// File holding the OAuth client secret. Alternatively put the secret itself in the
    /// environment variable QONTO_OAUTH_CLIENT_SECRET.
    #[arg(long = "qonto.oauth.client-secret-file", value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,

    /// Qonto's authorization (consent) endpoint.
    /// Sandbox: <https://oauth-sandbox.staging.qonto.co/oauth2/auth>
    #[arg(
        long = "qonto.oauth.auth-url",
        default_value = "https://oauth.qonto.com/oauth2/auth",
        value_name = "URL"
    )]
    pub auth_url: String,

    /// Qonto's token endpoint.
    /// Sandbox: <https://oauth-sandbox.staging.qonto.co/oauth2/token>
    #[arg(
        long = "qonto.oauth.token-url",
        default_value = "https://oauth.qonto.com/oauth2/token",
        value_name = "URL"
    )]
    pub token_url: String,

    /// Where to write the refresh token (mode 0600, replaced atomically). Point the exporter's
    /// --qonto.oauth.refresh-token-file at the same path.
    #[arg(
        long = "qonto.oauth.refresh-token-file",
        value_name = "PATH",
        required_unless_present = "config_file"
    )]
    pub refresh_token_file: Option<PathBuf>,

    /// Loopback address to listen on for the browser's redirect.
    #[arg(long = "redirect-listen", default_value = "127.0.0.1:10159")]
    pub redirect_listen: SocketAddr,

    /// The redirect URI registered with Qonto for this client; it must lead the browser to
    /// --redirect-listen. Its path is the one served.
    #[arg(
        long = "redirect-uri",
        default_value = "http://127.0.0.1:10159/callback"
    )]
    pub redirect_uri: String,

    /// Scopes to ask for. `offline_access` is needed for a refresh token.
    #[arg(long = "scope", default_value = "payment_link.read offline_access")]
    pub scope: String,

    /// How long to wait for the browser to come back (humantime: 10m, 90s).
    #[arg(long = "timeout", default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl OAuthLoginArgs {
    /// With --config.file, the OAuth settings of --organization's entry in place of the flags.
    pub fn resolved(mut self) -> Result<OAuthLoginArgs, LoginError> {
        let (Some(path), Some(name)) = (&self.config_file, &self.organization) else {
            return Ok(self);
        };
        let c = crate::organizations::oauth_client(path, name, &self.token_url)
            .map_err(|e| LoginError::Config(e.0))?;
        self.client_id = Some(c.client_id);
        self.client_secret = Some(c.client_secret);
        self.refresh_token_file = Some(c.refresh_token_file);
        self.token_url = c.token_url;
        Ok(self)
    }

    fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or_default()
    }

    fn refresh_token_file(&self) -> &Path {
        self.refresh_token_file.as_deref().unwrap_or(Path::new(""))
    }
}

/// Why the login did not produce a refresh-token file.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Config(String),
    #[error(
        "no OAuth client secret: set --qonto.oauth.client-secret-file or the environment variable {CLIENT_SECRET_ENV}"
    )]
    MissingClientSecret,
    #[error(
        "the OAuth client secret is given twice (--qonto.oauth.client-secret-file and {CLIENT_SECRET_ENV}); keep one"
    )]
    AmbiguousClientSecret,
    #[error("OAuth client secret: {0}")]
    ClientSecretFile(#[source] SecretFileError),
    #[error("refresh token file: {0}")]
    RefreshTokenFile(#[source] SecretFileError),
    #[error("invalid {what} {url:?}: {reason}")]
    InvalidUrl {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("cannot listen on {addr} for the OAuth redirect: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the OAuth redirect listener failed: {0}")]
    Server(#[source] std::io::Error),
    #[error(transparent)]
    HttpClient(BuildError),
    #[error(
        "authorization was not granted ({error}{}); run oauth-login again and accept the consent screen",
        match description { Some(d) => format!(": {d}"), None => String::new() }
    )]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error("exchanging the authorization code failed: {0}")]
    Exchange(#[source] OAuthError),
    #[error(
        "the token endpoint issued no refresh token (scopes asked: {scope:?}); Qonto only issues one when the `offline_access` scope is requested and granted: keep `offline_access` in --scope and make sure the OAuth client is allowed to use it"
    )]
    NoRefreshToken { scope: String },
    #[error("no authorization came back within {}; run oauth-login again", humantime::format_duration(*.0))]
    TimedOut(Duration),
}

/// Runs the flow interactively: prints the consent URL on stdout and, on success, where the
/// refresh token was written.
pub async fn run(args: OAuthLoginArgs) -> Result<(), LoginError> {
    let organization = args.organization.clone();
    let path = run_with(args, |url| {
        println!("{URL_LINE_PREFIX}{url}");
        println!("Waiting for the browser to come back...");
    })
    .await?;
    println!("Wrote the refresh token to {}", path.display());
    match &organization {
        Some(name) => println!(
            "It is organisation {name}'s oauth.refresh_token_file in --config.file: an exporter polling that organisation picks the new token up at its next refresh, without a restart; otherwise start it (it rotates the token in place; never share the file between two processes)."
        ),
        None => println!(
            "Start the exporter with --qonto.oauth.refresh-token-file={} (it rotates the token in place; never share the file between two processes).",
            path.display()
        ),
    }
    Ok(())
}

/// The flow, with the consent URL handed to `on_url` instead of printed (tests play the
/// browser). Binds `args.redirect_listen`. Returns the path of the written refresh token.
pub async fn run_with(
    args: OAuthLoginArgs,
    on_url: impl FnOnce(String),
) -> Result<PathBuf, LoginError> {
    // Everything that can fail without the user is checked before the listener is bound and
    // the URL shown, so nobody goes through the consent screen for nothing.
    let args = args.resolved()?;
    let prepared = Prepared::new(&args)?;
    let listener = TcpListener::bind(args.redirect_listen)
        .await
        .map_err(|source| LoginError::Listen {
            addr: args.redirect_listen,
            source,
        })?;
    prepared.serve(listener, &args, on_url).await
}

/// The flow on an already-bound listener (tests bind port 0 and build `redirect_uri` from it).
pub async fn run_on(
    listener: TcpListener,
    args: OAuthLoginArgs,
    on_url: impl FnOnce(String),
) -> Result<PathBuf, LoginError> {
    let args = args.resolved()?;
    Prepared::new(&args)?.serve(listener, &args, on_url).await
}

/// Everything derived from the arguments before the network is touched.
struct Prepared {
    endpoint: TokenEndpoint,
    consent_url: String,
    callback_path: String,
    state: String,
}

impl Prepared {
    fn new(args: &OAuthLoginArgs) -> Result<Prepared, LoginError> {
        let client_secret = match &args.client_secret {
            Some(s) => s.clone(),
            None => resolve_client_secret(
                args.client_secret_file.as_deref(),
                std::env::var(CLIENT_SECRET_ENV).ok(),
            )?,
        };
        check_writable(args.refresh_token_file()).map_err(LoginError::RefreshTokenFile)?;
        let redirect =
            reqwest::Url::parse(&args.redirect_uri).map_err(|e| LoginError::InvalidUrl {
                what: "--redirect-uri",
                url: args.redirect_uri.clone(),
                reason: e.to_string(),
            })?;
        reqwest::Url::parse(&args.token_url).map_err(|e| LoginError::InvalidUrl {
            what: "--qonto.oauth.token-url",
            url: args.token_url.clone(),
            reason: e.to_string(),
        })?;
        let state = random_state();
        let consent_url = consent_url(args, &state)?;
        // The exporter's own client: it follows no redirect, so the client secret posted to the
        // token endpoint can never be replayed to wherever a redirect points.
        let http = http_client(TOKEN_TIMEOUT).map_err(LoginError::HttpClient)?;
        Ok(Prepared {
            endpoint: TokenEndpoint::new(
                http,
                args.token_url.clone(),
                args.client_id().to_owned(),
                client_secret,
            ),
            consent_url,
            callback_path: redirect.path().to_owned(),
            state,
        })
    }

    async fn serve(
        self,
        listener: TcpListener,
        args: &OAuthLoginArgs,
        on_url: impl FnOnce(String),
    ) -> Result<PathBuf, LoginError> {
        let (tx, mut rx) = mpsc::channel::<Callback>(4);
        let shared = Arc::new(Listener {
            state: self.state,
            callback_path: self.callback_path,
            tx,
        });
        on_url(self.consent_url);

        let graceful = GracefulShutdown::new();
        let flow = async {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (stream, _) = accepted.map_err(LoginError::Server)?;
                        let shared = shared.clone();
                        let service = service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(shared.handle(req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            // A browser closing its connection early is not our failure.
                            let _ = conn.await;
                        });
                    }
                    Some(callback) = rx.recv() => {
                        let (outcome, reply) = finish(&self.endpoint, args, callback).await;
                        // The handler may be gone if the browser hung up; the result stands.
                        let _ = reply.send(match &outcome {
                            Ok(_) => Page::success(),
                            Err(e) => Page::failure(e),
                        });
                        return outcome;
                    }
                }
            }
        };
        let outcome = match tokio::time::timeout(args.timeout, flow).await {
            Ok(outcome) => outcome,
            Err(_) => Err(LoginError::TimedOut(args.timeout)),
        };
        // Let the final page reach the browser before the listener goes away.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
        outcome
    }
}

/// Exchanges the code (or reports the refusal) and writes the refresh token.
async fn finish(
    endpoint: &TokenEndpoint,
    args: &OAuthLoginArgs,
    callback: Callback,
) -> (Result<PathBuf, LoginError>, oneshot::Sender<Page>) {
    match callback {
        Callback::Denied {
            error,
            description,
            reply,
        } => (Err(LoginError::Denied { error, description }), reply),
        Callback::Code { code, reply } => {
            let outcome = async {
                let tokens = endpoint
                    .exchange_code(&code, &args.redirect_uri)
                    .await
                    .map_err(LoginError::Exchange)?;
                let refresh = tokens
                    .refresh_token
                    .ok_or_else(|| LoginError::NoRefreshToken {
                        scope: args.scope.clone(),
                    })?;
                write_secret_file_atomic(args.refresh_token_file(), &refresh)
                    .map_err(LoginError::RefreshTokenFile)?;
                Ok(args.refresh_token_file().to_owned())
            }
            .await;
            (outcome, reply)
        }
    }
}

/// Reads the client secret from the file or the environment variable's value; exactly one.
fn resolve_client_secret(file: Option<&Path>, env: Option<String>) -> Result<Secret, LoginError> {
    match secret_from_file_or_value(file, env) {
        Ok(Some(secret)) => Ok(secret),
        Ok(None) => Err(LoginError::MissingClientSecret),
        Err(SecretSourceError::Both) => Err(LoginError::AmbiguousClientSecret),
        Err(SecretSourceError::File(e)) => Err(LoginError::ClientSecretFile(e)),
    }
}

/// 43 alphanumeric characters: about 256 bits, URL-safe without encoding.
fn random_state() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(43)
        .map(char::from)
        .collect()
}

fn consent_url(args: &OAuthLoginArgs, state: &str) -> Result<String, LoginError> {
    let url = reqwest::Url::parse_with_params(
        &args.auth_url,
        [
            ("client_id", args.client_id()),
            ("redirect_uri", args.redirect_uri.as_str()),
            ("response_type", "code"),
            ("scope", args.scope.as_str()),
            ("state", state),
        ],
    )
    .map_err(|e| LoginError::InvalidUrl {
        what: "--qonto.oauth.auth-url",
        url: args.auth_url.clone(),
        reason: e.to_string(),
    })?;
    Ok(url.into())
}

/// What a valid redirect brought back, with the way to answer the browser once it is handled.
enum Callback {
    Code {
        code: String,
        reply: oneshot::Sender<Page>,
    },
    Denied {
        error: String,
        description: Option<String>,
        reply: oneshot::Sender<Page>,
    },
}

/// State shared by the connections of the redirect listener.
struct Listener {
    state: String,
    callback_path: String,
    tx: mpsc::Sender<Callback>,
}

impl Listener {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != self.callback_path {
            return Page::new(StatusCode::NOT_FOUND, "Not found", "Nothing here.").into_response();
        }
        let query: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| form_urlencoded_pairs(q.as_bytes()))
            .unwrap_or_default();
        let get = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let state_ok = get("state")
            .map(|s| bool::from(s.as_bytes().ct_eq(self.state.as_bytes())))
            .unwrap_or(false);
        if !state_ok {
            return Page::new(
                StatusCode::BAD_REQUEST,
                "Login link not recognised",
                "This redirect does not carry the state of the running oauth-login (missing or wrong \
                 `state`). Use the URL that oauth-login printed; it keeps waiting.",
            )
            .into_response();
        }
        let (reply, answer) = oneshot::channel();
        let callback = if let Some(error) = get("error") {
            Callback::Denied {
                error,
                description: get("error_description"),
                reply,
            }
        } else if let Some(code) = get("code").filter(|c| !c.is_empty()) {
            Callback::Code { code, reply }
        } else {
            return Page::new(
                StatusCode::BAD_REQUEST,
                "No authorization code",
                "The redirect carries neither `code` nor `error`.",
            )
            .into_response();
        };
        if self.tx.send(callback).await.is_err() {
            return Page::over().into_response();
        }
        answer
            .await
            .unwrap_or_else(|_| Page::over())
            .into_response()
    }
}

fn form_urlencoded_pairs(query: &[u8]) -> Vec<(String, String)> {
    // reqwest's Url does the decoding for us; a dummy base gives it a full URL to parse.
    let mut url = match reqwest::Url::parse("http://localhost/") {
        Ok(u) => u,
        Err(_) => return Vec::new(),
    };
    url.set_query(Some(&String::from_utf8_lossy(query)));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A small HTML page for the browser.
struct Page {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl Page {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Page {
        Page {
            status,
            title,
            message: message.into(),
        }
    }

    fn success() -> Page {
        Page::new(
            StatusCode::OK,
            "qonto-exporter is authorized",
            "The refresh token has been saved. You can close this tab.",
        )
    }

    fn failure(e: &LoginError) -> Page {
        let status = match e {
            LoginError::Denied { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Page::new(
            status,
            "qonto-exporter login failed",
            format!("{e}. The terminal running oauth-login says more. You can close this tab."),
        )
    }

    fn over() -> Page {
        Page::new(
            StatusCode::GONE,
            "Login already over",
            "This oauth-login run has finished. You can close this tab.",
        )
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let body = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{message}</p></body></html>\n",
            title = crate::html::escape(self.title),
            message = crate::html::escape(&self.message),
        );
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        // The page must not be cached: the URL holds a one-time code.
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        // The listener lives only for this flow; do not keep connections around.
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const CLIENT_SECRET: &str = "login-client-secret-value";

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OAuthLoginArgs,
    }

    fn http() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    /// A local authorization server: the consent endpoint redirects at once to the
    /// `redirect_uri` it was given, with `code=test-code` (or the given error) and the state.
    struct AuthServer {
        server: MockServer,
    }

    impl AuthServer {
        async fn start(token_body: serde_json::Value, redirect_extra: &'static str) -> AuthServer {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path("/oauth2/auth"))
                .respond_with(move |req: &wiremock::Request| {
                    let get = |name: &str| {
                        req.url
                            .query_pairs()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default()
                    };
                    let mut location = match reqwest::Url::parse(&get("redirect_uri")) {
                        Ok(u) => u,
                        Err(_) => return ResponseTemplate::new(400),
                    };
                    location.set_query(Some(redirect_extra));
                    location
                        .query_pairs_mut()
                        .append_pair("state", &get("state"));
                    ResponseTemplate::new(302).insert_header("location", location.as_str())
                })
                .mount(&server)
                .await;
            Mock::given(method("POST"))
                .and(path("/oauth2/token"))
                .and(body_string_contains("grant_type=authorization_code"))
                .and(body_string_contains("code=test-code"))
                .and(body_string_contains(format!(
                    "client_secret={CLIENT_SECRET}"
                )))
                .respond_with(ResponseTemplate::new(200).set_body_json(token_body))
                .mount(&server)
                .await;
            AuthServer { server }
        }
    }

    struct Setup {
        args: OAuthLoginArgs,
        listener: TcpListener,
        callback: String,
        _dir: tempfile::TempDir,
    }

    async fn setup(auth: &AuthServer) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let callback = format!("http://{}/callback", listener.local_addr().unwrap());
        let uri = auth.server.uri();
        let cli = Cli::parse_from([
            "oauth-login",
            "--qonto.oauth.client-id=my-client",
            &format!("--qonto.oauth.client-secret-file={}", secret_file.display()),
            &format!("--qonto.oauth.auth-url={uri}/oauth2/auth"),
            &format!("--qonto.oauth.token-url={uri}/oauth2/token"),
            &format!(
                "--qonto.oauth.refresh-token-file={}",
                dir.path().join("refresh-token").display()
            ),
            &format!("--redirect-uri={callback}"),
            "--timeout=20s",
        ]);
        Setup {
            args: cli.args,
            listener,
            callback,
            _dir: dir,
        }
    }

    /// Starts the flow in the background and returns the consent URL it handed out.
    async fn start(
        setup: Setup,
    ) -> (
        String,
        String,
        PathBuf,
        tokio::task::JoinHandle<Result<PathBuf, LoginError>>,
        tempfile::TempDir,
    ) {
        let (tx, rx) = oneshot::channel();
        let token_file = setup.args.refresh_token_file().to_owned();
        let task = tokio::spawn(run_on(setup.listener, setup.args, move |url| {
            let _ = tx.send(url);
        }));
        let url = rx.await.unwrap();
        (url, setup.callback, token_file, task, setup._dir)
    }

    #[test]
    fn defaults_match_qonto_production() {
        let cli = Cli::parse_from([
            "oauth-login",
            "--qonto.oauth.client-id=c",
            "--qonto.oauth.refresh-token-file=/tmp/x",
        ]);
        let a = cli.args;
        assert_eq!(a.auth_url, "https://oauth.qonto.com/oauth2/auth");
        assert_eq!(a.token_url, "https://oauth.qonto.com/oauth2/token");
        assert_eq!(a.redirect_listen, "127.0.0.1:10159".parse().unwrap());
        assert_eq!(a.redirect_uri, "http://127.0.0.1:10159/callback");
        assert_eq!(a.scope, "payment_link.read offline_access");
        assert_eq!(a.timeout, Duration::from_secs(600));
    }

    #[test]
    fn client_secret_comes_from_exactly_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(
            resolve_client_secret(Some(&file), None).unwrap().expose(),
            "from-file"
        );
        assert_eq!(
            resolve_client_secret(None, Some("from-env".into()))
                .unwrap()
                .expose(),
            "from-env"
        );
        assert!(matches!(
            resolve_client_secret(Some(&file), Some("x".into())),
            Err(LoginError::AmbiguousClientSecret)
        ));
        assert!(matches!(
            resolve_client_secret(None, Some("  ".into())),
            Err(LoginError::MissingClientSecret)
        ));
    }

    #[test]
    fn states_are_long_random_and_url_safe() {
        let a = random_state();
        let b = random_state();
        assert_ne!(a, b);
        assert!(a.len() >= 22, "at least 128 bits");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            crate::html::escape("<script>\"x\" & 'y'"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;"
        );
    }

    #[tokio::test]
    async fn end_to_end_login_writes_the_refresh_token() {
        let auth = AuthServer::start(
            serde_json::json!({
                "access_token": "access-xyz",
                "refresh_token": "refresh-xyz",
                "expires_in": 3600,
                "token_type": "bearer",
                "scope": "payment_link.read offline_access",
            }),
            "code=test-code",
        )
        .await;
        let (url, callback, token_file, task, _dir) = start(setup(&auth).await).await;

        // The consent URL carries what the authorization server needs.
        let parsed = reqwest::Url::parse(&url).unwrap();
        let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(q["client_id"], "my-client");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["redirect_uri"], callback);
        assert_eq!(q["scope"], "payment_link.read offline_access");
        assert!(q["state"].len() >= 22);

        let browser = http();
        // A forged redirect (wrong or missing state) is refused and the flow keeps waiting.
        for forged in [
            format!("{callback}?code=test-code&state=forged"),
            format!("{callback}?code=test-code"),
        ] {
            let r = browser.get(&forged).send().await.unwrap();
            assert_eq!(r.status(), 400);
        }
        let r = browser
            .get(format!("{callback}/../other"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert!(!task.is_finished());

        // The real browser: consent page → 302 → loopback listener.
        let r = browser.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("close this tab"));

        let written = task.await.unwrap().unwrap();
        assert_eq!(written, token_file);
        assert_eq!(
            std::fs::read_to_string(&token_file).unwrap(),
            "refresh-xyz\n"
        );
    }

    /// `--config.file` and `--organization`: the client, its secret, the token URL and the
    /// token file come from that organisation's entry.
    #[tokio::test]
    async fn the_config_file_names_client_secret_and_token_file() {
        let auth = AuthServer::start(
            serde_json::json!({"access_token": "a", "refresh_token": "refresh-cfg", "expires_in": 3600}),
            "code=test-code",
        )
        .await;
        let mut s = setup(&auth).await;
        let dir = s._dir.path().to_owned();
        let token_file = dir.join("globex.refresh-token");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "organizations:\n  - name: acme\n    access_token_env: NOT_READ_HERE\n  - name: globex\n    oauth:\n      client_id: cfg-client\n      client_secret_file: {}\n      refresh_token_file: {}\n      token_url: {}/oauth2/token\n",
                dir.join("client-secret").display(),
                token_file.display(),
                auth.server.uri()
            ),
        )
        .unwrap();
        s.args.config_file = Some(config.clone());
        s.args.organization = Some("globex".into());
        s.args.client_id = None;
        s.args.client_secret_file = None;
        s.args.refresh_token_file = None;
        s.args.token_url = "http://127.0.0.1:9/unused".into();
        let wrong = OAuthLoginArgs {
            organization: Some("nobody".into()),
            ..s.args.clone()
        };
        let e = wrong.resolved().unwrap_err().to_string();
        assert!(e.contains("nobody") && e.contains("config.yml"), "{e}");
        let (url, _, _, task, _dir) = start(s).await;
        let q: std::collections::HashMap<_, _> = reqwest::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(q["client_id"], "cfg-client");
        assert_eq!(http().get(&url).send().await.unwrap().status(), 200);
        assert_eq!(task.await.unwrap().unwrap(), token_file);
        assert_eq!(
            std::fs::read_to_string(&token_file).unwrap(),
            "refresh-cfg\n"
        );
    }

    #[tokio::test]
    async fn no_refresh_token_fails_and_names_offline_access() {
        let auth = AuthServer::start(
            serde_json::json!({"access_token": "access-xyz", "expires_in": 3600}),
            "code=test-code",
        )
        .await;
        let (url, _callback, token_file, task, _dir) = start(setup(&auth).await).await;
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 500);
        assert!(r.text().await.unwrap().contains("offline_access"));
        let e = task.await.unwrap().unwrap_err();
        assert!(matches!(e, LoginError::NoRefreshToken { .. }), "{e:?}");
        assert!(e.to_string().contains("offline_access"));
        assert!(!e.to_string().contains("access-xyz"));
        assert!(!token_file.exists());
    }

    #[tokio::test]
    async fn access_denied_fails_clearly() {
        let auth = AuthServer::start(
            serde_json::json!({}),
            "error=access_denied&error_description=The+user+said+%3Cno%3E",
        )
        .await;
        let (url, _callback, token_file, task, _dir) = start(setup(&auth).await).await;
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 403);
        let page = r.text().await.unwrap();
        assert!(page.contains("access_denied") && page.contains("&lt;no&gt;"));
        let e = task.await.unwrap().unwrap_err();
        assert!(
            matches!(&e, LoginError::Denied { error, .. } if error == "access_denied"),
            "{e:?}"
        );
        assert!(!token_file.exists());
    }

    #[tokio::test]
    async fn rejected_code_fails_without_leaking_the_client_secret() {
        let auth = AuthServer::start(serde_json::json!({}), "code=stale-code").await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": "invalid_grant",
                "error_description": "code expired",
            })))
            .mount(&auth.server)
            .await;
        let (url, _callback, _token_file, task, _dir) = start(setup(&auth).await).await;
        let page = http().get(&url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("invalid_grant"));
        assert!(!page.contains(CLIENT_SECRET));
        let e = task.await.unwrap().unwrap_err();
        assert!(matches!(
            e,
            LoginError::Exchange(OAuthError::Refused { .. })
        ));
        assert!(!format!("{e} {e:?}").contains(CLIENT_SECRET));
    }

    /// The token endpoint redirects (307 keeps the method and the body, client secret included)
    /// to another server: the redirect is not followed, and nothing reaches the other server.
    #[tokio::test]
    async fn a_redirect_from_the_token_endpoint_never_carries_the_client_secret_away() {
        let elsewhere = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "a", "refresh_token": "stolen-refresh", "expires_in": 3600
            })))
            .mount(&elsewhere)
            .await;
        let auth = AuthServer::start(serde_json::json!({}), "code=test-code").await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(
                ResponseTemplate::new(307)
                    .insert_header("location", format!("{}/oauth2/token", elsewhere.uri())),
            )
            .with_priority(1)
            .mount(&auth.server)
            .await;
        let (url, _callback, token_file, task, _dir) = start(setup(&auth).await).await;
        let page = http().get(&url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("307"), "{page}");
        let e = task.await.unwrap().unwrap_err();
        assert!(
            matches!(
                e,
                LoginError::Exchange(OAuthError::Redirect { status: 307, .. })
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("not followed"), "{e}");
        assert!(!format!("{e} {e:?}").contains(CLIENT_SECRET));
        let reached = elsewhere.received_requests().await.unwrap();
        assert!(
            reached.is_empty(),
            "{} request(s) reached the redirect's target",
            reached.len()
        );
        assert!(!token_file.exists());
    }

    #[tokio::test]
    async fn gives_up_after_the_timeout() {
        let auth = AuthServer::start(serde_json::json!({}), "code=test-code").await;
        let mut s = setup(&auth).await;
        s.args.timeout = Duration::from_millis(100);
        let (_url, _callback, _token_file, task, _dir) = start(s).await;
        let e = task.await.unwrap().unwrap_err();
        assert!(matches!(e, LoginError::TimedOut(_)), "{e:?}");
    }

    #[tokio::test]
    async fn an_unwritable_token_path_fails_before_the_url_is_shown() {
        let auth = AuthServer::start(serde_json::json!({}), "code=test-code").await;
        let mut s = setup(&auth).await;
        s.args.refresh_token_file = Some(PathBuf::from("/nonexistent-dir/refresh-token"));
        let mut shown = false;
        let e = run_on(s.listener, s.args, |_| shown = true)
            .await
            .unwrap_err();
        assert!(matches!(e, LoginError::RefreshTokenFile(_)), "{e:?}");
        assert!(!shown);
    }
}
