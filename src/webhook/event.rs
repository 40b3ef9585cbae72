//! The events Qonto delivers, parsed from the raw body once its signature is checked. Outside
//! input: every field is checked here and a delivery that cannot be used is refused (400), never
//! half-applied. Types and `data.event` values are open sets: an unknown type is acknowledged and
//! ignored, an unknown `data.event` of a payment link still carries the link's state.

use std::borrow::Cow;

use serde::Deserialize;

use crate::aggregate::parse_date;
use crate::qonto::model::{Amount, Link};

/// `type` of payment-link events.
pub const PAYMENT_LINKS: &str = "v1/payment-links";
/// `type` of connection events.
pub const CONNECTIONS: &str = "v1/payment-links-connections";
/// The `type` label of any other event type (a bound on the label's values).
pub const OTHER: &str = "other";
/// The `type` label of a delivery refused before its type was read.
pub const UNKNOWN: &str = "unknown";

/// Longest event id kept (ids are uuids; the dedupe memory must stay bounded).
pub const MAX_ID_LEN: usize = 128;

/// Longest status, currency, resource type, amount or date of a link event kept: the ledger holds
/// up to [`crate::events::MAX_LEDGER`] links, so each must stay small. Longer is refused (a
/// date: dropped), as no real value comes near it.
pub const MAX_FIELD_LEN: usize = 64;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's id (Qonto's uuid), for deduplication.
    pub id: String,
    /// The `type` label value: [`PAYMENT_LINKS`], [`CONNECTIONS`] or [`OTHER`].
    pub type_label: &'static str,
    /// The envelope's `created_at` (Unix seconds), when usable: the delivery lag.
    pub created_at: Option<i64>,
    pub payload: Payload,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A payment link's state after the change.
    Link(LinkEvent),
    /// A connection event (`connection_enabled`, …): the next connection check reads the state.
    Connection { event: String },
    /// A type the exporter does not use.
    Other,
}

/// A payment link as an event left it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEvent {
    /// `data.event` (`created`, `updated`, …; an open set).
    pub event: String,
    pub id: String,
    pub status: String,
    pub amount: String,
    pub currency: String,
    pub resource_type: String,
    /// `expired_at` (the expiration date), or `expiration_date` if sent under that name.
    pub expiration_date: Option<String>,
    pub created_at: Option<String>,
    /// `updated_at` in Unix nanoseconds: orders the events of one link (out-of-order deliveries
    /// are settled by it). `None` when missing or unusable: such an event orders by receipt.
    pub updated_at: Option<i128>,
}

impl LinkEvent {
    /// The link as the aggregator reads it (the same validation as a listed link).
    pub fn link(&self) -> Link<'_> {
        Link {
            id: Cow::Borrowed(&self.id),
            status: Cow::Borrowed(&self.status),
            expiration_date: self.expiration_date.as_deref().map(Cow::Borrowed),
            created_at: self.created_at.as_deref().map(Cow::Borrowed),
            amount: Amount {
                value: Cow::Borrowed(&self.amount),
                currency: Cow::Borrowed(&self.currency),
            },
            resource_type: Cow::Borrowed(&self.resource_type),
        }
    }
}

