//! The write side of a ledger handle, for either backend: starting and
//! resuming sessions under a [`SessionLock`], fenced and idempotent batch
//! writes, interruption and the end of a session. See the durability
//! contract in [`store`](super::store).

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Pool, SqlSafeStr as _};

use super::LedgerError;
use super::bind::{Args, BatchInserts, StoredSeqs, json};
use super::dialect::Dialect;
use super::lock::SessionLock;
use super::read;
use super::records::{AdjustmentOutcomeRecord, LedgerBatch, SessionEnd, SessionRecord};
use super::schema::END_PHASES;
use super::store::{INTERRUPTED_PHASE, RUNNING_PHASE, ResumePoint};
use crate::types::Timestamp;

/// The session a handle currently writes.
#[derive(Debug)]
struct Active {
    id: Arc<str>,
    /// Fencing token written to `sessions.writer_token` by this handle.
    token: Arc<str>,
    /// Committed batches (`sessions.batch_seq`) as of the last confirmed commit.
    batch_seq: i64,
    /// Store-assigned numbers as of the last confirmed commit.
    seqs: StoredSeqs,
}

/// A pool, a writer lock, and the session being written.
#[derive(Debug)]
pub(crate) struct Writer<DB: Dialect, L: SessionLock> {
    pool: Pool<DB>,
    lock: L,
    active: Option<Active>,
    /// Test hook: the next successful commit reports a lost acknowledgement.
    #[cfg(test)]
    pub(crate) lose_next_ack: bool,
}

