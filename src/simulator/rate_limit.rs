//! Qonto's per-IP rate limits as real limits: at most N requests in any rolling window of a given
//! length, for each configured window (Qonto documents two: 1,000 requests per 10 s and 10,000 per
//! 10 min, FACTS.md). A request that would put either window over its limit is refused with a 429
//! and does not count; admitted requests count in every window.
//!
//! The windows are exact sliding logs, not token buckets: the limiter keeps the arrival time of
//! every admitted request still inside a window, so "at most N in any window of length W" holds
//! for every window position, which is what tests of the exporter check from the request log.

use std::collections::VecDeque;
use std::time::Duration;

pub use crate::rate_window::RateWindow;

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
