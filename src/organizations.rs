//! Which organisations this process polls: the `--config.file` YAML, or the single-organisation
//! flags read as a one-organisation configuration named by `--qonto.organization`.
//!
//! Everything here is checked before anything runs (at start, and at every reload), and a
//! problem is one line naming the file, the organisation and the key. Secrets are never inline:
//! only a file path (`*_file`) or the name of an environment variable (`*_env`) is accepted, so
//! the configuration can be shown, diffed and committed.
//!
//! Each [`Organization`] carries a [`Fingerprint`] of what it was configured with, secrets'
//! values included (never the refresh token, which the exporter itself rewrites): a reload
//! restarts an organisation only when its fingerprint changed, so unchanged ones keep their
//! poller, tokens and state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{CredentialSource, RunArgs, check_url, parse_positive_duration};
use crate::secret::{Secret, check_writable, read_secret_file};
use crate::shard::Shard;

/// The name of the organisation of the single-organisation flags, unless `--qonto.organization`
/// gives another.
pub const DEFAULT_ORGANIZATION: &str = "default";

/// Longest organisation name: it is a label value on every series and part of a file name.
pub const MAX_NAME_LEN: usize = 64;

/// Most organisations one configuration may hold (each costs a poller and its series).
pub const MAX_ORGANIZATIONS: usize = 10_000;

/// Largest configuration file read: a configuration of [`MAX_ORGANIZATIONS`] fits easily; a
/// wrong path (a log, a device) does not fill the memory.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// What an organisation was configured with, secrets included, as a hash: equal fingerprints
/// mean a reload can keep the running poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(u128);

/// One organisation, ready to poll.
#[derive(Debug)]
pub struct Organization {
    /// The `organization` label value.
    pub name: String,
    pub api_url: String,
    pub source: CredentialSource,
    pub staging_token: Option<Secret>,
    pub poll_interval: Duration,
    pub fingerprint: Fingerprint,
}

impl Organization {
    /// Whose figures a state file holds (see [`crate::state::identity`]): the API URL and the
    /// credentials' public parts. An access token names nobody, so there the organisation's
    /// name stands in. Two organisations with the same identity would poll the same figures
    /// and share a state file: the configuration refuses that.
    pub fn state_identity(&self) -> String {
        let mut parts = vec![self.api_url.trim_end_matches('/')];
        parts.extend(self.source.public_identity());
        if matches!(self.source, CredentialSource::AccessToken(_)) {
            parts.push(&self.name);
        }
        crate::state::identity(&parts)
    }
}

/// A configuration problem: one line naming where it is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigFileError(pub String);

/// The organisations of `--config.file` that fall to `shard`, with defaults from the flags.
pub fn load(
    path: &Path,
    defaults: &RunArgs,
    shard: Shard,
) -> Result<Vec<Organization>, ConfigFileError> {
    let at = |msg: String| ConfigFileError(format!("--config.file {}: {msg}", path.display()));
    let text = read_capped(path).map_err(|e| at(e.to_string()))?;
    parse(&text, defaults, shard).map_err(|e| at(e.0))
}

fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut raw = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_FILE_BYTES / 1024 / 1024
        )));
    }
    String::from_utf8(raw)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    organizations: Vec<serde_norway::Value>,
}

/// One entry as written. Secrets only as `*_file` or `*_env`; the inline spellings are
/// recognised so the error can say why they are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    api_url: Option<String>,
    login: Option<String>,
    secret_key_file: Option<PathBuf>,
    secret_key_env: Option<String>,
    access_token_file: Option<PathBuf>,
    access_token_env: Option<String>,
    staging_token_file: Option<PathBuf>,
    staging_token_env: Option<String>,
    oauth: Option<OAuthEntry>,
    poll_interval: Option<String>,
    #[serde(default, rename = "secret_key")]
    inline_secret_key: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "access_token")]
    inline_access_token: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "staging_token")]
    inline_staging_token: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OAuthEntry {
    client_id: String,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    refresh_token_file: PathBuf,
    token_url: Option<String>,
    #[serde(default, rename = "client_secret")]
    inline_client_secret: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "refresh_token")]
    inline_refresh_token: Option<serde::de::IgnoredAny>,
}

