//! The wire format of `GET /v2/payment_links`, as the OpenAPI spec describes it.
//!
//! Only the fields the exporter uses are read, borrowed from the response body where the JSON
//! has no escapes; `items`, `url` and every other field are skipped without being built.
//! Enums (`status`, `resource_type`) are kept as strings: Qonto adds values without notice.
//!
//! Parsing is two-tier. A page is first parsed strictly in one pass (the fast path). If that
//! fails, it is parsed again with every link kept as raw JSON, so that one link of the wrong
//! shape is skipped and counted, while a page that is not the documented envelope at all
//! (truncated, HTML, `meta` missing) is an error for the whole page.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// `meta` of a list response; every field is required by the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Meta {
    pub current_page: u64,
    pub next_page: Option<u64>,
    pub prev_page: Option<u64>,
    pub total_pages: u64,
    pub total_count: u64,
    pub per_page: u64,
}

/// The money of a link: a decimal string and an ISO 4217 code.
#[derive(Debug, Clone, Deserialize)]
pub struct Amount<'a> {
    #[serde(borrow)]
    pub value: Cow<'a, str>,
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
}

/// The fields of a payment link that the exporter aggregates. Validation of their content
/// (decimal, currency code, date, spelling) belongs to the aggregator, which counts what it
/// rejects.
///
/// The dates are optional here although the spec requires them: only open links need an
/// expiration date, and a paid link without one must still count in its status. A date that is
/// `null`, missing or not a string reaches the aggregator as `None`, which decides what it
/// means; it never makes the whole link unreadable.
#[derive(Debug, Clone, Deserialize)]
pub struct Link<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub status: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "string_or_none")]
    pub expiration_date: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string_or_none")]
    pub created_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub amount: Amount<'a>,
    #[serde(borrow)]
    pub resource_type: Cow<'a, str>,
}

/// A string, borrowed where the JSON has no escapes; any other JSON value is `None`.
fn string_or_none<'de, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
    'de: 'a,
{
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// A parsed page: the links that had the documented shape, and how many did not.
#[derive(Debug)]
pub struct Page<'a> {
    pub links: Vec<Link<'a>>,
    /// Elements of `payment_links` that were not objects of the documented shape.
    pub malformed: Vec<MalformedLink>,
    pub meta: Meta,
}

/// A link element that could not be read. `id` and `status` are recovered when the element
/// is an object holding them as strings (or, for `id`, a number): the status tells which
/// listing's `total_count` the link counts in, and the id lets it be reported once, not once
/// per poll. `fingerprint` identifies an element without a usable id by its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLink {
    pub id: Option<String>,
    pub status: Option<String>,
    pub fingerprint: u64,
    pub error: String,
}

#[derive(Deserialize)]
struct StrictPage<'a> {
    #[serde(borrow)]
    payment_links: Vec<Link<'a>>,
    meta: Meta,
}

#[derive(Deserialize)]
struct LenientPage<'a> {
    #[serde(borrow)]
    payment_links: Vec<&'a RawValue>,
    meta: Meta,
}

/// What can be salvaged from a link element of the wrong shape: any JSON values.
#[derive(Deserialize)]
struct Salvage {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<serde_json::Value>,
}

impl MalformedLink {
    fn salvage(raw: &str, error: String) -> MalformedLink {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let salvaged = serde_json::from_str::<Salvage>(raw).ok();
        let (id, status) = match salvaged {
            Some(s) => (
                s.id.and_then(|v| match v {
                    serde_json::Value::String(s) if !s.is_empty() => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
                s.status.and_then(|v| v.as_str().map(str::to_owned)),
            ),
            None => (None, None),
        };
        MalformedLink {
            id,
            status,
            // A fixed-key hash: the same element text gives the same fingerprint every poll.
            fingerprint: BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(raw),
            error,
        }
    }
}

/// Why a body is not a list page.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PageError {
    #[error(
        "response is not JSON (starts with {start:?}); the sandbox answers an HTML page when X-Qonto-Staging-Token is missing"
    )]
    NotJson { start: String },
    #[error("response is not a payment-links page: {0}")]
    Shape(String),
    #[error("response is not a connection status: {0}")]
    Connection(String),
    #[error("response is not a page of payments: {0}")]
    Payments(String),
}

/// The one field of `GET /v2/payment_links/connections` the exporter reads.
#[derive(Deserialize)]
struct Connection {
    status: String,
}

/// Parses a connection status body: its `status`, as sent (an open set of values).
pub fn parse_connection(body: &[u8]) -> Result<String, PageError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first != Some(b'{') {
        let start: String = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        return Err(PageError::NotJson { start });
    }
    serde_json::from_slice::<Connection>(body)
        .map(|c| c.status)
        .map_err(|e| PageError::Connection(e.to_string()))
}

