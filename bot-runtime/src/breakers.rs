//! Circuit breakers: limits that stop a session from opening new positions
//! (or, for the account kill switch, halt it) when losses or faults pass them.
//!
//! # States
//!
//! Every breaker is a small state machine over
//! [`BreakerState`]:
//!
//! * `Closed` → `Open` when its condition trips (a *trip*; counted in
//!   [`CircuitBreakers::trips`]).
//! * `Open` → `HalfOpen` once `limits.cooldown_ms` milliseconds of market time
//!   have passed since it opened (checked in [`CircuitBreakers::tick`]).
//! * `HalfOpen` → `Closed` after a good outcome, `HalfOpen` → `Open` again
//!   after a bad one (also counted as a trip; the cooldown restarts).
//!
//! Every transition pushes one [`BreakerEventRecord`] (breaker name, from/to
//! state `Closed`/`Open`/`HalfOpen`, reason with the measured value and the
//! limit, market time). Only `Open` blocks new entries
//! ([`CircuitBreakers::entry_block`]); `HalfOpen` is probation and allows
//! them. Exits (stop-loss, take-profit, ...) are never blocked: that is the
//! engine's job, this module only answers "may I enter?".
//!
//! # The breakers
//!
//! Only breakers whose limit is configured exist (and show in
//! [`CircuitBreakers::statuses`]); `priceFeed` always exists. Percent limits
//! are percent 0-100; all comparisons are multiplications, never divisions.
//!
//! | breaker | trips when | good outcome in `HalfOpen` (→ `Closed`) | bad outcome in `HalfOpen` (→ `Open`) |
//! |---|---|---|---|
//! | `dailyLoss` | `(day_start − equity) × 100 >= daily_loss_pct × day_start` | — (no cooldown: a daily limit, it closes at the next UTC day) | — |
//! | `maxDrawdown` | `(ref − equity) × 100 >= max_drawdown_pct × ref` | the next winning round trip (pnl > 0) | drawdown from the re-baselined reference reaches the limit |
//! | `consecutiveFailures` | `max_consecutive_failures` failed executions in a row (a success resets the run) | the next successful execution | the next failed execution |
//! | `consecutiveLosses` | `max_consecutive_losses` losing round trips (pnl < 0) in a row | the next winning round trip (pnl > 0) | the next losing round trip |
//! | `dailyTradeCap` | entries in the UTC day reach `max_daily_trades` | — (no cooldown: closes at the next UTC day) | — |
//! | `minBalance` | `equity < min_balance` | the next bar with `equity >= min_balance` | the next bar with `equity < min_balance` |
//! | `priceFeed` | `max_invalid_ticks` invalid ticks in a row, or a valid tick whose gap since the symbol's previous candle is above `max_data_gap_ms` (default 5 × the candle interval), or (live data) a symbol whose last accepted price is older than `maxAge` by the wall clock ([`CircuitBreakers::on_stale_prices`], at once, between candles) | the next valid, non-stale tick | the next invalid tick (a single one) or stale tick |
//! | `accountMaxDrawdown` | `(peak − equity) × 100 >= pct × peak` | never half-opens | — |
//! | `accountDailyLoss` | as `dailyLoss`, with the account limit | never half-opens, ignores the day rollover | — |
//!
//! Details:
//!
//! * **UTC day rollover** (in [`CircuitBreakers::tick`], also noticed by the
//!   other methods): an `Open` `dailyLoss` and an `Open`
//!   `dailyTradeCap` close with reason `new UTC day`, and the day's entry count
//!   restarts at 0. `day_start` passed to [`CircuitBreakers::on_equity`] is the
//!   engine's (equity at the first bar of the current UTC day).
//! * **maxDrawdown reference**: until the breaker first half-opens, `ref` is
//!   the session's equity peak passed in by the engine. When it half-opens the
//!   reference is re-baselined to the latest marked equity and from then on
//!   follows the highest equity seen since (it keeps doing so after closing —
//!   otherwise the breaker would re-trip on the very next bar, equity still
//!   being far below the old peak). A losing round trip in `HalfOpen` does not
//!   re-open it; only the drawdown does.
//! * **Break-even** round trips (pnl = 0) end a run of losses but neither close
//!   nor re-open a half-open breaker.
//! * **consecutiveFailures / consecutiveLosses / priceFeed** keep counting while
//!   open; the run restarts at 0 when the breaker closes. Invalid ticks are
//!   counted across the whole feed (all symbols interleaved); the gap of an
//!   invalid tick is ignored.
//! * **Account kill switch** (`accountMaxDrawdown`, `accountDailyLoss`): once
//!   tripped the breaker stays `Open` for the rest of the session and
//!   [`CircuitBreakers::halted`] returns it: the session must liquidate and
//!   stop.
//! * Conditions against a base (`day_start`, peak) that is not positive never
//!   trip.
//!
//! # Cost
//!
//! The per-bar methods do not allocate and do not divide unless a transition
//! produces a record (reasons are formatted only then).
//! [`CircuitBreakers::entry_block`] scans a fixed array of 9 breakers.

use std::time::Duration;

use paperbot_crds::{BreakerState, BreakerStatus, DurationString};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ledger::records::BreakerEventRecord;
use crate::params::BreakerLimits;
use crate::types::{MS_PER_DAY, Timestamp};

/// Reason of a transition to `Closed` made by [`CircuitBreakers::reset`].
pub const RESET_REASON: &str = "reset by request";

/// Reason of a transition to `Closed` when a strategy reload removes the
/// breaker's limit ([`CircuitBreakers::reconfigure`]).
pub const REMOVED_REASON: &str = "breaker removed by a strategy reload";

/// The circuit breakers, in the order [`CircuitBreakers::entry_block`] and
/// [`CircuitBreakers::statuses`] report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerKind {
    /// Strategy loss since the start of the UTC day, percent of day-start equity.
    DailyLoss,
    /// Strategy drawdown below the equity peak, percent of the peak.
    MaxDrawdown,
    /// Failed executions (order attempts) in a row.
    ConsecutiveFailures,
    /// Losing round trips in a row.
    ConsecutiveLosses,
    /// Entries per UTC day.
    DailyTradeCap,
    /// Minimum equity, quote currency.
    MinBalance,
    /// Invalid or stale market data.
    PriceFeed,
    /// Account kill switch: drawdown percent; halts the session.
    AccountMaxDrawdown,
    /// Account kill switch: daily loss percent; halts the session.
    AccountDailyLoss,
}

const KINDS: usize = 9;

impl BreakerKind {
    /// All kinds, in reporting order.
    pub const ALL: [BreakerKind; KINDS] = [
        BreakerKind::DailyLoss,
        BreakerKind::MaxDrawdown,
        BreakerKind::ConsecutiveFailures,
        BreakerKind::ConsecutiveLosses,
        BreakerKind::DailyTradeCap,
        BreakerKind::MinBalance,
        BreakerKind::PriceFeed,
        BreakerKind::AccountMaxDrawdown,
        BreakerKind::AccountDailyLoss,
    ];

    /// camelCase name, as in `BotSession.status.breakers[].name` and
    /// [`BreakerEventRecord::breaker`].
    pub fn name(self) -> &'static str {
        match self {
            BreakerKind::DailyLoss => "dailyLoss",
            BreakerKind::MaxDrawdown => "maxDrawdown",
            BreakerKind::ConsecutiveFailures => "consecutiveFailures",
            BreakerKind::ConsecutiveLosses => "consecutiveLosses",
            BreakerKind::DailyTradeCap => "dailyTradeCap",
            BreakerKind::MinBalance => "minBalance",
            BreakerKind::PriceFeed => "priceFeed",
            BreakerKind::AccountMaxDrawdown => "accountMaxDrawdown",
            BreakerKind::AccountDailyLoss => "accountDailyLoss",
        }
    }

    /// The kind named `name` (camelCase, as [`name`](Self::name) gives it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this is an account kill-switch breaker (never half-opens, halts).
    pub fn is_kill_switch(self) -> bool {
        matches!(
            self,
            BreakerKind::AccountMaxDrawdown | BreakerKind::AccountDailyLoss
        )
    }

    /// Whether the cooldown turns it half-open (all but the kill switch and
    /// `dailyTradeCap`, which waits for the next UTC day).
    /// Calendar breakers (`dailyLoss`, `dailyTradeCap`) stay open until the
    /// next UTC day; the kill switch never reopens; the rest cool down.
    fn cools_down(self) -> bool {
        !self.is_kill_switch()
            && !matches!(self, BreakerKind::DailyTradeCap | BreakerKind::DailyLoss)
    }
}