/// Parses and checks a configuration's text (see [`load`]); returns the organisations that
/// fall to `shard`. Every entry is checked (names, keys, URLs, that no two share a name, a
/// refresh-token file or state), but only this shard's secrets are read: another replica's
/// missing or unreadable token file is that replica's problem, not this one's.
pub fn parse(
    text: &str,
    defaults: &RunArgs,
    shard: Shard,
) -> Result<Vec<Organization>, ConfigFileError> {
    let file: File = serde_norway::from_str(text).map_err(|e| ConfigFileError(e.to_string()))?;
    if file.organizations.is_empty() {
        return Err(ConfigFileError(
            "organizations: the list is empty; name at least one organisation".into(),
        ));
    }
    if file.organizations.len() > MAX_ORGANIZATIONS {
        return Err(ConfigFileError(format!(
            "organizations: {} entries, more than the {MAX_ORGANIZATIONS} one process accepts; shard them across replicas (--shard.count)",
            file.organizations.len()
        )));
    }
    let mut orgs: Vec<Organization> = Vec::with_capacity(file.organizations.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut identities: HashMap<String, String> = HashMap::new();
    let mut token_files: HashMap<PathBuf, String> = HashMap::new();
    for (i, value) in file.organizations.into_iter().enumerate() {
        let label = entry_label(&value, i);
        let fail = |msg: String| ConfigFileError(format!("{label}: {msg}"));
        let entry: Entry = serde_norway::from_value(value).map_err(|e| fail(e.to_string()))?;
        let owned = shard.owns(&entry.name);
        let org = entry.resolve(defaults, owned).map_err(fail)?;
        // Names equal but for case would share a state file on a case-insensitive volume.
        if let Some(first) = names.insert(org.name.to_ascii_lowercase(), i) {
            return Err(fail(format!(
                "name: {:?} is also the name of organisation #{} (letter case aside); names must be unique",
                org.name,
                first + 1
            )));
        }
        if let CredentialSource::OAuth {
            refresh_token_file, ..
        } = &org.source
        {
            let key = comparable(refresh_token_file);
            if let Some(other) = token_files.insert(key, org.name.clone()) {
                return Err(fail(format!(
                    "oauth.refresh_token_file: {} is also organisation {other:?}'s; each rotates its own token, so two cannot share a file",
                    refresh_token_file.display()
                )));
            }
        }
        if let Some(other) = identities.insert(org.state_identity(), org.name.clone()) {
            return Err(fail(format!(
                "same API URL and credentials as organisation {other:?}: both would poll the same figures and share one state file"
            )));
        }
        if owned {
            orgs.push(org);
        }
    }
    Ok(orgs)
}

/// "organization \"acme\"" when the entry has a readable name, else its position.
fn entry_label(value: &serde_norway::Value, i: usize) -> String {
    match value.get("name").and_then(|n| n.as_str()) {
        Some(name) if valid_name(name).is_ok() => format!("organization {name:?}"),
        _ => format!("organizations[{i}]"),
    }
}

/// A path as two spellings of one file compare: the canonical path where the file exists,
/// else the canonical directory joined with the name.
fn comparable(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize()
                .map_or_else(|_| path.to_owned(), |d| d.join(name))
        }
        _ => path.to_owned(),
    }
}

/// Checks an organisation's name: it becomes a label value and part of a file name.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{name:?} must be 1 to {MAX_NAME_LEN} characters long"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return Err(format!(
            "{name:?} may hold only letters, digits, '-', '_' and '.' (not first)"
        ));
    }
    Ok(())
}

/// A secret given by file or by the name of an environment variable, at most one of them;
/// unless `read`, only checked as given (an empty stand-in, for an organisation of another
/// shard, which is never polled here).
fn secret(
    file: Option<&Path>,
    env: Option<&str>,
    key: &str,
    read: bool,
) -> Result<Option<Secret>, String> {
    match (file, env) {
        (Some(_), None) | (None, Some(_)) if !read => Ok(Some(Secret::new(""))),
        (Some(_), Some(_)) => Err(format!(
            "{key}_file and {key}_env are both set; give the secret in one place"
        )),
        (Some(path), None) => read_secret_file(path)
            .map(Some)
            .map_err(|e| format!("{key}_file: {e}")),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v))),
            Ok(_) => Err(format!("{key}_env: the variable {var} is empty")),
            Err(_) => Err(format!("{key}_env: the variable {var} is not set")),
        },
        (None, None) => Ok(None),
    }
}

