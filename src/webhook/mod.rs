//! Qonto webhooks: an optional receiver on its own listener (it faces the internet while
//! `/metrics` stays internal) whose verified events move an organisation's figures between
//! polls. Polls stay the source of truth: see [`crate::events`] for how events and polls meet.
//!
//! Data flows one way: the receiver checks and parses a delivery ([`event`]), queues it for
//! its organisation (a bounded [`Inbox`]: full means 503, so Qonto retries), and the
//! organisation's event ledger applies it.

pub mod event;
pub mod metrics;
pub mod receiver;
pub mod secrets;
pub mod signature;
pub mod subscribe;

use std::time::SystemTime;

/// One verified, parsed event, as queued for an organisation.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: event::Event,
    /// When the receiver accepted it (for the delivery lag and the ledger's order).
    pub received_at: SystemTime,
}

/// The sending half of an organisation's bounded event queue.
pub type Inbox = tokio::sync::mpsc::Sender<Delivery>;

/// Events queued per organisation before the receiver answers 503 (Qonto then retries).
pub const QUEUE_CAPACITY: usize = 10_000;
