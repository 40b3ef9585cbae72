//! Authentication against the simulator's real HTTP endpoints: the OAuth refresh flow with
//! rotation persisted to the refresh-token file and a restart from it, a refused refresh token
//! reported once and never looped, a 401 answered by one refresh, the `login:secret` API key
//! header, and the sandbox's `X-Qonto-Staging-Token`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Exporter, Sim, fast_args, sim_figures, status_figures};
use qonto_exporter::simulator::{Fault, SimConfig, SimOAuth};

const WAIT: Duration = Duration::from_secs(20);
const CLIENT_ID: &str = "client-abc";
const CLIENT_SECRET: &str = "client-secret-xyz";
const REFRESH_TOKEN: &str = "refresh-token-0";

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// A simulator whose authorization server issues 2 s access tokens from `REFRESH_TOKEN`, and
/// lets a used refresh token live 1 s. The exporter believes an access token lives at least a
/// minute (`MIN_TOKEN_LIFETIME`), so each one dies early: the API's 401 costs one refresh and one
/// retry, and rotates the refresh token.
async fn oauth_sim() -> Sim {
    Sim::start(SimConfig {
        links: 150,
        seed: 5,
        oauth: Some(SimOAuth {
            access_token_ttl: Duration::from_secs(2),
            grace: Duration::from_secs(1),
            ..SimOAuth::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)
        }),
        ..SimConfig::default()
    })
    .await
}

