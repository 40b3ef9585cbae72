//! The incremental planner: what the previous poll left (its [`Memory`]) and what the API's
//! counts say in, the requests to make and the verdicts out. Pure: no I/O and no clock reads
//! (instants are passed in); the poller executes the plan. [`Tally`] is the bookkeeping each
//! page of a poll feeds, and [`next_memory`] what the next poll (or a restart, through the
//! state file) starts from.
//!
//! # Incremental polls, and why their figures equal a full recount
//! The design rests on one assumption, which the spec does not promise (see the next section):
//! links in a terminal status (paid, expired, canceled) never change again and are not
//! deleted, so the set of links of a terminal status only grows. Each poll remembers, per
//! terminal status, the totals of the links of that status it holds and how many links that
//! is (invalid ones included, as the API counts them). Since a held link stays in its status,
//! an API `total_count` equal to the remembered count means the held links are exactly the
//! status's links: their totals are carried over unchanged, however much the listing moved
//! while they were read. If the count grew by `k`, the newcomers are looked for among the links
//! that were live at the last poll and are no longer (see `Poller::find_moved`): when all `k`
//! are found, the old totals plus theirs are exactly the status's; otherwise the status is
//! walked again in full. Open and processing links can change at any time and are walked in
//! full on every poll; expiry figures only concern open links, so they are always exact. A
//! link that moves from open to a terminal status between two requests of one poll is seen
//! twice and counted once (ids are deduplicated across all walks of a poll). Every count is
//! probed before any terminal walk, and the unfiltered `total_count` must equal the sum of the
//! parts, plus the links of statuses the exporter does not know as the last full walk counted
//! them (`UnknownMemory`: invisible to status-filtered walks, their figures are carried and may
//! be up to one `full_resync` interval old while their number holds). A mismatch (links moving,
//! or unknown statuses gaining or losing links) means walking again, and walking everything when
//! it persists. A full walk also runs every `full_resync` as a safety net.
//!
//! # The assumption, and how it is checked
//! If the API breaks the assumption (`reusable` links exist), incremental figures are wrong
//! until the status is walked again: at most one `full_resync` interval. Two checks tell users
//! from their own data whether it holds, each counted in
//! `qonto_exporter_resync_corrections_total{status}` and logged:
//! - at once, by an incremental poll that sees a terminal status's count fall, or find more
//!   links moved into it than its count grew (the status is then walked in full);
//! - by every full resync whose walk, and the previous poll, saw a still listing (a walk that
//!   saw the listing move may have missed links, so it proves nothing; such resyncs are not
//!   checked, and `qonto_exporter_resync_checks_total` tells how many were). Among the links of
//!   a terminal status that the walk finds, those certainly created before the instant the
//!   previous poll's rows were checked against (its start, or for a carried status the start
//!   of the poll that last walked it) and not live at the previous poll must be exactly the
//!   rows it held there (`TerminalMemory::before`). "Certainly before" uses the latest instant
//!   a `created_at` can stand for (a date to the minute stands for the whole minute, one
//!   without an offset for every zone), and a link without a usable `created_at` is never
//!   "before": the same rule on both sides, so coarse dates cause no false correction.
//!
//! A count-preserving change (a paid link reopening while another is paid) is only seen by the
//! full resync; one that moves a count is seen by the next poll.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use crate::aggregate::{
    Aggregator, InvalidReason, KNOWN_STATUSES, LinkData, OPEN, Outcome, Snapshot, StatusRows,
    TERMINAL_STATUSES, Totals, canonical_status, parse_date_upper_bound, read,
};
use crate::flows::{FlowMemory, FlowTally};
use crate::qonto::model::{Link, Page};

/// Statuses walked in full on every incremental poll.
pub(crate) const LIVE_STATUSES: [&str; 2] = [OPEN, "processing"];

/// Hashes link ids the same way across polls and, saved in the state file with the memory,
/// across restarts and upgrades: SipHash-1-3 (the `siphasher` crate, whose output is fixed,
/// unlike std's `DefaultHasher`) keyed by a random 128-bit key chosen once and saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdKey(pub(crate) u64, pub(crate) u64);

impl IdKey {
    pub fn random() -> IdKey {
        IdKey(rand::random(), rand::random())
    }

    pub(crate) fn hash_one(&self, id: &str) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.0, self.1);
        h.write(id.as_bytes());
        h.finish()
    }
}

/// What the previous poll knew of one terminal status.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct TerminalMemory {
    /// API `total_count` of the status, proven or held (see `collect`).
    pub(crate) count: u64,
    /// The totals computed for exactly that set.
    pub(crate) rows: StatusRows,
    /// The totals of those links certainly created before `before_at`, which a later full
    /// walk must find again in this status (see the module docs).
    pub(crate) before: StatusRows,
    /// The start of the poll that last walked this status (carried statuses keep it).
    #[serde(with = "crate::aggregate::persist::instant")]
    pub(crate) before_at: OffsetDateTime,
}

