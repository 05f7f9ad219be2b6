//! Binding records as statement arguments, in the column order of
//! [`schema`](super::schema), and splitting a batch into the multi-row
//! INSERT statements of [`sql`](super::sql).
//!
//! Storage conventions: decimals exact with their scale (TEXT in SQLite,
//! NUMERIC in PostgreSQL), times as milliseconds, enums as their `as_str()`
//! text, [`WindowMetrics`](super::records::WindowMetrics) as JSON text.

use std::sync::Arc;

use rust_decimal::Decimal;
use sqlx::SqlStr;

use super::LedgerError;
use super::dialect::Dialect;
use super::records::{
    AdjustmentRecord, BreakerEventRecord, DecisionRecord, LedgerBatch, PositionRecord, RoundTrip,
    SnapshotRecord, TradeRecord,
};
use super::sql::{TableInserts, chunk_rows};

/// Arguments of one statement. The first failure (an unencodable value, a
/// counter beyond `i64`) is kept and returned by [`take`](Self::take), so
/// binding reads as a flat list.
pub(crate) struct Args<DB: Dialect> {
    args: DB::Arguments,
    scratch: String,
    error: Option<LedgerError>,
}

impl<DB: Dialect> Default for Args<DB> {
    fn default() -> Self {
        Self {
            args: DB::Arguments::default(),
            scratch: String::new(),
            error: None,
        }
    }
}

impl<DB: Dialect> Args<DB> {
    fn keep(&mut self, r: Result<(), LedgerError>) -> &mut Self {
        if let (Err(e), None) = (r, &self.error) {
            self.error = Some(e);
        }
        self
    }

    /// A 64-bit integer.
    pub fn int(&mut self, v: i64) -> &mut Self {
        self.opt_int(Some(v))
    }

    /// A nullable 64-bit integer.
    pub fn opt_int(&mut self, v: Option<i64>) -> &mut Self {
        let r = DB::add_int(&mut self.args, v);
        self.keep(r)
    }

    /// An unsigned counter of record field `field`; it must fit in `i64`.
    pub fn count(&mut self, field: &'static str, v: u64) -> &mut Self {
        match i64::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => self.keep(Err(LedgerError::OutOfRange { field, value: v })),
        }
    }

    /// Text.
    pub fn text(&mut self, v: &str) -> &mut Self {
        let r = DB::add_text(&mut self.args, Some(Arc::from(v)));
        self.keep(r)
    }

    /// Shared text (the session id of every row: one allocation for all).
    pub fn shared(&mut self, v: &Arc<str>) -> &mut Self {
        let r = DB::add_text(&mut self.args, Some(Arc::clone(v)));
        self.keep(r)
    }

    /// An exact decimal.
    pub fn dec(&mut self, v: Decimal) -> &mut Self {
        self.opt_dec(Some(v))
    }

    /// A nullable exact decimal.
    pub fn opt_dec(&mut self, v: Option<Decimal>) -> &mut Self {
        let r = DB::add_decimal(&mut self.args, v, &mut self.scratch);
        self.keep(r)
    }

    /// The arguments bound so far (this builder starts empty again), or the
    /// first binding failure.
    pub fn take(&mut self) -> Result<DB::Arguments, LedgerError> {
        let args = std::mem::take(&mut self.args);
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(args),
        }
    }
}

/// JSON text of a serializable value (`what` names it in the error).
pub(crate) fn json<T: serde::Serialize>(what: &'static str, v: &T) -> Result<String, LedgerError> {
    serde_json::to_string(v).map_err(|source| LedgerError::Json { what, source })
}

fn decision<DB: Dialect>(a: &mut Args<DB>, r: &DecisionRecord) {
    a.count("decision.seq", r.seq)
        .int(r.time.millis())
        .text(&r.symbol)
        .text(r.action.as_str())
        .dec(r.confidence)
        .dec(r.price)
        .opt_dec(r.quantity)
        .text(&r.positive_signals)
        .text(&r.negative_signals)
        .text(&r.risk_assessment)
        .text(&r.reason);
}

fn trade<DB: Dialect>(a: &mut Args<DB>, r: &TradeRecord) {
    a.count("trade.seq", r.seq)
        .count("trade.decision_seq", r.decision_seq)
        .int(r.time.millis())
        .text(&r.symbol)
        .text(r.side.as_str())
        .dec(r.quantity)
        .dec(r.reference_price)
        .dec(r.fill_price)
        .dec(r.fee)
        .dec(r.gas)
        .dec(r.slippage_cost)
        .int(r.latency_ms)
        .dec(r.realized_pnl)
        .text(r.reason.as_str())
        .text(r.status.as_str())
        .dec(r.cash_after)
        .dec(r.position_after)
        .dec(r.cost_basis_after);
}

fn round_trip<DB: Dialect>(a: &mut Args<DB>, seq: i64, r: &RoundTrip) {
    a.int(seq)
        .text(&r.symbol)
        .int(r.entry_time.millis())
        .dec(r.entry_price)
        .int(r.exit_time.millis())
        .dec(r.exit_price)
        .dec(r.quantity)
        .dec(r.pnl)
        .dec(r.fees)
        .dec(r.return_pct)
        .text(r.exit_reason.as_str());
}

