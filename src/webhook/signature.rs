//! `X-Qonto-Signature: t={unix seconds},v1={hex}`: the HMAC-SHA256 of `{t}.{raw body}` keyed
//! by the subscription's secret. The header is outside input: it is parsed strictly and with
//! bounds (length, number of entries), the comparison is constant-time (`ring::hmac::verify`),
//! and the timestamp is checked only once the signature matches, so `stale` counts genuine
//! deliveries signed too long ago (or a skewed clock), never forgeries.

use std::time::{Duration, SystemTime};

use ring::hmac;

/// The header's name.
pub const HEADER: &str = "x-qonto-signature";

/// How far `t` may lie from this host's clock, either way: Qonto's documented 5 minutes.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// Longest header read; a real one is about 80 bytes (a few more during a rotation).
const MAX_HEADER_LEN: usize = 1024;
/// Most `v1=` entries checked, so a header cannot make one request cost many HMAC runs.
const MAX_SIGNATURES: usize = 8;
/// Bytes of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Why a delivery's signature is refused. Holds neither the header nor the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Qonto-Signature header")]
    Missing,
    #[error("X-Qonto-Signature is not t=<unix seconds>,v1=<64 hex digits>")]
    Malformed,
    #[error("X-Qonto-Signature matches none of the webhook secrets")]
    Mismatch,
    /// Signed more than [`TOLERANCE`] before this host's clock.
    #[error("X-Qonto-Signature's timestamp is more than 5 minutes old")]
    Stale,
    /// Signed more than [`TOLERANCE`] after this host's clock.
    #[error("X-Qonto-Signature's timestamp is more than 5 minutes ahead of this host's clock")]
    Future,
}

impl SignatureError {
    /// True for a timestamp out of tolerance (counted `stale`), false for a bad signature.
    pub fn is_stale(self) -> bool {
        matches!(self, SignatureError::Stale | SignatureError::Future)
    }
}

/// A parsed header: the timestamp as sent (it is part of the signed text) and its candidate tags.
#[derive(Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The `t` digits exactly as sent.
    pub t_text: &'a str,
    pub t: u64,
    pub v1: Vec<[u8; TAG_LEN]>,
}

/// Parses `t=…,v1=…`: spaces around entries are tolerated, as are several `v1` entries (Qonto
/// may sign with more than one secret) and unknown keys (future schemes). Refused: a missing or
/// repeated `t`, a `t` that is not plain decimal digits fitting in a u64, no `v1`, a `v1` that is
/// not 64 hex digits, an entry without `=`, an oversized header.
pub fn parse_header(header: &[u8]) -> Result<Header<'_>, SignatureError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let text = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed)?;
    let mut t = None;
    let mut v1 = Vec::new();
    for entry in text.split(',') {
        let (key, value) = entry
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        let (key, value) = (key.trim(), value.trim());
        match key {
            "t" => {
                if t.is_some() || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::Malformed);
                }
                let secs: u64 = value.parse().map_err(|_| SignatureError::Malformed)?;
                t = Some((value, secs));
            }
            "v1" => {
                if v1.len() == MAX_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                v1.push(decode_hex(value).ok_or(SignatureError::Malformed)?);
            }
            "" => return Err(SignatureError::Malformed),
            _ => {}
        }
    }
    let (t_text, t) = t.ok_or(SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed);
    }
    Ok(Header { t_text, t, v1 })
}

