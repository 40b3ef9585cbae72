//! The HTTP side: the telemetry path, a landing page, health endpoints, optional TLS and
//! basic auth (exporter-toolkit web config), and graceful shutdown.
//!
//! A scrape never waits for Qonto or for a poll. It serves the text of every organisation's
//! last published poll and of the self-metrics, which [`ScrapeCache`] builds at most once a
//! second, and at once when any organisation publishes a poll or the set of organisations
//! changes: with many organisations, gathering and encoding thousands of series per scrape
//! would cost more than the scrape itself (README, Performance). Counters and the `process_*`
//! figures are therefore up to one second old; the figures of a poll show from the first
//! scrape after it. The only locks on that path are short ones (the cache's while it is
//! rebuilt, the registries' while gathering, the walks' progress); none is held across a
//! request to Qonto.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::fleet::{FleetView, OrgView, ReloadRequest};
use crate::html::escape;
use crate::metrics::{Exposition, ProcessMetrics};
use crate::money::{format_amount, format_count};
use crate::publish::{PollStatus, Published};
use crate::qonto::budget::Budget;
use crate::qonto::walk::ProgressView;
use crate::shutdown::stopped;
use crate::webconfig::{AuthOutcome, WebConfig};

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// The Prometheus text format version we emit.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a built `/metrics` text is served before it is built again (sooner when a poll is
/// published or the organisations change).
pub const SCRAPE_CACHE_TTL: Duration = Duration::from_secs(1);
/// Organisations whose figures the landing page details (beyond, one row each).
const LANDING_DETAILS: usize = 10;
/// How long `POST /-/reload` waits for the reload to be applied.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server needs to answer.
pub struct App {
    pub telemetry_path: String,
    /// The organisations running now.
    pub fleet: Arc<FleetView>,
    pub process: Arc<ProcessMetrics>,
    /// The request budget all organisations share: the time left of a poll is at least what it
    /// allows for the pages left.
    pub budget: Arc<Budget>,
    pub web: Option<Arc<WebConfig>>,
    /// Shown on the landing page (shard, budget, configuration).
    pub about: Vec<(String, String)>,
    /// Where `POST /-/reload` asks for a reload; `None` unless `--web.enable-lifecycle`.
    pub reload: Option<tokio::sync::mpsc::Sender<Option<ReloadRequest>>>,
    pub cache: ScrapeCache,
}

/// The last `/metrics` text built, and what it was built from.
#[derive(Default)]
pub struct ScrapeCache {
    last: std::sync::Mutex<Option<Arc<Built>>>,
}

struct Built {
    at: Instant,
    key: Vec<u128>,
    plain: Bytes,
    gzip: std::sync::OnceLock<Option<Bytes>>,
}

impl ScrapeCache {
    /// The text to serve: the cached one while it is younger than [`SCRAPE_CACHE_TTL`] and no
    /// organisation has published since; else built now (once, whoever asks meanwhile waits).
    fn get(&self, app: &App) -> Arc<Built> {
        let orgs = app.fleet.orgs();
        // Values, not pointers: an address can be reused by the next value's allocation.
        let nanos = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos())
        };
        let mut key = Vec::with_capacity(1 + 3 * orgs.len());
        key.push(u128::from(app.fleet.generation()));
        for o in orgs.iter() {
            let status = o.shared.status.load();
            // Each published value has its own revision: a poll, or webhook events since.
            key.push(u128::from(
                o.shared.published.load().as_ref().map_or(0, |p| p.revision),
            ));
            key.push(u128::from(status.polls));
            key.push(nanos(status.in_progress_since));
        }
        if let Some(b) = self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if b.key == key && b.at.elapsed() < SCRAPE_CACHE_TTL {
                return b.clone();
            }
        }
        // Built without the lock: a scrape arriving meanwhile builds its own text rather than
        // block a runtime worker while this one encodes.
        let built = Arc::new(Built {
            at: Instant::now(),
            plain: Bytes::from(exposition(app, &orgs)),
            key,
            gzip: std::sync::OnceLock::new(),
        });
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(built.clone());
        built
    }
}

