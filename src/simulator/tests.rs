//! The simulator over real HTTP, as the exporter sees it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::*;

const TOKEN: &str = "test-token";

fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: building a client panics unless a provider is
    // installed, even for plain http. The crate depends on rustls with `ring`.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(links: usize) -> SimConfig {
    SimConfig {
        links,
        access_tokens: vec![TOKEN.to_owned()],
        ..SimConfig::default()
    }
}

async fn start(cfg: SimConfig) -> (Simulator, RunningSimulator) {
    let sim = Simulator::new(cfg);
    let running = sim.start(loopback()).await.expect("bind");
    (sim, running)
}

struct Reply {
    status: u16,
    content_type: String,
    trace_id: String,
    retry_after: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("response");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = resp.status().as_u16();
    let content_type = header("content-type").unwrap_or_default();
    let trace_id = header("x-tyk-trace-id").expect("every response has X-Tyk-Trace-Id");
    let retry_after = header("retry-after");
    let body = resp.text().await.expect("body");
    Reply {
        status,
        content_type,
        trace_id,
        retry_after,
        body,
    }
}

async fn list(c: &reqwest::Client, base: &str, query: &str) -> Reply {
    list_as(c, base, query, &format!("Bearer {TOKEN}")).await
}

/// A list request with `authorization` as the `Authorization` header.
async fn list_as(c: &reqwest::Client, base: &str, query: &str, authorization: &str) -> Reply {
    send(
        c.get(format!("{base}/v2/payment_links?{query}"))
            .header("authorization", authorization),
    )
    .await
}

/// Walks every page following `next_page`; returns the ids and the number of pages.
async fn walk(c: &reqwest::Client, base: &str, query: &str) -> (Vec<String>, u64) {
    walk_as(c, base, query, &format!("Bearer {TOKEN}")).await
}

/// [`walk`] with `authorization` as the `Authorization` header.
async fn walk_as(
    c: &reqwest::Client,
    base: &str,
    query: &str,
    authorization: &str,
) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    let mut page = 1;
    let mut pages = 0;
    loop {
        let r = list_as(c, base, &format!("{query}&page={page}"), authorization).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        pages += 1;
        ids.extend(
            v["payment_links"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_owned()),
        );
        match v["meta"]["next_page"].as_u64() {
            Some(n) => page = n,
            None => return (ids, pages),
        }
        assert!(pages < 10_000);
    }
}

#[tokio::test]
async fn meta_is_right_for_several_sizes() {
    let c = client();
    for (links, per_page) in [
        (0usize, 100u64),
        (1, 100),
        (100, 100),
        (101, 100),
        (250, 7),
        (5, 1),
    ] {
        let (sim, s) = start(config(links)).await;
        let base = s.base_url();
        let total_pages = (links as u64).div_ceil(per_page);
        let (ids, pages) = walk(&c, &base, &format!("per_page={per_page}")).await;
        assert_eq!(pages, total_pages.max(1));
        let expected: Vec<String> = sim
            .links_json()
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, expected, "walk returns every link once, newest first");

        let last = list(
            &c,
            &base,
            &format!("per_page={per_page}&page={}", total_pages.max(1)),
        )
        .await
        .json();
        assert_eq!(
            last["meta"],
            json!({
                "current_page": total_pages.max(1),
                "next_page": null,
                "prev_page": if total_pages > 1 { json!(total_pages - 1) } else { json!(null) },
                "total_pages": total_pages,
                "total_count": links,
                "per_page": per_page,
            }),
            "{links} links, {per_page} per page"
        );
        let beyond = list(
            &c,
            &base,
            &format!("per_page={per_page}&page={}", total_pages + 1),
        )
        .await
        .json();
        assert_eq!(beyond["payment_links"], json!([]));
        assert_eq!(beyond["meta"]["next_page"], Value::Null);
        assert_eq!(beyond["meta"]["total_count"], json!(links));
        s.shutdown().await;
    }
}

#[tokio::test]
async fn links_follow_the_spec() {
    let (sim, s) = start(config(400)).await;
    let links = sim.links_json();
    let mut seen = HashSet::new();
    for l in links.as_array().unwrap() {
        let obj = l.as_object().unwrap();
        for key in [
            "id",
            "status",
            "expiration_date",
            "potential_payment_methods",
            "amount",
            "created_at",
            "url",
            "resource_type",
            "reusable",
            "items",
            "invoice_id",
            "invoice_number",
            "debitor_name",
        ] {
            assert!(obj.contains_key(key), "{key} missing in {l}");
        }
        assert!(seen.insert(l["id"].as_str().unwrap().to_owned()));
        assert!(
            ["open", "processing", "paid", "expired", "canceled"]
                .contains(&l["status"].as_str().unwrap())
        );
        for date in ["expiration_date", "created_at"] {
            let d = l[date].as_str().unwrap();
            assert!(
                time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339)
                    .is_ok()
                    && d.ends_with('Z'),
                "{d}"
            );
        }
        let value: rust_decimal::Decimal = l["amount"]["value"].as_str().unwrap().parse().unwrap();
        assert!(
            value >= rust_decimal::Decimal::new(500, 2)
                && value <= rust_decimal::Decimal::new(2_000_000, 2)
        );
        assert_eq!(
            l["amount"]["value"]
                .as_str()
                .unwrap()
                .split('.')
                .nth(1)
                .map(str::len),
            Some(2)
        );
        match l["resource_type"].as_str().unwrap() {
            "Invoice" => {
                assert!(
                    l["items"].is_null()
                        && l["invoice_id"].is_string()
                        && l["debitor_name"].is_string()
                );
                assert_eq!(l["reusable"], json!(false));
            }
            "Basket" => {
                let items = l["items"].as_array().unwrap();
                assert!((1..=3).contains(&items.len()));
                for i in items {
                    assert!(
                        i["title"].is_string()
                            && i["quantity"].is_number()
                            && i["vat_rate"].is_string()
                    );
                    assert_eq!(i["unit_price"]["currency"], l["amount"]["currency"]);
                }
                assert!(
                    l["invoice_id"].is_null()
                        && l["invoice_number"].is_null()
                        && l["debitor_name"].is_null()
                );
            }
            other => panic!("resource_type {other}"),
        }
    }
    s.shutdown().await;
}

