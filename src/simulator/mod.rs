//! The simulated Qonto API (placeholder until the simulator branch lands).
/// Flags of `qonto-exporter simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {}
