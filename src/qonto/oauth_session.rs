//! A long-lived OAuth session: access tokens on demand from a rotating refresh token.
//!
//! Qonto access tokens live one hour; every refresh returns a new refresh token and the old
//! one dies 60 seconds after its first use. So the session:
//! - refreshes ahead of expiry (and once after a 401), one refresh at a time — concurrent page
//!   requests must never each spend the same refresh token;
//! - believes the token endpoint's `expires_in` only within [`MIN_TOKEN_LIFETIME`] and
//!   [`MAX_TOKEN_LIFETIME`]: `0` must not make every request refresh, and a huge value must
//!   neither overflow an `Instant` nor keep a token for years (a token that dies sooner than
//!   believed costs one 401, one refresh and one retry);
//! - writes each rotated refresh token to its file atomically as soon as it arrives, so a crash
//!   or a restart resumes from the newest token. If that write fails, the new tokens are used
//!   anyway: the old refresh token is already spent (Qonto kills it 60 s after its first use),
//!   so giving up the new ones would lose access at once, while keeping them loses it only if
//!   the process stops before a write succeeds. Until one does, the write is retried at most
//!   every [`SAVE_RETRY_EVERY`] (on the next [`OAuthSession::access_token`] call),
//!   `qonto_exporter_oauth_refresh_token_unsaved` is 1, and every failed write is counted in
//!   `qonto_exporter_oauth_refresh_token_write_failures_total` and logged;
//! - re-reads the file before refreshing, and uses its content only when it differs from what
//!   the session last read from or wrote to it: that is a token renewed with `oauth-login`
//!   while the exporter runs, picked up without a restart. (While a rotated token is unsaved,
//!   the file still holds the spent one; going back to it would lose access.)
//! - reads and writes the file on tokio's blocking pool, never on a runtime worker, although
//!   every API request waits on the session's lock meanwhile;
//! - after a refusal, does not ask again with the same refresh token for a while: refused
//!   credentials must never become a request loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::oauth::{OAuthError, TokenEndpoint};
use crate::qonto::auth::AuthError;
use crate::secret::{Secret, SecretFileError, read_secret_file, write_secret_file_atomic};

/// How long a refused refresh token is not tried again (unless the file changes).
const REFUSAL_QUIET: Duration = Duration::from_secs(600);
/// Refresh when less than this is left (capped at a tenth of the token's lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Shortest access-token lifetime believed, whatever `expires_in` says.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Longest access-token lifetime believed, whatever `expires_in` says (Qonto's is one hour).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How often an unsaved rotated refresh token is written again.
pub const SAVE_RETRY_EVERY: Duration = Duration::from_secs(30);

/// Counts refresh outcomes for the exporter's self-metrics.
pub trait RefreshObserver: Send + Sync {
    fn refreshed(&self, ok: bool);
    /// A rotated refresh token could not be written to its file (each failed attempt).
    fn persist_failed(&self);
    /// Whether the refresh token in use is missing from its file (a restart would lose access).
    fn unsaved(&self, unsaved: bool);
}

/// The OAuth session shared by every request of the exporter.
pub struct OAuthSession {
    endpoint: TokenEndpoint,
    file: PathBuf,
    observer: Arc<dyn RefreshObserver>,
    state: Mutex<State>,
}

