//! Which reconciles a watch event asks for. Each function takes the cached
//! copy before the event (`old`) and after it (`new`, `None` once deleted)
//! and returns the objects to reconcile with the [`Cause`]; the watch loop
//! ([`crate::run`]) sends them to the controllers.
//!
//! The rules keep a fleet quiet:
//!
//! - a session is reconciled when a user changes it (spec, deletion,
//!   annotations, a removed finalizer), when its children change other than
//!   by the operator's own write, when its account or strategy is created,
//!   deleted or changes its spec, and when an earlier session of its account
//!   changes what it draws (funding is in creation order);
//! - status writes never reconcile the written object (neither the
//!   operator's own, which it recognises by resource version, nor anyone's:
//!   only metadata and spec are compared);
//! - an account's or strategy's status changes reconcile no session;
//! - an account (strategy) is reconciled when its spec changes or when a
//!   session changes what its status aggregates ([`crate::controllers::account::session_inputs`]).

use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use paperbot_crds::{BotSession, PaperAccount, StrategyConfig};

use crate::{
    controllers::{account, botsession, strategy},
    ledger,
    stores::{PodView, StatefulSetView},
};

/// Why a reconcile was asked for; the `cause` label of
/// `paperbot_operator_reconcile_triggers_total` and the reconcile span's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The operator started (one reconcile of every object).
    Startup,
    /// The object was created (or recreated under the same name).
    Created,
    /// Its spec changed (`metadata.generation`).
    Spec,
    /// Its deletion began.
    Deleting,
    /// Someone removed the operator's finalizer.
    FinalizerRemoved,
    /// Its annotations or labels changed.
    Metadata,
    /// An earlier session of the same account changed what it draws.
    Funding,
    /// The session's PaperAccount was created, deleted or changed its spec.
    Account,
    /// The session's StrategyConfig was created, deleted or changed its spec.
    Strategy,
    /// A child was changed or deleted by someone else than the operator.
    Child,
    /// The session's runtime reported something users see (a poll of its
    /// `/v1/status` changed the figures, phase, breakers or autopilot).
    Runtime,
    /// The account kill switch of the session's PaperAccount tripped or was
    /// released (a status change that concerns every session of the account).
    KillSwitch,
    /// The StatefulSet's status changed (replicas, readiness, revisions).
    StatefulSetStatus,
    /// The runtime pod was created, deleted or changed phase or readiness.
    Pod,
    /// The ledger claim changed phase or owners.
    Claim,
    /// A session changed what the account's or strategy's status shows.
    Session,
}

impl Cause {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Startup => "startup",
            Cause::Created => "created",
            Cause::Spec => "spec",
            Cause::Deleting => "deleting",
            Cause::FinalizerRemoved => "finalizer_removed",
            Cause::Metadata => "metadata",
            Cause::Funding => "funding",
            Cause::Account => "account",
            Cause::Strategy => "strategy",
            Cause::Child => "child",
            Cause::Runtime => "runtime",
            Cause::KillSwitch => "kill_switch",
            Cause::StatefulSetStatus => "statefulset_status",
            Cause::Pod => "pod",
            Cause::Claim => "claim",
            Cause::Session => "session",
        }
    }
}

/// Reconciles asked for by one event.
#[derive(Debug, Default, PartialEq)]
pub struct Triggers {
    /// BotSessions.
    pub sessions: Vec<(ObjectRef<BotSession>, Cause)>,
    /// PaperAccounts.
    pub accounts: Vec<(ObjectRef<PaperAccount>, Cause)>,
    /// StrategyConfigs.
    pub strategies: Vec<(ObjectRef<StrategyConfig>, Cause)>,
}

impl Triggers {
    /// Whether the event asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.accounts.is_empty() && self.strategies.is_empty()
    }
}

fn ns_of<K: Resource>(o: &K) -> String {
    o.meta().namespace.clone().unwrap_or_default()
}

