//! The monitoring mixin (`mixin/`, jsonnet) is the one source of the alert rules, the
//! PrometheusRule and the Grafana dashboard. These tests render it with the `jsonnet` module
//! from PyPI (through `scripts/render-mixin`) and check that:
//! - the committed `deploy/prometheus/rules.yml`, `deploy/kubernetes/prometheusrule.yaml` and
//!   `grafana/qonto-payment-links.json` are exactly its render (no hand edit, no stale file);
//! - every `_config` field reaches every rule and panel that uses it (job selector, per-currency
//!   thresholds with a default, expiry window, stale-data threshold, runbook URL), and the
//!   per-currency thresholds of a changed config page as configured (`promtool test rules`);
//! - the default job selector is exact and is the job both bundled setups (and the README's
//!   scrape config) produce;
//! - the dashboard's "Last poll" tells an exporter whose polls have all failed from one whose first
//!   poll is still running (`promtool`), per organisation;
//! - every per-organisation alert and recording rule keeps the `organization` label in its
//!   aggregations and joins and names the organisation, while the process-wide alerts have none;
//! - every dashboard query of a per-organisation metric matches the `organization` variable and
//!   keeps the label, and the queries of process-wide metrics do not match it;
//! - the runbook names only panels and rows that the dashboard has.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::servers::require_tool;
use common::{promtool, repo};
use serde_json::Value;

const RENDERED: [&str; 3] = [
    "deploy/prometheus/rules.yml",
    "deploy/kubernetes/prometheusrule.yaml",
    "grafana/qonto-payment-links.json",
];

/// Runs `scripts/render-mixin` with `args`; returns (success, stdout + stderr).
fn render_mixin(args: &[&str]) -> (bool, String) {
    require_tool("python3", "python3");
    let out = Command::new("python3")
        .arg(repo().join("scripts/render-mixin"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("python3 runs scripts/render-mixin");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), log)
}

