//! Spec-valid variations of what the API writes, each off by default: other ISO 8601 forms of
//! `expiration_date`, other letter cases of the enum strings, currencies with 0 and 3 decimals,
//! links whose values have the wrong JSON type, and terminal links that move.
//!
//! The spec (`list-payment-links.openapi.yaml`) promises an "ISO 8601 date-time string", "a decimal
//! string" and an "ISO 4217 currency code", and shows one spelling of each; the real API may write
//! any spelling those words allow. An exporter that reads only the example's spelling must be
//! caught here, not in production.
//!
//! Which link gets which variation is a pure function of the seed and the link's id (a SplitMix64
//! hash with one salt per choice), so the same seed gives the same output whatever the order of
//! requests, and a link keeps its spelling from one request to the next, as a stored record would.
//! The shares are fractions of links, drawn independently per choice.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use time::{OffsetDateTime, UtcOffset};

use super::data::{Currency, Link, Mix, Status};
use super::faults::InvalidKind;
use super::render::rfc3339;

/// The forms `expiration_date` (and `created_at`) can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateForm {
    /// `2030-01-01T00:00:00Z`: RFC 3339 in UTC to the second, the reference page's example.
    Utc,
    /// `2030-01-01T01:00:00+01:00`: RFC 3339 with a numeric offset (one of +01:00, +02:00,
    /// -05:00, +05:30, chosen per link).
    Offset,
    /// `2030-01-01T01:00:00+0100`: an ISO 8601 offset without the colon.
    OffsetNoColon,
    /// `2030-01-01T00:00:00`: ISO 8601 without an offset. The simulator writes UTC's wall
    /// clock, so a reader that takes such a date as UTC gets the instant the simulator meant.
    NoOffset,
    /// `2030-01-01T00:00Z`: without seconds; the instant written is truncated to the minute.
    NoSeconds,
    /// `2030-01-01T00:00:00.250Z`: with milliseconds (chosen per link), as Rails writes times.
    Fractional,
    /// `null` for paid and canceled links (other links are written in `Utc`). Beyond the spec,
    /// which declares `expiration_date` a required string; only open links need the date.
    Null,
    /// No `expiration_date` key at all for paid and canceled links (others in `Utc`). Beyond the
    /// spec, as `Null` is.
    Absent,
}

impl DateForm {
    /// Every form, in the order of the flag's help.
    pub const ALL: [DateForm; 8] = [
        DateForm::Utc,
        DateForm::Offset,
        DateForm::OffsetNoColon,
        DateForm::NoOffset,
        DateForm::NoSeconds,
        DateForm::Fractional,
        DateForm::Null,
        DateForm::Absent,
    ];

    /// The name used by `simulate --date-forms`.
    pub fn as_str(self) -> &'static str {
        match self {
            DateForm::Utc => "utc",
            DateForm::Offset => "offset",
            DateForm::OffsetNoColon => "offset-no-colon",
            DateForm::NoOffset => "no-offset",
            DateForm::NoSeconds => "no-seconds",
            DateForm::Fractional => "fractional",
            DateForm::Null => "null",
            DateForm::Absent => "absent",
        }
    }

    /// True for the forms that write no date (for paid and canceled links only).
    pub fn is_dateless(self) -> bool {
        matches!(self, DateForm::Null | DateForm::Absent)
    }
}

impl fmt::Display for DateForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DateForm {
    type Err = String;

