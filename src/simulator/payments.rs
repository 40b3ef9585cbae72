//! `GET /v2/payment_links/{id}/payments`: each link's payments, derived from the link alone
//! (its status, seed, methods, amount and `created_at`), so the same link always has the same
//! payments and a test can recount what the exporter reads:
//! - before its last payment, `failures` attempts that `failed` (0 to 2, from the seed; an
//!   open link has one in four times), each with a method the link allows;
//! - a paid link then has one `paid` payment whose `paid_at` is `created_at` plus 1 minute to 3
//!   days (never after now); a processing link one `authorized` payment; an expired or
//!   canceled link, one time in three, one payment of its own status.

use serde_json::{Value, json};

use super::data::{Link, METHODS, Status, format_uuid};
use super::render::money_value;

/// Longest delay from creation to payment.
const MAX_TIME_TO_PAY: i64 = 3 * 86_400;

/// The payments of `link` as of `now` (Unix seconds), oldest first, as the API writes them.
pub(crate) fn payments_of(link: &Link, now: i64) -> Vec<Value> {
    let seed = link.detail_seed;
    let failures = match link.status {
        Status::Open => u64::from(seed % 4 == 0),
        Status::Processing | Status::Paid => seed % 3,
        Status::Expired | Status::Canceled | Status::Settling => 0,
    };
    let allowed: Vec<&str> = METHODS
        .iter()
        .enumerate()
        .filter(|(i, _)| link.methods & (1 << i) != 0)
        .map(|(_, m)| *m)
        .collect();
    let method = |k: u64| {
        let n = allowed.len().max(1) as u64;
        allowed
            .get(((seed >> (8 * (k % 8))) % n) as usize)
            .copied()
            .unwrap_or("credit_card")
    };
    let paid_at = (link.created_at + 60 + ((seed >> 16) as i64 & i64::MAX) % MAX_TIME_TO_PAY)
        .min(now)
        .max(link.created_at);
    let mut out = Vec::new();
    let mut push = |k: u64, status: &str, paid: Option<i64>| {
        out.push(payment(link, k, status, method(k), paid));
    };
    for k in 0..failures {
        push(k, "failed", None);
    }
    match link.status {
        Status::Paid => push(failures, "paid", Some(paid_at)),
        Status::Processing => push(failures, "authorized", None),
        Status::Expired if seed % 3 == 1 => push(failures, "expired", None),
        Status::Canceled if seed % 3 == 1 => push(failures, "canceled", None),
        _ => {}
    }
    out
}

fn payment(link: &Link, k: u64, status: &str, method: &str, paid_at: Option<i64>) -> Value {
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
    };
    json!({
        "id": format_uuid(link.id ^ u128::from(k + 1).rotate_left(64)),
        "amount": {
            "value": money_value(link.amount_minor, link.currency.exponent()),
            "currency": link.currency.as_str(),
        },
        "status": status,
        "created_at": at(link.created_at + 60 * i64::try_from(k).unwrap_or(0)),
        "payment_method": method,
        "paid_at": paid_at.and_then(at),
        "debitor_email": "customer@example.com",
    })
}
