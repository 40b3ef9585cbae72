//! What the poller publishes and the server reads: the last complete poll, swapped in whole
//! (one atomic pointer store), and the outcome of the latest poll. Written by the poller only;
//! a scrape loads it without waiting for a poll.

use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;

use crate::aggregate::Snapshot;

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
