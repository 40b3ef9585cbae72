//! A long-lived OAuth session: access tokens on demand from a rotating refresh token.
//!
//! Qonto access tokens live one hour; every refresh returns a new refresh token and the old
//! one dies 60 seconds after its first use. So the session:
//! - refreshes ahead of expiry (and once after a 401), one refresh at a time — concurrent page
//!   requests must never each spend the same refresh token;
//! - writes each rotated refresh token to its file atomically before handing out the access
//!   token that came with it, so a crash or a restart resumes from the newest token;
//! - re-reads the file before refreshing, so a token renewed with `oauth-login` while the
//!   exporter runs is picked up without a restart;
//! - after a refusal, does not ask again with the same refresh token for a while: refused
//!   credentials must never become a request loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::oauth::{OAuthError, TokenEndpoint};
use crate::qonto::auth::AuthError;
use crate::secret::{Secret, read_secret_file, write_secret_file_atomic};

/// How long a refused refresh token is not tried again (unless the file changes).
const REFUSAL_QUIET: Duration = Duration::from_secs(600);
/// Refresh when less than this is left (capped at a tenth of the token's lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Counts refresh outcomes for the exporter's self-metrics.
pub trait RefreshObserver: Send + Sync {
    fn refreshed(&self, ok: bool);
    /// A rotated refresh token could not be written to its file.
    fn persist_failed(&self);
}

/// The OAuth session shared by every request of the exporter.
pub struct OAuthSession {
    endpoint: TokenEndpoint,
    file: PathBuf,
    observer: Arc<dyn RefreshObserver>,
    state: Mutex<State>,
}

struct State {
    refresh: Secret,
    access: Option<(Secret, Instant)>,
    refused: Option<(Secret, Instant, String)>,
}

impl std::fmt::Debug for OAuthSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSession")
            .field("refresh_token_file", &self.file)
            .finish_non_exhaustive()
    }
}

impl OAuthSession {
    /// Starts a session from the refresh token stored in `file` (read by the caller at start,
    /// so a missing file is a start-up error, not a later surprise).
    pub fn new(
        endpoint: TokenEndpoint,
        file: PathBuf,
        refresh_token: Secret,
        observer: Arc<dyn RefreshObserver>,
    ) -> Self {
        OAuthSession {
            endpoint,
            file,
            observer,
            state: Mutex::new(State {
                refresh: refresh_token,
                access: None,
                refused: None,
            }),
        }
    }

    /// A valid access token, refreshing first if the current one is missing or about to expire.
    pub async fn access_token(&self) -> Result<Secret, AuthError> {
        // Held across the refresh on purpose: one refresh at a time for the whole process.
        let mut state = self.state.lock().await;
        if let Some((token, expires)) = &state.access {
            if Instant::now() < *expires {
                return Ok(token.clone());
            }
        }
        self.refresh(&mut state).await
    }

    /// Forgets `token` after the API refused it; true when a refresh is worth trying.
    pub async fn invalidate(&self, token: &str) -> bool {
        let mut state = self.state.lock().await;
        if state
            .access
            .as_ref()
            .is_some_and(|(t, _)| t.expose() == token)
        {
            state.access = None;
        }
        state.refused.is_none()
    }

    async fn refresh(&self, state: &mut State) -> Result<Secret, AuthError> {
        // The file is the source of truth: it may hold a token renewed by `oauth-login`.
        if let Ok(on_disk) = read_secret_file(&self.file) {
            if on_disk != state.refresh {
                tracing::info!(file = %self.file.display(), "refresh token file changed; using it");
                state.refresh = on_disk;
                state.refused = None;
            }
        }
        if let Some((token, at, error)) = &state.refused {
            if *token == state.refresh && at.elapsed() < REFUSAL_QUIET {
                return Err(refused(error.clone()));
            }
        }
        let started = Instant::now();
        match self.endpoint.refresh(&state.refresh).await {
            Ok(set) => {
                self.observer.refreshed(true);
                if let Some(new_refresh) = set.refresh_token {
                    if let Err(e) = write_secret_file_atomic(&self.file, &new_refresh) {
                        // The old refresh token is spent: keep the new one in memory (giving it
                        // up would lose access for certain) and shout, every rotation, until the
                        // file is writable again.
                        self.observer.persist_failed();
                        tracing::error!(error = %e, "rotated refresh token NOT saved: a restart now loses access; fix the file's permissions");
                    }
                    state.refresh = new_refresh;
                }
                let margin = REFRESH_MARGIN.min(set.expires_in / 10);
                let expires = started + set.expires_in.saturating_sub(margin);
                state.access = Some((set.access_token.clone(), expires));
                state.refused = None;
                Ok(set.access_token)
            }
            Err(e) => {
                self.observer.refreshed(false);
                if e.is_refusal() {
                    let error = e.to_string();
                    state.refused = Some((state.refresh.clone(), Instant::now(), error.clone()));
                    state.access = None;
                    Err(refused(error))
                } else {
                    Err(AuthError::Unavailable(describe(&e)))
                }
            }
        }
    }
}

fn refused(error: String) -> AuthError {
    AuthError::Refused {
        error,
        hint: "the refresh token is expired, revoked or was already rotated; run `qonto-exporter oauth-login` to get a new one",
    }
}

fn describe(e: &OAuthError) -> String {
    e.to_string()
}
