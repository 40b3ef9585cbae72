//! The command line from the outside: a bad flag or variable exits 2 with one line on stderr
//! naming it; `--help` exits 0; SIGTERM stops the exporter gracefully with 0.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Exporter};

/// Runs the binary to completion with a clean QONTO_* environment: (exit code, stdout, stderr).
fn run(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("QONTO_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts exit code 2 and exactly one line on stderr, containing every one of `names`.
fn usage_error(args: &[&str], envs: &[(&str, &str)], names: &[&str]) {
    let (code, _, stderr) = run(args, envs);
    assert_eq!(code, Some(2), "{args:?}: exit code; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line on stderr, got:\n{stderr}"
    );
    for name in names {
        assert!(
            lines[0].contains(name),
            "{args:?}: the line names {name}: {}",
            lines[0]
        );
    }
}

/// A listen address the tests never use, so a mistakenly starting exporter does not collide.
const LISTEN: [&str; 2] = ["--web.listen-address", "127.0.0.1:0"];

#[test]
fn bad_durations_name_their_flag_or_variable() {
    usage_error(
        &["--demo", "--poll.interval", "soon"],
        &[],
        &["--poll.interval", "soon"],
    );
    usage_error(
        &["--demo", "--poll.interval", "0s"],
        &[],
        &["--poll.interval"],
    );
    usage_error(
        &["--demo", "--qonto.timeout", "5 parsecs"],
        &[],
        &["--qonto.timeout"],
    );
    usage_error(
        &["--demo"],
        &[("QONTO_POLL_INTERVAL", "every now and then")],
        &["--poll.interval", "every now and then"],
    );
}

#[test]
fn unparsable_listen_address_is_named() {
    usage_error(
        &["--demo", "--web.listen-address", "localhost"],
        &[],
        &["--web.listen-address", "localhost"],
    );
    usage_error(
        &["--demo", "--web.listen-address", ":99999"],
        &[],
        &["--web.listen-address"],
    );
}

#[test]
fn a_listen_address_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    usage_error(
        &["--demo", "--web.listen-address", &addr],
        &[],
        &["--web.listen-address", &addr],
    );
}

#[test]
fn no_credentials_without_demo() {
    usage_error(
        &LISTEN,
        &[],
        &["no credentials", "--demo", "QONTO_ACCESS_TOKEN"],
    );
}

#[test]
fn two_kinds_of_credentials() {
    let mut args = vec!["--qonto.login", "acme"];
    args.extend(LISTEN);
    usage_error(
        &args,
        &[("QONTO_SECRET_KEY", "k"), ("QONTO_ACCESS_TOKEN", "t")],
        &[
            "two kinds of credentials",
            "QONTO_ACCESS_TOKEN",
            "--qonto.login",
        ],
    );
}

#[test]
fn demo_with_credentials() {
    usage_error(
        &["--demo", LISTEN[0], LISTEN[1]],
        &[("QONTO_ACCESS_TOKEN", "t")],
        &["--demo", "QONTO_ACCESS_TOKEN"],
    );
}

#[test]
fn incomplete_credentials_name_what_is_missing() {
    let mut args = vec!["--qonto.login", "acme"];
    args.extend(LISTEN);
    usage_error(&args, &[], &["QONTO_SECRET_KEY"]);
    let mut args = vec!["--qonto.oauth.client-id", "c"];
    args.extend(LISTEN);
    usage_error(
        &args,
        &[("QONTO_OAUTH_CLIENT_SECRET", "s")],
        &["--qonto.oauth.refresh-token-file"],
    );
}

#[test]
fn refresh_token_file_missing_or_unwritable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("refresh-token");
    let oauth = |file: &str| {
        vec![
            "--qonto.oauth.client-id".to_owned(),
            "c".to_owned(),
            "--qonto.oauth.refresh-token-file".to_owned(),
            file.to_owned(),
            LISTEN[0].to_owned(),
            LISTEN[1].to_owned(),
        ]
    };
    let secret = [("QONTO_OAUTH_CLIENT_SECRET", "s")];
    let args = oauth(missing.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    usage_error(
        &args,
        &secret,
        &["--qonto.oauth.refresh-token-file", "oauth-login"],
    );
    // Readable but in a directory nobody can create files in, not even root: /proc.
    let args = oauth("/proc/version");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    usage_error(
        &args,
        &secret,
        &[
            "--qonto.oauth.refresh-token-file",
            "/proc/version",
            "writable",
        ],
    );
}

#[test]
fn secret_in_a_file_and_a_variable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "k\n").unwrap();
    let mut args = vec![
        "--qonto.login",
        "acme",
        "--qonto.secret-key-file",
        key.to_str().unwrap(),
    ];
    args.extend(LISTEN);
    usage_error(
        &args,
        &[("QONTO_SECRET_KEY", "k")],
        &["--qonto.secret-key-file", "QONTO_SECRET_KEY"],
    );
}

#[test]
fn bad_api_url_and_unknown_flag() {
    usage_error(
        &[
            "--demo",
            "--qonto.api-url",
            "ftp://example.com",
            LISTEN[0],
            LISTEN[1],
        ],
        &[],
        &["--qonto.api-url"],
    );
    usage_error(
        &["--demo", "--poll.intervall", "1m"],
        &[],
        &["--poll.intervall"],
    );
    usage_error(
        &["--demo", "--log.format", "xml"],
        &[],
        &["--log.format", "xml"],
    );
}

#[test]
fn help_and_version_exit_0() {
    let (code, stdout, _) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for flag in [
        "--poll.interval",
        "--qonto.oauth.refresh-token-file",
        "--demo",
    ] {
        assert!(stdout.contains(flag), "--help lists {flag}");
    }
    let (code, stdout, _) = run(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_with_exit_0() {
    let mut e = Exporter::start(&["--demo", "--poll.interval", "200ms"], &[]);
    e.wait_ready(Duration::from_secs(30)).await;
    let status = e.terminate();
    assert_eq!(status.code(), Some(0), "logs:\n{}", e.logs());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !e.log_lines(&["shutting down"]).is_empty(),
        "logs:\n{}",
        e.logs()
    );
}

/// `qonto-exporter healthcheck` (the distroless image's only way to probe itself): 0 when the
/// exporter answers 200, 1 with one line naming the URL otherwise, 2 for a bad flag.
#[tokio::test]
async fn healthcheck_probes_a_running_exporter() {
    let exporter = Exporter::start(&["--demo", "--poll.interval", "1s"], &[]);
    exporter.wait_ready(Duration::from_secs(30)).await;
    let healthy = exporter.url("/-/healthy");
    let (code, _, stderr) = run(&["healthcheck", "--url", &healthy], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    let missing = exporter.url("/no-such-path");
    let (code, _, stderr) = run(&["healthcheck", "--url", &missing], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("answered HTTP 404") && stderr.contains(&missing),
        "{stderr}"
    );

    let closed = format!("http://127.0.0.1:{}/-/healthy", common::free_port());
    let (code, _, stderr) = run(&["healthcheck", "--url", &closed, "--timeout", "2s"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&closed), "{stderr}");

    usage_error(&["healthcheck", "--timeout", "soon"], &[], &["--timeout"]);
}
