//! `qonto-exporter`: parses the command line and wires the parts together; nothing else.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use qonto_exporter::config::{Cli, Command, CredentialSource, LogFormat, RunArgs};
use qonto_exporter::metrics::SelfMetrics;
use qonto_exporter::oauth::TokenEndpoint;
use qonto_exporter::poller::{Poller, PollerConfig, Shared};
use qonto_exporter::qonto::auth::Credentials;
use qonto_exporter::qonto::client::{ClientConfig, QontoClient, RetryPolicy, http_client};
use qonto_exporter::qonto::oauth_session::OAuthSession;
use qonto_exporter::server::{self, App};
use qonto_exporter::simulator::{SimConfig, Simulator};
use qonto_exporter::state::{self, Storage};
use qonto_exporter::supervisor::{Outcome, supervise};
use qonto_exporter::webconfig::WebConfig;
use tokio::sync::watch;

/// Exit code of a usage or configuration error (as clap uses).
const USAGE: u8 = 2;

/// `--poll.interval` of `--demo` when neither the flag nor `QONTO_POLL_INTERVAL` sets it: the
/// demo organisation changes every 5 s, and a newcomer's dashboard should move with it (the
/// `1m` default suits Qonto, not a demo). Its few requests a poll go to loopback, not to Qonto.
const DEMO_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

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
    let source = match args.credentials() {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    let staging_token = match args.staging_token() {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
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
    let metrics = SelfMetrics::new();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let storage = match &args.storage_path {
        Some(_) if matches!(source, CredentialSource::Demo) => {
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
    let public_identity: Vec<String> = source
        .public_identity()
        .into_iter()
        .map(str::to_owned)
        .collect();
    // The demo organisation is a real HTTP server on loopback: the real client talks to it.
    let mut demo = None;
    let mut oauth_session = None;
    let mut api_url = args.api_url.clone();
    let credentials = match source {
        CredentialSource::Demo => {
            let cfg = SimConfig::demo();
            let token = cfg.access_tokens.first().cloned().unwrap_or_default();
            let sim = Simulator::new(cfg);
            match sim.start(([127, 0, 0, 1], 0).into()).await {
                Ok(running) => {
                    api_url = running.base_url();
                    tracing::info!(api_url = %api_url, links = sim.len(), "demo organisation started");
                    demo = Some((sim, running));
                }
                Err(e) => {
                    eprintln!("qonto-exporter: cannot start the demo organisation: {e}");
                    return ExitCode::FAILURE;
                }
            }
            Credentials::AccessToken(qonto_exporter::secret::Secret::new(token))
        }
        CredentialSource::ApiKey { login, secret_key } => Credentials::ApiKey { login, secret_key },
        CredentialSource::AccessToken(t) => Credentials::AccessToken(t),
        CredentialSource::OAuth {
            client_id,
            client_secret,
            refresh_token_file,
            refresh_token,
            token_url,
        } => {
            let http = match http_client(args.timeout) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("qonto-exporter: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let endpoint = TokenEndpoint::new(http, token_url, client_id, client_secret);
            let session = Arc::new(OAuthSession::new(
                endpoint,
                refresh_token_file,
                refresh_token,
                metrics.clone(),
            ));
            oauth_session = Some(session.clone());
            Credentials::OAuth(session)
        }
    };
    let kind = credentials.kind();
    let client = match QontoClient::new(
        ClientConfig {
            base_url: api_url.clone(),
            timeout: args.timeout,
            staging_token,
            retry: RetryPolicy {
                max_attempts: args.max_attempts,
                max_retry_after: args.max_retry_after,
                ..RetryPolicy::default()
            },
            budget: args.budget(),
        },
        credentials,
        metrics.clone(),
    ) {
        Ok(c) => Arc::new(c),
        Err(e) => return usage_error(e),
    };
    metrics.observe_budget(client.budget().clone());
    let budget = client.budget().describe();
    let shared = Arc::new(Shared::default());
    let progress = client.progress().clone();
    progress.set_poll_timeout(args.poll_timeout);
    let request_budget = client.budget().clone();
    let storage = storage.map(|s| {
        let mut parts = vec![api_url.trim_end_matches('/')];
        parts.extend(public_identity.iter().map(String::as_str));
        s.for_identity(state::identity(&parts))
    });
    let mut poller = Poller::new(
        client,
        PollerConfig {
            interval: args.poll_interval,
            windows: args.expiry_windows.0.clone(),
            limits: args.limits(),
            concurrency: usize::from(args.max_concurrency),
            full_resync: args.full_resync_interval,
            timeout: args.poll_timeout,
            max_rewalks: 2,
        },
        metrics.clone(),
        shared.clone(),
    );
    if let Some(storage) = storage {
        poller.restore_from(storage).await;
    }
    let about = vec![
        (
            "API".to_owned(),
            if demo.is_some() {
                format!("{api_url} (demo organisation)")
            } else {
                api_url.clone()
            },
        ),
        ("Credentials".to_owned(), kind.to_owned()),
        (
            "Poll interval".to_owned(),
            humantime::format_duration(args.poll_interval).to_string(),
        ),
        (
            "Expiry windows".to_owned(),
            args.expiry_windows
                .0
                .iter()
                .map(|w| w.label.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    let app = Arc::new(App {
        telemetry_path: args.telemetry_path.clone(),
        shared,
        progress,
        budget: request_budget,
        metrics,
        web,
        about,
    });
    let local = listener.local_addr().ok();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %local.map(|a| a.to_string()).unwrap_or_default(),
        telemetry_path = %args.telemetry_path,
        credentials = kind,
        interval = %humantime::format_duration(args.poll_interval),
        budget = %budget,
        "qonto-exporter started"
    );
    let poller_task = tokio::spawn(poller.run(shutdown_rx.clone()));
    let server_task = tokio::spawn(server::serve(listener, app, shutdown_rx));
    let outcome = supervise(
        poller_task,
        server_task,
        qonto_exporter::shutdown::signal(),
        &shutdown_tx,
    )
    .await;
    if let Some((_, running)) = demo {
        running.shutdown().await;
    }
    // One last bounded write of an unsaved rotated refresh token; the session logs the loss.
    let token_kept = match &oauth_session {
        Some(session) => session.shutdown().await.is_ok(),
        None => true,
    };
    match outcome {
        Outcome::Stopped if token_kept => ExitCode::SUCCESS,
        Outcome::Stopped => ExitCode::FAILURE,
        Outcome::ServerFailed(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
        // Already logged by the supervisor.
        Outcome::Unexpected { .. } => ExitCode::FAILURE,
    }
}
