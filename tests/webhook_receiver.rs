//! The webhook receiver over real HTTP on 127.0.0.1: signed deliveries as Qonto sends them,
//! and every way one can be refused, with the answer, the queue, the counters and the logs
//! checked each time.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use qonto_exporter::config::WebhookConfig;
use qonto_exporter::metrics::SelfMetrics;
use qonto_exporter::secret::Secret;
use qonto_exporter::webhook::Delivery;
use qonto_exporter::webhook::event::{PAYMENT_LINKS, Payload, UNKNOWN};
use qonto_exporter::webhook::receiver::{Clock, MAX_BODY, Router, serve_with_clock};
use qonto_exporter::webhook::secrets::WebhookSecrets;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Every secret here contains it, so one search of the logs finds any.
const MARK: &str = "S3CR3T";
const VECTOR_BODY: &str = r#"{"test":"data"}"#;
const VECTOR_HEADER: &str =
    "t=1704110400,v1=56aff06dc227db80d6568a5070f912c601c31f20451745d257cbc0b5dfa93805";
const VECTOR_T: u64 = 1_704_110_400;

/// Everything the tests of this binary log, at every level.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, &msg);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// A payment-link event as Qonto sends it.
fn event(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","subscription_id":"s","organization_id":"o","membership_id":"m","type":"v1/payment-links","created_at":"2026-11-24T10:00:00Z","data":{{"event":"updated","payment_link_id":"pl-{id}","status":"paid","amount":{{"value":"12.30","currency":"EUR"}},"resource_type":"Invoice","updated_at":"2026-11-24T10:00:00Z"}}}}"#
    )
}

struct Rig {
    base: String,
    router: Arc<Router>,
    metrics: Arc<SelfMetrics>,
    rx: mpsc::Receiver<Delivery>,
    /// The receiver's clock, in Unix seconds.
    now: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
    tls: bool,
}

impl Rig {
    async fn start(org: &str, secrets: WebhookSecrets, capacity: usize) -> Rig {
        Rig::start_with(org, secrets, capacity, None).await
    }

    async fn start_with(
        org: &str,
        secrets: WebhookSecrets,
        capacity: usize,
        web: Option<Arc<qonto_exporter::webconfig::WebConfig>>,
    ) -> Rig {
        let _ = logs();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = web.is_some();
        let cfg = WebhookConfig {
            listen_address: addr,
            path: "/webhooks/qonto".into(),
            secrets: Arc::new(secrets),
            web,
        };
        let router = Router::new(&cfg.path);
        let metrics = SelfMetrics::new(org);
        let (tx, rx) = mpsc::channel(capacity);
        router.insert(org, tx, metrics.webhook.clone());
        let now = Arc::new(AtomicU64::new(unix_now()));
        let clock_now = now.clone();
        let clock: Clock = Arc::new(move || {
            SystemTime::UNIX_EPOCH + Duration::from_secs(clock_now.load(Ordering::Relaxed))
        });
        let (stop, shutdown) = watch::channel(false);
        let server = tokio::spawn({
            let router = router.clone();
            async move {
                serve_with_clock(listener, cfg, router, shutdown, clock)
                    .await
                    .expect("receiver runs");
            }
        });
        Rig {
            base: format!(
                "{}://localhost:{}/webhooks/qonto",
                if tls { "https" } else { "http" },
                addr.port()
            ),
            router,
            metrics,
            rx,
            now,
            stop,
            server,
            http: reqwest::Client::new(),
            tls,
        }
    }

    /// POSTs `body` as JSON to the organisation's path with `signature`, if any.
    async fn post(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
        signature: Option<&str>,
    ) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(s) = signature {
            req = req.header("X-Qonto-Signature", s);
        }
        let r = req.send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// POSTs `body` signed now with `secret`.
    async fn deliver(&self, secret: &str, body: &str) -> (u16, String) {
        let t = self.now.load(Ordering::Relaxed);
        self.post("", body, Some(&sign(secret, t, body.as_bytes())))
            .await
    }

    fn count(&self, ty: &str, outcome: &str) -> u64 {
        self.metrics
            .webhook
            .events
            .with_label_values(&[ty, outcome])
            .get()
    }

