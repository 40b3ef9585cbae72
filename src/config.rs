//! The command line: flags (each also an environment variable), validation, and the one-line
//! errors (exit code 2) a user can act on.
//!
//! Secrets are never flag values (they would show in `ps`): each comes from a file named by a
//! flag, or from an environment variable holding the secret itself.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::aggregate::{Limits, Window};
use crate::healthcheck::HealthcheckArgs;
use crate::oauth_login::OAuthLoginArgs;
use crate::qonto::budget::{BudgetConfig, DEFAULT_SHARE};
use crate::rate_window::RateWindow;
use crate::secret::{
    Secret, SecretSourceError, check_writable, read_secret_file, secret_from_file_or_value,
};
use crate::simulator::SimulateArgs;

/// The default port: 9100–9999 are all allocated on the Prometheus wiki; newer exporters take
/// 10000+.
pub const DEFAULT_PORT: u16 = 10157;

/// qonto-exporter: Prometheus metrics for Qonto payment links.
#[derive(Debug, Parser)]
#[command(
    name = "qonto-exporter",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // Boxed: parsed once, and unboxed each would make every `Command` as large as the largest.
    /// Serve a simulated Qonto API (demo organisation, tests, benchmarks).
    Simulate(Box<SimulateArgs>),
    /// One-time OAuth authorization-code flow: writes the refresh-token file the exporter uses.
    OauthLogin(Box<OAuthLoginArgs>),
    /// Manage Qonto webhook subscriptions (subscribe, list, delete) with the exporter's
    /// credentials.
    Webhook(Box<crate::webhook::subscribe::WebhookArgs>),
    /// Probe a running exporter's /-/healthy (for container healthchecks): exit 0 if healthy.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

