//! The landing page as a newcomer meets it, through the real binary over loopback: amounts as a
//! finance reader writes them (each currency's ISO 4217 minor units, thousands grouped), how far
//! a slow first poll has got (on the page and as gauges), and `--demo`'s poll interval.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{Exporter, Sim, fast_args, http};
use qonto_exporter::simulator::{SimConfig, SpecVariants};
use rust_decimal::Decimal;

/// Any token passes the simulator when it has no credential configured.
const TOKEN: (&str, &str) = ("QONTO_ACCESS_TOKEN", "landing-test");

/// Waits until the exporter answers HTTP (before its first poll has finished).
async fn wait_serving(exporter: &Exporter) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while http().get(exporter.url("/-/healthy")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "exporter not serving; logs:\n{}",
            exporter.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn landing(exporter: &Exporter) -> String {
    http()
        .get(exporter.url("/"))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .expect("landing page body")
}

/// `value` written the way a finance reader expects, independently of the exporter's code:
/// `decimals` at least (all of the value's own when it has more), commas every three digits.
fn written(value: Decimal, decimals: u32) -> String {
    let mut v = value.normalize();
    if v.scale() < decimals {
        v.rescale(decimals);
    }
    let text = v.to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits: Vec<char> = int.chars().collect();
    let mut out = String::new();
    for (i, c) in digits.iter().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(*c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

#[tokio::test]
async fn amounts_are_written_with_each_currencys_minor_units_and_grouped() {
    let sim = Sim::start(SimConfig {
        links: 600,
        variants: SpecVariants {
            minor_unit_currency_share: 0.4,
            ..SpecVariants::default()
        },
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start_owned(&fast_args(&sim.url(), &[]), &[TOKEN]);
    exporter.wait_ready(Duration::from_secs(30)).await;
    let page = landing(&exporter).await;

    // Links and amounts per (status, currency), recounted from what the API serves.
    let mut sums: BTreeMap<(String, String), (u64, Decimal)> = BTreeMap::new();
    for l in sim.sim.links_json().as_array().expect("links") {
        let key = (
            l["status"].as_str().unwrap().to_owned(),
            l["amount"]["currency"].as_str().unwrap().to_owned(),
        );
        let e = sums.entry(key).or_default();
        e.0 += 1;
        e.1 += Decimal::from_str(l["amount"]["value"].as_str().unwrap()).unwrap();
    }
    let minor = |c: &str| match c {
        "JPY" => 0,
        "KWD" => 3,
        _ => 2,
    };
    // The largest sum of each currency, as written.
    let mut largest: BTreeMap<&str, (Decimal, String)> = BTreeMap::new();
    for ((status, currency), (n, amount)) in &sums {
        let written_amount = format!("{} {currency}", written(*amount, minor(currency)));
        let row = format!(
            "<tr><td>{status}</td><td>{currency}</td><td class=\"n\">{}</td><td class=\"n\">{written_amount}</td></tr>",
            written(Decimal::from(*n), 0)
        );
        assert!(
            page.contains(&row),
            "landing page lacks the row {row}\npage:\n{page}"
        );
        let e = largest
            .entry(currency)
            .or_insert((Decimal::ZERO, String::new()));
        if *amount >= e.0 {
            *e = (*amount, written_amount);
        }
    }
    // What the recount asked for, spelled out: yen without decimals, dinar with three, euro
    // with two, and the largest sum of each (past a thousand) grouped.
    for (currency, decimals) in [("EUR", 2), ("JPY", 0), ("KWD", 3)] {
        let (amount, text) = largest
            .get(currency)
            .unwrap_or_else(|| panic!("no {currency} link generated: {largest:?}"));
        assert!(*amount >= Decimal::from(1000), "{currency}: {amount}");
        let number = text.strip_suffix(&format!(" {currency}")).unwrap();
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        assert_eq!(frac.len(), decimals, "{text}");
        assert!(int.contains(','), "{text}");
    }
}

/// "page N of M (P %)" in the landing page, if a poll is running and has begun a walk.
fn progress_on(page: &str) -> Option<(u64, u64)> {
    let rest = &page[page.find("A poll is running")?..];
    let rest = &rest[rest.find(": page ")? + ": page ".len()..];
    let (done, rest) = rest.split_once(" of ")?;
    let total = rest.split_once(' ')?.0;
    Some((
        done.replace(',', "").parse().ok()?,
        total.replace(',', "").parse().ok()?,
    ))
}

#[tokio::test]
async fn a_slow_first_poll_shows_pages_done_of_total_and_the_time_left() {
    const LATENCY: Duration = Duration::from_millis(250);
    // 2,000 links: a first poll walks 20 pages, one at a time, a quarter second each.
    let sim = Sim::start(SimConfig {
        links: 2000,
        latency: LATENCY,
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start_owned(
        &fast_args(&sim.url(), &[("--poll.interval", "1h")]),
        &[TOKEN],
    );
    wait_serving(&exporter).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (page, done, total) = loop {
        let page = landing(&exporter).await;
        if let Some((done, total)) = progress_on(&page) {
            // Past the first second of the walk, so that a rate is measured.
            if done >= 6 && page.contains("left at the current budget") {
                break (page, done, total);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no progress with a time left on the landing page; last page:\n{page}\nlogs:\n{}",
            exporter.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The poll walks every link: 20 pages of 100 (a poll that also walks another listing adds
    // its pages, hence the margin).
    assert!((20..=25).contains(&total), "{total} pages\n{page}");
    assert!(done < total, "{done} of {total}\n{page}");
    assert!(page.contains("No figures yet."), "{page}");

    let m = exporter.metrics().await;
    let (progress, pages, left) = (
        m["qonto_exporter_poll_progress_pages"],
        m["qonto_exporter_poll_total_pages"],
        m["qonto_exporter_poll_remaining_seconds"],
    );
    assert_eq!(pages, total as f64, "{m:?}");
    assert!(
        progress >= done as f64 && progress <= pages,
        "{progress} of {pages}"
    );
    if progress < pages {
        // About a quarter second per page left: within a factor of three either way.
        let expected = (pages - progress) * LATENCY.as_secs_f64();
        assert!(
            left.is_finite() && left >= expected / 3.0 && left <= expected * 3.0 + 1.0,
            "{left} s left for {} pages at {LATENCY:?} each",
            pages - progress
        );
    }

    // Once the poll is over (the next is an hour away), nothing runs and nothing is left.
    exporter.wait_ready(Duration::from_secs(30)).await;
    let m = exporter.metrics().await;
    assert_eq!(m["qonto_exporter_poll_progress_pages"], 0.0, "{m:?}");
    assert_eq!(m["qonto_exporter_poll_total_pages"], 0.0, "{m:?}");
    assert_eq!(m["qonto_exporter_poll_remaining_seconds"], 0.0, "{m:?}");
    let page = landing(&exporter).await;
    assert!(!page.contains("A poll is running"), "{page}");
    assert!(page.contains("succeeded"), "{page}");
}

/// The long window scaled down to 200 requests per 20 s: the exporter's share (0.5) is 100, a
/// burst of 20 (a fifth) and then one request every 20.4 s / 81 (the window plus its 2 %
/// allowance, over the cells left), about 0.252 s.
const SCALED_LONG: &str = "200/20s";
const SCALED_LONG_PERIOD: f64 = 20.4 / 81.0;

#[tokio::test]
async fn the_time_left_is_at_the_current_budget_not_the_burst_rate() {
    // 50 pages answered at once: the first 20 go out in the burst, the other 30 at the
    // sustained pace. The page rate of the walk so far, burst included, promises far less time
    // than the budget allows.
    let sim = Sim::start(SimConfig {
        links: 5000,
        latency: Duration::from_millis(5),
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start_owned(
        &fast_args(
            &sim.url(),
            &[
                ("--poll.interval", "1h"),
                ("--qonto.rate-limit-long", SCALED_LONG),
            ],
        ),
        &[TOKEN],
    );
    wait_serving(&exporter).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut checked = 0;
    let mut saw_page = false;
    loop {
        let m = exporter.metrics().await;
        let (progress, pages, left) = (
            m["qonto_exporter_poll_progress_pages"],
            m["qonto_exporter_poll_total_pages"],
            m["qonto_exporter_poll_remaining_seconds"],
        );
        // Past the burst, and not on the last page (whose cell may already be taken).
        if pages > 0.0 && progress >= 25.0 && progress < pages - 1.0 {
            let floor = (pages - progress - 1.0) * SCALED_LONG_PERIOD;
            assert!(
                left.is_finite() && left >= 0.9 * floor,
                "{left} s left for {} pages at one every {SCALED_LONG_PERIOD:.3} s",
                pages - progress
            );
            if !saw_page {
                let page = landing(&exporter).await;
                if page.contains("left at the current budget") {
                    saw_page = true;
                }
            }
            checked += 1;
        }
        if checked > 0 && (pages == 0.0 || progress >= pages - 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the walk never got past its burst; logs:\n{}",
            exporter.logs()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(checked >= 5, "only {checked} samples past the burst");
    assert!(
        saw_page,
        "the landing page never said the time left at the current budget"
    );
    exporter.wait_ready(Duration::from_secs(30)).await;
    // The default --poll.timeout (2h) is far from this walk's 8 s: no warning.
    assert!(
        !exporter.logs().contains("--poll.timeout"),
        "{}",
        exporter.logs()
    );
}

#[tokio::test]
async fn a_walk_longer_than_the_poll_timeout_says_so_and_names_the_flags() {
    // The same 50 pages need about 30 × 0.252 s ≈ 7.6 s at the budget; the poll has 3 s.
    let sim = Sim::start(SimConfig {
        links: 5000,
        ..SimConfig::default()
    })
    .await;
    let exporter = Exporter::start_owned(
        &fast_args(
            &sim.url(),
            &[
                ("--poll.interval", "1h"),
                ("--poll.timeout", "3s"),
                ("--qonto.rate-limit-long", SCALED_LONG),
            ],
        ),
        &[TOKEN],
    );
    let line = exporter
        .wait_log(&["longer than --poll.timeout"], Duration::from_secs(20))
        .await;
    assert!(line.contains("--qonto.budget-share"), "{line}");
    assert!(line.contains("pages left"), "{line}");
    // Logged once per walk, not once per page.
    exporter
        .wait_log(&["poll did not finish within"], Duration::from_secs(20))
        .await;
    assert_eq!(
        exporter
            .logs()
            .matches("longer than --poll.timeout")
            .count(),
        1,
        "{}",
        exporter.logs()
    );
}

#[tokio::test]
async fn demo_polls_every_few_seconds_unless_an_interval_is_given() {
    let started = Instant::now();
    let demo = Exporter::start(&["--demo"], &[]);
    let by_flag = Exporter::start(&["--demo", "--poll.interval", "1m"], &[]);
    let by_env = Exporter::start(&["--demo"], &[("QONTO_POLL_INTERVAL", "1m")]);
    // The first poll starts at once, the next 5 s later: well within 20 s (room for a loaded CI
    // machine), never with 1m.
    demo.wait_until("a second demo poll", Duration::from_secs(20), |m| {
        m.get("qonto_exporter_polls_total")
            .is_some_and(|v| *v >= 2.0)
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "two polls in {:?}: closer than the 5 s demo interval",
        started.elapsed()
    );
    let page = landing(&demo).await;
    assert!(
        page.contains("<tr><th>Poll interval</th><td>5s</td></tr>"),
        "{page}"
    );
    // An interval given by flag or environment wins: one poll so far, and the page says 1m.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(started.elapsed())).await;
    for (what, e) in [("flag", &by_flag), ("environment", &by_env)] {
        e.wait_ready(Duration::from_secs(10)).await;
        assert_eq!(
            e.metric("qonto_exporter_polls_total").await,
            1.0,
            "--poll.interval from the {what} is not obeyed"
        );
        assert!(
            landing(e)
                .await
                .contains("<tr><th>Poll interval</th><td>1m</td></tr>"),
            "{what}"
        );
    }
}

#[test]
fn help_tells_the_demo_interval() {
    let out = std::process::Command::new(common::BIN)
        .arg("--help")
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("5s with --demo when neither this flag nor QONTO_POLL_INTERVAL is set"),
        "{help}"
    );
}
