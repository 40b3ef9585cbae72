//! The webhook receiver: its own listener (it faces the internet while `/metrics` stays
//! internal), optional TLS from `--webhook.web-config.file`, and one short, synchronous path per
//! delivery so that Qonto gets its answer well within its 1 s limit.
//!
//! A delivery is checked in this order, each refusal answered at once and counted per
//! organisation in `qonto_exporter_webhook_events_total` (see [`Outcome`]):
//! 1. `{path}/{organization}` routes to that organisation, `{path}` alone to the only one
//!    configured; else 404 (not counted: not a delivery to any organisation);
//! 2. `POST` only (405, not counted); a `Content-Type` other than JSON (415, malformed; none at
//!    all is let through to the envelope parse);
//! 3. a body of at most [`MAX_BODY`] bytes, read within [`BODY_TIMEOUT`] (413 or 408, malformed);
//! 4. `X-Qonto-Signature` against every secret, then its timestamp (401: bad_signature for a
//!    well-formed header no secret matches, malformed for a missing or garbled one, stale); a body is parsed only once verified, so refusals up to here have type `unknown`;
//! 5. the event envelope (400, malformed);
//! 6. an event id already queued for the organisation answers 200 (duplicate) without queueing;
//! 7. the organisation's bounded queue: full or closed answers 503 (queue_full) and the id is not
//!    remembered, so Qonto's retry is processed; else 200.
//!
//! Answers are short fixed texts: no input, no secret. Each refusal is logged at debug, and at
//! warn at most once a minute per organisation and outcome, so a flood cannot fill the logs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc::error::TrySendError, watch};

use super::event::{self, UNKNOWN};
use super::metrics::{Outcome, WebhookMetrics};
use super::signature;
use super::{Delivery, Inbox};
use crate::config::WebhookConfig;
use crate::server::Body;
use crate::shutdown::stopped;
use crate::webconfig::WebConfig;

/// Largest body accepted (Qonto's events are a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// How long the headers, then the body, may take to arrive before the connection is dropped
/// (headers) or 408 is answered (body): a slow sender must not hold a connection for long.
/// Qonto wants its answer within 1 s, so its requests arrive in far less.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Event ids remembered per organisation for deduplication (oldest forgotten first). Ids are
/// kept as 128-bit keyed hashes: about 5 MB per organisation when full, whatever their length.
pub const DEDUPE_CAPACITY: usize = 100_000;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long in-flight deliveries get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning per organisation and outcome in this time.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The clock the receiver reads (signature freshness, receipt times); tests fix it.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Why the receiver could not run.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--webhook.listen-address: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Qonto sends no credentials: basic auth would refuse every delivery.
    #[error(
        "--webhook.web-config.file: basic_auth_users cannot apply to webhooks (Qonto sends no credentials; deliveries are authenticated by their signature); remove it from this file"
    )]
    BasicAuth,
}

/// The organisations deliveries are routed to: changed while the receiver runs (reloads add and
/// remove organisations); a delivery reads it without a lock.
pub struct Router {
    path: String,
    routes: ArcSwap<HashMap<String, Arc<Route>>>,
    /// Serialises writers (a read-copy-update of `routes`).
    write: Mutex<()>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("path", &self.path)
            .field("organizations", &self.routes.load().len())
            .finish()
    }
}

impl Router {
    /// An empty router for `path` (`--webhook.path`, e.g. `/webhooks/qonto`).
    pub fn new(path: &str) -> Arc<Router> {
        Arc::new(Router {
            path: path.trim_end_matches('/').to_owned(),
            routes: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
        })
    }

    /// Routes `organization`'s deliveries to `inbox` and sets its `enabled` gauge. Replacing an
    /// organisation (a restart after a reload) starts its dedupe memory afresh: the new queue's
    /// reader has seen none of the old ids.
    pub fn insert(&self, organization: &str, inbox: Inbox, metrics: WebhookMetrics) {
        metrics.enable();
        let route = Arc::new(Route::new(organization, inbox, metrics));
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut routes = HashMap::clone(&self.routes.load());
        routes.insert(organization.to_owned(), route);
        self.routes.store(Arc::new(routes));
    }

