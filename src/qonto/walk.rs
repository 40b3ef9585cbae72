//! Pagination: every page of one filtered listing, fetched concurrently once the first page
//! has told how many there are, each page checked against the first.
//!
//! A listing that changes while it is walked (links created or changing status) shifts items
//! between pages: an item can be served twice or not at all. The walk cannot prevent that, but
//! it detects it — `total_count`/`total_pages` that differ from the first page's, a non-last
//! page that is not full, or more or fewer items than announced — and reports it as drift, so
//! the caller can walk again. A `next_page` that does not advance, or points past
//! `total_pages`, is an error: following it could never end.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;

use crate::qonto::budget::Budget;
use crate::qonto::client::{ApiError, ListQuery, QontoClient};
use crate::qonto::model::{Meta, Page};

/// Largest page size the API allows.
pub const MAX_PER_PAGE: u64 = 100;
/// How often a long walk logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What a walk saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkSummary {
    pub pages: u64,
    /// `total_count` announced by the first page.
    pub total_count: u64,
    /// Items actually served (valid or not).
    pub served: u64,
    /// Why the listing is known to have changed during the walk, if it did.
    pub drift: Option<String>,
}

/// Walks the listing filtered by `statuses` (empty: all), calling `on_page` once per page
/// (from concurrent tasks, hence `Sync`; it should only do CPU work).
pub async fn walk(
    client: &QontoClient,
    statuses: &[&str],
    concurrency: usize,
    on_page: &(dyn Fn(&Page<'_>) + Sync),
) -> Result<WalkSummary, ApiError> {
    let first = fetch(client, statuses, 1, MAX_PER_PAGE, on_page).await?;
    let total_pages = first.meta.total_pages;
    let expected_pages = first.meta.total_count.div_ceil(first.meta.per_page.max(1));
    if total_pages > expected_pages.max(1) {
        return Err(ApiError::Pagination {
            page: 1,
            message: format!(
                "total_pages {total_pages} is more than total_count {} / per_page {} allows",
                first.meta.total_count, first.meta.per_page
            ),
        });
    }
    warn_if_longer_than_the_poll(client, total_pages.saturating_sub(1), statuses);
    let drift = Mutex::new(check(&first.meta, 1, &first.meta, first.items).err());
    let served = AtomicU64::new(first.items);
    let progress = Progress::new(client.progress(), total_pages.max(1));
    let mut pages = futures_util::stream::iter(2..=total_pages)
        .map(|p| fetch(client, statuses, p, MAX_PER_PAGE, on_page))
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = pages.next().await {
        let got = result?;
        served.fetch_add(got.items, Ordering::Relaxed);
        if let Err(d) = check(&first.meta, got.page, &got.meta, got.items) {
            drift
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(d);
        }
        progress.tick(statuses);
    }
    let served = served.into_inner();
    let mut drift = drift.into_inner().unwrap_or_else(|p| p.into_inner());
    if drift.is_none() && served != first.meta.total_count {
        drift = Some(format!(
            "{served} items served, total_count announced {}",
            first.meta.total_count
        ));
    }
    Ok(WalkSummary {
        pages: total_pages.max(1),
        total_count: first.meta.total_count,
        served,
        drift,
    })
}

/// Warns, once per walk, when the `left` pages of a walk take longer at the current budget than
/// `--poll.timeout` allows the whole poll: that poll is bound to be abandoned, and a full walk
/// that never completes is retried (and abandoned) at every poll.
fn warn_if_longer_than_the_poll(client: &QontoClient, left: u64, statuses: &[&str]) {
    let Some(timeout) = client.progress().poll_timeout() else {
        return;
    };
    let expected = client.budget().time_for(left);
    if expected > timeout {
        let expected = humantime::format_duration(Duration::from_secs(expected.as_secs()));
        tracing::warn!(
            pages_left = left,
            expected = %expected,
            poll_timeout = %humantime::format_duration(timeout),
            budget = %client.budget().describe(),
            statuses = %statuses.join(","),
            "this walk has ~{left} pages left, about {expected} at the current budget: longer than --poll.timeout {} allows the whole poll, which will be abandoned; raise --poll.timeout, or --qonto.budget-share if nothing else calls Qonto from this IP",
            humantime::format_duration(timeout)
        );
    }
}

/// `total_count` of a listing, for one request (`per_page=1`).
pub async fn count(client: &QontoClient, statuses: &[&str]) -> Result<u64, ApiError> {
    let got = fetch(client, statuses, 1, 1, &|_| {}).await?;
    Ok(got.meta.total_count)
}

/// Walks the listing filtered by `statuses` in `sort_by` order, one page after the other,
/// handing each page to `on_page` until it returns `false` or the listing ends. Sequential on
/// purpose: the caller stops as soon as it has what it looks for. Returns the pages fetched.
pub async fn walk_until(
    client: &QontoClient,
    statuses: &[&str],
    sort_by: &str,
    on_page: &mut (dyn FnMut(&Page<'_>) -> bool + Send),
) -> Result<u64, ApiError> {
    let mut page = 1;
    loop {
        let q = ListQuery {
            statuses,
            page,
            per_page: MAX_PER_PAGE,
            sort_by: Some(sort_by),
        };
        let (more, meta) = client
            .get_page(&q, |p| {
                check_next(page, &p.meta).map(|()| (on_page(&p), p.meta))
            })
            .await?
            .map_err(|message| ApiError::Pagination { page, message })?;
        match meta.next_page {
            Some(next) if more => page = next,
            _ => return Ok(page),
        }
    }
}

struct Fetched {
    page: u64,
    meta: Meta,
    items: u64,
}

async fn fetch(
    client: &QontoClient,
    statuses: &[&str],
    page: u64,
    per_page: u64,
    on_page: &(dyn Fn(&Page<'_>) + Sync),
) -> Result<Fetched, ApiError> {
    let q = ListQuery {
        statuses,
        page,
        per_page,
        sort_by: None,
    };
    let (meta, items) = client
        .get_page(&q, |p| {
            // Checked before the page is aggregated: an endless or lying pagination is an
            // error for the whole walk, never partially counted.
            let advance = check_next(page, &p.meta);
            if advance.is_ok() {
                on_page(&p);
            }
            advance.map(|()| (p.meta, (p.links.len() + p.malformed.len()) as u64))
        })
        .await?
        .map_err(|message| ApiError::Pagination { page, message })?;
    Ok(Fetched { page, meta, items })
}

/// `next_page` must advance by one and stay within `total_pages`.
fn check_next(page: u64, meta: &Meta) -> Result<(), String> {
    if meta.current_page != page {
        return Err(format!(
            "asked for page {page}, got current_page {}",
            meta.current_page
        ));
    }
    match meta.next_page {
        Some(n) if n <= page => Err(format!("next_page {n} does not advance past page {page}")),
        Some(n) if n > meta.total_pages => Err(format!(
            "next_page {n} runs past total_pages {}",
            meta.total_pages
        )),
        _ => Ok(()),
    }
}

/// Compares a page with the first: any difference means the listing moved.
fn check(first: &Meta, page: u64, meta: &Meta, items: u64) -> Result<(), String> {
    if meta.total_count != first.total_count || meta.total_pages != first.total_pages {
        return Err(format!(
            "page {page}: total_count {} (was {}), total_pages {} (was {})",
            meta.total_count, first.total_count, meta.total_pages, first.total_pages
        ));
    }
    let last = page >= meta.total_pages;
    if !last && items != meta.per_page {
        return Err(format!(
            "page {page} of {} holds {items} items, per_page is {}",
            meta.total_pages, meta.per_page
        ));
    }
    if !last && meta.next_page.is_none() {
        return Err(format!(
            "page {page} of {} has no next_page",
            meta.total_pages
        ));
    }
    Ok(())
}

/// How far back [`WalkProgress::view`] measures the current page rate: long enough to smooth
/// out retries and the rate limiter's bursts, short enough to follow the budget when it slows a
/// long walk down.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);
/// Rate samples are taken at most this often.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Walks remembered; a poll makes a handful (one per listing, a few more on drift), so the
/// oldest that make way belong to polls long finished.
const MAX_WALKS: usize = 64;

/// Pages of the walks under way, shared by [`walk`] (the writer) and the server (the reader of
/// the landing page and the progress gauges).
///
/// Each walk of a listing in full is recorded once its first page has told how many pages
/// there are; the reader asks for the walks begun since the poll under way started
/// ([`WalkProgress::view`]). The early-stopping walks ([`walk_until`]) and the one-request
/// counts are left out: they are short, and a total they may never reach would only mislead.
/// Each client owns one (see `QontoClient::progress`), so each poller has its own.
#[derive(Debug, Default)]
pub struct WalkProgress {
    state: Mutex<ProgressState>,
    /// `--poll.timeout` in nanoseconds, 0 when unset: a walk that needs longer warns.
    poll_timeout_ns: AtomicU64,
}

#[derive(Debug, Default)]
struct ProgressState {
    next_id: u64,
    walks: VecDeque<WalkRecord>,
    /// Pages fetched by every recorded walk since start.
    fetched: u64,
    /// `(when, fetched)`, oldest first, at most one per [`SAMPLE_EVERY`]; the first is the last
    /// one taken at least [`RATE_WINDOW`] ago.
    samples: VecDeque<(Instant, u64)>,
}

#[derive(Debug)]
struct WalkRecord {
    id: u64,
    /// When the first page came back, on the wall clock the poll's start is given in.
    began: SystemTime,
    began_at: Instant,
    pages: u64,
    done: u64,
}

/// Where the walks of one poll stand.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProgressView {
    /// Pages fetched by the walks begun since the poll started.
    pub pages_done: u64,
    /// Pages those walks announced on their first page (`total_pages`). A poll that walks
    /// several listings adds each one's pages when its walk begins, so this can grow.
    pub pages_total: u64,
    /// Pages per second over the last [`RATE_WINDOW`] of this poll (since its first walk began
    /// when shorter); `None` while less than a second has been measured.
    pub pages_per_second: Option<f64>,
    /// Time to fetch the pages left at that rate; `None` when the rate is unknown or zero.
    /// [`ProgressView::at_budget`] makes it the longer of that and the budget's estimate.
    pub remaining: Option<Duration>,
}

impl ProgressView {
    /// Pages announced and not fetched yet.
    pub fn pages_left(&self) -> u64 {
        self.pages_total.saturating_sub(self.pages_done)
    }

    /// The time left at the current budget: the longer of the recent page rate's estimate and
    /// `budget`'s for the pages left ([`Budget::time_for`]). The rate alone is too hopeful
    /// while a walk spends the 10-minute window's burst, which ends long before the walk.
    pub fn at_budget(self, budget: &Budget) -> ProgressView {
        let floor = budget.time_for(self.pages_left());
        self.at_least(floor)
    }

    /// [`ProgressView::at_budget`] with the budget's estimate given: `remaining` is at least
    /// `floor`; while no rate is measured yet, it is `floor`; a stalled walk (a measured rate of
    /// zero) stays unknown.
    pub fn at_least(mut self, floor: Duration) -> ProgressView {
        if self.pages_total == 0 {
            return self;
        }
        self.remaining = match (self.remaining, self.pages_per_second) {
            (Some(r), _) => Some(r.max(floor)),
            (None, None) => Some(floor),
            (None, Some(_)) => None,
        };
        self
    }
}

impl WalkProgress {
    /// Sets `--poll.timeout`: a walk whose pages left need longer at the current budget warns.
    pub fn set_poll_timeout(&self, timeout: Duration) {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.poll_timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// `--poll.timeout`, if set.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.poll_timeout_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Records a walk whose first page has come back announcing `pages` pages; its id.
    fn begin(&self, pages: u64, now: Instant) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        if s.walks.len() >= MAX_WALKS {
            s.walks.pop_front();
        }
        s.walks.push_back(WalkRecord {
            id,
            began: SystemTime::now(),
            began_at: now,
            pages,
            done: 1,
        });
        s.fetched += 1;
        // Always a sample here: the rate of a poll is measured from its first walk's start.
        s.sample(now, true);
        id
    }

    /// One more page of walk `id`; the pages that walk has fetched.
    fn page(&self, id: u64, now: Instant) -> u64 {
        let mut s = self.lock();
        s.fetched += 1;
        s.sample(now, false);
        match s.walks.iter_mut().rev().find(|w| w.id == id) {
            Some(w) => {
                w.done += 1;
                w.done
            }
            None => 0,
        }
    }

    /// The walks begun at or after `since` (the poll's start), and the rate of the last
    /// [`RATE_WINDOW`] before `now`. All zero when none has begun.
    pub fn view(&self, since: SystemTime, now: Instant) -> ProgressView {
        let s = self.lock();
        let mut view = ProgressView::default();
        let mut start: Option<Instant> = None;
        for w in s.walks.iter().filter(|w| w.began >= since) {
            // Saturating: `pages` is the API's `total_pages`, which a hostile answer sets near
            // u64::MAX (a `total_count` that large with `per_page=1` passes the walk's check).
            view.pages_done = view.pages_done.saturating_add(w.done);
            view.pages_total = view.pages_total.saturating_add(w.pages);
            start = Some(start.map_or(w.began_at, |t| t.min(w.began_at)));
        }
        let Some(start) = start else {
            return ProgressView::default();
        };
        let window_start = now.checked_sub(RATE_WINDOW);
        let mut in_poll = s
            .samples
            .iter()
            .copied()
            .filter(|(t, _)| *t >= start && *t <= now)
            .peekable();
        let first = in_poll.peek().copied();
        // The last sample at least a window old, else the poll's oldest.
        let base = in_poll
            .take_while(|(t, _)| window_start.is_some_and(|w| *t <= w))
            .last()
            .or(first);
        if let Some((at, fetched)) = base {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            if elapsed >= 1.0 {
                let rate = s.fetched.saturating_sub(fetched) as f64 / elapsed;
                view.pages_per_second = Some(rate);
                let left = view.pages_total.saturating_sub(view.pages_done);
                view.remaining = if left == 0 {
                    Some(Duration::ZERO)
                } else if rate > 0.0 {
                    Duration::try_from_secs_f64(left as f64 / rate).ok()
                } else {
                    None
                };
            }
        }
        view
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ProgressState {
    /// Takes a sample of `fetched` at `now` (`force`, or when the last is [`SAMPLE_EVERY`]
    /// old), and drops those no rate measurement needs any more.
    fn sample(&mut self, now: Instant, force: bool) {
        if force
            || self
                .samples
                .back()
                .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= SAMPLE_EVERY)
        {
            self.samples.push_back((now, self.fetched));
        }
        if let Some(window_start) = now.checked_sub(RATE_WINDOW) {
            while self.samples.get(1).is_some_and(|(t, _)| *t <= window_start) {
                self.samples.pop_front();
            }
        }
    }
}

/// One walk's progress: recorded in the shared [`WalkProgress`], and logged as "page k of n"
/// at most every few seconds.
struct Progress<'a> {
    shared: &'a WalkProgress,
    id: u64,
    total: u64,
    last: Mutex<Instant>,
}

impl<'a> Progress<'a> {
    /// A walk whose first page announced `total` pages.
    fn new(shared: &'a WalkProgress, total: u64) -> Self {
        let now = Instant::now();
        Progress {
            shared,
            id: shared.begin(total, now),
            total,
            last: Mutex::new(now),
        }
    }

    fn tick(&self, statuses: &[&str]) {
        let now = Instant::now();
        let done = self.shared.page(self.id, now);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(*last) >= PROGRESS_EVERY {
            *last = now;
            tracing::info!(page = done, of = self.total, statuses = %statuses.join(","), "poll in progress");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(current: u64, next: Option<u64>, pages: u64, count: u64) -> Meta {
        Meta {
            current_page: current,
            next_page: next,
            prev_page: current.checked_sub(1).filter(|p| *p > 0),
            total_pages: pages,
            total_count: count,
            per_page: 100,
        }
    }

    #[test]
    fn next_page_must_advance_within_bounds() {
        assert!(check_next(1, &meta(1, Some(2), 3, 250)).is_ok());
        assert!(check_next(3, &meta(3, None, 3, 250)).is_ok());
        assert!(check_next(2, &meta(2, Some(2), 3, 250)).is_err());
        assert!(check_next(3, &meta(3, Some(4), 3, 250)).is_err());
        assert!(check_next(2, &meta(1, Some(2), 3, 250)).is_err());
    }

    fn at(t0: Instant, secs: f64) -> Instant {
        t0 + Duration::from_secs_f64(secs)
    }

    #[test]
    fn progress_counts_pages_of_the_polls_walks_and_their_rate() {
        let p = WalkProgress::default();
        let since = SystemTime::now();
        let t0 = Instant::now();
        let id = p.begin(10, t0);
        // The first page alone: no rate yet.
        let v = p.view(since, t0);
        assert_eq!((v.pages_done, v.pages_total), (1, 10));
        assert_eq!((v.pages_per_second, v.remaining), (None, None));
        for i in 1..=4 {
            assert_eq!(p.page(id, at(t0, i as f64)), i + 1);
        }
        let v = p.view(since, at(t0, 4.0));
        assert_eq!((v.pages_done, v.pages_total), (5, 10));
        assert_eq!(v.pages_per_second, Some(1.0));
        assert_eq!(v.remaining, Some(Duration::from_secs(5)));
        // A second listing of the same poll adds its pages.
        let other = p.begin(3, at(t0, 4.0));
        p.page(other, at(t0, 4.0));
        let v = p.view(since, at(t0, 4.0));
        assert_eq!((v.pages_done, v.pages_total), (7, 13));
        // Done: nothing left.
        for i in 0..5 {
            p.page(id, at(t0, 5.0 + i as f64));
        }
        p.page(other, at(t0, 10.0));
        let v = p.view(since, at(t0, 10.0));
        assert_eq!((v.pages_done, v.pages_total), (13, 13));
        assert_eq!(v.remaining, Some(Duration::ZERO));
    }

    #[test]
    fn progress_rate_follows_the_last_window_and_stalls() {
        let p = WalkProgress::default();
        let since = SystemTime::now();
        let t0 = Instant::now();
        let id = p.begin(5000, t0);
        // 100 pages a second for 10 s, then 1 page a second (the 10-minute budget binding).
        for i in 1..=1000 {
            p.page(id, at(t0, i as f64 / 100.0));
        }
        for i in 1..=60 {
            p.page(id, at(t0, 10.0 + i as f64));
        }
        let v = p.view(since, at(t0, 70.0));
        assert_eq!(v.pages_done, 1000 + 1 + 60);
        let rate = v.pages_per_second.unwrap();
        assert!((rate - 1.0).abs() < 0.1, "{rate}");
        let left = v.remaining.unwrap().as_secs_f64();
        assert!((left - 3939.0 / rate).abs() < 1.0, "{left}");
        // No page for a whole window: the rate is 0 and the time left unknown.
        let v = p.view(since, at(t0, 70.0 + RATE_WINDOW.as_secs_f64() + 5.0));
        assert_eq!(v.pages_per_second, Some(0.0));
        assert_eq!(v.remaining, None);
    }

    #[test]
    fn progress_of_a_new_poll_ignores_the_previous_ones() {
        let p = WalkProgress::default();
        let t0 = Instant::now();
        let old = p.begin(5, t0);
        for i in 1..5 {
            p.page(old, at(t0, i as f64));
        }
        std::thread::sleep(Duration::from_millis(2));
        let since = SystemTime::now();
        assert_eq!(p.view(since, at(t0, 100.0)), ProgressView::default());
        // The next poll begins after a long pause: its rate is its own, not diluted by it.
        let new = p.begin(10, at(t0, 100.0));
        for i in 1..=4 {
            p.page(new, at(t0, 100.0 + i as f64 / 2.0));
        }
        let v = p.view(since, at(t0, 102.0));
        assert_eq!((v.pages_done, v.pages_total), (5, 10));
        assert_eq!(v.pages_per_second, Some(2.0));
        assert_eq!(v.remaining, Some(Duration::from_secs_f64(2.5)));
    }

    #[test]
    fn progress_remembers_a_bounded_number_of_walks() {
        let p = WalkProgress::default();
        let since = SystemTime::now();
        let t0 = Instant::now();
        for _ in 0..MAX_WALKS + 10 {
            p.begin(2, t0);
        }
        assert_eq!(p.lock().walks.len(), MAX_WALKS);
        assert_eq!(p.view(since, t0).pages_total, 2 * MAX_WALKS as u64);
    }

    #[test]
    fn progress_of_hostile_page_counts_saturates() {
        let p = WalkProgress::default();
        let since = SystemTime::now();
        let t0 = Instant::now();
        // A `total_count` near u64::MAX with `per_page=1`: its `total_pages` passes the walk's
        // check, and a second listing's pages must not overflow the sum.
        p.begin(u64::MAX - 1, t0);
        p.begin(5, t0);
        let v = p.view(since, t0);
        assert_eq!((v.pages_done, v.pages_total), (2, u64::MAX));
        assert_eq!(v.pages_left(), u64::MAX - 2);
    }

    #[test]
    fn time_left_is_at_least_the_budgets_estimate() {
        let rated = ProgressView {
            pages_done: 10,
            pages_total: 110,
            pages_per_second: Some(50.0),
            remaining: Some(Duration::from_secs(2)),
        };
        // The budget is slower than the recent rate (its burst is spent): the budget wins.
        assert_eq!(
            rated.at_least(Duration::from_secs(15)).remaining,
            Some(Duration::from_secs(15))
        );
        // The rate is slower (slow answers): the rate wins.
        assert_eq!(
            rated.at_least(Duration::from_secs(1)).remaining,
            Some(Duration::from_secs(2))
        );
        // No rate measured yet: the budget's estimate.
        let fresh = ProgressView {
            pages_per_second: None,
            remaining: None,
            ..rated
        };
        assert_eq!(
            fresh.at_least(Duration::from_secs(15)).remaining,
            Some(Duration::from_secs(15))
        );
        // Stalled: unknown, whatever the budget says.
        let stalled = ProgressView {
            pages_per_second: Some(0.0),
            remaining: None,
            ..rated
        };
        assert_eq!(stalled.at_least(Duration::from_secs(15)).remaining, None);
        // No walk begun: nothing to estimate.
        assert_eq!(
            ProgressView::default()
                .at_least(Duration::from_secs(15))
                .remaining,
            None
        );
    }

    #[test]
    fn time_left_at_the_default_budget_counts_the_sustained_rate() {
        use crate::qonto::budget::BudgetConfig;
        let budget = Budget::new(BudgetConfig::default());
        // 10,000 pages left, the 10-minute bucket full: 1,000 at the short window's pace, the
        // rest at the long window's sustained rate (6.5/s): about 23 minutes, however fast the
        // last 30 seconds went.
        let v = ProgressView {
            pages_done: 1,
            pages_total: 10_001,
            pages_per_second: Some(48.0),
            remaining: Some(Duration::from_secs_f64(10_000.0 / 48.0)),
        }
        .at_budget(&budget);
        let left = v.remaining.unwrap().as_secs_f64();
        let expected = 1000.0 * budget.short().period.as_secs_f64()
            + 9000.0 * budget.long().period.as_secs_f64();
        assert!((left - expected).abs() < 1.0, "{left} vs {expected}");
        assert!((1300.0..1450.0).contains(&left), "{left}");
    }

    #[test]
    fn poll_timeout_is_unset_until_set() {
        let p = WalkProgress::default();
        assert_eq!(p.poll_timeout(), None);
        p.set_poll_timeout(Duration::from_secs(7200));
        assert_eq!(p.poll_timeout(), Some(Duration::from_secs(7200)));
    }

    #[test]
    fn drift_is_detected() {
        let first = meta(1, Some(2), 3, 250);
        assert!(check(&first, 2, &meta(2, Some(3), 3, 250), 100).is_ok());
        assert!(check(&first, 3, &meta(3, None, 3, 250), 50).is_ok());
        assert!(check(&first, 2, &meta(2, Some(3), 3, 251), 100).is_err());
        assert!(check(&first, 2, &meta(2, Some(3), 3, 250), 99).is_err());
    }
}