/// Flags of the exporter itself.
// The doc comments are the `--help` text: URLs stay bare there.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Poll a built-in simulated organisation instead of Qonto; no credentials needed. Polls every 5s unless --poll.interval is given.
    #[arg(long = "demo", env = "QONTO_DEMO", conflicts_with = "config_file")]
    pub demo: bool,
    /// YAML file of the organisations to poll (see the README); reloaded on SIGHUP (and POST /-/reload with --web.enable-lifecycle). Replaces the single-organisation credential flags; --qonto.api-url, --qonto.oauth.token-url and --poll.interval are its defaults.
    #[arg(long = "config.file", env = "QONTO_CONFIG_FILE", value_name = "PATH", conflicts_with_all = ["login", "secret_key_file", "oauth_client_id", "oauth_client_secret_file", "oauth_refresh_token_file", "access_token_file", "staging_token_file", "organization"])]
    pub config_file: Option<PathBuf>,
    /// Name of the organisation of the single-organisation flags: the `organization` label of its series.
    #[arg(long = "qonto.organization", env = "QONTO_ORGANIZATION", default_value = crate::organizations::DEFAULT_ORGANIZATION, value_name = "NAME")]
    pub organization: String,
    /// Number of replicas the organisations of --config.file are split across (rendezvous hashing of their names).
    #[arg(long = "shard.count", env = "QONTO_SHARD_COUNT", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::shard::MAX_SHARDS)), value_name = "N")]
    pub shard_count: u32,
    /// This replica's shard, from 0; when --shard.count is above 1 and this is not given, the ordinal at the end of the StatefulSet pod's name (POD_NAME, else HOSTNAME: qonto-exporter-2 is shard 2).
    #[arg(long = "shard.index", env = "QONTO_SHARD_INDEX", value_name = "I")]
    pub shard_index: Option<u32>,
    /// Enable POST /-/reload (re-reads --config.file), as Prometheus's flag of the same name.
    #[arg(long = "web.enable-lifecycle", env = "QONTO_WEB_ENABLE_LIFECYCLE")]
    pub enable_lifecycle: bool,
    /// Qonto API base URL (sandbox: https://thirdparty-sandbox.staging.qonto.co).
    #[arg(
        long = "qonto.api-url",
        env = "QONTO_API_URL",
        default_value = "https://thirdparty.qonto.com",
        value_name = "URL"
    )]
    pub api_url: String,
    /// Organisation login (slug) for API-key authentication.
    #[arg(long = "qonto.login", env = "QONTO_LOGIN", value_name = "LOGIN")]
    pub login: Option<String>,
    /// File holding the API secret key (or set QONTO_SECRET_KEY to the key itself).
    #[arg(long = "qonto.secret-key-file", value_name = "PATH")]
    pub secret_key_file: Option<PathBuf>,
    /// OAuth 2.0 client id (the endpoint's documented authentication).
    #[arg(
        long = "qonto.oauth.client-id",
        env = "QONTO_OAUTH_CLIENT_ID",
        value_name = "ID"
    )]
    pub oauth_client_id: Option<String>,
    /// File holding the OAuth client secret (or set QONTO_OAUTH_CLIENT_SECRET to the secret).
    #[arg(long = "qonto.oauth.client-secret-file", value_name = "PATH")]
    pub oauth_client_secret_file: Option<PathBuf>,
    /// File holding the OAuth refresh token; read at start, rewritten atomically on every rotation.
    #[arg(
        long = "qonto.oauth.refresh-token-file",
        env = "QONTO_OAUTH_REFRESH_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub oauth_refresh_token_file: Option<PathBuf>,
    /// OAuth token endpoint (sandbox: https://oauth-sandbox.staging.qonto.co/oauth2/token).
    #[arg(
        long = "qonto.oauth.token-url",
        env = "QONTO_OAUTH_TOKEN_URL",
        default_value = "https://oauth.qonto.com/oauth2/token",
        value_name = "URL"
    )]
    pub oauth_token_url: String,
    /// File holding a static OAuth access token (or set QONTO_ACCESS_TOKEN); expires in 1 h.
    #[arg(long = "qonto.access-token-file", value_name = "PATH")]
    pub access_token_file: Option<PathBuf>,
    /// File holding the sandbox's X-Qonto-Staging-Token (or set QONTO_STAGING_TOKEN).
    #[arg(long = "qonto.staging-token-file", value_name = "PATH")]
    pub staging_token_file: Option<PathBuf>,
    /// Timeout of one request to Qonto.
    #[arg(long = "qonto.timeout", env = "QONTO_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Attempts per request for transient faults (5xx, 429, resets, bad bodies).
    #[arg(long = "qonto.max-attempts", env = "QONTO_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20), value_name = "N")]
    pub max_attempts: u32,
    /// Longest Retry-After honoured on a 429 (at most 1h); a 429 asking for more fails its poll at once, and the next poll tries again. Qonto's longest rate-limit window is 10 minutes.
    #[arg(long = "qonto.max-retry-after", env = "QONTO_MAX_RETRY_AFTER", default_value = "10m", value_parser = parse_max_retry_after, value_name = "DURATION")]
    pub max_retry_after: Duration,
    /// Pages fetched at once once the first page has told how many there are.
    #[arg(long = "qonto.max-concurrency", env = "QONTO_MAX_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64), value_name = "N")]
    pub max_concurrency: u16,
    /// Fraction of each of Qonto's per-IP windows (1,000 requests per 10 s, 10,000 per 10 min, shared with every other integration on the IP) this exporter may use: requests go out at the short window's share (48/s at 0.5) while the 10-minute share has room, and slow down to fit it when it has none.
    #[arg(long = "qonto.budget-share", env = "QONTO_BUDGET_SHARE", default_value_t = DEFAULT_SHARE, value_parser = parse_share, value_name = "FRACTION")]
    pub budget_share: f64,
    /// An extra flat ceiling on requests per second, under the budget (none by default).
    #[arg(long = "qonto.max-requests-per-second", env = "QONTO_MAX_REQUESTS_PER_SECOND", value_parser = parse_rate, value_name = "RATE")]
    pub max_requests_per_second: Option<f64>,
    /// Qonto's short per-IP window the budget takes its share of; change it only to test against a simulator with scaled-down windows.
    #[arg(long = "qonto.rate-limit-short", env = "QONTO_RATE_LIMIT_SHORT", default_value = "1000/10s", value_parser = parse_qonto_window, value_name = "N/DURATION")]
    pub rate_limit_short: RateWindow,
    /// Qonto's long per-IP window the budget takes its share of; change it only to test against a simulator with scaled-down windows.
    #[arg(long = "qonto.rate-limit-long", env = "QONTO_RATE_LIMIT_LONG", default_value = "10000/10m", value_parser = parse_qonto_window, value_name = "N/DURATION")]
    pub rate_limit_long: RateWindow,
    /// Time between the starts of two polls; 5s with --demo when neither this flag nor QONTO_POLL_INTERVAL is set.
    #[arg(long = "poll.interval", env = "QONTO_POLL_INTERVAL", default_value = "1m", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub poll_interval: Duration,
    /// Deadline of one whole poll (retries and waits for the API budget included). The default lets a first poll walk about 47,000 pages (4.7M links) at the budget's sustained pace; a walk that needs longer logs a warning.
    #[arg(long = "poll.timeout", env = "QONTO_POLL_TIMEOUT", default_value = "2h", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub poll_timeout: Duration,
    /// A full walk of every link at least this often (0s: every poll); in between, links in a terminal status are re-read only when their count moves.
    #[arg(long = "poll.full-resync-interval", env = "QONTO_POLL_FULL_RESYNC_INTERVAL", default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub full_resync_interval: Duration,
    /// Directory for the state file (the last complete poll and the incremental memory): after a restart the figures are served at once and the first poll is incremental. Created if missing; must be writable.
    #[arg(long = "storage.path", env = "QONTO_STORAGE_PATH", value_name = "DIR")]
    pub storage_path: Option<PathBuf>,
    /// Horizons of the expiring-links gauges, comma-separated; each spelling is the `within` label.
    #[arg(long = "expiry.windows", env = "QONTO_EXPIRY_WINDOWS", default_value = "1h,24h,7d,30d", value_parser = parse_windows, value_name = "LIST")]
    pub expiry_windows: Windows,
    /// Upper bounds of the open links' age buckets (age since created_at), ascending, comma-separated: 7d,30d,60d,90d gives the `age` labels <=7d, 7d-30d, 30d-60d, 60d-90d, >90d (and unknown).
    #[arg(long = "aging.buckets", env = "QONTO_AGING_BUCKETS", default_value = "7d,30d,60d,90d", value_parser = parse_age_buckets, value_name = "LIST")]
    pub aging_buckets: crate::aggregate::AgeBuckets,
    /// Read the payments (GET /v2/payment_links/{id}/payments) of at most this many links a poll sees becoming paid: payments by status and method, and the exact paid_at for the time to pay. 0 (the default; 100 with --demo unless given) reads none; each read costs one request of the budget (more for a link with over 100 payments).
    #[arg(long = "collect.payments", env = "QONTO_COLLECT_PAYMENTS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000), value_name = "N")]
    pub collect_payments: u32,
    /// Address to serve on; `:PORT` means every interface.
    #[arg(long = "web.listen-address", env = "QONTO_WEB_LISTEN_ADDRESS", default_value = ":10157", value_parser = parse_listen, value_name = "ADDR")]
    pub listen_address: SocketAddr,
    /// Path of the metrics.
    #[arg(long = "web.telemetry-path", env = "QONTO_WEB_TELEMETRY_PATH", default_value = "/metrics", value_parser = parse_path, value_name = "PATH")]
    pub telemetry_path: String,
    /// exporter-toolkit web config (TLS, basic auth) YAML file.
    #[arg(
        long = "web.config.file",
        env = "QONTO_WEB_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub web_config_file: Option<PathBuf>,
    /// Address of the webhook receiver (off unless given): its own listener, as it faces the internet while the metrics stay internal; `:PORT` means every interface. Needs --webhook.secret-file or QONTO_WEBHOOK_SECRET.
    #[arg(long = "webhook.listen-address", env = "QONTO_WEBHOOK_LISTEN_ADDRESS", value_parser = parse_listen, value_name = "ADDR")]
    pub webhook_listen_address: Option<SocketAddr>,
    /// Path Qonto delivers to: PATH/ORGANIZATION routes to that organisation, PATH alone to the only one configured.
    #[arg(long = "webhook.path", env = "QONTO_WEBHOOK_PATH", default_value = DEFAULT_WEBHOOK_PATH, value_parser = parse_webhook_path, value_name = "PATH")]
    pub webhook_path: String,
    /// File of the webhook subscription secrets, one a line (two during a rotation; blank lines and # comments skipped), re-read when it changes (or set QONTO_WEBHOOK_SECRET to the secret).
    #[arg(long = "webhook.secret-file", value_name = "PATH")]
    pub webhook_secret_file: Option<PathBuf>,
    /// exporter-toolkit web config YAML file for the webhook listener: TLS and headers (basic_auth_users is refused: Qonto sends no credentials).
    #[arg(
        long = "webhook.web-config.file",
        env = "QONTO_WEBHOOK_WEB_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub webhook_web_config_file: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long = "log.level", env = "QONTO_LOG_LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"], value_name = "LEVEL")]
    pub log_level: String,
    /// Log format.
    #[arg(
        long = "log.format",
        env = "QONTO_LOG_FORMAT",
        default_value = "logfmt",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// The expiry windows, in flag order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows(pub Vec<Window>);

