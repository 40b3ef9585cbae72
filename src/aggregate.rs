//! Links in, snapshot out: exact, pure aggregation.
//!
//! No I/O and no clock: the poller passes `now` in, so expiry logic is tested with fixed
//! clocks. Money is summed as [`Decimal`] and only turned into `f64` by the metrics module.
//!
//! One [`Aggregator`] serves one poll. It deduplicates links by `id` (pagination drifts when
//! links are created while a poll walks the pages, so the same link can be served twice),
//! validates each link (an unusable link is skipped and reported with its reason), and caps the number of distinct label values so that bad data cannot explode
//! the number of series. [`Aggregator::finish`] adds the zeros the metric contract asks for.
//!
//! What the spec allows is accepted as the spec means it, not as our simulator happens to
//! write it ([`read`]): statuses, currencies and resource types in another letter case are
//! folded into the spec's spelling (and reported as normalised), expiration dates in any ISO
//! 8601 date-time form are understood (one without an offset is taken as UTC, as every date in
//! Qonto's documentation is; a bare date as its midnight UTC), and only open links need one at all: a paid link with a
//! `null` date still counts in its status, and an open link whose date is unusable counts in
//! its status but in no expiry figure.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::time::Duration;

use rust_decimal::Decimal;
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::qonto::model::Link;

/// Statuses the spec names; each gets a zero series for every currency seen.
pub const KNOWN_STATUSES: [&str; 5] = ["open", "processing", "paid", "expired", "canceled"];
/// Statuses that never change again: the incremental poll reuses their totals.
pub const TERMINAL_STATUSES: [&str; 3] = ["paid", "expired", "canceled"];
/// Resource types the spec names.
pub const KNOWN_RESOURCE_TYPES: [&str; 2] = ["Invoice", "Basket"];
/// The status whose links can still be paid, and so can expire.
pub const OPEN: &str = "open";

/// An expiry horizon: `label` is the user's spelling (`24h`), used as the `within` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub label: String,
    pub duration: Duration,
}

/// Ceilings on distinct label values within one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub statuses: usize,
    pub currencies: usize,
    pub resource_types: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            statuses: 16,
            currencies: 64,
            resource_types: 8,
        }
    }
}

/// A count of links and the exact sum of their amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub count: u64,
    #[serde(with = "persist::decimal")]
    pub amount: Decimal,
}

impl Totals {
    fn add(&mut self, amount: Decimal) -> Result<(), InvalidReason> {
        self.amount = self
            .amount
            .checked_add(amount)
            .ok_or(InvalidReason::Amount)?;
        self.count += 1;
        Ok(())
    }

    fn merge(&mut self, other: Totals) {
        self.count += other.count;
        // Two sums that were each representable stay far below Decimal's 7.9e28 in practice;
        // saturate rather than panic if they ever do not.
        self.amount = self.amount.saturating_add(other.amount);
    }
}

/// Why a link was skipped; the value of `qonto_exporter_invalid_links_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InvalidReason {
    /// `id` empty.
    Id,
    /// `status` empty or not usable as a label value.
    Status,
    /// `resource_type` empty or not usable as a label value.
    ResourceType,
    /// `amount.currency` is not three capital letters.
    Currency,
    /// `amount.value` is not a decimal number (or overflows).
    Amount,
    /// `expiration_date` of an open link is missing or not an ISO 8601 date-time. Such a link
    /// still counts in its status, but in no expiry figure.
    ExpirationDate,
    /// The link element did not have the documented shape at all.
    Malformed,
    /// A new status, currency or resource type beyond the label ceiling.
    LabelLimit,
}

impl InvalidReason {
    /// Every reason, so the counter can be pre-initialised at 0.
    pub const ALL: [InvalidReason; 8] = [
        InvalidReason::Id,
        InvalidReason::Status,
        InvalidReason::ResourceType,
        InvalidReason::Currency,
        InvalidReason::Amount,
        InvalidReason::ExpirationDate,
        InvalidReason::Malformed,
        InvalidReason::LabelLimit,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Id => "invalid_id",
            InvalidReason::Status => "invalid_status",
            InvalidReason::ResourceType => "invalid_resource_type",
            InvalidReason::Currency => "invalid_currency",
            InvalidReason::Amount => "invalid_amount",
            InvalidReason::ExpirationDate => "invalid_expiration_date",
            InvalidReason::Malformed => "malformed",
            InvalidReason::LabelLimit => "label_limit",
        }
    }
}

/// Which label values of a link were folded into the spec's spelling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Normalized {
    pub status: bool,
    pub currency: bool,
    pub resource_type: bool,
}

impl Normalized {
    /// `(label value of the `field` label, normalised?)` for each field.
    pub fn fields(self) -> [(&'static str, bool); 3] {
        [
            ("status", self.status),
            ("currency", self.currency),
            ("resource_type", self.resource_type),
        ]
    }
}

/// A link's data, validated and in the spec's spelling: what [`Aggregator::add_read`] counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkData<'a> {
    pub id: &'a str,
    pub status: Cow<'a, str>,
    pub currency: Cow<'a, str>,
    pub resource_type: Cow<'a, str>,
    pub amount: Decimal,
    /// Parsed only for links that can still change (not paid, expired or canceled); `None`
    /// when it is missing or unusable.
    pub expiration: Option<OffsetDateTime>,
    /// `created_at`, parsed only for open links (the receivables' age); `None` when it is
    /// missing or unusable, or the link is not open.
    pub created: Option<OffsetDateTime>,
    pub normalized: Normalized,
}

impl LinkData<'_> {
    /// An open link whose expiration is unknown: counted in its status, in no expiry figure.
    pub fn expiration_unusable(&self) -> bool {
        self.status == OPEN && self.expiration.is_none()
    }
}

