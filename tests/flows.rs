//! Flow counters (issue 12 §1) against what the simulator did: links created, status
//! transitions with their money, and time to pay, counted by the real binary from its polls.
//!
//! How the comparison is made exact. The simulator reports, per mutation, the net change of
//! each link across it (`GET /_sim/transitions`; no request sees a mutation half done). The
//! exporter counts the net change of each link between two complete polls. The two agree
//! exactly when every mutation is seen by a complete poll before the next one touches the same
//! links: so the simulator is frozen (no background evolution), the test applies one mutation
//! (a `Batch` where several must fall between the same two polls, e.g. created and paid) and
//! then waits, on every exporter, for a poll that *started* after it to complete, before the
//! next mutation. That poll reads every link that can still change (and a full walk every
//! link), so it sees the mutation whole. The counters must then equal the simulator's, series
//! by series, counts and exact amounts — after every mutation, not just at the end.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{Exporter, Sim, fast_args};
use qonto_exporter::simulator::{Fault, Mutation, SimConfig, SimTransitions, Status};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: [(&str, &str); 1] = [("QONTO_ACCESS_TOKEN", "t")];

/// The simulator's counts as the exporter's series would show them: `series → value`, the
/// series keyed as `parse_metrics` writes them, exact.
fn sums(t: &SimTransitions) -> BTreeMap<String, Decimal> {
    let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
    for c in &t.created {
        let labels = format!(
            "{{currency=\"{}\",resource_type=\"{}\"}}",
            c.currency, c.resource_type
        );
        *sums
            .entry(format!("qonto_payment_links_created_total{labels}"))
            .or_default() += Decimal::from(c.count);
        *sums
            .entry(format!("qonto_payment_links_created_amount_total{labels}"))
            .or_default() += Decimal::from_str(&c.amount).unwrap();
    }
    for r in &t.transitions {
        let labels = format!(
            "{{currency=\"{}\",from=\"{}\",resource_type=\"{}\",to=\"{}\"}}",
            r.currency, r.from, r.resource_type, r.to
        );
        *sums
            .entry(format!("qonto_payment_links_transitions_total{labels}"))
            .or_default() += Decimal::from(r.count);
        *sums
            .entry(format!(
                "qonto_payment_links_transitions_amount_total{labels}"
            ))
            .or_default() += Decimal::from_str(&r.amount).unwrap();
    }
    sums
}

/// [`sums`] as published (exact decimals converted once).
fn expected(t: &SimTransitions) -> BTreeMap<String, f64> {
    sums(t)
        .into_iter()
        .map(|(k, v)| (k, v.to_f64().unwrap()))
        .collect()
}

