//! Flows: payment links created, status transitions and time to pay, as counters fed by what
//! consecutive complete polls observe. Pure bookkeeping (no I/O, no clock reads: the poll's
//! start is passed in); the poller feeds [`FlowTally`] through the planner's `Tally` and hands
//! its [`FlowEvents`] to [`FlowMetrics`] when a poll completes.
//!
//! # What is counted
//! Each complete poll P_k records, for every link it counts, the status it saw. A link counted
//! in status `to` is a transition `from → to` when:
//! - it was open or processing at the previous complete poll P_k−1 (the planner's live memory,
//!   plus the hashes of the processing ones kept here) and `to` differs: `from` is that status;
//! - or it is **new**: not known to P_k−1 (not live, not among the terminal links P_k−1 held that
//!   were created recently, not of a status the exporter does not know) and certainly created
//!   after P_k−1 started, less [`CREATED_ALLOWANCE`] (10 minutes for clock skew between Qonto and
//!   the exporter and for a link that shows in listings a little after its `created_at`). It then
//!   counts as created, and as a transition `from="new"` to the status it is first seen in (`open`
//!   for most; `paid` for a link created and paid between two polls), so the `new` transitions
//!   sum to the created ones.
//!
//! Money twins add the link's amount as read in its new status (exact decimals, converted to
//! `f64` only when published). The time to pay of a link seen becoming paid is the start of the
//! poll that saw it paid minus its `created_at` (0 at least), or, when `--collect.payments`
//! read its payments, the paid payment's `paid_at` minus its `created_at` (exact).
//!
//! # Guarantees
//! - **Exact** relative to what polls observe: every counter is a sum over links of the change
//!   between their statuses at two consecutive *complete* polls. Events are collected in the poll's
//!   tally and published only when the poll completes, at the very instant the incremental memory
//!   advances; a poll that fails, times out or is walked again after pagination drift (a fresh
//!   tally each attempt) counts nothing, and the next complete poll compares with the same
//!   memory. So re-walks and full resyncs never count twice: a full walk reads every terminal
//!   link again, but those P_k−1 held are recognised (created before it, or kept as recent) and
//!   count nothing. A link seen open, then processing, then open again by three polls counts
//!   both transitions.
//! - **Not seen** (approximate): changes that revert between two polls (open → processing →
//!   open, or a reusable link paid and reopened within one interval) count nothing, and several
//!   changes between two polls count as one (open → processing → paid is open → paid). A link
//!   leaving a terminal status (Qonto does not promise they are final; the planner's resync checks
//!   count those) is not counted, as terminal links are not remembered one by one; its next move
//!   out of open is. Links of statuses the exporter does not know and links whose data is unusable
//!   in their new status are not counted; a link seen before with unusable data counts from the
//!   status it was remembered in. A link that leaves open or processing and vanishes (deleted)
//!   counts nothing. A link without a usable `created_at` (or one more than a day ahead of the
//!   poll) is never counted as created, and has no time to pay. A poll that publishes while the
//!   listing still moved (after its re-walks) may have missed links: a missed open link that
//!   reaches a terminal status before the next poll is not counted (lost, not counted later).
//!   And when a terminal status's count holds (a link moved in while another of that status
//!   was deleted), the status is carried and the move in is not observed.
//! - **Time to pay** is late by at most the time between the starts of the two polls (one
//!   `--poll.interval` while polls succeed; longer across failed polls), or early by at most the
//!   poll's duration for a link paid while the poll ran.
//! - **First polls.** The first poll of a process counts nothing: it has no previous poll. After
//!   a restart from `--storage.path`, the first poll compares with the memory in the state file:
//!   links that were open or processing then and moved while the exporter was down count as
//!   transitions (they did happen, once — unless the last state write before the restart failed
//!   or was skipped, a hung or full volume: the moves the previous process counted after the
//!   file was written are then counted again), but no link counts as created (nor `from="new"`), as
//!   what was created during the downtime cannot be told from what the state file did not cover,
//!   and no time to pay is observed (its error would be the downtime). A state file written
//!   before this module existed has no flow memory: its first poll counts nothing.
//! - **Counters reset on restart**: they are not saved in the state file (Prometheus's `rate()`
//!   and `increase()` handle resets; a counter saved with a file older than the last scrape would
//!   go backwards without looking like a reset). The transitions made during a downtime are
//!   counted by the first poll after it, as said above.
//!
//! # Cost
//! The planner already remembers `(id hash, expiration)` of every open and processing link. This
//! module adds the id hash of each **processing** link (8 bytes; open links cost nothing: a live
//! link not listed as processing was open) and `(id hash, created_at)` of each terminal link
//! created within [`CREATED_ALLOWANCE`] of the poll (16 bytes each; a few minutes of links).
//! Terminal links cost nothing more. Per link read, one id hash and a few binary searches.
//!
//! # Series
//! From the first complete poll on, every `(currency, resource_type)` of the published figures
//! (each currency seen, with every known resource type) has its created counters, its
//! transitions from `new`, `open` and `processing` into each terminal status, and its
//! time-to-pay histogram, at 0 until something is counted: `increase()` and `rate()` then see
//! the first event, and an alert on "nothing paid for a while" has a series to look at. Other
//! label sets (`to="open"`, `to="processing"`, a status Qonto adds) appear at their first event.
//!
//! # Cardinality
//! `from` is `new`, `open` or `processing`; `to`, `currency` and `resource_type` are label values
//! the aggregator admitted, and the counters keep their own ceilings over the process's life
//! (the exporter's [`Limits`]: 16 statuses, 64 currencies, 8 resource types); an event beyond
//! them is dropped and logged. At most 3 × 16 × 64 × 8 transition series per organisation, in
//! practice 13 per currency and resource type (3 `from` × 5 statuses, less open → open and
//! processing → processing; 9 of them from the first poll).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter as CounterProto, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{HistogramOpts, HistogramVec, Registry};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use time::OffsetDateTime;

