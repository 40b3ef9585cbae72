//! Organisations: one simulator serves several on one listener, as Qonto's API serves every
//! organisation from one host, so an exporter watching several organisations can be tested against
//! one address. Each organisation has its own links, scripted faults, OAuth server state and
//! counters ([`Org`]); what Qonto applies per IP address — the rate limits, and with them the
//! request log that shows how requests fell in time — stays on the listener
//! ([`Shared`](super::Shared)). A request reaches the organisation whose credentials it presents
//! (`routing`).
//!
//! [`SimOrganization`] describes one organisation; [`OrganizationHandle`] is the test's grip on
//! one of a running simulator's organisations.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::api::lock;
use super::data::{Mutation, Store};
use super::faults::{Fault, FaultQueue, FaultRates};
use super::oauth::OAuthState;
use super::render::LinkJson;
use super::stats::{SimStats, SimTransitions, TransitionLog};
use super::variants::SpecVariants;
use super::webhooks::{self, WebhookFaults, WebhookStats, WebhookSubscription, Webhooks};
use super::{Shared, SimOAuth};

/// One simulated organisation: its links and its credentials. The first organisation of a
/// simulator is described by [`SimConfig`](super::SimConfig)'s own fields; further ones by
/// [`SimConfig::more_organizations`](super::SimConfig::more_organizations).
#[derive(Debug, Clone)]
pub struct SimOrganization {
    /// Name used by tests, the control endpoints (`?organization=NAME`) and the request log;
    /// unique within a simulator.
    pub name: String,
    /// Number of links generated at start.
    pub links: usize,
    /// Seed of the generator: the same seed and start time give the same links.
    pub seed: u64,
    /// Interval of the background evolution ([`Mutation::Step`]); `None` keeps the data frozen
    /// except for explicit mutations.
    pub evolve_every: Option<Duration>,
    /// Static Bearer tokens accepted, besides OAuth-issued ones.
    pub access_tokens: Vec<String>,
    /// `(login, secret)` accepted as `Authorization: login:secret`.
    pub api_key: Option<(String, String)>,
    /// If set, every list request for this organisation must send it as `X-Qonto-Staging-Token`;
    /// without it (or with another value) the answer is a 200 `text/html` page, as the real
    /// sandbox does. Not a credential that selects the organisation.
    pub staging_token: Option<String>,
    /// This organisation's OAuth client: `POST /oauth2/token` with its `client_id` issues tokens
    /// that reach this organisation only.
    pub oauth: Option<SimOAuth>,
    /// Random faults on this organisation's list requests; default none.
    pub faults: FaultRates,
    /// Spec-valid variations of the links; default none.
    pub variants: SpecVariants,
}

impl SimOrganization {
    /// An organisation named `name` with 100 frozen links, seed 1, no fault, no variation and no
    /// credential yet: among several organisations, give it at least one.
    pub fn new(name: impl Into<String>) -> SimOrganization {
        SimOrganization {
            name: name.into(),
            links: 100,
            seed: 1,
            evolve_every: None,
            access_tokens: Vec::new(),
            api_key: None,
            staging_token: None,
            oauth: None,
            faults: FaultRates::default(),
            variants: SpecVariants::default(),
        }
    }

    /// True when a request can present credentials that select this organisation.
    pub(crate) fn has_credentials(&self) -> bool {
        !self.access_tokens.is_empty() || self.api_key.is_some() || self.oauth.is_some()
    }
}

/// Why a simulator cannot be built from a [`SimConfig`](super::SimConfig): only a configuration
/// of several organisations can be refused, when a request could not tell which one it is for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimConfigError {
    #[error("an organisation has an empty name; every organisation needs a unique name")]
    EmptyName,
    #[error("two organisations are named {0:?}; names must be unique")]
    DuplicateName(String),
    #[error(
        "organisation {0:?} has no credential (access token, API key or OAuth client): with several organisations, each needs one, so that a request can say which it is for"
    )]
    NoCredential(String),
    #[error(
        "organisations {first:?} and {second:?} share the same {credential}: a request presenting it could be for either"
    )]
    SharedCredential {
        credential: &'static str,
        first: String,
        second: String,
    },
}

