//! The loop: poll → aggregate → publish. Owns timing, health counters and the incremental
//! memory between polls.
//!
//! Polls never overlap: the loop awaits each poll before scheduling the next, and a poll that
//! outlasts the interval delays the next one instead of stacking up. Each complete poll builds
//! one immutable [`Published`] value that replaces the previous one in a single atomic swap, so
//! a scrape sees one whole poll or the next, never a mix. A failed poll publishes nothing: the
//! last good figures stay served and `qonto_up` drops to 0.
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::aggregate::{
    Aggregator, InvalidReason, KNOWN_STATUSES, Limits, LinkData, OPEN, Outcome, Snapshot,
    StatusRows, TERMINAL_STATUSES, Totals, Window, canonical_status, parse_date,
    parse_date_upper_bound, read,
};
use crate::metrics::{SelfMetrics, render_snapshot};
use crate::qonto::client::{ApiError, QontoClient};
use crate::qonto::model::{Link, Page};
use crate::qonto::walk::{WalkSummary, count, walk, walk_until};
use crate::shutdown::stopped;
use crate::state::{SavedPoll, Storage};

/// Statuses walked in full on every incremental poll.
const LIVE_STATUSES: [&str; 2] = [OPEN, "processing"];
/// Invalid links newly found in one poll that are logged one by one; the rest in a summary.
const LOGGED_PER_POLL: usize = 20;

/// How the poller behaves.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub interval: Duration,
    pub windows: Vec<Window>,
    pub limits: Limits,
    pub concurrency: usize,
    /// A full walk at least this often; zero disables incremental polls.
    pub full_resync: Duration,
    /// Overall deadline of one poll.
    pub timeout: Duration,
    /// Walks repeated when the listing moved during a walk.
    pub max_rewalks: u32,
}

/// One complete poll, as served.
#[derive(Debug)]
pub struct Published {
    pub snapshot: Snapshot,
    /// The business gauges, rendered once.
    pub rendered: Bytes,
    pub finished_at: SystemTime,
    pub duration: Duration,
    pub pages: u64,
    pub requests: u64,
    pub full: bool,
    /// Restored from the state file at start, not polled by this process.
    pub restored: bool,
}

/// The outcome of the latest poll, successful or not.
#[derive(Debug, Clone, Default)]
pub struct PollStatus {
    pub polls: u64,
    pub last_finished_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub in_progress_since: Option<SystemTime>,
}

/// What the poller shares with the server: written by the poller only.
#[derive(Debug, Default)]
pub struct Shared {
    pub published: ArcSwapOption<Published>,
    pub status: ArcSwap<PollStatus>,
}

/// Why a poll did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("poll did not finish within {0:?}")]
    Timeout(Duration),
}

impl PollError {
    fn is_credentials(&self) -> bool {
        matches!(self, PollError::Api(e) if e.is_credentials())
    }
}

/// Hashes link ids the same way across polls and, saved in the state file with the memory,
/// across restarts of the same build: a random salt fed, with the id, to std's SipHash (whose
/// algorithm may change between Rust releases, which is why a state file from another build is
/// ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdKey(u64);

impl IdKey {
    pub fn random() -> IdKey {
        IdKey(rand::random())
    }

    fn hash_one(&self, id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.0.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    }
}

/// What the previous poll knew of one terminal status.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TerminalMemory {
    /// API `total_count` of the status, proven or held (see `collect`).
    count: u64,
    /// The totals computed for exactly that set.
    rows: StatusRows,
    /// The totals of those links certainly created before `before_at`, which a later full
    /// walk must find again in this status (see the module docs).
    before: StatusRows,
    /// The start of the poll that last walked this status (carried statuses keep it).
    #[serde(with = "crate::aggregate::persist::instant")]
    before_at: OffsetDateTime,
}

/// What the previous poll knew: the incremental memory the next poll needs, and what the
/// state file keeps across a restart.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    /// When the last full walk ended (wall clock: it survives a restart).
    last_full: SystemTime,
    /// The key the id hashes below were made with.
    id_key: IdKey,
    #[serde(with = "terminal_names")]
    terminal: BTreeMap<&'static str, TerminalMemory>,
    /// `(id hash, expiration)` of the open and processing links, sorted by hash.
    live: Vec<(u64, i64)>,
    /// The links of statuses the exporter does not know, as the last full walk found them.
    unknown: UnknownMemory,
    /// The reference time of the poll that built this memory.
    polled_at: i64,
    /// False when that poll published while its listing kept moving: a later check could
    /// then blame the API for a link that poll missed, so none is made.
    settled: bool,
}

