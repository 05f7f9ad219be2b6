//! A per-source request budget: at most `max_requests` requests in any
//! sliding `window` (one minute for "requests per minute").
//!
//! A sliding log of send times rather than a token bucket: a token bucket
//! with a full burst allows up to twice the rate within one window, which an
//! upstream counting per minute would punish. Memory is one instant per
//! allowed request. `governor` was not used because its default clock does
//! not follow tokio's paused clock, which the tests use.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Sliding-window request budget (thread-safe; shared by `&self`).
#[derive(Debug)]
pub struct RequestBudget {
    max_requests: u32,
    window: Duration,
    sent: Mutex<VecDeque<Instant>>,
}

impl RequestBudget {
    /// At most `max_requests` per `window`.
    pub fn new(max_requests: u32, window: Duration) -> Self {
        Self {
            max_requests,
            window,
            sent: Mutex::new(VecDeque::with_capacity(max_requests.min(1024) as usize)),
        }
    }

    /// At most `requests_per_minute` requests in any 60 seconds.
    pub fn per_minute(requests_per_minute: u32) -> Self {
        Self::new(requests_per_minute, Duration::from_secs(60))
    }

    /// The configured maximum per window.
    pub fn max_requests(&self) -> u32 {
        self.max_requests
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expire(&self, sent: &mut VecDeque<Instant>, now: Instant) {
        while sent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.window)
        {
            sent.pop_front();
        }
    }

    /// Time until a request would be allowed (zero when one is allowed now).
    pub fn wait_time(&self) -> Duration {
        let now = Instant::now();
        let mut sent = self.lock();
        self.expire(&mut sent, now);
        if (sent.len() as u64) < u64::from(self.max_requests) {
            return Duration::ZERO;
        }
        match sent.front() {
            Some(&oldest) => (oldest + self.window).saturating_duration_since(now),
            // max_requests == 0: never allowed; report one window.
            None => self.window,
        }
    }

    /// Take one request from the budget.
    ///
    /// # Errors
    ///
    /// `Err(wait)` when the budget is used up: the time until the oldest
    /// request in the window leaves it. Nothing is taken then.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut sent = self.lock();
        self.expire(&mut sent, now);
        if (sent.len() as u64) < u64::from(self.max_requests) {
            sent.push_back(now);
            return Ok(());
        }
        Err(match sent.front() {
            Some(&oldest) => (oldest + self.window).saturating_duration_since(now),
            None => self.window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_budget_in_any_window() {
        let b = RequestBudget::per_minute(3);
        let start = Instant::now();
        let mut granted = Vec::new();
        // Try every second for five minutes.
        for _ in 0..300 {
            if b.try_acquire().is_ok() {
                granted.push(Instant::now() - start);
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(granted.len(), 15, "{granted:?}");
        for w in granted.windows(4) {
            assert!(w[3] - w[0] >= Duration::from_secs(60), "{granted:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refusal_says_how_long_to_wait() {
        let b = RequestBudget::per_minute(2);
        assert_eq!(b.try_acquire(), Ok(()));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(b.try_acquire(), Ok(()));
        assert_eq!(b.try_acquire(), Err(Duration::from_secs(40)));
        assert_eq!(b.wait_time(), Duration::from_secs(40));
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(b.wait_time(), Duration::ZERO);
        assert_eq!(b.try_acquire(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_budget_never_allows() {
        let b = RequestBudget::per_minute(0);
        assert_eq!(b.try_acquire(), Err(Duration::from_secs(60)));
    }
}
