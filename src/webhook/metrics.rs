//! The webhook self-metrics of one organisation, in its registry (which adds the
//! `organization` label). The receiver counts what it refuses or drops as a duplicate; the event
//! ledger counts what it applies or ignores.

use std::time::SystemTime;

use prometheus::{Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::event::{CONNECTIONS, PAYMENT_LINKS, UNKNOWN};

/// What became of a delivery: the `outcome` label of `qonto_exporter_webhook_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The ledger recorded it (the figures move at its next republish).
    Applied,
    /// The ledger had no use for it (an older state of the link, an event type not used).
    Ignored,
    /// An event id already queued: answered 200, not queued again.
    Duplicate,
    /// Missing, malformed or wrong signature: 401.
    BadSignature,
    /// Correctly signed, but more than 5 minutes from this host's clock: 401.
    Stale,
    /// Not a JSON POST, over the body cap, or not a usable event: 4xx.
    Malformed,
    /// The organisation's queue was full or closed: 503, so Qonto retries.
    QueueFull,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Applied,
        Outcome::Ignored,
        Outcome::Duplicate,
        Outcome::BadSignature,
        Outcome::Stale,
        Outcome::Malformed,
        Outcome::QueueFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
            Outcome::BadSignature => "bad_signature",
            Outcome::Stale => "stale",
            Outcome::Malformed => "malformed",
            Outcome::QueueFull => "queue_full",
        }
    }
}

/// Upper bounds of the delivery lag histogram, in seconds: sub-second for live deliveries, up to
/// a day for Qonto's later retries.
const LAG_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0,
];

/// One organisation's webhook metrics (cheap to clone: the handles share their series).
#[derive(Clone)]
pub struct WebhookMetrics {
    /// `qonto_exporter_webhook_events_total{type,outcome}`.
    pub events: IntCounterVec,
    /// `qonto_exporter_webhook_enabled`.
    pub enabled: Gauge,
    /// `qonto_exporter_webhook_last_event_timestamp_seconds`.
    pub last_event: Gauge,
    /// `qonto_exporter_webhook_delivery_lag_seconds`: a vector without labels, so that its
    /// 17 series exist only once [`enable`](Self::enable)d, not for every organisation.
    delivery_lag: HistogramVec,
}

impl std::fmt::Debug for WebhookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMetrics").finish_non_exhaustive()
    }
}

