//! Prometheus names, types and rendering.
//!
//! Three kinds of series, with different lifetimes:
//! - the business gauges of a [`Snapshot`] are built **once per poll** ([`snapshot_families`]),
//!   labelled with their organisation;
//! - each organisation's own health metrics live in its [`SelfMetrics`] registry, whose
//!   `organization` label the registry adds to every series it gathers;
//! - what belongs to the process, not to an organisation (the build, the `process_*` collector,
//!   the request budget, which is per IP and shared, the configuration), lives in
//!   [`ProcessMetrics`] and carries no `organization` label.
//!
//! [`Exposition`] merges the families of every organisation by name, since the text format
//! wants each family (its HELP and TYPE) once. The server caches the result (see there).

use std::sync::Arc;
use std::time::Duration;

use prometheus::proto::{Gauge as GaugeProto, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use rust_decimal::prelude::ToPrimitive;

use crate::aggregate::{InvalidReason, Snapshot, Totals};
use crate::qonto::budget::Budget;
use crate::qonto::client::ApiObserver;
use crate::qonto::oauth_session::RefreshObserver;

/// The connection statuses Qonto documents (an open set: others show as they come).
pub const CONNECTION_STATUSES: [&str; 4] = ["enabled", "pending", "disabled", "not_connected"];

/// The label every per-organisation series carries.
pub const ORGANIZATION: &str = "organization";

const POLLED: &str =
    "From the last complete background poll of GET /v2/payment_links; a scrape never calls Qonto.";

/// The exporter's own metrics.
pub struct SelfMetrics {
    organization: String,
    registry: Registry,
    pub up: Gauge,
    pub last_success: Gauge,
    pub last_duration: Gauge,
    pub polls: IntCounter,
    pub poll_failures: IntCounter,
    pub api_requests: IntCounterVec,
    pub api_duration: Histogram,
    pub invalid_links: IntCounterVec,
    pub credentials_refused: Gauge,
    pub last_poll_requests: Gauge,
    pub oauth_refreshes: IntCounter,
    pub oauth_refresh_failures: IntCounter,
    pub oauth_persist_failures: IntCounter,
    pub oauth_refresh_token_unsaved: Gauge,
    pub retry_after_over_ceiling: IntCounter,
    pub drift: IntCounter,
    pub full_walks: IntCounter,
    pub normalized_values: IntCounterVec,
    pub resync_corrections: IntCounterVec,
    pub resync_checks: IntCounter,
    pub webhook_polls_settled: IntCounter,
    pub excluded_links: Gauge,
    pub snapshot_restored: Gauge,
    pub state_write_failures: IntCounter,
    pub poll_progress_pages: Gauge,
    pub poll_total_pages: Gauge,
    pub poll_remaining_seconds: Gauge,
    /// `qonto_payment_links_connection_status{status}`: a state set, absent until the first
    /// successful check.
    pub connection_status: GaugeVec,
    pub connection_checks: IntCounter,
    pub connection_check_failures: IntCounter,
    /// `qonto_payment_links_payments_total{status,payment_method}`.
    pub payments: IntCounterVec,
    pub payment_reads: IntCounter,
    pub payment_read_failures: IntCounter,
    pub payment_reads_skipped: IntCounter,
    /// Links created, status transitions and time to pay (see [`crate::flows`]).
    pub flows: crate::flows::FlowMetrics,
    /// The webhook receiver's counts and the last event's time (see [`crate::webhook`]).
    pub webhook: crate::webhook::metrics::WebhookMetrics,
}

impl std::fmt::Debug for SelfMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfMetrics")
            .field("organization", &self.organization)
            .finish_non_exhaustive()
    }
}

