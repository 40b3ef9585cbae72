//! The OAuth 2.0 token endpoint client (RFC 6749 §4.1.3 and §6), shared by the exporter's
//! refresh loop and by `qonto-exporter oauth-login`.
//!
//! Qonto rotates refresh tokens: every successful refresh returns a new refresh token and the
//! old one stops working shortly after. This module only talks to the endpoint; storing the
//! rotated token (atomically, see [`crate::secret::write_secret_file_atomic`]) is the caller's
//! job.
//!
//! Errors are sorted by what the caller should do next: [`OAuthError::is_refusal`] errors will
//! not go away by retrying (a human must act), the others are worth retrying later. No error
//! ever shows a token or the client secret, and a response body is never copied into an
//! error, because a token endpoint's body may hold tokens.
//!
//! A success answer is read leniently wherever strictness would lose access: once the server
//! has answered a refresh with a new refresh token, the old one is spent, so an odd
//! `expires_in` (a fraction, a negative, a huge number, a string) never fails the answer — it is
//! believed within [`MIN_TOKEN_LIFETIME`]..[`MAX_TOKEN_LIFETIME`], or as [`DEFAULT_EXPIRES_IN`]
//! when it is no number at all — and an answer with a new refresh token but no usable access
//! token is [`OAuthError::IncompleteRotation`], which hands the refresh token to the caller.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::secret::Secret;

/// Lifetime assumed when the server omits `expires_in`, or sends something that is no number
/// (RFC 6749 makes it optional; Qonto's access tokens live one hour).
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);
/// Shortest access-token lifetime believed, whatever `expires_in` says: `0` must not make every
/// request refresh.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Longest access-token lifetime believed, whatever `expires_in` says (Qonto's is one hour): a
/// huge value must neither overflow an `Instant` nor keep a token for years. A token that dies
/// sooner than believed costs one 401, one refresh and one retry.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A client of one authorization server's token endpoint, for one OAuth client.
#[derive(Debug, Clone)]
pub struct TokenEndpoint {
    url: String,
    client_id: String,
    client_secret: Secret,
    http: reqwest::Client,
}

/// The tokens granted by a successful request. `Debug` redacts the tokens.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// Bearer token for API requests.
    pub access_token: Secret,
    /// The new refresh token, when the server issued one (Qonto: on every refresh, and on a
    /// code exchange only if `offline_access` was granted).
    pub refresh_token: Option<Secret>,
    /// How long the access token is believed valid from the moment it was issued: the server's
    /// `expires_in` within [`MIN_TOKEN_LIFETIME`]..[`MAX_TOKEN_LIFETIME`], or
    /// [`DEFAULT_EXPIRES_IN`] when the server did not say or said no number.
    pub expires_in: Duration,
    /// Set when `expires_in` was odd (out of range, a fraction, no number) and [`Self::expires_in`]
    /// is not what the server said: one sentence for a log line, quoting at most the number.
    pub expires_in_note: Option<String>,
    /// The scopes actually granted, when the server said (they may differ from those asked).
    pub scope: Option<String>,
}

/// Why the token endpoint did not hand out tokens.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// The authorization server refused the grant (`invalid_grant`: the refresh token expired,
    /// was revoked or was already rotated; or another OAuth error code on a 4xx). Retrying will
    /// not help: the user must run `qonto-exporter oauth-login` again.
    #[error(
        "the authorization server refused the grant ({error}{}); run `qonto-exporter oauth-login` to get a new refresh token",
        fmt_description(description)
    )]
    Refused {
        error: String,
        description: Option<String>,
    },
    /// `invalid_client` or a 401: the client id or client secret is wrong.
    #[error(
        "the authorization server rejected the OAuth client credentials (invalid_client{}); check the client id and client secret",
        fmt_description(description)
    )]
    InvalidClient { description: Option<String> },
    /// A redirect, not followed: the request carries the client secret, which must only ever
    /// reach the configured token endpoint.
    #[error(
        "the token endpoint answered HTTP {status}, a redirect to {location:?}, which is not followed (the request carries the client secret); check the token URL"
    )]
    Redirect { status: u16, location: String },
    /// Any other HTTP status (5xx, 429, 408...): transient, worth retrying later.
    #[error("the token endpoint answered HTTP {status}{}", match error { Some(e) => format!(" ({e})"), None => String::new() })]
    Status { status: u16, error: Option<String> },
    /// The request did not complete (DNS, connection, TLS, timeout). The text names the token
    /// URL, which holds no secret, and never the form body.
    #[error("cannot reach the token endpoint: {0}")]
    Transport(String),
    /// A success status with a body that is not a usable token response.
    #[error("the token endpoint's answer is not a valid token response: {0}")]
    InvalidResponse(String),
    /// A success status whose body holds a new refresh token but no usable access token. The
    /// server may already have spent the refresh token presented, so the caller must keep
    /// `refresh_token` (store it, spend it next) and may retry later. `Debug` redacts it.
    #[error(
        "the token endpoint's answer carries a new refresh token but no usable access token: {reason}"
    )]
    IncompleteRotation {
        reason: String,
        refresh_token: Secret,
    },
}

