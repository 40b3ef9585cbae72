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
//! Links in a terminal status (paid, expired, canceled) never change again, and links are not
//! deleted, so the set of links of a terminal status only grows. Hence, if a terminal status
//! has the same `total_count` as when its totals were computed, it holds the same links and its
//! totals can be carried over unchanged; if the count moved, that status is walked again. Open
//! and processing links can change at any time and are walked in full on every poll; expiry
//! figures only concern open links, so they are always exact. A link that moves from open to
//! a terminal status between two requests of one poll is seen twice and counted once (ids are
//! deduplicated across all walks of a poll). A status the exporter does not know yet would be
//! invisible to status-filtered walks, so each incremental poll checks that the unfiltered
//! `total_count` equals the sum of the parts, and walks everything when it does not. A full
//! walk also runs every `full_resync` as a safety net.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::aggregate::{
    Aggregator, InvalidReason, Limits, OPEN, Outcome, Snapshot, StatusRows, TERMINAL_STATUSES,
    Window,
};
use crate::metrics::{SelfMetrics, render_snapshot};
use crate::qonto::client::{ApiError, QontoClient};
use crate::qonto::model::Page;
use crate::qonto::walk::{WalkSummary, count, walk};
use crate::shutdown::stopped;

/// Statuses walked in full on every incremental poll.
const LIVE_STATUSES: [&str; 2] = [OPEN, "processing"];
/// Ids remembered so that each invalid link is logged once, not every poll.
const LOGGED_IDS_MAX: usize = 10_000;

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

/// What the previous poll knew about terminal statuses.
#[derive(Debug, Clone)]
struct Memory {
    last_full: Instant,
    /// API `total_count` per terminal status, and the totals computed for exactly that set.
    terminal: BTreeMap<&'static str, (u64, StatusRows)>,
}