use crate::aggregate::{
    Limits, LinkData, Snapshot, TERMINAL_STATUSES, Totals, parse_date, parse_date_upper_bound,
};
use crate::planner::Memory;

/// `from` of a link created since the previous poll.
pub const NEW: &str = "new";
const OPEN: &str = "open";
const PROCESSING: &str = "processing";
const PAID: &str = "paid";

/// Allowance, in seconds, between a link's `created_at` and the exporter's clock: a link is
/// known to have existed at a poll when it was certainly created this long before the poll
/// started, and terminal links created later are remembered one by one.
pub const CREATED_ALLOWANCE: i64 = 600;
/// A `created_at` further ahead of the poll than this is taken as unusable.
const FUTURE_LIMIT: i64 = 86_400;

/// Buckets of `qonto_payment_links_time_to_pay_seconds`: 5 minutes to 90 days.
pub const TIME_TO_PAY_BUCKETS: [f64; 14] = [
    300.0,
    900.0,
    3600.0,
    10_800.0,
    21_600.0,
    43_200.0,
    86_400.0,
    172_800.0,
    259_200.0,
    604_800.0,
    1_209_600.0,
    2_592_000.0,
    5_184_000.0,
    7_776_000.0,
];

/// What the next poll needs to attribute flows, kept in the planner's [`Memory`] (and so in
/// the state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FlowMemory {
    /// Id hashes of the live links that were processing (the other live links were open),
    /// sorted.
    pub(crate) processing: Vec<u64>,
    /// `(id hash, latest instant its created_at stands for)` of the terminal links held that
    /// were created within [`CREATED_ALLOWANCE`] of the poll's start (or after it), sorted.
    pub(crate) recent: Vec<(u64, i64)>,
}

impl FlowMemory {
    /// Sorts what a state file gave (outside input), for the binary searches.
    pub(crate) fn repair(&mut self) {
        self.processing.sort_unstable();
        self.processing.dedup();
        self.recent.sort_unstable();
        self.recent.dedup_by_key(|(h, _)| *h);
    }
}

/// The counts one poll adds, applied by [`FlowMetrics::record`] when the poll completes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowEvents {
    /// `(currency, resource_type)` → links created and their amounts.
    pub created: BTreeMap<(String, String), Totals>,
    /// `(from, to, currency, resource_type)` → transitions and their amounts.
    pub transitions: BTreeMap<(&'static str, String, String, String), Totals>,
    /// `(currency, resource_type, seconds)` of the links seen becoming paid.
    pub time_to_pay: Vec<(String, String, f64)>,
    /// The links seen becoming paid, for their payments (`--collect.payments`).
    pub paid: Vec<PaidLink>,
}

/// A link seen becoming paid: what reading its payments needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PaidLink {
    pub id: String,
    /// Unix seconds, when usable.
    pub created: Option<i64>,
    /// Its entry in [`FlowEvents::time_to_pay`], if it has one: the payment's `paid_at`
    /// replaces the poll's time there.
    pub time_to_pay: Option<usize>,
}

fn add(t: &mut Totals, amount: Decimal) {
    t.count = t.count.saturating_add(1);
    t.amount = t.amount.saturating_add(amount);
}

/// A link's `created_at`: the instant written (for the time to pay) and the latest instant it
/// can stand for (to know it certainly existed before an instant), Unix seconds.
#[derive(Debug, Clone, Copy)]
struct Created {
    at: i64,
    latest: i64,
}

impl Created {
    fn read(s: Option<&str>, now: i64) -> Option<Created> {
        let s = s?;
        let at = parse_date(s)?.unix_timestamp();
        let latest = parse_date_upper_bound(s)?.unix_timestamp();
        (at <= now.saturating_add(FUTURE_LIMIT)).then_some(Created { at, latest })
    }
}

/// Whether the poll that built `memory` did not know the link `hash`: not live, not among the
/// recent terminal links it held, not of a status the exporter does not know. (Older terminal
/// links are not remembered one by one: pair this with [`created_since`].)
fn unknown_to(memory: &Memory, flows: &FlowMemory, hash: u64) -> bool {
    memory
        .live
        .binary_search_by_key(&hash, |(h, _)| *h)
        .is_err()
        && flows
            .recent
            .binary_search_by_key(&hash, |(h, _)| *h)
            .is_err()
        && memory.unknown.ids.binary_search(&hash).is_err()
}

