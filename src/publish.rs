//! What the poller publishes and the server reads: the last complete poll, swapped in whole
//! (one atomic pointer store), and the outcome of the latest poll. Written by the poller only;
//! a scrape loads it without waiting for a poll.

use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus::proto::MetricFamily;

use crate::aggregate::{Snapshot, Totals};
use crate::metrics::snapshot_families;

static REVISION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One complete poll, as served (with the webhook events since applied, when any).
#[derive(Debug)]
pub struct Published {
    pub snapshot: Snapshot,
    /// The business gauges, built once, labelled with the organisation.
    pub families: Vec<MetricFamily>,
    pub finished_at: SystemTime,
    pub duration: Duration,
    pub pages: u64,
    pub requests: u64,
    pub full: bool,
    /// Restored from the state file at start, not polled by this process.
    pub restored: bool,
    /// The landing page's tables, added up once per poll (not per page view).
    pub summary: Summary,
    /// Unique per value built in this process: tells a republish (webhook events moved the
    /// figures, the poll's times unchanged) from the value it replaces.
    pub revision: u64,
}

/// How a poll went, besides its figures.
#[derive(Debug, Clone, Copy)]
pub struct PollFacts {
    pub finished_at: SystemTime,
    pub duration: Duration,
    pub pages: u64,
    pub requests: u64,
    pub full: bool,
    pub restored: bool,
}

impl Published {
    /// A poll of `organization` ready to be served: its gauges built and its landing summary
    /// added up, once.
    pub fn new(snapshot: Snapshot, facts: PollFacts, organization: &str) -> Published {
        Published {
            families: snapshot_families(&snapshot, organization),
            summary: Summary::of(&snapshot),
            snapshot,
            finished_at: facts.finished_at,
            duration: facts.duration,
            pages: facts.pages,
            requests: facts.requests,
            full: facts.full,
            restored: facts.restored,
            revision: REVISION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The landing page's figures of one poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// `(status, currency, totals)` over resource types, only where there are links.
    pub by_status: Vec<(String, String, Totals)>,
    /// `(window, currency, totals)` of open links expiring soon, windows in flag order.
    pub expiring: Vec<(String, String, Totals)>,
    /// Open links past their expiration date.
    pub past: u64,
}

impl Summary {
    pub fn of(s: &Snapshot) -> Summary {
        use std::collections::BTreeMap;
        let add = |e: &mut Totals, t: &Totals| {
            e.count += t.count;
            e.amount = e.amount.saturating_add(t.amount);
        };
        let mut by: BTreeMap<(&str, &str), Totals> = BTreeMap::new();
        for (k, t) in &s.links {
            add(by.entry((&k.status, &k.currency)).or_default(), t);
        }
        let mut exp: BTreeMap<(usize, &str), Totals> = BTreeMap::new();
        for ((g, within), t) in &s.expiring {
            let i = s
                .windows
                .iter()
                .position(|w| w == within)
                .unwrap_or(usize::MAX);
            add(exp.entry((i, &g.currency)).or_default(), t);
        }
        Summary {
            by_status: by
                .into_iter()
                .filter(|(_, t)| t.count > 0)
                .map(|((s, c), t)| (s.to_owned(), c.to_owned(), t))
                .collect(),
            expiring: exp
                .into_iter()
                .map(|((i, c), t)| {
                    let within = s.windows.get(i).map_or("?", String::as_str);
                    (within.to_owned(), c.to_owned(), t)
                })
                .collect(),
            past: s.open_past_expiration.values().sum(),
        }
    }
}

/// The outcome of the latest poll, successful or not.
#[derive(Debug, Clone, Default)]
pub struct PollStatus {
    pub polls: u64,
    pub last_finished_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub in_progress_since: Option<SystemTime>,
}

/// What the poller shares with the server: written by the poller only.
#[derive(Debug, Default)]
pub struct Shared {
    pub published: ArcSwapOption<Published>,
    pub status: ArcSwap<PollStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregator, Limits, Window};
    use crate::qonto::model::parse_page;
    use rust_decimal::Decimal;

    #[test]
    fn the_summary_adds_up_over_resource_types_in_window_order() {
        let body = br#"{"payment_links":[
          {"id":"a","status":"open","expiration_date":"2026-11-24T12:30:00Z","amount":{"value":"1.50","currency":"EUR"},"resource_type":"Basket"},
          {"id":"b","status":"open","expiration_date":"2026-11-24T12:40:00Z","amount":{"value":"2","currency":"EUR"},"resource_type":"Invoice"},
          {"id":"c","status":"paid","expiration_date":null,"amount":{"value":"1500","currency":"JPY"},"resource_type":"Invoice"},
          {"id":"d","status":"open","expiration_date":"2026-11-20T00:00:00Z","amount":{"value":"1","currency":"EUR"},"resource_type":"Invoice"}],
          "meta":{"current_page":1,"next_page":null,"prev_page":null,"total_pages":1,"total_count":4,"per_page":100}}"#;
        let page = parse_page(body).unwrap();
        let windows: Vec<Window> = [("24h", 86_400), ("1h", 3600)]
            .iter()
            .map(|(l, s)| Window {
                label: (*l).into(),
                duration: Duration::from_secs(*s),
            })
            .collect();
        let mut agg = Aggregator::new(
            time::macros::datetime!(2026-11-24 12:00 UTC),
            &windows,
            Limits::default(),
        );
        for l in &page.links {
            agg.add(l);
        }
        let s = Summary::of(&agg.finish());
        let t = |count, amount: &str| Totals {
            count,
            amount: amount.parse::<Decimal>().unwrap(),
        };
        assert_eq!(
            s.by_status,
            vec![
                ("open".into(), "EUR".into(), t(3, "4.50")),
                ("paid".into(), "JPY".into(), t(1, "1500")),
            ]
        );
        assert_eq!(
            s.expiring,
            vec![
                ("24h".into(), "EUR".into(), t(2, "3.50")),
                ("24h".into(), "JPY".into(), t(0, "0")),
                ("1h".into(), "EUR".into(), t(2, "3.50")),
                ("1h".into(), "JPY".into(), t(0, "0")),
            ]
        );
        assert_eq!(s.past, 1);
    }
}