/// Validates a link and folds its label values into the spec's spelling.
pub fn read<'a>(link: &'a Link<'_>) -> Result<LinkData<'a>, InvalidReason> {
    if link.id.is_empty() {
        return Err(InvalidReason::Id);
    }
    let mut normalized = Normalized::default();
    let status = canonical_status(&link.status);
    normalized.status = matches!(status, Cow::Owned(_));
    if !is_label_value(&status) {
        return Err(InvalidReason::Status);
    }
    let resource_type = canonical_resource_type(&link.resource_type);
    normalized.resource_type = matches!(resource_type, Cow::Owned(_));
    if !is_label_value(&resource_type) {
        return Err(InvalidReason::ResourceType);
    }
    let raw_currency = &*link.amount.currency;
    if raw_currency.len() != 3 || !raw_currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(InvalidReason::Currency);
    }
    let currency = if raw_currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(raw_currency)
    } else {
        normalized.currency = true;
        Cow::Owned(raw_currency.to_ascii_uppercase())
    };
    let amount = parse_decimal(&link.amount.value).ok_or(InvalidReason::Amount)?;
    let expiration = if TERMINAL_STATUSES.contains(&&*status) {
        None
    } else {
        link.expiration_date.as_deref().and_then(parse_date)
    };
    let created = if status == OPEN {
        link.created_at.as_deref().and_then(parse_date)
    } else {
        None
    };
    Ok(LinkData {
        id: &link.id,
        status,
        currency,
        resource_type,
        amount,
        expiration,
        created,
        normalized,
    })
}

/// A status in the spec's spelling (lower case); borrowed when it already is.
pub fn canonical_status(status: &str) -> Cow<'_, str> {
    if status.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(status.to_ascii_lowercase())
    } else {
        Cow::Borrowed(status)
    }
}

/// A known resource type in the spec's spelling (`Invoice`, `Basket`) whatever its case; an
/// unknown one as it came.
fn canonical_resource_type(rt: &str) -> Cow<'_, str> {
    match KNOWN_RESOURCE_TYPES
        .iter()
        .find(|k| k.eq_ignore_ascii_case(rt))
    {
        Some(k) if *k != rt => Cow::Owned((*k).to_owned()),
        _ => Cow::Borrowed(rt),
    }
}

/// An ISO 8601 date-time, as the spec describes `expiration_date` and `created_at`: any
/// offset form (`Z`, `+01:00`, `+0100`, `+01`), with or without seconds and fractions, basic
/// or extended. Without an offset the time is taken as UTC; a bare date as its midnight UTC.
pub fn parse_date(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    // The API's own form first: RFC 3339 is the common case and the cheapest parse.
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(t);
    }
    if let Ok(t) = PrimitiveDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(t.assume_offset(UtcOffset::UTC));
    }
    time::Date::parse(s, &Iso8601::DEFAULT)
        .ok()
        .map(|d| d.midnight().assume_offset(UtcOffset::UTC))
}

/// The latest instant an ISO 8601 date-time can stand for: a date written to the minute stands
/// for any instant of that minute, a bare date for any of that day, and one without an offset
/// for any of the zones from UTC−12 to UTC+14. `None` when it does not parse. Used where the
/// exporter must know that something happened *before* an instant, never guess it.
pub fn parse_date_upper_bound(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    let at = parse_date(s)?;
    let Some((_, time)) = s.split_once(['T', 't', ' ']) else {
        return at.checked_add(time::Duration::DAY);
    };
    // The time without its offset (`Z`, `+hh…`, `-hh…`) and fraction, then its digits.
    let (clock, has_offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => (&time[..i], true),
        None => (time, false),
    };
    let whole = clock.split(['.', ',']).next().unwrap_or_default();
    let digits = whole.bytes().filter(u8::is_ascii_digit).count();
    let precision = match digits {
        0..=2 => time::Duration::HOUR,
        3 | 4 => time::Duration::MINUTE,
        _ => time::Duration::SECOND,
    };
    let zone = if has_offset {
        time::Duration::ZERO
    } else {
        // Taken as UTC by `parse_date`; the writer may have meant any zone.
        time::Duration::hours(12)
    };
    at.checked_add(precision)?.checked_add(zone)
}

/// What happened to one link given to [`Aggregator::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Added,
    /// Already counted in this poll (pagination drift).
    Duplicate,
    Invalid(InvalidReason),
}

/// The totals of one status as `(currency, resource_type, totals)` rows.
pub type StatusRows = Vec<(String, String, Totals)>;

/// (status, currency, resource_type) of [`Snapshot::links`].
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct LinkKey {
    pub status: String,
    pub currency: String,
    pub resource_type: String,
}

/// (currency, resource_type) of the open-link figures.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct GroupKey {
    pub currency: String,
    pub resource_type: String,
}

/// The figures of one complete poll. Immutable once built; published whole. Serialisable for
/// the state file (maps as lists of pairs, money as decimal strings, times as Unix nanoseconds).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The instant the figures are relative to (the poll's start).
    #[serde(with = "persist::opt_time")]
    pub now: Option<OffsetDateTime>,
    #[serde(with = "persist::pairs")]
    pub links: BTreeMap<LinkKey, Totals>,
    /// Open links expiring in (now, now + window], per group and window label.
    #[serde(with = "persist::pairs")]
    pub expiring: BTreeMap<(GroupKey, String), Totals>,
    /// Open links whose expiration date is at or before `now`.
    #[serde(with = "persist::pairs")]
    pub open_past_expiration: BTreeMap<GroupKey, u64>,
    /// Earliest expiration after `now` among open links of the group.
    #[serde(with = "persist::time_pairs")]
    pub next_expiration: BTreeMap<GroupKey, OffsetDateTime>,
    /// Links counted (unique ids, valid data).
    pub unique_links: u64,
    /// The windows the expiring figures were computed for, in flag order.
    pub windows: Vec<String>,
    /// Open links by age since `created_at` (now − created_at), per group and age bucket label
    /// ([`AGE_UNKNOWN`] for an open link without a usable `created_at`).
    #[serde(default, with = "persist::pairs")]
    pub aging: BTreeMap<(GroupKey, String), Totals>,
    /// The age buckets' labels, youngest first, then [`AGE_UNKNOWN`].
    #[serde(default)]
    pub age_buckets: Vec<String>,
    /// Earliest `created_at` among the open links of the group.
    #[serde(default, with = "persist::time_pairs")]
    pub oldest_open: BTreeMap<GroupKey, OffsetDateTime>,
}

impl Snapshot {
    /// The totals of one status, as `(currency, resource_type, totals)`; what an incremental
    /// poll carries over for a terminal status whose set did not change.
    pub fn status_rows(&self, status: &str) -> StatusRows {
        self.links
            .iter()
            .filter(|(k, t)| k.status == status && t.count > 0)
            .map(|(k, t)| (k.currency.clone(), k.resource_type.clone(), *t))
            .collect()
    }

