//! The deploy bundle against what the exporter really exports: `scripts/check-deploy` with the
//! metric names of a live `--demo` exporter, `promtool check metrics` on its exposition, the alert
//! rules' unit tests, and the README's metrics reference.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::servers::{metric_families, require_tool, sample_names};
use common::{Exporter, promtool, repo};

/// The `/metrics` body of a `--demo` exporter reading payments, once every family is there:
/// after its first complete poll, the connection check that follows it, and the first payments
/// read (the demo's links get paid every few seconds).
async fn demo_exposition() -> String {
    let exporter = Exporter::start(
        &[
            "--demo",
            "--poll.interval",
            "1s",
            "--collect.payments",
            "100",
        ],
        &[],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    exporter
        .wait_until(
            "the connection status and payments",
            Duration::from_secs(60),
            |m| {
                let has = |p: &str| m.keys().any(|k| k.starts_with(p));
                has("qonto_payment_links_connection_status{")
                    && has("qonto_payment_links_payments_total{")
            },
        )
        .await;
    exporter.scrape().await
}

#[tokio::test]
async fn check_deploy_passes_with_the_metric_names_really_exported() {
    require_tool("python3", "python3");
    let names = sample_names(&demo_exposition().await);
    assert!(
        names.contains("qonto_up") && names.contains("qonto_payment_links"),
        "{names:?}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let text: String = names.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(file.path(), text).unwrap();
    let out = Command::new("python3")
        .arg(repo().join("scripts/check-deploy"))
        .arg(file.path())
        .current_dir(repo())
        .output()
        .expect("python3 runs scripts/check-deploy");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "scripts/check-deploy failed:\n{log}");
    assert!(log.contains("check-deploy: all checks passed"), "{log}");
}

#[tokio::test]
async fn promtool_check_metrics_accepts_the_real_exposition() {
    let text = demo_exposition().await;
    let out = promtool(&["check", "metrics"], text.as_bytes());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && log.trim().is_empty(),
        "promtool check metrics reports problems ({}):\n{log}",
        out.status
    );
}

#[test]
fn alert_rule_unit_tests_pass() {
    let out = promtool(
        &[
            "test",
            "rules",
            repo()
                .join("deploy/prometheus/rules.test.yml")
                .to_str()
                .unwrap(),
        ],
        b"",
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool test rules deploy/prometheus/rules.test.yml failed:\n{log}"
    );
    assert!(log.contains("SUCCESS"), "{log}");
}

/// The metric names of the README's `## Metrics` section: the section runs from the line
/// `## Metrics` to the next heading of level 1 or 2 (`### ` subsections belong to it); in it,
/// every markdown table row (a line starting with `|`) whose first cell holds a backticked name,
/// e.g. `` | `qonto_payment_links` | gauge | ... | ``, names one metric family. The name is the
/// first backticked span of the first cell; header and separator rows have none and are skipped,
/// as is a `process_*` row (the process collector's families are not listed one by one).
fn readme_metric_names(readme: &str) -> Option<BTreeSet<String>> {
    let mut lines = readme.lines().skip_while(|l| l.trim_end() != "## Metrics");
    lines.next()?;
    let mut names = BTreeSet::new();
    for line in lines.take_while(|l| !(l.starts_with("# ") || l.starts_with("## "))) {
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let first = row.split('|').next().unwrap_or_default();
        let Some(name) = first.split('`').nth(1) else {
            continue;
        };
        if name.starts_with("process_") {
            continue;
        }
        names.insert(name.trim().to_owned());
    }
    Some(names)
}

#[tokio::test]
async fn readme_metrics_reference_matches_the_exported_families() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap_or_default();
    let documented = readme_metric_names(&readme).expect(
        "README.md has no `## Metrics` section (tables whose first column is a backticked metric name)",
    );
    let exported: BTreeSet<String> = metric_families(&demo_exposition().await)
        .into_iter()
        .filter(|f| !f.starts_with("process_"))
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let unexported: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty() && unexported.is_empty(),
        "README.md's `## Metrics` tables and /metrics differ.\nexported but not in the README: \
         {undocumented:?}\nin the README but not exported: {unexported:?}"
    );
}

#[test]
fn readme_metric_names_parses_the_documented_format() {
    let readme = "# qonto-exporter\n\n## Metrics\n\nBusiness gauges:\n\n\
        | metric | type | labels |\n| --- | --- | --- |\n\
        | `qonto_payment_links` | gauge | status |\n\
        |`qonto_up`|gauge||\n\n### Exporter health\n\n\
        | metric | type |\n|---|---|\n\
        | `qonto_exporter_api_request_duration_seconds` | histogram |\n\
        | `process_*` | | the process collector |\n\n\
        ## Deploy\n\n| `not_a_metric` | x |\n";
    let names = readme_metric_names(readme).unwrap();
    let want: BTreeSet<String> = [
        "qonto_payment_links",
        "qonto_up",
        "qonto_exporter_api_request_duration_seconds",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(names, want);
    assert_eq!(readme_metric_names("# x\n## Other\n"), None);
}
