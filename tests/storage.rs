//! `--storage.path`: a restart serves the last complete poll's figures at once, with their true
//! age, and its first poll is incremental; a state file that cannot be used costs one warning
//! and a full poll, never a crash; an unusable directory is a start-up error.

mod common;

use std::time::Duration;

use common::{Exporter, Sim, business, parse_metrics};
use qonto_exporter::simulator::SimConfig;

fn args(sim: &Sim, dir: &std::path::Path) -> Vec<String> {
    [
        "--qonto.api-url",
        &sim.url(),
        "--poll.interval",
        "300ms",
        "--poll.full-resync-interval",
        "1h",
        "--qonto.max-requests-per-second",
        "1000",
        "--storage.path",
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const TOKEN: [(&str, &str); 1] = [("QONTO_ACCESS_TOKEN", "t")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_the_saved_figures_at_once_and_polls_incrementally() {
    // Every request takes 300 ms, so a restarted exporter's first poll cannot be over before
    // the first scrape: what that scrape shows comes from the state file.
    let sim = Sim::start(SimConfig {
        links: 3000,
        seed: 31,
        latency: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = Exporter::start_owned(&args(&sim, dir.path()), &TOKEN);
    first.wait_ready(Duration::from_secs(60)).await;
    let m = first
        .wait_until("two complete polls", Duration::from_secs(60), |m| {
            m.get("qonto_exporter_polls_total")
                .is_some_and(|v| *v >= 2.0)
                && m["qonto_exporter_poll_failures_total"] == 0.0
        })
        .await;
    assert_eq!(m["qonto_exporter_snapshot_restored"], 0.0);
    let saved = business(&first.scrape().await);
    let saved_at = first
        .metric("qonto_exporter_last_success_timestamp_seconds")
        .await;
    assert!(first.terminate().success());
    assert!(dir.path().join("qonto-exporter.state").exists());

    let second = Exporter::start_owned(&args(&sim, dir.path()), &TOKEN);
    second.wait_ready(Duration::from_secs(10)).await;
    let text = second.scrape().await;
    let m = parse_metrics(&text);
    assert_eq!(
        m["qonto_exporter_snapshot_restored"],
        1.0,
        "{}",
        second.logs()
    );
    assert_eq!(
        business(&text),
        saved,
        "the saved figures, served before any poll ends"
    );
    let last = m["qonto_exporter_last_success_timestamp_seconds"];
    assert!(
        (last - saved_at).abs() < 1.0,
        "their true age: {last} vs {saved_at}"
    );
    assert_eq!(
        m["qonto_up"], 0.0,
        "no poll of this process has completed yet"
    );

    // The first poll of the new process starts from the saved memory: no full walk.
    let m = second
        .wait_until("a poll of the new process", Duration::from_secs(60), |m| {
            m.get("qonto_exporter_snapshot_restored") == Some(&0.0)
                && m.get("qonto_up") == Some(&1.0)
        })
        .await;
    assert_eq!(
        m["qonto_exporter_full_walks_total"],
        0.0,
        "{}",
        second.logs()
    );
    assert_eq!(m["qonto_up"], 1.0);
    assert!(
        m["qonto_exporter_last_poll_requests"] <= 15.0,
        "incremental price: {}",
        m["qonto_exporter_last_poll_requests"]
    );
    assert_eq!(
        business(&second.scrape().await),
        saved,
        "frozen data: same figures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_file_is_reported_once_and_a_full_poll_follows() {
    let sim = Sim::start(SimConfig {
        links: 500,
        seed: 32,
        ..SimConfig::default()
    })
    .await;
    let file = |dir: &std::path::Path| dir.join("qonto-exporter.state");
    // A good file written for another API URL, then bad bytes of every kind.
    let foreign = tempfile::tempdir().unwrap();
    {
        let other = Sim::start(SimConfig {
            links: 10,
            seed: 1,
            ..SimConfig::default()
        })
        .await;
        let e = Exporter::start_owned(&args(&other, foreign.path()), &TOKEN);
        e.wait_polls(2, Duration::from_secs(30)).await;
    }
    let good = std::fs::read(file(foreign.path())).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("foreign", good.clone()),
        (
            "from the future",
            rewrite(&good, |v| {
                v["poll"]["finished_at_ms"] = 32_503_680_000_000u64.into()
            }),
        ),
        (
            "last full walk in the future",
            rewrite(
                &good,
                |v| v["memory"]["last_full"] = serde_json::json!({"secs_since_epoch": 32_503_680_000u64, "nanos_since_epoch": 0}),
            ),
        ),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("corrupt", good.iter().map(|b| b ^ 0xa5).collect()),
        ("empty", Vec::new()),
        ("not gzip", b"{\"format\":1}".to_vec()),
    ];
    for (what, bytes) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(file(dir.path()), &bytes).unwrap();
        let e = Exporter::start_owned(&args(&sim, dir.path()), &TOKEN);
        let m = e.wait_polls(2, Duration::from_secs(30)).await;
        assert_eq!(
            m["qonto_exporter_full_walks_total"], 1.0,
            "{what}: one full poll"
        );
        assert_eq!(m["qonto_exporter_poll_failures_total"], 0.0, "{what}");
        assert_eq!(
            e.log_lines(&["state file ignored"]).len(),
            1,
            "{what}: one warning\n{}",
            e.logs()
        );
        // The bad file was replaced by a good one.
        assert_ne!(std::fs::read(file(dir.path())).unwrap(), bytes, "{what}");
    }
}

/// The state file's JSON changed by `edit`, compressed again.
fn rewrite(gz: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut json)
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    edit(&mut v);
    let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    out.write_all(&serde_json::to_vec(&v).unwrap()).unwrap();
    out.finish().unwrap()
}

#[test]
fn an_unusable_storage_directory_is_a_start_up_error() {
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "--qonto.api-url",
            "http://127.0.0.1:9",
            "--web.listen-address",
            "127.0.0.1:0",
            "--storage.path",
            not_a_dir.path().to_str().unwrap(),
        ])
        .env("QONTO_ACCESS_TOKEN", "t")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--storage.path"), "{stderr}");
}

#[test]
fn demo_refuses_a_storage_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "--demo",
            "--web.listen-address",
            "127.0.0.1:0",
            "--storage.path",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--storage.path") && stderr.contains("--demo"),
        "{stderr}"
    );
}