/// The links of statuses outside the spec's enum (enums are open sets). Status-filtered walks
/// cannot reach them, so only a full walk counts them; incremental polls carry these figures
/// while the API's remainder (its total minus the counts of the known statuses) stays at
/// `count`, and walk everything when it moves. Their figures may therefore be up to one
/// `full_resync` interval old; their number is checked on every poll.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct UnknownMemory {
    /// Links of unknown statuses the API counts (invalid ones included).
    count: u64,
    /// `(status, rows)` of the valid ones.
    rows: Vec<(String, StatusRows)>,
    /// Their id hashes, sorted: links that were not live (not candidates for `find_moved`),
    /// and not newcomers for the resync check either.
    ids: Vec<u64>,
}

/// The terminal statuses' memory keyed by their names, read back as the exporter's own
/// `&'static str` names (a name it does not know fails the load).
mod terminal_names {
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
struct Walked {
    pages: u64,
    /// Why the listing is known to have moved during the walks, if it did.
    drift: Option<String>,
    /// The API count of each terminal status whose set this poll proved equal to it (carried,
    /// or completed from last poll's live links).
    proven: BTreeMap<&'static str, u64>,
    /// Whether the links of unknown statuses were carried from the last poll.
    unknown_carried: bool,
}

/// Two sets of rows of one status added up, sorted like `Snapshot::status_rows`.
fn merge_rows(a: &StatusRows, b: &StatusRows) -> StatusRows {
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
struct Invalid {
    reason: InvalidReason,
    id: Option<String>,
    key: u64,
    /// What was wrong, when the parser said (for the log).
    detail: Option<String>,
}

/// `(status, currency, resource_type) → totals`, for the few groups of one poll.
#[derive(Default)]
struct Groups(Vec<(String, String, String, Totals)>);

impl Groups {
    fn add(
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
    fn rows(&self, status: &str) -> StatusRows {
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
struct ResyncCheck<'m> {
    /// `(id hash, expiration)` of the links live at the previous poll, sorted.
    live: &'m [(u64, i64)],
    /// Id hashes of the previous poll's links of unknown statuses, sorted.
    others: &'m [u64],
    /// Per terminal status, the instant before which the previous poll's `before` rows were
    /// created (see [`TerminalMemory::before_at`]).
    before_at: BTreeMap<&'static str, OffsetDateTime>,
    /// Terminal links found now that the previous poll held in their status.
    old: Groups,
}

/// Per-poll bookkeeping fed by the page callback.
struct Tally<'m> {
    agg: Aggregator,
    invalid: Vec<Invalid>,
    duplicates: u64,
    /// Distinct ids of the invalid links of each status: they count in the API's
    /// `total_count` of their status, not in the snapshot's totals.
    invalid_by_status: BTreeMap<String, BTreeSet<String>>,
    /// `(id hash, expiration)` of the open and processing links of this poll, invalid ones too.
    live: Vec<(u64, i64)>,
    /// Id hashes of this poll's links of statuses the exporter does not know, invalid ones too.
    others: Vec<u64>,
    /// Duplicates this poll caused itself (a status walked in full after a partial look).
    expected_duplicates: u64,
    /// Links read whose status, currency or resource type was folded into the spec's spelling.
    normalized: [u64; 3],
    /// The poll's start; `None` when no incremental memory is kept.
    now: Option<OffsetDateTime>,
    /// Terminal links certainly created before the poll started, per group.
    before: Groups,
    /// The previous poll's `before_at` of each terminal status, and the links found now that
    /// were certainly created before it (links that moved in since, for carried statuses).
    prev_before_at: BTreeMap<&'static str, OffsetDateTime>,
    before_prev: Groups,
    resync: Option<ResyncCheck<'m>>,
}

impl<'m> Tally<'m> {
    fn new(
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
        }
    }

    /// The expiration stored in the live memory: the poll's start stands in for a missing or
    /// unusable date (the sorted look-up may then miss the link, and its new status is walked
    /// in full: exact, only dearer).
    fn live_expiration(&self, expiration: Option<OffsetDateTime>) -> i64 {
        expiration
            .or(self.now)
            .map_or(0, OffsetDateTime::unix_timestamp)
    }

    /// Remembers a link that is not in a terminal status: as live (open, processing), to
    /// recognise it next poll once it has moved on, or among the links of unknown statuses.
    fn remember(
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
        } else {
            self.others.push(hash);
        }
    }

    /// Counts one link served by the API.
    fn link(&mut self, link: &Link<'_>, id_key: &IdKey) {
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
    fn terminal(
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
    fn skip(
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

    fn page(&mut self, page: &Page<'_>, id_key: &IdKey) {
        self.page_of(page, id_key, None);
    }

    /// A page of a listing filtered by `status` when given: a link of the wrong shape without
    /// a readable status of its own belongs to it.
    fn page_of(&mut self, page: &Page<'_>, id_key: &IdKey, status: Option<&str>) {
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

/// `s` cut to at most `max` bytes (on a character boundary), for logs of outside data.
fn truncate(s: &str, max: usize) -> &str {
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
fn report_key(reason: InvalidReason, id: &str) -> u64 {
    use std::hash::{BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one((reason.as_str(), id))
}

/// Runs polls on an interval and publishes their results.
pub struct Poller {
    client: Arc<QontoClient>,
    cfg: PollerConfig,
    metrics: Arc<SelfMetrics>,
    shared: Arc<Shared>,
    memory: Option<Memory>,
    /// Hashes link ids the same way across polls (the incremental memory keeps hashes).
    id_key: IdKey,
    /// Report keys of the invalid links already counted and logged.
    reported: HashSet<u64>,
    refused: bool,
    /// Where the last complete poll and the memory are saved, if anywhere.
    storage: Option<Arc<Storage>>,
}

impl Poller {
    pub fn new(
        client: Arc<QontoClient>,
        cfg: PollerConfig,
        metrics: Arc<SelfMetrics>,
        shared: Arc<Shared>,
    ) -> Self {
        Poller {
            client,
            cfg,
            metrics,
            shared,
            memory: None,
            id_key: IdKey::random(),
            reported: HashSet::new(),
            refused: false,
            storage: None,
        }
    }

    /// Polls until `shutdown` turns true. The first poll starts at once.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.cfg.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped(&mut shutdown) => return,
            }
            tokio::select! {
                _ = self.poll_once() => {}
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    /// One poll, published on success; failures are logged and counted, never propagated.
    pub async fn poll_once(&mut self) -> Result<(), PollError> {
        let started = Instant::now();
        let requests_before = self.client.requests_sent();
        self.metrics.polls.inc();
        self.set_status(|s| s.in_progress_since = Some(SystemTime::now()));
        let now = OffsetDateTime::now_utc();
        let result = match tokio::time::timeout(self.cfg.timeout, self.collect(now)).await {
            Ok(r) => r,
            Err(_) => Err(PollError::Timeout(self.cfg.timeout)),
        };
        let duration = started.elapsed();
        let requests = self.client.requests_sent() - requests_before;
        // A poll longer than the interval delays the next one: polls then come less often.
        self.metrics
            .record_poll_requests(requests, self.cfg.interval.max(duration));
        self.metrics.last_duration.set(duration.as_secs_f64());
        match result {
            Ok((snapshot, pages, full)) => {
                let rendered = render_snapshot(&snapshot);
                let links = snapshot.unique_links;
                let finished_at = SystemTime::now();
                let published = Arc::new(Published {
                    snapshot,
                    rendered,
                    finished_at,
                    duration,
                    pages,
                    requests,
                    full,
                    restored: false,
                });
                self.shared.published.store(Some(published.clone()));
                self.metrics.snapshot_restored.set(0.0);
                self.save(&published).await;
                self.metrics.up.set(1.0);
                self.metrics.last_success.set(unix(finished_at));
                self.metrics.credentials_refused.set(0.0);
                if self.refused {
                    tracing::info!("credentials accepted again");
                    self.refused = false;
                }
                self.set_status(|s| {
                    s.polls += 1;
                    s.last_finished_at = Some(finished_at);
                    s.last_error = None;
                    s.in_progress_since = None;
                });
                tracing::info!(
                    links,
                    pages,
                    requests,
                    duration_seconds = duration.as_secs_f64(),
                    full,
                    "poll complete"
                );
                Ok(())
            }
            Err(e) => {
                self.metrics.up.set(0.0);
                self.metrics.poll_failures.inc();
                let credentials = e.is_credentials();
                self.metrics
                    .credentials_refused
                    .set(if credentials { 1.0 } else { 0.0 });
                if credentials {
                    if !self.refused {
                        tracing::warn!(error = %e, "Qonto refused the credentials; serving the last good figures, trying again at most once per poll");
                    } else {
                        tracing::debug!(error = %e, "credentials still refused");
                    }
                    self.refused = true;
                } else {
                    tracing::warn!(error = %e, requests, duration_seconds = duration.as_secs_f64(), "poll failed; serving the last good figures");
                }
                let message = e.to_string();
                self.set_status(|s| {
                    s.polls += 1;
                    s.last_finished_at = Some(SystemTime::now());
                    s.last_error = Some(message.clone());
                    s.in_progress_since = None;
                });
                Err(e)
            }
        }
    }

    /// Serves the poll saved in `storage` at once (with its true age) and makes the next poll
    /// incremental from its memory; then saves every complete poll there. A file that cannot
    /// be used is reported once and ignored: the first poll is then a full one.
    pub async fn restore_from(&mut self, storage: Storage) {
        let storage = Arc::new(storage);
        self.storage = Some(storage.clone());
        let loaded = tokio::task::spawn_blocking(move || storage.load::<Memory>()).await;
        let (poll, memory) = match loaded {
            Ok(Ok(Some(state))) => state,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "state file ignored; the first poll walks every link");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "state file not read; the first poll walks every link");
                return;
            }
        };
        let finished_at = poll.finished_at();
        let age = SystemTime::now()
            .duration_since(finished_at)
            .unwrap_or(Duration::ZERO);
        tracing::info!(
            links = poll.snapshot.unique_links,
            age = %humantime::format_duration(Duration::from_secs(age.as_secs())),
            "serving the figures saved by the last complete poll until this process completes one"
        );
        self.id_key = memory.id_key;
        self.memory = Some(memory);
        let rendered = render_snapshot(&poll.snapshot);
        self.shared.published.store(Some(Arc::new(Published {
            rendered,
            finished_at,
            duration: Duration::from_millis(poll.duration_ms),
            pages: poll.pages,
            requests: poll.requests,
            full: poll.full,
            restored: true,
            snapshot: poll.snapshot,
        })));
        self.metrics.last_success.set(unix(finished_at));
        self.metrics.snapshot_restored.set(1.0);
    }

    /// Writes the poll just published and the memory to the state file, if one is configured.
    async fn save(&self, published: &Published) {
        let (Some(storage), Some(memory)) = (&self.storage, &self.memory) else {
            return;
        };
        let poll = SavedPoll {
            finished_at_ms: published
                .finished_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            duration_ms: u64::try_from(published.duration.as_millis()).unwrap_or(u64::MAX),
            pages: published.pages,
            requests: published.requests,
            full: published.full,
            snapshot: published.snapshot.clone(),
        };
        let (storage, memory) = (storage.clone(), memory.clone());
        let saved = tokio::task::spawn_blocking(move || storage.save(&poll, &memory)).await;
        let error = match saved {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.metrics.state_write_failures.inc();
        tracing::warn!(%error, "state file not written: a restart now starts with a full poll");
    }

    fn set_status(&self, f: impl FnOnce(&mut PollStatus)) {
        let mut s = PollStatus::clone(&self.shared.status.load());
        f(&mut s);
        self.shared.status.store(Arc::new(s));
    }

    /// Walks what must be walked and builds the snapshot; `(snapshot, pages, full)`.
    async fn collect(&mut self, now: OffsetDateTime) -> Result<(Snapshot, u64, bool), PollError> {
        let mut force_full = false;
        let mut mismatches = 0;
        let mut attempt = 0;
        loop {
            let full = force_full
                || self.cfg.full_resync.is_zero()
                || self.memory.as_ref().is_none_or(|m| {
                    SystemTime::now()
                        .duration_since(m.last_full)
                        .unwrap_or(Duration::ZERO)
                        >= self.cfg.full_resync
                });
            let incremental = !self.cfg.full_resync.is_zero();
            let tally = Mutex::new(Tally::new(
                Aggregator::new(now, &self.cfg.windows, self.cfg.limits),
                incremental.then_some(now),
                self.memory.as_ref(),
                full && incremental,
            ));
            let id_key = &self.id_key;
            let on_page = |page: &Page<'_>| {
                tally
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .page(page, id_key);
            };
            let outcome = if full {
                self.walk_full(&on_page).await?
            } else {
                match self.walk_incremental(&tally, &on_page).await? {
                    Some(o) => o,
                    None => {
                        // Links moving between the requests of one poll can make the parts
                        // miss the total; only a repeated mismatch costs a full walk.
                        mismatches += 1;
                        force_full = mismatches > 2;
                        if force_full {
                            tracing::info!(
                                "status counts keep missing the total; walking everything"
                            );
                        }
                        continue;
                    }
                }
            };
            let Walked {
                pages,
                drift,
                proven,
                unknown_carried,
            } = outcome;
            let mut t = tally.into_inner().unwrap_or_else(|p| p.into_inner());
            let mut live = std::mem::take(&mut t.live);
            let drift = drift.or_else(|| {
                (t.duplicates > t.expected_duplicates).then(|| {
                    format!(
                        "{} links served twice",
                        t.duplicates - t.expected_duplicates
                    )
                })
            });
            let settled = drift.is_none();
            if let Some(why) = drift {
                self.metrics.drift.inc();
                if attempt < self.cfg.max_rewalks {
                    attempt += 1;
                    tracing::info!(%why, attempt, "listing changed during the poll; walking again");
                    continue;
                }
                tracing::warn!(%why, "listing kept changing; publishing the deduplicated figures of the last walk");
            }
            count_invalid(&mut self.reported, &self.metrics, &t.invalid, full);
            for ((field, _), n) in crate::aggregate::Normalized::default()
                .fields()
                .iter()
                .zip(t.normalized)
            {
                if n > 0 {
                    self.metrics
                        .normalized_values
                        .with_label_values(&[field])
                        .inc_by(n);
                }
            }
            let snapshot = t.agg.finish();
            if full {
                self.metrics.full_walks.inc();
            }
            if let (Some(check), Some(memory)) = (&t.resync, &self.memory) {
                if settled && memory.settled {
                    self.check_resync(memory, &check.old);
                } else {
                    tracing::info!(
                        "full resync: terminal links not checked, as this walk or the previous poll saw the listing move"
                    );
                }
            }
            // The count remembered for a terminal status is the number of distinct links of
            // that status this poll holds (valid ones in the snapshot, invalid ones by id), or
            // the API's own count where the set was proven equal to it (carried or completed).
            // Rows are links of that status, which they never leave: when the API's count
            // equals the remembered one next poll, the rows are exactly the status's links,
            // however much the listing moved during this poll.
            live.sort_unstable();
            live.shrink_to_fit();
            let unknown = if unknown_carried {
                self.memory
                    .as_ref()
                    .map(|m| m.unknown.clone())
                    .unwrap_or_default()
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
            let (before, before_prev) = (
                std::mem::take(&mut t.before),
                std::mem::take(&mut t.before_prev),
            );
            let memory = Memory {
                last_full: match (&self.memory, full) {
                    (Some(m), false) => m.last_full,
                    _ => SystemTime::now(),
                },
                id_key: self.id_key,
                terminal: TERMINAL_STATUSES
                    .iter()
                    .map(|s| {
                        let held = snapshot.status_count(s)
                            + t.invalid_by_status
                                .get(*s)
                                .map_or(0, |ids| ids.len() as u64);
                        let rows = snapshot.status_rows(s);
                        let prev = self.memory.as_ref().and_then(|m| m.terminal.get(s));
                        let memory = match (proven.get(s), prev) {
                            // Carried, or completed from last poll's live links: the set is
                            // last poll's plus the links found, checked against last poll's
                            // instant (a link created since is not "before" it).
                            (Some(n), Some(prev)) => TerminalMemory {
                                count: *n,
                                rows,
                                before: merge_rows(&prev.before, &before_prev.rows(s)),
                                before_at: prev.before_at,
                            },
                            _ => TerminalMemory {
                                count: held,
                                rows,
                                before: before.rows(s),
                                before_at: now,
                            },
                        };
                        (*s, memory)
                    })
                    .collect(),
                live,
                unknown,
                polled_at: now.unix_timestamp(),
                settled,
            };
            // Links the API counts that the figures leave out: invalid ones this poll held,
            // by the remembered counts of terminal statuses and by id for the others.
            let excluded: u64 = memory
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
                .sum();
            self.metrics.excluded_links.set(excluded as f64);
            self.memory = Some(memory);
            return Ok((snapshot, pages, full));
        }
    }

    async fn walk_full(&self, on_page: &(dyn Fn(&Page<'_>) + Sync)) -> Result<Walked, PollError> {
        let s = walk(&self.client, &[], self.cfg.concurrency, on_page).await?;
        Ok(Walked {
            pages: s.pages,
            drift: s.drift,
            proven: BTreeMap::new(),
            unknown_carried: false,
        })
    }

    /// Live statuses walked, terminal ones probed and re-walked only if they moved. `None`
    /// when the parts do not add up to the whole (an unknown status): walk everything.
    async fn walk_incremental(
        &self,
        tally: &Mutex<Tally<'_>>,
        on_page: &(dyn Fn(&Page<'_>) + Sync),
    ) -> Result<Option<Walked>, PollError> {
        let Some(memory) = &self.memory else {
            return Ok(None);
        };
        let live: WalkSummary =
            walk(&self.client, &LIVE_STATUSES, self.cfg.concurrency, on_page).await?;
        let mut pages = live.pages;
        let drift = live.drift;
        let mut parts = live.total_count;
        // Only the live walk can lose links to drift (links leave the live listing and shift
        // others past the cursor). Terminal listings only grow: a walk of one sees every link it
        // held at its first page, and serves some twice or misses newcomers, which were live when
        // the live walk counted them. So duplicates from here on are not drift, and a terminal
        // walk that saw its listing grow is not walked again; the remembered counts (see
        // `collect`) let the next poll catch up.
        let live_duplicates = tally.lock().unwrap_or_else(|p| p.into_inner()).duplicates;
        // Links live last poll and gone from the live listing now have moved to a terminal
        // status: the candidates for the terminal statuses whose counts grew.
        let mut vanished: HashMap<u64, i64> = {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            // Sorted in place (no copy: at a million links the live set is megabytes).
            t.live.sort_unstable();
            memory
                .live
                .iter()
                .filter(|(h, _)| t.live.binary_search_by_key(h, |(l, _)| *l).is_err())
                .copied()
                .collect()
        };
        // All counts first: if the parts do not add up to the whole, nothing is walked.
        let mut counts = Vec::with_capacity(TERMINAL_STATUSES.len());
        for status in TERMINAL_STATUSES {
            let n = count(&self.client, &[status]).await?;
            pages += 1;
            parts += n;
            counts.push((status, n));
        }
        let total = count(&self.client, &[]).await?;
        pages += 1;
        // The remainder is the links of statuses the exporter does not know: carried while it
        // stays what the last full walk found (see `UnknownMemory`).
        let remainder = total.checked_sub(parts);
        let unknown_carried = remainder.is_some_and(|r| r > 0 && r == memory.unknown.count);
        if remainder != Some(0) && !unknown_carried {
            tracing::info!(
                total,
                parts,
                unknown = memory.unknown.count,
                "status counts do not add up to the total (a status the exporter does not know, or links moving); walking again"
            );
            return Ok(None);
        }
        if unknown_carried {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            for (status, rows) in &memory.unknown.rows {
                t.agg.carry(status, rows);
            }
        }
        let mut terminal = BTreeMap::new();
        for (status, n) in counts {
            match memory.terminal.get(status).map(|m| (&m.count, &m.rows)) {
                Some((known, rows)) if *known == n => {
                    let dropped = tally
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .agg
                        .carry(status, rows);
                    if dropped > 0 {
                        tracing::warn!(
                            status,
                            dropped,
                            "carried links over the label ceiling dropped"
                        );
                    }
                    terminal.insert(status, n);
                }
                Some((known, rows)) if n > *known && !vanished.is_empty() => {
                    let (found, walked) = self
                        .find_moved(tally, status, n - known, &mut vanished, memory.polled_at)
                        .await?;
                    pages += walked;
                    if found > n - known {
                        // More links joined than the count grew: some it held have left.
                        self.correction(status, "more links moved in than its count grew");
                    }
                    if found == n - known {
                        tally
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .agg
                            .carry(status, rows);
                        terminal.insert(status, n);
                    } else {
                        // Not all newcomers were links seen live last poll: walk it all (the
                        // links found are served again: duplicates of our own making).
                        tally
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .expected_duplicates += found;
                        pages += self.walk_status(tally, status).await?;
                    }
                }
                known => {
                    if known.is_some_and(|(k, _)| n < *k) {
                        self.correction(status, "its count fell");
                    }
                    pages += self.walk_status(tally, status).await?;
                }
            }
        }
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        t.expected_duplicates = t.duplicates - live_duplicates;
        Ok(Some(Walked {
            pages,
            drift,
            proven: terminal,
            unknown_carried,
        }))
    }

    /// Walks one terminal status in full; returns the pages. Its links of the wrong shape
    /// whose own status is unreadable are attributed to it (the API filtered them into it), so
    /// its remembered count keeps matching the API's.
    async fn walk_status(
        &self,
        tally: &Mutex<Tally<'_>>,
        status: &'static str,
    ) -> Result<u64, PollError> {
        let id_key = &self.id_key;
        let on_page = |page: &Page<'_>| {
            tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .page_of(page, id_key, Some(status));
        };
        let s = walk(&self.client, &[status], self.cfg.concurrency, &on_page).await?;
        self.note_terminal_drift(status, s.drift);
        Ok(s.pages)
    }

    /// An incremental poll found the terminal assumption broken for `status` (it then walks
    /// the status in full, so the figures are right again).
    fn correction(&self, status: &str, why: &str) {
        self.metrics
            .resync_corrections
            .with_label_values(&[status])
            .inc();
        tracing::warn!(
            status,
            why,
            "links the incremental polls took as final changed; walking the status in full"
        );
    }

    /// Looks for the `want` links that joined terminal `status` since the last poll among the
    /// links that were live then (`vanished`), reading the status sorted by expiration date,
    /// latest first, and stopping as soon as all are found — or once the dates fall below every
    /// candidate's (and below the last poll, in case the API rewrote a date on the move), where
    /// none can follow. Found links are counted and leave `vanished`. Returns `(found, pages)`.
    ///
    /// Why this is exact when `found == want`: links never leave a terminal status, so the
    /// status holds last poll's links (whose totals are carried) plus exactly `want` newcomers;
    /// `want` distinct links of the status that were not in it last poll (they were live) are
    /// therefore all the newcomers. Old links near the top are paid links whose expiration
    /// date is still ahead — few, in an organisation whose history goes back years.
    async fn find_moved(
        &self,
        tally: &Mutex<Tally<'_>>,
        status: &'static str,
        want: u64,
        vanished: &mut HashMap<u64, i64>,
        last_poll: i64,
    ) -> Result<(u64, u64), PollError> {
        let floor = vanished
            .values()
            .copied()
            .min()
            .unwrap_or(i64::MIN)
            .min(last_poll - 60);
        let mut found = 0;
        let id_key = &self.id_key;
        let mut on_page = |page: &Page<'_>| {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            for link in &page.links {
                if vanished.remove(&id_key.hash_one(&*link.id)).is_some() {
                    found += 1;
                    t.link(link, id_key);
                }
            }
            let oldest = page
                .links
                .iter()
                .rev()
                .find_map(|l| l.expiration_date.as_deref().and_then(parse_date))
                .map(|d| d.unix_timestamp());
            // A page without a usable date (APIs may sort missing dates first) says nothing
            // about where the candidates are: read on.
            found < want && oldest.is_none_or(|o| o >= floor)
        };
        let pages = walk_until(
            &self.client,
            &[status],
            "expiration_date:desc",
            &mut on_page,
        )
        .await?;
        tracing::debug!(
            status,
            want,
            found,
            pages,
            "looked for links that became terminal"
        );
        Ok((found, pages))
    }

    /// Counts and logs a terminal listing that grew while it was walked (not walked again).
    fn note_terminal_drift(&self, status: &str, drift: Option<String>) {
        if let Some(why) = drift {
            self.metrics.drift.inc();
            tracing::debug!(status, %why, "terminal listing grew during its walk");
        }
    }

    /// Compares what the previous poll held in each terminal status with what this full walk
    /// finds of the same links (see the module docs); counts and logs every difference.
    fn check_resync(&self, memory: &Memory, found: &Groups) {
        self.metrics.resync_checks.inc();
        for status in TERMINAL_STATUSES {
            let held = memory
                .terminal
                .get(status)
                .map(|m| m.before.clone())
                .unwrap_or_default();
            let now = found.rows(status);
            if held == now {
                continue;
            }
            let sum = |rows: &StatusRows| {
                rows.iter().fold(Totals::default(), |mut a, (.., t)| {
                    a.count += t.count;
                    a.amount = a.amount.saturating_add(t.amount);
                    a
                })
            };
            let (h, n) = (sum(&held), sum(&now));
            self.metrics
                .resync_corrections
                .with_label_values(&[status])
                .inc();
            tracing::warn!(
                status,
                held_links = h.count,
                found_links = n.count,
                held_rows = ?held,
                found_rows = ?now,
                "full resync corrected the figures: links the incremental polls took as final changed status, amount or currency, or disappeared"
            );
        }
    }
}

/// Counts and logs each invalid link once, not once per poll that reads it: `reported` holds
/// the keys already counted. A full walk reads every link, so after one the set keeps only the
/// keys it saw (memory follows the invalid links that exist, not all that ever did); an
/// incremental poll adds to it. At most [`LOGGED_PER_POLL`] links are logged one by one per
/// poll, the rest in one summary line.
fn count_invalid(
    reported: &mut HashSet<u64>,
    metrics: &SelfMetrics,
    invalid: &[Invalid],
    full: bool,
) {
    let mut seen = HashSet::with_capacity(if full { invalid.len() } else { 0 });
    let mut logged = 0;
    let mut unlogged: BTreeMap<&'static str, u64> = BTreeMap::new();
    for Invalid {
        reason,
        id,
        key,
        detail,
    } in invalid
    {
        if full {
            seen.insert(*key);
        }
        if !reported.insert(*key) {
            continue;
        }
        metrics
            .invalid_links
            .with_label_values(&[reason.as_str()])
            .inc();
        if logged >= LOGGED_PER_POLL {
            *unlogged.entry(reason.as_str()).or_default() += 1;
            continue;
        }
        logged += 1;
        let id = truncate(id.as_deref().unwrap_or("unknown"), 100);
        let detail = detail.as_deref().unwrap_or("");
        if *reason == InvalidReason::ExpirationDate {
            tracing::warn!(
                id,
                reason = reason.as_str(),
                "open payment link has no usable expiration date: counted in its status, in no expiry figure"
            );
        } else {
            tracing::warn!(
                id,
                reason = reason.as_str(),
                detail,
                "payment link skipped: its data is unusable"
            );
        }
    }
    if !unlogged.is_empty() {
        tracing::warn!(more = ?unlogged, "more payment links with unusable data, not logged one by one");
    }
    if full {
        *reported = seen;
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            id_key: IdKey(7),
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
    fn invalid_links_are_counted_once_and_forgotten_after_a_full_walk_without_them() {
        let metrics = SelfMetrics::new();
        let get = |reason: &str| metrics.invalid_links.with_label_values(&[reason]).get();
        let bad = |id: &str| Invalid {
            reason: InvalidReason::Amount,
            id: Some(id.to_owned()),
            key: report_key(InvalidReason::Amount, id),
            detail: None,
        };
        let mut reported = HashSet::new();
        count_invalid(&mut reported, &metrics, &[bad("a"), bad("b")], true);
        count_invalid(&mut reported, &metrics, &[bad("a")], false);
        count_invalid(&mut reported, &metrics, &[bad("a"), bad("b")], true);
        assert_eq!(get("invalid_amount"), 2);
        // A full walk without "b": it is forgotten, and counted again if it comes back.
        count_invalid(&mut reported, &metrics, &[bad("a")], true);
        assert_eq!(reported.len(), 1);
        count_invalid(&mut reported, &metrics, &[bad("b")], false);
        assert_eq!(get("invalid_amount"), 3);
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
}