    /// Stops routing `organization` (its deliveries then get 404) and clears its `enabled`
    /// gauge.
    pub fn remove(&self, organization: &str) {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut routes = HashMap::clone(&self.routes.load());
        if let Some(r) = routes.remove(organization) {
            r.metrics.disable();
        }
        self.routes.store(Arc::new(routes));
    }

    /// The organisations routed now.
    pub fn organizations(&self) -> Vec<String> {
        self.routes.load().keys().cloned().collect()
    }

    /// The route of a request path: `{path}/{organization}`, or `{path}` when exactly one
    /// organisation is routed.
    fn resolve(&self, request_path: &str) -> Option<Arc<Route>> {
        let rest = request_path.strip_prefix(self.path.as_str())?;
        let routes = self.routes.load();
        if rest.is_empty() {
            return match routes.len() {
                1 => routes.values().next().cloned(),
                _ => None,
            };
        }
        routes.get(rest.strip_prefix('/')?).cloned()
    }
}

/// One organisation's queue, metrics and memories.
struct Route {
    name: String,
    inbox: Inbox,
    metrics: WebhookMetrics,
    seen: Mutex<Seen>,
    /// Per outcome: when a warning was last logged, and the refusals since.
    warned: Mutex<[Option<(Instant, u64)>; Outcome::ALL.len()]>,
}

/// What became of an event offered to a route.
enum Offer {
    Queued,
    Duplicate,
    Full,
    Closed,
}

impl Route {
    fn new(name: &str, inbox: Inbox, metrics: WebhookMetrics) -> Route {
        Route {
            name: name.to_owned(),
            inbox,
            metrics,
            seen: Mutex::new(Seen::new(DEDUPE_CAPACITY)),
            warned: Mutex::new([None; Outcome::ALL.len()]),
        }
    }

