//! One socket's rate limit (docs/DESIGN.md, "Fairness"): a token bucket per socket, one
//! token a frame.

use tokio::time::Instant;

/// One socket's rate limit, a token bucket: `burst` tokens to start with, `rate_per_s` more
/// each second up to `burst`, one taken by each frame.
#[derive(Debug)]
pub(crate) struct RateLimit {
    tokens: f64,
    burst: f64,
    rate_per_s: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(rate_per_s: u32, burst: u32, now: Instant) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit { tokens: burst, burst, rate_per_s: f64::from(rate_per_s), last: now }
    }

    /// Takes a token at `now` if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_rate_limit_allows_a_burst_then_its_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10, 5, start);
        assert_eq!((0..8).filter(|_| limit.take(start)).count(), 5, "the burst");
        // 10 a second: one more every 100 ms, never more than the burst after a pause.
        assert!(!limit.take(start + Duration::from_millis(50)));
        assert!(limit.take(start + Duration::from_millis(110)));
        assert!(!limit.take(start + Duration::from_millis(120)));
        let later = start + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| limit.take(later)).count(), 5, "refilled to the burst only");
        // A clock read out of order takes nothing back.
        assert!(!limit.take(start));
    }
}
