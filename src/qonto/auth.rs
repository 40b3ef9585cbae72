//! Credentials for the Qonto API and the `Authorization` header they produce.
//!
//! Three kinds, as Qonto documents them (`../shared/qonto-api/FACTS.md`):
//! - OAuth 2.0, the endpoint's documented security: short-lived access tokens obtained from a
//!   rotating refresh token (see [`crate::qonto::oauth_session`]);
//! - a static OAuth access token (lives one hour: for short tests);
//! - the organisation API key, sent as `Authorization: <login>:<secret-key>` (not Basic auth).

use std::sync::Arc;

use crate::qonto::oauth_session::OAuthSession;
use crate::secret::{Secret, SecretFileError};

/// How the exporter authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    ApiKey { login: String, secret_key: Secret },
    AccessToken(Secret),
    OAuth(Arc<OAuthSession>),
}

/// Why no usable `Authorization` header could be produced.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The authorization server refused the refresh token or the client: a human must act.
    #[error("OAuth refresh refused ({error}): {hint}")]
    Refused { error: String, hint: &'static str },
    /// The token endpoint failed in a way worth retrying later (network, 5xx, 429).
    #[error("OAuth token endpoint unavailable: {0}")]
    Unavailable(String),
    /// The rotated refresh token could not be saved; it is not used until it is.
    #[error("cannot save the rotated refresh token: {0}")]
    Persist(#[from] SecretFileError),
}

impl AuthError {
    /// True when retrying without human action is pointless.
    pub fn is_refusal(&self) -> bool {
        matches!(self, AuthError::Refused { .. } | AuthError::Persist(_))
    }
}

impl Credentials {
    /// A short name for logs and the landing page.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::ApiKey { .. } => "api-key",
            Credentials::AccessToken(_) => "access-token",
            Credentials::OAuth(_) => "oauth",
        }
    }

    /// The value of the `Authorization` header for the next request.
    pub async fn authorization(&self) -> Result<Secret, AuthError> {
        match self {
            Credentials::ApiKey { login, secret_key } => {
                Ok(Secret::new(format!("{login}:{}", secret_key.expose())))
            }
            Credentials::AccessToken(token) => {
                Ok(Secret::new(format!("Bearer {}", token.expose())))
            }
            Credentials::OAuth(session) => session
                .access_token()
                .await
                .map(|t| Secret::new(format!("Bearer {}", t.expose()))),
        }
    }

    /// Called after a 401 to the header `sent`. Returns true when a fresh credential is now
    /// available and one retry is worth it (OAuth only: the access token may have been revoked
    /// or expired early); static credentials are refused for good.
    pub async fn unauthorized(&self, sent: &Secret) -> bool {
        match self {
            Credentials::OAuth(session) => {
                let token = sent.expose().strip_prefix("Bearer ").unwrap_or_default();
                session.invalidate(token).await
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn header_formats() {
        let k = Credentials::ApiKey {
            login: "acme-1234".into(),
            secret_key: Secret::new("s3cr3t"),
        };
        assert_eq!(
            k.authorization().await.unwrap().expose(),
            "acme-1234:s3cr3t"
        );
        assert!(!format!("{k:?}").contains("s3cr3t"));
        let t = Credentials::AccessToken(Secret::new("tok"));
        assert_eq!(t.authorization().await.unwrap().expose(), "Bearer tok");
        assert!(!t.unauthorized(&Secret::new("Bearer tok")).await);
    }
}