/// Credentials resolved from flags, files and environment.
#[derive(Debug)]
pub enum CredentialSource {
    Demo,
    ApiKey {
        login: String,
        secret_key: Secret,
    },
    AccessToken(Secret),
    OAuth {
        client_id: String,
        client_secret: Secret,
        refresh_token_file: PathBuf,
        refresh_token: Secret,
        token_url: String,
    },
}

impl CredentialSource {
    /// The non-secret parts that name whose figures these are (for the state file's identity):
    /// the kind, and the login or OAuth client id. Never a secret.
    pub fn public_identity(&self) -> Vec<&str> {
        match self {
            CredentialSource::Demo => vec!["demo"],
            CredentialSource::ApiKey { login, .. } => vec!["api-key", login],
            CredentialSource::AccessToken(_) => vec!["access-token"],
            CredentialSource::OAuth { client_id, .. } => vec!["oauth", client_id],
        }
    }
}

/// `--webhook.path`'s default.
pub const DEFAULT_WEBHOOK_PATH: &str = "/webhooks/qonto";

/// The webhook receiver's settings, resolved and loaded (see [`RunArgs::webhook`]).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub listen_address: SocketAddr,
    /// `--webhook.path`, without a trailing slash.
    pub path: String,
    /// The secrets, kept current from `--webhook.secret-file` while the receiver runs.
    pub secrets: std::sync::Arc<crate::webhook::secrets::WebhookSecrets>,
    /// TLS and headers of `--webhook.web-config.file`; never basic auth.
    pub web: Option<std::sync::Arc<crate::webconfig::WebConfig>>,
}

