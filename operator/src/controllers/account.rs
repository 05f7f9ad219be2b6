//! PaperAccount controller: aggregates its sessions into the account's
//! status (allocated funds, equity, P&L, ROI, trades, active sessions) and
//! flags an over-allocated account.

use std::sync::Arc;

use kube::{ResourceExt, runtime::controller::Action};
use paperbot_crds::{BotSession, DecimalString, PaperAccount, PaperAccountStatus};
use rust_decimal::Decimal;
use tracing::instrument;

use super::{Context, now, reconcile_status_from_sessions};
use crate::{
    Result,
    conditions::{READY, set_condition},
};

/// Controller name used in metrics and logs.
pub const CONTROLLER: &str = "paperaccount";

/// What of a session its account's status depends on: which account, what
/// it draws (allocation while active) and its reported figures.
/// [`desired_status`] reads nothing else of a session, so a session event
/// that leaves this unchanged does not reconcile the account
/// ([`crate::triggers::on_session`]).
pub fn session_inputs(s: &BotSession) -> impl PartialEq + use<> {
    let st = s.status.as_ref();
    (
        s.spec.account_ref.name.clone(),
        super::botsession::is_active(s).then(|| s.spec.allocation.get()),
        st.and_then(|st| st.equity),
        st.and_then(|st| st.realized_pnl),
        st.and_then(|st| st.unrealized_pnl),
        st.map_or(0, |st| st.trades),
        st.map_or(0, |st| st.round_trips),
        st.and_then(|st| st.win_rate_pct),
        st.and_then(|st| st.breaker.clone()),
    )
}

/// The status an account should have, given its sessions (those of its
/// namespace that reference it). Equity = balance − allocations + Σ session
/// equity (a session without reported equity counts at its allocation).
pub fn desired_status(
    account: &PaperAccount,
    sessions: &[Arc<BotSession>],
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> PaperAccountStatus {
    let name = account.name_any();
    let active: Vec<&BotSession> = sessions
        .iter()
        .map(|s| &**s)
        .filter(|s| s.spec.account_ref.name == name && super::botsession::is_active(s))
        .collect();
    let balance = account.spec.initial_balance.get();
    let allocated: Decimal = active.iter().map(|s| s.spec.allocation.get()).sum();
    let sum = |f: fn(&BotSession) -> Option<Decimal>| -> Decimal {
        active.iter().filter_map(|s| f(s)).sum()
    };
    let session_equity: Decimal = active
        .iter()
        .map(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.equity)
                .map_or(s.spec.allocation.get(), |e| e.get())
        })
        .sum();
    let equity = balance - allocated + session_equity;
    let realized = sum(|s| s.status.as_ref()?.realized_pnl.map(|d| d.get()));
    let unrealized = sum(|s| s.status.as_ref()?.unrealized_pnl.map(|d| d.get()));
    let trades: u64 = active
        .iter()
        .filter_map(|s| s.status.as_ref())
        .map(|st| st.trades)
        .sum();
    let roi = if balance.is_zero() {
        Decimal::ZERO
    } else {
        ((equity - balance) / balance * Decimal::ONE_HUNDRED).round_dp(2)
    };
    // Wins over round trips of all sessions (each session's win rate is
    // wins / round trips × 100).
    let (wins, round_trips) = active
        .iter()
        .filter_map(|s| s.status.as_ref())
        .filter_map(|st| {
            Some((
                st.win_rate_pct?.get() * Decimal::from(st.round_trips),
                st.round_trips,
            ))
        })
        .fold((Decimal::ZERO, 0u64), |(w, n), (wi, ni)| {
            (w + wi, n.saturating_add(ni))
        });
    let open_breakers = active
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.breaker.as_deref())
                .is_some_and(|b| b != crate::conditions::NO_BREAKER)
        })
        .count();
    let mut status = account.status.clone().unwrap_or_default();
    status.win_rate_pct = (round_trips > 0)
        .then(|| DecimalString((wins / Decimal::from(round_trips)).round_dp(2).normalize()));
    status.open_breakers = u32::try_from(open_breakers).unwrap_or(u32::MAX);
    // The account kill switch over the aggregated equity; a new
    // `spec.resetRequest` releases it once.
    let reset = account.spec.reset_request.is_some()
        && account.spec.reset_request != status.observed_reset_request;
    if account.spec.limits.is_some() || status.kill_switch.is_some() {
        let today = now.0.strftime("%Y-%m-%d").to_string();
        status.kill_switch = Some(crate::sync::project::evaluate_kill_switch(
            account.spec.limits.as_ref(),
            status.kill_switch.as_ref(),
            equity,
            &today,
            &now.0.to_string(),
            reset,
        ));
    }
    if reset {
        status.observed_reset_request = account.spec.reset_request.clone();
    }
    status.cash = Some(DecimalString(balance - allocated));
    status.allocated = Some(DecimalString(allocated));
    status.equity = Some(DecimalString(equity.normalize()));
    status.realized_pnl = Some(DecimalString(realized.normalize()));
    status.unrealized_pnl = Some(DecimalString(unrealized.normalize()));
    status.roi_pct = Some(DecimalString(roi.normalize()));
    status.total_trades = trades;
    status.active_sessions = active.len() as u32;
    status.observed_generation = account.metadata.generation;
    let (ok, reason, message) = if allocated > balance {
        (
            false,
            "Overallocated",
            format!(
                "active sessions allocate {allocated} but the balance is {balance}; the newest sessions are refused"
            ),
        )
    } else {
        (
            true,
            "Reconciled",
            format!(
                "{} active session(s) allocate {allocated} of {balance}",
                active.len()
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        READY,
        ok.into(),
        reason,
        &message,
        account.metadata.generation,
        now,
    );
    if let Some(k) = &status.kill_switch {
        let (st, reason, message) = if k.engaged {
            (
                true,
                "LimitPassed",
                format!(
                    "{}; every session of the account is halted until spec.resetRequest changes",
                    k.reason.as_deref().unwrap_or("an account limit was passed")
                ),
            )
        } else {
            (
                false,
                "WithinLimits",
                "the account is within spec.limits".to_string(),
            )
        };
        set_condition(
            &mut status.conditions,
            KILL_SWITCH_ENGAGED,
            st.into(),
            reason,
            &message,
            account.metadata.generation,
            now,
        );
    }
    status
}

/// Condition of a PaperAccount: `True` while its kill switch halts its sessions.
pub const KILL_SWITCH_ENGAGED: &str = "KillSwitchEngaged";

/// Reconcile one PaperAccount.
#[instrument(skip_all, fields(account = %account.name_any()))]
pub async fn reconcile(account: Arc<PaperAccount>, ctx: Arc<Context>) -> Result<Action> {
    let latest = ctx.fresh.clone();
    reconcile_status_from_sessions(
        account,
        ctx,
        CONTROLLER,
        &latest.accounts,
        |a, sessions| desired_status(a, sessions, &now()),
        |a| a.status.as_ref(),
    )
    .await
}
