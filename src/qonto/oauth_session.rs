//! A long-lived OAuth session: access tokens on demand from a rotating refresh token.
//!
//! Qonto access tokens live one hour; every refresh returns a new refresh token and the old
//! one dies 60 seconds after its first use. So the session:
//! - refreshes ahead of expiry (and once after a 401), one refresh at a time — concurrent page
//!   requests must never each spend the same refresh token;
//! - runs each refresh in a task of its own, which the caller only waits for: a poll that times
//!   out, or a shutdown, may drop the caller, but a rotation the server already made is still
//!   stored and its refresh token still written;
//! - believes the token endpoint's `expires_in` only within [`MIN_TOKEN_LIFETIME`] and
//!   [`MAX_TOKEN_LIFETIME`] (see [`crate::oauth`], which also keeps a new refresh token that
//!   arrives without a usable access token: it is stored and spent next);
//! - writes each rotated refresh token to its file atomically as soon as it arrives, so a crash
//!   or a restart resumes from the newest token. `qonto_exporter_oauth_refresh_token_unsaved` is
//!   1 from the rotation until a write of the token in use is confirmed, so a write that fails,
//!   hangs or is abandoned leaves it at 1. The request that refreshed waits for the write (at
//!   most [`FILE_IO_TIMEOUT`]) before it uses the new access token; other requests use it at
//!   once. It is used even if the write fails: the old refresh token is already spent (Qonto
//!   kills it 60 s after its first use), so giving up the new tokens would lose access at once,
//!   while keeping them loses it only if the process stops before a write succeeds. A failed
//!   write is counted in `qonto_exporter_oauth_refresh_token_write_failures_total`, logged, and
//!   retried at most every [`SAVE_RETRY_EVERY`] (on the next [`OAuthSession::access_token`]
//!   call);
//! - bounds every file operation by [`FILE_IO_TIMEOUT`]: a read or write on a hung volume (or a
//!   FIFO) runs on tokio's blocking pool, counts as failed once the time is up, and no second
//!   one starts while it hangs. The blocked thread itself cannot be stopped and stays until the
//!   file system answers (a write that completes late still counts as saved). Writes run
//!   without the lock API requests wait on;
//! - re-reads the file before refreshing, and uses its content only when it is neither what the
//!   session last read from or wrote to it nor one of the last refresh tokens it held: that is
//!   a token renewed with `oauth-login` while the exporter runs, picked up without a restart.
//!   (While a rotated token is unsaved, the file still holds a spent one; going back to it would
//!   lose access.) A file that cannot be read in time leaves the token in memory in use;
//! - after a refusal, does not ask again with the same refresh token for a while: refused
//!   credentials must never become a request loop;
//! - at shutdown ([`OAuthSession::shutdown`]), starts no new refresh, waits for one in flight,
//!   and makes one last bounded write of an unsaved token; if the token is still unsaved, it
//!   says so in an `error` line naming the file, and the process exits non-zero.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use tokio::task::JoinHandle;

pub use crate::oauth::{MAX_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME};
use crate::oauth::{OAuthError, TokenEndpoint};
use crate::qonto::auth::AuthError;
use crate::secret::{Secret, SecretFileError, read_secret_file, write_secret_file_atomic};
use crate::shutdown::stopped;

/// How long a refused refresh token is not tried again (unless the file changes).
const REFUSAL_QUIET: Duration = Duration::from_secs(600);
/// Refresh when less than this is left (capped at a tenth of the token's lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How often an unsaved rotated refresh token is written again.
pub const SAVE_RETRY_EVERY: Duration = Duration::from_secs(30);
/// The longest a read or a write of the refresh-token file is waited for; also the budget of
/// [`OAuthSession::shutdown`].
pub const FILE_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How many of the tokens it held the session remembers, to tell its own tokens in the file
/// from a renewal (one per rotation: far more than can be in flight).
const HELD_REMEMBERED: usize = 16;