impl Entry {
    /// The organisation of this entry; its secrets are read only if `read`.
    fn resolve(self, defaults: &RunArgs, read: bool) -> Result<Organization, String> {
        valid_name(&self.name).map_err(|e| format!("name: {e}"))?;
        for (given, key) in [
            (self.inline_secret_key.is_some(), "secret_key"),
            (self.inline_access_token.is_some(), "access_token"),
            (self.inline_staging_token.is_some(), "staging_token"),
        ] {
            if given {
                return Err(format!(
                    "{key}: secrets are never written in the configuration; use {key}_file (a path) or {key}_env (a variable's name)"
                ));
            }
        }
        let api_url = self
            .api_url
            .clone()
            .unwrap_or_else(|| defaults.api_url.clone());
        check_url("api_url", &api_url).map_err(|e| e.0)?;
        let poll_interval = match &self.poll_interval {
            Some(s) => parse_positive_duration(s).map_err(|e| format!("poll_interval: {e}"))?,
            None => defaults.poll_interval,
        };
        let mut hasher = Hasher::default();
        hasher.add(&format!("{self:?}"));
        hasher.add(&api_url);
        hasher.add(&humantime::format_duration(poll_interval).to_string());
        let staging_token = secret(
            self.staging_token_file.as_deref(),
            self.staging_token_env.as_deref(),
            "staging_token",
            read,
        )?;
        let key = secret(
            self.secret_key_file.as_deref(),
            self.secret_key_env.as_deref(),
            "secret_key",
            read,
        )?;
        let access = secret(
            self.access_token_file.as_deref(),
            self.access_token_env.as_deref(),
            "access_token",
            read,
        )?;
        for s in [&key, &access, &staging_token].into_iter().flatten() {
            hasher.add(s.expose());
        }
        let kinds = [
            self.login.is_some() || key.is_some(),
            access.is_some(),
            self.oauth.is_some(),
        ];
        let source = match kinds {
            [true, false, false] => {
                let login = self
                    .login
                    .ok_or("login: required with secret_key_file or secret_key_env")?;
                let secret_key =
                    key.ok_or("secret_key_file or secret_key_env: required with login")?;
                CredentialSource::ApiKey { login, secret_key }
            }
            [false, true, false] => CredentialSource::AccessToken(access.ok_or("access_token")?),
            [false, false, true] => {
                let o = self.oauth.ok_or("oauth")?;
                for (given, key) in [
                    (o.inline_client_secret.is_some(), "client_secret"),
                    (o.inline_refresh_token.is_some(), "refresh_token"),
                ] {
                    if given {
                        return Err(format!(
                            "oauth.{key}: secrets are never written in the configuration; use oauth.{key}_file"
                        ));
                    }
                }
                let client_secret = secret(
                    o.client_secret_file.as_deref(),
                    o.client_secret_env.as_deref(),
                    "oauth.client_secret",
                    read,
                )?
                .ok_or("oauth.client_secret_file or oauth.client_secret_env: required")?;
                let refresh_token = if read {
                    let token = read_secret_file(&o.refresh_token_file).map_err(|e| {
                        format!(
                            "oauth.refresh_token_file: {e} (run `qonto-exporter oauth-login --config.file … --organization {}` to create it)",
                            self.name
                        )
                    })?;
                    check_writable(&o.refresh_token_file).map_err(|e| {
                        format!(
                            "oauth.refresh_token_file: {e}; the file is rewritten on every token rotation, so it must be writable"
                        )
                    })?;
                    token
                } else {
                    Secret::new("")
                };
                let token_url = o
                    .token_url
                    .clone()
                    .unwrap_or_else(|| defaults.oauth_token_url.clone());
                check_url("oauth.token_url", &token_url).map_err(|e| e.0)?;
                hasher.add(&token_url);
                hasher.add(client_secret.expose());
                CredentialSource::OAuth {
                    client_id: o.client_id,
                    client_secret,
                    refresh_token_file: o.refresh_token_file,
                    refresh_token,
                    token_url,
                }
            }
            [false, false, false] => {
                return Err(
                    "no credentials: give login with secret_key_file (or secret_key_env), access_token_file (or access_token_env), or oauth"
                        .into(),
                );
            }
            _ => {
                return Err(
                    "two kinds of credentials given (API key, access token, oauth); choose one"
                        .into(),
                );
            }
        };
        Ok(Organization {
            name: self.name,
            api_url,
            source,
            staging_token,
            poll_interval,
            fingerprint: hasher.finish(),
        })
    }
}

