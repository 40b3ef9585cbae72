//! `qonto-exporter`: parses the command line and wires the parts together; nothing else.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use std::sync::atomic::{AtomicBool, Ordering};

use qonto_exporter::config::{Cli, Command, CredentialSource, LogFormat, RunArgs};
use qonto_exporter::fleet::{Common, Fleet, Loader, ReloadRequest};
use qonto_exporter::metrics::ProcessMetrics;
use qonto_exporter::organizations;
use qonto_exporter::qonto::budget::Budget;
use qonto_exporter::qonto::client::{RetryPolicy, http_client};
use qonto_exporter::secret::Secret;
use qonto_exporter::server::{self, App, ScrapeCache};
use qonto_exporter::simulator::{SimConfig, Simulator};
use qonto_exporter::state::Storage;
use qonto_exporter::supervisor::{Outcome, supervise};
use qonto_exporter::webconfig::WebConfig;
use tokio::sync::{mpsc, watch};

/// Exit code of a usage or configuration error (as clap uses).
const USAGE: u8 = 2;

/// `--poll.interval` of `--demo` when neither the flag nor `QONTO_POLL_INTERVAL` sets it: the
/// demo organisation changes every 5 s, and a newcomer's dashboard should move with it (the
/// `1m` default suits Qonto, not a demo). Its few requests a poll go to loopback, not to Qonto.
const DEMO_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// `--collect.payments` of `--demo` when neither the flag nor its variable sets it: the demo's
/// payments panels move too (its requests go to loopback, not to Qonto).
const DEMO_COLLECT_PAYMENTS: u32 = 100;

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let cli = match parsed {
        Ok((mut cli, matches)) => {
            use clap::parser::ValueSource;
            let interval_given = matches!(
                matches.value_source("poll_interval"),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if cli.run.demo && !interval_given {
                cli.run.poll_interval = DEMO_POLL_INTERVAL;
            }
            let payments_given = matches!(
                matches.value_source("collect_payments"),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if cli.run.demo && !payments_given {
                cli.run.collect_payments = DEMO_COLLECT_PAYMENTS;
            }
            cli
        }
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // clap's message is several lines; the first names the flag and the problem.
            let rendered = e.to_string();
            let line = rendered.lines().next().unwrap_or("invalid command line");
            eprintln!("qonto-exporter: {}", line.trim_start_matches("error: "));
            return ExitCode::from(USAGE);
        }
    };
    init_logging(&cli.run);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qonto-exporter: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Some(Command::Simulate(args)) => {
                match qonto_exporter::simulator::run_simulate(*args).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("qonto-exporter simulate: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Some(Command::OauthLogin(args)) => {
                match qonto_exporter::oauth_login::run(*args).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("qonto-exporter oauth-login: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Some(Command::Webhook(args)) => {
                match qonto_exporter::webhook::subscribe::run(*args).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("qonto-exporter webhook: {e}");
                        ExitCode::from(e.exit_code())
                    }
                }
            }
            Some(Command::Healthcheck(args)) => {
                match qonto_exporter::healthcheck::run(&args).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("qonto-exporter healthcheck: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            None => run(cli.run).await,
        }
    });
    // Dropping the runtime would wait for every blocking-pool thread, and one stuck on a hung
    // volume (a token file read or write) never returns: the process must exit regardless.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

fn init_logging(args: &RunArgs) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{level},hyper=warn,reqwest=warn,rustls=warn,h2=warn",
        level = args.log_level
    ));
    let registry = tracing_subscriber::registry().with(filter);
    match args.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .with_span_name(false)
                    .with_span_path(false)
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("qonto-exporter: {msg}");
    ExitCode::from(USAGE)
}

