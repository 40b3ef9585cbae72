//! `qonto-exporter simulate`: the simulator as a standalone server, for black-box tests,
//! benchmarks and docker-compose. Prints exactly one line, `listening on http://IP:PORT`, to
//! stdout once bound (so a test can start it with `--listen 127.0.0.1:0` and read the port), then
//! serves until SIGINT or SIGTERM.
//!
//! `--organizations N` serves N organisations on the one listener, `org-1` to `org-N`, each reached
//! with its own fake API key `org-K:secret-K`, so an exporter watching several organisations can be
//! tested against one address; the rate-limit windows count all of them together, as Qonto's
//! per-IP limits do.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use super::{
    DateForm, FaultRates, InvalidKind, RateLimits, RateWindow, SimConfig, SimConfigError, SimOAuth,
    SimOrganization, Simulator, SpecVariants,
};

/// Most organisations `--organizations` accepts: each holds `--links` links in memory.
pub const MAX_ORGANIZATIONS: usize = 1000;

/// Flags of the `simulate` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Address to listen on; port 0 picks a free port (the line printed at start tells which).
    #[arg(long, default_value = "127.0.0.1:10158")]
    pub listen: SocketAddr,

    /// Number of payment links generated at start (in each organisation).
    #[arg(long, default_value_t = 3000)]
    pub links: usize,

    /// Seed of the generator: the same seed gives the same organisation. Organisation K of
    /// --organizations gets seed + K - 1 (wrapping).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Number of organisations served on the one listener (1 to 1000), named org-1 to org-N.
    /// With N ≥ 2, organisation K is reached with the fake API key `Authorization:
    /// org-K:secret-K`; org-1 also takes the credential flags below (--api-key, if given,
    /// replaces its key) and every organisation requires --staging-token, if given. The rate
    /// limits count the requests of all organisations together, as Qonto's per-IP limits do.
    /// With 1 (the default), one organisation reached with the credential flags alone.
    #[arg(long, default_value = "1", value_name = "N", value_parser = parse_organizations)]
    pub organizations: usize,

    /// Latency added to every API response (e.g. `50ms`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,

    /// Interval of the background evolution (links paid, expired, created), or `off`.
    #[arg(long, default_value = "5s", value_parser = parse_evolve_every)]
    pub evolve_every: EvolveEvery,

    /// Accepted Bearer token(s), comma-separated. Without any credential flag and with one
    /// organisation, any non-empty Bearer token is accepted.
    #[arg(
        long,
        env = "SIM_ACCESS_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub access_token: Vec<String>,

    /// Accepted API key, as `LOGIN:SECRET` (sent by clients as `Authorization: LOGIN:SECRET`).
    #[arg(long, env = "SIM_API_KEY", value_parser = parse_api_key, hide_env_values = true)]
    pub api_key: Option<(String, String)>,

    /// Require this `X-Qonto-Staging-Token`; requests without it get a 200 HTML page, like the sandbox.
    #[arg(long, env = "SIM_STAGING_TOKEN", hide_env_values = true)]
    pub staging_token: Option<String>,

    /// OAuth client id; with the client secret, enables /oauth2/token and /oauth2/auth.
    #[arg(long, env = "SIM_OAUTH_CLIENT_ID", requires = "oauth_client_secret")]
    pub oauth_client_id: Option<String>,

    /// OAuth client secret.
    #[arg(
        long,
        env = "SIM_OAUTH_CLIENT_SECRET",
        requires = "oauth_client_id",
        hide_env_values = true
    )]
    pub oauth_client_secret: Option<String>,

    /// A refresh token valid at start (it rotates on first use, like Qonto's).
    #[arg(
        long,
        env = "SIM_OAUTH_REFRESH_TOKEN",
        requires = "oauth_client_id",
        hide_env_values = true
    )]
    pub oauth_refresh_token: Option<String>,

    /// Lifetime of OAuth access tokens.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// How long a used refresh token keeps working after its first use.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub refresh_token_grace: Duration,

    /// Probability (0–1) that a list request gets a 429.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_429: f64,

    /// `Retry-After` value sent with random 429s (none by default, as Qonto documents none).
    #[arg(long)]
    pub fault_retry_after: Option<String>,

    /// Probability that a list request gets a 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_500: f64,

    /// Probability that a list request gets a 503.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_503: f64,

    /// Probability that the connection is closed without an answer.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_reset: f64,

    /// Probability of a 200 HTML page instead of JSON.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_html: f64,

    /// Probability that an answer is delayed by `--fault-slow-delay`.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_slow: f64,

    /// Delay of slow answers.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub fault_slow_delay: Duration,

    /// Probability of a 200 with JSON cut in the middle.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_truncate: f64,

    /// Probability of a 200 with JSON missing `meta`.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_malformed: f64,

    /// Probability that one link of a page has an invalid amount, currency or expiration date.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_invalid_link: f64,

    /// Qonto's short rate-limit window, enforced: at most N API requests in any rolling DURATION
    /// (Qonto's: 1000/10s), beyond which a 429 with the API's error body; `off` to enforce none.
    /// Every API request counts but /oauth2/* (another host at Qonto); refused ones do not.
    /// Off by default, so benchmarks of the exporter's own speed are not throttled; scale it down
    /// (e.g. 100/1s) to test the exporter's budget in seconds.
    #[arg(long, default_value = "off", value_name = "N/DURATION|off", value_parser = parse_rate_window)]
    pub rate_limit_short: RateWindowFlag,

    /// Qonto's long rate-limit window (Qonto's: 10000/10m), or `off`; both windows apply.
    #[arg(long, default_value = "off", value_name = "N/DURATION|off", value_parser = parse_rate_window)]
    pub rate_limit_long: RateWindowFlag,

    /// Send `Retry-After` (seconds until the full window has room) with rate-limit 429s. Qonto
    /// documents none, so none is sent by default.
    #[arg(long)]
    pub rate_limit_retry_after: bool,

    /// Most API requests kept in the request log (`GET /_sim/requests`); the oldest make way.
    #[arg(long, default_value_t = super::DEFAULT_REQUEST_LOG_CAPACITY)]
    pub request_log_capacity: usize,

    /// Subscribe this callback URL to the first organisation's payment-link and connection
    /// events at start (as POST /v2/webhook_subscriptions would): https, or http to a loopback
    /// host. Needs --webhook-secret-file.
    #[arg(long, value_name = "URL", requires = "webhook_secret_file")]
    pub webhook_url: Option<String>,

    /// File holding the secret (32 to 128 characters) that signs the deliveries to
    /// --webhook-url; its first line is used.
    #[arg(long, value_name = "PATH", requires = "webhook_url")]
    pub webhook_secret_file: Option<std::path::PathBuf>,

    /// Spec-valid variations (boxed: they would make `simulate` the one large command).
    #[command(flatten)]
    pub variants: Box<VariantArgs>,
}