/// Renders `mixin` (a jsonnet file) into a new temporary directory.
fn render_into(mixin: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = render_mixin(&[
        "--mixin",
        mixin.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        ok,
        "scripts/render-mixin failed (needs `pip install jsonnet pyyaml`; scripts/test installs \
         them):\n{log}"
    );
    dir
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The first line where two texts differ, for a readable failure.
fn first_difference(have: &str, want: &str) -> String {
    let (mut h, mut w) = (have.lines(), want.lines());
    for n in 1.. {
        match (h.next(), w.next()) {
            (None, None) => return "identical".into(),
            (a, b) if a == b => continue,
            (a, b) => return format!("line {n}:\n  committed: {a:?}\n  rendered:  {b:?}"),
        }
    }
    unreachable!()
}

#[test]
fn committed_rules_prometheusrule_and_dashboard_are_the_mixin_render() {
    let dir = render_into(&repo().join("mixin/mixin.libsonnet"));
    let stale: Vec<String> = RENDERED
        .iter()
        .filter_map(|rel| {
            let have = std::fs::read_to_string(repo().join(rel)).unwrap_or_default();
            let want = read(dir.path(), rel);
            (have != want).then(|| format!("{rel}: {}", first_difference(&have, &want)))
        })
        .collect();
    assert!(
        stale.is_empty(),
        "committed files differ from the mixin's render; edit mixin/ (not the rendered files) and \
         run scripts/render-mixin:\n{}",
        stale.join("\n")
    );
    // The script's own --check agrees.
    let (ok, log) = render_mixin(&["--check"]);
    assert!(ok, "{log}");
}

/// The `groups` of a rules file and of a PrometheusRule's `spec`.
fn groups(rules_yml: &str, prometheusrule_yaml: &str) -> (Value, Value) {
    let rules: Value = serde_norway::from_str(rules_yml).expect("rules.yml parses");
    let operator: Value =
        serde_norway::from_str(prometheusrule_yaml).expect("prometheusrule.yaml parses");
    assert_eq!(operator["kind"], "PrometheusRule");
    (rules["groups"].clone(), operator["spec"]["groups"].clone())
}

/// Every `expr` of every rule.
fn exprs(groups: &Value) -> Vec<(String, String)> {
    groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            (name.to_owned(), r["expr"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Every selector `name{matchers}` in `expr`, as (name, matchers without the braces).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('{') {
        let name: String = rest[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .chars()
            .rev()
            .collect();
        let (matchers, end) = match rest[i..].find('}') {
            Some(j) => (&rest[i + 1..i + j], i + j + 1),
            None => (&rest[i + 1..], rest.len()),
        };
        found.push((name, matchers.to_owned()));
        rest = &rest[end..];
    }
    found
}

/// Every selector `name{matchers}` of a metric read from the exporter (or `up`) in `expr`.
fn exporter_selectors(expr: &str) -> Vec<String> {
    selectors(expr)
        .into_iter()
        .filter(|(name, _)| name == "up" || (name.starts_with("qonto_") && !name.contains(':')))
        .map(|(name, matchers)| format!("{name}{{{matchers}}}"))
        .collect()
}

/// The series without an `organization` label: Prometheus's per-target `up`, and what the
/// exporter exports once per process (the request budget is per IP, shared by the process's
/// organisations). scripts/check-deploy holds the same list (checked below).
const PROCESS_WIDE_METRICS: [&str; 10] = [
    "up",
    "qonto_exporter_build_info",
    "qonto_exporter_api_requests_10m",
    "qonto_exporter_api_budget_10m_usage_ratio",
    "qonto_exporter_organizations",
    "qonto_exporter_config_last_reload_successful",
    "qonto_exporter_config_last_reload_success_timestamp_seconds",
    "qonto_exporter_config_reloads_total",
    "qonto_exporter_config_reload_failures_total",
    "qonto_exporter_shard_info",
];

/// Whether the series of metric `name` carry `organization`: every qonto_* metric and qonto:*
/// recording rule but the process-wide ones.
fn per_organization(name: &str) -> bool {
    !PROCESS_WIDE_METRICS.contains(&name)
        && !name.starts_with("process_")
        && (name.starts_with("qonto_") || name.starts_with("qonto:"))
}

/// The alerts about a process rather than an organisation: no `organization` label.
const PROCESS_WIDE_ALERTS: [&str; 4] = [
    "QontoExporterDown",
    "QontoApiRateLimited",
    "QontoApiBudgetHigh",
    "QontoConfigReloadFailed",
];

/// The label lists of every `keyword (labels)` clause in `expr` (keyword: by, without, on,
/// ignoring), each with whether a `group_left`/`group_right` follows it.
fn clauses(expr: &str, keyword: &str) -> Vec<(Vec<String>, bool)> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = expr[from..].find(keyword).map(|i| from + i) {
        from = i + keyword.len();
        let alone = !expr[..i].chars().next_back().is_some_and(word)
            && !expr[from..].chars().next().is_some_and(word);
        let after = expr[from..].trim_start();
        if !alone || !after.starts_with('(') {
            continue;
        }
        let open = expr.len() - after.len();
        let Some(close) = expr[open..].find(')').map(|j| open + j) else {
            break;
        };
        let labels = expr[open + 1..close]
            .split(',')
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        let grouped = expr[close + 1..].trim_start().starts_with("group_");
        found.push((labels, grouped));
    }
    found
}

#[test]
fn clauses_finds_grouping_and_matching_labels() {
    let expr = "sum by (job, organization) (x) > on (job) group_left () y or z unless on(a) w \
                and expiration (q) and ignoring (b) v and max by(c)(u)";
    assert_eq!(
        clauses(expr, "by"),
        vec![
            (vec!["job".to_owned(), "organization".to_owned()], false),
            (vec!["c".to_owned()], false)
        ]
    );
    assert_eq!(
        clauses(expr, "on"),
        vec![
            (vec!["job".to_owned()], true),
            (vec!["a".to_owned()], false)
        ]
    );
    assert_eq!(
        clauses(expr, "ignoring"),
        vec![(vec!["b".to_owned()], false)]
    );
    assert_eq!(
        selectors(r#"a{x="1"} + b:c{} + d"#),
        vec![
            ("a".to_owned(), r#"x="1""#.to_owned()),
            ("b:c".to_owned(), String::new())
        ]
    );
}

#[test]
fn every_config_field_reaches_the_rules_and_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let mixin = dir.path().join("custom.jsonnet");
    let repo_mixin = repo().join("mixin/mixin.libsonnet");
    std::fs::write(
        &mixin,
        format!(
            "(import {:?}) + {{ _config+:: {{\n\
               qontoSelector: 'job=\"payments-qonto\", namespace=\"pay\"',\n\
               expiringWindow: '1d',\n\
               expiringAmountThresholds: {{ default: 500, EUR: 2500 }},\n\
               dataStaleAfterSeconds: 1800,\n\
               processLabels: ['instance', 'pod', 'node'],\n\
               connectionNotEnabledFor: '7m',\n\
               connectionStatusKeptFor: '2h',\n\
               collectionsStalledAfter: '3d',\n\
               failedPaymentsRatio: 0.4,\n\
               failedPaymentsWindow: '2h',\n\
               failedPaymentsMin: 8,\n\
               webhookBadSignaturesMin: 9,\n\
               webhookBadSignaturesWindow: '20m',\n\
               webhookSilentWindow: '45m',\n\
               webhookSilentFor: '25m',\n\
               runbookUrlBase: 'https://runbooks.example/qonto.md',\n\
             }} }}\n",
            repo_mixin.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = render_into(&mixin);
    let rules_yml = read(out.path(), RENDERED[0]);
    let (rules, operator) = groups(&rules_yml, &read(out.path(), RENDERED[1]));
    assert_eq!(
        rules, operator,
        "the PrometheusRule carries the same groups as rules.yml"
    );

    // The selector: in every selector of an exporter metric or `up`, and nothing of the default.
    let selector = r#"job="payments-qonto", namespace="pay""#;
    let mut checked = 0;
    for (name, expr) in exprs(&rules) {
        for s in exporter_selectors(&expr) {
            assert!(s.contains(selector), "rule {name}: {s} lacks the selector");
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} selectors found in the rules");
    let expr_of = |alert: &str| {
        exprs(&rules)
            .into_iter()
            .find(|(n, _)| n == alert)
            .unwrap_or_else(|| panic!("no rule {alert}"))
            .1
    };
    assert!(expr_of("QontoExporterDown").contains(&format!("absent(up{{{selector}}})")));
    assert!(
        !rules_yml.contains(r#"job="qonto-exporter""#),
        "the default selector remains"
    );
    // The labels a replaced process changes are aggregated away, on both sides.
    assert_eq!(
        expr_of("QontoInvalidLinks")
            .matches("max without (instance, pod, node) (")
            .count(),
        4,
        "{}",
        expr_of("QontoInvalidLinks")
    );

    // The connection alert's pending period and how long it keeps the last known status.
    let connection = rules
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .find(|r| r["alert"] == "QontoPaymentLinksConnectionNotEnabled")
        .expect("rule QontoPaymentLinksConnectionNotEnabled");
    assert_eq!(connection["for"], "7m", "{connection}");
    assert!(
        connection["expr"].as_str().unwrap().contains("[2h]"),
        "{connection}"
    );
    let description = connection["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("at least 7m") && description.contains("within the last 2h"),
        "{description}"
    );

    // The failed payments' ratio, window and minimum count: the recording rule counts over the
    // window (and the series that existed the window before), the alert reads it.
    let recorded = expr_of("qonto:payment_links_payments:increase2h");
    assert!(
        recorded.contains("[2h]") && recorded.contains("offset 2h") && !recorded.contains("1h"),
        "{recorded}"
    );
    let failing = expr_of("QontoPaymentsFailing");
    assert!(
        failing.contains("qonto:payment_links_payments:increase2h")
            && failing.contains("> 0.4")
            && failing.contains(">= 8")
            && !failing.contains("increase1h"),
        "{failing}"
    );

    // The webhook alerts' minimum, windows (the silent one also the wait after a process start,
    // in seconds) and pending period.
    let rule_of = |alert: &str| {
        rules
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("no rule {alert}"))
    };
    let bad = expr_of("QontoWebhookBadSignatures");
    assert!(
        bad.contains("[20m]")
            && bad.contains("offset 20m")
            && bad.contains(">= 9")
            && !bad.contains("15m"),
        "{bad}"
    );
    let silent = expr_of("QontoWebhooksSilent");
    assert!(
        silent.contains("[45m]")
            && silent.contains("offset 45m")
            && silent.contains("> 2700")
            && !silent.contains("30m"),
        "{silent}"
    );
    assert_eq!(rule_of("QontoWebhooksSilent")["for"], "25m");
    let description = rule_of("QontoWebhookBadSignatures")["annotations"]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        description.contains("last 20m") && description.contains("at least 9"),
        "{description}"
    );

    // The window, the stale-data threshold, the runbook URL.
    assert!(expr_of("QontoMoneyExpiringSoon").contains(r#"within="1d""#));
    assert!(expr_of("QontoExpiryWindowNotExported").contains(r#"within="1d""#));
    assert!(!rules_yml.contains("24h"), "the default window remains");
    assert_eq!(
        expr_of("QontoDataStale").matches("> 1800").count(),
        2,
        "both branches of QontoDataStale use the threshold: {}",
        expr_of("QontoDataStale")
    );
    let alerts: Vec<Value> = rules
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .filter(|r| r["alert"].is_string())
        .collect();
    let stale = alerts
        .iter()
        .find(|r| r["alert"] == "QontoDataStale")
        .unwrap();
    assert!(
        stale["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("(threshold 30m)"),
        "{stale}"
    );
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in &alerts {
        let want = format!(
            "https://runbooks.example/qonto.md#{}",
            a["alert"].as_str().unwrap().to_lowercase()
        );
        assert_eq!(a["annotations"]["runbook_url"], want.as_str());
    }

    // The thresholds: the default and the one currency configured, nothing else.
    let records: Vec<String> = rules
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .filter(|r| {
            r["record"]
                .as_str()
                .is_some_and(|n| n.starts_with("qonto:expiring_amount_threshold"))
        })
        .map(|r| format!("{} {} {}", r["record"], r["labels"]["currency"], r["expr"]))
        .collect();
    assert_eq!(
        records.len(),
        3,
        "default, EUR, and the per-series threshold: {records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.contains(":default") && r.contains("vector(500)"))
    );
    assert!(
        records
            .iter()
            .any(|r| r.contains(r#""EUR""#) && r.contains("vector(2500)"))
    );

    // The dashboard: every `within` matcher is the configured window; the job and instance
    // variables use the selector.
    let dash: Value = serde_json::from_str(&read(out.path(), RENDERED[2])).unwrap();
    let mut windows = BTreeSet::new();
    fn targets(ps: &Value, out: &mut Vec<String>) {
        for p in ps.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(t["expr"].as_str().unwrap_or_default().to_owned());
            }
            targets(&p["panels"], out);
        }
    }
    let mut panel_exprs = Vec::new();
    targets(&dash["panels"], &mut panel_exprs);
    for e in &panel_exprs {
        for part in e.split("within=\"").skip(1) {
            windows.insert(part.split('"').next().unwrap().to_owned());
        }
    }
    assert_eq!(
        windows,
        BTreeSet::from(["1d".to_owned()]),
        "{panel_exprs:?}"
    );
    let vars = dash["templating"]["list"].as_array().unwrap();
    for v in ["job", "instance"] {
        let q = vars.iter().find(|x| x["name"] == v).unwrap()["query"]
            .as_str()
            .unwrap();
        assert!(q.contains(selector), "variable {v}: {q}");
    }

    // And the thresholds page as configured: promtool on the changed rules.
    let tests = r#"
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'qonto_payment_links_expiring_amount{job="payments-qonto", namespace="pay", instance="a:1", organization="acme", currency="EUR", resource_type="Invoice", within="1d"}'
        values: '2400x10'
      - series: 'qonto_payment_links_expiring_amount{job="payments-qonto", namespace="pay", instance="a:1", organization="acme", currency="USD", resource_type="Invoice", within="1d"}'
        values: '600x10'
      - series: 'qonto_payment_links_expiring_amount{job="payments-qonto", namespace="pay", instance="a:1", organization="acme", currency="JPY", resource_type="Invoice", within="1d"}'
        values: '400x10'
      - series: 'qonto_payment_links_expiring_amount{job="payments-qonto", namespace="pay", instance="a:1", organization="acme", currency="EUR", resource_type="Invoice", within="7d"}'
        values: '99999x10'
      # Another organisation's 2400 EUR: together with acme's, above 2500; alone, not.
      - series: 'qonto_payment_links_expiring_amount{job="payments-qonto", namespace="pay", instance="a:1", organization="globex", currency="EUR", resource_type="Invoice", within="1d"}'
        values: '2400x10'
      - series: 'qonto_payment_links_expiring_amount{job="other", instance="b:1", organization="acme", currency="EUR", resource_type="Invoice", within="1d"}'
        values: '99999x10'
    alert_rule_test:
      - eval_time: 8m
        alertname: QontoMoneyExpiringSoon
        exp_alerts:
          - exp_labels: {severity: warning, job: payments-qonto, instance: "a:1", organization: acme, currency: USD}
            exp_annotations:
              summary: A large amount of unpaid payment links of organisation acme expires within 1d.
              description: >-
                600.00 USD of open payment links of organisation acme (reported by a:1) expire
                within the next 1d, above the USD threshold of 500.00
                (_config.expiringAmountThresholds in the mixin).
              runbook_url: https://runbooks.example/qonto.md#qontomoneyexpiringsoon
"#;
    std::fs::write(out.path().join("deploy/prometheus/rules.test.yml"), tests).unwrap();
    let o = promtool(
        &[
            "test",
            "rules",
            out.path()
                .join("deploy/prometheus/rules.test.yml")
                .to_str()
                .unwrap(),
        ],
        b"",
    );
    assert!(
        o.status.success(),
        "EUR 2400 < 2500 must not fire (nor two organisations' 2400 added up), USD 600 > default \
         500 must, JPY 400 must not, other jobs and windows must not count:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_mixin_refuses_a_threshold_currency_the_exporter_never_labels() {
    let dir = tempfile::tempdir().unwrap();
    let mixin = dir.path().join("bad.jsonnet");
    std::fs::write(
        &mixin,
        format!(
            "(import {:?}) + {{ _config+:: {{ expiringAmountThresholds+: {{ eur: 5 }} }} }}\n",
            repo().join("mixin/mixin.libsonnet").to_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, log) = render_mixin(&[
        "--mixin",
        mixin.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok, "a lower-case currency must be refused:\n{log}");
    assert!(log.contains("ISO 4217 codes in upper case"), "{log}");
}

/// The panel and row titles the runbook names: `panel "Title"` and `row "Title"` (a line break
/// may stand for the space after the keyword).
fn runbook_names(runbook: &str) -> Vec<(String, String)> {
    let text = runbook.replace('\n', " ");
    let mut names = Vec::new();
    for kind in ["panel", "row"] {
        let needle = format!("{kind} \"");
        let mut rest = text.as_str();
        while let Some(i) = rest.find(&needle) {
            let preceded_by_word = rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '-');
            let after = &rest[i + needle.len()..];
            let Some(end) = after.find('"') else { break };
            if !preceded_by_word {
                names.push((kind.to_owned(), after[..end].to_owned()));
            }
            rest = &after[end + 1..];
        }
    }
    names
}

#[test]
fn runbook_names_parses_panels_and_rows() {
    let names = runbook_names(
        "See panel \"Data age\" in row\n\"Exporter health\"; a sub-panel \"x\" is not one.\n\
         Panel \"Caps\" is not either; panel \"Last poll\".",
    );
    assert_eq!(
        names,
        vec![
            ("panel".to_owned(), "Data age".to_owned()),
            ("panel".to_owned(), "Last poll".to_owned()),
            ("row".to_owned(), "Exporter health".to_owned()),
        ]
    );
}

#[test]
fn the_runbook_names_only_panels_and_rows_of_the_dashboard() {
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("grafana/qonto-payment-links.json")).unwrap(),
    )
    .unwrap();
    let mut panels = BTreeSet::new();
    let mut rows = BTreeSet::new();
    fn walk(ps: &Value, panels: &mut BTreeSet<String>, rows: &mut BTreeSet<String>) {
        for p in ps.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            if p["type"] == "row" {
                rows.insert(title);
            } else {
                panels.insert(title);
            }
            walk(&p["panels"], panels, rows);
        }
    }
    walk(&dash["panels"], &mut panels, &mut rows);
    let names = runbook_names(&runbook);
    assert!(
        names.len() >= 15,
        "the runbook names only {} panels/rows; it should point at the dashboard: {names:?}",
        names.len()
    );
    let unknown: Vec<String> = names
        .iter()
        .filter(|(kind, title)| !(if kind == "row" { &rows } else { &panels }).contains(title))
        .map(|(kind, title)| format!("{kind} \"{title}\""))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/runbook.md names what the dashboard does not have: {unknown:?}\npanels: {panels:?}\n\
         rows: {rows:?}"
    );
}

/// The label matchers of `up{…}` in the committed QontoExporterDown: the mixin's `qontoSelector`.
fn committed_selector() -> String {
    let rules: Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join(RENDERED[0])).unwrap())
            .expect("rules.yml parses");
    let (_, expr) = exprs(&rules["groups"])
        .into_iter()
        .find(|(n, _)| n == "QontoExporterDown")
        .expect("QontoExporterDown");
    expr.strip_prefix("up{")
        .and_then(|r| r.split_once('}'))
        .map(|(s, _)| s.to_owned())
        .unwrap_or_else(|| panic!("QontoExporterDown does not start with up{{…}}: {expr}"))
}

/// The `job_name`s of the scrape configs in `config` (a Prometheus configuration) that scrape
/// a target on port 10157.
fn exporter_jobs(config: &Value) -> Vec<String> {
    config["scrape_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|sc| {
            sc["static_configs"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["targets"].as_array().cloned().unwrap_or_default())
                .any(|t| t.as_str().is_some_and(|t| t.ends_with(":10157")))
        })
        .map(|sc| sc["job_name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_default_selector_is_the_exact_job_the_bundled_setups_produce() {
    let selector = committed_selector();
    assert!(
        !selector.contains('~'),
        "the default qontoSelector `{selector}` is a regex: on a Prometheus shared with other \
         teams it selects their jobs too (another team's `qonto-webhook` would page \
         QontoExporterDown); make it exact"
    );
    let job = selector
        .strip_prefix("job=\"")
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("the default selector is not one exact job: {selector}"))
        .to_owned();

    // Compose: deploy/prometheus/prometheus.yml.
    let compose: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        exporter_jobs(&compose),
        vec![job.clone()],
        "deploy/prometheus/prometheus.yml scrapes the exporter under another job than the \
         rules select"
    );

    // prometheus-operator: the job label is the Service's name, unless the ServiceMonitor says
    // otherwise (jobLabel, or a relabeling that writes `job`).
    let monitor: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("deploy/kubernetes/servicemonitor.yaml")).unwrap(),
    )
    .unwrap();
    assert!(monitor["spec"]["jobLabel"].is_null(), "{monitor}");
    for e in monitor["spec"]["endpoints"].as_array().unwrap() {
        for r in e["relabelings"].as_array().into_iter().flatten() {
            assert_ne!(r["targetLabel"], "job", "a relabeling renames the job: {r}");
        }
    }
    let service: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("deploy/kubernetes/service.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(service["kind"], "Service");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service"
        );
    }
    assert_eq!(
        service["metadata"]["name"], job,
        "the ServiceMonitor's job (the Service's name) is not the one the rules select"
    );

    // The README's scrape config for a plain Prometheus.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut readme_jobs = Vec::new();
    for block in readme.split("```yaml\n").skip(1) {
        let block = block.split("\n```").next().unwrap();
        let Ok(doc) = serde_norway::from_str::<Value>(block) else {
            continue;
        };
        readme_jobs.extend(exporter_jobs(&doc));
    }
    assert_eq!(
        readme_jobs,
        vec![job],
        "the README's scrape config names the job otherwise than the rules select"
    );
}

#[test]
fn last_poll_says_failed_for_an_exporter_that_never_succeeded_and_not_yet_only_before_any_outcome()
{
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("grafana/qonto-payment-links.json")).unwrap(),
    )
    .unwrap();
    fn find<'a>(ps: &'a Value, title: &str) -> Option<&'a Value> {
        ps.as_array().into_iter().flatten().find_map(|p| {
            if p["title"] == title {
                Some(p)
            } else {
                find(&p["panels"], title)
            }
        })
    }
    let panel = find(&dash["panels"], "Last poll").expect("panel \"Last poll\"");
    let mapping = &panel["fieldConfig"]["defaults"]["mappings"][0]["options"];
    assert_eq!(mapping["0"]["text"], "failed", "{mapping}");
    assert_eq!(mapping["1"]["text"], "ok", "{mapping}");
    assert_eq!(mapping["2"]["text"], "not yet", "{mapping}");
    let expr = panel["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .replace("$job", "qonto-exporter")
        .replace("$instance", ".+")
        .replace("$organization", ".+");

    // Five organisations: healthy; first poll still running; every poll failed since the start
    // (each ends, after some seconds, as a failure); the last poll failed after earlier
    // successes; first poll still running while serving a poll restored from --storage.path
    // (the timestamp is that poll's end). The first four are polled by one exporter, so that
    // one's state never leaks into another's; the fifth by another.
    let series = |organization: &str, up: &str, ts: &str, duration: &str| {
        let instance = if organization == "restored" {
            "other:1"
        } else {
            "exporter:1"
        };
        let labels = format!(
            "job=\"qonto-exporter\", instance=\"{instance}\", organization=\"{organization}\""
        );
        format!(
            "      - series: 'qonto_up{{{labels}}}'\n        values: '{up}'\n\
             \x20     - series: 'qonto_exporter_last_success_timestamp_seconds{{{labels}}}'\n        values: '{ts}'\n\
             \x20     - series: 'qonto_exporter_last_poll_duration_seconds{{{labels}}}'\n        values: '{duration}'\n"
        )
    };
    let tests = format!(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n\
         {}{}{}{}{}\
         \x20   promql_expr_test:\n      - expr: {}\n        eval_time: 5m\n        exp_samples:\n\
         \x20         - labels: '{{instance=\"exporter:1\", organization=\"healthy\"}}'\n            value: 1\n\
         \x20         - labels: '{{instance=\"exporter:1\", organization=\"first-poll\"}}'\n            value: 2\n\
         \x20         - labels: '{{instance=\"exporter:1\", organization=\"never-succeeded\"}}'\n            value: 0\n\
         \x20         - labels: '{{instance=\"exporter:1\", organization=\"failing-now\"}}'\n            value: 0\n\
         \x20         - labels: '{{instance=\"other:1\", organization=\"restored\"}}'\n            value: 2\n",
        series("healthy", "1x5", "0+60x5", "0.8x5"),
        series("first-poll", "0x5", "0x5", "0x5"),
        series("never-succeeded", "0x5", "0x5", "0 3.5 2.1 30 4 2"),
        series(
            "failing-now",
            "1 1 0 0 0 0",
            "60 120 120 120 120 120",
            "0.8 0.9 30x4"
        ),
        series("restored", "0x5", "1700000000x5", "0x5"),
        serde_json::to_string(&expr).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("last-poll.test.yml");
    std::fs::write(&file, &tests).unwrap();
    let o = promtool(&["test", "rules", file.to_str().unwrap()], b"");
    assert!(
        o.status.success(),
        "panel \"Last poll\" ({expr}) must show failed (0) for an exporter whose polls have all \
         failed, not yet (2) only while the first poll runs (a restored poll included):\n{}{}\n\
         {tests}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every rule of the committed rules.yml.
fn committed_rules() -> Vec<Value> {
    let rules: Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join(RENDERED[0])).unwrap())
            .expect("rules.yml parses");
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn check_deploy_knows_the_same_process_wide_metrics() {
    let script = std::fs::read_to_string(repo().join("scripts/check-deploy")).unwrap();
    let block = script
        .split_once("PROCESS_WIDE = {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(b, _)| b)
        .expect("scripts/check-deploy defines PROCESS_WIDE = {...}");
    let listed: BTreeSet<&str> = block.split('"').skip(1).step_by(2).collect();
    assert_eq!(listed, PROCESS_WIDE_METRICS.into_iter().collect());
}

#[test]
fn per_organisation_rules_keep_the_organization_label_and_process_wide_ones_have_none() {
    let rules = committed_rules();
    let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for a in PROCESS_WIDE_ALERTS {
        assert!(names.contains(a), "no alert {a}: {names:?}");
    }
    assert!(names.contains("QontoConfigReloadFailed"), "{names:?}");
    let mut per_org = 0;
    for r in &rules {
        let expr = r["expr"].as_str().unwrap();
        let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
        let reads_per_org = selectors(expr).iter().any(|(n, _)| per_organization(n));
        let without = clauses(expr, "without");
        assert!(
            without
                .iter()
                .all(|(labels, _)| !labels.iter().any(|l| l == "organization")),
            "{name} aggregates organization away: {expr}"
        );
        if PROCESS_WIDE_ALERTS.contains(&name) {
            assert!(
                !expr.contains("organization"),
                "process-wide alert {name} must not keep organization: {expr}"
            );
            let text = format!("{}", r["annotations"]);
            assert!(!text.contains("$labels.organization"), "{name}: {text}");
            continue;
        }
        if r["record"].is_string() && !reads_per_org {
            // The per-currency constants (vector(…)) of the thresholds.
            continue;
        }
        assert!(
            reads_per_org,
            "{name} reads no per-organisation metric: classify it in PROCESS_WIDE_ALERTS or fix \
             the test: {expr}"
        );
        // Grouping and one-to-one matching keep organization; `on (…) group_left ()` joins a
        // series without it (process_start_time_seconds, the per-currency thresholds) onto
        // per-organisation ones, whose labels the result keeps.
        for (labels, grouped) in clauses(expr, "by")
            .into_iter()
            .chain(clauses(expr, "on").into_iter().filter(|(_, g)| !g))
        {
            assert!(
                labels.iter().any(|l| l == "organization"),
                "{name}: a clause ({labels:?}, group {grouped}) drops organization: {expr}"
            );
        }
        assert!(
            clauses(expr, "ignoring").is_empty(),
            "{name}: `ignoring` is not checked here: {expr}"
        );
        if let Some(annotations) = r["annotations"].as_object() {
            for key in ["summary", "description"] {
                let text = annotations[key].as_str().unwrap();
                assert!(
                    text.contains("{{ $labels.organization }}"),
                    "{name}'s {key} does not name the organisation: {text}"
                );
            }
            per_org += 1;
        }
    }
    assert!(per_org >= 9, "only {per_org} per-organisation alerts");
}

/// Every panel target of the dashboard: (panel title, target).
fn dashboard_targets(dash: &Value) -> Vec<(String, Value)> {
    fn walk(ps: &Value, out: &mut Vec<(String, Value)>) {
        for p in ps.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((title.clone(), t.clone()));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

#[test]
fn every_per_organisation_dashboard_query_matches_the_organization_variable_and_keeps_it() {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("grafana/qonto-payment-links.json")).unwrap(),
    )
    .unwrap();

    // The variable: multi-select, All, from qonto_up (there from each poller's start), before
    // currency (which it narrows).
    let vars = dash["templating"]["list"].as_array().unwrap();
    let position = |name: &str| {
        vars.iter()
            .position(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let org = &vars[position("organization")];
    assert_eq!(org["type"], "query");
    assert_eq!(org["multi"], true);
    assert_eq!(org["includeAll"], true);
    assert_eq!(org["allValue"], ".+");
    assert_eq!(org["datasource"]["uid"], "${datasource}");
    assert_eq!(
        org["query"],
        r#"label_values(qonto_up{job=~"$job", instance=~"$instance"}, organization)"#
    );
    assert!(position("instance") < position("organization"));
    assert!(position("organization") < position("currency"));
    let currency = vars[position("currency")]["query"].as_str().unwrap();
    assert!(
        currency.contains(r#"organization=~"$organization""#),
        "{currency}"
    );

    let (mut per_org, mut process_wide) = (0, 0);
    for (title, t) in dashboard_targets(&dash) {
        let expr = t["expr"].as_str().unwrap();
        let legend = t["legendFormat"].as_str().unwrap_or_default();
        let found = selectors(expr);
        assert!(!found.is_empty(), "panel {title:?}: no selector in {expr}");
        let org_query = found.iter().any(|(n, _)| per_organization(n));
        for (name, matchers) in &found {
            if per_organization(name) {
                assert!(
                    matchers.contains(r#"organization=~"$organization""#),
                    "panel {title:?}: {name}{{{matchers}}} lacks the organization matcher"
                );
                per_org += 1;
            } else {
                assert!(
                    !matchers.contains("organization"),
                    "panel {title:?}: process-wide {name} has no organization to match: {expr}"
                );
                process_wide += 1;
            }
        }
        assert!(
            !(org_query && found.iter().any(|(n, _)| !per_organization(n))),
            "panel {title:?} mixes per-organisation and process-wide series: {expr}"
        );
        let by = clauses(expr, "by");
        for (labels, _) in &by {
            assert_eq!(
                labels.iter().any(|l| l == "organization"),
                org_query,
                "panel {title:?}: `by ({labels:?})` (per organisation: {org_query}) in {expr}"
            );
        }
        assert!(clauses(expr, "without").is_empty(), "{expr}");
        // Amounts are in units of their currency: never added across currencies.
        if found.iter().any(|(n, _)| n.contains("amount")) {
            for (labels, _) in &by {
                assert!(
                    labels.iter().any(|l| l == "currency"),
                    "panel {title:?} adds amounts of several currencies: {expr}"
                );
            }
        }
        // Legends name the organisation wherever several can show (tables have columns).
        if t["format"] != "table" {
            assert_eq!(
                legend.contains("{{organization}}"),
                org_query,
                "panel {title:?}: legend {legend:?} for {expr}"
            );
        }
    }
    assert!(per_org >= 35, "{per_org} per-organisation selectors");
    assert!(process_wide >= 9, "{process_wide} process-wide selectors");

    // The overview across organisations: one row per organisation and currency, its last poll as
    // in panel "Last poll", and amounts per currency.
    let targets = dashboard_targets(&dash);
    let of = |panel: &str| -> Vec<String> {
        targets
            .iter()
            .filter(|(t, _)| t == panel)
            .map(|(_, t)| t["expr"].as_str().unwrap().to_owned())
            .collect()
    };
    let overview = of("Organisations");
    assert_eq!(overview.len(), 6, "{overview:?}");
    assert!(
        overview[0]
            .starts_with("sum by (organization, instance, currency) (qonto_payment_links_amount{")
            && overview[0].contains(r#"status="open""#),
        "{overview:?}"
    );
    assert!(overview.contains(&of("Last poll")[0]), "{overview:?}");
    for needle in [
        "qonto_exporter_last_success_timestamp_seconds",
        "qonto_exporter_last_poll_requests",
        "qonto_exporter_credentials_refused",
    ] {
        assert!(overview.iter().any(|e| e.contains(needle)), "{needle}");
    }
    let processes = of("Exporter processes");
    for needle in [
        "qonto_exporter_shard_info",
        "qonto_exporter_organizations",
        "qonto_exporter_config_last_reload_successful",
        "qonto_exporter_config_last_reload_success_timestamp_seconds",
    ] {
        assert!(processes.iter().any(|e| e.contains(needle)), "{needle}");
    }
}

/// The dashboard's panel titled `title`, rows' nested panels included.
fn panel<'a>(dash: &'a Value, title: &str) -> &'a Value {
    fn find<'a>(ps: &'a Value, title: &str) -> Option<&'a Value> {
        ps.as_array().into_iter().flatten().find_map(|p| {
            if p["title"] == title {
                Some(p)
            } else {
                find(&p["panels"], title)
            }
        })
    }
    find(&dash["panels"], title).unwrap_or_else(|| panic!("no panel {title:?}"))
}

fn committed_dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("grafana/qonto-payment-links.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn connection_status_maps_each_status_to_its_word_and_colour_per_organisation() {
    let dash = committed_dashboard();
    let panel = panel(&dash, "Connection status");
    let mapping = &panel["fieldConfig"]["defaults"]["mappings"][0]["options"];
    for (value, text, colour) in [
        ("1", "enabled", "green"),
        ("2", "pending", "orange"),
        ("3", "disabled", "red"),
        ("4", "not_connected", "red"),
        ("5", "other status", "text"),
    ] {
        assert_eq!(mapping[value]["text"], text, "{mapping}");
        assert_eq!(mapping[value]["color"], colour, "{mapping}");
    }
    assert_eq!(
        panel["fieldConfig"]["defaults"]["noValue"],
        "not checked yet"
    );
    let expr = panel["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .replace("$job", "qonto-exporter")
        .replace("$instance", ".+")
        .replace("$organization", ".+");

    // One exporter, six organisations: one in each documented status, one in a status Qonto
    // added (published beside the documented ones at 0), and one not checked yet (no state set).
    // Another exporter's organisation of the same name keeps its own value.
    let documented = ["enabled", "pending", "disabled", "not_connected"];
    let mut series = String::new();
    let mut state_set = |instance: &str, organization: &str, current: &str| {
        let mut statuses: Vec<&str> = documented.to_vec();
        if !statuses.contains(&current) {
            statuses.push(current);
        }
        for s in statuses {
            let v = u8::from(s == current);
            series.push_str(&format!(
                "      - series: 'qonto_payment_links_connection_status{{job=\"qonto-exporter\", \
                 instance=\"{instance}\", organization=\"{organization}\", status=\"{s}\"}}'\n        \
                 values: '{v}x5'\n"
            ));
        }
    };
    for s in documented {
        state_set("exporter:1", &format!("org-{s}"), s);
    }
    state_set("exporter:1", "org-new", "suspended");
    state_set("other:1", "org-enabled", "disabled");
    series.push_str(
        "      - series: 'qonto_up{job=\"qonto-exporter\", instance=\"exporter:1\", \
         organization=\"org-unchecked\"}'\n        values: '0x5'\n",
    );
    let sample = |instance: &str, organization: &str, value: u8| {
        format!(
            "          - labels: '{{instance=\"{instance}\", organization=\"{organization}\"}}'\n            value: {value}\n"
        )
    };
    let tests = format!(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n\
         {series}\x20   promql_expr_test:\n      - expr: {}\n        eval_time: 5m\n        exp_samples:\n{}{}{}{}{}{}",
        serde_json::to_string(&expr).unwrap(),
        sample("exporter:1", "org-enabled", 1),
        sample("exporter:1", "org-pending", 2),
        sample("exporter:1", "org-disabled", 3),
        sample("exporter:1", "org-not_connected", 4),
        sample("exporter:1", "org-new", 5),
        sample("other:1", "org-enabled", 3),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connection.test.yml");
    std::fs::write(&file, &tests).unwrap();
    let o = promtool(&["test", "rules", file.to_str().unwrap()], b"");
    assert!(
        o.status.success(),
        "panel \"Connection status\" ({expr}) must give 1 to 5 for enabled, pending, disabled, \
         not_connected and any other status, per organisation and exporter, and nothing before \
         the first check:\n{}{}\n{tests}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn stacked_panels_never_stack_two_organisations_nor_two_currencies() {
    let dash = committed_dashboard();
    // Top-level panels in order: a panel belongs to the last row before it.
    let mut row: Option<&Value> = None;
    let mut stacked = 0;
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            row = Some(p);
            continue;
        }
        let stacking = &p["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"];
        if stacking.is_null() || stacking == "none" {
            continue;
        }
        stacked += 1;
        let title = p["title"].as_str().unwrap();
        let row = row.unwrap_or_else(|| panic!("stacked panel {title:?} outside a row"));
        assert_eq!(
            row["repeat"], "organization",
            "stacked panel {title:?} is in row {:?}, which does not repeat per organisation",
            row["title"]
        );
        let amounts = p["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["expr"].as_str().unwrap().contains("amount"));
        if amounts {
            assert_eq!(
                p["repeat"], "currency",
                "stacked amounts of panel {title:?} do not repeat per currency"
            );
            assert!(title.contains("$currency"), "{title}");
        }
    }
    assert!(stacked >= 2, "{stacked} stacked panels");
    let aging = panel(&dash, "Open amount by age, $currency");
    let expr = aging["targets"][0]["expr"].as_str().unwrap();
    assert!(
        expr.starts_with(
            "sum by (organization, currency, age) (qonto_payment_links_open_by_age_amount{"
        ),
        "{expr}"
    );
}