impl WebhookMetrics {
    /// The webhook metrics, registered in `registry`. Until [`enable`](Self::enable) only the
    /// two gauges show, at 0.
    pub fn new(registry: &Registry) -> WebhookMetrics {
        let events = IntCounterVec::new(
            Opts::new(
                "qonto_exporter_webhook_events_total",
                "Webhook deliveries routed to this organisation, by event type (v1/payment-links, v1/payment-links-connections, other, or unknown when refused before the body was parsed: a body is parsed only once its signature is verified) and outcome: applied (recorded in the organisation's event ledger; the figures move at its next republish, at most 500 ms later) and ignored (older than the link's state held, a type or connection event the figures do not use, or the ledger full), duplicate (an event id already queued; answered 200, not queued again), bad_signature (a well-formed X-Qonto-Signature matching no secret; 401), stale (correctly signed more than 5 minutes before or after this host's clock; 401), malformed (X-Qonto-Signature missing or garbled, 401; not a POST of JSON, a body over 64 KiB or not read in time, or not a usable event; 4xx), queue_full (the organisation's event queue was full or closed; 503, so Qonto retries).",
            ),
            &["type", "outcome"],
        )
        .expect("static metric is valid");
        let enabled = Gauge::new(
            "qonto_exporter_webhook_enabled",
            "1 while the webhook receiver (--webhook.listen-address) routes deliveries to this organisation, else 0.",
        )
        .expect("static metric is valid");
        let last_event = Gauge::new(
            "qonto_exporter_webhook_last_event_timestamp_seconds",
            "Unix time at which the receiver last queued an event for this organisation (its receipt, not its creation); 0 before the first.",
        )
        .expect("static metric is valid");
        let delivery_lag = HistogramVec::new(
            HistogramOpts::new(
                "qonto_exporter_webhook_delivery_lag_seconds",
                "Time from an event's created_at (whole seconds, as Qonto's envelope gives it) to its receipt, for the events queued; negative differences (clock skew) count as 0. Retries after a refusal or a 503 show as long lags.",
            )
            .buckets(LAG_BUCKETS.to_vec()),
            &[],
        )
        .expect("static histogram is valid");
        for c in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(enabled.clone()),
            Box::new(last_event.clone()),
            Box::new(delivery_lag.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        WebhookMetrics {
            events,
            enabled,
            last_event,
            delivery_lag,
        }
    }

    /// Marks the organisation as routed and creates its counters at 0, so that `increase()`
    /// sees the first delivery of each kind: every outcome of the two subscribed types, and the
    /// refusals counted before a type is known.
    pub fn enable(&self) {
        self.enabled.set(1.0);
        self.delivery_lag();
        for t in [PAYMENT_LINKS, CONNECTIONS] {
            for o in Outcome::ALL {
                self.events.with_label_values(&[t, o.as_str()]);
            }
        }
        for o in [Outcome::BadSignature, Outcome::Stale, Outcome::Malformed] {
            self.events.with_label_values(&[UNKNOWN, o.as_str()]);
        }
    }

    /// Marks the organisation as no longer routed (its counters stay).
    pub fn disable(&self) {
        self.enabled.set(0.0);
    }

    /// The delivery lag histogram (created at the first call).
    pub fn delivery_lag(&self) -> Histogram {
        self.delivery_lag.with_label_values(&[] as &[&str])
    }

    /// Counts one delivery.
    pub fn count(&self, type_label: &str, outcome: Outcome) {
        self.events
            .with_label_values(&[type_label, outcome.as_str()])
            .inc();
    }

    /// Records an event queued at `received_at`, created at `created_at` (Unix seconds).
    pub fn queued(&self, received_at: SystemTime, created_at: Option<i64>) {
        let received = received_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_event.set(received);
        if let Some(created) = created_at {
            // i64 to f64 loses precision only past 2^53 s, long after any real date.
            let lag = received - created as f64;
            self.delivery_lag()
                .observe(if lag.is_finite() { lag.max(0.0) } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(r: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn enable_creates_every_outcome_at_zero() {
        let r = Registry::new();
        let m = WebhookMetrics::new(&r);
        assert!(text(&r).contains("qonto_exporter_webhook_enabled 0"));
        assert!(!text(&r).contains("qonto_exporter_webhook_events_total{"));
        assert!(!text(&r).contains("qonto_exporter_webhook_delivery_lag_seconds"));
        m.enable();
        let t = text(&r);
        assert!(t.contains("qonto_exporter_webhook_enabled 1"));
        assert!(t.contains("qonto_exporter_webhook_delivery_lag_seconds_count 0"));
        for o in Outcome::ALL {
            for ty in [PAYMENT_LINKS, CONNECTIONS] {
                let series = format!(
                    "qonto_exporter_webhook_events_total{{outcome=\"{}\",type=\"{ty}\"}} 0",
                    o.as_str()
                );
                assert!(t.contains(&series), "{series}");
            }
        }
        assert!(t.contains(
            "qonto_exporter_webhook_events_total{outcome=\"bad_signature\",type=\"unknown\"} 0"
        ));
        m.disable();
        assert!(text(&r).contains("qonto_exporter_webhook_enabled 0"));
    }

    #[test]
    fn lag_is_clamped_and_absurd_dates_do_not_panic() {
        let r = Registry::new();
        let m = WebhookMetrics::new(&r);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        m.queued(at, Some(990));
        m.queued(at, Some(2000));
        m.queued(at, Some(i64::MIN));
        m.queued(at, Some(i64::MAX));
        m.queued(at, None);
        assert_eq!(m.delivery_lag().get_sample_count(), 4);
        assert_eq!(m.last_event.get(), 1000.0);
        let t = text(&r);
        // 10 s, 0 (clamped), i64::MIN (huge), 0 (clamped).
        assert!(
            t.contains("qonto_exporter_webhook_delivery_lag_seconds_bucket{le=\"0.1\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("qonto_exporter_webhook_delivery_lag_seconds_bucket{le=\"10\"} 3"),
            "{t}"
        );
    }
}