/// Counts refresh outcomes for the exporter's self-metrics.
pub trait RefreshObserver: Send + Sync {
    fn refreshed(&self, ok: bool);
    /// A rotated refresh token could not be written to its file (each failed attempt).
    fn persist_failed(&self);
    /// Whether the refresh token in use is not (yet) confirmed in its file: a restart would
    /// lose access.
    fn unsaved(&self, unsaved: bool);
}

/// Why [`OAuthSession::shutdown`] could not leave the newest refresh token in its file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ShutdownError {
    /// The token in use is not in the file, which holds a spent one.
    #[error(
        "exiting with an unsaved rotated refresh token: access will be lost; {} still holds the spent one, so run `qonto-exporter oauth-login` to write a new refresh token there before the next start",
        file.display()
    )]
    Unsaved { file: PathBuf },
    /// A refresh was still waiting for the token endpoint when time ran out.
    #[error(
        "exiting while an OAuth token refresh is still in flight: if the token endpoint rotated the refresh token, the new one never reaches {}, and access will be lost; if the next start is refused, run `qonto-exporter oauth-login`",
        file.display()
    )]
    RefreshInFlight { file: PathBuf },
}

/// Writes a refresh token to a file; [`write_secret_file_atomic`] but in tests.
type WriteFn = Arc<dyn Fn(&Path, &Secret) -> Result<(), SecretFileError> + Send + Sync>;

/// The OAuth session shared by every request of the exporter.
pub struct OAuthSession {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: TokenEndpoint,
    file: PathBuf,
    observer: Arc<dyn RefreshObserver>,
    io_timeout: Duration,
    write: WriteFn,
    /// Held for a whole refresh (one at a time), by the task that runs it.
    state: Arc<Mutex<State>>,
    /// What must reach the file. A std mutex, only ever held for a few assignments (also by the
    /// blocking thread that confirms a write), never across an `await`.
    saving: std::sync::Mutex<Saving>,
    /// Serialises writes, so they land in order; holds a write that outlived its timeout, so
    /// no second one starts while it hangs.
    writer: Mutex<Option<JoinHandle<Result<(), SecretFileError>>>>,
    /// Turns true at shutdown: no refresh starts after it.
    closing: watch::Sender<bool>,
}

struct State {
    /// The refresh token to spend next.
    refresh: Secret,
    /// The refresh tokens this session has held, newest last: the file holding one of them
    /// is not a renewal (it may be a spent one, or a write that landed late).
    held: VecDeque<Secret>,
    access: Option<(Secret, Instant)>,
    refused: Option<(Secret, Instant, OAuthError)>,
    /// An odd `expires_in` was already logged.
    lifetime_warned: bool,
    /// A read of the file that outlived its timeout.
    stuck_read: Option<JoinHandle<Result<Secret, SecretFileError>>>,
}

/// The refresh token in use, numbered, and the newest number confirmed in the file.
struct Saving {
    token: Secret,
    generation: u64,
    saved: u64,
    /// The token last read from or confirmed written to the file (older than any the session
    /// remembers in [`State::held`] after many failed writes, and still not a renewal).
    on_disk: Secret,
    last_attempt: Option<Instant>,
    /// The last write attempt failed (so a success is worth a log line).
    failed: bool,
}