/// The exporter's created and transition series (the histogram apart).
fn counted(m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .filter(|(k, _)| {
            k.starts_with("qonto_payment_links_created")
                || k.starts_with("qonto_payment_links_transitions")
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Series where `got` and `want` differ (a series absent on one side counts as 0).
fn differences(got: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (g, w) = (
                got.get(k).copied().unwrap_or(0.0),
                want.get(k).copied().unwrap_or(0.0),
            );
            (g != w).then(|| format!("{k}: exported {g}, simulator {w}"))
        })
        .collect()
}

/// `a − b`, series by series, exact (counters only grow: a later reading minus an earlier one).
fn minus(a: &SimTransitions, b: &SimTransitions) -> BTreeMap<String, Decimal> {
    let (a, b) = (sums(a), sums(b));
    a.iter()
        .map(|(k, v)| (k.clone(), (*v - b.get(k).copied().unwrap_or_default())))
        .filter(|(_, v)| !v.is_zero())
        .collect()
}

/// Exact sums as published.
fn published(m: &BTreeMap<String, Decimal>) -> BTreeMap<String, f64> {
    m.iter()
        .map(|(k, v)| (k.clone(), v.to_f64().unwrap()))
        .collect()
}

/// Sum of the simulator's transitions into paid, and of their seconds since creation, per
/// `(currency, resource_type)` series labels.
fn paid(t: &SimTransitions) -> BTreeMap<String, (u64, i64)> {
    let mut out: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for r in t.transitions.iter().filter(|r| r.to == "paid") {
        let e = out
            .entry(format!(
                "{{currency=\"{}\",resource_type=\"{}\"}}",
                r.currency, r.resource_type
            ))
            .or_default();
        e.0 += r.count;
        e.1 += r.seconds_since_created;
    }
    out
}

/// Waits until every exporter has completed a poll that started after this call.
async fn next_polls(exporters: &[&Exporter]) {
    let starts: Vec<f64> = {
        let mut v = Vec::new();
        for e in exporters {
            v.push(e.metric("qonto_exporter_polls_total").await);
        }
        v
    };
    for (e, start) in exporters.iter().zip(starts) {
        e.wait_until("a poll started after the mutation", WAIT, |m| {
            m.get("qonto_exporter_polls_total")
                .is_some_and(|v| *v >= start + 2.0)
        })
        .await;
    }
}

fn exporter(sim: &Sim, full_resync: &str) -> Exporter {
    Exporter::start_owned(
        &fast_args(
            &sim.url(),
            &[
                ("--poll.interval", "150ms"),
                ("--poll.full-resync-interval", full_resync),
            ],
        ),
        &TOKEN,
    )
}

/// Checks one exporter against the simulator's counts since `base`, and its time to pay
/// against the simulator's: the same number of links, and a sum within `slack` seconds per
/// link (the exporter times a payment at the start of the poll that saw it).
fn check(name: &str, e: &Exporter, m: &BTreeMap<String, f64>, sim: &SimTransitions, what: &str) {
    let wrong = differences(&counted(m), &expected(sim));
    assert!(
        wrong.is_empty(),
        "{name}, after {what}: {} series differ:\n{}\nlogs:\n{}",
        wrong.len(),
        wrong.join("\n"),
        e.logs()
    );
    for (labels, (count, seconds)) in paid(sim) {
        let n = m
            .get(&format!(
                "qonto_payment_links_time_to_pay_seconds_count{labels}"
            ))
            .copied()
            .unwrap_or(0.0);
        assert_eq!(
            n, count as f64,
            "{name}, after {what}: time to pay {labels}"
        );
        let sum = m[&format!("qonto_payment_links_time_to_pay_seconds_sum{labels}")];
        let slack = 5.0 * count as f64;
        assert!(
            (sum - seconds as f64).abs() <= slack,
            "{name}, after {what}: time to pay {labels} sums to {sum} s, the simulator's {seconds} s"
        );
    }
}

/// Two exporters poll one frozen simulator: one incremental with a full resync every 2 s,
/// one walking every link at every poll. After each mutation (churn by steps, payments,
/// cancellations, expiries, processing and back to open, links created and paid between two
/// polls, links created processing, a walk re-read after links appeared in the middle of it),
/// both exporters' counters equal what the simulator did. Nothing is counted at the first poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_equal_the_simulators_transitions_across_resyncs_and_rewalks() {
    let sim = Sim::start(SimConfig {
        links: 900,
        seed: 21,
        ..SimConfig::default()
    })
    .await;
    let inc = exporter(&sim, "2s");
    let full = exporter(&sim, "0s");
    inc.wait_ready(WAIT).await;
    full.wait_ready(WAIT).await;
    // The first poll counts nothing: every link exists already. Its zero series are there.
    for e in [&inc, &full] {
        let m = e.metrics().await;
        let c = counted(&m);
        assert!(
            c.contains_key(
                "qonto_payment_links_transitions_total{currency=\"EUR\",from=\"open\",resource_type=\"Invoice\",to=\"paid\"}"
            ),
            "zero series: {c:?}"
        );
        assert!(c.values().all(|v| *v == 0.0), "{c:?}");
    }
    assert_eq!(sim.sim.transitions(), SimTransitions::default());

    let pay_all = |create| {
        Mutation::Batch(vec![
            Mutation::Create(create),
            Mutation::Pay(1_000_000),
            Mutation::Create(40),
        ])
    };
    let rounds: Vec<(&str, Mutation)> = vec![
        ("payments", Mutation::Pay(5)),
        ("processing", Mutation::Process(6)),
        (
            "processing back to open",
            Mutation::Recast {
                count: 3,
                from: Status::Processing,
                to: Status::Open,
            },
        ),
        (
            "cancellations and expiries",
            Mutation::Batch(vec![Mutation::Cancel(3), Mutation::Expire(4)]),
        ),
        ("a step", Mutation::Step),
        ("a step", Mutation::Step),
        ("links created", Mutation::Create(30)),
        ("links created and paid between two polls", pay_all(7)),
        (
            "links created processing",
            Mutation::Batch(vec![Mutation::Create(4), Mutation::Process(1_000_000)]),
        ),
        (
            "processing links paid or back to open",
            Mutation::Batch(vec![
                Mutation::Pay(3),
                Mutation::Recast {
                    count: 2,
                    from: Status::Processing,
                    to: Status::Open,
                },
                Mutation::Create(150),
            ]),
        ),
        ("a step", Mutation::Step),
    ];
    for (what, m) in rounds {
        let changed = sim.sim.mutate(m.clone());
        assert!(
            changed > 0 || m == Mutation::Step,
            "{what}: {m:?} changed nothing"
        );
        next_polls(&[&inc, &full]).await;
        let t = sim.sim.transitions();
        check("incremental", &inc, &inc.metrics().await, &t, what);
        check("full walks", &full, &full.metrics().await, &t, what);
    }

    // Links created while a walk pages through the listing: that walk is read again, and only
    // the walk that is published counts. The fault creates them after the next page 1 served,
    // which may be a one-link count probe rather than a walk's first page (then no walk sees
    // the listing move): injected again until a walk did.
    let drifts = |m: &BTreeMap<String, f64>| m["qonto_exporter_pagination_drift_total"];
    let before = drifts(&inc.metrics().await) + drifts(&full.metrics().await);
    let mut tries = 0;
    let (mi, mf) = loop {
        tries += 1;
        let used = sim.sim.transitions();
        sim.sim.inject(Fault::DriftDuringWalk { create: 30 });
        let deadline = Instant::now() + WAIT;
        while sim.sim.transitions() == used {
            assert!(Instant::now() < deadline, "the drift fault was not used");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        next_polls(&[&inc, &full]).await;
        let t = sim.sim.transitions();
        let (mi, mf) = (inc.metrics().await, full.metrics().await);
        check("incremental", &inc, &mi, &t, "a drift");
        check("full walks", &full, &mf, &t, "a drift");
        if drifts(&mi) + drifts(&mf) > before {
            break (mi, mf);
        }
        assert!(tries < 10, "no walk saw the listing move in {tries} tries");
    };
    let t = sim.sim.transitions();
    // The incremental exporter made both kinds of polls; the other only full walks.
    assert!(mi["qonto_exporter_full_walks_total"] >= 2.0);
    assert!(mi["qonto_exporter_polls_total"] > mi["qonto_exporter_full_walks_total"] + 2.0);
    // (polls_total counts polls started: one may be under way.)
    assert!(mf["qonto_exporter_polls_total"] - mf["qonto_exporter_full_walks_total"] <= 1.0);
    // The control endpoint serves the same record.
    let served: SimTransitions = common::http()
        .get(format!("{}/_sim/transitions", sim.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    assert_eq!(served, t);
    // Every kind of transition the test meant to make was made (and so compared).
    let kinds: std::collections::BTreeSet<(&str, &str)> = t
        .transitions
        .iter()
        .map(|r| (r.from.as_str(), r.to.as_str()))
        .collect();
    for k in [
        ("new", "open"),
        ("new", "paid"),
        ("new", "processing"),
        ("open", "paid"),
        ("open", "processing"),
        ("open", "canceled"),
        ("open", "expired"),
        ("processing", "open"),
        ("processing", "paid"),
    ] {
        assert!(kinds.contains(&k), "{k:?} never happened: {kinds:?}");
    }
}

/// A restart from `--storage.path`: the first poll counts the moves that the links the state
/// file knew made while the exporter was down, but nothing as created (nor `from="new"`), and
/// observes no time to pay; the polls after it count everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_counts_the_moves_it_missed_but_creates_nothing_restored() {
    let sim = Sim::start(SimConfig {
        links: 600,
        seed: 22,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let args = fast_args(
        &sim.url(),
        &[
            ("--poll.interval", "150ms"),
            ("--poll.full-resync-interval", "1h"),
            ("--storage.path", dir.path().to_str().unwrap()),
        ],
    );
    let mut first = Exporter::start_owned(&args, &TOKEN);
    first.wait_ready(WAIT).await;
    sim.sim
        .mutate(Mutation::Batch(vec![Mutation::Create(3), Mutation::Pay(4)]));
    next_polls(&[&first]).await;
    // One more poll, so the state file holds the memory of a poll that saw the mutation.
    next_polls(&[&first]).await;
    let t = sim.sim.transitions();
    check(
        "before the restart",
        &first,
        &first.metrics().await,
        &t,
        "a batch",
    );
    assert!(first.terminate().success());

    // While the exporter is down: known links are paid and processed, then links are created.
    let down = sim.sim.transitions();
    sim.sim.mutate(Mutation::Pay(4));
    sim.sim.mutate(Mutation::Process(2));
    sim.sim.mutate(Mutation::Create(5));
    let up = sim.sim.transitions();

    let second = Exporter::start_owned(&args, &TOKEN);
    second
        .wait_until("a poll of the restarted process", WAIT, |m| {
            m.get("qonto_exporter_snapshot_restored") == Some(&0.0)
                && m.get("qonto_up") == Some(&1.0)
        })
        .await;
    let m = second.metrics().await;
    // What happened while down, without the links created then.
    let missed: BTreeMap<String, Decimal> = minus(&up, &down)
        .into_iter()
        .filter(|(k, _)| !k.contains("created") && !k.contains("from=\"new\""))
        .collect();
    assert!(
        missed.keys().any(|k| k.contains("to=\"paid\""))
            && missed.keys().any(|k| k.contains("to=\"processing\"")),
        "{missed:?}"
    );
    let wrong = differences(&counted(&m), &published(&missed));
    assert!(
        wrong.is_empty(),
        "first poll after the restart:\n{}\nlogs:\n{}",
        wrong.join("\n"),
        second.logs()
    );
    assert!(
        m.iter()
            .filter(|(k, _)| k.starts_with("qonto_payment_links_time_to_pay_seconds_count"))
            .all(|(_, v)| *v == 0.0),
        "no time to pay after a restore"
    );

    // Then everything counts again: links created and paid, the ones created while down paid.
    sim.sim.mutate(Mutation::Batch(vec![
        Mutation::Create(6),
        Mutation::Pay(1_000_000),
    ]));
    next_polls(&[&second]).await;
    let now = sim.sim.transitions();
    let mut want = missed.clone();
    for (k, v) in minus(&now, &up) {
        *want.entry(k).or_default() += v;
    }
    let m = second.metrics().await;
    let wrong = differences(&counted(&m), &published(&want));
    assert!(
        wrong.is_empty(),
        "after the restart:\n{}\nlogs:\n{}",
        wrong.join("\n"),
        second.logs()
    );
    let paid_since: u64 = paid(&now).values().map(|(n, _)| n).sum::<u64>()
        - paid(&up).values().map(|(n, _)| n).sum::<u64>();
    let timed: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("qonto_payment_links_time_to_pay_seconds_count"))
        .map(|(_, v)| v)
        .sum();
    assert!(paid_since > 6);
    assert_eq!(
        timed, paid_since as f64,
        "only the payments seen after the restore are timed"
    );
}