struct State {
    /// The refresh token to spend next.
    refresh: Secret,
    /// What the file held when the session last read it or wrote it.
    on_disk: Secret,
    /// Set while `refresh` is not in the file: when the last write failed.
    unsaved: Option<Instant>,
    access: Option<(Secret, Instant)>,
    refused: Option<(Secret, Instant, OAuthError)>,
    /// An out-of-range `expires_in` was already logged.
    lifetime_warned: bool,
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
        observer.unsaved(false);
        OAuthSession {
            endpoint,
            file,
            observer,
            state: Mutex::new(State {
                on_disk: refresh_token.clone(),
                refresh: refresh_token,
                unsaved: None,
                access: None,
                refused: None,
                lifetime_warned: false,
            }),
        }
    }

    /// A valid access token, refreshing first if the current one is missing or about to expire.
    pub async fn access_token(&self) -> Result<Secret, AuthError> {
        // Held across the refresh on purpose: one refresh at a time for the whole process.
        let mut state = self.state.lock().await;
        if let Some((token, expires)) = &state.access {
            if Instant::now() < *expires {
                let token = token.clone();
                if state
                    .unsaved
                    .is_some_and(|at| at.elapsed() >= SAVE_RETRY_EVERY)
                {
                    self.save(&mut state).await;
                }
                return Ok(token);
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
        // A file that changed since the session last read or wrote it holds a token renewed
        // by `oauth-login`. One that did not may hold a spent token (while the rotated one is
        // unsaved), so it is never compared with the token in memory.
        if let Ok(on_disk) = self.read_file().await {
            if on_disk != state.on_disk {
                tracing::info!(file = %self.file.display(), "refresh token file changed; using it");
                state.refresh = on_disk.clone();
                state.on_disk = on_disk;
                state.refused = None;
                if state.unsaved.take().is_some() {
                    self.observer.unsaved(false);
                }
            }
        }
        if let Some((token, at, error)) = &state.refused {
            if *token == state.refresh && at.elapsed() < REFUSAL_QUIET {
                return Err(AuthError::Refused(error.clone()));
            }
        }
        let started = Instant::now();
        match self.endpoint.refresh(&state.refresh).await {
            Ok(set) => {
                self.observer.refreshed(true);
                let lifetime = token_lifetime(set.expires_in);
                if lifetime != set.expires_in && !state.lifetime_warned {
                    state.lifetime_warned = true;
                    tracing::warn!(
                        expires_in_seconds = set.expires_in.as_secs(),
                        believed_seconds = lifetime.as_secs(),
                        "the token endpoint's expires_in is outside 60 s..24 h; using the nearest bound"
                    );
                }
                state.access = Some((set.access_token.clone(), refresh_due(started, lifetime)));
                state.refused = None;
                if let Some(new_refresh) = set.refresh_token {
                    // The old refresh token is spent: the new one is used whether or not it
                    // reaches the file (see the module docs).
                    state.refresh = new_refresh;
                    self.save(state).await;
                }
                Ok(set.access_token)
            }
            Err(e) => {
                self.observer.refreshed(false);
                if e.is_refusal() {
                    state.refused = Some((state.refresh.clone(), Instant::now(), e.clone()));
                    state.access = None;
                    Err(AuthError::Refused(e))
                } else {
                    Err(AuthError::Unavailable(e.to_string()))
                }
            }
        }
    }

    /// Writes the refresh token in use to the file; records and reports the outcome.
    async fn save(&self, state: &mut State) {
        let token = state.refresh.clone();
        let file = self.file.clone();
        let written = tokio::task::spawn_blocking(move || write_secret_file_atomic(&file, &token))
            .await
            .unwrap_or_else(|e| {
                Err(SecretFileError::Write {
                    path: self.file.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        match written {
            Ok(()) => {
                state.on_disk = state.refresh.clone();
                if state.unsaved.take().is_some() {
                    self.observer.unsaved(false);
                    tracing::info!(file = %self.file.display(), "rotated refresh token saved at last");
                }
            }
            Err(e) => {
                self.observer.persist_failed();
                self.observer.unsaved(true);
                state.unsaved = Some(Instant::now());
                tracing::error!(
                    error = %e,
                    "rotated refresh token NOT saved: a restart now loses access; it stays in use, and the write is retried every 30 s; fix the file's permissions or free space"
                );
            }
        }
    }

    async fn read_file(&self) -> Result<Secret, SecretFileError> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || read_secret_file(&file))
            .await
            .unwrap_or_else(|e| {
                Err(SecretFileError::Read {
                    path: self.file.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }
}

/// The lifetime believed for an access token the endpoint says lives `expires_in`.
pub fn token_lifetime(expires_in: Duration) -> Duration {
    expires_in.clamp(MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME)
}

/// When a token obtained at `started` and believed to live `lifetime` is refreshed: a margin
/// ahead of its expiry (five minutes, at most a tenth of the lifetime).
fn refresh_due(started: Instant, lifetime: Duration) -> Instant {
    let lifetime = token_lifetime(lifetime);
    let margin = REFRESH_MARGIN.min(lifetime / 10);
    // Cannot overflow for a lifetime of at most a day; never panic if it somehow did.
    started
        .checked_add(lifetime.saturating_sub(margin))
        .unwrap_or(started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[derive(Default)]
    struct Seen {
        refreshes: AtomicU64,
        failures: AtomicU64,
        persist_failures: AtomicU64,
        unsaved: AtomicBool,
    }

    impl RefreshObserver for Seen {
        fn refreshed(&self, ok: bool) {
            self.refreshes.fetch_add(1, Ordering::Relaxed);
            if !ok {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        fn persist_failed(&self) {
            self.persist_failures.fetch_add(1, Ordering::Relaxed);
        }
        fn unsaved(&self, unsaved: bool) {
            self.unsaved.store(unsaved, Ordering::Relaxed);
        }
    }

    fn session(server: &MockServer, file: &Path, token: &str) -> (OAuthSession, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let endpoint = TokenEndpoint::new(
            crate::qonto::client::http_client(Duration::from_secs(5)).unwrap(),
            format!("{}/oauth2/token", server.uri()),
            "client".into(),
            Secret::new("client-secret"),
        );
        let s = OAuthSession::new(endpoint, file.to_owned(), Secret::new(token), seen.clone());
        (s, seen)
    }

    /// The token endpoint trades `from` for `access` and `to`, with `expires_in`.
    async fn grant(server: &MockServer, from: &str, access: &str, to: &str, expires_in: &str) {
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .and(body_string_contains(format!("refresh_token={from}&")))
            .respond_with(ResponseTemplate::new(200).set_body_raw(
                format!(
                    r#"{{"access_token":"{access}","refresh_token":"{to}","expires_in":{expires_in}}}"#
                ),
                "application/json",
            ))
            .expect(1)
            .mount(server)
            .await;
    }

    fn token_file(dir: &Path, token: &str) -> PathBuf {
        let file = dir.join("refresh-token");
        std::fs::write(&file, format!("{token}\n")).unwrap();
        file
    }

    #[test]
    fn lifetimes_are_clamped_and_never_overflow() {
        let t0 = Instant::now();
        // Qonto's hour: refreshed five minutes ahead.
        assert_eq!(
            refresh_due(t0, Duration::from_secs(3600)),
            t0 + Duration::from_secs(3300)
        );
        // 0 s would refresh before every request: believed to be a minute (54 s + margin).
        assert_eq!(
            refresh_due(t0, Duration::ZERO),
            t0 + Duration::from_secs(54)
        );
        // u64::MAX seconds overflowed the Instant: believed to be a day.
        assert_eq!(
            refresh_due(t0, Duration::from_secs(u64::MAX)),
            t0 + Duration::from_secs(24 * 3600 - 300)
        );
        assert_eq!(
            refresh_due(t0, Duration::MAX),
            t0 + Duration::from_secs(86_100)
        );
        assert_eq!(token_lifetime(Duration::from_secs(1)), MIN_TOKEN_LIFETIME);
    }

    #[tokio::test]
    async fn a_huge_expires_in_is_used_without_panicking() {
        let server = MockServer::start().await;
        grant(&server, "rt-0", "at-1", "rt-1", "18446744073709551615").await;
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = session(&server, &token_file(dir.path(), "rt-0"), "rt-0");
        assert_eq!(s.access_token().await.unwrap().expose(), "at-1");
        // Cached: no second refresh (the mock expects exactly one).
        assert_eq!(s.access_token().await.unwrap().expose(), "at-1");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("refresh-token")).unwrap(),
            "rt-1\n"
        );
    }

    #[tokio::test]
    async fn expires_in_zero_does_not_refresh_before_every_request() {
        let server = MockServer::start().await;
        grant(&server, "rt-0", "at-1", "rt-1", "0").await;
        let dir = tempfile::tempdir().unwrap();
        let (s, seen) = session(&server, &token_file(dir.path(), "rt-0"), "rt-0");
        for _ in 0..5 {
            assert_eq!(s.access_token().await.unwrap().expose(), "at-1");
        }
        assert_eq!(seen.refreshes.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn each_refusal_gives_its_own_advice_once() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(body_string_contains("refresh_token=spent&"))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": "invalid_grant", "error_description": "token expired"
            })))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(body_string_contains("refresh_token=rt-0&"))
            .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
                "error": "invalid_client"
            })))
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();

        let (s, _) = session(&server, &token_file(dir.path(), "spent"), "spent");
        let e = s.access_token().await.unwrap_err();
        assert!(e.is_refusal());
        let text = e.to_string();
        assert_eq!(text.matches("oauth-login").count(), 1, "{text}");
        assert!(text.contains("invalid_grant"), "{text}");
        assert!(!text.contains("client secret"), "{text}");

        let (s, _) = session(&server, &token_file(dir.path(), "rt-0"), "rt-0");
        let e = s.access_token().await.unwrap_err();
        assert!(e.is_refusal());
        let text = e.to_string();
        assert_eq!(
            text.matches("client id and client secret").count(),
            1,
            "{text}"
        );
        assert!(!text.contains("oauth-login"), "{text}");
        assert!(
            !text.contains("expired") && !text.contains("revoked"),
            "{text}"
        );
        // Asked again within the quiet period: the same advice, without a request.
        assert_eq!(s.access_token().await.unwrap_err().to_string(), text);
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }

    /// A directory whose path leaves room for `refresh-token` but not for the write's temporary
    /// file beside it (`PATH_MAX` is 4096 on Linux): the token file reads, but every write
    /// fails, even for root, which file modes do not stop.
    fn unwritable_dir(base: &Path) -> PathBuf {
        let mut dir = base.to_owned();
        // ".qonto-exporter-XXXXXX.tmp" is 26 bytes, "refresh-token" 13.
        let target = 4095 - 1 - 20;
        while dir.as_os_str().len() < target {
            let room = target - dir.as_os_str().len() - 1;
            dir.push("d".repeat(room.clamp(1, 200)));
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn an_unsaved_rotated_token_stays_in_use_and_the_spent_file_is_never_adopted() {
        let server = MockServer::start().await;
        grant(&server, "rt-0", "at-1", "rt-1", "3600").await;
        grant(&server, "rt-1", "at-2", "rt-2", "3600").await;
        grant(&server, "rt-new", "at-3", "rt-3", "3600").await;
        // The spent token must never be presented again.
        Mock::given(method("POST"))
            .and(body_string_contains("refresh_token=rt-0&"))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": "invalid_grant"
            })))
            .expect(0)
            .with_priority(10)
            .mount(&server)
            .await;
        let base = tempfile::tempdir().unwrap();
        let dir = unwritable_dir(base.path());
        let file = token_file(&dir, "rt-0");
        let (s, seen) = session(&server, &file, "rt-0");
        assert!(!seen.unsaved.load(Ordering::Relaxed));

        // The rotation cannot be saved: the new tokens are used anyway.
        assert_eq!(s.access_token().await.unwrap().expose(), "at-1");
        assert!(seen.unsaved.load(Ordering::Relaxed));
        assert_eq!(seen.persist_failures.load(Ordering::Relaxed), 1);
        assert_eq!(read_secret_file(&file).unwrap().expose(), "rt-0");

        // The next refresh spends rt-1, not the file's spent rt-0.
        assert!(s.invalidate("at-1").await);
        assert_eq!(s.access_token().await.unwrap().expose(), "at-2");
        assert!(seen.unsaved.load(Ordering::Relaxed));
        assert_eq!(seen.persist_failures.load(Ordering::Relaxed), 2);
        assert_eq!(seen.failures.load(Ordering::Relaxed), 0);

        // A token written by `oauth-login` is still picked up.
        std::fs::write(&file, "rt-new\n").unwrap();
        assert!(s.invalidate("at-2").await);
        assert_eq!(s.access_token().await.unwrap().expose(), "at-3");
        assert_eq!(seen.failures.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_saved_rotation_clears_the_unsaved_state() {
        let server = MockServer::start().await;
        grant(&server, "rt-0", "at-1", "rt-1", "3600").await;
        let dir = tempfile::tempdir().unwrap();
        let file = token_file(dir.path(), "rt-0");
        let (s, seen) = session(&server, &file, "rt-0");
        assert_eq!(s.access_token().await.unwrap().expose(), "at-1");
        assert!(!seen.unsaved.load(Ordering::Relaxed));
        assert_eq!(seen.persist_failures.load(Ordering::Relaxed), 0);
        assert_eq!(read_secret_file(&file).unwrap().expose(), "rt-1");
        // No temporary file left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// The token file is read off the runtime: on a single-threaded runtime, a read that blocks
    /// (here a FIFO nobody writes to yet) must not stop other tasks.
    #[tokio::test(flavor = "current_thread")]
    async fn file_io_never_blocks_the_runtime() {
        let server = MockServer::start().await;
        grant(&server, "rt-0", "at-1", "rt-1", "3600").await;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("refresh-token");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo (coreutils)");
        assert!(made.success());
        let (s, _) = session(&server, &fifo, "rt-0");
        let s = Arc::new(s);
        let refresh = tokio::spawn({
            let s = s.clone();
            async move { s.access_token().await }
        });
        // The writer unblocks the read after a second whatever happens, so the test ends.
        let writer = std::thread::spawn({
            let fifo = fifo.clone();
            move || {
                std::thread::sleep(Duration::from_millis(1000));
                std::fs::write(&fifo, "rt-0\n").unwrap();
            }
        });
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let woke = started.elapsed();
        writer.join().unwrap();
        assert!(
            woke < Duration::from_millis(700),
            "the runtime was blocked for {woke:?} by the token file read"
        );
        assert_eq!(refresh.await.unwrap().unwrap().expose(), "at-1");
    }
}
