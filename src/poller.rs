//! The loop: poll → aggregate → publish. Owns timing, health counters and the incremental
//! memory between polls.
//!
//! Polls never overlap: the loop awaits each poll before scheduling the next, and a poll that
//! outlasts the interval delays the next one instead of stacking up. Each complete poll builds
//! one immutable [`Published`] value that replaces the previous one in a single atomic swap, so
//! a scrape sees one whole poll or the next, never a mix. A failed poll publishes nothing: the
//! last good figures stay served and `qonto_up` drops to 0.
//!
//!
//! The incremental planner, and the argument why incremental figures equal a full recount,
//! are in [`crate::planner`]; what is published and served is in [`crate::publish`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::aggregate::{
    Aggregator, InvalidReason, Limits, Snapshot, StatusRows, TERMINAL_STATUSES, Totals, Window,
    parse_date,
};
use crate::events::{Joined, joined};
use crate::metrics::SelfMetrics;
use crate::planner::{
    Counts, Groups, IdKey, Invalid, LIVE_STATUSES, Memory, StatusPlan, Tally, Walked, after_find,
    check_counts, excluded_links, full_due, next_memory, plan_status, resync_differences, truncate,
};
pub use crate::publish::{PollFacts, PollStatus, Published, Shared};
use crate::qonto::client::{ApiError, QontoClient};
use crate::qonto::model::Page;
use crate::qonto::walk::{WalkSummary, count, walk, walk_until};
use crate::shutdown::stopped;
use crate::state::{SavedPoll, Storage};

/// Invalid links newly found in one poll that are logged one by one; the rest in a summary.
const LOGGED_PER_POLL: usize = 20;

/// How the poller behaves.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    pub interval: Duration,
    pub windows: Vec<Window>,
    /// The receivables' age buckets (`--aging.buckets`).
    pub aging: crate::aggregate::AgeBuckets,
    /// Links seen becoming paid whose payments a poll reads, at most (`--collect.payments`).
    pub collect_payments: usize,
    pub limits: Limits,
    pub concurrency: usize,
    /// A full walk at least this often; zero disables incremental polls.
    pub full_resync: Duration,
    /// Overall deadline of one poll.
    pub timeout: Duration,
    /// Walks repeated when the listing moved during a walk.
    pub max_rewalks: u32,
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
    /// True while a write of the state file runs on the blocking pool.
    saving: Arc<std::sync::atomic::AtomicBool>,
    /// The last connection status checked, and the undocumented ones seen.
    connection: Option<String>,
    connection_seen: HashSet<String>,
    /// The payment statuses and methods counted by name so far.
    payment_statuses: HashSet<String>,
    payment_methods: HashSet<String>,
    /// Until when the connection check, and the payments, wait after a refusal.
    connection_refused_until: Option<Instant>,
    payments_refused_until: Option<Instant>,
    /// Webhook events between polls, when the receiver routes this organisation.
    events: Option<Arc<crate::events::EventState>>,
}

/// What one complete poll collected.
struct Collected {
    snapshot: Snapshot,
    /// What this poll saw changing, recorded once its payments (if collected) are read.
    flows: crate::flows::FlowEvents,
    /// Pages (requests) the walks fetched.
    pages: u64,
    /// Whether every link was walked.
    full: bool,
    /// The open and processing links, kept whole for the webhook overlay.
    live_links: Option<Vec<crate::qonto::model::Link<'static>>>,
}

/// What `find_moved` did.
struct Found {
    /// Newcomers found among last poll's live links.
    found: u64,
    /// Pages read.
    pages: u64,
}

/// How long the connection status, or the payments, are not asked again after Qonto refused
/// the credentials for them (a grant without those endpoints).
const REFUSED_ENDPOINT_PAUSE: Duration = Duration::from_secs(3600);

/// Most distinct payment statuses, and payment methods, counted by name (others: `other`).
const MAX_PAYMENT_VALUES: usize = 16;

