//! Request counters, so black-box tests and benchmarks can check what the exporter asked for
//! (how many requests, which answers, which status filters). Control endpoints are not counted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counters since start or the last reset. JSON form of `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// API requests (list, OAuth, unknown paths), whatever their outcome.
    pub requests_total: u64,
    /// API requests by response status (`"200"`, `"429"`…), or `"reset"` for closed connections.
    pub by_code: BTreeMap<String, u64>,
    /// `GET /v2/payment_links` requests, whatever their outcome.
    pub list_requests_total: u64,
    /// List requests that passed authentication and validation, by status filter: `all` (no
    /// filter) or the statuses sorted and joined by commas (`open,paid`).
    pub list_requests_by_status_filter: BTreeMap<String, u64>,
    /// `POST /oauth2/token` requests, whatever their outcome.
    pub token_requests_total: u64,
    /// API requests refused with a 429 because a rate-limit window was full (not the 429s of
    /// injected faults).
    #[serde(default)]
    pub rate_limited_total: u64,
}

impl SimStats {
    pub(crate) fn record(&mut self, code: &str) {
        self.requests_total += 1;
        *self.by_code.entry(code.to_owned()).or_default() += 1;
    }

    pub(crate) fn record_filter(&mut self, label: String) {
        *self
            .list_requests_by_status_filter
            .entry(label)
            .or_default() += 1;
    }
}

/// The links the simulator created and the status changes it made since start: JSON form of
/// `GET /_sim/transitions`. Each mutation (a background [`Step`](super::Mutation::Step), a
/// `POST /_sim/mutate`, the links a `drift_during_walk` fault creates) counts the net change of
/// each link across it, as no request sees a mutation half done: a link created and paid by one
/// batch counts as created and as `new` → `paid`; removed links count nothing. The links
/// generated at start are not counted. A client that reads every link between any two mutations
/// sees exactly these changes; one that reads less often misses the changes that revert in
/// between and sees several as one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTransitions {
    /// Links created, by currency and resource type, sorted.
    pub created: Vec<SimCreated>,
    /// Status changes by `from` (`new` for a link the mutation created), `to`, currency and
    /// resource type, sorted.
    pub transitions: Vec<SimTransition>,
}

/// One row of [`SimTransitions::created`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCreated {
    pub currency: String,
    pub resource_type: String,
    pub count: u64,
    /// Exact sum of their amounts, a decimal string in units of `currency`.
    pub amount: String,
}

/// One row of [`SimTransitions::transitions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTransition {
    pub from: String,
    pub to: String,
    pub currency: String,
    pub resource_type: String,
    pub count: u64,
    /// Exact sum of their amounts, a decimal string in units of `currency`.
    pub amount: String,
    /// Sum over these links of (the mutation's time − `created_at`), in seconds: their time to
    /// pay when `to` is `paid`.
    pub seconds_since_created: i64,
}

/// `(from, to, currency, resource_type)`.
type TransitionKey = (&'static str, &'static str, &'static str, &'static str);

/// Running totals behind [`SimTransitions`].
#[derive(Debug, Default)]
pub(crate) struct TransitionLog {
    created: BTreeMap<(&'static str, &'static str), (u64, rust_decimal::Decimal)>,
    /// Count, amount and the sum of the seconds since creation.
    transitions: BTreeMap<TransitionKey, (u64, rust_decimal::Decimal, i64)>,
}

impl TransitionLog {
    /// Adds the changes of one mutation made at `now` (Unix seconds).
    pub(crate) fn record(&mut self, changes: &[super::data::Change], now: i64) {
        for c in changes {
            let amount = rust_decimal::Decimal::from_i128_with_scale(
                i128::from(c.amount_minor),
                c.currency.exponent(),
            );
            let (currency, rt) = (c.currency.as_str(), c.resource_type.as_str());
            let from = match c.from {
                None => {
                    let e = self.created.entry((currency, rt)).or_default();
                    e.0 += 1;
                    e.1 += amount;
                    "new"
                }
                Some(s) => s.as_str(),
            };
            let e = self
                .transitions
                .entry((from, c.to.as_str(), currency, rt))
                .or_default();
            e.0 += 1;
            e.1 += amount;
            e.2 += now.saturating_sub(c.created_at);
        }
    }

    pub(crate) fn snapshot(&self) -> SimTransitions {
        SimTransitions {
            created: self
                .created
                .iter()
                .map(|((currency, rt), (count, amount))| SimCreated {
                    currency: (*currency).to_owned(),
                    resource_type: (*rt).to_owned(),
                    count: *count,
                    amount: amount.to_string(),
                })
                .collect(),
            transitions: self
                .transitions
                .iter()
                .map(
                    |((from, to, currency, rt), (count, amount, secs))| SimTransition {
                        from: (*from).to_owned(),
                        to: (*to).to_owned(),
                        currency: (*currency).to_owned(),
                        resource_type: (*rt).to_owned(),
                        count: *count,
                        amount: amount.to_string(),
                        seconds_since_created: *secs,
                    },
                )
                .collect(),
        }
    }
}