    /// Number of links of one status.
    pub fn status_count(&self, status: &str) -> u64 {
        self.links
            .iter()
            .filter(|(k, _)| k.status == status)
            .map(|(_, t)| t.count)
            .sum()
    }
}

/// The ids counted in one poll, for deduplication, in about 9 bytes per link.
///
/// Each id is hashed once with a per-process random key (SipHash) to 64 bits; a collision
/// (probability ~n²/2⁶⁵, 3e-8 for a million links) would drop one link. The hashes live in
/// [`ID_SHARDS`] sorted vectors chosen by their top bits, so the set needs no large
/// contiguous table: a `HashSet<u64>` of a million ids holds 2²¹ buckets (18 MiB) and, while it
/// grows, its old table too (27 MiB at the peak), which alone would break the 32 MiB budget of
/// a million-link poll. Here a shard of a million-link poll holds ~250 hashes (2 KiB), grows by
/// a quarter at a time, and an insert is a binary search plus a memmove of about 1 KiB.
/// Every id is still checked against every other id of the poll: duplicates served while the
/// listing drifts are counted once, exactly as before.
struct IdSet {
    shards: Vec<Vec<u64>>,
    len: usize,
}

/// Number of shards of an [`IdSet`] (a power of two); 96 KiB of vector headers.
const ID_SHARDS: usize = 4096;

