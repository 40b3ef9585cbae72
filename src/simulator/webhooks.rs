//! Qonto's webhooks, simulated: the subscription endpoints and signed deliveries of every change
//! the simulator makes to a payment link or to the connection, with Qonto's retries, plus fault
//! switches (duplicates, reordering, drops, stale signatures) so a receiver can be tested against
//! what Qonto's documentation warns about.
//!
//! Each organisation has its own [`Webhooks`]: its subscriptions, its fault switches and seeded
//! random stream, its delivery counters and a bounded queue of events waiting to be sent. Events
//! are made where the data changes: link events in `Org::mutate`, under the store's lock, so
//! their `updated_at` follow the order of the changes; connection events where the connection
//! status is switched. Making one only pushes onto the queue, so no API handler and no evolution step ever waits for a delivery. A full queue drops
//! its oldest event and counts it (`overflowed`).
//!
//! One delivery task per organisation ([`run`], started with the listener) sends the queue in
//! order: `POST` to the callback with `X-Qonto-Signature: t={unix},v1={hex HMAC-SHA256 of
//! "{t}.{body}"}` keyed by the subscription's secret, over a client with a 1 s timeout. A
//! non-2xx answer or a timeout is retried later in a task of its own, after 1 s, 2 s, 4 s, … (at
//! most [`MAX_ATTEMPTS`] attempts), signed afresh at each attempt: one dead callback delays the
//! others by at most its timeout.
//!
//! Subscriptions answer like Qonto's (`{"webhook_subscription": {…}}`); the secret is shown only
//! in the answer to a creation that had none, where Qonto generates it. Callbacks must be
//! `https` (at most 512 characters), except `http` to a loopback host, which the simulator
//! accepts for tests and the demo.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::api::lock;
use super::data::{Link, METHODS, ResourceType, Status, format_uuid};
use super::render::{money_value, rfc3339};

/// `type` of payment-link events.
pub const PAYMENT_LINKS: &str = "v1/payment-links";
/// `type` of connection events.
pub const CONNECTIONS: &str = "v1/payment-links-connections";
/// Shortest and longest secrets Qonto accepts.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 32..=128;
/// Attempts per delivery, the first included.
pub const MAX_ATTEMPTS: u32 = 8;
/// Events waiting to be sent, per organisation, before the oldest is dropped.
pub const QUEUE_CAPACITY: usize = 20_000;
/// Subscriptions per organisation (a bound on the work one change makes).
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// Timeout of one delivery attempt: Qonto's callbacks must answer within 1 s.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Retries waiting at once, per organisation; beyond, a failed delivery is abandoned.
const MAX_PENDING_RETRIES: usize = 10_000;
/// Longest an event held back by the `reorder` fault waits for a next one to overtake it.
const HOLD_MAX: Duration = Duration::from_secs(1);
/// How far in the past the `stale` fault puts `t` (the receiver's window is 5 minutes).
const STALE_BY: u64 = 600;
/// Longest description and type accepted, and most types per subscription.
const MAX_DESCRIPTION_LEN: usize = 255;
const MAX_TYPE_LEN: usize = 100;
const MAX_TYPES: usize = 32;

/// Probabilities (0 to 1) of the delivery faults, per event (`stale`: per attempt). `POST
/// /_sim/webhooks` sets them; fields left out are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookFaults {
    /// The event is sent twice (same id and body), as Qonto's retries can do.
    pub duplicate: f64,
    /// The event is held back and sent after the next one (or after 1 s if none comes).
    pub reorder: f64,
    /// The event is never sent, and never retried.
    pub drop: f64,
    /// The attempt is signed with `t` 10 minutes in the past (a receiver refuses it as stale;
    /// the retry is signed afresh).
    pub stale: f64,
}

impl WebhookFaults {
    /// Refuses a probability that is not a number in [0, 1].
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("drop", self.drop),
            ("stale", self.stale),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name}: {p} is not a probability between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// Delivery counters of one organisation (`GET /_sim/webhooks`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStats {
    /// Subscriptions now.
    pub subscriptions: u64,
    /// Events made for a subscription (one per change and subscription).
    pub sent: u64,
    /// Attempts answered 2xx.
    pub delivered: u64,
    /// Attempts that got no 2xx (an error status, a timeout, a refused connection).
    pub failed_attempts: u64,
    /// Attempts after the first.
    pub retried: u64,
    /// Deliveries given up after [`MAX_ATTEMPTS`] attempts, or with too many retries waiting.
    pub abandoned: u64,
    /// Events dropped by the `drop` fault.
    pub dropped: u64,
    /// Events dropped because the queue was full (the oldest go first).
    pub overflowed: u64,
    /// Events sent twice by the `duplicate` fault.
    pub duplicated: u64,
    /// Events held back by the `reorder` fault.
    pub reordered: u64,
    /// Attempts signed with a stale `t` by the `stale` fault.
    pub stale: u64,
}