/// `Closed`, `Open` or `HalfOpen`.
fn state_name(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "Closed",
        BreakerState::Open => "Open",
        BreakerState::HalfOpen => "HalfOpen",
    }
}

/// `(base − value) × 100 >= limit_pct × base`, with `base > 0`. Checked: a
/// product beyond a decimal's range decides by its sign (a limit too large
/// to represent is never reached).
fn loss_reached(base: Decimal, value: Decimal, limit_pct: Decimal) -> bool {
    if base <= Decimal::ZERO {
        return false;
    }
    let loss = base
        .checked_sub(value)
        .and_then(|d| d.checked_mul(Decimal::ONE_HUNDRED));
    match (loss, limit_pct.checked_mul(base)) {
        (Some(l), Some(r)) => l >= r,
        (_, None) => false,
        (None, Some(_)) => value < base,
    }
}

/// `(base − value)` as a percent of `base`, 2 dp (for reasons only; 0 when
/// it cannot be computed).
fn pct_of(base: Decimal, value: Decimal) -> Decimal {
    if base.is_zero() {
        return Decimal::ZERO;
    }
    base.checked_sub(value)
        .and_then(|d| d.checked_mul(Decimal::ONE_HUNDRED))
        .and_then(|d| d.checked_div(base))
        .map_or(Decimal::ZERO, |p| p.round_dp(2).normalize())
}

fn cmp_word(hit: bool) -> &'static str {
    if hit { ">=" } else { "<" }
}

fn duration_text(ms: i64) -> DurationString {
    DurationString(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// A live symbol without an accepted price younger than the data's
/// `maxAge` (see [`CircuitBreakers::on_stale_prices`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalePrice {
    /// The session's symbol, e.g. `BTC-USD`.
    pub symbol: String,
    /// Wall-clock milliseconds since its last accepted price was valid;
    /// `None` when it has had none since the feed started.
    pub age_ms: Option<i64>,
}

/// One breaker's state.
#[derive(Clone, Debug, Default)]
struct Breaker {
    active: bool,
    state: BreakerState,
    /// Market time of the last transition (cooldown starts here when Open).
    changed_at: Option<Timestamp>,
    trips: u32,
    reason: Option<String>,
}

/// One breaker in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BreakerCheckpoint {
    pub name: String,
    pub state: BreakerState,
    pub changed_at: Option<Timestamp>,
    pub trips: u32,
    pub reason: Option<String>,
}

/// What a checkpoint keeps of the breakers (the limits come from the configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BreakersCheckpoint {
    pub breakers: Vec<BreakerCheckpoint>,
    pub day_end_ms: Option<i64>,
    pub failures: u32,
    pub losses: u32,
    pub entries_today: u32,
    pub invalid_ticks: u32,
    pub dd_ref: Option<Decimal>,
    /// dailyLoss reference after a reset, for the rest of the UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_ref: Option<Decimal>,
    pub last_equity: Option<Decimal>,
    pub halted: Option<String>,
    pub trips: u32,
}

/// The session's circuit breakers. See the [module docs](self) for the rules.
#[derive(Clone, Debug)]
pub struct CircuitBreakers {
    limits: BreakerLimits,
    b: [Breaker; KINDS],
    /// First millisecond of the next UTC day (None before the first call).
    day_end_ms: Option<i64>,
    failures: u32,
    losses: u32,
    entries_today: u32,
    invalid_ticks: u32,
    /// maxDrawdown reference after the first re-baseline.
    dd_ref: Option<Decimal>,
    /// dailyLoss reference after a reset by request (equity at the reset),
    /// until the UTC day ends.
    daily_ref: Option<Decimal>,
    last_equity: Option<Decimal>,
    halted: Option<BreakerKind>,
    trips: u32,
}

impl CircuitBreakers {
    /// Breakers for `limits`: one per configured (`Some`) limit, plus
    /// `priceFeed`, all `Closed`.
    pub fn new(limits: &BreakerLimits) -> Self {
        let mut b: [Breaker; KINDS] = Default::default();
        let l = limits;
        let on = [
            l.daily_loss_pct.is_some(),
            l.max_drawdown_pct.is_some(),
            l.max_consecutive_failures.is_some(),
            l.max_consecutive_losses.is_some(),
            l.max_daily_trades.is_some(),
            l.min_balance.is_some(),
            true,
            l.account_max_drawdown_pct.is_some(),
            l.account_daily_loss_pct.is_some(),
        ];
        for (br, on) in b.iter_mut().zip(on) {
            br.active = on;
        }
        Self {
            limits: limits.clone(),
            b,
            day_end_ms: None,
            failures: 0,
            losses: 0,
            entries_today: 0,
            invalid_ticks: 0,
            dd_ref: None,
            daily_ref: None,
            last_equity: None,
            halted: None,
            trips: 0,
        }
    }

    fn state(&self, k: BreakerKind) -> BreakerState {
        self.b[k as usize].state
    }

    /// Everything that decides future transitions and records.
    pub(crate) fn checkpoint(&self) -> BreakersCheckpoint {
        BreakersCheckpoint {
            breakers: BreakerKind::ALL
                .iter()
                .zip(&self.b)
                .map(|(k, b)| BreakerCheckpoint {
                    name: k.name().to_string(),
                    state: b.state,
                    changed_at: b.changed_at,
                    trips: b.trips,
                    reason: b.reason.clone(),
                })
                .collect(),
            day_end_ms: self.day_end_ms,
            failures: self.failures,
            losses: self.losses,
            entries_today: self.entries_today,
            invalid_ticks: self.invalid_ticks,
            dd_ref: self.dd_ref,
            daily_ref: self.daily_ref,
            last_equity: self.last_equity,
            halted: self.halted.map(|k| k.name().to_string()),
            trips: self.trips,
        }
    }

    /// Breakers for `limits` in the state of a checkpoint: the same nine
    /// breakers in [`BreakerKind::ALL`] order, a breaker that does not exist
    /// for these limits only `Closed` (its trips may remain from before a
    /// strategy reload removed it), the trip total equal to the sum, a halt
    /// only by an open kill-switch breaker.
    pub(crate) fn restore(limits: &BreakerLimits, cp: BreakersCheckpoint) -> Result<Self, String> {
        let mut cb = Self::new(limits);
        if cp.breakers.len() != KINDS {
            return Err(format!(
                "breakers.breakers has {} entries, expected {KINDS}",
                cp.breakers.len()
            ));
        }
        let mut sum = 0u64;
        for (i, (k, b)) in BreakerKind::ALL.iter().zip(cp.breakers).enumerate() {
            if b.name != k.name() {
                return Err(format!(
                    "breakers.breakers[{i}] is {:?}, expected {:?}",
                    b.name,
                    k.name()
                ));
            }
            let br = &mut cb.b[*k as usize];
            if !br.active && b.state != BreakerState::Closed {
                return Err(format!(
                    "breakers.breakers[{i}] ({}) is not configured but has state {}",
                    b.name,
                    state_name(b.state),
                ));
            }
            if k.is_kill_switch() && b.state == BreakerState::HalfOpen {
                return Err(format!(
                    "breakers.breakers[{i}] ({}) is a kill switch and never half-open",
                    b.name
                ));
            }
            sum += u64::from(b.trips);
            br.state = b.state;
            br.changed_at = b.changed_at;
            br.trips = b.trips;
            br.reason = b.reason;
        }
        if sum != u64::from(cp.trips) {
            return Err(format!(
                "breakers.trips {} is not the sum of the breakers' trips ({sum})",
                cp.trips
            ));
        }
        cb.halted = match cp.halted.as_deref() {
            None => None,
            Some(name) => {
                let k = BreakerKind::ALL
                    .into_iter()
                    .find(|k| k.is_kill_switch() && k.name() == name)
                    .ok_or_else(|| {
                        format!(
                            "breakers.halted {name:?} is not a kill-switch breaker (expected accountMaxDrawdown or accountDailyLoss)"
                        )
                    })?;
                if cb.state(k) != BreakerState::Open {
                    return Err(format!("breakers.halted names {name} but it is not open"));
                }
                Some(k)
            }
        };
        cb.day_end_ms = cp.day_end_ms;
        cb.failures = cp.failures;
        cb.losses = cp.losses;
        cb.entries_today = cp.entries_today;
        cb.invalid_ticks = cp.invalid_ticks;
        cb.dd_ref = cp.dd_ref;
        cb.daily_ref = cp.daily_ref;
        cb.last_equity = cp.last_equity;
        cb.trips = cp.trips;
        Ok(cb)
    }

