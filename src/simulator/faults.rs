//! Faults the simulator injects into `GET /v2/payment_links`, scripted ([`Fault`], for tests) or
//! random ([`FaultRates`], for the CLI).
//!
//! Faults fall in two classes, each consumed first-in first-out:
//! - *gateway* faults (`status`, `reset`, `delay`, `html`) act before authentication, as a proxy or
//!   rate limiter in front of the API would; each request takes at most one;
//! - *data* faults (`truncate`, `malformed`, `invalid_link`, `stuck_next_page`, `next_page_beyond`)
//!   corrupt a response that would otherwise be a 200, so a request refused for its credentials or
//!   parameters does not use one up; each successful request takes at most one.
//!
//! `drift_during_walk` is neither: it waits for the next successful request of page 1 and creates
//! links right after answering it, so the rest of that walk sees the data shift.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A scripted fault, applied to the next `times` matching requests and then forgotten.
/// JSON form (control endpoint `POST /_sim/faults`): internally tagged by `kind`, e.g.
/// `{"kind":"status","code":429,"retry_after":"2","times":3}`; `times` defaults to 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// An error status with the API's JSON error body (429, 401, 403, 500, 502, 503, or any 4xx/5xx);
    /// `retry_after` is sent verbatim as the `Retry-After` header.
    Status {
        code: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
        #[serde(default = "one")]
        times: usize,
    },
    /// Close the connection without answering.
    Reset {
        #[serde(default = "one")]
        times: usize,
    },
    /// Answer normally, `delay` later (JSON: a humantime string such as `"2s"`).
    Delay {
        #[serde(with = "humantime_str")]
        delay: Duration,
        #[serde(default = "one")]
        times: usize,
    },
    /// A 200 whose JSON body is cut in the middle.
    Truncate {
        #[serde(default = "one")]
        times: usize,
    },
    /// A 200 with valid JSON that does not match the spec (`meta` is missing).
    Malformed {
        #[serde(default = "one")]
        times: usize,
    },
    /// A 200 `text/html` page, like a sandbox or login page.
    Html {
        #[serde(default = "one")]
        times: usize,
    },
    /// One link of the page carries an unusable value. JSON: `"invalid":"amount"` (the field
    /// cannot be called `kind` there, the tag is).
    InvalidLink {
        #[serde(rename = "invalid")]
        kind: InvalidKind,
        #[serde(default = "one")]
        times: usize,
    },
    /// `meta.next_page` equals `meta.current_page`.
    StuckNextPage {
        #[serde(default = "one")]
        times: usize,
    },
    /// `meta.next_page` is beyond `meta.total_pages`.
    NextPageBeyond {
        #[serde(default = "one")]
        times: usize,
    },
    /// Create `create` links right after the next page 1 is served.
    DriftDuringWalk { create: usize },
}

fn one() -> usize {
    1
}

/// Which value of a link [`Fault::InvalidLink`] (one request) or
/// [`SpecVariants::invalid_link_share`](super::SpecVariants::invalid_link_share) (every request)
/// spoils. The first three keep the spec's JSON types with unusable content; the last two put a
/// number where the spec says string, so the link does not even deserialise as the spec's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    /// `amount.value` becomes `"12,5O"`.
    Amount,
    /// `amount.currency` becomes `"euro"`.
    Currency,
    /// `expiration_date` becomes `"tomorrow"`.
    ExpirationDate,
    /// `amount.value` becomes the link's amount as a JSON number (`"value": 12.5`).
    AmountNumber,
    /// `id` becomes a JSON number (`"id": 123`), distinct per link.
    IdNumber,
}

impl std::str::FromStr for InvalidKind {
    type Err = String;

    /// The JSON spelling (`amount_number`), for the `simulate` flags.
    fn from_str(s: &str) -> Result<InvalidKind, String> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!(
                "unknown kind {s:?}; expected amount, currency, expiration_date, amount_number or id_number"
            )
        })
    }
}

