//! The HTTP client of `GET /v2/payment_links`: one pooled reqwest client, authentication,
//! the request budget (this exporter's share of Qonto's two per-IP windows, [`Budget`]), and
//! retries of what is worth retrying. Every attempt, retries included, passes the budget.
//!
//! Retry policy (each attempt counted in `qonto_exporter_api_requests_total{code}`):
//! - 429: wait `Retry-After` (seconds or an HTTP date) if given, else exponential backoff with
//!   jitter; every concurrent request of the process pauses too (the limit is per IP). A
//!   `Retry-After` longer than [`RetryPolicy::max_retry_after`] is not honoured: the request
//!   fails at once with [`ApiError::RetryAfterTooLong`] (so its poll fails, and the next poll
//!   tries again), and [`ApiObserver::retry_after_over_ceiling`] counts it. Every wait is
//!   computed with checked arithmetic: no header value can overflow an `Instant` or hand tokio
//!   an absurd sleep.
//! - 5xx, connection errors, timeouts, a body that is not the documented page: bounded
//!   exponential backoff with jitter, at most `max_attempts` tries.
//! - 401, and a 400 about the `Authorization` header (the spec's example: `bad_request`,
//!   "Authorization field missing"): with OAuth, one retry with a freshly refreshed access token;
//!   otherwise, and for 403, the credentials are refused and nothing is retried. Refused
//!   requests are also capped per hour, because Qonto throttles callers beyond 200 401s an hour.
//! - other 4xx, a redirect, a 200 that is not JSON: not retried.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};

use crate::qonto::auth::{AuthError, Credentials};
use crate::qonto::budget::{Budget, Lane};
use crate::qonto::model::{
    ApiErrorBody, Page, PageError, Payment, parse_connection, parse_page, parse_payments,
};
use crate::qonto::walk::{MAX_PER_PAGE, WalkProgress};
use crate::secret::Secret;

/// Refused requests allowed per rolling hour (Qonto throttles beyond 200).
pub const MAX_REFUSALS_PER_HOUR: usize = 100;

/// Added to a refusal of the credentials by a 401 or a 400 about the `Authorization` header.
pub const CREDENTIALS_HINT: &str = "; check the credentials the exporter is given (README, Credentials): an expired or revoked token, or a login and secret key that do not match";

/// "Held back by the budget" is logged at most this often.
const HELD_LOG_EVERY: Duration = Duration::from_secs(60);

/// Receives one call per HTTP request sent, for the self-metrics.
pub trait ApiObserver: Send + Sync {
    /// `code` is the HTTP status, or `None` when no response came back.
    fn request(&self, code: Option<u16>, elapsed: Duration);

    /// A 429 asked for a longer wait than [`RetryPolicy::max_retry_after`]; its request failed
    /// at once instead of waiting. Does nothing unless implemented.
    fn retry_after_over_ceiling(&self) {}
}

/// Qonto's longest rate-limit window (10,000 requests per 10 minutes per IP, `FACTS.md`): the
/// longest `Retry-After` a healthy API has a reason to send.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Bounds of the waits of one request: every wait before a retry is at most `max_delay`
/// (backoff) or `max_retry_after` (a 429's `Retry-After`), and there are at most
/// `max_attempts` attempts.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// First backoff step; each retry doubles it, with jitter.
    pub base_delay: Duration,
    /// Ceiling of one backoff wait (without `Retry-After`).
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured. A 429 asking for more fails its request at once with
    /// [`ApiError::RetryAfterTooLong`] rather than stalling every request of the process.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": between half and all of base·2ⁿ, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let half = exp / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

/// Settings of the client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub timeout: Duration,
    pub staging_token: Option<Secret>,
    pub retry: RetryPolicy,
    /// This exporter's share of Qonto's per-IP windows, shared by every request of every
    /// organisation the process polls (each client takes turns in it, see [`Budget`]).
    pub budget: std::sync::Arc<Budget>,
}

