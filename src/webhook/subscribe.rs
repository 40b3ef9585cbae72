//! `qonto-exporter webhook subscribe|list|delete`: manages Qonto webhook subscriptions with the
//! exporter's own credentials, so that the receiver (`--webhook.listen-address`) gets events.
//!
//! Why it is shaped this way:
//! - The credentials are the exporter's, resolved by the exporter's own code (the same flags,
//!   environment variables and `--config.file` entries), so what works for polling works here.
//!   Qonto documents an OAuth bearer token for these endpoints; prefer a static access token
//!   (`QONTO_ACCESS_TOKEN` or `--qonto.access-token-file`). With only a refresh token, the
//!   command must refresh it, and Qonto rotates refresh tokens: the new one is written back to
//!   the same file atomically, exactly as the exporter does, and a note says so on stderr. A
//!   running exporter using that file takes the new token up at its next refresh (it re-reads
//!   the file before refreshing and adopts a token it never held), so it needs no restart.
//! - `subscribe` needs `--secret-file`, the file the receiver reads with
//!   `--webhook.secret-file`. A missing or empty file gets a fresh secret (64 hex characters
//!   from a CSPRNG seeded by the operating system), written with mode 0600 atomically *before* the request,
//!   so a subscription never exists with a secret nobody kept; a file holding one secret is
//!   reused as is and never rewritten. Nothing secret is ever printed: only the subscription's
//!   id, types and callback URL.
//! - Exit status: 2 for a bad command line or configuration (one line naming the flag), 1 for a
//!   refusal or failure of the API (one line).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Cli, CredentialSource};
use crate::qonto::auth::Credentials;
use crate::qonto::oauth_session::{OAuthSession, RefreshObserver};
use crate::secret::{Secret, SecretFileError};

/// Longest callback URL Qonto accepts.
pub const MAX_CALLBACK_URL_LEN: usize = 512;
/// Shortest and longest secrets Qonto accepts.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 32..=128;
/// The event types the exporter uses, subscribed by default.
pub const DEFAULT_TYPES: &str = "v1/payment-links,v1/payment-links-connections";
/// Longest subscription id accepted on the command line (ids are uuids).
const MAX_ID_LEN: usize = 128;
/// Largest API answer read (a list of subscriptions is a few KiB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// `qonto-exporter webhook …`
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    #[command(subcommand)]
    pub command: WebhookCommand,
}

/// The subcommands of `webhook`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a callback URL (the exporter's webhook receiver) to events; prints the
    /// subscription's id, types and callback URL, never its secret.
    Subscribe(SubscribeArgs),
    /// List the subscriptions: id, callback URL, types and description, one per line.
    List(ApiArgs),
    /// Delete a subscription by id.
    Delete(DeleteArgs),
}

/// Flags of `webhook subscribe`.
#[derive(Debug, Clone, clap::Args)]
pub struct SubscribeArgs {
    /// Where Qonto delivers: the public URL of the exporter's webhook receiver, e.g.
    /// https://hooks.example.com/webhooks/qonto/ORG. https, at most 512 characters (http only to
    /// a loopback host, for tests).
    #[arg(long = "callback-url", value_name = "URL")]
    pub callback_url: String,

    /// The secret that signs deliveries, one line; the receiver's --webhook.secret-file. A
    /// missing or empty file gets a new random secret (mode 0600); a file holding one secret is
    /// reused and never rewritten.
    #[arg(long = "secret-file", value_name = "PATH")]
    pub secret_file: PathBuf,

    /// A description shown in Qonto's listing.
    #[arg(long = "description", value_name = "TEXT")]
    pub description: Option<String>,

    /// Event types, comma-separated.
    #[arg(long = "types", value_delimiter = ',', default_value = DEFAULT_TYPES, value_name = "LIST")]
    pub types: Vec<String>,

    #[command(flatten)]
    pub api: ApiArgs,
}

/// Flags of `webhook delete`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// The subscription's id (as `webhook list` shows it).
    #[arg(value_name = "ID")]
    pub id: String,

    #[command(flatten)]
    pub api: ApiArgs,
}