/// What a user changes on a session that its reconcile reads.
fn session_cause(old: &BotSession, new: &BotSession) -> Option<Cause> {
    let has_finalizer = |s: &BotSession| s.finalizers().iter().any(|f| f == botsession::FINALIZER);
    if old.metadata.uid != new.metadata.uid {
        Some(Cause::Created)
    } else if old.metadata.deletion_timestamp.is_none() && new.metadata.deletion_timestamp.is_some()
    {
        Some(Cause::Deleting)
    } else if old.metadata.generation != new.metadata.generation {
        Some(Cause::Spec)
    } else if has_finalizer(old) && !has_finalizer(new) {
        Some(Cause::FinalizerRemoved)
    } else if old.metadata.annotations != new.metadata.annotations
        || old.metadata.labels != new.metadata.labels
    {
        Some(Cause::Metadata)
    } else {
        None
    }
}

/// Funding order of a session: creation time, then name.
fn funding_order(s: &BotSession) -> (Option<k8s_openapi::jiff::Timestamp>, String) {
    (
        s.metadata.creation_timestamp.as_ref().map(|t| t.0),
        s.name_any(),
    )
}

/// What a session draws from its account: `Some(allocation)` while active.
fn draws(s: Option<&BotSession>) -> Option<rust_decimal::Decimal> {
    s.filter(|s| botsession::is_active(s))
        .map(|s| s.spec.allocation.get())
}

/// Whether the session's `Ready` condition says it lacks funds.
fn lacks_funds(s: &BotSession) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == crate::conditions::READY && c.reason == "InsufficientFunds")
    })
}

/// A BotSession event. `own_write`: the event is the operator's own write
/// (its status or finalizer), which never reconciles the session itself.
pub fn on_session(
    old: Option<&BotSession>,
    new: Option<&BotSession>,
    own_write: bool,
    sessions: &Store<BotSession>,
    accounts: &Store<PaperAccount>,
) -> Triggers {
    let mut t = Triggers::default();
    let Some(any) = new.or(old) else {
        return t;
    };
    let ns = ns_of(any);
    if let Some(n) = new
        && !own_write
    {
        let cause = match old {
            None => Some(Cause::Created),
            Some(o) => session_cause(o, n),
        };
        if let Some(cause) = cause {
            t.sessions.push((ObjectRef::from_obj(n), cause));
        }
    }
    // Later sessions of the account: freed funds may fund a refused one;
    // a larger draw may leave a funded one short.
    let (before, after) = (draws(old), draws(new));
    if before != after {
        let account = &any.spec.account_ref.name;
        let grew = match (before, after) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(b), Some(a)) => a > b,
        };
        // A larger draw leaves no later session short while the account
        // still funds every active session.
        let grew = grew && !funds_all(sessions, accounts, &ns, account);
        let order = funding_order(any);
        let me = any.name_any();
        for s in sessions.state() {
            if ns_of(&*s) == ns
                && &s.spec.account_ref.name == account
                && s.name_any() != me
                && funding_order(&s) > order
                && (lacks_funds(&s) || (grew && botsession::is_active(&s)))
            {
                t.sessions.push((ObjectRef::from_obj(&*s), Cause::Funding));
            }
        }
    }
    if old.map(account::session_inputs) != new.map(account::session_inputs) {
        t.accounts.push((
            ObjectRef::new(&any.spec.account_ref.name).within(&ns),
            Cause::Session,
        ));
    }
    if old.map(strategy::session_inputs) != new.map(strategy::session_inputs) {
        t.strategies.push((
            ObjectRef::new(&any.spec.strategy_ref.name).within(&ns),
            Cause::Session,
        ));
    }
    t
}

/// Whether the account's balance covers every active session's allocation
/// (false when the account is missing).
fn funds_all(
    sessions: &Store<BotSession>,
    accounts: &Store<PaperAccount>,
    ns: &str,
    account: &str,
) -> bool {
    let Some(a) = accounts.get(&ObjectRef::new(account).within(ns)) else {
        return false;
    };
    let total: rust_decimal::Decimal = sessions
        .state()
        .iter()
        .filter(|s| ns_of(&***s) == ns && s.spec.account_ref.name == account)
        .filter_map(|s| draws(Some(s)))
        .sum();
    total <= a.spec.initial_balance.get()
}

