//! Shared harness of the black-box tests: the real binary, a simulator on loopback, scrapes.
//!
//! Each test file includes it with `mod common;`; not every file uses every helper.
#![allow(dead_code)]

pub mod servers;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qonto_exporter::simulator::{RunningSimulator, SimConfig, Simulator};

/// The binary under test, built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_qonto-exporter");

/// A plain reqwest client (the crate builds reqwest without a default TLS provider, so one is
/// installed first).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A free loopback port (bound then released; the exporter binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A simulator started in this process, on an ephemeral loopback port.
pub struct Sim {
    pub sim: Simulator,
    pub running: RunningSimulator,
}

impl Sim {
    pub async fn start(cfg: SimConfig) -> Sim {
        let sim = Simulator::new(cfg);
        let running = sim
            .start(([127, 0, 0, 1], 0).into())
            .await
            .expect("simulator starts");
        Sim { sim, running }
    }

    pub fn url(&self) -> String {
        self.running.base_url()
    }
}

/// The exporter binary, killed when dropped; its stderr (the logs) is collected.
pub struct Exporter {
    pub child: Child,
    pub port: u16,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Exporter {
    /// Starts the binary on a free port with `args` (plus `--web.listen-address`) and `envs`;
    /// the environment is cleared of QONTO_* variables first, so the host cannot leak in.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Exporter {
        let port = free_port();
        let mut cmd = Command::new(BIN);
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

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything logged so far, one string.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits until `/-/ready` answers 200 (a poll completed), or panics with the logs.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let client = http();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/-/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "exporter not ready within {within:?}; logs:\n{}",
            self.logs()
        );
    }

    /// The body of `/metrics`.
    pub async fn scrape(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body")
    }

    /// Waits until `metric` (a series as written in the exposition, labels included) reaches
    /// at least `value`.
    pub async fn wait_metric_at_least(&self, series: &str, value: f64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let text = self.scrape().await;
            if parse_metrics(&text)
                .get(series)
                .is_some_and(|v| *v >= value)
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{series} did not reach {value} within {within:?}; last scrape:\n{text}\nlogs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("exporter did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses the text exposition into `series → value`, the series written exactly as in the
/// text (name and labels as rendered, e.g. `qonto_up` or `qonto_payment_links{currency="EUR",...}`).
///
/// The label `organization="default"` (the single-organisation flags' organisation) is left out
/// of the keys, so single-organisation tests name series as before; [`parse_metrics_raw`]
/// keeps every label.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    parse_metrics_raw(text)
        .into_iter()
        .map(|(k, v)| (without_default_org(&k), v))
        .collect()
}

/// Every series of a scrape, keyed by its name and labels as exposed.
pub fn parse_metrics_raw(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// `series` without the label `organization="default"`.
pub fn without_default_org(series: &str) -> String {
    const L: &str = "organization=\"default\"";
    series
        .replace(&format!("{{{L}}}"), "")
        .replace(&format!(",{L}"), "")
        .replace(&format!("{L},"), "")
}

/// Runs `promtool` with `args` and `stdin`, failing the test if promtool is missing.
pub fn promtool(args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required (scripts/test installs Debian's prometheus package)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The business series a correct exporter must export for `links` (the simulator's
/// `links_json()`, i.e. what the API serves), computed independently of the exporter's code:
/// `serde_json` values in, `rust_decimal` sums, series keyed exactly as the text exposition
/// writes them. `now` is the poll's reference time (Unix seconds); `windows` are
/// `(label, seconds)`.
pub fn recount(
    links: &serde_json::Value,
    now: i64,
    windows: &[(&str, i64)],
) -> BTreeMap<String, f64> {
    use rust_decimal::Decimal;
    use rust_decimal::prelude::ToPrimitive;
    use std::str::FromStr;
    const STATUSES: [&str; 5] = ["open", "processing", "paid", "expired", "canceled"];
    const TYPES: [&str; 2] = ["Invoice", "Basket"];
    let mut counts: BTreeMap<(String, String, String), (u64, Decimal)> = BTreeMap::new();
    let mut expiring: BTreeMap<(String, String, String), (u64, Decimal)> = BTreeMap::new();
    let mut past: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut next: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut aging: BTreeMap<(String, String, String), (u64, Decimal)> = BTreeMap::new();
    let mut oldest: BTreeMap<(String, String), i64> = BTreeMap::new();
    const AGE_BOUNDS: [(&str, i64); 4] = [
        ("7d", 7 * 86_400),
        ("30d", 30 * 86_400),
        ("60d", 60 * 86_400),
        ("90d", 90 * 86_400),
    ];
    const AGES: [&str; 6] = ["<=7d", "7d-30d", "30d-60d", "60d-90d", ">90d", "unknown"];
    let mut currencies = std::collections::BTreeSet::new();
    for l in links.as_array().expect("links array") {
        let status = l["status"].as_str().unwrap().to_owned();
        let currency = l["amount"]["currency"].as_str().unwrap().to_owned();
        let rt = l["resource_type"].as_str().unwrap().to_owned();
        let amount = Decimal::from_str(l["amount"]["value"].as_str().unwrap()).unwrap();
        let exp = time::OffsetDateTime::parse(
            l["expiration_date"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp();
        currencies.insert(currency.clone());
        let e = counts
            .entry((status.clone(), currency.clone(), rt.clone()))
            .or_default();
        e.0 += 1;
        e.1 += amount;
        if status == "open" {
            // Age since created_at, in the default --aging.buckets (7d,30d,60d,90d); an age
            // exactly on a bound belongs to the younger bucket.
            let created = l["created_at"].as_str().and_then(|c| {
                time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
            });
            let bucket = match created {
                None => "unknown",
                Some(c) => {
                    let created = c.unix_timestamp();
                    let o = oldest
                        .entry((currency.clone(), rt.clone()))
                        .or_insert(created);
                    *o = (*o).min(created);
                    let age = now - created;
                    match AGE_BOUNDS.iter().position(|(_, b)| age <= *b) {
                        Some(0) => "<=7d",
                        Some(1) => "7d-30d",
                        Some(2) => "30d-60d",
                        Some(3) => "60d-90d",
                        _ => ">90d",
                    }
                }
            };
            let e = aging
                .entry((currency.clone(), rt.clone(), bucket.to_owned()))
                .or_default();
            e.0 += 1;
            e.1 += amount;
            if exp <= now {
                *past.entry((currency.clone(), rt.clone())).or_default() += 1;
            } else {
                for (label, secs) in windows {
                    if exp - now <= *secs {
                        let e = expiring
                            .entry((currency.clone(), rt.clone(), label.to_string()))
                            .or_default();
                        e.0 += 1;
                        e.1 += amount;
                    }
                }
                let n = next.entry((currency.clone(), rt.clone())).or_insert(exp);
                *n = (*n).min(exp);
            }
        }
    }
    let mut out = BTreeMap::new();
    for c in &currencies {
        for s in STATUSES {
            for t in TYPES {
                counts
                    .entry((s.to_owned(), c.clone(), t.to_owned()))
                    .or_default();
            }
        }
        for t in TYPES {
            for (label, _) in windows {
                expiring
                    .entry((c.clone(), t.to_owned(), label.to_string()))
                    .or_default();
            }
            past.entry((c.clone(), t.to_owned())).or_default();
            for a in AGES {
                aging
                    .entry((c.clone(), t.to_owned(), a.to_owned()))
                    .or_default();
            }
        }
    }
    for ((c, t, a), (n, sum)) in aging {
        let labels = format!("{{age=\"{a}\",currency=\"{c}\",resource_type=\"{t}\"}}");
        out.insert(format!("qonto_payment_links_open_by_age{labels}"), n as f64);
        out.insert(
            format!("qonto_payment_links_open_by_age_amount{labels}"),
            sum.to_f64().unwrap(),
        );
    }
    for ((c, t), o) in oldest {
        out.insert(
            format!(
                "qonto_payment_links_oldest_open_created_timestamp_seconds{{currency=\"{c}\",resource_type=\"{t}\"}}"
            ),
            o as f64,
        );
    }
    for ((s, c, t), (n, a)) in counts {
        let labels = format!("{{currency=\"{c}\",resource_type=\"{t}\",status=\"{s}\"}}");
        out.insert(format!("qonto_payment_links{labels}"), n as f64);
        out.insert(
            format!("qonto_payment_links_amount{labels}"),
            a.to_f64().unwrap(),
        );
    }
    for ((c, t, w), (n, a)) in expiring {
        let labels = format!("{{currency=\"{c}\",resource_type=\"{t}\",within=\"{w}\"}}");
        out.insert(format!("qonto_payment_links_expiring{labels}"), n as f64);
        out.insert(
            format!("qonto_payment_links_expiring_amount{labels}"),
            a.to_f64().unwrap(),
        );
    }
    for ((c, t), n) in past {
        out.insert(
            format!(
                "qonto_payment_links_open_past_expiration{{currency=\"{c}\",resource_type=\"{t}\"}}"
            ),
            n as f64,
        );
    }
    for ((c, t), e) in next {
        out.insert(
            format!(
                "qonto_payment_links_next_expiration_timestamp_seconds{{currency=\"{c}\",resource_type=\"{t}\"}}"
            ),
            e as f64,
        );
    }
    out
}

/// The `qonto_payment_links*` gauges of a scrape that a poll's snapshot holds: not the
/// connection status (another endpoint), nor counters and histograms (what polls observed
/// changing, not what the links are now).
pub fn business(text: &str) -> BTreeMap<String, f64> {
    parse_metrics(text)
        .into_iter()
        .filter(|(k, _)| {
            let name = k.split('{').next().unwrap_or(k);
            name.starts_with("qonto_payment_links")
                && name != "qonto_payment_links_connection_status"
                && !["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.ends_with(s))
        })
        .collect()
}

/// Asserts that a scrape's business series equal the recount of `links`, for a poll whose
/// reference time lies in `[now_lo, now_hi]` (a link exactly at a window edge may fall either
/// side within that span; both recounts are accepted per series).
pub fn assert_matches_recount(
    scrape: &str,
    links: &serde_json::Value,
    now_lo: i64,
    now_hi: i64,
    windows: &[(&str, i64)],
) {
    let got = business(scrape);
    let lo = recount(links, now_lo, windows);
    let hi = recount(links, now_hi, windows);
    let keys: std::collections::BTreeSet<&String> = lo.keys().chain(hi.keys()).collect();
    let mut wrong = Vec::new();
    for k in keys {
        let g = got.get(k).copied();
        if g != lo.get(k).copied() && g != hi.get(k).copied() {
            wrong.push(format!(
                "{k}: exported {g:?}, expected {:?} (or {:?})",
                lo.get(k),
                hi.get(k)
            ));
        }
    }
    for k in got.keys() {
        if !lo.contains_key(k) && !hi.contains_key(k) {
            wrong.push(format!("{k}: exported but not expected"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong series:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

// ---- Helpers of the fault, auth, secrets and CLI tests -------------------------------------

/// The count and amount series (`qonto_payment_links{…}` and `qonto_payment_links_amount{…}`)
/// of a series map (from [`parse_metrics`] or [`recount`]): the figures that do not depend on
/// the clock, so any two scrapes of the same poll must agree on them exactly.
pub fn status_figures(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .filter(|(k, _)| {
            k.starts_with("qonto_payment_links{") || k.starts_with("qonto_payment_links_amount{")
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// [`status_figures`] of what the simulator serves right now, recounted independently.
pub fn sim_figures(sim: &Simulator) -> BTreeMap<String, f64> {
    status_figures(&recount(&sim.links_json(), 0, &[]))
}

/// Sum of `qonto_payment_links` over all series: the links of the poll that was published.
pub fn links_total(m: &BTreeMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("qonto_payment_links{"))
        .map(|(_, v)| v)
        .sum()
}

/// The flags of a fast exporter polling `api_url`: 200 ms interval, no client-side rate limit
/// to speak of (Qonto's windows scaled up so that the budget never binds; a ceiling of 1,000
/// requests a second), 3 attempts per request, one page at a time. `overrides` replace a
/// default flag's value or add flags (`("--flag", "")` adds a switch without value).
pub fn fast_args(api_url: &str, overrides: &[(&str, &str)]) -> Vec<String> {
    let mut flags: Vec<(String, String)> = [
        ("--qonto.api-url", api_url),
        ("--poll.interval", "200ms"),
        ("--qonto.rate-limit-short", "1000000/1s"),
        ("--qonto.rate-limit-long", "100000000/10s"),
        ("--qonto.max-requests-per-second", "1000"),
        ("--qonto.max-attempts", "3"),
        ("--qonto.max-concurrency", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        match flags.iter_mut().find(|(f, _)| f == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => flags.push((k.to_string(), v.to_string())),
        }
    }
    flags
        .into_iter()
        .flat_map(|(k, v)| if v.is_empty() { vec![k] } else { vec![k, v] })
        .collect()
}

impl Exporter {
    /// [`Exporter::start`] with owned arguments (see [`fast_args`]).
    pub fn start_owned(args: &[String], envs: &[(&str, &str)]) -> Exporter {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Exporter::start(&args, envs)
    }

    /// One scrape, parsed.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        parse_metrics(&self.scrape().await)
    }

    /// One series of a fresh scrape; 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics().await.get(series).copied().unwrap_or(0.0)
    }

    /// Scrapes until `ok` holds for a scrape and returns it, or panics (with `what`, the last
    /// scrape and the logs) after `within`.
    pub async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&BTreeMap<String, f64>) -> bool,
    ) -> BTreeMap<String, f64> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.scrape().await;
            let m = parse_metrics(&text);
            if ok(&m) {
                return m;
            }
            if Instant::now() > deadline {
                panic!(
                    "not within {within:?}: {what}\nlast scrape:\n{text}\nlogs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` polls that started after this call have finished. Polls never overlap,
    /// so poll k has finished once `qonto_exporter_polls_total` reaches k + 1.
    pub async fn wait_polls(&self, n: u64, within: Duration) -> BTreeMap<String, f64> {
        let start = self.metric("qonto_exporter_polls_total").await;
        let target = start + n as f64 + 1.0;
        self.wait_until(&format!("{n} more polls"), within, |m| {
            m.get("qonto_exporter_polls_total")
                .is_some_and(|v| *v >= target)
        })
        .await
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .cloned()
            .collect()
    }

    /// Waits until a log line contains every one of `needles`; returns it.
    pub async fn wait_log(&self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.log_lines(needles).into_iter().next() {
                return l;
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {needles:?} within {within:?}; logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit by itself (a start-up error); its code and stderr.
    pub fn wait_exit(&mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(100));
                return (status.code(), self.logs());
            }
            if Instant::now() > deadline {
                panic!(
                    "exporter still running after {within:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Sim {
    /// Queues faults through the control endpoint (`POST /_sim/faults`), over HTTP.
    pub async fn inject_http(&self, faults: serde_json::Value) {
        let r = http()
            .post(format!("{}/_sim/faults", self.url()))
            .header("content-type", "application/json")
            .body(faults.to_string())
            .send()
            .await
            .expect("POST /_sim/faults");
        assert_eq!(r.status(), 204, "POST /_sim/faults refused {faults}");
    }

    /// `GET /_sim/links` over HTTP: what the API serves, for an independent recount.
    pub async fn links_http(&self) -> serde_json::Value {
        http()
            .get(format!("{}/_sim/links", self.url()))
            .send()
            .await
            .expect("GET /_sim/links")
            .bytes()
            .await
            .map(|b| serde_json::from_slice(&b).expect("links JSON"))
            .expect("links body")
    }
}

/// The span in which the last published poll's reference time lies, from its health metrics:
/// `[end - duration - 1 s, end]` in Unix seconds.
pub fn poll_span(text: &str) -> (i64, i64) {
    let m = parse_metrics(text);
    let end = m["qonto_exporter_last_success_timestamp_seconds"];
    let took = m["qonto_exporter_last_poll_duration_seconds"];
    ((end - took).floor() as i64 - 1, end.ceil() as i64)
}

impl Exporter {
    /// Waits for a poll that started after this call to finish, and returns a scrape of it.
    pub async fn next_poll(&self) -> String {
        let polls = parse_metrics(&self.scrape().await)["qonto_exporter_polls_total"];
        // polls_total counts polls started: +2 means one started after this call and finished.
        self.wait_metric_at_least(
            "qonto_exporter_polls_total",
            polls + 2.0,
            Duration::from_secs(30),
        )
        .await;
        self.scrape().await
    }
}