fn fmt_description(description: &Option<String>) -> String {
    match description {
        Some(d) => format!(": {d}"),
        None => String::new(),
    }
}

impl OAuthError {
    /// True when retrying cannot help and a human must act (new login, or fix the client
    /// credentials). Callers must not retry these in a loop: Qonto throttles callers that
    /// collect too many refusals.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            OAuthError::Refused { .. } | OAuthError::InvalidClient { .. }
        )
    }
}

impl TokenEndpoint {
    /// A client for `token_url`. Timeouts and TLS settings come from `http`.
    pub fn new(
        http: reqwest::Client,
        token_url: String,
        client_id: String,
        client_secret: Secret,
    ) -> Self {
        TokenEndpoint {
            url: token_url,
            client_id,
            client_secret,
            http,
        }
    }

    /// The token endpoint's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Trades a refresh token for new tokens (`grant_type=refresh_token`). With Qonto the
    /// returned [`TokenSet::refresh_token`] replaces `refresh_token`, which must then be
    /// forgotten.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenSet, OAuthError> {
        self.request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ])
        .await
    }

    /// Trades an authorization code for tokens (`grant_type=authorization_code`).
    /// `redirect_uri` must be the one used in the authorization request.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet, OAuthError> {
        self.request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ])
        .await
    }

    async fn request(&self, grant: &[(&str, &str)]) -> Result<TokenSet, OAuthError> {
        // Client credentials go in the body (client_secret_post), as Qonto documents it.
        let mut form: Vec<(&str, &str)> = grant.to_vec();
        form.push(("client_id", &self.client_id));
        form.push(("client_secret", self.client_secret.expose()));
        let response = self
            .http
            .post(&self.url)
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("")
                .to_owned();
            return Err(OAuthError::Redirect {
                status: status.as_u16(),
                location,
            });
        }
        let body = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            parse_token_response(&body)
        } else {
            Err(classify_error(status.as_u16(), &body))
        }
    }
}

/// reqwest's `Display` stops at the outermost error; the cause (refused, timed out,
/// certificate...) is in the source chain, which is what a user needs to read.
fn transport_error(e: reqwest::Error) -> OAuthError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    OAuthError::Transport(text)
}

/// Parses a successful token response field by field (rather than with serde's messages,
/// which may quote a value) so that no part of the body can end up in an error. A new refresh
/// token is never dropped: without a usable access token beside it the answer is
/// [`OAuthError::IncompleteRotation`], and `expires_in` cannot fail the answer (its text is kept
/// raw, so not even a number beyond `f64`, which serde_json refuses, can).
fn parse_token_response(body: &[u8]) -> Result<TokenSet, OAuthError> {
    let object: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                OAuthError::InvalidResponse("not a JSON object".into())
            }
            _ => OAuthError::InvalidResponse(format!(
                "not JSON (line {}, column {})",
                e.line(),
                e.column()
            )),
        })?;
    // Each raw value is valid JSON; a number beyond `f64` in a field read as a value reads as
    // "not a string", which is what it is.
    let field = |name: &str| -> Option<Value> {
        object
            .get(name)
            .map(|raw| serde_json::from_str(raw.get()).unwrap_or(Value::Null))
    };
    let refresh_token = match field("refresh_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(Secret::new(s)),
        Some(_) => {
            return Err(OAuthError::InvalidResponse(
                "`refresh_token` is not a string".into(),
            ));
        }
    };
    let access_token = match field("access_token") {
        Some(Value::String(s)) if !s.trim().is_empty() => Secret::new(s),
        other => {
            let reason = match other {
                None => "no `access_token`",
                Some(_) => "`access_token` is not a non-empty string",
            };
            return Err(match refresh_token {
                Some(refresh_token) => OAuthError::IncompleteRotation {
                    reason: reason.into(),
                    refresh_token,
                },
                None => OAuthError::InvalidResponse(reason.into()),
            });
        }
    };
    let (expires_in, expires_in_note) =
        parse_expires_in(object.get("expires_in").map(|raw| raw.get()));
    let scope = match field("scope") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(TokenSet {
        access_token,
        refresh_token,
        expires_in,
        expires_in_note,
        scope,
    })
}