/// What the API said when it refused or failed a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiFailure {
    pub code: Option<String>,
    pub detail: Option<String>,
    /// The error's `source`, as `parameter per_page` or `pointer /data/amount`.
    pub source: Option<String>,
    pub trace_id: Option<String>,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.detail) {
            (Some(c), Some(d)) => write!(f, "{c}: {d}")?,
            (Some(c), None) => write!(f, "{c}")?,
            (None, Some(d)) => write!(f, "{d}")?,
            (None, None) => write!(f, "no error body")?,
        }
        if let Some(s) = &self.source {
            write!(f, " ({s})")?;
        }
        if let Some(t) = &self.trace_id {
            write!(f, " (trace_id {t})")?;
        }
        Ok(())
    }
}

/// Why a page could not be fetched. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("credentials refused: HTTP {status}, {failure}{hint}")]
    CredentialsRefused {
        status: u16,
        failure: ApiFailure,
        hint: &'static str,
    },
    #[error(
        "not sending: {0} requests were refused within the last hour (Qonto throttles callers beyond 200)"
    )]
    RefusalBudget(usize),
    #[error("{}: HTTP {status}, {failure}", at(*.page))]
    Status {
        page: u64,
        status: u16,
        failure: ApiFailure,
    },
    #[error("{}: {error}{}", at(*.page), trace_suffix(.trace_id))]
    Body {
        page: u64,
        error: PageError,
        trace_id: Option<String>,
    },
    #[error(
        "{}: redirected to {location:?}; the sandbox redirects to a login page when X-Qonto-Staging-Token is missing", at(*.page)
    )]
    Redirect { page: u64, location: String },
    #[error("{}: {message}", at(*.page))]
    Transport { page: u64, message: String },
    #[error(
        "{}: HTTP 429 with Retry-After {} s, longer than --qonto.max-retry-after ({}); not waiting: this poll fails and the next one tries again",
        at(*.page),
        .requested.as_secs(),
        humantime::format_duration(*.ceiling)
    )]
    RetryAfterTooLong {
        page: u64,
        /// The wait the API asked for (from now, for an HTTP date).
        requested: Duration,
        /// [`RetryPolicy::max_retry_after`].
        ceiling: Duration,
    },
    #[error("page {page}: pagination error: {message}")]
    Pagination { page: u64, message: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// The `page` of an error about the connection status request, not a page of links.
pub const CONNECTION_PAGE: u64 = 0;

/// Where an error happened: `page N` of a listing, or the connection status request.
fn at(page: u64) -> String {
    if page == CONNECTION_PAGE {
        "connection status".to_owned()
    } else {
        format!("page {page}")
    }
}

fn trace_suffix(t: &Option<String>) -> String {
    t.as_ref()
        .map(|t| format!(" (trace_id {t})"))
        .unwrap_or_default()
}

impl ApiError {
    /// True when the credentials (not the network or the data) are the problem.
    pub fn is_credentials(&self) -> bool {
        match self {
            ApiError::CredentialsRefused { .. } | ApiError::RefusalBudget(_) => true,
            ApiError::Auth(e) => e.is_refusal(),
            _ => false,
        }
    }
}

/// What a request asks for: a page of a listing, the connection status, or a page of one
/// link's payments.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    List(&'a ListQuery<'a>),
    Connection,
    Payments { link: &'a str, page: u64 },
}

impl Target<'_> {
    /// True for the listings only: a refusal of the connection status or of a link's payments
    /// (a grant without that endpoint) must not spend the refusal budget the listings need.
    fn counts_refusals(&self) -> bool {
        matches!(self, Target::List(_))
    }

    /// The `page` of its errors ([`CONNECTION_PAGE`] for the connection status).
    fn page(&self) -> u64 {
        match self {
            Target::List(q) => q.page,
            Target::Connection => CONNECTION_PAGE,
            Target::Payments { page, .. } => *page,
        }
    }
}

/// Most pages of payments read for one link (100 payments a page): a link with more
/// attempts than that is read in part, and says so.
pub const MAX_PAYMENT_PAGES: u64 = 10;

/// One list request.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    /// `status[]` filters; empty for every status.
    pub statuses: &'a [&'a str],
    pub page: u64,
    pub per_page: u64,
    /// `sort_by` (e.g. `expiration_date:desc`); `None` for the API's default order.
    pub sort_by: Option<&'a str>,
}

