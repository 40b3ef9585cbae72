//! JSON shapes of the API, as serde structs: a payment link, a page with its pagination `meta`,
//! JSON:API error bodies. Field order follows the reference page's example response.
//! How a link is spelled (date form, letter case, wrong JSON types) is [`Variants`]'s choice.

use std::borrow::Cow;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::data::{DEBITORS, Link, METHODS, ResourceType, basket_items, format_uuid};
use super::faults::InvalidKind;
use super::variants::Variants;

/// A value the spec types as a string, or a JSON number in its place (the wrong-type variants).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub(crate) enum Text {
    Str(String),
    Number(serde_json::Number),
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::Str(s)
    }
}

/// `expiration_date`: a string, `null`, or no key at all ([`LinkJson`] skips it when absent).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DateJson {
    Str(String),
    Null,
    Absent,
}

impl DateJson {
    fn is_absent(&self) -> bool {
        *self == DateJson::Absent
    }
}

impl Serialize for DateJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DateJson::Str(v) => s.serialize_str(v),
            DateJson::Null | DateJson::Absent => s.serialize_none(),
        }
    }
}

/// Money as the API writes it: a decimal string and an ISO 4217 code.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Money {
    pub(crate) value: Text,
    pub(crate) currency: Cow<'static, str>,
}

/// One basket item.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct ItemJson {
    title: &'static str,
    quantity: serde_json::Number,
    unit_price: Money,
    vat_rate: String,
    #[serde(rename = "type")]
    item_type: &'static str,
    description: &'static str,
    measure_unit: &'static str,
}

/// One payment link, exactly as `GET /v2/payment_links` renders it.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct LinkJson {
    pub(crate) id: Text,
    pub(crate) status: Cow<'static, str>,
    #[serde(skip_serializing_if = "DateJson::is_absent")]
    pub(crate) expiration_date: DateJson,
    pub(crate) potential_payment_methods: Vec<&'static str>,
    pub(crate) amount: Money,
    pub(crate) resource_type: Cow<'static, str>,
    pub(crate) reusable: bool,
    pub(crate) created_at: String,
    pub(crate) url: String,
    pub(crate) items: Option<Vec<ItemJson>>,
    pub(crate) invoice_id: Option<String>,
    pub(crate) invoice_number: Option<String>,
    pub(crate) debitor_name: Option<&'static str>,
}

/// The `meta` object of a list response.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) current_page: u64,
    pub(crate) next_page: Option<u64>,
    pub(crate) prev_page: Option<u64>,
    pub(crate) total_pages: u64,
    pub(crate) total_count: u64,
    pub(crate) per_page: u64,
}

impl Meta {
    /// Pagination as Rails' kaminari computes it, which is what the Qonto API's `meta` looks like:
    /// `total_pages` is 0 for an empty set; `next_page` is null on the last page and past the end;
    /// `prev_page` is null on page 1 and also past the end (kaminari's `out_of_range?`).
    pub(crate) fn new(page: u64, per_page: u64, total_count: u64) -> Meta {
        let total_pages = total_count.div_ceil(per_page);
        let in_range = page <= total_pages;
        Meta {
            current_page: page,
            next_page: (page < total_pages).then(|| page + 1),
            prev_page: (page > 1 && in_range).then(|| page - 1),
            total_pages,
            total_count,
            per_page,
        }
    }
}

/// A list response.
#[derive(Serialize, Debug)]
pub(crate) struct Page {
    pub(crate) payment_links: Vec<LinkJson>,
    pub(crate) meta: Meta,
}

/// A list response without its required `meta`: the body of the `Malformed` fault.
#[derive(Serialize, Debug)]
pub(crate) struct PageWithoutMeta {
    pub(crate) payment_links: Vec<LinkJson>,
    pub(crate) pagination: serde_json::Value,
}

/// RFC 3339 in UTC with a `Z`, to the second, like the API.
pub(crate) fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Minor units as a decimal string with `exponent` decimals ("1234.50", "1500", "12.345").
pub(crate) fn money_value(minor: i64, exponent: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    let unit = 10u64.pow(exponent);
    if exponent == 0 {
        return format!("{sign}{m}");
    }
    let width = exponent as usize;
    format!("{sign}{}.{:0width$}", m / unit, m % unit)
}

