//! The organisations this process polls, running: one poller each, started, kept or stopped as
//! the configuration says, and the view the server reads.
//!
//! Each organisation has its own client, credentials, poller, state file and metrics, so one
//! that fails (refused credentials, an API fault, a bad state file) changes nothing for the
//! others; they share only the HTTP connection pool and the request budget, which gives each
//! waiting organisation its turn (see [`crate::qonto::budget`]).
//!
//! A reload ([`Fleet::apply`]) compares fingerprints ([`crate::organizations::Fingerprint`]):
//! an unchanged organisation keeps its poller, tokens and figures; a removed one is stopped and
//! its series leave `/metrics` at once; a changed one is stopped and started again. A poller
//! that ends on its own (a bug: they run until told to stop) ends the process through the
//! supervisor, as before, so it never looks alive while one organisation silently stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::aggregate::{Limits, Window};
use crate::config::CredentialSource;
use crate::metrics::{ProcessMetrics, SelfMetrics};
use crate::organizations::{Fingerprint, Organization};
use crate::poller::{Poller, PollerConfig};
use crate::publish::Shared;
use crate::qonto::auth::Credentials;
use crate::qonto::budget::Budget;
use crate::qonto::client::{ClientConfig, QontoClient, RetryPolicy};
use crate::qonto::oauth_session::OAuthSession;
use crate::qonto::walk::WalkProgress;
use crate::shard::Shard;
use crate::shutdown::stopped;
use crate::state::Storage;

/// How long a stopped poller gets to end before it is aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reload may take to read the configuration and its secrets.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// One running organisation, as the server reads it.
#[derive(Debug)]
pub struct OrgView {
    pub name: String,
    pub shared: Arc<Shared>,
    pub metrics: Arc<SelfMetrics>,
    pub progress: Arc<WalkProgress>,
    /// Shown on the landing page: API URL, credential kind, poll interval.
    pub about: Vec<(String, String)>,
}

/// What the server reads: the organisations running now, swapped whole on every change.
#[derive(Debug, Default)]
pub struct FleetView {
    orgs: ArcSwap<Vec<Arc<OrgView>>>,
    /// Bumped at every swap, so caches of `/metrics` know the set changed.
    generation: AtomicU64,
    /// Set once the process has been ready (see the server's readiness): it stays ready.
    ready: std::sync::atomic::AtomicBool,
}

impl FleetView {
    /// The organisations running now, by name.
    pub fn orgs(&self) -> Arc<Vec<Arc<OrgView>>> {
        self.orgs.load_full()
    }

    /// True once [`FleetView::latch_ready`] was called.
    pub fn was_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the process ready for good: an organisation added or restarted later by a reload
    /// must not take a serving process out of its Service while its first poll runs.
    pub fn latch_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn set(&self, orgs: Vec<Arc<OrgView>>) {
        self.orgs.store(Arc::new(orgs));
        self.changed();
    }

    /// Something the process-wide series show changed (a reload's outcome).
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Settings every organisation's poller and client share (the command line's).
#[derive(Debug, Clone)]
pub struct Common {
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub windows: Vec<Window>,
    pub aging: crate::aggregate::AgeBuckets,
    pub collect_payments: usize,
    pub limits: Limits,
    pub concurrency: usize,
    pub full_resync: Duration,
    pub poll_timeout: Duration,
    pub storage: Option<Storage>,
    pub shard: Shard,
    /// Added to the landing page's API row of every organisation (the demo says so).
    pub api_note: Option<&'static str>,
    /// One HTTP client (one connection pool) for every organisation and token endpoint.
    pub http: reqwest::Client,
    /// Where the webhook receiver routes each organisation's events, when it runs.
    pub webhooks: Option<Arc<crate::webhook::receiver::Router>>,
}

/// Reads the configuration again, for a reload.
pub type Loader = Arc<dyn Fn() -> Result<Vec<Organization>, String> + Send + Sync>;

/// A reload asked for through `POST /-/reload`: the answer says whether it was applied.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

struct Running {
    view: Arc<OrgView>,
    fingerprint: Fingerprint,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    oauth: Option<Arc<OAuthSession>>,
    /// Distinguishes this run from an earlier one of the same name in exit reports.
    run: u64,
}

/// A poller that ended: its organisation, its run, and its panic's message if it panicked.
struct Exit {
    name: String,
    run: u64,
    panic: Option<String>,
}

/// The running organisations.
pub struct Fleet {
    common: Common,
    budget: Arc<Budget>,
    process: Arc<ProcessMetrics>,
    view: Arc<FleetView>,
    running: BTreeMap<String, Running>,
    runs: u64,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits: mpsc::UnboundedReceiver<Exit>,
}

