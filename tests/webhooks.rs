//! Webhooks end to end (issue 13): the real binary's receiver gets the simulator's signed
//! deliveries; events move the figures between polls, polls stay exact and spare terminal walks,
//! and faults (duplicates, reordering, drops, stale signatures) heal.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Exporter, Sim, fast_args, free_port, parse_metrics, sim_figures, status_figures};
use qonto_exporter::simulator::{Mutation, SimConfig, WebhookFaults};

const SECRET: &str = "whsec-test-0123456789abcdef0123456789abcdef";

/// An exporter polling `sim` every `interval`, with its receiver on a free loopback port to
/// which the simulator is subscribed.
fn start(sim: &Sim, interval: &str) -> Exporter {
    let port = free_port();
    let args = fast_args(
        &sim.url(),
        &[
            ("--poll.interval", interval),
            ("--poll.full-resync-interval", "1h"),
            ("--webhook.listen-address", &format!("127.0.0.1:{port}")),
        ],
    );
    let exporter = Exporter::start_owned(
        &args,
        &[
            ("QONTO_WEBHOOK_SECRET", SECRET),
            ("QONTO_ACCESS_TOKEN", "t"),
        ],
    );
    sim.sim
        .subscribe_webhook(&format!("http://127.0.0.1:{port}/webhooks/qonto"), SECRET)
        .expect("subscription");
    exporter
}

/// Waits until every event the simulator made was answered or given up.
async fn drained(sim: &Sim, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = sim.sim.webhook_stats();
        let settled = s.delivered + s.dropped + s.abandoned + s.overflowed;
        if settled >= s.sent + s.duplicated {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries not drained within {within:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn outcome(m: &BTreeMap<String, f64>, outcome: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            k.starts_with("qonto_exporter_webhook_events_total{")
                && k.contains(&format!("outcome=\"{outcome}\""))
        })
        .map(|(_, v)| v)
        .sum()
}

fn differences(got: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    keys.into_iter()
        .filter(|k| got.get(*k).copied().unwrap_or(0.0) != want.get(*k).copied().unwrap_or(0.0))
        .map(|k| format!("{k}: exported {:?}, true {:?}", got.get(k), want.get(k)))
        .collect()
}

/// Waits until the exported counts and amounts equal the simulator's own, independently
/// recounted; returns the scrape.
async fn exact(e: &Exporter, sim: &Sim, what: &str, within: Duration) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + within;
    loop {
        let m = e.metrics().await;
        let diff = differences(&status_figures(&m), &sim_figures(&sim.sim));
        if diff.is_empty() {
            return m;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not exact within {within:?}:\n{}\nlogs:\n{}",
                diff.join("\n"),
                e.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_move_the_figures_between_polls_exactly() {
    let sim = Sim::start(SimConfig {
        links: 3000,
        seed: 31,
        ..SimConfig::default()
    })
    .await;
    let e = start(&sim, "1h");
    e.wait_ready(Duration::from_secs(20)).await;
    // Duplicates and reordering: each change still counts once, the latest state wins.
    sim.sim
        .set_webhook_faults(WebhookFaults {
            duplicate: 0.3,
            reorder: 0.3,
            ..WebhookFaults::default()
        })
        .expect("faults");
    for m in [
        Mutation::Pay(7),
        Mutation::Create(25),
        Mutation::Cancel(4),
        Mutation::Process(5),
        Mutation::Expire(3),
        Mutation::Pay(6),
    ] {
        sim.sim.mutate(m);
    }
    drained(&sim, Duration::from_secs(20)).await;
    let m = exact(
        &e,
        &sim,
        "after events, before any poll",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        m.get("qonto_exporter_polls_total").copied(),
        Some(1.0),
        "no poll ran: the events moved the figures"
    );
    assert!(outcome(&m, "applied") >= 50.0, "{}", outcome(&m, "applied"));
    assert!(outcome(&m, "duplicate") > 0.0);
    assert!(!e.logs().contains(SECRET), "the secret reached the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_webhooks_is_exact_after_every_poll_and_spares_terminal_walks() {
    let sim = Sim::start(SimConfig {
        links: 6000,
        seed: 32,
        ..SimConfig::default()
    })
    .await;
    let e = start(&sim, "300ms");
    e.wait_ready(Duration::from_secs(20)).await;
    for round in 0..8 {
        for _ in 0..3 {
            sim.sim.mutate(Mutation::Step);
            tokio::time::sleep(Duration::from_millis(70)).await;
        }
        drained(&sim, Duration::from_secs(20)).await;
        // A poll that started after the last change: its figures are the truth.
        e.wait_polls(1, Duration::from_secs(20)).await;
        exact(&e, &sim, &format!("round {round}"), Duration::from_secs(1)).await;
    }
    let m = e.metrics().await;
    assert!(
        m.get("qonto_exporter_webhook_polls_settled_total")
            .copied()
            .unwrap_or(0.0)
            >= 4.0,
        "events should settle most polls whose terminal counts grew:\n{}",
        e.logs()
    );
    let corrections: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("qonto_exporter_resync_corrections_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(corrections, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_stale_deliveries_are_healed_by_the_next_poll() {
    let sim = Sim::start(SimConfig {
        links: 4000,
        seed: 33,
        ..SimConfig::default()
    })
    .await;
    let e = start(&sim, "500ms");
    e.wait_ready(Duration::from_secs(20)).await;
    sim.sim
        .set_webhook_faults(WebhookFaults {
            duplicate: 0.2,
            reorder: 0.2,
            drop: 0.3,
            stale: 0.2,
        })
        .expect("faults");
    for round in 0..5 {
        sim.sim.mutate(Mutation::Step);
        sim.sim.mutate(Mutation::Pay(3));
        sim.sim.mutate(Mutation::Create(10));
        drained(&sim, Duration::from_secs(30)).await;
        e.wait_polls(1, Duration::from_secs(20)).await;
        exact(&e, &sim, &format!("round {round}"), Duration::from_secs(1)).await;
    }
    let m = e.metrics().await;
    assert!(sim.sim.webhook_stats().dropped > 0);
    assert!(
        outcome(&m, "stale") > 0.0,
        "stale attempts are refused and counted"
    );
    assert!(outcome(&m, "applied") > 0.0);
    let text = e.scrape().await;
    assert!(!text.contains(SECRET) && !e.logs().contains(SECRET));
    // The receiver is not the metrics listener: /metrics stays where it was.
    assert!(parse_metrics(&text).contains_key("qonto_exporter_webhook_enabled"));
}
