//! Gauges of the fleet as the operator's stores show it: sessions by phase,
//! open breakers and silent runtimes by account, each account's equity, P&L
//! and distance to its kill switch, and the status-write budget.
//!
//! | name | labels | meaning |
//! |---|---|---|
//! | `paperbot_sessions` | `namespace`, `account`, `phase` | BotSessions by `status.phase` (all 8 phases of every account, 0 included) |
//! | `paperbot_circuit_breakers_open` | `namespace`, `account` | sessions with at least one open circuit breaker |
//! | `paperbot_session_not_reporting` | `namespace`, `account`, `session` | 1 while a polled session's runtime does not answer (`Degraded=True`, reason `RuntimeNotReporting`), else 0; polled sessions only |
//! | `paperbot_account_equity`, `paperbot_account_realized_pnl`, `paperbot_account_unrealized_pnl` | `namespace`, `account` | the account's status figures, base currency |
//! | `paperbot_account_kill_switch_engaged` | `namespace`, `account` | 1 while the kill switch halts the account's sessions (accounts with `spec.limits`) |
//! | `paperbot_account_loss_ratio` | `namespace`, `account`, `limit` | how far equity is below the limit's reference, fraction 0–1: `maxDrawdownPct` below the peak, `dailyLossPct` below the day's first equity |
//! | `paperbot_account_loss_limit_ratio` | `namespace`, `account`, `limit` | the limit itself (`spec.limits.<limit>` / 100), fraction 0–1 |
//! | `paperbot_operator_status_write_budget_per_second` | `controller` | status writes per second the operator allows itself: polled sessions / `--status-sync-interval` for `botsession`, one per object and second for `paperaccount` and `strategyconfig` |
//!
//! The `namespace` label is the object's: scrape the operator with
//! `honor_labels: true` (the chart's ServiceMonitor does) so that the
//! target's own namespace does not replace it.
//!
//! Each controller scope (one namespace, or all) exports its
//! [`FleetSnapshot`]; the gauges show the union of the scopes' latest
//! snapshots, and a series no snapshot has any more is removed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::ResourceExt;
use paperbot_crds::{BotSession, PaperAccount, SessionPhase};
use prometheus::{GaugeVec, Opts, Registry};
use rust_decimal::{Decimal, prelude::ToPrimitive};

use super::{ALL_PHASES, phase_label};
use crate::conditions::{DEGRADED, NO_BREAKER};

/// `limit` label of the drawdown limit (`spec.limits.maxDrawdownPct`).
pub const LIMIT_MAX_DRAWDOWN: &str = "maxDrawdownPct";
/// `limit` label of the daily loss limit (`spec.limits.dailyLossPct`).
pub const LIMIT_DAILY_LOSS: &str = "dailyLossPct";

/// What the fleet gauges need of one BotSession.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionFacts {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.accountRef.name`.
    pub account: String,
    /// `status.phase` (`Pending` before the first status).
    pub phase: SessionPhase,
    /// `status.breaker` names an open breaker.
    pub breaker_open: bool,
    /// The operator polls its runtime ([`crate::sync::needs_poll`]).
    pub polled: bool,
    /// `Degraded=True` with reason `RuntimeNotReporting`.
    pub not_reporting: bool,
}

impl SessionFacts {
    /// The facts of `s` as its cached copy shows them.
    pub fn of(s: &BotSession) -> Self {
        let st = s.status.as_ref();
        Self {
            namespace: s.namespace().unwrap_or_default(),
            name: s.name_any(),
            account: s.spec.account_ref.name.clone(),
            phase: st.map(|st| st.phase).unwrap_or_default(),
            breaker_open: st
                .and_then(|st| st.breaker.as_deref())
                .is_some_and(|b| b != NO_BREAKER),
            polled: crate::sync::needs_poll(s),
            not_reporting: st.is_some_and(|st| {
                st.conditions.iter().any(|c| {
                    c.type_ == DEGRADED && c.status == "True" && c.reason == "RuntimeNotReporting"
                })
            }),
        }
    }
}