impl SelfMetrics {
    /// The metrics of one organisation: every series gets `organization="<name>"`.
    pub fn new(organization: &str) -> Arc<SelfMetrics> {
        let labels =
            std::collections::HashMap::from([(ORGANIZATION.to_owned(), organization.to_owned())]);
        let registry =
            Registry::new_custom(None, Some(labels)).expect("the organization label is valid");
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("static metric name is valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric name is valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])
                .expect("static metric name is valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let up = gauge(
            "qonto_up",
            "1 if the last poll of the Qonto API completed, else 0.",
        );
        let last_success = gauge(
            "qonto_exporter_last_success_timestamp_seconds",
            "Unix time at which the last complete poll ended.",
        );
        let last_duration = gauge(
            "qonto_exporter_last_poll_duration_seconds",
            "How long the last poll took, in seconds.",
        );
        let polls = counter("qonto_exporter_polls_total", "Polls started.");
        let poll_failures = counter(
            "qonto_exporter_poll_failures_total",
            "Polls that did not complete; the previous snapshot stayed published.",
        );
        let api_requests = counter_vec(
            "qonto_exporter_api_requests_total",
            "Requests sent to the Qonto API (retries included), by HTTP status code, or `error` when no response came back.",
            "code",
        );
        for code in ["200", "429", "error"] {
            api_requests.with_label_values(&[code]);
        }
        let api_duration = Histogram::with_opts(
            HistogramOpts::new(
                "qonto_exporter_api_request_duration_seconds",
                "Duration of requests to the Qonto API, in seconds.",
            )
            .buckets(vec![0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("static histogram is valid");
        registry
            .register(Box::new(api_duration.clone()))
            .expect("metric registered once");
        let invalid_links = counter_vec(
            "qonto_exporter_invalid_links_total",
            "Payment links whose data was unusable, by reason; each link counted once per reason, not once per poll that reads it. Every reason but invalid_expiration_date leaves the link out of the figures; an open link with an unusable expiration date counts in its status but in no expiry figure.",
            "reason",
        );
        for r in InvalidReason::ALL {
            invalid_links.with_label_values(&[r.as_str()]);
        }
        let credentials_refused = gauge(
            "qonto_exporter_credentials_refused",
            "1 while Qonto (or its OAuth server) refuses the configured credentials, else 0.",
        );
        let last_poll_requests = gauge(
            "qonto_exporter_last_poll_requests",
            "Requests the last poll sent to the Qonto API.",
        );
        let oauth_refreshes = counter(
            "qonto_exporter_oauth_refreshes_total",
            "OAuth access-token refreshes attempted.",
        );
        let oauth_refresh_failures = counter(
            "qonto_exporter_oauth_refresh_failures_total",
            "OAuth access-token refreshes that failed.",
        );
        let oauth_persist_failures = counter(
            "qonto_exporter_oauth_refresh_token_write_failures_total",
            "Failed writes of a rotated OAuth refresh token to its file: at the rotation, then at each retry (at most one every 30 s) while the token in use stays unsaved. A write that has not returned within 10 s counts as failed.",
        );
        let oauth_refresh_token_unsaved = gauge(
            "qonto_exporter_oauth_refresh_token_unsaved",
            "1 while the OAuth refresh token in use is not confirmed in its file (the one there is spent: a restart would lose access), else 0: from each rotation until its write returns (milliseconds normally), and for as long as writes fail or hang.",
        );
        let retry_after_over_ceiling = counter(
            "qonto_exporter_retry_after_over_ceiling_total",
            "HTTP 429 answers whose Retry-After asked for a longer wait than --qonto.max-retry-after; each failed its request at once instead of waiting, and so its poll.",
        );
        let drift = counter(
            "qonto_exporter_pagination_drift_total",
            "Walks of a listing that saw it change while paging. A walk of all links, or of the open and processing ones, is then repeated (twice at most, after which the deduplicated figures are published); a terminal status's walk is not, as the next poll catches up.",
        );
        let full_walks = counter(
            "qonto_exporter_full_walks_total",
            "Polls that walked every payment link rather than only the links that can still change.",
        );
        let normalized_values = counter_vec(
            "qonto_exporter_normalized_values_total",
            "Label values the API sent in another letter case and that were folded into the spec's spelling (open, EUR, Invoice), by field; counted once per link read, so a link read by several polls counts once per poll.",
            "field",
        );
        for f in crate::aggregate::Normalized::default().fields() {
            normalized_values.with_label_values(&[f.0]);
        }
        let resync_corrections = counter_vec(
            "qonto_exporter_resync_corrections_total",
            "Times the links of a terminal status (paid, expired, canceled) were found changed although incremental polls take them as final: moved out, gone, or with other amounts. Found by a full resync's check (qonto_exporter_resync_checks_total) or when an incremental poll sees a terminal count fall or more links move in than it grew; the status is then walked in full.",
            "status",
        );
        for s in crate::aggregate::TERMINAL_STATUSES {
            resync_corrections.with_label_values(&[s]);
        }
        let webhook_polls_settled = counter(
            "qonto_exporter_webhook_polls_settled_total",
            "Incremental polls in which some terminal status (paid, expired, canceled) grew and webhook events named every newcomer, so no terminal listing was read (only with --webhook.listen-address).",
        );
        let resync_checks = counter(
            "qonto_exporter_resync_checks_total",
            "Full resyncs that checked the links the incremental polls had carried (skipped when the listing moved during the walk or the previous poll).",
        );
        let snapshot_restored = gauge(
            "qonto_exporter_snapshot_restored",
            "1 while the figures served are those saved in --storage.path by an earlier process (qonto_exporter_last_success_timestamp_seconds is their poll's end), until this process completes a poll; else 0.",
        );
        let state_write_failures = counter(
            "qonto_exporter_state_write_failures_total",
            "Complete polls whose figures and incremental memory could not be written to the state file in --storage.path (a restart would then start with a full poll).",
        );
        let excluded_links = gauge(
            "qonto_exporter_excluded_links",
            "Payment links the API counts but the last complete poll left out of the figures because their data was unusable.",
        );
        // Set by the server at each scrape, from the walks' shared progress (`WalkProgress`).
        let poll_progress_pages = gauge(
            "qonto_exporter_poll_progress_pages",
            "Pages the poll under way has fetched so far from the listings it walks in full (a walk counts once its first page has told how many pages it has); 0 when no poll is running.",
        );
        let poll_total_pages = gauge(
            "qonto_exporter_poll_total_pages",
            "Pages announced by the listings the poll under way has begun to walk in full; grows when the poll begins another listing; 0 when no poll is running.",
        );
        let poll_remaining_seconds = gauge(
            "qonto_exporter_poll_remaining_seconds",
            "Estimated time the poll under way needs to fetch the rest of qonto_exporter_poll_total_pages at the current budget: the longer of its page rate over the last 30 seconds and the request budget's pace for the pages left; NaN once no page has come back for 30 seconds; 0 when no poll is running.",
        );
        let connection_status = GaugeVec::new(
            Opts::new(
                "qonto_payment_links_connection_status",
                "Whether the organisation can take payments at all, from GET /v2/payment_links/connections, checked once per poll: 1 for the status of the last successful check (enabled: customers can pay; pending, disabled, not_connected: they cannot, or not yet; any other value Qonto sends shows as its own status), 0 for the others; absent until a check has succeeded. A scrape never calls Qonto.",
            ),
            &["status"],
        )
        .expect("static metric is valid");
        registry
            .register(Box::new(connection_status.clone()))
            .expect("metric registered once");
        let connection_checks = counter(
            "qonto_exporter_connection_checks_total",
            "Checks of the connection status (GET /v2/payment_links/connections), one after each poll while the credentials are not refused.",
        );
        let connection_check_failures = counter(
            "qonto_exporter_connection_check_failures_total",
            "Connection status checks that failed (the API's answer, or an unusable status); qonto_payment_links_connection_status keeps the last known status, and the links figures are not affected.",
        );
        let flows = crate::flows::FlowMetrics::new(&registry);
        let webhook = crate::webhook::metrics::WebhookMetrics::new(&registry);
        let payments = IntCounterVec::new(
            Opts::new(
                "qonto_payment_links_payments_total",
                "Payments of the links seen becoming paid (with --collect.payments: GET /v2/payment_links/{id}/payments, read when a poll sees the link become paid; a reusable link paid again is read again, and its earlier payments count again), by payment status (paid, failed, …) and payment_method (none when absent); statuses and methods in lower case, at most 16 distinct values each, beyond which `other`. Only links that became paid are read: failed attempts on links that expire or are canceled are not seen.",
            ),
            &["status", "payment_method"],
        )
        .expect("static metric is valid");
        registry
            .register(Box::new(payments.clone()))
            .expect("metric registered once");
        let payment_reads = counter(
            "qonto_exporter_payment_reads_total",
            "Links whose payments were read (--collect.payments), one or more requests each.",
        );
        let payment_read_failures = counter(
            "qonto_exporter_payment_read_failures_total",
            "Reads of a link's payments that failed; never a failed poll, the link's time to pay is then the poll's.",
        );
        let payment_reads_skipped = counter(
            "qonto_exporter_payment_reads_skipped_total",
            "Links seen becoming paid whose payments were not read: over the poll's --collect.payments cap, past the poll's deadline for payments (one poll interval), or within the hour after Qonto refused the credentials for this endpoint.",
        );
        Arc::new(SelfMetrics {
            payments,
            payment_reads,
            payment_read_failures,
            payment_reads_skipped,
            flows,
            webhook,
            organization: organization.to_owned(),
            connection_status,
            connection_checks,
            connection_check_failures,
            registry,
            up,
            last_success,
            last_duration,
            polls,
            poll_failures,
            normalized_values,
            resync_corrections,
            resync_checks,
            webhook_polls_settled,
            excluded_links,
            snapshot_restored,
            state_write_failures,
            poll_progress_pages,
            poll_total_pages,
            poll_remaining_seconds,
            api_requests,
            api_duration,
            invalid_links,
            credentials_refused,
            last_poll_requests,
            oauth_refreshes,
            oauth_refresh_failures,
            oauth_persist_failures,
            oauth_refresh_token_unsaved,
            retry_after_over_ceiling,
            drift,
            full_walks,
        })
    }

    /// Records a successful connection check: `status` at 1, every other status seen (and the
    /// documented ones) at 0. The new status is set first, so that no scrape sees a set
    /// without a current status.
    pub fn record_connection(&self, status: &str) {
        self.connection_status.with_label_values(&[status]).set(1.0);
        let families = prometheus::core::Collector::collect(&self.connection_status);
        let seen = families
            .iter()
            .flat_map(|f| f.get_metric())
            .filter_map(|m| m.get_label().first().map(|l| l.value().to_owned()));
        for other in CONNECTION_STATUSES
            .iter()
            .map(|s| (*s).to_owned())
            .chain(seen)
        {
            if other != status {
                self.connection_status.with_label_values(&[&other]).set(0.0);
            }
        }
    }

    /// The organisation these metrics belong to.
    pub fn organization(&self) -> &str {
        &self.organization
    }

    /// The organisation's own series, gathered now.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    /// Records the request count of a finished poll (the 10-minute figures are measured by the
    /// budget, [`SelfMetrics::observe_budget`], not projected from one poll).
    pub fn record_poll_requests(&self, requests: u64) {
        self.last_poll_requests.set(requests as f64);
    }
}

/// The series of the process rather than of an organisation: no `organization` label.
pub struct ProcessMetrics {
    registry: Registry,
    /// The process collector alone, read from `/proc` at gather time.
    process: Registry,
    pub api_requests_10m: Gauge,
    pub budget_ratio: Gauge,
    pub organizations: Gauge,
    pub reload_successful: Gauge,
    pub reload_success_timestamp: Gauge,
    pub reloads: IntCounter,
    pub reload_failures: IntCounter,
    /// The budget every organisation shares, read at each gather for the two gauges above.
    budget: Arc<Budget>,
}

impl std::fmt::Debug for ProcessMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessMetrics")
    }
}

impl ProcessMetrics {
    pub fn new(budget: Arc<Budget>, shard: crate::shard::Shard) -> Arc<ProcessMetrics> {
        let registry = Registry::new();
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric registered once");
        };
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("static metric name is valid");
            register(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric name is valid");
            register(Box::new(c.clone()));
            c
        };
        let api_requests_10m = gauge(
            "qonto_exporter_api_requests_10m",
            "Requests this process sent to the Qonto API (retries included, all its organisations together: Qonto's limits are per IP) in the last 10 minutes, Qonto's long per-IP window (measured in 1 s steps; the window's length is --qonto.rate-limit-long's, scaled down only in tests).",
        );
        let budget_ratio = gauge(
            "qonto_exporter_api_budget_10m_usage_ratio",
            "qonto_exporter_api_requests_10m over this process's share of Qonto's 10,000 requests per 10 minutes per IP (--qonto.budget-share, default 0.5: 5,000), shared by all its organisations. Measured; the budget keeps it at 1 at most, slowing polls down rather than going over.",
        );
        let organizations = gauge(
            "qonto_exporter_organizations",
            "Organisations this process is configured to poll: those of the configuration that fall to its shard (--shard.index of --shard.count), including any whose client could not be built (reported as failing, with qonto_up 0).",
        );
        let reload_successful = gauge(
            "qonto_exporter_config_last_reload_successful",
            "1 if the last reload of --config.file (SIGHUP or POST /-/reload) succeeded, or none was asked; 0 while the file last read was refused and the organisations before it keep running.",
        );
        let reload_success_timestamp = gauge(
            "qonto_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load of the configuration (the start counts as one).",
        );
        let reloads = counter(
            "qonto_exporter_config_reloads_total",
            "Reloads of the configuration asked for (SIGHUP or POST /-/reload).",
        );
        let reload_failures = counter(
            "qonto_exporter_config_reload_failures_total",
            "Reloads of the configuration refused because the new file was unusable.",
        );
        reload_successful.set(1.0);
        let build = GaugeVec::new(
            Opts::new(
                "qonto_exporter_build_info",
                "Constant 1, labelled with the exporter's version, git revision and compiler.",
            ),
            &["version", "revision", "rustc_version"],
        )
        .expect("static metric is valid");
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                env!("QONTO_EXPORTER_REVISION"),
                env!("QONTO_EXPORTER_RUSTC_VERSION"),
            ])
            .set(1.0);
        register(Box::new(build));
        let shard_info = GaugeVec::new(
            Opts::new(
                "qonto_exporter_shard_info",
                "Constant 1, labelled with this replica's shard (--shard.index) and the number of shards (--shard.count).",
            ),
            &["shard_index", "shard_count"],
        )
        .expect("static metric is valid");
        shard_info
            .with_label_values(&[&shard.index.to_string(), &shard.count.to_string()])
            .set(1.0);
        register(Box::new(shard_info));
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registered once");
        Arc::new(ProcessMetrics {
            registry,
            process,
            api_requests_10m,
            budget_ratio,
            organizations,
            reload_successful,
            reload_success_timestamp,
            reloads,
            reload_failures,
            budget,
        })
    }

    /// The process's series, gathered now (the budget's figures measured at this moment).
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.api_requests_10m
            .set(self.budget.requests_in_long_window() as f64);
        self.budget_ratio.set(self.budget.long_usage_ratio());
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        families
    }

    /// Records a load of the configuration that succeeded (`true`) or was refused.
    pub fn record_load(&self, ok: bool, at: std::time::SystemTime) {
        if ok {
            self.reload_successful.set(1.0);
            self.reload_success_timestamp.set(
                at.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
        } else {
            self.reload_successful.set(0.0);
        }
    }
}