/// Sessions in the object's namespace whose `field` names it.
fn referencing(
    sessions: &Store<BotSession>,
    ns: &str,
    name: &str,
    field: fn(&BotSession) -> &str,
    cause: Cause,
) -> Vec<(ObjectRef<BotSession>, Cause)> {
    sessions
        .state()
        .iter()
        .filter(|s| ns_of(&***s) == ns && field(s) == name)
        .map(|s| (ObjectRef::from_obj(&**s), cause))
        .collect()
}

/// Whether an account or strategy event is one its sessions must see:
/// created, deleted or a new spec (never a status change).
fn spec_event<K: Resource>(old: Option<&K>, new: Option<&K>) -> Option<Cause> {
    match (old, new) {
        (None, Some(_)) => Some(Cause::Created),
        (Some(_), None) => Some(Cause::Deleting),
        (Some(o), Some(n)) if o.meta().uid != n.meta().uid => Some(Cause::Created),
        (Some(o), Some(n)) if o.meta().generation != n.meta().generation => Some(Cause::Spec),
        _ => None,
    }
}

/// A PaperAccount event: its sessions see its spec; it reconciles itself
/// when created or its spec changed.
pub fn on_account(
    old: Option<&PaperAccount>,
    new: Option<&PaperAccount>,
    own_write: bool,
    sessions: &Store<BotSession>,
) -> Triggers {
    let mut t = Triggers::default();
    let Some(any) = new.or(old) else { return t };
    let engaged = |a: Option<&PaperAccount>| {
        a.and_then(|a| a.status.as_ref())
            .and_then(|s| s.kill_switch.as_ref())
            .is_some_and(|k| k.engaged)
    };
    if spec_event(old, new).is_none() && engaged(old) != engaged(new) {
        // The only status change sessions follow: they are halted or released.
        t.sessions = referencing(
            sessions,
            &ns_of(any),
            &any.name_any(),
            |s| &s.spec.account_ref.name,
            Cause::KillSwitch,
        );
    }
    if let Some(cause) = spec_event(old, new) {
        t.sessions = referencing(
            sessions,
            &ns_of(any),
            &any.name_any(),
            |s| &s.spec.account_ref.name,
            Cause::Account,
        );
        if let Some(n) = new
            && !own_write
        {
            t.accounts.push((ObjectRef::from_obj(n), cause));
        }
    }
    t
}

/// A StrategyConfig event, as [`on_account`].
pub fn on_strategy(
    old: Option<&StrategyConfig>,
    new: Option<&StrategyConfig>,
    own_write: bool,
    sessions: &Store<BotSession>,
) -> Triggers {
    let mut t = Triggers::default();
    let Some(any) = new.or(old) else { return t };
    if let Some(cause) = spec_event(old, new) {
        t.sessions = referencing(
            sessions,
            &ns_of(any),
            &any.name_any(),
            |s| &s.spec.strategy_ref.name,
            Cause::Strategy,
        );
        if let Some(n) = new
            && !own_write
        {
            t.strategies.push((ObjectRef::from_obj(n), cause));
        }
    }
    t
}

/// The BotSession a child's controller owner reference names.
pub fn owner_session<K: Resource>(child: &K) -> Option<ObjectRef<BotSession>> {
    let ns = child.meta().namespace.as_deref()?;
    child
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == "BotSession"
                && o.api_version.starts_with("paperbot.io/")
        })
        .map(|o| ObjectRef::new(&o.name).within(ns))
}

fn session_of_stateful_set(
    stateful_sets: &Store<StatefulSetView>,
    ns: &str,
    name: &str,
) -> Option<ObjectRef<BotSession>> {
    stateful_sets
        .get(&ObjectRef::new(name).within(ns))
        .and_then(|s| owner_session(&*s))
}