/// One account limit: how far equity is below its reference and the limit,
/// both fractions 0–1.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitFacts {
    /// [`LIMIT_MAX_DRAWDOWN`] or [`LIMIT_DAILY_LOSS`].
    pub limit: &'static str,
    /// (reference − equity) / reference, at least 0; `None` before the
    /// kill switch has a reference.
    pub loss: Option<f64>,
    /// The configured limit / 100.
    pub limit_ratio: f64,
}

/// What the fleet gauges need of one PaperAccount.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountFacts {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `status.equity`, base currency (absent before the first status).
    pub equity: Option<f64>,
    /// `status.realizedPnl`, base currency.
    pub realized_pnl: Option<f64>,
    /// `status.unrealizedPnl`, base currency.
    pub unrealized_pnl: Option<f64>,
    /// `status.killSwitch.engaged`; `None` when the account has no limits
    /// and no kill switch status.
    pub kill_switch_engaged: Option<bool>,
    /// Its configured limits.
    pub limits: Vec<LimitFacts>,
}

fn to_f64(d: Decimal) -> Option<f64> {
    d.to_f64()
}

/// (reference − equity) / reference, at least 0; `None` without a positive
/// reference or an equity.
fn loss_below(reference: Option<Decimal>, equity: Option<Decimal>) -> Option<f64> {
    let (r, e) = (reference?, equity?);
    if r <= Decimal::ZERO {
        return None;
    }
    let loss = (r - e).checked_div(r)?;
    to_f64(loss.max(Decimal::ZERO))
}

impl AccountFacts {
    /// The facts of `a` as its cached copy shows them.
    pub fn of(a: &PaperAccount) -> Self {
        let st = a.status.as_ref();
        let equity = st.and_then(|st| st.equity).map(|d| d.get());
        let kill = st.and_then(|st| st.kill_switch.as_ref());
        let mut limits = Vec::new();
        if let Some(l) = &a.spec.limits {
            let hundred = Decimal::ONE_HUNDRED;
            if let Some(max_dd) = l.max_drawdown_pct {
                limits.push(LimitFacts {
                    limit: LIMIT_MAX_DRAWDOWN,
                    loss: loss_below(kill.and_then(|k| k.peak_equity).map(|d| d.get()), equity),
                    limit_ratio: to_f64(max_dd.get() / hundred).unwrap_or(0.0),
                });
            }
            if let Some(daily) = l.daily_loss_pct {
                limits.push(LimitFacts {
                    limit: LIMIT_DAILY_LOSS,
                    loss: loss_below(
                        kill.and_then(|k| k.day_start_equity).map(|d| d.get()),
                        equity,
                    ),
                    limit_ratio: to_f64(daily.get() / hundred).unwrap_or(0.0),
                });
            }
        }
        Self {
            namespace: a.namespace().unwrap_or_default(),
            name: a.name_any(),
            equity: equity.and_then(to_f64),
            realized_pnl: st
                .and_then(|st| st.realized_pnl)
                .and_then(|d| to_f64(d.get())),
            unrealized_pnl: st
                .and_then(|st| st.unrealized_pnl)
                .and_then(|d| to_f64(d.get())),
            kill_switch_engaged: match kill {
                Some(k) => Some(k.engaged),
                None => a.spec.limits.is_some().then_some(false),
            },
            limits,
        }
    }
}

/// What one controller scope sees of the fleet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetSnapshot {
    /// Every BotSession of the scope.
    pub sessions: Vec<SessionFacts>,
    /// Every PaperAccount of the scope.
    pub accounts: Vec<AccountFacts>,
    /// StrategyConfigs of the scope.
    pub strategies: usize,
    /// `--status-sync-interval`.
    pub status_sync_interval: Duration,
}

