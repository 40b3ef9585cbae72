//! The Qonto client against a wiremock server: what goes on the wire (auth, staging token,
//! User-Agent, pagination parameters) and how API errors become typed errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use qonto_exporter::qonto::auth::Credentials;
use qonto_exporter::qonto::client::{
    ApiError, ApiObserver, ClientConfig, ListQuery, QontoClient, RetryPolicy,
};
use qonto_exporter::qonto::walk::walk;
use qonto_exporter::secret::Secret;
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Default)]
struct Count(AtomicU64);
impl ApiObserver for Count {
    fn request(&self, _code: Option<u16>, _elapsed: Duration) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn client(server: &MockServer, credentials: Credentials, staging: Option<&str>) -> QontoClient {
    QontoClient::new(
        ClientConfig {
            base_url: server.uri(),
            timeout: Duration::from_secs(5),
            staging_token: staging.map(Secret::new),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
            },
            max_requests_per_second: 1000.0,
        },
        credentials,
        Arc::new(Count::default()),
    )
    .unwrap()
}

fn link(i: u64) -> serde_json::Value {
    json!({
        "id": format!("00000000-0000-4000-8000-{i:012}"),
        "status": "paid",
        "expiration_date": "2026-01-01T00:00:00Z",
        "potential_payment_methods": ["credit_card"],
        "amount": {"value": "10.00", "currency": "EUR"},
        "created_at": "2025-12-01T00:00:00Z",
        "url": "https://pay.qonto.com/x",
        "resource_type": "Invoice",
        "items": null,
        "reusable": false,
        "invoice_id": null, "invoice_number": null, "debitor_name": null
    })
}

fn page(n: u64, of: u64, count: u64) -> serde_json::Value {
    let on_page = if n < of { 100 } else { count - 100 * (of - 1) };
    json!({
        "payment_links": (0..on_page).map(|i| link((n - 1) * 100 + i)).collect::<Vec<_>>(),
        "meta": {
            "current_page": n,
            "next_page": if n < of { json!(n + 1) } else { json!(null) },
            "prev_page": if n > 1 { json!(n - 1) } else { json!(null) },
            "total_pages": of,
            "total_count": count,
            "per_page": 100
        }
    })
}

#[tokio::test]
async fn walks_every_page_with_auth_staging_and_user_agent() {
    let server = MockServer::start().await;
    for n in 1..=3 {
        Mock::given(method("GET"))
            .and(path("/v2/payment_links"))
            .and(query_param("page", n.to_string()))
            .and(query_param("per_page", "100"))
            .and(header("authorization", "acme-4242:the-secret-key"))
            .and(header("x-qonto-staging-token", "staging-abc"))
            .and(header(
                "user-agent",
                concat!("qonto-exporter/", env!("CARGO_PKG_VERSION")),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(page(n, 3, 250)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let c = client(
        &server,
        Credentials::ApiKey {
            login: "acme-4242".into(),
            secret_key: Secret::new("the-secret-key"),
        },
        Some("staging-abc"),
    );
    let seen = AtomicU64::new(0);
    let summary = walk(&c, &[], 2, &|p| {
        seen.fetch_add(p.links.len() as u64, Ordering::Relaxed);
    })
    .await
    .unwrap();
    assert_eq!(summary.pages, 3);
    assert_eq!(summary.total_count, 250);
    assert_eq!(summary.drift, None);
    assert_eq!(seen.into_inner(), 250);
}

#[tokio::test]
async fn status_filters_are_sent_as_status_brackets() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/payment_links"))
        .and(query_param("status[]", "paid"))
        .and(header("authorization", "Bearer tok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(1, 1, 1)))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, Credentials::AccessToken(Secret::new("tok")), None);
    let n = qonto_exporter::qonto::walk::count(&c, &["paid"])
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn bad_request_and_unauthorized_become_typed_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(query_param("page", "1"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("X-Tyk-Trace-Id", "trace-400")
                .set_body_json(json!({"errors":[{"code":"bad_request","detail":"per_page must be between 1 and 100","source":{"parameter":"per_page"}}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, Credentials::AccessToken(Secret::new("tok")), None);
    let q = ListQuery {
        statuses: &[],
        page: 1,
        per_page: 100,
        sort_by: None,
    };
    match c.get_page(&q, |_| ()).await {
        Err(ApiError::Status {
            status: 400,
            failure,
            page: 1,
        }) => {
            assert_eq!(failure.code.as_deref(), Some("bad_request"));
            assert_eq!(failure.trace_id.as_deref(), Some("trace-400"));
        }
        other => panic!("expected a 400 error, got {other:?}"),
    }

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"errors":[{"code":"authorization_token_invalid","detail":"authorization token invalid"}],"trace_id":"trace-401"})))
        .expect(1) // refused credentials are not retried
        .mount(&server)
        .await;
    let c = client(&server, Credentials::AccessToken(Secret::new("tok")), None);
    let err = c.get_page(&q, |_| ()).await.unwrap_err();
    assert!(err.is_credentials());
    let text = err.to_string();
    assert!(
        text.contains("authorization_token_invalid") && text.contains("trace-401"),
        "{text}"
    );
    assert!(!text.contains("tok\""));
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&server)
        .await;
    let c = client(&server, Credentials::AccessToken(Secret::new("tok")), None);
    let q = ListQuery {
        statuses: &[],
        page: 1,
        per_page: 100,
        sort_by: None,
    };
    let err = c.get_page(&q, |_| ()).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(c.requests_sent(), 3);
}
