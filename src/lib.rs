//! qonto-exporter: a Prometheus exporter for Qonto payment links.
pub mod oauth;
pub mod secret;
pub mod simulator;