    fn active(&self, k: BreakerKind) -> bool {
        self.b[k as usize].active
    }

    /// Move `k` to `to`, recording why.
    fn go(
        &mut self,
        k: BreakerKind,
        now: Timestamp,
        to: BreakerState,
        reason: String,
        out: &mut Vec<BreakerEventRecord>,
    ) {
        let br = &mut self.b[k as usize];
        let from = br.state;
        br.state = to;
        br.changed_at = Some(now);
        if to == BreakerState::Open {
            br.trips = br.trips.saturating_add(1);
        }
        out.push(BreakerEventRecord {
            time: now,
            breaker: k.name().to_string(),
            from_state: state_name(from).to_string(),
            to_state: state_name(to).to_string(),
            reason: reason.clone(),
        });
        br.reason = Some(reason);
        if to == BreakerState::Open {
            self.trips = self.trips.saturating_add(1);
            if k.is_kill_switch() && self.halted.is_none() {
                self.halted = Some(k);
            }
        }
        if to == BreakerState::Closed {
            match k {
                BreakerKind::ConsecutiveFailures => self.failures = 0,
                BreakerKind::ConsecutiveLosses => self.losses = 0,
                BreakerKind::PriceFeed => self.invalid_ticks = 0,
                _ => {}
            }
        }
    }

    /// The common "condition per bar" rule: Closed + hit → Open,
    /// HalfOpen + hit → Open, HalfOpen + !hit → Closed.
    fn judge(
        &mut self,
        k: BreakerKind,
        now: Timestamp,
        hit: bool,
        reason: impl FnOnce(bool) -> String,
        out: &mut Vec<BreakerEventRecord>,
    ) {
        let to = match (self.state(k), hit) {
            (BreakerState::Closed | BreakerState::HalfOpen, true) => BreakerState::Open,
            (BreakerState::HalfOpen, false) => BreakerState::Closed,
            _ => return,
        };
        self.go(k, now, to, reason(hit), out);
    }

    /// Notice a new UTC day (a comparison per call; a division only when the
    /// day changes).
    fn roll_day(&mut self, now: Timestamp, out: &mut Vec<BreakerEventRecord>) {
        match self.day_end_ms {
            Some(end) if now.millis() < end => return,
            None => {
                self.day_end_ms = Some(now.utc_day().saturating_add(1).saturating_mul(MS_PER_DAY));
                return;
            }
            Some(_) => {}
        }
        self.day_end_ms = Some(now.utc_day().saturating_add(1).saturating_mul(MS_PER_DAY));
        self.entries_today = 0;
        self.daily_ref = None;
        for k in [BreakerKind::DailyLoss, BreakerKind::DailyTradeCap] {
            if self.state(k) != BreakerState::Closed {
                self.go(k, now, BreakerState::Closed, "new UTC day".into(), out);
            }
        }
    }

    /// Per bar, after marking to market. `equity`, `peak` (highest equity so
    /// far) and `day_start` (equity at the first bar of the current UTC day)
    /// are in the quote currency. Checks `dailyLoss`, `maxDrawdown`,
    /// `minBalance` and the account kill switch.
    pub fn on_equity(
        &mut self,
        now: Timestamp,
        equity: Decimal,
        peak: Decimal,
        day_start: Decimal,
        out: &mut Vec<BreakerEventRecord>,
    ) {
        self.roll_day(now, out);
        self.last_equity = Some(equity);
        if let Some(r) = &mut self.dd_ref
            && equity > *r
        {
            *r = equity;
        }

        if let Some(limit) = self.limits.daily_loss_pct
            && self.state(BreakerKind::DailyLoss) != BreakerState::Open
        {
            let (base, which) = match self.daily_ref {
                Some(r) => (r, "equity at the reset"),
                None => (day_start, "day-start equity"),
            };
            let hit = loss_reached(base, equity, limit);
            self.judge(
                BreakerKind::DailyLoss,
                now,
                hit,
                |hit| {
                    format!(
                        "loss today {}% of {which} {} {} limit {}%",
                        pct_of(base, equity),
                        base.normalize(),
                        cmp_word(hit),
                        limit.normalize()
                    )
                },
                out,
            );
        }

        if let Some(limit) = self.limits.max_drawdown_pct {
            let st = self.state(BreakerKind::MaxDrawdown);
            let reference = self.dd_ref.unwrap_or(peak);
            if st != BreakerState::Open && loss_reached(reference, equity, limit) {
                let which = if self.dd_ref.is_some() {
                    "re-baselined peak"
                } else {
                    "peak"
                };
                let reason = format!(
                    "drawdown {}% from {which} {} >= limit {}%",
                    pct_of(reference, equity),
                    reference.normalize(),
                    limit.normalize()
                );
                self.go(
                    BreakerKind::MaxDrawdown,
                    now,
                    BreakerState::Open,
                    reason,
                    out,
                );
            }
        }

        if let Some(min) = self.limits.min_balance
            && self.state(BreakerKind::MinBalance) != BreakerState::Open
        {
            self.judge(
                BreakerKind::MinBalance,
                now,
                equity < min,
                |hit| {
                    let w = if hit { "<" } else { ">=" };
                    format!(
                        "equity {} {w} minimum balance {}",
                        equity.normalize(),
                        min.normalize()
                    )
                },
                out,
            );
        }

        if let Some(limit) = self.limits.account_max_drawdown_pct
            && self.state(BreakerKind::AccountMaxDrawdown) == BreakerState::Closed
            && loss_reached(peak, equity, limit)
        {
            let reason = format!(
                "account kill switch: drawdown {}% from peak {} >= limit {}%",
                pct_of(peak, equity),
                peak.normalize(),
                limit.normalize()
            );
            self.go(
                BreakerKind::AccountMaxDrawdown,
                now,
                BreakerState::Open,
                reason,
                out,
            );
        }

        if let Some(limit) = self.limits.account_daily_loss_pct
            && self.state(BreakerKind::AccountDailyLoss) == BreakerState::Closed
            && loss_reached(day_start, equity, limit)
        {
            let reason = format!(
                "account kill switch: loss today {}% of day-start equity {} >= limit {}%",
                pct_of(day_start, equity),
                day_start.normalize(),
                limit.normalize()
            );
            self.go(
                BreakerKind::AccountDailyLoss,
                now,
                BreakerState::Open,
                reason,
                out,
            );
        }
    }

    /// Each order attempt (entries and exits): `ok` = it executed. Drives
    /// `consecutiveFailures`.
    pub fn on_execution(&mut self, now: Timestamp, ok: bool, out: &mut Vec<BreakerEventRecord>) {
        self.roll_day(now, out);
        let Some(limit) = self.limits.max_consecutive_failures else {
            return;
        };
        let k = BreakerKind::ConsecutiveFailures;
        if ok {
            self.failures = 0;
            if self.state(k) == BreakerState::HalfOpen {
                self.go(
                    k,
                    now,
                    BreakerState::Closed,
                    "execution succeeded while half-open".into(),
                    out,
                );
            }
            return;
        }
        self.failures = self.failures.saturating_add(1);
        match self.state(k) {
            BreakerState::Closed if self.failures >= limit => {
                let reason = format!(
                    "{} failed executions in a row >= limit {limit}",
                    self.failures
                );
                self.go(k, now, BreakerState::Open, reason, out);
            }
            BreakerState::HalfOpen => {
                self.go(
                    k,
                    now,
                    BreakerState::Open,
                    "execution failed while half-open".into(),
                    out,
                );
            }
            _ => {}
        }
    }