/// Flags of the spec-valid variations ([`SpecVariants`]), each off by default.
#[derive(clap::Args, Debug, Clone)]
pub struct VariantArgs {
    /// Forms of `expiration_date` (and `created_at`), comma-separated; each link is written in
    /// one of them, chosen by its id: utc (2030-01-01T00:00:00Z), offset (…T01:00:00+01:00),
    /// offset-no-colon (…+0100), no-offset (…T00:00:00, meaning UTC), no-seconds (…T00:00Z),
    /// fractional (…T00:00:00.250Z), null and absent (paid and canceled links only; beyond the
    /// spec, which requires a string).
    #[arg(long, value_delimiter = ',', default_value = "utc")]
    pub date_forms: Vec<DateForm>,

    /// Share (0–1) of links whose status, currency and resource type (each drawn on its own)
    /// are written in another letter case: OPEN, eur, invoice…
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub other_case_share: f64,

    /// Share of links invoiced in JPY (no decimals) or KWD (three decimals), half each.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub minor_unit_currency_share: f64,

    /// Share of links written with an unusable value on every request (see --invalid-link-kinds).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub invalid_link_share: f64,

    /// Kinds of unusable value of --invalid-link-share, comma-separated, one per link: amount
    /// ("12,5O"), currency ("euro"), expiration_date ("tomorrow"), amount_number ("value": 12.5)
    /// or id_number ("id": 123).
    #[arg(long, value_delimiter = ',', default_value = "amount_number")]
    pub invalid_link_kinds: Vec<InvalidKind>,