impl std::fmt::Debug for OAuthSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSession")
            .field("refresh_token_file", &self.inner.file)
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
        Self::with_file_io(
            endpoint,
            file,
            refresh_token,
            observer,
            FILE_IO_TIMEOUT,
            Arc::new(write_secret_file_atomic),
        )
    }

    fn with_file_io(
        endpoint: TokenEndpoint,
        file: PathBuf,
        refresh_token: Secret,
        observer: Arc<dyn RefreshObserver>,
        io_timeout: Duration,
        write: WriteFn,
    ) -> Self {
        observer.unsaved(false);
        OAuthSession {
            inner: Arc::new(Inner {
                endpoint,
                file,
                observer,
                io_timeout,
                write,
                state: Arc::new(Mutex::new(State {
                    held: VecDeque::from([refresh_token.clone()]),
                    refresh: refresh_token.clone(),
                    access: None,
                    refused: None,
                    lifetime_warned: false,
                    stuck_read: None,
                })),
                saving: std::sync::Mutex::new(Saving {
                    on_disk: refresh_token.clone(),
                    token: refresh_token,
                    generation: 0,
                    saved: 0,
                    last_attempt: None,
                    failed: false,
                }),
                writer: Mutex::new(None),
                closing: watch::channel(false).0,
            }),
        }
    }

    /// A valid access token, refreshing first if the current one is missing or about to expire.
    pub async fn access_token(&self) -> Result<Secret, AuthError> {
        self.inner.retry_save_if_due();
        // Held until the refresh ends, by the task that runs it: one refresh at a time.
        let state = self.inner.state.clone().lock_owned().await;
        if let Some((token, expires)) = &state.access {
            if Instant::now() < *expires {
                return Ok(token.clone());
            }
        }
        // The refresh runs on its own: if this caller is dropped (a poll timeout, a shutdown),
        // what the token endpoint answered is still stored.
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.refresh(state).await })
            .await
            .unwrap_or_else(|e| {
                Err(AuthError::Unavailable(format!(
                    "the token refresh task failed: {e}"
                )))
            })
    }

    /// Forgets `token` after the API refused it; true when a refresh is worth trying.
    pub async fn invalidate(&self, token: &str) -> bool {
        let mut state = self.inner.state.lock().await;
        if state
            .access
            .as_ref()
            .is_some_and(|(t, _)| t.expose() == token)
        {
            state.access = None;
        }
        state.refused.is_none()
    }

    /// True while the refresh token in use is not confirmed in the file (the gauge
    /// `qonto_exporter_oauth_refresh_token_unsaved`): a session replaced now would lose it.
    pub fn unsaved(&self) -> bool {
        let s = self.inner.saving.lock().unwrap_or_else(|p| p.into_inner());
        s.saved < s.generation
    }

    /// Called once when the process stops: no refresh starts any more, a refresh in flight is
    /// waited for, and an unsaved refresh token gets one last write, all within
    /// [`FILE_IO_TIMEOUT`]. An error (already logged, naming the file) means the newest refresh
    /// token may not be in the file: the process should exit non-zero.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        let inner = &self.inner;
        inner.closing.send_replace(true);
        let deadline = tokio::time::Instant::now() + inner.io_timeout;
        // A refresh in flight holds the state until it has stored what the endpoint answered.
        let idle = tokio::time::timeout_at(deadline, inner.state.lock())
            .await
            .is_ok();
        let saved = inner.persist(deadline).await;
        let error = if !idle {
            ShutdownError::RefreshInFlight {
                file: inner.file.clone(),
            }
        } else if !saved {
            ShutdownError::Unsaved {
                file: inner.file.clone(),
            }
        } else {
            return Ok(());
        };
        tracing::error!("{error}");
        Err(error)
    }
}