/// Why the fleet stopped.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("the poller of organisation {name:?} {how}")]
    PollerEnded { name: String, how: String },
}

impl Fleet {
    pub fn new(common: Common, budget: Arc<Budget>, process: Arc<ProcessMetrics>) -> Fleet {
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Fleet {
            common,
            budget,
            process,
            view: Arc::default(),
            running: BTreeMap::new(),
            runs: 0,
            exits_tx,
            exits,
        }
    }

    pub fn view(&self) -> Arc<FleetView> {
        self.view.clone()
    }

    /// Makes the running set this configuration's share (its organisations that fall to this
    /// shard): starts the new and the changed, stops the removed and the changed, keeps the
    /// rest untouched. Returns the names started, kept and stopped.
    pub async fn apply(&mut self, orgs: Vec<Organization>) -> Applied {
        let mut wanted: BTreeMap<String, Organization> = orgs
            .into_iter()
            .filter(|o| self.common.shard.owns(&o.name))
            .map(|o| (o.name.clone(), o))
            .collect();
        let mut applied = Applied::default();
        let names: Vec<String> = self.running.keys().cloned().collect();
        let mut leaving = Vec::new();
        for name in names {
            let running = self.running.get(&name);
            let same = wanted
                .get(&name)
                .is_some_and(|o| running.map(|r| r.fingerprint) == Some(o.fingerprint));
            // Restarting an organisation whose rotated refresh token is not in its file would
            // lose it (the file's is spent): it keeps running as it is until the token is saved.
            let unsaved = wanted.contains_key(&name)
                && running
                    .and_then(|r| r.oauth.as_ref())
                    .is_some_and(|s| s.unsaved());
            if unsaved && !same {
                tracing::warn!(organization = %name, "not restarted with its new configuration: its rotated refresh token is not saved yet (qonto_exporter_oauth_refresh_token_unsaved); reload again once it is");
                wanted.remove(&name);
                applied.deferred.push(name.clone());
            }
            if same || unsaved {
                wanted.remove(&name);
                applied.kept.push(name);
            } else if let Some(r) = self.running.remove(&name) {
                leaving.push(r);
                applied.stopped.push(name);
            }
        }
        // The view changes before anything stops, so the series of a removed organisation
        // leave the next scrape rather than the one after its poller has ended. A changed
        // organisation starts again only once its old poller has stopped and its OAuth session
        // has written its last token: two sessions must never rotate one refresh token.
        if !leaving.is_empty() {
            if let Some(router) = &self.common.webhooks {
                for r in &leaving {
                    router.remove(&r.view.name);
                }
            }
            self.publish_view();
            stop_all(leaving).await;
        }
        for mut org in wanted.into_values() {
            applied.started.push(org.name.clone());
            refresh_from_file(&mut org).await;
            let running = self.start(org);
            self.running.insert(running.view.name.clone(), running);
        }
        self.publish_view();
        // A stopped organisation that starts again (changed) got its new run above.
        applied.stopped.retain(|n| !applied.started.contains(n));
        applied
    }

    fn publish_view(&self) {
        self.view
            .set(self.running.values().map(|r| r.view.clone()).collect());
        self.process.organizations.set(self.running.len() as f64);
    }