    /// Terminal links that move at each evolution step: a reusable paid link reopens, a canceled
    /// link becomes expired, or a terminal link disappears (0: terminal links never change).
    #[arg(long, default_value_t = 0)]
    pub terminal_moves_per_step: usize,
}

/// The background evolution interval; `None` is `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvolveEvery(pub Option<Duration>);

fn parse_evolve_every(s: &str) -> Result<EvolveEvery, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(EvolveEvery(None));
    }
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be a positive duration (e.g. 5s) or `off`".to_owned()),
        Ok(d) => Ok(EvolveEvery(Some(d))),
        Err(e) => Err(format!("{e}; expected a duration such as 5s, or `off`")),
    }
}

/// A rate-limit window flag; `None` is `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindowFlag(pub Option<RateWindow>);

fn parse_rate_window(s: &str) -> Result<RateWindowFlag, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(RateWindowFlag(None));
    }
    s.parse::<RateWindow>()
        .map(|w| RateWindowFlag(Some(w)))
        .map_err(|e| format!("{e}, or `off`"))
}

fn parse_organizations(s: &str) -> Result<usize, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_ORGANIZATIONS as u64).contains(&n) => Ok(n as usize),
        _ => Err(format!(
            "expected a number of organisations from 1 to {MAX_ORGANIZATIONS}"
        )),
    }
}

