//! The webhook secrets: one or more (a rotation runs with the old and the new secret side by
//! side), from `--webhook.secret-file` (one per line; blank lines and `#` comments skipped) or
//! from `QONTO_WEBHOOK_SECRET` (the secret itself, or several on separate lines).
//!
//! The file is re-read when its modification time or size changes, checked once a second
//! ([`WebhookSecrets::watch`]), so a rotation needs no restart. A re-read that fails
//! (file gone, empty, unreadable) keeps the last good secrets and is logged once, not every
//! second, until a read succeeds again. Only HMAC keys are kept in memory after loading, and
//! neither `Debug` nor any error shows a secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use ring::hmac;
use tokio::sync::watch;

use crate::secret::{Secret, SecretFileError, read_secret_file};
use crate::shutdown::stopped;

/// Most secrets taken: each costs one HMAC per delivery, and a rotation needs two.
pub const MAX_SECRETS: usize = 8;
/// How often the file's modification time is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why the secrets cannot be loaded. Names the file or variable, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error("{0} holds no secret (only blank lines and # comments)")]
    Empty(String),
    #[error("{0} holds more than {MAX_SECRETS} secrets")]
    TooMany(String),
}

enum Source {
    File(PathBuf),
    Value,
}

/// The file's identity as last read: a change of either re-reads it.
type Stamp = Option<(SystemTime, u64)>;

struct FileState {
    stamp: Stamp,
    /// A re-read failed and was logged; cleared by the next good read.
    failing: bool,
}

/// The current webhook secrets as HMAC keys, swapped whole when the file changes.
pub struct WebhookSecrets {
    source: Source,
    keys: ArcSwap<Vec<hmac::Key>>,
    state: Mutex<FileState>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::File(p) => p.display().to_string(),
            Source::Value => "QONTO_WEBHOOK_SECRET".to_owned(),
        };
        f.debug_struct("WebhookSecrets")
            .field("source", &source)
            .field("count", &self.keys.load().len())
            .finish()
    }
}

/// The secrets of a file's or variable's text: one a line, trimmed; blank lines and lines
/// starting with `#` are skipped.
pub fn parse_secrets(text: &str, what: &str) -> Result<Vec<Secret>, SecretsError> {
    let secrets: Vec<Secret> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Secret::new)
        .collect();
    if secrets.is_empty() {
        return Err(SecretsError::Empty(what.to_owned()));
    }
    if secrets.len() > MAX_SECRETS {
        return Err(SecretsError::TooMany(what.to_owned()));
    }
    Ok(secrets)
}

fn keys_of(secrets: &[Secret]) -> Vec<hmac::Key> {
    secrets
        .iter()
        .map(|s| super::signature::key(s.expose()))
        .collect()
}

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

fn read_file(path: &Path) -> Result<Vec<Secret>, SecretsError> {
    let text = read_secret_file(path)?;
    parse_secrets(text.expose(), &path.display().to_string())
}

impl WebhookSecrets {
    /// Reads the secrets of `path` now (an error here stops the start-up).
    pub fn from_file(path: &Path) -> Result<WebhookSecrets, SecretsError> {
        let stamp = stamp(path);
        let secrets = read_file(path)?;
        Ok(WebhookSecrets {
            source: Source::File(path.to_owned()),
            keys: ArcSwap::from_pointee(keys_of(&secrets)),
            state: Mutex::new(FileState {
                stamp,
                failing: false,
            }),
        })
    }

    /// Secrets given as a value (`QONTO_WEBHOOK_SECRET`); never re-read.
    pub fn from_value(value: &Secret) -> Result<WebhookSecrets, SecretsError> {
        let secrets = parse_secrets(value.expose(), "QONTO_WEBHOOK_SECRET")?;
        Ok(WebhookSecrets {
            source: Source::Value,
            keys: ArcSwap::from_pointee(keys_of(&secrets)),
            state: Mutex::new(FileState {
                stamp: None,
                failing: false,
            }),
        })
    }

    /// The keys to verify a delivery with: a lock-free read.
    pub fn keys(&self) -> Arc<Vec<hmac::Key>> {
        self.keys.load_full()
    }

