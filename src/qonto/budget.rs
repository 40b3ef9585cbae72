//! The request budget: this exporter's share of Qonto's two per-IP windows, enforced before every
//! request, and measured.
//!
//! Qonto allows each IP address 1,000 requests per 10 seconds **and** 10,000 per 10 minutes,
//! shared with every other integration calling from that address (FACTS.md). The exporter takes
//! a share of each window (`--qonto.budget-share`, default 0.5): by default at most 500 requests
//! in any 10 seconds and 5,000 in any 10 minutes, within one process (a new process starts with
//! full buckets: one that restarts over and over can exceed the share across its lives). Requests go out at the pace of the short
//! window's share (about 48 a second by default) while the 10-minute share has room; a poll that
//! would overrun the 10-minute share (the first poll of a large organisation) slows down to fit
//! it, instead of drawing 429s. `--qonto.max-requests-per-second` can add a flat ceiling.
//!
//! # Two GCRA limiters, each sized so that a rolling window never holds more than its share
//!
//! Each window is a [`governor`] limiter (the generic cell rate algorithm: a token bucket of
//! `burst` cells refilled one every `period`), and a request goes out only when every limiter
//! admits it. governor's GCRA admits a cell at time `t` when `t ≥ tat − (burst − 1)·period`, then
//! sets `tat = max(tat, t) + period` (`tat` is the theoretical arrival time). Take cells `i < j`,
//! admitted in that order at times `c_i ≤ c_j`: after cell `i`, `tat ≥ c_i + period`, and each
//! cell up to `j − 1` adds `period`, so before cell `j`, `tat ≥ c_i + (j − i)·period`, and cell
//! `j` was admitted only if `c_j ≥ c_i + (j − i − burst + 1)·period`. Hence `n = j − i + 1` cells
//! within an interval of length `L` satisfy `(n − burst)·period ≤ L`: **any interval shorter than
//! `L` holds at most `burst + ⌈L / period⌉ − 1` cells**.
//!
//! The obvious quota, `burst = share` and `period = window / share`, therefore lets `2·share − 1`
//! requests into one rolling window (a full bucket, then the refill during the window): twice
//! the share. Each limiter here is sized so that it cannot: with `S` the share, `B` the burst and
//! `L = window + allowance`, `period = ⌈L / (S − B + 1)⌉`, so that `⌈L / period⌉ ≤ S − B + 1` and
//! any interval shorter than `L` holds at most `B + (S − B + 1) − 1 = S` requests
//! ([`Pacing::most_in`]; `tests::gcra_bound_holds_and_the_naive_quota_breaks_it` drives governor
//! with a fake clock to check it). The `allowance` (2 % of the window, at least 100 ms unless the
//! window is shorter than 200 ms) stretches the window the limiter counts over beyond Qonto's, so
//! that requests whose way from the budget's decision to Qonto varies by up to that much still
//! land at most `S` to a window at Qonto's end.
//!
//! The price of a hard rolling bound with token buckets is a choice between burst and sustained
//! rate (`B + rate·window ≈ S`). The short window is the pace: its burst is 2 % of its share
//! (10 of 500: enough to absorb timer lateness), so it sustains 491 requests per 10.2 s, 48/s.
//! The long window is the budget: a fifth of its share may go out at the short window's pace
//! (1,000 requests, 100,000 links, by default), and the rest of it is the sustained rate (4,001
//! per 10 min 12 s, 6.5/s, 392 a minute). A poll of up to 1,000 pages that starts with the bucket
//! full (after a quiet spell, as a first poll does) is therefore never slowed by the 10-minute
//! window, and a longer one (a first poll of more than 100,000 links) continues at the sustained
//! rate, logging once a minute that it is held back and for how long.
//!
//! # Admission
//!
//! The limiters are checked one after the other under one lock, so the cells of both are taken
//! at the same instant and in the same order as the requests go out: a request never takes a
//! short-window cell, waits for the long window, and leaves later than its cell says (which
//! would void the bound above). A cell taken from an earlier limiter when a later one refuses is
//! wasted, never sent: the requests sent are a subset of each limiter's admitted cells, so the
//! bound holds for them. After a refusal by the long window, nobody checks again before it has
//! room, so at most one short-window cell is wasted per long-window period.
//!
//! # Fair turns between organisations
//!
//! One process polls several organisations from one IP, so they share one budget. Requests wait
//! in one queue per organisation (a *lane*), and each request the limiters admit goes to the
//! next lane in turn (round robin), to the oldest waiter of that lane: while `k` organisations
//! wait, each gets every `k`-th request, however many pages it has queued. A 1M-link
//! organisation's first poll (10,000 pages) therefore delays a 100-link organisation's poll by
//! at most one request per other waiting organisation, not by its 10,000 pages. The turns are
//! handed out by one task ([`Budget::acquire`] starts it when the first request waits, and it
//! ends when none does). A waiter that gave up (its poll timed out) is skipped; the cell it was
//! admitted for is counted as sent although no request used it, which errs on the safe side.
//!
//! # Measurement
//!
//! Every admitted request is counted in [`RequestWindow`], a ring of 601 buckets of 1/600 of the
//! long window (1 s for Qonto's 10 minutes), so `qonto_exporter_api_requests_10m` and
//! `qonto_exporter_api_budget_10m_usage_ratio` are measured, not projected from a poll's count.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::rate_window::RateWindow;