/// Where the API is and the exporter's credentials for it: the exporter's flags (and their
/// environment variables), or one organisation of its --config.file.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The exporter's --config.file: take the API URL and credentials of --organization's entry.
    #[arg(long = "config.file", value_name = "PATH", requires = "organization", conflicts_with_all = ["login", "secret_key_file", "client_id", "client_secret_file", "refresh_token_file", "access_token_file", "staging_token_file"])]
    pub config_file: Option<PathBuf>,

    /// The organisation of --config.file.
    #[arg(long = "organization", value_name = "NAME", requires = "config_file")]
    pub organization: Option<String>,

    /// API base URL (sandbox: https://thirdparty-sandbox.staging.qonto.co).
    #[arg(
        long = "qonto.api-url",
        env = "QONTO_API_URL",
        default_value = "https://thirdparty.qonto.com",
        value_name = "URL"
    )]
    pub api_url: String,

    /// File holding a static OAuth access token (preferred: nothing is rotated). Alternatively
    /// the token itself in QONTO_ACCESS_TOKEN.
    #[arg(long = "qonto.access-token-file", value_name = "PATH")]
    pub access_token_file: Option<PathBuf>,

    /// OAuth client id, with the refresh-token file (which is then rotated and rewritten).
    #[arg(
        long = "qonto.oauth.client-id",
        env = "QONTO_OAUTH_CLIENT_ID",
        value_name = "ID"
    )]
    pub client_id: Option<String>,

    /// File holding the OAuth client secret (or QONTO_OAUTH_CLIENT_SECRET).
    #[arg(long = "qonto.oauth.client-secret-file", value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,

    /// The exporter's refresh-token file: rotated by this command, the new token written back.
    #[arg(long = "qonto.oauth.refresh-token-file", value_name = "PATH")]
    pub refresh_token_file: Option<PathBuf>,

    /// Qonto's token endpoint.
    #[arg(
        long = "qonto.oauth.token-url",
        default_value = "https://oauth.qonto.com/oauth2/token",
        value_name = "URL"
    )]
    pub token_url: String,

    /// Organisation login, with QONTO_SECRET_KEY or --qonto.secret-key-file (Qonto documents
    /// OAuth for webhooks: an API key may be refused).
    #[arg(long = "qonto.login", env = "QONTO_LOGIN", value_name = "LOGIN")]
    pub login: Option<String>,

    /// File holding the API secret key.
    #[arg(long = "qonto.secret-key-file", value_name = "PATH")]
    pub secret_key_file: Option<PathBuf>,

    /// File holding the sandbox's staging token (or QONTO_STAGING_TOKEN).
    #[arg(long = "qonto.staging-token-file", value_name = "PATH")]
    pub staging_token_file: Option<PathBuf>,

    /// Timeout of each request.
    #[arg(long = "qonto.timeout", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// Why a `webhook` command failed. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum WebhookCliError {
    /// A flag's value is unusable (exit 2).
    #[error("{flag}: {detail}")]
    Flag { flag: &'static str, detail: String },
    /// The credentials or the configuration are unusable (exit 2).
    #[error("{0}")]
    Config(String),
    /// The API refused or failed (exit 1).
    #[error("{0}")]
    Api(String),
}

impl WebhookCliError {
    /// The process's exit status: 2 for what the user must fix on the command line, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            WebhookCliError::Flag { .. } | WebhookCliError::Config(_) => 2,
            WebhookCliError::Api(_) => 1,
        }
    }
}

fn flag(flag: &'static str, detail: impl Into<String>) -> WebhookCliError {
    WebhookCliError::Flag {
        flag,
        detail: detail.into(),
    }
}

/// Checks a callback URL as Qonto does (https, at most [`MAX_CALLBACK_URL_LEN`] characters),
/// allowing http only to a loopback host (tests, a local simulator).
pub fn check_callback_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_CALLBACK_URL_LEN {
        return Err(format!(
            "longer than Qonto's {MAX_CALLBACK_URL_LEN} characters ({})",
            url.len()
        ));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("must be https: Qonto delivers only to https (http is allowed only to a loopback host, for tests)".into()),
        other => Err(format!("scheme {other:?}: must be https")),
    }
}

