//! The simulated Qonto API: a live, evolving organisation served over HTTP exactly as
//! `list-payment-links.openapi.yaml` describes `GET /v2/payment_links`, with Qonto's authentication
//! (Bearer tokens, OAuth 2.0 with rotating refresh tokens, `login:secret` API keys, the sandbox's
//! staging token) and every failure the exporter must survive, on demand.
//!
//! One listener serves one organisation or several ([`SimConfig::more_organizations`]), each
//! reached with its own credentials, while the rate limits and the request log stay per IP
//! address as at Qonto (module `organization`).
//!
//! It serves three uses: `qonto-exporter --demo` runs it in-process on loopback; `qonto-exporter
//! simulate` runs it alone for black-box tests, benchmarks and docker-compose ([`run_simulate`]); tests
//! inject faults through [`Simulator::inject`] or `POST /_sim/faults`. It follows the spec
//! strictly rather than leniently, because the exporter is later checked against independent
//! implementations of the API.
//!
//! Modules, one job each: `data` generates and evolves the links and selects pages;
//! `variants` decides how each link is spelled when spec-valid variations are switched on
//! ([`SpecVariants`]); `render` holds the JSON shapes; `query` validates parameters; `api`
//! handles HTTP requests;
//! `organization` one organisation's state and handle; `routing` which organisation a request's
//! credentials select;
//! `oauth` is the authorization server; `faults` the fault queue; `rate_limit` Qonto's per-IP
//! windows; `request_log` the timestamped log of API requests; `control` the `/_sim/`
//! endpoints; `server` the listener; `stats` the counters; `cli` the `simulate` subcommand;
//! `webhooks` the webhook subscriptions and their signed deliveries.

mod api;
mod cli;
mod control;
mod data;
mod faults;
mod oauth;
mod organization;
mod payments;
mod query;
mod rate_limit;
mod render;
mod request_log;
mod routing;
mod server;
mod stats;
#[cfg(test)]
mod tests;
mod variants;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::distr::{Alphanumeric, SampleString};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use cli::{EvolveEvery, RateWindowFlag, SimError, SimulateArgs, VariantArgs, run_simulate};
pub use control::MutationJson;
pub use data::{Mutation, Status};
pub use faults::{Fault, FaultRates, InvalidKind};
pub use organization::{ConnectionState, OrganizationHandle, SimConfigError, SimOrganization};
pub use rate_limit::{RateLimits, RateWindow};
pub use request_log::{RequestLog, RequestRecord, WindowPeak, max_in_window};
pub use stats::{SimCreated, SimStats, SimTransition, SimTransitions};
pub use variants::{DateForm, SpecVariants};
pub use webhooks::{
    CONNECTIONS as WEBHOOK_CONNECTIONS, PAYMENT_LINKS as WEBHOOK_PAYMENT_LINKS,
    QUEUE_CAPACITY as WEBHOOK_QUEUE_CAPACITY, SubscriptionError, WebhookFaults, WebhookStats,
    WebhookSubscription, check_callback_url, generate_secret as generate_webhook_secret,
    signature as webhook_signature,
};

use api::lock;
use organization::Org;
use rate_limit::{Admission, Limiter};
use request_log::RequestRing;
use routing::{Identified, Router};

/// Everything that shapes a simulator: its listener (latency, rate limits, request log), its first
/// organisation (the other fields, as [`SimOrganization`]'s) and any further organisations.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Name of the first organisation; `default` (the exporter's `--qonto.organization` default).
    pub name: String,
    /// Number of links generated at start.
    pub links: usize,
    /// Seed of the generator: the same seed and start time give the same links.
    pub seed: u64,
    /// Interval of the background evolution ([`Mutation::Step`]); `None` keeps the data frozen
    /// except for explicit mutations.
    pub evolve_every: Option<Duration>,
    /// Added to every API response (not to control endpoints).
    pub latency: Duration,
    /// Static Bearer tokens accepted, besides OAuth-issued ones. When the simulator has one
    /// organisation and no credential is configured at all (no token, no API key, no OAuth), any
    /// non-empty Bearer token is accepted.
    pub access_tokens: Vec<String>,
    /// `(login, secret)` accepted as `Authorization: login:secret`.
    pub api_key: Option<(String, String)>,
    /// If set, every list request must send it as `X-Qonto-Staging-Token`; without it (or with
    /// another value) the answer is a 200 `text/html` page, as the real sandbox does.
    pub staging_token: Option<String>,
    /// Enables `POST /oauth2/token` and `GET /oauth2/auth`.
    pub oauth: Option<SimOAuth>,
    /// Random faults on list requests (CLI); default none.
    pub faults: FaultRates,
    /// Spec-valid variations of the links (date forms, letter cases, JPY and KWD, links of the
    /// wrong JSON type, terminal links that move); default none.
    pub variants: SpecVariants,
    /// Qonto's per-IP windows enforced as real limits: beyond any window, a 429 with the API's
    /// error body. Every API request counts (list, unknown paths, all answers) except
    /// `/oauth2/*`, which Qonto serves from another host; refused requests do not count. `None`
    /// (the default, also for `--demo` and `simulate`) enforces nothing; [`RateLimits::qonto`]
    /// gives Qonto's numbers.
    pub rate_limits: Option<RateLimits>,
    /// Most entries kept in the request log ([`Simulator::request_log`], `GET /_sim/requests`);
    /// the oldest make way. 0 keeps none. One log for all organisations.
    pub request_log_capacity: usize,
    /// Further organisations served on the same listener, after the first (which the fields
    /// above describe); empty by default. With several organisations, each needs a unique name
    /// and a credential of its own ([`Simulator::try_new`] says which is missing); the rate
    /// limits count their requests together.
    pub more_organizations: Vec<SimOrganization>,
}

