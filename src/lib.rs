//! qonto-exporter: a Prometheus exporter for Qonto payment links.
pub mod secret;
pub mod simulator;
