//! The simulator's webhooks over real loopback HTTP: subscriptions through the API, signed
//! deliveries to a wiremock receiver whose signatures are recomputed here independently, retries
//! after a 500, and the fault switches doing what they say.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use common::{Sim, http};
use qonto_exporter::simulator::{Mutation, SimConfig, WebhookFaults, WebhookStats};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "test-token";
/// 40 characters: a valid secret.
const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";

async fn sim() -> Sim {
    Sim::start(SimConfig {
        access_tokens: vec![TOKEN.into()],
        ..SimConfig::default()
    })
    .await
}

/// A receiver answering `status` to everything.
async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

async fn subscribe(sim: &Sim, body: Value) -> (u16, Value) {
    let resp = http()
        .post(format!("{}/v2/webhook_subscriptions", sim.url()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn subscribe_ok(sim: &Sim, server: &MockServer) -> String {
    let (status, body) = subscribe(
        sim,
        json!({"callback_url": format!("{}/hook", server.uri()), "types": ["v1/payment-links", "v1/payment-links-connections"], "secret": SECRET}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["webhook_subscription"].get("secret").is_none(),
        "a given secret is never echoed: {body}"
    );
    body["webhook_subscription"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn wait_requests(server: &MockServer, n: usize, within: Duration) -> Vec<Request> {
    let deadline = Instant::now() + within;
    loop {
        let got = server.received_requests().await.unwrap_or_default();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} deliveries, got {}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_stats(sim: &Sim, ok: impl Fn(&WebhookStats) -> bool) -> WebhookStats {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = sim.sim.webhook_stats();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "stats never got there: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HMAC-SHA256 of "{t}.{body}", hex: computed here, not with the simulator's code.
fn hmac_hex(secret: &str, t: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    ring::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks the signature of `r` with `secret`; returns its `t`.
fn verify(r: &Request, secret: &str) -> u64 {
    let header = r
        .headers
        .get("x-qonto-signature")
        .expect("signed")
        .to_str()
        .unwrap();
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header {header:?}"));
    assert_eq!(v1, hmac_hex(secret, t, &r.body), "signature of {t}");
    assert_eq!(
        r.headers.get("content-type").unwrap().to_str().unwrap(),
        "application/json"
    );
    t.parse().unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn json_of(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn every_change_is_a_signed_delivery_whose_data_is_the_link() {
    let sim = sim().await;
    // Nothing is made before a subscription exists.
    sim.sim.mutate(Mutation::Create(1));
    assert_eq!(sim.sim.webhook_stats().sent, 0);
    let server = receiver(200).await;
    let sub = subscribe_ok(&sim, &server).await;
    sim.sim.mutate(Mutation::Create(2));
    sim.sim.mutate(Mutation::Pay(3));
    let got = wait_requests(&server, 5, Duration::from_secs(10)).await;
    let links = sim.sim.links_json();
    let mut ids = HashSet::new();
    let mut last_updated = String::new();
    let mut events = Vec::new();
    for r in &got {
        let t = verify(r, SECRET);
        assert!(t.abs_diff(now()) < 60, "t={t}");
        let e = json_of(r);
        assert!(
            ids.insert(e["id"].as_str().unwrap().to_owned()),
            "ids unique"
        );
        assert_eq!(e["id"].as_str().unwrap().len(), 36);
        assert_eq!(e["subscription_id"], sub.as_str());
        assert_eq!(e["type"], "v1/payment-links");
        for field in ["organization_id", "membership_id", "created_at"] {
            assert!(e[field].is_string(), "{field}: {e}");
        }
        let d = &e["data"];
        let link = links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == d["payment_link_id"])
            .unwrap_or_else(|| panic!("the link of {d}"));
        for (ev, li) in [
            ("status", "status"),
            ("resource_type", "resource_type"),
            ("created_at", "created_at"),
            ("expired_at", "expiration_date"),
        ] {
            assert_eq!(d[ev], link[li], "{ev}");
        }
        assert_eq!(d["amount"], link["amount"]);
        assert_eq!(
            d["potential_payment_methods"],
            link["potential_payment_methods"]
        );
        // Microseconds, and strictly increasing (RFC 3339 in UTC sorts as text).
        let updated = d["updated_at"].as_str().unwrap().to_owned();
        assert_eq!(
            updated.len(),
            "2026-01-01T00:00:00.000000Z".len(),
            "{updated}"
        );
        assert!(updated > last_updated, "{updated} after {last_updated}");
        last_updated = updated;
        events.push(d["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(events.iter().filter(|e| *e == "created").count(), 2);
    assert_eq!(events.iter().filter(|e| *e == "updated").count(), 3);
    let s = wait_stats(&sim, |s| s.delivered == 5).await;
    assert_eq!((s.sent, s.failed_attempts, s.subscriptions), (5, 0, 1));
}

#[tokio::test]
async fn a_failed_delivery_is_retried_and_signed_again() {
    let sim = sim().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&server)
        .await;
    subscribe_ok(&sim, &server).await;
    sim.sim.mutate(Mutation::Create(1));
    let got = wait_requests(&server, 2, Duration::from_secs(10)).await;
    assert_eq!(got[0].body, got[1].body, "the same event");
    verify(&got[0], SECRET);
    verify(&got[1], SECRET);
    let s = wait_stats(&sim, |s| s.delivered == 1).await;
    assert_eq!((s.failed_attempts, s.retried, s.abandoned), (1, 1, 0));
}

#[tokio::test]
async fn an_unreachable_callback_does_not_block_the_api() {
    let sim = sim().await;
    // A port nobody listens on.
    let port = common::free_port();
    let (status, body) = subscribe(
        &sim,
        json!({"callback_url": format!("http://127.0.0.1:{port}/hook"), "types": ["v1/payment-links"], "secret": SECRET}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let started = Instant::now();
    for _ in 0..50 {
        sim.sim.mutate(Mutation::Step);
        sim.sim.mutate(Mutation::Create(1));
    }
    let resp = http()
        .get(format!("{}/v2/payment_links", sim.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_stats(&sim, |s| s.failed_attempts >= 2).await;
}

#[tokio::test]
async fn fault_switches_do_what_they_say() {
    let sim = sim().await;
    let server = receiver(200).await;
    subscribe_ok(&sim, &server).await;
    let faults = |v: Value| {
        let url = format!("{}/_sim/webhooks", sim.url());
        async move {
            http()
                .post(url)
                .header("content-type", "application/json")
                .body(v.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Refused: not probabilities, unknown switch.
    assert_eq!(faults(json!({"drop": 1.5})).await, 400);
    assert_eq!(faults(json!({"drop": -1})).await, 400);
    assert_eq!(faults(json!({"explode": 1})).await, 400);

    // drop: never sent.
    assert_eq!(faults(json!({"drop": 1})).await, 204);
    sim.sim.mutate(Mutation::Create(3));
    wait_stats(&sim, |s| s.dropped == 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.received_requests().await.unwrap().is_empty());

    // duplicate: each event twice, same id.
    assert_eq!(faults(json!({"duplicate": 1})).await, 204);
    sim.sim.mutate(Mutation::Create(2));
    let got = wait_requests(&server, 4, Duration::from_secs(10)).await;
    let ids: Vec<String> = got
        .iter()
        .map(|r| json_of(r)["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], ids[3]);
    assert_ne!(ids[0], ids[2]);
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    // reorder: each held event is sent after the next one.
    sim.sim
        .set_webhook_faults(WebhookFaults {
            reorder: 1.0,
            ..WebhookFaults::default()
        })
        .unwrap();
    sim.sim.mutate(Mutation::Create(4));
    let got = wait_requests(&server, 4, Duration::from_secs(10)).await;
    let updated: Vec<String> = got
        .iter()
        .map(|r| {
            json_of(r)["data"]["updated_at"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(updated[0] > updated[1], "{updated:?}");
    assert!(updated[2] > updated[3], "{updated:?}");
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    // stale: t ten minutes in the past, still correctly signed.
    sim.sim
        .set_webhook_faults(WebhookFaults {
            stale: 1.0,
            ..WebhookFaults::default()
        })
        .unwrap();
    assert!(
        sim.sim
            .set_webhook_faults(WebhookFaults {
                stale: f64::NAN,
                ..WebhookFaults::default()
            })
            .is_err()
    );
    sim.sim.mutate(Mutation::Create(1));
    let got = wait_requests(&server, 1, Duration::from_secs(10)).await;
    let t = verify(&got[0], SECRET);
    assert!(now() - t >= 590, "t={t}");

    let stats: Value = http()
        .get(format!("{}/_sim/webhooks", sim.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(stats["faults"]["stale"], 1.0);
    assert_eq!(stats["stats"]["dropped"], 3);
    assert_eq!(stats["stats"]["duplicated"], 2);
    assert!(stats["stats"]["reordered"].as_u64().unwrap() >= 2);
    assert!(stats["stats"]["stale"].as_u64().unwrap() >= 1);
    assert!(!stats.to_string().contains(SECRET));
}

#[tokio::test]
async fn connection_changes_are_connection_events() {
    let sim = sim().await;
    let server = receiver(200).await;
    subscribe_ok(&sim, &server).await;
    let set = |status: &str| {
        let url = format!("{}/_sim/connection", sim.url());
        let body = json!({ "status": status });
        async move {
            http()
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(set("disabled").await, 204);
    assert_eq!(set("disabled").await, 204); // no change, no event
    assert_eq!(set("enabled").await, 204);
    let got = wait_requests(&server, 2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    let events: Vec<Value> = got.iter().map(json_of).collect();
    assert_eq!(events[0]["type"], "v1/payment-links-connections");
    assert_eq!(events[0]["data"]["event"], "connection_disabled");
    assert_eq!(events[1]["data"]["event"], "connection_enabled");
}

#[tokio::test]
async fn subscriptions_are_validated_listed_and_deleted() {
    let sim = sim().await;
    let hook = "https://hooks.example.com/qonto";
    let types = json!(["v1/payment-links"]);
    for (body, parameter) in [
        (
            json!({"callback_url": "http://hooks.example.com/q", "types": types}),
            "callback_url",
        ),
        (
            json!({"callback_url": format!("https://e.com/{}", "a".repeat(600)), "types": types}),
            "callback_url",
        ),
        (
            json!({"callback_url": hook, "types": types, "secret": "s".repeat(31)}),
            "secret",
        ),
        (
            json!({"callback_url": hook, "types": types, "secret": "s".repeat(129)}),
            "secret",
        ),
        (json!({"callback_url": hook, "types": []}), "types"),
        (
            json!({"callback_url": hook, "types": types, "description": "d".repeat(300)}),
            "description",
        ),
    ] {
        let (status, answer) = subscribe(&sim, body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(
            answer["errors"][0]["source"]["parameter"], parameter,
            "{answer}"
        );
        assert!(!answer.to_string().contains("ssssssssss"), "{answer}");
    }
    // Not an object, or a secret of the wrong type: 422 without echoing the value.
    let (status, answer) = subscribe(
        &sim,
        json!({"callback_url": hook, "types": types, "secret": 12345678901234567890u64}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        !answer.to_string().contains("12345678901234567890"),
        "{answer}"
    );

    // Without a secret, the simulator makes one and shows it once.
    let (status, made) = subscribe(
        &sim,
        json!({"callback_url": hook, "types": types, "description": "ops"}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let s = &made["webhook_subscription"];
    let secret = s["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 64);
    assert_eq!(s["callback_url"], hook);
    assert_eq!(s["types"], types);
    assert_eq!(s["description"], "ops");
    let id = s["id"].as_str().unwrap();

    let c = http();
    let list: Value = c
        .get(format!("{}/v2/webhook_subscriptions", sim.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(list["webhook_subscriptions"][0]["id"], id);
    assert!(!list.to_string().contains(secret));
    let one = c
        .get(format!("{}/v2/webhook_subscriptions/{id}", sim.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert!(!one.text().await.unwrap().contains(secret));
    // Authenticated like the rest of the API.
    let anonymous = c
        .get(format!("{}/v2/webhook_subscriptions", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = c
        .delete(format!("{}/v2/webhook_subscriptions/{id}", sim.url()))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let delete = |id: String| {
        let url = format!("{}/v2/webhook_subscriptions/{id}", sim.url());
        let c = c.clone();
        async move {
            c.delete(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(delete(id.to_owned()).await, 204);
    assert_eq!(delete(id.to_owned()).await, 404);
    assert!(sim.sim.webhook_subscriptions().is_empty());
}

#[tokio::test]
async fn the_in_process_subscription_delivers_like_the_api() {
    let sim = sim().await;
    let server = receiver(200).await;
    assert!(
        sim.sim
            .subscribe_webhook("http://example.com/x", SECRET)
            .is_err()
    );
    assert!(
        sim.sim
            .subscribe_webhook(&format!("{}/hook", server.uri()), "short")
            .is_err()
    );
    let sub = sim
        .sim
        .subscribe_webhook(&format!("{}/hook", server.uri()), SECRET)
        .unwrap();
    assert_eq!(sim.sim.webhook_subscriptions(), vec![sub.clone()]);
    sim.sim.mutate(Mutation::Expire(1));
    let got = wait_requests(&server, 1, Duration::from_secs(10)).await;
    verify(&got[0], SECRET);
    let e = json_of(&got[0]);
    assert_eq!(e["subscription_id"], sub.id.as_str());
    assert_eq!(e["data"]["status"], "expired");
    assert_eq!(e["data"]["event"], "updated");
}

#[tokio::test]
async fn simulate_subscribes_at_start_from_its_flags() {
    use common::BIN;
    use common::servers::Daemon;
    let server = receiver(200).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let args: Vec<String> = [
        "simulate",
        "--listen",
        "127.0.0.1:0",
        "--links",
        "10",
        "--evolve-every",
        "off",
        "--webhook-url",
        &format!("{}/hook", server.uri()),
        "--webhook-secret-file",
        secret_file.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut daemon = Daemon::spawn("simulate", std::path::Path::new(BIN), &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Some(u) = daemon
            .logs()
            .lines()
            .find_map(|l| l.strip_prefix("listening on "))
        {
            break u.to_owned();
        }
        daemon.assert_running();
        assert!(Instant::now() < deadline, "simulate did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = http()
        .post(format!("{url}/_sim/mutate"))
        .body(r#"{"kind":"create","count":1}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let got = wait_requests(&server, 1, Duration::from_secs(10)).await;
    verify(&got[0], SECRET);
    assert_eq!(json_of(&got[0])["data"]["event"], "created");
    assert!(!daemon.logs().contains(SECRET));
}

#[tokio::test]
async fn a_full_queue_drops_its_oldest_events_and_counts_them() {
    use qonto_exporter::simulator::WEBHOOK_QUEUE_CAPACITY;
    let sim = sim().await;
    // Nobody listens: nothing is delivered, and the API never waits for the deliveries.
    let port = common::free_port();
    sim.sim
        .subscribe_webhook(&format!("http://127.0.0.1:{port}/hook"), SECRET)
        .unwrap();
    let extra = 500;
    let started = Instant::now();
    sim.sim
        .mutate(Mutation::Create(WEBHOOK_QUEUE_CAPACITY + extra));
    assert!(started.elapsed() < Duration::from_secs(20));
    let s = sim.sim.webhook_stats();
    assert_eq!(s.sent, (WEBHOOK_QUEUE_CAPACITY + extra) as u64);
    // Made in one change, under one lock: the task could take none before the queue filled.
    assert_eq!(s.overflowed, extra as u64);
}
