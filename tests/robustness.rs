//! Hostile input on the poll path, through the real binary over loopback: a `Retry-After` or an
//! `expires_in` that overflows, a rotated refresh token that cannot be written (also at a
//! stop), and a token file that hangs. The process must neither panic nor freeze, must say what
//! happened in metrics, logs and its exit code, and must never go back to a spent refresh token.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BIN, Exporter, Sim, fast_args, free_port, sim_figures, status_figures};
use qonto_exporter::simulator::{Fault, SimConfig, SimOAuth};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WAIT: Duration = Duration::from_secs(20);
const ACCESS: &str = "robust-access-token";
const CLIENT_ID: &str = "client-robust";
const CLIENT_SECRET: &str = "client-secret-robust";
const REFRESH_TOKEN: &str = "refresh-token-robust-0";
const OVER_CEILING: &str = "qonto_exporter_retry_after_over_ceiling_total";
const UNSAVED: &str = "qonto_exporter_oauth_refresh_token_unsaved";
const WRITE_FAILURES: &str = "qonto_exporter_oauth_refresh_token_write_failures_total";

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

fn alive(e: &mut Exporter) {
    if let Ok(Some(status)) = e.child.try_wait() {
        panic!("the exporter exited ({status}); logs:\n{}", e.logs());
    }
}

/// A 429 whose `Retry-After` overflows an `Instant` (it panicked the poller), or names a date
/// millennia away (it paused every request for good): the poll fails at once, counted and
/// logged, the last figures stay served, the process lives, and the next poll succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_ceiling_fails_one_poll_and_nothing_else() {
    let sim = Sim::start(SimConfig {
        links: 150,
        seed: 9,
        access_tokens: vec![ACCESS.into()],
        ..SimConfig::default()
    })
    .await;
    let args = fast_args(&sim.url(), &[("--poll.interval", "1s")]);
    let mut e = Exporter::start_owned(&args, &[("QONTO_ACCESS_TOKEN", ACCESS)]);
    e.wait_ready(WAIT).await;
    let text = e.scrape().await;
    assert!(
        text.contains(&format!("# HELP {OVER_CEILING} ")),
        "the counter is exported from the start:\n{text}"
    );
    let m = e.metrics().await;
    assert_eq!(get(&m, OVER_CEILING), 0.0);
    let figures = status_figures(&m);
    assert_eq!(figures, sim_figures(&sim.sim));

    for (n, retry_after) in [
        (1.0, "18446744073709551615"),
        (2.0, "Fri, 31 Dec 9999 23:59:59 GMT"),
    ] {
        let failures = get(&e.metrics().await, "qonto_exporter_poll_failures_total");
        sim.sim.inject(Fault::Status {
            code: 429,
            retry_after: Some(retry_after.into()),
            times: 1,
        });
        let m = e
            .wait_until(
                &format!("Retry-After {retry_after} fails a poll"),
                WAIT,
                |m| get(m, "qonto_up") == 0.0,
            )
            .await;
        alive(&mut e);
        assert_eq!(get(&m, OVER_CEILING), n, "{retry_after}");
        assert_eq!(
            get(&m, "qonto_exporter_poll_failures_total"),
            failures + 1.0
        );
        assert_eq!(status_figures(&m), figures, "the last figures stay served");
        assert_eq!(get(&m, "qonto_exporter_credentials_refused"), 0.0);

        // The fault is gone: the next poll succeeds on schedule, without any pause left over.
        let m = e
            .wait_until("the next poll succeeds", Duration::from_secs(5), |m| {
                get(m, "qonto_up") == 1.0
            })
            .await;
        alive(&mut e);
        assert_eq!(get(&m, OVER_CEILING), n);
        assert_eq!(
            get(&m, "qonto_exporter_poll_failures_total"),
            failures + 1.0
        );
        assert_eq!(status_figures(&m), sim_figures(&sim.sim));
    }
    let lines = e.log_lines(&["poll failed", "--qonto.max-retry-after (10m)"]);
    assert_eq!(lines.len(), 2, "one line per failed poll:\n{}", e.logs());
    assert!(
        lines[0].contains("page 1: HTTP 429 with Retry-After 18446744073709551615 s"),
        "{}",
        lines[0]
    );
    assert!(!e.logs().contains("panicked"), "{}", e.logs());
    assert_eq!(e.terminate().code(), Some(0));
}

