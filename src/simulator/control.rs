//! The `/_sim/` control endpoints, for black-box tests of the real binary. No authentication:
//! the simulator is a test fixture and should only listen on loopback or a test network.
//!
//! Every endpoint takes an optional `?organization=NAME`: faults, mutations, links and stats then
//! act on that organisation, and the request log keeps that organisation's entries (it cannot be
//! reset for one organisation alone: the log is shared, like the rate limits). Without it they
//! act on the first organisation, and the request log is the whole log. An unknown name is a 404.
//!
//! - `POST /_sim/faults` — a [`Fault`](super::Fault) or an array of them → 204
//! - `DELETE /_sim/faults` → 204
//! - `POST /_sim/mutate` — a mutation (see [`MutationJson`]) → 200 `{"affected":N,"links":TOTAL}`
//! - `GET /_sim/links` — every link, newest first, exactly as the API renders them → 200 array
//! - `GET /_sim/stats` → 200 [`SimStats`](super::SimStats); `POST /_sim/stats/reset` → 204
//! - `GET /_sim/transitions` → 200 [`SimTransitions`](super::SimTransitions): links created and
//!   status changes made by mutations since start (net per link and mutation)
//! - `GET /_sim/requests` → 200 [`RequestLog`](super::RequestLog): every API request logged, oldest
//!   first, with its arrival time; `POST /_sim/requests/reset` → 204 (empties the log, not the
//!   rate-limit windows)
//! - `GET /_sim/requests/peak?window=10s` → 200 `{"window":"10s","requests":N,"start_ns":T,
//!   "dropped":D}`: the most requests counting against the rate limits (429s included) in any
//!   rolling window of that length ([`RequestLog::peak`](super::RequestLog::peak)); when `dropped`
//!   is not 0 the log missed its oldest requests
//! - `GET /_sim/organizations` → 200 `[{"name":"org-1","links":N},…]`, in configuration order
//! - `POST /_sim/connection` — `{"status":"disabled","fail":0}` → 204; a change of status is a
//!   `v1/payment-links-connections` webhook event (`connection_disabled`, …)
//! - `POST /_sim/webhooks` — delivery faults, probabilities in [0, 1] (see
//!   [`WebhookFaults`](super::WebhookFaults)): `{"duplicate":0.1,"reorder":0.1,"drop":0,
//!   "stale":0}`, fields left out are 0 → 204
//! - `GET /_sim/webhooks` → 200 `{"faults":{…},"stats":{…},"subscriptions":[…]}`: the switches,
//!   the delivery counters ([`WebhookStats`](super::WebhookStats)) and the subscriptions (no
//!   secrets)

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::api::{Body, error_response, json_response, lock, parse_faults, read_body};
use super::data::{Mutation, Status};
use super::query::{decode_pairs, get};

/// JSON form of a [`Mutation`], internally tagged by `kind`:
/// `{"kind":"step"}`, `{"kind":"create","count":5}`, `{"kind":"pay","count":10}`,
/// `{"kind":"expire","count":1}`, `{"kind":"cancel","count":1}`, `{"kind":"process","count":1}`,
/// `{"kind":"expire_soon","count":3,"within":"1h"}` (`within` is a humantime string);
/// terminal links that move: `{"kind":"reopen","count":1}` (reusable paid → open),
/// `{"kind":"recast","count":1,"from":"canceled","to":"expired"}`,
/// `{"kind":"remove","count":1,"status":"paid"}` (statuses as the API spells them);
/// several at once, seen by no request half-applied: `{"kind":"batch","mutations":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MutationJson {
    Step,
    Create {
        count: usize,
    },
    Pay {
        count: usize,
    },
    Expire {
        count: usize,
    },
    Cancel {
        count: usize,
    },
    Process {
        count: usize,
    },
    ExpireSoon {
        count: usize,
        within: String,
    },
    Reopen {
        count: usize,
    },
    Recast {
        count: usize,
        from: Status,
        to: Status,
    },
    Remove {
        count: usize,
        status: Status,
    },
    Batch {
        mutations: Vec<MutationJson>,
    },
}

impl TryFrom<MutationJson> for Mutation {
    type Error = String;