fn breaker_event<DB: Dialect>(a: &mut Args<DB>, seq: i64, r: &BreakerEventRecord) {
    a.int(seq)
        .int(r.time.millis())
        .text(&r.breaker)
        .text(&r.from_state)
        .text(&r.to_state)
        .text(&r.reason);
}

fn adjustment<DB: Dialect>(a: &mut Args<DB>, r: &AdjustmentRecord) {
    let metrics = json("adjustment metrics_before", &r.metrics_before);
    a.count("adjustment.id", r.id)
        .int(r.time.millis())
        .text(&r.parameter)
        .dec(r.old_value)
        .dec(r.new_value)
        .text(&r.reason);
    match metrics {
        Ok(m) => a.text(&m),
        Err(e) => a.keep(Err(e)),
    };
}

fn snapshot<DB: Dialect>(a: &mut Args<DB>, seq: i64, r: &SnapshotRecord) {
    a.int(seq)
        .int(r.time.millis())
        .dec(r.cash)
        .dec(r.position_value)
        .dec(r.equity)
        .dec(r.realized_pnl)
        .dec(r.unrealized_pnl)
        .dec(r.drawdown_pct)
        .int(i64::from(r.open_positions))
        .count("snapshot.trades", r.trades);
}

fn position<DB: Dialect>(a: &mut Args<DB>, r: &PositionRecord) {
    a.text(&r.symbol)
        .dec(r.quantity)
        .dec(r.cost_basis)
        .dec(r.last_price)
        .opt_int(r.opened_at.map(|t| t.millis()))
        .int(r.updated_at.millis());
}

/// The last store-assigned numbers of a session before a batch: its round
/// trips, breaker events and snapshots continue from them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoredSeqs {
    pub round_trips: i64,
    pub breaker_events: i64,
    pub snapshots: i64,
}

impl StoredSeqs {
    /// The numbers after `b` is stored.
    pub fn after(self, b: &LedgerBatch) -> Self {
        let n = |len: usize| i64::try_from(len).unwrap_or(i64::MAX);
        Self {
            round_trips: self.round_trips.saturating_add(n(b.round_trips.len())),
            breaker_events: self
                .breaker_events
                .saturating_add(n(b.breaker_events.len())),
            snapshots: self.snapshots.saturating_add(n(b.snapshots.len())),
        }
    }
}

/// Produces a batch's multi-row INSERT statements one at a time, table by
/// table (decisions, trades, round trips, breaker events, adjustments,
/// snapshots, positions), each table's rows in chunks of [`chunk_rows`].
pub(crate) struct BatchInserts<'a, DB: Dialect> {
    batch: &'a LedgerBatch,
    session: &'a Arc<str>,
    seqs: StoredSeqs,
    table: usize,
    start: usize,
    args: Args<DB>,
}

impl<'a, DB: Dialect> BatchInserts<'a, DB> {
    /// Statements for `batch` of `session`, whose stored numbers are `seqs`.
    pub fn new(batch: &'a LedgerBatch, session: &'a Arc<str>, seqs: StoredSeqs) -> Self {
        Self {
            batch,
            session,
            seqs,
            table: 0,
            start: 0,
            args: Args::default(),
        }
    }

    /// The next statement and its arguments, or `None` when all rows are out.
    ///
    /// # Errors
    /// A value that cannot be bound ([`LedgerError::OutOfRange`],
    /// [`LedgerError::Json`], [`LedgerError::Encode`]).
    pub fn next_statement(&mut self) -> Result<Option<(SqlStr, DB::Arguments)>, LedgerError> {
        let sql = DB::inserts();
        let b = self.batch;
        loop {
            let (spec, len): (&TableInserts, usize) = match self.table {
                0 => (&sql.decisions, b.decisions.len()),
                1 => (&sql.trades, b.trades.len()),
                2 => (&sql.round_trips, b.round_trips.len()),
                3 => (&sql.breaker_events, b.breaker_events.len()),
                4 => (&sql.adjustments, b.adjustments.len()),
                5 => (&sql.snapshots, b.snapshots.len()),
                6 => (&sql.positions, b.positions.len()),
                _ => return Ok(None),
            };
            if self.start >= len {
                self.table += 1;
                self.start = 0;
                continue;
            }
            let n = chunk_rows(len - self.start);
            let a = &mut self.args;
            for i in self.start..self.start + n {
                // Store-assigned numbers continue the stored ones.
                let seq = |last: i64| last + 1 + i as i64;
                a.shared(self.session);
                match self.table {
                    0 => decision(a, &b.decisions[i]),
                    1 => trade(a, &b.trades[i]),
                    2 => round_trip(a, seq(self.seqs.round_trips), &b.round_trips[i]),
                    3 => breaker_event(a, seq(self.seqs.breaker_events), &b.breaker_events[i]),
                    4 => adjustment(a, &b.adjustments[i]),
                    5 => snapshot(a, seq(self.seqs.snapshots), &b.snapshots[i]),
                    _ => position(a, &b.positions[i]),
                }
            }
            self.start += n;
            let args = a.take()?;
            debug_assert_eq!(sqlx::Arguments::len(&args), n * spec.columns);
            return Ok(Some((spec.for_rows(n), args)));
        }
    }
}
