//! The Qonto client against a wiremock server: what goes on the wire (auth, staging token,
//! User-Agent, pagination parameters), how API errors become typed errors, and how far a
//! `Retry-After` is honoured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use qonto_exporter::qonto::auth::Credentials;
use qonto_exporter::qonto::budget::{Budget, BudgetConfig};
use qonto_exporter::qonto::client::{
    ApiError, ApiObserver, CREDENTIALS_HINT, ClientConfig, ListQuery, MAX_REFUSALS_PER_HOUR,
    QontoClient, RetryPolicy,
};
use qonto_exporter::qonto::walk::walk;
use qonto_exporter::secret::Secret;
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Default)]
struct Count(AtomicU64, AtomicU64);
impl ApiObserver for Count {
    fn request(&self, _code: Option<u16>, _elapsed: Duration) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn retry_after_over_ceiling(&self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }
}

fn client(server: &MockServer, credentials: Credentials, staging: Option<&str>) -> QontoClient {
    client_with(server, credentials, staging, Arc::new(Count::default()))
}

fn client_with(
    server: &MockServer,
    credentials: Credentials,
    staging: Option<&str>,
    observer: Arc<Count>,
) -> QontoClient {
    QontoClient::new(
        ClientConfig {
            base_url: server.uri(),
            timeout: Duration::from_secs(5),
            staging_token: staging.map(Secret::new),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_retry_after: Duration::from_secs(2),
            },
            budget: Arc::new(Budget::new(BudgetConfig {
                max_requests_per_second: Some(1000.0),
                ..BudgetConfig::default()
            })),
        },
        credentials,
        observer,
    )
    .unwrap()
}

const PAGE_1: ListQuery<'static> = ListQuery {
    statuses: &[],
    page: 1,
    per_page: 100,
    sort_by: None,
};

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
            assert_eq!(failure.source.as_deref(), Some("parameter per_page"));
            let text = ApiError::Status {
                page: 1,
                status: 400,
                failure,
            }
            .to_string();
            // What the poller logs: the parameter at fault is named.
            assert_eq!(
                text,
                "page 1: HTTP 400, bad_request: per_page must be between 1 and 100 (parameter per_page) (trace_id trace-400)"
            );
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
    assert!(text.ends_with(CREDENTIALS_HINT), "{text}");
    assert!(!text.contains("tok\""));
}

/// The spec's 400 example, `bad_request` "Authorization field missing", is a credentials
/// problem: like a 401 it is not retried, carries the same hint, and counts in the hourly
/// refusal budget, after which nothing more is sent.
#[tokio::test]
async fn a_bad_request_about_the_authorization_header_refuses_the_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "errors":[{"code":"bad_request","detail":"Authorization field missing"}],
            "trace_id":"trace-auth"
        })))
        .expect(MAX_REFUSALS_PER_HOUR as u64)
        .mount(&server)
        .await;
    let c = client(
        &server,
        Credentials::ApiKey {
            login: "acme".into(),
            secret_key: Secret::new("k"),
        },
        None,
    );
    for _ in 0..MAX_REFUSALS_PER_HOUR {
        let err = c.get_page(&PAGE_1, |_| ()).await.unwrap_err();
        match &err {
            ApiError::CredentialsRefused {
                status: 400,
                failure,
                hint,
            } => {
                assert_eq!(
                    failure.detail.as_deref(),
                    Some("Authorization field missing")
                );
                assert_eq!(*hint, CREDENTIALS_HINT);
            }
            other => panic!("expected refused credentials, got {other:?}"),
        }
        assert!(err.is_credentials());
        assert_eq!(
            err.to_string(),
            format!(
                "credentials refused: HTTP 400, bad_request: Authorization field missing (trace_id trace-auth){CREDENTIALS_HINT}"
            )
        );
    }
    let err = c.get_page(&PAGE_1, |_| ()).await.unwrap_err();
    assert!(
        matches!(err, ApiError::RefusalBudget(n) if n == MAX_REFUSALS_PER_HOUR),
        "{err:?}"
    );
    assert_eq!(c.requests_sent(), MAX_REFUSALS_PER_HOUR as u64);
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

