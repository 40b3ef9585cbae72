//! Incremental polls (issue 5): terminal statuses are re-read only when their count moves, yet
//! after every poll the figures equal a full recount — with links paid, created, canceled and
//! expiring between polls.

mod common;

use std::time::Duration;

use common::{Exporter, Sim, assert_matches_recount, parse_metrics, poll_span};
use qonto_exporter::simulator::{Mutation, SimConfig};

const WINDOWS: [(&str, i64); 2] = [("1h", 3600), ("24h", 86_400)];

fn live_links(links: &serde_json::Value) -> u64 {
    links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| matches!(l["status"].as_str(), Some("open" | "processing")))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_polls_equal_a_full_recount_and_stay_cheap() {
    let sim = Sim::start(SimConfig {
        links: 6000,
        seed: 11,
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start(
        &[
            "--qonto.api-url",
            &sim.url(),
            "--poll.interval",
            "250ms",
            "--poll.full-resync-interval",
            "1h",
            "--expiry.windows",
            "1h,24h",
            "--qonto.max-requests-per-second",
            "1000",
            // Qonto's windows scaled far up: the request budget must not be what slows polls.
            "--qonto.rate-limit-short",
            "1000000/1s",
            "--qonto.rate-limit-long",
            "100000000/10s",
        ],
        &[("QONTO_ACCESS_TOKEN", "t")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;

    // Steady state: nothing changes, so a poll walks open+processing and probes the rest.
    let text = exporter.next_poll().await;
    let links = sim.sim.links_json();
    let m = parse_metrics(&text);
    let bound = live_links(&links).div_ceil(100) + 5;
    assert!(
        m["qonto_exporter_last_poll_requests"] <= bound as f64,
        "steady-state poll sent {} requests, bound {bound}",
        m["qonto_exporter_last_poll_requests"]
    );
    assert_eq!(m["qonto_exporter_full_walks_total"], 1.0);
    let (lo, hi) = poll_span(&text);
    assert_matches_recount(&text, &links, lo, hi, &WINDOWS);

    // Links paid since the last poll are found among the links that were open then, reading
    // the paid links latest-expiring first: the paid status is not walked again in full.
    let paid_pages = links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"] == "paid")
        .count()
        .div_ceil(100) as u64;
    sim.sim.reset_stats();
    sim.sim.mutate(Mutation::Pay(5));
    let text = exporter.next_poll().await;
    let paid_requests = sim.sim.stats().list_requests_by_status_filter["paid"];
    assert!(
        paid_requests < paid_pages / 2,
        "{paid_requests} requests for paid links over the polls absorbing 5 payments ({paid_pages} pages in all)"
    );
    let (lo, hi) = poll_span(&text);
    assert_matches_recount(&text, &sim.sim.links_json(), lo, hi, &WINDOWS);

    // Changes of every kind between polls.
    let changes: [&[Mutation]; 4] = [
        &[Mutation::Pay(5)],
        &[Mutation::Create(120), Mutation::Cancel(3)],
        &[Mutation::Process(4), Mutation::Expire(6)],
        &[
            Mutation::Step,
            Mutation::ExpireSoon {
                count: 9,
                within: Duration::from_secs(1200),
            },
        ],
    ];
    for (round, batch) in changes.iter().enumerate() {
        for m in batch.iter() {
            sim.sim.mutate(m.clone());
        }
        let links = sim.sim.links_json();
        let text = exporter.next_poll().await;
        let (lo, hi) = poll_span(&text);
        assert_matches_recount(&text, &links, lo, hi, &WINDOWS);
        let m = parse_metrics(&text);
        assert_eq!(
            m["qonto_exporter_full_walks_total"], 1.0,
            "round {round}: no full walk needed"
        );
    }
}

/// Every settled full resync checks that what the incremental polls carried still holds. With
/// links created, paid, canceled and expiring between and during polls (but terminal links
/// never changing, as the simulator's default organisation behaves), the check must run and
/// find nothing to correct: links paid mid-poll, created mid-poll or moved between the live
/// walk and a terminal walk are not corrections. (A full walk that sees the listing move is
/// not checked: it may have missed links; hence changes every 250 ms, not faster.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_resyncs_find_no_correction_when_terminal_links_stay_final() {
    let sim = Sim::start(SimConfig {
        links: 3000,
        seed: 5,
        evolve_every: Some(Duration::from_millis(250)),
        latency: Duration::from_millis(2),
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start(
        &[
            "--qonto.api-url",
            &sim.url(),
            "--poll.interval",
            "200ms",
            "--poll.full-resync-interval",
            "700ms",
            "--qonto.max-requests-per-second",
            "1000",
            // Qonto's windows scaled far up: the request budget must not be what slows polls.
            "--qonto.rate-limit-short",
            "1000000/1s",
            "--qonto.rate-limit-long",
            "100000000/10s",
        ],
        &[("QONTO_ACCESS_TOKEN", "t")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    let m = exporter
        .wait_until("three checked full resyncs", Duration::from_secs(60), |m| {
            m.get("qonto_exporter_resync_checks_total")
                .is_some_and(|v| *v >= 3.0)
        })
        .await;
    assert!(m["qonto_exporter_polls_total"] > m["qonto_exporter_full_walks_total"]);
    for status in ["paid", "expired", "canceled"] {
        let series = format!("qonto_exporter_resync_corrections_total{{status=\"{status}\"}}");
        assert_eq!(m[&series], 0.0, "{series}:\n{}", exporter.logs());
    }
}

/// Links of a status outside the spec's enum (`settling` here) cannot be reached by status
/// filters, so the parts never add up to the total. While that remainder stays what the last
/// full walk found, their figures are carried: steady polls cost the live walk and the probes,
/// not a full walk. When the remainder moves, everything is walked and the figures are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_statuses_are_carried_while_their_number_holds() {
    let sim = Sim::start(SimConfig {
        links: 6000,
        seed: 12,
        ..SimConfig::default()
    })
    .await;
    let settling = |n| Mutation::Recast {
        count: n,
        from: qonto_exporter::simulator::Status::Open,
        to: qonto_exporter::simulator::Status::Settling,
    };
    assert_eq!(sim.sim.mutate(settling(7)), 7);
    let exporter = Exporter::start(
        &[
            "--qonto.api-url",
            &sim.url(),
            "--poll.interval",
            "250ms",
            "--poll.full-resync-interval",
            "1h",
            "--expiry.windows",
            "1h,24h",
            "--qonto.max-requests-per-second",
            "1000",
            // Qonto's windows scaled far up: the request budget must not be what slows polls.
            "--qonto.rate-limit-short",
            "1000000/1s",
            "--qonto.rate-limit-long",
            "100000000/10s",
        ],
        &[("QONTO_ACCESS_TOKEN", "t")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    exporter.next_poll().await;
    let text = exporter.next_poll().await;
    let links = sim.sim.links_json();
    let m = parse_metrics(&text);
    assert_eq!(
        m["qonto_exporter_full_walks_total"], 1.0,
        "one full walk, the first"
    );
    let bound = live_links(&links).div_ceil(100) + 5;
    assert!(
        m["qonto_exporter_last_poll_requests"] <= bound as f64,
        "steady poll with unknown statuses sent {} requests, bound {bound}",
        m["qonto_exporter_last_poll_requests"]
    );
    let (lo, hi) = poll_span(&text);
    assert_matches_recount(&text, &links, lo, hi, &WINDOWS);
    assert!(
        text.contains("status=\"settling\""),
        "the unknown status is exported"
    );

    // The remainder moves (two more links settle): walked, exact again, then carried again.
    sim.sim.mutate(settling(2));
    let links = sim.sim.links_json();
    let text = exporter.next_poll().await;
    let (lo, hi) = poll_span(&text);
    assert_matches_recount(&text, &links, lo, hi, &WINDOWS);
    let m = parse_metrics(&text);
    assert_eq!(m["qonto_exporter_full_walks_total"], 2.0);
    let text = exporter.next_poll().await;
    assert_eq!(
        parse_metrics(&text)["qonto_exporter_full_walks_total"],
        2.0,
        "carried again"
    );
    let (lo, hi) = poll_span(&text);
    assert_matches_recount(&text, &links, lo, hi, &WINDOWS);
}