/// Runs a `webhook` subcommand; prints its result on stdout.
pub async fn run(args: WebhookArgs) -> Result<(), WebhookCliError> {
    match args.command {
        WebhookCommand::Subscribe(a) => subscribe(a).await,
        WebhookCommand::List(api) => {
            let client = Api::connect(&api).await?;
            let result = list(&client).await;
            client.finish().await;
            result
        }
        WebhookCommand::Delete(a) => {
            check_id(&a.id)?;
            let client = Api::connect(&a.api).await?;
            let result = client
                .call(reqwest::Method::DELETE, &subscription_path(&a.id), None)
                .await
                .map(|_| println!("deleted webhook subscription {}", a.id));
            client.finish().await;
            result
        }
    }
}

fn check_id(id: &str) -> Result<(), WebhookCliError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(flag(
            "ID",
            "a subscription id is letters, digits, - and _ (as `webhook list` shows it)",
        ))
    }
}

fn subscription_path(id: &str) -> String {
    format!("/v2/webhook_subscriptions/{id}")
}

async fn subscribe(a: SubscribeArgs) -> Result<(), WebhookCliError> {
    check_callback_url(&a.callback_url).map_err(|e| flag("--callback-url", e))?;
    let types: Vec<String> = a
        .types
        .iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if types.is_empty() {
        return Err(flag("--types", "give at least one event type"));
    }
    if let Some(d) = &a.description {
        if d.chars().any(char::is_control) {
            return Err(flag("--description", "control characters are not allowed"));
        }
    }
    // Credentials first: a configuration problem must not leave a new secret file behind.
    let client = Api::connect(&a.api).await?;
    let secret = match secret_for(&a.secret_file) {
        Ok(s) => s,
        Err(e) => {
            client.finish().await;
            return Err(e);
        }
    };
    let body = serde_json::json!({
        "callback_url": a.callback_url,
        "types": types,
        "secret": secret.value.expose(),
        "description": a.description,
    });
    let result = client
        .call(
            reqwest::Method::POST,
            "/v2/webhook_subscriptions",
            Some(serde_json::to_vec(&body).unwrap_or_default()),
        )
        .await
        .and_then(|answer| {
            serde_json::from_slice::<OneAnswer>(&answer).map_err(|_| {
                WebhookCliError::Api(
                    "the API answered something that is not a webhook subscription".into(),
                )
            })
        });
    client.finish().await;
    let sub = result?.webhook_subscription;
    println!("created webhook subscription {}", sub.id);
    println!("types: {}", sub.types.join(","));
    println!("callback_url: {}", sub.callback_url);
    println!(
        "secret: {} {} (give it to the receiver with --webhook.secret-file)",
        if secret.generated {
            "generated and written to"
        } else {
            "read from"
        },
        a.secret_file.display()
    );
    Ok(())
}

