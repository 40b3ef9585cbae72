//! qonto-exporter: a Prometheus exporter for Qonto payment links.
pub mod aggregate;
pub mod config;
pub mod healthcheck;
pub mod html;
pub mod metrics;
pub mod money;
pub mod oauth;
pub mod oauth_login;
pub mod poller;
pub mod qonto;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod simulator;
pub mod supervisor;
pub mod webconfig;
