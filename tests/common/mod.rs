//! Shared harness of the black-box tests: the real binary, a simulator on loopback, scrapes.
//!
//! Each test file includes it with `mod common;`; not every file uses every helper.
#![allow(dead_code)]

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
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/-/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("exporter not ready within {within:?}; logs:\n{}", self.logs());
    }

    /// The body of `/metrics`.
    pub async fn scrape(&self) -> String {
        reqwest::get(self.url("/metrics"))
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
            if parse_metrics(&text).get(series).is_some_and(|v| *v >= value) {
                return;
            }
            if Instant::now() > deadline {
                panic!("{series} did not reach {value} within {within:?}; last scrape:\n{text}\nlogs:\n{}", self.logs());
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
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
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
