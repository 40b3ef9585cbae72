//! Secrets: values that must never reach a log line, an error, `/metrics` or `Debug` output.
//!
//! A [`Secret`] only hands out its value through [`Secret::expose`], so every place that
//! uses the raw value is greppable. Files holding secrets are written atomically
//! (temporary file in the same directory, fsync, rename, fsync of the directory) because a
//! rotated OAuth refresh token that is lost on a crash means lost access. Files are read up to
//! [`MAX_SECRET_FILE_BYTES`], so a wrong path cannot fill the memory.

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
    /// More than [`MAX_SECRET_FILE_BYTES`]: not a secret file (a wrong path, a device, a log).
    #[error(
        "{path} holds more than {} KiB, which no credential needs; check that the path names the secret's file",
        MAX_SECRET_FILE_BYTES / 1024
    )]
    TooLarge { path: PathBuf },
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

/// The most a secret file may hold. Tokens and keys are a few hundred bytes; the cap keeps a
/// wrong path (`/dev/zero`, a log file) from filling the memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads a secret from a file (at most [`MAX_SECRET_FILE_BYTES`]), trimming whitespace; an
/// empty file is an error.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    use std::io::Read;
    let read_err = |source| SecretFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut raw))
        .map_err(read_err)?;
    if raw.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let raw = String::from_utf8(raw).map_err(|_| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
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
    fn an_oversized_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let at_limit = "a".repeat(MAX_SECRET_FILE_BYTES as usize);
        std::fs::write(&path, &at_limit).unwrap();
        assert_eq!(read_secret_file(&path).unwrap().expose(), at_limit);
        std::fs::write(&path, "a".repeat(10 << 20)).unwrap();
        let e = read_secret_file(&path).unwrap_err();
        assert!(matches!(e, SecretFileError::TooLarge { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "{} holds more than 64 KiB, which no credential needs; check that the path names the secret's file",
                path.display()
            )
        );
    }

    #[test]
    fn a_file_that_is_not_text_is_an_error_that_quotes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, b"secret\xff\xfe").unwrap();
        let e = read_secret_file(&path).unwrap_err().to_string();
        assert!(e.contains("not UTF-8") && !e.contains("secret"), "{e}");
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