/// Default [`SimConfig::request_log_capacity`]: a poll of 1M links (10,000 pages) and its
/// neighbours fit, in a few MiB at most.
pub const DEFAULT_REQUEST_LOG_CAPACITY: usize = 100_000;

impl Default for SimConfig {
    /// 100 frozen links, seed 1, no latency, no credential configured (any Bearer token passes),
    /// no rate limit, a request log of [`DEFAULT_REQUEST_LOG_CAPACITY`] entries.
    fn default() -> SimConfig {
        SimConfig {
            name: "default".to_owned(),
            links: 100,
            seed: 1,
            evolve_every: None,
            latency: Duration::ZERO,
            access_tokens: Vec::new(),
            api_key: None,
            staging_token: None,
            oauth: None,
            faults: FaultRates::default(),
            variants: SpecVariants::default(),
            rate_limits: None,
            request_log_capacity: DEFAULT_REQUEST_LOG_CAPACITY,
            more_organizations: Vec::new(),
        }
    }
}

impl SimConfig {
    /// The organisation of `qonto-exporter --demo`: 3,000 links evolving every 5 s, reachable with
    /// one random 32-character Bearer token (`access_tokens[0]`); no rate limit, and a short
    /// request log (nobody reads it in a demo that may run for weeks).
    pub fn demo() -> SimConfig {
        SimConfig {
            links: 3000,
            seed: 1,
            evolve_every: Some(Duration::from_secs(5)),
            access_tokens: vec![Alphanumeric.sample_string(&mut rand::rng(), 32)],
            request_log_capacity: 1000,
            ..SimConfig::default()
        }
    }

    /// The first organisation, as the fields describe it.
    fn first_organization(&self) -> SimOrganization {
        SimOrganization {
            name: self.name.clone(),
            links: self.links,
            seed: self.seed,
            evolve_every: self.evolve_every,
            access_tokens: self.access_tokens.clone(),
            api_key: self.api_key.clone(),
            staging_token: self.staging_token.clone(),
            oauth: self.oauth.clone(),
            faults: self.faults.clone(),
            variants: self.variants.clone(),
        }
    }
}

/// The OAuth client the simulated authorization server knows.
#[derive(Debug, Clone)]
pub struct SimOAuth {
    pub client_id: String,
    pub client_secret: String,
    /// A refresh token valid at start (scope `payment_link.read offline_access`); empty for none,
    /// in which case tokens come from the authorization-code flow.
    pub refresh_token: String,
    /// Lifetime of issued access tokens (`expires_in`); 1 h at Qonto.
    pub access_token_ttl: Duration,
    /// How long a used refresh token keeps working after its first use; 60 s at Qonto.
    pub grace: Duration,
}

impl SimOAuth {
    /// A client with Qonto's lifetimes: 1 h access tokens, 60 s grace.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        refresh_token: impl Into<String>,
    ) -> SimOAuth {
        SimOAuth {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            refresh_token: refresh_token.into(),
            access_token_ttl: Duration::from_secs(3600),
            grace: Duration::from_secs(60),
        }
    }
}

/// State of the listener, shared by the handlers, the evolution tasks and the handles: the
/// organisations, and what Qonto keeps per IP address across all of them (the rate-limit windows,
/// and the request log that records how requests fell in them).
pub(crate) struct Shared {
    /// Never empty; the first answers requests whose credentials select none.
    orgs: Vec<Org>,
    router: Router,
    /// Added to every API response.
    latency: Duration,
    rate_limits: Option<RateLimits>,
    /// The monotonic origin of request times (rate limits and the request log).
    started: Instant,
    /// The rate-limit windows, when enforced.
    limiter: Option<Mutex<Limiter>>,
    requests: Mutex<RequestRing>,
}