/// `(pages, drift, API count per terminal status)` of the walks of one poll attempt.
type Walked = (u64, Option<String>, BTreeMap<&'static str, u64>);

/// Per-poll bookkeeping fed by the page callback.
struct Tally {
    agg: Aggregator,
    invalid: Vec<(InvalidReason, Option<String>)>,
    duplicates: u64,
    served_by_status: BTreeMap<String, u64>,
}

/// Runs polls on an interval and publishes their results.
pub struct Poller {
    client: Arc<QontoClient>,
    cfg: PollerConfig,
    metrics: Arc<SelfMetrics>,
    shared: Arc<Shared>,
    memory: Option<Memory>,
    logged: HashSet<String>,
    refused: bool,
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
            logged: HashSet::new(),
            refused: false,
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
        self.metrics
            .record_poll_requests(requests, self.cfg.interval);
        self.metrics.last_duration.set(duration.as_secs_f64());
        match result {
            Ok((snapshot, pages, full)) => {
                let rendered = render_snapshot(&snapshot);
                let links = snapshot.unique_links;
                let finished_at = SystemTime::now();
                self.shared.published.store(Some(Arc::new(Published {
                    snapshot,
                    rendered,
                    finished_at,
                    duration,
                    pages,
                    requests,
                    full,
                })));
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
                || self
                    .memory
                    .as_ref()
                    .is_none_or(|m| m.last_full.elapsed() >= self.cfg.full_resync);
            let tally = Mutex::new(Tally {
                agg: Aggregator::new(now, &self.cfg.windows, self.cfg.limits),
                invalid: Vec::new(),
                duplicates: 0,
                served_by_status: BTreeMap::new(),
            });
            let on_page = |page: &Page<'_>| {
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                for link in &page.links {
                    match t.agg.add(link) {
                        Outcome::Added => {}
                        Outcome::Duplicate => t.duplicates += 1,
                        Outcome::Invalid(r) => t.invalid.push((r, Some(link.id.to_string()))),
                    }
                    if let Some(n) = t.served_by_status.get_mut(&*link.status) {
                        *n += 1;
                    } else {
                        t.served_by_status.insert(link.status.to_string(), 1);
                    }
                }
                for m in &page.malformed {
                    t.invalid.push((InvalidReason::Malformed, m.id.clone()));
                }
            };
            let outcome = if full {
                self.walk_full(&on_page).await?
            } else {
                match self.walk_incremental(&tally, &on_page).await? {
                    Some(o) => o,
                    None => {
                        // Links moving between the requests of one poll can make the parts
                        // miss the total once; only a repeated mismatch costs a full walk.
                        mismatches += 1;
                        force_full = mismatches > 1;
                        continue;
                    }
                }
            };
            let (pages, drift, terminal) = outcome;
            let t = tally.into_inner().unwrap_or_else(|p| p.into_inner());
            let drift = drift.or_else(|| {
                (t.duplicates > 0).then(|| format!("{} links served twice", t.duplicates))
            });
            let settled = match drift {
                Some(why) => {
                    self.metrics.drift.inc();
                    if attempt < self.cfg.max_rewalks {
                        attempt += 1;
                        tracing::info!(%why, attempt, "listing changed during the poll; walking again");
                        continue;
                    }
                    tracing::warn!(%why, "listing kept changing; publishing the deduplicated figures of the last walk");
                    false
                }
                None => true,
            };
            self.count_invalid(&t.invalid);
            let snapshot = t.agg.finish();
            if full {
                self.metrics.full_walks.inc();
            }
            // Terminal totals are reused only when they are known to match the API's count
            // for exactly that set; after unsettled drift, the next poll walks everything.
            self.memory = settled.then(|| {
                let counts: Vec<(&'static str, u64)> = if full {
                    TERMINAL_STATUSES
                        .iter()
                        .map(|s| (*s, t.served_by_status.get(*s).copied().unwrap_or(0)))
                        .collect()
                } else {
                    terminal.into_iter().collect()
                };
                Memory {
                    last_full: match (&self.memory, full) {
                        (Some(m), false) => m.last_full,
                        _ => Instant::now(),
                    },
                    terminal: counts
                        .into_iter()
                        .map(|(s, n)| (s, (n, snapshot.status_rows(s))))
                        .collect(),
                }
            });
            return Ok((snapshot, pages, full));
        }
    }

    async fn walk_full(&self, on_page: &(dyn Fn(&Page<'_>) + Sync)) -> Result<Walked, PollError> {
        let s = walk(&self.client, &[], self.cfg.concurrency, on_page).await?;
        Ok((s.pages, s.drift, BTreeMap::new()))
    }

    /// Live statuses walked, terminal ones probed and re-walked only if they moved. `None`
    /// when the parts do not add up to the whole (an unknown status): walk everything.
    async fn walk_incremental(
        &self,
        tally: &Mutex<Tally>,
        on_page: &(dyn Fn(&Page<'_>) + Sync),
    ) -> Result<Option<Walked>, PollError> {
        let Some(memory) = &self.memory else {
            return Ok(None);
        };
        let live: WalkSummary =
            walk(&self.client, &LIVE_STATUSES, self.cfg.concurrency, on_page).await?;
        let mut pages = live.pages;
        let mut drift = live.drift;
        let mut parts = live.total_count;
        let mut terminal = BTreeMap::new();
        for status in TERMINAL_STATUSES {
            let n = count(&self.client, &[status]).await?;
            pages += 1;
            parts += n;
            match memory.terminal.get(status) {
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
                _ => {
                    let s = walk(&self.client, &[status], self.cfg.concurrency, on_page).await?;
                    pages += s.pages;
                    drift = drift.or(s.drift);
                    terminal.insert(status, s.total_count);
                }
            }
        }
        let total = count(&self.client, &[]).await?;
        pages += 1;
        if total != parts {
            tracing::info!(
                total,
                parts,
                "status counts do not add up to the total (a status the exporter does not know, or links moving); walking everything"
            );
            return Ok(None);
        }
        Ok(Some((pages, drift, terminal)))
    }

    fn count_invalid(&mut self, invalid: &[(InvalidReason, Option<String>)]) {
        for (reason, id) in invalid {
            self.metrics
                .invalid_links
                .with_label_values(&[reason.as_str()])
                .inc();
            let key = format!("{}:{}", reason.as_str(), id.as_deref().unwrap_or("?"));
            if self.logged.len() >= LOGGED_IDS_MAX {
                self.logged.clear();
            }
            if self.logged.insert(key) {
                tracing::warn!(
                    id = id.as_deref().unwrap_or("unknown"),
                    reason = reason.as_str(),
                    "payment link skipped: its data is unusable"
                );
            }
        }
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