impl Inner {
    async fn refresh(
        self: Arc<Self>,
        mut state: OwnedMutexGuard<State>,
    ) -> Result<Secret, AuthError> {
        let mut closing = self.closing.subscribe();
        let shutting_down =
            || AuthError::Unavailable("not refreshed: the exporter is shutting down".into());
        if *closing.borrow() {
            return Err(shutting_down());
        }
        self.reread_file(&mut state, &mut closing).await;
        // Spending a refresh token now would only risk a rotation that cannot be saved.
        if *closing.borrow() {
            return Err(shutting_down());
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
                if let Some(note) = &set.expires_in_note {
                    if !state.lifetime_warned {
                        state.lifetime_warned = true;
                        tracing::warn!("the token endpoint's {note}");
                    }
                }
                state.access = Some((
                    set.access_token.clone(),
                    refresh_due(started, set.expires_in),
                ));
                state.refused = None;
                // The old refresh token is spent: the new one is used whether or not it
                // reaches the file (see the module docs).
                let write = set.refresh_token.map(|t| self.rotated(&mut state, t));
                // Other requests go on with the new access token; this one first waits for the
                // write (bounded), so that normally the file is ahead of any use.
                drop(state);
                if let Some(write) = write {
                    let _ = write.await;
                }
                Ok(set.access_token)
            }
            Err(OAuthError::IncompleteRotation {
                reason,
                refresh_token,
            }) => {
                // No access token, but the old refresh token is spent: keep and save the new one,
                // and spend it at the next refresh.
                self.observer.refreshed(false);
                let write = self.rotated(&mut state, refresh_token.clone());
                drop(state);
                let _ = write.await;
                Err(AuthError::Unavailable(
                    OAuthError::IncompleteRotation {
                        reason,
                        refresh_token,
                    }
                    .to_string()
                        + "; the new refresh token is kept and spent at the next refresh",
                ))
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

    /// Takes up the file's token when it is one this session never held (a renewal by
    /// `oauth-login`). A file that cannot be read, or not within the timeout, changes nothing.
    async fn reread_file(&self, state: &mut State, closing: &mut watch::Receiver<bool>) {
        if let Some(read) = &state.stuck_read {
            if !read.is_finished() {
                return;
            }
            state.stuck_read = None;
        }
        let file = self.file.clone();
        let mut read = tokio::task::spawn_blocking(move || read_secret_file(&file));
        enum End {
            Read(Option<Secret>),
            TimedOut,
            Closing,
        }
        let end = tokio::select! {
            r = tokio::time::timeout(self.io_timeout, &mut read) => match r {
                Ok(Ok(Ok(token))) => End::Read(Some(token)),
                Ok(_) => End::Read(None),
                Err(_) => End::TimedOut,
            },
            _ = stopped(closing) => End::Closing,
        };
        match end {
            End::Read(Some(on_disk))
                if !state.held.contains(&on_disk) && !self.on_disk(&on_disk) =>
            {
                tracing::info!(file = %self.file.display(), "refresh token file changed; using it");
                state.refresh = on_disk.clone();
                remember(&mut state.held, on_disk.clone());
                state.refused = None;
                self.adopted(on_disk);
            }
            End::Read(_) => {}
            End::TimedOut => {
                tracing::warn!(
                    file = %self.file.display(),
                    "reading the refresh token file did not finish within {}; refreshing with the token in memory (the blocked read is not retried until it returns)",
                    humantime::format_duration(self.io_timeout)
                );
                state.stuck_read = Some(read);
            }
            End::Closing => state.stuck_read = Some(read),
        }
    }

    /// `token` replaces the spent refresh token: unsaved from now until a write confirms it.
    /// Returns the write, which runs on its own (and ends by [`FILE_IO_TIMEOUT`]).
    fn rotated(self: &Arc<Self>, state: &mut State, token: Secret) -> JoinHandle<bool> {
        state.refresh = token.clone();
        remember(&mut state.held, token.clone());
        {
            let mut saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
            saving.generation += 1;
            saving.token = token;
            saving.last_attempt = Some(Instant::now());
            // Before the write, so that a write that hangs or is abandoned shows.
            self.observer.unsaved(true);
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + inner.io_timeout;
            inner.persist(deadline).await
        })
    }

    /// `token`, read from the file, is now in use: saved by definition.
    fn adopted(&self, token: Secret) {
        let mut saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        saving.generation += 1;
        saving.saved = saving.generation;
        saving.on_disk = token.clone();
        saving.token = token;
        saving.failed = false;
        self.observer.unsaved(false);
    }

    /// A write of `token`, generation `written`, succeeded (called by the blocking thread that
    /// did it, however late).
    fn confirmed(&self, written: u64, token: Secret) {
        let mut saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        saving.saved = saving.saved.max(written);
        saving.on_disk = token;
        if saving.saved >= saving.generation {
            self.observer.unsaved(false);
            if std::mem::take(&mut saving.failed) {
                tracing::info!(file = %self.file.display(), "rotated refresh token saved at last");
            }
        }
    }

    /// Whether `token` is what the session last read from or wrote to the file.
    fn on_disk(&self, token: &Secret) -> bool {
        self.saving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_disk
            == *token
    }

    fn is_saved(&self) -> bool {
        let saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        saving.saved >= saving.generation
    }

    /// Starts a write of an unsaved token when the last attempt is [`SAVE_RETRY_EVERY`] old.
    fn retry_save_if_due(self: &Arc<Self>) {
        {
            let mut saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
            let due = saving.saved < saving.generation
                && saving
                    .last_attempt
                    .is_none_or(|at| at.elapsed() >= SAVE_RETRY_EVERY);
            if !due {
                return;
            }
            saving.last_attempt = Some(Instant::now());
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + inner.io_timeout;
            inner.persist(deadline).await
        });
    }

