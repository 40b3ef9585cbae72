//! The state file under `--storage.path`: the last complete poll and the incremental memory the
//! next poll needs, so that a restart serves figures at once and its first poll costs the
//! incremental price, not a full walk.
//!
//! One file, `qonto-exporter.state`: gzip-compressed JSON (gzip's CRC-32 catches a truncated
//! or corrupt file) holding a format version, the build that wrote it (for information: an
//! upgrade keeps the state as long as the format is the same), the identity it belongs to (a
//! SHA-256 of the API URL and the credentials' non-secret parts, never a secret), the poll and
//! the memory. Written after every complete poll atomically: a temporary file in the same
//! directory, fsync, rename over the old one, fsync of the directory; a crash leaves the old file
//! or the new one, never a mix, and leftover temporary files are removed at start. A file of
//! another format or identity, one that does not decode, or one larger than the caps (64 MiB
//! compressed, 512 MiB of JSON: read as a stream, never whole in memory) is reported once and
//! ignored: a full poll follows, never a crash.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::aggregate::Snapshot;

/// The file's name inside the storage directory.
pub const FILE_NAME: &str = "qonto-exporter.state";
/// Bumped whenever the layout changes; a file of another format is ignored.
pub const FORMAT: u32 = 1;
/// A state file larger than this is refused unread (1M links take a few MiB).
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// At most this much JSON is decompressed from it (a gzip bomb is cut short).
const MAX_JSON: u64 = 512 * 1024 * 1024;
/// Prefix of the temporary files a write creates beside the state file.
const TMP_PREFIX: &str = ".qonto-exporter.state.";

/// The build that writes the file (recorded for diagnosis; not a reason to ignore it).
pub fn build() -> String {
    format!(
        "{} {} {}",
        env!("CARGO_PKG_VERSION"),
        env!("QONTO_EXPORTER_REVISION"),
        env!("QONTO_EXPORTER_RUSTC_VERSION")
    )
}

/// Whose figures a state file holds: a SHA-256 of non-secret parts (API URL, credential kind,
/// login or client id), so that a file written for another organisation or API is ignored.
pub fn identity(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p.as_bytes());
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A complete poll as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPoll {
    /// When the poll ended, in milliseconds since the Unix epoch.
    pub finished_at_ms: u64,
    pub duration_ms: u64,
    pub pages: u64,
    pub requests: u64,
    pub full: bool,
    pub snapshot: Snapshot,
}

impl SavedPoll {
    pub fn finished_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(self.finished_at_ms))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<M> {
    format: u32,
    build: String,
    identity: String,
    poll: SavedPoll,
    memory: M,
}

/// Why a state file was not written or not used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: not a readable state file ({message})")]
    Decode { path: PathBuf, message: String },
    #[error("{path}: written in format {found} by {build}; this build reads format {FORMAT}")]
    OtherVersion {
        path: PathBuf,
        found: u32,
        build: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: belongs to another API URL or credentials")]
    Foreign { path: PathBuf },
}

/// The storage directory.
#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
    /// [`FILE_NAME`] for the organisation named `default` (the single-organisation flags',
    /// so files written before organisations existed stay valid), else one per organisation.
    file_name: String,
    identity: String,
}

impl Storage {
    /// Opens `dir`: creates it if missing and proves it writable, so a wrong path is a start-up
    /// error rather than a failure after the first poll. Set the identity with
    /// [`Storage::for_identity`] before loading or saving.
    pub fn open(dir: &Path) -> Result<Storage, StateError> {
        let io = |source| StateError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Leftovers of writes cut short (a kill mid-write) would fill the volume over time.
        for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let probe = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(dir)
            .map_err(io)?;
        drop(probe);
        Ok(Storage {
            dir: dir.to_owned(),
            file_name: FILE_NAME.to_owned(),
            identity: String::new(),
        })
    }

    /// The same directory, for the figures of `identity` (see [`identity`]).
    pub fn for_identity(self, identity: String) -> Storage {
        Storage { identity, ..self }
    }

    /// The same directory, for the organisation `name` (a checked name: letters, digits, `-`,
    /// `_`, `.`) and the figures of `identity`: each organisation has its own file.
    pub fn for_organization(self, name: &str, identity: String) -> Storage {
        let file_name = if name == crate::organizations::DEFAULT_ORGANIZATION {
            FILE_NAME.to_owned()
        } else {
            format!("qonto-exporter.{name}.state")
        };
        Storage {
            file_name,
            identity,
            ..self
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.file_name)
    }