fn decode_hex(s: &str) -> Option<[u8; TAG_LEN]> {
    let s = s.as_bytes();
    if s.len() != 2 * TAG_LEN {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; TAG_LEN];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// An HMAC-SHA256 key made from a webhook secret (the secret's UTF-8 bytes).
pub fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

/// Checks `header` (the raw `X-Qonto-Signature` value, `None` when absent) over `body` against
/// every key, then the timestamp against `now`: a signature by any key passes (rotation).
pub fn verify(
    header: Option<&[u8]>,
    body: &[u8],
    keys: &[hmac::Key],
    now: SystemTime,
) -> Result<(), SignatureError> {
    let header = parse_header(header.ok_or(SignatureError::Missing)?)?;
    let mut signed = Vec::with_capacity(header.t_text.len() + 1 + body.len());
    signed.extend_from_slice(header.t_text.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let matched = keys.iter().any(|k| {
        header
            .v1
            .iter()
            .any(|tag| hmac::verify(k, &signed, tag).is_ok())
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    fresh(header.t, now)
}

/// `Ok` when `t` lies within [`TOLERANCE`] of `now` either way. Any `u64` is handled: a clock
/// before 1970 counts as 0, and the differences cannot overflow.
pub fn fresh(t: u64, now: SystemTime) -> Result<(), SignatureError> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tolerance = TOLERANCE.as_secs();
    match now.checked_sub(t) {
        Some(age) if age > tolerance => Err(SignatureError::Stale),
        Some(_) => Ok(()),
        // t is ahead of now: t - now cannot underflow here.
        None if t - now > tolerance => Err(SignatureError::Future),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"test":"data"}"#;
    const VECTOR: &str =
        "t=1704110400,v1=56aff06dc227db80d6568a5070f912c601c31f20451745d257cbc0b5dfa93805";
    const T: u64 = 1_704_110_400;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn check(header: &str, keys: &[hmac::Key], now: u64) -> Result<(), SignatureError> {
        verify(Some(header.as_bytes()), BODY, keys, at(now))
    }

    /// Signs `body` at `t` the way Qonto does.
    fn sign(secret: &str, t: u64, body: &[u8]) -> String {
        let mut msg = format!("{t}.").into_bytes();
        msg.extend_from_slice(body);
        let tag = hmac::sign(&key(secret), &msg);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("t={t},v1={hex}")
    }

    #[test]
    fn the_documented_test_vector_is_valid_at_its_time() {
        let keys = [key("test-secret")];
        assert_eq!(check(VECTOR, &keys, T), Ok(()));
        assert_eq!(sign("test-secret", T, BODY), VECTOR);
        // Up to the tolerance either way, and not a second beyond.
        assert_eq!(check(VECTOR, &keys, T + 300), Ok(()));
        assert_eq!(check(VECTOR, &keys, T - 300), Ok(()));
        assert_eq!(check(VECTOR, &keys, T + 301), Err(SignatureError::Stale));
        assert_eq!(check(VECTOR, &keys, T - 301), Err(SignatureError::Future));
    }

    #[test]
    fn a_wrong_secret_or_body_is_a_mismatch() {
        assert_eq!(
            check(VECTOR, &[key("other-secret")], T),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                Some(VECTOR.as_bytes()),
                br#"{"test":"datA"}"#,
                &[key("test-secret")],
                at(T)
            ),
            Err(SignatureError::Mismatch)
        );
        // No secret at all matches nothing.
        assert_eq!(check(VECTOR, &[], T), Err(SignatureError::Mismatch));
        // A forged header is a mismatch even when its timestamp is stale: stale counts only
        // genuine deliveries.
        assert_eq!(
            check(VECTOR, &[key("other-secret")], T + 10_000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn either_of_two_secrets_matches_during_a_rotation() {
        let old_new = [key("old-secret"), key("test-secret")];
        let new_old = [key("test-secret"), key("old-secret")];
        assert_eq!(check(VECTOR, &old_new, T), Ok(()));
        assert_eq!(check(VECTOR, &new_old, T), Ok(()));
        let by_old = sign("old-secret", T, BODY);
        assert_eq!(check(&by_old, &old_new, T), Ok(()));
        assert_eq!(
            check(&by_old, &[key("test-secret")], T),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn spaces_several_signatures_and_unknown_keys_are_tolerated() {
        let keys = [key("test-secret")];
        let hex = VECTOR.split("v1=").nth(1).unwrap();
        let wrong = "0".repeat(64);
        for header in [
            format!(" t = {T} , v1 = {hex} "),
            format!("v1={wrong},t={T},v1={hex}"),
            format!("t={T},v0=abc,v1={},scheme=x", hex.to_uppercase()),
        ] {
            assert_eq!(check(&header, &keys, T), Ok(()), "{header}");
        }
    }

    #[test]
    fn garbage_headers_are_malformed_and_never_panic() {
        let keys = [key("test-secret")];
        let hex = VECTOR.split("v1=").nth(1).unwrap();
        for header in [
            String::new(),
            "garbage".into(),
            format!("v1={hex}"),
            format!("t={T}"),
            format!("t={T},v1="),
            format!("t={T},v1={}", &hex[..63]),
            format!("t={T},v1={hex}0"),
            format!("t={T},v1={}zz", &hex[..62]),
            format!("t=,v1={hex}"),
            format!("t=-1,v1={hex}"),
            format!("t=+{T},v1={hex}"),
            format!("t=1.5,v1={hex}"),
            format!("t=99999999999999999999,v1={hex}"),
            format!("t={T},t={T},v1={hex}"),
            format!("t={T},,v1={hex}"),
            format!("t={T},=x,v1={hex}"),
            format!("t={T};v1={hex}"),
            format!("t={T},{}", vec![format!("v1={hex}"); 9].join(",")),
            format!("t={T},v1={hex},x={}", "a".repeat(2000)),
            format!("t={T},v1=é{}", &hex[2..]),
        ] {
            assert_eq!(
                check(&header, &keys, T),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
        assert_eq!(
            verify(Some(b"t=1,v1=\xff\xfe"), BODY, &keys, at(T)),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(None, BODY, &keys, at(T)),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn freshness_handles_absurd_times() {
        assert_eq!(fresh(u64::MAX, at(T)), Err(SignatureError::Future));
        assert_eq!(fresh(0, at(T)), Err(SignatureError::Stale));
        assert_eq!(fresh(0, at(u64::MAX / 2)), Err(SignatureError::Stale));
        // A clock before 1970 reads as 0.
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1000);
        assert_eq!(fresh(0, before), Ok(()));
        assert_eq!(fresh(T, before), Err(SignatureError::Future));
        // A signature with t = u64::MAX verifies, then is refused as future, not a panic.
        let far = sign("test-secret", u64::MAX, BODY);
        assert_eq!(
            check(&far, &[key("test-secret")], T),
            Err(SignatureError::Future)
        );
    }
}