/// Whether a link was certainly created after the poll that started at `polled_at`, less
/// [`CREATED_ALLOWANCE`].
fn created_since(c: Created, polled_at: i64) -> bool {
    c.latest > polled_at.saturating_sub(CREATED_ALLOWANCE)
}

/// Whether a link is a newcomer since the poll that built `memory`: unknown to it and certainly
/// created after it started (less the allowance). Such a link was in no status that poll held,
/// wherever it is now. `false` for a memory without flows (a state file written before them),
/// and for a `created_at` that is missing, unusable or more than a day ahead of `now`.
pub(crate) fn newcomer(memory: &Memory, hash: u64, created_at: Option<&str>, now: i64) -> bool {
    let Some(flows) = &memory.flows else {
        return false;
    };
    unknown_to(memory, flows, hash)
        && Created::read(created_at, now).is_some_and(|c| created_since(c, memory.polled_at))
}

/// The previous poll, as far as flows need it.
struct Prev<'m> {
    memory: &'m Memory,
    flows: &'m FlowMemory,
}

/// One poll's flow bookkeeping, fed link by link.
#[derive(Default)]
pub(crate) struct FlowTally<'m> {
    /// False until [`FlowTally::new`]: nothing is tracked (planner unit tests).
    on: bool,
    prev: Option<Prev<'m>>,
    /// The poll's start, Unix seconds.
    now: i64,
    /// Created links and time to pay are counted: not at the first poll after a restore.
    fresh: bool,
    processing: Vec<u64>,
    recent: Vec<(u64, i64)>,
    pub(crate) events: FlowEvents,
}

