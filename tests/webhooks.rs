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

/// The exported count and amount series of one organisation, its label removed.
fn org_figures(m: &BTreeMap<String, f64>, org: &str) -> BTreeMap<String, f64> {
    let label = format!("organization=\"{org}\"");
    status_figures(
        &m.iter()
            .filter(|(k, _)| k.contains(&label))
            .map(|(k, v)| {
                let k = k
                    .replace(&format!(",{label}"), "")
                    .replace(&format!("{label},"), "");
                (k, *v)
            })
            .collect(),
    )
}

/// Several organisations: each one's deliveries go to `{path}/{name}` and move only its figures;
/// a reload that removes one removes its route, and the one left is also reachable at `{path}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_organisation_has_its_route_and_a_reload_removes_it() {
    use qonto_exporter::simulator::SimOrganization;
    let sim = Sim::start(SimConfig {
        name: "acme".into(),
        links: 800,
        seed: 34,
        access_tokens: vec!["token-acme".into()],
        more_organizations: vec![SimOrganization {
            links: 600,
            seed: 35,
            access_tokens: vec!["token-globex".into()],
            ..SimOrganization::new("globex")
        }],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("orgs.yml");
    let write = |names: &[&str]| {
        let mut y = String::from("organizations:\n");
        for n in names {
            y.push_str(&format!(
                "  - name: {n}\n    api_url: {}\n    access_token_env: TOKEN_{}\n",
                sim.url(),
                n.to_uppercase()
            ));
        }
        std::fs::write(&cfg, y).unwrap();
    };
    write(&["acme", "globex"]);
    let port = free_port();
    let mut args = fast_args(
        &sim.url(),
        &[
            ("--poll.interval", "1h"),
            ("--webhook.listen-address", &format!("127.0.0.1:{port}")),
            ("--web.enable-lifecycle", ""),
        ],
    );
    args.extend(["--config.file".into(), cfg.display().to_string()]);
    let e = Exporter::start_owned(
        &args,
        &[
            ("QONTO_WEBHOOK_SECRET", SECRET),
            ("TOKEN_ACME", "token-acme"),
            ("TOKEN_GLOBEX", "token-globex"),
        ],
    );
    e.wait_ready(Duration::from_secs(30)).await;
    let base = format!("http://127.0.0.1:{port}/webhooks/qonto");
    let orgs = ["acme", "globex"].map(|n| sim.sim.organization(n).expect("organisation"));
    for o in &orgs {
        o.subscribe_webhook(&format!("{base}/{}", o.name()), SECRET)
            .expect("subscription");
    }
    orgs[0].mutate(Mutation::Pay(4));
    orgs[0].mutate(Mutation::Create(9));
    orgs[1].mutate(Mutation::Cancel(3));
    orgs[1].mutate(Mutation::Create(5));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = parse_metrics(&e.scrape().await);
        let wrong: Vec<String> = orgs
            .iter()
            .flat_map(|o| {
                let truth = status_figures(&common::recount(&o.links_json(), 0, &[]));
                differences(&org_figures(&m, o.name()), &truth)
                    .into_iter()
                    .map(|d| format!("{}: {d}", o.name()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if wrong.is_empty() {
            assert_eq!(
                m.get("qonto_exporter_polls_total{organization=\"acme\"}"),
                Some(&1.0),
                "no poll ran"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not exact:\n{}\n{}",
            wrong.join("\n"),
            e.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two organisations: the bare path routes nowhere.
    let post = |url: String, id: &str| {
        let body = format!(
            r#"{{"id":"{id}","type":"v1/payment-links-connections","data":{{"event":"connection_enabled"}}}}"#
        );
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let sig =
            qonto_exporter::simulator::webhook_signature(SECRET.as_bytes(), t, body.as_bytes());
        async move {
            common::http()
                .post(url)
                .header("content-type", "application/json")
                .header("x-qonto-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(base.clone(), "bare-1").await, 404);
    assert_eq!(post(format!("{base}/globex"), "g-1").await, 200);
    write(&["acme"]);
    let r = common::http()
        .post(e.url("/-/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(post(format!("{base}/globex"), "g-2").await, 404);
    assert_eq!(post(format!("{base}/acme"), "a-1").await, 200);
    assert_eq!(post(base.clone(), "bare-2").await, 200);
    let m = parse_metrics(&e.scrape().await);
    assert!(
        !m.keys().any(|k| k.contains("organization=\"globex\"")),
        "a removed organisation's series leave /metrics"
    );
}
