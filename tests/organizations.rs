//! Many organisations in one process (`--config.file`), reloads, and shards, against the real
//! binary and the simulator over loopback.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Exporter, Sim, fast_args, http, parse_metrics_raw};
use qonto_exporter::simulator::SimConfig;

/// The default `--expiry.windows`.
const WINDOWS: [(&str, i64); 4] = [
    ("1h", 3600),
    ("24h", 86_400),
    ("7d", 604_800),
    ("30d", 2_592_000),
];

/// `qonto_up`'s value per organisation in a scrape.
fn up_by_org(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .filter_map(|(k, v)| {
            let org = k
                .strip_prefix("qonto_up{organization=\"")?
                .strip_suffix("\"}")?;
            Some((org.to_owned(), *v))
        })
        .collect()
}

/// Every `organization` label value in a scrape.
fn orgs_in(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.split("organization=\"").nth(1)?;
            Some(rest.split('"').next()?.to_owned())
        })
        .collect()
}

/// A configuration of organisations polling `url` with access tokens from the variables
/// `TOKEN_<NAME>` (the single-organisation simulator accepts any token).
fn config(url: &str, names: &[&str]) -> String {
    let mut y = String::from("organizations:\n");
    for n in names {
        y.push_str(&format!(
            "  - name: {n}\n    api_url: {url}\n    access_token_env: TOKEN_{}\n",
            n.to_uppercase().replace('-', "_")
        ));
    }
    y
}

fn token_env(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            (
                format!("TOKEN_{}", n.to_uppercase().replace('-', "_")),
                format!("token-of-{n}"),
            )
        })
        .collect()
}

fn start(args: &[String], env: &[(String, String)]) -> Exporter {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Exporter::start_owned(args, &env)
}