impl<'m> FlowTally<'m> {
    /// Compares with `memory` (the previous complete poll's, or the state file's), for a poll
    /// that started at `now`. Without a memory, or with one written before flows existed, the
    /// poll counts nothing and only builds the memory the next poll compares with.
    pub(crate) fn new(memory: Option<&'m Memory>, now: OffsetDateTime) -> FlowTally<'m> {
        let prev =
            memory.and_then(|memory| memory.flows.as_ref().map(|flows| Prev { memory, flows }));
        FlowTally {
            on: true,
            fresh: prev.as_ref().is_some_and(|p| !p.memory.restored),
            prev,
            now: now.unix_timestamp(),
            ..FlowTally::default()
        }
    }

    /// A link remembered as processing (valid or not), by id hash.
    pub(crate) fn processing(&mut self, hash: u64) {
        if self.on {
            self.processing.push(hash);
        }
    }

    /// One link counted by this poll (first reading of its id), in its status.
    pub(crate) fn observe(&mut self, hash: u64, data: &LinkData<'_>, created_at: Option<&str>) {
        if !self.on {
            return;
        }
        let to = &*data.status;
        // Parsed only when needed: not for a live link still in the status it had.
        let now = self.now;
        let parsed = std::cell::OnceCell::new();
        let created = || *parsed.get_or_init(|| Created::read(created_at, now));
        if TERMINAL_STATUSES.contains(&to) {
            if let Some(c) = created().filter(|c| c.latest > now - CREATED_ALLOWANCE) {
                self.recent.push((hash, c.latest));
            }
        }
        let Some(prev) = &self.prev else {
            return;
        };
        let from = if prev
            .memory
            .live
            .binary_search_by_key(&hash, |(h, _)| *h)
            .is_ok()
        {
            if prev.flows.processing.binary_search(&hash).is_ok() {
                PROCESSING
            } else {
                OPEN
            }
        } else if !unknown_to(prev.memory, prev.flows, hash) {
            return;
        } else {
            match created() {
                Some(c) if self.fresh && created_since(c, prev.memory.polled_at) => NEW,
                _ => return,
            }
        };
        if from == to {
            return;
        }
        let (currency, resource_type) = (data.currency.to_string(), data.resource_type.to_string());
        if from == NEW {
            add(
                self.events
                    .created
                    .entry((currency.clone(), resource_type.clone()))
                    .or_default(),
                data.amount,
            );
        }
        if to == PAID {
            let created = created();
            let mut time_to_pay = None;
            if let (true, Some(c)) = (self.fresh, created) {
                let seconds = now.saturating_sub(c.at).max(0) as f64;
                time_to_pay = Some(self.events.time_to_pay.len());
                self.events
                    .time_to_pay
                    .push((currency.clone(), resource_type.clone(), seconds));
            }
            self.events.paid.push(PaidLink {
                id: data.id.to_owned(),
                created: created.map(|c| c.at),
                time_to_pay,
            });
        }
        add(
            self.events
                .transitions
                .entry((from, to.to_owned(), currency, resource_type))
                .or_default(),
            data.amount,
        );
    }

    /// The flow memory of this poll for the next one; `None` when flows are not tracked.
    pub(crate) fn memory(&mut self, prev: Option<&Memory>) -> Option<FlowMemory> {
        if !self.on {
            return None;
        }
        let mut processing = std::mem::take(&mut self.processing);
        processing.sort_unstable();
        processing.dedup();
        processing.shrink_to_fit();
        // Terminal links held now: those read by this poll, and those the previous poll held
        // (carried statuses are not read again) while still recent.
        let floor = self.now - CREATED_ALLOWANCE;
        let mut recent = std::mem::take(&mut self.recent);
        if let Some(f) = prev.and_then(|m| m.flows.as_ref()) {
            recent.extend(f.recent.iter().filter(|(_, c)| *c > floor));
        }
        recent.sort_unstable();
        recent.dedup_by_key(|(h, _)| *h);
        recent.shrink_to_fit();
        Some(FlowMemory { processing, recent })
    }
}

/// Label values admitted so far, under a ceiling.
#[derive(Default)]
struct Ceiling {
    values: BTreeSet<String>,
}

impl Ceiling {
    fn admits(&self, value: &str, limit: usize) -> bool {
        self.values.contains(value) || self.values.len() < limit
    }
    fn admit(&mut self, value: &str) {
        if !self.values.contains(value) {
            self.values.insert(value.to_owned());
        }
    }
}

#[derive(Default)]
struct Counted {
    created: BTreeMap<(String, String), Totals>,
    transitions: BTreeMap<(String, String, String, String), Totals>,
    statuses: Ceiling,
    currencies: Ceiling,
    resource_types: Ceiling,
    /// Events dropped over the label ceilings (logged once).
    dropped: u64,
}

const CREATED: &str = "qonto_payment_links_created_total";
const CREATED_AMOUNT: &str = "qonto_payment_links_created_amount_total";
const TRANSITIONS: &str = "qonto_payment_links_transitions_total";
const TRANSITIONS_AMOUNT: &str = "qonto_payment_links_transitions_amount_total";
const TIME_TO_PAY: &str = "qonto_payment_links_time_to_pay_seconds";

const OBSERVED: &str = "Counted by the background polls of GET /v2/payment_links from what two consecutive complete polls saw (a scrape never calls Qonto); changes that revert between two polls are not seen. Not counted at the first poll of a process; after a restart from --storage.path the first poll counts moves of the links the state file knew, but no link as created. Resets when the process restarts.";
const BOUND: &str =
    "Labels bounded by the exporter's ceilings: 64 currencies, 8 resource types, 16 statuses.";

fn help(name: &str) -> String {
    match name {
        CREATED => format!(
            "Payment links created, by currency and resource type: links first seen by a poll and created after the previous poll started (10 minutes of allowance for clock skew). {OBSERVED} {BOUND}"
        ),
        CREATED_AMOUNT => format!(
            "Sum of the gross amounts (VAT included) of the links counted in qonto_payment_links_created_total, in units of `currency`. {OBSERVED} {BOUND}"
        ),
        TRANSITIONS => format!(
            "Status changes of payment links: `from` is the status a link was seen in at the previous poll (open or processing; terminal links are taken as final), or `new` for a link created since then and first seen already in `to` (so the `new` transitions sum to qonto_payment_links_created_total). {OBSERVED} {BOUND} At most 3 `from` values."
        ),
        TRANSITIONS_AMOUNT => format!(
            "Sum of the gross amounts (VAT included) of the links counted in qonto_payment_links_transitions_total, in units of `currency`; rate() of to=\"paid\" is the money collected per second. {OBSERVED} {BOUND}"
        ),
        _ => format!(
            "Time from created_at to payment of the links seen becoming paid, in seconds. The payment time is the paid payment's paid_at when --collect.payments read the link's payments, else the start of the poll that saw the link paid: late by at most the time since the previous complete poll started (one --poll.interval while polls succeed), early by at most the poll's duration. Not observed at the first poll after a restart from --storage.path. {OBSERVED} {BOUND}"
        ),
    }
}

/// Labels of each counter family, in the order they are written (alphabetical).
const CREATED_LABELS: [&str; 2] = ["currency", "resource_type"];
const TRANSITION_LABELS: [&str; 4] = ["currency", "from", "resource_type", "to"];

/// The flow counters of one organisation: exact sums kept as decimals and published as
/// counters (a collector registered in the organisation's registry), and the time-to-pay
/// histogram.
#[derive(Clone)]
pub struct FlowMetrics {
    counted: Arc<Mutex<Counted>>,
    limits: Limits,
    time_to_pay: HistogramVec,
}

impl std::fmt::Debug for FlowMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowMetrics")
    }
}

struct FlowCollector {
    counted: Arc<Mutex<Counted>>,
    descs: Vec<Desc>,
}

impl FlowMetrics {
    /// The flow metrics, registered in `registry` (which adds the organisation's label).
    pub fn new(registry: &Registry) -> FlowMetrics {
        let counted = Arc::new(Mutex::new(Counted::default()));
        let desc = |name: &str, labels: &[&str]| {
            Desc::new(
                name.to_owned(),
                help(name),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                Default::default(),
            )
            .expect("static metric description is valid")
        };
        let descs = vec![
            desc(CREATED, &CREATED_LABELS),
            desc(CREATED_AMOUNT, &CREATED_LABELS),
            desc(TRANSITIONS, &TRANSITION_LABELS),
            desc(TRANSITIONS_AMOUNT, &TRANSITION_LABELS),
        ];
        registry
            .register(Box::new(FlowCollector {
                counted: counted.clone(),
                descs,
            }))
            .expect("flow metrics registered once");
        let time_to_pay = HistogramVec::new(
            HistogramOpts::new(TIME_TO_PAY, help(TIME_TO_PAY))
                .buckets(TIME_TO_PAY_BUCKETS.to_vec()),
            &CREATED_LABELS,
        )
        .expect("static histogram is valid");
        registry
            .register(Box::new(time_to_pay.clone()))
            .expect("metric registered once");
        FlowMetrics {
            counted,
            limits: Limits::default(),
            time_to_pay,
        }
    }