async fn run(args: RunArgs) -> ExitCode {
    if let Err(e) = args.validate() {
        return usage_error(e);
    }
    let shard = match args.shard() {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    let (orgs, loader) = match &args.config_file {
        Some(path) => match organizations::load(path, &args, shard) {
            Ok(orgs) => {
                let (path, defaults) = (path.clone(), args.clone());
                let loader: Loader = Arc::new(move || {
                    organizations::load(&path, &defaults, shard).map_err(|e| e.to_string())
                });
                (orgs, Some(loader))
            }
            Err(e) => return usage_error(e),
        },
        None => match organizations::from_flags(&args) {
            Ok(org) => (vec![org], None),
            Err(e) => return usage_error(e),
        },
    };
    let demo_asked = orgs
        .iter()
        .any(|o| matches!(o.source, CredentialSource::Demo));
    let web = match &args.web_config_file {
        Some(path) => match WebConfig::load(path) {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => return usage_error(format!("--web.config.file: {e}")),
        },
        None => None,
    };
    let listener = match server::bind(args.listen_address) {
        Ok(l) => l,
        Err(e) => {
            return usage_error(format!(
                "--web.listen-address: cannot listen on {}: {e}",
                args.listen_address
            ));
        }
    };
    // The webhook receiver: off unless asked for; the demo runs one on loopback (its own
    // simulator delivers to it), so the demo's figures move in real time.
    let mut demo_secret = None;
    let webhook = match args.webhook() {
        Ok(Some(w)) => Some(w),
        Ok(None) if demo_asked => match demo_webhook() {
            Ok((w, secret)) => {
                demo_secret = Some(secret);
                Some(w)
            }
            Err(e) => {
                eprintln!("qonto-exporter: demo webhook secret: {e}");
                return ExitCode::FAILURE;
            }
        },
        Ok(None) => None,
        Err(e) => return usage_error(e),
    };
    let webhook = match webhook {
        Some(w) => match server::bind(w.listen_address) {
            Ok(l) => Some((l, w)),
            Err(e) => {
                return usage_error(format!(
                    "--webhook.listen-address: cannot listen on {}: {e}",
                    w.listen_address
                ));
            }
        },
        None => None,
    };
    let router = webhook
        .as_ref()
        .map(|(_, w)| qonto_exporter::webhook::receiver::Router::new(&w.path));
    let storage = match &args.storage_path {
        Some(_) if demo_asked => {
            return usage_error(
                "--storage.path: not used with --demo (the demo organisation is new at every start)",
            );
        }
        Some(dir) => match Storage::open(dir) {
            Ok(s) => Some(s),
            Err(e) => return usage_error(format!("--storage.path: {e}")),
        },
        None => None,
    };
    let http = match http_client(args.timeout) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("qonto-exporter: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The demo organisation is a real HTTP server on loopback: the real client talks to it.
    let mut demo = None;
    let mut orgs = orgs;
    if demo_asked {
        let cfg = SimConfig::demo();
        let token = cfg.access_tokens.first().cloned().unwrap_or_default();
        let sim = Simulator::new(cfg);
        match sim.start(([127, 0, 0, 1], 0).into()).await {
            Ok(running) => {
                tracing::info!(api_url = %running.base_url(), links = sim.len(), "demo organisation started");
                for o in orgs.iter_mut() {
                    o.api_url = running.base_url();
                    o.source = CredentialSource::AccessToken(Secret::new(token.clone()));
                }
                // The demo's deliveries go to its own loopback receiver.
                if let (Some(secret), Some((l, w))) = (&demo_secret, &webhook) {
                    let url = l.local_addr().map(|a| format!("http://{a}{}", w.path));
                    match url.map(|u| sim.subscribe_webhook(&u, secret.expose())) {
                        Ok(Ok(_)) => {
                            tracing::info!("demo organisation delivers webhooks to this exporter")
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "demo webhooks not subscribed; figures move at polls only")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "demo webhooks not subscribed; figures move at polls only")
                        }
                    }
                }
                demo = Some((sim, running));
            }
            Err(e) => {
                eprintln!("qonto-exporter: cannot start the demo organisation: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let budget = Arc::new(Budget::new(args.budget()));
    let process = ProcessMetrics::new(budget.clone(), shard);
    process.record_load(true, std::time::SystemTime::now());
    let configured = orgs.len();
    let mut fleet = Fleet::new(
        Common {
            timeout: args.timeout,
            retry: RetryPolicy {
                max_attempts: args.max_attempts,
                max_retry_after: args.max_retry_after,
                ..RetryPolicy::default()
            },
            windows: args.expiry_windows.0.clone(),
            aging: args.aging_buckets.clone(),
            collect_payments: args.collect_payments as usize,
            limits: args.limits(),
            concurrency: usize::from(args.max_concurrency),
            full_resync: args.full_resync_interval,
            poll_timeout: args.poll_timeout,
            storage,
            shard,
            api_note: demo.is_some().then_some("demo organisation"),
            http,
            webhooks: router.clone(),
        },
        budget.clone(),
        process.clone(),
    );
    // Listening before the organisations start: SIGHUP's default action would end the process.
    let (reload_tx, reload_rx) = mpsc::channel(4);
    spawn_sighup(reload_tx.clone());
    let applied = fleet.apply(orgs).await;
    let mut about = vec![(
        "Budget".to_owned(),
        format!(
            "{} (shared by every organisation, in turns)",
            budget.describe()
        ),
    )];
    if let Some(path) = &args.config_file {
        about.push(("Configuration".to_owned(), path.display().to_string()));
    }
    if shard.count > 1 {
        about.push((
            "Shard".to_owned(),
            format!(
                "{} of {} (--shard.index of --shard.count)",
                shard.index, shard.count
            ),
        ));
    }
    about.push((
        "Expiry windows".to_owned(),
        args.expiry_windows
            .0
            .iter()
            .map(|w| w.label.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    ));
    let app = Arc::new(App {
        telemetry_path: args.telemetry_path.clone(),
        fleet: fleet.view(),
        process,
        budget: budget.clone(),
        web,
        about,
        reload: args.enable_lifecycle.then_some(reload_tx),
        cache: ScrapeCache::default(),
    });
    let local = listener.local_addr().ok();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %local.map(|a| a.to_string()).unwrap_or_default(),
        telemetry_path = %args.telemetry_path,
        organizations = applied.started.len(),
        configured,
        shard = %format!("{}/{}", shard.index, shard.count),
        budget = %budget.describe(),
        "qonto-exporter started"
    );
    let tokens_kept = Arc::new(AtomicBool::new(true));
    let kept = tokens_kept.clone();
    let fleet_task = tokio::spawn(async move {
        fleet
            .run(loader, reload_rx, shutdown_rx)
            .await
            .map(|ok| kept.store(ok, Ordering::SeqCst))
    });
    let web = server::serve(listener, app, shutdown_tx.subscribe());
    let receiver = match (webhook, router) {
        (Some((l, cfg)), Some(router)) => {
            tracing::info!(listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), path = %cfg.path, "webhook receiver started");
            Some(qonto_exporter::webhook::receiver::serve(
                l,
                cfg,
                router,
                shutdown_tx.subscribe(),
            ))
        }
        _ => None,
    };
    // Either listener failing ends the process (the supervisor reports it).
    let server_task = tokio::spawn(async move {
        match receiver {
            Some(r) => tokio::try_join!(async { web.await.map_err(|e| e.to_string()) }, async {
                r.await.map_err(|e| e.to_string())
            },)
            .map(|_| ()),
            None => web.await.map_err(|e| e.to_string()),
        }
    });
    let outcome = supervise(
        fleet_task,
        server_task,
        qonto_exporter::shutdown::signal(),
        &shutdown_tx,
    )
    .await;
    if let Some((_, running)) = demo {
        running.shutdown().await;
    }
    match outcome {
        Outcome::Stopped if tokens_kept.load(Ordering::SeqCst) => ExitCode::SUCCESS,
        Outcome::Stopped => ExitCode::FAILURE,
        Outcome::ServerFailed(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
        // Already logged by the supervisor.
        Outcome::Unexpected { .. } => ExitCode::FAILURE,
    }
}

/// The demo's webhook receiver: loopback, a port the system picks, a fresh random secret.
fn demo_webhook() -> Result<
    (qonto_exporter::config::WebhookConfig, Secret),
    qonto_exporter::webhook::secrets::SecretsError,
> {
    let secret = qonto_exporter::webhook::subscribe::generate_secret();
    let config = qonto_exporter::config::WebhookConfig {
        listen_address: ([127, 0, 0, 1], 0).into(),
        path: qonto_exporter::config::DEFAULT_WEBHOOK_PATH.to_owned(),
        secrets: Arc::new(qonto_exporter::webhook::secrets::WebhookSecrets::from_value(&secret)?),
        web: None,
    };
    Ok((config, secret))
}

/// SIGHUP asks for a reload of `--config.file`, as it does of Prometheus's configuration. A
/// reload already waiting absorbs the signal.
fn spawn_sighup(reloads: mpsc::Sender<Option<ReloadRequest>>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reload with POST /-/reload instead");
            return;
        };
        while hup.recv().await.is_some() {
            let _ = reloads.try_send(None);
        }
    });
    #[cfg(not(unix))]
    drop(reloads);
}