    fn try_from(m: MutationJson) -> Result<Mutation, String> {
        Ok(match m {
            MutationJson::Step => Mutation::Step,
            MutationJson::Create { count } => Mutation::Create(count),
            MutationJson::Pay { count } => Mutation::Pay(count),
            MutationJson::Expire { count } => Mutation::Expire(count),
            MutationJson::Cancel { count } => Mutation::Cancel(count),
            MutationJson::Process { count } => Mutation::Process(count),
            MutationJson::ExpireSoon { count, within } => Mutation::ExpireSoon {
                count,
                within: parse_duration(&within)?,
            },
            MutationJson::Reopen { count } => Mutation::Reopen(count),
            MutationJson::Recast { count, from, to } => Mutation::Recast { count, from, to },
            MutationJson::Remove { count, status } => Mutation::Remove { count, status },
            MutationJson::Batch { mutations } => Mutation::Batch(
                mutations
                    .into_iter()
                    .map(Mutation::try_from)
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn no_content() -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// A control endpoint, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    InjectFaults,
    ClearFaults,
    Mutate,
    Links,
    Stats,
    ResetStats,
    Transitions,
    Requests,
    ResetRequests,
    Peak,
    Organizations,
    Connection,
    WebhookFaults,
    WebhookStats,
}

impl Endpoint {
    /// The endpoint, or the error answer: 405 for a known path, 404 otherwise.
    fn route(method: &Method, path: &str) -> Result<Endpoint, (StatusCode, &'static str)> {
        Ok(match (method, path) {
            (&Method::POST, "/_sim/faults") => Endpoint::InjectFaults,
            (&Method::DELETE, "/_sim/faults") => Endpoint::ClearFaults,
            (&Method::POST, "/_sim/mutate") => Endpoint::Mutate,
            (&Method::GET, "/_sim/links") => Endpoint::Links,
            (&Method::GET, "/_sim/stats") => Endpoint::Stats,
            (&Method::POST, "/_sim/stats/reset") => Endpoint::ResetStats,
            (&Method::GET, "/_sim/transitions") => Endpoint::Transitions,
            (&Method::GET, "/_sim/requests") => Endpoint::Requests,
            (&Method::POST, "/_sim/requests/reset") => Endpoint::ResetRequests,
            (&Method::GET, "/_sim/requests/peak") => Endpoint::Peak,
            (&Method::GET, "/_sim/organizations") => Endpoint::Organizations,
            (&Method::POST, "/_sim/connection") => Endpoint::Connection,
            (&Method::POST, "/_sim/webhooks") => Endpoint::WebhookFaults,
            (&Method::GET, "/_sim/webhooks") => Endpoint::WebhookStats,
            (
                _,
                "/_sim/faults"
                | "/_sim/mutate"
                | "/_sim/links"
                | "/_sim/stats"
                | "/_sim/stats/reset"
                | "/_sim/transitions"
                | "/_sim/requests"
                | "/_sim/requests/reset"
                | "/_sim/requests/peak"
                | "/_sim/organizations"
                | "/_sim/connection"
                | "/_sim/webhooks",
            ) => return Err((StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
            _ => return Err((StatusCode::NOT_FOUND, "no such control endpoint")),
        })
    }
}

/// Longest organisation name echoed in an error message (the query is the client's).
const MAX_ECHOED_NAME: usize = 100;

pub(crate) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    trace_id: &str,
) -> Response<Body> {
    let bad = |detail: &str| {
        error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            detail,
            None,
            trace_id,
        )
    };
    let endpoint = match Endpoint::route(req.method(), req.uri().path()) {
        Ok(e) => e,
        Err((status, detail)) => {
            let code = if status == StatusCode::NOT_FOUND {
                "not_found"
            } else {
                "method_not_allowed"
            };
            return error_response(status, code, detail, None, trace_id);
        }
    };
    let query = match decode_pairs(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return bad(&e.detail),
    };
    // `?organization=NAME` picks the organisation; without it, the first.
    let named = get(&query, "organization");
    let selected = match named.map(|name| (name, shared.find(name))) {
        None => None,
        Some((_, Some(i))) => Some(i),
        Some((name, None)) => {
            let shown: String = name.chars().take(MAX_ECHOED_NAME).collect();
            return error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!(
                    "no organisation named {shown:?} in this simulator (GET /_sim/organizations lists them)"
                ),
                Some("organization"),
                trace_id,
            );
        }
    };
    let org = shared.org(selected);
    // The request log is shared: `organization` keeps that organisation's entries.
    let log = || {
        let log = lock(&shared.requests).snapshot();
        match selected {
            Some(_) => log.of_organization(org.name()),
            None => log,
        }
    };
    match endpoint {
        Endpoint::InjectFaults => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            match parse_faults(&body) {
                Ok(faults) => {
                    for f in faults {
                        org.inject(f);
                    }
                    no_content()
                }
                Err(e) => bad(&format!("not a fault: {e}")),
            }
        }
        Endpoint::ClearFaults => {
            org.clear_faults();
            no_content()
        }
        Endpoint::Mutate => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            let m = serde_json::from_slice::<MutationJson>(&body)
                .map_err(|e| format!("not a mutation: {e}"))
                .and_then(Mutation::try_from);
            match m {
                Ok(m) => {
                    let affected = org.mutate(m);
                    json_value(serde_json::json!({"affected": affected, "links": org.len()}))
                }
                Err(e) => bad(&e),
            }
        }
        Endpoint::Connection => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            match serde_json::from_slice::<super::organization::ConnectionState>(&body) {
                Ok(state) => {
                    org.set_connection(state);
                    no_content()
                }
                Err(e) => bad(&format!(
                    "not a connection state ({{\"status\":\"disabled\",\"fail\":0}}): {e}"
                )),
            }
        }
        Endpoint::WebhookFaults => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            let faults = serde_json::from_slice::<super::WebhookFaults>(&body)
                .map_err(|e| {
                    format!("not webhook faults ({{\"duplicate\":0.1,\"reorder\":0,\"drop\":0,\"stale\":0}}): {e}")
                })
                .and_then(|f| f.validate().map(|()| f));
            match faults {
                Ok(f) => {
                    org.webhooks.set_faults(f);
                    no_content()
                }
                Err(e) => bad(&e),
            }
        }
        Endpoint::WebhookStats => json_value(serde_json::json!({
            "faults": org.webhooks.faults(),
            "stats": org.webhooks.stats(),
            "subscriptions": org.webhooks.list(),
        })),
        Endpoint::Links => json_response(StatusCode::OK, org.links_json_bytes()),
        Endpoint::Stats => json_response(
            StatusCode::OK,
            serde_json::to_vec(&org.stats()).unwrap_or_default(),
        ),
        Endpoint::ResetStats => {
            org.reset_stats();
            no_content()
        }
        Endpoint::Transitions => json_response(
            StatusCode::OK,
            serde_json::to_vec(&org.transitions()).unwrap_or_default(),
        ),
        Endpoint::Requests => json_response(
            StatusCode::OK,
            serde_json::to_vec(&log()).unwrap_or_default(),
        ),
        Endpoint::ResetRequests if selected.is_some() => {
            bad("the request log is shared by all organisations: reset it without ?organization")
        }
        Endpoint::ResetRequests => {
            lock(&shared.requests).clear();
            no_content()
        }
        Endpoint::Peak => {
            let window = get(&query, "window")
                .ok_or_else(|| "the window parameter is missing (e.g. ?window=10s)".to_owned())
                .and_then(parse_duration)
                .and_then(|d| match d {
                    d if d.is_zero() => Err("the window must be positive".to_owned()),
                    d => Ok(d),
                });
            match window {
                Ok(window) => {
                    let log = log();
                    let peak = log.peak(window);
                    json_value(serde_json::json!({
                        "window": humantime::format_duration(window).to_string(),
                        "requests": peak.requests,
                        "start_ns": peak.start_ns,
                        "dropped": log.dropped,
                    }))
                }
                Err(e) => bad(&e),
            }
        }
        Endpoint::Organizations => {
            let all: Vec<serde_json::Value> = shared
                .orgs
                .iter()
                .enumerate()
                .filter(|(i, _)| selected.is_none_or(|s| s == *i))
                .map(|(_, o)| serde_json::json!({"name": o.name(), "links": o.len()}))
                .collect();
            json_value(serde_json::Value::Array(all))
        }
    }
}

fn json_value(v: serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default())
}
