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

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{PersistentVolumeClaim, Pod},
};
use kube::{
    Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use paperbot_crds::{BotSession, PaperAccount, StrategyConfig};

use crate::{
    controllers::{account, botsession, strategy},
    ledger,
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
    stateful_sets: &Store<StatefulSet>,
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
fn stateful_set_status(s: &StatefulSet) -> impl PartialEq + use<> {
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
    old: Option<&StatefulSet>,
    new: Option<&StatefulSet>,
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
fn pod_view(p: &Pod) -> impl PartialEq + use<> {
    let st = p.status.as_ref();
    let ready = st
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let waiting = st
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        });
    (
        p.metadata.uid.clone(),
        st.and_then(|s| s.phase.clone()),
        ready,
        waiting,
    )
}

/// A runtime pod event: reconcile the session of its StatefulSet when the
/// pod appeared, went, or changed phase, readiness or waiting reason.
pub fn on_pod(
    old: Option<&Pod>,
    new: Option<&Pod>,
    stateful_sets: &Store<StatefulSet>,
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
    stateful_sets: &Store<StatefulSet>,
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