/// A subscription as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    pub id: String,
    pub callback_url: String,
    pub types: Vec<String>,
    pub description: Option<String>,
    pub created_at: String,
}

/// Why a subscription is refused (answered 422, like Qonto's validation errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {detail}")]
pub struct SubscriptionError {
    /// The offending field of the request.
    pub parameter: &'static str,
    pub detail: String,
}

fn invalid(parameter: &'static str, detail: impl Into<String>) -> SubscriptionError {
    SubscriptionError {
        parameter,
        detail: detail.into(),
    }
}

/// The body of `POST /v2/webhook_subscriptions`. No `Debug`: it holds the secret.
#[derive(Deserialize)]
pub(crate) struct SubscriptionRequest {
    pub(crate) callback_url: String,
    pub(crate) types: Vec<String>,
    #[serde(default)]
    pub(crate) secret: Option<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
}

/// Checks a callback URL as the simulator does: the exporter's own check of what Qonto accepts
/// (`https`, or `http` to a loopback host; at most 512 characters).
pub fn check_callback_url(url: &str) -> Result<(), String> {
    crate::webhook::subscribe::check_callback_url(url)
}

/// `X-Qonto-Signature` for `body` at Unix time `t` with `secret`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// 64 hexadecimal characters from `rand`'s cryptographically secure thread generator (seeded by
/// the operating system): what the simulator generates when a subscription comes without one.
pub fn generate_secret() -> String {
    crate::webhook::subscribe::generate_secret()
        .expose()
        .to_owned()
}

/// A random version-4 UUID, hyphenated.
fn random_uuid() -> String {
    let v: u128 = rand::random();
    let v = (v & !(0xF << 76)) | (0x4 << 76);
    format_uuid((v & !(0x3 << 62)) | (0x2 << 62))
}

struct Subscription {
    public: WebhookSubscription,
    secret: Arc<[u8]>,
}

/// One event for one subscription, ready to send.
#[derive(Clone)]
struct Outgoing {
    url: Arc<str>,
    secret: Arc<[u8]>,
    body: Bytes,
}

struct State {
    subscriptions: Vec<Subscription>,
    faults: WebhookFaults,
    /// The fault decisions: seeded from the organisation's seed, so a run can be replayed.
    rng: SmallRng,
    /// Last `updated_at` given, in Unix microseconds: each event's is later, so the events of
    /// one link are strictly ordered.
    last_updated_us: i64,
    queue: VecDeque<Outgoing>,
    stats: WebhookStats,
}

/// One organisation's webhooks.
pub(crate) struct Webhooks {
    state: Mutex<State>,
    /// Wakes the delivery task (a permit is kept when it is not waiting).
    ready: Notify,
    retries_pending: AtomicUsize,
    organization_id: String,
    membership_id: String,
}

impl Webhooks {
    pub(crate) fn new(name: &str, seed: u64) -> Webhooks {
        // Stable ids per organisation name, so envelopes look the same from run to run.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let id = (u128::from(h) << 64) | u128::from(h.rotate_left(17));
        let v4 = |v: u128| (v & !(0xF << 76)) | (0x4 << 76);
        Webhooks {
            state: Mutex::new(State {
                subscriptions: Vec::new(),
                faults: WebhookFaults::default(),
                rng: SmallRng::seed_from_u64(seed ^ 0x5745_4248_4f4f_4b53),
                last_updated_us: 0,
                queue: VecDeque::new(),
                stats: WebhookStats::default(),
            }),
            ready: Notify::new(),
            retries_pending: AtomicUsize::new(0),
            organization_id: format_uuid(v4(id)),
            membership_id: format_uuid(v4(id.rotate_left(64))),
        }
    }

    /// True when some subscription wants events of `kind` (so changes are worth observing).
    pub(crate) fn wants(&self, kind: &str) -> bool {
        lock(&self.state)
            .subscriptions
            .iter()
            .any(|s| s.public.types.iter().any(|t| t == kind))
    }