    /// Writes the refresh token in use to the file unless it is there already, by `deadline`;
    /// true when it is in the file on return. Failures are counted and logged.
    async fn persist(self: &Arc<Self>, deadline: tokio::time::Instant) -> bool {
        // Another write holds the lock until it ends or times out, and reports its outcome.
        let Ok(mut writer) = tokio::time::timeout_at(deadline, self.writer.lock()).await else {
            return self.is_saved();
        };
        let (generation, token) = {
            let mut saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
            if saving.saved >= saving.generation {
                return true;
            }
            saving.last_attempt = Some(Instant::now());
            (saving.generation, saving.token.clone())
        };
        if writer.as_ref().is_some_and(|w| !w.is_finished()) {
            self.write_failed(&format!(
                "an earlier write of {} has not returned yet (a hung volume?)",
                self.file.display()
            ));
            return false;
        }
        let inner = self.clone();
        let mut write = tokio::task::spawn_blocking(move || {
            let written = (inner.write)(&inner.file, &token);
            if written.is_ok() {
                inner.confirmed(generation, token);
            }
            written
        });
        match tokio::time::timeout_at(deadline, &mut write).await {
            Ok(Ok(Ok(()))) => {
                *writer = None;
                self.is_saved()
            }
            Ok(Ok(Err(e))) => {
                *writer = None;
                self.write_failed(&e.to_string());
                false
            }
            Ok(Err(e)) => {
                *writer = None;
                self.write_failed(&format!("cannot write {}: {e}", self.file.display()));
                false
            }
            Err(_) => {
                *writer = Some(write);
                self.write_failed(&format!(
                    "writing {} did not finish in time (a hung volume?); the blocked write is left to finish on its own",
                    self.file.display()
                ));
                false
            }
        }
    }

    fn write_failed(&self, error: &str) {
        self.observer.persist_failed();
        {
            let mut saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
            saving.failed = true;
        }
        tracing::error!(
            error,
            "rotated refresh token NOT saved: a restart now loses access; it stays in use, and the write is retried every 30 s; fix the file's permissions or free space"
        );
    }
}

