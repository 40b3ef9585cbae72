//! Amounts written for people: each currency with its ISO 4217 minor units, thousands grouped.
//!
//! The landing page shows sums of money to someone who reads invoices: `6,039.00 EUR`,
//! `1,500 JPY`, `12.345 KWD`. How many decimals a currency has comes from ISO 4217's minor
//! units, through the `iso_currency` crate (0 for JPY, KRW, ISK…; 3 for KWD, BHD, TND…; 4 for
//! CLF and UYW). A code ISO 4217 does not know (the API's labels are open: a currency added
//! tomorrow shows up without a release), or one without minor units (XAU, XDR…), is written
//! with 2.
//!
//! Formatting never rounds: a sum with more decimals than its currency's minor units (an API
//! that sends `10.005` EUR) is written with all of them, `10.005 EUR`, so no money disappears
//! on the way to the screen. The arithmetic stays in exact decimals; no `f64` is involved.

use rust_decimal::Decimal;

/// Decimals written for a currency whose minor units ISO 4217 does not give.
pub const DEFAULT_MINOR_UNITS: u32 = 2;

/// ISO 4217 minor units of `currency` (an alphabetic code, e.g. `EUR`); see the module docs
/// for codes without them.
pub fn minor_units(currency: &str) -> u32 {
    iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .map_or(DEFAULT_MINOR_UNITS, u32::from)
}

/// `amount` with at least `currency`'s minor units of decimals (more if it has more: never
/// rounded), thousands grouped with commas, then the currency code: `6,039.00 EUR`.
pub fn format_amount(amount: Decimal, currency: &str) -> String {
    format!(
        "{} {currency}",
        format_decimal(amount, minor_units(currency))
    )
}

/// `value` with at least `decimals` decimals (all of its own if it has more), thousands
/// grouped with commas: `format_decimal(6039.into(), 2)` is `6,039.00`.
pub fn format_decimal(value: Decimal, decimals: u32) -> String {
    // `normalize` drops trailing zeros (and the sign of zero); `Display` writes every
    // significant digit in plain notation, never an exponent.
    let text = value.normalize().to_string();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut out = String::with_capacity(text.len() + text.len() / 3 + decimals as usize + 2);
    if negative {
        out.push('-');
    }
    out.push_str(&group_thousands(int));
    let width = frac.len().max(decimals as usize);
    if width > 0 {
        out.push('.');
        out.push_str(frac);
        out.extend(std::iter::repeat_n('0', width - frac.len()));
    }
    out
}

/// A count with thousands grouped: `20,000`.
pub fn format_count(n: u64) -> String {
    group_thousands(&n.to_string())
}

/// Inserts a comma every three digits from the right of a string of ASCII digits.
fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn minor_units_follow_iso_4217() {
        for code in [
            "JPY", "KRW", "CLP", "ISK", "VND", "XAF", "XOF", "XPF", "UGX", "PYG", "RWF", "KMF",
            "GNF", "BIF", "DJF", "VUV",
        ] {
            assert_eq!(minor_units(code), 0, "{code}");
        }
        for code in ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"] {
            assert_eq!(minor_units(code), 3, "{code}");
        }
        for code in ["CLF", "UYW"] {
            assert_eq!(minor_units(code), 4, "{code}");
        }
        for code in ["EUR", "USD", "GBP", "CHF", "MRU"] {
            assert_eq!(minor_units(code), 2, "{code}");
        }
        // Not in ISO 4217, or without minor units, or not an upper-case code: 2.
        for code in ["ZZZ", "XAU", "XDR", "", "eur", "EURO"] {
            assert_eq!(minor_units(code), DEFAULT_MINOR_UNITS, "{code:?}");
        }
    }

    #[test]
    fn amounts_as_a_finance_reader_expects() {
        assert_eq!(format_amount(d("6039"), "EUR"), "6,039.00 EUR");
        assert_eq!(format_amount(d("6039.5"), "EUR"), "6,039.50 EUR");
        assert_eq!(format_amount(d("0"), "EUR"), "0.00 EUR");
        assert_eq!(format_amount(d("0.00"), "EUR"), "0.00 EUR");
        assert_eq!(format_amount(d("1500"), "JPY"), "1,500 JPY");
        assert_eq!(format_amount(d("1500.000"), "JPY"), "1,500 JPY");
        assert_eq!(format_amount(d("0"), "JPY"), "0 JPY");
        assert_eq!(format_amount(d("12.345"), "KWD"), "12.345 KWD");
        assert_eq!(format_amount(d("12.3"), "KWD"), "12.300 KWD");
        assert_eq!(
            format_amount(d("1234567.8912"), "CLF"),
            "1,234,567.8912 CLF"
        );
        assert_eq!(format_amount(d("999.99"), "USD"), "999.99 USD");
        assert_eq!(format_amount(d("1000"), "ZZZ"), "1,000.00 ZZZ");
    }

    #[test]
    fn never_rounds_money_away() {
        assert_eq!(format_amount(d("10.005"), "EUR"), "10.005 EUR");
        assert_eq!(format_amount(d("1500.5"), "JPY"), "1,500.5 JPY");
        assert_eq!(format_amount(d("0.0001"), "KWD"), "0.0001 KWD");
        // The largest decimal there is, every digit kept.
        assert_eq!(
            format_decimal(Decimal::MAX, 2),
            "79,228,162,514,264,337,593,543,950,335.00"
        );
        assert_eq!(
            format_decimal(d("0.0000000000000000000000000001"), 2),
            "0.0000000000000000000000000001"
        );
    }

    #[test]
    fn signs_and_grouping() {
        assert_eq!(format_decimal(d("-1234.5"), 2), "-1,234.50");
        assert_eq!(format_decimal(d("-0.00"), 2), "0.00");
        assert_eq!(format_decimal(d("100"), 0), "100");
        assert_eq!(format_decimal(d("100000"), 0), "100,000");
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_count(1000), "1,000");
        assert_eq!(format_count(20_000), "20,000");
        assert_eq!(format_count(u64::MAX), "18,446,744,073,709,551,615");
    }
}