/// A configuration error: one line, naming the flag or variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// A secret from a file flag or an environment variable holding the value: exactly one.
pub fn secret_from(
    file: Option<&Path>,
    flag: &str,
    var: &str,
) -> Result<Option<Secret>, ConfigError> {
    secret_from_file_or_value(file, std::env::var(var).ok()).map_err(|e| match e {
        SecretSourceError::Both => err(format!(
            "{flag} and {var} are both set; give the secret in one place"
        )),
        SecretSourceError::File(e) => err(format!("{flag}: {e}")),
    })
}

impl RunArgs {
    /// Works out the credentials, refusing missing, partial or competing ones.
    pub fn credentials(&self) -> Result<CredentialSource, ConfigError> {
        let key = secret_from(
            self.secret_key_file.as_deref(),
            "--qonto.secret-key-file",
            "QONTO_SECRET_KEY",
        )?;
        let access = secret_from(
            self.access_token_file.as_deref(),
            "--qonto.access-token-file",
            "QONTO_ACCESS_TOKEN",
        )?;
        let client_secret = secret_from(
            self.oauth_client_secret_file.as_deref(),
            "--qonto.oauth.client-secret-file",
            "QONTO_OAUTH_CLIENT_SECRET",
        )?;
        let api_key_given = self.login.is_some() || key.is_some();
        let oauth_given = self.oauth_client_id.is_some()
            || client_secret.is_some()
            || self.oauth_refresh_token_file.is_some();
        let given: Vec<&str> = [
            (api_key_given, "API key (--qonto.login, QONTO_SECRET_KEY)"),
            (oauth_given, "OAuth (--qonto.oauth.*)"),
            (access.is_some(), "access token (QONTO_ACCESS_TOKEN)"),
        ]
        .iter()
        .filter(|(g, _)| *g)
        .map(|(_, n)| *n)
        .collect();
        if self.demo {
            if !given.is_empty() {
                return Err(err(format!(
                    "--demo: cannot be combined with credentials ({}); drop --demo to poll Qonto",
                    given.join(", ")
                )));
            }
            return Ok(CredentialSource::Demo);
        }
        if given.len() > 1 {
            return Err(err(format!(
                "two kinds of credentials given: {}; choose one",
                given.join(" and ")
            )));
        }
        if api_key_given {
            let login = self.login.clone().ok_or_else(|| {
                err("--qonto.login (QONTO_LOGIN) is required with the API secret key")
            })?;
            let secret_key = key.ok_or_else(|| {
                err("--qonto.secret-key-file or QONTO_SECRET_KEY is required with --qonto.login")
            })?;
            return Ok(CredentialSource::ApiKey { login, secret_key });
        }
        if let Some(token) = access {
            return Ok(CredentialSource::AccessToken(token));
        }
        if oauth_given {
            let client_id = self.oauth_client_id.clone().ok_or_else(|| {
                err("--qonto.oauth.client-id (QONTO_OAUTH_CLIENT_ID) is required for OAuth")
            })?;
            let client_secret = client_secret.ok_or_else(|| {
                err("--qonto.oauth.client-secret-file or QONTO_OAUTH_CLIENT_SECRET is required for OAuth")
            })?;
            let file = self.oauth_refresh_token_file.clone().ok_or_else(|| {
                err("--qonto.oauth.refresh-token-file is required for OAuth (run `qonto-exporter oauth-login` to create it)")
            })?;
            let refresh_token = read_secret_file(&file).map_err(|e| {
                err(format!(
                    "--qonto.oauth.refresh-token-file: {e} (run `qonto-exporter oauth-login` to create it)"
                ))
            })?;
            check_writable(&file).map_err(|e| {
                err(format!(
                    "--qonto.oauth.refresh-token-file: {e}; the file is rewritten on every token rotation, so it must be writable"
                ))
            })?;
            check_url("--qonto.oauth.token-url", &self.oauth_token_url)?;
            return Ok(CredentialSource::OAuth {
                client_id,
                client_secret,
                refresh_token_file: file,
                refresh_token,
                token_url: self.oauth_token_url.clone(),
            });
        }
        Err(err(
            "no credentials: set OAuth (--qonto.oauth.client-id, QONTO_OAUTH_CLIENT_SECRET, --qonto.oauth.refresh-token-file), an API key (--qonto.login, QONTO_SECRET_KEY) or QONTO_ACCESS_TOKEN; or run with --demo",
        ))
    }

