//! End to end with real servers: the exporter binary, a real Prometheus scraping it every second
//! with the committed alert rules, and a real Alertmanager whose webhook receiver is a tiny HTTP
//! server in this test.
//!
//! Three exporters are scraped as three targets (told apart by `instance`) of the one job
//! `qonto-exporter`, the job name both bundled setups produce and the rules' default selector
//! `job="qonto-exporter"` selects:
//! - the dashboard's: two organisations (`--config.file`) of an evolving in-process simulator,
//!   with `--collect.payments` (the payments panels); every query of the Grafana dashboard must
//!   return data, and every per-organisation query data for each of the two organisations; then the simulator disables the payment links
//!   connection of the second, so `QontoPaymentLinksConnectionNotEnabled` must fire for it (with
//!   its `organization` label) and reach the webhook, and must not fire for any other;
//! - the auth scenario: two organisations of one simulator, one of which starts being answered
//!   401, so `QontoCredentialsRefused` must fire for it (with its `organization` label) and
//!   reach the webhook, and must not fire for the other;
//! - the expiry scenario: polls a frozen simulator in which most open links are then made to
//!   expire within the hour, so `QontoMoneyExpiringSoon` must fire and reach the webhook.
//!
//! Bounded: every wait polls with a deadline and the whole test must finish within two minutes.
//! Every process started is killed on every path (`Exporter` and `Daemon` kill on drop).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::servers::{
    Alertmanager, Prometheus, Webhook, promql_metric_names, require_tool, sample_names,
};
use common::{Exporter, Sim, free_port, repo};
use qonto_exporter::simulator::{Mutation, SimConfig, SimOrganization};
use serde_json::Value;

