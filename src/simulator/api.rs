//! HTTP handling: routing, the rate limits, the list endpoint (faults → staging token →
//! authentication → parameters → page), the OAuth endpoints and the `/_sim/` control endpoints.
//! Every API request (all but `/_sim/`) reaches the organisation its credentials select
//! (`routing`; the first one when they select none), is counted in that organisation's stats and
//! is logged in the listener's request log.
//!
//! Every response carries `X-Tyk-Trace-Id`; error bodies carry the same value as `trace_id`, as
//! Qonto's do. Request input is never trusted: anything malformed is a 4xx, never a panic.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use rand::Rng;

use super::data::Mutation;
use super::faults::{DataFault, Fault, GatewayFault};
use super::oauth::{self, OAuthReply};
use super::organization::Org;
use super::query::{decode_pairs, get, parse_list_query};
use super::rate_limit::{Admission, RateWindow};
use super::render::{LinkJson, Meta, Page, PageWithoutMeta, error_body};
use super::request_log::{RequestRecord, bounded_path};
use super::routing::Verdict;
use super::{Shared, control};

pub(crate) type Body = Full<Bytes>;

/// The "error" a handler returns to make hyper close the connection without answering: the
/// `reset` fault. hyper treats a service error as fatal to the connection and writes nothing.
#[derive(Debug)]
pub(crate) struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the simulator (injected fault)")
    }
}

impl std::error::Error for ResetConnection {}

/// Largest request body read (control JSON, OAuth forms).
const MAX_BODY: usize = 1 << 20;

/// The page the real sandbox serves instead of JSON when `X-Qonto-Staging-Token` is missing.
const HTML_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Qonto - Sign in</title></head>\n<body><h1>Sign in to Qonto</h1><p>You must be signed in to access this page.</p></body></html>\n";

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the simulator down with it: the data stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// 32 hex characters, like Tyk's trace ids.
fn new_trace_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    detail: &str,
    parameter: Option<&str>,
    trace_id: &str,
) -> Response<Body> {
    json_response(status, error_body(code, detail, parameter, trace_id))
}

fn html_response() -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(HTML_PAGE.as_bytes())));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// Reads a request body, at most [`MAX_BODY`] bytes.
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("cannot read the request body: {e}"))
}

/// The service: every request of every connection comes through here.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ResetConnection> {
    let trace_id = new_trace_id();
    let result = if req.uri().path().starts_with("/_sim/") {
        Ok(control::handle(&shared, req, &trace_id).await)
    } else {
        limited_api(&shared, req, &trace_id).await
    };
    result.map(|mut resp| {
        if let Ok(v) = HeaderValue::from_str(&trace_id) {
            resp.headers_mut().insert("x-tyk-trace-id", v);
        }
        resp
    })
}

/// An API request: the rate limits first (Qonto's gateway refuses before routing, and counts
/// every organisation's requests from the IP together), then the endpoint; counted in the stats
/// of the organisation it reached and logged with its arrival time and that organisation.
async fn limited_api(
    shared: &Shared,
    req: Request<Incoming>,
    trace_id: &str,
) -> Result<Response<Body>, ResetConnection> {
    // Qonto's OAuth server is another host (oauth.qonto.com): the API's per-IP windows are not its.
    let rate_limited_path = !req.uri().path().starts_with("/oauth2/");
    let (arrival, admission) = shared.arrive(rate_limited_path);
    let is_list = req.method() == Method::GET && req.uri().path() == "/v2/payment_links";
    let (status_filter, page) = match is_list.then(|| parse_list_query(req.uri().query())) {
        Some(Ok(q)) => (Some(q.status_label()), Some(q.page)),
        _ => (None, None),
    };
    let method = req.method().as_str().to_owned();
    let path = bounded_path(req.uri().path());
    let (selected, result) = match admission {
        Admission::Admitted => api(shared, req, trace_id).await,
        Admission::Refused { window, wait } => {
            let selected = shared.identify(req.headers()).org;
            {
                let mut stats = lock(&shared.org(selected).stats);
                stats.rate_limited_total += 1;
                if is_list {
                    stats.list_requests_total += 1;
                }
            }
            if !shared.latency.is_zero() {
                tokio::time::sleep(shared.latency).await;
            }
            let retry_after = shared.rate_limits.as_ref().is_some_and(|l| l.retry_after);
            let resp = too_many_requests(window, retry_after.then_some(wait), trace_id);
            (selected, Ok(resp))
        }
    };
    let code = result.as_ref().ok().map(|resp| resp.status().as_u16());
    lock(&shared.org(selected).stats)
        .record(&code.map_or_else(|| "reset".to_owned(), |c| c.to_string()));
    lock(&shared.requests).push(RequestRecord {
        t_ns: u64::try_from(arrival.as_nanos()).unwrap_or(u64::MAX),
        organization: selected.map(|i| shared.org(Some(i)).name().to_owned()),
        method,
        path,
        status_filter,
        page,
        code,
        rate_limited_path,
    });
    result
}