/// Families of several sources merged by name, in order of first appearance, then encoded in
/// the text format (where a family's HELP and TYPE may appear only once).
#[derive(Default)]
pub struct Exposition {
    families: Vec<MetricFamily>,
    index: std::collections::HashMap<String, usize>,
}

impl Exposition {
    pub fn add(&mut self, families: impl IntoIterator<Item = MetricFamily>) {
        for mut f in families {
            match self.index.get(f.name()) {
                Some(&i) => {
                    let more = f.take_metric();
                    self.families[i].mut_metric().extend(more);
                }
                None => {
                    self.index.insert(f.name().to_owned(), self.families.len());
                    self.families.push(f);
                }
            }
        }
    }

    /// The text format of every family added.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Encoding into a Vec cannot fail for valid families.
        let _ = TextEncoder::new().encode(&self.families, out);
    }
}

impl ApiObserver for SelfMetrics {
    fn request(&self, code: Option<u16>, elapsed: Duration) {
        let label = code.map(|c| c.to_string());
        self.api_requests
            .with_label_values(&[label.as_deref().unwrap_or("error")])
            .inc();
        self.api_duration.observe(elapsed.as_secs_f64());
    }
    fn retry_after_over_ceiling(&self) {
        self.retry_after_over_ceiling.inc();
    }
}

