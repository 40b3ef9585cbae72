//! Load and latency for the webhook receiver (used by `scripts/bench-webhooks`; not a test).
//!
//! `webhook_load throughput URL SECRET_FILE EVENTS CONCURRENCY [RATE]`: posts EVENTS signed events
//! (each a new open link) over CONCURRENCY keep-alive connections, at RATE events a second if
//! given (else as fast as answered); prints `events_per_second=… ok=… refused=…`.
//!
//! `webhook_load latency URL SECRET_FILE METRICS_URL EVENTS`: posts one event at a time, each a
//! new open `Basket` link in `GBP`, and reads METRICS_URL every 2 ms until its count shows it;
//! prints `p50_ms=… p99_ms=… max_ms=…` (receipt to visible on `/metrics`).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

fn body(n: u64, currency: &str, resource_type: &str) -> String {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!(
        r#"{{"id":"bench-{n}-{pid}","subscription_id":"s","organization_id":"o","membership_id":"m","type":"v1/payment-links","created_at":"{now}","data":{{"event":"created","payment_link_id":"bench-link-{n}-{pid}","status":"open","amount":{{"value":"1.00","currency":"{currency}"}},"resource_type":"{resource_type}","expired_at":"2099-01-01T00:00:00Z","created_at":"{now}","updated_at":"{now}"}}}}"#,
        pid = std::process::id()
    )
}

fn sign(secret: &[u8], body: &str) -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, format!("{t}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

async fn post(client: &reqwest::Client, url: &str, secret: &[u8], body: String) -> bool {
    let sig = sign(secret, &body);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-qonto-signature", sig)
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The value of the open GBP Basket links' count in an exposition, if present.
fn open_gbp(text: &str) -> u64 {
    text.lines()
        .find(|l| {
            l.starts_with("qonto_payment_links{")
                && l.contains("status=\"open\"")
                && l.contains("currency=\"GBP\"")
                && l.contains("resource_type=\"Basket\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: webhook_load throughput URL SECRET_FILE EVENTS CONCURRENCY [RATE] | latency URL SECRET_FILE METRICS_URL EVENTS";
    let (Some(mode), Some(url), Some(file)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secret = std::fs::read_to_string(file).expect("secret file");
    let secret = secret
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .as_bytes()
        .to_vec();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let num = |i: usize| -> u64 {
        args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            eprintln!("{usage}");
            std::process::exit(2)
        })
    };
    match mode.as_str() {
        "throughput" => {
            let (events, concurrency) = (num(4), num(5).max(1));
            // Optional pace (events per second); unpaced without it.
            let rate = args
                .get(6)
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|r| *r > 0.0);
            let next = Arc::new(AtomicU64::new(0));
            let ok = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
                let (next, ok) = (next.clone(), ok.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= events {
                            break;
                        }
                        if let Some(rate) = rate {
                            let at = start + Duration::from_secs_f64(n as f64 / rate);
                            tokio::time::sleep_until(at.into()).await;
                        }
                        if post(&client, &url, &secret, body(n, "EUR", "Basket")).await {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let secs = start.elapsed().as_secs_f64();
            let ok = ok.load(Ordering::Relaxed);
            println!(
                "events={events} seconds={secs:.2} events_per_second={:.0} ok={ok} refused={}",
                events as f64 / secs,
                events - ok
            );
        }
        "latency" => {
            let metrics = args.get(4).cloned().unwrap_or_default();
            let events = num(5);
            let read = || async {
                match client.get(&metrics).send().await {
                    Ok(r) => open_gbp(&r.text().await.unwrap_or_default()),
                    Err(_) => 0,
                }
            };
            let mut seen = read().await;
            let mut lat = Vec::new();
            for n in 0..events {
                let sent = Instant::now();
                if !post(&client, url, &secret, body(1_000_000 + n, "GBP", "Basket")).await {
                    eprintln!("event {n} refused");
                    continue;
                }
                loop {
                    let now = read().await;
                    if now > seen {
                        seen = now;
                        lat.push(sent.elapsed());
                        break;
                    }
                    if sent.elapsed() > Duration::from_secs(10) {
                        eprintln!("event {n} not visible within 10 s");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                // Events arrive at random moments relative to the republish spacing.
                tokio::time::sleep(Duration::from_millis(37 + (n % 7) * 53)).await;
            }
            lat.sort();
            let q = |p: f64| {
                lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
                    .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
            };
            println!(
                "events={} visible={} p50_ms={:.0} p99_ms={:.0} max_ms={:.0}",
                events,
                lat.len(),
                q(0.5),
                q(0.99),
                q(1.0)
            );
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