impl FleetSnapshot {
    /// The snapshot of the cached objects.
    pub fn of(
        sessions: &[Arc<BotSession>],
        accounts: &[Arc<PaperAccount>],
        strategies: usize,
        status_sync_interval: Duration,
    ) -> Self {
        Self {
            sessions: sessions.iter().map(|s| SessionFacts::of(s)).collect(),
            accounts: accounts.iter().map(|a| AccountFacts::of(a)).collect(),
            strategies,
            status_sync_interval,
        }
    }
}

/// A gauge family whose series are replaced as a whole.
#[derive(Clone, Debug)]
struct Family {
    vec: GaugeVec,
    shown: Arc<Mutex<BTreeSet<Vec<String>>>>,
}

impl Family {
    fn new(
        registry: &Registry,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<Self> {
        let vec = GaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(vec.clone()))?;
        Ok(Self {
            vec,
            shown: Arc::default(),
        })
    }

    /// Show exactly `series` (label values → value).
    fn replace(&self, series: BTreeMap<Vec<String>, f64>) {
        let mut shown = self
            .shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in shown.iter().filter(|k| !series.contains_key(*k)) {
            let values: Vec<&str> = gone.iter().map(String::as_str).collect();
            let _ = self.vec.remove_label_values(&values);
        }
        for (k, v) in &series {
            let values: Vec<&str> = k.iter().map(String::as_str).collect();
            self.vec.with_label_values(&values).set(*v);
        }
        *shown = series.into_keys().collect();
    }
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_string()).collect()
}

/// Series of every phase (and of open breakers) of an account, at 0 unless
/// counted already.
fn zero_fill(
    ns: &str,
    account: &str,
    sessions: &mut BTreeMap<Vec<String>, f64>,
    breakers: &mut BTreeMap<Vec<String>, f64>,
) {
    for p in ALL_PHASES {
        sessions
            .entry(key(&[ns, account, phase_label(p)]))
            .or_insert(0.0);
    }
    breakers.entry(key(&[ns, account])).or_insert(0.0);
}

/// The fleet gauges, fed by [`FleetGauges::export`].
#[derive(Clone, Debug)]
pub struct FleetGauges {
    sessions: Family,
    breakers_open: Family,
    not_reporting: Family,
    equity: Family,
    realized: Family,
    unrealized: Family,
    kill_switch: Family,
    loss: Family,
    loss_limit: Family,
    budget: Family,
    /// The latest snapshot of each scope (`None`: all namespaces).
    scopes: Arc<Mutex<HashMap<Option<String>, FleetSnapshot>>>,
}