    /// How many secrets are in use.
    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    /// Never true: loading refuses an empty set, and a failed re-read keeps the last good one.
    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }

    /// Re-reads the file if it changed since the last read; returns true when new secrets were
    /// taken. Blocking (file I/O): [`watch`](Self::watch) calls it once per [`CHECK_INTERVAL`].
    pub fn refresh(&self) -> bool {
        let Source::File(path) = &self.source else {
            return false;
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let current = stamp(path);
        // Unchanged since the last read, good or bad: a bad one was logged already. The stamp
        // is taken before the read, so a write that lands during it is seen next time.
        if current == state.stamp {
            return false;
        }
        match read_file(path) {
            Ok(secrets) => {
                self.keys.store(Arc::new(keys_of(&secrets)));
                state.stamp = current;
                state.failing = false;
                tracing::info!(
                    path = %path.display(),
                    secrets = secrets.len(),
                    "webhook secrets reloaded"
                );
                true
            }
            Err(e) => {
                if !state.failing {
                    tracing::warn!(
                        error = %e,
                        secrets = self.len(),
                        "cannot re-read --webhook.secret-file; keeping the last good secrets"
                    );
                }
                state.failing = true;
                state.stamp = current;
                false
            }
        }
    }

    /// Checks the file every [`CHECK_INTERVAL`] until `shutdown`; returns at once for secrets
    /// given as a value.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if matches!(self.source, Source::Value) {
            return;
        }
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped(&mut shutdown) => return,
            }
            let me = self.clone();
            // A stat and a small read, off the async workers (a stuck volume must not stall them).
            let _ = tokio::task::spawn_blocking(move || me.refresh()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::signature::{SignatureError, verify};

    const BODY: &[u8] = br#"{"test":"data"}"#;
    const VECTOR: &[u8] =
        b"t=1704110400,v1=56aff06dc227db80d6568a5070f912c601c31f20451745d257cbc0b5dfa93805";

    fn valid(s: &WebhookSecrets) -> bool {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_110_400);
        match verify(Some(VECTOR), BODY, &s.keys(), at) {
            Ok(()) => true,
            Err(SignatureError::Mismatch) => false,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn lines_comments_and_blanks() {
        let s = parse_secrets(
            "# rotated 2026-11\n\n  old-secret  \r\nnew-secret\n#x\n",
            "f",
        )
        .unwrap();
        let v: Vec<_> = s.iter().map(|s| s.expose()).collect();
        assert_eq!(v, ["old-secret", "new-secret"]);
        assert!(matches!(
            parse_secrets("# only\n\n", "f"),
            Err(SecretsError::Empty(_))
        ));
        assert!(matches!(
            parse_secrets(&"s\n".repeat(MAX_SECRETS + 1), "f"),
            Err(SecretsError::TooMany(_))
        ));
    }

    #[test]
    fn debug_and_errors_show_no_secret() {
        let s = WebhookSecrets::from_value(&Secret::new("test-secret\nS3CR3T-other")).unwrap();
        assert_eq!(s.len(), 2);
        assert!(valid(&s));
        let d = format!("{s:?}");
        assert!(!d.contains("test-secret") && !d.contains("S3CR3T"), "{d}");
        let e = parse_secrets(&"S3CR3T\n".repeat(9), "QONTO_WEBHOOK_SECRET")
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("S3CR3T") && e.contains("QONTO_WEBHOOK_SECRET"),
            "{e}"
        );
    }

    #[test]
    fn the_file_is_reread_when_it_changes_and_a_bad_read_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        std::fs::write(&path, "old-secret\n").unwrap();
        let s = WebhookSecrets::from_file(&path).unwrap();
        assert!(!valid(&s));
        // Unchanged: nothing re-read.
        assert!(!s.refresh());
        // Rotation: the new secret is added beside the old one (a different size, so the
        // change is seen even within the file system's time resolution).
        std::fs::write(&path, "old-secret\ntest-secret\n").unwrap();
        assert!(s.refresh());
        assert_eq!(s.len(), 2);
        assert!(valid(&s));
        // A broken file keeps the last good secrets, then a good one is taken again.
        std::fs::write(&path, "# emptied by mistake\n").unwrap();
        assert!(!s.refresh());
        assert!(valid(&s));
        std::fs::remove_file(&path).unwrap();
        assert!(!s.refresh());
        assert!(valid(&s));
        std::fs::write(&path, "other\n").unwrap();
        assert!(s.refresh());
        assert!(!valid(&s));
        assert_eq!(s.len(), 1);
    }
}