/// Whether someone else than the operator wrote a child: it was deleted,
/// created by another field manager, or another manager's entry in
/// `metadata.managedFields` changed. The cached copies keep only other
/// managers' entries ([`crate::stores::keep_foreign_fields`]), and every
/// write records its manager with a new timestamp, so the operator's own
/// writes — even those whose watch event arrives before the API server's
/// answer — leave the cached entries as they were, while any other client's
/// write changes them.
fn written_by_others<K: Resource>(old: Option<&K>, new: Option<&K>) -> bool {
    match (old, new) {
        (_, None) => old.is_some(),
        (None, Some(n)) => n.meta().managed_fields.is_some(),
        (Some(o), Some(n)) => o.meta().managed_fields != n.meta().managed_fields,
    }
}

/// A ConfigMap, Secret or Service event: reconcile the owner when someone
/// else than the operator wrote or deleted the child.
pub fn on_child<K: Resource>(old: Option<&K>, new: Option<&K>, own_write: bool) -> Triggers {
    let mut t = Triggers::default();
    if own_write {
        return t;
    }
    let Some(any) = new.or(old) else { return t };
    if written_by_others(old, new)
        && let Some(owner) = owner_session(any)
    {
        t.sessions.push((owner, Cause::Child));
    }
    t
}

/// What the session's status reads of its StatefulSet.
fn stateful_set_status(s: &StatefulSetView) -> impl PartialEq + use<> {
    let st = s.status.clone().unwrap_or_default();
    (
        st.replicas,
        st.ready_replicas,
        st.observed_generation,
        st.current_revision,
        st.update_revision,
    )
}

/// A StatefulSet event: its status (what the session's status reads), or a
/// change of it by someone else than the operator.
pub fn on_stateful_set(
    old: Option<&StatefulSetView>,
    new: Option<&StatefulSetView>,
    own_write: bool,
) -> Triggers {
    let mut t = Triggers::default();
    let Some(any) = new.or(old) else { return t };
    let cause = if !own_write && written_by_others(old, new) {
        Some(Cause::Child)
    } else {
        match (old, new) {
            (Some(o), Some(n)) if stateful_set_status(o) != stateful_set_status(n) => {
                Some(Cause::StatefulSetStatus)
            }
            _ => None,
        }
    };
    if let Some(cause) = cause
        && let Some(owner) = owner_session(any)
    {
        t.sessions.push((owner, cause));
    }
    t
}

/// What the session's status reads of its pod.
fn pod_view(p: &PodView) -> impl PartialEq + use<> {
    (
        p.metadata.uid.clone(),
        p.metadata.labels.clone(),
        p.phase.clone(),
        p.ready,
        p.waiting_reason.clone(),
    )
}

/// A runtime pod event: reconcile the session of its StatefulSet when the
/// pod appeared, went, or changed phase, readiness or waiting reason.
pub fn on_pod(
    old: Option<&PodView>,
    new: Option<&PodView>,
    stateful_sets: &Store<StatefulSetView>,
) -> Triggers {
    let mut t = Triggers::default();
    let Some(any) = new.or(old) else { return t };
    let changed = match (old, new) {
        (Some(o), Some(n)) => pod_view(o) != pod_view(n),
        _ => true,
    };
    if !changed {
        return t;
    }
    let owner = any.meta().owner_references.as_ref().and_then(|o| {
        o.iter()
            .find(|o| o.controller == Some(true) && o.kind == "StatefulSet")
    });
    if let Some(owner) = owner
        && let Some(session) = session_of_stateful_set(stateful_sets, &ns_of(any), &owner.name)
    {
        t.sessions.push((session, Cause::Pod));
    }
    t
}