/// Default `--qonto.budget-share`: half of each of Qonto's windows.
pub const DEFAULT_SHARE: f64 = 0.5;
/// Burst of the short window's limiter, as a fraction of its share.
pub const SHORT_BURST_FRACTION: f64 = 0.02;
/// Burst of the long window's limiter, as a fraction of its share.
pub const LONG_BURST_FRACTION: f64 = 0.2;
/// Buckets of [`RequestWindow`] per long window.
const BUCKETS_PER_WINDOW: u32 = 600;

/// The budget's settings (`--qonto.budget-share`, `--qonto.rate-limit-short`,
/// `--qonto.rate-limit-long`, `--qonto.max-requests-per-second`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Fraction, in (0, 1], of each of Qonto's windows this exporter may use.
    pub share: f64,
    /// Qonto's short window (1,000 requests per 10 s).
    pub short: RateWindow,
    /// Qonto's long window (10,000 requests per 10 min).
    pub long: RateWindow,
    /// An extra flat ceiling, requests per second; `None` for none.
    pub max_requests_per_second: Option<f64>,
}

impl Default for BudgetConfig {
    /// Half of Qonto's windows, no extra ceiling.
    fn default() -> BudgetConfig {
        BudgetConfig {
            share: DEFAULT_SHARE,
            short: RateWindow::QONTO_SHORT,
            long: RateWindow::QONTO_LONG,
            max_requests_per_second: None,
        }
    }
}

/// How one window's share is enforced: a GCRA of `burst` cells, one more every `period`, which
/// never admits more than `share` requests in any interval shorter than `window + allowance`
/// (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Qonto's window.
    pub window: RateWindow,
    /// Most requests of this exporter in any rolling window (`S`).
    pub share: u32,
    /// Requests that may go out at once (`B`).
    pub burst: u32,
    /// One more request every `period` once the burst is spent.
    pub period: Duration,
    /// How much longer than Qonto's window the bound covers.
    pub allowance: Duration,
}

impl Pacing {
    /// The pacing of `share` (in (0, 1]) of `window`, with a burst of `burst_fraction` of it. The
    /// share is at least one request per window.
    pub fn new(window: RateWindow, share: f64, burst_fraction: f64) -> Pacing {
        // The epsilon keeps 0.3 × 10 at 3 despite binary floating point.
        let s = (share.clamp(0.0, 1.0) * f64::from(window.limit) + 1e-9).floor() as u32;
        let s = s.clamp(1, window.limit);
        let burst = ((f64::from(s) * burst_fraction.clamp(0.0, 1.0)).floor() as u32).clamp(1, s);
        let w = window.period;
        let allowance = (w / 50).max(Duration::from_millis(100).min(w / 2));
        let stretched = w.as_nanos() + allowance.as_nanos();
        let cells = u128::from(s - burst + 1);
        let period_ns = stretched.div_ceil(cells).clamp(1, u128::from(u64::MAX));
        Pacing {
            window,
            share: s,
            burst,
            period: Duration::from_nanos(period_ns as u64),
            allowance,
        }
    }

    /// The governor quota: `burst` cells, one more every `period`.
    pub fn quota(&self) -> Quota {
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(self.period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }

    /// The most requests this pacing admits in an interval shorter than `len`:
    /// `burst + ⌈len / period⌉ − 1` (module docs).
    pub fn most_in(&self, len: Duration) -> u64 {
        let cells = len.as_nanos().div_ceil(self.period.as_nanos().max(1));
        u64::from(self.burst) + u64::try_from(cells).unwrap_or(u64::MAX) - 1
    }

    /// Requests per second once the burst is spent.
    pub fn sustained_per_second(&self) -> f64 {
        1.0 / self.period.as_secs_f64()
    }
}

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Why a request must wait, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) wait: Duration,
    /// The 10-minute share (not the pace or the ceiling) holds the request back.
    pub(crate) long: bool,
}

