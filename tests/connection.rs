//! Can customers pay at all? The connection status (`GET /v2/payment_links/connections`), checked
//! once per poll, against the simulator: changes show within one poll, and its faults never touch
//! the links' figures.

mod common;

use std::time::Duration;

use common::{Exporter, Sim, fast_args, http};
use qonto_exporter::simulator::SimConfig;

async fn set_connection(sim: &Sim, state: serde_json::Value) {
    let r = http()
        .post(format!("{}/_sim/connection", sim.url()))
        .header("content-type", "application/json")
        .body(state.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{state}");
}

fn state_set(m: &std::collections::BTreeMap<String, f64>) -> Vec<(String, f64)> {
    m.iter()
        .filter_map(|(k, v)| {
            let status = k
                .strip_prefix("qonto_payment_links_connection_status{status=\"")?
                .split('"')
                .next()?;
            Some((status.to_owned(), *v))
        })
        .collect()
}

fn current(m: &std::collections::BTreeMap<String, f64>) -> Vec<String> {
    state_set(m)
        .into_iter()
        .filter(|(_, v)| *v == 1.0)
        .map(|(s, _)| s)
        .collect()
}

#[tokio::test]
async fn connection_changes_show_within_a_poll_and_faults_leave_the_links_alone() {
    let sim = Sim::start(SimConfig {
        links: 150,
        ..SimConfig::default()
    })
    .await;
    let e = Exporter::start_owned(&fast_args(&sim.url(), &[]), &[("QONTO_ACCESS_TOKEN", "t")]);
    e.wait_ready(Duration::from_secs(20)).await;
    let m = e
        .wait_until("enabled", Duration::from_secs(10), |m| {
            current(m) == ["enabled"]
        })
        .await;
    // The documented statuses are all there, the others at 0.
    let all: Vec<String> = state_set(&m).into_iter().map(|(s, _)| s).collect();
    for s in ["enabled", "pending", "disabled", "not_connected"] {
        assert!(all.contains(&s.to_owned()), "{all:?}");
    }

    // Switched: the next check shows it (polls every 200 ms).
    set_connection(&sim, serde_json::json!({"status": "disabled"})).await;
    e.wait_until("disabled", Duration::from_secs(5), |m| {
        current(m) == ["disabled"]
    })
    .await;
    // A status Qonto adds tomorrow shows as itself, in its spec spelling (lower case).
    set_connection(&sim, serde_json::json!({"status": "SUSPENDED"})).await;
    e.wait_until("suspended", Duration::from_secs(5), |m| {
        current(m) == ["suspended"]
    })
    .await;

    // Failures: counted, the last known status stays, and the links figures are still served
    // and still move with every poll.
    let before = e.metrics().await;
    set_connection(&sim, serde_json::json!({"status": "pending", "fail": 1000})).await;
    let m = e
        .wait_until("failures counted", Duration::from_secs(10), |m| {
            m["qonto_exporter_connection_check_failures_total"]
                >= before["qonto_exporter_connection_check_failures_total"] + 3.0
        })
        .await;
    assert_eq!(current(&m), ["suspended"]);
    assert_eq!(m["qonto_up"], 1.0);
    assert!(m["qonto_exporter_polls_total"] > before["qonto_exporter_polls_total"]);
    assert_eq!(
        m["qonto_exporter_poll_failures_total"],
        before["qonto_exporter_poll_failures_total"]
    );
    let text = e.scrape().await;
    let (lo, hi) = common::poll_span(&text);
    common::assert_matches_recount(
        &text,
        &sim.sim.links_json(),
        lo,
        hi,
        &[
            ("1h", 3600),
            ("24h", 86_400),
            ("7d", 604_800),
            ("30d", 2_592_000),
        ],
    );
    assert!(e.logs().contains("connection status check failed"));
    // Recovered.
    set_connection(&sim, serde_json::json!({"status": "pending"})).await;
    e.wait_until("pending", Duration::from_secs(5), |m| {
        current(m) == ["pending"]
    })
    .await;
}

/// Absurd answers: a status that cannot be a label value is a failed check, never a series.
#[tokio::test]
async fn an_unusable_status_is_a_failed_check() {
    let sim = Sim::start(SimConfig::default()).await;
    let e = Exporter::start_owned(&fast_args(&sim.url(), &[]), &[("QONTO_ACCESS_TOKEN", "t")]);
    e.wait_ready(Duration::from_secs(20)).await;
    e.wait_until("enabled", Duration::from_secs(10), |m| {
        current(m) == ["enabled"]
    })
    .await;
    let long = "x".repeat(5000);
    set_connection(&sim, serde_json::json!({"status": long})).await;
    let before = e
        .metric("qonto_exporter_connection_check_failures_total")
        .await;
    let m = e
        .wait_until("failure", Duration::from_secs(5), |m| {
            m["qonto_exporter_connection_check_failures_total"] >= before + 2.0
        })
        .await;
    assert_eq!(current(&m), ["enabled"]);
    assert!(!e.scrape().await.contains("xxxxxxxxxx"));
}

/// `GET /v2/payment_links/{id}/payments` through the client: a paid link's payments end with
/// its paid one (method and paid_at), and an id from the API is one path segment whatever it
/// holds (a hostile `../..` stays inside the payments path).
#[tokio::test]
async fn a_links_payments_are_read_whole_and_ids_stay_one_segment() {
    use qonto_exporter::metrics::SelfMetrics;
    use qonto_exporter::qonto::auth::Credentials;
    use qonto_exporter::qonto::budget::{Budget, BudgetConfig};
    use qonto_exporter::qonto::client::{ClientConfig, QontoClient, RetryPolicy};
    use qonto_exporter::secret::Secret;
    use std::sync::Arc;
    let sim = Sim::start(SimConfig {
        links: 300,
        ..SimConfig::default()
    })
    .await;
    let client = QontoClient::new(
        ClientConfig {
            base_url: sim.url(),
            timeout: Duration::from_secs(5),
            staging_token: None,
            retry: RetryPolicy {
                max_attempts: 2,
                ..RetryPolicy::default()
            },
            budget: Arc::new(Budget::new(BudgetConfig::default())),
        },
        Credentials::AccessToken(Secret::new("t")),
        SelfMetrics::new("default"),
    )
    .unwrap();
    let links = sim.sim.links_json();
    let paid = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["status"] == "paid")
        .unwrap();
    let (payments, more) = client
        .link_payments(paid["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(!more);
    let last = payments.last().unwrap();
    assert_eq!(last.status, "paid");
    assert!(last.payment_method.is_some());
    let paid_at = last.paid_at.as_deref().unwrap();
    assert!(paid_at >= paid["created_at"].as_str().unwrap(), "{paid_at}");
    assert!(
        payments[..payments.len() - 1]
            .iter()
            .all(|p| p.status == "failed")
    );
    // Hostile ids: each is one segment, so the simulator sees an unknown link (404), never
    // another endpoint.
    for id in [
        "../..",
        "../../v2/payment_links",
        "a/b",
        "x?page=2",
        "%2e%2e",
    ] {
        let e = client.link_payments(id).await.unwrap_err().to_string();
        assert!(e.contains("404"), "{id}: {e}");
    }
    let log = sim.sim.request_log();
    assert!(
        log.requests
            .iter()
            .filter(|r| r.path.contains("payments"))
            .all(|r| r.path.starts_with("/v2/payment_links/") && r.path.ends_with("/payments")),
        "{:?}",
        log.requests.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

/// `--collect.payments`: the payments of the links a poll sees becoming paid are counted by
/// status and method, exactly as the simulator serves them, each link once; the time to pay
/// is then the paid payment's paid_at − created_at; without the flag nothing is read.
#[tokio::test]
async fn payments_of_links_seen_becoming_paid_are_counted_once() {
    use qonto_exporter::simulator::Mutation;
    use std::collections::BTreeMap;
    let sim = Sim::start(SimConfig {
        links: 400,
        seed: 9,
        ..SimConfig::default()
    })
    .await;
    let args = fast_args(&sim.url(), &[("--collect.payments", "1000")]);
    let e = Exporter::start_owned(&args, &[("QONTO_ACCESS_TOKEN", "t")]);
    let off = Exporter::start_owned(&fast_args(&sim.url(), &[]), &[("QONTO_ACCESS_TOKEN", "t")]);
    e.wait_ready(Duration::from_secs(20)).await;
    off.wait_ready(Duration::from_secs(20)).await;
    e.wait_polls(2, Duration::from_secs(10)).await;
    off.wait_polls(2, Duration::from_secs(10)).await;
    let paid_before: Vec<String> = sim
        .sim
        .links_json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"] == "paid")
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(sim.sim.mutate(Mutation::Pay(12)) == 12);
    let paid_now: Vec<serde_json::Value> = sim
        .sim
        .links_json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["status"] == "paid" && !paid_before.contains(&l["id"].as_str().unwrap().to_owned())
        })
        .cloned()
        .collect();
    assert_eq!(paid_now.len(), 12);
    // What the simulator serves for them, read independently over HTTP.
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for l in &paid_now {
        let body = payments_json(&sim, l["id"].as_str().unwrap()).await;
        for p in body["payments"].as_array().unwrap() {
            let key = format!(
                "qonto_payment_links_payments_total{{payment_method=\"{}\",status=\"{}\"}}",
                p["payment_method"].as_str().unwrap(),
                p["status"].as_str().unwrap()
            );
            *want.entry(key).or_default() += 1.0;
        }
    }
    let m = e
        .wait_until(
            "the paid links' payments counted",
            Duration::from_secs(10),
            |m| m.get("qonto_exporter_payment_reads_total").copied() == Some(12.0),
        )
        .await;
    // Several more polls: each link is read once.
    let m2 = e.wait_polls(3, Duration::from_secs(10)).await;
    for m in [&m, &m2] {
        let got: BTreeMap<String, f64> = m
            .iter()
            .filter(|(k, _)| k.starts_with("qonto_payment_links_payments_total{"))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(got, want);
        assert_eq!(m["qonto_exporter_payment_read_failures_total"], 0.0);
    }
    // The time to pay of each: paid_at − created_at, from the payments (the simulator's are
    // 1 minute to 3 days), never the poll's time (seconds after the Pay mutation's).
    let count: f64 = m2
        .iter()
        .filter(|(k, _)| k.starts_with("qonto_payment_links_time_to_pay_seconds_count"))
        .map(|(_, v)| v)
        .sum();
    let sum: f64 = m2
        .iter()
        .filter(|(k, _)| k.starts_with("qonto_payment_links_time_to_pay_seconds_sum"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(count, 12.0);
    let mut want_sum = 0.0;
    for l in &paid_now {
        let body = payments_json(&sim, l["id"].as_str().unwrap()).await;
        let paid = body["payments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["status"] == "paid")
            .unwrap();
        let at = |s: &serde_json::Value| {
            time::OffsetDateTime::parse(
                s.as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
            .unix_timestamp()
        };
        want_sum += (at(&paid["paid_at"]) - at(&l["created_at"])).max(0) as f64;
    }
    assert_eq!(sum, want_sum);
    // Without the flag: no payment read, no payment series moved.
    let m = off.wait_polls(2, Duration::from_secs(10)).await;
    assert_eq!(m["qonto_exporter_payment_reads_total"], 0.0);
    assert!(
        !m.keys()
            .any(|k| k.starts_with("qonto_payment_links_payments_total{"))
    );
}

/// `GET /v2/payment_links/{id}/payments` of the simulator, read directly.
async fn payments_json(sim: &Sim, id: &str) -> serde_json::Value {
    let text = http()
        .get(format!("{}/v2/payment_links/{id}/payments", sim.url()))
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}