/// The scrape job of all three exporters: the mixin's default `qontoSelector`.
const JOB: &str = "qonto-exporter";
/// The rules whose `for:` the test shortens (in its temporary copy of the rules only).
const SHORTENED_ALERTS: [&str; 2] = [
    "QontoMoneyExpiringSoon",
    "QontoPaymentLinksConnectionNotEnabled",
];
/// The alert of the expiry scenario, and of the connection scenario.
const EXPIRING_ALERT: &str = SHORTENED_ALERTS[0];
const CONNECTION_ALERT: &str = SHORTENED_ALERTS[1];
/// Grafana's `$__rate_interval` for a 1 s scrape interval: max(4 × scrape, interval + scrape).
const RATE_INTERVAL: &str = "4s";
const WHOLE_TEST: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_rules_and_alerts_work_with_real_prometheus_and_alertmanager() {
    let started = Instant::now();
    // A missing server is a failure naming its package, before anything starts.
    require_tool("prometheus", "prometheus");
    require_tool("prometheus-alertmanager", "prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();

    // ------------------------------------------------------------------ exporters
    let demo_sim = Sim::start(two_organisations(
        500,
        Some(Duration::from_secs(1)),
        DASHBOARD_ORGS,
    ))
    .await;
    // The dashboard's exporter runs the webhook receiver, to which the simulator delivers the
    // signed events of both organisations' changes: the Webhooks row has data.
    let webhook_port = free_port();
    let demo = organisations_exporter(&demo_sim, DASHBOARD_ORGS, dir.path(), Some(webhook_port));
    for o in DASHBOARD_ORGS {
        demo_sim
            .sim
            .organization(o)
            .expect("the organisation")
            .subscribe_webhook(
                &format!("http://127.0.0.1:{webhook_port}/webhooks/qonto/{o}"),
                WEBHOOK_SECRET,
            )
            .expect("the simulator subscribes");
    }
    let auth_sim = Sim::start(two_organisations(50, None, AUTH_ORGS)).await;
    let auth = organisations_exporter(&auth_sim, AUTH_ORGS, dir.path(), None);
    let expiry_sim = Sim::start(SimConfig {
        links: 80,
        ..SimConfig::default()
    })
    .await;
    // Nothing open at first, so nothing expires: the alert can only come from the scenario.
    expiry_sim.sim.mutate(Mutation::Expire(usize::MAX));
    let expiry = scenario_exporter(&expiry_sim);
    for e in [&demo, &auth, &expiry] {
        e.wait_ready(Duration::from_secs(30)).await;
    }
    // The connection status is checked right after each poll: give the first check time to end
    // on both organisations, so that its state set is among the names exported. The payments
    // counter appears at the first payment read (a link seen becoming paid: from the second poll,
    // the simulator evolving every second): wait for it too on both organisations. So does the
    // webhook delivery lag histogram, at the first event received.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let exposition = demo.scrape().await;
        let has = |prefix: &str, o: &str| {
            exposition
                .lines()
                .any(|l| l.starts_with(prefix) && l.contains(&format!("organization=\"{o}\"")))
        };
        let checked = DASHBOARD_ORGS.iter().all(|o| {
            has("qonto_payment_links_connection_status{", o)
                && has("qonto_payment_links_payments_total{", o)
                && has("qonto_exporter_webhook_delivery_lag_seconds_bucket{", o)
        });
        if checked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection status, payments read or webhook event for both organisations within \
             15s:\n{exposition}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // ------------------------------------------------------------------ servers
    let webhook = Webhook::start();
    let am_dir = dir.path().join("alertmanager");
    std::fs::create_dir_all(&am_dir).unwrap();
    let mut am = Alertmanager::start(&am_dir, &alertmanager_config(&webhook.url())).await;

    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let rules_path = prom_dir.join("rules.yml");
    std::fs::write(&rules_path, rules_for_test()).unwrap();
    let config = prometheus_config(
        &rules_path,
        am.port,
        JOB,
        &[demo.port, auth.port, expiry.port],
    );
    let mut prom = Prometheus::start(&prom_dir, &config).await;
    let demo_instance = format!("127.0.0.1:{}", demo.port);
    let auth_instance = format!("127.0.0.1:{}", auth.port);
    let expiry_instance = format!("127.0.0.1:{}", expiry.port);
    eprintln!("e2e: servers up after {:?}", started.elapsed());

    // ------------------------------------------------------------------ metric names
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("grafana/qonto-payment-links.json")).unwrap(),
    )
    .expect("dashboard JSON");
    let targets_ = dashboard_targets(&dashboard);
    let variables = dashboard_variables(&dashboard);
    let rules = committed_rules();
    let exported = sample_names(&demo.scrape().await);
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    let exprs = targets_
        .iter()
        .map(|t| (t.name.clone(), t.expr.clone()))
        .chain(variables.iter().map(|v| (v.0.clone(), v.1.clone())))
        .chain(rules.iter().map(|(n, e)| (format!("rule {n}"), e.clone())));
    for (where_, expr) in exprs {
        for name in promql_metric_names(&expr) {
            if !exported.contains(&name) {
                missing.push(format!("{where_} uses {name}"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "metric names used by the dashboard or the rules that the exporter does not export:\n{}",
        missing.join("\n")
    );
    assert!(used.len() >= 10, "too few metric names found: {used:?}");
    eprintln!(
        "e2e: {} metric names used by the dashboard and rules, all exported",
        used.len()
    );

    // ------------------------------------------------------------------ scenarios start now
    // The alerts are not firing before the faults (the scenario causes them) ...
    let ready = format!(
        "count(qonto_exporter_credentials_refused{{job=\"{JOB}\",instance=\"{auth_instance}\"}} == 0) == 2 \
         and on() count(qonto_payment_links_expiring_amount{{job=\"{JOB}\",instance=\"{expiry_instance}\",within=\"24h\"}}) > 0 \
         and on() count(qonto:expiring_amount_threshold{{job=\"{JOB}\",instance=\"{expiry_instance}\"}}) > 0"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !prom.query(&ready).await.is_ok_and(|r| !r.is_empty()) {
        prom.daemon.assert_running();
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the scenario exporters within 30s ({ready}); logs:\n{}",
            prom.daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The alert's threshold per currency (the mixin's per-currency thresholds and default).
    let thresholds: BTreeMap<String, f64> = prom
        .query(&format!(
            "qonto:expiring_amount_threshold{{job=\"{JOB}\",instance=\"{expiry_instance}\"}}"
        ))
        .await
        .unwrap()
        .iter()
        .map(|s| {
            let currency = s["metric"]["currency"].as_str().unwrap_or_default();
            (currency.to_owned(), value(s))
        })
        .collect();
    assert!(
        !thresholds.is_empty(),
        "the threshold recording rule evaluates"
    );
    let threshold = |currency: &str| thresholds.get(currency).copied().unwrap_or(f64::INFINITY);
    let baseline = prom
        .query(&format!(
            "sum by (currency) (qonto_payment_links_expiring_amount{{job=\"{JOB}\",instance=\"{expiry_instance}\",within=\"24h\"}})"
        ))
        .await
        .unwrap();
    for s in &baseline {
        assert!(
            value(s) <= threshold(s["metric"]["currency"].as_str().unwrap_or_default()),
            "scenario precondition: the simulator already has {} {} expiring within 24h, above the \
             threshold {thresholds:?}; choose other SimConfig links/seed",
            value(s),
            s["metric"]["currency"]
        );
    }
    // ... then the faults.
    let client = reqwest::Client::new();
    let r = client
        .post(format!(
            "{}/_sim/faults?organization={}",
            auth_sim.url(),
            AUTH_ORGS[1]
        ))
        .header("content-type", "application/json")
        .body(r#"{"kind":"status","code":401,"times":1000000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "fault injected");
    // The second organisation of the dashboard's exporter can no longer take payments.
    let r = client
        .post(format!(
            "{}/_sim/connection?organization={}",
            demo_sim.url(),
            DASHBOARD_ORGS[1]
        ))
        .header("content-type", "application/json")
        .body(r#"{"status":"disabled"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "connection disabled");
    for mutation in [
        r#"{"kind":"create","count":60}"#,
        r#"{"kind":"expire_soon","count":100000,"within":"1h"}"#,
    ] {
        let r = client
            .post(format!("{}/_sim/mutate", expiry_sim.url()))
            .header("content-type", "application/json")
            .body(mutation)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "mutation {mutation} applied");
    }
    let open_by_currency = open_amounts(&expiry_sim.sim.links_json());
    assert!(
        open_by_currency.iter().any(|(c, a)| *a > threshold(c)),
        "scenario precondition: the open links now expiring within 1h ({open_by_currency:?}) do \
         not exceed the threshold {thresholds:?} in any currency; create more links"
    );
    let scenarios_started = Instant::now();

    // ------------------------------------------------------------------ dashboard queries
    let now = unix_now();
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let subst = |s: &str| substitute(s, JOB, &demo_instance);
    loop {
        pending.clear();
        for t in &targets_ {
            let expr = subst(&t.expr);
            let res = if t.instant {
                prom.query(&expr).await
            } else {
                prom.api(
                    "/api/v1/query_range",
                    &[
                        ("query", expr.clone()),
                        ("start", (unix_now() - 60.0).to_string()),
                        ("end", unix_now().to_string()),
                        ("step", "1".to_owned()),
                    ],
                )
                .await
                .map(|d| d["result"].as_array().cloned().unwrap_or_default())
            };
            let orgs_of = |series: &[Value]| -> BTreeSet<String> {
                series
                    .iter()
                    .filter_map(|s| s["metric"]["organization"].as_str().map(str::to_owned))
                    .collect()
            };
            let per_org = t.expr.contains("$organization");
            match res {
                Ok(series)
                    if per_org && !DASHBOARD_ORGS.iter().all(|o| orgs_of(&series).contains(*o)) =>
                {
                    pending.insert(
                        t.name.clone(),
                        format!(
                            "{expr}: not every organisation has data: {:?}",
                            orgs_of(&series)
                        ),
                    );
                }
                Ok(series) if has_data(&series) => {}
                Ok(series) => {
                    pending.insert(t.name.clone(), format!("{expr}: no data: {series:?}"));
                }
                Err(e) => {
                    pending.insert(t.name.clone(), format!("{expr}: {e}"));
                }
            }
        }
        for (name, query) in &variables {
            let (selector, label) = label_values(query);
            let res = prom
                .api(
                    "/api/v1/series",
                    &[
                        ("match[]", subst(&selector)),
                        ("start", (now - 120.0).to_string()),
                    ],
                )
                .await;
            let values: BTreeSet<String> = res
                .iter()
                .flat_map(|d| d.as_array().cloned().unwrap_or_default())
                .filter_map(|s| s[&label].as_str().map(str::to_owned))
                .collect();
            let want: Vec<String> = match label.as_str() {
                "job" => vec![JOB.to_owned()],
                "instance" => vec![demo_instance.clone()],
                "organization" => DASHBOARD_ORGS.iter().map(|o| (*o).to_owned()).collect(),
                _ => Vec::new(),
            };
            let ok = !values.is_empty() && want.iter().all(|w| values.contains(w));
            if !ok {
                pending.insert(name.clone(), format!("{query}: values {values:?}, {res:?}"));
            }
        }
        if pending.is_empty() || Instant::now() > deadline {
            break;
        }
        prom.daemon.assert_running();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        pending.is_empty(),
        "dashboard queries without data (job={JOB}, instance={demo_instance}, currency=.+, \
         $__rate_interval={RATE_INTERVAL}):\n{}",
        pending
            .iter()
            .map(|(k, v)| format!("  {k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "e2e: {} dashboard targets and {} variable queries return data ({:?})",
        targets_.len(),
        variables.len(),
        started.elapsed()
    );

    // ------------------------------------------------------------------ rules healthy
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let data = prom.api("/api/v1/rules", &[]).await.unwrap();
        let loaded: Vec<(String, String, String)> = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["health"].as_str().unwrap_or_default().to_owned(),
                    r["lastError"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let ok = loaded.len() == rules.len() && loaded.iter().all(|(_, h, _)| h == "ok");
        if ok {
            eprintln!("e2e: {} rules loaded, all health ok", loaded.len());
            break;
        }
        last = format!("{} of {} rules: {loaded:?}", loaded.len(), rules.len());
        assert!(
            Instant::now() < deadline,
            "rules not all healthy within 20s: {last}\nprometheus logs:\n{}",
            prom.daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(last);

    // ------------------------------------------------------------------ alerts at the webhook
    let deadline = scenarios_started + Duration::from_secs(45);
    let (mut refused, mut expiring, mut disconnected) = (None, None, None);
    while refused.is_none() || expiring.is_none() || disconnected.is_none() {
        let alerts = webhook.alerts();
        let find = |name: &str, instance: &str| {
            alerts
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == name
                        && a["labels"]["job"] == JOB
                        && a["labels"]["instance"] == instance
                        && a["status"] == "firing"
                })
                .cloned()
        };
        refused = refused.or_else(|| find("QontoCredentialsRefused", &auth_instance));
        // The healthy organisation of the same process never gets the alert.
        let wrongly = alerts.iter().find(|a| {
            a["labels"]["alertname"] == "QontoCredentialsRefused"
                && a["labels"]["organization"] != AUTH_ORGS[1]
        });
        assert!(
            wrongly.is_none(),
            "QontoCredentialsRefused for an organisation whose credentials work: {wrongly:#?}"
        );
        expiring = expiring.or_else(|| find(EXPIRING_ALERT, &expiry_instance));
        disconnected = disconnected.or_else(|| find(CONNECTION_ALERT, &demo_instance));
        // Only the organisation whose connection was disabled gets it: not the other of the same
        // process, nor those of the other exporters (all enabled).
        let wrongly = alerts.iter().find(|a| {
            a["labels"]["alertname"] == CONNECTION_ALERT
                && (a["labels"]["organization"] != DASHBOARD_ORGS[1]
                    || a["labels"]["instance"] != demo_instance.as_str())
        });
        assert!(
            wrongly.is_none(),
            "{CONNECTION_ALERT} for an organisation whose connection is enabled: {wrongly:#?}"
        );
        if refused.is_some() && expiring.is_some() && disconnected.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let firing = prom.query("ALERTS").await;
            panic!(
                "alerts did not reach the webhook within 45s of the faults (credentials refused: {}, \
                 money expiring: {}, connection not enabled: {}).\nwebhook received: {:#?}\n\
                 ALERTS in Prometheus: {firing:?}\nalertmanager logs:\n{}\nprometheus logs:\n{}\n\
                 auth exporter logs:\n{}",
                refused.is_some(),
                expiring.is_some(),
                disconnected.is_some(),
                webhook.received.lock().unwrap(),
                am.daemon.logs(),
                prom.daemon.logs(),
                auth.logs()
            );
        }
        am.daemon.assert_running();
        prom.daemon.assert_running();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = refused.unwrap();
    assert_eq!(refused["labels"]["severity"], "critical", "{refused:#}");
    assert_eq!(
        refused["labels"]["organization"], AUTH_ORGS[1],
        "the alert names the organisation refused: {refused:#}"
    );
    assert_eq!(
        refused["labels"]["instance"],
        auth_instance.as_str(),
        "{refused:#}"
    );
    assert!(
        refused["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{refused:#}"
    );
    assert!(
        refused["annotations"]["description"]
            .as_str()
            .is_some_and(|s| s.contains(&auth_instance) && s.contains(JOB)),
        "the description names the instance and job: {refused:#}"
    );
    assert!(
        refused["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("docs/runbook.md#qontocredentialsrefused")),
        "{refused:#}"
    );
    let expiring = expiring.unwrap();
    assert_eq!(expiring["labels"]["severity"], "warning", "{expiring:#}");
    assert_eq!(
        expiring["labels"]["organization"], "default",
        "the single-organisation flags' organisation: {expiring:#}"
    );
    assert_eq!(
        expiring["labels"]["instance"],
        expiry_instance.as_str(),
        "{expiring:#}"
    );
    let currency = expiring["labels"]["currency"].as_str().unwrap_or_default();
    assert!(currency.len() == 3, "a currency label: {expiring:#}");
    assert!(
        expiring["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains(currency)),
        "{expiring:#}"
    );
    let disconnected = disconnected.unwrap();
    assert_eq!(
        disconnected["labels"]["severity"], "critical",
        "{disconnected:#}"
    );
    assert_eq!(
        disconnected["labels"]["organization"], DASHBOARD_ORGS[1],
        "the alert names the organisation whose connection is disabled: {disconnected:#}"
    );
    assert!(
        disconnected["labels"]["status"].is_null(),
        "the alert carries no status label: {disconnected:#}"
    );
    assert!(
        disconnected["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("its status is disabled")
                && d.contains(&demo_instance)
                && d.contains(DASHBOARD_ORGS[1])),
        "the description names the status, the instance and the organisation: {disconnected:#}"
    );
    assert!(
        disconnected["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("docs/runbook.md#qontopaymentlinksconnectionnotenabled")),
        "{disconnected:#}"
    );
    eprintln!(
        "e2e: webhook received QontoCredentialsRefused {{job={JOB}, instance={auth_instance}, \
         severity=critical}}, QontoMoneyExpiringSoon {{job={JOB}, instance={expiry_instance}, \
         currency={currency}, severity=warning}} and {CONNECTION_ALERT} {{job={JOB}, \
         instance={demo_instance}, organization={}, severity=critical}} {:?} after the faults; \
         whole test {:?}",
        DASHBOARD_ORGS[1],
        scenarios_started.elapsed(),
        started.elapsed()
    );
    assert!(
        started.elapsed() < WHOLE_TEST,
        "the end-to-end test took {:?}, over its {WHOLE_TEST:?} bound",
        started.elapsed()
    );
}

/// The organisations of the dashboard's exporter, and of the auth scenario's (the second is
/// the one refused).
const DASHBOARD_ORGS: [&str; 2] = ["acme", "globex"];
const AUTH_ORGS: [&str; 2] = ["healthy-org", "refused-org"];

/// Two organisations on one simulator, each reached with the Bearer token `token-<name>`.
fn two_organisations(links: usize, evolve: Option<Duration>, names: [&str; 2]) -> SimConfig {
    SimConfig {
        name: names[0].to_owned(),
        links,
        evolve_every: evolve,
        access_tokens: vec![format!("token-{}", names[0])],
        more_organizations: vec![SimOrganization {
            links,
            seed: 2,
            evolve_every: evolve,
            access_tokens: vec![format!("token-{}", names[1])],
            ..SimOrganization::new(names[1])
        }],
        ..SimConfig::default()
    }
}

/// The secret of the dashboard exporter's webhook subscriptions.
const WEBHOOK_SECRET: &str = "e2e-webhook-secret-0123456789abcdef0123456789";

/// An exporter polling both organisations of `sim` every second (`--config.file`, tokens by
/// file), reading the payments of up to 100 links a poll sees becoming paid (`--collect.payments`,
/// off by default), so that the dashboard's payments panels have data; with `webhook_port`, its
/// webhook receiver listens there (secret [`WEBHOOK_SECRET`]).
fn organisations_exporter(
    sim: &Sim,
    names: [&str; 2],
    dir: &std::path::Path,
    webhook_port: Option<u16>,
) -> Exporter {
    let mut config = String::from("organizations:\n");
    for n in names {
        let token = dir.join(format!("{n}.token"));
        std::fs::write(&token, format!("token-{n}\n")).unwrap();
        config.push_str(&format!(
            "  - name: {n}\n    api_url: {}\n    access_token_file: {}\n",
            sim.url(),
            token.display()
        ));
    }
    let file = dir.join(format!("{}.yml", names[0]));
    std::fs::write(&file, config).unwrap();
    let file = file.display().to_string();
    let mut args = vec![
        "--config.file",
        &file,
        "--poll.interval",
        "1s",
        "--collect.payments",
        "100",
        "--log.level",
        "debug",
    ];
    let listen = webhook_port.map(|p| format!("127.0.0.1:{p}"));
    let mut envs = Vec::new();
    if let Some(listen) = &listen {
        args.extend(["--webhook.listen-address", listen.as_str()]);
        envs.push(("QONTO_WEBHOOK_SECRET", WEBHOOK_SECRET));
    }
    Exporter::start(&args, &envs)
}

/// An exporter polling `sim` every second with a static token (the simulator accepts any).
fn scenario_exporter(sim: &Sim) -> Exporter {
    Exporter::start(
        &[
            "--qonto.api-url",
            &sim.url(),
            "--poll.interval",
            "1s",
            "--log.level",
            "debug",
        ],
        &[("QONTO_ACCESS_TOKEN", "e2e-test-token")],
    )
}

/// The sum of the open links' amounts, by currency.
fn open_amounts(links: &Value) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for l in links.as_array().expect("links array") {
        if l["status"] == "open" {
            let currency = l["amount"]["currency"].as_str().unwrap().to_owned();
            let v: f64 = l["amount"]["value"].as_str().unwrap().parse().unwrap();
            *sums.entry(currency).or_insert(0.0) += v;
        }
    }
    sums
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The value of an instant-vector sample.
fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// True when some series has some value that is a number (not NaN).
fn has_data(series: &[Value]) -> bool {
    series.iter().any(|s| {
        let vals: Vec<&Value> = match s.get("values").and_then(Value::as_array) {
            Some(vs) => vs.iter().map(|v| &v[1]).collect(),
            None => vec![&s["value"][1]],
        };
        vals.iter()
            .filter_map(|v| v.as_str())
            .any(|v| v.parse::<f64>().is_ok_and(|x| !x.is_nan()))
    })
}

/// Grafana's variables as the dashboard would expand them with the given job and instance
/// selected, currency on "All" (its allValue `.+`), a 1 s scrape interval and a 1 h range.
fn substitute(expr: &str, job: &str, instance: &str) -> String {
    let mut s = expr.to_owned();
    for (var, val) in [
        ("__rate_interval", RATE_INTERVAL),
        ("__interval_ms", "1000"),
        ("__interval", "1s"),
        ("__range_ms", "3600000"),
        ("__range_s", "3600"),
        ("__range", "1h"),
        ("datasource", "prometheus"),
        ("instance", instance),
        ("currency", ".+"),
        ("organization", ".+"),
        ("job", job),
    ] {
        s = s.replace(&format!("${{{var}}}"), val);
        s = s.replace(&format!("${var}"), val);
    }
    assert!(
        !s.contains('$'),
        "a dashboard variable the test does not substitute: {expr}"
    );
    s
}

struct Target {
    name: String,
    expr: String,
    instant: bool,
}

/// Every panel target of the dashboard, rows' nested panels included.
fn dashboard_targets(dash: &Value) -> Vec<Target> {
    fn walk(panels: &Value, out: &mut Vec<Target>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(Target {
                    name: format!(
                        "panel {:?} target {}",
                        p["title"].as_str().unwrap_or_default(),
                        t["refId"].as_str().unwrap_or_default()
                    ),
                    expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                    instant: t["instant"] == true && t["range"] != true,
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    assert!(!out.is_empty(), "the dashboard has no panel target");
    out
}

/// `(name, query)` of the dashboard's query variables.
fn dashboard_variables(dash: &Value) -> Vec<(String, String)> {
    dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = match &v["query"] {
                Value::Object(o) => o["query"].as_str().unwrap_or_default().to_owned(),
                q => q.as_str().unwrap_or_default().to_owned(),
            };
            (
                format!("variable {}", v["name"].as_str().unwrap_or_default()),
                q,
            )
        })
        .collect()
}

/// `label_values(selector, label)` → (selector, label).
fn label_values(query: &str) -> (String, String) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("a variable query the test does not know: {query}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .expect("label_values(selector, label)");
    (selector.trim().to_owned(), label.trim().to_owned())
}

/// `(name, expr)` of every rule of the committed rules file.
fn committed_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/rules.yml")).unwrap();
    let doc: serde_json::Value = serde_norway::from_str(&text).expect("rules.yml parses");
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            (name.to_owned(), r["expr"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The committed rules, with only the `for:` of `SHORTENED_ALERTS` lowered to 1s.
fn rules_for_test() -> String {
    let mut text = std::fs::read_to_string(repo().join("deploy/prometheus/rules.yml")).unwrap();
    for alert in SHORTENED_ALERTS {
        let marker = format!("- alert: {alert}\n");
        let start = text
            .find(&marker)
            .unwrap_or_else(|| panic!("rules.yml has no alert {alert}"));
        let end = text[start + marker.len()..]
            .find("- alert: ")
            .map_or(text.len(), |i| start + marker.len() + i);
        let block = &text[start..end];
        let line = block
            .lines()
            .find(|l| l.trim_start().starts_with("for: "))
            .unwrap_or_else(|| panic!("{alert} has no `for:` to shorten"));
        let indent = &line[..line.len() - line.trim_start().len()];
        let replacement = format!(
            "{indent}# e2e test only: lowered from `{}` so the scenario fires within the test's \
             time bound; the committed rules.yml is unchanged.\n{indent}for: 1s",
            line.trim()
        );
        let block = block.replacen(line, &replacement, 1);
        text = format!("{}{}{}", &text[..start], block, &text[end..]);
    }
    text
}

/// A Prometheus configuration scraping `ports` on 127.0.0.1 as the targets of one job.
fn prometheus_config(rules: &std::path::Path, am_port: u16, job: &str, ports: &[u16]) -> String {
    let mut s = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
         scrape_configs:\n",
        rules = rules.display()
    );
    let targets: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    s += &format!(
        "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    s
}

fn alertmanager_config(webhook: &str) -> String {
    format!(
        "route:\n  receiver: webhook\n  group_by: [alertname, job, instance, organization]\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: webhook\n    webhook_configs:\n      - url: {webhook}\n        \
         send_resolved: false\n"
    )
}