/// The 429 of a full rate-limit window, with the API's error body; `Retry-After` (whole seconds,
/// rounded up) only when asked for, as Qonto documents none.
fn too_many_requests(
    window: RateWindow,
    retry_after: Option<Duration>,
    trace_id: &str,
) -> Response<Body> {
    let detail = format!(
        "too many requests: more than {} requests per {} from this IP address, please retry later",
        window.limit,
        humantime::format_duration(window.period)
    );
    let mut resp = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        &detail,
        None,
        trace_id,
    );
    if let Some(wait) = retry_after {
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// The answer of an admitted API request, with the organisation it selected (`None`: none, and
/// the first organisation answered).
async fn api(
    shared: &Shared,
    req: Request<Incoming>,
    trace_id: &str,
) -> (Option<usize>, Result<Response<Body>, ResetConnection>) {
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let path = req.uri().path();
    let method = req.method();
    let error = |status, code, detail| Ok(error_response(status, code, detail, None, trace_id));
    if path == "/v2/webhook_subscriptions" || path.starts_with("/v2/webhook_subscriptions/") {
        let id = shared.identify(req.headers());
        let org = shared.org(id.org);
        return (
            id.org,
            Ok(webhook_subscriptions(org, id.verdict, req, trace_id).await),
        );
    }
    if method == Method::GET {
        if let Some(link) = payments_path(path) {
            let id = shared.identify(req.headers());
            let org = shared.org(id.org);
            return (id.org, Ok(payments(org, id.verdict, &req, link, trace_id)));
        }
    }
    match (method, path) {
        (&Method::GET, "/v2/payment_links") => {
            let id = shared.identify(req.headers());
            (
                id.org,
                list(shared.org(id.org), id.verdict, req, trace_id).await,
            )
        }
        (&Method::GET, "/v2/payment_links/connections") => {
            let id = shared.identify(req.headers());
            (
                id.org,
                Ok(connection(shared.org(id.org), id.verdict, &req, trace_id)),
            )
        }
        (_, "/v2/payment_links") => (
            shared.identify(req.headers()).org,
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            ),
        ),
        (&Method::POST, "/oauth2/token") if shared.router.has_oauth() => {
            let (selected, resp) = token(shared, req).await;
            (selected, Ok(resp))
        }
        (&Method::GET, "/oauth2/auth") if shared.router.has_oauth() => {
            let (selected, resp) = authorize_endpoint(shared, &req);
            (selected, Ok(resp))
        }
        _ => (
            shared.identify(req.headers()).org,
            error(StatusCode::NOT_FOUND, "not_found", "not found"),
        ),
    }
}