/// What the previous poll knew: the incremental memory the next poll needs, and what the
/// state file keeps across a restart.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Memory {
    /// When the last full walk ended (wall clock: it survives a restart).
    pub(crate) last_full: SystemTime,
    /// The key the id hashes below were made with.
    pub(crate) id_key: IdKey,
    #[serde(with = "terminal_names")]
    pub(crate) terminal: BTreeMap<&'static str, TerminalMemory>,
    /// `(id hash, expiration)` of the open and processing links, sorted by hash.
    pub(crate) live: Vec<(u64, i64)>,
    /// The links of statuses the exporter does not know, as the last full walk found them.
    pub(crate) unknown: UnknownMemory,
    /// The reference time of the poll that built this memory.
    pub(crate) polled_at: i64,
    /// False when that poll published while its listing kept moving: a later check could
    /// then blame the API for a link that poll missed, so none is made.
    pub(crate) settled: bool,
    /// What the flow counters need (see [`crate::flows`]); absent from state files written
    /// before them, whose first poll then counts no flow.
    #[serde(default)]
    pub(crate) flows: Option<FlowMemory>,
    /// True for a memory read back from a state file (never written: absent means read back),
    /// false for one a poll of this process built.
    #[serde(skip_serializing, default = "read_back")]
    pub(crate) restored: bool,
}

fn read_back() -> bool {
    true
}

impl Memory {
    /// Checks a memory read back from a state file (outside input) and repairs what sorting
    /// can: the id lists must be sorted for their binary searches, the last full walk must not
    /// lie in the future (beyond a minute of skew: it would postpone every full resync), and
    /// the poll's reference time must be an instant a date can hold.
    pub(crate) fn validate(&mut self, now: SystemTime) -> Result<(), String> {
        if self.last_full > now + Duration::from_secs(60) {
            return Err("its last full walk lies in the future".into());
        }
        if OffsetDateTime::from_unix_timestamp(self.polled_at).is_err() {
            return Err(format!("its poll time {} is out of range", self.polled_at));
        }
        self.live.sort_unstable();
        self.unknown.ids.sort_unstable();
        if let Some(flows) = &mut self.flows {
            flows.repair();
        }
        Ok(())
    }
}

/// The links of statuses outside the spec's enum (enums are open sets). Status-filtered walks
/// cannot reach them, so only a full walk counts them; incremental polls carry these figures
/// while the API's remainder (its total minus the counts of the known statuses) stays at
/// `count`, and walk everything when it moves. Their figures may therefore be up to one
/// `full_resync` interval old; their number is checked on every poll.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct UnknownMemory {
    /// Links of unknown statuses the API counts (invalid ones included).
    pub(crate) count: u64,
    /// `(status, rows)` of the valid ones.
    pub(crate) rows: Vec<(String, StatusRows)>,
    /// Their id hashes, sorted: links that were not live (not candidates for `find_moved`),
    /// and not newcomers for the resync check either.
    pub(crate) ids: Vec<u64>,
}

/// The terminal statuses' memory keyed by their names, read back as the exporter's own
/// `&'static str` names (a name it does not know fails the load).
pub(crate) mod terminal_names {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::TerminalMemory;
    use crate::aggregate::TERMINAL_STATUSES;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<&'static str, TerminalMemory>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<&'static str, TerminalMemory>, D::Error> {
        BTreeMap::<String, TerminalMemory>::deserialize(d)?
            .into_iter()
            .map(|(name, m)| {
                TERMINAL_STATUSES
                    .iter()
                    .find(|s| **s == name)
                    .map(|s| (*s, m))
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown status {name:?}")))
            })
            .collect()
    }
}

/// What the walks of one poll attempt saw.
pub(crate) struct Walked {
    pub(crate) pages: u64,
    /// Why the listing is known to have moved during the walks, if it did.
    pub(crate) drift: Option<String>,
    /// The API count of each terminal status whose set this poll proved equal to it (carried,
    /// or completed from last poll's live links).
    pub(crate) proven: BTreeMap<&'static str, u64>,
    /// Whether the links of unknown statuses were carried from the last poll.
    pub(crate) unknown_carried: bool,
    /// Whether some terminal status grew and webhook events named all its newcomers, with no
    /// terminal listing read (see [`crate::events`]).
    pub(crate) settled_by_events: bool,
}

/// Two sets of rows of one status added up, sorted like `Snapshot::status_rows`.
pub(crate) fn merge_rows(a: &StatusRows, b: &StatusRows) -> StatusRows {
    let mut by: BTreeMap<(String, String), Totals> = BTreeMap::new();
    for (c, r, t) in a.iter().chain(b) {
        let e = by.entry((c.clone(), r.clone())).or_default();
        e.count += t.count;
        e.amount = e.amount.saturating_add(t.amount);
    }
    by.into_iter().map(|((c, r), t)| (c, r, t)).collect()
}

/// A link that could not be counted as it is (or, for an unusable expiration date, counted
/// without its expiry); `key` identifies the link and reason across polls.
pub(crate) struct Invalid {
    pub(crate) reason: InvalidReason,
    pub(crate) id: Option<String>,
    pub(crate) key: u64,
    /// What was wrong, when the parser said (for the log).
    pub(crate) detail: Option<String>,
}