    /// Every count of this organisation that is not zero, as `type/outcome=n`.
    fn counts(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in self.metrics.gather() {
            if f.name() != "qonto_exporter_webhook_events_total" {
                continue;
            }
            for m in f.get_metric() {
                let v = m.get_counter().get_value() as u64;
                if v == 0 {
                    continue;
                }
                let label = |n: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                out.push(format!("{}/{}={v}", label("type"), label("outcome")));
            }
        }
        out.sort();
        out
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(15), self.server)
            .await
            .expect("the receiver stops on shutdown")
            .unwrap();
    }
}

fn secrets(value: &str) -> WebhookSecrets {
    WebhookSecrets::from_value(&Secret::new(value)).unwrap()
}

#[tokio::test]
async fn the_documented_test_vector_passes_the_signature_check_at_its_time() {
    let rig = Rig::start("vector", secrets("test-secret"), 8).await;
    rig.now.store(VECTOR_T, Ordering::Relaxed);
    // Verified, then refused as an event: its body is not an envelope.
    let (status, _) = rig.post("", VECTOR_BODY, Some(VECTOR_HEADER)).await;
    assert_eq!(status, 400);
    assert_eq!(rig.counts(), ["unknown/malformed=1"]);
    // Five minutes either way still pass; one second more is stale, both ways.
    for (now, status) in [
        (VECTOR_T + 300, 400),
        (VECTOR_T - 300, 400),
        (VECTOR_T + 301, 401),
        (VECTOR_T - 301, 401),
        (VECTOR_T + 100_000_000, 401),
    ] {
        rig.now.store(now, Ordering::Relaxed);
        let (s, _) = rig.post("", VECTOR_BODY, Some(VECTOR_HEADER)).await;
        assert_eq!(s, status, "clock at {now}");
    }
    assert_eq!(rig.counts(), ["unknown/malformed=3", "unknown/stale=3"]);
    // A real event signed by the same secret at the same time is queued, stamped with the
    // receiver's clock.
    rig.now.store(VECTOR_T, Ordering::Relaxed);
    let body = event("evt-vector");
    let (status, answer) = rig
        .post(
            "/vector",
            body.clone(),
            Some(&sign("test-secret", VECTOR_T, body.as_bytes())),
        )
        .await;
    assert_eq!((status, answer.as_str()), (200, "accepted\n"));
    let mut rig = rig;
    let d = rig.rx.try_recv().expect("queued");
    assert_eq!(d.event.id, "evt-vector");
    assert!(matches!(d.event.payload, Payload::Link(ref l) if l.status == "paid"));
    assert_eq!(
        d.received_at,
        SystemTime::UNIX_EPOCH + Duration::from_secs(VECTOR_T)
    );
    assert_eq!(rig.count(PAYMENT_LINKS, "duplicate"), 0);
    assert_eq!(
        rig.metrics.webhook.last_event.get(),
        VECTOR_T as f64,
        "the last event's receipt time"
    );
    rig.stop().await;
}