impl Shared {
    /// The arrival of an API request: its time since start and, for a request that counts
    /// against the rate limits, the limiter's verdict. The clock is read under the limiter's lock,
    /// so each window sees times in order.
    fn arrive(&self, rate_limited: bool) -> (Duration, Admission) {
        match &self.limiter {
            Some(limiter) if rate_limited => {
                let mut limiter = lock(limiter);
                let now = self.started.elapsed();
                (now, limiter.admit(now))
            }
            _ => (self.started.elapsed(), Admission::Admitted),
        }
    }

    /// The organisation at `index`, or the first one for a request that selects none.
    fn org(&self, index: Option<usize>) -> &Org {
        index
            .and_then(|i| self.orgs.get(i))
            .unwrap_or(&self.orgs[0])
    }

    /// The index of the organisation named `name`.
    fn find(&self, name: &str) -> Option<usize> {
        self.orgs.iter().position(|o| o.name() == name)
    }

    /// Which organisation a request's `Authorization` selects, and its verdict.
    fn identify(&self, headers: &hyper::HeaderMap) -> Identified {
        self.router.identify(&self.orgs, headers)
    }
}

/// A simulated Qonto API serving one organisation or several on one listener. Cheap to clone;
/// all clones share the same data. Its own methods act on the first organisation (the only one
/// unless [`SimConfig::more_organizations`] adds others); [`organization`](Self::organization)
/// gives a handle on any of them. The request log and the rate limits cover all of them.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl Simulator {
    /// Generates the organisations as of now.
    ///
    /// # Panics
    /// When [`SimConfig::more_organizations`] makes the configuration invalid (see
    /// [`try_new`](Self::try_new), which returns the error instead); a configuration of one
    /// organisation is always valid.
    pub fn new(cfg: SimConfig) -> Simulator {
        Simulator::with_start_time(cfg, SystemTime::now())
    }

    /// Generates the organisations as of `start`, so seeds and a start time give the same data.
    ///
    /// # Panics
    /// As [`new`](Self::new).
    pub fn with_start_time(cfg: SimConfig, start: SystemTime) -> Simulator {
        Simulator::try_with_start_time(cfg, start)
            .unwrap_or_else(|e| panic!("invalid simulator configuration: {e}"))
    }

    /// Generates the organisations as of now; refuses a configuration where a request could not
    /// tell which organisation it is for.
    pub fn try_new(cfg: SimConfig) -> Result<Simulator, SimConfigError> {
        Simulator::try_with_start_time(cfg, SystemTime::now())
    }

    /// [`try_new`](Self::try_new) as of `start`.
    pub fn try_with_start_time(
        mut cfg: SimConfig,
        start: SystemTime,
    ) -> Result<Simulator, SimConfigError> {
        let now = start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let more = std::mem::take(&mut cfg.more_organizations);
        let configs: Vec<SimOrganization> = std::iter::once(cfg.first_organization())
            .chain(more)
            .collect();
        let router = Router::new(&configs)?;
        let limiter = cfg
            .rate_limits
            .as_ref()
            .filter(|l| !l.windows.is_empty())
            .map(|l| Mutex::new(Limiter::new(l)));
        Ok(Simulator {
            shared: Arc::new(Shared {
                orgs: configs.into_iter().map(|o| Org::new(o, now)).collect(),
                router,
                latency: cfg.latency,
                rate_limits: cfg.rate_limits,
                started: Instant::now(),
                limiter,
                requests: Mutex::new(RequestRing::new(cfg.request_log_capacity)),
            }),
        })
    }

    /// Binds `addr` (port 0 picks a free port) and serves in a spawned task until the returned
    /// handle is shut down or dropped. Also starts the background evolution of each organisation
    /// that has one, and each organisation's webhook delivery task.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<RunningSimulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        for (index, org) in self.shared.orgs.iter().enumerate() {
            if let Some(every) = org.cfg.evolve_every {
                if !org.evolving.swap(true, Ordering::SeqCst) {
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(evolve(shared, index, every, stopped.clone()));
                }
            }
        }
        for org in &self.shared.orgs {
            if !org.delivering.swap(true, Ordering::SeqCst) {
                let hooks = Arc::clone(&org.webhooks);
                let stopped = stopped.clone();
                let shared = Arc::clone(&self.shared);
                let index = self.shared.find(org.name());
                tokio::spawn(async move {
                    webhooks::run(hooks, stopped).await;
                    if let Some(i) = index {
                        shared.orgs[i].delivering.store(false, Ordering::SeqCst);
                    }
                });
            }
        }
        let task = tokio::spawn(server::serve(listener, Arc::clone(&self.shared), stopped));
        Ok(RunningSimulator { addr, stop, task })
    }

    /// The organisation named `name`.
    pub fn organization(&self, name: &str) -> Option<OrganizationHandle> {
        self.shared.find(name).map(|index| OrganizationHandle {
            shared: Arc::clone(&self.shared),
            index,
        })
    }

    /// Every organisation, the first first (the order of the configuration).
    pub fn organizations(&self) -> Vec<OrganizationHandle> {
        (0..self.shared.orgs.len())
            .map(|index| OrganizationHandle {
                shared: Arc::clone(&self.shared),
                index,
            })
            .collect()
    }

    fn first(&self) -> &Org {
        &self.shared.orgs[0]
    }

    /// Queues a scripted fault for the first organisation's next matching list requests.
    pub fn inject(&self, fault: Fault) {
        self.first().inject(fault);
    }

    /// Forgets the first organisation's scripted faults not yet applied (random rates stay).
    pub fn clear_faults(&self) {
        self.first().clear_faults();
    }

    /// Applies a mutation to the first organisation now; returns how many links were created or
    /// changed.
    pub fn mutate(&self, m: Mutation) -> usize {
        self.first().mutate(m)
    }

    /// Every current link of the first organisation, newest first, exactly as the API renders
    /// them (a JSON array).
    pub fn links_json(&self) -> serde_json::Value {
        self.first().links_json()
    }

    /// Number of links of the first organisation.
    pub fn len(&self) -> usize {
        self.first().len()
    }

    /// True when the first organisation has no link.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first organisation's request counters since start or the last
    /// [`reset_stats`](Self::reset_stats); with one organisation, every API request.
    pub fn stats(&self) -> SimStats {
        self.first().stats()
    }

    /// Zeroes the first organisation's request counters.
    pub fn reset_stats(&self) {
        self.first().reset_stats();
    }

    /// The links the first organisation's mutations created and the status changes they made
    /// since start (`GET /_sim/transitions`): see [`SimTransitions`].
    pub fn transitions(&self) -> SimTransitions {
        self.first().transitions()
    }

    /// The API requests answered so far (or since [`clear_request_log`](Self::clear_request_log))
    /// for every organisation, oldest first, with their arrival times: what `GET /_sim/requests`
    /// serves. Use [`RequestLog::peak`] or [`max_in_window`] to find the busiest rolling window,
    /// [`RequestLog::of_organization`] to keep one organisation's.
    pub fn request_log(&self) -> RequestLog {
        lock(&self.shared.requests).snapshot()
    }

    /// Empties the request log (the rate-limit windows keep their count).
    pub fn clear_request_log(&self) {
        lock(&self.shared.requests).clear();
    }

    fn first_handle(&self) -> OrganizationHandle {
        OrganizationHandle {
            shared: Arc::clone(&self.shared),
            index: 0,
        }
    }

    /// Subscribes `callback_url` to the first organisation's payment-link and connection
    /// events, signed with `secret`: see [`OrganizationHandle::subscribe_webhook`]. This is how
    /// `--demo` wires the in-process simulator to the exporter's receiver.
    pub fn subscribe_webhook(
        &self,
        callback_url: &str,
        secret: &str,
    ) -> Result<WebhookSubscription, SubscriptionError> {
        self.first_handle().subscribe_webhook(callback_url, secret)
    }

    /// The first organisation's webhook subscriptions (without their secrets).
    pub fn webhook_subscriptions(&self) -> Vec<WebhookSubscription> {
        self.first_handle().webhook_subscriptions()
    }

    /// Sets the first organisation's webhook delivery faults; refuses probabilities outside
    /// [0, 1].
    pub fn set_webhook_faults(&self, faults: WebhookFaults) -> Result<(), String> {
        self.first_handle().set_webhook_faults(faults)
    }

    /// The first organisation's webhook delivery counters.
    pub fn webhook_stats(&self) -> WebhookStats {
        self.first_handle().webhook_stats()
    }
}

/// Background evolution of one organisation: one [`Mutation::Step`] per tick until shutdown.
async fn evolve(
    shared: Arc<Shared>,
    index: usize,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // `every` comes from a flag: capped, so that `now + every` cannot overflow an Instant.
    let every = every.clamp(Duration::from_millis(1), Duration::from_secs(365 * 86_400));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Stepping a million links takes milliseconds; keep it off the async workers.
                let s = Arc::clone(&shared);
                let _ = tokio::task::spawn_blocking(move || s.orgs[index].mutate(Mutation::Step)).await;
            }
            _ = stop.changed() => break,
        }
    }
    shared.orgs[index].evolving.store(false, Ordering::SeqCst);
}

/// A simulator serving on [`addr`](Self::addr). Dropping it stops the server too.
pub struct RunningSimulator {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningSimulator {
    /// `http://IP:PORT`, the value for `--qonto.api-url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish (5 s at most) and waits for the server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
