//! `--web.config.file` on the real binary: TLS with a generated self-signed certificate and
//! basic auth with a bcrypt hash, as exporter-toolkit users configure node_exporter.

mod common;

use std::time::Duration;

use common::Exporter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_over_tls_with_basic_auth() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let hash = bcrypt::hash("scrape-pass", 4).unwrap();
    let config = dir.path().join("web.yml");
    std::fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .unwrap();
    let exporter = Exporter::start(
        &["--demo", "--web.config.file", config.to_str().unwrap()],
        &[],
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = |p: &str| format!("https://localhost:{}{p}", exporter.port);
    // Ready is open (probes need no credentials), over TLS.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(url("/-/ready")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ if std::time::Instant::now() > deadline => {
                panic!("not ready over TLS; logs:\n{}", exporter.logs())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let ok = client
        .get(url("/metrics"))
        .basic_auth("prometheus", Some("scrape-pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("qonto_payment_links{"));
    for (user, pass) in [
        ("prometheus", Some("wrong")),
        ("nobody", Some("scrape-pass")),
    ] {
        let r = client
            .get(url("/metrics"))
            .basic_auth(user, pass)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{user}");
        assert!(r.headers().contains_key("www-authenticate"));
    }
    let r = client.get(url("/")).send().await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "the landing page shows figures: protected too"
    );
    // Plain HTTP to the TLS port gets no answer.
    let plain = common::http()
        .get(format!("http://127.0.0.1:{}/metrics", exporter.port))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_is_served_when_accepted() {
    let exporter = Exporter::start(&["--demo"], &[]);
    exporter.wait_ready(Duration::from_secs(30)).await;
    let raw = reqwest::Client::builder()
        .build()
        .unwrap()
        .get(exporter.url("/metrics"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-encoding"], "gzip");
    let bytes = raw.bytes().await.unwrap();
    let mut text = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("# TYPE qonto_payment_links gauge"));
    assert!(text.contains("qonto_up 1"));
    let r = common::http()
        .get(exporter.url("/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
