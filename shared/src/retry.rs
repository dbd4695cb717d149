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

/// How a retried operation is paced: full-jitter backoff from `base` to `cap`, for at most
/// `max_attempts` attempts (`None`: until the deadline).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff ceiling.
    pub base: Duration,
    /// Longest pause.
    pub cap: Duration,
    /// Attempts at most, the first included; `None` until the deadline.
    pub max_attempts: Option<u32>,
}

/// What one attempt leaves.
#[derive(Debug)]
pub enum Attempt<P, E> {
    /// Nothing left.
    Done,
    /// `P` is left for a reason that may pass (throttling, a timeout, a 5xx): try it again.
    Retry(P, E),
    /// `P` is left for a reason retrying cannot fix.
    Stop(P, E),
}

/// How a retried operation ended.
#[derive(Debug)]
pub struct Retried<P, E> {
    /// Entries sent again (the `Retries` metric).
    pub retried: usize,
    /// What was left undone, and why (`None`: all done).
    pub left: Option<(P, E)>,
}

/// The one retry loop of the AWS adapters: runs `attempt` on what is `pending`, then on what it
/// leaves, pausing per `policy`, each attempt bounded by `deadline` (an attempt still running
/// then is abandoned: its input is left, `timed_out` says why). `size` counts a pending set's
/// entries. The SDK's own retries are off for the calls this retries (see
/// `aws::attempt_once`), so the attempts made are exactly this loop's.
pub async fn retry<P, E, Fut>(
    policy: RetryPolicy,
    deadline: Deadline,
    mut pending: P,
    size: impl Fn(&P) -> usize,
    timed_out: impl Fn() -> E,
    mut attempt: impl FnMut(P) -> Fut,
) -> Retried<P, E>
where
    P: Clone,
    Fut: std::future::Future<Output = Attempt<P, E>>,
{
    let mut backoff = Backoff::new(policy.base, policy.cap);
    let mut retried = 0;
    loop {
        let outcome = tokio::time::timeout(deadline.remaining(), attempt(pending.clone()))
            .await
            .unwrap_or_else(|_| Attempt::Retry(pending, timed_out()));
        let (left, error) = match outcome {
            Attempt::Done => {
                return Retried {
                    retried,
                    left: None,
                };
            }
            Attempt::Stop(left, error) => {
                return Retried {
                    retried,
                    left: Some((left, error)),
                };
            }
            Attempt::Retry(left, error) => (left, error),
        };
        let made = backoff.attempts() + 1;
        if policy.max_attempts.is_some_and(|most| made >= most)
            || !deadline.sleep(backoff.next_delay()).await
        {
            return Retried {
                retried,
                left: Some((left, error)),
            };
        }
        retried += size(&left);
        pending = left;
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
    async fn retry_resends_only_what_is_left_until_done_or_the_limit() {
        let policy = RetryPolicy {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
            max_attempts: Some(3),
        };
        let deadline = Deadline::after(Duration::from_secs(30));
        // Each attempt does the first item of what it is given.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let done = retry(
            policy,
            deadline,
            vec![1, 2],
            Vec::len,
            || "late",
            |p: Vec<i32>| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    match &p[1..] {
                        [] => Attempt::Done,
                        rest => Attempt::Retry(rest.to_vec(), "busy"),
                    }
                }
            },
        )
        .await;
        let calls = calls.into_inner();
        assert!(done.left.is_none());
        assert_eq!((calls, done.retried), (2, 1));
        // Three attempts at most, then what is left is returned with its reason.
        let given_up = retry(
            policy,
            deadline,
            vec![1, 2, 3, 4, 5],
            Vec::len,
            || "late",
            |p: Vec<i32>| async move { Attempt::Retry(p[1..].to_vec(), "busy") },
        )
        .await;
        assert_eq!(given_up.left, Some((vec![4, 5], "busy")));
        // A permanent failure stops at once.
        let stopped = retry(
            policy,
            deadline,
            vec![1],
            Vec::len,
            || "late",
            |p: Vec<i32>| async move { Attempt::Stop(p, "refused") },
        )
        .await;
        assert_eq!(
            (stopped.retried, stopped.left),
            (0, Some((vec![1], "refused")))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_outlasting_the_deadline_is_abandoned_with_its_input() {
        let policy = RetryPolicy {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
            max_attempts: None,
        };
        let deadline = Deadline::after(Duration::from_secs(1));
        let out = retry(
            policy,
            deadline,
            vec![7],
            Vec::len,
            || "late",
            |_p: Vec<i32>| async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Attempt::Done
            },
        )
        .await;
        assert_eq!(out.left, Some((vec![7], "late")));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_cuts_sleep_short() {
        let d = Deadline::after(Duration::from_millis(50));
        let start = Instant::now();
        assert!(!d.sleep(Duration::from_secs(10)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }
}