/// Why a delivery's body cannot be used (answered 400). Never holds the body itself.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("body is not a JSON event envelope: {0}")]
    Envelope(String),
    #[error("event id is empty or longer than {MAX_ID_LEN} bytes")]
    Id,
    #[error("payment-link event without usable {0}")]
    Field(&'static str),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(default)]
    created_at: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct LinkData {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    payment_link_id: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    amount: Option<AmountData>,
    #[serde(default)]
    resource_type: Option<String>,
    #[serde(default)]
    expired_at: Option<serde_json::Value>,
    #[serde(default)]
    expiration_date: Option<serde_json::Value>,
    #[serde(default)]
    created_at: Option<serde_json::Value>,
    #[serde(default)]
    updated_at: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AmountData {
    value: serde_json::Value,
    currency: String,
}

/// A JSON string, or `None` for anything else (null, a number, …): dates are optional.
fn text(v: Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

/// Parses a delivery's body (already verified).
pub fn parse(body: &[u8]) -> Result<Event, EventError> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(body).map_err(|e| EventError::Envelope(e.to_string()))?;
    let id = envelope.id.trim();
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(EventError::Id);
    }
    let created_at = text(envelope.created_at)
        .as_deref()
        .and_then(parse_date)
        .map(|t| t.unix_timestamp());
    let kind = envelope.kind.trim();
    let (type_label, payload) = if kind.eq_ignore_ascii_case(PAYMENT_LINKS) {
        let data: LinkData = serde_json::from_value(envelope.data.unwrap_or_default())
            .map_err(|_| EventError::Field("data"))?;
        (PAYMENT_LINKS, Payload::Link(link_event(data)?))
    } else if kind.eq_ignore_ascii_case(CONNECTIONS) {
        let event = envelope
            .data
            .as_ref()
            .and_then(|d| d.get("event"))
            .and_then(|e| e.as_str())
            .ok_or(EventError::Field("data.event"))?;
        (
            CONNECTIONS,
            Payload::Connection {
                event: crate::planner::truncate(event, 64).to_owned(),
            },
        )
    } else {
        (OTHER, Payload::Other)
    };
    Ok(Event {
        id: id.to_owned(),
        type_label,
        created_at,
        payload,
    })
}

fn link_event(d: LinkData) -> Result<LinkEvent, EventError> {
    let bounded = |s: Option<String>, max: usize, field| {
        s.filter(|s| !s.trim().is_empty() && s.len() <= max)
            .ok_or(EventError::Field(field))
    };
    let nonempty = |s, field| bounded(s, MAX_FIELD_LEN, field);
    let date = |v| text(v).filter(|s| s.len() <= MAX_FIELD_LEN);
    let amount = d.amount.ok_or(EventError::Field("amount"))?;
    // Qonto sends decimals as strings; a JSON number is read by its exact text, never as f64.
    let value = match amount.value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(EventError::Field("amount.value")),
    };
    let value = nonempty(Some(value), "amount.value")?;
    let updated_at = date(d.updated_at)
        .as_deref()
        .and_then(parse_date)
        .map(|t| t.unix_timestamp_nanos());
    Ok(LinkEvent {
        event: crate::planner::truncate(d.event.as_deref().unwrap_or("unknown"), 64).to_owned(),
        id: bounded(d.payment_link_id.or(d.id), MAX_ID_LEN, "payment_link_id")?,
        status: nonempty(d.status, "status")?,
        amount: value,
        currency: nonempty(Some(amount.currency), "amount.currency")?,
        resource_type: nonempty(d.resource_type, "resource_type")?,
        expiration_date: date(d.expired_at).or_else(|| date(d.expiration_date)),
        created_at: date(d.created_at),
        updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_body(extra: &str) -> String {
        format!(
            r#"{{"id":"e1","subscription_id":"s","organization_id":"o","membership_id":"m",
            "type":"v1/payment-links","created_at":"2026-11-24T10:00:00.000Z",
            "data":{{"event":"updated","payment_link_id":"pl-1","status":"paid",
            "amount":{{"value":"12.30","currency":"EUR"}},"resource_type":"Invoice",
            "resource_id":"r","expired_at":"2026-12-01T00:00:00Z",
            "created_at":"2026-11-20T08:00:00Z","updated_at":"2026-11-24T09:59:59.5Z"{extra}}}}}"#
        )
    }

    #[test]
    fn a_payment_link_event_carries_the_link_state() {
        let e = parse(link_body("").as_bytes()).unwrap();
        assert_eq!(e.id, "e1");
        assert_eq!(e.type_label, PAYMENT_LINKS);
        assert_eq!(e.created_at, Some(1_795_514_400));
        let Payload::Link(l) = e.payload else {
            panic!("not a link event")
        };
        assert_eq!(
            (l.id.as_str(), l.status.as_str(), l.amount.as_str()),
            ("pl-1", "paid", "12.30")
        );
        assert_eq!(l.expiration_date.as_deref(), Some("2026-12-01T00:00:00Z"));
        assert_eq!(l.updated_at, Some(1_795_514_399_500_000_000));
    }

    #[test]
    fn unknown_types_are_other_and_bad_bodies_are_refused() {
        let other = parse(br#"{"id":"x","type":"v1/transactions","data":{}}"#).unwrap();
        assert_eq!((other.type_label, other.payload), (OTHER, Payload::Other));
        assert!(parse(br#"{"test":"data"}"#).is_err());
        assert!(parse(b"not json").is_err());
        assert_eq!(
            parse(br#"{"id":"","type":"v1/payment-links","data":{}}"#),
            Err(EventError::Id)
        );
        let no_amount = r#"{"id":"x","type":"v1/payment-links","data":{"payment_link_id":"a","status":"open","resource_type":"Basket"}}"#;
        assert_eq!(
            parse(no_amount.as_bytes()),
            Err(EventError::Field("amount"))
        );
        let c = parse(br#"{"id":"c","type":"v1/payment-links-connections","data":{"event":"connection_enabled"}}"#).unwrap();
        assert_eq!(
            c.payload,
            Payload::Connection {
                event: "connection_enabled".into()
            }
        );
    }

    #[test]
    fn oversized_fields_are_refused_and_oversized_dates_dropped() {
        let long = "x".repeat(MAX_FIELD_LEN + 1);
        let body = link_body("").replace("\"Invoice\"", &format!("\"{long}\""));
        assert_eq!(
            parse(body.as_bytes()),
            Err(EventError::Field("resource_type"))
        );
        let id = "i".repeat(MAX_ID_LEN + 1);
        let body = link_body("").replace("\"pl-1\"", &format!("\"{id}\""));
        assert_eq!(
            parse(body.as_bytes()),
            Err(EventError::Field("payment_link_id"))
        );
        let body = link_body("").replace("2026-11-20T08:00:00Z", &"9".repeat(100));
        let Payload::Link(l) = parse(body.as_bytes()).unwrap().payload else {
            panic!()
        };
        assert_eq!(l.created_at, None);
    }

    #[test]
    fn absurd_dates_are_none_not_errors() {
        let e = parse(
            link_body(r#","x":1"#)
                .replace("2026-11-24T09:59:59.5Z", "99999-99-99")
                .as_bytes(),
        )
        .unwrap();
        let Payload::Link(l) = e.payload else {
            panic!()
        };
        assert_eq!(l.updated_at, None);
    }
}