/// A ledger claim event (`ledger-<statefulset>-0`): reconcile the session
/// when the claim appeared, went, changed phase, or was written by another
/// manager than the operator (the operator only sets its owner).
pub fn on_claim(
    old: Option<&PersistentVolumeClaim>,
    new: Option<&PersistentVolumeClaim>,
    own_write: bool,
    stateful_sets: &Store<StatefulSetView>,
) -> Triggers {
    let mut t = Triggers::default();
    if own_write {
        return t;
    }
    let Some(any) = new.or(old) else { return t };
    let phase = |c: &PersistentVolumeClaim| c.status.as_ref().and_then(|s| s.phase.clone());
    let changed = match (old, new) {
        (Some(o), Some(n)) => phase(o) != phase(n) || written_by_others(old, new),
        _ => true,
    };
    let name = any.name_any();
    if changed
        && let Some(sts) = ledger::stateful_set_of_claim(&name)
        && let Some(session) = session_of_stateful_set(stateful_sets, &ns_of(any), sts)
    {
        t.sessions.push((session, Cause::Claim));
    }
    t
}

/// One reconcile of every session, account and strategy in the stores (at
/// start, once every store is synced).
pub fn startup(
    sessions: &Store<BotSession>,
    accounts: &Store<PaperAccount>,
    strategies: &Store<StrategyConfig>,
) -> Triggers {
    fn all<K: Resource<DynamicType = ()> + Clone>(s: &Store<K>) -> Vec<(ObjectRef<K>, Cause)> {
        s.state()
            .iter()
            .map(|o: &Arc<K>| (ObjectRef::from_obj(&**o), Cause::Startup))
            .collect()
    }
    Triggers {
        sessions: all(sessions),
        accounts: all(accounts),
        strategies: all(strategies),
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector::store::Writer, watcher::Event};
    use serde_json::{Value, json};

    use super::*;

    fn store<K>(objs: &[K]) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut w = Writer::default();
        w.apply_watcher_event(&Event::Init);
        for o in objs {
            w.apply_watcher_event(&Event::InitApply(o.clone()));
        }
        w.apply_watcher_event(&Event::InitDone);
        w.as_reader()
    }

    fn session(name: &str, allocation: &str, created_s: u32) -> BotSession {
        serde_json::from_value(json!({
            "apiVersion": "paperbot.io/v1alpha1", "kind": "BotSession",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "generation": 1,
                         "resourceVersion": "1",
                         "creationTimestamp": format!("2026-01-01T00:00:{created_s:02}Z")},
            "spec": {"accountRef": {"name": "acct"}, "strategyRef": {"name": "strat"},
                     "allocation": allocation, "symbols": ["X"],
                     "marketData": {"source": "Simulated", "simulated": {"seed": 1, "candles": 10}}}
        }))
        .unwrap()
    }

    fn lacking_funds(mut s: BotSession) -> BotSession {
        s.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "Ready",
            "status": "False", "reason": "InsufficientFunds", "message": "m",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
            .unwrap(),
        );
        s
    }

    fn account(balance: &str, generation: i64) -> PaperAccount {
        serde_json::from_value(json!({
            "apiVersion": "paperbot.io/v1alpha1", "kind": "PaperAccount",
            "metadata": {"name": "acct", "namespace": "ns", "uid": "u-acct", "generation": generation},
            "spec": {"initialBalance": balance}
        }))
        .unwrap()
    }

    fn names(t: &[(ObjectRef<BotSession>, Cause)]) -> Vec<(String, Cause)> {
        t.iter().map(|(r, c)| (r.name.clone(), *c)).collect()
    }

    #[test]
    fn status_writes_never_reconcile_the_session() {
        let old = session("a", "10", 1);
        let mut new = old.clone();
        new.status = Some(serde_json::from_value(json!({"phase": "Running"})).unwrap());
        new.metadata.finalizers = Some(vec![botsession::FINALIZER.into()]);
        let st = store(std::slice::from_ref(&old));
        let t = on_session(Some(&old), Some(&new), false, &st, &store(&[]));
        assert!(t.sessions.is_empty(), "{t:?}");
        // The status's first write shows in no account or strategy input.
        assert!(t.accounts.is_empty() && t.strategies.is_empty(), "{t:?}");
        // Equity does.
        let mut richer = new.clone();
        richer.status.as_mut().unwrap().equity = Some("11".parse().unwrap());
        let t = on_session(Some(&new), Some(&richer), true, &st, &store(&[]));
        assert_eq!(t.accounts.len(), 1);
        assert!(t.sessions.is_empty());
    }

    #[test]
    fn user_changes_reconcile_the_session() {
        let old = session("a", "10", 1);
        let st = store(std::slice::from_ref(&old));
        let no_accounts = store::<PaperAccount>(&[]);
        let created = on_session(None, Some(&old), false, &st, &no_accounts);
        assert_eq!(names(&created.sessions)[0], ("a".into(), Cause::Created));
        assert_eq!((created.accounts.len(), created.strategies.len()), (1, 1));
        let mut spec = old.clone();
        spec.metadata.generation = Some(2);
        let t = on_session(Some(&old), Some(&spec), false, &st, &no_accounts);
        assert_eq!(names(&t.sessions), [("a".into(), Cause::Spec)]);
        let mut fin = old.clone();
        fin.metadata.finalizers = Some(vec![botsession::FINALIZER.into()]);
        let t = on_session(Some(&fin), Some(&old), false, &st, &no_accounts);
        assert_eq!(names(&t.sessions), [("a".into(), Cause::FinalizerRemoved)]);
        let mut deleting = fin.clone();
        deleting.metadata.deletion_timestamp = Some(crate::controllers::now());
        let t = on_session(Some(&fin), Some(&deleting), false, &st, &no_accounts);
        assert!(names(&t.sessions).contains(&("a".into(), Cause::Deleting)));
    }

    #[test]
    fn freed_funds_reach_the_refused_sessions_only() {
        let a = session("a", "600", 1);
        let b = session("b", "300", 2);
        let c = lacking_funds(session("c", "600", 3));
        let st = store(&[a.clone(), b.clone(), c.clone()]);
        let accounts = store(&[account("1000", 1)]);
        let t = on_session(Some(&a), None, false, &st, &accounts);
        assert_eq!(names(&t.sessions), [("c".into(), Cause::Funding)]);
        // A newcomer at the end of the order leaves the earlier ones alone.
        let d = session("d", "10", 4);
        let t = on_session(None, Some(&d), false, &st, &accounts);
        assert_eq!(names(&t.sessions), [("d".into(), Cause::Created)]);
    }

    #[test]
    fn a_larger_draw_rechecks_later_sessions_only_when_the_account_is_short() {
        let a = session("a", "100", 1);
        let b = session("b", "100", 2);
        let mut a2 = a.clone();
        a2.spec.allocation = "950".parse().unwrap();
        a2.metadata.generation = Some(2);
        let plenty = store(&[account("10000", 1)]);
        let short = store(&[account("1000", 1)]);
        let st = store(&[a2.clone(), b.clone()]);
        let t = on_session(Some(&a), Some(&a2), false, &st, &plenty);
        assert_eq!(names(&t.sessions), [("a".into(), Cause::Spec)]);
        let t = on_session(Some(&a), Some(&a2), false, &st, &short);
        assert_eq!(
            names(&t.sessions),
            [("a".into(), Cause::Spec), ("b".into(), Cause::Funding)]
        );
    }

    #[test]
    fn an_account_reaches_its_sessions_on_spec_changes_only() {
        let st = store(&[session("a", "10", 1), session("b", "10", 2)]);
        let (old, mut status) = (account("100", 1), account("100", 1));
        status.status = Some(Default::default());
        assert!(on_account(Some(&old), Some(&status), true, &st).is_empty());
        assert!(on_account(Some(&old), Some(&status), false, &st).is_empty());
        let new = account("200", 2);
        let t = on_account(Some(&old), Some(&new), false, &st);
        assert_eq!(t.sessions.len(), 2);
        assert_eq!(t.accounts.len(), 1);
        let t = on_account(Some(&old), None, false, &st);
        assert_eq!(t.sessions.len(), 2, "AccountNotFound for both");
        assert!(t.accounts.is_empty());
    }

    fn sts(managers: Value, status: Value) -> StatefulSetView {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "a-runtime", "namespace": "ns", "generation": 1,
                "ownerReferences": [{"apiVersion": "paperbot.io/v1alpha1", "kind": "BotSession",
                    "name": "a", "uid": "u-a", "controller": true}],
                "managedFields": managers},
            "spec": {"serviceName": "a-runtime", "selector": {}, "template": {}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn children_reconcile_their_session_when_others_write_them() {
        let ours = sts(Value::Null, json!({"replicas": 0}));
        // The operator's own apply leaves the cached foreign entries as they were.
        let mut applied = ours.clone();
        applied.metadata.generation = Some(2);
        assert!(on_stateful_set(Some(&ours), Some(&applied), false).is_empty());
        assert!(
            on_stateful_set(None, Some(&ours), false).is_empty(),
            "created by us"
        );
        let scaled = sts(
            json!([{"manager": "kubectl", "operation": "Update", "subresource": "scale",
                    "time": "2026-01-01T00:00:00Z", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]),
            json!({"replicas": 0}),
        );
        let t = on_stateful_set(Some(&ours), Some(&scaled), false);
        assert_eq!(names(&t.sessions), [("a".into(), Cause::Child)]);
        let t = on_stateful_set(Some(&ours), None, false);
        assert_eq!(names(&t.sessions), [("a".into(), Cause::Child)]);
        let ready = sts(Value::Null, json!({"replicas": 1, "readyReplicas": 1}));
        let t = on_stateful_set(Some(&ours), Some(&ready), false);
        assert_eq!(names(&t.sessions), [("a".into(), Cause::StatefulSetStatus)]);
        // The same for a ConfigMap.
        let cm = |managers: Value| -> k8s_openapi::api::core::v1::ConfigMap {
            serde_json::from_value(json!({"metadata": {"name": "a-runtime", "namespace": "ns",
                "ownerReferences": [{"apiVersion": "paperbot.io/v1alpha1", "kind": "BotSession",
                    "name": "a", "uid": "u-a", "controller": true}],
                "managedFields": managers}}))
            .unwrap()
        };
        let (mine, edited) = (
            cm(Value::Null),
            cm(json!([{"manager": "kubectl-edit", "operation": "Update",
                        "fieldsV1": {"f:data": {"f:session.yaml": {}}}}])),
        );
        assert!(on_child(Some(&mine), Some(&mine), false).is_empty());
        assert_eq!(
            on_child(Some(&mine), Some(&edited), false).sessions.len(),
            1
        );
    }

    #[test]
    fn pods_and_claims_reach_the_session_of_their_stateful_set() {
        let stateful_sets = store(&[sts(Value::Null, json!({"replicas": 1}))]);
        let pod = |ready: &str| -> PodView {
            serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({"metadata": {"name": "a-runtime-0", "namespace": "ns", "uid": "p",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": "a-runtime", "uid": "s", "controller": true}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]}}))
            .unwrap()
            .into()
        };
        let (starting, ready) = (pod("False"), pod("True"));
        let t = on_pod(Some(&starting), Some(&ready), &stateful_sets);
        assert_eq!(names(&t.sessions), [("a".into(), Cause::Pod)]);
        assert!(on_pod(Some(&ready), Some(&ready), &stateful_sets).is_empty());
        let claim = |phase: &str| -> PersistentVolumeClaim {
            serde_json::from_value(
                json!({"metadata": {"name": "ledger-a-runtime-0", "namespace": "ns"},
                "status": {"phase": phase}}),
            )
            .unwrap()
        };
        let t = on_claim(
            Some(&claim("Pending")),
            Some(&claim("Bound")),
            false,
            &stateful_sets,
        );
        assert_eq!(names(&t.sessions), [("a".into(), Cause::Claim)]);
    }
}
