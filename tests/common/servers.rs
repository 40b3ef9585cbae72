//! Real servers beside the exporter: Prometheus, Alertmanager, a webhook receiver, and helpers on
//! the text exposition. Used by the deploy and end-to-end tests (`common::servers`).
//!
//! Every process is owned by a [`Daemon`], killed and reaped when dropped, so a failing assertion
//! never leaves a server behind. A missing tool is a test failure naming the package, never a skip.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::free_port;

/// The path of `tool` on `PATH`, or a test failure naming the Debian package that provides it.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{tool}` is required by this test and is not on PATH: install the Debian package \
                 `{package}` (scripts/test does)"
            )
        })
}

/// A child process killed (SIGKILL) and reaped when dropped; stdout and stderr are collected.
pub struct Daemon {
    pub name: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn spawn(name: &str, program: &Path, args: &[String]) -> Daemon {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout piped");
        let err = child.stderr.take().expect("stderr piped");
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let sink = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Daemon {
            name: name.to_owned(),
            child,
            logs,
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Panics with the logs if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}); logs:\n{}", self.name, self.logs());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url` and parse the body as JSON; `None` on any error.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let resp = client.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    serde_json::from_str(&resp.text().await.ok()?).ok()
}

/// Waits until GET `url` answers 2xx, checking that `daemon` is still alive.
pub async fn wait_http_ok(daemon: &mut Daemon, url: &str, within: Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        daemon.assert_running();
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not answer {url} within {within:?}; logs:\n{}",
                daemon.name,
                daemon.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A real Prometheus server on loopback, storing in `dir/data`, with `dir/prometheus.yml`.
pub struct Prometheus {
    pub daemon: Daemon,
    pub port: u16,
    client: reqwest::Client,
}

impl Prometheus {
    /// Writes `config` to `dir/prometheus.yml` and starts Prometheus on a free loopback port.
    pub async fn start(dir: &Path, config: &str) -> Prometheus {
        let bin = require_tool("prometheus", "prometheus");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_owned(),
        ];
        let mut daemon = Daemon::spawn("prometheus", &bin, &args);
        wait_http_ok(
            &mut daemon,
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(30),
        )
        .await;
        Prometheus {
            daemon,
            port,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET an API path with query parameters; returns `data` of a `success` answer, or the error.
    pub async fn api(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, String> {
        let resp = self
            .client
            .get(self.url(path))
            .query(params)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let text = resp.text().await.map_err(|e| format!("GET {path}: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}: {text}"))?;
        if v["status"] != "success" {
            return Err(format!("GET {path} {params:?}: {text}"));
        }
        Ok(v["data"].clone())
    }

    /// An instant query's result vector (empty when no series matched).
    pub async fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let data = self
            .api("/api/v1/query", &[("query", expr.to_owned())])
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// A real Alertmanager on loopback, clustering off, with `dir/alertmanager.yml`.
pub struct Alertmanager {
    pub daemon: Daemon,
    pub port: u16,
}

impl Alertmanager {
    pub async fn start(dir: &Path, config: &str) -> Alertmanager {
        let bin = require_tool("prometheus-alertmanager", "prometheus-alertmanager");
        let config_path = dir.join("alertmanager.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // Empty: no gossip listener, a single standalone instance.
            "--cluster.listen-address=".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        let mut daemon = Daemon::spawn("alertmanager", &bin, &args);
        wait_http_ok(
            &mut daemon,
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(30),
        )
        .await;
        Alertmanager { daemon, port }
    }
}

/// A tiny HTTP server collecting the JSON bodies POSTed to it (Alertmanager's webhook
/// notifications). Answers 200 to everything; stops accepting when dropped.
pub struct Webhook {
    pub port: u16,
    pub received: Arc<Mutex<Vec<serde_json::Value>>>,
    stop: Arc<AtomicBool>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("webhook binds");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(body) = read_request(stream) {
                            sink.lock().unwrap().push(body);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Webhook {
            port,
            received,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/alerts", self.port)
    }

    /// Every alert received so far (the `alerts` of each notification, flattened).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one HTTP/1.1 request, answers 200 and closes; returns the body parsed as JSON.
fn read_request(mut stream: TcpStream) -> Option<serde_json::Value> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    serde_json::from_slice(&buf[head_end..(head_end + len).min(buf.len())]).ok()
}

/// The sample names of a text exposition (`x_bucket`, `x_sum`, `x_count` for a histogram `x`).
pub fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metric families of a text exposition (`# TYPE` lines): histograms by their base name.
pub fn metric_families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The `qonto_*` metric names a PromQL expression reads: identifiers outside string literals
/// that start with `qonto_` (recording-rule names, which contain `:`, are not metric names).
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            if ident.starts_with("qonto_") && !ident.contains(':') {
                names.insert(ident);
            }
        } else if c.is_ascii_digit() {
            // Skip numbers (and durations such as 5m) whole.
            while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}
