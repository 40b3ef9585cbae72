//! Secrets never leave the process except in the one header or form field that needs them.
//! The exporter runs with distinctive values for every kind of secret — API key, OAuth client
//! secret, refresh token, static access token, staging token — on the success and the failure
//! paths, at the most verbose log level and in both log formats; the logs, `/metrics`, the
//! landing page and the start-up errors are then searched for every one of them. Tokens the
//! simulated authorization server issues (`sim_at_…`, `sim_rt_…`) are searched too.

mod common;

use std::time::Duration;

use common::{BIN, Exporter, Sim, fast_args, http};
use qonto_exporter::simulator::{Fault, SimConfig, SimOAuth};

const WAIT: Duration = Duration::from_secs(20);
/// Every secret of this file contains it, so one search finds any of them.
const MARK: &str = "S3CR3T";
const API_KEY: &str = "S3CR3T-api-key-4f1c";
const CLIENT_SECRET: &str = "S3CR3T-client-secret-88ab";
const REFRESH: &str = "S3CR3T-refresh-token-0d2e";
const ACCESS: &str = "S3CR3T-access-token-71c3";
const STAGING: &str = "S3CR3T-staging-token-5e90";
/// Prefixes of the tokens the simulator issues.
const ISSUED: [&str; 2] = ["sim_at_", "sim_rt_"];