impl LinkJson {
    /// `link` as the API writes it, spelled as `variants` says.
    pub(crate) fn new(link: &Link, variants: &Variants) -> LinkJson {
        let currency = variants.currency_code(link);
        let exponent = link.currency.exponent();
        let id = format_uuid(link.id);
        let resource_id = format_uuid(link.resource_id);
        let url = format!("https://pay.qonto.com/{id}?resource_id={resource_id}");
        let methods = METHODS
            .iter()
            .enumerate()
            .filter(|(i, _)| link.methods & (1 << i) != 0)
            .map(|(_, m)| *m)
            .collect();
        let (resource_type, items, invoice_id, invoice_number, debitor_name) =
            match link.resource_type {
                ResourceType::Invoice => (
                    variants.resource_type(link, "Invoice"),
                    None,
                    Some(resource_id),
                    Some(format!("INV-{:06}", link.invoice_number)),
                    Some(DEBITORS[usize::from(link.debitor) % DEBITORS.len()]),
                ),
                ResourceType::Basket => {
                    let (items, _) = basket_items(link.detail_seed, link.currency);
                    let items = items
                        .into_iter()
                        .map(|i| ItemJson {
                            title: i.title,
                            quantity: if i.quantity_halves % 2 == 0 {
                                serde_json::Number::from(i.quantity_halves / 2)
                            } else {
                                serde_json::Number::from_f64(f64::from(i.quantity_halves) / 2.0)
                                    .unwrap_or_else(|| serde_json::Number::from(1))
                            },
                            unit_price: Money {
                                value: money_value(i.unit_price_minor, exponent).into(),
                                currency: currency.clone(),
                            },
                            vat_rate: format!("{}.{}", i.vat_permille / 10, i.vat_permille % 10),
                            item_type: i.item_type,
                            description: i.description,
                            measure_unit: i.measure_unit,
                        })
                        .collect();
                    (
                        variants.resource_type(link, "Basket"),
                        Some(items),
                        None,
                        None,
                        None,
                    )
                }
            };
        let mut json = LinkJson {
            id: id.into(),
            status: variants.status(link),
            expiration_date: match variants.date(link, link.expiration) {
                Some(d) => DateJson::Str(d),
                None if variants.date_form(link) == super::DateForm::Absent => DateJson::Absent,
                None => DateJson::Null,
            },
            potential_payment_methods: methods,
            amount: Money {
                value: money_value(link.amount_minor, exponent).into(),
                currency,
            },
            resource_type,
            reusable: link.reusable,
            created_at: variants.created_at(link),
            url,
            items,
            invoice_id,
            invoice_number,
            debitor_name,
        };
        if let Some(kind) = variants.invalid(link) {
            json.spoil(kind, link);
        }
        json
    }

    /// Gives this link the unusable value `kind` (a fault, or a link invalid on every request).
    pub(crate) fn spoil(&mut self, kind: InvalidKind, link: &Link) {
        match kind {
            InvalidKind::Amount => self.amount.value = Text::Str("12,5O".to_owned()),
            InvalidKind::Currency => self.amount.currency = Cow::Borrowed("euro"),
            InvalidKind::ExpirationDate => {
                self.expiration_date = DateJson::Str("tomorrow".to_owned());
            }
            InvalidKind::AmountNumber => {
                let unit = 10f64.powi(link.currency.exponent() as i32);
                let value = link.amount_minor as f64 / unit;
                self.amount.value =
                    Text::Number(serde_json::Number::from_f64(value).unwrap_or_else(|| 0.into()));
            }
            // Distinct per link, and exact in a double (below 2^53).
            InvalidKind::IdNumber => {
                self.id = Text::Number(((link.id as u64) & ((1 << 53) - 1)).into());
            }
        }
    }
}

/// One JSON:API error.
#[derive(Serialize, Debug)]
pub(crate) struct ApiError<'a> {
    pub(crate) code: &'a str,
    pub(crate) detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<ErrorSource<'a>>,
}

/// Where a 400 came from.
#[derive(Serialize, Debug)]
pub(crate) struct ErrorSource<'a> {
    pub(crate) parameter: &'a str,
}

/// An error response body: `{"errors":[…],"trace_id":"…"}`.
#[derive(Serialize, Debug)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) errors: Vec<ApiError<'a>>,
    pub(crate) trace_id: &'a str,
}

/// The body of an error response with one error.
pub(crate) fn error_body(
    code: &str,
    detail: &str,
    parameter: Option<&str>,
    trace_id: &str,
) -> Vec<u8> {
    let body = ErrorBody {
        errors: vec![ApiError {
            code,
            detail,
            source: parameter.map(|parameter| ErrorSource { parameter }),
        }],
        trace_id,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_follows_kaminari() {
        // (page, per_page, count) → (next, prev, total_pages)
        let cases = [
            ((1, 100, 0), (None, None, 0)),
            ((2, 100, 0), (None, None, 0)),
            ((1, 100, 1), (None, None, 1)),
            ((1, 100, 100), (None, None, 1)),
            ((1, 100, 101), (Some(2), None, 2)),
            ((2, 100, 101), (None, Some(1), 2)),
            ((3, 100, 101), (None, None, 2)),
            ((2, 20, 210), (Some(3), Some(1), 11)),
            ((11, 20, 210), (None, Some(10), 11)),
            ((1, 1, 3), (Some(2), None, 3)),
        ];
        for ((page, per, count), (next, prev, pages)) in cases {
            let m = Meta::new(page, per, count);
            assert_eq!(
                (
                    m.next_page,
                    m.prev_page,
                    m.total_pages,
                    m.current_page,
                    m.per_page,
                    m.total_count
                ),
                (next, prev, pages, page, per, count),
                "page {page} per {per} count {count}"
            );
        }
    }

    #[test]
    fn values_are_formatted_like_the_api() {
        assert_eq!(money_value(123_450, 2), "1234.50");
        assert_eq!(money_value(5, 2), "0.05");
        assert_eq!(money_value(1500, 0), "1500");
        assert_eq!(money_value(12_345, 3), "12.345");
        assert_eq!(money_value(7, 3), "0.007");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_609_459_200), "2021-01-01T00:00:00Z");
    }
}