    /// The webhook receiver's settings: `None` without `--webhook.listen-address`. Reads the
    /// secrets and the web config now, so a mistake stops the start (exit 2).
    pub fn webhook(&self) -> Result<Option<WebhookConfig>, ConfigError> {
        self.webhook_with(std::env::var("QONTO_WEBHOOK_SECRET").ok())
    }

    /// [`RunArgs::webhook`] with the value of `QONTO_WEBHOOK_SECRET` given (tests).
    pub fn webhook_with(
        &self,
        secret_value: Option<String>,
    ) -> Result<Option<WebhookConfig>, ConfigError> {
        use crate::webhook::secrets::WebhookSecrets;
        let Some(listen_address) = self.webhook_listen_address else {
            return Ok(None);
        };
        if listen_address == self.listen_address {
            return Err(err(format!(
                "--webhook.listen-address: {listen_address} is also --web.listen-address; the webhook receiver needs its own port"
            )));
        }
        let secret_value = secret_value.filter(|v| !v.trim().is_empty());
        let secrets = match (&self.webhook_secret_file, secret_value) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "--webhook.secret-file and QONTO_WEBHOOK_SECRET are both set; give the secrets in one place",
                ));
            }
            (Some(path), None) => WebhookSecrets::from_file(path)
                .map_err(|e| err(format!("--webhook.secret-file: {e}")))?,
            (None, Some(v)) => WebhookSecrets::from_value(&Secret::new(v))
                .map_err(|e| err(format!("QONTO_WEBHOOK_SECRET: {e}")))?,
            (None, None) => {
                return Err(err(
                    "--webhook.listen-address needs the webhook secret: --webhook.secret-file (one secret per line) or QONTO_WEBHOOK_SECRET",
                ));
            }
        };
        let web = match &self.webhook_web_config_file {
            None => None,
            Some(path) => {
                let w = crate::webconfig::WebConfig::load(path)
                    .map_err(|e| err(format!("--webhook.web-config.file: {e}")))?;
                if w.requires_auth() {
                    return Err(err(
                        crate::webhook::receiver::WebhookError::BasicAuth.to_string()
                    ));
                }
                Some(std::sync::Arc::new(w))
            }
        };
        Ok(Some(WebhookConfig {
            listen_address,
            path: self.webhook_path.clone(),
            secrets: std::sync::Arc::new(secrets),
            web,
        }))
    }

    /// The staging token, if any.
    pub fn staging_token(&self) -> Result<Option<Secret>, ConfigError> {
        secret_from(
            self.staging_token_file.as_deref(),
            "--qonto.staging-token-file",
            "QONTO_STAGING_TOKEN",
        )
    }

    /// Checks what clap cannot check alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("--qonto.api-url", &self.api_url)?;
        if self.rate_limit_short.period >= self.rate_limit_long.period {
            return Err(err(format!(
                "--qonto.rate-limit-short ({}) must be a shorter window than --qonto.rate-limit-long ({})",
                self.rate_limit_short, self.rate_limit_long
            )));
        }
        if self.shard_count > 1 && self.config_file.is_none() {
            return Err(err(
                "--shard.count: sharding splits the organisations of --config.file; without it there is one organisation to poll",
            ));
        }
        self.shard()?;
        if let Some(p) = &self.web_config_file {
            if !p.is_file() {
                return Err(err(format!(
                    "--web.config.file: {} is not a readable file",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    /// This replica's shard: `--shard.index`, else the ordinal of the pod's name when
    /// `--shard.count` is above 1.
    pub fn shard(&self) -> Result<crate::shard::Shard, ConfigError> {
        let index = match self.shard_index {
            Some(i) => i,
            None if self.shard_count <= 1 => 0,
            None => {
                let pod = std::env::var("POD_NAME")
                    .or_else(|_| std::env::var("HOSTNAME"))
                    .unwrap_or_default();
                crate::shard::ordinal(&pod).ok_or_else(|| {
                    err(format!(
                        "--shard.index: not given, and the pod name {pod:?} (POD_NAME, else HOSTNAME) does not end in a StatefulSet ordinal such as -2"
                    ))
                })?
            }
        };
        crate::shard::Shard::new(index, self.shard_count).map_err(err)
    }

    /// The request budget.
    pub fn budget(&self) -> BudgetConfig {
        BudgetConfig {
            share: self.budget_share,
            short: self.rate_limit_short,
            long: self.rate_limit_long,
            max_requests_per_second: self.max_requests_per_second,
        }
    }

    /// The label ceilings (fixed; documented in the README).
    pub fn limits(&self) -> Limits {
        Limits::default()
    }
}

pub(crate) fn check_url(flag: &str, value: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(err(format!("{flag}: {value:?} is not an http(s) URL"))),
        Err(e) => Err(err(format!("{flag}: {value:?} is not a URL: {e}"))),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 30s, 5m or 1h30m)"))
}

pub(crate) fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// Longest `--qonto.max-retry-after`: a longer pause would stall every later poll too.
const MAX_RETRY_AFTER_LIMIT: Duration = Duration::from_secs(3600);

fn parse_max_retry_after(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_RETRY_AFTER_LIMIT {
        return Err("must be at most 1h (a longer pause would stall every later poll)".into());
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1000.0 => Ok(r),
        _ => Err("expected a number of requests per second, above 0 and at most 1000".into()),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err("expected a fraction above 0 and at most 1 (0.5: half of each window)".into()),
    }
}

/// Shortest and longest window the budget accepts.
const WINDOW_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(86_400));

fn parse_qonto_window(s: &str) -> Result<RateWindow, String> {
    let w: RateWindow = s.parse()?;
    if w.period < WINDOW_RANGE.0 || w.period > WINDOW_RANGE.1 {
        return Err(format!("{s:?}: the duration must be from 100ms to 1d"));
    }
    Ok(w)
}

fn parse_windows(s: &str) -> Result<Windows, String> {
    let mut windows: Vec<Window> = Vec::new();
    for label in s.split(',').map(str::trim) {
        if label.is_empty() {
            return Err("empty window in the list".into());
        }
        let duration = parse_positive_duration(label).map_err(|e| format!("{label:?}: {e}"))?;
        if windows.iter().any(|w| w.duration == duration) {
            return Err(format!("{label:?} repeats another window"));
        }
        windows.push(Window {
            label: label.to_owned(),
            duration,
        });
    }
    Ok(Windows(windows))
}

/// Most `--aging.buckets` bounds: each adds a series per currency and resource type.
const MAX_AGE_BOUNDS: usize = 12;

fn parse_age_buckets(s: &str) -> Result<crate::aggregate::AgeBuckets, String> {
    let mut bounds = Vec::new();
    for label in s.split(',').map(str::trim) {
        if label.is_empty() {
            return Err("empty bound in the list".into());
        }
        let d = parse_positive_duration(label).map_err(|e| format!("{label:?}: {e}"))?;
        bounds.push((label.to_owned(), d));
    }
    if bounds.len() > MAX_AGE_BOUNDS {
        return Err(format!("at most {MAX_AGE_BOUNDS} bounds"));
    }
    crate::aggregate::AgeBuckets::new(bounds)
        .ok_or_else(|| "bounds must be strictly ascending (e.g. 7d,30d,60d,90d)".into())
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: the port must be a number from 0 to 65535"))?;
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not HOST:PORT or :PORT (e.g. 127.0.0.1:{DEFAULT_PORT})"))
}

fn parse_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s == "/" || s.starts_with("/-/") || s.contains(char::is_whitespace) {
        return Err("must start with / and not be / or /-/… (those are the landing page and health endpoints)".into());
    }
    Ok(s.to_owned())
}

/// `--webhook.path`: absolute, not `/`, no trailing slash (organisations are appended as
/// `/NAME`), no query or fragment.
fn parse_webhook_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/')
        || s.ends_with('/')
        || s.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
    {
        return Err(
            "must start with /, not end with / (organisations are appended as /NAME), and hold no space, ? or #".into(),
        );
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("qonto-exporter").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let cli = parse(&["--demo"]).unwrap();
        assert!(cli.run.demo);
        assert_eq!(cli.run.poll_interval, Duration::from_secs(60));
        assert_eq!(
            cli.run.max_retry_after,
            crate::qonto::client::DEFAULT_MAX_RETRY_AFTER
        );
        assert_eq!(cli.run.listen_address.port(), DEFAULT_PORT);
        assert_eq!(cli.run.budget(), BudgetConfig::default());
        let labels: Vec<_> = cli
            .run
            .expiry_windows
            .0
            .iter()
            .map(|w| w.label.as_str())
            .collect();
        assert_eq!(labels, ["1h", "24h", "7d", "30d"]);
        assert!(matches!(cli.run.credentials(), Ok(CredentialSource::Demo)));
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--poll.interval", "soon"][..], "--poll.interval"),
            (&["--poll.interval", "0s"][..], "--poll.interval"),
            (
                &["--web.listen-address", "localhost"][..],
                "--web.listen-address",
            ),
            (&["--expiry.windows", "1h,,2h"][..], "--expiry.windows"),
            (&["--aging.buckets", "30d,7d"][..], "--aging.buckets"),
            (&["--aging.buckets", "7d,7d"][..], "--aging.buckets"),
            (&["--aging.buckets", "0s"][..], "--aging.buckets"),
            (
                &["--aging.buckets", "99999999999999999y"][..],
                "--aging.buckets",
            ),
            (
                &[
                    "--aging.buckets",
                    "1d,2d,3d,4d,5d,6d,7d,8d,9d,10d,11d,12d,13d",
                ][..],
                "--aging.buckets",
            ),
            (
                &["--web.telemetry-path", "metrics"][..],
                "--web.telemetry-path",
            ),
            (
                &["--qonto.max-requests-per-second", "0"][..],
                "--qonto.max-requests-per-second",
            ),
            (
                &["--qonto.max-retry-after", "2h"][..],
                "--qonto.max-retry-after",
            ),
            (&["--qonto.budget-share", "0"][..], "--qonto.budget-share"),
            (&["--qonto.budget-share", "1.5"][..], "--qonto.budget-share"),
            (
                &["--qonto.rate-limit-short", "10/0s"][..],
                "--qonto.rate-limit-short",
            ),
            (
                &["--qonto.rate-limit-long", "10/1ms"][..],
                "--qonto.rate-limit-long",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.to_string().contains(flag), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn budget_flags() {
        let cli = parse(&[
            "--demo",
            "--qonto.budget-share",
            "0.25",
            "--qonto.max-requests-per-second",
            "20",
            "--qonto.rate-limit-short",
            "100/1s",
            "--qonto.rate-limit-long",
            "600/20s",
        ])
        .unwrap();
        assert_eq!(
            cli.run.budget(),
            BudgetConfig {
                share: 0.25,
                short: "100/1s".parse().unwrap(),
                long: "600/20s".parse().unwrap(),
                max_requests_per_second: Some(20.0),
            }
        );
        assert!(cli.run.validate().is_ok());
        let cli = parse(&["--demo", "--qonto.rate-limit-short", "100/10m"]).unwrap();
        let e = cli.run.validate().unwrap_err().0;
        assert!(e.contains("--qonto.rate-limit-short"), "{e}");
    }

    #[test]
    fn listen_address_forms() {
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap().to_string(),
            "127.0.0.1:1"
        );
        assert_eq!(parse_listen(":9").unwrap().port(), 9);
        assert_eq!(parse_listen("[::1]:9").unwrap().port(), 9);
    }

    #[test]
    fn credentials_must_be_one_kind() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k").unwrap();
        let tok = dir.path().join("tok");
        std::fs::write(&tok, "t").unwrap();
        let key = key.to_str().unwrap();
        let tok = tok.to_str().unwrap();
        let cli = parse(&["--qonto.login", "acme", "--qonto.secret-key-file", key]).unwrap();
        assert!(matches!(
            cli.run.credentials(),
            Ok(CredentialSource::ApiKey { .. })
        ));
        let cli = parse(&["--qonto.secret-key-file", key]).unwrap();
        assert!(
            cli.run
                .credentials()
                .unwrap_err()
                .0
                .contains("--qonto.login")
        );
        let cli = parse(&[
            "--qonto.login",
            "acme",
            "--qonto.secret-key-file",
            key,
            "--qonto.access-token-file",
            tok,
        ])
        .unwrap();
        assert!(cli.run.credentials().unwrap_err().0.contains("two kinds"));
        let cli = parse(&["--qonto.oauth.client-id", "c"]).unwrap();
        let e = cli.run.credentials().unwrap_err().0;
        assert!(
            e.contains("QONTO_OAUTH_CLIENT_SECRET") || e.contains("refresh-token-file"),
            "{e}"
        );
        let cli = parse(&["--demo", "--qonto.access-token-file", tok]).unwrap();
        assert!(cli.run.credentials().unwrap_err().0.contains("--demo"));
    }

    #[test]
    fn webhook_flags() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::write(&secrets, "# rotation\nold-secret\nnew-secret\n").unwrap();
        let secrets = secrets.to_str().unwrap();
        // Off by default, whatever else is given.
        let cli = parse(&["--demo", "--webhook.secret-file", secrets]).unwrap();
        assert!(cli.run.webhook_with(None).unwrap().is_none());
        assert_eq!(cli.run.webhook_path, "/webhooks/qonto");
        let cli = parse(&[
            "--demo",
            "--webhook.listen-address",
            "127.0.0.1:9999",
            "--webhook.secret-file",
            secrets,
        ])
        .unwrap();
        let w = cli.run.webhook_with(None).unwrap().unwrap();
        assert_eq!(w.listen_address.port(), 9999);
        assert_eq!(w.secrets.len(), 2);
        assert!(!format!("{w:?}").contains("secret\""));
        assert!(!format!("{w:?}").contains("new-secret"));
        // No secret: one line naming the flag.
        let cli = parse(&["--demo", "--webhook.listen-address", ":9999"]).unwrap();
        let e = cli.run.webhook_with(None).unwrap_err().0;
        assert!(
            e.contains("--webhook.secret-file") && !e.contains('\n'),
            "{e}"
        );
        let w = cli
            .run
            .webhook_with(Some("test-secret".into()))
            .unwrap()
            .unwrap();
        assert_eq!(w.secrets.len(), 1);
        // Both: refused, quoting no secret.
        let cli = parse(&[
            "--demo",
            "--webhook.listen-address",
            ":9999",
            "--webhook.secret-file",
            secrets,
        ])
        .unwrap();
        let e = cli.run.webhook_with(Some("S3CR3T".into())).unwrap_err().0;
        assert!(e.contains("both") && !e.contains("S3CR3T"), "{e}");
        // The port of /metrics.
        let cli = parse(&["--demo", "--webhook.listen-address", ":10157"]).unwrap();
        let e = cli.run.webhook_with(Some("s".into())).unwrap_err().0;
        assert!(e.contains("its own port"), "{e}");
        for bad in ["webhooks", "/webhooks/", "/", "/a b", "/a?b"] {
            let e = parse(&["--demo", "--webhook.path", bad]).unwrap_err();
            assert!(e.to_string().contains("--webhook.path"), "{e}");
        }
        let e = parse(&["--demo", "--webhook.listen-address", "nowhere"]).unwrap_err();
        assert!(e.to_string().contains("--webhook.listen-address"), "{e}");
    }

    #[test]
    fn a_webhook_web_config_with_basic_auth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("web.yml");
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&web, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let cli = parse(&[
            "--demo",
            "--webhook.listen-address",
            ":9999",
            "--webhook.web-config.file",
            web.to_str().unwrap(),
        ])
        .unwrap();
        let e = cli.run.webhook_with(Some("s".into())).unwrap_err().0;
        assert!(
            e.contains("basic_auth_users") && e.contains("--webhook.web-config.file"),
            "{e}"
        );
        std::fs::write(&web, "").unwrap();
        assert!(
            cli.run
                .webhook_with(Some("s".into()))
                .unwrap()
                .unwrap()
                .web
                .is_some()
        );
    }
}