/// A `Retry-After` beyond the ceiling (2 s here) fails the request at once, typed and counted;
/// before, `u64::MAX` seconds overflowed the `Instant` of the global pause (a panic), and a date
/// in year 9999 paused every request of the process for millennia.
#[tokio::test]
async fn a_retry_after_beyond_the_ceiling_fails_at_once_and_is_counted() {
    for (value, requested) in [
        ("18446744073709551615", Some(Duration::from_secs(u64::MAX))),
        ("99999999999999999999999", Some(Duration::MAX)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", None),
        ("3", Some(Duration::from_secs(3))),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", value))
            .expect(1)
            .mount(&server)
            .await;
        let seen = Arc::new(Count::default());
        let c = client_with(
            &server,
            Credentials::AccessToken(Secret::new("tok")),
            None,
            seen.clone(),
        );
        let err = tokio::time::timeout(Duration::from_secs(5), c.get_page(&PAGE_1, |_| ()))
            .await
            .unwrap_or_else(|_| panic!("Retry-After {value} was waited for"))
            .unwrap_err();
        match &err {
            ApiError::RetryAfterTooLong {
                page: 1,
                requested: r,
                ceiling,
            } => {
                assert_eq!(*ceiling, Duration::from_secs(2));
                match requested {
                    Some(want) => assert_eq!(r, &want, "{value}"),
                    None => assert!(*r > Duration::from_secs(200 * 365 * 86_400), "{r:?}"),
                }
            }
            other => panic!("{value}: expected RetryAfterTooLong, got {other:?}"),
        }
        assert!(!err.is_credentials());
        let text = err.to_string();
        assert!(
            text.contains("page 1")
                && text.contains("Retry-After")
                && text.contains("--qonto.max-retry-after (2s)"),
            "{text}"
        );
        assert_eq!(seen.1.load(Ordering::Relaxed), 1, "{value}: counted once");
        assert_eq!(c.requests_sent(), 1, "{value}: not retried");

        // The client is not left paused: the next request goes out at once.
        server.reset().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(page(1, 1, 1)))
            .mount(&server)
            .await;
        tokio::time::timeout(Duration::from_secs(5), c.get_page(&PAGE_1, |_| ()))
            .await
            .expect("no pause left behind")
            .unwrap();
    }
}

/// Within the ceiling, `Retry-After` is honoured as before.
#[tokio::test]
async fn a_retry_after_within_the_ceiling_is_waited_for() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(1, 1, 1)))
        .mount(&server)
        .await;
    let seen = Arc::new(Count::default());
    let c = client_with(
        &server,
        Credentials::AccessToken(Secret::new("tok")),
        None,
        seen.clone(),
    );
    let started = std::time::Instant::now();
    c.get_page(&PAGE_1, |_| ()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(seen.1.load(Ordering::Relaxed), 0);
    assert_eq!(c.requests_sent(), 2);
}

/// A credential that cannot be a header is its own error, named for where it came from; it
/// is not an "OAuth refresh refused" and nothing is sent.
#[tokio::test]
async fn a_credential_that_cannot_be_a_header_is_named_and_not_sent() {
    let server = MockServer::start().await;
    for (credentials, names) in [
        (
            Credentials::ApiKey {
                login: "acme".into(),
                secret_key: Secret::new("line-one\nline-two"),
            },
            "QONTO_SECRET_KEY",
        ),
        (
            Credentials::AccessToken(Secret::new("tok\u{7f}en")),
            "QONTO_ACCESS_TOKEN",
        ),
    ] {
        let c = client(&server, credentials, None);
        let err = c.get_page(&PAGE_1, |_| ()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(names), "{text}");
        assert!(text.contains("not allowed in a header"), "{text}");
        assert!(
            !text.contains("OAuth") && !text.contains("refused"),
            "{text}"
        );
        assert!(
            !text.contains("line-two") && !text.contains('\u{7f}'),
            "{text}"
        );
        assert!(!err.is_credentials());
        assert_eq!(c.requests_sent(), 0);
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// A body beyond the cap is not read into memory: one request, a clear error, no retry.
#[tokio::test]
async fn an_absurdly_large_body_is_refused_without_being_read_whole() {
    let server = MockServer::start().await;
    let huge = vec![b' '; qonto_exporter::qonto::client::MAX_RESPONSE_BYTES + 1];
    Mock::given(method("GET"))
        .and(path("/v2/payment_links"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(huge, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, Credentials::AccessToken(Secret::new("t")), None);
    let e = c.get_page(&PAGE_1, |_| ()).await.unwrap_err().to_string();
    assert!(
        e.contains("larger than 16 MiB") && e.contains("page 1"),
        "{e}"
    );
}