/// `(status, currency, resource_type) → totals`, for the few groups of one poll.
#[derive(Default)]
pub(crate) struct Groups(pub(crate) Vec<(String, String, String, Totals)>);

impl Groups {
    pub(crate) fn add(
        &mut self,
        status: &str,
        currency: &str,
        resource_type: &str,
        amount: rust_decimal::Decimal,
    ) {
        let one = Totals { count: 1, amount };
        match self
            .0
            .iter_mut()
            .find(|(s, c, r, _)| s == status && c == currency && r == resource_type)
        {
            Some((.., t)) => {
                t.count += 1;
                t.amount = t.amount.saturating_add(amount);
            }
            None => self.0.push((
                status.to_owned(),
                currency.to_owned(),
                resource_type.to_owned(),
                one,
            )),
        }
    }

    /// The rows of one status, sorted like `Snapshot::status_rows`.
    pub(crate) fn rows(&self, status: &str) -> StatusRows {
        let mut rows: StatusRows = self
            .0
            .iter()
            .filter(|(s, ..)| s == status)
            .map(|(_, c, r, t)| (c.clone(), r.clone(), *t))
            .collect();
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        rows
    }
}

/// What a full walk needs of the previous poll to check the terminal assumption.
pub(crate) struct ResyncCheck<'m> {
    /// `(id hash, expiration)` of the links live at the previous poll, sorted.
    pub(crate) live: &'m [(u64, i64)],
    /// Id hashes of the previous poll's links of unknown statuses, sorted.
    pub(crate) others: &'m [u64],
    /// Per terminal status, the instant before which the previous poll's `before` rows were
    /// created (see [`TerminalMemory::before_at`]).
    pub(crate) before_at: BTreeMap<&'static str, OffsetDateTime>,
    /// Terminal links found now that the previous poll held in their status.
    pub(crate) old: Groups,
}

/// Per-poll bookkeeping fed by the page callback.
pub(crate) struct Tally<'m> {
    pub(crate) agg: Aggregator,
    pub(crate) invalid: Vec<Invalid>,
    pub(crate) duplicates: u64,
    /// Distinct ids of the invalid links of each status: they count in the API's
    /// `total_count` of their status, not in the snapshot's totals.
    pub(crate) invalid_by_status: BTreeMap<String, BTreeSet<String>>,
    /// `(id hash, expiration)` of the open and processing links of this poll, invalid ones too.
    pub(crate) live: Vec<(u64, i64)>,
    /// Id hashes of this poll's links of statuses the exporter does not know, invalid ones too.
    pub(crate) others: Vec<u64>,
    /// Duplicates this poll caused itself (a status walked in full after a partial look).
    pub(crate) expected_duplicates: u64,
    /// Links read whose status, currency or resource type was folded into the spec's spelling.
    pub(crate) normalized: [u64; 3],
    /// The poll's start; `None` when no incremental memory is kept.
    pub(crate) now: Option<OffsetDateTime>,
    /// Terminal links certainly created before the poll started, per group.
    pub(crate) before: Groups,
    /// The previous poll's `before_at` of each terminal status, and the links found now that
    /// were certainly created before it (links that moved in since, for carried statuses).
    pub(crate) prev_before_at: BTreeMap<&'static str, OffsetDateTime>,
    pub(crate) before_prev: Groups,
    pub(crate) resync: Option<ResyncCheck<'m>>,
    /// Links created and status transitions (see [`crate::flows`]); off until
    /// [`Tally::with_flows`].
    pub(crate) flows: FlowTally<'m>,
    /// The open and processing links counted, kept whole when webhooks need them (see
    /// [`crate::events`]); `None` otherwise.
    pub(crate) live_links: Option<Vec<Link<'static>>>,
}

impl<'m> Tally<'m> {
    pub(crate) fn new(
        agg: Aggregator,
        now: Option<OffsetDateTime>,
        memory: Option<&'m Memory>,
        check: bool,
    ) -> Self {
        let prev_before_at: BTreeMap<&'static str, OffsetDateTime> = memory
            .map(|m| m.terminal.iter().map(|(s, t)| (*s, t.before_at)).collect())
            .unwrap_or_default();
        let resync = match (memory, check) {
            (Some(m), true) => Some(ResyncCheck {
                live: &m.live,
                others: &m.unknown.ids,
                before_at: prev_before_at.clone(),
                old: Groups::default(),
            }),
            _ => None,
        };
        Tally {
            agg,
            invalid: Vec::new(),
            duplicates: 0,
            invalid_by_status: BTreeMap::new(),
            live: Vec::new(),
            others: Vec::new(),
            expected_duplicates: 0,
            normalized: [0; 3],
            now,
            before: Groups::default(),
            prev_before_at,
            before_prev: Groups::default(),
            resync,
            flows: FlowTally::default(),
            live_links: None,
        }
    }