/// The live state of one organisation.
pub(crate) struct Org {
    pub(crate) cfg: SimOrganization,
    pub(crate) store: RwLock<Store>,
    pub(crate) faults: Mutex<FaultQueue>,
    pub(crate) oauth: Option<Mutex<OAuthState>>,
    pub(crate) stats: Mutex<SimStats>,
    /// Links created and status changes made (`GET /_sim/transitions`).
    pub(crate) transitions: Mutex<TransitionLog>,
    /// Set once a background evolution task runs, so starting twice does not evolve twice as fast.
    pub(crate) evolving: AtomicBool,
    /// `GET /v2/payment_links/connections`: the status answered, and how many of the next
    /// requests fail with a 500 (`POST /_sim/connection`).
    pub(crate) connection: Mutex<ConnectionState>,
    /// Subscriptions, delivery queue, fault switches and counters of the webhooks.
    pub(crate) webhooks: Arc<Webhooks>,
    /// Set once a delivery task runs (see `evolving`).
    pub(crate) delivering: AtomicBool,
}

/// The simulated connection to the payment links provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionState {
    /// `enabled` unless switched: `pending`, `disabled`, `not_connected`, or any other string.
    pub status: String,
    /// The next requests of this many answer HTTP 500.
    #[serde(default)]
    pub fail: u32,
}

impl Default for ConnectionState {
    fn default() -> ConnectionState {
        ConnectionState {
            status: "enabled".into(),
            fail: 0,
        }
    }
}

impl Org {
    /// Generates the organisation's links as of `now` (Unix seconds).
    pub(crate) fn new(cfg: SimOrganization, now: i64) -> Org {
        let store = Store::generate(cfg.links, cfg.seed, now, cfg.variants.clone());
        let oauth = cfg.oauth.clone().map(|o| Mutex::new(OAuthState::new(o)));
        let webhooks = Arc::new(Webhooks::new(&cfg.name, cfg.seed));
        Org {
            webhooks,
            delivering: AtomicBool::new(false),
            cfg,
            store: RwLock::new(store),
            faults: Mutex::new(FaultQueue::default()),
            oauth,
            stats: Mutex::new(SimStats::default()),
            transitions: Mutex::new(TransitionLog::default()),
            evolving: AtomicBool::new(false),
            connection: Mutex::new(ConnectionState::default()),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.cfg.name
    }

    pub(crate) fn inject(&self, fault: Fault) {
        lock(&self.faults).push(fault);
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub(crate) fn mutate(&self, m: Mutation) -> usize {
        let now = super::api::unix_now();
        let mut store = self
            .store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Links are copied for the webhooks only when a subscription wants them.
        let observe = self.webhooks.wants(webhooks::PAYMENT_LINKS);
        let (n, changes, changed) = store.mutate_observed(&m, now, observe);
        // Recorded before any request can read the new data.
        lock(&self.transitions).record(&changes, now);
        // Queued under the store's lock, so events follow the order of the changes.
        self.webhooks.links_changed(&changed, now);
        n
    }

    /// Sets the connection state; a change of status is a `v1/payment-links-connections` event.
    pub(crate) fn set_connection(&self, state: ConnectionState) {
        let mut current = lock(&self.connection);
        let changed = current.status != state.status;
        let status = state.status.clone();
        *current = state;
        if changed {
            self.webhooks.connection_changed(&status);
        }
    }

    pub(crate) fn transitions(&self) -> SimTransitions {
        lock(&self.transitions).snapshot()
    }

    pub(crate) fn len(&self) -> usize {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn rendered_links(&self) -> Vec<LinkJson> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .render_all()
    }

    pub(crate) fn links_json(&self) -> serde_json::Value {
        serde_json::to_value(self.rendered_links()).unwrap_or_default()
    }

    pub(crate) fn links_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.rendered_links()).unwrap_or_default()
    }

    pub(crate) fn stats(&self) -> SimStats {
        lock(&self.stats).clone()
    }

    pub(crate) fn reset_stats(&self) {
        *lock(&self.stats) = SimStats::default();
    }
}