fn oauth_exporter(sim: &Sim, file: &Path) -> Exporter {
    let token_url = format!("{}/oauth2/token", sim.url());
    let args = fast_args(
        &sim.url(),
        &[
            ("--qonto.oauth.client-id", CLIENT_ID),
            ("--qonto.oauth.refresh-token-file", file.to_str().unwrap()),
            ("--qonto.oauth.token-url", &token_url),
        ],
    );
    Exporter::start_owned(&args, &[("QONTO_OAUTH_CLIENT_SECRET", CLIENT_SECRET)])
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_rotation_is_persisted_and_a_restart_resumes_from_the_file() {
    let sim = oauth_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, format!("{REFRESH_TOKEN}\n")).unwrap();

    let mut e = oauth_exporter(&sim, &file);
    e.wait_ready(WAIT).await;
    assert_ne!(
        read(&file),
        REFRESH_TOKEN,
        "the first refresh rotates the token"
    );
    // Access tokens live 2 s: within 10 s the API refuses at least two more of them, and each
    // refusal costs one refresh, which writes the new refresh token.
    let mut tokens = vec![read(&file)];
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokens.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no rotation; logs:\n{}",
            e.logs()
        );
        let now = read(&file);
        if tokens.last() != Some(&now) {
            tokens.push(now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tokens.iter().all(|t| t.starts_with("sim_rt_")),
        "{tokens:?}"
    );
    let m = e.metrics().await;
    assert_eq!(get(&m, "qonto_up"), 1.0);
    assert_eq!(get(&m, "qonto_exporter_poll_failures_total"), 0.0);
    assert_eq!(get(&m, "qonto_exporter_oauth_refresh_failures_total"), 0.0);
    let refreshes = get(&m, "qonto_exporter_oauth_refreshes_total");
    assert!(refreshes >= 3.0);
    // Every 401 was answered by a refresh (the first refresh needed none) and a retry that
    // succeeded: no poll failed.
    let unauthorized = sim.sim.stats().by_code.get("401").copied().unwrap_or(0) as f64;
    assert!(
        unauthorized >= 1.0 && unauthorized <= refreshes,
        "{unauthorized} 401s for {refreshes} refreshes"
    );
    assert_eq!(get(&m, "qonto_exporter_oauth_refresh_token_unsaved"), 0.0);
    assert_eq!(e.terminate().code(), Some(0));
    // No temporary file left beside the token.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // The old tokens are dead by now (1 s grace): the restart must use the file's newest one.
    let last = read(&file);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token_requests = sim.sim.stats().token_requests_total;
    let e = oauth_exporter(&sim, &file);
    e.wait_ready(WAIT).await;
    assert_ne!(read(&file), last, "the restart rotated the file's token");
    assert!(sim.sim.stats().token_requests_total > token_requests);
    let want = sim_figures(&sim.sim);
    assert_eq!(status_figures(&e.metrics().await), want);
    assert_eq!(e.metric("qonto_exporter_credentials_refused").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refresh_token_is_reported_once_and_not_retried() {
    let sim = oauth_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, "a-token-the-server-never-issued\n").unwrap();
    let e = oauth_exporter(&sim, &file);
    let m = e
        .wait_until("credentials refused", WAIT, |m| {
            get(m, "qonto_exporter_credentials_refused") == 1.0
        })
        .await;
    assert_eq!(get(&m, "qonto_up"), 0.0);
    // Ten more polls: the refused token is not presented again, and no API request is sent
    // without an access token.
    e.wait_polls(10, WAIT).await;
    let stats = sim.sim.stats();
    assert_eq!(stats.token_requests_total, 1, "{stats:?}");
    assert_eq!(stats.list_requests_total, 0, "{stats:?}");
    let warnings = e.log_lines(&["level=warn", "refused"]);
    assert_eq!(warnings.len(), 1, "one warning:\n{}", e.logs());
    // The advice is given once, and it is the right one.
    assert_eq!(
        warnings[0].matches("oauth-login").count(),
        1,
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("invalid_grant"), "{}", warnings[0]);
    assert!(!warnings[0].contains("client secret"), "{}", warnings[0]);
    assert_eq!(read(&file), "a-token-the-server-never-issued");
    assert_eq!(
        e.metric("qonto_exporter_oauth_refresh_failures_total")
            .await,
        1.0
    );

    // A new token written to the file (as `oauth-login` does) is picked up without a restart.
    std::fs::write(&file, format!("{REFRESH_TOKEN}\n")).unwrap();
    let m = e
        .wait_until("accepted again", WAIT, |m| get(m, "qonto_up") == 1.0)
        .await;
    assert_eq!(get(&m, "qonto_exporter_credentials_refused"), 0.0);
    assert_eq!(status_figures(&m), sim_figures(&sim.sim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_secret_is_reported_once_and_not_retried() {
    let sim = oauth_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, REFRESH_TOKEN).unwrap();
    let token_url = format!("{}/oauth2/token", sim.url());
    let args = fast_args(
        &sim.url(),
        &[
            ("--qonto.oauth.client-id", CLIENT_ID),
            ("--qonto.oauth.refresh-token-file", file.to_str().unwrap()),
            ("--qonto.oauth.token-url", &token_url),
        ],
    );
    let e = Exporter::start_owned(&args, &[("QONTO_OAUTH_CLIENT_SECRET", "not-the-secret")]);
    e.wait_until("credentials refused", WAIT, |m| {
        get(m, "qonto_exporter_credentials_refused") == 1.0
    })
    .await;
    e.wait_polls(10, WAIT).await;
    assert_eq!(sim.sim.stats().token_requests_total, 1);
    let warnings = e.log_lines(&["level=warn", "refused"]);
    assert_eq!(warnings.len(), 1, "one warning:\n{}", e.logs());
    assert!(warnings[0].contains("invalid_client"), "{}", warnings[0]);
    // The client is refused, not the refresh token: no oauth-login advice.
    assert!(
        warnings[0].contains("check the client id and client secret"),
        "{}",
        warnings[0]
    );
    assert!(!warnings[0].contains("oauth-login"), "{}", warnings[0]);
    assert!(!warnings[0].contains("expired"), "{}", warnings[0]);
}

/// An access token the API refuses early (revoked) costs one refresh and one retry, not a
/// failed poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_is_answered_by_one_refresh_and_one_retry() {
    let sim = oauth_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, REFRESH_TOKEN).unwrap();
    let e = oauth_exporter(&sim, &file);
    e.wait_ready(WAIT).await;
    let refreshes = e.metric("qonto_exporter_oauth_refreshes_total").await;
    sim.sim.inject(Fault::Status {
        code: 401,
        retry_after: None,
        times: 1,
    });
    let m = e
        .wait_until("the 401 answered", WAIT, |m| {
            get(m, r#"qonto_exporter_api_requests_total{code="401"}"#) == 1.0
        })
        .await;
    e.wait_polls(2, WAIT).await;
    let m2 = e.metrics().await;
    assert!(get(&m2, "qonto_exporter_oauth_refreshes_total") > refreshes);
    assert_eq!(get(&m2, "qonto_exporter_poll_failures_total"), 0.0, "{m:?}");
    assert_eq!(get(&m2, "qonto_exporter_credentials_refused"), 0.0);
    assert!(e.log_lines(&["refused"]).is_empty(), "{}", e.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_sent_as_login_colon_secret() {
    let sim = Sim::start(SimConfig {
        links: 150,
        seed: 5,
        api_key: Some(("acme-sas-1234".into(), "api-secret-key".into())),
        ..SimConfig::default()
    })
    .await;
    let args = fast_args(&sim.url(), &[("--qonto.login", "acme-sas-1234")]);
    let e = Exporter::start_owned(&args, &[("QONTO_SECRET_KEY", "api-secret-key")]);
    e.wait_ready(WAIT).await;
    let m = e.metrics().await;
    assert_eq!(status_figures(&m), sim_figures(&sim.sim));
    assert_eq!(get(&m, "qonto_exporter_credentials_refused"), 0.0);
    let stats = sim.sim.stats();
    assert_eq!(
        stats.by_code.keys().collect::<Vec<_>>(),
        ["200"],
        "{stats:?}"
    );

    drop(e);
    // The same organisation with another key: refused, reported, not retried.
    let e = Exporter::start_owned(&args, &[("QONTO_SECRET_KEY", "a-wrong-key")]);
    let m = e
        .wait_until("credentials refused", WAIT, |m| {
            get(m, "qonto_exporter_credentials_refused") == 1.0
        })
        .await;
    assert_eq!(get(&m, "qonto_up"), 0.0);
    assert!(!m.keys().any(|k| k.starts_with("qonto_payment_links")));
    assert_eq!(
        e.log_lines(&["level=warn", "refused the credentials"])
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_token_is_sent_and_its_absence_is_named() {
    let sim = Sim::start(SimConfig {
        links: 150,
        seed: 5,
        access_tokens: vec!["sandbox-access".into()],
        staging_token: Some("staging-token-42".into()),
        ..SimConfig::default()
    })
    .await;
    let args = fast_args(&sim.url(), &[]);
    let e = Exporter::start_owned(
        &args,
        &[
            ("QONTO_ACCESS_TOKEN", "sandbox-access"),
            ("QONTO_STAGING_TOKEN", "staging-token-42"),
        ],
    );
    e.wait_ready(WAIT).await;
    assert_eq!(status_figures(&e.metrics().await), sim_figures(&sim.sim));

    drop(e);
    // Without it the sandbox answers an HTML page: the poll fails at once, with the hint.
    let sent = sim.sim.stats().list_requests_total;
    let e = Exporter::start_owned(&args, &[("QONTO_ACCESS_TOKEN", "sandbox-access")]);
    let line = e
        .wait_log(&["poll failed", "X-Qonto-Staging-Token"], WAIT)
        .await;
    assert!(line.contains("not JSON"), "{line}");
    let m = e.wait_polls(3, WAIT).await;
    let polls = get(&m, "qonto_exporter_polls_total");
    let sent = (sim.sim.stats().list_requests_total - sent) as f64;
    assert!(sent <= polls, "{sent} requests for {polls} polls: retried");
    assert_eq!(get(&m, "qonto_up"), 0.0);
}
