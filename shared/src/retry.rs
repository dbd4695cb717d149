//! Retry policy: exponential backoff with full jitter, bounded by a time budget.

use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff with full jitter ("AWS Architecture Blog: Exponential Backoff And
/// Jitter"): attempt *n* sleeps a random time in `[0, min(cap, base * 2^n)]`, so that many
/// clients retrying at once do not hit the service in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// How many delays have been handed out.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt += 1;
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// A point in time after which no new attempt starts.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    /// The invocation deadline Lambda gives (`Context::deadline`, milliseconds since the Unix
    /// epoch), less `margin`: the time kept to answer (report failures) before Lambda kills
    /// the invocation.
    pub fn from_epoch_ms(deadline_ms: u64, margin: Duration) -> Self {
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        Self::after(left.saturating_sub(margin))
    }

    /// Time left, zero when passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }

    /// Sleeps `delay`, or until the deadline, whichever is sooner; `false` if no time is left
    /// for another attempt afterwards.
    pub async fn sleep(&self, delay: Duration) -> bool {
        let d = delay.min(self.remaining());
        tokio::time::sleep(d).await;
        !self.expired()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_growing_ceiling_and_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        for n in 0..20u32 {
            let ceiling =
                Duration::from_millis(10 * (1u64 << n.min(16))).min(Duration::from_millis(100));
            assert!(b.next_delay() <= ceiling);
        }
        assert_eq!(b.attempts(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_cuts_sleep_short() {
        let d = Deadline::after(Duration::from_millis(50));
        let start = Instant::now();
        assert!(!d.sleep(Duration::from_secs(10)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }
}