#[tokio::test]
async fn filters_and_sorting() {
    let (sim, s) = start(config(600)).await;
    let c = client();
    let base = s.base_url();
    let all = sim.links_json();
    let expected = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| ["open", "paid"].contains(&l["status"].as_str().unwrap()))
        .count();
    // Both spellings of the array parameter.
    let (ids, _) = walk(&c, &base, "status[]=open&status%5B%5D=paid&per_page=50").await;
    assert_eq!(ids.len(), expected);
    let r = list(&c, &base, "status[]=open&status[]=paid&per_page=100")
        .await
        .json();
    assert_eq!(r["meta"]["total_count"], json!(expected));
    assert!(
        r["payment_links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| ["open", "paid"].contains(&l["status"].as_str().unwrap()))
    );

    let r = list(&c, &base, "sort_by=amount:asc&per_page=100")
        .await
        .json();
    let amounts: Vec<rust_decimal::Decimal> = r["payment_links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"]["value"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(amounts.windows(2).all(|w| w[0] <= w[1]));
    let r = list(&c, &base, "sort_by=expiration_date:desc&status[]=open")
        .await
        .json();
    let dates: Vec<&str> = r["payment_links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["expiration_date"].as_str().unwrap())
        .collect();
    assert!(
        dates.windows(2).all(|w| w[0] >= w[1]),
        "RFC 3339 in UTC sorts as text"
    );
    assert_eq!(
        sim.stats().list_requests_by_status_filter.get("open,paid"),
        Some(&(expected.div_ceil(50) as u64 + 1))
    );
    s.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_get_the_spec_400() {
    let (_sim, s) = start(config(10)).await;
    let c = client();
    let base = s.base_url();
    for (query, parameter) in [
        ("per_page=101", "per_page"),
        ("per_page=0", "per_page"),
        ("page=0", "page"),
        ("page=abc", "page"),
        ("status[]=refunded", "status"),
        ("status=refunded", "status"),
        ("status=open,paid", "status"),
        ("status[0]=open", "status"),
        ("sort_by=created_at:asc", "sort_by"),
    ] {
        let r = list(&c, &base, query).await;
        assert_eq!(r.status, 400, "{query}");
        assert!(r.content_type.starts_with("application/json"));
        let v = r.json();
        assert_eq!(v["errors"][0]["code"], "bad_request");
        assert!(v["errors"][0]["detail"].is_string());
        assert_eq!(
            v["errors"][0]["source"],
            json!({ "parameter": parameter }),
            "{query}"
        );
        assert_eq!(v["trace_id"], json!(r.trace_id));
    }
    s.shutdown().await;
}

#[tokio::test]
async fn authentication() {
    let cfg = SimConfig {
        api_key: Some(("acme".into(), "s3cr3t".into())),
        staging_token: Some("staging".into()),
        ..config(3)
    };
    let (_sim, s) = start(cfg).await;
    let c = client();
    let url = format!("{}/v2/payment_links", s.base_url());
    let staged = || c.get(&url).header("X-Qonto-Staging-Token", "staging");

    let r = send(c.get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(
        (r.status, r.content_type.starts_with("text/html")),
        (200, true),
        "no staging token: HTML"
    );

    let r = send(staged()).await;
    assert_eq!(r.status, 401);
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], "authorization_header_missing");
    assert_eq!(v["errors"][0]["detail"], "authorization header missing");
    assert_eq!(v["trace_id"], json!(r.trace_id));

    for auth in [
        "Bearer wrong",
        "Bearer ",
        "acme:wrong",
        "s3cr3t",
        "Basic YWNtZTpzM2NyM3Q=",
    ] {
        let r = send(staged().header("Authorization", auth)).await;
        assert_eq!(r.status, 401, "{auth}");
        assert_eq!(r.json()["errors"][0]["code"], "authorization_token_invalid");
    }
    for auth in [format!("Bearer {TOKEN}"), "acme:s3cr3t".to_owned()] {
        let r = send(staged().header("Authorization", &auth)).await;
        assert_eq!(r.status, 200, "{auth}");
        assert!(r.content_type.starts_with("application/json"));
    }
    s.shutdown().await;

    // No credential configured: any non-empty Bearer token.
    let (_sim, s) = start(SimConfig::default()).await;
    let url = format!("{}/v2/payment_links", s.base_url());
    assert_eq!(send(c.get(&url).bearer_auth("anything")).await.status, 200);
    assert_eq!(send(c.get(&url)).await.status, 401);
    s.shutdown().await;
}

async fn token(c: &reqwest::Client, base: &str, form: &[(&str, &str)]) -> Reply {
    send(c.post(format!("{base}/oauth2/token")).form(form)).await
}

#[tokio::test]
async fn refresh_tokens_rotate_with_a_grace_period() {
    let grace = Duration::from_millis(400);
    let cfg = SimConfig {
        oauth: Some(SimOAuth {
            grace,
            ..SimOAuth::new("client", "secret", "rt-initial")
        }),
        ..config(5)
    };
    let (_sim, s) = start(cfg).await;
    let c = client();
    let base = s.base_url();
    let refresh = |rt: &'static str| {
        [
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "client"),
            ("client_secret", "secret"),
        ]
    };

    let r = token(&c, &base, &refresh("rt-initial")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["scope"], "payment_link.read offline_access");
    let access = v["access_token"].as_str().unwrap().to_owned();
    let new_rt = v["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_rt, "rt-initial");

    let ok = send(
        c.get(format!("{base}/v2/payment_links"))
            .bearer_auth(&access),
    )
    .await;
    assert_eq!(ok.status, 200);

    // Within the grace, the old token still works (and rotates again).
    assert_eq!(token(&c, &base, &refresh("rt-initial")).await.status, 200);
    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    let r = token(&c, &base, &refresh("rt-initial")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");

    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", new_rt.as_str()),
        ("client_id", "client"),
        ("client_secret", "secret"),
    ];
    assert_eq!(
        token(&c, &base, &form).await.status,
        200,
        "the new one works"
    );

    let wrong_client = [
        ("grant_type", "refresh_token"),
        ("refresh_token", new_rt.as_str()),
        ("client_id", "client"),
        ("client_secret", "nope"),
    ];
    let r = token(&c, &base, &wrong_client).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("invalid_client"))
    );
    let r = token(&c, &base, &refresh("never-issued")).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );
    assert_eq!(_sim.stats().token_requests_total, 6);
    s.shutdown().await;
}

#[tokio::test]
async fn access_tokens_expire() {
    let cfg = SimConfig {
        oauth: Some(SimOAuth {
            access_token_ttl: Duration::from_millis(300),
            ..SimOAuth::new("client", "secret", "rt")
        }),
        ..config(5)
    };
    let (_sim, s) = start(cfg).await;
    let c = client();
    let base = s.base_url();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", "rt"),
        ("client_id", "client"),
        ("client_secret", "secret"),
    ];
    let access = token(&c, &base, &form).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{base}/v2/payment_links");
    assert_eq!(send(c.get(&url).bearer_auth(&access)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = send(c.get(&url).bearer_auth(&access)).await;
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].clone()),
        (401, json!("authorization_token_invalid"))
    );
    s.shutdown().await;
}

const REDIRECT: &str = "http://localhost:8080/callback";

/// `GET /oauth2/auth`, returning the code from the redirect.
async fn auth_code(c: &reqwest::Client, base: &str, scope: &str) -> String {
    let query = [
        ("client_id", "client"),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", scope),
        ("state", "xyz 1"),
    ];
    let resp = c
        .get(format!("{base}/oauth2/auth"))
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{REDIRECT}?code=")),
        "{location}"
    );
    assert!(location.ends_with("&state=xyz%201"), "{location}");
    let (_, rest) = location.split_once("?code=").unwrap();
    rest.split('&').next().unwrap().to_owned()
}

async fn exchange(c: &reqwest::Client, base: &str, code: &str, redirect_uri: &str) -> Reply {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", "client"),
        ("client_secret", "secret"),
    ];
    token(c, base, &form).await
}

