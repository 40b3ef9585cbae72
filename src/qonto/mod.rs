//! The Qonto API: wire model, authentication, the request budget, the HTTP client and pagination.
pub mod auth;
pub mod budget;
pub mod client;
pub mod model;
pub mod oauth_session;
pub mod walk;