/// One organisation of a [`Simulator`](super::Simulator), for tests that follow organisations
/// one by one: the same operations as the simulator's own, which act on its first organisation.
/// Cheap to clone; it keeps the simulator's data alive, not its listener.
#[derive(Clone)]
pub struct OrganizationHandle {
    pub(crate) shared: Arc<Shared>,
    /// Always a valid index into `shared.orgs`: handles are only made for existing ones.
    pub(crate) index: usize,
}

impl OrganizationHandle {
    fn org(&self) -> &Org {
        &self.shared.orgs[self.index]
    }

    /// The organisation's name.
    pub fn name(&self) -> &str {
        self.org().name()
    }

    /// Queues a scripted fault for this organisation's next matching list requests; the other
    /// organisations are not affected.
    pub fn inject(&self, fault: Fault) {
        self.org().inject(fault);
    }

    /// Forgets this organisation's scripted faults not yet applied (random rates stay).
    pub fn clear_faults(&self) {
        self.org().clear_faults();
    }

    /// Applies a mutation to this organisation now; returns how many links were created or
    /// changed.
    pub fn mutate(&self, m: Mutation) -> usize {
        self.org().mutate(m)
    }

    /// Every current link of this organisation, newest first, exactly as the API renders them
    /// (a JSON array).
    pub fn links_json(&self) -> serde_json::Value {
        self.org().links_json()
    }

    /// Number of links of this organisation.
    pub fn len(&self) -> usize {
        self.org().len()
    }

    /// True when this organisation has no link.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters of the requests that reached this organisation (those presenting its
    /// credentials; the first organisation also answers requests whose credentials name none).
    pub fn stats(&self) -> SimStats {
        self.org().stats()
    }

    /// Zeroes this organisation's counters.
    pub fn reset_stats(&self) {
        self.org().reset_stats();
    }

    /// The links this organisation's mutations created and the status changes they made
    /// (`GET /_sim/transitions?organization=NAME`).
    pub fn transitions(&self) -> SimTransitions {
        self.org().transitions()
    }

    /// Subscribes `callback_url` to this organisation's `v1/payment-links` and
    /// `v1/payment-links-connections` events, signed with `secret` (32 to 128 characters), as
    /// `POST /v2/webhook_subscriptions` would: the in-process way for `--demo` and tests.
    /// Deliveries start once the simulator is [started](super::Simulator::start); events are
    /// made from the subscription on (none for earlier changes, as at Qonto).
    pub fn subscribe_webhook(
        &self,
        callback_url: &str,
        secret: &str,
    ) -> Result<WebhookSubscription, webhooks::SubscriptionError> {
        self.org()
            .webhooks
            .subscribe(webhooks::SubscriptionRequest {
                callback_url: callback_url.to_owned(),
                types: vec![webhooks::PAYMENT_LINKS.into(), webhooks::CONNECTIONS.into()],
                secret: Some(secret.to_owned()),
                description: Some("simulator".into()),
            })
            .map(|(s, _)| s)
    }

    /// This organisation's webhook subscriptions (without their secrets).
    pub fn webhook_subscriptions(&self) -> Vec<WebhookSubscription> {
        self.org().webhooks.list()
    }

    /// Deletes a webhook subscription; false when there is none with this id.
    pub fn unsubscribe_webhook(&self, id: &str) -> bool {
        self.org().webhooks.unsubscribe(id)
    }

    /// Sets the delivery faults (`POST /_sim/webhooks`); refuses probabilities outside [0, 1].
    pub fn set_webhook_faults(&self, faults: WebhookFaults) -> Result<(), String> {
        faults.validate()?;
        self.org().webhooks.set_faults(faults);
        Ok(())
    }

    /// The delivery counters (`GET /_sim/webhooks`).
    pub fn webhook_stats(&self) -> WebhookStats {
        self.org().webhooks.stats()
    }

    /// Sets the connection status (`POST /_sim/connection`); a change is a webhook event.
    pub fn set_connection(&self, state: ConnectionState) {
        self.org().set_connection(state);
    }
}