    fn start(&mut self, org: Organization) -> Running {
        self.runs += 1;
        let run = self.runs;
        let metrics = SelfMetrics::new(&org.name);
        let identity = org.state_identity();
        let (credentials, oauth) = match self.credentials(org.source, &metrics) {
            Ok(c) => c,
            Err(e) => return self.failed(org.name, org.fingerprint, metrics, e, run),
        };
        let kind = credentials.kind();
        let client = QontoClient::with_http(
            self.common.http.clone(),
            ClientConfig {
                base_url: org.api_url.clone(),
                timeout: self.common.timeout,
                staging_token: org.staging_token,
                retry: self.common.retry,
                budget: self.budget.clone(),
            },
            credentials,
            metrics.clone(),
        );
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let client = match client {
            Ok(c) => Arc::new(c),
            Err(e) => return self.failed(org.name, org.fingerprint, metrics, e.to_string(), run),
        };
        let progress = client.progress().clone();
        progress.set_poll_timeout(self.common.poll_timeout);
        let view = Arc::new(OrgView {
            about: about(
                &org.name,
                &org.api_url,
                self.common.api_note,
                kind,
                org.poll_interval,
            ),
            name: org.name.clone(),
            shared: shared.clone(),
            metrics: metrics.clone(),
            progress,
        });
        let mut poller = Poller::new(
            client,
            PollerConfig {
                interval: org.poll_interval,
                windows: self.common.windows.clone(),
                aging: self.common.aging.clone(),
                collect_payments: self.common.collect_payments,
                limits: self.common.limits,
                concurrency: self.common.concurrency,
                full_resync: self.common.full_resync,
                timeout: self.common.poll_timeout,
                max_rewalks: 2,
            },
            metrics.clone(),
            shared.clone(),
        );
        // Runs in the poller's task: if it panics, the poller's exit report ends the process,
        // rather than the receiver answering 503 for ever behind a healthy-looking /metrics.
        let mut events_task = None;
        if let Some(router) = &self.common.webhooks {
            let events = crate::events::EventState::new(
                crate::events::OverlayConfig {
                    windows: self.common.windows.clone(),
                    limits: self.common.limits,
                    aging: self.common.aging.clone(),
                },
                &org.name,
            );
            let (inbox, queue) = mpsc::channel(crate::webhook::QUEUE_CAPACITY);
            router.insert(&org.name, inbox, metrics.webhook.clone());
            events_task = Some(
                crate::events::run(events.clone(), queue, shared, metrics, stop_rx.clone())
                    .instrument(tracing::info_span!("events", organization = %org.name)),
            );
            poller = poller.with_events(events);
        }
        let storage = self
            .common
            .storage
            .clone()
            .map(|s| s.for_organization(&org.name, identity));
        let exits = self.exits_tx.clone();
        let name = org.name.clone();
        let span = tracing::info_span!("poller", organization = %org.name);
        let task = tokio::spawn(
            async move {
                let body = async move {
                    if let Some(storage) = storage {
                        poller.restore_from(storage).await;
                    }
                    match events_task {
                        Some(events) => {
                            tokio::join!(poller.run(stop_rx), events);
                        }
                        None => poller.run(stop_rx).await,
                    }
                };
                let panic = std::panic::AssertUnwindSafe(body)
                    .catch_unwind()
                    .await
                    .err()
                    .map(|payload| {
                        payload
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic without a message".to_owned())
                    });
                let _ = exits.send(Exit { name, run, panic });
            }
            .instrument(span),
        );
        Running {
            view,
            fingerprint: org.fingerprint,
            stop: stop_tx,
            task,
            oauth,
            run,
        }
    }

    /// The credentials of a source; OAuth's session reports to the organisation's metrics.
    fn credentials(
        &self,
        source: CredentialSource,
        metrics: &Arc<SelfMetrics>,
    ) -> Result<(Credentials, Option<Arc<OAuthSession>>), String> {
        Credentials::from_source(source, &self.common.http, metrics.clone())
            .ok_or_else(|| "the demo organisation runs only with --demo".into())
    }

    /// An organisation that could not start (a staging token that is no header value): shown
    /// as failing, with no poller, while the others run.
    fn failed(
        &self,
        name: String,
        fingerprint: Fingerprint,
        metrics: Arc<SelfMetrics>,
        error: String,
        run: u64,
    ) -> Running {
        tracing::error!(organization = %name, error = %error, "organisation not started");
        metrics.up.set(0.0);
        metrics.polls.inc();
        metrics.poll_failures.inc();
        let shared = Arc::new(Shared::default());
        shared.status.store(Arc::new(crate::publish::PollStatus {
            polls: 1,
            last_finished_at: Some(SystemTime::now()),
            last_error: Some(error),
            in_progress_since: None,
        }));
        Running {
            view: Arc::new(OrgView {
                about: vec![("Organization".to_owned(), name.clone())],
                name,
                shared,
                metrics,
                progress: Arc::default(),
            }),
            fingerprint,
            stop: watch::channel(false).0,
            task: tokio::spawn(async {}),
            oauth: None,
            run,
        }
    }