/// Every organisation's figures and self-metrics, then the process's, in the text format.
fn exposition(app: &App, orgs: &[Arc<OrgView>]) -> Vec<u8> {
    let mut e = Exposition::default();
    for o in orgs {
        if let Some(p) = o.shared.published.load_full() {
            e.add(p.families.iter().cloned());
        }
    }
    for o in orgs {
        record_progress(o, poll_progress(app, o, &o.shared.status.load()));
        e.add(o.metrics.gather());
    }
    e.add(app.process.gather());
    let mut out = Vec::with_capacity(16 * 1024 * (orgs.len() + 1));
    e.encode(&mut out);
    out
}

/// Serves until `shutdown` turns true, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let tls = app.web.as_ref().and_then(|w| w.tls_acceptor());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, req).await) }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            serve_connection(
                stream,
                peer,
                tls,
                HANDSHAKE_TIMEOUT,
                &builder,
                svc,
                watcher,
                "",
            )
            .await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}

/// Serves one accepted connection to its end, or until the graceful shutdown that `watcher`
/// belongs to ends it: the TLS handshake first (within `handshake`) when `tls` is given. `what`
/// names the listener in the debug lines of failed connections.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_connection<S, B>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake: Duration,
    builder: &hyper::server::conn::http1::Builder,
    svc: S,
    watcher: hyper_util::server::graceful::Watcher,
    what: &str,
) where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let result = match tls {
        None => {
            watcher
                .watch(builder.serve_connection(TokioIo::new(stream), svc))
                .await
        }
        Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                watcher
                    .watch(builder.serve_connection(TokioIo::new(tls), svc))
                    .await
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "{what}TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "{what}TLS handshake timed out");
                return;
            }
        },
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "{what}connection error");
    }
}

/// Routes one request.
pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let mut resp = if path == "/-/reload" {
        if req.method() != Method::POST && req.method() != Method::PUT {
            text(StatusCode::METHOD_NOT_ALLOWED, "only POST or PUT\n")
        } else if let Some(denied) = authorize(app, &req).await {
            denied
        } else {
            reload(app).await
        }
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
    } else if path == "/-/healthy" {
        text(StatusCode::OK, "Healthy\n")
    } else if path == "/-/ready" {
        if ready(&app.fleet) {
            text(StatusCode::OK, "Ready\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not ready: the first polls have not all ended, or none has succeeded\n",
            )
        }
    } else if let Some(denied) = authorize(app, &req).await {
        denied
    } else if path == app.telemetry_path {
        metrics_response(app, &req)
    } else if path == "/" {
        html(StatusCode::OK, landing_page(app))
    } else {
        text(StatusCode::NOT_FOUND, "not found\n")
    };
    if let Some(web) = &app.web {
        for (name, value) in web.extra_headers() {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if req.method() == Method::HEAD {
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, empty());
    }
    resp
}

/// Ready once every organisation's first poll has ended (a failing one must not keep the
/// others' figures from being scraped) and at least one has figures to serve; with no
/// organisation (an empty shard), at once. Then ready for good: an organisation that a reload
/// adds or restarts does not take the process out of service during its first poll.
fn ready(fleet: &FleetView) -> bool {
    if fleet.was_ready() {
        return true;
    }
    let orgs = fleet.orgs();
    let has_figures = |o: &Arc<OrgView>| o.shared.published.load().is_some();
    let now = orgs.is_empty()
        || (orgs.iter().any(has_figures)
            && orgs
                .iter()
                .all(|o| has_figures(o) || o.shared.status.load().polls > 0));
    if now {
        fleet.latch_ready();
    }
    now
}

