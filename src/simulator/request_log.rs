//! The request log: every API request the simulator answered, with its arrival time on the
//! monotonic clock, so tests and benchmarks can check from outside the exporter how its requests
//! fell in time (the most requests in any rolling window, [`max_in_window`]). Bounded: the oldest
//! entries make way for new ones, and the number dropped is kept, so a reader knows whether the log
//! is complete. Control requests (`/_sim/*`) are not logged. One log serves every organisation of
//! the simulator, as the rate limits it shows are per IP address; each entry names the
//! organisation its credentials selected, so a test can still count one organisation's requests
//! ([`RequestLog::of_organization`]).

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest path kept in a record; longer (hostile) paths are cut on a character boundary.
const MAX_PATH: usize = 256;

/// One API request. JSON form of an entry of `GET /_sim/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Arrival, in nanoseconds since the simulator was created (monotonic clock). Rate-limit
    /// decisions are taken at this same instant.
    pub t_ns: u64,
    /// The organisation the request's credentials selected (its name); `None` when they selected
    /// none (missing or refused credentials; the first organisation answered).
    #[serde(default)]
    pub organization: Option<String>,
    pub method: String,
    /// The path without the query string (at most 256 bytes).
    pub path: String,
    /// For `GET /v2/payment_links` with a valid query: `all` (no filter) or the statuses sorted
    /// and joined by commas (`open,paid`), as in [`SimStats`](super::SimStats); otherwise `None`.
    pub status_filter: Option<String>,
    /// The `page` asked for, for list requests with a valid query.
    pub page: Option<u64>,
    /// The HTTP status answered; `None` when the connection was closed without an answer (the
    /// `reset` fault).
    pub code: Option<u16>,
    /// True when the request counts against the rate-limit windows: every API request but
    /// `/oauth2/*` (Qonto's OAuth server is another host). Set whether or not limits are on.
    pub rate_limited_path: bool,
}

/// The log as read at one moment. JSON form of `GET /_sim/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// Most records kept.
    pub capacity: usize,
    /// Records dropped to stay within `capacity` since start or the last reset; when not 0, the
    /// log misses its oldest requests.
    pub dropped: u64,
    /// Oldest first, by arrival (`t_ns`).
    pub requests: Vec<RequestRecord>,
}

impl RequestLog {
    /// The busiest window of length `window` among the requests that count against the rate
    /// limits (`rate_limited_path`), whatever their answer, 429s included: what the client put
    /// into the window.
    pub fn peak(&self, window: Duration) -> WindowPeak {
        max_in_window(self.requests.iter().filter(|r| r.rate_limited_path), window)
    }

    /// The requests that selected the organisation named `name`; `capacity` and `dropped` stay
    /// the whole log's.
    pub fn of_organization(&self, name: &str) -> RequestLog {
        RequestLog {
            capacity: self.capacity,
            dropped: self.dropped,
            requests: self
                .requests
                .iter()
                .filter(|r| r.organization.as_deref() == Some(name))
                .cloned()
                .collect(),
        }
    }
}

/// The busiest window: `requests` arrived in `[start_ns, start_ns + window)`, and no interval of
/// that length holds more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowPeak {
    pub requests: usize,
    /// Arrival of the first request of the busiest window (0 when there is none).
    pub start_ns: u64,
}

/// The most requests in any rolling window of length `window`: the largest number of arrival
/// times in a half-open interval `[a, a + window)`, over every `a`. This is the quantity the
/// simulator's limiter bounds (a request is refused when the window ending at its arrival is full),
/// so for admitted requests it never exceeds the window's limit. Any order of records is accepted.
pub fn max_in_window<'a>(
    records: impl IntoIterator<Item = &'a RequestRecord>,
    window: Duration,
) -> WindowPeak {
    let mut times: Vec<u64> = records.into_iter().map(|r| r.t_ns).collect();
    times.sort_unstable();
    let w = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    let mut best = WindowPeak {
        requests: 0,
        start_ns: 0,
    };
    if w == 0 {
        // `[a, a)` holds nothing.
        return best;
    }
    // Two pointers: for each request `j`, `i` is the first one less than `window` before it.
    let mut i = 0;
    for (j, &t) in times.iter().enumerate() {
        while t - times[i] >= w {
            i += 1;
        }
        if j + 1 - i > best.requests {
            best = WindowPeak {
                requests: j + 1 - i,
                start_ns: times[i],
            };
        }
    }
    best
}

/// The bounded store behind [`RequestLog`].
pub(crate) struct RequestRing {
    capacity: usize,
    dropped: u64,
    records: VecDeque<RequestRecord>,
}