    /// Each closed position, `pnl` in the quote currency (fees included).
    /// Drives `consecutiveLosses` and closes a half-open `maxDrawdown` on a win.
    pub fn on_round_trip(
        &mut self,
        now: Timestamp,
        pnl: Decimal,
        out: &mut Vec<BreakerEventRecord>,
    ) {
        self.roll_day(now, out);
        let win = pnl > Decimal::ZERO;
        let loss = pnl < Decimal::ZERO;

        if let Some(limit) = self.limits.max_consecutive_losses {
            let k = BreakerKind::ConsecutiveLosses;
            if loss {
                self.losses = self.losses.saturating_add(1);
                match self.state(k) {
                    BreakerState::Closed if self.losses >= limit => {
                        let reason = format!(
                            "{} losing round trips in a row >= limit {limit}",
                            self.losses
                        );
                        self.go(k, now, BreakerState::Open, reason, out);
                    }
                    BreakerState::HalfOpen => {
                        let reason = format!(
                            "losing round trip (pnl {}) while half-open",
                            pnl.normalize()
                        );
                        self.go(k, now, BreakerState::Open, reason, out);
                    }
                    _ => {}
                }
            } else {
                self.losses = 0;
                if win && self.state(k) == BreakerState::HalfOpen {
                    let reason = format!("winning round trip (pnl {})", pnl.normalize());
                    self.go(k, now, BreakerState::Closed, reason, out);
                }
            }
        }

        if win && self.state(BreakerKind::MaxDrawdown) == BreakerState::HalfOpen {
            let reason = format!("winning round trip (pnl {})", pnl.normalize());
            self.go(
                BreakerKind::MaxDrawdown,
                now,
                BreakerState::Closed,
                reason,
                out,
            );
        }
    }

    /// Each entry fill. Drives `dailyTradeCap`: it opens when the entries of
    /// the UTC day reach `max_daily_trades` (so exactly that many are allowed).
    pub fn on_entry(&mut self, now: Timestamp, out: &mut Vec<BreakerEventRecord>) {
        self.roll_day(now, out);
        self.entries_today = self.entries_today.saturating_add(1);
        if let Some(cap) = self.limits.max_daily_trades
            && self.state(BreakerKind::DailyTradeCap) == BreakerState::Closed
            && self.entries_today >= cap
        {
            let reason = format!("{} entries today >= limit {cap}", self.entries_today);
            self.go(
                BreakerKind::DailyTradeCap,
                now,
                BreakerState::Open,
                reason,
                out,
            );
        }
    }

    /// Each incoming candle: `valid` = false for a rejected tick; `gap_ms` =
    /// milliseconds since the symbol's previous candle (None for its first);
    /// `interval_ms` = candle length. A valid tick is stale when `gap_ms` is
    /// above `max_data_gap_ms` (default 5 × `interval_ms`). Drives `priceFeed`.
    pub fn on_feed(
        &mut self,
        now: Timestamp,
        valid: bool,
        gap_ms: Option<i64>,
        interval_ms: i64,
        out: &mut Vec<BreakerEventRecord>,
    ) {
        self.roll_day(now, out);
        let k = BreakerKind::PriceFeed;
        let st = self.state(k);
        if !valid {
            self.invalid_ticks = self.invalid_ticks.saturating_add(1);
            let limit = self.limits.max_invalid_ticks;
            match st {
                BreakerState::Closed if self.invalid_ticks >= limit => {
                    let reason = format!(
                        "{} invalid ticks in a row >= limit {limit}",
                        self.invalid_ticks
                    );
                    self.go(k, now, BreakerState::Open, reason, out);
                }
                BreakerState::HalfOpen => {
                    self.go(
                        k,
                        now,
                        BreakerState::Open,
                        "invalid tick while half-open".into(),
                        out,
                    );
                }
                _ => {}
            }
            return;
        }
        self.invalid_ticks = 0;
        let limit = self
            .limits
            .max_data_gap_ms
            .unwrap_or_else(|| interval_ms.saturating_mul(5));
        let stale = matches!(gap_ms, Some(g) if g > limit);
        let reason = |stale: bool| {
            let g = gap_ms.unwrap_or(0);
            if stale {
                format!(
                    "data gap {} > limit {}",
                    duration_text(g),
                    duration_text(limit)
                )
            } else {
                "valid tick within the data-gap limit".to_string()
            }
        };
        match st {
            BreakerState::Closed if stale => {
                self.go(k, now, BreakerState::Open, reason(true), out);
            }
            BreakerState::HalfOpen => {
                let to = if stale {
                    BreakerState::Open
                } else {
                    BreakerState::Closed
                };
                self.go(k, now, to, reason(stale), out);
            }
            _ => {}
        }
    }

    /// Live prices went stale (wall clock): each of `stale` has had no
    /// accepted price for longer than `max_age_ms` (its `age_ms`). Trips
    /// `priceFeed` at once from `Closed` or `HalfOpen` (a stale tick while
    /// half-open), with a reason naming each symbol, its age and the limit;
    /// an `Open` breaker stays as it is (no event). Recovery follows the
    /// normal rule: cooldown, then the next valid, non-stale candle closes
    /// it. Returns whether it tripped. An empty `stale` does nothing.
    pub fn on_stale_prices(
        &mut self,
        now: Timestamp,
        stale: &[StalePrice],
        max_age_ms: i64,
        out: &mut Vec<BreakerEventRecord>,
    ) -> bool {
        let k = BreakerKind::PriceFeed;
        if stale.is_empty() || self.state(k) == BreakerState::Open {
            return false;
        }
        let which: Vec<String> = stale
            .iter()
            .map(|p| match p.age_ms {
                Some(age) => format!("{} last price {} old", p.symbol, duration_text(age)),
                None => format!("{} no price yet", p.symbol),
            })
            .collect();
        let reason = format!(
            "stale price: {} > maxAge {}",
            which.join(", "),
            duration_text(max_age_ms)
        );
        self.go(k, now, BreakerState::Open, reason, out);
        true
    }

