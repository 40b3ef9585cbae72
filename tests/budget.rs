//! The request budget, checked from outside: the real binary against the simulator enforcing
//! Qonto's two per-IP windows, and the simulator's request log telling how the requests fell in
//! time (issue 10 §1). Timing figures belong to `scripts/bench`; these tests check behaviour.

mod common;

use std::time::Duration;

use common::{Exporter, Sim, links_total};
use qonto_exporter::simulator::{RateLimits, RateWindow, SimConfig};

const TOKEN: (&str, &str) = ("QONTO_ACCESS_TOKEN", "t");

fn limits(short: &str, long: &str) -> RateLimits {
    RateLimits {
        windows: vec![short.parse().unwrap(), long.parse().unwrap()],
        retry_after: false,
    }
}

/// A first poll of 400 pages against windows scaled down to 100 per second and 600 per 10 s, with
/// half of each as the budget: 50 and 300. The 10-minute (here 10-second) share cannot hold the
/// poll, which therefore slows down to it; in no rolling window of either length does the
/// simulator see more than the share, and nothing is refused. The ceiling of 1,000/s given on
/// top does not lift the budget (before, it was the only limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_larger_than_the_long_share_keeps_within_both_shares() {
    let sim = Sim::start(SimConfig {
        links: 40_000,
        latency: Duration::from_millis(2),
        rate_limits: Some(limits("100/1s", "600/10s")),
        ..SimConfig::default()
    })
    .await;
    let e = Exporter::start(
        &[
            "--qonto.api-url",
            &sim.url(),
            "--poll.interval",
            "1h",
            "--qonto.max-concurrency",
            "4",
            "--qonto.budget-share",
            "0.5",
            "--qonto.rate-limit-short",
            "100/1s",
            "--qonto.rate-limit-long",
            "600/10s",
            "--qonto.max-requests-per-second",
            "1000",
        ],
        &[TOKEN],
    );
    e.wait_ready(Duration::from_secs(120)).await;
    let m = e.metrics().await;
    assert_eq!(links_total(&m), 40_000.0);

    let log = sim.sim.request_log();
    assert_eq!(log.dropped, 0);
    let sent = log.requests.iter().filter(|r| r.rate_limited_path).count();
    assert!(sent >= 400, "a walk of 400 pages, {sent} requests logged");
    let refused = log.requests.iter().filter(|r| r.code == Some(429)).count();
    assert_eq!(refused, 0, "no request was refused");
    let short = log.peak(Duration::from_secs(1)).requests;
    let long = log.peak(Duration::from_secs(10)).requests;
    eprintln!("{sent} requests; most in 1 s: {short}, in 10 s: {long}");
    assert!(short <= 50, "{short} requests in one second, share 50");
    assert!(long <= 300, "{long} requests in 10 seconds, share 300");
    // Not vacuous: the poll filled the long share, and was said to be held back by it.
    assert!(long >= 270, "the long share was not used: {long}");
    let held = e
        .wait_log(
            &["polling held back by the API budget"],
            Duration::from_secs(1),
        )
        .await;
    assert!(
        held.contains("pages_left=") && held.contains("at the current budget"),
        "{held}"
    );
    assert_eq!(
        m.get(r#"qonto_exporter_api_requests_total{code="429"}"#),
        Some(&0.0)
    );

    // The measured window: what the exporter counts is what the simulator saw in the same
    // (scaled) window, and the ratio is over the share.
    let m = e.metrics().await;
    let counted = m["qonto_exporter_api_requests_10m"];
    let ratio = m["qonto_exporter_api_budget_10m_usage_ratio"];
    assert!(counted > 0.0 && counted <= 300.0, "{counted}");
    assert!(
        (ratio - counted / 300.0).abs() < 1e-9,
        "{ratio} vs {counted}"
    );
}

/// With default flags (Qonto's windows, half of each), against a simulator enforcing Qonto's real
/// limits, a first poll of 200 pages goes out at the short window's share — well above the old
/// flat default of 10 requests a second — without being held back by the 10-minute share and
/// without a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_flags_walk_at_the_short_windows_pace() {
    let sim = Sim::start(SimConfig {
        links: 20_000,
        rate_limits: Some(RateLimits::qonto()),
        ..SimConfig::default()
    })
    .await;
    let e = Exporter::start(&["--qonto.api-url", &sim.url()], &[TOKEN]);
    e.wait_ready(Duration::from_secs(60)).await;
    let m = e.metrics().await;
    assert_eq!(links_total(&m), 20_000.0);
    let log = sim.sim.request_log();
    assert!(log.requests.iter().all(|r| r.code == Some(200)));
    let per_second = log.peak(Duration::from_secs(1)).requests;
    let per_10s = log.peak(RateWindow::QONTO_SHORT.period).requests;
    // The pace is 491 per 10.2 s after a burst of 10: about 58 in the busiest second (more
    // with scheduling jitter; the share itself is per 10 s, checked below).
    assert!(
        (30..=75).contains(&per_second),
        "{per_second} requests in the busiest second"
    );
    assert!(per_10s <= 500, "{per_10s} in 10 s, share 500");
    assert!(
        e.log_lines(&["held back"]).is_empty(),
        "a poll of 200 pages fits in the 10-minute share:\n{}",
        e.logs()
    );
    let started = e.log_lines(&["qonto-exporter started"]).join("\n");
    assert!(
        started.contains("500/10s and 5000/10m (share 0.5 of 1000/10s and 10000/10m)"),
        "{started}"
    );
}