    /// Creates a subscription; returns it and, when the request had no secret, the secret made.
    pub(crate) fn subscribe(
        &self,
        req: SubscriptionRequest,
    ) -> Result<(WebhookSubscription, Option<String>), SubscriptionError> {
        check_callback_url(&req.callback_url).map_err(|e| invalid("callback_url", e))?;
        if req.types.is_empty() || req.types.len() > MAX_TYPES {
            return Err(invalid(
                "types",
                format!("give between 1 and {MAX_TYPES} event types"),
            ));
        }
        if let Some(bad) = req
            .types
            .iter()
            .find(|t| t.is_empty() || t.len() > MAX_TYPE_LEN || t.chars().any(|c| c.is_control()))
        {
            let shown: String = bad.chars().take(MAX_TYPE_LEN).collect();
            return Err(invalid("types", format!("{shown:?} is not an event type")));
        }
        if let Some(d) = &req.description {
            if d.chars().count() > MAX_DESCRIPTION_LEN {
                return Err(invalid(
                    "description",
                    format!("longer than {MAX_DESCRIPTION_LEN} characters"),
                ));
            }
        }
        let (secret, generated) = match req.secret {
            Some(s) if SECRET_LEN.contains(&s.chars().count()) => (s, None),
            // The secret itself is never echoed.
            Some(s) => {
                return Err(invalid(
                    "secret",
                    format!(
                        "must be {} to {} characters long, not {}",
                        SECRET_LEN.start(),
                        SECRET_LEN.end(),
                        s.chars().count()
                    ),
                ));
            }
            None => {
                let s = generate_secret();
                (s.clone(), Some(s))
            }
        };
        let mut state = lock(&self.state);
        if state.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(invalid(
                "callback_url",
                format!("at most {MAX_SUBSCRIPTIONS} subscriptions per organisation"),
            ));
        }
        let mut types = req.types;
        types.dedup();
        let public = WebhookSubscription {
            id: random_uuid(),
            callback_url: req.callback_url,
            types,
            description: req.description,
            created_at: now_rfc3339_ms(),
        };
        state.subscriptions.push(Subscription {
            public: public.clone(),
            secret: Arc::from(secret.into_bytes()),
        });
        state.stats.subscriptions = state.subscriptions.len() as u64;
        Ok((public, generated))
    }

    pub(crate) fn list(&self) -> Vec<WebhookSubscription> {
        lock(&self.state)
            .subscriptions
            .iter()
            .map(|s| s.public.clone())
            .collect()
    }

    pub(crate) fn get(&self, id: &str) -> Option<WebhookSubscription> {
        lock(&self.state)
            .subscriptions
            .iter()
            .find(|s| s.public.id == id)
            .map(|s| s.public.clone())
    }

    /// Deletes a subscription; false when there is none with this id. Events already queued
    /// for it are still sent (as at Qonto, deliveries in flight are not recalled).
    pub(crate) fn unsubscribe(&self, id: &str) -> bool {
        let mut state = lock(&self.state);
        let before = state.subscriptions.len();
        state.subscriptions.retain(|s| s.public.id != id);
        state.stats.subscriptions = state.subscriptions.len() as u64;
        state.subscriptions.len() != before
    }

    /// The JSON of a subscription as Qonto answers it.
    pub(crate) fn subscription_json(&self, s: &WebhookSubscription, secret: Option<&str>) -> Value {
        let mut v = json!({
            "id": s.id,
            "organization_id": self.organization_id,
            "membership_id": self.membership_id,
            "callback_url": s.callback_url,
            "types": s.types,
            "description": s.description,
            "created_at": s.created_at,
            "updated_at": s.created_at,
        });
        if let (Some(secret), Some(map)) = (secret, v.as_object_mut()) {
            map.insert("secret".into(), Value::String(secret.to_owned()));
        }
        v
    }

    pub(crate) fn set_faults(&self, faults: WebhookFaults) {
        lock(&self.state).faults = faults;
    }

    pub(crate) fn faults(&self) -> WebhookFaults {
        lock(&self.state).faults
    }

    pub(crate) fn stats(&self) -> WebhookStats {
        lock(&self.state).stats.clone()
    }

    /// Queues one `v1/payment-links` event per link changed and subscription that wants them.
    /// `now` is Unix seconds (the time of the change, for the payments' methods).
    pub(crate) fn links_changed(&self, changed: &[(Option<Status>, Link)], now: i64) {
        if changed.is_empty() {
            return;
        }
        let mut state = lock(&self.state);
        let mut now_us = unix_micros();
        for (before, link) in changed {
            // Strictly increasing, whatever the clock does.
            now_us = now_us.max(state.last_updated_us.saturating_add(1));
            state.last_updated_us = now_us;
            let data = link_data(before.is_none(), link, now, now_us);
            self.enqueue(&mut state, PAYMENT_LINKS, &data);
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Queues one `v1/payment-links-connections` event for a connection status that changed.
    pub(crate) fn connection_changed(&self, status: &str) {
        let data = json!({ "event": format!("connection_{status}"), "status": status });
        let mut state = lock(&self.state);
        self.enqueue(&mut state, CONNECTIONS, &data);
        drop(state);
        self.ready.notify_one();
    }

    fn enqueue(&self, state: &mut State, kind: &str, data: &Value) {
        let created_at = now_rfc3339_ms();
        let mut out = Vec::new();
        for s in state
            .subscriptions
            .iter()
            .filter(|s| s.public.types.iter().any(|t| t == kind))
        {
            let envelope = json!({
                "id": random_uuid(),
                "subscription_id": s.public.id,
                "organization_id": self.organization_id,
                "membership_id": self.membership_id,
                "type": kind,
                "created_at": created_at,
                "data": data,
            });
            out.push(Outgoing {
                url: Arc::from(s.public.callback_url.as_str()),
                secret: Arc::clone(&s.secret),
                body: Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default()),
            });
        }
        for o in out {
            if state.queue.len() >= QUEUE_CAPACITY {
                state.queue.pop_front();
                state.stats.overflowed += 1;
            }
            state.queue.push_back(o);
            state.stats.sent += 1;
        }
    }

    async fn next(&self) -> Outgoing {
        loop {
            if let Some(o) = lock(&self.state).queue.pop_front() {
                return o;
            }
            self.ready.notified().await;
        }
    }

    /// Draws `p` from the seeded stream.
    fn chance(&self, p: impl Fn(&WebhookFaults) -> f64) -> bool {
        let mut state = lock(&self.state);
        let p = p(&state.faults);
        p > 0.0 && state.rng.random_bool(p.min(1.0))
    }

    fn count(&self, f: impl FnOnce(&mut WebhookStats)) {
        f(&mut lock(&self.state).stats);
    }
}

