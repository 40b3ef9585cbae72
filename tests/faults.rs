//! Issue 3's faults, each injected over real HTTP by the simulator while the real binary polls
//! it, then judged from the outside: the figures on `/metrics` against an independent recount of
//! what the API serves, the health metrics, the simulator's request counters and the logs.
//!
//! Every exporter here polls every 200 ms with 3 attempts per request, so a persistent fault
//! fails a poll within about a second and the whole file runs in well under a minute.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{Exporter, Sim, fast_args, links_total, parse_metrics, sim_figures, status_figures};
use qonto_exporter::simulator::{Fault, InvalidKind, Mutation, SimConfig};

/// Deadline of every wait: generous, a healthy run needs a fraction of it.
const WAIT: Duration = Duration::from_secs(20);
const TOKEN: (&str, &str) = ("QONTO_ACCESS_TOKEN", "test-token");

async fn sim(links: usize) -> Sim {
    Sim::start(SimConfig {
        links,
        seed: 11,
        ..SimConfig::default()
    })
    .await
}

async fn exporter(sim: &Sim, overrides: &[(&str, &str)]) -> Exporter {
    let e = Exporter::start_owned(&fast_args(&sim.url(), overrides), &[TOKEN]);
    e.wait_ready(WAIT).await;
    e
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

fn code(c: &str) -> String {
    format!("qonto_exporter_api_requests_total{{code=\"{c}\"}}")
}

/// Changes the organisation, so a poll that succeeds after a fault has new figures to publish.
fn move_data(sim: &Sim) {
    sim.sim.mutate(Mutation::Create(3));
    sim.sim.mutate(Mutation::Pay(2));
}

/// Waits until the exporter's count and amount series equal the recount of the simulator.
async fn wait_exact(e: &Exporter, sim: &Sim) -> BTreeMap<String, f64> {
    let want = sim_figures(&sim.sim);
    e.wait_until("figures equal the recount", WAIT, |m| {
        status_figures(m) == want
    })
    .await
}

/// Injects a 429 and measures, at the simulator, how long the exporter waited before asking
/// again; the poll must then succeed with exact figures and the 429 counted.
async fn rate_limited(retry_after: Option<String>, min: Duration, max: Duration) {
    let sim = sim(250).await;
    let e = exporter(&sim, &[]).await;
    move_data(&sim);
    let before = sim.sim.stats();
    sim.sim.inject(Fault::Status {
        code: 429,
        retry_after,
        times: 1,
    });
    let deadline = Instant::now() + WAIT;
    let (answered, requests) = loop {
        let s = sim.sim.stats();
        if s.by_code.get("429").copied().unwrap_or(0) > 0 {
            break (Instant::now(), s.list_requests_total);
        }
        assert!(Instant::now() < deadline, "the 429 was never served");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    while sim.sim.stats().list_requests_total == requests {
        assert!(Instant::now() < deadline, "no request after the 429");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let waited = answered.elapsed();
    assert!(
        waited >= min && waited <= max,
        "waited {waited:?} after the 429, expected {min:?}..{max:?}"
    );
    let m = wait_exact(&e, &sim).await;
    assert_eq!(get(&m, &code("429")), 1.0);
    assert_eq!(get(&m, "qonto_exporter_poll_failures_total"), 0.0);
    assert_eq!(get(&m, "qonto_up"), 1.0);
    assert!(sim.sim.stats().list_requests_total > before.list_requests_total);
    assert_eq!(
        e.log_lines(&["request failed; retrying", "429"]).len(),
        1,
        "one retry warning:\n{}",
        e.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_with_retry_after_seconds_waits_that_long() {
    rate_limited(
        Some("2".into()),
        Duration::from_millis(1900),
        Duration::from_millis(3500),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_with_retry_after_date_waits_until_then() {
    // HTTP dates have whole seconds: "now + 3 s" is between 2 and 3 s away.
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    rate_limited(
        Some(at),
        Duration::from_millis(1500),
        Duration::from_millis(4500),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_without_retry_after_backs_off() {
    // First backoff: between half and all of 500 ms.
    rate_limited(
        None,
        Duration::from_millis(240),
        Duration::from_millis(1500),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_and_the_poll_succeeds() {
    let sim = sim(250).await;
    let e = exporter(&sim, &[("--qonto.timeout", "300ms")]).await;
    let cases: [(Fault, &str); 5] = [
        (
            Fault::Status {
                code: 500,
                retry_after: None,
                times: 2,
            },
            "500",
        ),
        (
            Fault::Status {
                code: 503,
                retry_after: None,
                times: 2,
            },
            "503",
        ),
        (Fault::Reset { times: 2 }, "error"),
        (
            Fault::Delay {
                delay: Duration::from_secs(1),
                times: 2,
            },
            "error",
        ),
        (Fault::Truncate { times: 2 }, "200"),
    ];
    for (fault, label) in cases {
        let before = e.metric(&code(label)).await;
        let retries = e.log_lines(&["retrying"]).len();
        sim.sim.inject(fault.clone());
        e.wait_until("two failed attempts counted", WAIT, |m| {
            get(m, &code(label)) >= before + 2.0
        })
        .await;
        let deadline = Instant::now() + WAIT;
        while e.log_lines(&["retrying"]).len() < retries + 2 {
            assert!(
                Instant::now() < deadline,
                "{fault:?}: no two retries logged:\n{}",
                e.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        move_data(&sim);
        let m = wait_exact(&e, &sim).await;
        assert_eq!(
            get(&m, "qonto_exporter_poll_failures_total"),
            0.0,
            "{fault:?} within the attempt budget must not fail a poll; logs:\n{}",
            e.logs()
        );
    }
    // Each of the two retries above was logged as such.
    assert!(e.log_lines(&["request failed; retrying"]).len() >= 8);
    assert_eq!(
        e.log_lines(&["response is not a valid page; retrying"])
            .len(),
        2
    );
}

/// A fault that lasts: `qonto_up 0`, failures counted, the last good figures served unchanged
/// even though the organisation moved, bounded attempts; then recovery by itself.
async fn persistent(fault: Fault, label: &str, overrides: &[(&str, &str)]) -> (Sim, Exporter) {
    let sim = sim(250).await;
    let e = exporter(&sim, overrides).await;
    let m0 = e.metrics().await;
    let good = status_figures(&m0);
    let good_total = links_total(&good);
    let failures0 = get(&m0, "qonto_exporter_poll_failures_total");
    let coded0 = get(&m0, &code(label));
    sim.sim.inject(fault);
    // The API's data moves while the exporter cannot see it.
    move_data(&sim);
    assert_ne!(sim_figures(&sim.sim), good);
    let m = e
        .wait_until("two failed polls", WAIT, |m| {
            get(m, "qonto_exporter_poll_failures_total") >= failures0 + 2.0
        })
        .await;
    assert_eq!(get(&m, "qonto_up"), 0.0);
    assert_eq!(get(&m, "qonto_exporter_credentials_refused"), 0.0);
    assert_eq!(
        status_figures(&m),
        good,
        "the last good snapshot, unchanged"
    );
    assert_eq!(links_total(&m), good_total);
    // Three attempts per failed poll (one page at a time: the first request fails three
    // times). The poll under way when the fault came may have fetched a few good pages, and
    // the poll under way now may have made some attempts.
    let failures = get(&m, "qonto_exporter_poll_failures_total") - failures0;
    let faulted = get(&m, &code(label)) - coded0;
    assert!(
        faulted >= 3.0 * failures && faulted <= 3.0 * (failures + 1.0) + 3.0,
        "{faulted} requests answered {label} for {failures} failed polls: attempts are not bounded to 3"
    );
    // The fault goes away: the exporter recovers by itself, with the new figures.
    sim.sim.clear_faults();
    let m = wait_exact(&e, &sim).await;
    assert_eq!(get(&m, "qonto_up"), 1.0);
    (sim, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_errors_keep_the_last_snapshot_and_recover() {
    let (_sim, e) = persistent(
        Fault::Status {
            code: 502,
            retry_after: None,
            times: 100_000,
        },
        "502",
        &[],
    )
    .await;
    let failed = e.wait_log(&["poll failed", "HTTP 502"], WAIT).await;
    assert!(failed.contains("trace_id"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_connection_resets_keep_the_last_snapshot_and_recover() {
    persistent(Fault::Reset { times: 100_000 }, "error", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_slow_responses_time_out_and_recover() {
    let (_sim, e) = persistent(
        Fault::Delay {
            delay: Duration::from_secs(3),
            times: 100_000,
        },
        "error",
        &[("--qonto.timeout", "250ms")],
    )
    .await;
    e.wait_log(&["poll failed", "timed out"], WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_truncated_json_fails_the_poll_naming_the_page() {
    let (_sim, e) = persistent(Fault::Truncate { times: 100_000 }, "200", &[]).await;
    let line = e.wait_log(&["poll failed", "page 1: "], WAIT).await;
    assert!(line.contains("not a payment-links page"), "{line}");
    assert!(line.contains("trace_id"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_malformed_json_fails_the_poll_naming_the_page() {
    let (_sim, e) = persistent(Fault::Malformed { times: 100_000 }, "200", &[]).await;
    let line = e.wait_log(&["poll failed", "page 1: "], WAIT).await;
    assert!(line.contains("not a payment-links page"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_page_fails_at_once_with_the_staging_token_hint() {
    let sim = sim(250).await;
    let e = exporter(&sim, &[]).await;
    let good = status_figures(&e.metrics().await);
    // Over HTTP, through the control endpoint.
    sim.inject_http(serde_json::json!({"kind": "html", "times": 100_000}))
        .await;
    let html_before = sim.sim.stats().list_requests_total;
    let failures_before = e.metric("qonto_exporter_poll_failures_total").await;
    let m = e
        .wait_until("three failed polls", WAIT, |m| {
            get(m, "qonto_exporter_poll_failures_total") >= failures_before + 3.0
        })
        .await;
    let failed = get(&m, "qonto_exporter_poll_failures_total") - failures_before;
    let sent = (sim.sim.stats().list_requests_total - html_before) as f64;
    // One request per poll: not retried (a poll may be under way, hence + 1).
    assert!(
        sent <= failed + 1.0,
        "{sent} requests for {failed} failed polls: the HTML answer was retried"
    );
    assert_eq!(get(&m, "qonto_up"), 0.0);
    assert_eq!(status_figures(&m), good);
    let line = e.wait_log(&["poll failed", "not JSON"], WAIT).await;
    assert!(line.contains("X-Qonto-Staging-Token"), "{line}");
    assert!(e.log_lines(&["retrying"]).is_empty(), "{}", e.logs());
    sim.sim.clear_faults();
    e.wait_until("recovered", WAIT, |m| get(m, "qonto_up") == 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_client_errors_are_not_retried() {
    let sim = sim(250).await;
    let e = exporter(&sim, &[]).await;
    sim.sim.inject(Fault::Status {
        code: 404,
        retry_after: None,
        times: 1,
    });
    let m = e
        .wait_until("a failed poll", WAIT, |m| {
            get(m, "qonto_exporter_poll_failures_total") >= 1.0
        })
        .await;
    assert_eq!(get(&m, &code("404")), 1.0);
    e.wait_log(&["poll failed", "HTTP 404"], WAIT).await;
    assert!(e.log_lines(&["retrying"]).is_empty(), "{}", e.logs());
    e.wait_until("recovered", WAIT, |m| get(m, "qonto_up") == 1.0)
        .await;
}

/// 401 then 403: each refusal is one warning with the API's code, one request per poll at
/// most, the last good figures kept; accepted again, the exporter says so and recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_warn_once_and_send_one_request_per_poll() {
    let sim = sim(250).await;
    let e = exporter(&sim, &[]).await;
    let good = status_figures(&e.metrics().await);
    for (status, api_code) in [(401u16, "authorization_token_invalid"), (403, "forbidden")] {
        sim.sim.inject(Fault::Status {
            code: status,
            retry_after: None,
            times: 100_000,
        });
        let m = e
            .wait_until("credentials refused", WAIT, |m| {
                get(m, "qonto_exporter_credentials_refused") == 1.0
            })
            .await;
        let polls0 = get(&m, "qonto_exporter_polls_total");
        let sent0 = sim.sim.stats().list_requests_total;
        let m = e.wait_polls(5, WAIT).await;
        let polls = get(&m, "qonto_exporter_polls_total") - polls0;
        let sent = (sim.sim.stats().list_requests_total - sent0) as f64;
        assert!(
            sent <= polls + 1.0,
            "HTTP {status}: {sent} requests in {polls} polls: refused credentials are retried"
        );
        assert_eq!(get(&m, "qonto_up"), 0.0);
        assert_eq!(get(&m, "qonto_exporter_credentials_refused"), 1.0);
        assert_eq!(status_figures(&m), good, "the last good snapshot is kept");
        let warnings = e.log_lines(&["level=warn", "refused the credentials"]);
        let this = warnings
            .iter()
            .filter(|l| l.contains(&format!("HTTP {status}")))
            .count();
        assert_eq!(this, 1, "one warning per state change:\n{}", e.logs());
        assert!(
            warnings.iter().any(|l| l.contains(api_code)),
            "the warning carries the API's error code {api_code}:\n{}",
            e.logs()
        );
        sim.sim.clear_faults();
        let m = e
            .wait_until("accepted again", WAIT, |m| get(m, "qonto_up") == 1.0)
            .await;
        assert_eq!(get(&m, "qonto_exporter_credentials_refused"), 0.0);
    }
    assert_eq!(e.log_lines(&["credentials accepted again"]).len(), 2);
    assert!(
        e.log_lines(&["403", "payment_link.read"]).len() == 1,
        "the 403 names the missing scope:\n{}",
        e.logs()
    );
}

/// Qonto throttles callers beyond 200 refused requests an hour: whatever the interval, the
/// exporter stops at its own budget of 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_stop_at_the_hourly_budget() {
    let sim = sim(50).await;
    let e = exporter(&sim, &[("--poll.interval", "10ms")]).await;
    sim.sim.inject(Fault::Status {
        code: 401,
        retry_after: None,
        times: 100_000,
    });
    let deadline = Instant::now() + WAIT;
    while sim.sim.stats().by_code.get("401").copied().unwrap_or(0) < 100 {
        assert!(Instant::now() < deadline, "budget never reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = e.wait_polls(20, WAIT).await;
    assert_eq!(sim.sim.stats().by_code.get("401").copied(), Some(100));
    assert_eq!(get(&m, &code("401")), 100.0);
    assert_eq!(get(&m, "qonto_exporter_credentials_refused"), 1.0);
    assert_eq!(
        e.log_lines(&["level=warn", "refused the credentials"])
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_during_a_walk_is_walked_again_and_figures_are_exact() {
    let sim = sim(450).await;
    // Full walks, so the links created after page 1 shift the pages still to be read.
    let e = exporter(
        &sim,
        &[
            ("--qonto.max-concurrency", "2"),
            ("--poll.full-resync-interval", "0s"),
        ],
    )
    .await;
    for create in [7, 150] {
        let drift_before = e.metric("qonto_exporter_pagination_drift_total").await;
        sim.sim.inject(Fault::DriftDuringWalk { create });
        e.wait_until("drift detected", WAIT, |m| {
            get(m, "qonto_exporter_pagination_drift_total") > drift_before
        })
        .await;
        let links = sim.links_http().await;
        let want = status_figures(&common::recount(&links, 0, &[]));
        e.wait_until("figures equal the recount", WAIT, |m| {
            status_figures(m) == want
        })
        .await;
    }
    e.wait_log(&["listing changed during the poll; walking again"], WAIT)
        .await;
    assert_eq!(e.metric("qonto_exporter_poll_failures_total").await, 0.0);
}

/// Between polls, links are created, paid, expired, canceled, processed: every poll settles on
/// the recount of `GET /_sim/links`, including the incremental polls that reuse terminal totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_between_polls_settle_on_the_recount() {
    let sim = sim(450).await;
    let e = exporter(&sim, &[("--qonto.max-concurrency", "4")]).await;
    let mutations = [
        Mutation::Create(5),
        Mutation::Pay(4),
        Mutation::Expire(3),
        Mutation::Cancel(2),
        Mutation::Process(3),
        Mutation::Step,
        Mutation::Pay(1),
        Mutation::Create(120),
    ];
    for m in mutations {
        sim.sim.mutate(m);
        let want = status_figures(&common::recount(&sim.links_http().await, 0, &[]));
        e.wait_until("figures equal the recount", WAIT, |got| {
            status_figures(got) == want
        })
        .await;
    }
    let m = e.metrics().await;
    assert_eq!(get(&m, "qonto_exporter_poll_failures_total"), 0.0);
    assert!(
        get(&m, "qonto_exporter_polls_total") > get(&m, "qonto_exporter_full_walks_total"),
        "incremental polls ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_page_that_does_not_advance_or_runs_past_the_end_fails_the_poll() {
    let sim = sim(250).await;
    let e = exporter(&sim, &[("--poll.full-resync-interval", "0s")]).await;
    let good = status_figures(&e.metrics().await);
    for (fault, says) in [
        (Fault::StuckNextPage { times: 1 }, "does not advance"),
        (Fault::NextPageBeyond { times: 1 }, "runs past total_pages"),
    ] {
        let failures = e.metric("qonto_exporter_poll_failures_total").await;
        let started = Instant::now();
        sim.sim.inject(fault);
        let m = e
            .wait_until("a failed poll", WAIT, |m| {
                get(m, "qonto_exporter_poll_failures_total") > failures
            })
            .await;
        assert!(started.elapsed() < Duration::from_secs(5), "the poll hung");
        assert_eq!(status_figures(&m), good);
        let line = e.wait_log(&["poll failed", says], WAIT).await;
        assert!(line.contains("pagination error"), "{line}");
        e.wait_until("recovered", WAIT, |m| get(m, "qonto_up") == 1.0)
            .await;
    }
}

/// One link of a page carries an unusable amount, currency or expiration date: it is skipped
/// and counted by reason, logged once with its id, and the poll succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_links_are_skipped_counted_and_logged_once() {
    // One page, full walks: every poll's only request serves the newest link first, an open
    // one (an expiration date only matters for open links).
    let sim = sim(99).await;
    sim.sim.mutate(Mutation::Create(1));
    let e = exporter(&sim, &[("--poll.full-resync-interval", "0s")]).await;
    let newest = sim.sim.links_json()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(sim.sim.links_json()[0]["status"], "open");
    for (kind, reason, message) in [
        (
            InvalidKind::Amount,
            "invalid_amount",
            "payment link skipped",
        ),
        (
            InvalidKind::Currency,
            "invalid_currency",
            "payment link skipped",
        ),
        (
            InvalidKind::ExpirationDate,
            "invalid_expiration_date",
            "no usable expiration date",
        ),
    ] {
        let polls = e.metric("qonto_exporter_polls_total").await;
        let short_polls = e.log_lines(&["poll complete", "links=99 "]).len();
        sim.sim.inject(Fault::InvalidLink { kind, times: 3 });
        let series = format!("qonto_exporter_invalid_links_total{{reason=\"{reason}\"}}");
        // Three polls read the bad link (and one more after): counted once, not three times.
        let m = e
            .wait_until("the bad link read by three polls", WAIT, |m| {
                get(m, &series) >= 1.0 && get(m, "qonto_exporter_polls_total") >= polls + 5.0
            })
            .await;
        assert_eq!(
            get(&m, &series),
            1.0,
            "{series} counts the link once:\n{}",
            e.logs()
        );
        let logged = e.log_lines(&[message, &format!("reason={reason}")]);
        assert_eq!(logged.len(), 1, "logged once:\n{}", e.logs());
        assert!(logged[0].contains(&newest), "with its id: {}", logged[0]);
        // Skipped links leave the figures (99 of 100 published); an open link without a
        // usable date still counts in its status.
        let now_short = e.log_lines(&["poll complete", "links=99 "]).len();
        if kind == InvalidKind::ExpirationDate {
            assert_eq!(now_short, short_polls, "{}", e.logs());
        } else {
            assert!(now_short >= short_polls + 3, "{}", e.logs());
        }
    }
    let m = wait_exact(&e, &sim).await;
    assert_eq!(get(&m, "qonto_exporter_poll_failures_total"), 0.0);
}

/// Each request takes 300 ms, a poll several times the 100 ms interval: polls must run one
/// after the other. With one request at a time, serial polls can send at most one request per
/// 300 ms; overlapping polls would send several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_polls_never_overlap() {
    let sim = Sim::start(SimConfig {
        links: 250,
        seed: 11,
        latency: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let e = exporter(
        &sim,
        &[
            ("--poll.interval", "100ms"),
            ("--poll.full-resync-interval", "0s"),
        ],
    )
    .await;
    let polls0 = e.metric("qonto_exporter_polls_total").await;
    let sent0 = sim.sim.stats().requests_total;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let sent = (sim.sim.stats().requests_total - sent0) as f64;
    let m = e.metrics().await;
    let polls = get(&m, "qonto_exporter_polls_total") - polls0;
    assert!(
        sent <= elapsed / 0.3 + 2.0,
        "{sent} requests in {elapsed:.1} s at 300 ms each: polls overlapped"
    );
    // A full walk of 3 pages, one at a time, takes at least 900 ms.
    assert!(
        polls <= elapsed / 0.9 + 2.0,
        "{polls} polls in {elapsed:.1} s"
    );
    assert!(polls >= 2.0, "polls went on: {polls}");
    assert!(get(&m, "qonto_exporter_last_poll_duration_seconds") >= 0.9);
    assert_eq!(get(&m, "qonto_exporter_poll_failures_total"), 0.0);
}

/// A poll that would take longer than `--poll.timeout` (each page answered in 300 ms, three
/// pages one at a time, a 500 ms deadline) is abandoned and counted as failed; the snapshot
/// before it stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_past_its_deadline_fails_and_keeps_the_last_snapshot() {
    let sim = sim(250).await;
    let e = exporter(
        &sim,
        &[
            ("--poll.timeout", "500ms"),
            ("--poll.full-resync-interval", "0s"),
        ],
    )
    .await;
    let good = status_figures(&e.metrics().await);
    sim.sim.inject(Fault::Delay {
        delay: Duration::from_millis(300),
        times: 100_000,
    });
    move_data(&sim);
    let m = e
        .wait_until("two failed polls", WAIT, |m| {
            get(m, "qonto_exporter_poll_failures_total") >= 2.0
        })
        .await;
    assert_eq!(get(&m, "qonto_up"), 0.0);
    assert_eq!(status_figures(&m), good);
    e.wait_log(&["poll failed", "did not finish within 500ms"], WAIT)
        .await;
    sim.sim.clear_faults();
    wait_exact(&e, &sim).await;
}

/// Scrapes in a tight loop while the organisation changes and faults are injected. Every
/// scrape must show one complete poll: its count and amount series together must equal the
/// recount of a state the organisation was really in (recorded before and after every change),
/// and its total must be the link count of a poll the exporter logged as complete. A poll
/// published series by series, or count and amount families from two polls, fails this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scrape_is_one_whole_poll_while_faults_and_mutations_happen() {
    let sim = sim(450).await;
    let e = exporter(
        &sim,
        &[
            ("--poll.interval", "30ms"),
            ("--qonto.max-concurrency", "4"),
            // Full walks and incremental polls alternate.
            ("--poll.full-resync-interval", "1s"),
        ],
    )
    .await;
    let e = Arc::new(e);
    let done = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (e, done) = (e.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                seen.push(parse_metrics(&e.scrape().await));
            }
            seen
        })
    };
    let mut states: BTreeSet<String> = BTreeSet::new();
    let key = |f: &BTreeMap<String, f64>| format!("{f:?}");
    states.insert(key(&sim_figures(&sim.sim)));
    let gateway = |code: u16, times: usize| Fault::Status {
        code,
        retry_after: None,
        times,
    };
    // Faults are paced so that the retries' backoff (0.25–0.5 s each) leaves most polls free
    // to publish: one cycle of ten rounds of 250 ms holds two or three retried faults, a drift,
    // and in the first two cycles an outage that fails a poll.
    for round in 0..30 {
        // Only the drift fault changes the data behind the test's back: record the state it
        // left before acting, and after.
        states.insert(key(&sim_figures(&sim.sim)));
        match round % 10 {
            0 | 3 | 6 => {
                sim.sim.mutate(Mutation::Create(1 + round % 3));
            }
            1 | 8 => {
                // A status change alone cannot be seen by a walk in progress; the creation
                // right after it changes total_count, which a walk does see.
                sim.sim.mutate(Mutation::Pay(2));
                states.insert(key(&sim_figures(&sim.sim)));
                sim.sim.mutate(Mutation::Create(1));
            }
            2 => sim.sim.inject(gateway(500, 1)),
            4 => sim.sim.inject(Fault::DriftDuringWalk { create: 3 }),
            5 => {
                sim.sim.mutate(Mutation::Expire(1));
                states.insert(key(&sim_figures(&sim.sim)));
                sim.sim.mutate(Mutation::Create(2));
            }
            7 => sim.sim.inject(Fault::Truncate { times: 1 }),
            _ if round < 20 => {
                // An outage long enough to fail a poll, then over.
                let failures = e.metric("qonto_exporter_poll_failures_total").await;
                sim.sim.inject(gateway(503, 100_000));
                e.wait_until("a failed poll", WAIT, |m| {
                    get(m, "qonto_exporter_poll_failures_total") > failures
                })
                .await;
                sim.sim.clear_faults();
            }
            _ => sim.sim.inject(Fault::Reset { times: 1 }),
        }
        states.insert(key(&sim_figures(&sim.sim)));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sim.sim.clear_faults();
    let last = sim_figures(&sim.sim);
    states.insert(key(&last));
    e.wait_until("the last state is published", WAIT, |m| {
        status_figures(m) == last
    })
    .await;
    done.store(true, Ordering::Relaxed);
    let seen = scraper.await.unwrap();

    let totals: BTreeSet<u64> = e
        .log_lines(&["poll complete"])
        .iter()
        .filter_map(|l| {
            l.split(' ')
                .find_map(|kv| kv.strip_prefix("links="))
                .and_then(|v| v.parse().ok())
        })
        .collect();
    let mut published = BTreeSet::new();
    for (i, m) in seen.iter().enumerate() {
        let figures = status_figures(m);
        // Counts and amounts agree with each other series by series.
        for (k, v) in &figures {
            if let Some(labels) = k.strip_prefix("qonto_payment_links{") {
                let amount = figures[&format!("qonto_payment_links_amount{{{labels}")];
                assert_eq!(
                    *v == 0.0,
                    amount == 0.0,
                    "scrape {i}: {k} {v}, amount {amount}"
                );
            }
        }
        assert!(
            states.contains(&key(&figures)),
            "scrape {i} shows figures of no state the organisation was in:\n{figures:#?}"
        );
        let total = links_total(m) as u64;
        assert!(
            totals.contains(&total),
            "scrape {i}: {total} links, no poll completed with that many ({totals:?})"
        );
        published.insert(key(&figures));
    }
    let m = e.metrics().await;
    assert!(seen.len() >= 100, "only {} scrapes", seen.len());
    assert!(
        published.len() >= 5,
        "scrapes saw only {} distinct polls of {} states in {} scrapes; logs:\n{}",
        published.len(),
        states.len(),
        seen.len(),
        e.logs()
    );
    assert!(get(&m, "qonto_exporter_poll_failures_total") >= 1.0);
    // The listing moved under some walk, which was walked again (drift within a walk, or an
    // incremental poll whose parts no longer added up).
    assert!(
        !e.log_lines(&["walking"]).is_empty(),
        "no walk saw the listing move:\n{}",
        e.logs()
    );
}
