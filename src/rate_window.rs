//! One rolling rate-limit window, `N/DURATION`: at most `limit` requests in any interval of length
//! `period`. Qonto documents two per IP address (1,000 requests per 10 s and 10,000 per 10 min,
//! FACTS.md); the simulator enforces them (`simulate --rate-limit-short/--rate-limit-long`) and the
//! exporter's budget takes its share of them (`--qonto.rate-limit-short/--qonto.rate-limit-long`,
//! [`crate::qonto::budget`]). Shared by both, so neither imports the other.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One rolling window: at most `limit` requests in any interval of length `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    pub limit: u32,
    pub period: Duration,
}

impl RateWindow {
    /// Qonto's short window: 1,000 requests per 10 seconds.
    pub const QONTO_SHORT: RateWindow = RateWindow {
        limit: 1000,
        period: Duration::from_secs(10),
    };
    /// Qonto's long window: 10,000 requests per 10 minutes.
    pub const QONTO_LONG: RateWindow = RateWindow {
        limit: 10_000,
        period: Duration::from_secs(600),
    };
}

impl FromStr for RateWindow {
    type Err = String;

    /// `N/DURATION`, e.g. `1000/10s`, `10000/10m`, `50/500ms`: N ≥ 1, a positive humantime duration.
    fn from_str(s: &str) -> Result<RateWindow, String> {
        let expected = "expected N/DURATION such as 1000/10s";
        let (n, d) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: {expected}"))?;
        let limit = match n.trim().parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(format!(
                    "{s:?}: the count must be an integer ≥ 1; {expected}"
                ));
            }
        };
        let period = match humantime::parse_duration(d.trim()) {
            Ok(p) if !p.is_zero() => p,
            Ok(_) => return Err(format!("{s:?}: the duration must be positive; {expected}")),
            Err(e) => return Err(format!("{s:?}: {e}; {expected}")),
        };
        Ok(RateWindow { limit, period })
    }
}

impl fmt::Display for RateWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.limit,
            humantime::format_duration(self.period)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_windows() {
        assert_eq!(
            "1000/10s".parse::<RateWindow>(),
            Ok(RateWindow::QONTO_SHORT)
        );
        assert_eq!(
            "10000/10m".parse::<RateWindow>(),
            Ok(RateWindow::QONTO_LONG)
        );
        assert_eq!(
            " 5 / 250ms".parse::<RateWindow>(),
            Ok(RateWindow {
                limit: 5,
                period: Duration::from_millis(250)
            })
        );
        assert_eq!(RateWindow::QONTO_LONG.to_string(), "10000/10m");
        assert_eq!(RateWindow::QONTO_SHORT.to_string(), "1000/10s");
        for bad in [
            "", "1000", "0/10s", "-1/10s", "x/10s", "10/0s", "10/", "10/soon", "/10s",
        ] {
            assert!(bad.parse::<RateWindow>().is_err(), "{bad:?}");
        }
    }
}
