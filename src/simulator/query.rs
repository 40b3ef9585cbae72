//! Query strings and form bodies: percent-decoding, and validation of the list endpoint's
//! parameters against the spec. Invalid input is a [`BadParam`] (a 400), never a panic.
//!
//! The simulator is strict where the spec is precise (`page ≥ 1`, `per_page` in 1..=100, the status
//! and sort enums, `status` as an array) and ignores parameters it does not know, as Rails does.
//!
//! The `status` array comes in two spellings, both accepted and combinable: the spec's example,
//! `status[]=open&status[]=paid` (Rails' convention), and OpenAPI's default encoding of a query
//! array (the spec declares no `style`, so `form` with `explode: true`), `status=open&status=paid`.
//! Other forms (`status=open,paid`, `status[0]=open`) are refused.

use super::data::{ALL_STATUSES, Order, Status, StatusMask};

/// A query parameter the API refuses, with the `detail` of its 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadParam {
    pub(crate) parameter: String,
    pub(crate) detail: String,
}

impl BadParam {
    fn new(parameter: &str, detail: impl Into<String>) -> BadParam {
        BadParam {
            parameter: parameter.to_owned(),
            detail: detail.into(),
        }
    }
}

/// The validated parameters of `GET /v2/payment_links`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListQuery {
    pub(crate) page: u64,
    pub(crate) per_page: u64,
    pub(crate) statuses: StatusMask,
    pub(crate) order: Order,
}

impl ListQuery {
    /// The status filter as a stable label for statistics: `all`, or the statuses sorted and
    /// joined by commas (`open,paid`).
    pub(crate) fn status_label(&self) -> String {
        if self.statuses == ALL_STATUSES {
            return "all".to_owned();
        }
        let mut names: Vec<&str> = Status::ALL
            .into_iter()
            .filter(|s| self.statuses & s.bit() != 0)
            .map(Status::as_str)
            .collect();
        names.sort_unstable();
        names.join(",")
    }
}

/// The last value of `key` in a decoded form or query.
pub(crate) fn get<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Decodes `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte).
/// Fails on a bad escape or on bytes that are not UTF-8.
pub(crate) fn decode_pairs(raw: &str) -> Result<Vec<(String, String)>, BadParam> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k)
                .ok_or_else(|| BadParam::new(k, "malformed percent-encoding in parameter name"))?;
            let v = decode(v).ok_or_else(|| {
                BadParam::new(&k, "malformed percent-encoding in parameter value")
            })?;
            Ok((k, v))
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for redirect URLs.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Validates the list endpoint's query string. Repeated scalar parameters: the last one wins.
pub(crate) fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, BadParam> {
    let mut q = ListQuery {
        page: 1,
        per_page: 100,
        statuses: 0,
        order: Order::CreatedDesc,
    };
    for (k, v) in decode_pairs(raw.unwrap_or(""))? {
        match k.as_str() {
            "page" => {
                q.page = match v.parse::<u64>() {
                    Ok(p) if p >= 1 => p,
                    _ => return Err(BadParam::new("page", "page must be an integer greater than 0")),
                }
            }
            "per_page" => {
                q.per_page = match v.parse::<u64>() {
                    Ok(p) if (1..=100).contains(&p) => p,
                    _ => return Err(BadParam::new("per_page", "per_page must be an integer between 1 and 100")),
                }
            }
            "status[]" | "status" => match Status::parse(&v) {
                Some(s) => q.statuses |= s.bit(),
                None => {
                    return Err(BadParam::new(
                        "status",
                        format!("status must be one of open, expired, canceled, paid, processing (got {v:?})"),
                    ));
                }
            },
            _ if k.starts_with("status[") => {
                return Err(BadParam::new(
                    "status",
                    "status must be an array: status[]=open&status[]=paid or status=open&status=paid",
                ));
            }
            "sort_by" => {
                q.order = Order::parse(&v).ok_or_else(|| {
                    BadParam::new(
                        "sort_by",
                        format!(
                            "sort_by must be one of amount:asc, amount:desc, expiration_date:asc, expiration_date:desc (got {v:?})"
                        ),
                    )
                })?
            }
            _ => {}
        }
    }
    if q.statuses == 0 {
        q.statuses = ALL_STATUSES;
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(raw: &str) -> String {
        parse_list_query(Some(raw)).unwrap_err().parameter
    }

    #[test]
    fn defaults() {
        let q = parse_list_query(None).unwrap();
        assert_eq!(
            (q.page, q.per_page, q.statuses, q.order),
            (1, 100, ALL_STATUSES, Order::CreatedDesc)
        );
        assert_eq!(q.status_label(), "all");
    }

    #[test]
    fn valid_parameters() {
        let q = parse_list_query(Some(
            "page=3&per_page=25&status[]=paid&status%5B%5D=open&sort_by=amount%3Adesc&x=1",
        ))
        .unwrap();
        assert_eq!((q.page, q.per_page, q.order), (3, 25, Order::AmountDesc));
        assert_eq!(q.statuses, Status::Open.bit() | Status::Paid.bit());
        assert_eq!(q.status_label(), "open,paid");
        assert_eq!(
            parse_list_query(Some("page=99999999999")).unwrap().page,
            99_999_999_999
        );
    }

    #[test]
    fn both_array_spellings_of_status() {
        let both = Status::Open.bit() | Status::Paid.bit();
        for raw in [
            "status[]=open&status[]=paid",
            "status=open&status=paid",
            "status=paid&status[]=open",
            "status%5B%5D=open&status=paid&status=open",
        ] {
            assert_eq!(parse_list_query(Some(raw)).unwrap().statuses, both, "{raw}");
        }
        let q = parse_list_query(Some("status=processing")).unwrap();
        assert_eq!(q.statuses, Status::Processing.bit());
        assert_eq!(q.status_label(), "processing");
    }

    #[test]
    fn invalid_parameters_name_the_parameter() {
        for (raw, p) in [
            ("page=0", "page"),
            ("page=-1", "page"),
            ("page=one", "page"),
            ("page=", "page"),
            ("page=1.5", "page"),
            ("page=99999999999999999999999", "page"),
            ("per_page=0", "per_page"),
            ("per_page=101", "per_page"),
            ("per_page=abc", "per_page"),
            ("status[]=refunded", "status"),
            ("status[]=", "status"),
            ("status[]=open,paid", "status"),
            ("status=open,paid", "status"),
            ("status=", "status"),
            ("status=refunded", "status"),
            ("status[0]=open", "status"),
            ("status[status]=open", "status"),
            ("sort_by=amount", "sort_by"),
            ("sort_by=created_at:desc", "sort_by"),
            ("page=%ZZ", "page"),
            ("page=%C3%28", "page"),
        ] {
            assert_eq!(param(raw), p, "{raw}");
        }
    }

    #[test]
    fn encode_round_trips() {
        let s = "a b&c=d/é~";
        let raw = format!("k={}", encode(s));
        assert_eq!(
            decode_pairs(&raw).unwrap(),
            vec![("k".to_owned(), s.to_owned())]
        );
    }
}
