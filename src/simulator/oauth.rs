//! A small OAuth 2.0 authorization server with Qonto's documented behaviour (FACTS.md):
//! access tokens live `access_token_ttl` (1 h at Qonto), refresh tokens 90 days; **every refresh
//! issues a new refresh token, and the old one stops working `grace` after its first use** (60 s at
//! Qonto; reusing it within the grace returns yet another pair, as ORY Hydra does). A refresh token
//! is only issued when the grant's scope includes `offline_access`. Authorization codes are
//! single-use and live 10 minutes; `/oauth2/auth` consents at once, there is no browser.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{Value, json};

use super::SimOAuth;
use super::query::{encode, get};

const REFRESH_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
const CODE_TTL: Duration = Duration::from_secs(600);
/// The scope of the configured initial refresh token.
pub(crate) const DEFAULT_SCOPE: &str = "payment_link.read offline_access";

struct RefreshToken {
    scope: String,
    expires_at: Instant,
    first_used: Option<Instant>,
}

struct AccessToken {
    scope: String,
    expires_at: Instant,
}

struct AuthCode {
    redirect_uri: String,
    scope: String,
    expires_at: Instant,
}

/// What a Bearer token is worth.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AccessCheck {
    /// Valid, with this space-separated scope.
    Valid(String),
    /// Unknown or expired.
    Invalid,
}

/// Tokens and codes issued so far.
pub(crate) struct OAuthState {
    cfg: SimOAuth,
    refresh: HashMap<String, RefreshToken>,
    access: HashMap<String, AccessToken>,
    codes: HashMap<String, AuthCode>,
}

/// An answer of the token or auth endpoint.
pub(crate) enum OAuthReply {
    Json(StatusCode, Value),
    Redirect(String),
}

fn random(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 40)
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> OAuthReply {
    OAuthReply::Json(
        status,
        json!({"error": error, "error_description": description}),
    )
}

impl OAuthState {
    pub(crate) fn new(cfg: SimOAuth) -> OAuthState {
        let mut refresh = HashMap::new();
        if !cfg.refresh_token.is_empty() {
            refresh.insert(
                cfg.refresh_token.clone(),
                RefreshToken {
                    scope: DEFAULT_SCOPE.to_owned(),
                    expires_at: Instant::now() + REFRESH_TTL,
                    first_used: None,
                },
            );
        }
        OAuthState {
            cfg,
            refresh,
            access: HashMap::new(),
            codes: HashMap::new(),
        }
    }

    pub(crate) fn check_access(&self, token: &str, now: Instant) -> AccessCheck {
        match self.access.get(token) {
            Some(t) if now < t.expires_at => AccessCheck::Valid(t.scope.clone()),
            _ => AccessCheck::Invalid,
        }
    }

    /// `POST /oauth2/token` with a decoded form body.
    pub(crate) fn token(&mut self, form: &[(String, String)], now: Instant) -> OAuthReply {
        let client_ok = get(form, "client_id") == Some(self.cfg.client_id.as_str())
            && get(form, "client_secret") == Some(self.cfg.client_secret.as_str());
        if !client_ok {
            return invalid_client();
        }
        match get(form, "grant_type") {
            Some("refresh_token") => self.refresh_grant(form, now),
            Some("authorization_code") => self.code_grant(form, now),
            Some(_) => oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            ),
            None => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request is missing a required parameter: grant_type.",
            ),
        }
    }

    fn refresh_grant(&mut self, form: &[(String, String)], now: Instant) -> OAuthReply {
        let Some(presented) = get(form, "refresh_token") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "refresh_token is missing.",
            );
        };
        let grace = self.cfg.grace;
        let Some(rt) = self.refresh.get_mut(presented) else {
            return invalid_grant("The refresh token is unknown.");
        };
        if now >= rt.expires_at {
            return invalid_grant("The refresh token has expired.");
        }
        let first = *rt.first_used.get_or_insert(now);
        if now > first + grace {
            return invalid_grant(
                "The refresh token was already used and its grace period is over.",
            );
        }
        let scope = rt.scope.clone();
        self.issue(scope, now)
    }

    fn code_grant(&mut self, form: &[(String, String)], now: Instant) -> OAuthReply {
        let Some(code) = get(form, "code") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code is missing.",
            );
        };
        // Single use: the code is gone whatever happens next.
        let Some(c) = self.codes.remove(code) else {
            return invalid_grant("The authorization code is unknown or was already used.");
        };
        if now >= c.expires_at {
            return invalid_grant("The authorization code has expired.");
        }
        if get(form, "redirect_uri") != Some(c.redirect_uri.as_str()) {
            return invalid_grant(
                "The redirect_uri does not match the one of the authorization request.",
            );
        }
        self.issue(c.scope, now)
    }

    fn issue(&mut self, scope: String, now: Instant) -> OAuthReply {
        self.access.retain(|_, t| t.expires_at > now);
        let access_token = random("sim_at_");
        self.access.insert(
            access_token.clone(),
            AccessToken {
                scope: scope.clone(),
                expires_at: now + self.cfg.access_token_ttl,
            },
        );
        let mut body = json!({
            "access_token": access_token,
            "expires_in": self.cfg.access_token_ttl.as_secs(),
            "token_type": "bearer",
            "scope": scope,
        });
        if scope.split(' ').any(|s| s == "offline_access") {
            let refresh_token = random("sim_rt_");
            self.refresh.insert(
                refresh_token.clone(),
                RefreshToken {
                    scope,
                    expires_at: now + REFRESH_TTL,
                    first_used: None,
                },
            );
            body["refresh_token"] = Value::String(refresh_token);
        }
        OAuthReply::Json(StatusCode::OK, body)
    }

    /// `GET /oauth2/auth`: consents at once and redirects with a code.
    pub(crate) fn authorize(&mut self, query: &[(String, String)], now: Instant) -> OAuthReply {
        if get(query, "client_id") != Some(self.cfg.client_id.as_str()) {
            return unknown_client();
        }
        let Some(redirect_uri) = get(query, "redirect_uri").filter(|u| !u.is_empty()) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "redirect_uri is missing.",
            );
        };
        let sep = if redirect_uri.contains('?') { '&' } else { '?' };
        let state = get(query, "state").unwrap_or("");
        if get(query, "response_type") != Some("code") {
            return OAuthReply::Redirect(format!(
                "{redirect_uri}{sep}error=unsupported_response_type&state={}",
                encode(state)
            ));
        }
        let scope = get(query, "scope").unwrap_or("").to_owned();
        self.codes.retain(|_, c| c.expires_at > now);
        let code = random("sim_ac_");
        self.codes.insert(
            code.clone(),
            AuthCode {
                redirect_uri: redirect_uri.to_owned(),
                scope,
                expires_at: now + CODE_TTL,
            },
        );
        OAuthReply::Redirect(format!(
            "{redirect_uri}{sep}code={}&scope={}&state={}",
            encode(&code),
            encode(get(query, "scope").unwrap_or("")),
            encode(state)
        ))
    }
}

/// The token endpoint's answer to an unknown client or a wrong secret.
pub(crate) fn invalid_client() -> OAuthReply {
    OAuthReply::Json(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_client", "error_description": "Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method)."}),
    )
}

/// The authorization endpoint's answer to an unknown `client_id`.
pub(crate) fn unknown_client() -> OAuthReply {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_client",
        "The client_id is unknown.",
    )
}

fn invalid_grant(description: &str) -> OAuthReply {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}
