//! The exporter end to end: the built binary polls a simulated organisation over loopback,
//! and its `/metrics` must equal an aggregation computed independently by the test — every
//! count, every exact sum, every expiry figure — and pass `promtool check metrics`. Figures
//! across changing polls are covered by `tests/incremental.rs`.

mod common;

use std::time::Duration;

use common::{Exporter, Sim, assert_matches_recount, parse_metrics, poll_span, promtool};
use qonto_exporter::simulator::SimConfig;

const WINDOWS: [(&str, i64); 4] = [
    ("1h", 3600),
    ("24h", 86_400),
    ("7d", 604_800),
    ("30d", 2_592_000),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_equal_an_independent_recount_and_pass_promtool() {
    let sim = Sim::start(SimConfig {
        links: 2345,
        seed: 42,
        access_tokens: vec!["test-token".into()],
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start(
        &[
            "--qonto.api-url",
            &sim.url(),
            "--poll.interval",
            "1h",
            "--qonto.max-requests-per-second",
            "1000",
        ],
        &[("QONTO_ACCESS_TOKEN", "test-token")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    let text = exporter.scrape().await;
    let (lo, hi) = poll_span(&text);
    assert_matches_recount(&text, &sim.sim.links_json(), lo, hi, &WINDOWS);

    let m = parse_metrics(&text);
    assert_eq!(m["qonto_up"], 1.0);
    // 2345 links at 100 a page: 24 pages, one request each; then one connection status check,
    // after the poll and not counted in it.
    assert_eq!(m["qonto_exporter_last_poll_requests"], 24.0);
    let m = exporter
        .wait_until("the connection check", Duration::from_secs(10), |m| {
            m["qonto_exporter_connection_checks_total"] == 1.0
                && m[r#"qonto_exporter_api_requests_total{code="200"}"#] == 25.0
        })
        .await;
    assert_eq!(m["qonto_exporter_last_poll_requests"], 24.0);
    let total: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("qonto_payment_links{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 2345.0);

    let out = promtool(&["check", "metrics"], text.as_bytes());
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_serves_a_moving_organisation() {
    let mut exporter = Exporter::start(&["--demo", "--poll.interval", "1s"], &[]);
    exporter.wait_ready(Duration::from_secs(30)).await;
    let first = parse_metrics(&exporter.scrape().await);
    for status in ["open", "processing", "paid", "expired", "canceled"] {
        assert!(
            first
                .iter()
                .any(|(k, v)| k.contains(&format!("status=\"{status}\"")) && *v > 0.0),
            "demo organisation has {status} links"
        );
    }
    let landing = common::http()
        .get(exporter.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(landing.contains("demo organisation") && landing.contains("/metrics"));
    // The organisation evolves every few seconds: some figure must change.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = parse_metrics(&exporter.scrape().await);
        let moved = first
            .iter()
            .filter(|(k, _)| k.starts_with("qonto_payment_links"))
            .any(|(k, v)| now.get(k) != Some(v));
        if moved {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo figures never moved"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(exporter.terminate().success(), "SIGTERM exits 0");
}