impl<DB: Dialect, L: SessionLock> Writer<DB, L> {
    /// A handle on `pool` taking its writer locks from `lock`.
    pub fn new(pool: Pool<DB>, lock: L) -> Self {
        Self {
            pool,
            lock,
            active: None,
            #[cfg(test)]
            lose_next_ack: false,
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Id of the session this handle is writing, if any.
    pub fn active_session(&self) -> Option<&str> {
        self.active.as_ref().map(|a| &*a.id)
    }

    /// Give up the writer lock (when the handle is closed).
    pub async fn release_lock(mut self) {
        self.lock.release().await;
    }

    fn active(&self) -> Result<&Active, LedgerError> {
        self.active.as_ref().ok_or(LedgerError::NotStarted)
    }

    fn idle(&self) -> Result<(), LedgerError> {
        match &self.active {
            Some(a) => Err(LedgerError::AlreadyStarted {
                session_id: a.id.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The holder named in [`LedgerError::LeaseHeld`]: the session's `writer`.
    async fn lease_held(&self, id: &str) -> LedgerError {
        let holder = match read::session_state(&self.pool, id).await {
            Ok(Some(s)) => s.info.writer,
            _ => None,
        };
        LedgerError::LeaseHeld {
            session_id: id.to_owned(),
            holder: holder.unwrap_or_else(|| "a writer that has not described itself".into()),
        }
    }

    /// See [`LedgerStore::start_session`](super::LedgerStore::start_session).
    pub async fn start_session(
        &mut self,
        s: &SessionRecord,
        writer: &str,
    ) -> Result<(), LedgerError> {
        self.idle()?;
        let exists = || LedgerError::SessionExists {
            session_id: s.id.clone(),
        };
        if read::session_state(&self.pool, &s.id).await?.is_some() {
            return Err(exists());
        }
        if !self.lock.acquire(&s.id).await? {
            return Err(self.lease_held(&s.id).await);
        }
        let token: Arc<str> = new_fencing_token().into();
        let mut a = Args::<DB>::default();
        a.text(&s.id)
            .text(&s.name)
            .text(&s.account)
            .text(&s.strategy)
            .text(&s.base_currency)
            .dec(s.initial_cash)
            .text(&s.config_json)
            .int(s.started_at.millis())
            .text(RUNNING_PHASE)
            .shared(&token)
            .int(wall_clock_ms())
            .text(writer);
        let inserted = async {
            let sql = "INSERT INTO sessions (id, name, account, strategy, base_currency, \
                       initial_cash, config_json, started_at, phase, cash, equity, writer_token, \
                       created_at, batch_seq, writer, heartbeat_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $6, $6, $10, $11, 0, $12, $11)";
            let mut conn = self.pool.acquire().await?;
            DB::execute(&mut conn, sql.into_sql_str(), a.take()?).await?;
            Ok::<_, LedgerError>(())
        }
        .await;
        match inserted {
            Ok(()) => {
                self.active = Some(Active {
                    id: s.id.as_str().into(),
                    token,
                    batch_seq: 0,
                    seqs: StoredSeqs::default(),
                });
                Ok(())
            }
            Err(e) => {
                self.lock.release().await;
                match e {
                    LedgerError::Database(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                        Err(exists())
                    }
                    e => Err(e),
                }
            }
        }
    }

    /// See [`LedgerStore::resume_session`](super::LedgerStore::resume_session).
    pub async fn resume_session(
        &mut self,
        id: &str,
        writer: &str,
    ) -> Result<ResumePoint, LedgerError> {
        self.idle()?;
        let Some(stored) = read::session_state(&self.pool, id).await? else {
            return Err(LedgerError::UnknownSession {
                session_id: id.to_owned(),
            });
        };
        if stored.info.ended_at.is_some() {
            return Err(LedgerError::SessionFinished {
                session_id: id.to_owned(),
            });
        }
        if stored.checkpoint.is_none() && stored.info.last_batch_at.is_some() {
            return Err(LedgerError::NotResumable {
                session_id: id.to_owned(),
                reason: "its batches were written without a checkpoint (by a runtime before \
                         resumable sessions); close it with `sessions close`"
                    .into(),
            });
        }
        if !self.lock.acquire(id).await? {
            return Err(self.lease_held(id).await);
        }
        let token: Arc<str> = new_fencing_token().into();
        match self.take_over(id, &token, writer).await {
            Ok((point, seqs)) => {
                self.active = Some(Active {
                    id: id.into(),
                    token,
                    batch_seq: i64::try_from(point.info.batches).unwrap_or(i64::MAX),
                    seqs,
                });
                Ok(point)
            }
            Err(e) => {
                self.lock.release().await;
                Err(e)
            }
        }
    }

    /// With the lock held: write this handle's token and description, set
    /// the phase back to Running, and read what the session has stored.
    async fn take_over(
        &self,
        id: &str,
        token: &Arc<str>,
        writer: &str,
    ) -> Result<(ResumePoint, StoredSeqs), LedgerError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let mut a = Args::<DB>::default();
        a.text(id)
            .shared(token)
            .text(writer)
            .int(wall_clock_ms())
            .text(RUNNING_PHASE);
        let taken = DB::execute(
            &mut tx,
            "UPDATE sessions SET writer_token = $2, writer = $3, heartbeat_at = $4, phase = $5 \
             WHERE id = $1 AND ended_at IS NULL"
                .into_sql_str(),
            a.take()?,
        )
        .await?;
        if taken == 0 {
            return Err(LedgerError::SessionFinished {
                session_id: id.to_owned(),
            });
        }
        let state = read::session_state_on::<DB>(&mut tx, id)
            .await?
            .ok_or_else(|| LedgerError::UnknownSession {
                session_id: id.to_owned(),
            })?;
        let seqs = read::stored_seqs::<DB>(&mut tx, id).await?;
        tx.commit().await?;
        Ok((
            ResumePoint {
                info: state.info,
                checkpoint: state.checkpoint,
            },
            seqs,
        ))
    }

    /// Make sure this handle still holds its session's lock.
    async fn ensure_lock(&mut self) -> Result<(), LedgerError> {
        if self.lock.ensure().await? {
            return Ok(());
        }
        let id = self.active()?.id.clone();
        Err(self.lease_held(&id).await)
    }

    /// See [`LedgerStore::write_batch`](super::LedgerStore::write_batch).
    pub async fn write_batch(
        &mut self,
        b: &LedgerBatch,
        checkpoint: &str,
    ) -> Result<(), LedgerError> {
        self.active()?;
        self.ensure_lock().await?;
        let active = self.active()?;
        let seq = active.batch_seq + 1;
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let written = match self.fence(&mut tx, active, seq, b, checkpoint).await {
            Ok(true) => write_rows::<DB>(&mut tx, active, b).await,
            Ok(false) => {
                let _ = tx.rollback().await;
                return self.after_failed_fence(seq, b).await;
            }
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // Best effort: if the rollback itself fails, sqlx closes the
            // connection, which also discards the transaction.
            let _ = tx.rollback().await;
            return Err(e);
        }
        tx.commit().await?;
        #[cfg(test)]
        if std::mem::take(&mut self.lose_next_ack) {
            return Err(LedgerError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "test hook: acknowledgement of a successful COMMIT lost",
            ))));
        }
        self.confirm(seq, b);
        Ok(())
    }

    /// The first statement of a batch's transaction: claims batch number
    /// `seq` for this writer and stores the session's cash, equity, time and
    /// checkpoint. `false` when the row did not match (fenced, or the batch
    /// is already stored).
    async fn fence(
        &self,
        conn: &mut DB::Connection,
        active: &Active,
        seq: i64,
        b: &LedgerBatch,
        checkpoint: &str,
    ) -> Result<bool, LedgerError> {
        let mut a = Args::<DB>::default();
        a.shared(&active.id)
            .shared(&active.token)
            .int(seq)
            .dec(b.cash)
            .opt_dec(b.snapshots.last().map(|s| s.equity))
            .int(b.time.millis())
            .text(checkpoint)
            .int(wall_clock_ms())
            .int(seq - 1);
        let n = DB::execute(
            conn,
            "UPDATE sessions SET batch_seq = $3, cash = $4, equity = COALESCE($5, equity), \
             last_batch_at = $6, checkpoint_json = $7, heartbeat_at = $8 \
             WHERE id = $1 AND writer_token = $2 AND ended_at IS NULL AND batch_seq = $9"
                .into_sql_str(),
            a.take()?,
        )
        .await?;
        Ok(n == 1)
    }

    /// Why the fence did not match: the batch is already stored (its
    /// acknowledgement was lost), or this writer lost the session.
    async fn after_failed_fence(&mut self, seq: i64, b: &LedgerBatch) -> Result<(), LedgerError> {
        let active = self.active()?;
        let stored = read::session_state(&self.pool, &active.id).await?;
        let fenced = || LedgerError::Fenced {
            session_id: active.id.to_string(),
        };
        let Some(stored) = stored else {
            return Err(fenced());
        };
        let ours = stored.writer_token.as_deref() == Some(&*active.token)
            && stored.info.ended_at.is_none();
        if !ours {
            return Err(fenced());
        }
        if i64::try_from(stored.info.batches) == Ok(seq) {
            // Committed before; the retry writes nothing.
            self.confirm(seq, b);
            return Ok(());
        }
        Err(LedgerError::Corrupt {
            session_id: active.id.to_string(),
            table: "sessions",
            detail: format!(
                "batch_seq is {} but this writer has committed {} batches",
                stored.info.batches,
                seq - 1
            ),
        })
    }

    /// Batch `seq` is durable: move the counters.
    fn confirm(&mut self, seq: i64, b: &LedgerBatch) {
        if let Some(active) = &mut self.active {
            active.batch_seq = seq;
            active.seqs = active.seqs.after(b);
        }
    }

    /// See [`LedgerStore::interrupt_session`](super::LedgerStore::interrupt_session).
    pub async fn interrupt_session(&mut self, at: Timestamp) -> Result<(), LedgerError> {
        let mut a = self.fenced_args()?;
        a.text(INTERRUPTED_PHASE)
            .int(at.millis())
            .int(wall_clock_ms());
        self.close_session(
            "UPDATE sessions SET phase = $3, interrupted_at = $4, heartbeat_at = $5, \
             writer_token = NULL WHERE id = $1 AND writer_token = $2 AND ended_at IS NULL",
            a,
        )
        .await
    }

    /// See [`LedgerStore::finish_session`](super::LedgerStore::finish_session).
    pub async fn finish_session(&mut self, end: &SessionEnd) -> Result<(), LedgerError> {
        if !END_PHASES.contains(&end.phase.as_str()) {
            return Err(LedgerError::InvalidPhase {
                phase: end.phase.clone(),
            });
        }
        let mut a = self.fenced_args()?;
        a.text(&end.phase)
            .int(end.ended_at.millis())
            .dec(end.cash)
            .dec(end.equity)
            .text(&end.summary_json)
            .int(wall_clock_ms());
        self.close_session(
            "UPDATE sessions SET phase = $3, ended_at = $4, cash = $5, equity = $6, \
             summary_json = $7, heartbeat_at = $8, writer_token = NULL, writer = NULL \
             WHERE id = $1 AND writer_token = $2 AND ended_at IS NULL",
            a,
        )
        .await
    }

    /// Arguments `$1` (session id) and `$2` (this writer's token) of a
    /// fenced statement.
    fn fenced_args(&self) -> Result<Args<DB>, LedgerError> {
        let active = self.active()?;
        let mut a = Args::<DB>::default();
        a.shared(&active.id).shared(&active.token);
        Ok(a)
    }

    /// Run the fenced update `sql` that ends this handle's hold on its
    /// session, then release the lock. On a database error the handle keeps
    /// the session and the lock, so the call can be retried.
    async fn close_session(
        &mut self,
        sql: &'static str,
        mut a: Args<DB>,
    ) -> Result<(), LedgerError> {
        if let Err(e) = self.ensure_lock().await {
            if matches!(e, LedgerError::LeaseHeld { .. }) {
                // Another writer has the session: this handle is done with it.
                self.active = None;
            }
            return Err(e);
        }
        let mut conn = self.pool.acquire().await?;
        let n = DB::execute(&mut conn, sql.into_sql_str(), a.take()?).await?;
        drop(conn);
        let session_id = self.active()?.id.to_string();
        self.active = None;
        self.lock.release().await;
        if n == 0 {
            return Err(LedgerError::Fenced { session_id });
        }
        Ok(())
    }
}

/// Every row of a batch, inside the caller's transaction (after the fence).
/// The arguments of statement i+1 are built while statement i executes
/// (`biased` polls the execution first, which hands it to the connection
/// before the builder runs).
async fn write_rows<DB: Dialect>(
    conn: &mut DB::Connection,
    active: &Active,
    b: &LedgerBatch,
) -> Result<(), LedgerError> {
    let mut inserts = BatchInserts::<DB>::new(b, &active.id, active.seqs);
    let mut next = inserts.next_statement()?;
    while let Some((sql, args)) = next {
        let (done, built) = tokio::join!(
            biased;
            DB::execute(&mut *conn, sql, args),
            async { inserts.next_statement() },
        );
        done?;
        next = built?;
    }
    // Verdicts last: their adjustments may be in this very batch.
    for o in &b.adjustment_outcomes {
        write_outcome::<DB>(&mut *conn, &active.id, o).await?;
    }
    Ok(())
}

async fn write_outcome<DB: Dialect>(
    conn: &mut DB::Connection,
    session: &Arc<str>,
    o: &AdjustmentOutcomeRecord,
) -> Result<(), LedgerError> {
    let metrics = json("adjustment outcome metrics_after", &o.metrics_after)?;
    let mut a = Args::<DB>::default();
    a.shared(session)
        .count("adjustment_outcome.id", o.id)
        .int(o.time.millis())
        .text(o.outcome.as_str())
        .text(&metrics);
    let n = DB::execute(
        conn,
        "UPDATE autopilot_adjustments SET outcome_time = $3, outcome = $4, \
         metrics_after_json = $5 WHERE session_id = $1 AND id = $2"
            .into_sql_str(),
        a.take()?,
    )
    .await?;
    if n == 0 {
        return Err(LedgerError::UnknownAdjustment {
            session_id: session.to_string(),
            id: o.id,
        });
    }
    Ok(())
}

/// Wall-clock milliseconds since the epoch (`created_at`, `heartbeat_at`;
/// the ledger's records carry market time).
fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fencing token unique across handles and processes: 64 bits from std's
/// randomly keyed SipHash over (pid, wall-clock nanoseconds, process-wide
/// counter), followed by those inputs in clear.
fn new_fencing_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(pid);
    h.write_u128(nanos);
    h.write_u64(n);
    format!("{:016x}-{pid:x}-{nanos:x}-{n:x}", h.finish())
}