impl FleetGauges {
    /// Register the fleet gauges in `registry`.
    ///
    /// # Errors
    /// A prometheus error when they are registered already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let ns_account = ["namespace", "account"];
        Ok(Self {
            sessions: Family::new(
                registry,
                "paperbot_sessions",
                "BotSessions by namespace, account and status phase.",
                &["namespace", "account", "phase"],
            )?,
            breakers_open: Family::new(
                registry,
                "paperbot_circuit_breakers_open",
                "BotSessions with at least one open circuit breaker, by namespace and account.",
                &ns_account,
            )?,
            not_reporting: Family::new(
                registry,
                "paperbot_session_not_reporting",
                "1 while the runtime of a polled BotSession does not answer the operator (RuntimeNotReporting), else 0.",
                &["namespace", "account", "session"],
            )?,
            equity: Family::new(
                registry,
                "paperbot_account_equity",
                "PaperAccount equity (cash plus its sessions' equity) from its status, in its base currency.",
                &ns_account,
            )?,
            realized: Family::new(
                registry,
                "paperbot_account_realized_pnl",
                "PaperAccount realized profit and loss of its active sessions, in its base currency.",
                &ns_account,
            )?,
            unrealized: Family::new(
                registry,
                "paperbot_account_unrealized_pnl",
                "PaperAccount unrealized profit and loss of its active sessions, in its base currency.",
                &ns_account,
            )?,
            kill_switch: Family::new(
                registry,
                "paperbot_account_kill_switch_engaged",
                "1 while the PaperAccount's kill switch halts its sessions, else 0 (accounts with spec.limits).",
                &ns_account,
            )?,
            loss: Family::new(
                registry,
                "paperbot_account_loss_ratio",
                "How far PaperAccount equity is below the reference of a kill-switch limit, as a fraction: below the peak for maxDrawdownPct, below the day's first equity for dailyLossPct.",
                &["namespace", "account", "limit"],
            )?,
            loss_limit: Family::new(
                registry,
                "paperbot_account_loss_limit_ratio",
                "A PaperAccount kill-switch limit (spec.limits.maxDrawdownPct or dailyLossPct) as a fraction.",
                &["namespace", "account", "limit"],
            )?,
            budget: Family::new(
                registry,
                "paperbot_operator_status_write_budget_per_second",
                "Status writes per second the operator allows itself, by controller: polled sessions divided by the status sync interval for botsession, one per object and second for paperaccount and strategyconfig.",
                &["controller"],
            )?,
            scopes: Arc::default(),
        })
    }

    /// Record the latest snapshot of `scope` (a namespace, or `None` for
    /// all) and show the union of every scope's latest snapshot.
    pub fn export(&self, scope: Option<&str>, snapshot: FleetSnapshot) {
        let mut scopes = self
            .scopes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        scopes.insert(scope.map(str::to_string), snapshot);
        let mut sessions = BTreeMap::new();
        let mut breakers = BTreeMap::new();
        let mut not_reporting = BTreeMap::new();
        let (mut equity, mut realized, mut unrealized, mut kill) = (
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
        );
        let (mut loss, mut loss_limit) = (BTreeMap::new(), BTreeMap::new());
        let (mut polled, mut accounts, mut strategies) = (0usize, 0usize, 0usize);
        let mut interval = Duration::ZERO;
        for snap in scopes.values() {
            interval = interval.max(snap.status_sync_interval);
            strategies += snap.strategies;
            accounts += snap.accounts.len();
            for a in &snap.accounts {
                zero_fill(&a.namespace, &a.name, &mut sessions, &mut breakers);
                let k = key(&[&a.namespace, &a.name]);
                for (map, v) in [
                    (&mut equity, a.equity),
                    (&mut realized, a.realized_pnl),
                    (&mut unrealized, a.unrealized_pnl),
                    (&mut kill, a.kill_switch_engaged.map(f64::from)),
                ] {
                    if let Some(v) = v {
                        map.insert(k.clone(), v);
                    }
                }
                for l in &a.limits {
                    let k = key(&[&a.namespace, &a.name, l.limit]);
                    loss_limit.insert(k.clone(), l.limit_ratio);
                    if let Some(v) = l.loss {
                        loss.insert(k, v);
                    }
                }
            }
            for s in &snap.sessions {
                zero_fill(&s.namespace, &s.account, &mut sessions, &mut breakers);
                *sessions
                    .entry(key(&[&s.namespace, &s.account, phase_label(s.phase)]))
                    .or_insert(0.0) += 1.0;
                if s.breaker_open {
                    *breakers
                        .entry(key(&[&s.namespace, &s.account]))
                        .or_insert(0.0) += 1.0;
                }
                if s.polled {
                    polled += 1;
                    not_reporting.insert(
                        key(&[&s.namespace, &s.account, &s.name]),
                        f64::from(u8::from(s.not_reporting)),
                    );
                }
            }
        }
        let per_second = if interval.is_zero() {
            0.0
        } else {
            polled as f64 / interval.as_secs_f64()
        };
        let budget = BTreeMap::from([
            (key(&["botsession"]), per_second),
            (key(&["paperaccount"]), accounts as f64),
            (key(&["strategyconfig"]), strategies as f64),
        ]);
        self.sessions.replace(sessions);
        self.breakers_open.replace(breakers);
        self.not_reporting.replace(not_reporting);
        self.equity.replace(equity);
        self.realized.replace(realized);
        self.unrealized.replace(unrealized);
        self.kill_switch.replace(kill);
        self.loss.replace(loss);
        self.loss_limit.replace(loss_limit);
        self.budget.replace(budget);
    }
}

