//! qonto-exporter: a Prometheus exporter for Qonto payment links.
pub mod oauth;
pub mod oauth_login;
pub mod secret;
pub mod simulator;
pub mod webconfig;