/// A token endpoint whose `expires_in` overflows an `Instant` (it panicked the poller), is 0
/// (every request refreshed), is beyond `u64` (a float to serde: the whole answer, rotated
/// refresh token included, was refused) or negative: one refresh serves many polls, and the
/// rotated token reaches the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_expires_in_neither_panics_nor_refreshes_every_request() {
    let sim = Sim::start(SimConfig {
        links: 150,
        seed: 9,
        access_tokens: vec![ACCESS.into()],
        ..SimConfig::default()
    })
    .await;
    for expires_in in ["18446744073709551615", "0", "18446744073709551616", "-1"] {
        let tokens = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(
                format!(
                    r#"{{"access_token":"{ACCESS}","refresh_token":"rotated-{expires_in}","token_type":"bearer","expires_in":{expires_in}}}"#
                ),
                "application/json",
            ))
            .mount(&tokens)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("refresh-token");
        std::fs::write(&file, REFRESH_TOKEN).unwrap();
        let token_url = format!("{}/oauth2/token", tokens.uri());
        let args = fast_args(
            &sim.url(),
            &[
                ("--qonto.oauth.client-id", CLIENT_ID),
                ("--qonto.oauth.refresh-token-file", file.to_str().unwrap()),
                ("--qonto.oauth.token-url", &token_url),
            ],
        );
        let mut e = Exporter::start_owned(&args, &[("QONTO_OAUTH_CLIENT_SECRET", CLIENT_SECRET)]);
        e.wait_ready(WAIT).await;
        let m = e.wait_polls(5, WAIT).await;
        alive(&mut e);
        assert_eq!(get(&m, "qonto_up"), 1.0, "{expires_in}");
        assert_eq!(get(&m, "qonto_exporter_poll_failures_total"), 0.0);
        assert_eq!(
            get(&m, "qonto_exporter_oauth_refreshes_total"),
            1.0,
            "expires_in {expires_in}: one refresh for six polls"
        );
        assert_eq!(tokens.received_requests().await.unwrap().len(), 1);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim(),
            format!("rotated-{expires_in}")
        );
        e.wait_log(&["level=warn", "expires_in is outside 60 s..24 h"], WAIT)
            .await;
        assert!(!e.logs().contains("panicked"), "{}", e.logs());
        assert_eq!(e.terminate().code(), Some(0));
    }
}