    /// Advance market time: UTC-day rollover, then cooldown expiry
    /// (`Open` → `HalfOpen` once `now − opened >= cooldown_ms`). Call once per
    /// bar before the other methods.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<BreakerEventRecord>) {
        self.roll_day(now, out);
        let cooldown = self.limits.cooldown_ms;
        for k in BreakerKind::ALL {
            let br = &self.b[k as usize];
            if br.state != BreakerState::Open || !k.cools_down() {
                continue;
            }
            let opened = br.changed_at.map_or(i64::MIN, Timestamp::millis);
            if now.millis().saturating_sub(opened) < cooldown {
                continue;
            }
            let mut reason = format!("cooldown {} elapsed", duration_text(cooldown));
            if k == BreakerKind::MaxDrawdown
                && let Some(e) = self.last_equity
            {
                self.dd_ref = Some(e);
                reason.push_str(&format!(
                    "; drawdown re-baselined at equity {}",
                    e.normalize()
                ));
            }
            self.go(k, now, BreakerState::HalfOpen, reason, out);
        }
    }

    /// The first `Open` breaker (in [`BreakerKind::ALL`] order), which blocks
    /// new entries; `None` when all are `Closed` or `HalfOpen`. No allocation.
    pub fn entry_block(&self) -> Option<BreakerKind> {
        BreakerKind::ALL
            .into_iter()
            .zip(&self.b)
            .find(|(_, b)| b.state == BreakerState::Open)
            .map(|(k, _)| k)
    }

    /// The account kill-switch breaker that tripped first, if any: the
    /// session must liquidate and stop. Stays set for the rest of the session.
    pub fn halted(&self) -> Option<BreakerKind> {
        self.halted
    }

    /// State of each existing breaker, in [`BreakerKind::ALL`] order, for
    /// `BotSession.status.breakers` and the summary (`since` = RFC 3339 market
    /// time of the last transition).
    pub fn statuses(&self) -> Vec<BreakerStatus> {
        BreakerKind::ALL
            .into_iter()
            .zip(&self.b)
            .filter(|(_, b)| b.active)
            .map(|(k, b)| BreakerStatus {
                name: k.name().to_string(),
                state: b.state,
                trips: b.trips,
                reason: b.reason.clone(),
                since: b.changed_at.map(Timestamp::to_rfc3339),
            })
            .collect()
    }

    /// Close breaker `kind` by request (reason [`RESET_REASON`], at market
    /// time `now`), so that new entries are allowed again; the transition is
    /// pushed to `out` like any other and is not a trip. Returns the state
    /// the breaker had: `Closed` means there was nothing to reset (nothing is
    /// recorded).
    ///
    /// So that the breaker does not re-trip on the very next bar, its
    /// measure restarts from now:
    ///
    /// | breaker | after a reset |
    /// |---|---|
    /// | `dailyLoss` | the loss is measured from the equity at the reset until the UTC day ends |
    /// | `maxDrawdown` | the drawdown is measured from the equity at the reset, following new highs (as after a cooldown) |
    /// | `consecutiveFailures`, `consecutiveLosses`, `priceFeed` | the run restarts at 0 |
    /// | `dailyTradeCap` | the day's entry count restarts at 0 (another full cap of entries today) |
    /// | `minBalance` | nothing to re-baseline: it trips again at the next bar while equity is below the minimum |
    ///
    /// # Errors
    /// The kill-switch breakers (`accountMaxDrawdown`, `accountDailyLoss`)
    /// halt the session when they trip and cannot be reset here; a breaker
    /// that is not configured does not exist. Both give a message naming the
    /// breaker.
    pub fn reset(
        &mut self,
        kind: BreakerKind,
        now: Timestamp,
        out: &mut Vec<BreakerEventRecord>,
    ) -> Result<BreakerState, String> {
        if !self.active(kind) {
            return Err(format!("breaker {} is not configured", kind.name()));
        }
        if kind.is_kill_switch() {
            return Err(format!(
                "breaker {} is an account kill switch: it halts the session and is reset on the \
                 account, not on a session",
                kind.name()
            ));
        }
        let was = self.state(kind);
        if was == BreakerState::Closed {
            return Ok(was);
        }
        match kind {
            BreakerKind::DailyLoss => self.daily_ref = self.last_equity,
            BreakerKind::MaxDrawdown => {
                if let Some(e) = self.last_equity {
                    self.dd_ref = Some(e);
                }
            }
            BreakerKind::DailyTradeCap => self.entries_today = 0,
            _ => {}
        }
        self.go(kind, now, BreakerState::Closed, RESET_REASON.into(), out);
        Ok(was)
    }

    /// Take new limits (a strategy reload), keeping every breaker's state,
    /// trips and runs. A breaker the new limits no longer configure stops
    /// existing; if it was not `Closed` it is closed first with reason
    /// [`REMOVED_REASON`] (pushed to `out`). A newly configured breaker
    /// starts `Closed`. The new limits apply from the next bar.
    pub fn reconfigure(
        &mut self,
        limits: &BreakerLimits,
        now: Timestamp,
        out: &mut Vec<BreakerEventRecord>,
    ) {
        let fresh = Self::new(limits);
        for k in BreakerKind::ALL {
            let keep = fresh.active(k);
            if self.active(k) && !keep && self.state(k) != BreakerState::Closed {
                self.go(k, now, BreakerState::Closed, REMOVED_REASON.into(), out);
            }
            self.b[k as usize].active = keep;
        }
        self.limits = limits.clone();
    }

    /// Trips (transitions to `Open`, re-opens from `HalfOpen` included) of all
    /// breakers so far.
    pub fn trips(&self) -> u32 {
        self.trips
    }

    /// Current state of `kind` (`Closed` for a breaker that does not exist).
    pub fn state_of(&self, kind: BreakerKind) -> BreakerState {
        self.state(kind)
    }

    /// Whether `kind` exists (its limit is configured; `priceFeed` always).
    pub fn exists(&self, kind: BreakerKind) -> bool {
        self.active(kind)
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    /// 2022-01-01T00:00:00Z.
    const T0: i64 = 1_640_995_200_000;
    const MIN: i64 = 60_000;

    fn t(minutes: i64) -> Timestamp {
        Timestamp(T0 + minutes * MIN)
    }

    fn limits() -> BreakerLimits {
        BreakerLimits {
            max_invalid_ticks: 3,
            cooldown_ms: 15 * MIN,
            ..Default::default()
        }
    }

    fn ev(time: Timestamp, name: &str, from: &str, to: &str, reason: &str) -> BreakerEventRecord {
        BreakerEventRecord {
            time,
            breaker: name.into(),
            from_state: from.into(),
            to_state: to.into(),
            reason: reason.into(),
        }
    }

    /// Runs `f` with a fresh output vector and returns what it pushed.
    fn run(
        cb: &mut CircuitBreakers,
        f: impl FnOnce(&mut CircuitBreakers, &mut Vec<BreakerEventRecord>),
    ) -> Vec<BreakerEventRecord> {
        let mut out = Vec::new();
        f(cb, &mut out);
        out
    }

    #[test]
    fn only_configured_breakers_exist_and_price_feed_always_does() {
        let cb = CircuitBreakers::new(&limits());
        let names: Vec<_> = cb.statuses().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["priceFeed"]);

        let all = BreakerLimits {
            daily_loss_pct: Some(dec!(5)),
            max_drawdown_pct: Some(dec!(10)),
            max_consecutive_failures: Some(3),
            max_consecutive_losses: Some(3),
            max_daily_trades: Some(5),
            min_balance: Some(dec!(100)),
            account_max_drawdown_pct: Some(dec!(20)),
            account_daily_loss_pct: Some(dec!(10)),
            ..limits()
        };
        let cb = CircuitBreakers::new(&all);
        let st = cb.statuses();
        let names: Vec<_> = st.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dailyLoss",
                "maxDrawdown",
                "consecutiveFailures",
                "consecutiveLosses",
                "dailyTradeCap",
                "minBalance",
                "priceFeed",
                "accountMaxDrawdown",
                "accountDailyLoss"
            ]
        );
        assert!(
            st.iter()
                .all(|s| s.state == BreakerState::Closed && s.trips == 0)
        );
        assert_eq!(cb.entry_block(), None);
        assert_eq!(cb.halted(), None);
    }

    #[test]
    fn daily_loss_trips_once_and_stays_open_for_the_day() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            daily_loss_pct: Some(dec!(5)),
            ..limits()
        });
        let ds = dec!(10000);
        let out = run(&mut cb, |c, o| {
            c.tick(t(0), o);
            c.on_equity(t(0), ds, ds, ds, o);
            c.on_equity(t(1), dec!(9501), ds, ds, o);
        });
        assert!(out.is_empty());

        let out = run(&mut cb, |c, o| c.on_equity(t(2), dec!(9470), ds, ds, o));
        assert_eq!(
            out,
            [ev(
                t(2),
                "dailyLoss",
                "Closed",
                "Open",
                "loss today 5.3% of day-start equity 10000 >= limit 5%"
            )]
        );
        assert_eq!(cb.entry_block(), Some(BreakerKind::DailyLoss));
        assert_eq!(cb.halted(), None);

        // A daily limit: no cooldown, no half-open. It stays open for the rest
        // of the UTC day even when the loss shrinks, and trips only once.
        let out = run(&mut cb, |c, o| {
            for m in [16, 17, 60, 23 * 60] {
                c.tick(t(m), o);
                c.on_equity(t(m), dec!(9900), ds, ds, o);
            }
        });
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(cb.entry_block(), Some(BreakerKind::DailyLoss));
        assert_eq!(cb.trips(), 1);
        let st = &cb.statuses()[0];
        assert_eq!(st.state, BreakerState::Open);
        assert_eq!(st.since.as_deref(), Some("2022-01-01T00:02:00Z"));
    }

    #[test]
    fn daily_loss_closes_at_utc_day_rollover() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            daily_loss_pct: Some(dec!(5)),
            cooldown_ms: 24 * 60 * MIN,
            ..limits()
        });
        let ds = dec!(10000);
        let out = run(&mut cb, |c, o| {
            c.tick(t(23 * 60 + 50), o);
            c.on_equity(t(23 * 60 + 50), dec!(9000), ds, ds, o);
            c.tick(t(23 * 60 + 59), o);
        });
        assert_eq!(out.len(), 1);
        assert_eq!(cb.entry_block(), Some(BreakerKind::DailyLoss));

        let out = run(&mut cb, |c, o| {
            c.tick(t(24 * 60), o);
            // The engine's new day starts from the current equity.
            c.on_equity(t(24 * 60), dec!(9000), ds, dec!(9000), o);
        });
        assert_eq!(
            out,
            [ev(t(24 * 60), "dailyLoss", "Open", "Closed", "new UTC day")]
        );
        assert_eq!(cb.entry_block(), None);
    }

    #[test]
    fn max_drawdown_rebaselines_in_half_open_and_closes_on_a_win() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            max_drawdown_pct: Some(dec!(10)),
            ..limits()
        });
        let peak = dec!(10000);
        let out = run(&mut cb, |c, o| {
            c.tick(t(0), o);
            c.on_equity(t(0), peak, peak, peak, o);
            c.on_equity(t(1), dec!(9001), peak, peak, o);
            c.on_equity(t(2), dec!(9000), peak, peak, o);
        });
        assert_eq!(
            out,
            [ev(
                t(2),
                "maxDrawdown",
                "Closed",
                "Open",
                "drawdown 10% from peak 10000 >= limit 10%"
            )]
        );
        assert_eq!(cb.entry_block(), Some(BreakerKind::MaxDrawdown));

        let out = run(&mut cb, |c, o| c.tick(t(17), o));
        assert_eq!(
            out,
            [ev(
                t(17),
                "maxDrawdown",
                "Open",
                "HalfOpen",
                "cooldown 15m elapsed; drawdown re-baselined at equity 9000"
            )]
        );
        // 15% below the old peak, but only 5.6% below the new baseline; a
        // losing round trip does not re-open it.
        let out = run(&mut cb, |c, o| {
            c.on_equity(t(17), dec!(8500), peak, peak, o);
            c.on_round_trip(t(18), dec!(-5), o);
        });
        assert!(out.is_empty());
        assert_eq!(cb.entry_block(), None);

        let out = run(&mut cb, |c, o| c.on_round_trip(t(19), dec!(20), o));
        assert_eq!(
            out,
            [ev(
                t(19),
                "maxDrawdown",
                "HalfOpen",
                "Closed",
                "winning round trip (pnl 20)"
            )]
        );
        // Closed again: measured from the re-baselined reference, not the old peak.
        let out = run(&mut cb, |c, o| {
            c.on_equity(t(20), dec!(8600), peak, peak, o)
        });
        assert!(out.is_empty());
        let out = run(&mut cb, |c, o| {
            c.on_equity(t(21), dec!(8100), peak, peak, o)
        });
        assert_eq!(
            out,
            [ev(
                t(21),
                "maxDrawdown",
                "Closed",
                "Open",
                "drawdown 10% from re-baselined peak 9000 >= limit 10%"
            )]
        );
        // Half-open then a further 10% fall from the new baseline re-opens it.
        let out = run(&mut cb, |c, o| {
            c.tick(t(36), o);
            c.on_equity(t(36), dec!(7290), peak, peak, o);
        });
        assert_eq!(
            out,
            [
                ev(
                    t(36),
                    "maxDrawdown",
                    "Open",
                    "HalfOpen",
                    "cooldown 15m elapsed; drawdown re-baselined at equity 8100"
                ),
                ev(
                    t(36),
                    "maxDrawdown",
                    "HalfOpen",
                    "Open",
                    "drawdown 10% from re-baselined peak 8100 >= limit 10%"
                )
            ]
        );
        assert_eq!(cb.trips(), 3);
    }

    #[test]
    fn consecutive_failures_count_runs_and_probe_in_half_open() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            max_consecutive_failures: Some(3),
            ..limits()
        });
        let out = run(&mut cb, |c, o| {
            for ok in [false, false, true, false, false] {
                c.on_execution(t(1), ok, o);
            }
        });
        assert!(out.is_empty(), "a success resets the run");
        let out = run(&mut cb, |c, o| c.on_execution(t(2), false, o));
        assert_eq!(
            out,
            [ev(
                t(2),
                "consecutiveFailures",
                "Closed",
                "Open",
                "3 failed executions in a row >= limit 3"
            )]
        );
        assert_eq!(cb.entry_block(), Some(BreakerKind::ConsecutiveFailures));

        let out = run(&mut cb, |c, o| {
            c.tick(t(17), o);
            c.on_execution(t(17), false, o);
            c.tick(t(31), o);
            c.tick(t(32), o);
            c.on_execution(t(32), true, o);
        });
        assert_eq!(
            out,
            [
                ev(
                    t(17),
                    "consecutiveFailures",
                    "Open",
                    "HalfOpen",
                    "cooldown 15m elapsed"
                ),
                ev(
                    t(17),
                    "consecutiveFailures",
                    "HalfOpen",
                    "Open",
                    "execution failed while half-open"
                ),
                ev(
                    t(32),
                    "consecutiveFailures",
                    "Open",
                    "HalfOpen",
                    "cooldown 15m elapsed"
                ),
                ev(
                    t(32),
                    "consecutiveFailures",
                    "HalfOpen",
                    "Closed",
                    "execution succeeded while half-open"
                ),
            ]
        );
        let out = run(&mut cb, |c, o| {
            c.on_execution(t(33), false, o);
            c.on_execution(t(33), false, o);
        });
        assert!(out.is_empty(), "the run restarted when it closed");
    }

    #[test]
    fn consecutive_losses_trip_and_half_open_needs_a_win() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            max_consecutive_losses: Some(2),
            ..limits()
        });
        let out = run(&mut cb, |c, o| {
            c.on_round_trip(t(1), dec!(-1), o);
            c.on_round_trip(t(2), dec!(3), o);
            c.on_round_trip(t(3), dec!(-1), o);
            c.on_round_trip(t(4), dec!(0), o);
            c.on_round_trip(t(5), dec!(-1), o);
        });
        assert!(out.is_empty(), "wins and break-evens end the run");
        let out = run(&mut cb, |c, o| c.on_round_trip(t(6), dec!(-2.5), o));
        assert_eq!(
            out,
            [ev(
                t(6),
                "consecutiveLosses",
                "Closed",
                "Open",
                "2 losing round trips in a row >= limit 2"
            )]
        );
        let out = run(&mut cb, |c, o| {
            c.tick(t(21), o);
            c.on_round_trip(t(22), dec!(0), o);
            c.on_round_trip(t(23), dec!(-4), o);
            c.tick(t(38), o);
            c.on_round_trip(t(39), dec!(7.25), o);
        });
        assert_eq!(
            out,
            [
                ev(
                    t(21),
                    "consecutiveLosses",
                    "Open",
                    "HalfOpen",
                    "cooldown 15m elapsed"
                ),
                ev(
                    t(23),
                    "consecutiveLosses",
                    "HalfOpen",
                    "Open",
                    "losing round trip (pnl -4) while half-open"
                ),
                ev(
                    t(38),
                    "consecutiveLosses",
                    "Open",
                    "HalfOpen",
                    "cooldown 15m elapsed"
                ),
                ev(
                    t(39),
                    "consecutiveLosses",
                    "HalfOpen",
                    "Closed",
                    "winning round trip (pnl 7.25)"
                ),
            ]
        );
        assert_eq!(cb.entry_block(), None);
    }

    #[test]
    fn daily_trade_cap_stays_open_until_the_next_utc_day() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            max_daily_trades: Some(2),
            ..limits()
        });
        let out = run(&mut cb, |c, o| {
            c.tick(t(60), o);
            c.on_entry(t(60), o);
        });
        assert!(out.is_empty());
        let out = run(&mut cb, |c, o| c.on_entry(t(61), o));
        assert_eq!(
            out,
            [ev(
                t(61),
                "dailyTradeCap",
                "Closed",
                "Open",
                "2 entries today >= limit 2"
            )]
        );
        // Hours later, same day: the cooldown does not apply.
        let out = run(&mut cb, |c, o| c.tick(t(23 * 60), o));
        assert!(out.is_empty());
        assert_eq!(cb.entry_block(), Some(BreakerKind::DailyTradeCap));

        let out = run(&mut cb, |c, o| {
            c.tick(t(24 * 60 + 5), o);
            c.on_entry(t(24 * 60 + 5), o);
        });
        assert_eq!(
            out,
            [ev(
                t(24 * 60 + 5),
                "dailyTradeCap",
                "Open",
                "Closed",
                "new UTC day"
            )]
        );
        assert_eq!(cb.entry_block(), None, "the day's count restarted at 0");
        let out = run(&mut cb, |c, o| c.on_entry(t(24 * 60 + 6), o));
        assert_eq!(out.len(), 1);
        assert_eq!(cb.statuses()[0].trips, 2);
    }

    #[test]
    fn min_balance_half_open_closes_only_with_the_balance_back() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            min_balance: Some(dec!(500)),
            ..limits()
        });
        let e = |c: &mut CircuitBreakers, m: i64, eq: Decimal, o: &mut Vec<_>| {
            c.tick(t(m), o);
            c.on_equity(t(m), eq, dec!(1000), dec!(1000), o);
        };
        let out = run(&mut cb, |c, o| {
            e(c, 0, dec!(500), o);
            e(c, 1, dec!(480), o);
            e(c, 10, dec!(600), o);
            e(c, 16, dec!(490), o);
            e(c, 31, dec!(510.50), o);
        });
        assert_eq!(
            out,
            [
                ev(
                    t(1),
                    "minBalance",
                    "Closed",
                    "Open",
                    "equity 480 < minimum balance 500"
                ),
                ev(
                    t(16),
                    "minBalance",
                    "Open",
                    "HalfOpen",
                    "cooldown 15m elapsed"
                ),
                ev(
                    t(16),
                    "minBalance",
                    "HalfOpen",
                    "Open",
                    "equity 490 < minimum balance 500"
                ),
                ev(
                    t(31),
                    "minBalance",
                    "Open",
                    "HalfOpen",
                    "cooldown 15m elapsed"
                ),
                ev(
                    t(31),
                    "minBalance",
                    "HalfOpen",
                    "Closed",
                    "equity 510.5 >= minimum balance 500"
                ),
            ]
        );
    }

    #[test]
    fn price_feed_trips_on_invalid_runs_and_gaps() {
        let mut cb = CircuitBreakers::new(&limits());
        let out = run(&mut cb, |c, o| {
            // Exactly 5 × the interval is not stale.
            c.on_feed(t(0), true, Some(5 * MIN), MIN, o);
            for valid in [false, false, true, false, false] {
                c.on_feed(t(1), valid, Some(MIN), MIN, o);
            }
            c.on_feed(t(2), false, Some(MIN), MIN, o);
        });
        assert_eq!(
            out,
            [ev(
                t(2),
                "priceFeed",
                "Closed",
                "Open",
                "3 invalid ticks in a row >= limit 3"
            )]
        );
        assert_eq!(cb.entry_block(), Some(BreakerKind::PriceFeed));

        let out = run(&mut cb, |c, o| {
            c.tick(t(17), o);
            c.on_feed(t(17), true, Some(MIN), MIN, o);
            c.on_feed(t(24), true, Some(6 * MIN), MIN, o);
            c.tick(t(39), o);
            c.on_feed(t(39), false, None, MIN, o);
        });
        assert_eq!(
            out,
            [
                ev(
                    t(17),
                    "priceFeed",
                    "Open",
                    "HalfOpen",
                    "cooldown 15m elapsed"
                ),
                ev(
                    t(17),
                    "priceFeed",
                    "HalfOpen",
                    "Closed",
                    "valid tick within the data-gap limit"
                ),
                ev(
                    t(24),
                    "priceFeed",
                    "Closed",
                    "Open",
                    "data gap 6m > limit 5m"
                ),
                ev(
                    t(39),
                    "priceFeed",
                    "Open",
                    "HalfOpen",
                    "cooldown 15m elapsed"
                ),
                ev(
                    t(39),
                    "priceFeed",
                    "HalfOpen",
                    "Open",
                    "invalid tick while half-open"
                ),
            ]
        );

        // An explicit maxDataGap replaces 5 × interval.
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            max_data_gap_ms: Some(2 * MIN),
            ..limits()
        });
        let out = run(&mut cb, |c, o| {
            c.on_feed(t(1), true, Some(2 * MIN), MIN, o);
            c.on_feed(t(4), true, Some(3 * MIN), MIN, o);
        });
        assert_eq!(
            out,
            [ev(
                t(4),
                "priceFeed",
                "Closed",
                "Open",
                "data gap 3m > limit 2m"
            )]
        );
    }

    #[test]
    fn stale_prices_trip_price_feed_once_and_name_every_symbol() {
        let mut cb = CircuitBreakers::new(&limits());
        let stale = [
            StalePrice {
                symbol: "BTC-USD".into(),
                age_ms: Some(2 * MIN + 5000),
            },
            StalePrice {
                symbol: "ETH-USD".into(),
                age_ms: None,
            },
        ];
        let out = run(&mut cb, |c, o| {
            assert!(!c.on_stale_prices(t(1), &[], MIN, o), "nothing stale");
            assert!(c.on_stale_prices(t(2), &stale, MIN, o));
            assert!(!c.on_stale_prices(t(3), &stale, MIN, o), "already open");
        });
        assert_eq!(
            out,
            [ev(
                t(2),
                "priceFeed",
                "Closed",
                "Open",
                "stale price: BTC-USD last price 2m5s old, ETH-USD no price yet > maxAge 1m"
            )]
        );
        assert_eq!(cb.entry_block(), Some(BreakerKind::PriceFeed));
        assert_eq!(cb.trips(), 1);
    }

    #[test]
    fn account_breakers_halt_and_never_half_open() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            account_max_drawdown_pct: Some(dec!(20)),
            account_daily_loss_pct: Some(dec!(10)),
            ..limits()
        });
        let out = run(&mut cb, |c, o| {
            c.tick(t(0), o);
            c.on_equity(t(0), dec!(10000), dec!(12000), dec!(10000), o);
        });
        assert!(
            out.is_empty(),
            "drawdown 16.7% and daily loss 0% are under the limits"
        );
        let out = run(&mut cb, |c, o| {
            c.on_equity(t(1), dec!(8900), dec!(12000), dec!(10000), o)
        });
        assert_eq!(
            out,
            [
                ev(
                    t(1),
                    "accountMaxDrawdown",
                    "Closed",
                    "Open",
                    "account kill switch: drawdown 25.83% from peak 12000 >= limit 20%"
                ),
                ev(
                    t(1),
                    "accountDailyLoss",
                    "Closed",
                    "Open",
                    "account kill switch: loss today 11% of day-start equity 10000 >= limit 10%"
                ),
            ]
        );
        assert_eq!(cb.halted(), Some(BreakerKind::AccountMaxDrawdown));
        assert_eq!(cb.entry_block(), Some(BreakerKind::AccountMaxDrawdown));

        // Days later, equity recovered: still open, still halted, nothing recorded.
        let out = run(&mut cb, |c, o| {
            for d in 1..4 {
                c.tick(t(d * 24 * 60), o);
                c.on_equity(t(d * 24 * 60), dec!(13000), dec!(13000), dec!(13000), o);
            }
        });
        assert!(out.is_empty());
        assert_eq!(cb.halted(), Some(BreakerKind::AccountMaxDrawdown));
        assert!(
            cb.statuses()
                .iter()
                .filter(|s| s.name.starts_with("account"))
                .all(|s| s.state == BreakerState::Open && s.trips == 1)
        );
    }

    #[test]
    fn entry_block_is_none_when_breakers_are_only_half_open() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            max_consecutive_failures: Some(1),
            max_consecutive_losses: Some(1),
            ..limits()
        });
        let mut out = Vec::new();
        cb.on_execution(t(0), false, &mut out);
        cb.on_round_trip(t(5), dec!(-1), &mut out);
        assert_eq!(cb.entry_block(), Some(BreakerKind::ConsecutiveFailures));
        cb.tick(t(15), &mut out);
        assert_eq!(
            cb.state_of(BreakerKind::ConsecutiveFailures),
            BreakerState::HalfOpen
        );
        assert_eq!(cb.entry_block(), Some(BreakerKind::ConsecutiveLosses));
        cb.tick(t(20), &mut out);
        assert_eq!(
            cb.state_of(BreakerKind::ConsecutiveLosses),
            BreakerState::HalfOpen
        );
        assert_eq!(cb.entry_block(), None);
        assert_eq!(out.len(), 4);
        assert_eq!(cb.trips(), 2);
    }

    #[test]
    fn a_restored_set_of_breakers_continues_identically() {
        let lim = BreakerLimits {
            max_drawdown_pct: Some(dec!(10)),
            max_consecutive_failures: Some(2),
            max_consecutive_losses: Some(2),
            max_daily_trades: Some(3),
            account_max_drawdown_pct: Some(dec!(40)),
            ..limits()
        };
        let script = |c: &mut CircuitBreakers, from: i64, o: &mut Vec<BreakerEventRecord>| {
            for m in from..from + 40 {
                c.tick(t(m), o);
                c.on_feed(
                    t(m),
                    m % 11 != 0,
                    Some(if m % 17 == 0 { 9 * MIN } else { MIN }),
                    MIN,
                    o,
                );
                c.on_execution(t(m), m % 3 != 0, o);
                if m % 5 == 0 {
                    c.on_round_trip(t(m), Decimal::from(m % 4) - dec!(2), o);
                    c.on_entry(t(m), o);
                }
                let eq = dec!(10000) - Decimal::from((m * 37) % 1300);
                c.on_equity(t(m), eq, dec!(10000), dec!(10000), o);
            }
        };
        let mut a = CircuitBreakers::new(&lim);
        let mut out = Vec::new();
        script(&mut a, 0, &mut out);
        assert!(a.trips() > 3, "the script trips breakers");
        let json = serde_json::to_string(&a.checkpoint()).unwrap();
        let mut b = CircuitBreakers::restore(&lim, serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(b.statuses(), a.statuses());
        let (mut oa, mut ob) = (Vec::new(), Vec::new());
        script(&mut a, 40, &mut oa);
        script(&mut b, 40, &mut ob);
        assert_eq!(oa, ob);
        assert!(!oa.is_empty());

        // Damaged checkpoints are refused with the field named.
        let mut bad = a.checkpoint();
        bad.trips += 1;
        assert!(
            CircuitBreakers::restore(&lim, bad)
                .unwrap_err()
                .contains("breakers.trips")
        );
        let mut bad = a.checkpoint();
        bad.breakers[5].state = BreakerState::Open; // minBalance is not configured
        assert!(
            CircuitBreakers::restore(&lim, bad)
                .unwrap_err()
                .contains("(minBalance) is not configured")
        );
        let mut bad = a.checkpoint();
        bad.halted = Some("dailyLoss".into());
        assert!(
            CircuitBreakers::restore(&lim, bad)
                .unwrap_err()
                .contains("is not a kill-switch breaker")
        );
    }

    #[test]
    fn non_positive_bases_never_trip() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            daily_loss_pct: Some(dec!(5)),
            max_drawdown_pct: Some(dec!(5)),
            account_daily_loss_pct: Some(dec!(5)),
            account_max_drawdown_pct: Some(dec!(5)),
            ..limits()
        });
        let out = run(&mut cb, |c, o| {
            c.on_equity(t(0), Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, o)
        });
        assert!(out.is_empty());
        assert_eq!(cb.entry_block(), None);
    }

    #[test]
    fn a_reset_closes_the_breaker_and_restarts_its_measure() {
        let mut cb = CircuitBreakers::new(&BreakerLimits {
            daily_loss_pct: Some(dec!(5)),
            max_drawdown_pct: Some(dec!(10)),
            max_daily_trades: Some(1),
            min_balance: Some(dec!(9500)),
            account_max_drawdown_pct: Some(dec!(50)),
            ..limits()
        });
        let ds = dec!(10000);
        run(&mut cb, |c, o| {
            c.on_equity(t(0), ds, ds, ds, o);
            c.on_equity(t(1), dec!(8900), ds, ds, o);
            c.on_entry(t(1), o);
        });
        for k in [
            BreakerKind::DailyLoss,
            BreakerKind::MaxDrawdown,
            BreakerKind::DailyTradeCap,
            BreakerKind::MinBalance,
        ] {
            assert_eq!(cb.state_of(k), BreakerState::Open, "{k:?}");
        }
        let trips = cb.trips();

        let out = run(&mut cb, |c, o| {
            for k in [
                BreakerKind::DailyLoss,
                BreakerKind::MaxDrawdown,
                BreakerKind::DailyTradeCap,
            ] {
                assert_eq!(c.reset(k, t(2), o), Ok(BreakerState::Open));
            }
        });
        assert_eq!(
            out,
            [
                ev(t(2), "dailyLoss", "Open", "Closed", RESET_REASON),
                ev(t(2), "maxDrawdown", "Open", "Closed", RESET_REASON),
                ev(t(2), "dailyTradeCap", "Open", "Closed", RESET_REASON),
            ]
        );
        assert_eq!(cb.trips(), trips, "a reset is not a trip");
        // Closed already: nothing to do, nothing recorded.
        let out = run(&mut cb, |c, o| {
            assert_eq!(
                c.reset(BreakerKind::DailyLoss, t(2), o),
                Ok(BreakerState::Closed)
            );
        });
        assert!(out.is_empty());
        // The measures restart at the reset: the same equity does not re-trip
        // dailyLoss or maxDrawdown, and one more entry is allowed today.
        let out = run(&mut cb, |c, o| {
            c.on_equity(t(3), dec!(8900), ds, ds, o);
            c.on_entry(t(3), o);
        });
        assert!(
            out.iter()
                .all(|e| e.breaker == "minBalance" || e.breaker == "dailyTradeCap"),
            "{out:?}"
        );
        // A further 5 % loss from the reset equity trips dailyLoss again, with
        // the reset equity in the reason.
        let out = run(&mut cb, |c, o| c.on_equity(t(4), dec!(8450), ds, ds, o));
        assert!(
            out.iter().any(|e| e.breaker == "dailyLoss"
                && e.reason == "loss today 5.06% of equity at the reset 8900 >= limit 5%"),
            "{out:?}"
        );
        // The kill switch and unconfigured breakers cannot be reset.
        let mut out = Vec::new();
        let e = cb
            .reset(BreakerKind::AccountMaxDrawdown, t(5), &mut out)
            .unwrap_err();
        assert!(e.contains("account kill switch"), "{e}");
        let e = cb
            .reset(BreakerKind::ConsecutiveLosses, t(5), &mut out)
            .unwrap_err();
        assert_eq!(e, "breaker consecutiveLosses is not configured");
        assert!(out.is_empty());
        // The reset survives a checkpoint.
        let json = serde_json::to_string(&cb.checkpoint()).unwrap();
        let back =
            CircuitBreakers::restore(&cb.limits.clone(), serde_json::from_str(&json).unwrap())
                .unwrap();
        assert_eq!(back.statuses(), cb.statuses());
        assert_eq!(back.checkpoint(), cb.checkpoint());
    }

    #[test]
    fn reconfigure_keeps_states_and_closes_removed_breakers() {
        let lim = BreakerLimits {
            daily_loss_pct: Some(dec!(5)),
            max_consecutive_losses: Some(1),
            ..limits()
        };
        let mut cb = CircuitBreakers::new(&lim);
        let ds = dec!(10000);
        run(&mut cb, |c, o| {
            c.on_equity(t(0), ds, ds, ds, o);
            c.on_equity(t(1), dec!(9000), ds, ds, o);
            c.on_round_trip(t(1), dec!(-1), o);
        });
        assert_eq!(cb.state_of(BreakerKind::DailyLoss), BreakerState::Open);
        assert_eq!(
            cb.state_of(BreakerKind::ConsecutiveLosses),
            BreakerState::Open
        );
        let new = BreakerLimits {
            daily_loss_pct: Some(dec!(20)),
            min_balance: Some(dec!(1)),
            ..limits()
        };
        let out = run(&mut cb, |c, o| c.reconfigure(&new, t(2), o));
        assert_eq!(
            out,
            [ev(
                t(2),
                "consecutiveLosses",
                "Open",
                "Closed",
                REMOVED_REASON
            )]
        );
        let names: Vec<_> = cb
            .statuses()
            .into_iter()
            .map(|s| (s.name, s.state))
            .collect();
        assert_eq!(
            names,
            [
                ("dailyLoss".to_string(), BreakerState::Open),
                ("minBalance".to_string(), BreakerState::Closed),
                ("priceFeed".to_string(), BreakerState::Closed),
            ]
        );
        // The removed breaker's trips stay counted and restore accepts them.
        assert_eq!(cb.trips(), 2);
        let json = serde_json::to_string(&cb.checkpoint()).unwrap();
        let back = CircuitBreakers::restore(&new, serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.statuses(), cb.statuses());
    }
}