/// One payment of a link (`GET /v2/payment_links/{id}/payments`), the fields the exporter
/// reads; `status` and `payment_method` are open sets, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Payment {
    pub status: String,
    #[serde(default)]
    pub payment_method: Option<String>,
    /// ISO 8601; absent or null until paid.
    #[serde(default)]
    pub paid_at: Option<String>,
}

/// Most payments one page may hold: `per_page` is at most 100.
const MAX_PAYMENTS_PER_PAGE: usize = 100;

#[derive(Deserialize)]
struct PaymentsPage {
    payments: Vec<Payment>,
    meta: Meta,
}

/// Parses one page of a link's payments.
pub fn parse_payments(body: &[u8]) -> Result<(Vec<Payment>, Meta), PageError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first != Some(b'{') {
        let start: String = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        return Err(PageError::NotJson { start });
    }
    let page = serde_json::from_slice::<PaymentsPage>(body)
        .map_err(|e| PageError::Payments(e.to_string()))?;
    if page.payments.len() > MAX_PAYMENTS_PER_PAGE {
        return Err(PageError::Payments(format!(
            "{} payments in one page, more than per_page allows ({MAX_PAYMENTS_PER_PAGE})",
            page.payments.len()
        )));
    }
    Ok((page.payments, page.meta))
}

/// Parses one list response body.
pub fn parse_page(body: &[u8]) -> Result<Page<'_>, PageError> {
    if let Ok(page) = serde_json::from_slice::<StrictPage<'_>>(body) {
        return Ok(Page {
            links: page.payment_links,
            malformed: Vec::new(),
            meta: page.meta,
        });
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first != Some(b'{') {
        let start: String = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        return Err(PageError::NotJson { start });
    }
    let page: LenientPage<'_> =
        serde_json::from_slice(body).map_err(|e| PageError::Shape(e.to_string()))?;
    let mut links = Vec::with_capacity(page.payment_links.len());
    let mut malformed = Vec::new();
    for raw in page.payment_links {
        match serde_json::from_str::<Link<'_>>(raw.get()) {
            Ok(link) => links.push(link),
            Err(e) => malformed.push(MalformedLink::salvage(raw.get(), e.to_string())),
        }
    }
    Ok(Page {
        links,
        malformed,
        meta: page.meta,
    })
}

/// One entry of a JSON:API error body
/// (`{"errors":[{"code","detail","source":{"pointer","parameter"}}],"trace_id"}`, the spec's
/// `BadRequestError`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ApiErrorEntry {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    /// What in the request caused the error, when the API says. A `source` of another shape is
    /// `None`: it never costs the `code` and `detail` beside it.
    #[serde(default, deserialize_with = "lenient_source")]
    pub source: Option<ApiErrorSource>,
}

fn lenient_source<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ApiErrorSource>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// `source` of an API error: the property of the request body (`pointer`) or the query
/// parameter (`parameter`) that caused it; both optional in the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ApiErrorSource {
    #[serde(default)]
    pub pointer: Option<String>,
    #[serde(default)]
    pub parameter: Option<String>,
}

/// An error body of the Qonto API; every field optional, as 5xx bodies are often empty.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiErrorBody {
    #[serde(default)]
    pub errors: Vec<ApiErrorEntry>,
    #[serde(default)]
    pub trace_id: Option<String>,
}

impl ApiErrorBody {
    /// Parses an error body, or an empty one when the body is not the documented JSON.
    pub fn parse(body: &[u8]) -> ApiErrorBody {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"{
      "payment_links": [
        {"id":"0190e1a6-0000-7000-8000-000000000001","status":"open",
         "expiration_date":"2030-01-01T00:00:00Z","potential_payment_methods":["credit_card","bank_transfer"],
         "amount":{"value":"13.30","currency":"EUR"},"created_at":"2021-01-01T00:00:00Z",
         "url":"https://pay.qonto.com/x","resource_type":"Basket","reusable":true,
         "items":[{"title":"Item 1","quantity":1,"unit_price":{"value":"10.99","currency":"EUR"},"vat_rate":"21.0"}],
         "invoice_id":null,"invoice_number":null,"debitor_name":null,"some_new_field":{"a":[1,2]}},
        {"id":"0190e1a6-0000-7000-8000-000000000002","status":"settling",
         "expiration_date":"2030-01-01T00:00:00Z","potential_payment_methods":[],
         "amount":{"value":"1.00","currency":"USD"},"created_at":"2021-01-01T00:00:00Z",
         "url":"https://pay.qonto.com/y","resource_type":"Invoice","reusable":false,"items":null,
         "invoice_id":"550e8400-e29b-41d4-a716-446655440001","invoice_number":"INV-1","debitor_name":"J\u00f6hn"}
      ],
      "meta":{"current_page":1,"next_page":null,"prev_page":null,"total_pages":1,"total_count":2,"per_page":100}
    }"#;

