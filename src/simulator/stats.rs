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