    /// Adds one complete poll's events. Every `(currency, resource_type)` of `snapshot` gets
    /// its created counters, its transitions into a terminal status and its time-to-pay
    /// histogram at 0 if absent, so that `increase()` sees the first event and alerts on "no
    /// payment for a while" have a series.
    pub fn record(&self, events: &FlowEvents, snapshot: &Snapshot) {
        let mut c = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        let limits = self.limits;
        let fits = |c: &Counted, status: Option<&str>, currency: &str, rt: &str| {
            status.is_none_or(|s| c.statuses.admits(s, limits.statuses))
                && c.currencies.admits(currency, limits.currencies)
                && c.resource_types.admits(rt, limits.resource_types)
        };
        let admit = |c: &mut Counted, status: Option<&str>, currency: &str, rt: &str| {
            if let Some(s) = status {
                c.statuses.admit(s);
            }
            c.currencies.admit(currency);
            c.resource_types.admit(rt);
        };
        let groups: BTreeSet<(&str, &str)> = snapshot
            .links
            .keys()
            .map(|k| (k.currency.as_str(), k.resource_type.as_str()))
            .collect();
        for (currency, rt) in groups {
            if !fits(&c, None, currency, rt) {
                continue;
            }
            admit(&mut c, None, currency, rt);
            c.created
                .entry((currency.to_owned(), rt.to_owned()))
                .or_default();
            self.time_to_pay.with_label_values(&[currency, rt]);
            for from in [NEW, OPEN, PROCESSING] {
                for to in TERMINAL_STATUSES {
                    c.transitions
                        .entry((from.into(), to.into(), currency.into(), rt.into()))
                        .or_default();
                }
            }
        }
        let mut dropped = 0u64;
        for ((currency, rt), t) in &events.created {
            if !fits(&c, None, currency, rt) {
                dropped += t.count;
                continue;
            }
            admit(&mut c, None, currency, rt);
            merge(
                c.created.entry((currency.clone(), rt.clone())).or_default(),
                t,
            );
        }
        for ((from, to, currency, rt), t) in &events.transitions {
            if !fits(&c, Some(to), currency, rt) {
                dropped += t.count;
                continue;
            }
            admit(&mut c, Some(to), currency, rt);
            merge(
                c.transitions
                    .entry(((*from).to_owned(), to.clone(), currency.clone(), rt.clone()))
                    .or_default(),
                t,
            );
        }
        for (currency, rt, seconds) in &events.time_to_pay {
            if fits(&c, None, currency, rt) {
                self.time_to_pay
                    .with_label_values(&[currency.as_str(), rt.as_str()])
                    .observe(*seconds);
            }
        }
        if dropped > 0 {
            if c.dropped == 0 {
                tracing::warn!(
                    dropped,
                    "flow events over the label ceilings dropped (more currencies, resource types or statuses than the exporter keeps series for); later drops are not logged"
                );
            }
            c.dropped = c.dropped.saturating_add(dropped);
        }
    }
}

fn merge(into: &mut Totals, t: &Totals) {
    into.count = into.count.saturating_add(t.count);
    into.amount = into.amount.saturating_add(t.amount);
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn counter_family(name: &str, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help(name));
    f.set_field_type(MetricType::COUNTER);
    f.set_metric(metrics);
    f
}

fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut c = CounterProto::default();
    c.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

