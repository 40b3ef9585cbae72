use super::*;
use crate::aggregate::{LinkKey, Totals};
use crate::flows::FlowMemory;
use crate::planner::UnknownMemory;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::time::SystemTime;
use time::macros::datetime;

const KEY: IdKey = IdKey(3, 4);
const T0: OffsetDateTime = datetime!(2026-11-24 12:00 UTC);

fn ev(id: &str, status: &str, value: &str, created: &str, updated: Option<i128>) -> LinkEvent {
    LinkEvent {
        event: "updated".into(),
        id: id.into(),
        status: status.into(),
        amount: value.into(),
        currency: "EUR".into(),
        resource_type: "Invoice".into(),
        expiration_date: Some("2030-01-01T00:00:00Z".into()),
        created_at: Some(created.into()),
        updated_at: updated,
    }
}

/// An `updated_at` after the poll of `T0` (Unix nanoseconds).
const LATER: i128 = (1_795_521_600 + 10) * 1_000_000_000;
const OLD: &str = "2026-01-01T00:00:00Z";
const AFTER: &str = "2026-11-24T12:00:30Z";

fn memory(live: &[&str], recent: &[&str]) -> Memory {
    let mut live: Vec<(u64, i64)> = live.iter().map(|id| (KEY.hash_one(id), 0)).collect();
    live.sort_unstable();
    let mut recent: Vec<(u64, i64)> = recent
        .iter()
        .map(|id| (KEY.hash_one(id), T0.unix_timestamp()))
        .collect();
    recent.sort_unstable();
    Memory {
        last_full: SystemTime::now(),
        id_key: KEY,
        terminal: BTreeMap::new(),
        live,
        unknown: UnknownMemory::default(),
        polled_at: T0.unix_timestamp(),
        settled: true,
        flows: Some(FlowMemory {
            processing: vec![],
            recent,
        }),
        restored: false,
    }
}

fn cfg() -> OverlayConfig {
    OverlayConfig {
        windows: vec![],
        limits: Limits::default(),
        aging: AgeBuckets::default(),
    }
}

/// A base as a poll at `T0` leaves it: `links` counted, the open ones kept whole.
fn base(links: &[LinkEvent], recent: &[&str]) -> Base {
    let mut agg = Aggregator::new(T0, &[], Limits::default());
    let mut live = HashMap::new();
    for l in links {
        agg.add(&l.link());
        if LIVE_STATUSES.contains(&l.status.as_str()) {
            live.insert(l.id.clone(), crate::planner::owned(&l.link()));
        }
    }
    let ids: Vec<&str> = live.keys().map(String::as_str).collect();
    let memory = memory(&ids, recent);
    let facts = PollFacts {
        finished_at: SystemTime::now(),
        duration: Duration::ZERO,
        pages: 1,
        requests: 1,
        full: true,
        restored: false,
    };
    Base {
        published: Arc::new(Published::new(agg.finish(), facts, "default")),
        live,
        memory,
    }
}