    /// Runs until `shutdown`: applies the reloads asked for (`load` reads the configuration
    /// again), and fails if a poller ends on its own. On shutdown, stops every poller and makes
    /// the last write of unsaved refresh tokens; `Ok(false)` if one could not be saved.
    pub async fn run(
        mut self,
        load: Option<Loader>,
        mut reloads: mpsc::Receiver<Option<ReloadRequest>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<bool, FleetError> {
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                Some(exit) = self.exits.recv() => {
                    let current = self.running.get(&exit.name).is_some_and(|r| r.run == exit.run);
                    if current {
                        // The supervisor logs it and ends the process: frozen figures must not
                        // look alive.
                        let how = match exit.panic {
                            Some(m) => format!("panicked: {m}"),
                            None => "returned".to_owned(),
                        };
                        return Err(FleetError::PollerEnded { name: exit.name, how });
                    }
                }
                Some(request) = reloads.recv() => {
                    let result = match &load {
                        // A reload stuck on a hung volume must not keep the process from
                        // stopping.
                        Some(load) => tokio::select! {
                            r = self.reload(load.clone()) => r,
                            _ = stopped(&mut shutdown) => break,
                        },
                        None => {
                            self.process.reloads.inc();
                            tracing::info!("reload asked for, but the organisation comes from flags: only --config.file can be reloaded");
                            Err("nothing to reload: the organisation comes from flags, not from --config.file".to_owned())
                        }
                    };
                    if let Some(answer) = request {
                        let _ = answer.send(result);
                    }
                }
            }
        }
        let all: Vec<Running> = std::mem::take(&mut self.running).into_values().collect();
        self.publish_view();
        Ok(stop_all(all).await)
    }

    async fn reload(&mut self, load: Loader) -> Result<(), String> {
        self.process.reloads.inc();
        // Reading the file and the secrets it names is file I/O: off the async workers, and
        // bounded (a file on a hung volume is a refused reload, not a hung one).
        let loaded = match tokio::time::timeout(
            LOAD_TIMEOUT,
            tokio::task::spawn_blocking(move || load()),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("the configuration could not be read: {e}")),
            Err(_) => Err(format!(
                "reading the configuration and the secrets it names took more than {LOAD_TIMEOUT:?}"
            )),
        };
        match loaded {
            Ok(orgs) => {
                let applied = self.apply(orgs).await;
                self.process.record_load(true, SystemTime::now());
                tracing::info!(
                    started = ?applied.started,
                    stopped = ?applied.stopped,
                    kept = applied.kept.len(),
                    deferred = ?applied.deferred,
                    "configuration reloaded"
                );
                Ok(())
            }
            Err(e) => {
                self.process.reload_failures.inc();
                self.process.record_load(false, SystemTime::now());
                self.view.changed();
                tracing::error!(error = %e, "configuration reload refused; the organisations running keep running");
                Err(e)
            }
        }
    }
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub started: Vec<String>,
    pub kept: Vec<String>,
    pub stopped: Vec<String>,
    /// Changed, but kept as they were: their rotated refresh token is not saved.
    pub deferred: Vec<String>,
}

/// Stops a poller, waits for it within [`STOP_TIMEOUT`], then makes its OAuth session's last
/// write; false if a rotated refresh token stayed unsaved.
async fn stop(mut r: Running) -> bool {
    let _ = r.stop.send(true);
    if tokio::time::timeout(STOP_TIMEOUT, &mut r.task)
        .await
        .is_err()
    {
        // Never two pollers of one organisation: one that does not stop is aborted.
        tracing::warn!(organization = %r.view.name, "the poller did not stop within {STOP_TIMEOUT:?}; aborted");
        r.task.abort();
        let _ = r.task.await;
    }
    match &r.oauth {
        Some(session) => session.shutdown().await.is_ok(),
        None => true,
    }
}

/// Stops pollers together (each within [`STOP_TIMEOUT`]); false if a rotated refresh token
/// stayed unsaved.
async fn stop_all(all: Vec<Running>) -> bool {
    futures_util::future::join_all(all.into_iter().map(stop))
        .await
        .into_iter()
        .all(|kept| kept)
}

/// How long re-reading a refresh-token file may take before the one read with the
/// configuration is used.
const REREAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Re-reads an OAuth organisation's refresh token just before it starts: between the load of
/// the configuration and now, the poller it replaces may have rotated the token and written
/// the new one, and the one read earlier is then spent. Keeps the earlier one if the file
/// cannot be read now.
async fn refresh_from_file(org: &mut Organization) {
    let CredentialSource::OAuth {
        refresh_token_file,
        refresh_token,
        ..
    } = &mut org.source
    else {
        return;
    };
    let path = refresh_token_file.clone();
    let read = tokio::time::timeout(
        REREAD_TIMEOUT,
        tokio::task::spawn_blocking(move || crate::secret::read_secret_file(&path)),
    )
    .await;
    if let Ok(Ok(Ok(now))) = read {
        *refresh_token = now;
    }
}

/// The landing page's rows about one organisation.
fn about(
    name: &str,
    api_url: &str,
    note: Option<&str>,
    kind: &str,
    interval: Duration,
) -> Vec<(String, String)> {
    vec![
        ("Organization".to_owned(), name.to_owned()),
        (
            "API".to_owned(),
            match note {
                Some(n) => format!("{api_url} ({n})"),
                None => api_url.to_owned(),
            },
        ),
        ("Credentials".to_owned(), kind.to_owned()),
        (
            "Poll interval".to_owned(),
            humantime::format_duration(interval).to_string(),
        ),
    ]
}
