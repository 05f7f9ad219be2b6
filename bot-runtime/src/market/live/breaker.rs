//! A per-source circuit breaker: after `failure_threshold` failed polls in a
//! row the source is skipped (open) for `cool_down`; then one trial request
//! is allowed (half-open): success closes it, failure opens it again.
//!
//! Time is [`tokio::time::Instant`], so tests drive it with a paused clock.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused until the cool-down ends.
    Open,
    /// The cool-down ended: the next request is a trial.
    HalfOpen,
}

impl BreakerState {
    /// Lower-case label: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    opened_total: u64,
}

/// Circuit breaker for one source (thread-safe; shared by `&self`).
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    cool_down: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `failure_threshold` (>= 1; 0 is read
    /// as 1) consecutive failures and stays open for `cool_down`.
    pub fn new(failure_threshold: u32, cool_down: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            cool_down,
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                open_until: None,
                opened_total: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters invalid.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        match self.lock().open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// `Ok` when a request may go out; `Err(remaining cool-down)` when open.
    pub fn check(&self) -> Result<(), Duration> {
        match self.lock().open_until {
            Some(t) => {
                let now = Instant::now();
                if now < t { Err(t - now) } else { Ok(()) }
            }
            None => Ok(()),
        }
    }

    /// Record a successful request: the breaker closes.
    pub fn record_success(&self) {
        let mut g = self.lock();
        g.consecutive_failures = 0;
        g.open_until = None;
    }

    /// Record a failed request: opens the breaker at the threshold, or again
    /// at once when the failure was the half-open trial.
    pub fn record_failure(&self) {
        let mut g = self.lock();
        g.consecutive_failures = g.consecutive_failures.saturating_add(1);
        let trial_failed = g.open_until.is_some();
        if trial_failed || g.consecutive_failures >= self.failure_threshold {
            g.open_until = Some(Instant::now() + self.cool_down);
            g.opened_total += 1;
        }
    }

    /// How many times the breaker opened.
    pub fn opened_total(&self) -> u64 {
        self.lock().opened_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_at_threshold_half_opens_after_cool_down_and_closes_on_success() {
        let b = CircuitBreaker::new(3, Duration::from_secs(30));
        b.record_failure();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.check(), Err(Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.check(), Ok(()));
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.opened_total(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_trial_reopens_for_a_full_cool_down() {
        let b = CircuitBreaker::new(1, Duration::from_secs(10));
        b.record_failure();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.check(), Err(Duration::from_secs(10)));
        assert_eq!(b.opened_total(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_run() {
        let b = CircuitBreaker::new(2, Duration::from_secs(10));
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