async fn get_text(url: &str) -> String {
    http()
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// Lets the exporter run a few polls (after `ready`, or refusals), then searches everything
/// it wrote and served.
async fn assert_nothing_leaks(e: &Exporter, what: &str) {
    e.wait_polls(3, WAIT).await;
    let served = [
        ("/metrics", get_text(&e.url("/metrics")).await),
        ("/", get_text(&e.url("/")).await),
        ("/-/ready", get_text(&e.url("/-/ready")).await),
        ("/-/healthy", get_text(&e.url("/-/healthy")).await),
        ("/nowhere", get_text(&e.url("/nowhere")).await),
    ];
    let logs = e.logs();
    assert!(!logs.is_empty(), "{what}: the exporter logged something");
    for (place, text) in served.iter().map(|(p, t)| (*p, t)).chain([("logs", &logs)]) {
        for needle in std::iter::once(MARK).chain(ISSUED) {
            assert!(
                !text.contains(needle),
                "{what}: a secret ({needle}…) appears in {place}:\n{text}"
            );
        }
    }
}

fn start(sim: &Sim, overrides: &[(&str, &str)], envs: &[(&str, &str)]) -> Exporter {
    let mut o = vec![("--log.level", "trace")];
    o.extend_from_slice(overrides);
    Exporter::start_owned(&fast_args(&sim.url(), &o), envs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_and_staging_token_never_leak() {
    let sim = Sim::start(SimConfig {
        api_key: Some(("acme".into(), API_KEY.into())),
        staging_token: Some(STAGING.into()),
        ..SimConfig::default()
    })
    .await;
    let envs = [
        ("QONTO_SECRET_KEY", API_KEY),
        ("QONTO_STAGING_TOKEN", STAGING),
    ];
    let e = start(&sim, &[("--qonto.login", "acme")], &envs);
    e.wait_ready(WAIT).await;
    assert_nothing_leaks(&e, "API key accepted").await;
    drop(e);

    // Refused: a key the API does not know, and then the staging token missing.
    let e = start(
        &sim,
        &[("--qonto.login", "acme")],
        &[
            ("QONTO_SECRET_KEY", "S3CR3T-another-key"),
            ("QONTO_STAGING_TOKEN", STAGING),
        ],
    );
    e.wait_log(&["refused the credentials"], WAIT).await;
    assert_nothing_leaks(&e, "API key refused").await;
    drop(e);
    let e = start(
        &sim,
        &[("--qonto.login", "acme")],
        &[("QONTO_SECRET_KEY", API_KEY)],
    );
    e.wait_log(&["poll failed", "X-Qonto-Staging-Token"], WAIT)
        .await;
    assert_nothing_leaks(&e, "staging token missing").await;
}

fn oauth_sim_config() -> SimConfig {
    SimConfig {
        oauth: Some(SimOAuth {
            access_token_ttl: Duration::from_secs(2),
            grace: Duration::from_secs(1),
            ..SimOAuth::new("client-1", CLIENT_SECRET, REFRESH)
        }),
        ..SimConfig::default()
    }
}

fn oauth_flags<'a>(token_url: &'a str, file: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("--qonto.oauth.client-id", "client-1"),
        ("--qonto.oauth.refresh-token-file", file),
        ("--qonto.oauth.token-url", token_url),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_secrets_never_leak_in_either_log_format() {
    let sim = Sim::start(oauth_sim_config()).await;
    let token_url = format!("{}/oauth2/token", sim.url());
    for format in ["logfmt", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("refresh-token");
        // A fresh authorization server per run: the first refresh token is valid again.
        std::fs::write(&file, REFRESH).unwrap();
        let sim = Sim::start(oauth_sim_config()).await;
        let token_url_run = format!("{}/oauth2/token", sim.url());
        let mut o = oauth_flags(&token_url_run, file.to_str().unwrap()).to_vec();
        o.push(("--log.format", format));
        let e = start(&sim, &o, &[("QONTO_OAUTH_CLIENT_SECRET", CLIENT_SECRET)]);
        e.wait_ready(WAIT).await;
        // A revoked access token on the way: one refresh, one retry.
        sim.sim.inject(Fault::Status {
            code: 401,
            retry_after: None,
            times: 1,
        });
        // Past one access-token lifetime, so tokens rotate at least once more.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert!(sim.sim.stats().token_requests_total >= 2);
        assert_nothing_leaks(&e, &format!("OAuth accepted ({format})")).await;
        if format == "json" {
            let lines = e.log_lines(&[]);
            assert!(
                lines.iter().all(|l| l.starts_with('{')),
                "JSON lines:\n{}",
                e.logs()
            );
        }
    }

    // Refused: an unknown refresh token, then a wrong client secret.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, "S3CR3T-unknown-refresh-token").unwrap();
    let flags = oauth_flags(&token_url, file.to_str().unwrap());
    let e = start(
        &sim,
        &flags,
        &[("QONTO_OAUTH_CLIENT_SECRET", CLIENT_SECRET)],
    );
    e.wait_log(&["refused"], WAIT).await;
    assert_nothing_leaks(&e, "refresh token refused").await;
    drop(e);
    std::fs::write(&file, REFRESH).unwrap();
    let e = start(
        &sim,
        &flags,
        &[("QONTO_OAUTH_CLIENT_SECRET", "S3CR3T-wrong-client-secret")],
    );
    e.wait_log(&["refused"], WAIT).await;
    assert_nothing_leaks(&e, "client secret refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_never_leaks() {
    let sim = Sim::start(SimConfig {
        access_tokens: vec![ACCESS.into()],
        ..SimConfig::default()
    })
    .await;
    let e = start(
        &sim,
        &[("--log.format", "json")],
        &[("QONTO_ACCESS_TOKEN", ACCESS)],
    );
    e.wait_ready(WAIT).await;
    assert_nothing_leaks(&e, "access token accepted").await;
    drop(e);
    let e = start(&sim, &[], &[("QONTO_ACCESS_TOKEN", "S3CR3T-expired-token")]);
    e.wait_log(&["refused the credentials"], WAIT).await;
    assert_nothing_leaks(&e, "access token refused").await;
    drop(e);
    // A token that cannot even go in a header.
    let e = start(
        &sim,
        &[],
        &[("QONTO_ACCESS_TOKEN", "S3CR3T-bad\u{7f}-token")],
    );
    e.wait_log(&["not allowed in a header"], WAIT).await;
    assert_nothing_leaks(&e, "access token not a header value").await;
}

/// Arguments and environment of one run.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

/// Start-up errors with secrets set: stderr names flags and variables, never values.
#[test]
fn startup_errors_never_print_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, REFRESH).unwrap();
    let file = file.to_str().unwrap();
    let cases: [Case; 5] = [
        (
            &["--qonto.login", "acme"],
            &[
                ("QONTO_SECRET_KEY", API_KEY),
                ("QONTO_ACCESS_TOKEN", ACCESS),
            ],
        ),
        (&["--demo"], &[("QONTO_OAUTH_CLIENT_SECRET", CLIENT_SECRET)]),
        (
            &[
                "--qonto.oauth.client-id",
                "c",
                "--qonto.oauth.refresh-token-file",
                file,
            ],
            &[
                ("QONTO_OAUTH_CLIENT_SECRET", CLIENT_SECRET),
                ("QONTO_SECRET_KEY", API_KEY),
            ],
        ),
        (&[], &[("QONTO_SECRET_KEY", API_KEY)]),
        (
            &["--qonto.login", "acme", "--web.listen-address", "nowhere"],
            &[
                ("QONTO_SECRET_KEY", API_KEY),
                ("QONTO_STAGING_TOKEN", STAGING),
            ],
        ),
    ];
    for (args, envs) in cases {
        let mut cmd = std::process::Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("QONTO_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(args)
            .args(["--log.level", "trace"])
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains(MARK),
            "{args:?} {envs:?} printed a secret:\n{all}"
        );
    }
}

/// A secret file far larger than any credential (a wrong path: a log, a dump) is refused at
/// start with one line naming the file, read no further than 64 KiB, and quoted nowhere.
#[test]
fn an_oversized_secret_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret-key");
    std::fs::write(&file, API_KEY.repeat((8 << 20) / API_KEY.len())).unwrap();
    let file = file.to_str().unwrap();
    let mut e = Exporter::start(
        &[
            "--qonto.api-url",
            "http://127.0.0.1:9",
            "--qonto.login",
            "acme",
            "--qonto.secret-key-file",
            file,
        ],
        &[],
    );
    let (code, logs) = e.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{logs}");
    assert!(
        logs.contains(&format!("{file} holds more than 64 KiB")),
        "{logs}"
    );
    assert_eq!(logs.lines().count(), 1, "{logs}");
    assert!(!logs.contains(MARK), "{logs}");
}
