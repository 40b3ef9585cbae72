//! `qonto-exporter simulate --organizations N`, black-box: one listener, N organisations, each
//! reached with its own fake API key and showing only its own links; absurd counts refused with
//! an error that names the flag.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::BIN;
use common::servers::Daemon;
use serde_json::{Value, json};

/// Starts `simulate` with `args` on a free port; returns the daemon and its base URL.
fn simulate(args: &[&str]) -> (Daemon, String) {
    let argv: Vec<String> = ["simulate", "--listen", "127.0.0.1:0"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect();
    let mut daemon = Daemon::spawn("simulate", Path::new(BIN), &argv);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(url) = daemon
            .logs()
            .lines()
            .find_map(|l| l.strip_prefix("listening on "))
        {
            let url = url.to_owned();
            return (daemon, url);
        }
        daemon.assert_running();
        assert!(Instant::now() < deadline, "simulate did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn get(c: &reqwest::Client, url: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut req = c.get(url);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("a response");
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("a body");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn ids(links: &Value) -> Vec<String> {
    let mut ids: Vec<String> = links
        .as_array()
        .expect("an array")
        .iter()
        .map(|l| l["id"].as_str().expect("an id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_organisations_on_one_listener() {
    let (mut daemon, url) = simulate(&[
        "--organizations",
        "3",
        "--links",
        "250",
        "--seed",
        "5",
        "--evolve-every",
        "off",
    ]);
    let c = common::http();
    let (status, orgs) = get(&c, &format!("{url}/_sim/organizations"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        orgs,
        json!([
            {"name": "org-1", "links": 250},
            {"name": "org-2", "links": 250},
            {"name": "org-3", "links": 250},
        ])
    );
    let mut everyone = HashSet::new();
    for k in 1..=3 {
        let key = format!("org-{k}:secret-{k}");
        let mut seen = Vec::new();
        let mut page = 1;
        loop {
            let (status, v) = get(
                &c,
                &format!("{url}/v2/payment_links?per_page=100&page={page}"),
                Some(&key),
            )
            .await;
            assert_eq!(status, 200, "{key}: {v}");
            seen.extend(ids(&v["payment_links"]));
            match v["meta"]["next_page"].as_u64() {
                Some(n) => page = n,
                None => break,
            }
        }
        seen.sort();
        let (_, own) = get(&c, &format!("{url}/_sim/links?organization=org-{k}"), None).await;
        assert_eq!(seen, ids(&own), "org-{k} sees exactly its own links");
        everyone.extend(seen);
    }
    assert_eq!(everyone.len(), 750, "seeds differ: no link is shared");

    for wrong in ["org-1:secret-2", "org-4:secret-4", "Bearer anything"] {
        let (status, v) = get(&c, &format!("{url}/v2/payment_links"), Some(wrong)).await;
        assert_eq!(status, 401, "{wrong}");
        assert_eq!(v["errors"][0]["code"], "authorization_token_invalid");
    }
    let (status, v) = get(&c, &format!("{url}/_sim/stats?organization=org-9"), None).await;
    assert_eq!(status, 404);
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("org-9")),
        "{v}"
    );
    let (_, log) = get(&c, &format!("{url}/_sim/requests?organization=org-2"), None).await;
    assert_eq!(log["requests"].as_array().map(Vec::len), Some(3));
    assert!(
        daemon.logs().contains("org-K:secret-K"),
        "one line tells how to reach them:\n{}",
        daemon.logs()
    );
    daemon.assert_running();
}

#[test]
fn absurd_organisation_counts_are_refused() {
    for bad in ["0", "1001", "99999999999", "-5", "many"] {
        let out = Command::new(BIN)
            .args(["simulate", "--listen", "127.0.0.1:0"])
            .arg(format!("--organizations={bad}"))
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--organizations") && stderr.contains("from 1 to 1000"),
            "{bad}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{bad}: nothing served");
    }
}