    fn from_str(s: &str) -> Result<DateForm, String> {
        DateForm::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = DateForm::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown date form {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The switches, as `SimConfig::variants` and the flags of `simulate` set them. The default is
/// the API's example spelling everywhere and terminal links that never change.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecVariants {
    /// Forms of the dates; each link is written in one of them, chosen by its id. Empty means
    /// `[Utc]`. List `Utc` among others to keep a share of links in the example's form.
    pub date_forms: Vec<DateForm>,
    /// Share (0–1) of links whose `status` is written in another letter case (`OPEN`, `Paid`);
    /// the same share, drawn independently, for `amount.currency` (`eur`, `Eur`) and for
    /// `resource_type` (`invoice`, `BASKET`).
    pub other_case_share: f64,
    /// Share of links invoiced in JPY (no decimals, `"1500"`) or KWD (three, `"12.345"`), half
    /// each, instead of the currency drawn for them. Applies to generated and created links.
    pub minor_unit_currency_share: f64,
    /// Share of links written with an unusable value on every request, of a kind chosen per link
    /// among `invalid_link_kinds` (e.g. [`InvalidKind::AmountNumber`]: `"value": 12.5`).
    pub invalid_link_share: f64,
    /// Kinds of unusable values of `invalid_link_share`; empty means
    /// `[AmountNumber]`.
    pub invalid_link_kinds: Vec<InvalidKind>,
    /// Terminal links that move at each evolution step ([`super::Mutation::Step`]): a reusable
    /// paid link reopens, a canceled link becomes expired, or a paid, expired or canceled link
    /// disappears, in turn drawn from the seed. The explicit mutations `Reopen`, `Recast` and
    /// `Remove` do the same on demand.
    pub terminal_moves_per_step: usize,
}

impl Default for SpecVariants {
    fn default() -> SpecVariants {
        SpecVariants {
            date_forms: vec![DateForm::Utc],
            other_case_share: 0.0,
            minor_unit_currency_share: 0.0,
            invalid_link_share: 0.0,
            invalid_link_kinds: vec![InvalidKind::AmountNumber],
            terminal_moves_per_step: 0,
        }
    }
}

/// Salts of the per-link choices, one per choice, so that they are independent.
mod salt {
    pub(super) const DATE_FORM: u64 = 0xD47E_F04D;
    pub(super) const DATE_DETAIL: u64 = 0xD47E_DE7A;
    pub(super) const STATUS_CASE: u64 = 0x57A7_05CA;
    pub(super) const CURRENCY_CASE: u64 = 0xC0C0_CA5E;
    pub(super) const TYPE_CASE: u64 = 0x7E9E_CA5E;
    pub(super) const CURRENCY: u64 = 0xC0C0_0001;
    pub(super) const INVALID: u64 = 0xBAD0_11CC;
}

/// The variations of one simulated organisation: the switches and the seed they are drawn from.
#[derive(Debug, Clone)]
pub(crate) struct Variants {
    pub(crate) spec: SpecVariants,
    seed: u64,
}

/// Offsets of [`DateForm::Offset`] and [`DateForm::OffsetNoColon`], in minutes east of UTC.
const OFFSETS_MINUTES: [i32; 4] = [60, 120, -300, 330];

impl Variants {
    pub(crate) fn new(spec: SpecVariants, seed: u64) -> Variants {
        Variants { spec, seed }
    }

    /// A 64-bit hash of (seed, id, salt).
    fn roll(&self, id: u128, salt: u64) -> u64 {
        let mut m = Mix(self.seed ^ salt.rotate_left(32) ^ (id as u64) ^ ((id >> 64) as u64));
        m.next();
        m.next()
    }

    /// True for a share `share` of ids.
    fn chance(&self, id: u128, salt: u64, share: f64) -> bool {
        share > 0.0 && ((self.roll(id, salt) >> 11) as f64 / (1u64 << 53) as f64) < share
    }

    /// The currency a link of id `id` is invoiced in instead of `drawn`, if any.
    pub(crate) fn currency(&self, id: u128, drawn: Currency) -> Currency {
        if !self.chance(id, salt::CURRENCY, self.spec.minor_unit_currency_share) {
            return drawn;
        }
        if self.roll(id, salt::CURRENCY ^ 1) % 2 == 0 {
            Currency::Jpy
        } else {
            Currency::Kwd
        }
    }

    /// The form this link's dates are written in.
    pub(crate) fn date_form(&self, link: &Link) -> DateForm {
        let forms = &self.spec.date_forms;
        match forms.len() {
            0 => return DateForm::Utc,
            1 if !forms[0].is_dateless() => return forms[0],
            _ => {}
        }
        let form = forms[(self.roll(link.id, salt::DATE_FORM) % forms.len() as u64) as usize];
        if form.is_dateless() && !matches!(link.status, Status::Paid | Status::Canceled) {
            DateForm::Utc
        } else {
            form
        }
    }

    /// True when this link's `expiration_date` is null or absent: such links sort as SQL sorts
    /// NULLs, after every date ascending and before every date descending.
    pub(crate) fn dateless(&self, link: &Link) -> bool {
        // Called by every comparison of the expiration sort: skip the hash when it cannot be.
        self.any_dateless() && self.date_form(link).is_dateless()
    }

    /// True when some link can be dateless, so a change of status can move a link in the
    /// expiration order.
    pub(crate) fn any_dateless(&self) -> bool {
        self.spec.date_forms.iter().any(|f| f.is_dateless())
    }

    /// `unix` written in this link's date form; `None` for a dateless link.
    pub(crate) fn date(&self, link: &Link, unix: i64) -> Option<String> {
        let form = self.date_form(link);
        let detail = self.roll(link.id, salt::DATE_DETAIL);
        format_date(form, unix, detail)
    }

    /// `created_at`: the link's date form, or `Utc` when that form writes no date.
    pub(crate) fn created_at(&self, link: &Link) -> String {
        let form = match self.date_form(link) {
            f if f.is_dateless() => DateForm::Utc,
            f => f,
        };
        let detail = self.roll(link.id, salt::DATE_DETAIL);
        format_date(form, link.created_at, detail).unwrap_or_default()
    }

    /// The status as this link writes it.
    pub(crate) fn status(&self, link: &Link) -> Cow<'static, str> {
        let s = link.status.as_str();
        if !self.chance(link.id, salt::STATUS_CASE, self.spec.other_case_share) {
            return Cow::Borrowed(s);
        }
        Cow::Owned(if self.roll(link.id, salt::STATUS_CASE ^ 1) % 2 == 0 {
            s.to_ascii_uppercase()
        } else {
            title_case(s)
        })
    }

    /// The currency code as this link writes it (its items' prices use the same spelling).
    pub(crate) fn currency_code(&self, link: &Link) -> Cow<'static, str> {
        let c = link.currency.as_str();
        if !self.chance(link.id, salt::CURRENCY_CASE, self.spec.other_case_share) {
            return Cow::Borrowed(c);
        }
        Cow::Owned(if self.roll(link.id, salt::CURRENCY_CASE ^ 1) % 2 == 0 {
            c.to_ascii_lowercase()
        } else {
            title_case(&c.to_ascii_lowercase())
        })
    }

