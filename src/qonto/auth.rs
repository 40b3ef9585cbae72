//! Credentials for the Qonto API and the `Authorization` header they produce.
//!
//! Three kinds, as Qonto documents them (`../shared/qonto-api/FACTS.md`):
//! - OAuth 2.0, the endpoint's documented security: short-lived access tokens obtained from a
//!   rotating refresh token (see [`crate::qonto::oauth_session`]);
//! - a static OAuth access token (lives one hour: for short tests);
//! - the organisation API key, sent as `Authorization: <login>:<secret-key>` (not Basic auth).

use std::sync::Arc;

use crate::oauth::OAuthError;
use crate::qonto::oauth_session::OAuthSession;
use crate::secret::Secret;

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
    /// The authorization server refused the refresh token (`invalid_grant`…) or the client
    /// (`invalid_client`): a human must act. The [`OAuthError`]'s own text says what to do
    /// (run `oauth-login`, or check the client id and secret), once.
    #[error("OAuth refresh refused: {0}")]
    Refused(OAuthError),
    /// The token endpoint failed in a way worth retrying later (network, 5xx, 429).
    #[error("OAuth token endpoint unavailable: {0}")]
    Unavailable(String),
    /// The credential holds a character an HTTP header cannot carry (a control character,
    /// such as a line break inside a secret's file). Nothing was sent.
    #[error(
        "the {credential} contains a character not allowed in a header (a control character, such as a line break inside the value); {fix}"
    )]
    InvalidHeader {
        credential: &'static str,
        fix: &'static str,
    },
}

impl AuthError {
    /// True when the authorization server refused the credentials: retrying without human
    /// action is pointless, and `qonto_exporter_credentials_refused` says so.
    pub fn is_refusal(&self) -> bool {
        matches!(self, AuthError::Refused(_))
    }
}

impl Credentials {
    /// The credentials of a configured source, with its OAuth session (whose refreshes
    /// `observer` hears of) when it is OAuth; `None` for the demo, which has none.
    pub fn from_source(
        source: crate::config::CredentialSource,
        http: &reqwest::Client,
        observer: Arc<dyn crate::qonto::oauth_session::RefreshObserver>,
    ) -> Option<(Credentials, Option<Arc<OAuthSession>>)> {
        use crate::config::CredentialSource;
        Some(match source {
            CredentialSource::Demo => return None,
            CredentialSource::ApiKey { login, secret_key } => {
                (Credentials::ApiKey { login, secret_key }, None)
            }
            CredentialSource::AccessToken(t) => (Credentials::AccessToken(t), None),
            CredentialSource::OAuth {
                client_id,
                client_secret,
                refresh_token_file,
                refresh_token,
                token_url,
            } => {
                let endpoint = crate::oauth::TokenEndpoint::new(
                    http.clone(),
                    token_url,
                    client_id,
                    client_secret,
                );
                let session = Arc::new(OAuthSession::new(
                    endpoint,
                    refresh_token_file,
                    refresh_token,
                    observer,
                ));
                (Credentials::OAuth(session.clone()), Some(session))
            }
        })
    }

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

    /// The error for a credential that cannot be sent as a header, naming where it came from.
    pub fn not_a_header(&self) -> AuthError {
        let (credential, fix) = match self {
            Credentials::ApiKey { .. } => (
                "API key header (`<login>:<secret-key>`)",
                "check --qonto.login (QONTO_LOGIN) and the key in --qonto.secret-key-file or QONTO_SECRET_KEY",
            ),
            Credentials::AccessToken(_) => (
                "static access token",
                "check --qonto.access-token-file or QONTO_ACCESS_TOKEN",
            ),
            Credentials::OAuth(_) => (
                "access token issued by the OAuth token endpoint",
                "check that --qonto.oauth.token-url is Qonto's token endpoint",
            ),
        };
        AuthError::InvalidHeader { credential, fix }
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

    #[test]
    fn a_credential_that_is_not_a_header_says_which_and_is_no_refusal() {
        let k = Credentials::ApiKey {
            login: "acme".into(),
            secret_key: Secret::new("s3cr3t"),
        };
        let e = k.not_a_header();
        let text = e.to_string();
        assert!(
            text.contains("API key") && text.contains("QONTO_SECRET_KEY"),
            "{text}"
        );
        assert!(text.contains("not allowed in a header"), "{text}");
        assert!(
            !text.contains("OAuth") && !text.contains("refused"),
            "{text}"
        );
        assert!(!e.is_refusal());
        let t = Credentials::AccessToken(Secret::new("tok")).not_a_header();
        assert!(t.to_string().contains("QONTO_ACCESS_TOKEN"), "{t}");
        assert!(!t.to_string().contains("refresh"), "{t}");
    }
}
