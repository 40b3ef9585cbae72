//! `qonto-exporter healthcheck`: a probe for container healthchecks. The image is distroless
//! (no shell, curl or wget), so the binary probes itself: it asks the running exporter's
//! `/-/healthy` over HTTP and exits 0 on a 200, 1 otherwise, with one line saying why.

use std::time::Duration;

/// Flags of the `healthcheck` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthcheckArgs {
    /// URL to ask; a 200 answer means healthy. `/-/healthy` and `/-/ready` need no basic auth.
    #[arg(long, default_value = "http://127.0.0.1:10157/-/healthy")]
    pub url: String,

    /// Give up after this long (connection and answer).
    #[arg(long, default_value = "5s", value_parser = crate::config::parse_positive_duration)]
    pub timeout: Duration,

    /// Accept any TLS certificate: for an exporter serving its own (e.g. self-signed) certificate
    /// through --web.config.file, probed on loopback. Nothing secret is sent.
    #[arg(long = "tls.insecure-skip-verify")]
    pub insecure_skip_verify: bool,
}

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("{url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
}

/// Asks `args.url` once; `Ok` on a 200.
pub async fn run(args: &HealthcheckArgs) -> Result<(), HealthError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(args.insecure_skip_verify)
        .build()
        .map_err(|e| HealthError::Client(e.to_string()))?;
    let response = client
        .get(&args.url)
        .send()
        .await
        .map_err(|e| HealthError::Unreachable {
            url: args.url.clone(),
            message: error_chain(&e),
        })?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(HealthError::Status {
            url: args.url.clone(),
            status,
        }),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