    /// The resource type as this link writes it.
    pub(crate) fn resource_type(&self, link: &Link, canonical: &'static str) -> Cow<'static, str> {
        if !self.chance(link.id, salt::TYPE_CASE, self.spec.other_case_share) {
            return Cow::Borrowed(canonical);
        }
        Cow::Owned(if self.roll(link.id, salt::TYPE_CASE ^ 1) % 2 == 0 {
            canonical.to_ascii_lowercase()
        } else {
            canonical.to_ascii_uppercase()
        })
    }

    /// The unusable value this link is written with on every request, if any.
    pub(crate) fn invalid(&self, link: &Link) -> Option<InvalidKind> {
        if !self.chance(link.id, salt::INVALID, self.spec.invalid_link_share) {
            return None;
        }
        let kinds = &self.spec.invalid_link_kinds;
        if kinds.is_empty() {
            return Some(InvalidKind::AmountNumber);
        }
        Some(kinds[(self.roll(link.id, salt::INVALID ^ 1) % kinds.len() as u64) as usize])
    }
}

/// `open` → `Open`.
fn title_case(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// Writes `unix` in `form`; `detail` picks the offset or the milliseconds. `None` for the
/// dateless forms.
pub(crate) fn format_date(form: DateForm, unix: i64, detail: u64) -> Option<String> {
    let utc = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let wall = |t: OffsetDateTime| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    };
    let secs = |t: OffsetDateTime| format!("{}:{:02}", wall(t), t.second());
    let offset = || {
        let minutes = OFFSETS_MINUTES[(detail % OFFSETS_MINUTES.len() as u64) as usize];
        let off = UtcOffset::from_whole_seconds(minutes * 60).unwrap_or(UtcOffset::UTC);
        let sign = if minutes < 0 { '-' } else { '+' };
        let (h, m) = (minutes.abs() / 60, minutes.abs() % 60);
        (utc.to_offset(off), sign, h, m)
    };
    Some(match form {
        DateForm::Utc => rfc3339(unix),
        DateForm::Offset => {
            let (t, sign, h, m) = offset();
            format!("{}{sign}{h:02}:{m:02}", secs(t))
        }
        DateForm::OffsetNoColon => {
            let (t, sign, h, m) = offset();
            format!("{}{sign}{h:02}{m:02}", secs(t))
        }
        DateForm::NoOffset => secs(utc),
        DateForm::NoSeconds => format!("{}Z", wall(utc)),
        DateForm::Fractional => format!("{}.{:03}Z", secs(utc), detail % 1000),
        DateForm::Null | DateForm::Absent => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600 + 3 * 3600 + 4 * 60 + 5; // 2026-01-01T03:04:05Z

    #[test]
    fn every_form_is_written_as_documented() {
        let f = |form, detail| format_date(form, T, detail);
        assert_eq!(f(DateForm::Utc, 0).unwrap(), "2026-01-01T03:04:05Z");
        assert_eq!(f(DateForm::Offset, 0).unwrap(), "2026-01-01T04:04:05+01:00");
        assert_eq!(f(DateForm::Offset, 2).unwrap(), "2025-12-31T22:04:05-05:00");
        assert_eq!(
            f(DateForm::OffsetNoColon, 3).unwrap(),
            "2026-01-01T08:34:05+0530"
        );
        assert_eq!(f(DateForm::NoOffset, 0).unwrap(), "2026-01-01T03:04:05");
        assert_eq!(f(DateForm::NoSeconds, 0).unwrap(), "2026-01-01T03:04Z");
        assert_eq!(
            f(DateForm::Fractional, 1250).unwrap(),
            "2026-01-01T03:04:05.250Z"
        );
        assert_eq!(f(DateForm::Null, 0), None);
        assert_eq!(f(DateForm::Absent, 0), None);
        for form in DateForm::ALL {
            assert_eq!(form.as_str().parse::<DateForm>(), Ok(form));
        }
        assert!("rfc3339".parse::<DateForm>().is_err());
    }

    #[test]
    fn offset_forms_name_the_same_instant() {
        use time::format_description::well_known::Rfc3339;
        for detail in 0..4 {
            let s = format_date(DateForm::Offset, T, detail).unwrap();
            let t = OffsetDateTime::parse(&s, &Rfc3339).unwrap();
            assert_eq!(t.unix_timestamp(), T, "{s}");
        }
    }

    #[test]
    fn shares_are_roughly_kept_and_fixed_by_the_seed() {
        let v = Variants::new(
            SpecVariants {
                other_case_share: 0.25,
                ..SpecVariants::default()
            },
            7,
        );
        let hits = (0..10_000u128)
            .filter(|id| {
                v.chance(
                    id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    salt::STATUS_CASE,
                    0.25,
                )
            })
            .count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
        let again = Variants::new(v.spec.clone(), 7);
        let other = Variants::new(v.spec.clone(), 8);
        let rolls = |v: &Variants| (0..64u128).map(|i| v.roll(i, 1)).collect::<Vec<_>>();
        assert_eq!(rolls(&v), rolls(&again));
        assert_ne!(rolls(&v), rolls(&other));
        assert!(!v.chance(1, salt::INVALID, 0.0), "a zero share never fires");
    }
}
