//! Webhook events between polls: the **ledger** (each link's latest state as events told it
//! since the last complete poll), the **overlay** (the last poll's figures with the ledger
//! applied, republished at most every [`REPUBLISH_SPACING`]) and what a poll may take from the
//! ledger instead of reading a terminal listing.
//!
//! # Polls stay the truth
//! Every complete poll replaces the figures whole; the ledger only moves them until the next one.
//! When the poll completes, the events received before it started are dropped (the poll read
//! their effects), the later ones are applied again on top of its figures. So a lost or late
//! event costs at most one poll interval of wrong live figures, and a missing subscription
//! costs nothing but real time. (Terminal statuses settled from events rest on the assumption
//! written below.)
//!
//! # The overlay
//! The poll keeps its open and processing links whole; the terminal statuses (and statuses the
//! exporter does not know) are carried as the poll's totals. An event replaces its link's
//! contribution when the poll counted the link as live, and adds the link when it is a newcomer
//! (unknown to that poll and certainly created after it started, less the flows' allowance).
//! Any other event changes nothing: it concerns a terminal link the poll already counted
//! (terminal links are taken as final, see [`crate::planner`]), or a link the poll left out (of
//! a status the exporter does not know, with unusable data, or missed by a walk the listing
//! moved under); the next poll reads those. Out-of-order deliveries are settled by `updated_at`:
//! an event older than the link's latest one in the ledger is ignored, and so is one older than
//! the start of the poll that read the link live (a retry delivered late).
//!
//! # What a poll takes from the ledger, and why the figures stay exact
//! The planner's incremental poll walks the live statuses in full and probes each terminal
//! status's count; a count that grew by `k` means `k` newcomers, which it looks for among last
//! poll's live links or walks the status for. With webhooks, before the probes, it takes the
//! ledger's links in each terminal status `s` that are certainly not among the links `s` held at
//! the last poll: those live at the last poll (they were not in `s` then), newcomers as above,
//! and those this poll's live walk saw live (moved in after the walk read them). **Assumed:** a
//! link is in `s`, as the list endpoint counts it, by the time its event is received (Qonto
//! sends an event after the change it tells of is stored); since terminal links stay where they
//! are and the ledger is read before the probe, each is then counted in `s` at the probe. So
//! when the count grew by exactly their number, they are all of `s`'s newcomers: the carried
//! totals plus the events' amounts are `s`'s figures, and no page of `s` is read. The links the
//! live walk saw live stay counted as the walk saw them (a poll's figures are as of its walk),
//! and the remembered count leaves them out, so the next poll finds them moved as usual. Any
//! other count falls back to the planner's own plan, so lost events, downtime and a missing
//! subscription heal by themselves. The event's amount is trusted as the link's: it is signed
//! by Qonto, and a terminal link's amount is final; a full resync checks it like every carried
//! figure. If the assumption fails (a count that lags its event while another newcomer, whose
//! event is late, makes up the difference), the status holds the wrong one of the two links
//! until the lagging link reaches the count: the count then exceeds the remembered one, and the
//! next poll looks for or walks the status, which corrects it.
//!
//! # Why the live walk is never skipped
//! Counts cannot see an open link's amount or expiration change, a link deleted while another is
//! created, or an event lost for a link that stays live; the live walk is what makes every poll
//! exact whatever the events did, and it is the floor of a poll's cost. Skipping it would make
//! the figures only as good as the deliveries until the next full resync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use crate::aggregate::{AgeBuckets, Aggregator, Limits, Snapshot, TERMINAL_STATUSES, Window};
use crate::aggregate::{canonical_status, read};
use crate::metrics::SelfMetrics;
use crate::planner::{IdKey, LIVE_STATUSES, Memory};
use crate::publish::{PollFacts, Published, Shared};
use crate::qonto::model::Link;
use crate::shutdown::stopped;
use crate::webhook::Delivery;
use crate::webhook::event::{LinkEvent, Payload};
use crate::webhook::metrics::Outcome;

/// Least time between two republishes of one organisation's figures.
pub const REPUBLISH_SPACING: Duration = Duration::from_millis(500);

/// Most links the ledger holds between two polls; events beyond are ignored (counted): the next
/// poll reads their effects anyway.
pub const MAX_LEDGER: usize = 500_000;

/// One link's latest state, as events told it.
#[derive(Debug, Clone)]
struct Entry {
    link: LinkEvent,
    /// Receipt order: entries at or before a poll's cut are dropped when it completes.
    seq: u64,
}

/// What events said since the last complete poll.
#[derive(Debug, Default)]
pub struct Ledger {
    links: HashMap<String, Entry>,
    seq: u64,
    /// The sequence when the running poll started.
    cut: u64,
    /// Whether the ledger was found full since the last poll completed (logged once).
    full: bool,
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The link's state in the ledger changed.
    Applied,
    /// Older than the state held (`updated_at`), or the ledger is full.
    Ignored,
}