/// `/v2/webhook_subscriptions[/{id}]` for `org`: create (`POST`, 201), list (`GET`), show
/// (`GET /{id}`), delete (`DELETE /{id}`, 204). The credentials are those the list endpoint
/// accepts (Qonto documents an OAuth bearer token; the simulator also takes its API keys and
/// static tokens). Validation errors are 422 naming the field; the secret is never echoed.
async fn webhook_subscriptions(
    org: &Org,
    verdict: Verdict,
    req: Request<Incoming>,
    trace_id: &str,
) -> Response<Body> {
    if !staging_token_ok(org, &req) {
        return html_response();
    }
    if let Some(refusal) = refusal(verdict, trace_id) {
        return refusal;
    }
    let hooks = &org.webhooks;
    let path = req.uri().path().to_owned();
    let id = path
        .strip_prefix("/v2/webhook_subscriptions/")
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let not_found = || {
        error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "webhook subscription not found",
            None,
            trace_id,
        )
    };
    if path != "/v2/webhook_subscriptions" && id.is_none() {
        return not_found();
    }
    let one = |s: &super::WebhookSubscription, secret: Option<&str>| {
        let v = serde_json::json!({ "webhook_subscription": hooks.subscription_json(s, secret) });
        serde_json::to_vec(&v).unwrap_or_default()
    };
    match (req.method().clone(), id) {
        (Method::POST, None) => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        &e,
                        None,
                        trace_id,
                    );
                }
            };
            // serde's message may quote a value (a secret of the wrong type): only its place.
            let parsed = serde_json::from_slice::<super::webhooks::SubscriptionRequest>(&body)
                .map_err(|e| {
                    format!(
                        "the body must be a JSON object {{callback_url, types, secret?, description?}} (error at line {} column {})",
                        e.line(),
                        e.column()
                    )
                });
            let created = match parsed {
                Ok(r) => hooks
                    .subscribe(r)
                    .map_err(|e| (e.detail, Some(e.parameter))),
                Err(e) => Err((e, None)),
            };
            match created {
                Ok((s, generated)) => {
                    json_response(StatusCode::CREATED, one(&s, generated.as_deref()))
                }
                Err((detail, parameter)) => error_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unprocessable_entity",
                    &detail,
                    parameter,
                    trace_id,
                ),
            }
        }
        (Method::GET, None) => {
            let all: Vec<serde_json::Value> = hooks
                .list()
                .iter()
                .map(|s| hooks.subscription_json(s, None))
                .collect();
            let meta = Meta::new(1, 100, all.len() as u64);
            let v = serde_json::json!({ "webhook_subscriptions": all, "meta": meta });
            json_response(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default())
        }
        (Method::GET, Some(id)) => match hooks.get(id) {
            Some(s) => json_response(StatusCode::OK, one(&s, None)),
            None => not_found(),
        },
        (Method::DELETE, Some(id)) => {
            if hooks.unsubscribe(id) {
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            } else {
                not_found()
            }
        }
        _ => error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
            None,
            trace_id,
        ),
    }
}

/// The link id of `/v2/payment_links/{id}/payments`.
fn payments_path(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix("/v2/payment_links/")?
        .strip_suffix("/payments")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `GET /v2/payment_links/{id}/payments` for `org`: the link's payments (see
/// [`super::payments`]), a page of up to `per_page` (1 to 100, default 100).
fn payments(
    org: &Org,
    verdict: Verdict,
    req: &Request<Incoming>,
    link: &str,
    trace_id: &str,
) -> Response<Body> {
    if !staging_token_ok(org, req) {
        return html_response();
    }
    if let Some(refusal) = refusal(verdict, trace_id) {
        return refusal;
    }
    // The same paging rules as the list endpoint's.
    let (page, per_page) = match parse_list_query(req.uri().query()) {
        Ok(q) => (q.page, q.per_page),
        Err(bad) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &bad.detail,
                Some(&bad.parameter),
                trace_id,
            );
        }
    };
    let wanted = u128::from_str_radix(&link.replace('-', ""), 16).ok();
    let all = {
        let store = org.store.read().unwrap_or_else(PoisonError::into_inner);
        (0..store.len() as u32)
            .map(|p| store.link(p))
            .find(|l| Some(l.id) == wanted)
            .map(|l| super::payments::payments_of(l, unix_now()))
    };
    let Some(all) = all else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "payment link not found",
            None,
            trace_id,
        );
    };
    let total = all.len() as u64;
    let start = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    let items: Vec<_> = all
        .into_iter()
        .skip(start)
        .take(per_page as usize)
        .collect();
    let meta = Meta::new(page, per_page, total);
    json_response(
        StatusCode::OK,
        serde_json::json!({"payments": items, "meta": meta})
            .to_string()
            .into_bytes(),
    )
}

/// False when `org` requires a staging token and the request lacks it (the sandbox then
/// answers an HTML page).
fn staging_token_ok(org: &Org, req: &Request<Incoming>) -> bool {
    org.cfg.staging_token.as_ref().is_none_or(|expected| {
        req.headers()
            .get("x-qonto-staging-token")
            .map(HeaderValue::as_bytes)
            == Some(expected.as_bytes())
    })
}

