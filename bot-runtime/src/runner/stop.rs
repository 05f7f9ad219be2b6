//! The stop request shared by the signal handler, the engine thread and the
//! ledger writer.
//!
//! A request wakes a paced run at once: the engine thread waits for its next
//! candle on a condition variable, not in `sleep`, so SIGTERM never waits out
//! a candle's pacing delay.

use std::sync::{
    Condvar, Mutex,
    atomic::{AtomicBool, Ordering},
};
use std::time::{Duration, Instant};

/// A one-way "please stop" flag that sleepers can wait on.
#[derive(Debug, Default)]
pub struct StopSignal {
    requested: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl StopSignal {
    /// A signal not yet requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask everything that watches this signal to stop, and wake sleepers.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // Taking the lock orders the store before a sleeper's check-then-wait.
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_all();
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Sleep until `deadline` or until a stop is requested, whichever comes
    /// first. Returns `true` if a stop was requested.
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.is_requested() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.wake.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Sleep for `d` or until a stop is requested. Returns `true` if a stop
    /// was requested.
    pub fn sleep(&self, d: Duration) -> bool {
        match Instant::now().checked_add(d) {
            Some(deadline) => self.sleep_until(deadline),
            None => self.sleep_until(Instant::now() + Duration::from_secs(86_400)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_request_wakes_a_long_sleep() {
        let stop = Arc::new(StopSignal::new());
        let s = stop.clone();
        let sleeper = std::thread::spawn(move || s.sleep(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(20));
        stop.request();
        assert!(sleeper.join().unwrap(), "the sleeper saw the request");
        assert!(stop.is_requested());
    }

    #[test]
    fn an_unrequested_sleep_times_out() {
        let stop = StopSignal::new();
        assert!(!stop.sleep(Duration::from_millis(5)));
        assert!(!stop.is_requested());
    }
}