/// The admission logic over any governor clock (a fake one in tests): every limiter must admit a
/// request, checked under one lock (module docs, "Admission").
pub(crate) struct Gate<C: Clock> {
    clock: C,
    ceiling: Option<Limiter<C>>,
    short: Limiter<C>,
    long: Limiter<C>,
    long_pacing: Pacing,
    state: Mutex<GateState<C::Instant>>,
}

struct GateState<I> {
    /// The long window refused until then: nobody checks before (no wasted cells).
    long_ready_at: Option<I>,
    /// A mirror of the long limiter's theoretical arrival time (governor keeps its own private),
    /// for [`Gate::long_cells_available`].
    long_tat: Option<I>,
}

impl<C: Clock + Clone> Gate<C> {
    pub(crate) fn new(short: &Pacing, long: &Pacing, ceiling: Option<Quota>, clock: C) -> Gate<C> {
        Gate {
            ceiling: ceiling.map(|q| RateLimiter::direct_with_clock(q, clock.clone())),
            short: RateLimiter::direct_with_clock(short.quota(), clock.clone()),
            long: RateLimiter::direct_with_clock(long.quota(), clock.clone()),
            clock,
            long_pacing: *long,
            state: Mutex::new(GateState {
                long_ready_at: None,
                long_tat: None,
            }),
        }
    }

    /// Admits one request now, or says how long to wait before asking again.
    pub(crate) fn try_acquire(&self) -> Result<(), Wait> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        if let Some(ready) = st.long_ready_at {
            if ready > now {
                return Err(Wait {
                    wait: ready.duration_since(now).into(),
                    long: true,
                });
            }
            st.long_ready_at = None;
        }
        let wait_for = |earliest: C::Instant| -> Duration {
            // At least a nanosecond: a refusal always has a future earliest time.
            Duration::from(earliest.duration_since(self.clock.now())).max(Duration::from_nanos(1))
        };
        if let Some(ceiling) = &self.ceiling {
            if let Err(nu) = ceiling.check() {
                return Err(Wait {
                    wait: wait_for(nu.earliest_possible()),
                    long: false,
                });
            }
        }
        if let Err(nu) = self.short.check() {
            return Err(Wait {
                wait: wait_for(nu.earliest_possible()),
                long: false,
            });
        }
        match self.long.check() {
            Ok(()) => {
                let now = self.clock.now();
                let base = st.long_tat.filter(|t| *t > now).unwrap_or(now);
                st.long_tat = Some(base + self.long_pacing.period.into());
                Ok(())
            }
            Err(nu) => {
                let ready = nu.earliest_possible();
                st.long_ready_at = Some(ready);
                Err(Wait {
                    wait: wait_for(ready),
                    long: true,
                })
            }
        }
    }

    /// Requests the long window would admit at once now (its bucket), from the mirror of its
    /// state.
    pub(crate) fn long_cells_available(&self) -> u64 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        let p = &self.long_pacing;
        let period = p.period.as_nanos().max(1);
        let Some(tat) = st.long_tat.filter(|t| *t > now) else {
            return u64::from(p.burst);
        };
        // Admitted while `now ≥ tat − (burst − 1)·period`; each admission adds a period.
        let tau = period * u128::from(p.burst - 1);
        let ahead = Duration::from(tat.duration_since(now)).as_nanos();
        if ahead > tau {
            0
        } else {
            u64::try_from((tau - ahead) / period + 1).unwrap_or(u64::MAX)
        }
    }
}

/// Requests sent in the last long window, measured: a ring of [`BUCKETS_PER_WINDOW`] + 1 buckets
/// of 1/600 of the window each (rounded up to the nanosecond). [`RequestWindow::count`] sums the
/// buckets of the last 600 whole widths and the current one, so it covers at least the window and
/// less than one bucket (and 600 ns) more: within the budget's allowance (1/50 of the window), so
/// it never exceeds the share the budget enforces.
#[derive(Debug)]
pub struct RequestWindow {
    origin: Instant,
    bucket: Duration,
    /// `(bucket number, requests)`; a slot whose number is stale counts 0.
    slots: Mutex<Vec<(u64, u64)>>,
}

