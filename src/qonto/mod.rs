//! The Qonto API: wire model, authentication and the HTTP client.
pub mod model;
