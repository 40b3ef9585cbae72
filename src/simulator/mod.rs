//! The simulated Qonto API: a live, evolving organisation served over HTTP exactly as
//! `list-payment-links.openapi.yaml` describes `GET /v2/payment_links`, with Qonto's authentication
//! (Bearer tokens, OAuth 2.0 with rotating refresh tokens, `login:secret` API keys, the sandbox's
//! staging token) and every failure the exporter must survive, on demand.
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
//! `oauth` is the authorization server; `faults` the fault queue; `rate_limit` Qonto's per-IP
//! windows; `request_log` the timestamped log of API requests; `control` the `/_sim/`
//! endpoints; `server` the listener; `stats` the counters; `cli` the `simulate` subcommand.

mod api;
mod cli;
mod control;
mod data;
mod faults;
mod oauth;
mod query;
mod rate_limit;
mod render;
mod request_log;
mod server;
mod stats;
#[cfg(test)]
mod tests;
mod variants;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rand::distr::{Alphanumeric, SampleString};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use cli::{EvolveEvery, RateWindowFlag, SimError, SimulateArgs, VariantArgs, run_simulate};
pub use control::MutationJson;
pub use data::{Mutation, Status};
pub use faults::{Fault, FaultRates, InvalidKind};
pub use rate_limit::{RateLimits, RateWindow};
pub use request_log::{RequestLog, RequestRecord, WindowPeak, max_in_window};
pub use stats::SimStats;
pub use variants::{DateForm, SpecVariants};

use api::lock;
use data::Store;
use faults::FaultQueue;
use oauth::OAuthState;
use rate_limit::{Admission, Limiter};
use render::LinkJson;
use request_log::RequestRing;

/// Everything that shapes a simulated organisation and its API.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of links generated at start.
    pub links: usize,
    /// Seed of the generator: the same seed and start time give the same links.
    pub seed: u64,
    /// Interval of the background evolution ([`Mutation::Step`]); `None` keeps the data frozen
    /// except for explicit mutations.
    pub evolve_every: Option<Duration>,
    /// Added to every API response (not to control endpoints).
    pub latency: Duration,
    /// Static Bearer tokens accepted, besides OAuth-issued ones. When no credential is configured
    /// at all (no token, no API key, no OAuth), any non-empty Bearer token is accepted.
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
    /// the oldest make way. 0 keeps none.
    pub request_log_capacity: usize,
}

/// Default [`SimConfig::request_log_capacity`]: a poll of 1M links (10,000 pages) and its
/// neighbours fit, in a few MiB at most.
pub const DEFAULT_REQUEST_LOG_CAPACITY: usize = 100_000;

