//! Which organisation a request is for, and whether its credentials pass: one look at the
//! credentials answers both, so that the two can never disagree.
//!
//! A request is for the organisation whose credentials it presents: a static Bearer token, a
//! Bearer token that organisation's OAuth server issued (and that has not expired), an API key
//! (`login:secret`, login and secret both), or, at the OAuth endpoints, a `client_id`. Building
//! the [`Router`] refuses configurations where one credential would select two organisations.
//! A request whose credentials select none is answered by the first organisation, which refuses
//! it exactly as the single-organisation simulator does. Only a simulator of one organisation
//! without any credential accepts any non-empty Bearer token.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Instant;

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::api::lock;
use super::oauth::AccessCheck;
use super::organization::{Org, SimConfigError, SimOrganization};

/// What the credentials of a request are worth to the organisation they select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Accepted.
    Pass,
    /// No `Authorization` header, or an empty one: 401 `authorization_header_missing`.
    Missing,
    /// Unknown, expired or malformed: 401 `authorization_token_invalid`.
    Invalid,
    /// An OAuth token without the `payment_link.read` scope: 403.
    MissingScope,
}

/// The outcome of [`Router::identify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identified {
    /// Index of the organisation the credentials select; `None` when they select none.
    pub(crate) org: Option<usize>,
    pub(crate) verdict: Verdict,
}

impl Identified {
    fn refused(verdict: Verdict) -> Identified {
        Identified { org: None, verdict }
    }
}

/// Credentials → organisation, built once from the configuration.
pub(crate) struct Router {
    tokens: HashMap<String, usize>,
    /// Login → organisation; the secret is checked against that organisation's.
    logins: HashMap<String, usize>,
    clients: HashMap<String, usize>,
    /// Organisations with an OAuth server, whose issued tokens are looked up in turn.
    with_oauth: Vec<usize>,
    /// A single organisation without credentials: any non-empty Bearer token is accepted.
    any_bearer: bool,
}

impl Router {
    /// Checks that every credential selects one organisation at most, and, with several
    /// organisations, that each has a unique name and a credential.
    pub(crate) fn new(orgs: &[SimOrganization]) -> Result<Router, SimConfigError> {
        let several = orgs.len() > 1;
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut router = Router {
            tokens: HashMap::new(),
            logins: HashMap::new(),
            clients: HashMap::new(),
            with_oauth: Vec::new(),
            any_bearer: !several && orgs.first().is_some_and(|o| !o.has_credentials()),
        };
        for (i, org) in orgs.iter().enumerate() {
            if several {
                if org.name.is_empty() {
                    return Err(SimConfigError::EmptyName);
                }
                if names.insert(&org.name, i).is_some() {
                    return Err(SimConfigError::DuplicateName(org.name.clone()));
                }
                if !org.has_credentials() {
                    return Err(SimConfigError::NoCredential(org.name.clone()));
                }
            }
            let shared = |credential, first: usize| SimConfigError::SharedCredential {
                credential,
                first: orgs[first].name.clone(),
                second: org.name.clone(),
            };
            for token in &org.access_tokens {
                claim(&mut router.tokens, token, i).map_err(|f| shared("access token", f))?;
            }
            if let Some((login, _)) = &org.api_key {
                claim(&mut router.logins, login, i).map_err(|f| shared("API key login", f))?;
            }
            if let Some(oauth) = &org.oauth {
                claim(&mut router.clients, &oauth.client_id, i)
                    .map_err(|f| shared("OAuth client id", f))?;
                router.with_oauth.push(i);
            }
        }
        Ok(router)
    }

    /// True when some organisation has an OAuth server, so the `/oauth2/` endpoints exist.
    pub(crate) fn has_oauth(&self) -> bool {
        !self.with_oauth.is_empty()
    }

    /// The organisation whose OAuth client is `client_id`.
    pub(crate) fn client(&self, client_id: Option<&str>) -> Option<usize> {
        client_id.and_then(|id| self.clients.get(id).copied())
    }

    /// Reads `Authorization`: `Bearer <token>` (static, or OAuth-issued and unexpired) or
    /// `<login>:<secret>`.
    pub(crate) fn identify(&self, orgs: &[Org], headers: &HeaderMap) -> Identified {
        let value = match headers.get(AUTHORIZATION).map(HeaderValue::to_str) {
            None => return Identified::refused(Verdict::Missing),
            Some(Err(_)) => return Identified::refused(Verdict::Invalid),
            Some(Ok(v)) => v.trim(),
        };
        if value.is_empty() {
            return Identified::refused(Verdict::Missing);
        }
        let bearer = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let found = match bearer {
            Some("") => None,
            Some(_) if self.any_bearer => Some((0, Verdict::Pass)),
            Some(token) => self.bearer(orgs, token),
            None => value.split_once(':').and_then(|(login, secret)| {
                let i = *self.logins.get(login)?;
                let expected = orgs[i].cfg.api_key.as_ref().map(|(_, s)| s.as_str());
                (expected == Some(secret)).then_some((i, Verdict::Pass))
            }),
        };
        match found {
            Some((i, verdict)) => Identified {
                org: Some(i),
                verdict,
            },
            None => Identified::refused(Verdict::Invalid),
        }
    }

    fn bearer(&self, orgs: &[Org], token: &str) -> Option<(usize, Verdict)> {
        if let Some(&i) = self.tokens.get(token) {
            return Some((i, Verdict::Pass));
        }
        let now = Instant::now();
        self.with_oauth.iter().find_map(|&i| {
            let oauth = orgs[i].oauth.as_ref()?;
            match lock(oauth).check_access(token, now) {
                AccessCheck::Valid(scope) if scope.split(' ').any(|s| s == "payment_link.read") => {
                    Some((i, Verdict::Pass))
                }
                AccessCheck::Valid(_) => Some((i, Verdict::MissingScope)),
                AccessCheck::Invalid => None,
            }
        })
    }
}

/// Records that `key` selects organisation `i`; fails with the organisation that already has it.
fn claim(map: &mut HashMap<String, usize>, key: &str, i: usize) -> Result<(), usize> {
    match map.entry(key.to_owned()) {
        Entry::Vacant(v) => {
            v.insert(i);
            Ok(())
        }
        // The same organisation listing a credential twice is harmless.
        Entry::Occupied(o) if *o.get() == i => Ok(()),
        Entry::Occupied(o) => Err(*o.get()),
    }
}