/// The lifetime believed for `expires_in` (its raw JSON text), and a note when it is not what
/// the server said. Any number, or a string holding one (some servers send a string), counts;
/// it is clamped to [`MIN_TOKEN_LIFETIME`]..[`MAX_TOKEN_LIFETIME`]. Anything else means
/// [`DEFAULT_EXPIRES_IN`]. A note quotes the parsed number only, never the raw text.
fn parse_expires_in(raw: Option<&str>) -> (Duration, Option<String>) {
    let raw = raw.map(str::trim).unwrap_or("null");
    if raw == "null" {
        return (DEFAULT_EXPIRES_IN, None);
    }
    let text = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).ok()
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(raw.to_owned())
    } else {
        None
    };
    let text = text.as_deref().map(str::trim).unwrap_or("");
    // A JSON number too large for `f64` parses as an infinity: huge, so clamped. In a string,
    // Rust would also take "inf" or "NaN", which are no numbers of seconds.
    let seconds = text
        .parse::<f64>()
        .ok()
        .filter(|s| !s.is_nan() && (s.is_finite() || !raw.starts_with('"')));
    let Some(seconds) = seconds else {
        return (
            DEFAULT_EXPIRES_IN,
            Some(format!(
                "expires_in is not a number of seconds; assuming {} s",
                DEFAULT_EXPIRES_IN.as_secs()
            )),
        );
    };
    let said = match text.parse::<u64>() {
        Ok(whole) => whole.to_string(),
        Err(_) => seconds.to_string(),
    };
    let (min, max) = (MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME);
    if seconds < min.as_secs_f64() || seconds > max.as_secs_f64() {
        let believed = if seconds < min.as_secs_f64() {
            min
        } else {
            max
        };
        return (
            believed,
            Some(format!(
                "expires_in is outside 60 s..24 h ({said} s); using the nearest bound, {} s",
                believed.as_secs()
            )),
        );
    }
    // In range, so the conversion cannot fail; the fallback only keeps this panic-free.
    let believed = Duration::try_from_secs_f64(seconds).unwrap_or(DEFAULT_EXPIRES_IN);
    if seconds.fract() != 0.0 {
        return (
            believed,
            Some(format!(
                "expires_in is not a whole number of seconds ({said} s); using it as such"
            )),
        );
    }
    (believed, None)
}