impl Default for SimConfig {
    /// 100 frozen links, seed 1, no latency, no credential configured (any Bearer token passes),
    /// no rate limit, a request log of [`DEFAULT_REQUEST_LOG_CAPACITY`] entries.
    fn default() -> SimConfig {
        SimConfig {
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

    /// True when no credential is configured, so any non-empty Bearer token is accepted.
    fn accepts_any_bearer(&self) -> bool {
        self.access_tokens.is_empty() && self.api_key.is_none() && self.oauth.is_none()
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

/// State shared by the handlers, the evolution task and the [`Simulator`] handles.
pub(crate) struct Shared {
    cfg: SimConfig,
    store: RwLock<Store>,
    faults: Mutex<FaultQueue>,
    oauth: Option<Mutex<OAuthState>>,
    stats: Mutex<SimStats>,
    /// The monotonic origin of request times (rate limits and the request log).
    started: Instant,
    /// The rate-limit windows, when enforced.
    limiter: Option<Mutex<Limiter>>,
    requests: Mutex<RequestRing>,
    /// Set once a background evolution task runs, so starting twice does not evolve twice as fast.
    evolving: AtomicBool,
}

impl Shared {
    fn inject(&self, fault: Fault) {
        lock(&self.faults).push(fault);
    }

    fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    fn mutate(&self, m: Mutation) -> usize {
        let now = api::unix_now();
        self.store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply(&m, now)
    }

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

    fn len(&self) -> usize {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn rendered_links(&self) -> Vec<LinkJson> {
        let store = self
            .store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        store.render_all()
    }

    fn links_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.rendered_links()).unwrap_or_default()
    }
}

/// A simulated organisation and its API. Cheap to clone; all clones share the same data.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl Simulator {
    /// Generates the organisation as of now.
    pub fn new(cfg: SimConfig) -> Simulator {
        Simulator::with_start_time(cfg, SystemTime::now())
    }

    /// Generates the organisation as of `start`, so a seed and a start time give the same data.
    pub fn with_start_time(cfg: SimConfig, start: SystemTime) -> Simulator {
        let now = start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let store = Store::generate(cfg.links, cfg.seed, now, cfg.variants.clone());
        let oauth = cfg.oauth.clone().map(|o| Mutex::new(OAuthState::new(o)));
        let limiter = cfg
            .rate_limits
            .as_ref()
            .filter(|l| !l.windows.is_empty())
            .map(|l| Mutex::new(Limiter::new(l)));
        let requests = Mutex::new(RequestRing::new(cfg.request_log_capacity));
        Simulator {
            shared: Arc::new(Shared {
                cfg,
                store: RwLock::new(store),
                faults: Mutex::new(FaultQueue::default()),
                oauth,
                stats: Mutex::new(SimStats::default()),
                started: Instant::now(),
                limiter,
                requests,
                evolving: AtomicBool::new(false),
            }),
        }
    }

    /// Binds `addr` (port 0 picks a free port) and serves in a spawned task until the returned
    /// handle is shut down or dropped. Also starts the background evolution, if configured.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<RunningSimulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        if let Some(every) = self.shared.cfg.evolve_every {
            if !self.shared.evolving.swap(true, Ordering::SeqCst) {
                tokio::spawn(evolve(Arc::clone(&self.shared), every, stopped.clone()));
            }
        }
        let task = tokio::spawn(server::serve(listener, Arc::clone(&self.shared), stopped));
        Ok(RunningSimulator { addr, stop, task })
    }

    /// Queues a scripted fault for the next matching list requests.
    pub fn inject(&self, fault: Fault) {
        self.shared.inject(fault);
    }

    /// Forgets every scripted fault not yet applied (random rates stay).
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Applies a mutation now; returns how many links were created or changed.
    pub fn mutate(&self, m: Mutation) -> usize {
        self.shared.mutate(m)
    }

    /// Every current link, newest first, exactly as the API renders them (a JSON array).
    pub fn links_json(&self) -> serde_json::Value {
        serde_json::to_value(self.shared.rendered_links()).unwrap_or_default()
    }

    /// Number of links.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// True when the organisation has no link.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Request counters since start or the last [`reset_stats`](Self::reset_stats).
    pub fn stats(&self) -> SimStats {
        lock(&self.shared.stats).clone()
    }

    /// Zeroes the request counters.
    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = SimStats::default();
    }

    /// The API requests answered so far (or since [`clear_request_log`](Self::clear_request_log)),
    /// oldest first, with their arrival times: what `GET /_sim/requests` serves. Use
    /// [`RequestLog::peak`] or [`max_in_window`] to find the busiest rolling window.
    pub fn request_log(&self) -> RequestLog {
        lock(&self.shared.requests).snapshot()
    }

    /// Empties the request log (the rate-limit windows keep their count).
    pub fn clear_request_log(&self) {
        lock(&self.shared.requests).clear();
    }
}

/// Background evolution: one [`Mutation::Step`] per tick until shutdown.
async fn evolve(shared: Arc<Shared>, every: Duration, mut stop: watch::Receiver<bool>) {
    // `every` comes from a flag: capped, so that `now + every` cannot overflow an Instant.
    let every = every.clamp(Duration::from_millis(1), Duration::from_secs(365 * 86_400));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Stepping a million links takes milliseconds; keep it off the async workers.
                let s = Arc::clone(&shared);
                let _ = tokio::task::spawn_blocking(move || s.mutate(Mutation::Step)).await;
            }
            _ = stop.changed() => break,
        }
    }
    shared.evolving.store(false, Ordering::SeqCst);
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