/// `bin` run as `uid` (when the tests run as root, whom file modes do not stop), otherwise as
/// [`Exporter::start`] runs the binary.
fn start_as(bin: &Path, args: &[String], envs: &[(&str, &str)], uid: Option<u32>) -> Exporter {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("QONTO_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .arg("--web.listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let mut child = cmd.spawn().expect("exporter binary starts");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("stderr piped");
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Exporter { child, port, logs }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

/// Waits until the first rotation reached `file` (the write runs beside the poll).
async fn wait_file_rotated(file: &Path) {
    let deadline = std::time::Instant::now() + WAIT;
    while read(file) == REFRESH_TOKEN {
        assert!(
            std::time::Instant::now() < deadline,
            "the file was never rotated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A rotated refresh token that cannot be written (read-only directory) stays in use: the old
/// one is spent, so giving the new one up would lose access at once. The gauge says it is
/// unsaved, polls keep succeeding, the spent token left in the file is never taken back, and
/// once the directory is writable again the newest token reaches the file (a restart works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsaved_refresh_token_keeps_serving_and_is_saved_once_possible() {
    let sim = Sim::start(SimConfig {
        links: 150,
        seed: 9,
        oauth: Some(SimOAuth {
            // A spent refresh token dies 1 s after its first use (60 s at Qonto).
            grace: Duration::from_secs(1),
            ..SimOAuth::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)
        }),
        ..SimConfig::default()
    })
    .await;
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o755);
    let dir = base.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("refresh-token");
    std::fs::write(&file, format!("{REFRESH_TOKEN}\n")).unwrap();
    // Root ignores file modes: the exporter then runs as nobody, who owns the directory.
    let uid = is_root().then_some(65534);
    // A copy of the binary that user 65534 can run, wherever the checkout is and whatever its modes.
    let bin = base.path().join("qonto-exporter");
    std::fs::copy(BIN, &bin).unwrap();
    chmod(&bin, 0o755);
    if let Some(uid) = uid {
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        std::os::unix::fs::chown(&file, Some(uid), Some(uid)).unwrap();
    }
    chmod(&dir, 0o700);
    let token_url = format!("{}/oauth2/token", sim.url());
    let args = fast_args(
        &sim.url(),
        &[
            ("--qonto.oauth.client-id", CLIENT_ID),
            ("--qonto.oauth.refresh-token-file", file.to_str().unwrap()),
            ("--qonto.oauth.token-url", &token_url),
        ],
    );
    let envs = [("QONTO_OAUTH_CLIENT_SECRET", CLIENT_SECRET)];
    let mut e = start_as(&bin, &args, &envs, uid);
    e.wait_ready(WAIT).await;
    let text = e.scrape().await;
    assert!(
        text.contains(&format!("# HELP {UNSAVED} ")),
        "the gauge is exported from the start:\n{text}"
    );
    assert_eq!(get(&e.metrics().await, UNSAVED), 0.0);
    let saved = read(&file);
    assert_ne!(saved, REFRESH_TOKEN, "the first refresh rotated the file");

    // Read-only: the next rotation (forced by a 401) cannot be written.
    chmod(&dir, 0o500);
    sim.sim.inject(Fault::Status {
        code: 401,
        retry_after: None,
        times: 1,
    });
    // The gauge turns 1 before the write is tried; the failure is counted once it fails.
    let m = e
        .wait_until(
            "the rotated token is unsaved and its write failed",
            WAIT,
            |m| get(m, UNSAVED) == 1.0 && get(m, WRITE_FAILURES) >= 1.0,
        )
        .await;
    assert_eq!(get(&m, UNSAVED), 1.0);
    e.wait_log(&["level=error", "rotated refresh token NOT saved"], WAIT)
        .await;
    assert_eq!(read(&file), saved, "the file still holds the spent token");

    // Once the file's token is dead, force another rotation: the exporter must spend the token
    // in memory, not go back to the file's (which the authorization server now refuses).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let refreshes = get(&e.metrics().await, "qonto_exporter_oauth_refreshes_total");
    sim.sim.inject(Fault::Status {
        code: 401,
        retry_after: None,
        times: 1,
    });
    e.wait_until("another refresh", WAIT, |m| {
        get(m, "qonto_exporter_oauth_refreshes_total") > refreshes
    })
    .await;
    let m = e.wait_polls(3, WAIT).await;
    alive(&mut e);
    assert_eq!(get(&m, "qonto_up"), 1.0, "logs:\n{}", e.logs());
    assert_eq!(get(&m, "qonto_exporter_credentials_refused"), 0.0);
    assert_eq!(get(&m, "qonto_exporter_oauth_refresh_failures_total"), 0.0);
    assert_eq!(get(&m, "qonto_exporter_poll_failures_total"), 0.0);
    assert_eq!(get(&m, UNSAVED), 1.0);
    assert!(get(&m, WRITE_FAILURES) >= 2.0);
    assert_eq!(status_figures(&m), sim_figures(&sim.sim));
    assert_eq!(read(&file), saved);

    // Writable again: the retry (at most every 30 s) saves the token in use.
    chmod(&dir, 0o700);
    let m = e
        .wait_until("the token is saved", Duration::from_secs(45), |m| {
            get(m, UNSAVED) == 0.0
        })
        .await;
    assert_eq!(get(&m, "qonto_up"), 1.0);
    let newest = read(&file);
    assert_ne!(newest, saved);
    e.wait_log(&["rotated refresh token saved at last"], WAIT)
        .await;
    assert_eq!(e.terminate().code(), Some(0));

    // Every older token is dead by now: a restart works only from the newest.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = start_as(&bin, &args, &envs, uid);
    e.wait_ready(WAIT).await;
    assert_eq!(
        get(&e.metrics().await, "qonto_exporter_credentials_refused"),
        0.0
    );
}

/// A SIGTERM while the rotated refresh token in use is unsaved: one last write is tried, and
/// when it fails too the process says so in an `error` line naming the file and exits non-zero
/// (it used to exit 0 and lose access in silence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_an_unsaved_refresh_token_is_loud_and_fails() {
    let sim = Sim::start(SimConfig {
        links: 50,
        seed: 9,
        oauth: Some(SimOAuth::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)),
        ..SimConfig::default()
    })
    .await;
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o755);
    let dir = base.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("refresh-token");
    std::fs::write(&file, format!("{REFRESH_TOKEN}\n")).unwrap();
    let uid = is_root().then_some(65534);
    let bin = base.path().join("qonto-exporter");
    std::fs::copy(BIN, &bin).unwrap();
    chmod(&bin, 0o755);
    if let Some(uid) = uid {
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        std::os::unix::fs::chown(&file, Some(uid), Some(uid)).unwrap();
    }
    chmod(&dir, 0o700);
    let token_url = format!("{}/oauth2/token", sim.url());
    let args = fast_args(
        &sim.url(),
        &[
            ("--qonto.oauth.client-id", CLIENT_ID),
            ("--qonto.oauth.refresh-token-file", file.to_str().unwrap()),
            ("--qonto.oauth.token-url", &token_url),
        ],
    );
    let mut e = start_as(
        &bin,
        &args,
        &[("QONTO_OAUTH_CLIENT_SECRET", CLIENT_SECRET)],
        uid,
    );
    e.wait_ready(WAIT).await;
    chmod(&dir, 0o500);
    sim.sim.inject(Fault::Status {
        code: 401,
        retry_after: None,
        times: 1,
    });
    e.wait_until("the rotated token is unsaved", WAIT, |m| {
        get(m, UNSAVED) == 1.0
    })
    .await;
    let status = e.terminate();
    let lines = e.log_lines(&[
        "level=error",
        "exiting with an unsaved rotated refresh token: access will be lost",
        file.to_str().unwrap(),
    ]);
    chmod(&dir, 0o700);
    assert_eq!(lines.len(), 1, "logs:\n{}", e.logs());
    assert_eq!(status.code(), Some(1), "logs:\n{}", e.logs());
}