/// The single-organisation flags as a one-organisation configuration.
pub fn from_flags(args: &RunArgs) -> Result<Organization, crate::config::ConfigError> {
    valid_name(&args.organization)
        .map_err(|e| crate::config::ConfigError(format!("--qonto.organization: {e}")))?;
    let source = args.credentials()?;
    let staging_token = args.staging_token()?;
    let mut hasher = Hasher::default();
    hasher.add(&args.organization);
    hasher.add(&args.api_url);
    Ok(Organization {
        name: args.organization.clone(),
        api_url: args.api_url.clone(),
        source,
        staging_token,
        poll_interval: args.poll_interval,
        fingerprint: hasher.finish(),
    })
}

/// A keyed 128-bit SipHash over length-prefixed parts. The key is random per process:
/// fingerprints are compared within one process only, and a fixed key would let anyone who
/// reads a (future) debug output test guesses of a secret against it.
struct Hasher(siphasher::sip128::SipHasher13);

impl Default for Hasher {
    fn default() -> Hasher {
        static KEY: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(rand::random);
        Hasher(siphasher::sip128::SipHasher13::new_with_key(key))
    }
}

impl Hasher {
    fn add(&mut self, part: &str) {
        use std::hash::Hasher as _;
        self.0.write(&(part.len() as u64).to_le_bytes());
        self.0.write(part.as_bytes());
    }

    fn finish(self) -> Fingerprint {
        use siphasher::sip128::Hasher128;
        Fingerprint(self.0.finish128().as_u128())
    }
}

/// The OAuth client of one organisation of a configuration, for `oauth-login`: its refresh
/// token file need not exist yet (the login creates it).
#[derive(Debug)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token_file: PathBuf,
    pub token_url: String,
}