/// `POST /-/reload`: 200 once the configuration is applied, 500 with the reason when it is
/// refused (the running organisations stay), 403 without `--web.enable-lifecycle`, as
/// Prometheus answers.
async fn reload(app: &App) -> Response<Body> {
    let Some(tx) = &app.reload else {
        return text(
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled (--web.enable-lifecycle)\n",
        );
    };
    let (answer, result) = tokio::sync::oneshot::channel();
    match tokio::time::timeout(RELOAD_TIMEOUT, tx.send(Some(answer))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        Err(_) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "reloads are queued up; try again later\n",
            );
        }
    }
    match tokio::time::timeout(RELOAD_TIMEOUT, result).await {
        Ok(Ok(Ok(()))) => text(StatusCode::OK, "OK\n"),
        Ok(Ok(Err(e))) => owned_text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        ),
        Ok(Err(_)) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reload did not finish within 60s; see the logs\n",
        ),
    }
}

/// `Some(401)` when basic auth is configured and the request does not pass it. Health
/// endpoints stay open so orchestrator probes need no credentials; they reveal nothing.
async fn authorize(app: &App, req: &Request<Incoming>) -> Option<Response<Body>> {
    let web = app.web.as_ref()?;
    if !web.requires_auth() {
        return None;
    }
    let web = web.clone();
    let headers = req.headers().clone();
    // bcrypt is deliberately slow: keep it off the async workers.
    let outcome = tokio::task::spawn_blocking(move || web.authorize(&headers))
        .await
        .unwrap_or(AuthOutcome::Unauthorized);
    match outcome {
        AuthOutcome::Allowed => None,
        AuthOutcome::Unauthorized => {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                http::HeaderValue::from_static(crate::webconfig::WWW_AUTHENTICATE),
            );
            Some(r)
        }
    }
}

fn metrics_response(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let built = app.cache.get(app);
    let gzip = req
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, TEXT_FORMAT)
        .header(VARY, "Accept-Encoding");
    let response = if gzip {
        // Compressed once per built text, not once per scrape.
        let compressed = built.gzip.get_or_init(|| {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(built.plain.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&built.plain)
                .and_then(|()| enc.finish())
                .ok()
                .map(Bytes::from)
        });
        match compressed {
            Some(b) => builder
                .header(CONTENT_ENCODING, "gzip")
                .body(full(b.clone())),
            None => return text(StatusCode::INTERNAL_SERVER_ERROR, "compression failed\n"),
        }
    } else {
        builder.body(full(built.plain.clone()))
    };
    response.unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "error\n"))
}

/// Where the poll under way stands, its time left at the current budget (the longer of the
/// recent page rate's estimate and the budget's); `None` when no poll is running.
fn poll_progress(app: &App, org: &OrgView, status: &PollStatus) -> Option<ProgressView> {
    status.in_progress_since.map(|since| {
        org.progress
            .view(since, Instant::now())
            .at_budget(&app.budget)
    })
}

/// Sets the progress gauges from `view` (see their HELP in the metrics module): they are read
/// when `/metrics` is built, as the walks' shared progress has no other reader to push them.
fn record_progress(org: &OrgView, view: Option<ProgressView>) {
    let m = &org.metrics;
    let view = view.unwrap_or(ProgressView {
        remaining: Some(Duration::ZERO),
        ..ProgressView::default()
    });
    m.poll_progress_pages.set(view.pages_done as f64);
    m.poll_total_pages.set(view.pages_total as f64);
    m.poll_remaining_seconds
        .set(view.remaining.map_or(f64::NAN, |d| d.as_secs_f64()));
}

/// True when `Accept-Encoding` allows gzip (q=0 refuses it).
fn accepts_gzip(header: &str) -> bool {
    header.split(',').any(|part| {
        let mut it = part.split(';').map(str::trim);
        let coding = it.next().unwrap_or("");
        let refused = it.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

fn full(b: Bytes) -> Body {
    Full::new(b).boxed()
}

fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    owned_text(status, body.to_owned())
}

fn owned_text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn ago(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(d.as_secs()))
        ),
        Err(_) => "just now".into(),
    }
}