/// The Qonto API client; cheap to share behind an `Arc`.
pub struct QontoClient {
    http: reqwest::Client,
    url: String,
    credentials: Credentials,
    staging: Option<HeaderValue>,
    retry: RetryPolicy,
    budget: std::sync::Arc<Budget>,
    /// This client's queue in the budget's round robin.
    lane: Lane,
    /// When "held back by the budget" was last logged.
    held_logged: Mutex<Option<Instant>>,
    /// The listing walked in full most recently: `(total_pages, pages seen)`, for the estimate
    /// in the "held back" log line.
    listing: Mutex<(u64, u64)>,
    refusals: Mutex<VecDeque<Instant>>,
    observer: std::sync::Arc<dyn ApiObserver>,
    sent: AtomicU64,
    progress: std::sync::Arc<WalkProgress>,
}

impl fmt::Debug for QontoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QontoClient")
            .field("url", &self.url)
            .field("credentials", &self.credentials.kind())
            .finish_non_exhaustive()
    }
}

/// The client could not be built (bad TLS setup, bad header value).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("the staging token is not a valid header value")]
    StagingToken,
}

impl QontoClient {
    pub fn new(
        cfg: ClientConfig,
        credentials: Credentials,
        observer: std::sync::Arc<dyn ApiObserver>,
    ) -> Result<Self, BuildError> {
        Self::with_http(http_client(cfg.timeout)?, cfg, credentials, observer)
    }