impl RequestWindow {
    /// A ring for `window`, counting from `origin`.
    pub fn new(window: Duration, origin: Instant) -> RequestWindow {
        let ns = window.as_nanos().div_ceil(u128::from(BUCKETS_PER_WINDOW));
        let bucket = Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
            .max(Duration::from_micros(1));
        RequestWindow {
            origin,
            bucket,
            slots: Mutex::new(vec![(u64::MAX, 0); BUCKETS_PER_WINDOW as usize + 1]),
        }
    }

    fn index(&self, at: Instant) -> u64 {
        let n = at.saturating_duration_since(self.origin).as_nanos() / self.bucket.as_nanos();
        u64::try_from(n).unwrap_or(u64::MAX - 1)
    }

    /// Counts one request sent at `at`.
    pub fn record(&self, at: Instant) {
        let i = self.index(at);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let len = slots.len() as u64;
        let slot = &mut slots[(i % len) as usize];
        if slot.0 == i {
            slot.1 += 1;
        } else {
            *slot = (i, 1);
        }
    }

    /// Requests recorded in the last window before `now` (see the type's docs).
    pub fn count(&self, now: Instant) -> u64 {
        let i = self.index(now);
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = i.saturating_sub(u64::from(BUCKETS_PER_WINDOW));
        slots
            .iter()
            .filter(|(n, _)| *n != u64::MAX && *n >= oldest && *n <= i)
            .map(|(_, c)| c)
            .sum()
    }
}

/// The budget of one client: the limiters, the measured window, and what it takes to estimate
/// the time a number of requests needs.
pub struct Budget {
    config: BudgetConfig,
    short: Pacing,
    long: Pacing,
    gate: Gate<MonotonicClock>,
    sent: RequestWindow,
    turns: Mutex<Turns>,
    lanes: AtomicU64,
    /// Until when a 429 paused every request of the process (Qonto's limits are per IP).
    paused_until: Mutex<Option<Instant>>,
}

/// A queue of requests in [`Budget`]'s round robin: one per organisation (client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lane(u64);

/// The waiters of every lane and the order of their turns (see the module docs).
#[derive(Default)]
struct Turns {
    waiting: HashMap<Lane, VecDeque<tokio::sync::oneshot::Sender<Duration>>>,
    /// Lanes with waiters, the next to be served first.
    ring: VecDeque<Lane>,
    /// True while the task handing out turns runs.
    dealing: bool,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("short", &self.short)
            .field("long", &self.long)
            .field("ceiling", &self.config.max_requests_per_second)
            .finish_non_exhaustive()
    }
}