impl IdSet {
    fn new() -> Self {
        IdSet {
            shards: (0..ID_SHARDS).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }

    fn shard(hash: u64) -> usize {
        (hash >> (64 - ID_SHARDS.trailing_zeros())) as usize
    }

    /// Prepares for `n` more ids: each shard gets its expected share, so the vectors are
    /// allocated once, at their final size, instead of growing step by step.
    fn reserve(&mut self, n: usize) {
        let share = (self.len + n).div_ceil(ID_SHARDS);
        // A little headroom: shard sizes vary around the mean by about its square root.
        let want = share + share.isqrt() * 2;
        for v in &mut self.shards {
            if v.capacity() < want {
                v.reserve_exact(want - v.len());
            }
        }
    }

    /// True if `hash` was not in the set.
    fn insert(&mut self, hash: u64) -> bool {
        let v = &mut self.shards[Self::shard(hash)];
        match v.binary_search(&hash) {
            Ok(_) => false,
            Err(i) => {
                if v.len() == v.capacity() {
                    // Grow by a quarter, not double: less slack across thousands of shards.
                    v.reserve_exact((v.len() / 4).max(4));
                }
                v.insert(i, hash);
                self.len += 1;
                true
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A bounded list of distinct label values; indices are stable within one poll.
struct Interner {
    values: Vec<Box<str>>,
    limit: usize,
}

impl Interner {
    fn new(limit: usize, seed: &[&str]) -> Self {
        Interner {
            values: seed.iter().map(|s| Box::<str>::from(*s)).collect(),
            limit: limit.max(seed.len()),
        }
    }

    /// The index `value` has, or would get if committed; `None` when it is new and the
    /// ceiling is reached. Nothing is stored: a link rejected for another reason afterwards
    /// must leave no trace (no zero series for a currency no valid link has).
    fn slot(&self, value: &str) -> Option<usize> {
        match self.values.iter().position(|v| &**v == value) {
            Some(i) => Some(i),
            None if self.values.len() >= self.limit => None,
            None => Some(self.values.len()),
        }
    }

    /// Stores `value` at the index [`Interner::slot`] gave, if it is new.
    fn commit(&mut self, value: &str, slot: usize) {
        if slot == self.values.len() {
            self.values.push(value.into());
        }
    }
}

/// Per (currency, resource_type) figures of open links.
#[derive(Clone)]
struct OpenGroup {
    expiring: Vec<Totals>,
    past: u64,
    next: Option<OffsetDateTime>,
    /// One per age bucket, then the unknown one.
    aging: Vec<Totals>,
    oldest: Option<OffsetDateTime>,
}

/// The `age` label of open links whose `created_at` is missing or unusable.
pub const AGE_UNKNOWN: &str = "unknown";

/// `--aging.buckets`' default: ≤7d, 7d–30d, 30d–60d, 60d–90d, >90d.
pub const DEFAULT_AGE_BOUNDS: [(&str, u64); 4] = [
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
    ("60d", 60 * 86_400),
    ("90d", 90 * 86_400),
];

/// The age buckets of the receivables: upper bounds, ascending (`--aging.buckets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeBuckets {
    /// `(spelling, bound)`, strictly ascending.
    bounds: Vec<(String, time::Duration)>,
}

impl Default for AgeBuckets {
    fn default() -> AgeBuckets {
        AgeBuckets::new(
            DEFAULT_AGE_BOUNDS
                .iter()
                .map(|(l, s)| ((*l).to_owned(), std::time::Duration::from_secs(*s)))
                .collect(),
        )
        .unwrap_or(AgeBuckets { bounds: Vec::new() })
    }
}

impl AgeBuckets {
    /// Buckets from strictly ascending, positive bounds; `None` otherwise.
    pub fn new(bounds: Vec<(String, std::time::Duration)>) -> Option<AgeBuckets> {
        let bounds: Vec<(String, time::Duration)> = bounds
            .into_iter()
            .map(|(l, d)| Some((l, time::Duration::try_from(d).ok()?)))
            .collect::<Option<_>>()?;
        let ascending = bounds.windows(2).all(|w| w[0].1 < w[1].1);
        (ascending && bounds.iter().all(|(_, d)| d.is_positive())).then_some(AgeBuckets { bounds })
    }

    /// The `age` labels: `<=7d`, `7d-30d`, …, `>90d` (no bound: one bucket, `all`), then
    /// [`AGE_UNKNOWN`].
    pub fn labels(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.bounds.len() + 2);
        match self.bounds.first() {
            None => out.push("all".to_owned()),
            Some((first, _)) => {
                out.push(format!("<={first}"));
                for w in self.bounds.windows(2) {
                    out.push(format!("{}-{}", w[0].0, w[1].0));
                }
                if let Some((last, _)) = self.bounds.last() {
                    out.push(format!(">{last}"));
                }
            }
        }
        out.push(AGE_UNKNOWN.to_owned());
        out
    }

    /// The bucket of an age (a link created in the future, by a skewed clock, is the youngest).
    fn index(&self, age: time::Duration) -> usize {
        self.bounds
            .iter()
            .position(|(_, bound)| age <= *bound)
            .unwrap_or(self.bounds.len())
    }
}

/// Aggregates the links of one poll.
pub struct Aggregator {
    now: OffsetDateTime,
    windows: Vec<(String, time::Duration)>,
    statuses: Interner,
    currencies: Interner,
    resource_types: Interner,
    totals: BTreeMap<(usize, usize, usize), Totals>,
    open: BTreeMap<(usize, usize), OpenGroup>,
    seen: IdSet,
    id_key: std::collections::hash_map::RandomState,
    carried: u64,
    aging: AgeBuckets,
}

impl Aggregator {
    /// A new poll's aggregator; `now` is the poll's reference instant.
    pub fn new(now: OffsetDateTime, windows: &[Window], limits: Limits) -> Self {
        Aggregator {
            now,
            windows: windows
                .iter()
                .map(|w| {
                    (
                        w.label.clone(),
                        time::Duration::try_from(w.duration).unwrap_or(time::Duration::MAX),
                    )
                })
                .collect(),
            statuses: Interner::new(limits.statuses, &KNOWN_STATUSES),
            currencies: Interner::new(limits.currencies, &[]),
            resource_types: Interner::new(limits.resource_types, &KNOWN_RESOURCE_TYPES),
            totals: BTreeMap::new(),
            open: BTreeMap::new(),
            seen: IdSet::new(),
            id_key: std::collections::hash_map::RandomState::new(),
            carried: 0,
            aging: AgeBuckets::default(),
        }
    }

    /// The receivables' age buckets (`--aging.buckets`; the default ones otherwise).
    pub fn with_aging(mut self, aging: AgeBuckets) -> Self {
        self.aging = aging;
        self
    }

    /// Reserves room for `n` more ids (the poll knows `total_count` after the first page).
    pub fn reserve(&mut self, n: usize) {
        self.seen.reserve(n);
    }

    /// Counts one link: validates it, drops it if its id was already counted, and adds it.
    pub fn add(&mut self, link: &Link<'_>) -> Outcome {
        match read(link) {
            Ok(data) => self.add_read(&data),
            Err(reason) => Outcome::Invalid(reason),
        }
    }

    /// Counts one link already [`read`].
    pub fn add_read(&mut self, link: &LinkData<'_>) -> Outcome {
        match self.try_add(link) {
            Ok(true) => Outcome::Added,
            Ok(false) => Outcome::Duplicate,
            Err(reason) => Outcome::Invalid(reason),
        }
    }

    /// All or nothing: every check that can reject the link runs before anything is stored.
    fn try_add(&mut self, link: &LinkData<'_>) -> Result<bool, InvalidReason> {
        let slots = (
            self.statuses.slot(&link.status),
            self.currencies.slot(&link.currency),
            self.resource_types.slot(&link.resource_type),
        );
        let (Some(s), Some(c), Some(r)) = slots else {
            return Err(InvalidReason::LabelLimit);
        };
        let mut totals = self.totals.get(&(s, c, r)).copied().unwrap_or_default();
        totals.add(link.amount)?;
        // The id is marked seen only once the link is known to be valid: a duplicate of an
        // invalid link is invalid again, never silently dropped.
        if !self.seen.insert(self.id_key.hash_one(link.id)) {
            return Ok(false);
        }
        self.statuses.commit(&link.status, s);
        self.currencies.commit(&link.currency, c);
        self.resource_types.commit(&link.resource_type, r);
        self.totals.insert((s, c, r), totals);
        if link.status == OPEN {
            self.add_open(c, r, link);
        }
        Ok(true)
    }

    fn add_open(&mut self, c: usize, r: usize, link: &LinkData<'_>) {
        let (amount, expiration) = (link.amount, link.expiration);
        let n = self.windows.len();
        let buckets = self.aging.bounds.len() + 2;
        let group = self.open.entry((c, r)).or_insert_with(|| OpenGroup {
            expiring: vec![Totals::default(); n],
            past: 0,
            next: None,
            aging: vec![Totals::default(); buckets],
            oldest: None,
        });
        // Age: the last bucket is the unknown one.
        let bucket = match link.created {
            Some(created) => {
                group.oldest = Some(group.oldest.map_or(created, |o| o.min(created)));
                // Both within ±9999 years: the difference fits a `Duration`; a negative age
                // (a skewed clock) falls in the youngest bucket.
                self.aging.index(self.now - created)
            }
            None => buckets - 1,
        };
        group.aging[bucket].merge(Totals { count: 1, amount });
        let Some(expiration) = expiration else {
            // Counted in its status; its expiry is unknown, so it is in no expiry figure.
            return;
        };
        if expiration <= self.now {
            group.past += 1;
            return;
        }
        let until = expiration - self.now;
        for (i, (_, window)) in self.windows.iter().enumerate() {
            if until <= *window {
                // Saturating: the sum is at most the link totals, which did not overflow.
                group.expiring[i].merge(Totals { count: 1, amount });
            }
        }
        group.next = Some(match group.next {
            Some(t) if t <= expiration => t,
            _ => expiration,
        });
    }

    /// Adds the totals of a terminal status carried over from the previous poll (its set of
    /// links has not changed). Rows over the label ceiling are dropped and returned as a count.
    pub fn carry(&mut self, status: &str, rows: &[(String, String, Totals)]) -> u64 {
        let mut dropped = 0;
        for (currency, resource_type, t) in rows {
            let slots = (
                self.statuses.slot(status),
                self.currencies.slot(currency),
                self.resource_types.slot(resource_type),
            );
            match slots {
                (Some(s), Some(c), Some(r)) => {
                    self.statuses.commit(status, s);
                    self.currencies.commit(currency, c);
                    self.resource_types.commit(resource_type, r);
                    self.totals.entry((s, c, r)).or_default().merge(*t);
                    self.carried += t.count;
                }
                _ => dropped += t.count,
            }
        }
        dropped
    }

    /// Number of links counted so far, carried ones included.
    pub fn count(&self) -> u64 {
        self.seen.len() as u64 + self.carried
    }

    /// The snapshot, with the zero series the contract asks for: every known status and
    /// resource type for every currency seen, and every window for every open group.
    pub fn finish(self) -> Snapshot {
        let age_labels = self.aging.labels();
        let mut snap = Snapshot {
            now: Some(self.now),
            unique_links: self.seen.len() as u64 + self.carried,
            windows: self.windows.iter().map(|(l, _)| l.clone()).collect(),
            age_buckets: age_labels.clone(),
            ..Snapshot::default()
        };
        let currencies: BTreeSet<&str> = self.currencies.values.iter().map(|v| &**v).collect();
        for &currency in &currencies {
            for status in KNOWN_STATUSES {
                for rt in KNOWN_RESOURCE_TYPES {
                    snap.links
                        .insert(link_key(status, currency, rt), Totals::default());
                }
            }
            for rt in KNOWN_RESOURCE_TYPES {
                let g = group_key(currency, rt);
                for (label, _) in &self.windows {
                    snap.expiring
                        .insert((g.clone(), label.clone()), Totals::default());
                }
                for label in &age_labels {
                    snap.aging
                        .insert((g.clone(), label.clone()), Totals::default());
                }
                snap.open_past_expiration.insert(g, 0);
            }
        }
        for ((s, c, r), t) in &self.totals {
            let key = link_key(
                &self.statuses.values[*s],
                &self.currencies.values[*c],
                &self.resource_types.values[*r],
            );
            snap.links.entry(key).or_default().merge(*t);
        }
        for ((c, r), g) in &self.open {
            let key = group_key(&self.currencies.values[*c], &self.resource_types.values[*r]);
            for ((label, _), t) in self.windows.iter().zip(&g.expiring) {
                snap.expiring.insert((key.clone(), label.clone()), *t);
            }
            for (label, t) in age_labels.iter().zip(&g.aging) {
                snap.aging.insert((key.clone(), label.clone()), *t);
            }
            if let Some(oldest) = g.oldest {
                snap.oldest_open.insert(key.clone(), oldest);
            }
            snap.open_past_expiration.insert(key.clone(), g.past);
            if let Some(next) = g.next {
                snap.next_expiration.insert(key, next);
            }
        }
        snap
    }
}

/// Serde forms for the state file: exact decimals as strings, instants as Unix nanoseconds
/// (an instant out of range fails the load, never panics), maps with structured keys as lists.
pub mod persist {
    use std::collections::BTreeMap;

    use ::time::OffsetDateTime;
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub mod decimal {
        use super::*;
        pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&d.to_string())
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
            let text = String::deserialize(d)?;
            crate::aggregate::parse_decimal(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("not a decimal: {text:?}")))
        }
    }