    /// The saved poll and memory, `None` when there is no file yet.
    pub fn load<M: DeserializeOwned>(&self) -> Result<Option<(SavedPoll, M)>, StateError> {
        let path = self.path();
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let open = || -> Result<Option<File>, StateError> {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(e)),
            };
            if file.metadata().map_err(io)?.len() > MAX_BYTES {
                return Err(StateError::TooLarge { path: path.clone() });
            }
            Ok(Some(file))
        };
        // Streamed: the JSON is never held whole, and a gzip bomb stops at MAX_JSON.
        let reader = |file: File| {
            std::io::BufReader::new(
                flate2::read::GzDecoder::new(file.take(MAX_BYTES)).take(MAX_JSON),
            )
        };
        let decode = |e: serde_json::Error| StateError::Decode {
            path: path.clone(),
            message: e.to_string(),
        };
        let Some(file) = open()? else {
            return Ok(None);
        };
        // The header first (the rest skipped without being built): a file of another format
        // or identity is named as such, not as undecodable.
        #[derive(Deserialize)]
        struct Header {
            format: u32,
            build: String,
            identity: String,
        }
        let header: Header = serde_json::from_reader(reader(file)).map_err(decode)?;
        if header.format != FORMAT {
            return Err(StateError::OtherVersion {
                path,
                found: header.format,
                build: header.build,
            });
        }
        if header.identity != self.identity {
            return Err(StateError::Foreign { path });
        }
        let Some(file) = open()? else {
            return Ok(None);
        };
        let envelope: Envelope<M> = serde_json::from_reader(reader(file)).map_err(decode)?;
        Ok(Some((envelope.poll, envelope.memory)))
    }

    /// The bytes of a state file for `poll` and `memory`: serialised and compressed by the
    /// caller (CPU work, no copy of the memory), written by [`Storage::write`] (I/O).
    pub fn encode<M: Serialize>(
        &self,
        poll: &SavedPoll,
        memory: &M,
    ) -> Result<Vec<u8>, StateError> {
        #[derive(Serialize)]
        struct EnvelopeRef<'a, M> {
            format: u32,
            build: String,
            identity: &'a str,
            poll: &'a SavedPoll,
            memory: &'a M,
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        serde_json::to_writer(
            &mut gz,
            &EnvelopeRef {
                format: FORMAT,
                build: build(),
                identity: &self.identity,
                poll,
                memory,
            },
        )
        .map_err(std::io::Error::other)
        .and_then(|()| gz.finish())
        .map_err(|source| StateError::Io {
            path: self.path(),
            source,
        })
    }

    /// Replaces the file atomically with `bytes` (from [`Storage::encode`]).
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.path();
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(io)?;
        tmp.write_all(bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }

    /// Encodes and writes in one go (tests and tools).
    pub fn save<M: Serialize>(&self, poll: &SavedPoll, memory: &M) -> Result<(), StateError> {
        self.write(&self.encode(poll, memory)?)
    }
}

/// What a restored poll must satisfy besides decoding: an end not in the future (beyond a
/// minute of clock skew), or its age and the data-stale alert would lie.
pub fn check_poll(poll: &SavedPoll, now: SystemTime, path: &Path) -> Result<(), StateError> {
    if poll.finished_at() > now + Duration::from_secs(60) {
        return Err(StateError::Invalid {
            path: path.to_owned(),
            message: format!(
                "its poll ended in the future ({} ms after the epoch)",
                poll.finished_at_ms
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll() -> SavedPoll {
        SavedPoll {
            finished_at_ms: 1_795_000_000_000,
            duration_ms: 1200,
            pages: 3,
            requests: 4,
            full: true,
            snapshot: Snapshot::default(),
        }
    }

    #[test]
    fn round_trip_and_every_bad_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap().for_identity(identity(&[
            "https://x",
            "oauth",
            "client",
        ]));
        assert!(s.load::<Vec<u64>>().unwrap().is_none(), "no file yet");
        s.save(&poll(), &vec![1u64, 2, 3]).unwrap();
        let (p, m) = s.load::<Vec<u64>>().unwrap().unwrap();
        assert_eq!((p.pages, m), (3, vec![1, 2, 3]));

        // Another identity.
        let other = Storage::open(dir.path())
            .unwrap()
            .for_identity(identity(&["https://y"]));
        assert!(matches!(
            other.load::<Vec<u64>>(),
            Err(StateError::Foreign { .. })
        ));
        // Truncated, corrupt, empty, not gzip.
        let bytes = std::fs::read(s.path()).unwrap();
        for bad in [
            bytes[..bytes.len() / 2].to_vec(),
            bytes.iter().map(|b| b ^ 0x5a).collect(),
            Vec::new(),
            b"{\"format\":1}".to_vec(),
        ] {
            std::fs::write(s.path(), &bad).unwrap();
            assert!(s.load::<Vec<u64>>().is_err());
        }
        // Another format.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(br#"{"format":99,"build":"x","identity":"y"}"#)
            .unwrap();
        std::fs::write(s.path(), gz.finish().unwrap()).unwrap();
        assert!(matches!(
            s.load::<Vec<u64>>(),
            Err(StateError::OtherVersion { found: 99, .. })
        ));
        // A memory of another shape.
        s.save(&poll(), &"text").unwrap();
        assert!(matches!(
            s.load::<Vec<u64>>(),
            Err(StateError::Decode { .. })
        ));
    }

    #[test]
    fn a_file_of_another_build_is_kept_and_leftover_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap().for_identity("me".into());
        let bytes = s.encode(&poll(), &vec![7u64]).unwrap();
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut json)
            .unwrap();
        let other = String::from_utf8(json)
            .unwrap()
            .replace(&build(), "0.0.1 0123456789ab rustc 1.80.0");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(other.as_bytes()).unwrap();
        s.write(&gz.finish().unwrap()).unwrap();
        let (_, m) = s.load::<Vec<u64>>().unwrap().unwrap();
        assert_eq!(m, vec![7], "an upgrade keeps the state");

        let leftover = dir.path().join(format!("{TMP_PREFIX}abc123"));
        std::fs::write(&leftover, b"half a write").unwrap();
        Storage::open(dir.path()).unwrap();
        assert!(!leftover.exists());
        assert!(s.path().exists());
    }

    #[test]
    fn a_poll_from_the_future_is_refused() {
        let mut p = poll();
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(p.finished_at_ms);
        assert!(check_poll(&p, now, Path::new("x")).is_ok());
        p.finished_at_ms = u64::MAX;
        assert!(
            check_poll(&p, now, Path::new("x")).is_err(),
            "no panic either"
        );
        p.finished_at_ms = 32_503_680_000_000;
        assert!(check_poll(&p, now, Path::new("x")).is_err());
    }

    #[test]
    fn an_unusable_directory_is_refused_at_open() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(Storage::open(file.path()).is_err());
    }
}