/// `GET /v2/payment_links/connections` for `org`: `{connection_location, status,
/// bank_account_id}` as documented, or the 500 of a scripted failure.
fn connection(
    org: &Org,
    verdict: Verdict,
    req: &Request<Incoming>,
    trace_id: &str,
) -> Response<Body> {
    if !staging_token_ok(org, req) {
        return html_response();
    }
    if let Some(refusal) = refusal(verdict, trace_id) {
        return refusal;
    }
    let status = {
        let mut state = lock(&org.connection);
        if state.fail > 0 {
            state.fail -= 1;
            None
        } else {
            Some(state.status.clone())
        }
    };
    match status {
        None => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "scripted connection failure",
            None,
            trace_id,
        ),
        Some(status) => {
            let body = serde_json::json!({
                "connection_location": "https://pay.qonto.com/onboarding/simulated",
                "status": status,
                "bank_account_id": "46e9e0d2-f1af-4d2e-a6be-a536a604b89e",
            });
            json_response(StatusCode::OK, body.to_string().into_bytes())
        }
    }
}

/// `GET /v2/payment_links` for `org`, whose credentials got `verdict`.
async fn list(
    org: &Org,
    verdict: Verdict,
    req: Request<Incoming>,
    trace_id: &str,
) -> Result<Response<Body>, ResetConnection> {
    lock(&org.stats).list_requests_total += 1;
    let gateway = lock(&org.faults).next_gateway(&org.cfg.faults);
    match gateway {
        Some(GatewayFault::Status { code, retry_after }) => {
            return Ok(status_fault(code, retry_after.as_deref(), trace_id));
        }
        Some(GatewayFault::Reset) => return Err(ResetConnection),
        Some(GatewayFault::Html) => return Ok(html_response()),
        Some(GatewayFault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    if !staging_token_ok(org, &req) {
        return Ok(html_response());
    }
    if let Some(refusal) = refusal(verdict, trace_id) {
        return Ok(refusal);
    }
    let q = match parse_list_query(req.uri().query()) {
        Ok(q) => q,
        Err(bad) => {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &bad.detail,
                Some(&bad.parameter),
                trace_id,
            ));
        }
    };
    lock(&org.stats).record_filter(q.status_label());

    let offset = usize::try_from((q.page - 1).saturating_mul(q.per_page)).unwrap_or(usize::MAX);
    let (mut links, first, mut meta) = {
        let store = org.store.read().unwrap_or_else(PoisonError::into_inner);
        let (positions, total) = store.select(q.statuses, q.order, offset, q.per_page as usize);
        let links: Vec<LinkJson> = positions.iter().map(|&p| store.render(p)).collect();
        // Kept to spoil the first link with a data fault.
        let first = positions.first().map(|&p| store.link(p).clone());
        (links, first, Meta::new(q.page, q.per_page, total as u64))
    };
    let fault = lock(&org.faults).next_data(&org.cfg.faults);
    let body = match fault {
        Some(DataFault::Malformed) => serde_json::to_vec(&PageWithoutMeta {
            payment_links: links,
            pagination: serde_json::json!({ "page": meta.current_page }),
        }),
        other => {
            match other {
                Some(DataFault::InvalidLink(kind)) => {
                    if let (Some(json), Some(link)) = (links.first_mut(), &first) {
                        json.spoil(kind, link);
                    }
                }
                Some(DataFault::StuckNextPage) => meta.next_page = Some(meta.current_page),
                Some(DataFault::NextPageBeyond) => {
                    meta.next_page = Some((meta.current_page + 1).max(meta.total_pages + 1));
                }
                _ => {}
            }
            serde_json::to_vec(&Page {
                payment_links: links,
                meta,
            })
        }
    };
    let mut body = body.unwrap_or_default();
    if fault == Some(DataFault::Truncate) {
        body.truncate(body.len() / 2);
    }
    if q.page == 1 {
        let drift = lock(&org.faults).take_drift();
        if drift > 0 {
            org.mutate(Mutation::Create(drift));
        }
    }
    Ok(json_response(StatusCode::OK, body))
}

