//! `qonto-exporter webhook subscribe|list|delete`, black-box: the real binary against the
//! simulator over loopback. The secret the subscription signs with is the one written to the
//! file (checked on a real delivery), the file is 0600, nothing secret is printed, and errors
//! are one line with the documented exit status.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{BIN, Sim};
use qonto_exporter::simulator::{Mutation, SimConfig, SimOAuth};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "cli-test-token";

async fn sim() -> Sim {
    Sim::start(SimConfig {
        access_tokens: vec![TOKEN.into()],
        ..SimConfig::default()
    })
    .await
}

/// Runs the binary with `args` and only the environment given (plus the API URL).
async fn run(sim: &Sim, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .arg("webhook")
        .args(args)
        .arg("--qonto.api-url")
        .arg(sim.url());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
        .await
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

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

#[tokio::test]
async fn subscribe_list_delete_with_a_generated_secret() {
    let sim = sim().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook-secret");
    let secret_path = secret_file.to_str().unwrap();
    let callback = format!("{}/webhooks/qonto/default", receiver.uri());
    let env = [("QONTO_ACCESS_TOKEN", TOKEN)];

    let out = run(
        &sim,
        &[
            "subscribe",
            "--callback-url",
            &callback,
            "--secret-file",
            secret_path,
            "--description",
            "cli test",
        ],
        &env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let secret = secret.trim();
    assert_eq!(secret.len(), 64);
    assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    let subs = sim.sim.webhook_subscriptions();
    assert_eq!(subs.len(), 1);
    let id = &subs[0].id;
    assert!(stdout.contains(id.as_str()), "{stdout}");
    assert!(stdout.contains(&callback), "{stdout}");
    assert!(
        stdout.contains("v1/payment-links,v1/payment-links-connections"),
        "{stdout}"
    );
    assert_eq!(subs[0].description.as_deref(), Some("cli test"));

    // The subscription signs with the file's secret: a real delivery verifies with it.
    sim.sim.mutate(Mutation::Create(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        if let Some(r) = receiver.received_requests().await.unwrap().pop() {
            break r;
        }
        assert!(Instant::now() < deadline, "no delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let header = delivery.headers["x-qonto-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    assert_eq!(v1, hmac_hex(secret, t, &delivery.body));

    // A second subscribe reuses the file, untouched.
    let out = run(
        &sim,
        &[
            "subscribe",
            "--callback-url",
            &callback,
            "--secret-file",
            secret_path,
            "--types",
            "v1/payment-links",
        ],
        &env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("read from"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap().trim(),
        secret
    );
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    let second = sim
        .sim
        .webhook_subscriptions()
        .into_iter()
        .find(|s| s.id != *id)
        .unwrap();
    assert_eq!(second.types, vec!["v1/payment-links".to_owned()]);

    // list shows both.
    let out = run(&sim, &["list"], &env).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(id.as_str()) && stdout.contains(&second.id),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 2, "{stdout}");

    // delete removes one; deleting it again is an API error: one line, exit 1.
    let out = run(&sim, &["delete", id], &env).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(sim.sim.webhook_subscriptions().len(), 1);
    let out = run(&sim, &["list"], &env).await;
    assert!(!text(&out).0.contains(id.as_str()));
    let out = run(&sim, &["delete", id], &env).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
}

#[tokio::test]
async fn bad_input_exits_2_naming_the_flag() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    let env = [("QONTO_ACCESS_TOKEN", TOKEN)];
    let long = format!("https://hooks.example.com/{}", "a".repeat(600));
    for url in [
        "http://hooks.example.com/webhooks/qonto",
        "not a url",
        &long,
    ] {
        let out = run(
            &sim,
            &[
                "subscribe",
                "--callback-url",
                url,
                "--secret-file",
                secret_file.to_str().unwrap(),
            ],
            &env,
        )
        .await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{url}: {stdout}{stderr}");
        assert!(stderr.contains("--callback-url"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            !secret_file.exists(),
            "no secret written for a refused command"
        );
    }
    // A secret file that holds a short secret is refused and left alone.
    std::fs::write(&secret_file, "too-short\n").unwrap();
    let out = run(
        &sim,
        &[
            "subscribe",
            "--callback-url",
            "https://hooks.example.com/q",
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
        &env,
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--secret-file") && !stderr.contains("too-short"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap(),
        "too-short\n"
    );
    // No credentials: exit 2; refused credentials: exit 1; both one line.
    let out = run(&sim, &["list"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let out = run(&sim, &["list"], &[("QONTO_ACCESS_TOKEN", "wrong")]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("401") && !stderr.contains("wrong"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(sim.sim.webhook_subscriptions().is_empty());
}

#[tokio::test]
async fn a_refresh_token_is_rotated_and_written_back_with_a_note() {
    let sim = Sim::start(SimConfig {
        oauth: Some(SimOAuth::new(
            "cli-client",
            "cli-client-secret",
            "refresh-0",
        )),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, "refresh-0\n").unwrap();
    let token_url = format!("{}/oauth2/token", sim.url());
    let out = run(
        &sim,
        &[
            "list",
            "--qonto.oauth.client-id",
            "cli-client",
            "--qonto.oauth.refresh-token-file",
            file.to_str().unwrap(),
            "--qonto.oauth.token-url",
            &token_url,
        ],
        &[("QONTO_OAUTH_CLIENT_SECRET", "cli-client-secret")],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let now = std::fs::read_to_string(&file).unwrap();
    assert_ne!(now.trim(), "refresh-0", "the rotated token is written back");
    assert!(!now.trim().is_empty());
    assert!(
        stderr.contains("rotated") && stderr.contains(file.to_str().unwrap()),
        "{stderr}"
    );
    assert!(!stderr.contains(now.trim()) && !stdout.contains(now.trim()));
    // The file works for the next run (the exporter would take it up the same way).
    let out = run(
        &sim,
        &[
            "list",
            "--qonto.oauth.client-id",
            "cli-client",
            "--qonto.oauth.refresh-token-file",
            file.to_str().unwrap(),
            "--qonto.oauth.token-url",
            &token_url,
        ],
        &[("QONTO_OAUTH_CLIENT_SECRET", "cli-client-secret")],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
}

#[tokio::test]
async fn config_file_organizations_use_their_own_credentials() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("organizations.yml");
    std::fs::write(
        &config,
        format!(
            "organizations:\n  - name: acme\n    api_url: {url}\n    access_token_env: TOKEN_ACME\n  - name: globex\n    api_url: {url}\n    access_token_env: TOKEN_GLOBEX\n",
            url = sim.url()
        ),
    )
    .unwrap();
    let env = [("TOKEN_ACME", TOKEN), ("TOKEN_GLOBEX", "not-the-token")];
    let config = config.to_str().unwrap();
    let with = |org: &'static str| ["list", "--config.file", config, "--organization", org];
    let out = run(&sim, &with("acme"), &env).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run(&sim, &with("globex"), &env).await;
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let out = run(&sim, &with("initech"), &env).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("initech"), "{stderr}");
    // --config.file and credential flags do not mix.
    let out = run(
        &sim,
        &[
            "list",
            "--config.file",
            config,
            "--organization",
            "acme",
            "--qonto.access-token-file",
            config,
        ],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}