/// The landing page: what runs, one row per organisation, and each one's last poll and figures
/// (the figures of the first [`LANDING_DETAILS`] organisations only).
fn landing_page(app: &App) -> String {
    let orgs = app.fleet.orgs();
    let mut h = String::with_capacity(16 * 1024);
    h.push_str(concat!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>qonto-exporter</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}",
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em}",
        "td.n{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#b00}.ok{color:#070}</style>",
        "</head><body><h1>qonto-exporter</h1>"
    ));
    h.push_str(&format!(
        "<p>Prometheus exporter for Qonto payment links, version {} ({}). Metrics: <a href=\"{p}\">{p}</a> · <a href=\"/-/healthy\">/-/healthy</a> · <a href=\"/-/ready\">/-/ready</a></p>",
        env!("CARGO_PKG_VERSION"),
        env!("QONTO_EXPORTER_REVISION"),
        p = escape(&app.telemetry_path),
    ));
    about_table(&mut h, &app.about);
    h.push_str(&format!(
        "<h2>Organisations</h2><p>{} polled by this process.</p><table><tr><th>organisation</th><th>last poll</th><th>links</th><th>open links</th><th>open amount</th></tr>",
        format_count(orgs.len() as u64)
    ));
    let detailed = orgs.len() <= LANDING_DETAILS;
    for o in orgs.iter() {
        org_row(&mut h, o, detailed);
    }
    h.push_str("</table>");
    if orgs.is_empty() {
        h.push_str("<p>No organisation falls to this shard.</p>");
    }
    if !detailed {
        h.push_str(&format!(
            "<p>{} organisations: details are shown for up to {LANDING_DETAILS}; the dashboard has them all.</p>",
            orgs.len()
        ));
    } else {
        for o in orgs.iter() {
            org_details(&mut h, app, o);
        }
    }
    h.push_str("</body></html>\n");
    h
}

fn about_table(h: &mut String, rows: &[(String, String)]) {
    h.push_str("<table>");
    for (k, v) in rows {
        h.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(v)
        ));
    }
    h.push_str("</table>");
}

/// "succeeded, 5s ago" and the like, for the latest poll.
fn last_poll(status: &PollStatus) -> String {
    match (&status.last_finished_at, &status.last_error) {
        (None, _) => "not yet".to_owned(),
        (Some(t), None) => format!("<span class=\"ok\">succeeded</span>, {}", ago(*t)),
        (Some(t), Some(_)) => format!("<span class=\"bad\">failed</span>, {}", ago(*t)),
    }
}

/// One organisation's row: its latest poll, links, and open links per currency (amounts of
/// different currencies are never added up).
fn org_row(h: &mut String, o: &OrgView, link: bool) {
    let status = o.shared.status.load();
    let published = o.shared.published.load_full();
    let (links, open_count, open_amount) = match &published {
        None => ("–".to_owned(), "–".to_owned(), "–".to_owned()),
        Some(p) => {
            let open: Vec<_> = p
                .summary
                .by_status
                .iter()
                .filter(|(s, _, _)| s == "open")
                .collect();
            let counts = open.iter().map(|(_, _, t)| t.count).sum::<u64>();
            let amounts = open
                .iter()
                .map(|(_, c, t)| escape(&format_amount(t.amount, c)))
                .collect::<Vec<_>>()
                .join("<br>");
            (
                format_count(p.snapshot.unique_links),
                format_count(counts),
                if amounts.is_empty() {
                    "–".to_owned()
                } else {
                    amounts
                },
            )
        }
    };
    let n = escape(&o.name);
    let name = if link {
        format!("<a href=\"#org-{n}\">{n}</a>")
    } else {
        n
    };
    h.push_str(&format!(
        "<tr><td>{name}</td><td>{}</td><td class=\"n\">{links}</td><td class=\"n\">{open_count}</td><td class=\"n\">{open_amount}</td></tr>",
        last_poll(&status),
    ));
}