impl Ledger {
    /// Records `link` as its link's latest state, unless an event with a later `updated_at`
    /// is held (one without `updated_at` counts as the latest: receipt order).
    pub fn apply(&mut self, link: LinkEvent) -> Applied {
        if let Some(held) = self.links.get(&link.id) {
            if let (Some(old), Some(new)) = (held.link.updated_at, link.updated_at) {
                if new < old {
                    return Applied::Ignored;
                }
            }
        } else if self.links.len() >= MAX_LEDGER {
            if !self.full {
                self.full = true;
                tracing::warn!(
                    links = MAX_LEDGER,
                    "webhook event ledger full: new links' events are ignored until the next poll completes (it reads them)"
                );
            }
            return Applied::Ignored;
        }
        self.seq += 1;
        let seq = self.seq;
        self.links.insert(link.id.clone(), Entry { link, seq });
        Applied::Applied
    }

    /// Marks the start of a poll: what is held now, that poll reads the effects of.
    pub fn begin_poll(&mut self) {
        self.cut = self.seq;
    }

    /// A poll that began with [`Ledger::begin_poll`] completed: drops what it read.
    pub fn end_poll(&mut self) {
        let cut = self.cut;
        self.links.retain(|_, e| e.seq > cut);
        self.full = false;
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// The links held in a terminal status, with usable data, by status.
    pub fn terminal(&self) -> HashMap<&'static str, Vec<LinkEvent>> {
        let mut by: HashMap<&'static str, Vec<LinkEvent>> = HashMap::new();
        for e in self.links.values() {
            let link = e.link.link();
            let Ok(data) = read(&link) else { continue };
            if let Some(s) = TERMINAL_STATUSES.iter().find(|s| **s == data.status) {
                by.entry(s).or_default().push(e.link.clone());
            }
        }
        by
    }
}

/// A terminal status's newcomers as events tell them (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Joined {
    /// Links not in the status at the last poll and not seen live by this poll: to add.
    pub(crate) add: Vec<LinkEvent>,
    /// Links this poll's live walk saw live: in the count, counted live by this poll.
    pub(crate) after_walk: u64,
}

/// Sorts the ledger's terminal links of one status (from [`Ledger::terminal`]): `live_now`
/// holds this poll's live id hashes (sorted), `memory` is the last poll's. A link neither live
/// at the last poll nor a newcomer is left out (a terminal link that poll may have held).
pub(crate) fn joined(
    links: &[LinkEvent],
    memory: &Memory,
    live_now: &[(u64, i64)],
    id_key: &IdKey,
    now: i64,
) -> Joined {
    let mut j = Joined::default();
    for l in links {
        let hash = id_key.hash_one(&l.id);
        if live_now.binary_search_by_key(&hash, |(h, _)| *h).is_ok() {
            j.after_walk += 1;
        } else if memory.live.binary_search_by_key(&hash, |(h, _)| *h).is_ok()
            || crate::flows::newcomer(memory, hash, l.created_at.as_deref(), now)
        {
            j.add.push(l.clone());
        }
    }
    j
}

/// What the last complete poll left for the overlay.
pub(crate) struct Base {
    /// Its published value (figures and poll facts).
    pub(crate) published: Arc<Published>,
    /// Its open and processing links, by id.
    pub(crate) live: HashMap<String, Link<'static>>,
    /// Its memory, to tell newcomers from links it held.
    pub(crate) memory: Memory,
}

/// How the overlay aggregates (the poller's settings).
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    pub windows: Vec<Window>,
    pub limits: Limits,
    pub aging: AgeBuckets,
}

/// The last poll's figures with the ledger applied, relative to `now`.
pub(crate) fn overlay(
    base: &Base,
    ledger: &Ledger,
    cfg: &OverlayConfig,
    now: OffsetDateTime,
) -> Snapshot {
    let mut agg = Aggregator::new(now, &cfg.windows, cfg.limits).with_aging(cfg.aging.clone());
    let snap = &base.published.snapshot;
    let mut statuses: Vec<&str> = snap.links.keys().map(|k| k.status.as_str()).collect();
    statuses.dedup();
    for status in statuses {
        if !LIVE_STATUSES.contains(&status) {
            agg.carry(status, &snap.status_rows(status));
        }
    }
    for (id, link) in &base.live {
        if !ledger.links.contains_key(id) {
            agg.add(link);
        }
    }
    let unix = now.unix_timestamp();
    let key = base.memory.id_key;
    // The poll read its live links after it started: an event of a change before that (a
    // retry delivered late) is older than what the poll read, and the poll's reading stays.
    let polled = i128::from(base.memory.polled_at).saturating_mul(1_000_000_000);
    for (id, e) in &ledger.links {
        let read = base.live.get(id);
        if let (Some(link), Some(u)) = (read, e.link.updated_at) {
            if u < polled {
                agg.add(link);
                continue;
            }
        }
        if read.is_some()
            || crate::flows::newcomer(
                &base.memory,
                key.hash_one(id),
                e.link.created_at.as_deref(),
                unix,
            )
        {
            agg.add(&e.link.link());
        }
    }
    agg.finish()
}