#[cfg(test)]
mod tests {
    use paperbot_crds::{
        AccountLimits, BotSessionStatus, DecimalString, KillSwitchStatus, PaperAccountStatus,
    };
    use rust_decimal_macros::dec;

    use super::*;

    fn session_object() -> BotSession {
        serde_yaml::from_str(
            r#"apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {name: bot, namespace: ns}
spec:
  accountRef: {name: acct}
  strategyRef: {name: strat}
  allocation: "1000"
  symbols: [BTC-USD]
  marketData: {source: Simulated, simulated: {seed: 1, candles: 10}}
"#,
        )
        .unwrap()
    }

    fn account_object() -> PaperAccount {
        serde_yaml::from_str(
            "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {name: acct, namespace: ns}\nspec: {initialBalance: \"100000\"}\n",
        )
        .unwrap()
    }

    fn render(r: &Registry) -> String {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn session(ns: &str, name: &str, account: &str, phase: SessionPhase) -> SessionFacts {
        SessionFacts {
            namespace: ns.into(),
            name: name.into(),
            account: account.into(),
            phase,
            breaker_open: false,
            polled: true,
            not_reporting: false,
        }
    }

    #[test]
    fn sessions_are_counted_by_namespace_account_and_phase_with_zeros() {
        let r = Registry::new();
        let g = FleetGauges::register(&r).unwrap();
        let mut tripped = session("a", "s2", "acct", SessionPhase::Running);
        tripped.breaker_open = true;
        tripped.not_reporting = true;
        g.export(
            None,
            FleetSnapshot {
                sessions: vec![
                    session("a", "s1", "acct", SessionPhase::Running),
                    tripped,
                    session("b", "s3", "other", SessionPhase::Halted),
                ],
                status_sync_interval: Duration::from_secs(15),
                ..Default::default()
            },
        );
        let t = render(&r);
        let phase = |ns: &str, a: &str, p: &str| {
            sample(
                &t,
                &format!("paperbot_sessions{{account=\"{a}\",namespace=\"{ns}\",phase=\"{p}\"}}"),
            )
        };
        assert_eq!(phase("a", "acct", "Running"), Some(2.0));
        assert_eq!(phase("a", "acct", "Failed"), Some(0.0));
        assert_eq!(phase("b", "other", "Halted"), Some(1.0));
        assert_eq!(phase("b", "acct", "Running"), None);
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("paperbot_sessions{"))
                .count(),
            16
        );
        assert_eq!(
            sample(
                &t,
                "paperbot_circuit_breakers_open{account=\"acct\",namespace=\"a\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                "paperbot_session_not_reporting{account=\"acct\",namespace=\"a\",session=\"s2\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                "paperbot_operator_status_write_budget_per_second{controller=\"botsession\"}"
            ),
            Some(0.2)
        );
    }

    #[test]
    fn scopes_add_up_and_gone_series_are_removed() {
        let r = Registry::new();
        let g = FleetGauges::register(&r).unwrap();
        let snap = |sessions| FleetSnapshot {
            sessions,
            status_sync_interval: Duration::from_secs(10),
            ..Default::default()
        };
        g.export(
            Some("a"),
            snap(vec![session("a", "s1", "x", SessionPhase::Running)]),
        );
        g.export(
            Some("b"),
            snap(vec![session("b", "s2", "y", SessionPhase::Paused)]),
        );
        let t = render(&r);
        assert!(t.contains("namespace=\"a\",session=\"s1\""), "{t}");
        assert!(t.contains("namespace=\"b\",session=\"s2\""), "{t}");
        assert_eq!(
            sample(
                &t,
                "paperbot_operator_status_write_budget_per_second{controller=\"botsession\"}"
            ),
            Some(0.2)
        );
        // Namespace a's session is deleted: only its series go.
        g.export(Some("a"), snap(vec![]));
        let t = render(&r);
        assert!(!t.contains("namespace=\"a\""), "{t}");
        assert!(t.contains("namespace=\"b\",session=\"s2\""), "{t}");
    }

    #[test]
    fn account_figures_and_kill_switch_distance() {
        let mut a = account_object();
        a.spec.limits = Some(AccountLimits {
            max_drawdown_pct: Some(DecimalString(dec!(10))),
            daily_loss_pct: Some(DecimalString(dec!(4))),
        });
        a.status = Some(PaperAccountStatus {
            equity: Some(DecimalString(dec!(95000))),
            realized_pnl: Some(DecimalString(dec!(-3000))),
            unrealized_pnl: Some(DecimalString(dec!(-2000))),
            kill_switch: Some(KillSwitchStatus {
                engaged: false,
                peak_equity: Some(DecimalString(dec!(100000))),
                day_start_equity: Some(DecimalString(dec!(94000))),
                ..Default::default()
            }),
            ..Default::default()
        });
        let facts = AccountFacts::of(&a);
        assert_eq!(facts.equity, Some(95000.0));
        assert_eq!(facts.kill_switch_engaged, Some(false));
        assert_eq!(
            facts.limits,
            vec![
                LimitFacts {
                    limit: LIMIT_MAX_DRAWDOWN,
                    loss: Some(0.05),
                    limit_ratio: 0.1
                },
                // Above the day's first equity: no loss, never negative.
                LimitFacts {
                    limit: LIMIT_DAILY_LOSS,
                    loss: Some(0.0),
                    limit_ratio: 0.04
                },
            ]
        );
        let r = Registry::new();
        let g = FleetGauges::register(&r).unwrap();
        g.export(
            None,
            FleetSnapshot {
                accounts: vec![facts],
                ..Default::default()
            },
        );
        let t = render(&r);
        let ns = a.namespace().unwrap();
        let name = a.name_any();
        let labels = format!("account=\"{name}\",namespace=\"{ns}\"");
        assert_eq!(
            sample(&t, &format!("paperbot_account_equity{{{labels}}}")),
            Some(95000.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!("paperbot_account_kill_switch_engaged{{{labels}}}")
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &t,
                &format!(
                    "paperbot_account_loss_ratio{{account=\"{name}\",limit=\"maxDrawdownPct\",namespace=\"{ns}\"}}"
                )
            ),
            Some(0.05)
        );
        assert_eq!(
            sample(
                &t,
                &format!(
                    "paperbot_account_loss_limit_ratio{{account=\"{name}\",limit=\"dailyLossPct\",namespace=\"{ns}\"}}"
                )
            ),
            Some(0.04)
        );
        // An account without sessions still shows its (zero) session counts.
        assert_eq!(
            sample(
                &t,
                &format!("paperbot_sessions{{{labels},phase=\"Running\"}}")
            ),
            Some(0.0)
        );
    }

    #[test]
    fn session_facts_read_the_status() {
        let mut s = session_object();
        assert_eq!(SessionFacts::of(&s).phase, SessionPhase::Pending);
        let mut st = BotSessionStatus {
            phase: SessionPhase::Running,
            breaker: Some("dailyLoss".into()),
            ..Default::default()
        };
        crate::conditions::set_condition(
            &mut st.conditions,
            DEGRADED,
            crate::conditions::ConditionStatus::True,
            "RuntimeNotReporting",
            "no answer",
            Some(1),
            &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        );
        s.status = Some(st);
        let facts = SessionFacts::of(&s);
        assert!(
            facts.breaker_open && facts.not_reporting && facts.polled,
            "{facts:?}"
        );
        assert_eq!(facts.account, s.spec.account_ref.name);
    }
}