/// One organisation's settings, latest poll and figures.
fn org_details(h: &mut String, app: &App, o: &OrgView) {
    let status = o.shared.status.load();
    let published = o.shared.published.load_full();
    h.push_str(&format!(
        "<h2 id=\"org-{n}\">Organisation {n}</h2>",
        n = escape(&o.name)
    ));
    about_table(h, &o.about);
    h.push_str("<h3>Last poll</h3><p>");
    match (&status.last_finished_at, &status.last_error) {
        (None, _) => h.push_str("No poll has finished yet."),
        (Some(t), None) => h.push_str(&format!(
            "<span class=\"ok\">succeeded</span>, {}.",
            ago(*t)
        )),
        (Some(t), Some(e)) => h.push_str(&format!(
            "<span class=\"bad\">failed</span>, {}: {}. The figures below are from the last complete poll.",
            ago(*t),
            escape(e)
        )),
    }
    if let Some(since) = status.in_progress_since {
        h.push_str(&format!(" A poll is running (started {})", ago(since)));
        h.push_str(&progress_sentence(poll_progress(app, o, &status)));
    }
    h.push_str("</p>");
    match published {
        None => h.push_str("<p>No figures yet.</p>"),
        Some(p) => summary(h, &p),
    }
}

/// The end of the "A poll is running" sentence: pages done of total and the time left.
fn progress_sentence(view: Option<ProgressView>) -> String {
    let Some(v) = view.filter(|v| v.pages_total > 0) else {
        return ".".into();
    };
    let percent = u128::from(v.pages_done.min(v.pages_total)) * 100 / u128::from(v.pages_total);
    let mut out = format!(
        ": page {} of {} ({percent} %)",
        format_count(v.pages_done),
        format_count(v.pages_total)
    );
    let left = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs().max(1)));
    match (v.remaining, v.pages_per_second) {
        (Some(t), Some(rate)) if v.pages_done < v.pages_total => out.push_str(&format!(
            ", about {} left at the current budget ({rate:.1} pages/s over the last {}).",
            left(t),
            humantime::format_duration(crate::qonto::walk::RATE_WINDOW),
        )),
        (Some(t), None) if v.pages_done < v.pages_total => {
            out.push_str(&format!(", about {} left at the current budget.", left(t)))
        }
        (None, Some(_)) => out.push_str(", no page fetched lately: time left unknown."),
        _ => out.push('.'),
    }
    out
}

fn summary(h: &mut String, p: &Published) {
    h.push_str(&format!(
        "<h3>Payment links</h3><p>{} links as of {} ({} pages, {} requests, {:.2} s, {} poll).</p>",
        format_count(p.snapshot.unique_links),
        humantime::format_rfc3339_seconds(p.finished_at),
        format_count(p.pages),
        format_count(p.requests),
        p.duration.as_secs_f64(),
        if p.full { "full" } else { "incremental" },
    ));
    h.push_str("<table><tr><th>status</th><th>currency</th><th>links</th><th>amount</th></tr>");
    for (status, currency, t) in &p.summary.by_status {
        money_row(h, status, currency, t);
    }
    h.push_str("</table><h3>Open links expiring soon</h3><table><tr><th>within</th><th>currency</th><th>links</th><th>amount</th></tr>");
    for (within, currency, t) in &p.summary.expiring {
        money_row(h, within, currency, t);
    }
    h.push_str(&format!(
        "</table><p>Open links past their expiration date: {}.</p>",
        format_count(p.summary.past)
    ));
}

/// One row of a money table: what, currency, links, amount (with the currency's minor units,
/// see the money module; the code is repeated beside the amount, as on an invoice).
fn money_row(h: &mut String, what: &str, currency: &str, t: &crate::aggregate::Totals) {
    h.push_str(&format!(
        "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        escape(what),
        escape(currency),
        format_count(t.count),
        escape(&format_amount(t.amount, currency))
    ));
}

/// Binds the listen address. `:PORT` (the unspecified IPv6 address) means every interface:
/// dual-stack where the host has IPv6, plain IPv4 where it does not.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |addr: SocketAddr| -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    };
    match open(addr) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            open(v4).map_err(|_| e)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, gzip;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
    }
}