    /// Queues `event` unless its id was queued before; the id is remembered only once queued.
    /// The memory's lock is held across the (non-blocking) send, so two concurrent deliveries
    /// of one event queue it once.
    fn offer(&self, event: event::Event, received_at: SystemTime) -> Offer {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = seen.key(&event.id);
        if seen.contains(key) {
            return Offer::Duplicate;
        }
        let created_at = event.created_at;
        match self.inbox.try_send(Delivery { event, received_at }) {
            Ok(()) => {
                seen.insert(key);
                drop(seen);
                self.metrics.queued(received_at, created_at);
                Offer::Queued
            }
            Err(TrySendError::Full(_)) => Offer::Full,
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    /// Counts and logs a refusal or duplicate, and builds its answer.
    fn refuse(
        &self,
        type_label: &str,
        outcome: Outcome,
        status: StatusCode,
        reason: &'static str,
        peer: SocketAddr,
    ) -> Response<Body> {
        self.metrics.count(type_label, outcome);
        tracing::debug!(
            organization = %self.name,
            outcome = outcome.as_str(),
            status = status.as_u16(),
            %peer,
            reason,
            "webhook delivery not queued"
        );
        if outcome != Outcome::Duplicate {
            self.warn(outcome, status, reason, peer);
        }
        text(status, reason)
    }

    fn warn(&self, outcome: Outcome, status: StatusCode, reason: &'static str, peer: SocketAddr) {
        let Some(i) = Outcome::ALL.iter().position(|o| *o == outcome) else {
            return;
        };
        let now = Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        match &mut warned[i] {
            Some((at, since)) if now.saturating_duration_since(*at) < WARN_INTERVAL => {
                *since = since.saturating_add(1);
            }
            slot => {
                let suppressed = slot.map_or(0, |(_, n)| n);
                *slot = Some((now, 0));
                drop(warned);
                tracing::warn!(
                    organization = %self.name,
                    outcome = outcome.as_str(),
                    status = status.as_u16(),
                    %peer,
                    reason,
                    suppressed,
                    "webhook delivery refused (the same refusals are logged at debug for the next minute; suppressed counts the previous minute's)"
                );
            }
        }
    }
}

/// A bounded memory of event ids, oldest forgotten first. Ids are stored as SipHash-1-3
/// 128-bit hashes under a per-process random key: fixed size, and no id chosen by a sender can
/// be made to collide with another's.
struct Seen {
    hasher_key: [u8; 16],
    set: HashSet<u128>,
    order: VecDeque<u128>,
    capacity: usize,
}

impl Seen {
    fn new(capacity: usize) -> Seen {
        Seen {
            hasher_key: rand::random(),
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn key(&self, id: &str) -> u128 {
        use siphasher::sip128::Hasher128;
        use std::hash::Hasher;
        let mut h = siphasher::sip128::SipHasher13::new_with_key(&self.hasher_key);
        h.write(id.as_bytes());
        h.finish128().as_u128()
    }

    fn contains(&self, key: u128) -> bool {
        self.set.contains(&key)
    }

    fn insert(&mut self, key: u128) {
        if self.set.insert(key) {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// What a connection's requests need.
struct Receiver {
    router: Arc<Router>,
    secrets: Arc<super::secrets::WebhookSecrets>,
    web: Option<Arc<WebConfig>>,
    clock: Clock,
}

/// Binds `cfg.listen_address` and serves until `shutdown` turns true: the one entry point.
pub async fn run(
    cfg: WebhookConfig,
    router: Arc<Router>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), WebhookError> {
    let listener =
        crate::server::bind(cfg.listen_address).map_err(|source| WebhookError::Bind {
            addr: cfg.listen_address,
            source,
        })?;
    serve(listener, cfg, router, shutdown).await
}

/// Serves deliveries on `listener` until `shutdown` turns true, then lets those in flight
/// finish (up to 10 s). Also watches `--webhook.secret-file` for rotations.
pub async fn serve(
    listener: TcpListener,
    cfg: WebhookConfig,
    router: Arc<Router>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), WebhookError> {
    serve_with_clock(listener, cfg, router, shutdown, Arc::new(SystemTime::now)).await
}

/// [`serve`] with another clock (tests of freshness with fixed times).
pub async fn serve_with_clock(
    listener: TcpListener,
    cfg: WebhookConfig,
    router: Arc<Router>,
    mut shutdown: watch::Receiver<bool>,
    clock: Clock,
) -> Result<(), WebhookError> {
    if cfg.web.as_ref().is_some_and(|w| w.requires_auth()) {
        return Err(WebhookError::BasicAuth);
    }
    let receiver = Arc::new(Receiver {
        router,
        secrets: cfg.secrets.clone(),
        web: cfg.web.clone(),
        clock,
    });
    tokio::spawn(cfg.secrets.clone().watch(shutdown.clone()));
    let tls = cfg.web.as_ref().and_then(|w| w.tls_acceptor());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tracing::info!(
        address = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
        path = %receiver.router.path,
        tls = tls.is_some(),
        secrets = cfg.secrets.len(),
        "webhook receiver listening"
    );
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "webhook listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let receiver = receiver.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let receiver = receiver.clone();
                async move { Ok::<_, Infallible>(handle(&receiver, req, peer).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(BODY_TIMEOUT);
            crate::server::serve_connection(
                stream,
                peer,
                tls,
                HANDSHAKE_TIMEOUT,
                &builder,
                svc,
                watcher,
                "webhook ",
            )
            .await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some webhook connections did not finish within {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}

/// Whether the body may be JSON: `application/json` or a `+json` type (parameters allowed), or
/// no `Content-Type` at all (Qonto's docs do not name one; the envelope parse decides). A body
/// declared as something else is refused.
fn is_json(req: &Request<Incoming>) -> bool {
    let Some(value) = req.headers().get(CONTENT_TYPE) else {
        return true;
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

async fn handle(rx: &Receiver, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let mut resp = answer(rx, req, peer).await;
    if let Some(web) = &rx.web {
        for (name, value) in web.extra_headers() {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    resp
}

async fn answer(rx: &Receiver, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let Some(route) = rx.router.resolve(req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if req.method() != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n");
        r.headers_mut()
            .insert(ALLOW, http::HeaderValue::from_static("POST"));
        return r;
    }
    if !is_json(&req) {
        return route.refuse(
            UNKNOWN,
            Outcome::Malformed,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json\n",
            peer,
        );
    }
    let too_large = |route: &Route| {
        route.refuse(
            UNKNOWN,
            Outcome::Malformed,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body over 64 KiB\n",
            peer,
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large(&route);
    }
    // Copied before the request is consumed; at most a few KiB (hyper caps header sizes).
    let header = req
        .headers()
        .get(signature::HEADER)
        .map(|v| v.as_bytes().to_vec());
    let body = match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(&route),
        Ok(Err(_)) => {
            return route.refuse(
                UNKNOWN,
                Outcome::Malformed,
                StatusCode::BAD_REQUEST,
                "body could not be read\n",
                peer,
            );
        }
        Err(_) => {
            return route.refuse(
                UNKNOWN,
                Outcome::Malformed,
                StatusCode::REQUEST_TIMEOUT,
                "body not received in time\n",
                peer,
            );
        }
    };
    let now = (rx.clock)();
    let keys = rx.secrets.keys();
    if let Err(e) = signature::verify(header.as_deref(), &body, &keys, now) {
        let (outcome, reason) = match e {
            signature::SignatureError::Stale => (Outcome::Stale, "signature timestamp too old\n"),
            signature::SignatureError::Future => {
                (Outcome::Stale, "signature timestamp in the future\n")
            }
            // Without a well-formed header it is not a mis-signed delivery (what the bad
            // signature alert is about) but noise any client can send: malformed.
            signature::SignatureError::Missing => (Outcome::Malformed, "signature missing\n"),
            signature::SignatureError::Malformed => {
                (Outcome::Malformed, "signature header malformed\n")
            }
            signature::SignatureError::Mismatch => (Outcome::BadSignature, "signature invalid\n"),
        };
        return route.refuse(UNKNOWN, outcome, StatusCode::UNAUTHORIZED, reason, peer);
    }
    let event = match event::parse(&body) {
        Ok(e) => e,
        Err(_) => {
            return route.refuse(
                UNKNOWN,
                Outcome::Malformed,
                StatusCode::BAD_REQUEST,
                "not a usable event\n",
                peer,
            );
        }
    };
    let type_label = event.type_label;
    match route.offer(event, now) {
        Offer::Queued => text(StatusCode::OK, "accepted\n"),
        Offer::Duplicate => route.refuse(
            type_label,
            Outcome::Duplicate,
            StatusCode::OK,
            "duplicate\n",
            peer,
        ),
        Offer::Full => route.refuse(
            type_label,
            Outcome::QueueFull,
            StatusCode::SERVICE_UNAVAILABLE,
            "queue full, retry later\n",
            peer,
        ),
        Offer::Closed => route.refuse(
            type_label,
            Outcome::QueueFull,
            StatusCode::SERVICE_UNAVAILABLE,
            "not accepting events now, retry later\n",
            peer,
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dedupe_memory_is_bounded_and_forgets_the_oldest() {
        let mut s = Seen::new(3);
        let keys: Vec<u128> = ["a", "b", "c", "d"].iter().map(|i| s.key(i)).collect();
        for k in &keys {
            s.insert(*k);
        }
        assert!(!s.contains(keys[0]));
        assert!(keys[1..].iter().all(|k| s.contains(*k)));
        assert_eq!((s.set.len(), s.order.len()), (3, 3));
        // Re-inserting a remembered id does not grow the memory.
        s.insert(keys[3]);
        assert_eq!(s.order.len(), 3);
        // A long id costs no more than a short one.
        let long = s.key(&"x".repeat(10_000));
        s.insert(long);
        assert!(s.contains(long));
        assert_eq!(s.set.len(), 3);
    }

    #[test]
    fn routing_by_path() {
        let r = Router::new("/webhooks/qonto");
        let registry = prometheus::Registry::new();
        let m = WebhookMetrics::new(&registry);
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        assert!(r.resolve("/webhooks/qonto").is_none());
        r.insert("acme", tx.clone(), m.clone());
        assert_eq!(r.resolve("/webhooks/qonto").unwrap().name, "acme");
        assert_eq!(r.resolve("/webhooks/qonto/acme").unwrap().name, "acme");
        assert!(r.resolve("/webhooks/qonto/globex").is_none());
        assert!(r.resolve("/webhooks/qontoacme").is_none());
        assert!(r.resolve("/webhooks/qonto/acme/x").is_none());
        assert!(r.resolve("/").is_none());
        r.insert("globex", tx, m.clone());
        // Two organisations: the bare path no longer says which.
        assert!(r.resolve("/webhooks/qonto").is_none());
        assert_eq!(r.resolve("/webhooks/qonto/globex").unwrap().name, "globex");
        r.remove("globex");
        assert!(r.resolve("/webhooks/qonto/globex").is_none());
        assert_eq!(m.enabled.get(), 0.0);
        assert_eq!(r.organizations(), ["acme"]);
    }
}