    /// A client on an existing connection pool (one for every organisation of the process;
    /// `http` must come from [`http_client`], which refuses redirects).
    pub fn with_http(
        http: reqwest::Client,
        cfg: ClientConfig,
        credentials: Credentials,
        observer: std::sync::Arc<dyn ApiObserver>,
    ) -> Result<Self, BuildError> {
        let staging = cfg
            .staging_token
            .as_ref()
            .map(|t| {
                let mut v =
                    HeaderValue::from_str(t.expose()).map_err(|_| BuildError::StagingToken)?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        Ok(QontoClient {
            http,
            url: format!("{}/v2/payment_links", cfg.base_url.trim_end_matches('/')),
            credentials,
            staging,
            retry: cfg.retry,
            lane: cfg.budget.lane(),
            budget: cfg.budget,
            held_logged: Mutex::new(None),
            listing: Mutex::new((0, 0)),
            refusals: Mutex::new(VecDeque::new()),
            observer,
            sent: AtomicU64::new(0),
            progress: std::sync::Arc::default(),
        })
    }

    /// Requests sent since start (every attempt, whatever its outcome).
    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Pages of the walks made through this client (see [`WalkProgress`]), for the server.
    pub fn progress(&self) -> &std::sync::Arc<WalkProgress> {
        &self.progress
    }

    /// The request budget every request passes (for the self-metrics and estimates).
    pub fn budget(&self) -> &std::sync::Arc<Budget> {
        &self.budget
    }

    /// The credentials in use.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Fetches one page and hands the parsed page to `handle`. A body that does not parse is
    /// retried like a transient fault, so `handle` only ever sees a whole, valid page.
    pub async fn get_page<R>(
        &self,
        q: &ListQuery<'_>,
        handle: impl FnOnce(Page<'_>) -> R,
    ) -> Result<R, ApiError> {
        let mut handle = Some(handle);
        self.fetch(Target::List(q), |body| {
            let page = parse_page(body)?;
            self.note_listing(q, page.meta.total_pages);
            // Called again only after an error, so the handler is still there.
            handle
                .take()
                .map(|h| h(page))
                .ok_or_else(|| PageError::Shape("the page was already handled".into()))
        })
        .await
    }

    /// `GET /v2/payment_links/connections`: whether the organisation can take payments at all
    /// (`status`: `enabled`, `pending`, `disabled`, `not_connected`, or another value Qonto adds),
    /// through the same budget, credentials and retries as the listings.
    pub async fn connection_status(&self) -> Result<String, ApiError> {
        self.fetch(Target::Connection, parse_connection).await
    }

    /// `GET /v2/payment_links/{id}/payments`, every page up to [`MAX_PAYMENT_PAGES`]: the
    /// payments of one link, and whether there were more than were read.
    pub async fn link_payments(&self, link: &str) -> Result<(Vec<Payment>, bool), ApiError> {
        // One path segment, whatever it holds; the URL parser drops `.` and `..` segments, so
        // they are refused here rather than sent as another path.
        if matches!(link, "" | "." | "..") {
            return Err(ApiError::Transport {
                page: 1,
                message: format!("link id {link:?} cannot be a path segment; not requested"),
            });
        }
        let mut all = Vec::new();
        let mut page = 1;
        loop {
            let (payments, meta) = self
                .fetch(Target::Payments { link, page }, parse_payments)
                .await?;
            all.extend(payments);
            match meta.next_page {
                Some(next) if next > page && page < MAX_PAYMENT_PAGES => page = next,
                Some(next) if next > page => return Ok((all, true)),
                _ => return Ok((all, false)),
            }
        }
    }

    /// One request of `target`, retried as the policy says; `parse` turns a 2xx body into the
    /// result (a body it refuses is retried, except one that is not JSON at all).
    async fn fetch<R>(
        &self,
        target: Target<'_>,
        mut parse: impl FnMut(&[u8]) -> Result<R, PageError>,
    ) -> Result<R, ApiError> {
        let page = target.page();
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            let outcome = self.attempt(target).await?;
            let retry_after = match outcome {
                Attempt::Body(body, trace_id) => match parse(&body) {
                    Ok(r) => return Ok(r),
                    Err(error @ PageError::NotJson { .. }) => {
                        return Err(ApiError::Body {
                            page,
                            error,
                            trace_id,
                        });
                    }
                    Err(error) => {
                        let what = if page == CONNECTION_PAGE {
                            "connection status"
                        } else {
                            "page"
                        };
                        tracing::warn!(at = %at(page), %error, trace_id = trace_id.as_deref().unwrap_or(""), attempt = attempt + 1, "response is not a valid {what}; retrying");
                        if attempt + 1 >= self.retry.max_attempts {
                            return Err(ApiError::Body {
                                page,
                                error,
                                trace_id,
                            });
                        }
                        None
                    }
                },
                Attempt::Unauthorized {
                    sent,
                    status,
                    failure,
                } => {
                    if !reauthenticated && self.credentials.unauthorized(&sent).await {
                        reauthenticated = true;
                        continue;
                    }
                    if target.counts_refusals() {
                        self.note_refusal();
                    }
                    return Err(ApiError::CredentialsRefused {
                        status,
                        failure,
                        hint: CREDENTIALS_HINT,
                    });
                }
                Attempt::Fail(error) => {
                    if error.is_credentials() && target.counts_refusals() {
                        self.note_refusal();
                    }
                    return Err(error);
                }
                Attempt::Retry {
                    error,
                    retry_after,
                    rate_limited,
                } => {
                    // Checked before the attempt budget, so that every over-long
                    // `Retry-After` is counted, whichever attempt it answers.
                    if let Some(requested) = retry_after.filter(|w| *w > self.retry.max_retry_after)
                    {
                        self.observer.retry_after_over_ceiling();
                        return Err(ApiError::RetryAfterTooLong {
                            page,
                            requested,
                            ceiling: self.retry.max_retry_after,
                        });
                    }
                    if attempt + 1 >= self.retry.max_attempts {
                        return Err(error);
                    }
                    tracing::warn!(at = %at(page), error = %error, attempt = attempt + 1, "request failed; retrying");
                    if rate_limited {
                        let wait = retry_after.unwrap_or_else(|| self.retry.delay(attempt));
                        self.pause_all(wait);
                        Some(wait)
                    } else {
                        retry_after
                    }
                }
            };
            let wait = retry_after.unwrap_or_else(|| self.retry.delay(attempt));
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One HTTP exchange, classified.
    async fn attempt(&self, target: Target<'_>) -> Result<Attempt, ApiError> {
        let page = target.page();
        self.check_refusal_budget()?;
        self.wait_for_pause().await;
        // The credentials first (an OAuth refresh may take a while), so that the request goes
        // out as soon as the budget admits it.
        let authorization = self.credentials.authorization().await?;
        let mut header = HeaderValue::from_str(authorization.expose())
            .map_err(|_| ApiError::Auth(self.credentials.not_a_header()))?;
        header.set_sensitive(true);
        let held = self.budget.acquire(self.lane).await;
        if !held.is_zero() {
            self.log_held();
        }
        let mut req = match target {
            Target::List(q) => {
                let mut req = self
                    .http
                    .get(&self.url)
                    .query(&[("page", q.page), ("per_page", q.per_page)]);
                for s in q.statuses {
                    req = req.query(&[("status[]", s)]);
                }
                if let Some(sort) = q.sort_by {
                    req = req.query(&[("sort_by", sort)]);
                }
                req
            }
            Target::Connection => self.http.get(format!("{}/connections", self.url)),
            Target::Payments { link, page } => {
                // The id goes into the path as one segment, percent-encoded (`.` and `..` are
                // refused by `link_payments` before this).
                let mut url = reqwest::Url::parse(&self.url).map_err(|e| ApiError::Transport {
                    page,
                    message: format!("the API URL: {e}"),
                })?;
                url.path_segments_mut()
                    .map_err(|()| ApiError::Transport {
                        page,
                        message: "the API URL cannot take a path".into(),
                    })?
                    .push(link)
                    .push("payments");
                self.http
                    .get(url)
                    .query(&[("page", page), ("per_page", 100)])
            }
        }
        .header(AUTHORIZATION, header)
        .header(ACCEPT, "application/json");
        if let Some(st) = &self.staging {
            req = req.header("X-Qonto-Staging-Token", st.clone());
        }
        let started = Instant::now();
        self.sent.fetch_add(1, Ordering::Relaxed);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.observer.request(None, started.elapsed());
                return Ok(Attempt::transport(page, &e));
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_capped(resp).await;
        self.observer
            .request(Some(status.as_u16()), started.elapsed());
        let trace_id = trace_id(&headers);
        let body = match body {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Ok(Attempt::Fail(ApiError::Transport {
                    page,
                    message: format!(
                        "HTTP {status}: the response is larger than {} MiB, which no page of 100 links needs; not read further",
                        MAX_RESPONSE_BYTES / 1024 / 1024
                    ),
                }));
            }
            Err(e) => return Ok(Attempt::transport(page, &e)),
        };
        Ok(classify(
            page,
            status,
            &headers,
            body,
            trace_id,
            authorization,
        ))
    }

    /// Remembers how far the listing walked in full (pages of 100, default order) has come.
    fn note_listing(&self, q: &ListQuery<'_>, total_pages: u64) {
        if q.per_page != MAX_PER_PAGE || q.sort_by.is_some() {
            return;
        }
        let mut l = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if q.page == 1 || l.0 != total_pages {
            *l = (total_pages, 1);
        } else {
            l.1 += 1;
        }
    }

    /// Logs, at most once a minute, that the 10-minute share holds requests back, with what
    /// is left of the listing being walked and how long it takes at the current budget.
    fn log_held(&self) {
        {
            let mut last = self.held_logged.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < HELD_LOG_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let (total, seen) = *self.listing.lock().unwrap_or_else(|p| p.into_inner());
        let left = total.saturating_sub(seen);
        let long = self.budget.long();
        let pace = format!("{:.1} requests/s", long.sustained_per_second());
        if left > 0 {
            let expected = Duration::from_secs(self.budget.time_for(left).as_secs());
            tracing::info!(
                budget = %self.budget.describe(),
                pace = %pace,
                pages_left = left,
                of = total,
                expected = %humantime::format_duration(expected),
                "polling held back by the API budget: ~{left} pages left, about {} at the current budget",
                humantime::format_duration(expected)
            );
        } else {
            tracing::info!(
                budget = %self.budget.describe(),
                pace = %pace,
                "polling held back by the API budget"
            );
        }
    }

    fn check_refusal_budget(&self) -> Result<(), ApiError> {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        while r
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(3600))
        {
            r.pop_front();
        }
        if r.len() >= MAX_REFUSALS_PER_HOUR {
            return Err(ApiError::RefusalBudget(r.len()));
        }
        Ok(())
    }

    fn note_refusal(&self) {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Instant::now());
    }

    /// Pauses every request of the process, of every organisation: Qonto's limits are per IP.
    fn pause_all(&self, wait: Duration) {
        self.budget.pause(wait);
    }

    async fn wait_for_pause(&self) {
        self.budget.wait_pause().await;
    }
}

/// The largest response body read: a page of 100 links is about 60 KiB; a body beyond this is
/// not the API's (a misrouted download, a hostile server) and must not fill the memory.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The body of `resp`, `None` once it exceeds [`MAX_RESPONSE_BYTES`] (the rest is not read).
async fn read_capped(mut resp: reqwest::Response) -> Result<Option<Bytes>, reqwest::Error> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Ok(None);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// The one reqwest client builder of the process, for the API, the OAuth token endpoint and
/// `oauth-login`: pooled, rustls, our User-Agent, no redirects (a redirect from the API means a
/// missing staging token, and neither credentials nor a client secret may follow one).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, BuildError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("qonto-exporter/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        // Qonto documents `X-Qonto-Staging-Token` as case-sensitive: send header names in
        // their canonical case, over HTTP/1.1 (HTTP/2 lowercases every name).
        .http1_title_case_headers()
        .http1_only()
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| BuildError::Http(e.to_string()))
}