    pub mod instant {
        use super::*;
        pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_i128(t.unix_timestamp_nanos())
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
            let n = i128::deserialize(d)?;
            OffsetDateTime::from_unix_timestamp_nanos(n).map_err(serde::de::Error::custom)
        }
    }

    pub mod opt_time {
        use super::*;
        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            t.map(OffsetDateTime::unix_timestamp_nanos).serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            Option::<i128>::deserialize(d)?
                .map(|n| {
                    OffsetDateTime::from_unix_timestamp_nanos(n).map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }

    pub mod pairs {
        use super::*;
        pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
            m: &BTreeMap<K, V>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.collect_seq(m.iter())
        }
        pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
        where
            K: Deserialize<'de> + Ord,
            V: Deserialize<'de>,
            D: Deserializer<'de>,
        {
            Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
        }
    }

    pub mod time_pairs {
        use super::*;
        pub fn serialize<K: Serialize, S: Serializer>(
            m: &BTreeMap<K, OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.collect_seq(m.iter().map(|(k, t)| (k, t.unix_timestamp_nanos())))
        }
        pub fn deserialize<'de, K, D>(d: D) -> Result<BTreeMap<K, OffsetDateTime>, D::Error>
        where
            K: Deserialize<'de> + Ord,
            D: Deserializer<'de>,
        {
            Vec::<(K, i128)>::deserialize(d)?
                .into_iter()
                .map(|(k, n)| {
                    OffsetDateTime::from_unix_timestamp_nanos(n)
                        .map(|t| (k, t))
                        .map_err(serde::de::Error::custom)
                })
                .collect()
        }
    }
}

fn link_key(status: &str, currency: &str, resource_type: &str) -> LinkKey {
    LinkKey {
        status: status.to_owned(),
        currency: currency.to_owned(),
        resource_type: resource_type.to_owned(),
    }
}

fn group_key(currency: &str, resource_type: &str) -> GroupKey {
    GroupKey {
        currency: currency.to_owned(),
        resource_type: resource_type.to_owned(),
    }
}

/// A status or resource type we are willing to publish as a label value: short, printable.
pub fn is_label_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| !c.is_control())
}