/// The refresh-token file turns into a FIFO nobody writes (a hung volume reads the same) while
/// a refresh reads it: a SIGTERM still ends the process within seconds. Dropping tokio's
/// runtime used to wait for the blocked reading thread for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_token_file_does_not_keep_the_process_from_exiting() {
    let sim = Sim::start(SimConfig {
        links: 50,
        seed: 9,
        oauth: Some(SimOAuth::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, format!("{REFRESH_TOKEN}\n")).unwrap();
    let token_url = format!("{}/oauth2/token", sim.url());
    let args = fast_args(
        &sim.url(),
        &[
            ("--qonto.oauth.client-id", CLIENT_ID),
            ("--qonto.oauth.refresh-token-file", file.to_str().unwrap()),
            ("--qonto.oauth.token-url", &token_url),
        ],
    );
    let mut e = Exporter::start_owned(&args, &[("QONTO_OAUTH_CLIENT_SECRET", CLIENT_SECRET)]);
    e.wait_ready(WAIT).await;
    wait_file_rotated(&file).await;
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    std::fs::rename(&fifo, &file).unwrap();
    // A 401 makes the next request refresh, and the refresh reads the file first.
    sim.sim.inject(Fault::Status {
        code: 401,
        retry_after: None,
        times: 1,
    });
    e.wait_until("the 401 arrived", WAIT, |m| {
        get(m, r#"qonto_exporter_api_requests_total{code="401"}"#) >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    alive(&mut e);
    let started = std::time::Instant::now();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(e.child.id().to_string())
        .status();
    let (code, logs) = e.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "nothing was unsaved; logs:\n{logs}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!logs.contains("panicked"), "{logs}");
}

fn is_root() -> bool {
    // The owner of a file this process just created is its effective uid.
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}