/// The OAuth client of organisation `name` in the configuration at `path`.
pub fn oauth_client(
    path: &Path,
    name: &str,
    default_token_url: &str,
) -> Result<OAuthClient, ConfigFileError> {
    let at = |msg: String| ConfigFileError(format!("--config.file {}: {msg}", path.display()));
    let text = read_capped(path).map_err(|e| at(e.to_string()))?;
    let file: File = serde_norway::from_str(&text).map_err(|e| at(e.to_string()))?;
    let value = file
        .organizations
        .into_iter()
        .find(|v| v.get("name").and_then(|n| n.as_str()) == Some(name))
        .ok_or_else(|| at(format!("no organisation is named {name:?}")))?;
    let fail = |msg: String| at(format!("organization {name:?}: {msg}"));
    let entry: Entry = serde_norway::from_value(value).map_err(|e| fail(e.to_string()))?;
    let o = entry
        .oauth
        .ok_or_else(|| fail("oauth: not set; oauth-login is for OAuth organisations".into()))?;
    let client_secret = secret(
        o.client_secret_file.as_deref(),
        o.client_secret_env.as_deref(),
        "oauth.client_secret",
        true,
    )
    .map_err(fail)?
    .ok_or_else(|| fail("oauth.client_secret_file or oauth.client_secret_env: required".into()))?;
    let token_url = o.token_url.unwrap_or_else(|| default_token_url.to_owned());
    check_url("oauth.token_url", &token_url).map_err(|e| fail(e.0))?;
    Ok(OAuthClient {
        client_id: o.client_id,
        client_secret,
        refresh_token_file: o.refresh_token_file,
        token_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn defaults() -> RunArgs {
        crate::config::Cli::try_parse_from(["qonto-exporter"])
            .unwrap()
            .run
    }

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            Dir(tempfile::tempdir().unwrap())
        }
        fn file(&self, name: &str, content: &str) -> String {
            let p = self.0.path().join(name);
            std::fs::write(&p, content).unwrap();
            p.display().to_string()
        }
    }

    #[test]
    fn the_issue_example_parses() {
        let d = Dir::new();
        let key = d.file("acme.key", "k-acme\n");
        let staging = d.file("staging", "st");
        let cs = d.file("globex.client-secret", "cs");
        let rt = d.file("globex.refresh-token", "rt");
        let text = format!(
            r#"
organizations:
  - name: acme                      # the `organization` label value
    login: acme-sas-4821
    secret_key_file: {key}
  - name: globex
    api_url: https://thirdparty-sandbox.staging.qonto.co
    staging_token_file: {staging}
    oauth:
      client_id: abc
      client_secret_file: {cs}
      refresh_token_file: {rt}
    poll_interval: 5m
"#
        );
        let orgs = parse(&text, &defaults(), Shard::default()).unwrap();
        assert_eq!(orgs.len(), 2);
        assert_eq!(orgs[0].name, "acme");
        assert_eq!(orgs[0].api_url, "https://thirdparty.qonto.com");
        assert_eq!(orgs[0].poll_interval, Duration::from_secs(60));
        assert!(
            matches!(&orgs[0].source, CredentialSource::ApiKey { login, secret_key } if login == "acme-sas-4821" && secret_key.expose() == "k-acme")
        );
        assert_eq!(orgs[1].poll_interval, Duration::from_secs(300));
        assert_eq!(orgs[1].staging_token.as_ref().unwrap().expose(), "st");
        assert!(
            matches!(&orgs[1].source, CredentialSource::OAuth { token_url, .. } if token_url == "https://oauth.qonto.com/oauth2/token")
        );
        // The same text twice: the same fingerprints (a reload keeps both).
        let again = parse(&text, &defaults(), Shard::default()).unwrap();
        assert_eq!(orgs[0].fingerprint, again[0].fingerprint);
        assert_eq!(orgs[1].fingerprint, again[1].fingerprint);
        // A changed secret file: a new fingerprint for that organisation only.
        std::fs::write(&key, "k-acme-2").unwrap();
        let changed = parse(&text, &defaults(), Shard::default()).unwrap();
        assert_ne!(orgs[0].fingerprint, changed[0].fingerprint);
        assert_eq!(orgs[1].fingerprint, changed[1].fingerprint);
        // The refresh token is the exporter's own to rewrite: not part of the fingerprint.
        std::fs::write(&rt, "rt-rotated").unwrap();
        assert_eq!(
            orgs[1].fingerprint,
            parse(&text, &defaults(), Shard::default()).unwrap()[1].fingerprint
        );
    }

    fn error(text: &str) -> String {
        match parse(text, &defaults(), Shard::default()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn errors_name_the_organisation_and_the_key() {
        let d = Dir::new();
        let key = d.file("k", "k");
        let rt = d.file("rt", "rt");
        let cs = d.file("cs", "cs");
        let cases: Vec<(String, &[&str])> = vec![
            (
                "organizations:\n  - name: a\n    login: l\n    secret_key: hunter2\n".into(),
                &["organization \"a\"", "secret_key", "never"],
            ),
            (
                format!("organizations:\n  - name: a\n    login: l\n    secret_key_file: {key}\n  - name: a\n    login: m\n    secret_key_file: {key}\n"),
                &["organization \"a\"", "name", "unique"],
            ),
            (
                format!("organizations:\n  - name: a\n    oauth: {{client_id: c, client_secret_file: {cs}, refresh_token_file: {rt}}}\n  - name: b\n    oauth: {{client_id: d, client_secret_file: {cs}, refresh_token_file: {rt}}}\n"),
                &["organization \"b\"", "refresh_token_file", "\"a\""],
            ),
            (
                format!("organizations:\n  - name: a\n    login: l\n    secret_key_file: {key}\n  - name: b\n    login: l\n    secret_key_file: {key}\n"),
                &["organization \"b\"", "state file", "\"a\""],
            ),
            (
                "organizations:\n  - name: a\n    login: l\n    secret_key_file: /nonexistent/k\n".into(),
                &["organization \"a\"", "secret_key_file", "/nonexistent/k"],
            ),
            (
                "organizations:\n  - name: a\n    login: l\n    secret_key_env: QONTO_TEST_SURELY_UNSET_VAR\n".into(),
                &["organization \"a\"", "secret_key_env", "QONTO_TEST_SURELY_UNSET_VAR"],
            ),
            (
                format!("organizations:\n  - name: a\n    login: l\n    secret_key_file: {key}\n    poll_interval: 0s\n"),
                &["organization \"a\"", "poll_interval"],
            ),
            (
                format!("organizations:\n  - name: a\n    login: l\n    secret_key_file: {key}\n    pol_interval: 1m\n"),
                &["organization \"a\"", "pol_interval"],
            ),
            (
                format!("organizations:\n  - name: a\n    login: l\n    secret_key_file: {key}\n    api_url: ftp://x\n"),
                &["organization \"a\"", "api_url"],
            ),
            (
                format!("organizations:\n  - name: \"a b\"\n    login: l\n    secret_key_file: {key}\n"),
                &["organizations[0]", "name"],
            ),
            (
                "organizations:\n  - name: a\n".into(),
                &["organization \"a\"", "no credentials"],
            ),
            ("organizations: []\n".into(), &["empty"]),
            ("orgs: []\n".into(), &["orgs"]),
            (
                format!("organizations:\n  - name: a\n    access_token_file: {key}\n    login: l\n    secret_key_file: {key}\n"),
                &["organization \"a\"", "two kinds"],
            ),
        ];
        for (text, needles) in cases {
            let e = error(&text);
            for n in needles {
                assert!(e.contains(n), "{n:?} not in {e:?}");
            }
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn only_this_shards_secrets_are_read_but_every_entry_is_checked() {
        let d = Dir::new();
        let key = d.file("k", "k");
        let names: Vec<String> = (0..12).map(|i| format!("org-{i}")).collect();
        let mut text = String::from("organizations:\n");
        for n in &names {
            // Every token file is missing: only the owner of each may complain.
            text.push_str(&format!(
                "  - name: {n}\n    oauth: {{client_id: {n}, client_secret_file: {key}, refresh_token_file: /nonexistent/{n}}}\n"
            ));
        }
        let shard = Shard::new(1, 3).unwrap();
        let mine: Vec<&String> = names.iter().filter(|n| shard.owns(n)).collect();
        let e = error_in(&text, shard);
        assert!(e.contains(&format!("organization {:?}", mine[0])), "{e}");
        // Without the owners' entries, the others' missing files do not matter...
        let others: String = text
            .split("  - ")
            .skip(1)
            .filter(|e| !mine.iter().any(|m| e.starts_with(&format!("name: {m}\n"))))
            .map(|e| format!("  - {e}"))
            .collect();
        let orgs = parse(&format!("organizations:\n{others}"), &defaults(), shard).unwrap();
        assert!(orgs.is_empty());
        // ... but their structure is checked all the same.
        let theirs = names.iter().find(|n| !shard.owns(n)).unwrap();
        let bad = format!(
            "organizations:\n{others}  - name: {}\n    access_token_env: X\n",
            theirs.to_uppercase()
        );
        assert!(error_in(&bad, shard).contains("letter case"));
    }

    fn error_in(text: &str, shard: Shard) -> String {
        match parse(text, &defaults(), shard) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn names_are_label_and_file_safe() {
        for ok in ["acme", "Acme-SAS_2.fr", &"x".repeat(MAX_NAME_LEN)] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "a/b",
            "..",
            ".hidden",
            "é",
            "a\nb",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_huge_file_is_refused_without_reading_it_all() {
        let e = load(Path::new("/dev/zero"), &defaults(), Shard::default())
            .err()
            .unwrap()
            .0;
        assert!(e.contains("--config.file /dev/zero"), "{e}");
    }
}