/// One organisation's webhook state, shared by its poller and its event task.
pub struct EventState {
    inner: Mutex<Inner>,
    cfg: OverlayConfig,
    /// The organisation's name (the published gauges' label).
    organization: String,
}

struct Inner {
    ledger: Ledger,
    base: Option<Base>,
    /// The ledger changed since the last publish.
    dirty: bool,
}

impl EventState {
    pub fn new(cfg: OverlayConfig, organization: &str) -> Arc<EventState> {
        Arc::new(EventState {
            inner: Mutex::new(Inner {
                ledger: Ledger::default(),
                base: None,
                dirty: false,
            }),
            cfg,
            organization: organization.to_owned(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A poll starts (see [`Ledger::begin_poll`]).
    pub fn begin_poll(&self) {
        self.lock().ledger.begin_poll();
    }

    /// The ledger's terminal links, for the running poll's probes.
    pub fn terminal(&self) -> HashMap<&'static str, Vec<LinkEvent>> {
        self.lock().ledger.terminal()
    }

    /// A poll completed: publishes its value, with the events received since it started
    /// applied, and makes it the overlay's base, in one step under the lock, so an overlay of
    /// the previous poll can never replace it, nor the figures step back to the walk's view.
    pub(crate) fn publish_poll(&self, shared: &Shared, base: Base) {
        let mut inner = self.lock();
        inner.ledger.end_poll();
        inner.base = Some(base);
        inner.dirty = !inner.ledger.is_empty();
        if !self.store_overlay(&mut inner, shared) {
            if let Some(base) = &inner.base {
                shared.published.store(Some(base.published.clone()));
            }
        }
    }

    /// Applies one event; returns what it did.
    fn apply(&self, link: LinkEvent) -> Applied {
        let mut inner = self.lock();
        let applied = inner.ledger.apply(link);
        if applied == Applied::Applied {
            inner.dirty = true;
        }
        applied
    }

    /// Republishes the overlay if events changed the ledger since the last publish and a poll
    /// has completed. Returns whether it did.
    fn republish(&self, shared: &Shared) -> bool {
        let mut inner = self.lock();
        self.store_overlay(&mut inner, shared)
    }

    fn store_overlay(&self, inner: &mut Inner, shared: &Shared) -> bool {
        let Some(base) = inner.base.as_ref().filter(|_| inner.dirty) else {
            return false;
        };
        let snapshot = overlay(base, &inner.ledger, &self.cfg, OffsetDateTime::now_utc());
        let p = &base.published;
        let facts = PollFacts {
            finished_at: p.finished_at,
            duration: p.duration,
            pages: p.pages,
            requests: p.requests,
            full: p.full,
            restored: p.restored,
        };
        shared.published.store(Some(Arc::new(Published::new(
            snapshot,
            facts,
            &self.organization,
        ))));
        inner.dirty = false;
        true
    }
}

/// Applies an organisation's queued events and republishes its figures, until `shutdown`.
pub async fn run(
    state: Arc<EventState>,
    mut inbox: mpsc::Receiver<Delivery>,
    shared: Arc<Shared>,
    metrics: Arc<SelfMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = Instant::now()
        .checked_sub(REPUBLISH_SPACING)
        .unwrap_or_else(Instant::now);
    let mut pending = false;
    loop {
        let due = last.checked_add(REPUBLISH_SPACING).unwrap_or(last);
        tokio::select! {
            d = inbox.recv() => match d {
                Some(d) => {
                    pending |= handle(&state, &metrics, d);
                    // Whatever else is queued, in one go (one wake-up per burst).
                    while let Ok(d) = inbox.try_recv() {
                        pending |= handle(&state, &metrics, d);
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep_until(due.into()), if pending => {
                state.republish(&shared);
                last = Instant::now();
                pending = false;
            }
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Applies one delivery and counts its outcome; true when the figures may have moved.
fn handle(state: &EventState, metrics: &SelfMetrics, d: Delivery) -> bool {
    let (outcome, moved) = match d.event.payload {
        Payload::Link(link) => {
            let status = canonical_status(link.status.trim()).into_owned();
            let link = LinkEvent { status, ..link };
            match state.apply(link) {
                Applied::Applied => (Outcome::Applied, true),
                Applied::Ignored => (Outcome::Ignored, false),
            }
        }
        Payload::Connection { event } => {
            tracing::debug!(event = %event, "connection event received; the connection check after the next poll reads the status");
            (Outcome::Ignored, false)
        }
        Payload::Other => (Outcome::Ignored, false),
    };
    metrics.webhook.count(d.event.type_label, outcome);
    moved
}

#[cfg(test)]
mod tests;
