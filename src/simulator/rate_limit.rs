//! Qonto's per-IP rate limits as real limits: at most N requests in any rolling window of a given
//! length, for each configured window (Qonto documents two: 1,000 requests per 10 s and 10,000 per
//! 10 min, FACTS.md). A request that would put either window over its limit is refused with a 429
//! and does not count; admitted requests count in every window.
//!
//! The windows are exact sliding logs, not token buckets: the limiter keeps the arrival time of
//! every admitted request still inside a window, so "at most N in any window of length W" holds
//! for every window position, which is what tests of the exporter check from the request log.

use std::collections::VecDeque;
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

/// The rate limits the simulator enforces on API requests (every request but `/oauth2/*`, which
/// Qonto serves from another host, `oauth.qonto.com`, and `/_sim/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Every window must have room for a request to be admitted.
    pub windows: Vec<RateWindow>,
    /// Send `Retry-After` (whole seconds until the refusing window has room) with the 429.
    /// Qonto documents none, so the default is not to.
    pub retry_after: bool,
}

impl RateLimits {
    /// Qonto's documented limits, without `Retry-After`.
    pub fn qonto() -> RateLimits {
        RateLimits {
            windows: vec![RateWindow::QONTO_SHORT, RateWindow::QONTO_LONG],
            retry_after: false,
        }
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted,
    /// Refused by `window`; it has room again in `wait`.
    Refused {
        window: RateWindow,
        wait: Duration,
    },
}

/// The sliding logs, one per window. Times are offsets from the simulator's start on the
/// monotonic clock, and must be passed in non-decreasing order (the caller reads the clock under
/// the same lock).
pub(crate) struct Limiter {
    windows: Vec<(RateWindow, VecDeque<Duration>)>,
}

impl Limiter {
    pub(crate) fn new(limits: &RateLimits) -> Limiter {
        Limiter {
            windows: limits
                .windows
                .iter()
                .map(|w| (*w, VecDeque::new()))
                .collect(),
        }
    }

    /// Admits a request arriving at `now` if every window has fewer than `limit` admitted
    /// requests in `(now - period, now]`, and then counts it in all of them.
    pub(crate) fn admit(&mut self, now: Duration) -> Admission {
        let mut refused: Option<(RateWindow, Duration)> = None;
        for (w, times) in &mut self.windows {
            while times
                .front()
                .is_some_and(|&t| now.saturating_sub(t) >= w.period)
            {
                times.pop_front();
            }
            if times.len() >= w.limit as usize {
                // The oldest admitted request leaves the window at `oldest + period`.
                let wait = times
                    .front()
                    .map_or(Duration::ZERO, |&t| (t + w.period).saturating_sub(now));
                if refused.is_none_or(|(_, longest)| wait > longest) {
                    refused = Some((*w, wait));
                }
            }
        }
        if let Some((window, wait)) = refused {
            return Admission::Refused { window, wait };
        }
        for (_, times) in &mut self.windows {
            times.push_back(now);
        }
        Admission::Admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limiter(windows: &[&str]) -> Limiter {
        Limiter::new(&RateLimits {
            windows: windows.iter().map(|w| w.parse().unwrap()).collect(),
            retry_after: false,
        })
    }

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
                period: ms(250)
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

    #[test]
    fn a_window_holds_at_most_its_limit_and_rolls() {
        let mut l = limiter(&["3/100ms"]);
        for t in [0, 10, 20] {
            assert_eq!(l.admit(ms(t)), Admission::Admitted, "t={t}");
        }
        // Full until the first request is 100 ms old; a refusal does not count.
        assert_eq!(
            l.admit(ms(99)),
            Admission::Refused {
                window: "3/100ms".parse().unwrap(),
                wait: ms(1)
            }
        );
        assert_eq!(l.admit(ms(100)), Admission::Admitted);
        assert!(matches!(l.admit(ms(109)), Admission::Refused { wait, .. } if wait == ms(1)));
        assert_eq!(l.admit(ms(110)), Admission::Admitted);
        assert_eq!(l.admit(ms(120)), Admission::Admitted);
        assert!(matches!(l.admit(ms(120)), Admission::Refused { .. }));
    }

    #[test]
    fn both_windows_must_have_room() {
        // 2 per 10 ms and 5 per 100 ms: the short window paces, the long one caps.
        let mut l = limiter(&["2/10ms", "5/100ms"]);
        let admitted: Vec<u64> = (0..100)
            .filter(|&t| l.admit(ms(t)) == Admission::Admitted)
            .collect();
        assert_eq!(admitted, [0, 1, 10, 11, 20]);
        let refused = l.admit(ms(99));
        assert_eq!(
            refused,
            Admission::Refused {
                window: "5/100ms".parse().unwrap(),
                wait: ms(1)
            }
        );
        assert_eq!(l.admit(ms(100)), Admission::Admitted);
        // At 101 the long window has room (0 and 1 left it), the short one has 100 only.
        assert_eq!(l.admit(ms(101)), Admission::Admitted);
        assert!(matches!(
            l.admit(ms(102)),
            Admission::Refused { window, .. } if window.limit == 2
        ));
    }

    #[test]
    fn the_refusal_names_the_longest_wait() {
        let mut l = limiter(&["1/10ms", "1/1s"]);
        assert_eq!(l.admit(ms(0)), Admission::Admitted);
        assert_eq!(
            l.admit(ms(5)),
            Admission::Refused {
                window: RateWindow {
                    limit: 1,
                    period: ms(1000)
                },
                wait: ms(995)
            }
        );
    }
}