async fn list(client: &Api) -> Result<(), WebhookCliError> {
    let answer = client
        .call(reqwest::Method::GET, "/v2/webhook_subscriptions", None)
        .await?;
    let all: ListAnswer = serde_json::from_slice(&answer).map_err(|_| {
        WebhookCliError::Api(
            "the API answered something that is not a list of webhook subscriptions".into(),
        )
    })?;
    if all.webhook_subscriptions.is_empty() {
        eprintln!("no webhook subscription");
    }
    for s in all.webhook_subscriptions {
        println!(
            "{}\t{}\t{}\t{}",
            s.id,
            s.callback_url,
            s.types.join(","),
            s.description.unwrap_or_default()
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct SubscriptionJson {
    id: String,
    callback_url: String,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct OneAnswer {
    webhook_subscription: SubscriptionJson,
}

#[derive(Deserialize)]
struct ListAnswer {
    webhook_subscriptions: Vec<SubscriptionJson>,
}

/// The signing secret and whether this run made it (Debug shows no secret: [`Secret`] hides it).
#[derive(Debug)]
struct SigningSecret {
    value: Secret,
    generated: bool,
}

/// The secret of `path`: reused when the file holds one, generated and written (0600, atomic,
/// never over a non-empty file) when the file is missing or empty.
fn secret_for(path: &Path) -> Result<SigningSecret, WebhookCliError> {
    const FLAG: &str = "--secret-file";
    match crate::secret::read_secret_file(path) {
        Ok(content) => {
            let lines: Vec<&str> = content
                .expose()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let [one] = lines.as_slice() else {
                return Err(flag(
                    FLAG,
                    format!(
                        "{} holds {} secrets; a subscription has one (point --secret-file at a file with one line, or at a new path to generate one)",
                        path.display(),
                        lines.len()
                    ),
                ));
            };
            let len = one.chars().count();
            if !SECRET_LEN.contains(&len) {
                return Err(flag(
                    FLAG,
                    format!(
                        "the secret in {} is {len} characters long; Qonto takes {} to {} (remove the file to generate one)",
                        path.display(),
                        SECRET_LEN.start(),
                        SECRET_LEN.end()
                    ),
                ));
            }
            Ok(SigningSecret {
                value: Secret::new(*one),
                generated: false,
            })
        }
        Err(SecretFileError::Empty { .. }) => write_new_secret(path, true),
        Err(SecretFileError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            write_new_secret(path, false)
        }
        Err(e) => Err(flag(FLAG, e.to_string())),
    }
}

/// 64 hexadecimal characters (256 bits) from rand's thread generator, a CSPRNG (ChaCha)
/// seeded by the operating system.
pub fn generate_secret() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Writes a new secret to `path` through a 0600 temporary file renamed over it: over the empty
/// file when `replace_empty`, else only if `path` still does not exist.
fn write_new_secret(path: &Path, replace_empty: bool) -> Result<SigningSecret, WebhookCliError> {
    use std::io::Write;
    let fail = |e: std::io::Error| {
        flag(
            "--secret-file",
            format!("cannot write {}: {e}", path.display()),
        )
    };
    let secret = generate_secret();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // tempfile creates the file with mode 0600 on Unix.
    let mut tmp = tempfile::Builder::new()
        .prefix(".qonto-exporter-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(fail)?;
    tmp.write_all(secret.expose().as_bytes()).map_err(fail)?;
    tmp.write_all(b"\n").map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    if replace_empty {
        tmp.persist(path).map_err(|e| fail(e.error))?;
    } else {
        // Someone may have created the file since it was read: never overwrite it.
        tmp.persist_noclobber(path).map_err(|e| fail(e.error))?;
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(SigningSecret {
        value: secret,
        generated: true,
    })
}

/// A logged-in client of the API.
struct Api {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    staging: Option<Secret>,
    session: Option<OAuth>,
}

/// The OAuth session of a run, its refresh-token file, and whether it rotated the token.
struct OAuth {
    session: std::sync::Arc<OAuthSession>,
    file: PathBuf,
    rotations: std::sync::Arc<Rotations>,
}

/// The OAuth session's reports: only whether a refresh (hence a rotation) happened; failures
/// come back as errors.
#[derive(Default)]
struct Rotations(std::sync::atomic::AtomicBool);

impl RefreshObserver for Rotations {
    fn refreshed(&self, ok: bool) {
        if ok {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn persist_failed(&self) {}
    fn unsaved(&self, _unsaved: bool) {}
}

impl Api {
    /// Resolves the credentials with the exporter's own code: its flags mapped onto its
    /// command line, or its configuration file.
    async fn connect(a: &ApiArgs) -> Result<Api, WebhookCliError> {
        let config = |e: String| WebhookCliError::Config(e);
        let mut argv: Vec<std::ffi::OsString> = vec!["qonto-exporter".into()];
        let mut add = |name: &str, value: Option<std::ffi::OsString>| {
            if let Some(v) = value {
                argv.push(name.into());
                argv.push(v);
            }
        };
        add("--qonto.api-url", Some(a.api_url.clone().into()));
        add("--qonto.oauth.token-url", Some(a.token_url.clone().into()));
        if a.config_file.is_none() {
            add(
                "--qonto.access-token-file",
                a.access_token_file.clone().map(Into::into),
            );
            add(
                "--qonto.oauth.client-id",
                a.client_id.clone().map(Into::into),
            );
            add(
                "--qonto.oauth.client-secret-file",
                a.client_secret_file.clone().map(Into::into),
            );
            add(
                "--qonto.oauth.refresh-token-file",
                a.refresh_token_file.clone().map(Into::into),
            );
            add("--qonto.login", a.login.clone().map(Into::into));
            add(
                "--qonto.secret-key-file",
                a.secret_key_file.clone().map(Into::into),
            );
            add(
                "--qonto.staging-token-file",
                a.staging_token_file.clone().map(Into::into),
            );
        }
        let cli = <Cli as clap::Parser>::try_parse_from(argv).map_err(|e| {
            let text = e.to_string();
            config(
                text.lines()
                    .next()
                    .unwrap_or("invalid settings")
                    .trim_start_matches("error: ")
                    .to_owned(),
            )
        })?;
        let run = cli.run;
        let org = match (&a.config_file, &a.organization) {
            (Some(path), Some(name)) => {
                let shard = crate::shard::Shard::new(0, 1).map_err(config)?;
                crate::organizations::load(path, &run, shard)
                    .map_err(|e| config(e.0))?
                    .into_iter()
                    .find(|o| o.name == *name)
                    .ok_or_else(|| {
                        config(format!(
                            "--config.file {}: no organisation is named {name:?}",
                            path.display()
                        ))
                    })?
            }
            _ => {
                run.validate().map_err(|e| config(e.0))?;
                crate::organizations::from_flags(&run).map_err(|e| config(e.0))?
            }
        };
        let http = crate::qonto::client::http_client(a.timeout)
            .map_err(|e| WebhookCliError::Api(e.to_string()))?;
        let file = match &org.source {
            CredentialSource::OAuth {
                refresh_token_file, ..
            } => Some(refresh_token_file.clone()),
            _ => None,
        };
        let rotations = std::sync::Arc::new(Rotations::default());
        let (credentials, session) = Credentials::from_source(org.source, &http, rotations.clone())
            .ok_or_else(|| config("--demo has no Qonto subscriptions".into()))?;
        let session = session.zip(file).map(|(session, file)| OAuth {
            session,
            file,
            rotations,
        });
        Ok(Api {
            http,
            base: org.api_url.trim_end_matches('/').to_owned(),
            credentials,
            staging: org.staging_token,
            session,
        })
    }

    /// Sends one request (once more after a 401 when OAuth has a fresh token); the answer's
    /// body on a 2xx, else one line saying what the API said.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<bytes::Bytes, WebhookCliError> {
        let mut retried = false;
        loop {
            let auth = self
                .credentials
                .authorization()
                .await
                .map_err(|e| WebhookCliError::Api(e.to_string()))?;
            let header = reqwest::header::HeaderValue::from_str(auth.expose())
                .map_err(|_| WebhookCliError::Api(self.credentials.not_a_header().to_string()))?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header(reqwest::header::AUTHORIZATION, header)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(staging) = &self.staging {
                let v = reqwest::header::HeaderValue::from_str(staging.expose()).map_err(|_| {
                    WebhookCliError::Config("the staging token is not a header value".into())
                })?;
                req = req.header("X-Qonto-Staging-Token", v);
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let resp = req.send().await.map_err(|e| {
                WebhookCliError::Api(format!(
                    "{method} {path}: no answer from {}: {}",
                    self.base,
                    error_chain(&e)
                ))
            })?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                && !retried
                && self.credentials.unauthorized(&auth).await
            {
                retried = true;
                continue;
            }
            let answer = read_capped(resp).await;
            if status.is_success() {
                return Ok(answer.unwrap_or_default());
            }
            let detail = answer.as_deref().map(api_error_text).unwrap_or_default();
            return Err(WebhookCliError::Api(format!(
                "{method} {path}: the API answered {status}{detail}"
            )));
        }
    }

    /// Ends the OAuth session: a rotated refresh token is written back (bounded wait), and the
    /// user is told, since the file is shared with the exporter.
    async fn finish(&self) {
        let Some(OAuth {
            session,
            file,
            rotations,
        }) = &self.session
        else {
            return;
        };
        // A failure to save is logged by the session itself, naming the file and what to do.
        let saved = session.shutdown().await.is_ok();
        if saved && rotations.0.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!(
                "note: the OAuth refresh token was rotated and the new one written to {}; an exporter using that file takes it up at its next token refresh (no restart needed). To avoid rotations, use --qonto.access-token-file or QONTO_ACCESS_TOKEN.",
                file.display()
            );
        }
    }
}

/// An error and its causes on one line (reqwest's own text hides the cause: refused, timeout…).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads at most [`MAX_ANSWER_BYTES`] of an answer.
async fn read_capped(mut resp: reqwest::Response) -> Option<bytes::Bytes> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body.into())
}

/// `: detail (parameter)` from the API's JSON:API error body, bounded and on one line.
fn api_error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        detail: Option<String>,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        source: Option<ErrorSource>,
    }
    #[derive(Deserialize)]
    struct ErrorSource {
        #[serde(default)]
        parameter: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Errors>(body) else {
        return String::new();
    };
    let Some(first) = parsed.errors.into_iter().next() else {
        return String::new();
    };
    let mut text = first.detail.or(first.code).unwrap_or_default();
    if let Some(p) = first.source.and_then(|s| s.parameter) {
        text = format!("{p}: {text}");
    }
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if one_line.is_empty() {
        String::new()
    } else {
        format!(": {one_line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls() {
        assert!(check_callback_url("https://hooks.example.com/webhooks/qonto").is_ok());
        assert!(check_callback_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_callback_url("http://localhost/x").is_ok());
        assert!(check_callback_url("http://[::1]:1/x").is_ok());
        assert!(check_callback_url("http://hooks.example.com/").is_err());
        assert!(check_callback_url("http://127.0.0.1.example.com/").is_err());
        assert!(check_callback_url("file:///etc/passwd").is_err());
        assert!(check_callback_url("").is_err());
        let long = format!("https://e.com/{}", "a".repeat(MAX_CALLBACK_URL_LEN));
        assert!(check_callback_url(&long).unwrap_err().contains("512"));
    }

    #[test]
    fn ids_cannot_reach_another_path() {
        assert!(check_id("0b5e7d0a-1111-4222-8333-444455556666").is_ok());
        for bad in ["", "../payment_links", "a/b", "a?b", &"a".repeat(200)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_generated_reused_and_never_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let made = secret_for(&path).unwrap();
        assert!(made.generated);
        assert_eq!(made.value.expose().len(), 64);
        assert!(made.value.expose().chars().all(|c| c.is_ascii_hexdigit()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = secret_for(&path).unwrap();
        assert!(!again.generated);
        assert_eq!(again.value.expose(), made.value.expose());
        // An empty file is filled; a file of two secrets or a short one is refused, untouched.
        std::fs::write(&path, "").unwrap();
        assert!(secret_for(&path).unwrap().generated);
        std::fs::write(&path, format!("{0}\n{0}\n", "x".repeat(40))).unwrap();
        let e = secret_for(&path).unwrap_err();
        assert!(e.to_string().contains("2 secrets"), "{e}");
        std::fs::write(&path, "short\n").unwrap();
        let e = secret_for(&path).unwrap_err();
        assert!(e.to_string().starts_with("--secret-file"), "{e}");
        assert!(!e.to_string().contains("short"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short\n");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn api_errors_are_one_bounded_line() {
        let body = bytes::Bytes::from(
            r#"{"errors":[{"code":"unprocessable_entity","detail":"must be\nhttps","source":{"parameter":"callback_url"}}]}"#,
        );
        assert_eq!(api_error_text(&body), ": callback_url: must be https");
        assert_eq!(api_error_text(&bytes::Bytes::from("<html>")), "");
        let long = format!(r#"{{"errors":[{{"detail":"{}"}}]}}"#, "z".repeat(5000));
        assert!(api_error_text(&bytes::Bytes::from(long)).len() < 320);
    }
}