#[tokio::test]
async fn authorization_code_flow() {
    let cfg = SimConfig {
        oauth: Some(SimOAuth::new("client", "secret", "")),
        ..config(5)
    };
    let (_sim, s) = start(cfg).await;
    let c = client();
    let base = s.base_url();

    let code = auth_code(&c, &base, "payment_link.read offline_access").await;
    let r = exchange(&c, &base, &code, REDIRECT).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["refresh_token"].is_string());
    let r = exchange(&c, &base, &code, REDIRECT).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid_grant")),
        "codes are single-use"
    );

    // Without offline_access there is no refresh token; without payment_link.read, a 403.
    let code = auth_code(&c, &base, "organization.read").await;
    let r = exchange(&c, &base, &code, REDIRECT).await.json();
    assert!(r.get("refresh_token").is_none(), "{r}");
    let access = r["access_token"].as_str().unwrap().to_owned();
    let r = send(
        c.get(format!("{base}/v2/payment_links"))
            .bearer_auth(&access),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        r.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("payment_link.read")
    );

    let code = auth_code(&c, &base, "payment_link.read").await;
    assert_eq!(
        exchange(&c, &base, &code, "http://elsewhere/").await.status,
        400,
        "redirect_uri must match"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn scripted_faults_apply_the_given_number_of_times() {
    let (sim, s) = start(config(150)).await;
    let c = client();
    let base = s.base_url();

    sim.inject(Fault::Status {
        code: 429,
        retry_after: Some("2".into()),
        times: 2,
    });
    for _ in 0..2 {
        let r = list(&c, &base, "").await;
        assert_eq!((r.status, r.retry_after.as_deref()), (429, Some("2")));
        assert_eq!(r.json()["trace_id"], json!(r.trace_id));
    }
    assert_eq!(list(&c, &base, "").await.status, 200);

    for code in [500u16, 502, 503, 401, 403] {
        sim.inject(Fault::Status {
            code,
            retry_after: None,
            times: 1,
        });
        let r = list(&c, &base, "").await;
        assert_eq!(r.status, code);
        assert!(r.json()["errors"][0]["code"].is_string());
    }

    sim.inject(Fault::Reset { times: 1 });
    let e = c
        .get(format!("{base}/v2/payment_links"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(e.is_err(), "connection closed without a response");
    assert_eq!(list(&c, &base, "").await.status, 200);

    sim.inject(Fault::Truncate { times: 1 });
    let r = list(&c, &base, "").await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.body).is_err());
    assert!(r.body.starts_with("{\"payment_links\":["));

    sim.inject(Fault::Malformed { times: 1 });
    let v = list(&c, &base, "").await.json();
    assert!(v.get("meta").is_none() && v["payment_links"].is_array());

    sim.inject(Fault::Html { times: 1 });
    let r = list(&c, &base, "").await;
    assert!(r.status == 200 && r.content_type.starts_with("text/html"));

    for (kind, field, bad) in [
        (InvalidKind::Amount, "/amount/value", "12,5O"),
        (InvalidKind::Currency, "/amount/currency", "euro"),
        (InvalidKind::ExpirationDate, "/expiration_date", "tomorrow"),
    ] {
        sim.inject(Fault::InvalidLink { kind, times: 1 });
        let v = list(&c, &base, "").await.json();
        assert_eq!(v["payment_links"][0].pointer(field), Some(&json!(bad)));
        assert_ne!(
            v["payment_links"][1].pointer(field),
            Some(&json!(bad)),
            "only one link"
        );
    }

    sim.inject(Fault::StuckNextPage { times: 1 });
    let v = list(&c, &base, "page=1").await.json();
    assert_eq!(v["meta"]["next_page"], json!(1));
    sim.inject(Fault::NextPageBeyond { times: 1 });
    let v = list(&c, &base, "page=1").await.json();
    assert!(v["meta"]["next_page"].as_u64().unwrap() > v["meta"]["total_pages"].as_u64().unwrap());
    assert_eq!(
        list(&c, &base, "page=1").await.json()["meta"]["next_page"],
        json!(2)
    );

    sim.inject(Fault::Delay {
        delay: Duration::from_millis(300),
        times: 1,
    });
    let t = Instant::now();
    assert_eq!(list(&c, &base, "").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    // A data fault is not used up by a request refused for its credentials.
    sim.inject(Fault::Malformed { times: 1 });
    assert_eq!(
        send(c.get(format!("{base}/v2/payment_links"))).await.status,
        401
    );
    assert!(list(&c, &base, "").await.json().get("meta").is_none());

    sim.inject(Fault::Status {
        code: 503,
        retry_after: None,
        times: 5,
    });
    sim.clear_faults();
    assert_eq!(list(&c, &base, "").await.status, 200);

    let stats = sim.stats();
    assert_eq!(stats.by_code.get("reset"), Some(&1));
    assert_eq!(stats.by_code.get("429"), Some(&2));
    s.shutdown().await;
}

#[tokio::test]
async fn drift_during_walk_shifts_later_pages() {
    let (sim, s) = start(config(30)).await;
    let c = client();
    let base = s.base_url();
    sim.inject(Fault::DriftDuringWalk { create: 3 });
    let p1 = list(&c, &base, "per_page=10&page=1").await.json();
    assert_eq!(p1["meta"]["total_count"], 30);
    let p2 = list(&c, &base, "per_page=10&page=2").await.json();
    assert_eq!(p2["meta"]["total_count"], 33);
    // The last 3 links of page 1 come again at the top of page 2.
    assert_eq!(p2["payment_links"][0]["id"], p1["payment_links"][7]["id"]);
    assert_eq!(
        list(&c, &base, "per_page=10&page=1").await.json()["meta"]["total_count"],
        33,
        "once only"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn control_endpoints() {
    let (sim, s) = start(config(50)).await;
    let c = client();
    let base = s.base_url();
    let post = |path: &str, body: Value| {
        c.post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
    };

    let r = send(post(
        "/_sim/faults",
        json!({"kind":"status","code":429,"retry_after":"2","times":1}),
    ))
    .await;
    assert_eq!(r.status, 204);
    let r = send(post("/_sim/faults", json!([{"kind":"invalid_link","invalid":"amount"}, {"kind":"delay","delay":"10ms","times":1}]))).await;
    assert_eq!(r.status, 204);
    assert_eq!(list(&c, &base, "").await.status, 429);
    assert_eq!(
        list(&c, &base, "").await.json()["payment_links"][0]["amount"]["value"],
        "12,5O"
    );

    assert_eq!(
        send(post("/_sim/faults", json!({"kind":"reset"})))
            .await
            .status,
        204
    );
    assert_eq!(
        send(c.delete(format!("{base}/_sim/faults"))).await.status,
        204
    );
    assert_eq!(list(&c, &base, "").await.status, 200);
    let r = send(post("/_sim/faults", json!({"kind":"explode"}))).await;
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].clone()),
        (400, json!("bad_request"))
    );

    let r = send(post("/_sim/mutate", json!({"kind":"create","count":4})))
        .await
        .json();
    assert_eq!(r, json!({"affected": 4, "links": 54}));
    let r = send(post(
        "/_sim/mutate",
        json!({"kind":"expire_soon","count":2,"within":"1h"}),
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        send(post("/_sim/mutate", json!({"kind":"pay"})))
            .await
            .status,
        400
    );
    assert_eq!(
        send(post("/_sim/mutate", json!({"kind":"step"})))
            .await
            .status,
        200
    );

    let links = send(c.get(format!("{base}/_sim/links"))).await.json();
    assert_eq!(links, sim.links_json());
    assert_eq!(links.as_array().unwrap().len(), sim.len());

    let stats = send(c.get(format!("{base}/_sim/stats"))).await.json();
    assert_eq!(stats["list_requests_total"], 3);
    assert_eq!(stats["by_code"], json!({"200": 2, "429": 1}));
    assert_eq!(
        stats["list_requests_by_status_filter"],
        json!({"all": 2}),
        "the 429 came before validation"
    );
    assert_eq!(
        stats["requests_total"], 3,
        "control requests are not counted"
    );
    assert_eq!(send(post("/_sim/stats/reset", json!({}))).await.status, 204);
    assert_eq!(sim.stats(), SimStats::default());
    assert_eq!(send(c.get(format!("{base}/_sim/nope"))).await.status, 404);
    s.shutdown().await;
}

#[tokio::test]
async fn terminal_links_never_change_under_step() {
    let sim = Simulator::new(config(2000));
    let terminal = |v: &Value| -> Vec<(String, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .filter(|l| ["paid", "expired", "canceled"].contains(&l["status"].as_str().unwrap()))
            .map(|l| (l["id"].as_str().unwrap().to_owned(), l.clone()))
            .collect()
    };
    let before = terminal(&sim.links_json());
    for _ in 0..50 {
        sim.mutate(Mutation::Step);
    }
    let after: std::collections::HashMap<String, Value> =
        terminal(&sim.links_json()).into_iter().collect();
    assert!(after.len() > before.len(), "steps end some open links");
    for (id, link) in before {
        assert_eq!(after.get(&id), Some(&link), "terminal link {id} changed");
    }
}

#[tokio::test]
async fn latency_and_background_evolution() {
    let cfg = SimConfig {
        latency: Duration::from_millis(100),
        evolve_every: Some(Duration::from_millis(50)),
        ..config(3000)
    };
    let (sim, s) = start(cfg).await;
    let c = client();
    let t = Instant::now();
    assert_eq!(list(&c, &s.base_url(), "").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(100));
    let before = sim.links_json();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_ne!(sim.links_json(), before, "the organisation evolves");
    s.shutdown().await;
}

#[tokio::test]
async fn shutdown_and_drop_stop_serving() {
    let c = client();
    let (_sim, s) = start(config(1)).await;
    let base = s.base_url();
    assert_eq!(list(&c, &base, "").await.status, 200);
    s.shutdown().await;
    assert!(
        c.get(format!("{base}/v2/payment_links"))
            .send()
            .await
            .is_err()
    );

    let (_sim, s) = start(config(1)).await;
    let base = s.base_url();
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = client();
    assert!(
        fresh
            .get(format!("{base}/v2/payment_links"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let (_sim, s) = start(config(1)).await;
    let c = client();
    let base = s.base_url();
    let r = send(c.get(format!("{base}/v2/nothing")).bearer_auth(TOKEN)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["trace_id"], json!(r.trace_id));
    assert_eq!(
        send(
            c.post(format!("{base}/v2/payment_links"))
                .bearer_auth(TOKEN)
        )
        .await
        .status,
        405
    );
    assert_eq!(
        send(c.post(format!("{base}/oauth2/token"))).await.status,
        404,
        "OAuth is off"
    );
    s.shutdown().await;
}

#[test]
fn demo_config() {
    let d = SimConfig::demo();
    assert_eq!(d.links, 3000);
    assert_eq!(d.evolve_every, Some(Duration::from_secs(5)));
    assert_eq!(d.access_tokens.len(), 1);
    assert_eq!(d.access_tokens[0].len(), 32);
    assert!(d.first_organization().has_credentials());
}

#[test]
fn same_seed_and_start_same_data() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let a = Simulator::with_start_time(config(200), start).links_json();
    let b = Simulator::with_start_time(config(200), start).links_json();
    assert_eq!(a, b);
}

#[tokio::test]
async fn many_concurrent_requests() {
    let (_sim, s) = start(config(1000)).await;
    let base = s.base_url();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u64 {
        // One client per task: separate connections, each reused (keep-alive) for its requests.
        let c = client();
        let base = base.clone();
        tasks.spawn(async move {
            for page in 1..=4 {
                let r = list(
                    &c,
                    &base,
                    &format!("per_page=25&page={}&status[]=paid", page + i % 5),
                )
                .await;
                assert_eq!(r.status, 200);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task");
    }
    s.shutdown().await;
}

// ---- Spec-valid variations (issue 9 §7) ------------------------------------------------------

/// Two organisations from the same seed and start: one in the example's spelling, one with
/// `variants`. The switches re-spell links; they must not change which links exist.
fn pair(links: usize, variants: SpecVariants) -> (Vec<Value>, Vec<Value>) {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let plain = Simulator::with_start_time(config(links), start).links_json();
    let varied = Simulator::with_start_time(
        SimConfig {
            variants,
            ..config(links)
        },
        start,
    )
    .links_json();
    let arr = |v: Value| v.as_array().unwrap().clone();
    (arr(plain), arr(varied))
}

#[test]
fn date_forms_write_the_same_instant() {
    let (plain, varied) = pair(
        2000,
        SpecVariants {
            date_forms: DateForm::ALL.to_vec(),
            ..SpecVariants::default()
        },
    );
    let rfc = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    };
    let mut seen = HashSet::new();
    for (p, v) in plain.iter().zip(&varied) {
        assert_eq!(p["id"], v["id"]);
        let want = p["expiration_date"].as_str().unwrap();
        let status = v["status"].as_str().unwrap();
        let Some(got) = v.get("expiration_date") else {
            assert!(["paid", "canceled"].contains(&status), "{v}");
            seen.insert("absent");
            continue;
        };
        let Some(got) = got.as_str() else {
            assert!(
                got.is_null() && ["paid", "canceled"].contains(&status),
                "{v}"
            );
            seen.insert("null");
            continue;
        };
        let clock = got.split_once('T').unwrap().1;
        let (form, instant) = if clock.contains('.') {
            ("fractional", rfc(got).replace_nanosecond(0).unwrap())
        } else if clock.len() == 6 {
            // HH:MMZ: the instant truncated to the minute.
            ("no-seconds", rfc(&got.replace('Z', ":00Z")))
        } else if clock.len() == 8 {
            ("no-offset", rfc(&format!("{got}Z")))
        } else if clock.len() == 13 {
            let (head, off) = got.split_at(got.len() - 2);
            ("offset-no-colon", rfc(&format!("{head}:{off}")))
        } else if got.ends_with('Z') {
            ("utc", rfc(got))
        } else {
            ("offset", rfc(got))
        };
        seen.insert(form);
        let want = rfc(want);
        if form == "no-seconds" {
            assert_eq!(instant, want.replace_second(0).unwrap(), "{got} for {want}");
        } else {
            assert_eq!(instant, want, "{form}: {got}");
        }
        let created = v["created_at"].as_str().unwrap();
        assert_eq!(
            created.split_once('T').unwrap().1.len(),
            clock.len(),
            "created_at in the same form: {created}, {got}"
        );
    }
    assert_eq!(seen.len(), DateForm::ALL.len(), "{seen:?}");
}

#[test]
fn letter_cases_and_minor_unit_currencies() {
    let (plain, varied) = pair(
        3000,
        SpecVariants {
            other_case_share: 0.3,
            minor_unit_currency_share: 0.3,
            ..SpecVariants::default()
        },
    );
    let mut respelled = [0usize; 3];
    let mut minor = 0;
    for (p, v) in plain.iter().zip(&varied) {
        assert_eq!((&p["id"], &p["url"]), (&v["id"], &v["url"]));
        let fields = |l: &Value| {
            [
                l["status"].clone(),
                l["amount"]["currency"].clone(),
                l["resource_type"].clone(),
            ]
        };
        for (i, (p, v)) in fields(p).iter().zip(fields(v)).enumerate() {
            let (p, v) = (p.as_str().unwrap(), v.as_str().unwrap());
            if p != v {
                respelled[i] += 1;
                // The currency may also be replaced by yen or dinars.
                assert!(p.eq_ignore_ascii_case(v) || i == 1, "{p} / {v}");
            }
        }
        let currency = v["amount"]["currency"]
            .as_str()
            .unwrap()
            .to_ascii_uppercase();
        let value = v["amount"]["value"].as_str().unwrap();
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        match currency.as_str() {
            "JPY" => assert_eq!(decimals, 0, "{value}"),
            "KWD" => assert_eq!(decimals, 3, "{value}"),
            _ => {
                assert_eq!(decimals, 2, "{value}");
                assert_eq!(
                    currency,
                    p["amount"]["currency"].as_str().unwrap(),
                    "only yen and dinars replace a currency"
                );
            }
        }
        if ["JPY", "KWD"].contains(&currency.as_str()) {
            minor += 1;
            assert!(
                !v["potential_payment_methods"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("ideal")),
                "iDEAL is for euros"
            );
            // A basket's amount is the sum of its lines, rounded half up to the minor unit.
            if let Some(items) = v["items"].as_array() {
                use rust_decimal::{Decimal, RoundingStrategy};
                let total: Decimal = items
                    .iter()
                    .map(|i| {
                        assert_eq!(i["unit_price"]["currency"], v["amount"]["currency"]);
                        let price: Decimal =
                            i["unit_price"]["value"].as_str().unwrap().parse().unwrap();
                        let qty: Decimal = i["quantity"].to_string().parse().unwrap();
                        let vat: Decimal = i["vat_rate"].as_str().unwrap().parse().unwrap();
                        (price * qty * (Decimal::ONE + vat / Decimal::ONE_HUNDRED))
                            .round_dp_with_strategy(
                                decimals as u32,
                                RoundingStrategy::MidpointAwayFromZero,
                            )
                    })
                    .sum();
                assert_eq!(total, value.parse::<Decimal>().unwrap(), "{v}");
            }
        }
    }
    for (i, n) in respelled.iter().enumerate() {
        // 30 % of links respelled, the currency also by yen and dinars.
        assert!(
            (700..1400).contains(n) || (i == 1 && *n > 700),
            "{respelled:?}"
        );
    }
    assert!((700..1100).contains(&minor), "{minor}");
}

#[tokio::test]
async fn respelled_links_are_filtered_and_sorted_like_the_others() {
    let variants = SpecVariants {
        date_forms: vec![DateForm::Utc, DateForm::Null, DateForm::Absent],
        other_case_share: 0.5,
        ..SpecVariants::default()
    };
    let (sim, s) = start(SimConfig {
        variants,
        ..config(600)
    })
    .await;
    let c = client();
    let base = s.base_url();
    let all = sim.links_json();
    let paid: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"].as_str().unwrap().eq_ignore_ascii_case("paid"))
        .collect();
    assert!(paid.iter().any(|l| l["status"] != "paid"), "some respelled");
    let (ids, _) = walk(&c, &base, "status[]=paid&per_page=100").await;
    assert_eq!(ids.len(), paid.len());
    // Dateless links sort as SQL's NULLs: first descending, last ascending.
    let dateless = paid
        .iter()
        .filter(|l| !l.get("expiration_date").is_some_and(Value::is_string))
        .count();
    assert!(dateless > 20 && dateless < paid.len() - 20, "{dateless}");
    for (order, nulls_first) in [("desc", true), ("asc", false)] {
        let mut dates: Vec<Option<String>> = Vec::new();
        for page in 1..=paid.len().div_ceil(100) {
            let r = list(
                &c,
                &base,
                &format!("status[]=paid&sort_by=expiration_date:{order}&per_page=100&page={page}"),
            )
            .await
            .json();
            dates.extend(r["payment_links"].as_array().unwrap().iter().map(|l| {
                l.get("expiration_date")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }));
        }
        assert_eq!(dates.len(), paid.len());
        if !nulls_first {
            dates.reverse();
        }
        assert!(dates[..dateless].iter().all(Option::is_none), "{order}");
        assert!(dates[dateless..].iter().all(Option::is_some), "{order}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn links_of_the_wrong_type_are_the_same_on_every_request() {
    let variants = SpecVariants {
        invalid_link_share: 0.05,
        invalid_link_kinds: vec![InvalidKind::AmountNumber, InvalidKind::IdNumber],
        ..SpecVariants::default()
    };
    let (sim, s) = start(SimConfig {
        variants,
        ..config(1000)
    })
    .await;
    let c = client();
    let base = s.base_url();
    let first = list(&c, &base, "per_page=100").await.json();
    assert_eq!(first, list(&c, &base, "per_page=100").await.json());
    let all = sim.links_json();
    let links = all.as_array().unwrap();
    let numbers = links
        .iter()
        .filter(|l| l["amount"]["value"].is_number())
        .count();
    let ids: Vec<u64> = links.iter().filter_map(|l| l["id"].as_u64()).collect();
    assert!(numbers > 10 && ids.len() > 10, "{numbers} {}", ids.len());
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "numeric ids are distinct"
    );
    assert!(
        links
            .iter()
            .all(|l| l["id"].is_string() || l["amount"]["value"].is_string())
    );
    assert!(ids.iter().all(|&id| id < 1 << 53));

    s.shutdown().await;

    // The same kinds as one-request faults, on an organisation without them.
    let (sim, s) = start(config(5)).await;
    let base = s.base_url();
    let f: Fault =
        serde_json::from_value(json!({"kind":"invalid_link","invalid":"id_number"})).unwrap();
    sim.inject(f);
    sim.inject(Fault::InvalidLink {
        kind: InvalidKind::AmountNumber,
        times: 1,
    });
    let plain = sim.links_json();
    let r = list(&c, &base, "per_page=1").await.json();
    assert!(r["payment_links"][0]["id"].is_u64(), "{r}");
    let r = list(&c, &base, "per_page=1").await.json();
    let value = &r["payment_links"][0]["amount"]["value"];
    assert_eq!(
        value.as_f64(),
        plain[0]["amount"]["value"].as_str().unwrap().parse().ok(),
        "{r}"
    );
    assert_eq!(
        "id_number".parse::<InvalidKind>(),
        Ok(InvalidKind::IdNumber)
    );
    s.shutdown().await;
}

#[tokio::test]
async fn terminal_links_move_on_demand() {
    let (sim, s) = start(config(800)).await;
    let c = client();
    let base = s.base_url();
    let by_id = |v: Value| -> std::collections::HashMap<String, Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| (l["id"].as_str().unwrap().to_owned(), l.clone()))
            .collect()
    };
    let count = |v: &std::collections::HashMap<String, Value>, st: &str| {
        v.values().filter(|l| l["status"] == st).count()
    };
    let mutate = |body: Value| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let r = send(
                c.post(format!("{base}/_sim/mutate"))
                    .header("content-type", "application/json")
                    .body(body.to_string()),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()
        }
    };
    let before = by_id(sim.links_json());
    let r = mutate(json!({"kind":"reopen","count":2})).await;
    assert_eq!(r, json!({"affected": 2, "links": 800}));
    let after = by_id(sim.links_json());
    let reopened: Vec<&String> = after
        .iter()
        .filter(|(id, l)| l["status"] == "open" && before[*id]["status"] == "paid")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(reopened.len(), 2);
    assert!(reopened.iter().all(|id| after[*id]["reusable"] == true));

    let r = mutate(json!({"kind":"recast","count":3,"from":"canceled","to":"expired"})).await;
    assert_eq!(r["affected"], 3);
    let recast = by_id(sim.links_json());
    assert_eq!(count(&recast, "expired"), count(&after, "expired") + 3);
    assert_eq!(count(&recast, "canceled"), count(&after, "canceled") - 3);

    let r = mutate(json!({"kind":"batch","mutations":[
        {"kind":"remove","count":4,"status":"paid"},
        {"kind":"pay","count":4}
    ]}))
    .await;
    assert_eq!(r, json!({"affected": 8, "links": 796}));
    let removed = by_id(sim.links_json());
    assert_eq!(count(&removed, "paid"), count(&recast, "paid"));
    assert_eq!(
        recast
            .keys()
            .filter(|id| !removed.contains_key(*id))
            .count(),
        4
    );
    let (ids, _) = walk(&c, &base, "per_page=100").await;
    assert_eq!(ids.len(), 796, "the listing has no hole");
    let r = send(
        c.post(format!("{base}/_sim/mutate"))
            .body(json!({"kind":"recast","count":1,"from":"refunded","to":"paid"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 400);
    s.shutdown().await;
}

#[test]
fn terminal_moves_per_step_are_fixed_by_the_seed() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let cfg = SimConfig {
        variants: SpecVariants {
            terminal_moves_per_step: 2,
            ..SpecVariants::default()
        },
        ..config(2000)
    };
    let run = || {
        let sim = Simulator::with_start_time(cfg.clone(), start);
        let before = sim.links_json();
        // Steps at fixed times (`Simulator::mutate` reads the clock).
        let mut store = sim.shared.orgs[0].store.write().unwrap();
        for i in 0..30 {
            store.apply(&Mutation::Step, 1_750_000_000 + 5 * i);
        }
        drop(store);
        (before, sim.links_json())
    };
    let (before, after) = run();
    assert_eq!(
        run().1,
        after,
        "the same seed and steps give the same moves"
    );
    let terminal =
        |l: &Value| ["paid", "expired", "canceled"].contains(&l["status"].as_str().unwrap());
    let now: std::collections::HashMap<&str, &Value> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["id"].as_str().unwrap(), l))
        .collect();
    let moved = before
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| terminal(l))
        .filter(|l| now.get(l["id"].as_str().unwrap()) != Some(l))
        .count();
    assert!(
        (20..=60).contains(&moved),
        "{moved} terminal links moved in 30 steps"
    );
}

// ---- Issue 10: rate limits, the request log, OpenAPI's array encoding --------------------------

fn limited(links: usize, windows: &[&str], retry_after: bool) -> SimConfig {
    SimConfig {
        rate_limits: Some(RateLimits {
            windows: windows.iter().map(|w| w.parse().unwrap()).collect(),
            retry_after,
        }),
        ..config(links)
    }
}

#[tokio::test]
async fn status_accepts_both_array_encodings() {
    let (sim, s) = start(config(300)).await;
    let c = client();
    let base = s.base_url();
    let expected: HashSet<String> = sim
        .links_json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| ["open", "paid"].contains(&l["status"].as_str().unwrap()))
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    // The spec's example (Rails' brackets), OpenAPI's default (form, explode), and a mix.
    for query in [
        "status[]=open&status[]=paid",
        "status=open&status=paid",
        "status=paid&status%5B%5D=open",
    ] {
        let (ids, _) = walk(&c, &base, &format!("{query}&per_page=40")).await;
        assert_eq!(ids.len(), expected.len(), "{query}");
        assert_eq!(ids.into_iter().collect::<HashSet<_>>(), expected, "{query}");
    }
    let r = list(&c, &base, "status=expired").await.json();
    assert!(
        r["payment_links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "expired")
    );
    let stats = sim.stats();
    assert_eq!(
        stats.list_requests_by_status_filter.get("expired"),
        Some(&1)
    );
    assert_eq!(
        stats.list_requests_by_status_filter.get("open,paid"),
        Some(&(3 * expected.len().div_ceil(40) as u64)),
        "both encodings are the same filter"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn rate_limit_windows_are_enforced_over_http() {
    // A short window of 3 per 2 s and a long one of 5 per minute.
    let (sim, s) = start(limited(10, &["3/2s", "5/1m"], false)).await;
    let c = client();
    let base = s.base_url();
    let first = Instant::now();
    for _ in 0..3 {
        assert_eq!(list(&c, &base, "").await.status, 200);
    }
    // The short window is full: the documented error body, no Retry-After.
    let r = list(&c, &base, "status=open").await;
    assert_eq!(r.status, 429);
    assert!(r.content_type.starts_with("application/json"));
    assert_eq!(r.retry_after, None, "Qonto documents no Retry-After");
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], "too_many_requests");
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("3 requests per 2s"),
        "{v}"
    );
    assert_eq!(v["trace_id"], json!(r.trace_id));
    // Every API request counts, whatever its path or credentials; OAuth's host is another.
    let r = send(c.get(format!("{base}/v2/nothing")).bearer_auth(TOKEN)).await;
    assert_eq!(r.status, 429);
    assert_eq!(list_without_token(&c, &base).await, 429);
    assert_eq!(
        send(c.post(format!("{base}/oauth2/token"))).await.status,
        404,
        "/oauth2/* is not rate-limited (OAuth is off here: 404)"
    );
    // Control endpoints are not API requests.
    assert_eq!(send(c.get(format!("{base}/_sim/stats"))).await.status, 200);

    // Refusals did not count: once the first three are 2 s old, two more fit; then the long
    // window (5 per minute) is full.
    tokio::time::sleep(
        (first + Duration::from_millis(2050)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(list(&c, &base, "").await.status, 200);
    assert_eq!(list(&c, &base, "").await.status, 200);
    let r = list(&c, &base, "").await;
    assert_eq!(r.status, 429);
    assert!(
        r.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("5 requests per 1m"),
        "{}",
        r.body
    );

    let stats = sim.stats();
    assert_eq!(stats.rate_limited_total, 4);
    assert_eq!(stats.by_code.get("200"), Some(&5));
    assert_eq!(stats.by_code.get("429"), Some(&4));
    assert_eq!(stats.by_code.get("404"), Some(&1));
    assert_eq!(
        stats.list_requests_total, 8,
        "refused list requests are list requests"
    );

    // The log shows it from outside: never more than 3 admitted per 2 s or 5 per minute.
    let log = sim.request_log();
    let admitted: Vec<&RequestRecord> = log
        .requests
        .iter()
        .filter(|r| r.rate_limited_path && r.code != Some(429))
        .collect();
    assert_eq!(admitted.len(), 5);
    assert_eq!(
        max_in_window(admitted.iter().copied(), Duration::from_secs(2)).requests,
        3
    );
    assert_eq!(
        max_in_window(admitted.iter().copied(), Duration::from_secs(60)).requests,
        5
    );
    assert_eq!(
        log.peak(Duration::from_secs(60)).requests,
        9,
        "what the client sent"
    );
    s.shutdown().await;
}

async fn list_without_token(c: &reqwest::Client, base: &str) -> u16 {
    send(c.get(format!("{base}/v2/payment_links"))).await.status
}

#[tokio::test]
async fn rate_limit_retry_after_on_request() {
    let (_sim, s) = start(limited(10, &["1/30s"], true)).await;
    let c = client();
    let base = s.base_url();
    assert_eq!(list(&c, &base, "").await.status, 200);
    let r = list(&c, &base, "").await;
    assert_eq!(r.status, 429);
    let secs: u64 = r
        .retry_after
        .expect("Retry-After when asked for")
        .parse()
        .unwrap();
    assert!(
        (25..=30).contains(&secs),
        "{secs} s until the window has room"
    );
    s.shutdown().await;
}

/// Checks the limiter's contract on a log: every admitted request found each window below its
/// limit at its arrival, and every refused one found some window full.
fn check_windows(log: &RequestLog, windows: &[RateWindow]) {
    let admitted: Vec<u64> = log
        .requests
        .iter()
        .filter(|r| r.code == Some(200))
        .map(|r| r.t_ns)
        .collect();
    let in_window = |t: u64, w: &RateWindow, inclusive: bool| {
        let period = w.period.as_nanos() as u64;
        admitted
            .iter()
            .filter(|&&a| a + period > t && (a < t || (inclusive && a == t)))
            .count()
    };
    for r in &log.requests {
        match r.code {
            Some(200) => {
                for w in windows {
                    assert!(
                        in_window(r.t_ns, w, false) < w.limit as usize,
                        "{r:?} over {w}"
                    );
                }
            }
            Some(429) => assert!(
                windows
                    .iter()
                    .any(|w| in_window(r.t_ns, w, true) >= w.limit as usize),
                "{r:?} refused with room in every window"
            ),
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

#[tokio::test]
async fn scaled_down_windows_hold_under_concurrent_load() {
    let windows: [RateWindow; 2] = ["20/200ms".parse().unwrap(), "60/1s".parse().unwrap()];
    let (sim, s) = start(limited(50, &["20/200ms", "60/1s"], false)).await;
    let base = s.base_url();
    let until = Instant::now() + Duration::from_millis(1500);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let c = client();
        let base = base.clone();
        tasks.spawn(async move {
            while Instant::now() < until {
                let r = list(&c, &base, "per_page=10").await;
                assert!(r.status == 200 || r.status == 429, "{}", r.status);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task");
    }
    let log = sim.request_log();
    assert_eq!(log.dropped, 0);
    let stats = sim.stats();
    assert!(stats.rate_limited_total > 0, "the load overran the windows");
    let admitted: Vec<&RequestRecord> = log
        .requests
        .iter()
        .filter(|r| r.code == Some(200))
        .collect();
    // The windows roll: more than one long window's worth got through in 1.5 s.
    assert!(admitted.len() > 60, "{} admitted", admitted.len());
    for w in &windows {
        let peak = max_in_window(admitted.iter().copied(), w.period).requests;
        assert!(
            peak <= w.limit as usize,
            "{peak} admitted in a window of {w}"
        );
    }
    check_windows(&log, &windows);
    s.shutdown().await;
}

#[tokio::test]
async fn request_log_over_http() {
    let (sim, s) = start(SimConfig {
        request_log_capacity: 4,
        ..config(30)
    })
    .await;
    let c = client();
    let base = s.base_url();
    let get_log = || async { send(c.get(format!("{base}/_sim/requests"))).await.json() };
    let before = Instant::now();
    assert_eq!(
        list(&c, &base, "status=paid&status[]=open&page=2&per_page=5")
            .await
            .status,
        200
    );
    assert_eq!(list(&c, &base, "page=0").await.status, 400);
    assert_eq!(
        send(c.post(format!("{base}/oauth2/token"))).await.status,
        404
    );
    let log = get_log().await;
    assert_eq!(
        (log["capacity"].clone(), log["dropped"].clone()),
        (json!(4), json!(0))
    );
    let reqs = log["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 3, "control requests are not logged: {log}");
    assert_eq!(
        reqs[0],
        json!({
            "t_ns": reqs[0]["t_ns"],
            "organization": "default",
            "method": "GET",
            "path": "/v2/payment_links",
            "status_filter": "open,paid",
            "page": 2,
            "code": 200,
            "rate_limited_path": true,
        })
    );
    assert_eq!(
        (
            reqs[1]["status_filter"].clone(),
            reqs[1]["page"].clone(),
            reqs[1]["code"].clone()
        ),
        (Value::Null, Value::Null, json!(400)),
        "an invalid query has no filter"
    );
    assert_eq!(reqs[2]["path"], "/oauth2/token");
    assert_eq!(reqs[2]["rate_limited_path"], false);
    // Arrival times: monotonic, in order, and no later than the time elapsed.
    let t: Vec<u64> = reqs.iter().map(|r| r["t_ns"].as_u64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]));
    assert!(t[2] - t[0] <= before.elapsed().as_nanos() as u64);
    // The same log in process.
    let in_process = sim.request_log();
    assert_eq!(serde_json::to_value(&in_process).unwrap(), log);

    // The busiest window counts the rate-limited paths only (not /oauth2/token).
    let peak = send(c.get(format!("{base}/_sim/requests/peak?window=1h")))
        .await
        .json();
    assert_eq!(
        peak,
        json!({"window": "1h", "requests": 2, "start_ns": t[0], "dropped": 0})
    );
    for bad in ["", "?window=", "?window=soon", "?window=0s"] {
        let r = send(c.get(format!("{base}/_sim/requests/peak{bad}"))).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["errors"][0]["code"], "bad_request");
    }

    // Bounded: the oldest make way and are counted.
    for _ in 0..3 {
        list(&c, &base, "").await;
    }
    let log = sim.request_log();
    assert_eq!((log.requests.len(), log.dropped), (4, 2));
    assert_eq!(log.requests[0].path, "/oauth2/token");
    assert_eq!(
        send(c.post(format!("{base}/_sim/requests/reset")))
            .await
            .status,
        204
    );
    assert_eq!(
        get_log().await,
        json!({"capacity": 4, "dropped": 0, "requests": []})
    );
    assert_eq!(
        send(c.delete(format!("{base}/_sim/requests"))).await.status,
        405
    );
    sim.clear_request_log();
    s.shutdown().await;
}

// ---- Issue 11 §7: several organisations on one listener ----------------------------------------

const ALPHA_TOKEN: &str = "alpha-token";

/// Three organisations, each reached another way: `alpha` (first) with a static token, `beta`
/// with an API key behind a staging token, `gamma` with an OAuth client only.
fn three_organisations(rate_limits: Option<RateLimits>) -> SimConfig {
    SimConfig {
        name: "alpha".into(),
        links: 30,
        seed: 1,
        access_tokens: vec![ALPHA_TOKEN.into()],
        rate_limits,
        more_organizations: vec![
            SimOrganization {
                links: 45,
                seed: 2,
                api_key: Some(("beta".into(), "beta-secret".into())),
                staging_token: Some("beta-staging".into()),
                ..SimOrganization::new("beta")
            },
            SimOrganization {
                links: 12,
                seed: 3,
                oauth: Some(SimOAuth::new("gamma-client", "gamma-secret", "gamma-rt")),
                ..SimOrganization::new("gamma")
            },
        ],
        ..SimConfig::default()
    }
}

fn sorted_ids(links: &Value) -> Vec<String> {
    let mut ids: Vec<String> = links
        .as_array()
        .expect("an array of links")
        .iter()
        .map(|l| l["id"].as_str().expect("a string id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// A fresh access token of `gamma`, from its refresh token.
async fn gamma_access_token(c: &reqwest::Client, base: &str) -> String {
    let r = token(
        c,
        base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "gamma-rt"),
            ("client_id", "gamma-client"),
            ("client_secret", "gamma-secret"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_organisation_sees_only_its_own_links() {
    let (sim, s) = start(three_organisations(None)).await;
    let c = client();
    let base = s.base_url();
    let names: Vec<String> = sim
        .organizations()
        .iter()
        .map(|o| o.name().to_owned())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    let (alpha, beta, gamma) = (
        sim.organization("alpha").unwrap(),
        sim.organization("beta").unwrap(),
        sim.organization("gamma").unwrap(),
    );
    assert!(sim.organization("delta").is_none());
    assert_eq!((alpha.len(), beta.len(), gamma.len()), (30, 45, 12));
    assert_eq!(
        sim.links_json(),
        alpha.links_json(),
        "the simulator's own = the first"
    );

    let bearer_gamma = format!("Bearer {}", gamma_access_token(&c, &base).await);
    let walked = |auth: String, staging: bool| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let mut ids = Vec::new();
            let mut page = 1;
            loop {
                let mut req = c
                    .get(format!("{base}/v2/payment_links?per_page=10&page={page}"))
                    .header("authorization", &auth);
                if staging {
                    req = req.header("X-Qonto-Staging-Token", "beta-staging");
                }
                let v = send(req).await;
                assert_eq!(v.status, 200, "{auth}: {}", v.body);
                let v = v.json();
                ids.extend(sorted_ids(&v["payment_links"]));
                match v["meta"]["next_page"].as_u64() {
                    Some(n) => page = n,
                    None => break,
                }
            }
            ids.sort();
            ids
        }
    };
    let seen_alpha = walked(format!("Bearer {ALPHA_TOKEN}"), false).await;
    let seen_beta = walked("beta:beta-secret".into(), true).await;
    let seen_gamma = walked(bearer_gamma.clone(), false).await;
    assert_eq!(seen_alpha, sorted_ids(&alpha.links_json()));
    assert_eq!(seen_beta, sorted_ids(&beta.links_json()));
    assert_eq!(seen_gamma, sorted_ids(&gamma.links_json()));
    let all: HashSet<&String> = seen_alpha
        .iter()
        .chain(&seen_beta)
        .chain(&seen_gamma)
        .collect();
    assert_eq!(all.len(), 30 + 45 + 12, "no link is shared");

    // Each organisation's own staging token: beta's key without it gets the sandbox's HTML page;
    // the others need none.
    let r = list_as(&c, &base, "", "beta:beta-secret").await;
    assert_eq!(
        (r.status, r.content_type.starts_with("text/html")),
        (200, true)
    );

    // Wrong credentials: the single-organisation simulator's 401s, for every kind.
    for auth in [
        "Bearer nope",
        "Bearer beta-secret",
        "beta:wrong",
        "alpha:beta-secret",
        "gamma-client:gamma-secret",
        "Bearer gamma-rt",
    ] {
        let r = list_as(&c, &base, "", auth).await;
        assert_eq!(r.status, 401, "{auth}");
        assert_eq!(
            r.json()["errors"][0]["code"],
            "authorization_token_invalid",
            "{auth}"
        );
    }
    let r = send(c.get(format!("{base}/v2/payment_links"))).await;
    assert_eq!(
        r.json()["errors"][0]["code"],
        "authorization_header_missing"
    );
    for form in [
        [("client_id", "nobody"), ("client_secret", "gamma-secret")],
        [("client_id", "gamma-client"), ("client_secret", "wrong")],
    ] {
        let mut form = form.to_vec();
        form.extend([
            ("grant_type", "refresh_token"),
            ("refresh_token", "gamma-rt"),
        ]);
        let r = token(&c, &base, &form).await;
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (401, json!("invalid_client"))
        );
    }
    let r = send(c.get(format!(
        "{base}/oauth2/auth?client_id=nobody&redirect_uri=http://x/cb&response_type=code"
    )))
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid_client"))
    );

    // The log names the organisation each request reached; refused ones name none, and count
    // in the first organisation's stats, as with one organisation.
    let log = sim.request_log();
    let count = |name: Option<&str>| {
        log.requests
            .iter()
            .filter(|r| r.organization.as_deref() == name)
            .count()
    };
    let pages = |n: usize| n.div_ceil(10);
    assert_eq!(count(Some("alpha")), pages(30));
    assert_eq!(count(Some("beta")), pages(45) + 1, "+1: the HTML answer");
    // gamma: its token request, its pages.
    assert_eq!(
        count(Some("gamma")),
        1 + pages(12) + 1,
        "+1: wrong secret, right client"
    );
    assert_eq!(count(None), 6 + 1 + 1 + 1);
    assert_eq!(
        log.of_organization("gamma").requests.len(),
        count(Some("gamma"))
    );
    assert_eq!(beta.stats().list_requests_total, pages(45) as u64 + 1);
    assert_eq!(gamma.stats().token_requests_total, 2);
    assert_eq!(
        alpha.stats().requests_total,
        (pages(30) + 6 + 1 + 1 + 1) as u64,
        "alpha: its own and the refused"
    );
    assert_eq!(sim.stats(), alpha.stats());
    s.shutdown().await;
}

#[tokio::test]
async fn faults_mutations_and_control_act_on_one_organisation() {
    let (sim, s) = start(three_organisations(None)).await;
    let c = client();
    let base = s.base_url();
    let (alpha, beta) = (
        sim.organization("alpha").unwrap(),
        sim.organization("beta").unwrap(),
    );
    let as_alpha = format!("Bearer {ALPHA_TOKEN}");
    let beta_list = || {
        send(
            c.get(format!("{base}/v2/payment_links"))
                .header("authorization", "beta:beta-secret")
                .header("X-Qonto-Staging-Token", "beta-staging"),
        )
    };

    // An API fault in one organisation changes nothing for the others.
    beta.inject(Fault::Status {
        code: 503,
        retry_after: None,
        times: 1,
    });
    assert_eq!(list_as(&c, &base, "", &as_alpha).await.status, 200);
    assert_eq!(beta_list().await.status, 503);
    assert_eq!(beta_list().await.status, 200);
    let post = |path: &str, body: Value| {
        send(
            c.post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    };
    let r = post(
        "/_sim/faults?organization=alpha",
        json!({"kind":"status","code":500}),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(beta_list().await.status, 200);
    assert_eq!(list_as(&c, &base, "", &as_alpha).await.status, 500);
    // Without ?organization: the first, as with one organisation.
    assert_eq!(
        post("/_sim/faults", json!({"kind":"html"})).await.status,
        204
    );
    assert_eq!(beta_list().await.status, 200);
    let r = list_as(&c, &base, "", &as_alpha).await;
    assert!(r.content_type.starts_with("text/html"));

    // Mutations.
    let r = post(
        "/_sim/mutate?organization=beta",
        json!({"kind":"create","count":5}),
    )
    .await;
    assert_eq!(r.json(), json!({"affected": 5, "links": 50}));
    assert_eq!((alpha.len(), beta.len()), (30, 50));
    let r = post("/_sim/mutate", json!({"kind":"create","count":2})).await;
    assert_eq!(r.json(), json!({"affected": 2, "links": 32}));
    assert_eq!(beta.mutate(Mutation::Create(1)), 1);
    assert_eq!((alpha.len(), beta.len()), (32, 51));
    let links = send(c.get(format!("{base}/_sim/links?organization=beta")))
        .await
        .json();
    assert_eq!(links, beta.links_json());
    let links = send(c.get(format!("{base}/_sim/links"))).await.json();
    assert_eq!(links, alpha.links_json());

    // Stats and the request log, per organisation.
    let stats = send(c.get(format!("{base}/_sim/stats?organization=beta")))
        .await
        .json();
    assert_eq!(stats, serde_json::to_value(beta.stats()).unwrap());
    assert_eq!(beta.stats().list_requests_total, 4);
    let r = send(c.post(format!("{base}/_sim/stats/reset?organization=beta"))).await;
    assert_eq!(r.status, 204);
    assert_eq!(beta.stats(), SimStats::default());
    assert_ne!(alpha.stats(), SimStats::default());
    let log = send(c.get(format!("{base}/_sim/requests?organization=beta")))
        .await
        .json();
    let entries = log["requests"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert!(entries.iter().all(|e| e["organization"] == "beta"), "{log}");
    let peak = send(c.get(format!(
        "{base}/_sim/requests/peak?window=1h&organization=alpha"
    )))
    .await
    .json();
    assert_eq!(peak["requests"], 3);
    let orgs = send(c.get(format!("{base}/_sim/organizations")))
        .await
        .json();
    assert_eq!(
        orgs,
        json!([
            {"name": "alpha", "links": 32},
            {"name": "beta", "links": 51},
            {"name": "gamma", "links": 12},
        ])
    );

    // Unknown names: a 404 that says so, for every endpoint; a reset of one organisation's
    // share of the shared log: a 400.
    for (method, path) in [
        (Method::GET, "/_sim/links"),
        (Method::POST, "/_sim/mutate"),
        (Method::DELETE, "/_sim/faults"),
        (Method::GET, "/_sim/requests"),
    ] {
        let r = send(c.request(method.clone(), format!("{base}{path}?organization=delta"))).await;
        assert_eq!(r.status, 404, "{method} {path}");
        let detail = r.json()["errors"][0]["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains("no organisation named \"delta\""),
            "{detail}"
        );
    }
    let long = "x".repeat(10_000);
    let r = send(c.get(format!("{base}/_sim/links?organization={long}"))).await;
    assert_eq!(r.status, 404);
    assert!(r.body.len() < 1_000, "the name is not echoed whole");
    let r = send(c.post(format!("{base}/_sim/requests/reset?organization=beta"))).await;
    assert_eq!(r.status, 400);
    assert_eq!(sim.request_log().requests.len(), 7, "nothing was reset");
    assert_eq!(
        send(c.get(format!("{base}/_sim/nothing?organization=delta")))
            .await
            .status,
        404
    );
    s.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_counts_every_organisation_together() {
    let (sim, s) = start(three_organisations(Some(RateLimits {
        windows: vec!["4/1h".parse().unwrap()],
        retry_after: false,
    })))
    .await;
    let c = client();
    let base = s.base_url();
    let (alpha, beta) = (
        sim.organization("alpha").unwrap(),
        sim.organization("beta").unwrap(),
    );
    let as_alpha = format!("Bearer {ALPHA_TOKEN}");
    let beta_list = || {
        send(
            c.get(format!("{base}/v2/payment_links"))
                .header("authorization", "beta:beta-secret")
                .header("X-Qonto-Staging-Token", "beta-staging"),
        )
    };
    // Two each: the window of 4 is full, for both.
    for _ in 0..2 {
        assert_eq!(list_as(&c, &base, "", &as_alpha).await.status, 200);
        assert_eq!(beta_list().await.status, 200);
    }
    assert_eq!(list_as(&c, &base, "", &as_alpha).await.status, 429);
    assert_eq!(beta_list().await.status, 429);
    // The OAuth endpoint is another host at Qonto: not limited, and gamma then hits the limit too.
    let bearer_gamma = format!("Bearer {}", gamma_access_token(&c, &base).await);
    assert_eq!(list_as(&c, &base, "", &bearer_gamma).await.status, 429);
    for org in [&alpha, &beta, &sim.organization("gamma").unwrap()] {
        assert_eq!(org.stats().rate_limited_total, 1, "{}", org.name());
    }
    let log = sim.request_log();
    assert_eq!(log.peak(Duration::from_secs(3600)).requests, 7);
    assert_eq!(log.of_organization("beta").requests.len(), 3);
    s.shutdown().await;
}

#[test]
fn ambiguous_organisations_are_refused() {
    let key = |login: &str| Some((login.to_owned(), "secret".to_owned()));
    let org = |name: &str, login: &str| SimOrganization {
        links: 1,
        api_key: key(login),
        ..SimOrganization::new(name)
    };
    let with = |more: Vec<SimOrganization>| SimConfig {
        links: 1,
        api_key: key("first"),
        more_organizations: more,
        ..SimConfig::default()
    };
    let err = |cfg: SimConfig| Simulator::try_new(cfg).err().map(|e| e.to_string());

    assert_eq!(err(with(vec![org("b", "b"), org("c", "c")])), None);
    // One organisation without a credential accepts any Bearer token, as before; among several,
    // none may go without.
    assert_eq!(err(SimConfig::default()), None);
    let e = err(with(vec![SimOrganization::new("bare")])).unwrap();
    assert!(e.contains("\"bare\" has no credential"), "{e}");
    let e = err(SimConfig {
        api_key: None,
        ..with(vec![org("b", "b")])
    })
    .unwrap();
    assert!(e.contains("\"default\" has no credential"), "{e}");
    // Names: unique and not empty.
    let e = err(with(vec![org("b", "b"), org("b", "c")])).unwrap();
    assert!(e.contains("two organisations are named \"b\""), "{e}");
    assert!(
        err(with(vec![org("", "b")]))
            .unwrap()
            .contains("empty name")
    );
    // A credential that would select two organisations.
    let e = err(with(vec![org("b", "first")])).unwrap();
    assert_eq!(
        e,
        "organisations \"default\" and \"b\" share the same API key login: a request presenting it could be for either"
    );
    let token = |name: &str| SimOrganization {
        access_tokens: vec!["same".into()],
        ..SimOrganization::new(name)
    };
    assert!(
        err(with(vec![token("b"), token("c")]))
            .unwrap()
            .contains("access token")
    );
    let client = |name: &str| SimOrganization {
        oauth: Some(SimOAuth::new("client", name, "")),
        ..SimOrganization::new(name)
    };
    assert!(
        err(with(vec![client("b"), client("c")]))
            .unwrap()
            .contains("OAuth client id")
    );
    // One organisation listing its token twice is not ambiguous.
    assert_eq!(
        err(SimConfig {
            access_tokens: vec!["t".into(), "t".into()],
            ..SimConfig::default()
        }),
        None
    );
}