/// The flat ceiling of `--qonto.max-requests-per-second`: `rps` a second, bursting up to one
/// second's worth (at most 1,000).
fn ceiling_quota(rps: f64) -> Option<Quota> {
    if !(rps.is_finite() && rps > 0.0) {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / rps).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(rps.ceil().clamp(1.0, 1000.0) as u32).unwrap_or(NonZeroU32::MIN);
    Some(Quota::with_period(period)?.allow_burst(burst))
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Budget {
        let short = Pacing::new(config.short, config.share, SHORT_BURST_FRACTION);
        let long = Pacing::new(config.long, config.share, LONG_BURST_FRACTION);
        let ceiling = config.max_requests_per_second.and_then(ceiling_quota);
        Budget {
            config,
            gate: Gate::new(&short, &long, ceiling, MonotonicClock),
            sent: RequestWindow::new(config.long.period, Instant::now()),
            short,
            long,
            turns: Mutex::new(Turns::default()),
            lanes: AtomicU64::new(0),
            paused_until: Mutex::new(None),
        }
    }

    /// A new lane: a client's own queue in the round robin.
    pub fn lane(&self) -> Lane {
        Lane(self.lanes.fetch_add(1, Ordering::Relaxed))
    }

    /// Waits for `lane`'s turn and for every limiter to admit one request, counts it as sent,
    /// and returns how long it was held back by the long window's share. Send the request at
    /// once after this.
    pub async fn acquire(self: &Arc<Self>, lane: Lane) -> Duration {
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let start = {
                let mut t = self.turns.lock().unwrap_or_else(|p| p.into_inner());
                let queue = t.waiting.entry(lane).or_default();
                queue.push_back(tx);
                if queue.len() == 1 {
                    t.ring.push_back(lane);
                }
                !std::mem::replace(&mut t.dealing, true)
            };
            if start {
                tokio::spawn(Arc::clone(self).deal());
            }
            match rx.await {
                Ok(held) => return held,
                // The dealer ended without serving this turn (the runtime is shutting down, or
                // it died): queue again, which starts a new dealer; never send unadmitted.
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }

    /// Hands out turns while anyone waits (see the module docs).
    async fn deal(self: Arc<Self>) {
        // If the dealer ends otherwise than by running out of waiters (a panic, the runtime
        // dropping it), the next waiter can start another and nobody waits on this one.
        struct Ending<'a>(&'a Budget, bool);
        impl Drop for Ending<'_> {
            fn drop(&mut self) {
                if self.1 {
                    let mut t = self.0.turns.lock().unwrap_or_else(|p| p.into_inner());
                    t.dealing = false;
                    // Dropping the senders wakes their waiters, which queue again.
                    t.waiting.clear();
                    t.ring.clear();
                }
            }
        }
        let mut ending = Ending(&self, true);
        loop {
            {
                let mut t = self.turns.lock().unwrap_or_else(|p| p.into_inner());
                // Waiters that gave up need no cell.
                t.waiting.retain(|_, q| {
                    q.retain(|tx| !tx.is_closed());
                    !q.is_empty()
                });
                let Turns { waiting, ring, .. } = &mut *t;
                ring.retain(|lane| waiting.contains_key(lane));
                if ring.is_empty() {
                    t.dealing = false;
                    ending.1 = false;
                    return;
                }
            }
            let held = self.admit().await;
            let mut t = self.turns.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(lane) = t.ring.pop_front() {
                let Some(queue) = t.waiting.get_mut(&lane) else {
                    continue;
                };
                let next = queue.pop_front();
                if queue.is_empty() {
                    t.waiting.remove(&lane);
                } else {
                    t.ring.push_back(lane);
                }
                if next.is_some_and(|tx| tx.send(held).is_ok()) {
                    break;
                }
            }
        }
    }

    /// Pauses every request of every lane for `wait` from now (a 429's `Retry-After`, already
    /// bounded by the caller); a longer pause already set stays.
    pub fn pause(&self, wait: Duration) {
        // An `Instant` must never overflow, whatever `wait` is.
        let Some(until) = Instant::now().checked_add(wait) else {
            return;
        };
        let mut p = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
    }

    /// Waits out the pause set by [`Budget::pause`], if any (and any extension of it).
    pub async fn wait_pause(&self) {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => return,
            }
        }
    }

    /// Waits out any pause, then until every limiter admits one request, and counts it as sent;
    /// returns how long the long window's share held it back.
    async fn admit(&self) -> Duration {
        self.wait_pause().await;
        let mut held = Duration::ZERO;
        loop {
            match self.gate.try_acquire() {
                Ok(()) => {
                    self.sent.record(Instant::now());
                    return held;
                }
                Err(Wait { wait, long }) => {
                    if long {
                        held += wait;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The short window's pacing.
    pub fn short(&self) -> &Pacing {
        &self.short
    }

    /// The long window's pacing.
    pub fn long(&self) -> &Pacing {
        &self.long
    }

    /// Requests sent in the last long window (10 minutes unless `--qonto.rate-limit-long`
    /// scales it), measured.
    pub fn requests_in_long_window(&self) -> u64 {
        self.sent.count(Instant::now())
    }

    /// [`Budget::requests_in_long_window`] over the long window's share: at most 1.
    pub fn long_usage_ratio(&self) -> f64 {
        self.requests_in_long_window() as f64 / f64::from(self.long.share)
    }

    /// Time `requests` more requests take at the current budget: as many as the long window's
    /// bucket holds now at the fast pace (the short window's, or the ceiling when slower), the
    /// rest at the long window's sustained rate. Ignores the time requests themselves take and
    /// the bucket's refill meanwhile, so it errs long for polls that fit in the bucket.
    pub fn time_for(&self, requests: u64) -> Duration {
        let ceiling = self
            .config
            .max_requests_per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map_or(Duration::ZERO, |r| Duration::from_secs_f64(1.0 / r));
        let fast = self.short.period.max(ceiling);
        let slow = self.long.period.max(fast);
        let now = self.gate.long_cells_available().min(requests);
        let mul = |d: Duration, n: u64| d.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
        mul(fast, now).saturating_add(mul(slow, requests - now))
    }

    /// One line describing the budget, for logs: `500/10s and 5000/10m (share 0.5 of
    /// 1000/10s and 10000/10m)`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}/{} and {}/{} (share {} of {} and {})",
            self.short.share,
            humantime::format_duration(self.short.window.period),
            self.long.share,
            humantime::format_duration(self.long.window.period),
            self.config.share,
            self.short.window,
            self.long.window,
        );
        if let Some(r) = self.config.max_requests_per_second {
            s.push_str(&format!(", at most {r}/s"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn window(s: &str) -> RateWindow {
        s.parse().unwrap()
    }

    /// The most times in any half-open interval `[a, a + len)`.
    fn peak(times: &[Duration], len: Duration) -> usize {
        let mut best = 0;
        let mut i = 0;
        for j in 0..times.len() {
            while times[j] - times[i] >= len {
                i += 1;
            }
            best = best.max(j + 1 - i);
        }
        best
    }

    /// A greedy sender: asks at every `step`, `steps` times, sending whenever the gate admits;
    /// the admission times.
    fn greedy(
        gate: &Gate<FakeRelativeClock>,
        clock: &FakeRelativeClock,
        step: Duration,
        steps: u32,
    ) -> Vec<Duration> {
        let mut sent = Vec::new();
        let mut now = Duration::ZERO;
        for _ in 0..steps {
            // Several requests may go out at one instant (a burst).
            while gate.try_acquire().is_ok() {
                sent.push(now);
            }
            clock.advance(step);
            now += step;
        }
        sent
    }

    #[test]
    fn default_pacing_matches_the_documented_figures() {
        let b = Budget::new(BudgetConfig::default());
        let (s, l) = (b.short(), b.long());
        assert_eq!((s.share, s.burst), (500, 10));
        assert_eq!(s.allowance, Duration::from_millis(200));
        // 491 cells in 10.2 s: a little over 48 a second.
        assert!((48.0..48.2).contains(&s.sustained_per_second()), "{s:?}");
        assert_eq!((l.share, l.burst), (5000, 1000));
        assert_eq!(l.allowance, Duration::from_secs(12));
        // 4,001 cells in 612 s: 6.5 a second, 392 a minute.
        assert!((6.53..6.54).contains(&l.sustained_per_second()), "{l:?}");
        for p in [s, l] {
            assert_eq!(p.most_in(p.window.period + p.allowance), u64::from(p.share));
        }
    }

    #[test]
    fn shares_round_down_and_never_reach_zero() {
        assert_eq!(Pacing::new(window("10/1s"), 0.3, 0.2).share, 3);
        assert_eq!(Pacing::new(window("1/1s"), 0.5, 0.2).share, 1);
        assert_eq!(Pacing::new(window("1000/10s"), 1.0, 0.02).share, 1000);
        let tiny = Pacing::new(window("5/10ms"), 1.0, 1.0);
        assert_eq!((tiny.share, tiny.burst), (5, 5));
        assert!(tiny.period >= Duration::from_nanos(1));
        assert!(tiny.allowance <= Duration::from_millis(5));
    }

    /// The module's proof, checked: whatever the window, share and burst fraction, a greedy
    /// sender through governor with the sized quota never gets more than the share into any
    /// interval shorter than window + allowance; with the obvious quota (burst = share, period =
    /// window / share) it gets nearly twice the share (at least 1.9 times, in these coarse
    /// steps) into one window.
    #[test]
    fn gcra_bound_holds_and_the_naive_quota_breaks_it() {
        for (w, share, fraction) in [
            ("1000/10s", 0.5, SHORT_BURST_FRACTION),
            ("10000/10m", 0.5, LONG_BURST_FRACTION),
            ("100/1s", 0.5, SHORT_BURST_FRACTION),
            ("600/20s", 0.5, LONG_BURST_FRACTION),
            ("37/3s", 0.7, 0.5),
            ("10/1s", 1.0, 1.0),
        ] {
            let p = Pacing::new(window(w), share, fraction);
            let len = p.window.period + p.allowance;
            let clock = FakeRelativeClock::default();
            let gate = Gate::new(&p, &p, None, clock.clone());
            // Steps of 1/1000 of the window over four windows.
            let step = p.window.period / 1000;
            let sent = greedy(&gate, &clock, step, 4000);
            let most = peak(&sent, len);
            assert!(
                most <= p.share as usize,
                "{w} share {share}: {most} > {}",
                p.share
            );
            // Not vacuous: the limiter does fill its share in some window.
            // (Steps are coarser than the period of the long windows: a few cells are lost.)
            assert!(
                most * 100 >= p.share as usize * 99,
                "{w}: only {most} of {}",
                p.share
            );

            let naive = Quota::with_period(p.window.period / p.share)
                .unwrap()
                .allow_burst(NonZeroU32::new(p.share).unwrap());
            let clock = FakeRelativeClock::default();
            let limiter = RateLimiter::direct_with_clock(naive, clock.clone());
            let mut sent = Vec::new();
            let mut now = Duration::ZERO;
            for _ in 0..4000 {
                while limiter.check().is_ok() {
                    sent.push(now);
                }
                clock.advance(step);
                now += step;
            }
            if p.share > 1 {
                let naive_most = peak(&sent, p.window.period);
                assert!(
                    naive_most * 10 >= p.share as usize * 19,
                    "{w}: the naive quota should put nearly twice the share into a window, not {naive_most}"
                );
            }
        }
    }

    /// Both windows together, the short one pacing and the long one capping, with a ceiling:
    /// each bound holds at once, and the long window's refusals are reported as such.
    #[test]
    fn two_windows_and_a_ceiling_hold_together() {
        let short = Pacing::new(window("100/1s"), 0.5, SHORT_BURST_FRACTION);
        let long = Pacing::new(window("600/20s"), 0.5, LONG_BURST_FRACTION);
        let clock = FakeRelativeClock::default();
        let gate = Gate::new(&short, &long, ceiling_quota(20.0), clock.clone());
        let step = Duration::from_millis(1);
        let mut sent = Vec::new();
        let mut held = 0;
        let mut now = Duration::ZERO;
        for _ in 0..80_000 {
            loop {
                match gate.try_acquire() {
                    Ok(()) => sent.push(now),
                    Err(w) => {
                        held += usize::from(w.long);
                        break;
                    }
                }
            }
            clock.advance(step);
            now += step;
        }
        assert!(peak(&sent, short.window.period + short.allowance) <= 50);
        assert!(peak(&sent, long.window.period + long.allowance) <= 300);
        // The ceiling: a burst of 20, then 20 a second: 20 + 20 - 1 in any second.
        assert!(peak(&sent, Duration::from_secs(1)) <= 39);
        assert!(
            held > 0,
            "80 s at 20/s is more than 300 per 20 s: the long window binds"
        );
        // Over 80 s the long window's sustained rate, not the pace, sets the count.
        let expected = 80.0 * long.sustained_per_second() + f64::from(long.burst);
        assert!(
            (sent.len() as f64) <= expected + 1.0,
            "{} > {expected}",
            sent.len()
        );
        assert!(
            (sent.len() as f64) >= expected * 0.95,
            "{} < {expected}",
            sent.len()
        );
    }

    #[test]
    fn asks_before_the_long_window_has_room_are_told_to_wait_for_it() {
        // Long: 2 cells, then one every 10.2 s; short: one every 22 ms.
        let short = Pacing::new(window("100/1s"), 0.5, SHORT_BURST_FRACTION);
        let long = Pacing::new(window("10/10s"), 0.2, 1.0);
        assert_eq!((long.share, long.burst), (2, 2));
        let clock = FakeRelativeClock::default();
        let gate = Gate::new(&short, &long, None, clock.clone());
        assert!(gate.try_acquire().is_ok());
        clock.advance(Duration::from_millis(30));
        assert!(gate.try_acquire().is_ok());
        clock.advance(Duration::from_millis(30));
        let first = gate.try_acquire().unwrap_err();
        assert!(
            first.long && first.wait > Duration::from_secs(9),
            "{first:?}"
        );
        // Every later ask before then is told the rest of the same wait.
        for i in 1..=100u32 {
            clock.advance(Duration::from_millis(30));
            let w = gate.try_acquire().unwrap_err();
            assert!(w.long);
            assert_eq!(w.wait, first.wait - Duration::from_millis(30) * i);
        }
        clock.advance(first.wait);
        assert!(gate.try_acquire().is_ok());
    }

    #[test]
    fn the_mirror_counts_the_long_bucket() {
        let short = Pacing::new(window("1000/1s"), 1.0, 1.0);
        let long = Pacing::new(window("10/10s"), 1.0, 0.5);
        assert_eq!(long.burst, 5);
        let clock = FakeRelativeClock::default();
        let gate = Gate::new(&short, &long, None, clock.clone());
        assert_eq!(gate.long_cells_available(), 5);
        for left in (0..5).rev() {
            gate.try_acquire().unwrap();
            assert_eq!(gate.long_cells_available(), left);
        }
        assert!(gate.try_acquire().unwrap_err().long);
        clock.advance(long.period);
        assert_eq!(gate.long_cells_available(), 1);
        clock.advance(long.period * 10);
        assert_eq!(gate.long_cells_available(), 5, "a full bucket, never more");
    }

    #[test]
    fn the_ring_counts_the_last_window() {
        let origin = Instant::now();
        let w = RequestWindow::new(Duration::from_secs(600), origin);
        let at = |s: u64| origin + Duration::from_secs(s);
        for s in [0, 1, 1, 300, 599] {
            w.record(at(s));
        }
        assert_eq!(w.count(at(599)), 5);
        // 0 has left the window at 601 (600 whole seconds and the current one), 1 at 602.
        assert_eq!(w.count(at(601)), 4);
        assert_eq!(w.count(at(602)), 2);
        assert_eq!(w.count(at(1199)), 1);
        assert_eq!(w.count(at(1201)), 0);
        // A slot reused after a lap starts again from 1.
        w.record(at(1201));
        assert_eq!(w.count(at(1201)), 1);
    }

    #[test]
    fn time_for_uses_the_bucket_then_the_sustained_rate() {
        let b = Budget::new(BudgetConfig::default());
        // 200 requests fit in the long window's bucket: the short window's pace alone.
        assert_eq!(b.time_for(200), b.short().period * 200);
        let t = b.time_for(10_000);
        assert_eq!(
            t,
            b.short().period * 1000 + b.long().period * 9000,
            "10,000 requests: 1,000 at the pace, 9,000 at the sustained rate"
        );
        let capped = Budget::new(BudgetConfig {
            max_requests_per_second: Some(10.0),
            ..BudgetConfig::default()
        });
        assert_eq!(capped.time_for(100), Duration::from_millis(100) * 100);
    }
}

#[cfg(test)]
mod turn_tests {
    use super::*;

    /// A lane with 40 queued requests and one that asks later: the later one is served at its
    /// first turn, not after the 40.
    #[tokio::test]
    async fn lanes_take_turns() {
        let budget = Arc::new(Budget::new(BudgetConfig {
            max_requests_per_second: Some(100.0),
            ..BudgetConfig::default()
        }));
        let (big, small) = (budget.lane(), budget.lane());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (b, o) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                b.acquire(big).await;
                o.lock().unwrap().push('B');
            }));
        }
        // Let the big lane drain its burst and settle into the 100/s pace.
        while order.lock().unwrap().len() < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let asked_after = order.lock().unwrap().len();
        budget.acquire(small).await;
        order.lock().unwrap().push('s');
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        let served_at = order.iter().position(|c| *c == 's').unwrap();
        assert!(
            served_at <= asked_after + 2,
            "asked after {asked_after} grants, served as grant {served_at}: {order:?}"
        );
        assert_eq!(order.len(), 41);
    }

    /// A 429's pause holds every lane: Qonto's limits are per IP, not per organisation.
    #[tokio::test]
    async fn a_pause_holds_every_lane() {
        let budget = Arc::new(Budget::new(BudgetConfig::default()));
        let (a, b) = (budget.lane(), budget.lane());
        budget.acquire(a).await;
        let paused_at = Instant::now();
        budget.pause(Duration::from_millis(300));
        // A shorter pause does not shorten it; an absurd one is ignored, not a panic.
        budget.pause(Duration::from_millis(10));
        budget.pause(Duration::MAX);
        let (ra, rb) = tokio::join!(budget.acquire(a), budget.acquire(b));
        let _ = (ra, rb);
        assert!(paused_at.elapsed() >= Duration::from_millis(290));
    }

    /// A waiter that gave up is skipped: the others are still served.
    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_stall_the_others() {
        let budget = Arc::new(Budget::new(BudgetConfig {
            max_requests_per_second: Some(20.0),
            ..BudgetConfig::default()
        }));
        let lane = budget.lane();
        for _ in 0..30 {
            budget.acquire(lane).await;
        }
        let gave_up =
            tokio::time::timeout(Duration::from_millis(1), budget.acquire(budget.lane())).await;
        assert!(gave_up.is_err());
        tokio::time::timeout(Duration::from_secs(5), budget.acquire(lane))
            .await
            .expect("served after a waiter gave up");
    }
}