/// `data` of a `v1/payment-links` event: the link as it is now.
fn link_data(created: bool, link: &Link, now: i64, updated_us: i64) -> Value {
    let methods: Vec<&str> = METHODS
        .iter()
        .enumerate()
        .filter(|(i, _)| link.methods & (1 << i) != 0)
        .map(|(_, m)| *m)
        .collect();
    let latest = super::payments::payments_of(link, now)
        .last()
        .and_then(|p| p.get("payment_method").cloned())
        .unwrap_or(Value::Null);
    let metadata = match link.resource_type {
        ResourceType::Invoice => json!({
            "invoice_id": format_uuid(link.resource_id),
            "invoice_number": format!("INV-{:06}", link.invoice_number),
        }),
        ResourceType::Basket => json!({}),
    };
    json!({
        "event": if created { "created" } else { "updated" },
        "payment_link_id": format_uuid(link.id),
        "status": link.status.as_str(),
        "amount": {
            "value": money_value(link.amount_minor, link.currency.exponent()),
            "currency": link.currency.as_str(),
        },
        "resource_type": link.resource_type.as_str(),
        "resource_id": format_uuid(link.resource_id),
        "resource_metadata": metadata,
        "potential_payment_methods": methods,
        "latest_payment_method_used": latest,
        "expired_at": rfc3339(link.expiration),
        "created_at": rfc3339(link.created_at),
        "updated_at": rfc3339_micros(updated_us),
    })
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339 UTC with microseconds (`2026-11-24T23:05:47.123456Z`).
fn rfc3339_micros(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let base = rfc3339(secs);
    match base.strip_suffix('Z') {
        Some(b) => format!("{b}.{micros:06}Z"),
        None => base,
    }
}

/// Now, RFC 3339 UTC with milliseconds (the envelopes' `created_at`).
fn now_rfc3339_ms() -> String {
    let us = unix_micros();
    let base = rfc3339(us.div_euclid(1_000_000));
    match base.strip_suffix('Z') {
        Some(b) => format!("{b}.{:03}Z", us.rem_euclid(1_000_000) / 1000),
        None => base,
    }
}

/// The delivery task of one organisation: sends its queue in order until `stop`.
pub(crate) async fn run(hooks: Arc<Webhooks>, mut stop: watch::Receiver<bool>) {
    let Ok(client) = crate::qonto::client::http_client(ATTEMPT_TIMEOUT) else {
        tracing::error!("simulator: cannot build the webhook HTTP client; no deliveries");
        return;
    };
    let mut held: Option<Outgoing> = None;
    loop {
        let next = async {
            match &held {
                Some(_) => tokio::time::timeout(HOLD_MAX, hooks.next()).await.ok(),
                None => Some(hooks.next().await),
            }
        };
        let item = tokio::select! {
            item = next => item,
            _ = stop.changed() => return,
        };
        let Some(item) = item else {
            // Nothing came to overtake the held event: send it now.
            if let Some(h) = held.take() {
                deliver(&hooks, &client, h, &stop).await;
            }
            continue;
        };
        if hooks.chance(|f| f.drop) {
            hooks.count(|s| s.dropped += 1);
            continue;
        }
        if held.is_none() && hooks.chance(|f| f.reorder) {
            hooks.count(|s| s.reordered += 1);
            held = Some(item);
            continue;
        }
        let twice = hooks.chance(|f| f.duplicate);
        deliver(&hooks, &client, item.clone(), &stop).await;
        if twice {
            hooks.count(|s| s.duplicated += 1);
            deliver(&hooks, &client, item, &stop).await;
        }
        if let Some(h) = held.take() {
            deliver(&hooks, &client, h, &stop).await;
        }
    }
}

/// The first attempt, here; the retries, if any, in a task of their own.
async fn deliver(
    hooks: &Arc<Webhooks>,
    client: &reqwest::Client,
    item: Outgoing,
    stop: &watch::Receiver<bool>,
) {
    if attempt(hooks, client, &item).await {
        return;
    }
    if hooks.retries_pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_RETRIES {
        hooks.retries_pending.fetch_sub(1, Ordering::SeqCst);
        hooks.count(|s| s.abandoned += 1);
        return;
    }
    let hooks = Arc::clone(hooks);
    let client = client.clone();
    let mut stop = stop.clone();
    tokio::spawn(async move {
        let mut delivered = false;
        for n in 1..MAX_ATTEMPTS {
            // 1 s, 2 s, 4 s, …
            let wait = Duration::from_secs(1u64 << (n - 1).min(10));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            hooks.count(|s| s.retried += 1);
            if attempt(&hooks, &client, &item).await {
                delivered = true;
                break;
            }
        }
        if !delivered && !*stop.borrow() {
            hooks.count(|s| s.abandoned += 1);
        }
        hooks.retries_pending.fetch_sub(1, Ordering::SeqCst);
    });
}

/// One signed `POST`; true on a 2xx.
async fn attempt(hooks: &Webhooks, client: &reqwest::Client, item: &Outgoing) -> bool {
    let stale = hooks.chance(|f| f.stale);
    let t = if stale {
        hooks.count(|s| s.stale += 1);
        unix_secs().saturating_sub(STALE_BY)
    } else {
        unix_secs()
    };
    let sig = signature(&item.secret, t, &item.body);
    let sent = client
        .post(&*item.url)
        .header("content-type", "application/json")
        .header("x-qonto-signature", sig)
        .body(item.body.clone())
        .send()
        .await;
    let ok = matches!(&sent, Ok(r) if r.status().is_success());
    hooks.count(|s| {
        if ok {
            s.delivered += 1;
        } else {
            s.failed_attempts += 1;
        }
    });
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_test_vector() {
        assert_eq!(
            signature(b"test-secret", 1_704_110_400, br#"{"test":"data"}"#),
            "t=1704110400,v1=56aff06dc227db80d6568a5070f912c601c31f20451745d257cbc0b5dfa93805"
        );
    }

    #[test]
    fn callback_urls() {
        assert!(check_callback_url("https://hooks.example.com/qonto").is_ok());
        assert!(check_callback_url("http://127.0.0.1:9/x").is_ok());
        assert!(check_callback_url("http://localhost:9/x").is_ok());
        assert!(check_callback_url("http://[::1]:9/x").is_ok());
        assert!(check_callback_url("http://hooks.example.com/").is_err());
        assert!(check_callback_url("ftp://hooks.example.com/").is_err());
        assert!(check_callback_url("not a url").is_err());
        let long = format!(
            "https://example.com/{}",
            "a".repeat(crate::webhook::subscribe::MAX_CALLBACK_URL_LEN)
        );
        assert!(check_callback_url(&long).unwrap_err().contains("512"));
    }

    #[test]
    fn faults_must_be_probabilities() {
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            let f = WebhookFaults {
                stale: bad,
                ..WebhookFaults::default()
            };
            assert!(f.validate().is_err(), "{bad}");
        }
        assert!(
            WebhookFaults {
                drop: 1.0,
                ..WebhookFaults::default()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn micro_dates_are_rfc3339() {
        assert_eq!(
            rfc3339_micros(1_704_110_400_000_001),
            "2024-01-01T12:00:00.000001Z"
        );
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn generated_secrets_are_64_hex() {
        let a = generate_secret();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, generate_secret());
    }
}