/// Probabilities (0.0–1.0) of random faults per list request, for `simulate`'s `--fault-rate-*`
/// flags. Gateway faults are drawn first (in field order), then data faults; at most one of each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRates {
    /// 429 Too Many Requests.
    pub too_many_requests: f64,
    /// `Retry-After` sent with random 429s (`None`: no header, as Qonto documents none).
    pub retry_after: Option<String>,
    /// 500 Internal Server Error.
    pub internal_error: f64,
    /// 503 Service Unavailable.
    pub unavailable: f64,
    /// Connection closed without an answer.
    pub reset: f64,
    /// A 200 HTML page.
    pub html: f64,
    /// An answer delayed by `slow_delay`.
    pub slow: f64,
    pub slow_delay: Duration,
    /// A 200 with truncated JSON.
    pub truncate: f64,
    /// A 200 without `meta`.
    pub malformed: f64,
    /// One link of the page with an invalid amount, currency or expiration date.
    pub invalid_link: f64,
}

/// What happens to a request before authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GatewayFault {
    Status {
        code: u16,
        retry_after: Option<String>,
    },
    Reset,
    Delay(Duration),
    Html,
}

/// How a successful response is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataFault {
    Truncate,
    Malformed,
    InvalidLink(InvalidKind),
    StuckNextPage,
    NextPageBeyond,
}

/// The scripted faults still to apply.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    gateway: VecDeque<(GatewayFault, usize)>,
    data: VecDeque<(DataFault, usize)>,
    drift: usize,
}

impl FaultQueue {
    pub(crate) fn push(&mut self, fault: Fault) {
        match fault {
            Fault::Status {
                code,
                retry_after,
                times,
            } => self.push_gateway(GatewayFault::Status { code, retry_after }, times),
            Fault::Reset { times } => self.push_gateway(GatewayFault::Reset, times),
            Fault::Delay { delay, times } => self.push_gateway(GatewayFault::Delay(delay), times),
            Fault::Html { times } => self.push_gateway(GatewayFault::Html, times),
            Fault::Truncate { times } => self.push_data(DataFault::Truncate, times),
            Fault::Malformed { times } => self.push_data(DataFault::Malformed, times),
            Fault::InvalidLink { kind, times } => {
                self.push_data(DataFault::InvalidLink(kind), times)
            }
            Fault::StuckNextPage { times } => self.push_data(DataFault::StuckNextPage, times),
            Fault::NextPageBeyond { times } => self.push_data(DataFault::NextPageBeyond, times),
            Fault::DriftDuringWalk { create } => self.drift += create,
        }
    }

    fn push_gateway(&mut self, f: GatewayFault, times: usize) {
        if times > 0 {
            self.gateway.push_back((f, times));
        }
    }