impl Collector for FlowCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let c = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        let money = |t: &Totals| t.amount.to_f64().unwrap_or(f64::NAN);
        let created = |value: &dyn Fn(&Totals) -> f64| {
            c.created
                .iter()
                .map(|((currency, rt), t)| {
                    counter(
                        vec![label("currency", currency), label("resource_type", rt)],
                        value(t),
                    )
                })
                .collect()
        };
        let transitions = |value: &dyn Fn(&Totals) -> f64| {
            c.transitions
                .iter()
                .map(|((from, to, currency, rt), t)| {
                    counter(
                        vec![
                            label("currency", currency),
                            label("from", from),
                            label("resource_type", rt),
                            label("to", to),
                        ],
                        value(t),
                    )
                })
                .collect()
        };
        vec![
            counter_family(CREATED, created(&|t| t.count as f64)),
            counter_family(CREATED_AMOUNT, created(&money)),
            counter_family(TRANSITIONS, transitions(&|t| t.count as f64)),
            counter_family(TRANSITIONS_AMOUNT, transitions(&money)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregator, read};
    use crate::planner::{IdKey, UnknownMemory};
    use crate::qonto::model::{Amount, Link};
    use std::borrow::Cow;
    use std::time::SystemTime;
    use time::macros::datetime;

    const KEY: IdKey = IdKey(1, 2);

    fn link<'a>(id: &'a str, status: &'a str, value: &'a str, created: &'a str) -> Link<'a> {
        Link {
            id: Cow::Borrowed(id),
            status: Cow::Borrowed(status),
            expiration_date: Some(Cow::Borrowed("2030-01-01T00:00:00Z")),
            created_at: (!created.is_empty()).then_some(Cow::Borrowed(created)),
            amount: Amount {
                value: Cow::Borrowed(value),
                currency: Cow::Borrowed("EUR"),
            },
            resource_type: Cow::Borrowed("Invoice"),
        }
    }

    /// What a poll keeps of its live links and flows, for the next one.
    fn memory(
        polled_at: OffsetDateTime,
        live: &[&str],
        flows: Option<FlowMemory>,
        restored: bool,
    ) -> Memory {
        let mut live: Vec<(u64, i64)> = live.iter().map(|id| (KEY.hash_one(id), 0)).collect();
        live.sort_unstable();
        Memory {
            last_full: SystemTime::now(),
            id_key: KEY,
            terminal: BTreeMap::new(),
            live,
            unknown: UnknownMemory::default(),
            polled_at: polled_at.unix_timestamp(),
            settled: true,
            flows,
            restored,
        }
    }

    /// Feeds `links` to a tally as one poll does: processing links remembered, every link
    /// observed.
    fn poll<'m>(t: &mut FlowTally<'m>, links: &[Link<'_>]) {
        for l in links {
            let data = read(l).expect("valid test link");
            let hash = KEY.hash_one(l.id.as_ref());
            if data.status == PROCESSING {
                t.processing(hash);
            }
            t.observe(hash, &data, l.created_at.as_deref());
        }
    }

    fn transitions(e: &FlowEvents) -> Vec<(&str, &str, u64, Decimal)> {
        e.transitions
            .iter()
            .map(|((f, t, ..), v)| (*f, t.as_str(), v.count, v.amount))
            .collect()
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    const T0: OffsetDateTime = datetime!(2026-11-24 12:00 UTC);
    const T1: OffsetDateTime = datetime!(2026-11-24 12:01 UTC);
    const T2: OffsetDateTime = datetime!(2026-11-24 12:02 UTC);

    #[test]
    fn the_first_poll_counts_nothing_and_remembers_processing_and_recent_terminal_links() {
        let mut t = FlowTally::new(None, T0);
        poll(
            &mut t,
            &[
                link("o", "open", "1", "2026-11-20T00:00:00Z"),
                link("p", "processing", "2", "2026-11-20T00:00:00Z"),
                link("old-paid", "paid", "3", "2026-11-20T00:00:00Z"),
                link("new-paid", "paid", "4", "2026-11-24T11:59:00Z"),
            ],
        );
        assert_eq!(t.events, FlowEvents::default());
        let m = t.memory(None).unwrap();
        assert_eq!(m.processing, vec![KEY.hash_one("p")]);
        let at = datetime!(2026-11-24 11:59:01 UTC).unix_timestamp();
        assert_eq!(m.recent, vec![(KEY.hash_one("new-paid"), at)]);
    }

    #[test]
    fn transitions_from_the_last_seen_status_and_new_links_are_counted_once() {
        let flows = FlowMemory {
            processing: vec![KEY.hash_one("p")],
            recent: vec![(KEY.hash_one("recent-paid"), T0.unix_timestamp())],
        };
        let mut prev = memory(T0, &["o1", "o2", "o3", "p"], Some(flows), false);
        prev.unknown.ids = vec![KEY.hash_one("settling")];
        let mut t = FlowTally::new(Some(&prev), T1);
        poll(
            &mut t,
            &[
                // open → paid, open → processing, unchanged, processing → open.
                link("o1", "paid", "0.1", "2026-11-24T11:00:00Z"),
                link("o2", "processing", "0.2", "2026-11-20T00:00:00Z"),
                link("o3", "open", "100", "2026-11-20T00:00:00Z"),
                link("p", "open", "7", "2026-11-20T00:00:00Z"),
                // Created since the previous poll: open, or already paid.
                link("n1", "open", "5", "2026-11-24T12:00:30Z"),
                link("n2", "paid", "0.2", "2026-11-24T12:00:30Z"),
                // Held by the previous poll: old terminal links, a recent one, an unknown one.
                link("old", "paid", "9", "2026-01-01T00:00:00Z"),
                link("recent-paid", "paid", "9", "2026-11-24T11:59:59Z"),
                link("settling", "paid", "9", "2026-01-01T00:00:00Z"),
                // No usable created_at: never new.
                link("dateless", "paid", "9", ""),
                link("garbage", "paid", "9", "yesterday"),
                // Further ahead than a day: unusable.
                link("future", "paid", "9", "2027-01-01T00:00:00Z"),
            ],
        );
        assert_eq!(
            transitions(&t.events),
            vec![
                ("new", "open", 1, dec("5")),
                ("new", "paid", 1, dec("0.2")),
                ("open", "paid", 1, dec("0.1")),
                ("open", "processing", 1, dec("0.2")),
                ("processing", "open", 1, dec("7")),
            ]
        );
        let created: Vec<_> = t.events.created.values().copied().collect();
        assert_eq!(
            created,
            vec![Totals {
                count: 2,
                amount: dec("5.2")
            }]
        );
        // Time to pay: the poll's start minus created_at, for the two links seen paid.
        let mut ttp: Vec<f64> = t.events.time_to_pay.iter().map(|(.., s)| *s).collect();
        ttp.sort_by(f64::total_cmp);
        assert_eq!(ttp, vec![30.0, 3660.0]);
        let next = t.memory(Some(&prev)).unwrap();
        assert_eq!(next.processing, vec![KEY.hash_one("o2")]);
        // The recent terminal links held: n2 and the one carried, both within the allowance.
        let mut want = vec![
            (
                KEY.hash_one("n2"),
                datetime!(2026-11-24 12:00:31 UTC).unix_timestamp(),
            ),
            (KEY.hash_one("recent-paid"), T0.unix_timestamp()),
        ];
        want.sort_unstable();
        assert_eq!(next.recent, want);
    }

    /// Three polls: a link seen open, then processing, then open counts both transitions; a
    /// full walk that reads every terminal link again (a resync) counts none of them twice.
    #[test]
    fn each_observed_change_counts_once_across_polls_and_resyncs() {
        let all = |o: &'static str| {
            vec![
                link("x", o, "1", "2026-11-01T00:00:00Z"),
                link("paid-long-ago", "paid", "2", "2026-10-01T00:00:00Z"),
                link("created-paid", "paid", "3", "2026-11-24T12:00:10Z"),
            ]
        };
        let mut t0 = FlowTally::new(None, T0);
        poll(&mut t0, &all("open")[..2]);
        let m0 = memory(T0, &["x"], t0.memory(None), false);
        let mut t1 = FlowTally::new(Some(&m0), T1);
        poll(&mut t1, &all("processing"));
        assert_eq!(
            transitions(&t1.events),
            vec![
                ("new", "paid", 1, dec("3")),
                ("open", "processing", 1, dec("1"))
            ]
        );
        let m1 = memory(T1, &["x"], t1.memory(Some(&m0)), false);
        // The resync reads every link again, the one created and paid last time included.
        let mut t2 = FlowTally::new(Some(&m1), T2);
        poll(&mut t2, &all("open"));
        assert_eq!(
            transitions(&t2.events),
            vec![("processing", "open", 1, dec("1"))]
        );
        assert!(t2.events.created.is_empty());
        let m2 = memory(T2, &["x"], t2.memory(Some(&m1)), false);
        // Still recent (created 110 s before this poll): remembered, so a later poll does not
        // take it for new; and forgotten once older than the allowance.
        assert_eq!(m2.flows.as_ref().unwrap().recent.len(), 1);
        let later = T2 + time::Duration::seconds(CREATED_ALLOWANCE + 60);
        let mut t3 = FlowTally::new(Some(&m2), later);
        poll(&mut t3, &all("open"));
        assert_eq!(t3.events, FlowEvents::default());
        assert!(t3.memory(Some(&m2)).unwrap().recent.is_empty());
    }

    #[test]
    fn after_a_restore_moves_of_known_links_count_but_nothing_is_created_or_timed() {
        let flows = FlowMemory::default();
        let restored = memory(T0, &["o"], Some(flows.clone()), true);
        let mut t = FlowTally::new(Some(&restored), T2);
        poll(
            &mut t,
            &[
                link("o", "paid", "1", "2026-11-24T11:00:00Z"),
                link("n", "paid", "2", "2026-11-24T12:01:00Z"),
                link("m", "open", "2", "2026-11-24T12:01:00Z"),
            ],
        );
        assert_eq!(transitions(&t.events), vec![("open", "paid", 1, dec("1"))]);
        assert!(t.events.created.is_empty());
        assert!(t.events.time_to_pay.is_empty());
        // A memory from a state file written before flows existed: nothing at all.
        let old = memory(T0, &["o"], None, true);
        let mut t = FlowTally::new(Some(&old), T2);
        poll(&mut t, &[link("o", "paid", "1", "2026-11-24T11:00:00Z")]);
        assert_eq!(t.events, FlowEvents::default());
        assert!(t.memory(Some(&old)).is_some(), "the next poll can count");
    }

    #[test]
    fn a_memory_read_back_is_restored_and_old_state_files_have_no_flows() {
        let m = memory(
            T0,
            &["o"],
            Some(FlowMemory {
                processing: vec![3, 1],
                recent: vec![(9, 1), (2, 5)],
            }),
            false,
        );
        let json = serde_json::to_value(&m).unwrap();
        assert!(json.get("restored").is_none(), "never written");
        let mut back: Memory = serde_json::from_value(json.clone()).unwrap();
        assert!(back.restored);
        back.validate(SystemTime::now()).unwrap();
        let flows = back.flows.unwrap();
        assert_eq!(flows.processing, vec![1, 3], "sorted for binary searches");
        assert_eq!(flows.recent, vec![(2, 5), (9, 1)]);
        let mut old = json;
        old.as_object_mut().unwrap().remove("flows");
        let back: Memory = serde_json::from_value(old).unwrap();
        assert!(back.flows.is_none());
    }

    fn exposition(m: &FlowMetrics, registry: &Registry) -> String {
        let _ = m;
        let mut e = crate::metrics::Exposition::default();
        e.add(registry.gather());
        let mut out = Vec::new();
        e.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn snapshot(currencies: &[&str]) -> Snapshot {
        let mut agg = Aggregator::new(T0, &[], Limits::default());
        for (i, c) in currencies.iter().enumerate() {
            let id = format!("l{i}");
            let mut l = link(&id, "open", "1", "2026-11-20T00:00:00Z");
            l.amount.currency = Cow::Borrowed(c);
            agg.add(&l);
        }
        agg.finish()
    }

    #[test]
    fn counters_are_exact_sums_with_zero_series_and_bounded_labels() {
        let registry = Registry::new_custom(
            None,
            Some(std::collections::HashMap::from([(
                "organization".to_owned(),
                "acme".to_owned(),
            )])),
        )
        .unwrap();
        let m = FlowMetrics::new(&registry);
        let mut events = FlowEvents::default();
        let key = |from: &'static str, to: &str| {
            (from, to.to_owned(), "EUR".to_owned(), "Invoice".to_owned())
        };
        // 0.1 + 0.2 as decimals is 0.3, in f64 it is not.
        for a in ["0.1", "0.2"] {
            add(
                events.transitions.entry(key(OPEN, PAID)).or_default(),
                dec(a),
            );
        }
        add(
            events
                .created
                .entry(("EUR".into(), "Invoice".into()))
                .or_default(),
            dec("10.05"),
        );
        add(
            events.transitions.entry(key(NEW, OPEN)).or_default(),
            dec("10.05"),
        );
        events
            .time_to_pay
            .push(("EUR".into(), "Invoice".into(), 400.0));
        m.record(&events, &snapshot(&["EUR"]));
        m.record(&FlowEvents::default(), &snapshot(&["EUR"]));
        let text = exposition(&m, &registry);
        for (series, value) in [
            (
                r#"qonto_payment_links_transitions_amount_total{currency="EUR",from="open",resource_type="Invoice",to="paid",organization="acme"}"#,
                "0.3",
            ),
            (
                r#"qonto_payment_links_transitions_total{currency="EUR",from="open",resource_type="Invoice",to="paid",organization="acme"}"#,
                "2",
            ),
            // Zero series for the terminal transitions of every group of the figures.
            (
                r#"qonto_payment_links_transitions_total{currency="EUR",from="processing",resource_type="Basket",to="canceled",organization="acme"}"#,
                "0",
            ),
            (
                r#"qonto_payment_links_created_total{currency="EUR",resource_type="Invoice",organization="acme"}"#,
                "1",
            ),
            (
                r#"qonto_payment_links_created_amount_total{currency="EUR",resource_type="Invoice",organization="acme"}"#,
                "10.05",
            ),
            (
                r#"qonto_payment_links_created_total{currency="EUR",resource_type="Basket",organization="acme"}"#,
                "0",
            ),
            (
                r#"qonto_payment_links_time_to_pay_seconds_bucket{currency="EUR",resource_type="Invoice",organization="acme",le="900"}"#,
                "1",
            ),
            (
                r#"qonto_payment_links_time_to_pay_seconds_bucket{currency="EUR",resource_type="Invoice",organization="acme",le="300"}"#,
                "0",
            ),
            // An empty histogram for a group of the figures without payments.
            (
                r#"qonto_payment_links_time_to_pay_seconds_count{currency="EUR",resource_type="Basket",organization="acme"}"#,
                "0",
            ),
        ] {
            assert!(
                text.lines().any(|l| l == format!("{series} {value}")),
                "{series} {value} not in:\n{text}"
            );
        }
        for name in [CREATED, CREATED_AMOUNT, TRANSITIONS, TRANSITIONS_AMOUNT] {
            assert!(text.contains(&format!("# TYPE {name} counter")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert!(text.contains(&format!("# TYPE {TIME_TO_PAY} histogram")));
        let promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        if let Ok(mut child) = promtool {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("error"), "{stderr}");
        }
    }

    #[test]
    fn label_ceilings_hold_over_the_process_life() {
        let registry = Registry::new();
        let m = FlowMetrics::new(&registry);
        // 64 currencies fill the ceiling; a 65th's events are dropped, also when the figures
        // of a later poll name it (each poll's own ceiling starts afresh).
        let code = |i: u8| {
            format!(
                "X{}{}",
                char::from(b'A' + i / 26),
                char::from(b'A' + i % 26)
            )
        };
        let names: Vec<String> = (0..65).map(code).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        m.record(&FlowEvents::default(), &snapshot(&all[..64]));
        let mut events = FlowEvents::default();
        add(
            events
                .created
                .entry((code(64), "Invoice".into()))
                .or_default(),
            dec("1"),
        );
        events.time_to_pay.push((code(64), "Invoice".into(), 1.0));
        m.record(&events, &snapshot(&all[64..]));
        let text = exposition(&m, &registry);
        assert!(!text.contains(&code(64)), "{text}");
        assert!(text.contains(&code(63)));
        let c = m.counted.lock().unwrap();
        assert_eq!(c.dropped, 1);
        assert_eq!(c.currencies.values.len(), 64);
    }
}