/// Parses a decimal string as the API sends it (`"13.30"`, `"-2"`); no exponent, no spaces.
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let bytes = s.as_bytes();
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let mut dots = 0;
    let mut any_digit = false;
    for b in digits {
        match b {
            b'0'..=b'9' => any_digit = true,
            b'.' => dots += 1,
            _ => return None,
        }
    }
    if !any_digit || dots > 1 || digits.first() == Some(&b'.') || digits.last() == Some(&b'.') {
        return None;
    }
    Decimal::from_str_exact(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 12:00 UTC);

    fn windows() -> Vec<Window> {
        ["1h", "24h", "7d"]
            .iter()
            .map(|l| Window {
                label: l.to_string(),
                duration: humantime::parse_duration(l).unwrap(),
            })
            .collect()
    }

    fn link<'a>(
        id: &'a str,
        status: &'a str,
        value: &'a str,
        currency: &'a str,
        rt: &'a str,
        exp: &'a str,
    ) -> Link<'a> {
        Link {
            id: Cow::Borrowed(id),
            status: Cow::Borrowed(status),
            expiration_date: Some(Cow::Borrowed(exp)),
            created_at: None,
            amount: crate::qonto::model::Amount {
                value: Cow::Borrowed(value),
                currency: Cow::Borrowed(currency),
            },
            resource_type: Cow::Borrowed(rt),
        }
    }

    fn totals(s: &Snapshot, status: &str, cur: &str, rt: &str) -> Totals {
        s.links[&link_key(status, cur, rt)]
    }

    /// Open links by age since created_at, against the buckets' edges: an age exactly on a
    /// bound is in the younger bucket; a link created in the future (a skewed clock) is the
    /// youngest; without a usable created_at, `unknown`; other statuses are in no bucket. Both
    /// the default and custom buckets; the oldest created_at per group.
    #[test]
    fn aging_buckets_by_created_at() {
        let day = 86_400;
        let created = |secs_ago: i64| {
            (NOW - time::Duration::seconds(secs_ago))
                .format(&Rfc3339)
                .unwrap()
        };
        let cases: Vec<(String, &str, &str)> = vec![
            (created(-3600), "open", "<=7d"),
            (created(0), "open", "<=7d"),
            (created(7 * day), "open", "<=7d"),
            (created(7 * day + 1), "open", "7d-30d"),
            (created(30 * day), "open", "7d-30d"),
            (created(45 * day), "open", "30d-60d"),
            (created(90 * day), "open", "60d-90d"),
            (created(90 * day + 1), "open", ">90d"),
            ("2026-08-01T00:00:00+0200".into(), "open", ">90d"),
            ("not a date".into(), "open", "unknown"),
            (created(45 * day), "paid", ""),
            (created(45 * day), "processing", ""),
        ];
        let mut agg = Aggregator::new(NOW, &windows(), Limits::default());
        for (i, (c, status, _)) in cases.iter().enumerate() {
            let id = format!("l{i}");
            let mut l = link(&id, status, "1.5", "EUR", "Invoice", "2026-12-01T00:00:00Z");
            l.created_at = Some(Cow::Borrowed(c));
            agg.add(&l);
        }
        let mut missing = link(
            "none",
            "open",
            "2",
            "EUR",
            "Invoice",
            "2026-12-01T00:00:00Z",
        );
        missing.created_at = None;
        agg.add(&missing);
        let snap = agg.finish();
        let g = group_key("EUR", "Invoice");
        let got = |age: &str| snap.aging[&(g.clone(), age.to_owned())];
        let mut want: BTreeMap<&str, (u64, Decimal)> = BTreeMap::new();
        for (_, status, bucket) in &cases {
            if *status == "open" {
                let e = want.entry(bucket).or_default();
                e.0 += 1;
                e.1 += Decimal::from_str("1.5").unwrap();
            }
        }
        want.entry("unknown").or_default().0 += 1;
        want.entry("unknown").or_default().1 += Decimal::from(2);
        assert_eq!(
            snap.age_buckets,
            ["<=7d", "7d-30d", "30d-60d", "60d-90d", ">90d", "unknown"]
        );
        for age in &snap.age_buckets {
            let (n, a) = want.get(age.as_str()).copied().unwrap_or_default();
            assert_eq!(
                got(age),
                Totals {
                    count: n,
                    amount: a
                },
                "{age}"
            );
        }
        // Every open link is in exactly one bucket.
        let open: u64 = snap.age_buckets.iter().map(|a| got(a).count).sum();
        assert_eq!(open, totals(&snap, "open", "EUR", "Invoice").count);
        // The other resource type has every bucket at 0; the oldest is the +0200 one.
        assert_eq!(
            snap.aging[&(group_key("EUR", "Basket"), ">90d".into())].count,
            0
        );
        assert_eq!(snap.oldest_open[&g], datetime!(2026-07-31 22:00 UTC));
        // Custom buckets, and none at all.
        let custom =
            AgeBuckets::new(vec![("1h".into(), std::time::Duration::from_secs(3600))]).unwrap();
        assert_eq!(custom.labels(), ["<=1h", ">1h", "unknown"]);
        assert_eq!(
            AgeBuckets::new(Vec::new()).unwrap().labels(),
            ["all", "unknown"]
        );
        assert!(
            AgeBuckets::new(vec![
                ("2d".into(), std::time::Duration::from_secs(172_800)),
                ("1d".into(), std::time::Duration::from_secs(86_400))
            ])
            .is_none()
        );
        assert!(AgeBuckets::new(vec![("big".into(), std::time::Duration::MAX)]).is_none());
        let mut agg = Aggregator::new(NOW, &[], Limits::default()).with_aging(custom);
        let c = created(7200);
        let mut l = link("x", "OPEN", "1", "eur", "invoice", "2026-12-01T00:00:00Z");
        l.created_at = Some(Cow::Borrowed(&c));
        agg.add(&l);
        let snap = agg.finish();
        assert_eq!(snap.aging[&(g.clone(), ">1h".into())].count, 1);
        // The state file keeps them, and an older file without them still loads.
        let json = serde_json::to_string(&snap).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        for k in ["aging", "age_buckets", "oldest_open"] {
            old.as_object_mut().unwrap().remove(k);
        }
        let back: Snapshot = serde_json::from_value(old).unwrap();
        assert!(back.aging.is_empty());
    }

    #[test]
    fn sums_are_exact_decimals() {
        let mut agg = Aggregator::new(NOW, &windows(), Limits::default());
        let ids: Vec<String> = (0..10_000).map(|i| format!("id-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let v = if i % 2 == 0 { "0.10" } else { "0.20" };
            assert_eq!(
                agg.add(&link(
                    id,
                    "paid",
                    v,
                    "EUR",
                    "Basket",
                    "2026-01-01T00:00:00Z"
                )),
                Outcome::Added
            );
        }
        let s = agg.finish();
        let t = totals(&s, "paid", "EUR", "Basket");
        assert_eq!(t.count, 10_000);
        assert_eq!(t.amount, Decimal::from_str("1500.00").unwrap());
        // f64 addition would not give exactly 1500: the point of decimals.
        let float: f64 = (0..10_000)
            .map(|i| if i % 2 == 0 { 0.1 } else { 0.2 })
            .sum();
        assert_ne!(float, 1500.0);
    }

    #[test]
    fn every_status_unknown_kept_and_zero_filled() {
        let mut agg = Aggregator::new(NOW, &windows(), Limits::default());
        let exp = "2027-01-01T00:00:00Z";
        for (i, st) in KNOWN_STATUSES.iter().chain(["settling"].iter()).enumerate() {
            let id = format!("{i}");
            agg.add(&link(&id, st, "1.50", "USD", "Invoice", exp));
        }
        agg.add(&link("x", "paid", "2", "GBP", "Gift", exp));
        let s = agg.finish();
        for st in KNOWN_STATUSES {
            assert_eq!(totals(&s, st, "USD", "Invoice").count, 1);
            assert_eq!(totals(&s, st, "USD", "Basket"), Totals::default());
            assert_eq!(totals(&s, st, "GBP", "Basket").count, 0);
        }
        assert_eq!(totals(&s, "settling", "USD", "Invoice").count, 1);
        assert_eq!(totals(&s, "paid", "GBP", "Gift").count, 1);
        // unknown statuses are not zero-filled
        assert!(!s.links.contains_key(&link_key("settling", "GBP", "Basket")));
        assert_eq!(s.unique_links, 7);
    }

    #[test]
    fn window_edges() {
        let mut agg = Aggregator::new(NOW, &windows(), Limits::default());
        let cases = [
            ("a", "2026-11-24T12:00:00Z"),      // == now: past
            ("b", "2026-11-24T12:00:01Z"),      // in 1h
            ("c", "2026-11-24T13:00:00Z"),      // exactly 1h: in 1h
            ("d", "2026-11-24T13:00:01Z"),      // just over 1h: 24h
            ("e", "2026-12-01T12:00:00Z"),      // exactly 7d
            ("f", "2027-06-01T00:00:00Z"),      // beyond every window
            ("g", "2026-11-24T14:00:00+02:00"), // == now, other offset: past
        ];
        for (id, exp) in cases {
            agg.add(&link(id, "open", "10", "EUR", "Invoice", exp));
        }
        agg.add(&link(
            "p",
            "paid",
            "10",
            "EUR",
            "Invoice",
            "2026-11-24T12:30:00Z",
        ));
        let s = agg.finish();
        let g = group_key("EUR", "Invoice");
        let w = |l: &str| s.expiring[&(g.clone(), l.to_string())].count;
        assert_eq!(w("1h"), 2);
        assert_eq!(w("24h"), 3);
        assert_eq!(w("7d"), 4);
        assert_eq!(s.open_past_expiration[&g], 2);
        assert_eq!(s.next_expiration[&g], datetime!(2026-11-24 12:00:01 UTC));
        assert_eq!(
            s.expiring[&(group_key("EUR", "Basket"), "1h".into())].count,
            0
        );
        assert!(!s.next_expiration.contains_key(&group_key("EUR", "Basket")));
    }

    #[test]
    fn empty_organisation() {
        let s = Aggregator::new(NOW, &windows(), Limits::default()).finish();
        assert!(s.links.is_empty());
        assert_eq!(s.unique_links, 0);
    }

    #[test]
    fn invalid_links_are_skipped_with_reason_and_duplicates_dropped() {
        let mut agg = Aggregator::new(NOW, &windows(), Limits::default());
        let e = "2027-01-01T00:00:00Z";
        assert_eq!(
            agg.add(&link("1", "paid", "12,5O", "EUR", "Invoice", e)),
            Outcome::Invalid(InvalidReason::Amount)
        );
        assert_eq!(
            agg.add(&link("2", "paid", "1e3", "EUR", "Invoice", e)),
            Outcome::Invalid(InvalidReason::Amount)
        );
        assert_eq!(
            agg.add(&link("3", "paid", "1", "euro", "Invoice", e)),
            Outcome::Invalid(InvalidReason::Currency)
        );
        // A date is only needed for open links; an open link without a usable one still
        // counts in its status (the poller reports it).
        assert_eq!(
            agg.add(&link("4", "paid", "1", "EUR", "Invoice", "tomorrow")),
            Outcome::Added
        );
        let open = link("4o", "open", "1", "EUR", "Invoice", "tomorrow");
        assert!(read(&open).unwrap().expiration_unusable());
        assert_eq!(agg.add(&open), Outcome::Added);
        assert_eq!(
            agg.add(&link("", "paid", "1", "EUR", "Invoice", e)),
            Outcome::Invalid(InvalidReason::Id)
        );
        assert_eq!(
            agg.add(&link("5", "", "1", "EUR", "Invoice", e)),
            Outcome::Invalid(InvalidReason::Status)
        );
        assert_eq!(
            agg.add(&link("6", "paid", "1", "EUR", "Invoice", e)),
            Outcome::Added
        );
        assert_eq!(
            agg.add(&link("6", "paid", "1", "EUR", "Invoice", e)),
            Outcome::Duplicate
        );
        let s = agg.finish();
        assert_eq!(s.unique_links, 3);
        assert_eq!(
            totals(&s, "paid", "EUR", "Invoice").amount,
            Decimal::from(2)
        );
        assert_eq!(totals(&s, "open", "EUR", "Invoice").count, 1);
        let g = group_key("EUR", "Invoice");
        assert_eq!(s.open_past_expiration[&g], 0);
        assert!(s.expiring.iter().all(|(_, t)| t.count == 0));
        assert!(!s.next_expiration.contains_key(&g));
    }

    #[test]
    fn iso_8601_forms_are_understood() {
        let at = datetime!(2026-11-24 13:00 UTC);
        for form in [
            "2026-11-24T13:00:00Z",
            "2026-11-24T13:00Z",
            "2026-11-24T14:00:00+01:00",
            "2026-11-24T14:00:00+0100",
            "2026-11-24T14:00+01",
            "2026-11-24T13:00:00.000Z",
            "2026-11-24T13:00:00",
            "2026-11-24T13:00",
            "20261124T130000Z",
            " 2026-11-24T13:00:00Z ",
        ] {
            assert_eq!(parse_date(form), Some(at), "{form}");
        }
        assert_eq!(
            parse_date("2026-11-24"),
            Some(datetime!(2026-11-24 00:00 UTC))
        );
        for bad in ["", "tomorrow", "2026-13-01T00:00:00Z", "1893456000"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn upper_bounds_cover_the_precision_and_zone_a_date_leaves_open() {
        let b = |s: &str| parse_date_upper_bound(s).unwrap_or_else(|| panic!("{s}"));
        assert_eq!(
            b("2026-11-24T13:00:00Z"),
            datetime!(2026-11-24 13:00:01 UTC)
        );
        assert_eq!(
            b("2026-11-24T13:00:00.250Z"),
            datetime!(2026-11-24 13:00:01.25 UTC)
        );
        assert_eq!(b("2026-11-24T14:00+01:00"), datetime!(2026-11-24 13:01 UTC));
        assert_eq!(b("20261124T1300Z"), datetime!(2026-11-24 13:01 UTC));
        assert_eq!(b("2026-11-24T13:00:00"), datetime!(2026-11-25 01:00:01 UTC));
        assert_eq!(
            b("2026-11-24T13:00:00-05:00"),
            datetime!(2026-11-24 18:00:01 UTC)
        );
        assert_eq!(b("2026-11-24"), datetime!(2026-11-25 00:00 UTC));
        assert_eq!(parse_date_upper_bound("yesterday"), None);
        assert_eq!(parse_date_upper_bound("+999999-12-31T23:59:59Z"), None);
    }

    #[test]
    fn other_letter_cases_fold_into_the_spec_spelling() {
        let mut agg = Aggregator::new(NOW, &windows(), Limits::default());
        let e = "2026-11-24T12:30:00Z";
        let l = link("1", "OPEN", "1.5", "eur", "invoice", e);
        let d = read(&l).unwrap();
        assert_eq!(
            (&*d.status, &*d.currency, &*d.resource_type),
            ("open", "EUR", "Invoice")
        );
        assert_eq!(
            d.normalized,
            Normalized {
                status: true,
                currency: true,
                resource_type: true
            }
        );
        assert_eq!(agg.add_read(&d), Outcome::Added);
        let same = link("2", "open", "2.5", "EUR", "Invoice", e);
        assert_eq!(read(&same).unwrap().normalized, Normalized::default());
        agg.add(&same);
        agg.add(&link("3", "Paid", "1", "Eur", "BASKET", e));
        agg.add(&link("4", "SETTLING", "1", "EUR", "Gift", e));
        let s = agg.finish();
        let t = totals(&s, "open", "EUR", "Invoice");
        assert_eq!((t.count, t.amount), (2, Decimal::from(4)));
        assert_eq!(totals(&s, "paid", "EUR", "Basket").count, 1);
        assert_eq!(totals(&s, "settling", "EUR", "Gift").count, 1);
        assert_eq!(
            s.expiring[&(group_key("EUR", "Invoice"), "1h".into())].count,
            2
        );
        // No series in another spelling beside the canonical ones.
        assert!(s.links.keys().all(|k| k.currency == "EUR"
            && k.status.bytes().all(|b| !b.is_ascii_uppercase())
            && ["Invoice", "Basket", "Gift"].contains(&&*k.resource_type)));
    }

    #[test]
    fn a_rejected_link_leaves_no_label_value_behind() {
        let limits = Limits {
            statuses: 5,
            currencies: 2,
            resource_types: 2,
        };
        let mut agg = Aggregator::new(NOW, &windows(), limits);
        let e = "2027-01-01T00:00:00Z";
        // New currency, but a resource type over the ceiling: rejected, and the currency
        // must not be interned (no zero series, no ceiling slot used).
        assert_eq!(
            agg.add(&link("1", "paid", "1", "JPY", "Gift", e)),
            Outcome::Invalid(InvalidReason::LabelLimit)
        );
        // New status over the ceiling with a new currency: same.
        assert_eq!(
            agg.add(&link("2", "settling", "1", "KWD", "Invoice", e)),
            Outcome::Invalid(InvalidReason::LabelLimit)
        );
        // An amount overflow with a new currency: same.
        agg.add(&link(
            "3",
            "paid",
            "79228162514264337593543950335",
            "USD",
            "Invoice",
            e,
        ));
        assert_eq!(
            agg.add(&link("4", "paid", "1", "USD", "Invoice", e)),
            Outcome::Invalid(InvalidReason::Amount)
        );
        assert_eq!(
            agg.add(&link("5", "paid", "1", "EUR", "Invoice", e)),
            Outcome::Added
        );
        let s = agg.finish();
        let currencies: BTreeSet<&str> = s.links.keys().map(|k| &*k.currency).collect();
        assert_eq!(currencies, BTreeSet::from(["EUR", "USD"]));
        assert!(
            s.open_past_expiration
                .keys()
                .all(|g| g.currency != "JPY" && g.currency != "KWD")
        );
    }

    #[test]
    fn label_ceiling_holds() {
        let limits = Limits {
            statuses: 6,
            currencies: 2,
            resource_types: 2,
        };
        let mut agg = Aggregator::new(NOW, &windows(), limits);
        let e = "2027-01-01T00:00:00Z";
        assert_eq!(
            agg.add(&link("1", "paid", "1", "AAA", "Invoice", e)),
            Outcome::Added
        );
        assert_eq!(
            agg.add(&link("2", "paid", "1", "BBB", "Invoice", e)),
            Outcome::Added
        );
        assert_eq!(
            agg.add(&link("3", "paid", "1", "CCC", "Invoice", e)),
            Outcome::Invalid(InvalidReason::LabelLimit)
        );
        assert_eq!(
            agg.add(&link("4", "new1", "1", "AAA", "Invoice", e)),
            Outcome::Added
        );
        assert_eq!(
            agg.add(&link("5", "new2", "1", "AAA", "Invoice", e)),
            Outcome::Invalid(InvalidReason::LabelLimit)
        );
        // the id of a rejected link is not marked seen
        assert_eq!(
            agg.add(&link("3", "paid", "1", "AAA", "Invoice", e)),
            Outcome::Added
        );
    }

    #[test]
    fn carried_totals_merge() {
        let mut first = Aggregator::new(NOW, &windows(), Limits::default());
        first.add(&link(
            "1",
            "paid",
            "1.01",
            "EUR",
            "Invoice",
            "2026-01-01T00:00:00Z",
        ));
        first.add(&link(
            "2",
            "paid",
            "2.02",
            "CHF",
            "Basket",
            "2026-01-01T00:00:00Z",
        ));
        let prev = first.finish();
        let mut next = Aggregator::new(NOW, &windows(), Limits::default());
        next.add(&link(
            "3",
            "open",
            "5",
            "EUR",
            "Invoice",
            "2027-01-01T00:00:00Z",
        ));
        assert_eq!(next.carry("paid", &prev.status_rows("paid")), 0);
        let s = next.finish();
        assert_eq!(s.unique_links, 3);
        assert_eq!(
            totals(&s, "paid", "CHF", "Basket").amount,
            Decimal::from_str("2.02").unwrap()
        );
        assert_eq!(s.status_count("paid"), 2);
    }

    #[test]
    fn decimal_parser_is_strict() {
        for ok in ["0", "13.30", "-2", "0.001", "100000000.99"] {
            assert!(parse_decimal(ok).is_some(), "{ok}");
        }
        for bad in [
            "", ".", "1.", ".5", "1e3", " 1", "1,5", "--1", "1.2.3", "NaN", "+1",
        ] {
            assert!(parse_decimal(bad).is_none(), "{bad}");
        }
    }
}
