//! Pagination: every page of one filtered listing, fetched concurrently once the first page
//! has told how many there are, each page checked against the first.
//!
//! A listing that changes while it is walked (links created or changing status) shifts items
//! between pages: an item can be served twice or not at all. The walk cannot prevent that, but
//! it detects it — `total_count`/`total_pages` that differ from the first page's, a non-last
//! page that is not full, or more or fewer items than announced — and reports it as drift, so
//! the caller can walk again. A `next_page` that does not advance, or points past
//! `total_pages`, is an error: following it could never end.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

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
    let drift = Mutex::new(check(&first.meta, 1, &first.meta, first.items).err());
    let served = AtomicU64::new(first.items);
    let progress = Progress::new(total_pages);
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

/// Logs "page k of n" at most every few seconds while a walk runs.
struct Progress {
    total: u64,
    done: AtomicU64,
    last: Mutex<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            done: AtomicU64::new(1),
            last: Mutex::new(Instant::now()),
        }
    }

    fn tick(&self, statuses: &[&str]) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
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

    #[test]
    fn drift_is_detected() {
        let first = meta(1, Some(2), 3, 250);
        assert!(check(&first, 2, &meta(2, Some(3), 3, 250), 100).is_ok());
        assert!(check(&first, 3, &meta(3, None, 3, 250), 50).is_ok());
        assert!(check(&first, 2, &meta(2, Some(3), 3, 251), 100).is_err());
        assert!(check(&first, 2, &meta(2, Some(3), 3, 250), 99).is_err());
    }
}
