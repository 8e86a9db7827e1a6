//! Retries only where they are safe, and never more than a budget allows.
//!
//! Safe: the upstream accepted no byte of the request (the connection was refused), or it said
//! plainly that it is only momentarily unable (a model still loading: 503 "Loading model"; 429
//! with `Retry-After`). Never once an answer has begun to stream. Each wait is full-jitter
//! exponential backoff (`random(0, min(cap, base · 2^attempt))`), at least what the upstream's
//! `Retry-After` asked, and never past the request's own deadline.
//!
//! The budget keeps retries from multiplying an overload: each first attempt deposits `ratio`
//! of a retry and the budget refills `min_per_sec` a second; a retry spends one whole token.
//! With ratio 0.2, retries add at most about 20 % to the upstream's load however bad it gets.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryOptions {
    /// Retries after the first attempt (0: never retry).
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// Retry tokens each first attempt deposits.
    pub ratio: f64,
    /// Retry tokens the budget gains each second, however few requests come.
    pub min_per_sec: f64,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            attempts: 2,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            ratio: 0.2,
            min_per_sec: 1.0,
        }
    }
}

/// The retry budget: a token bucket filled by requests and by time.
#[derive(Debug)]
pub struct Budget {
    options: RetryOptions,
    tokens: f64,
    at: Instant,
}

/// The most tokens the budget holds: ten seconds' worth at the floor, plus a hundred requests'
/// deposits, so a quiet hour does not bank a storm of retries.
fn capacity(o: &RetryOptions) -> f64 {
    o.min_per_sec * 10.0 + o.ratio * 100.0
}

impl Budget {
    pub fn new(options: RetryOptions) -> Budget {
        Budget {
            options,
            // Ten seconds of the floor to start with, as after a quiet spell: a fresh gate can
            // ride out its model's first loading answers.
            tokens: options.min_per_sec * 10.0,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + secs * self.options.min_per_sec).min(capacity(&self.options));
    }

    /// A first attempt: deposits its share of a retry.
    pub fn deposit(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + self.options.ratio).min(capacity(&self.options));
    }

    /// Takes a retry token if there is one.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The wait before retry number `attempt` (0 for the first retry): full jitter under
    /// `min(cap, base · 2^attempt)`, and no less than `at_least` (the upstream's Retry-After).
    pub fn backoff(&mut self, attempt: u32, at_least: Duration) -> Duration {
        let o = &self.options;
        let ceiling = o
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(o.cap);
        let draw: f64 = rand::Rng::gen(&mut rand::thread_rng());
        ceiling.mul_f64(draw).max(at_least)
    }
}

/// Parses `Retry-After` as delay-seconds; an HTTP date or garbage is ignored (never trusted
/// beyond the request's own deadline either way).
pub fn retry_after(value: Option<&http::HeaderValue>) -> Option<Duration> {
    let secs: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ratio: f64, min_per_sec: f64) -> RetryOptions {
        RetryOptions {
            ratio,
            min_per_sec,
            ..RetryOptions::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_at_most_the_ratio_of_requests_plus_the_floor() {
        let mut b = Budget::new(opts(0.2, 0.0));
        let now = Instant::now();
        let mut granted = 0;
        // Every request fails and wants a retry: 1000 requests buy about 200 retries.
        for _ in 0..1000 {
            b.deposit(now);
            if b.withdraw(now) {
                granted += 1;
            }
        }
        assert!((195..=200).contains(&granted), "{granted}");
        // No traffic and no floor: nothing to spend.
        let mut b = Budget::new(opts(0.2, 0.0));
        assert!(!b.withdraw(now));
        // The floor alone: ten to start with, then one a second.
        let mut b = Budget::new(opts(0.0, 1.0));
        for _ in 0..10 {
            assert!(b.withdraw(now));
        }
        assert!(!b.withdraw(now));
        tokio::time::advance(Duration::from_secs(3)).await;
        let later = Instant::now();
        assert!(b.withdraw(later) && b.withdraw(later) && b.withdraw(later));
        assert!(!b.withdraw(later));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_hour_does_not_bank_a_storm() {
        let mut b = Budget::new(opts(0.2, 1.0));
        tokio::time::advance(Duration::from_secs(3600)).await;
        let now = Instant::now();
        let mut granted = 0;
        while b.withdraw(now) {
            granted += 1;
        }
        assert_eq!(
            granted, 30,
            "10 s of floor + 100 requests' deposits at most"
        );
    }

    #[test]
    fn backoff_is_full_jitter_under_the_capped_exponential_and_honours_retry_after() {
        let mut b = Budget::new(RetryOptions::default());
        for attempt in 0..8 {
            let ceiling =
                Duration::from_millis(100 * 2u64.pow(attempt)).min(Duration::from_secs(2));
            let waits: Vec<Duration> = (0..200)
                .map(|_| b.backoff(attempt, Duration::ZERO))
                .collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "{attempt}");
            assert!(waits.iter().any(|w| *w < ceiling / 4), "jitter reaches low");
            assert!(
                waits.iter().any(|w| *w > ceiling * 3 / 4),
                "jitter reaches high"
            );
        }
        assert_eq!(b.backoff(0, Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_takes_seconds_and_ignores_the_rest() {
        let v = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(retry_after(Some(&v("3"))), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(Some(&v("999999999999"))),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(retry_after(Some(&v("Wed, 21 Oct 2015 07:28:00 GMT"))), None);
        assert_eq!(retry_after(Some(&v("-1"))), None);
        assert_eq!(retry_after(None), None);
    }
}