/// Adds `token` to the tokens a session held, forgetting the oldest beyond [`HELD_REMEMBERED`].
fn remember(held: &mut VecDeque<Secret>, token: Secret) {
    if !held.contains(&token) {
        held.push_back(token);
    }
    while held.len() > HELD_REMEMBERED {
        held.pop_front();
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

    /// A session whose writes go through `write`, each waited for at most `io_timeout`.
    fn session_with_write(
        server: &MockServer,
        file: &Path,
        token: &str,
        io_timeout: Duration,
        write: WriteFn,
    ) -> (OAuthSession, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let endpoint = TokenEndpoint::new(
            crate::qonto::client::http_client(Duration::from_secs(5)).unwrap(),
            format!("{}/oauth2/token", server.uri()),
            "client".into(),
            Secret::new("client-secret"),
        );
        let s = OAuthSession::with_file_io(
            endpoint,
            file.to_owned(),
            Secret::new(token),
            seen.clone(),
            io_timeout,
            write,
        );
        (s, seen)
    }

    /// Waits (5 s at most) until `ok` holds: writes run in tasks of their own.
    async fn until(what: &str, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(Instant::now() < deadline, "not within 5 s: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn file_holds(file: &Path, token: &str) -> bool {
        read_secret_file(file).is_ok_and(|t| t.expose() == token)
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
        until("rt-1 written", || {
            file_holds(&dir.path().join("refresh-token"), "rt-1")
        })
        .await;
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
        until("one failed write", || {
            seen.persist_failures.load(Ordering::Relaxed) == 1
        })
        .await;
        assert!(seen.unsaved.load(Ordering::Relaxed));
        assert_eq!(read_secret_file(&file).unwrap().expose(), "rt-0");

        // The next refresh spends rt-1, not the file's spent rt-0.
        assert!(s.invalidate("at-1").await);
        assert_eq!(s.access_token().await.unwrap().expose(), "at-2");
        assert!(seen.unsaved.load(Ordering::Relaxed));
        until("two failed writes", || {
            seen.persist_failures.load(Ordering::Relaxed) == 2
        })
        .await;
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
        until("rt-1 saved", || {
            !seen.unsaved.load(Ordering::Relaxed) && file_holds(&file, "rt-1")
        })
        .await;
        assert_eq!(seen.persist_failures.load(Ordering::Relaxed), 0);
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

    /// Whatever `expires_in` a 200 carries (beyond u64, a fraction, a negative, a word), the
    /// rotated refresh token in it reaches the file and is the one the next refresh spends; the
    /// spent one is never presented again.
    #[tokio::test]
    async fn an_odd_expires_in_never_loses_the_rotated_token() {
        for raw in [
            "18446744073709551616",
            "3600.5",
            "-1",
            r#""1h""#,
            r#""3600""#,
            "[]",
        ] {
            let server = MockServer::start().await;
            grant(&server, "rt-0", "at-1", "rt-1", raw).await;
            grant(&server, "rt-1", "at-2", "rt-2", "3600").await;
            let dir = tempfile::tempdir().unwrap();
            let file = token_file(dir.path(), "rt-0");
            let (s, seen) = session(&server, &file, "rt-0");
            assert_eq!(s.access_token().await.unwrap().expose(), "at-1", "{raw}");
            until(&format!("{raw}: rt-1 saved"), || {
                file_holds(&file, "rt-1") && !seen.unsaved.load(Ordering::Relaxed)
            })
            .await;
            assert!(s.invalidate("at-1").await);
            assert_eq!(s.access_token().await.unwrap().expose(), "at-2", "{raw}");
            until(&format!("{raw}: rt-2 saved"), || file_holds(&file, "rt-2")).await;
            assert_eq!(seen.failures.load(Ordering::Relaxed), 0, "{raw}");
            // Each grant expects exactly one request: rt-0 was spent once, rt-1 once.
            server.verify().await;
        }
    }

    /// A 200 with a new refresh token but no access token: the refresh fails (retryable), the
    /// new token is saved anyway, and the next refresh spends it.
    #[tokio::test]
    async fn a_rotation_without_an_access_token_is_saved_and_spent_next() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .and(body_string_contains("refresh_token=rt-0&"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(
                r#"{"refresh_token":"rt-1","expires_in":"soon"}"#,
                "application/json",
            ))
            .expect(1)
            .mount(&server)
            .await;
        grant(&server, "rt-1", "at-2", "rt-2", "3600").await;
        let dir = tempfile::tempdir().unwrap();
        let file = token_file(dir.path(), "rt-0");
        let (s, seen) = session(&server, &file, "rt-0");
        let e = s.access_token().await.unwrap_err();
        assert!(!e.is_refusal(), "{e}");
        assert!(e.to_string().contains("no usable access token"), "{e}");
        assert!(!e.to_string().contains("rt-1"), "{e}");
        until("rt-1 saved", || file_holds(&file, "rt-1")).await;
        until("saved", || !seen.unsaved.load(Ordering::Relaxed)).await;
        assert_eq!(s.access_token().await.unwrap().expose(), "at-2");
        until("rt-2 saved", || file_holds(&file, "rt-2")).await;
        server.verify().await;
    }

    /// A write that blocks (a hung volume): API requests go on with the new access token at
    /// once, the gauge says unsaved while it hangs, the timed-out write counts as failed, no
    /// second write starts beside the blocked one, and the blocked write still counts as saved
    /// when it finally returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_write_neither_stalls_requests_nor_hides() {
        let server = MockServer::start().await;
        grant(&server, "rt-0", "at-1", "rt-1", "3600").await;
        let dir = tempfile::tempdir().unwrap();
        let file = token_file(dir.path(), "rt-0");
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let writes = Arc::new(AtomicU64::new(0));
        let write: WriteFn = Arc::new({
            let writes = writes.clone();
            move |path: &Path, token: &Secret| {
                writes.fetch_add(1, Ordering::Relaxed);
                // Blocks until released (30 s at most, so the test always ends).
                let _ = released
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(30));
                write_secret_file_atomic(path, token)
            }
        });
        let io_timeout = Duration::from_millis(300);
        let (s, seen) = session_with_write(&server, &file, "rt-0", io_timeout, write);
        let s = Arc::new(s);

        let started = Instant::now();
        let token = tokio::time::timeout(Duration::from_secs(2), s.access_token())
            .await
            .expect("the refresh does not wait for the hung write");
        assert_eq!(token.unwrap().expose(), "at-1");
        until("the write started", || writes.load(Ordering::Relaxed) == 1).await;
        assert!(
            seen.unsaved.load(Ordering::Relaxed),
            "unsaved while the write hangs"
        );
        // Concurrent requests get the new access token without waiting.
        let many = (0..8).map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.access_token().await })
        });
        for r in futures_util::future::join_all(many).await {
            assert_eq!(r.unwrap().unwrap().expose(), "at-1");
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        until("the write timed out", || {
            seen.persist_failures.load(Ordering::Relaxed) == 1
        })
        .await;
        assert!(seen.unsaved.load(Ordering::Relaxed));
        // A retry while the first write still hangs fails at once, without a second thread.
        let deadline = tokio::time::Instant::now() + io_timeout;
        assert!(!s.inner.persist(deadline).await);
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        assert_eq!(seen.persist_failures.load(Ordering::Relaxed), 2);

        // The volume answers: the late write counts.
        release.send(()).unwrap();
        until("the late write is confirmed", || {
            !seen.unsaved.load(Ordering::Relaxed)
        })
        .await;
        assert!(file_holds(&file, "rt-1"));
        assert!(s.shutdown().await.is_ok());
    }

    /// The caller gives up (a poll timeout, a shutdown) while the token endpoint is answering:
    /// the rotation is stored and saved anyway, and never spent twice.
    #[tokio::test]
    async fn a_dropped_caller_does_not_lose_the_rotation() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .and(body_string_contains("refresh_token=rt-0&"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(
                        r#"{"access_token":"at-1","refresh_token":"rt-1","expires_in":3600}"#,
                        "application/json",
                    )
                    .set_delay(Duration::from_millis(400)),
            )
            .expect(1)
            .mount(&server)
            .await;
        grant(&server, "rt-1", "at-2", "rt-2", "3600").await;
        let dir = tempfile::tempdir().unwrap();
        let file = token_file(dir.path(), "rt-0");
        let (s, seen) = session(&server, &file, "rt-0");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), s.access_token())
                .await
                .is_err(),
            "the caller was dropped mid-refresh"
        );
        until("rt-1 saved", || {
            file_holds(&file, "rt-1") && !seen.unsaved.load(Ordering::Relaxed)
        })
        .await;
        // The stored access token is served; the next refresh spends rt-1.
        assert_eq!(s.access_token().await.unwrap().expose(), "at-1");
        assert!(s.invalidate("at-1").await);
        assert_eq!(s.access_token().await.unwrap().expose(), "at-2");
        server.verify().await;
    }

    /// At shutdown: a saved token is fine; an unsaved one gets one last write, and if that
    /// fails, an error naming the file; no refresh starts any more.
    #[tokio::test]
    async fn shutdown_reports_an_unsaved_token_and_refreshes_no_more() {
        let server = MockServer::start().await;
        grant(&server, "rt-0", "at-1", "rt-1", "3600").await;
        let dir = tempfile::tempdir().unwrap();
        let file = token_file(dir.path(), "rt-0");
        let (s, _) = session(&server, &file, "rt-0");
        assert_eq!(s.access_token().await.unwrap().expose(), "at-1");
        assert!(s.shutdown().await.is_ok(), "waits for the write");
        assert!(file_holds(&file, "rt-1"));
        server.verify().await;

        let server = MockServer::start().await;
        grant(&server, "rt-0", "at-1", "rt-1", "3600").await;
        let base = tempfile::tempdir().unwrap();
        let dir = unwritable_dir(base.path());
        let file = token_file(&dir, "rt-0");
        let (s, seen) = session(&server, &file, "rt-0");
        assert_eq!(s.access_token().await.unwrap().expose(), "at-1");
        let e = s.shutdown().await.unwrap_err();
        assert!(matches!(e, ShutdownError::Unsaved { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("exiting with an unsaved rotated refresh token: access will be lost;"),
            "{text}"
        );
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(seen.unsaved.load(Ordering::Relaxed));
        assert!(seen.persist_failures.load(Ordering::Relaxed) >= 1);
        // After shutdown, no refresh token is spent.
        assert!(s.invalidate("at-1").await);
        let e = s.access_token().await.unwrap_err();
        assert!(e.to_string().contains("shutting down"), "{e}");
        server.verify().await;
    }

    /// The file is a FIFO nobody writes (a hung volume reads the same): the refresh goes on with
    /// the token in memory after the timeout, no second read starts while the first hangs, and
    /// a shutdown does not wait for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_read_delays_a_refresh_by_the_timeout_at_most() {
        let server = MockServer::start().await;
        grant(&server, "rt-0", "at-1", "rt-1", "3600").await;
        grant(&server, "rt-1", "at-2", "rt-2", "3600").await;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("refresh-token");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .expect("mkfifo (coreutils)")
                .success()
        );
        // Writes go beside the FIFO, which stays in place to block the read.
        let saved = dir.path().join("saved");
        let write: WriteFn = Arc::new({
            let saved = saved.clone();
            move |_: &Path, token: &Secret| write_secret_file_atomic(&saved, token)
        });
        let io_timeout = Duration::from_millis(300);
        let (s, seen) = session_with_write(&server, &fifo, "rt-0", io_timeout, write);
        let started = Instant::now();
        assert_eq!(s.access_token().await.unwrap().expose(), "at-1");
        let took = started.elapsed();
        assert!(
            took >= io_timeout && took < Duration::from_secs(2),
            "{took:?}"
        );
        until("rt-1 saved", || {
            !seen.unsaved.load(Ordering::Relaxed) && file_holds(&saved, "rt-1")
        })
        .await;
        // The first read still hangs: the next refresh does not wait for the file again.
        assert!(s.invalidate("at-1").await);
        let started = Instant::now();
        assert_eq!(s.access_token().await.unwrap().expose(), "at-2");
        assert!(started.elapsed() < io_timeout, "{:?}", started.elapsed());
        let started = Instant::now();
        assert!(s.shutdown().await.is_ok());
        assert!(started.elapsed() < Duration::from_secs(1));
        // Release the blocked read (it sees an empty FIFO), so the test's runtime can stop.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
        server.verify().await;
    }
}