async fn wait_orgs(e: &Exporter, want: &[&str], within: Duration) -> String {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    e.wait_ready(within).await;
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = e.scrape().await;
        let up = up_by_org(&parse_metrics_raw(&text));
        let got: BTreeSet<String> = up.keys().cloned().collect();
        if got == want && up.values().all(|v| *v == 1.0) && orgs_in(&text) == want {
            return text;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "organisations {want:?} not all up within {within:?}: {up:?}\nlogs:\n{}",
                e.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reload_adds_removes_and_keeps() {
    let sim = Sim::start(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orgs.yml");
    std::fs::write(&file, config(&sim.url(), &["acme", "globex"])).unwrap();
    let mut args = fast_args(&sim.url(), &[]);
    args.extend([
        "--config.file".into(),
        file.display().to_string(),
        "--web.enable-lifecycle".into(),
    ]);
    let e = start(&args, &token_env(&["acme", "globex", "initech"]));
    wait_orgs(&e, &["acme", "globex"], Duration::from_secs(20)).await;
    let m = parse_metrics_raw(&e.scrape().await);
    assert_eq!(m["qonto_exporter_organizations"], 2.0);
    assert_eq!(m["qonto_exporter_config_last_reload_successful"], 1.0);
    let globex_polls = m["qonto_exporter_polls_total{organization=\"globex\"}"];

    // globex unchanged, acme removed, initech added; by SIGHUP.
    std::fs::write(&file, config(&sim.url(), &["globex", "initech"])).unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &e.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_orgs(&e, &["globex", "initech"], Duration::from_secs(20)).await;
    let m = parse_metrics_raw(&e.scrape().await);
    // Kept: its poller went on counting from where it was, never restarted from 0.
    assert!(m["qonto_exporter_polls_total{organization=\"globex\"}"] >= globex_polls);
    assert_eq!(m["qonto_exporter_config_reloads_total"], 1.0);
    // Kept, not restarted: the reload's own account of it.
    e.wait_log(
        &[
            "configuration reloaded",
            r#"started="[\"initech\"]""#,
            r#"stopped="[\"acme\"]""#,
            "kept=1",
        ],
        Duration::from_secs(5),
    )
    .await;

    // A bad file is refused: 500 naming the problem, the running set stays.
    std::fs::write(
        &file,
        "organizations:\n  - name: globex\n    login: x\n    secret_key: inline-secret\n",
    )
    .unwrap();
    let r = http().post(e.url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("secret_key") && body.contains("globex"),
        "{body}"
    );
    assert!(!body.contains("inline-secret"), "{body}");
    assert!(!e.logs().contains("inline-secret"));
    let m = parse_metrics_raw(&wait_orgs(&e, &["globex", "initech"], Duration::from_secs(5)).await);
    assert_eq!(m["qonto_exporter_config_last_reload_successful"], 0.0);
    assert_eq!(m["qonto_exporter_config_reload_failures_total"], 1.0);

    // A good file again, by POST: 200, and the gauge recovers.
    std::fs::write(&file, config(&sim.url(), &["initech"])).unwrap();
    let r = http().post(e.url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = parse_metrics_raw(&wait_orgs(&e, &["initech"], Duration::from_secs(20)).await);
    assert_eq!(m["qonto_exporter_config_last_reload_successful"], 1.0);
    assert_eq!(m["qonto_exporter_organizations"], 1.0);
    // GET is not a reload.
    let r = http().get(e.url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn reload_is_refused_without_web_enable_lifecycle() {
    let sim = Sim::start(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orgs.yml");
    std::fs::write(&file, config(&sim.url(), &["acme"])).unwrap();
    let mut args = fast_args(&sim.url(), &[]);
    args.extend(["--config.file".into(), file.display().to_string()]);
    let e = start(&args, &token_env(&["acme"]));
    wait_orgs(&e, &["acme"], Duration::from_secs(20)).await;
    let r = http().post(e.url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn two_shards_split_ten_organisations_disjointly_and_completely() {
    let sim = Sim::start(SimConfig::default()).await;
    let names: Vec<String> = (1..=10).map(|i| format!("org-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orgs.yml");
    std::fs::write(&file, config(&sim.url(), &names)).unwrap();
    let mut shards = Vec::new();
    for (i, how) in [("0", "flag"), ("1", "pod name")] {
        let mut args = fast_args(&sim.url(), &[]);
        args.extend([
            "--config.file".into(),
            file.display().to_string(),
            "--shard.count".into(),
            "2".into(),
        ]);
        let mut env = token_env(&names);
        match how {
            // Shard 1 finds its index the way a StatefulSet pod does: from its name.
            "pod name" => env.push(("POD_NAME".into(), format!("qonto-exporter-{i}"))),
            _ => args.extend(["--shard.index".into(), i.into()]),
        }
        shards.push(start(&args, &env));
    }
    let mut seen: Vec<BTreeSet<String>> = Vec::new();
    for (i, e) in shards.iter().enumerate() {
        let want: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| qonto_exporter::shard::Shard::of(n, 2) == i as u32)
            .collect();
        let text = wait_orgs(e, &want, Duration::from_secs(30)).await;
        let m = parse_metrics_raw(&text);
        assert_eq!(m["qonto_exporter_organizations"], want.len() as f64);
        assert_eq!(
            m[&format!("qonto_exporter_shard_info{{shard_count=\"2\",shard_index=\"{i}\"}}")],
            1.0
        );
        seen.push(orgs_in(&text));
    }
    assert!(seen[0].is_disjoint(&seen[1]), "{seen:?}");
    let union: BTreeSet<String> = seen[0].union(&seen[1]).cloned().collect();
    let all: BTreeSet<String> = names.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(union, all);
    assert!(!seen[0].is_empty() && !seen[1].is_empty());
}

#[test]
fn bad_configurations_exit_2_naming_file_organisation_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orgs.yml");
    let key = dir.path().join("key");
    std::fs::write(&key, "k").unwrap();
    let cases = [
        (
            format!(
                "organizations:\n  - name: acme\n    login: l\n    secret_key_file: {}\n  - name: acme\n    login: m\n    secret_key_file: {}\n",
                key.display(),
                key.display()
            ),
            vec!["orgs.yml", "organization \"acme\"", "name"],
        ),
        (
            "organizations:\n  - name: globex\n    oauth:\n      client_id: c\n      client_secret_env: QONTO_TEST_UNSET\n      refresh_token_file: /nonexistent/rt\n".to_owned(),
            vec!["orgs.yml", "organization \"globex\"", "oauth.client_secret_env"],
        ),
        ("organizations: 3\n".to_owned(), vec!["orgs.yml"]),
    ];
    for (text, needles) in cases {
        std::fs::write(&file, &text).unwrap();
        let mut e = Exporter::start(&["--config.file", &file.display().to_string()], &[]);
        let (code, logs) = e.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(2), "{logs}");
        assert_eq!(logs.trim().lines().count(), 1, "{logs}");
        for n in needles {
            assert!(logs.contains(n), "{n:?} not in {logs}");
        }
    }
    // The single-organisation credential flags cannot be mixed with a configuration file.
    let mut e = Exporter::start(
        &[
            "--config.file",
            &file.display().to_string(),
            "--qonto.login",
            "x",
        ],
        &[],
    );
    let (code, logs) = e.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{logs}");
    assert!(
        logs.contains("--config.file") && logs.contains("--qonto.login"),
        "{logs}"
    );
    // Sharding without a configuration, and an index out of range.
    for (args, needle) in [
        (
            vec!["--demo", "--shard.count", "2", "--shard.index", "0"],
            "--shard.count",
        ),
        (
            vec![
                "--config.file",
                "/x",
                "--shard.count",
                "2",
                "--shard.index",
                "2",
            ],
            "--shard.index",
        ),
        (
            vec!["--config.file", "/x", "--shard.count", "4"],
            "--shard.index",
        ),
        (
            vec!["--demo", "--qonto.organization", "a b"],
            "--qonto.organization",
        ),
    ] {
        let mut e = Exporter::start(&args, &[("HOSTNAME", "not-a-statefulset-pod-x")]);
        let (code, logs) = e.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(2), "{args:?}: {logs}");
        assert!(logs.contains(needle), "{args:?}: {logs}");
    }
}

/// The single-organisation flags name their organisation with `--qonto.organization`.
#[tokio::test]
async fn the_single_organisation_is_named_by_its_flag() {
    let sim = Sim::start(SimConfig::default()).await;
    let args = fast_args(&sim.url(), &[("--qonto.organization", "acme")]);
    let e = start(&args, &[("QONTO_ACCESS_TOKEN".into(), "t".into())]);
    let text = wait_orgs(&e, &["acme"], Duration::from_secs(20)).await;
    let m = parse_metrics_raw(&text);
    assert_eq!(m["qonto_exporter_organizations"], 1.0);
    // Process-wide series carry no organisation.
    assert!(
        m.keys()
            .any(|k| k.starts_with("qonto_exporter_build_info{"))
    );
    assert!(
        !m.keys()
            .any(|k| k.starts_with("qonto_exporter_build_info{") && k.contains("organization"))
    );
    assert!(m.contains_key("qonto_exporter_api_requests_10m"));
    // Every other qonto_ series does.
    for k in m.keys().filter(|k| k.starts_with("qonto_")) {
        let process_wide = [
            "qonto_exporter_build_info",
            "qonto_exporter_shard_info",
            "qonto_exporter_api_requests_10m",
            "qonto_exporter_api_budget_10m_usage_ratio",
            "qonto_exporter_organizations",
            "qonto_exporter_config_",
        ]
        .iter()
        .any(|p| k.starts_with(p));
        assert_eq!(k.contains("organization=\"acme\""), !process_wide, "{k}");
    }
}

/// The lines of organisation `org` in a scrape, with its label taken out (and the HELP and
/// TYPE lines), so the single-organisation helpers read them.
fn one_org(text: &str, org: &str) -> String {
    let label = format!("organization=\"{org}\"");
    text.lines()
        .filter(|l| l.starts_with('#') || l.contains(&label))
        .map(|l| {
            l.replace(&format!("{{{label}}}"), "")
                .replace(&format!(",{label}"), "")
                .replace(&format!("{label},"), "")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Three organisations with the three kinds of credentials (API key, static token, OAuth) and
/// a fourth whose key is wrong, on one simulator: each of the three polls its own links, exactly
/// (against an independent recount of what the simulator serves it), and the refused one is
/// reported as such without touching the others.
#[tokio::test]
async fn three_kinds_of_credentials_and_one_refused_organisation() {
    use qonto_exporter::simulator::{SimOAuth, SimOrganization};
    let sim = Sim::start(SimConfig {
        name: "acme".into(),
        links: 230,
        seed: 11,
        api_key: Some(("acme-sas".into(), "acme-secret".into())),
        more_organizations: vec![
            SimOrganization {
                links: 170,
                seed: 12,
                access_tokens: vec!["globex-token".into()],
                ..SimOrganization::new("globex")
            },
            SimOrganization {
                links: 120,
                seed: 13,
                oauth: Some(SimOAuth::new(
                    "initech-client",
                    "initech-cs",
                    "initech-rt-0",
                )),
                ..SimOrganization::new("initech")
            },
            SimOrganization {
                links: 10,
                seed: 14,
                api_key: Some(("umbrella".into(), "right-secret".into())),
                ..SimOrganization::new("umbrella")
            },
        ],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    };
    let url = sim.url();
    let config = format!(
        "organizations:
  - name: acme
    api_url: {url}
    login: acme-sas
    secret_key_file: {acme}
  - name: globex
    api_url: {url}
    access_token_file: {globex}
  - name: initech
    api_url: {url}
    oauth:
      client_id: initech-client
      client_secret_file: {cs}
      refresh_token_file: {rt}
      token_url: {url}/oauth2/token
  - name: umbrella
    api_url: {url}
    login: umbrella
    secret_key_env: UMBRELLA_KEY
",
        acme = file("acme.key", "acme-secret"),
        globex = file("globex.token", "globex-token"),
        cs = file("initech.cs", "initech-cs"),
        rt = file("initech.rt", "initech-rt-0"),
    );
    let cfg = file("orgs.yml", &config);
    let mut args = fast_args(&url, &[]);
    args.extend(["--config.file".into(), cfg]);
    let e = start(&args, &[("UMBRELLA_KEY".into(), "wrong-secret".into())]);
    e.wait_ready(Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = e.scrape().await;
        let m = parse_metrics_raw(&text);
        let up = up_by_org(&m);
        let refused = m
            .get("qonto_exporter_credentials_refused{organization=\"umbrella\"}")
            .copied();
        if ["acme", "globex", "initech"]
            .iter()
            .all(|o| up.get(*o) == Some(&1.0))
            && refused == Some(1.0)
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not three up and one refused: {up:?}, refused {refused:?}\n{}",
            e.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for org in sim.sim.organizations() {
        let name = org.name().to_owned();
        let own = one_org(&text, &name);
        if name == "umbrella" {
            assert_eq!(parse_metrics_raw(&own)["qonto_up"], 0.0);
            assert!(!own.contains("qonto_payment_links{"), "no figures: {own}");
            continue;
        }
        // Frozen data: the figures of the scrape's poll equal a recount of what the API serves
        // this organisation.
        let (lo, hi) = common::poll_span(&own);
        common::assert_matches_recount(&own, &org.links_json(), lo, hi, &WINDOWS);
    }
    // The refused organisation's requests went out; the simulator's log names each one's.
    let log = sim.sim.request_log();
    for name in ["acme", "globex", "initech"] {
        assert!(!log.of_organization(name).requests.is_empty(), "{name}");
    }
    assert!(e.logs().contains("organization=umbrella"));
    assert!(!e.logs().contains("wrong-secret") && !e.logs().contains("acme-secret"));
}

/// An API fault in one organisation and a bad state file of another change nothing for the
/// third: it restores its saved figures and keeps polling, while the faulty one fails its polls
/// and the one with the bad file starts with a full walk.
#[tokio::test]
async fn a_failing_organisation_changes_nothing_for_the_others() {
    use qonto_exporter::simulator::SimOrganization;
    let org = |name: &str, seed| SimOrganization {
        links: 150,
        seed,
        access_tokens: vec![format!("token-{name}")],
        ..SimOrganization::new(name)
    };
    let sim = Sim::start(SimConfig {
        name: "acme".into(),
        links: 150,
        access_tokens: vec!["token-acme".into()],
        more_organizations: vec![org("globex", 2), org("initech", 3)],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("state");
    let mut yaml = String::from("organizations:\n");
    for n in ["acme", "globex", "initech"] {
        let t = dir.path().join(format!("{n}.token"));
        std::fs::write(&t, format!("token-{n}")).unwrap();
        yaml.push_str(&format!(
            "  - name: {n}\n    api_url: {}\n    access_token_file: {}\n",
            sim.url(),
            t.display()
        ));
    }
    let cfg = dir.path().join("orgs.yml");
    std::fs::write(&cfg, yaml).unwrap();
    let mut args = fast_args(&sim.url(), &[]);
    args.extend([
        "--config.file".into(),
        cfg.display().to_string(),
        "--storage.path".into(),
        storage.display().to_string(),
    ]);
    let mut e = start(&args, &[]);
    wait_orgs(&e, &["acme", "globex", "initech"], Duration::from_secs(30)).await;
    assert!(e.terminate().success());
    // Each organisation has its own state file; globex's is now garbage.
    for n in ["acme", "globex", "initech"] {
        assert!(
            storage.join(format!("qonto-exporter.{n}.state")).is_file(),
            "{n}"
        );
    }
    std::fs::write(
        storage.join("qonto-exporter.globex.state"),
        b"not a state file",
    )
    .unwrap();
    // initech's API now fails every request.
    let r = http()
        .post(format!("{}/_sim/faults?organization=initech", sim.url()))
        .header("content-type", "application/json")
        .body(r#"{"kind":"status","code":500,"times":1000000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let e = start(&args, &[]);
    e.wait_ready(Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = parse_metrics_raw(&e.scrape().await);
        let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        let acme_ok = get("qonto_up{organization=\"acme\"}") == 1.0
            && get("qonto_exporter_polls_total{organization=\"acme\"}") >= 3.0
            && get("qonto_exporter_full_walks_total{organization=\"acme\"}") == 0.0;
        let globex_fresh = get("qonto_up{organization=\"globex\"}") == 1.0
            && get("qonto_exporter_full_walks_total{organization=\"globex\"}") >= 1.0;
        let initech_failing = get("qonto_exporter_poll_failures_total{organization=\"initech\"}")
            >= 2.0
            && get("qonto_up{organization=\"initech\"}") == 0.0;
        if acme_ok && globex_fresh && initech_failing {
            // initech still serves the figures it saved (restored), not nothing.
            assert!(m.contains_key("qonto_exporter_snapshot_restored{organization=\"initech\"}"));
            assert!(
                m.keys().any(|k| k.starts_with("qonto_payment_links{")
                    && k.contains("organization=\"initech\""))
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acme {acme_ok}, globex {globex_fresh}, initech {initech_failing}: {m:?}\n{}",
            e.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e.wait_log(
        &["state file ignored", "organization=globex"],
        Duration::from_secs(1),
    )
    .await;
    // The landing page has a row per organisation.
    let page = http()
        .get(e.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for n in ["acme", "globex", "initech"] {
        assert!(
            page.contains(&format!("<a href=\"#org-{n}\">{n}</a>")),
            "{page}"
        );
    }
}

/// A changed OAuth organisation restarts with the token its old session rotated last (written
/// to its file), never the spent one the configuration was read with: no refusal follows.
#[tokio::test]
async fn a_changed_oauth_organisation_restarts_with_its_latest_token() {
    use qonto_exporter::simulator::SimOAuth;
    let mut oauth = SimOAuth::new("initech-client", "initech-cs", "rt-0");
    // A used refresh token dies at once: restarting with the one the configuration was read
    // with (rotated by the first refresh since) would be refused.
    oauth.grace = Duration::ZERO;
    let sim = Sim::start(SimConfig {
        name: "initech".into(),
        links: 120,
        oauth: Some(oauth),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cs = dir.path().join("cs");
    std::fs::write(&cs, "initech-cs").unwrap();
    let rt = dir.path().join("rt");
    std::fs::write(&rt, "rt-0").unwrap();
    let config = |interval: &str| {
        format!(
            "organizations:\n  - name: initech\n    api_url: {u}\n    poll_interval: {interval}\n    oauth:\n      client_id: initech-client\n      client_secret_file: {}\n      refresh_token_file: {}\n      token_url: {u}/oauth2/token\n",
            cs.display(),
            rt.display(),
            u = sim.url()
        )
    };
    let file = dir.path().join("orgs.yml");
    std::fs::write(&file, config("200ms")).unwrap();
    let mut args = fast_args(&sim.url(), &[]);
    args.extend([
        "--config.file".into(),
        file.display().to_string(),
        "--web.enable-lifecycle".into(),
    ]);
    let e = start(&args, &[]);
    wait_orgs(&e, &["initech"], Duration::from_secs(20)).await;
    // Wait for the first rotation: the file no longer holds the token the configuration was
    // read with.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&rt).unwrap().trim() == "rt-0" {
        assert!(std::time::Instant::now() < deadline, "{}", e.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&file, config("300ms")).unwrap();
    let r = http().post(e.url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    e.wait_log(
        &[
            "configuration reloaded",
            r#"started="[\"initech\"]""#,
            "kept=0",
        ],
        Duration::from_secs(5),
    )
    .await;
    // The restarted organisation polls and refreshes on, never refused.
    let before = parse_metrics_raw(&e.scrape().await)["qonto_exporter_polls_total{organization=\"initech\"}"];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = parse_metrics_raw(&e.scrape().await);
        let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        assert_eq!(
            get("qonto_exporter_credentials_refused{organization=\"initech\"}"),
            0.0,
            "{}",
            e.logs()
        );
        assert_eq!(
            get("qonto_exporter_oauth_refresh_failures_total{organization=\"initech\"}"),
            0.0,
            "{}",
            e.logs()
        );
        // A new run counts from 0: more polls than before means several since the restart.
        if get("qonto_exporter_polls_total{organization=\"initech\"}") >= 5.0
            && get("qonto_exporter_oauth_refreshes_total{organization=\"initech\"}") >= 1.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "before {before}: {m:?}\n{}",
            e.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
