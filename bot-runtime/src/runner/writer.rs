//! The ledger side of a run: commits each batch with its checkpoint, retries
//! transient database failures with backoff, and tells the engine to pause
//! while the ledger is unavailable.
//!
//! Trading never runs ahead of the ledger by more than the few batches in
//! flight: while a commit is failing, [`LedgerHealth::is_down`] is true and
//! the engine thread waits before its next candle. A failed transaction
//! stores nothing, and a retried batch whose commit had in fact succeeded is
//! recognised by its batch number (see [`crate::ledger::LedgerStore`]), so a
//! batch is stored exactly once however the outage ends.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::ledger::{LedgerError, LedgerStore, records::LedgerBatch};

use super::stop::StopSignal;

/// How long and how often to retry a failing commit.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First delay before a retry.
    pub min_delay: Duration,
    /// Longest delay between retries (the exponential backoff is capped here;
    /// full jitter is applied to each delay).
    pub max_delay: Duration,
    /// Give up after failing for this long (`None` = retry until stopped).
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 100 ms doubling to 5 s, giving up after 10 minutes.
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            give_up_after: Some(Duration::from_secs(600)),
        }
    }
}

/// Whether the ledger is taking commits, shared by the writer and the engine
/// thread (and, later, the runtime's status API).
#[derive(Debug, Default)]
pub struct LedgerHealth {
    down: AtomicBool,
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
    /// Failed commit attempts so far (each retry counts).
    errors: AtomicU64,
}

impl LedgerHealth {
    /// True while commits are failing and being retried: trading pauses.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// True once the writer gave up: the run must end.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Failed commit attempts so far (transient ones that were retried
    /// included): `paperbot_ledger_errors_total`.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Why the ledger is (or was last) unavailable.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_down(&self, why: String) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.down.store(true, Ordering::SeqCst);
    }

    fn set_up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    fn set_failed(&self, why: String) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.failed.store(true, Ordering::SeqCst);
    }
}

/// Commit one batch with its checkpoint, retrying transient failures.
///
/// # Errors
/// The first non-transient error (fenced, constraint violation, ...), or
/// the last transient one once `policy.give_up_after` has passed or a stop
/// was requested while the ledger was down. `health` is marked failed then.
pub async fn commit<L: LedgerStore>(
    ledger: &mut L,
    batch: &LedgerBatch,
    checkpoint: &str,
    policy: &RetryPolicy,
    health: &LedgerHealth,
    stop: &StopSignal,
) -> Result<(), LedgerError> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_jitter()
        .without_max_times()
        .build();
    let mut first_failure: Option<Instant> = None;
    loop {
        match ledger.write_batch(batch, checkpoint).await {
            Ok(()) => {
                if first_failure.is_some() {
                    tracing::warn!("ledger is back: commits resumed, trading continues");
                    health.set_up();
                }
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                health.count_error();
                let since = *first_failure.get_or_insert_with(Instant::now);
                let out_for = since.elapsed();
                let give_up = policy.give_up_after.is_some_and(|limit| out_for >= limit);
                if give_up || (stop.is_requested() && out_for >= policy.max_delay) {
                    let why = format!(
                        "ledger unavailable for {:.0} s, giving up: {e}",
                        out_for.as_secs_f64()
                    );
                    health.set_failed(why);
                    return Err(e);
                }
                if !health.is_down() {
                    tracing::warn!(error = %e, "ledger unavailable: trading paused, retrying with backoff");
                    health.set_down(format!("ledger unavailable: {e}"));
                }
                let delay = delays.next().unwrap_or(policy.max_delay);
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                health.count_error();
                health.set_failed(format!("ledger error: {e}"));
                return Err(e);
            }
        }
    }
}