impl RefreshObserver for SelfMetrics {
    fn refreshed(&self, ok: bool) {
        self.oauth_refreshes.inc();
        if !ok {
            self.oauth_refresh_failures.inc();
        }
    }
    fn persist_failed(&self) {
        self.oauth_persist_failures.inc();
    }
    fn unsaved(&self, unsaved: bool) {
        self.oauth_refresh_token_unsaved
            .set(if unsaved { 1.0 } else { 0.0 });
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn gauge_metric(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut g = GaugeProto::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_gauge(g);
    m
}

fn family(name: &str, help: &str, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(MetricType::GAUGE);
    f.set_metric(metrics);
    f
}

/// Money as published: the exact decimal, converted once, at the end.
pub fn money(t: &Totals) -> f64 {
    t.amount.to_f64().unwrap_or(f64::NAN)
}

/// The business gauges of one organisation's snapshot, labelled with it; built once per poll.
pub fn snapshot_families(s: &Snapshot, organization: &str) -> Vec<MetricFamily> {
    let label = |name: &str, value: &str| label(name, value);
    let gauge_metric = |mut labels: Vec<LabelPair>, value: f64| {
        labels.push(label(ORGANIZATION, organization));
        labels.sort_by(|a, b| a.name().cmp(b.name()));
        gauge_metric(labels, value)
    };
    let by_status = |value: fn(&Totals) -> f64| {
        s.links
            .iter()
            .map(|(k, t)| {
                gauge_metric(
                    vec![
                        label("currency", &k.currency),
                        label("resource_type", &k.resource_type),
                        label("status", &k.status),
                    ],
                    value(t),
                )
            })
            .collect::<Vec<_>>()
    };
    let expiring = |value: fn(&Totals) -> f64| {
        s.expiring
            .iter()
            .map(|((g, within), t)| {
                gauge_metric(
                    vec![
                        label("currency", &g.currency),
                        label("resource_type", &g.resource_type),
                        label("within", within),
                    ],
                    value(t),
                )
            })
            .collect::<Vec<_>>()
    };
    let aging = |value: fn(&Totals) -> f64| {
        s.aging
            .iter()
            .map(|((g, age), t)| {
                gauge_metric(
                    vec![
                        label("age", age),
                        label("currency", &g.currency),
                        label("resource_type", &g.resource_type),
                    ],
                    value(t),
                )
            })
            .collect::<Vec<_>>()
    };
    let group = |g: &crate::aggregate::GroupKey| {
        vec![
            label("currency", &g.currency),
            label("resource_type", &g.resource_type),
        ]
    };
    let families = vec![
        family(
            "qonto_payment_links",
            &format!("Number of payment links by status, currency and resource type. {POLLED}"),
            by_status(|t| t.count as f64),
        ),
        family(
            "qonto_payment_links_amount",
            &format!(
                "Sum of the gross amounts (VAT included) of payment links, in units of `currency`, by status and resource type. {POLLED}"
            ),
            by_status(money),
        ),
        family(
            "qonto_payment_links_expiring",
            &format!(
                "Open payment links whose expiration date falls in (poll time, poll time + `within`]. {POLLED}"
            ),
            expiring(|t| t.count as f64),
        ),
        family(
            "qonto_payment_links_expiring_amount",
            &format!(
                "Sum of the amounts of open payment links expiring within `within`, in units of `currency`. {POLLED}"
            ),
            expiring(money),
        ),
        family(
            "qonto_payment_links_open_by_age",
            &format!(
                "Open payment links by age since created_at at poll time, an accounts-receivable aging: `age` is a bucket of --aging.buckets (<=7d, 7d-30d, 30d-60d, 60d-90d, >90d by default; each bucket holds ages above the previous bound up to its own), or unknown for a link without a usable created_at. {POLLED}"
            ),
            aging(|t| t.count as f64),
        ),
        family(
            "qonto_payment_links_open_by_age_amount",
            &format!(
                "Sum of the amounts of the open payment links of each age bucket, in units of `currency`. {POLLED}"
            ),
            aging(money),
        ),
        family(
            "qonto_payment_links_oldest_open_created_timestamp_seconds",
            &format!(
                "Earliest created_at among open payment links, as a Unix time; absent when no open link has a usable created_at. {POLLED}"
            ),
            s.oldest_open
                .iter()
                .map(|(g, t)| gauge_metric(group(g), t.unix_timestamp() as f64))
                .collect(),
        ),
        family(
            "qonto_payment_links_open_past_expiration",
            &format!("Payment links still open whose expiration date has passed. {POLLED}"),
            s.open_past_expiration
                .iter()
                .map(|(g, n)| gauge_metric(group(g), *n as f64))
                .collect(),
        ),
        family(
            "qonto_payment_links_next_expiration_timestamp_seconds",
            &format!(
                "Earliest expiration date still ahead among open payment links, as a Unix time; absent when no open link is still to expire. {POLLED}"
            ),
            s.next_expiration
                .iter()
                .map(|(g, t)| gauge_metric(group(g), t.unix_timestamp() as f64))
                .collect(),
        ),
    ];
    families
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregator, Limits, Window};
    use crate::qonto::model::parse_page;

    #[test]
    fn renders_contract_names_with_help_and_type() {
        let body = br#"{"payment_links":[{"id":"a","status":"open","expiration_date":"2026-11-24T12:30:00Z","amount":{"value":"0.10","currency":"EUR"},"resource_type":"Basket"}],
            "meta":{"current_page":1,"next_page":null,"prev_page":null,"total_pages":1,"total_count":1,"per_page":100}}"#;
        let page = parse_page(body).unwrap();
        let now = time::macros::datetime!(2026-11-24 12:00 UTC);
        let mut agg = Aggregator::new(
            now,
            &[Window {
                label: "1h".into(),
                duration: Duration::from_secs(3600),
            }],
            Limits::default(),
        );
        for l in &page.links {
            agg.add(l);
        }
        let mut e = Exposition::default();
        e.add(snapshot_families(&agg.finish(), "acme"));
        let mut text = Vec::new();
        e.encode(&mut text);
        let text = String::from_utf8(text).unwrap();
        for name in [
            "qonto_payment_links",
            "qonto_payment_links_amount",
            "qonto_payment_links_expiring",
            "qonto_payment_links_expiring_amount",
            "qonto_payment_links_open_past_expiration",
            "qonto_payment_links_next_expiration_timestamp_seconds",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}");
        }
        assert!(text.contains(
            r#"qonto_payment_links_amount{currency="EUR",organization="acme",resource_type="Basket",status="open"} 0.1"#
        ));
        assert!(text.contains(
            r#"qonto_payment_links{currency="EUR",organization="acme",resource_type="Invoice",status="paid"} 0"#
        ));
        assert!(text.contains(
            r#"qonto_payment_links_next_expiration_timestamp_seconds{currency="EUR",organization="acme",resource_type="Basket"} 1795523400"#
        ));
        // Two organisations' own metrics and the process's: each family once, with its
        // series of both organisations; the process's series carry no organisation.
        let mut e = Exposition::default();
        e.add(SelfMetrics::new("acme").gather());
        e.add(SelfMetrics::new("globex").gather());
        let budget = Arc::new(Budget::new(crate::qonto::budget::BudgetConfig::default()));
        e.add(ProcessMetrics::new(budget, crate::shard::Shard::default()).gather());
        let mut own = Vec::new();
        e.encode(&mut own);
        let own = String::from_utf8(own).unwrap();
        assert!(own.contains("qonto_exporter_build_info{revision="));
        assert!(own.contains("qonto_up{organization=\"acme\"} 0"));
        assert!(own.contains("qonto_up{organization=\"globex\"} 0"));
        assert_eq!(own.matches("# TYPE qonto_up gauge").count(), 1);
        assert!(own.contains("qonto_exporter_api_requests_10m 0"));
        assert!(own.contains("qonto_exporter_organizations 0"));
        assert!(own.contains("qonto_exporter_shard_info{shard_count=\"1\",shard_index=\"0\"} 1"));
        let promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        if let Ok(mut child) = promtool {
            use std::io::Write;
            let mut all = text.into_bytes();
            all.extend_from_slice(own.as_bytes());
            child.stdin.take().unwrap().write_all(&all).unwrap();
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("error"), "{stderr}");
        }
    }
}