fn parse_api_key(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((login, secret)) if !login.is_empty() && !secret.is_empty() => {
            Ok((login.to_owned(), secret.to_owned()))
        }
        _ => Err("expected LOGIN:SECRET".to_owned()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

/// Why `simulate` stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(
        "cannot listen on {addr}: {source} (is another process using the port? try --listen 127.0.0.1:0)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("invalid simulator configuration: {0}")]
    Config(#[from] SimConfigError),
    #[error("--webhook-secret-file: {0}")]
    WebhookSecret(crate::secret::SecretFileError),
    #[error("--webhook-url: {0}")]
    Webhook(super::SubscriptionError),
}

impl SimulateArgs {
    /// The configuration these flags describe.
    pub fn to_config(&self) -> SimConfig {
        let oauth = match (&self.oauth_client_id, &self.oauth_client_secret) {
            (Some(id), Some(secret)) => Some(SimOAuth {
                access_token_ttl: self.access_token_ttl,
                grace: self.refresh_token_grace,
                ..SimOAuth::new(
                    id,
                    secret,
                    self.oauth_refresh_token.clone().unwrap_or_default(),
                )
            }),
            _ => None,
        };
        let faults = FaultRates {
            too_many_requests: self.fault_rate_429,
            retry_after: self.fault_retry_after.clone(),
            internal_error: self.fault_rate_500,
            unavailable: self.fault_rate_503,
            reset: self.fault_rate_reset,
            html: self.fault_rate_html,
            slow: self.fault_rate_slow,
            slow_delay: self.fault_slow_delay,
            truncate: self.fault_rate_truncate,
            malformed: self.fault_rate_malformed,
            invalid_link: self.fault_rate_invalid_link,
        };
        let variants = SpecVariants {
            date_forms: self.variants.date_forms.clone(),
            other_case_share: self.variants.other_case_share,
            minor_unit_currency_share: self.variants.minor_unit_currency_share,
            invalid_link_share: self.variants.invalid_link_share,
            invalid_link_kinds: self.variants.invalid_link_kinds.clone(),
            terminal_moves_per_step: self.variants.terminal_moves_per_step,
        };
        let staging_token = self.staging_token.clone().filter(|t| !t.is_empty());
        // Checked by the flag's parser; clamped again for configurations built in code.
        let organizations = self.organizations.clamp(1, MAX_ORGANIZATIONS);
        let several = organizations > 1;
        // Organisation K (1-based): its name, seed and, among several, its own API key.
        let name = |k: usize| format!("org-{k}");
        let seed = |k: usize| self.seed.wrapping_add(k as u64 - 1);
        let generated_key = |k: usize| several.then(|| (name(k), format!("secret-{k}")));
        let more_organizations = (2..=organizations)
            .map(|k| SimOrganization {
                links: self.links,
                seed: seed(k),
                evolve_every: self.evolve_every.0,
                api_key: generated_key(k),
                staging_token: staging_token.clone(),
                faults: faults.clone(),
                variants: variants.clone(),
                ..SimOrganization::new(name(k))
            })
            .collect();
        SimConfig {
            name: name(1),
            links: self.links,
            seed: seed(1),
            evolve_every: self.evolve_every.0,
            latency: self.latency,
            access_tokens: self
                .access_token
                .iter()
                .filter(|t| !t.is_empty())
                .cloned()
                .collect(),
            api_key: self.api_key.clone().or_else(|| generated_key(1)),
            staging_token,
            oauth,
            rate_limits: self.rate_limits(),
            request_log_capacity: self.request_log_capacity,
            faults,
            variants,
            more_organizations,
        }
    }

    /// The enforced windows, `None` when both are off (the default).
    fn rate_limits(&self) -> Option<RateLimits> {
        let windows: Vec<RateWindow> = [self.rate_limit_short.0, self.rate_limit_long.0]
            .into_iter()
            .flatten()
            .collect();
        (!windows.is_empty()).then_some(RateLimits {
            windows,
            retry_after: self.rate_limit_retry_after,
        })
    }
}

/// Runs `simulate`: generates, binds, prints `listening on http://IP:PORT`, serves until
/// SIGINT/SIGTERM, then shuts down gracefully.
pub async fn run_simulate(args: SimulateArgs) -> Result<(), SimError> {
    let cfg = args.to_config();
    let organizations = 1 + cfg.more_organizations.len();
    if organizations == 1 && !cfg.first_organization().has_credentials() {
        tracing::info!(
            "simulator: no credential configured, any non-empty Bearer token is accepted"
        );
    }
    if organizations > 1 {
        tracing::info!(
            organizations,
            "simulator: organisations org-1 to org-{organizations}, organisation K reached with the header `Authorization: org-K:secret-K`{}; control endpoints take ?organization=org-K",
            if args.api_key.is_some() {
                " (org-1: the --api-key given)"
            } else {
                ""
            }
        );
    }
    let links = cfg.links;
    let rate_limits = cfg.rate_limits.as_ref().map_or_else(
        || "off".to_owned(),
        |l| {
            l.windows
                .iter()
                .map(RateWindow::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        },
    );
    let sim = Simulator::try_new(cfg)?;
    if let (Some(url), Some(file)) = (&args.webhook_url, &args.webhook_secret_file) {
        let secret = crate::secret::read_secret_file(file).map_err(SimError::WebhookSecret)?;
        let first_line = secret.expose().lines().next().unwrap_or_default().trim();
        let sub = sim
            .subscribe_webhook(url, first_line)
            .map_err(SimError::Webhook)?;
        tracing::info!(subscription = %sub.id, callback_url = %sub.callback_url, "simulator: webhook subscription made");
    }
    let running = sim
        .start(args.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: args.listen,
            source,
        })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", running.base_url())
        .and_then(|()| out.flush())
        .map_err(SimError::Stdout)?;
    drop(out);
    tracing::info!(addr = %running.addr, links, %rate_limits, "simulator serving");
    wait_for_signal().await?;
    tracing::info!("simulator shutting down");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), SimError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(SimError::Signal)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(SimError::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(SimError::Signal)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(argv: &[&str]) -> Result<SimulateArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("simulate").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_and_flags() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.listen.to_string(), "127.0.0.1:10158");
        assert_eq!((a.links, a.seed), (3000, 1));
        assert_eq!(a.evolve_every, EvolveEvery(Some(Duration::from_secs(5))));
        let a = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--evolve-every",
            "off",
            "--latency",
            "20ms",
            "--api-key",
            "acme:s3cr3t",
            "--oauth-client-id",
            "c",
            "--oauth-client-secret",
            "s",
            "--fault-rate-429",
            "0.05",
        ])
        .unwrap();
        let cfg = a.to_config();
        assert_eq!(cfg.evolve_every, None);
        assert_eq!(cfg.latency, Duration::from_millis(20));
        assert_eq!(cfg.api_key, Some(("acme".into(), "s3cr3t".into())));
        assert_eq!(cfg.oauth.map(|o| o.client_id), Some("c".into()));
        assert_eq!(cfg.faults.too_many_requests, 0.05);
        assert!(parse(&["--fault-rate-500", "1.5"]).is_err());
        assert!(parse(&["--api-key", "nocolon"]).is_err());
        assert!(parse(&["--evolve-every", "0s"]).is_err());
    }

    #[test]
    fn rate_limit_flags() {
        let cfg = parse(&[]).unwrap().to_config();
        assert_eq!(cfg.rate_limits, None, "off by default");
        assert_eq!(
            cfg.request_log_capacity,
            crate::simulator::DEFAULT_REQUEST_LOG_CAPACITY
        );
        let cfg = parse(&[
            "--rate-limit-short",
            "1000/10s",
            "--rate-limit-long",
            "10000/10m",
            "--request-log-capacity",
            "50",
        ])
        .unwrap()
        .to_config();
        assert_eq!(cfg.rate_limits, Some(RateLimits::qonto()));
        assert_eq!(cfg.request_log_capacity, 50);
        let cfg = parse(&[
            "--rate-limit-short",
            "off",
            "--rate-limit-long",
            "20/2s",
            "--rate-limit-retry-after",
        ])
        .unwrap()
        .to_config();
        assert_eq!(
            cfg.rate_limits,
            Some(RateLimits {
                windows: vec![RateWindow {
                    limit: 20,
                    period: Duration::from_secs(2)
                }],
                retry_after: true
            })
        );
        for bad in ["1000", "0/10s", "10/0s", "on", "1000/10"] {
            assert!(parse(&["--rate-limit-short", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_variant_flags() {
        assert_eq!(
            parse(&[]).unwrap().to_config().variants,
            SpecVariants::default()
        );
        let cfg = parse(&[
            "--date-forms",
            "utc,no-offset,offset-no-colon,null",
            "--other-case-share",
            "0.2",
            "--minor-unit-currency-share",
            "0.3",
            "--invalid-link-share",
            "0.01",
            "--invalid-link-kinds",
            "amount_number,id_number",
            "--terminal-moves-per-step",
            "2",
        ])
        .unwrap()
        .to_config();
        assert_eq!(
            cfg.variants,
            SpecVariants {
                date_forms: vec![
                    DateForm::Utc,
                    DateForm::NoOffset,
                    DateForm::OffsetNoColon,
                    DateForm::Null
                ],
                other_case_share: 0.2,
                minor_unit_currency_share: 0.3,
                invalid_link_share: 0.01,
                invalid_link_kinds: vec![InvalidKind::AmountNumber, InvalidKind::IdNumber],
                terminal_moves_per_step: 2,
            }
        );
        assert!(parse(&["--date-forms", "rfc2822"]).is_err());
        assert!(parse(&["--invalid-link-kinds", "amount-number"]).is_err());
        assert!(parse(&["--other-case-share", "2"]).is_err());
    }

    #[test]
    fn organizations_flag() {
        // One organisation (the default): unchanged, credentials from the flags alone.
        let cfg = parse(&["--seed", "7"]).unwrap().to_config();
        assert_eq!((cfg.name.as_str(), cfg.seed), ("org-1", 7));
        assert_eq!(cfg.api_key, None);
        assert!(cfg.more_organizations.is_empty());

        let cfg = parse(&[
            "--organizations",
            "3",
            "--links",
            "10",
            "--seed",
            "7",
            "--access-token",
            "tok",
            "--staging-token",
            "st",
            "--evolve-every",
            "off",
        ])
        .unwrap()
        .to_config();
        assert_eq!(cfg.name, "org-1");
        assert_eq!(cfg.api_key, Some(("org-1".into(), "secret-1".into())));
        assert_eq!(
            cfg.access_tokens,
            ["tok"],
            "org-1 keeps the credential flags"
        );
        let more: Vec<_> = cfg
            .more_organizations
            .iter()
            .map(|o| {
                (
                    o.name.as_str(),
                    o.links,
                    o.seed,
                    o.api_key.clone().unwrap(),
                    o.staging_token.as_deref(),
                    o.access_tokens.len(),
                    o.evolve_every,
                )
            })
            .collect();
        assert_eq!(
            more,
            [
                (
                    "org-2",
                    10,
                    8,
                    ("org-2".into(), "secret-2".into()),
                    Some("st"),
                    0,
                    None
                ),
                (
                    "org-3",
                    10,
                    9,
                    ("org-3".into(), "secret-3".into()),
                    Some("st"),
                    0,
                    None
                ),
            ]
        );
        let sim = Simulator::try_new(cfg).expect("a valid configuration");
        assert_eq!(sim.organizations().len(), 3);
        assert_eq!(sim.organization("org-3").map(|o| o.len()), Some(10));

        // --api-key replaces org-1's key; one that is another organisation's is refused.
        let cfg = parse(&["--organizations", "2", "--api-key", "acme:s"])
            .unwrap()
            .to_config();
        assert_eq!(cfg.api_key, Some(("acme".into(), "s".into())));
        let cfg = parse(&["--organizations", "2", "--api-key", "org-2:s"])
            .unwrap()
            .to_config();
        let e = Simulator::try_new(cfg).err().expect("an ambiguous key");
        assert!(e.to_string().contains("API key login"), "{e}");
        // Seeds wrap instead of overflowing.
        let cfg = parse(&["--organizations", "2", "--seed", &u64::MAX.to_string()])
            .unwrap()
            .to_config();
        assert_eq!(cfg.more_organizations[0].seed, 0);

        assert_eq!(
            parse(&["--organizations", "1000"]).unwrap().organizations,
            1000
        );
        for bad in ["0", "1001", "99999999999", "-1", "three", "", "1e3"] {
            // `--flag=value`, so that `-1` is not read as a flag of its own.
            let flag = format!("--organizations={bad}");
            let e = parse(&[&flag]).expect_err(bad).to_string();
            assert!(
                e.contains("--organizations") && e.contains("from 1 to 1000"),
                "{bad}: {e}"
            );
        }
        // Built in code beyond the parser's range: clamped.
        let mut args = parse(&["--links", "1"]).unwrap();
        args.organizations = usize::MAX;
        assert_eq!(
            args.to_config().more_organizations.len(),
            MAX_ORGANIZATIONS - 1
        );
        args.organizations = 0;
        assert!(args.to_config().more_organizations.is_empty());
    }
}