fn totals(s: &Snapshot, status: &str) -> Totals {
    let key = LinkKey {
        status: status.into(),
        currency: "EUR".into(),
        resource_type: "Invoice".into(),
    };
    s.links.get(&key).copied().unwrap_or_default()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn events_move_live_links_add_newcomers_and_leave_terminal_links_alone() {
    let b = base(
        &[
            ev("o1", "open", "10", OLD, None),
            ev("o2", "open", "20", OLD, None),
            ev("paid-old", "paid", "5", OLD, None),
            ev("paid-recent", "paid", "6", "2026-11-24T11:59:00Z", None),
        ],
        &["paid-recent"],
    );
    let mut ledger = Ledger::default();
    for e in [
        ev("o1", "paid", "10", OLD, Some(LATER)),
        ev("n1", "open", "7", AFTER, Some(LATER)),
        // A newcomer created and paid since the poll.
        ev("n2", "paid", "3", AFTER, Some(LATER)),
        // Terminal links the poll counted: final, so nothing changes.
        ev("paid-old", "paid", "999", OLD, Some(LATER)),
        ev(
            "paid-recent",
            "open",
            "999",
            "2026-11-24T11:59:00Z",
            Some(1),
        ),
        // An old link the poll did not see live: a terminal link it held.
        ev("x", "canceled", "8", OLD, Some(LATER)),
    ] {
        assert_eq!(ledger.apply(e), Applied::Applied);
    }
    let s = overlay(&b, &ledger, &cfg(), T0);
    assert_eq!(totals(&s, "open").count, 2);
    assert_eq!(totals(&s, "open").amount, dec("27"));
    assert_eq!(totals(&s, "paid").count, 4);
    assert_eq!(totals(&s, "paid").amount, dec("24"));
    assert_eq!(totals(&s, "canceled").count, 0);
    assert_eq!(s.unique_links, 6);
}

#[test]
fn out_of_order_events_are_settled_by_updated_at() {
    let mut l = Ledger::default();
    assert_eq!(
        l.apply(ev("a", "paid", "1", OLD, Some(20))),
        Applied::Applied
    );
    assert_eq!(
        l.apply(ev("a", "open", "1", OLD, Some(10))),
        Applied::Ignored
    );
    assert_eq!(l.terminal()["paid"].len(), 1);
    // Without updated_at, receipt order decides.
    assert_eq!(
        l.apply(ev("a", "canceled", "1", OLD, None)),
        Applied::Applied
    );
    assert!(!l.terminal().contains_key("paid"));
    // Equal updated_at: the later receipt (a retry carries the same state).
    assert_eq!(
        l.apply(ev("b", "open", "1", OLD, Some(5))),
        Applied::Applied
    );
    assert_eq!(
        l.apply(ev("b", "paid", "1", OLD, Some(5))),
        Applied::Applied
    );
    assert_eq!(l.terminal()["paid"].len(), 1);
}

#[test]
fn a_completed_poll_drops_what_it_read_and_keeps_what_came_during_it() {
    let mut l = Ledger::default();
    l.apply(ev("before", "paid", "1", OLD, None));
    l.begin_poll();
    l.apply(ev("during", "paid", "1", OLD, None));
    l.end_poll();
    assert_eq!(l.len(), 1);
    assert_eq!(l.terminal()["paid"][0].id, "during");
    // A failed poll drops nothing: the next begin moves the cut.
    l.begin_poll();
    l.apply(ev("late", "open", "1", OLD, None));
    l.begin_poll();
    l.end_poll();
    assert!(l.is_empty());
}

#[test]
fn invalid_event_data_never_reaches_the_terminal_view() {
    let mut l = Ledger::default();
    l.apply(ev("bad", "paid", "not-a-number", OLD, None));
    l.apply(ev("huge", "paid", "1e400", OLD, None));
    assert!(l.terminal().is_empty());
}

#[test]
fn joined_tells_newcomers_moved_and_after_walk_links_from_held_ones() {
    let m = memory(&["was-live", "seen-again"], &["recent-paid"]);
    let mut live_now = vec![(KEY.hash_one("seen-again"), 0)];
    live_now.sort_unstable();
    let links = [
        ev("was-live", "paid", "1", OLD, None),
        ev("seen-again", "paid", "1", OLD, None),
        ev("new", "paid", "1", AFTER, None),
        ev("recent-paid", "paid", "1", AFTER, None),
        ev("old", "paid", "1", OLD, None),
        ev("no-date", "paid", "1", "", None),
    ];
    let j = joined(&links, &m, &live_now, &KEY, T0.unix_timestamp() + 60);
    let ids: Vec<&str> = j.add.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["was-live", "new"]);
    assert_eq!(j.after_walk, 1);
}

#[test]
fn a_full_ledger_ignores_new_links_but_updates_held_ones() {
    let mut l = Ledger::default();
    for i in 0..MAX_LEDGER {
        l.links.insert(
            format!("l{i}"),
            Entry {
                link: ev("x", "open", "1", OLD, None),
                seq: 0,
            },
        );
    }
    assert_eq!(l.apply(ev("new", "open", "1", OLD, None)), Applied::Ignored);
    assert_eq!(l.apply(ev("l1", "paid", "1", OLD, None)), Applied::Applied);
}

#[test]
fn a_late_retry_older_than_the_poll_does_not_override_what_it_read() {
    let b = base(&[ev("o1", "open", "10", OLD, None)], &[]);
    let mut ledger = Ledger::default();
    let before_poll = i128::from(T0.unix_timestamp() - 5) * 1_000_000_000;
    ledger.apply(ev("o1", "processing", "10", OLD, Some(before_poll)));
    let s = overlay(&b, &ledger, &cfg(), T0);
    assert_eq!(totals(&s, "open").count, 1);
    assert_eq!(totals(&s, "processing").count, 0);
    let after_poll = i128::from(T0.unix_timestamp() + 5) * 1_000_000_000;
    ledger.apply(ev("o1", "processing", "10", OLD, Some(after_poll)));
    let s = overlay(&b, &ledger, &cfg(), T0);
    assert_eq!(totals(&s, "processing").count, 1);
    assert_eq!(totals(&s, "open").count, 0);
}
