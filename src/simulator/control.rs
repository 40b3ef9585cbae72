//! The `/_sim/` control endpoints, for black-box tests of the real binary. No authentication:
//! the simulator is a test fixture and should only listen on loopback or a test network.
//!
//! - `POST /_sim/faults` — a [`Fault`](super::Fault) or an array of them → 204
//! - `DELETE /_sim/faults` → 204
//! - `POST /_sim/mutate` — a mutation (see [`MutationJson`]) → 200 `{"affected":N,"links":TOTAL}`
//! - `GET /_sim/links` — every link, newest first, exactly as the API renders them → 200 array
//! - `GET /_sim/stats` → 200 [`SimStats`](super::SimStats); `POST /_sim/stats/reset` → 204
//! - `GET /_sim/requests` → 200 [`RequestLog`](super::RequestLog): every API request logged, oldest
//!   first, with its arrival time; `POST /_sim/requests/reset` → 204 (empties the log, not the
//!   rate-limit windows)
//! - `GET /_sim/requests/peak?window=10s` → 200 `{"window":"10s","requests":N,"start_ns":T,
//!   "dropped":D}`: the most requests counting against the rate limits (429s included) in any
//!   rolling window of that length ([`RequestLog::peak`](super::RequestLog::peak)); when `dropped`
//!   is not 0 the log missed its oldest requests

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::api::{Body, error_response, json_response, lock, parse_faults, read_body};
use super::data::{Mutation, Status};
use super::query::decode_pairs;

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
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match (method, path.as_str()) {
        (Method::POST, "/_sim/faults") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            match parse_faults(&body) {
                Ok(faults) => {
                    for f in faults {
                        shared.inject(f);
                    }
                    no_content()
                }
                Err(e) => bad(&format!("not a fault: {e}")),
            }
        }
        (Method::DELETE, "/_sim/faults") => {
            shared.clear_faults();
            no_content()
        }
        (Method::POST, "/_sim/mutate") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return bad(&e),
            };
            let m = serde_json::from_slice::<MutationJson>(&body)
                .map_err(|e| format!("not a mutation: {e}"))
                .and_then(Mutation::try_from);
            match m {
                Ok(m) => {
                    let affected = shared.mutate(m);
                    let links = shared.len();
                    json_response(
                        StatusCode::OK,
                        serde_json::to_vec(
                            &serde_json::json!({"affected": affected, "links": links}),
                        )
                        .unwrap_or_default(),
                    )
                }
                Err(e) => bad(&e),
            }
        }
        (Method::GET, "/_sim/links") => json_response(StatusCode::OK, shared.links_json_bytes()),
        (Method::GET, "/_sim/stats") => {
            let stats = lock(&shared.stats).clone();
            json_response(
                StatusCode::OK,
                serde_json::to_vec(&stats).unwrap_or_default(),
            )
        }
        (Method::POST, "/_sim/stats/reset") => {
            *lock(&shared.stats) = Default::default();
            no_content()
        }
        (Method::GET, "/_sim/requests") => {
            let log = lock(&shared.requests).snapshot();
            json_response(StatusCode::OK, serde_json::to_vec(&log).unwrap_or_default())
        }
        (Method::POST, "/_sim/requests/reset") => {
            lock(&shared.requests).clear();
            no_content()
        }
        (Method::GET, "/_sim/requests/peak") => {
            let window = decode_pairs(req.uri().query().unwrap_or(""))
                .map_err(|e| e.detail)
                .and_then(|q| {
                    let (_, w) = q
                        .iter()
                        .rev()
                        .find(|(k, _)| k == "window")
                        .ok_or("the window parameter is missing (e.g. ?window=10s)")?;
                    match parse_duration(w)? {
                        d if d.is_zero() => Err("the window must be positive".to_owned()),
                        d => Ok(d),
                    }
                });
            match window {
                Ok(window) => {
                    let log = lock(&shared.requests).snapshot();
                    let peak = log.peak(window);
                    json_response(
                        StatusCode::OK,
                        serde_json::to_vec(&serde_json::json!({
                            "window": humantime::format_duration(window).to_string(),
                            "requests": peak.requests,
                            "start_ns": peak.start_ns,
                            "dropped": log.dropped,
                        }))
                        .unwrap_or_default(),
                    )
                }
                Err(e) => bad(&e),
            }
        }
        (
            _,
            "/_sim/faults"
            | "/_sim/mutate"
            | "/_sim/links"
            | "/_sim/stats"
            | "/_sim/stats/reset"
            | "/_sim/requests"
            | "/_sim/requests/reset"
            | "/_sim/requests/peak",
        ) => error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
            None,
            trace_id,
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such control endpoint",
            None,
            trace_id,
        ),
    }
}
