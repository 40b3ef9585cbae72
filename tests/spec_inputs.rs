//! Spec-valid data must not bend the numbers (issue 9, §7). The real binary polls a simulator
//! whose spec-valid variations are switched on, one per test (`SimConfig::variants`, or the
//! flags of `qonto-exporter simulate` in the last test), and its `/metrics` must equal a recount
//! of what the simulator serves, made here without the exporter's code:
//!
//! - every date form the reference page's "ISO 8601 date-time string" allows is read; a paid or
//!   canceled link whose date is null or missing still counts in its status;
//! - `OPEN`, `eur`, `invoice` are folded into the spec's spelling (`open`, `EUR`, `Invoice`),
//!   never new series, and counted in `qonto_exporter_normalized_values_total{field}`;
//! - yen (no decimals) and dinars (three) are summed exactly;
//! - a link that does not deserialise (a number where the spec says string) is counted as
//!   invalid once per link, not once per poll, and does not make its status walked every poll;
//! - a paid, expired or canceled link that moves without changing any terminal status's count
//!   is caught by the next full resync, which counts the correction.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::servers::Daemon;
use common::{
    BIN, Exporter, Sim, fast_args, parse_metrics, poll_span, recount, sim_figures, status_figures,
};
use qonto_exporter::simulator::{DateForm, InvalidKind, Mutation, SimConfig, SpecVariants, Status};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

const WINDOWS: [(&str, i64); 4] = [
    ("1h", 3600),
    ("24h", 86_400),
    ("7d", 604_800),
    ("30d", 2_592_000),
];
const WINDOWS_FLAG: &str = "1h,24h,7d,30d";
const STATUSES: [&str; 5] = ["open", "processing", "paid", "expired", "canceled"];
const RESOURCE_TYPES: [&str; 2] = ["Invoice", "Basket"];

// ---- An independent reading of the spec ------------------------------------------------------

/// Parses the ISO 8601 date-times the reference page's wording allows: `YYYY-MM-DDTHH:MM`,
/// optional `:SS` and fraction, then `Z`, `±HH:MM`, `±HHMM`, `±HH`, or nothing (taken as UTC).
fn parse_iso8601(s: &str) -> Option<OffsetDateTime> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let year: i32 = d.next()?.parse().ok()?;
    let month: u8 = d.next()?.parse().ok()?;
    let day: u8 = d.next()?.parse().ok()?;
    if d.next().is_some() {
        return None;
    }
    let (clock, offset) = if let Some(c) = rest.strip_suffix('Z') {
        (c, UtcOffset::UTC)
    } else if let Some(i) = rest.find(['+', '-']) {
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
        let (h, m) = match digits.len() {
            2 => (digits.parse::<i32>().ok()?, 0),
            4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
            _ => return None,
        };
        (
            c,
            UtcOffset::from_whole_seconds(sign * (h * 3600 + m * 60)).ok()?,
        )
    } else {
        (rest, UtcOffset::UTC)
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let hour: u8 = t.next()?.parse().ok()?;
    let minute: u8 = t.next()?.parse().ok()?;
    let second: u8 = t.next().map_or(Some(0), |s| s.parse().ok())?;
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}")[..9].parse().ok()?
    };
    let date = Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()?;
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

/// What [`normalise`] found in the links as served.
#[derive(Debug, Default)]
struct Served {
    /// Links whose status, currency or resource type was not in the spec's spelling, per field.
    respelled: BTreeMap<&'static str, u64>,
    /// Links that do not have the spec's JSON types (left out of the figures), with the status
    /// they were served with.
    wrong_type: Vec<String>,
    /// Paid or canceled links served with `"expiration_date": null` / without the key.
    null_dates: u64,
    absent_dates: u64,
    /// Dates per shape: `Z`, `+HH:MM`, `+HHMM`, no offset, no seconds, fraction.
    date_shapes: BTreeMap<&'static str, u64>,
}