/// Maps a non-success answer to the error the caller can act on (RFC 6749 §5.2 error codes).
fn classify_error(status: u16, body: &[u8]) -> OAuthError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let error = field("error");
    let description = field("error_description");
    // 408 and 429 are "try again later" whatever the body says.
    let retryable_status = status == 408 || status == 429 || status >= 500;
    match error {
        Some(e) if e == "invalid_client" => OAuthError::InvalidClient { description },
        _ if status == 401 => OAuthError::InvalidClient { description },
        Some(e) if !retryable_status && (400..500).contains(&status) => OAuthError::Refused {
            error: e,
            description,
        },
        error => OAuthError::Status { status, error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const CLIENT_SECRET: &str = "client-secret-s3cr3t-value";

    /// reqwest is built with `rustls-no-provider`: even a plain-http client needs one.
    fn http() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn endpoint(server: &MockServer) -> TokenEndpoint {
        TokenEndpoint::new(
            http(),
            format!("{}/oauth2/token", server.uri()),
            "my-client".into(),
            Secret::new(CLIENT_SECRET),
        )
    }

    async fn answer(template: ResponseTemplate) -> (MockServer, TokenEndpoint) {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(template)
            .mount(&server)
            .await;
        let ep = endpoint(&server).await;
        (server, ep)
    }

    fn assert_no_secret(e: &OAuthError) {
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(CLIENT_SECRET), "secret leaked in {text}");
            assert!(
                !text.contains("old-refresh"),
                "refresh token leaked in {text}"
            );
        }
    }

    #[tokio::test]
    async fn refresh_sends_the_form_and_parses_the_tokens() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(body_string_contains("grant_type=refresh_token"))
            .and(body_string_contains("refresh_token=old-refresh%2Ftoken"))
            .and(body_string_contains("client_id=my-client"))
            .and(body_string_contains(format!(
                "client_secret={CLIENT_SECRET}"
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "new-access",
                "refresh_token": "new-refresh",
                "token_type": "bearer",
                "expires_in": 3599,
                "scope": "payment_link.read offline_access",
            })))
            .expect(1)
            .mount(&server)
            .await;
        let tokens = endpoint(&server)
            .await
            .refresh(&Secret::new("old-refresh/token"))
            .await
            .unwrap();
        assert_eq!(tokens.access_token.expose(), "new-access");
        assert_eq!(
            tokens.refresh_token.as_ref().unwrap().expose(),
            "new-refresh"
        );
        assert_eq!(tokens.expires_in, Duration::from_secs(3599));
        assert_eq!(
            tokens.scope.as_deref(),
            Some("payment_link.read offline_access")
        );
        let debug = format!("{tokens:?}");
        assert!(!debug.contains("new-access") && !debug.contains("new-refresh"));
    }

    #[tokio::test]
    async fn exchange_code_sends_code_and_redirect_uri() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .and(body_string_contains("grant_type=authorization_code"))
            .and(body_string_contains("code=the-code"))
            .and(body_string_contains(
                "redirect_uri=http%3A%2F%2F127.0.0.1%3A10159%2Fcallback",
            ))
            .and(body_string_contains("client_id=my-client"))
            .and(body_string_contains(format!(
                "client_secret={CLIENT_SECRET}"
            )))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"access_token": "a", "refresh_token": "r"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let tokens = endpoint(&server)
            .await
            .exchange_code("the-code", "http://127.0.0.1:10159/callback")
            .await
            .unwrap();
        assert_eq!(tokens.refresh_token.unwrap().expose(), "r");
    }

    #[tokio::test]
    async fn missing_refresh_token_and_expiry_get_defaults() {
        let (_s, ep) = answer(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": "a", "token_type": "Bearer"})),
        )
        .await;
        let tokens = ep.refresh(&Secret::new("old-refresh")).await.unwrap();
        assert!(tokens.refresh_token.is_none());
        assert_eq!(tokens.expires_in, DEFAULT_EXPIRES_IN);
        assert!(tokens.scope.is_none());
    }

    #[tokio::test]
    async fn invalid_grant_is_a_refusal() {
        let (_s, ep) = answer(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": "invalid_grant",
            "error_description": "The refresh token is expired",
        })))
        .await;
        let e = ep.refresh(&Secret::new("old-refresh")).await.unwrap_err();
        assert!(
            matches!(&e, OAuthError::Refused { error, description: Some(d) }
                if error == "invalid_grant" && d.contains("expired")),
            "{e:?}"
        );
        assert!(e.is_refusal());
        assert!(e.to_string().contains("oauth-login"));
        assert_no_secret(&e);
    }

    #[tokio::test]
    async fn unauthorized_is_invalid_client() {
        let (_s, ep) = answer(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "error": "invalid_client",
            "error_description": "Client authentication failed",
        })))
        .await;
        let e = ep.refresh(&Secret::new("old-refresh")).await.unwrap_err();
        assert!(matches!(e, OAuthError::InvalidClient { .. }), "{e:?}");
        assert!(e.is_refusal());
        assert_no_secret(&e);

        // A bare 401 without an OAuth body means the same.
        let (_s, ep) = answer(ResponseTemplate::new(401)).await;
        let e = ep.refresh(&Secret::new("old-refresh")).await.unwrap_err();
        assert!(matches!(e, OAuthError::InvalidClient { description: None }));
    }

    #[tokio::test]
    async fn server_errors_and_throttling_are_transient() {
        for status in [500, 503, 429] {
            let (_s, ep) = answer(
                ResponseTemplate::new(status)
                    .set_body_json(serde_json::json!({"error": "temporarily_unavailable"})),
            )
            .await;
            let e = ep.refresh(&Secret::new("old-refresh")).await.unwrap_err();
            assert!(
                matches!(e, OAuthError::Status { status: s, .. } if s == status),
                "{e:?}"
            );
            assert!(!e.is_refusal());
            assert_no_secret(&e);
        }
    }

    #[tokio::test]
    async fn a_success_without_a_token_is_an_invalid_response_that_quotes_nothing() {
        for body in [
            "<html>login</html>".to_string(),
            r#"{"token_type":"bearer"}"#.to_string(),
            r#"{"access_token": 12345678, "expires_in": 3600}"#.to_string(),
        ] {
            let (_s, ep) = answer(ResponseTemplate::new(200).set_body_string(body)).await;
            let e = ep.refresh(&Secret::new("old-refresh")).await.unwrap_err();
            assert!(matches!(e, OAuthError::InvalidResponse(_)), "{e:?}");
            assert!(!e.to_string().contains("12345678"));
            assert_no_secret(&e);
        }
    }

    /// The old refresh token may be spent: a new one in the answer is handed over even when the
    /// access token beside it is missing or unusable, and shown nowhere.
    #[tokio::test]
    async fn a_new_refresh_token_without_an_access_token_is_kept() {
        for body in [
            r#"{"refresh_token": "rotated-rt", "expires_in": 3600}"#,
            r#"{"access_token": 12345678, "refresh_token": "rotated-rt"}"#,
            r#"{"access_token": "  ", "refresh_token": "rotated-rt", "expires_in": "1h"}"#,
        ] {
            let (_s, ep) = answer(ResponseTemplate::new(200).set_body_string(body)).await;
            let e = ep.refresh(&Secret::new("old-refresh")).await.unwrap_err();
            let OAuthError::IncompleteRotation { refresh_token, .. } = &e else {
                panic!("{body}: {e:?}");
            };
            assert_eq!(refresh_token.expose(), "rotated-rt");
            assert!(!e.is_refusal());
            for text in [e.to_string(), format!("{e:?}")] {
                assert!(
                    !text.contains("rotated-rt") && !text.contains("12345678"),
                    "{text}"
                );
            }
            assert_no_secret(&e);
        }
    }

    /// `expires_in` never fails an answer: whatever it is, the tokens come through, with a
    /// lifetime within 60 s..24 h and a note when that is not what the server said.
    #[tokio::test]
    async fn an_odd_expires_in_never_fails_the_answer() {
        let hour = DEFAULT_EXPIRES_IN;
        let cases: [(&str, Duration, Option<&str>); 15] = [
            ("3599", Duration::from_secs(3599), None),
            (r#""3599""#, Duration::from_secs(3599), None),
            (
                "18446744073709551615",
                MAX_TOKEN_LIFETIME,
                Some("18446744073709551615 s"),
            ),
            (
                "18446744073709551616",
                MAX_TOKEN_LIFETIME,
                Some("outside 60 s..24 h"),
            ),
            (
                "1e400",
                MAX_TOKEN_LIFETIME,
                Some("outside 60 s..24 h (inf s)"),
            ),
            ("-1e400", MIN_TOKEN_LIFETIME, Some("outside 60 s..24 h")),
            ("-1", MIN_TOKEN_LIFETIME, Some("outside 60 s..24 h (-1 s)")),
            ("0", MIN_TOKEN_LIFETIME, Some("outside 60 s..24 h (0 s)")),
            (
                "3600.5",
                Duration::from_millis(3_600_500),
                Some("not a whole number of seconds (3600.5 s)"),
            ),
            (r#""-5""#, MIN_TOKEN_LIFETIME, Some("outside 60 s..24 h")),
            (
                r#""1h""#,
                hour,
                Some("not a number of seconds; assuming 3600 s"),
            ),
            (r#""NaN""#, hour, Some("not a number")),
            ("true", hour, Some("not a number")),
            (r#"{"s": 1}"#, hour, Some("not a number")),
            ("null", hour, None),
        ];
        for (raw, believed, note) in cases {
            let body = format!(
                r#"{{"access_token":"new-access","refresh_token":"new-refresh","expires_in":{raw}}}"#
            );
            let (_s, ep) = answer(ResponseTemplate::new(200).set_body_string(body)).await;
            let tokens = ep
                .refresh(&Secret::new("old-refresh"))
                .await
                .unwrap_or_else(|e| panic!("{raw}: {e:?}"));
            assert_eq!(
                tokens.refresh_token.unwrap().expose(),
                "new-refresh",
                "{raw}"
            );
            assert_eq!(tokens.access_token.expose(), "new-access", "{raw}");
            assert_eq!(tokens.expires_in, believed, "{raw}");
            match (note, &tokens.expires_in_note) {
                (None, None) => {}
                (Some(want), Some(got)) => assert!(got.contains(want), "{raw}: {got}"),
                (want, got) => panic!("{raw}: note {got:?}, wanted {want:?}"),
            }
        }
    }

    #[tokio::test]
    async fn connection_refused_is_transport() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let ep = TokenEndpoint::new(
            http(),
            format!("http://{addr}/oauth2/token"),
            "my-client".into(),
            Secret::new(CLIENT_SECRET),
        );
        let e = ep.refresh(&Secret::new("old-refresh")).await.unwrap_err();
        assert!(matches!(e, OAuthError::Transport(_)), "{e:?}");
        assert!(!e.is_refusal());
        assert_no_secret(&e);
    }
}
