//! Properties of parsing and aggregation, for any input.

use std::collections::BTreeMap;
use std::str::FromStr;

use proptest::prelude::*;
use qonto_exporter::aggregate::{Aggregator, Limits, Window};
use qonto_exporter::qonto::model::parse_page;
use rust_decimal::Decimal;

/// One generated link and whether the test (independently) considers it valid.
#[derive(Debug, Clone)]
struct Gen {
    id: u8,
    status: &'static str,
    currency: &'static str,
    value: String,
    date: &'static str,
    valid: bool,
}

fn link() -> impl Strategy<Value = Gen> {
    let status = prop::sample::select(vec![
        "open",
        "processing",
        "paid",
        "expired",
        "canceled",
        "settling",
        // Another letter case: folded into the spec's spelling.
        "OPEN",
        "Paid",
    ]);
    let currency = prop::sample::select(vec![
        ("EUR", true),
        ("USD", true),
        ("GBP", true),
        ("eur", true),
        ("EURO", false),
        ("€", false),
    ]);
    let value = prop_oneof![
        (0u64..10_000_000, 0u32..=4)
            .prop_map(|(m, s)| (Decimal::new(m as i64, s).to_string(), true)),
        prop::sample::select(vec!["1,5", "abc", "", "1e3", "1."])
            .prop_map(|v| (v.to_string(), false)),
    ];
    let date = prop::sample::select(vec![
        ("2026-11-24T12:30:00Z", true),
        ("2025-01-01T00:00:00+01:00", true),
        ("2027-03-01T10:00:00.123Z", true),
        // Only open links need a date; one without a usable date still counts in its status.
        ("tomorrow", true),
        ("2026-11-24T12:30:00+0000", true),
        ("2026-11-24T12:30", true),
    ]);
    (0u8..60, status, currency, value, date).prop_map(
        |(id, status, (currency, cv), (value, vv), (date, dv))| Gen {
            id,
            status,
            currency,
            value,
            date,
            valid: cv && vv && dv,
        },
    )
}

fn page_json(links: &[Gen]) -> String {
    let items: Vec<serde_json::Value> = links
        .iter()
        .map(|l| {
            serde_json::json!({
                "id": format!("id-{}", l.id), "status": l.status, "expiration_date": l.date,
                "amount": {"value": l.value, "currency": l.currency},
                "resource_type": "Invoice", "items": null, "url": "u", "reusable": false,
                "created_at": "2025-01-01T00:00:00Z", "potential_payment_methods": []
            })
        })
        .collect();
    serde_json::json!({"payment_links": items, "meta": {"current_page":1,"next_page":null,"prev_page":null,"total_pages":1,"total_count":links.len(),"per_page":100}}).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn counts_are_unique_valid_ids_and_sums_are_exact(links in prop::collection::vec(link(), 0..120)) {
        let body = page_json(&links);
        let page = parse_page(body.as_bytes()).unwrap();
        let now = time::macros::datetime!(2026-11-24 12:00 UTC);
        let windows = [Window { label: "1h".into(), duration: std::time::Duration::from_secs(3600) }];
        let mut agg = Aggregator::new(now, &windows, Limits::default());
        for l in &page.links {
            agg.add(l);
        }
        let snap = agg.finish();
        let canonical = |s: &str| s.to_ascii_lowercase();
        // Independent expectation: the first valid occurrence of each id counts.
        let mut first: BTreeMap<u8, &Gen> = BTreeMap::new();
        for l in links.iter().filter(|l| l.valid) {
            first.entry(l.id).or_insert(l);
        }
        let count: u64 = snap.links.values().map(|t| t.count).sum();
        prop_assert_eq!(count, first.len() as u64);
        prop_assert_eq!(snap.unique_links, first.len() as u64);
        let sum: Decimal = snap.links.values().map(|t| t.amount).sum();
        let want: Decimal = first.values().map(|l| Decimal::from_str(&l.value).unwrap()).sum();
        prop_assert_eq!(sum, want);
        // Per status too.
        for status in ["open", "paid", "settling"] {
            let got: u64 = snap.links.iter().filter(|(k, _)| k.status == status).map(|(_, t)| t.count).sum();
            let want = first.values().filter(|l| canonical(l.status) == status).count() as u64;
            prop_assert_eq!(got, want);
        }
        // No series in another spelling.
        prop_assert!(snap.links.keys().all(|k| k.currency == k.currency.to_ascii_uppercase()
            && k.status == k.status.to_ascii_lowercase()));
        // Open links expiring within the hour (12:30 in each of its spellings); one whose date
        // is unusable is in no expiry figure.
        let soon = ["2026-11-24T12:30:00Z", "2026-11-24T12:30:00+0000", "2026-11-24T12:30"];
        let want_soon = first
            .values()
            .filter(|l| canonical(l.status) == "open" && soon.contains(&l.date))
            .count() as u64;
        let got_soon: u64 = snap
            .expiring
            .iter()
            .filter(|((_, w), _)| w == "1h")
            .map(|(_, t)| t.count)
            .sum();
        prop_assert_eq!(got_soon, want_soon);
    }

    #[test]
    fn parsing_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_page(&bytes);
    }

    #[test]
    fn parsing_never_panics_on_mangled_pages(links in prop::collection::vec(link(), 1..10), cut in 0usize..4000, flip in any::<u8>()) {
        let mut body = page_json(&links).into_bytes();
        let at = cut % body.len();
        body[at] ^= flip;
        let _ = parse_page(&body);
        let _ = parse_page(&body[..at]);
    }
}