impl RequestRing {
    pub(crate) fn new(capacity: usize) -> RequestRing {
        RequestRing {
            capacity,
            dropped: 0,
            // Grows as needed: a large capacity costs nothing until it is used.
            records: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, record: RequestRecord) {
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        if self.records.len() == self.capacity {
            self.records.pop_front();
            self.dropped += 1;
        }
        self.records.push_back(record);
    }

    pub(crate) fn clear(&mut self) {
        self.records.clear();
        self.dropped = 0;
    }

    /// A copy sorted by arrival (records are pushed when answered, so a slow answer lands after
    /// quicker later ones).
    pub(crate) fn snapshot(&self) -> RequestLog {
        let mut requests: Vec<RequestRecord> = self.records.iter().cloned().collect();
        requests.sort_by_key(|r| r.t_ns);
        RequestLog {
            capacity: self.capacity,
            dropped: self.dropped,
            requests,
        }
    }
}

/// `path`, cut to at most [`MAX_PATH`] bytes on a character boundary.
pub(crate) fn bounded_path(path: &str) -> String {
    let mut end = path.len().min(MAX_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: &[u64]) -> Vec<RequestRecord> {
        ms.iter()
            .map(|&m| RequestRecord {
                t_ns: m * 1_000_000,
                organization: None,
                method: "GET".into(),
                path: "/v2/payment_links".into(),
                status_filter: None,
                page: None,
                code: Some(200),
                rate_limited_path: true,
            })
            .collect()
    }

    fn peak(ms: &[u64], window_ms: u64) -> (usize, u64) {
        let p = max_in_window(&at(ms), Duration::from_millis(window_ms));
        (p.requests, p.start_ns / 1_000_000)
    }

    /// The definition, by brute force: every window starting at a request.
    fn brute(ms: &[u64], window_ms: u64) -> usize {
        ms.iter()
            .map(|&a| ms.iter().filter(|&&t| t >= a && t < a + window_ms).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn sliding_max_over_half_open_windows() {
        assert_eq!(peak(&[], 10), (0, 0));
        assert_eq!(peak(&[5], 10), (1, 5));
        // 0 and 10 are exactly one window apart: never in the same [a, a + 10).
        assert_eq!(peak(&[0, 10, 20, 30], 10), (1, 0));
        assert_eq!(peak(&[0, 9, 10, 19], 10), (2, 0));
        // The busiest window is in the middle, and the input order does not matter.
        assert_eq!(peak(&[100, 0, 52, 50, 55, 51, 200], 10), (4, 50));
        // Equal times all count.
        assert_eq!(peak(&[7, 7, 7, 20], 1), (3, 7));
        // A window longer than the run holds everything.
        assert_eq!(peak(&[1, 2, 3], 1_000_000), (3, 1));
        assert_eq!(peak(&[1, 1], 0), (0, 0), "an empty window holds nothing");
    }

    #[test]
    fn sliding_max_equals_the_definition() {
        // A fixed pseudo-random sequence (xorshift), windows of several lengths.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut ms = Vec::new();
        for _ in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ms.push(x % 2_000);
        }
        for w in [1, 3, 10, 50, 333, 5_000] {
            assert_eq!(peak(&ms, w).0, brute(&ms, w), "window {w} ms");
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_counts_the_dropped() {
        let mut ring = RequestRing::new(3);
        for r in at(&[4, 1, 2, 3, 5]) {
            ring.push(r);
        }
        let log = ring.snapshot();
        assert_eq!((log.capacity, log.dropped), (3, 2));
        let ms: Vec<u64> = log.requests.iter().map(|r| r.t_ns / 1_000_000).collect();
        assert_eq!(ms, [2, 3, 5], "the last three pushed, sorted by arrival");
        ring.clear();
        assert_eq!(ring.snapshot().requests.len(), 0);
        assert_eq!(ring.snapshot().dropped, 0);

        let mut off = RequestRing::new(0);
        off.push(at(&[1]).remove(0));
        assert_eq!(
            (off.snapshot().requests.len(), off.snapshot().dropped),
            (0, 1)
        );
    }

    #[test]
    fn the_peak_counts_only_rate_limited_paths() {
        let mut records = at(&[0, 1, 2]);
        records[1].rate_limited_path = false;
        records[2].code = Some(429);
        let log = RequestLog {
            capacity: 10,
            dropped: 0,
            requests: records,
        };
        assert_eq!(log.peak(Duration::from_secs(1)).requests, 2);
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        assert_eq!(bounded_path("/v2/payment_links"), "/v2/payment_links");
        let long = format!("/{}", "é".repeat(300));
        let cut = bounded_path(&long);
        assert!(cut.len() <= MAX_PATH && cut.len() >= MAX_PATH - 1);
        assert!(long.starts_with(&cut));
    }
}