    /// Counts flows against `memory` (the previous poll's) for a poll started at `now`.
    pub(crate) fn with_flows(mut self, memory: Option<&'m Memory>, now: OffsetDateTime) -> Self {
        self.flows = FlowTally::new(memory, now);
        self
    }

    /// Keeps the open and processing links counted, whole (webhooks overlay events on them).
    pub(crate) fn keeping_live_links(mut self, keep: bool) -> Self {
        self.live_links = keep.then(Vec::new);
        self
    }

    /// The expiration stored in the live memory: the poll's start stands in for a missing or
    /// unusable date (the sorted look-up may then miss the link, and its new status is walked
    /// in full: exact, only dearer).
    pub(crate) fn live_expiration(&self, expiration: Option<OffsetDateTime>) -> i64 {
        expiration
            .or(self.now)
            .map_or(0, OffsetDateTime::unix_timestamp)
    }

    /// Remembers a link that is not in a terminal status: as live (open, processing), to
    /// recognise it next poll once it has moved on, or among the links of unknown statuses.
    pub(crate) fn remember(
        &mut self,
        status: &str,
        id: &str,
        expiration: Option<OffsetDateTime>,
        id_key: &IdKey,
    ) {
        if TERMINAL_STATUSES.contains(&status) || id.is_empty() {
            return;
        }
        let hash = id_key.hash_one(id);
        if LIVE_STATUSES.contains(&status) {
            let exp = self.live_expiration(expiration);
            self.live.push((hash, exp));
            if status == "processing" {
                self.flows.processing(hash);
            }
        } else {
            self.others.push(hash);
        }
    }

    /// Counts one link served by the API.
    pub(crate) fn link(&mut self, link: &Link<'_>, id_key: &IdKey) {
        let data = match read(link) {
            Ok(d) => d,
            Err(reason) => {
                let status = canonical_status(&link.status).into_owned();
                let id = (!link.id.is_empty()).then(|| link.id.to_string());
                let key = match &id {
                    Some(id) => report_key(reason, id),
                    // No id: the link's own fields tell it apart from the other bad links.
                    None => report_key(
                        reason,
                        &format!(
                            "{}|{}|{}|{}|{:?}",
                            link.status,
                            link.amount.value,
                            link.amount.currency,
                            link.resource_type,
                            link.expiration_date
                        ),
                    ),
                };
                self.remember(&status, &link.id, None, id_key);
                self.skip(reason, id, key, Some(status));
                return;
            }
        };
        for (n, (_, normalized)) in self.normalized.iter_mut().zip(data.normalized.fields()) {
            *n += u64::from(normalized);
        }
        match self.agg.add_read(&data) {
            Outcome::Added => {
                self.flows
                    .observe(id_key.hash_one(data.id), &data, link.created_at.as_deref());
                if data.expiration_unusable() {
                    // Counted in its status, in no expiry figure: reported, not skipped.
                    let reason = InvalidReason::ExpirationDate;
                    self.invalid.push(Invalid {
                        reason,
                        id: Some(data.id.to_owned()),
                        key: report_key(reason, data.id),
                        detail: None,
                    });
                }
                if !TERMINAL_STATUSES.contains(&&*data.status) {
                    if let Some(kept) = &mut self.live_links {
                        if LIVE_STATUSES.contains(&&*data.status) {
                            kept.push(owned(link));
                        }
                    }
                    self.remember(&data.status, data.id, data.expiration, id_key);
                } else if let Some(now) = self.now {
                    self.terminal(link, &data, now, id_key);
                }
            }
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Invalid(reason) => {
                self.remember(&data.status, data.id, data.expiration, id_key);
                let key = report_key(reason, data.id);
                self.skip(
                    reason,
                    Some(data.id.to_owned()),
                    key,
                    Some(data.status.into_owned()),
                );
            }
        }
    }

    /// The bookkeeping of a counted terminal link for the incremental memory and the resync
    /// check. "Created before T" means certainly before: the latest instant its `created_at`
    /// can stand for is at or before T; a link without a usable `created_at` is never before
    /// anything, the same way every poll.
    pub(crate) fn terminal(
        &mut self,
        link: &Link<'_>,
        data: &LinkData<'_>,
        now: OffsetDateTime,
        id_key: &IdKey,
    ) {
        let Some(created) = link.created_at.as_deref().and_then(parse_date_upper_bound) else {
            return;
        };
        let (s, c, r) = (&*data.status, &*data.currency, &*data.resource_type);
        if created <= now {
            self.before.add(s, c, r, data.amount);
        }
        if self.prev_before_at.get(s).is_some_and(|at| created <= *at) {
            self.before_prev.add(s, c, r, data.amount);
        }
        if let Some(check) = &mut self.resync {
            if check.before_at.get(s).is_some_and(|at| created <= *at) {
                let hash = id_key.hash_one(data.id);
                let was_live = check.live.binary_search_by_key(&hash, |(h, _)| *h).is_ok()
                    || check.others.binary_search(&hash).is_ok();
                if !was_live {
                    check.old.add(s, c, r, data.amount);
                }
            }
        }
    }