    #[test]
    fn parses_spec_shape_with_unknown_fields_and_enum_values() {
        let page = parse_page(SPEC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(page.links.len(), 2);
        assert!(page.malformed.is_empty());
        assert_eq!(page.links[0].amount.value, "13.30");
        assert_eq!(page.links[1].status, "settling");
        assert_eq!(page.meta.total_count, 2);
        assert_eq!(page.meta.next_page, None);
    }

    #[test]
    fn a_link_of_the_wrong_shape_is_isolated() {
        let body = SPEC_EXAMPLE.replace(
            r#""amount":{"value":"1.00","currency":"USD"}"#,
            r#""amount":null"#,
        );
        let page = parse_page(body.as_bytes()).unwrap();
        assert_eq!(page.links.len(), 1);
        assert_eq!(page.malformed.len(), 1);
        assert_eq!(
            page.malformed[0].id.as_deref(),
            Some("0190e1a6-0000-7000-8000-000000000002")
        );
        assert_eq!(page.malformed[0].status.as_deref(), Some("settling"));
    }

    #[test]
    fn a_malformed_link_keeps_its_numeric_id_status_and_a_stable_fingerprint() {
        let body = SPEC_EXAMPLE.replace(
            r#""id":"0190e1a6-0000-7000-8000-000000000002""#,
            r#""id":123"#,
        );
        let a = parse_page(body.as_bytes()).unwrap();
        let b = parse_page(body.as_bytes()).unwrap();
        assert_eq!(a.malformed[0].id.as_deref(), Some("123"));
        assert_eq!(a.malformed[0].status.as_deref(), Some("settling"));
        assert_eq!(a.malformed[0].fingerprint, b.malformed[0].fingerprint);
        let other = body.replace(r#""id":123"#, r#""id":124"#);
        let c = parse_page(other.as_bytes()).unwrap();
        assert_ne!(a.malformed[0].fingerprint, c.malformed[0].fingerprint);
    }

    #[test]
    fn null_or_missing_dates_are_not_malformed() {
        let body = SPEC_EXAMPLE
            .replacen(
                r#""expiration_date":"2030-01-01T00:00:00Z""#,
                r#""expiration_date":null"#,
                1,
            )
            .replacen(r#""expiration_date":"2030-01-01T00:00:00Z","#, "", 1);
        let page = parse_page(body.as_bytes()).unwrap();
        assert!(page.malformed.is_empty(), "{:?}", page.malformed);
        assert_eq!(page.links[0].expiration_date, None);
        assert_eq!(page.links[1].expiration_date, None);
        assert_eq!(
            page.links[0].created_at.as_deref(),
            Some("2021-01-01T00:00:00Z")
        );
        let numeric = SPEC_EXAMPLE.replacen(
            r#""expiration_date":"2030-01-01T00:00:00Z""#,
            r#""expiration_date":1893456000"#,
            1,
        );
        let page = parse_page(numeric.as_bytes()).unwrap();
        assert!(page.malformed.is_empty(), "{:?}", page.malformed);
        assert_eq!(page.links[0].expiration_date, None);
        assert_eq!(page.links.len(), 2);
    }

    #[test]
    fn truncated_html_and_missing_meta_are_page_errors() {
        let truncated = &SPEC_EXAMPLE.as_bytes()[..SPEC_EXAMPLE.len() / 2];
        assert!(matches!(parse_page(truncated), Err(PageError::Shape(_))));
        assert!(matches!(
            parse_page(b"<!DOCTYPE html><html>login</html>"),
            Err(PageError::NotJson { .. })
        ));
        assert!(matches!(
            parse_page(br#"{"payment_links":[]}"#),
            Err(PageError::Shape(_))
        ));
    }

    #[test]
    fn error_body_parses_or_defaults() {
        let b = ApiErrorBody::parse(
            br#"{"errors":[{"code":"authorization_token_invalid","detail":"authorization token invalid"}],"trace_id":"abc"}"#,
        );
        assert_eq!(
            b.errors[0].code.as_deref(),
            Some("authorization_token_invalid")
        );
        assert_eq!(b.trace_id.as_deref(), Some("abc"));
        assert!(ApiErrorBody::parse(b"").errors.is_empty());
    }

    #[test]
    fn error_source_is_kept_and_never_costs_the_rest() {
        let b = ApiErrorBody::parse(
            br#"{"errors":[{"code":"bad_request","detail":"invalid","source":{"parameter":"per_page","pointer":"/data/x"}}]}"#,
        );
        assert_eq!(
            b.errors[0].source,
            Some(ApiErrorSource {
                pointer: Some("/data/x".into()),
                parameter: Some("per_page".into()),
            })
        );
        for odd in [r#""per_page""#, "42", r#"{"parameter":7}"#, "null"] {
            let body =
                format!(r#"{{"errors":[{{"code":"bad_request","detail":"d","source":{odd}}}]}}"#);
            let b = ApiErrorBody::parse(body.as_bytes());
            assert_eq!(b.errors[0].code.as_deref(), Some("bad_request"), "{odd}");
            assert_eq!(b.errors[0].source, None, "{odd}");
        }
    }
}