fn date_shape(s: &str) -> &'static str {
    let clock = s.split_once('T').map_or("", |(_, c)| c);
    if clock.contains('.') {
        "fraction"
    } else if clock.len() == "HH:MMZ".len() && clock.ends_with('Z') {
        "no seconds"
    } else if clock.ends_with('Z') {
        "Z"
    } else if clock.len() == "HH:MM:SS".len() {
        "no offset"
    } else if clock.len() == "HH:MM:SS+HHMM".len() {
        "+HHMM"
    } else {
        "+HH:MM"
    }
}

/// The links as the spec spells them (status `open`, currency `EUR`, resource type `Invoice`,
/// dates in RFC 3339 UTC), ready for [`recount`]; links of the wrong JSON type left out.
fn normalise(links: &Value) -> (Value, Served) {
    let mut served = Served::default();
    let mut out = Vec::new();
    for l in links.as_array().expect("links array") {
        let mut l = l.clone();
        let status = l["status"].as_str().expect("status is a string").to_owned();
        if !l["id"].is_string() || !l["amount"]["value"].is_string() {
            served.wrong_type.push(status.to_ascii_lowercase());
            continue;
        }
        let canonical_status = status.to_ascii_lowercase();
        let currency = l["amount"]["currency"].as_str().unwrap().to_owned();
        let canonical_currency = currency.to_ascii_uppercase();
        let rt = l["resource_type"].as_str().unwrap().to_owned();
        let canonical_rt = RESOURCE_TYPES
            .into_iter()
            .find(|t| t.eq_ignore_ascii_case(&rt))
            .unwrap_or(&rt)
            .to_owned();
        for (field, raw, canonical) in [
            ("status", &status, &canonical_status),
            ("currency", &currency, &canonical_currency),
            ("resource_type", &rt, &canonical_rt),
        ] {
            if raw != canonical {
                *served.respelled.entry(field).or_default() += 1;
            }
        }
        let date = match l.get("expiration_date") {
            None => {
                served.absent_dates += 1;
                None
            }
            Some(Value::Null) => {
                served.null_dates += 1;
                None
            }
            Some(d) => {
                let d = d.as_str().expect("expiration_date is a string or null");
                *served.date_shapes.entry(date_shape(d)).or_default() += 1;
                Some(parse_iso8601(d).unwrap_or_else(|| panic!("not ISO 8601: {d}")))
            }
        };
        let date = match date {
            Some(d) => d,
            None => {
                assert!(
                    ["paid", "canceled"].contains(&canonical_status.as_str()),
                    "a {canonical_status} link without a date: {l}"
                );
                // Never read: only open links' dates make figures.
                OffsetDateTime::UNIX_EPOCH
            }
        };
        l["status"] = canonical_status.into();
        l["amount"]["currency"] = canonical_currency.into();
        l["resource_type"] = canonical_rt.into();
        l["expiration_date"] = date
            .to_offset(UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap()
            .into();
        // created_at is written in the same forms (the open links' age reads it).
        let created = l["created_at"].as_str().and_then(parse_iso8601);
        if let Some(c) = created {
            l["created_at"] = c.to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap().into();
        }
        out.push(l);
    }
    (Value::Array(out), served)
}

/// Asserts that a scrape's business series equal the recount of `links` (already normalised)
/// for a poll whose reference time lies in `[lo, hi]`. The next expiration may carry the
/// fraction of a second the date had, or not: it is compared within one second.
fn assert_figures(scrape: &str, links: &Value, lo: i64, hi: i64) {
    let got = common::business(scrape);
    let (a, b) = (recount(links, lo, &WINDOWS), recount(links, hi, &WINDOWS));
    let mut wrong = Vec::new();
    for k in a.keys().chain(b.keys()) {
        let g = got.get(k).copied();
        let ok = |want: Option<f64>| match (g, want) {
            (Some(g), Some(w)) if k.contains("next_expiration") => (g - w).abs() < 1.0,
            _ => g == want,
        };
        if !ok(a.get(k).copied()) && !ok(b.get(k).copied()) {
            wrong.push(format!(
                "{k}: exported {g:?}, expected {:?} (or {:?})",
                a.get(k),
                b.get(k)
            ));
        }
    }
    for k in got.keys() {
        if !a.contains_key(k) && !b.contains_key(k) {
            wrong.push(format!("{k}: exported but not expected"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong series:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Sum of `qonto_exporter_invalid_links_total` over its reasons.
fn invalid_total(m: &BTreeMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("qonto_exporter_invalid_links_total"))
        .map(|(_, v)| v)
        .sum()
}

fn normalized(m: &BTreeMap<String, f64>, field: &str) -> f64 {
    m.get(&format!(
        "qonto_exporter_normalized_values_total{{field=\"{field}\"}}"
    ))
    .copied()
    .unwrap_or(0.0)
}

/// A simulator with `variants`, frozen, and an exporter that polls it once (interval 1 h).
async fn one_poll(links: usize, seed: u64, variants: SpecVariants) -> (Sim, Exporter, String) {
    let sim = Sim::start(SimConfig {
        links,
        seed,
        variants,
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start_owned(
        &fast_args(
            &sim.url(),
            &[
                ("--poll.interval", "1h"),
                ("--expiry.windows", WINDOWS_FLAG),
            ],
        ),
        &[("QONTO_ACCESS_TOKEN", "t")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    let text = exporter.scrape().await;
    (sim, exporter, text)
}

// ---- Dates ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_iso_8601_date_form_is_read_and_every_link_counts() {
    let forms = vec![
        DateForm::Utc,
        DateForm::Offset,
        DateForm::OffsetNoColon,
        DateForm::NoOffset,
        DateForm::NoSeconds,
        DateForm::Fractional,
    ];
    let (sim, exporter, text) = one_poll(
        1800,
        21,
        SpecVariants {
            date_forms: forms,
            ..SpecVariants::default()
        },
    )
    .await;
    let (links, served) = normalise(&sim.sim.links_json());
    for shape in [
        "Z",
        "+HH:MM",
        "+HHMM",
        "no offset",
        "no seconds",
        "fraction",
    ] {
        assert!(
            served.date_shapes.get(shape).copied().unwrap_or(0) > 100,
            "the simulator serves dates of every form: {:?}",
            served.date_shapes
        );
    }
    let (lo, hi) = poll_span(&text);
    assert_figures(&text, &links, lo, hi);
    let m = parse_metrics(&text);
    assert_eq!(
        invalid_total(&m),
        0.0,
        "no date of these forms is invalid; logs:\n{}",
        exporter.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_and_canceled_links_without_a_date_still_count_in_their_status() {
    let (sim, exporter, text) = one_poll(
        1500,
        22,
        SpecVariants {
            date_forms: vec![DateForm::Utc, DateForm::Null, DateForm::Absent],
            ..SpecVariants::default()
        },
    )
    .await;
    let (links, served) = normalise(&sim.sim.links_json());
    assert!(
        served.null_dates > 50 && served.absent_dates > 50,
        "{served:?}"
    );
    let (lo, hi) = poll_span(&text);
    assert_figures(&text, &links, lo, hi);
    assert_eq!(
        invalid_total(&parse_metrics(&text)),
        0.0,
        "only open links need a date; logs:\n{}",
        exporter.logs()
    );
}

// ---- Letter cases ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_letter_cases_fold_into_the_spec_spelling_and_are_counted() {
    let (sim, exporter, text) = one_poll(
        1500,
        23,
        SpecVariants {
            other_case_share: 0.15,
            ..SpecVariants::default()
        },
    )
    .await;
    let (links, served) = normalise(&sim.sim.links_json());
    let (lo, hi) = poll_span(&text);
    // No `status="OPEN"`, `currency="eur"` or `resource_type="invoice"` series: the recount
    // has only the spec's spellings, and every exported series must be expected.
    assert_figures(&text, &links, lo, hi);
    let m = parse_metrics(&text);
    assert_eq!(invalid_total(&m), 0.0, "logs:\n{}", exporter.logs());
    // One poll, in which every link was read once: each respelled value counted once.
    for field in ["status", "currency", "resource_type"] {
        let want = served.respelled.get(field).copied().unwrap_or(0);
        assert!(want > 100, "the simulator respells {field}: {served:?}");
        assert_eq!(
            normalized(&m, field),
            want as f64,
            "qonto_exporter_normalized_values_total{{field=\"{field}\"}} after one poll"
        );
    }
}

// ---- Currencies with 0 and 3 decimals -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yen_and_dinar_amounts_are_summed_exactly() {
    let (sim, _exporter, text) = one_poll(
        2000,
        24,
        SpecVariants {
            minor_unit_currency_share: 0.3,
            ..SpecVariants::default()
        },
    )
    .await;
    let (links, _) = normalise(&sim.sim.links_json());
    let decimals = |currency: &str| -> Vec<usize> {
        links
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["amount"]["currency"] == currency)
            .map(|l| {
                let v = l["amount"]["value"].as_str().unwrap();
                v.split_once('.').map_or(0, |(_, d)| d.len())
            })
            .collect()
    };
    let (jpy, kwd) = (decimals("JPY"), decimals("KWD"));
    assert!(jpy.len() > 100 && jpy.iter().all(|d| *d == 0), "{jpy:?}");
    assert!(kwd.len() > 100 && kwd.iter().all(|d| *d == 3), "{kwd:?}");
    let (lo, hi) = poll_span(&text);
    assert_figures(&text, &links, lo, hi);
    let m = parse_metrics(&text);
    for currency in ["JPY", "KWD"] {
        for s in STATUSES {
            for t in RESOURCE_TYPES {
                let k = format!(
                    "qonto_payment_links{{currency=\"{currency}\",resource_type=\"{t}\",status=\"{s}\"}}"
                );
                assert!(m.contains_key(&k), "{k} is exported");
            }
        }
    }
}

// ---- Links that do not deserialise ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeserialisable_link_is_counted_once_and_its_status_is_not_walked_every_poll() {
    let sim = Sim::start(SimConfig {
        links: 3000,
        seed: 25,
        variants: SpecVariants {
            invalid_link_share: 0.01,
            invalid_link_kinds: vec![InvalidKind::AmountNumber, InvalidKind::IdNumber],
            ..SpecVariants::default()
        },
        ..SimConfig::default()
    })
    .await;
    let (links, served) = normalise(&sim.sim.links_json());
    let bad = served.wrong_type.len() as f64;
    assert!(
        served
            .wrong_type
            .iter()
            .filter(|s| ["paid", "expired", "canceled"].contains(&s.as_str()))
            .count()
            >= 5,
        "bad links in terminal statuses: {:?}",
        served.wrong_type
    );
    let live_pages = links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| matches!(l["status"].as_str(), Some("open" | "processing")))
        .count()
        .div_ceil(100);
    let exporter = Exporter::start_owned(
        &fast_args(
            &sim.url(),
            &[
                ("--poll.full-resync-interval", "1h"),
                ("--expiry.windows", WINDOWS_FLAG),
            ],
        ),
        &[("QONTO_ACCESS_TOKEN", "t")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    let first = parse_metrics(&exporter.scrape().await);
    assert_eq!(
        invalid_total(&first),
        bad,
        "each bad link counted once by the first poll"
    );
    // Several incremental polls of an organisation that does not change.
    exporter.wait_polls(6, Duration::from_secs(60)).await;
    let text = exporter.next_poll().await;
    let m = parse_metrics(&text);
    assert_eq!(
        invalid_total(&m),
        bad,
        "qonto_exporter_invalid_links_total counts each bad link once, not once per poll"
    );
    assert_eq!(
        m["qonto_exporter_full_walks_total"], 1.0,
        "bad links force no full walk"
    );
    let bound = live_pages as f64 + 5.0;
    assert!(
        m["qonto_exporter_last_poll_requests"] <= bound,
        "a steady-state poll sent {} requests, bound {bound} (open and processing walked, the rest \
         probed): a status holding a bad link must not be walked again every poll",
        m["qonto_exporter_last_poll_requests"]
    );
    assert_eq!(
        status_figures(&m),
        status_figures(&recount(&links, 0, &[])),
        "figures leave the bad links out and keep every other one"
    );
}

// ---- Terminal links that move -------------------------------------------------------------

/// `qonto_exporter_resync_corrections_total{status}` per terminal status (absent: `None`).
fn corrections(m: &BTreeMap<String, f64>) -> BTreeMap<&'static str, Option<f64>> {
    ["paid", "expired", "canceled"]
        .into_iter()
        .map(|s| {
            let k = format!("qonto_exporter_resync_corrections_total{{status=\"{s}\"}}");
            (s, m.get(&k).copied())
        })
        .collect()
}

/// Count of links per terminal status, as served.
fn terminal_counts(links: &Value) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for l in links.as_array().unwrap() {
        let s = l["status"].as_str().unwrap();
        if ["paid", "expired", "canceled"].contains(&s) {
            *n.entry(s.to_owned()).or_default() += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_links_that_move_unseen_are_corrected_by_the_next_full_resync() {
    let sim = Sim::start(SimConfig {
        links: 3000,
        seed: 26,
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start_owned(
        &fast_args(
            &sim.url(),
            &[
                ("--poll.full-resync-interval", "2s"),
                ("--expiry.windows", WINDOWS_FLAG),
            ],
        ),
        &[("QONTO_ACCESS_TOKEN", "t")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    // A resync that finds nothing to correct counts nothing.
    let m = exporter
        .wait_until("a second full walk", Duration::from_secs(30), |m| {
            m.get("qonto_exporter_full_walks_total")
                .is_some_and(|v| *v >= 2.0)
        })
        .await;
    assert!(
        corrections(&m).values().all(|v| *v == Some(0.0)),
        "qonto_exporter_resync_corrections_total{{status}} is exported for each terminal status, \
         and 0 while the assumption holds: {:?}",
        corrections(&m)
    );

    // Each batch moves terminal links without changing any terminal status's count, so an
    // incremental poll that trusts those counts cannot see it: only a full walk can.
    // (what, the moves, the statuses whose carried figures they make wrong)
    let moves: [(&str, Vec<Mutation>, &[&str]); 3] = [
        (
            "a canceled link becomes expired and an expired one canceled",
            vec![
                Mutation::Recast {
                    count: 1,
                    from: Status::Canceled,
                    to: Status::Expired,
                },
                Mutation::Recast {
                    count: 1,
                    from: Status::Expired,
                    to: Status::Canceled,
                },
            ],
            &["expired", "canceled"],
        ),
        (
            "a reusable paid link reopens while an open one is paid",
            vec![Mutation::Reopen(1), Mutation::Pay(1)],
            &["paid"],
        ),
        (
            "a paid link disappears while an open one is paid",
            vec![
                Mutation::Remove {
                    count: 1,
                    status: Status::Paid,
                },
                Mutation::Pay(1),
            ],
            &["paid"],
        ),
    ];
    for (what, batch, moved) in moves {
        let before_links = sim.sim.links_json();
        let before = sim_figures(&sim.sim);
        let counted_before = corrections(&exporter.metrics().await);
        let affected = sim.sim.mutate(Mutation::Batch(batch));
        assert!(affected >= 2, "{what}: {affected} links affected");
        let after_links = sim.sim.links_json();
        assert_eq!(
            terminal_counts(&before_links),
            terminal_counts(&after_links),
            "{what}: no terminal status's count moves"
        );
        let want = sim_figures(&sim.sim);
        assert_ne!(before, want, "{what}: the figures move");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = exporter.metrics().await;
            let fixed = status_figures(&m) == want;
            let now = corrections(&m);
            let counted = moved.iter().all(|s| now[s] > counted_before[s]);
            if fixed && counted {
                for (s, n) in &now {
                    if !moved.contains(s) {
                        assert_eq!(*n, counted_before[s], "{what}: no correction for {s}");
                    }
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not corrected and counted within 20 s of 2 s resyncs (figures right: \
                 {fixed}; corrections before {counted_before:?}, now {now:?})\nlogs:\n{}",
                exporter.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---- Every switch at once, through `qonto-exporter simulate` --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variation_at_once_through_the_simulate_subcommand() {
    let args: Vec<String> = [
        "simulate",
        "--listen",
        "127.0.0.1:0",
        "--links",
        "2500",
        "--seed",
        "27",
        "--evolve-every",
        "off",
        "--date-forms",
        "utc,offset,offset-no-colon,no-offset,no-seconds,fractional,null,absent",
        "--other-case-share",
        "0.1",
        "--minor-unit-currency-share",
        "0.2",
        "--invalid-link-share",
        "0.01",
        "--invalid-link-kinds",
        "amount_number,id_number",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut daemon = Daemon::spawn("simulate", std::path::Path::new(BIN), &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Some(url) = daemon
            .logs()
            .lines()
            .find_map(|l| l.strip_prefix("listening on "))
        {
            break url.to_owned();
        }
        daemon.assert_running();
        assert!(Instant::now() < deadline, "simulate did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let served: Value = serde_json::from_slice(
        &common::http()
            .get(format!("{url}/_sim/links"))
            .send()
            .await
            .expect("GET /_sim/links")
            .bytes()
            .await
            .expect("links body"),
    )
    .expect("links JSON");
    let (links, seen) = normalise(&served);
    assert!(
        !seen.wrong_type.is_empty() && seen.null_dates > 0 && seen.absent_dates > 0,
        "{seen:?}"
    );
    let exporter = Exporter::start_owned(
        &fast_args(
            &url,
            &[
                ("--poll.interval", "1h"),
                ("--expiry.windows", WINDOWS_FLAG),
            ],
        ),
        &[("QONTO_ACCESS_TOKEN", "t")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    let text = exporter.scrape().await;
    let (lo, hi) = poll_span(&text);
    assert_figures(&text, &links, lo, hi);
    let m = parse_metrics(&text);
    assert_eq!(invalid_total(&m), seen.wrong_type.len() as f64);
    for field in ["status", "currency", "resource_type"] {
        assert_eq!(
            normalized(&m, field),
            seen.respelled.get(field).copied().unwrap_or(0) as f64,
            "{field}"
        );
    }
    daemon.assert_running();
}

/// A terminal status whose count falls (a paid link disappears) breaks the assumption in a way
/// an incremental poll sees at once: it is counted as a correction and the status walked again,
/// without waiting for a full resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_count_that_falls_is_corrected_by_the_next_incremental_poll() {
    let sim = Sim::start(SimConfig {
        links: 2000,
        seed: 28,
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start_owned(
        &fast_args(
            &sim.url(),
            &[
                ("--poll.full-resync-interval", "1h"),
                ("--expiry.windows", WINDOWS_FLAG),
            ],
        ),
        &[("QONTO_ACCESS_TOKEN", "t")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    let affected = sim.sim.mutate(Mutation::Remove {
        count: 1,
        status: Status::Paid,
    });
    assert_eq!(affected, 1);
    let want = sim_figures(&sim.sim);
    let m = exporter
        .wait_until(
            "the fallen paid count corrected",
            Duration::from_secs(20),
            |m| status_figures(m) == want && corrections(m)["paid"] == Some(1.0),
        )
        .await;
    assert_eq!(
        m["qonto_exporter_full_walks_total"], 1.0,
        "no full walk needed"
    );
    assert_eq!(corrections(&m)["expired"], Some(0.0));
    assert_eq!(corrections(&m)["canceled"], Some(0.0));
}

/// Dates written to the minute or without an offset leave the creation instant uncertain by a
/// minute or by the writer's time zone; with links created and paid all the time, full resyncs
/// must still find nothing to correct (a link created in the minute a poll started is not
/// "before" it), and the check must really run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coarse_dates_under_churn_give_no_false_correction() {
    let sim = Sim::start(SimConfig {
        links: 2000,
        seed: 29,
        evolve_every: Some(Duration::from_millis(250)),
        variants: SpecVariants {
            date_forms: vec![DateForm::Utc, DateForm::NoSeconds, DateForm::NoOffset],
            ..SpecVariants::default()
        },
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start_owned(
        &fast_args(
            &sim.url(),
            &[
                ("--poll.full-resync-interval", "500ms"),
                ("--expiry.windows", WINDOWS_FLAG),
            ],
        ),
        &[("QONTO_ACCESS_TOKEN", "t")],
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    let m = exporter
        .wait_until("four checked full resyncs", Duration::from_secs(60), |m| {
            m.get("qonto_exporter_resync_checks_total")
                .is_some_and(|v| *v >= 4.0)
        })
        .await;
    assert!(
        corrections(&m).values().all(|v| *v == Some(0.0)),
        "{:?}\n{}",
        corrections(&m),
        exporter.logs()
    );
}