    /// A link left out of the figures: reported, and remembered as part of its status's
    /// `total_count` (so that status's remembered count still matches the API's).
    pub(crate) fn skip(
        &mut self,
        reason: InvalidReason,
        id: Option<String>,
        key: u64,
        status: Option<String>,
    ) {
        if let Some(status) = status {
            self.invalid_by_status
                .entry(status)
                .or_default()
                .insert(id.clone().unwrap_or_else(|| format!("#{key:016x}")));
        }
        self.invalid.push(Invalid {
            reason,
            id,
            key,
            detail: None,
        });
    }

    pub(crate) fn page(&mut self, page: &Page<'_>, id_key: &IdKey) {
        self.page_of(page, id_key, None);
    }

    /// A page of a listing filtered by `status` when given: a link of the wrong shape without
    /// a readable status of its own belongs to it.
    pub(crate) fn page_of(&mut self, page: &Page<'_>, id_key: &IdKey, status: Option<&str>) {
        for link in &page.links {
            self.link(link, id_key);
        }
        for m in &page.malformed {
            let reason = InvalidReason::Malformed;
            let key = match &m.id {
                Some(id) => report_key(reason, id),
                None => report_key(reason, &format!("#{:016x}", m.fingerprint)),
            };
            let status = m
                .status
                .as_deref()
                .map(|s| canonical_status(s).into_owned())
                .or_else(|| status.map(str::to_owned));
            if let (Some(id), Some(st)) = (&m.id, &status) {
                self.remember(st, id, None, id_key);
            }
            self.skip(reason, m.id.clone(), key, status);
            if let Some(last) = self.invalid.last_mut() {
                last.detail = Some(truncate(&m.error, 200).to_owned());
            }
        }
    }
}