enum Attempt {
    Body(Bytes, Option<String>),
    /// A 401, or a 400 about the `Authorization` header; `sent` is the credential refused.
    Unauthorized {
        sent: Secret,
        status: u16,
        failure: ApiFailure,
    },
    /// Not worth retrying.
    Fail(ApiError),
    Retry {
        error: ApiError,
        retry_after: Option<Duration>,
        rate_limited: bool,
    },
}

impl Attempt {
    fn transport(page: u64, e: &reqwest::Error) -> Attempt {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "response body interrupted"
        } else {
            "request failed"
        };
        // reqwest errors name the URL (no credentials in it) and the cause chain.
        let mut message = format!("{kind}: {e}");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Attempt::Retry {
            error: ApiError::Transport { page, message },
            retry_after: None,
            rate_limited: false,
        }
    }
}

fn classify(
    page: u64,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    trace_id: Option<String>,
    sent: Secret,
) -> Attempt {
    if status.is_success() {
        return Attempt::Body(body, trace_id);
    }
    let parsed = ApiErrorBody::parse(&body);
    let first = parsed.errors.into_iter().next().unwrap_or_default();
    let source = first.source.and_then(|s| {
        // A hostile body could send anything: keep a line's worth.
        let mut parts = Vec::new();
        if let Some(p) = s.parameter {
            parts.push(format!("parameter {}", bounded(&p)));
        }
        if let Some(p) = s.pointer {
            parts.push(format!("pointer {}", bounded(&p)));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    });
    let failure = ApiFailure {
        code: first.code,
        detail: first.detail,
        source,
        trace_id: parsed.trace_id.or(trace_id),
    };
    let fail = |error| Attempt::Retry {
        error,
        retry_after: None,
        rate_limited: false,
    };
    match status.as_u16() {
        401 => Attempt::Unauthorized {
            sent,
            status: 401,
            failure,
        },
        400 if is_about_authorization(&failure) => Attempt::Unauthorized {
            sent,
            status: 400,
            failure,
        },
        403 => {
            let scope = failure
                .detail
                .as_deref()
                .is_some_and(|d| d.to_ascii_lowercase().contains("scope"));
            let hint = if scope {
                "; the OAuth grant lacks the payment_link.read scope: run oauth-login again"
            } else {
                "; the credentials do not give access to payment links"
            };
            Attempt::Fail(ApiError::CredentialsRefused {
                status: 403,
                failure,
                hint,
            })
        }
        429 => Attempt::Retry {
            error: ApiError::Status {
                page,
                status: 429,
                failure,
            },
            retry_after: retry_after(headers),
            rate_limited: true,
        },
        300..=399 => Attempt::Fail(ApiError::Redirect {
            page,
            location: headers
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        }),
        500..=599 => fail(ApiError::Status {
            page,
            status: status.as_u16(),
            failure,
        }),
        code => Attempt::Fail(ApiError::Status {
            page,
            status: code,
            failure,
        }),
    }
}

/// `Retry-After` as seconds or as an HTTP date (a date in the past is no wait). A number of
/// seconds too large for a `u64` is [`Duration::MAX`]: longer than any ceiling, not ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.parse::<u64>().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A 400 that names the `Authorization` header (the spec's example: `bad_request`,
/// "Authorization field missing") refuses the credentials, like a 401.
fn is_about_authorization(failure: &ApiFailure) -> bool {
    [&failure.code, &failure.detail, &failure.source]
        .into_iter()
        .flatten()
        .any(|t| t.to_ascii_lowercase().contains("authorization"))
}

/// At most 200 bytes of `s`, cut on a character boundary, control characters replaced.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end]
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn trace_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-tyk-trace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