/// The answer of a scripted or random `status` fault, with the API's error body.
fn status_fault(code: u16, retry_after: Option<&str>, trace_id: &str) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (code, detail) = match status.as_u16() {
        400 => ("bad_request", "bad request"),
        401 => ("authorization_token_invalid", "authorization token invalid"),
        403 => (
            "forbidden",
            "you do not have the required OAuth scope to access this resource: payment_link.read",
        ),
        404 => ("not_found", "not found"),
        429 => ("too_many_requests", "too many requests, please retry later"),
        500 => ("internal_server_error", "internal server error"),
        502 => ("bad_gateway", "bad gateway"),
        503 => ("service_unavailable", "service unavailable"),
        504 => ("gateway_timeout", "gateway timeout"),
        _ => ("error", status.canonical_reason().unwrap_or("error")),
    };
    let mut resp = error_response(status, code, detail, None, trace_id);
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        resp.headers_mut().insert(RETRY_AFTER, v);
    }
    resp
}

/// The answer to credentials that do not pass (see [`Verdict`]), `None` when they do.
fn refusal(verdict: Verdict, trace_id: &str) -> Option<Response<Body>> {
    let unauthorized = |code: &str, detail: &str| {
        error_response(StatusCode::UNAUTHORIZED, code, detail, None, trace_id)
    };
    match verdict {
        Verdict::Pass => None,
        Verdict::Missing => Some(unauthorized(
            "authorization_header_missing",
            "authorization header missing",
        )),
        Verdict::Invalid => Some(unauthorized(
            "authorization_token_invalid",
            "authorization token invalid",
        )),
        Verdict::MissingScope => Some(status_fault(403, None, trace_id)),
    }
}

/// `POST /oauth2/token`, answered by the organisation whose OAuth client the form names.
async fn token(shared: &Shared, req: Request<Incoming>) -> (Option<usize>, Response<Body>) {
    let form = match read_body(req.into_body()).await {
        Ok(b) => std::str::from_utf8(&b)
            .map_err(|_| "the body is not UTF-8".to_owned())
            .and_then(|s| decode_pairs(s).map_err(|e| e.detail)),
        Err(e) => Err(e),
    };
    let selected = form
        .as_ref()
        .ok()
        .and_then(|f| shared.router.client(get(f, "client_id")));
    let org = shared.org(selected);
    lock(&org.stats).token_requests_total += 1;
    let reply = match (form, selected.and(org.oauth.as_ref())) {
        (Ok(form), Some(oauth)) => lock(oauth).token(&form, Instant::now()),
        (Ok(_), None) => oauth::invalid_client(),
        (Err(e), _) => OAuthReply::Json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request", "error_description": e}),
        ),
    };
    (selected, oauth_response(reply))
}

/// `GET /oauth2/auth`, answered by the organisation whose OAuth client the query names.
fn authorize_endpoint(shared: &Shared, req: &Request<Incoming>) -> (Option<usize>, Response<Body>) {
    let query = decode_pairs(req.uri().query().unwrap_or(""));
    let selected = query
        .as_ref()
        .ok()
        .and_then(|q| shared.router.client(get(q, "client_id")));
    let reply = match (query, selected.and(shared.org(selected).oauth.as_ref())) {
        (Ok(q), Some(oauth)) => lock(oauth).authorize(&q, Instant::now()),
        (Ok(_), None) => oauth::unknown_client(),
        (Err(e), _) => OAuthReply::Json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request", "error_description": e.detail}),
        ),
    };
    (selected, oauth_response(reply))
}

fn oauth_response(reply: OAuthReply) -> Response<Body> {
    match reply {
        OAuthReply::Json(status, body) => {
            let mut resp = json_response(status, serde_json::to_vec(&body).unwrap_or_default());
            resp.headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-store"));
            resp
        }
        OAuthReply::Redirect(location) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::FOUND;
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    resp.headers_mut().insert(LOCATION, v);
                }
                Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
            }
            resp
        }
    }
}

/// Parses a control body as one fault or a JSON array of faults.
pub(crate) fn parse_faults(body: &[u8]) -> Result<Vec<Fault>, serde_json::Error> {
    match serde_json::from_slice::<Vec<Fault>>(body) {
        Ok(v) => Ok(v),
        Err(_) => serde_json::from_slice::<Fault>(body).map(|f| vec![f]),
    }
}