#[tokio::test]
async fn bad_signatures_are_401_and_never_queued() {
    let mut rig = Rig::start("forged", secrets("S3CR3T-right-secret"), 8).await;
    let body = event("evt-forged");
    let t = unix_now();
    let hex = "0".repeat(64);
    for signature in [
        Some(sign("S3CR3T-wrong-secret", t, body.as_bytes())),
        None,
        Some("garbage".to_owned()),
        Some(format!("t=99999999999999999999,v1={hex}")),
        Some(format!("t=-5,v1={hex}")),
        // The right signature of another body.
        Some(sign("S3CR3T-right-secret", t, b"{}")),
    ] {
        let (status, answer) = rig.post("", body.clone(), signature.as_deref()).await;
        assert_eq!(status, 401, "{signature:?}");
        assert!(
            !answer.contains(MARK) && !answer.contains("evt-forged"),
            "{answer}"
        );
    }
    // Wrongly signed and stale: a forgery, not a stale delivery.
    let old = sign("S3CR3T-wrong-secret", t - 3600, body.as_bytes());
    assert_eq!(rig.post("", body.clone(), Some(&old)).await.0, 401);
    // A missing or garbled header is noise anyone can send (malformed); a well-formed one that
    // no secret matches is a bad signature.
    assert_eq!(
        rig.counts(),
        ["unknown/bad_signature=3", "unknown/malformed=4"]
    );
    assert!(rig.rx.try_recv().is_err());
    // Correctly signed but an hour old, or an hour ahead: stale.
    for t in [t - 3600, t + 3600] {
        let s = sign("S3CR3T-right-secret", t, body.as_bytes());
        assert_eq!(rig.post("", body.clone(), Some(&s)).await.0, 401);
    }
    assert_eq!(
        rig.counts(),
        [
            "unknown/bad_signature=3",
            "unknown/malformed=4",
            "unknown/stale=2"
        ]
    );
    assert!(rig.rx.try_recv().is_err());
    // The first refusal of each kind is a warning; the next ones within the minute are not.
    let logs = log_text();
    let warnings = |outcome: &str| {
        logs.lines()
            .filter(|l| {
                l.contains("WARN")
                    && l.contains("organization=forged")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .count()
    };
    assert_eq!(
        (warnings("bad_signature"), warnings("stale")),
        (1, 1),
        "{logs}"
    );
    rig.stop().await;
}

#[tokio::test]
async fn either_secret_is_accepted_during_a_rotation_and_the_file_is_reread() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhook-secrets");
    std::fs::write(&file, "# old, then new\nS3CR3T-old\nS3CR3T-new\n").unwrap();
    let mut rig = Rig::start("rotating", WebhookSecrets::from_file(&file).unwrap(), 8).await;
    assert_eq!(rig.deliver("S3CR3T-old", &event("evt-1")).await.0, 200);
    assert_eq!(rig.deliver("S3CR3T-new", &event("evt-2")).await.0, 200);
    assert_eq!(rig.deliver("S3CR3T-other", &event("evt-3")).await.0, 401);
    // The rotation ends: the old secret leaves the file, and is refused within a few seconds,
    // without a restart.
    std::fs::write(&file, "S3CR3T-new\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.deliver("S3CR3T-old", &event("evt-4")).await.0 == 200 {
        // Still the old secrets (evt-4 queued once, then duplicates): try again.
        assert!(
            std::time::Instant::now() < deadline,
            "the file was not re-read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rig.deliver("S3CR3T-new", &event("evt-5")).await.0, 200);
    // A broken file keeps the last good secret.
    std::fs::write(&file, "# nothing\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log_text().contains("keeping the last good secrets") {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken file was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rig.deliver("S3CR3T-new", &event("evt-6")).await.0, 200);
    let ids: Vec<String> = std::iter::from_fn(|| rig.rx.try_recv().ok())
        .map(|d| d.event.id)
        .collect();
    assert_eq!(ids.first().map(String::as_str), Some("evt-1"));
    assert!(ids.iter().any(|i| i == "evt-2"));
    assert_eq!(ids.last().map(String::as_str), Some("evt-6"));
    let logs = log_text();
    assert!(logs.contains("webhook secrets reloaded"), "{logs}");
    rig.stop().await;
}

#[tokio::test]
async fn bodies_must_be_json_and_at_most_64_kib() {
    let mut rig = Rig::start("sizes", secrets("s3cret"), 8).await;
    let t = unix_now();
    // Exactly the cap, padded with JSON whitespace: accepted.
    let mut at_cap = event("evt-cap");
    at_cap.push_str(&" ".repeat(MAX_BODY - at_cap.len()));
    assert_eq!(rig.deliver("s3cret", &at_cap).await.0, 200);
    // One byte more: 413, declared by Content-Length.
    let over = format!("{at_cap} ");
    let (status, answer) = rig
        .post("", over.clone(), Some(&sign("s3cret", t, over.as_bytes())))
        .await;
    assert_eq!((status, answer.as_str()), (413, "body over 64 KiB\n"));
    // Chunked, with no Content-Length: cut off while streaming.
    let port = rig
        .base
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let mut conn = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let head = format!(
        "POST /webhooks/qonto HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-qonto-signature: {}\r\ntransfer-encoding: chunked\r\n\r\n",
        sign("s3cret", t, b"")
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
    for _ in 0..5 {
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Declared as something else than JSON: 415, whatever the signature.
    let body = event("evt-text");
    for content_type in [Some("text/plain"), Some("application/jsonx"), Some("")] {
        let mut req = rig
            .http
            .post(&rig.base)
            .body(body.clone())
            .header("x-qonto-signature", sign("s3cret", t, body.as_bytes()));
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        assert_eq!(req.send().await.unwrap().status(), 415, "{content_type:?}");
    }
    // JSON with parameters is JSON.
    let r = rig
        .http
        .post(&rig.base)
        .header("content-type", "Application/JSON; charset=utf-8")
        .header("x-qonto-signature", sign("s3cret", t, body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No Content-Type (Qonto's docs name none), or a `+json` type: the envelope decides.
    for (id, content_type) in [
        ("evt-bare", None),
        ("evt-vnd", Some("application/vnd.qonto+json")),
    ] {
        let body = event(id);
        let mut req = rig
            .http
            .post(&rig.base)
            .header("x-qonto-signature", sign("s3cret", t, body.as_bytes()))
            .body(body);
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        assert_eq!(req.send().await.unwrap().status(), 200, "{content_type:?}");
    }
    // Signed, but not an event.
    for bad in [
        "not json",
        "{}",
        r#"{"id":"","type":"v1/payment-links"}"#,
        "[1,2]",
    ] {
        assert_eq!(rig.deliver("s3cret", bad).await.0, 400, "{bad}");
    }
    assert_eq!(rig.counts(), ["unknown/malformed=9"]);
    // Other methods and paths: 405 and 404, not counted as deliveries.
    let r = rig.http.get(&rig.base).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(rig.post("/globex", body.clone(), None).await.0, 404);
    assert_eq!(rig.post("x", body.clone(), None).await.0, 404);
    assert_eq!(rig.count(UNKNOWN, "malformed"), 9);
    let ids: Vec<String> = std::iter::from_fn(|| rig.rx.try_recv().ok())
        .map(|d| d.event.id)
        .collect();
    assert_eq!(ids, ["evt-cap", "evt-text", "evt-bare", "evt-vnd"]);
    rig.stop().await;
}

#[tokio::test]
async fn a_duplicate_is_acknowledged_and_queued_once() {
    let mut rig = Rig::start("dupes", secrets("s3cret"), 8).await;
    let body = event("evt-dup");
    for _ in 0..3 {
        let (status, _) = rig.deliver("s3cret", &body).await;
        assert_eq!(status, 200);
    }
    // Concurrent copies too.
    let other = event("evt-dup-2");
    let answers =
        futures_util::future::join_all((0..8).map(|_| rig.deliver("s3cret", &other))).await;
    assert!(answers.iter().all(|(s, _)| *s == 200));
    let ids: Vec<String> = std::iter::from_fn(|| rig.rx.try_recv().ok())
        .map(|d| d.event.id)
        .collect();
    assert_eq!(ids, ["evt-dup", "evt-dup-2"]);
    assert_eq!(rig.count(PAYMENT_LINKS, "duplicate"), 9);
    assert_eq!(rig.metrics.webhook.delivery_lag().get_sample_count(), 2);
    rig.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_and_the_retry_is_not_lost() {
    let mut rig = Rig::start("full", secrets("s3cret"), 1).await;
    assert_eq!(rig.deliver("s3cret", &event("evt-a")).await.0, 200);
    let (status, answer) = rig.deliver("s3cret", &event("evt-b")).await;
    assert_eq!(
        (status, answer.as_str()),
        (503, "queue full, retry later\n")
    );
    assert_eq!(rig.count(PAYMENT_LINKS, "queue_full"), 1);
    // The ledger drains the queue; Qonto's retry of evt-b is then queued, not a duplicate.
    assert_eq!(rig.rx.recv().await.unwrap().event.id, "evt-a");
    assert_eq!(rig.deliver("s3cret", &event("evt-b")).await.0, 200);
    assert_eq!(rig.rx.recv().await.unwrap().event.id, "evt-b");
    assert_eq!(rig.count(PAYMENT_LINKS, "duplicate"), 0);
    // A closed queue (the organisation's ledger stopped): 503 as well.
    rig.rx.close();
    assert_eq!(rig.deliver("s3cret", &event("evt-c")).await.0, 503);
    assert_eq!(rig.count(PAYMENT_LINKS, "queue_full"), 2);
    rig.stop().await;
}

#[tokio::test]
async fn organisations_are_routed_by_path_and_can_be_added_and_removed() {
    let mut rig = Rig::start("acme", secrets("s3cret"), 8).await;
    assert_eq!(rig.metrics.webhook.enabled.get(), 1.0);
    let globex = SelfMetrics::new("globex");
    let (tx, mut globex_rx) = mpsc::channel(8);
    rig.router.insert("globex", tx, globex.webhook.clone());
    let t = unix_now();
    let body = event("evt-g");
    let sig = sign("s3cret", t, body.as_bytes());
    // Two organisations: the bare path is ambiguous.
    assert_eq!(rig.post("", body.clone(), Some(&sig)).await.0, 404);
    assert_eq!(rig.post("/globex", body.clone(), Some(&sig)).await.0, 200);
    assert_eq!(globex_rx.try_recv().unwrap().event.id, "evt-g");
    assert!(rig.rx.try_recv().is_err());
    // Dedupe memories are per organisation.
    assert_eq!(rig.post("/acme", body.clone(), Some(&sig)).await.0, 200);
    assert_eq!(rig.rx.try_recv().unwrap().event.id, "evt-g");
    rig.router.remove("globex");
    assert_eq!(globex.webhook.enabled.get(), 0.0);
    assert_eq!(rig.post("/globex", body.clone(), Some(&sig)).await.0, 404);
    // One organisation again: the bare path routes to it.
    assert_eq!(rig.post("", body.clone(), Some(&sig)).await.0, 200);
    assert_eq!(rig.count(PAYMENT_LINKS, "duplicate"), 1);
    rig.stop().await;
}

#[tokio::test]
async fn no_secret_body_or_signature_reaches_the_logs_or_answers() {
    let secret = "S3CR3T-webhook-9f2e";
    let mut rig = Rig::start("quiet", secrets(secret), 1).await;
    let body = event("evt-BODYMARK").replace("pl-evt", "pl-BODYMARK");
    let signature = sign(secret, unix_now(), body.as_bytes());
    let hex = signature.split("v1=").nth(1).unwrap().to_owned();
    let mut answers = Vec::new();
    answers.push(rig.deliver(secret, &body).await);
    answers.push(rig.deliver(secret, &body).await); // duplicate
    answers.push(rig.deliver(secret, &event("evt-BODYMARK-2")).await); // queue full
    answers.push(
        rig.post("", body.clone(), Some(&signature.replace("v1=", "v1=0")))
            .await,
    );
    answers.push(rig.deliver(secret, "{\"BODYMARK\": true}").await);
    answers.push(rig.deliver("S3CR3T-wrong", &body).await);
    let _ = rig.rx.try_recv();
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 503, 401, 400, 401]);
    let logs = log_text();
    assert!(
        logs.contains("organization=quiet"),
        "nothing captured: {logs}"
    );
    for (what, needle) in [
        ("a secret", MARK),
        ("a body", "BODYMARK"),
        ("a signature", hex.as_str()),
        ("a signature", &hex[..16]),
    ] {
        assert!(!logs.contains(needle), "{what} in the logs:\n{logs}");
        for (_, a) in &answers {
            assert!(!a.contains(needle), "{what} in an answer: {a}");
        }
    }
    let debug = format!("{:?}", rig.router);
    assert!(!debug.contains(MARK), "{debug}");
    rig.stop().await;
}

#[tokio::test]
async fn tls_from_the_web_config_and_counters_from_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let config = dir.path().join("web.yml");
    std::fs::write(
        &config,
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
    )
    .unwrap();
    let web = Arc::new(qonto_exporter::webconfig::WebConfig::load(&config).unwrap());
    let mut rig = Rig::start_with("secure", secrets("s3cret"), 8, Some(web)).await;
    assert!(rig.tls);
    rig.http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    // Every outcome of the subscribed types shows at 0 before the first delivery.
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &rig.metrics.gather(),
        &mut text,
    )
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    for outcome in [
        "applied",
        "ignored",
        "duplicate",
        "bad_signature",
        "stale",
        "malformed",
        "queue_full",
    ] {
        for ty in ["v1/payment-links", "v1/payment-links-connections"] {
            let series = format!(
                "qonto_exporter_webhook_events_total{{outcome=\"{outcome}\",type=\"{ty}\",organization=\"secure\"}} 0"
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
    }
    assert!(text.contains("qonto_exporter_webhook_enabled{organization=\"secure\"} 1"));
    let body = event("evt-tls");
    let r = rig
        .http
        .post(&rig.base)
        .header("content-type", "application/json")
        .header(
            "x-qonto-signature",
            sign("s3cret", unix_now(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(rig.rx.try_recv().unwrap().event.id, "evt-tls");
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .post(rig.base.replace("https", "http"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    rig.stop().await;
}

#[test]
fn writes_to_the_log_sink_are_kept() {
    // The capture every log assertion above relies on.
    let mut s = Sink(Arc::new(Mutex::new(Vec::new())));
    s.write_all(b"x").unwrap();
    assert_eq!(s.0.lock().unwrap().as_slice(), b"x");
}
