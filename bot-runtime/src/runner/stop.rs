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

/// Why [`StopSignal::sleep_until_or`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The deadline passed.
    Deadline,
    /// A stop was requested.
    Stop,
    /// The caller's condition became true.
    Woken,
}

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

    /// Wake the sleepers without requesting a stop (they re-check what they
    /// wait for, see [`sleep_until_or`](Self::sleep_until_or)).
    pub fn notify(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_all();
    }

    /// Sleep until `deadline` or until a stop is requested, whichever comes
    /// first. Returns `true` if a stop was requested.
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        self.sleep_until_or(deadline, || false) == Wake::Stop
    }

    /// Sleep until `deadline`, a stop request, or `woken()` being true
    /// (checked first and after every [`notify`](Self::notify)), whichever
    /// comes first.
    pub fn sleep_until_or(&self, deadline: Instant, woken: impl Fn() -> bool) -> Wake {
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.is_requested() {
                return Wake::Stop;
            }
            if woken() {
                return Wake::Woken;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wake::Deadline;
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
    fn a_notify_wakes_a_sleeper_whose_condition_holds() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(StopSignal::new());
        let flag = Arc::new(AtomicBool::new(false));
        let (s, f) = (stop.clone(), flag.clone());
        let sleeper = std::thread::spawn(move || {
            s.sleep_until_or(Instant::now() + Duration::from_secs(3600), || {
                f.load(Ordering::SeqCst)
            })
        });
        std::thread::sleep(Duration::from_millis(20));
        flag.store(true, Ordering::SeqCst);
        stop.notify();
        assert_eq!(sleeper.join().unwrap(), Wake::Woken);
        assert!(!stop.is_requested());
    }

    #[test]
    fn an_unrequested_sleep_times_out() {
        let stop = StopSignal::new();
        assert!(!stop.sleep(Duration::from_millis(5)));
        assert!(!stop.is_requested());
    }
}