/// A link that outlives its page.
pub(crate) fn owned(link: &Link<'_>) -> Link<'static> {
    use std::borrow::Cow::Owned;
    Link {
        id: Owned(link.id.to_string()),
        status: Owned(link.status.to_string()),
        expiration_date: link.expiration_date.as_ref().map(|d| Owned(d.to_string())),
        created_at: link.created_at.as_ref().map(|d| Owned(d.to_string())),
        amount: crate::qonto::model::Amount {
            value: Owned(link.amount.value.to_string()),
            currency: Owned(link.amount.currency.to_string()),
        },
        resource_type: Owned(link.resource_type.to_string()),
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), for logs of outside data.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Identifies one invalid link and reason across polls (a fixed-key hash).
pub(crate) fn report_key(reason: InvalidReason, id: &str) -> u64 {
    use std::hash::{BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one((reason.as_str(), id))
}

/// Whether this poll walks every link: always without a memory, when incremental polls are off
/// (`full_resync` zero), and once `full_resync` has passed since the last full walk.
pub(crate) fn full_due(memory: Option<&Memory>, now: SystemTime, full_resync: Duration) -> bool {
    full_resync.is_zero()
        || memory.is_none_or(|m| {
            now.duration_since(m.last_full).unwrap_or(Duration::ZERO) >= full_resync
        })
}

/// Whether the API's counts let an incremental poll go on: the parts (live walk and terminal
/// counts) plus the remembered links of unknown statuses must make the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counts {
    /// They add up; `carry_unknown` when links of unknown statuses are carried.
    AddUp { carry_unknown: bool },
    /// They do not: walk again (and everything if it persists).
    Mismatch,
}

pub(crate) fn check_counts(memory: &Memory, parts: u64, total: u64) -> Counts {
    match total.checked_sub(parts) {
        Some(0) => Counts::AddUp {
            carry_unknown: false,
        },
        Some(r) if r == memory.unknown.count => Counts::AddUp {
            carry_unknown: true,
        },
        _ => Counts::Mismatch,
    }
}

/// What to do with one terminal status whose API count is `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusPlan {
    /// The count is the remembered one: carry the remembered totals.
    Carry,
    /// It grew by `want`: look for the newcomers among last poll's live links.
    FindMoved { want: u64 },
    /// Walk it in full; `correction` says why the assumption is broken, when it is.
    Walk { correction: Option<&'static str> },
}

pub(crate) fn plan_status(memory: Option<&TerminalMemory>, n: u64, candidates: bool) -> StatusPlan {
    match memory {
        Some(m) if m.count == n => StatusPlan::Carry,
        Some(m) if n > m.count && candidates => StatusPlan::FindMoved { want: n - m.count },
        Some(m) if n < m.count => StatusPlan::Walk {
            correction: Some("its count fell"),
        },
        _ => StatusPlan::Walk { correction: None },
    }
}

/// After looking for `want` newcomers and finding `found`: whether the status is complete
/// (carried totals plus the found ones), and why the assumption is broken, if it is.
pub(crate) fn after_find(want: u64, found: u64) -> (bool, Option<&'static str>) {
    let correction = (found > want).then_some("more links moved in than its count grew");
    (found == want, correction)
}

/// The terminal statuses whose links held by the previous poll a full walk finds changed:
/// `(status, held rows, found rows)`.
pub(crate) fn resync_differences(
    memory: &Memory,
    found: &Groups,
) -> Vec<(&'static str, StatusRows, StatusRows)> {
    TERMINAL_STATUSES
        .iter()
        .filter_map(|status| {
            let held = memory
                .terminal
                .get(status)
                .map(|m| m.before.clone())
                .unwrap_or_default();
            let now = found.rows(status);
            (held != now).then_some((*status, held, now))
        })
        .collect()
}

/// What the next poll starts from, built from this poll's tally and snapshot. `proven` and
/// `unknown_carried` are what the walks proved (see [`Walked`]); `now` is the poll's start and
/// `wall_now` the instant it ends.
#[allow(clippy::too_many_arguments)]
pub(crate) fn next_memory(
    prev: Option<&Memory>,
    t: &mut Tally<'_>,
    snapshot: &Snapshot,
    proven: &BTreeMap<&'static str, u64>,
    unknown_carried: bool,
    full: bool,
    now: OffsetDateTime,
    wall_now: SystemTime,
    settled: bool,
    id_key: IdKey,
) -> Memory {
    // The count remembered for a terminal status is the number of distinct links of that
    // status this poll holds (valid ones in the snapshot, invalid ones by id), or the API's own
    // count where the set was proven equal to it (carried or completed). Rows are links of
    // that status, which they never leave: when the API's count equals the remembered one next
    // poll, the rows are exactly the status's links, however much the listing moved.
    let mut live = std::mem::take(&mut t.live);
    live.sort_unstable();
    live.shrink_to_fit();
    let unknown = if unknown_carried {
        prev.map(|m| m.unknown.clone()).unwrap_or_default()
    } else if full {
        let mut ids = std::mem::take(&mut t.others);
        ids.sort_unstable();
        ids.dedup();
        let unknown_statuses: BTreeSet<&str> = snapshot
            .links
            .keys()
            .map(|k| k.status.as_str())
            .chain(t.invalid_by_status.keys().map(String::as_str))
            .filter(|s| !KNOWN_STATUSES.contains(s))
            .collect();
        UnknownMemory {
            count: unknown_statuses
                .iter()
                .map(|s| {
                    snapshot.status_count(s)
                        + t.invalid_by_status.get(*s).map_or(0, |i| i.len() as u64)
                })
                .sum(),
            rows: unknown_statuses
                .iter()
                .map(|s| ((*s).to_owned(), snapshot.status_rows(s)))
                .collect(),
            ids,
        }
    } else {
        UnknownMemory::default()
    };
    let terminal = TERMINAL_STATUSES
        .iter()
        .map(|s| {
            let held = snapshot.status_count(s)
                + t.invalid_by_status
                    .get(*s)
                    .map_or(0, |ids| ids.len() as u64);
            let rows = snapshot.status_rows(s);
            let memory = match (proven.get(s), prev.and_then(|m| m.terminal.get(s))) {
                // Carried, or completed from last poll's live links: the set is last poll's
                // plus the links found, checked against last poll's instant (a link created
                // since is not "before" it).
                (Some(n), Some(p)) => TerminalMemory {
                    count: *n,
                    rows,
                    before: merge_rows(&p.before, &t.before_prev.rows(s)),
                    before_at: p.before_at,
                },
                _ => TerminalMemory {
                    count: held,
                    rows,
                    before: t.before.rows(s),
                    before_at: now,
                },
            };
            (*s, memory)
        })
        .collect();
    Memory {
        last_full: match (prev, full) {
            (Some(m), false) => m.last_full,
            _ => wall_now,
        },
        id_key,
        terminal,
        live,
        unknown,
        polled_at: now.unix_timestamp(),
        settled,
        flows: t.flows.memory(prev),
        restored: false,
    }
}

/// Links the API counts that the figures leave out: the invalid ones this poll held, by the
/// remembered counts of terminal statuses and by id for the others.
pub(crate) fn excluded_links(
    memory: &Memory,
    t: &Tally<'_>,
    snapshot: &Snapshot,
    unknown_carried: bool,
) -> u64 {
    memory
        .terminal
        .iter()
        .map(|(s, m)| m.count.saturating_sub(snapshot.status_count(s)))
        .chain(
            t.invalid_by_status
                .iter()
                .filter(|(s, _)| !TERMINAL_STATUSES.contains(&s.as_str()))
                .map(|(_, ids)| ids.len() as u64),
        )
        .chain(unknown_carried.then(|| {
            let valid: u64 = memory
                .unknown
                .rows
                .iter()
                .flat_map(|(_, rows)| rows.iter().map(|(.., t)| t.count))
                .sum();
            memory.unknown.count.saturating_sub(valid)
        }))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Limits;
    use crate::qonto::model::Amount;
    use std::borrow::Cow;
    use time::macros::datetime;

    fn link<'a>(
        id: &'a str,
        status: &'a str,
        value: &'a str,
        created: Option<&'a str>,
    ) -> Link<'a> {
        Link {
            id: Cow::Borrowed(id),
            status: Cow::Borrowed(status),
            expiration_date: Some(Cow::Borrowed("2030-01-01T00:00:00Z")),
            created_at: created.map(Cow::Borrowed),
            amount: Amount {
                value: Cow::Borrowed(value),
                currency: Cow::Borrowed("EUR"),
            },
            resource_type: Cow::Borrowed("Invoice"),
        }
    }

    fn agg(now: OffsetDateTime) -> Aggregator {
        Aggregator::new(now, &[], Limits::default())
    }

    fn count_of(rows: &StatusRows) -> u64 {
        rows.iter().map(|(.., t)| t.count).sum()
    }

    #[test]
    fn before_means_certainly_before_the_instant() {
        let now = datetime!(2026-11-24 12:00:30.6 UTC);
        let key = IdKey::random();
        let mut t = Tally::new(agg(now), Some(now), None, false);
        // Same second as the poll's start: it may have been created after it.
        t.link(&link("a", "paid", "1", Some("2026-11-24T12:00:30Z")), &key);
        // The second before: certainly before.
        t.link(&link("b", "paid", "2", Some("2026-11-24T12:00:29Z")), &key);
        // Written to the minute, the minute of the start: maybe after.
        t.link(&link("c", "paid", "4", Some("2026-11-24T12:00Z")), &key);
        // No offset: any zone, so up to 12 h later than read as UTC.
        t.link(&link("d", "paid", "8", Some("2026-11-24T06:00:00")), &key);
        t.link(&link("e", "paid", "16", Some("2026-11-23T23:00:00")), &key);
        // No usable date: never before anything.
        t.link(&link("f", "paid", "32", None), &key);
        t.link(&link("g", "paid", "64", Some("yesterday")), &key);
        let rows = t.before.rows("paid");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].2.count, 2);
        assert_eq!(rows[0].2.amount, rust_decimal::Decimal::from(18));
    }

    fn memory(live: Vec<(u64, i64)>, before_at: OffsetDateTime) -> Memory {
        Memory {
            last_full: SystemTime::now(),
            id_key: IdKey(7, 8),
            terminal: TERMINAL_STATUSES
                .iter()
                .map(|s| {
                    (
                        *s,
                        TerminalMemory {
                            count: 0,
                            rows: Vec::new(),
                            before: Vec::new(),
                            before_at,
                        },
                    )
                })
                .collect(),
            live,
            unknown: UnknownMemory::default(),
            polled_at: before_at.unix_timestamp(),
            settled: true,
            flows: None,
            restored: false,
        }
    }

    #[test]
    fn a_resync_counts_as_old_only_links_held_in_their_status_at_the_previous_poll() {
        let key = IdKey::random();
        let prev_at = datetime!(2026-11-24 12:00 UTC);
        let now = datetime!(2026-11-24 13:00 UTC);
        let mut live = vec![(key.hash_one("moved"), 0)];
        live.sort_unstable();
        let m = memory(live, prev_at);
        let mut t = Tally::new(agg(now), Some(now), Some(&m), true);
        // Held last poll: created before it and not live then.
        t.link(
            &link("held", "paid", "1", Some("2026-11-24T11:00:00Z")),
            &key,
        );
        // Live last poll, paid since: a newcomer, not held.
        t.link(
            &link("moved", "paid", "2", Some("2026-11-24T11:00:00Z")),
            &key,
        );
        // Created after last poll started: a newcomer.
        t.link(
            &link("new", "paid", "4", Some("2026-11-24T12:30:00Z")),
            &key,
        );
        // Open links are not terminal.
        t.link(
            &link("open", "open", "8", Some("2026-11-24T11:00:00Z")),
            &key,
        );
        let check = t.resync.as_ref().unwrap();
        let old = check.old.rows("paid");
        assert_eq!(count_of(&old), 1, "{old:?}");
        assert_eq!(old[0].2.amount, rust_decimal::Decimal::ONE);
        // The links remembered as live for the next poll include the open one only.
        assert_eq!(t.live.len(), 1);
        assert_eq!(t.live[0].0, key.hash_one("open"));
        assert_eq!(count_of(&t.before.rows("paid")), 3);
    }

    #[test]
    fn invalid_and_unknown_status_links_are_remembered() {
        let key = IdKey::random();
        let now = datetime!(2026-11-24 13:00 UTC);
        let mut t = Tally::new(agg(now), Some(now), None, false);
        t.link(&link("bad", "open", "1,5", None), &key);
        t.link(&link("new-status", "pending", "1", None), &key);
        t.link(&link("bad-new-status", "PENDING", "x", None), &key);
        t.link(&link("paid-bad", "paid", "x", None), &key);
        let live: Vec<u64> = t.live.iter().map(|(h, _)| *h).collect();
        assert_eq!(live, vec![key.hash_one("bad")]);
        let mut others = t.others.clone();
        others.sort_unstable();
        let mut want = vec![key.hash_one("new-status"), key.hash_one("bad-new-status")];
        want.sort_unstable();
        assert_eq!(others, want);
        assert_eq!(t.invalid_by_status["paid"].len(), 1);
        assert_eq!(t.invalid_by_status["open"].len(), 1);
    }

    #[test]
    fn merged_rows_add_up_per_group() {
        let t = |n: u64, a: i64| Totals {
            count: n,
            amount: rust_decimal::Decimal::from(a),
        };
        let a = vec![("EUR".into(), "Invoice".into(), t(1, 10))];
        let b = vec![
            ("EUR".into(), "Basket".into(), t(2, 3)),
            ("EUR".into(), "Invoice".into(), t(1, 5)),
        ];
        assert_eq!(
            merge_rows(&a, &b),
            vec![
                ("EUR".to_owned(), "Basket".to_owned(), t(2, 3)),
                ("EUR".to_owned(), "Invoice".to_owned(), t(2, 15)),
            ]
        );
    }

    #[test]
    fn the_plan_of_a_terminal_status_follows_its_count() {
        let m = |count| TerminalMemory {
            count,
            rows: Vec::new(),
            before: Vec::new(),
            before_at: datetime!(2026-11-24 12:00 UTC),
        };
        assert_eq!(plan_status(Some(&m(10)), 10, true), StatusPlan::Carry);
        assert_eq!(
            plan_status(Some(&m(10)), 13, true),
            StatusPlan::FindMoved { want: 3 }
        );
        // No live link vanished since: the newcomers were created terminal; walk.
        assert_eq!(
            plan_status(Some(&m(10)), 13, false),
            StatusPlan::Walk { correction: None }
        );
        assert_eq!(
            plan_status(Some(&m(10)), 9, true),
            StatusPlan::Walk {
                correction: Some("its count fell")
            }
        );
        assert_eq!(
            plan_status(None, 9, true),
            StatusPlan::Walk { correction: None }
        );
        assert_eq!(after_find(3, 3), (true, None));
        assert_eq!(after_find(3, 2), (false, None));
        assert_eq!(
            after_find(3, 4),
            (false, Some("more links moved in than its count grew"))
        );
    }

    #[test]
    fn counts_add_up_with_the_remembered_unknown_statuses_only() {
        let mut m = memory(Vec::new(), datetime!(2026-11-24 12:00 UTC));
        assert_eq!(
            check_counts(&m, 100, 100),
            Counts::AddUp {
                carry_unknown: false
            }
        );
        assert_eq!(check_counts(&m, 100, 107), Counts::Mismatch);
        assert_eq!(check_counts(&m, 100, 99), Counts::Mismatch);
        m.unknown.count = 7;
        assert_eq!(
            check_counts(&m, 100, 107),
            Counts::AddUp {
                carry_unknown: true
            }
        );
        assert_eq!(check_counts(&m, 100, 108), Counts::Mismatch);
    }

    #[test]
    fn a_full_walk_is_due_without_memory_when_off_and_after_the_interval() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut m = memory(Vec::new(), datetime!(2026-11-24 12:00 UTC));
        m.last_full = t0;
        let hour = Duration::from_secs(3600);
        assert!(full_due(None, t0, hour));
        assert!(full_due(Some(&m), t0, Duration::ZERO));
        assert!(!full_due(Some(&m), t0 + hour / 2, hour));
        assert!(full_due(Some(&m), t0 + hour, hour));
        // A clock that went back is not a reason to walk.
        assert!(!full_due(Some(&m), t0 - hour, hour));
    }

    #[test]
    fn the_next_memory_carries_proven_statuses_against_their_walks_instant() {
        let key = IdKey::random();
        let p0 = datetime!(2026-11-24 11:00 UTC);
        let p1 = datetime!(2026-11-24 12:00 UTC);
        let mut prev = memory(Vec::new(), p0);
        let held = vec![(
            "EUR".to_owned(),
            "Invoice".to_owned(),
            Totals {
                count: 2,
                amount: rust_decimal::Decimal::from(3),
            },
        )];
        if let Some(paid) = prev.terminal.get_mut("paid") {
            paid.count = 2;
            paid.before = held.clone();
        }
        let mut t = Tally::new(agg(p1), Some(p1), Some(&prev), false);
        // A link found moved into paid, created between the two polls: not "before" p0.
        t.link(&link("m", "paid", "4", Some("2026-11-24T11:30:00Z")), &key);
        let snapshot = std::mem::replace(&mut t.agg, agg(p1)).finish();
        let proven = BTreeMap::from([("paid", 3)]);
        let next = next_memory(
            Some(&prev),
            &mut t,
            &snapshot,
            &proven,
            false,
            false,
            p1,
            SystemTime::now(),
            true,
            key,
        );
        let paid = &next.terminal["paid"];
        assert_eq!(paid.count, 3);
        assert_eq!(
            paid.before_at, p0,
            "a carried status keeps its walk's instant"
        );
        assert_eq!(paid.before, held, "the newcomer is not before it");
        // A status walked this poll is checked against this poll's start.
        assert_eq!(next.terminal["expired"].before_at, p1);
    }
}
