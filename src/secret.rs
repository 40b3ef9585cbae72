//! Secrets: values that must never reach a log line, an error, `/metrics` or `Debug` output.
//!
//! A [`Secret`] only hands out its value through [`Secret::expose`], so every place that
//! uses the raw value is greppable. Files holding secrets are written atomically
//! (temporary file in the same directory, fsync, rename, fsync of the directory) because a
//! rotated OAuth refresh token that is lost on a crash means lost access.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A secret string whose `Debug` and `Display` print `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; surrounding whitespace (a trailing newline in a file) is removed.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        let trimmed = value.trim();
        if trimmed.len() == value.len() {
            Secret(value)
        } else {
            Secret(trimmed.to_owned())
        }
    }

    /// The raw value, for the one place that must send it (a header, a form field).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret holds nothing (an empty file, an empty variable).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Why a secret file could not be read or written. Carries the path, never the content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a secret given "as a file or as a variable's value" could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SecretSourceError {
    /// Both the file and the value were given: which one is meant is not ours to guess.
    #[error("given both as a file and as a value")]
    Both,
    #[error(transparent)]
    File(#[from] SecretFileError),
}

/// The secret from `file` or from `value` (an environment variable's content), exactly one of
/// them; a blank value counts as unset. `None` when neither is given.
pub fn secret_from_file_or_value(
    file: Option<&Path>,
    value: Option<String>,
) -> Result<Option<Secret>, SecretSourceError> {
    match (file, value.filter(|v| !v.trim().is_empty())) {
        (Some(_), Some(_)) => Err(SecretSourceError::Both),
        (Some(path), None) => Ok(Some(read_secret_file(path)?)),
        (None, Some(v)) => Ok(Some(Secret::new(v))),
        (None, None) => Ok(None),
    }
}

/// Reads a secret from a file, trimming whitespace; an empty file is an error.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    let raw = std::fs::read_to_string(path).map_err(|source| SecretFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let secret = Secret::new(raw);
    if secret.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(secret)
}

/// Replaces `path` with `secret` atomically: a temporary file beside it (mode 0600), fsync,
/// rename over the target, fsync of the directory. A crash leaves either the old or the new
/// content, never a truncated file.
pub fn write_secret_file_atomic(path: &Path, secret: &Secret) -> Result<(), SecretFileError> {
    let err = |source| SecretFileError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // tempfile creates the file with mode 0600 on Unix.
    let mut tmp = tempfile::Builder::new()
        .prefix(".qonto-exporter-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(err)?;
    tmp.write_all(secret.expose().as_bytes()).map_err(err)?;
    tmp.write_all(b"\n").map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    // The rename is durable only once the directory entry is on disk.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Checks that a new file can be created in the directory of `path` (the refresh token must be
/// writable before the first rotation, not discovered unwritable an hour later).
pub fn check_writable(path: &Path) -> Result<(), SecretFileError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".qonto-exporter-probe-")
        .tempfile_in(&dir)
        .map(drop)
        .map_err(|source| SecretFileError::Write {
            path: path.to_owned(),
            source,
        })?;
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|source| SecretFileError::Write {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn atomic_write_roundtrip_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write_secret_file_atomic(&path, &Secret::new("abc")).unwrap();
        write_secret_file_atomic(&path, &Secret::new("def")).unwrap();
        assert_eq!(read_secret_file(&path).unwrap().expose(), "def");
        // no temporary files are left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_secret_file(&path),
            Err(SecretFileError::Empty { .. })
        ));
    }
}