    fn push_data(&mut self, f: DataFault, times: usize) {
        if times > 0 {
            self.data.push_back((f, times));
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = FaultQueue::default();
    }

    /// The gateway fault for this request: the oldest scripted one, else a random one.
    pub(crate) fn next_gateway(&mut self, rates: &FaultRates) -> Option<GatewayFault> {
        if let Some(f) = take(&mut self.gateway) {
            return Some(f);
        }
        let mut rng = rand::rng();
        let mut roll = |p: f64| p > 0.0 && rng.random_bool(p.min(1.0));
        if roll(rates.too_many_requests) {
            Some(GatewayFault::Status {
                code: 429,
                retry_after: rates.retry_after.clone(),
            })
        } else if roll(rates.internal_error) {
            Some(GatewayFault::Status {
                code: 500,
                retry_after: None,
            })
        } else if roll(rates.unavailable) {
            Some(GatewayFault::Status {
                code: 503,
                retry_after: None,
            })
        } else if roll(rates.reset) {
            Some(GatewayFault::Reset)
        } else if roll(rates.html) {
            Some(GatewayFault::Html)
        } else if roll(rates.slow) {
            Some(GatewayFault::Delay(rates.slow_delay))
        } else {
            None
        }
    }

    /// The data fault for this successful response: the oldest scripted one, else a random one.
    pub(crate) fn next_data(&mut self, rates: &FaultRates) -> Option<DataFault> {
        if let Some(f) = take(&mut self.data) {
            return Some(f);
        }
        let mut rng = rand::rng();
        if rates.truncate > 0.0 && rng.random_bool(rates.truncate.min(1.0)) {
            Some(DataFault::Truncate)
        } else if rates.malformed > 0.0 && rng.random_bool(rates.malformed.min(1.0)) {
            Some(DataFault::Malformed)
        } else if rates.invalid_link > 0.0 && rng.random_bool(rates.invalid_link.min(1.0)) {
            let kind = [
                InvalidKind::Amount,
                InvalidKind::Currency,
                InvalidKind::ExpirationDate,
            ][rng.random_range(0..3)];
            Some(DataFault::InvalidLink(kind))
        } else {
            None
        }
    }

    /// Links to create after this page 1, if a drift is pending (taken once).
    pub(crate) fn take_drift(&mut self) -> usize {
        std::mem::take(&mut self.drift)
    }
}

/// Takes one use of the oldest fault, dropping it when used up.
fn take<T: Clone>(q: &mut VecDeque<(T, usize)>) -> Option<T> {
    let (f, left) = q.front_mut()?;
    let f = f.clone();
    *left -= 1;
    if *left == 0 {
        q.pop_front();
    }
    Some(f)
}

/// Durations as humantime strings in JSON ("2s", "150ms").
mod humantime_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let f: Fault =
            serde_json::from_str(r#"{"kind":"status","code":429,"retry_after":"2","times":3}"#)
                .unwrap();
        assert_eq!(
            f,
            Fault::Status {
                code: 429,
                retry_after: Some("2".into()),
                times: 3
            }
        );
        let f: Fault = serde_json::from_str(r#"{"kind":"delay","delay":"1s 500ms"}"#).unwrap();
        assert_eq!(
            f,
            Fault::Delay {
                delay: Duration::from_millis(1500),
                times: 1
            }
        );
        let f: Fault = serde_json::from_str(
            r#"{"kind":"invalid_link","invalid":"expiration_date","times":2}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Fault::InvalidLink {
                kind: InvalidKind::ExpirationDate,
                times: 2
            }
        );
        for f in [
            f,
            Fault::DriftDuringWalk { create: 3 },
            Fault::NextPageBeyond { times: 1 },
            Fault::Delay {
                delay: Duration::from_millis(250),
                times: 4,
            },
        ] {
            let back: Fault = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
            assert_eq!(back, f);
        }
        assert!(
            serde_json::from_str::<Fault>(r#"{"kind":"status","code":429,"tiems":3}"#).is_err()
        );
    }

    #[test]
    fn scripted_faults_apply_n_times_in_order() {
        let mut q = FaultQueue::default();
        let none = FaultRates::default();
        q.push(Fault::Status {
            code: 503,
            retry_after: None,
            times: 2,
        });
        q.push(Fault::Reset { times: 1 });
        q.push(Fault::Truncate { times: 1 });
        q.push(Fault::Html { times: 0 });
        assert!(matches!(
            q.next_gateway(&none),
            Some(GatewayFault::Status { code: 503, .. })
        ));
        assert!(matches!(
            q.next_gateway(&none),
            Some(GatewayFault::Status { code: 503, .. })
        ));
        assert_eq!(q.next_gateway(&none), Some(GatewayFault::Reset));
        assert_eq!(q.next_gateway(&none), None);
        assert_eq!(q.next_data(&none), Some(DataFault::Truncate));
        assert_eq!(q.next_data(&none), None);
    }

    #[test]
    fn certain_rates_always_fire() {
        let mut q = FaultRates {
            reset: 1.0,
            ..FaultRates::default()
        };
        let mut queue = FaultQueue::default();
        assert_eq!(queue.next_gateway(&q), Some(GatewayFault::Reset));
        q.reset = 0.0;
        assert_eq!(queue.next_gateway(&q), None);
    }
}