/// The two labels of the payments counter.
#[derive(Clone, Copy)]
enum PaymentField {
    Status,
    Method,
}

/// Most undocumented connection statuses exported (a bound on the state set's series).
const MAX_CONNECTION_STATUSES: usize = 8;

/// How long a state-file write may take before it counts as failed.
const SAVE_TIMEOUT: Duration = Duration::from_secs(10);

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
            saving: Arc::default(),
            connection: None,
            connection_seen: HashSet::new(),
            payment_statuses: HashSet::new(),
            payment_methods: HashSet::new(),
            connection_refused_until: None,
            payments_refused_until: None,
            events: None,
        }
    }

    /// Lets webhook events move the figures between polls and spare terminal walks (see
    /// [`crate::events`]).
    pub fn with_events(mut self, events: Arc<crate::events::EventState>) -> Self {
        self.events = Some(events);
        self
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
            tokio::select! {
                _ = self.check_connection() => {}
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    /// The connection status (can customers pay at all?), once after each poll. Its failure is
    /// counted and logged, never a failed poll; skipped while the credentials are refused (the
    /// request would be refused too, and Qonto throttles callers refused too often).
    async fn check_connection(&mut self) {
        if self.refused
            || self
                .connection_refused_until
                .is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        self.metrics.connection_checks.inc();
        let deadline = self.cfg.interval.min(self.cfg.timeout);
        let checked = tokio::time::timeout(deadline, self.client.connection_status()).await;
        if let Ok(Err(e)) = &checked {
            if e.is_credentials() {
                // A grant without this endpoint: not asked again for an hour (Qonto throttles
                // callers refused too often), and the listings are not affected.
                self.connection_refused_until = Instant::now().checked_add(REFUSED_ENDPOINT_PAUSE);
            }
        }
        let status = match checked {
            Ok(Ok(status)) => {
                let status = crate::aggregate::canonical_status(status.trim()).into_owned();
                if crate::aggregate::is_label_value(&status) && self.connection_statuses(&status) {
                    Ok(status)
                } else {
                    Err(format!(
                        "unusable status {:?}",
                        crate::planner::truncate(&status, 100)
                    ))
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(deadline)
            )),
        };
        match status {
            Ok(status) => {
                if self.connection.as_deref() != Some(status.as_str()) {
                    tracing::info!(status = %status, previous = self.connection.as_deref().unwrap_or("unknown"), "payment links connection status");
                }
                self.metrics.record_connection(&status);
                self.connection = Some(status);
            }
            Err(error) => {
                self.metrics.connection_check_failures.inc();
                tracing::warn!(error = %error, "connection status check failed; the last known status stays published");
            }
        }
    }

    /// Reads the payments of the links this poll saw becoming paid, at most
    /// `--collect.payments` of them (0: none) and within one deadline (the poll interval, so
    /// the next poll is not pushed back): counts them by status and method, and gives the time
    /// to pay the latest plausible `paid_at` of a paid payment instead of the poll's time. A
    /// failure is counted and logged once per poll, never a failed poll; after a refusal of
    /// the credentials for this endpoint, payments are not read for an hour. The links not read
    /// keep the poll's time. A reusable link paid again is read again, and its earlier
    /// payments count again.
    async fn read_payments(&mut self, flows: &mut crate::flows::FlowEvents, now: i64) {
        let cap = self.cfg.collect_payments;
        if cap == 0 || flows.paid.is_empty() {
            return;
        }
        if self
            .payments_refused_until
            .is_some_and(|t| Instant::now() < t)
        {
            self.metrics
                .payment_reads_skipped
                .inc_by(flows.paid.len() as u64);
            return;
        }
        let until = now.saturating_add(crate::flows::CREATED_ALLOWANCE);
        // All reads share one deadline: the next poll is not pushed back by them.
        // Flags can be absurd (`--poll.interval 1000y`): an `Instant` must never overflow.
        let deadline = Instant::now()
            .checked_add(self.cfg.interval.min(self.cfg.timeout))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let mut failed = Vec::new();
        let mut read = 0usize;
        for link in &flows.paid {
            if read == cap || Instant::now() >= deadline {
                break;
            }
            read += 1;
            self.metrics.payment_reads.inc();
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = tokio::time::timeout(left, self.client.link_payments(&link.id)).await;
            let (payments, more) = match answer {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    self.metrics.payment_read_failures.inc();
                    let refused = e.is_credentials();
                    failed.push(format!("{}: {e}", crate::planner::truncate(&link.id, 64)));
                    if refused {
                        self.payments_refused_until =
                            Instant::now().checked_add(REFUSED_ENDPOINT_PAUSE);
                        break;
                    }
                    continue;
                }
                Err(_) => {
                    self.metrics.payment_read_failures.inc();
                    failed.push(format!(
                        "{}: no answer before the poll's payments deadline",
                        crate::planner::truncate(&link.id, 64)
                    ));
                    break;
                }
            };
            if more {
                tracing::warn!(
                    id = crate::planner::truncate(&link.id, 64),
                    "payment link with more payments than are read; the rest are not counted"
                );
            }
            let at = |s: Option<&str>| {
                s.and_then(crate::aggregate::parse_date)
                    .map(|t| t.unix_timestamp())
            };
            let mut paid_at: Option<i64> = None;
            for p in &payments {
                let status = self.payment_label(&p.status, PaymentField::Status);
                let method = match p.payment_method.as_deref() {
                    Some(m) => self.payment_label(m, PaymentField::Method),
                    None => "none".to_owned(),
                };
                self.metrics
                    .payments
                    .with_label_values(&[&status, &method])
                    .inc();
                // The latest plausible paid_at: not before the link's creation, not after
                // this poll (with the allowance); an absurd one keeps the poll's time.
                let plausible = |t: i64| t <= until && link.created.is_none_or(|c| t >= c);
                if status == "paid" {
                    if let Some(t) = at(p.paid_at.as_deref()).filter(|t| plausible(*t)) {
                        paid_at = Some(paid_at.map_or(t, |a| a.max(t)));
                    }
                }
            }
            if let (Some(i), Some(created), Some(paid)) = (link.time_to_pay, link.created, paid_at)
            {
                if let Some(entry) = flows.time_to_pay.get_mut(i) {
                    entry.2 = paid.saturating_sub(created).max(0) as f64;
                }
            }
        }
        let skipped = flows.paid.len().saturating_sub(read);
        self.metrics.payment_reads_skipped.inc_by(skipped as u64);
        if !failed.is_empty() {
            tracing::warn!(
                failed = failed.len(),
                first = %failed[0],
                "payments of paid links not read; their time to pay is the poll's"
            );
        }
    }

    /// A payment status or method as a label value: lower case, as sent while usable and under
    /// the ceiling of distinct values per field ([`MAX_PAYMENT_VALUES`]), else `other`.
    fn payment_label(&mut self, value: &str, field: PaymentField) -> String {
        let v = crate::aggregate::canonical_status(value.trim()).into_owned();
        let seen = match field {
            PaymentField::Status => &mut self.payment_statuses,
            PaymentField::Method => &mut self.payment_methods,
        };
        if seen.contains(&v) {
            return v;
        }
        if crate::aggregate::is_label_value(&v) && seen.len() < MAX_PAYMENT_VALUES {
            seen.insert(v.clone());
            return v;
        }
        "other".to_owned()
    }

    /// True when `status` is documented, already seen, or fits under the ceiling of
    /// [`MAX_CONNECTION_STATUSES`] distinct values (the state set's cardinality bound).
    fn connection_statuses(&mut self, status: &str) -> bool {
        if crate::metrics::CONNECTION_STATUSES.contains(&status)
            || self.connection_seen.contains(status)
        {
            return true;
        }
        if self.connection_seen.len() >= MAX_CONNECTION_STATUSES {
            return false;
        }
        self.connection_seen.insert(status.to_owned());
        true
    }

    /// One poll, published on success; failures are logged and counted, never propagated.
    pub async fn poll_once(&mut self) -> Result<(), PollError> {
        let started = Instant::now();
        let requests_before = self.client.requests_sent();
        self.metrics.polls.inc();
        self.set_status(|s| s.in_progress_since = Some(SystemTime::now()));
        if let Some(events) = &self.events {
            events.begin_poll();
        }
        let now = OffsetDateTime::now_utc();
        let result = match tokio::time::timeout(self.cfg.timeout, self.collect(now)).await {
            Ok(r) => r,
            Err(_) => Err(PollError::Timeout(self.cfg.timeout)),
        };
        let duration = started.elapsed();
        let requests = self.client.requests_sent() - requests_before;
        self.metrics.record_poll_requests(requests);
        self.metrics.last_duration.set(duration.as_secs_f64());
        match result {
            Ok(Collected {
                snapshot,
                mut flows,
                pages,
                full,
                live_links,
            }) => {
                let links = snapshot.unique_links;
                let finished_at = SystemTime::now();
                let published = Arc::new(Published::new(
                    snapshot,
                    PollFacts {
                        finished_at,
                        duration,
                        pages,
                        requests,
                        full,
                        restored: false,
                    },
                    self.metrics.organization(),
                ));
                match (&self.events, live_links, &self.memory) {
                    (Some(events), Some(live), Some(memory)) => events.publish_poll(
                        &self.shared,
                        crate::events::Base {
                            published: published.clone(),
                            live: live.into_iter().map(|l| (l.id.to_string(), l)).collect(),
                            memory: memory.clone(),
                        },
                    ),
                    _ => self.shared.published.store(Some(published.clone())),
                }
                self.metrics.snapshot_restored.set(0.0);
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
                self.read_payments(&mut flows, now.unix_timestamp()).await;
                self.metrics.flows.record(&flows, &published.snapshot);
                // After every figure of this poll is out: a slow disk delays nothing served.
                self.save(&published).await;
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
        let path = storage.path();
        let loaded = tokio::task::spawn_blocking(move || storage.load::<Memory>()).await;
        let now = SystemTime::now();
        let checked = |(poll, mut memory): (SavedPoll, Memory)| {
            crate::state::check_poll(&poll, now, &path)?;
            memory
                .validate(now)
                .map_err(|message| crate::state::StateError::Invalid {
                    path: path.clone(),
                    message,
                })?;
            Ok((poll, memory))
        };
        let (poll, memory) = match loaded.map(|r| r.and_then(|o| o.map(checked).transpose())) {
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
        self.shared.published.store(Some(Arc::new(Published::new(
            poll.snapshot,
            PollFacts {
                finished_at,
                duration: Duration::from_millis(poll.duration_ms),
                pages: poll.pages,
                requests: poll.requests,
                full: poll.full,
                restored: true,
            },
            self.metrics.organization(),
        ))));
        self.metrics.last_success.set(unix(finished_at));
        self.metrics.snapshot_restored.set(1.0);
    }

    /// Writes the poll just published and the memory to the state file, if one is configured.
    /// Encoded here (CPU, no copy of the memory), written on the blocking pool within
    /// [`SAVE_TIMEOUT`]: a hung volume costs a counted failure, never the poll loop. A write
    /// still running from an earlier poll is left alone rather than joined by a second one.
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
        let error = match storage.encode(&poll, memory) {
            Err(e) => e.to_string(),
            Ok(_) if self.saving.swap(true, std::sync::atomic::Ordering::AcqRel) => {
                "the previous write has not finished (a slow or hung volume)".to_owned()
            }
            Ok(bytes) => {
                let (storage, busy) = (storage.clone(), self.saving.clone());
                let write = tokio::task::spawn_blocking(move || {
                    let result = storage.write(&bytes);
                    busy.store(false, std::sync::atomic::Ordering::Release);
                    result
                });
                match tokio::time::timeout(SAVE_TIMEOUT, write).await {
                    Ok(Ok(Ok(()))) => return,
                    Ok(Ok(Err(e))) => e.to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!(
                        "no answer from the volume within {}",
                        humantime::format_duration(SAVE_TIMEOUT)
                    ),
                }
            }
        };
        self.metrics.state_write_failures.inc();
        tracing::warn!(%error, "state file not written: a restart now starts with a full poll");
    }

    fn set_status(&self, f: impl FnOnce(&mut PollStatus)) {
        let mut s = PollStatus::clone(&self.shared.status.load());
        f(&mut s);
        self.shared.status.store(Arc::new(s));
    }

    /// Walks what must be walked and builds the snapshot.
    async fn collect(&mut self, now: OffsetDateTime) -> Result<Collected, PollError> {
        let mut force_full = false;
        let mut mismatches = 0;
        let mut attempt = 0;
        loop {
            let full = force_full
                || full_due(
                    self.memory.as_ref(),
                    SystemTime::now(),
                    self.cfg.full_resync,
                );
            let incremental = !self.cfg.full_resync.is_zero();
            let tally = Mutex::new(
                Tally::new(
                    Aggregator::new(now, &self.cfg.windows, self.cfg.limits)
                        .with_aging(self.cfg.aging.clone()),
                    incremental.then_some(now),
                    self.memory.as_ref(),
                    full && incremental,
                )
                .with_flows(self.memory.as_ref(), now)
                .keeping_live_links(self.events.is_some()),
            );
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
                        // With links of unknown statuses about, a mismatch most likely means
                        // their number moved: walk everything at once rather than probe again.
                        let unknown = self.memory.as_ref().is_some_and(|m| m.unknown.count > 0);
                        force_full = mismatches > 2 || unknown;
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
                settled_by_events,
            } = outcome;
            let mut t = tally.into_inner().unwrap_or_else(|p| p.into_inner());
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
            // The aggregator is done; what else the tally holds goes into the next memory.
            let snapshot =
                std::mem::replace(&mut t.agg, Aggregator::new(now, &[], self.cfg.limits)).finish();
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
            let memory = next_memory(
                self.memory.as_ref(),
                &mut t,
                &snapshot,
                &proven,
                unknown_carried,
                full,
                now,
                SystemTime::now(),
                settled,
                self.id_key,
            );
            let excluded = excluded_links(&memory, &t, &snapshot, unknown_carried);
            self.metrics.excluded_links.set(excluded as f64);
            // Flows are counted for exactly the poll whose memory advances here (recorded by
            // `poll_once` once published, after the payments of the links paid are read).
            let flows = std::mem::take(&mut t.flows.events);
            let live_links = t.live_links.take();
            // Counted for the attempt whose figures are published, once per poll.
            if settled_by_events {
                self.metrics.webhook_polls_settled.inc();
            }
            drop(t);
            self.memory = Some(memory);
            return Ok(Collected {
                snapshot,
                flows,
                pages,
                full,
                live_links,
            });
        }
    }

    async fn walk_full(&self, on_page: &(dyn Fn(&Page<'_>) + Sync)) -> Result<Walked, PollError> {
        let s = walk(&self.client, &[], self.cfg.concurrency, on_page).await?;
        Ok(Walked {
            pages: s.pages,
            drift: s.drift,
            proven: BTreeMap::new(),
            unknown_carried: false,
            settled_by_events: false,
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
        // The webhook ledger is read before any count is probed: an event received now was
        // in its status at the probe (see `crate::events`).
        let ledger = self.events.as_ref().map(|e| e.terminal());
        let (mut vanished, mut joined): (HashMap<u64, i64>, HashMap<&'static str, Joined>) = {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            // Sorted in place (no copy: at a million links the live set is megabytes).
            t.live.sort_unstable();
            let now = t.now.map_or(memory.polled_at, |n| n.unix_timestamp());
            let joined = ledger
                .iter()
                .flatten()
                .map(|(s, links)| (*s, joined(links, memory, &t.live, &self.id_key, now)))
                .collect();
            let vanished = memory
                .live
                .iter()
                .filter(|(h, _)| t.live.binary_search_by_key(h, |(l, _)| *l).is_err())
                .copied()
                .collect();
            (vanished, joined)
        };
        // Whether some terminal status grew, and whether any was read rather than settled.
        let (mut grew, mut read_terminal) = (false, false);
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
        let Counts::AddUp {
            carry_unknown: unknown_carried,
        } = check_counts(memory, parts, total)
        else {
            tracing::info!(
                total,
                parts,
                unknown = memory.unknown.count,
                "status counts do not add up to the total (a status the exporter does not know, or links moving); walking again"
            );
            return Ok(None);
        };
        if unknown_carried {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            for (status, rows) in &memory.unknown.rows {
                t.agg.carry(status, rows);
            }
        }
        let mut terminal = BTreeMap::new();
        for (status, n) in counts {
            let remembered = memory.terminal.get(status);
            grew |= remembered.is_none_or(|m| n != m.count);
            if let (Some(m), Some(j)) = (remembered, joined.remove(status)) {
                let newcomers = (j.add.len() as u64).saturating_add(j.after_walk);
                if newcomers > 0 && m.count.checked_add(newcomers) == Some(n) {
                    // Every newcomer is known from events: no page of this status is read.
                    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                    let dropped = t.agg.carry(status, &m.rows);
                    if dropped > 0 {
                        tracing::warn!(
                            status,
                            dropped,
                            "carried links over the label ceiling dropped"
                        );
                    }
                    for l in &j.add {
                        vanished.remove(&self.id_key.hash_one(&l.id));
                        t.link(&l.link(), &self.id_key);
                    }
                    terminal.insert(status, m.count + j.add.len() as u64);
                    continue;
                }
            }
            read_terminal |= remembered.is_none_or(|m| n != m.count);
            let carry = |tally: &Mutex<Tally<'_>>| {
                let rows = remembered.map(|m| m.rows.as_slice()).unwrap_or_default();
                tally
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .agg
                    .carry(status, rows)
            };
            match plan_status(remembered, n, !vanished.is_empty()) {
                StatusPlan::Carry => {
                    let dropped = carry(tally);
                    if dropped > 0 {
                        tracing::warn!(
                            status,
                            dropped,
                            "carried links over the label ceiling dropped"
                        );
                    }
                    terminal.insert(status, n);
                }
                StatusPlan::FindMoved { want } => {
                    let Found {
                        found,
                        pages: walked,
                    } = self
                        .find_moved(tally, status, want, &mut vanished, memory.polled_at)
                        .await?;
                    pages += walked;
                    let (complete, correction) = after_find(want, found);
                    if let Some(why) = correction {
                        self.correction(status, why);
                    }
                    if complete {
                        carry(tally);
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
                StatusPlan::Walk { correction } => {
                    if let Some(why) = correction {
                        self.correction(status, why);
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
            settled_by_events: grew && !read_terminal && self.events.is_some(),
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
    ) -> Result<Found, PollError> {
        let floor = vanished
            .values()
            .copied()
            .min()
            .unwrap_or(i64::MIN)
            .min(last_poll.saturating_sub(60));
        let mut found = 0;
        let id_key = &self.id_key;
        let mut on_page = |page: &Page<'_>| {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            for link in &page.links {
                if vanished.remove(&id_key.hash_one(&link.id)).is_some() {
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
        Ok(Found { found, pages })
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
        for (status, held, now) in resync_differences(memory, found) {
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
    use crate::planner::report_key;

    #[test]
    fn invalid_links_are_counted_once_and_forgotten_after_a_full_walk_without_them() {
        let metrics = SelfMetrics::new("default");
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
}
