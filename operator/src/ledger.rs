//! Where a session's runtime keeps its ledger in a cluster — durable storage,
//! never an emptyDir:
//!
//! - **PostgreSQL** ([`LedgerStorage::Database`]): the runtime reads the URL
//!   from its `DATABASE_URL` environment variable, filled by the kubelet from
//!   a Secret key (`secretKeyRef`); the operator never reads or copies the
//!   URL. The Secret comes from the account's
//!   `spec.ledger.databaseUrlSecretRef`, else from `--ledger-database-secret`.
//! - **SQLite on a PersistentVolumeClaim** ([`LedgerStorage::Volume`]), when no
//!   database is configured: the StatefulSet's `volumeClaimTemplates` give the
//!   session one claim, `ledger-<statefulset>-0`, mounted at [`LEDGER_DIR`].
//!
//! The kind of storage (database or volume) and the volume's size and class
//! are fixed when the session's StatefulSet is created: `volumeClaimTemplates`
//! cannot change, and moving a session between a volume and a database would
//! restart it from an empty ledger while its trades stay behind. [`plan`]
//! therefore keeps what the live StatefulSet has and reports the difference
//! (condition [`crate::conditions::LEDGER_STORAGE_OUTDATED`]); only the database Secret reference
//! follows the configuration, since the runtime resumes from whatever
//! database it points at. A StatefulSet of an older operator that kept the
//! ledger on an emptyDir is recreated with durable storage.
//!
//! Retention: the StatefulSet's `persistentVolumeClaimRetentionPolicy` is
//! `Retain` on scale-down (a Paused or Stopped session keeps its ledger) and
//! on deletion (deleting the StatefulSet by hand never deletes the ledger).
//! The claim's lifetime is the session's: with [`VolumeRetention::Delete`]
//! (the default) the operator gives the claim an owner reference to the
//! BotSession, so deleting the session garbage-collects it; with
//! [`VolumeRetention::Retain`] the claim outlives the session.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy},
        core::v1::{
            EnvVar, EnvVarSource, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            SecretKeySelector, VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{ObjectMeta, OwnerReference},
    },
};
use paperbot_crds::{PaperAccount, SecretKeyRef};
use serde_json::{Value, json};

use crate::{builders::CONTAINER_NAME, config::quantity_value};

/// Name of the ledger volume and of its claim template (the claim of a
/// StatefulSet `s` is `ledger-s-0`).
pub const LEDGER_VOLUME: &str = "ledger";
/// Where the ledger volume is mounted (read-write) in the runtime container.
pub const LEDGER_DIR: &str = "/var/lib/paperbot/ledger";
/// The SQLite ledger file on the volume, passed as `--ledger`.
pub const LEDGER_FILE: &str = "/var/lib/paperbot/ledger/ledger.db";
/// Environment variable the runtime reads the PostgreSQL URL from.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";
/// Default size of a ledger volume (`--ledger-storage-size`).
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";

/// What happens to a session's ledger volume when the session is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VolumeRetention {
    /// The claim is garbage-collected with its BotSession (an owner reference).
    #[default]
    #[value(name = "Delete")]
    Delete,
    /// The claim outlives its BotSession; deleting it is up to the user. A new
    /// session of the same name reuses it (and its runtime resumes from it).
    #[value(name = "Retain")]
    Retain,
}

/// Operator-wide ledger settings (flags `--ledger-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSettings {
    /// Secret key with the PostgreSQL URL, looked up in each session's
    /// namespace; `None`: SQLite on a volume unless the account names one.
    pub database_secret: Option<SecretKeyRef>,
    /// Size of a ledger volume, a Kubernetes quantity in bytes (`1Gi`).
    pub storage_size: String,
    /// StorageClass of ledger volumes; `None`: the cluster's default class.
    pub storage_class: Option<String>,
    /// What happens to a ledger volume when its session is deleted.
    pub retention: VolumeRetention,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            database_secret: None,
            storage_size: DEFAULT_STORAGE_SIZE.into(),
            storage_class: None,
            retention: VolumeRetention::Delete,
        }
    }
}

/// Where one session's ledger lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerStorage {
    /// PostgreSQL; the URL is in this key of a Secret in the session's namespace.
    Database(SecretKeyRef),
    /// SQLite on the session's PersistentVolumeClaim.
    Volume {
        /// Requested size, a Kubernetes quantity in bytes.
        size: String,
        /// StorageClass; `None`: the cluster's default.
        class: Option<String>,
    },
}

impl LedgerStorage {
    /// The storage the configuration asks for: the account's
    /// `spec.ledger.databaseUrlSecretRef`, else the operator's database
    /// Secret, else a volume of the configured size and class.
    pub fn configured(account: &PaperAccount, settings: &LedgerSettings) -> Self {
        account
            .spec
            .ledger
            .as_ref()
            .and_then(|l| l.database_url_secret_ref.clone())
            .or_else(|| settings.database_secret.clone())
            .map_or_else(|| Self::volume(settings), Self::Database)
    }

    /// A volume of the configured size and class.
    fn volume(settings: &LedgerSettings) -> Self {
        Self::Volume {
            size: settings.storage_size.clone(),
            class: settings.storage_class.clone(),
        }
    }

    /// The storage a live StatefulSet gives its runtime: a database when the
    /// runtime container gets [`DATABASE_URL_ENV`] from a Secret, a volume
    /// when a claim template is named [`LEDGER_VOLUME`], `None` when neither
    /// (a StatefulSet of an older operator, with the ledger on an emptyDir).
    pub fn of_stateful_set(sts: &StatefulSet) -> Option<Self> {
        let spec = sts.spec.as_ref()?;
        let database = spec
            .template
            .spec
            .as_ref()
            .and_then(|p| p.containers.iter().find(|c| c.name == CONTAINER_NAME))
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == DATABASE_URL_ENV))
            .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .map(|s| SecretKeyRef {
                name: s.name.clone(),
                key: s.key.clone(),
            });
        if let Some(secret) = database {
            return Some(Self::Database(secret));
        }
        let template = spec
            .volume_claim_templates
            .as_ref()?
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(LEDGER_VOLUME))?;
        let claim = template.spec.as_ref();
        Some(Self::Volume {
            size: claim
                .and_then(|c| c.resources.as_ref()?.requests.as_ref()?.get("storage"))
                .map(|q| q.0.clone())
                .unwrap_or_default(),
            class: claim.and_then(|c| c.storage_class_name.clone()),
        })
    }

    /// Whether `self` and `other` are the same storage: the same Secret key,
    /// or volumes of equal size (compared by value: `1024Mi` = `1Gi`) and class.
    pub fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Database(a), Self::Database(b)) => a == b,
            (
                Self::Volume { size, class },
                Self::Volume {
                    size: other_size,
                    class: other_class,
                },
            ) => {
                class == other_class
                    && match (quantity_value(size), quantity_value(other_size)) {
                        (Some(a), Some(b)) => a == b,
                        _ => size == other_size,
                    }
            }
            _ => false,
        }
    }

    /// A stable one-line key of the storage, part of the pod's configuration
    /// hash (so a change of storage rolls the pod).
    pub fn hash_key(&self) -> String {
        match self {
            Self::Database(s) => format!("database secret={} key={}", s.name, s.key),
            Self::Volume { size, class } => format!(
                "volume size={size} class={}",
                class.as_deref().unwrap_or("")
            ),
        }
    }

    /// The runtime's arguments that select the ledger: `--ledger FILE` on a
    /// volume; none for a database (the runtime reads [`DATABASE_URL_ENV`]).
    pub fn runtime_args(&self) -> Vec<String> {
        match self {
            Self::Database(_) => Vec::new(),
            Self::Volume { .. } => vec!["--ledger".into(), LEDGER_FILE.into()],
        }
    }

    /// [`DATABASE_URL_ENV`] from the Secret key, for a database.
    pub fn env(&self) -> Option<EnvVar> {
        match self {
            Self::Database(s) => Some(EnvVar {
                name: DATABASE_URL_ENV.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: s.name.clone(),
                        key: s.key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            Self::Volume { .. } => None,
        }
    }

    /// The StatefulSet's claim templates: one [`LEDGER_VOLUME`] claim
    /// (ReadWriteOnce, the size and class) for a volume; none for a database.
    ///
    /// The template has nothing but its name, access mode, size and class, all
    /// taken from this value: claim templates are immutable, so the template
    /// of an existing StatefulSet must be rendered exactly as it was created
    /// (the StatefulSet controller adds the selector labels to the claim).
    pub fn claim_templates(&self) -> Option<Vec<PersistentVolumeClaim>> {
        let Self::Volume { size, class } = self else {
            return None;
        };
        Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(LEDGER_VOLUME.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(size.clone()),
                    )])),
                    ..Default::default()
                }),
                storage_class_name: class.clone(),
                ..Default::default()
            }),
            status: None,
        }])
    }

    /// What a person reads: where the ledger is, e.g. `SQLite on
    /// PersistentVolumeClaim ledger-bot-runtime-0 (1Gi, default storage class)`.
    pub fn describe(&self, claim: &str) -> String {
        match self {
            Self::Database(s) => {
                format!("PostgreSQL (URL from Secret {:?}, key {:?})", s.name, s.key)
            }
            Self::Volume { size, class } => format!(
                "SQLite on PersistentVolumeClaim {claim} ({size}, {})",
                class.as_deref().map_or_else(
                    || "default storage class".to_string(),
                    |c| format!("storage class {c:?}")
                )
            ),
        }
    }

    /// Whether this is a volume.
    pub fn is_volume(&self) -> bool {
        matches!(self, Self::Volume { .. })
    }
}

/// `persistentVolumeClaimRetentionPolicy` of every runtime StatefulSet:
/// `Retain` when scaled down and when deleted (see the module docs).
pub fn retention_policy() -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_scaled: Some("Retain".into()),
        when_deleted: Some("Retain".into()),
    }
}

/// Name of the ledger claim of the StatefulSet `stateful_set` (its only pod
/// has ordinal 0): `ledger-<stateful_set>-0`.
pub fn claim_name(stateful_set: &str) -> String {
    format!("{LEDGER_VOLUME}-{stateful_set}-0")
}

/// The StatefulSet whose ledger claim is `claim` (the inverse of
/// [`claim_name`]), or `None` when `claim` is not a ledger claim's name.
pub fn stateful_set_of_claim(claim: &str) -> Option<&str> {
    claim
        .strip_prefix(LEDGER_VOLUME)?
        .strip_prefix('-')?
        .strip_suffix("-0")
        .filter(|s| !s.is_empty())
}

/// What to do with a session's ledger storage, from [`plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerPlan {
    /// The storage to render.
    pub storage: LedgerStorage,
    /// The configured storage when it differs from [`Self::storage`] (kept
    /// because it is fixed at creation), else `None`.
    pub outdated: Option<LedgerStorage>,
    /// The live StatefulSet keeps the ledger on an emptyDir (an older
    /// operator): delete it so it is recreated with [`Self::storage`].
    pub recreate: bool,
}

/// Decide the storage of a session's ledger from the configured storage, the
/// live StatefulSet (if any) and whether its ledger claim exists:
///
/// 1. a live StatefulSet on a database keeps a database, following the
///    configured Secret when the configuration still names one;
/// 2. a live StatefulSet on a volume keeps its volume (size and class as
///    created);
/// 3. a live StatefulSet with neither (ledger on an emptyDir) is recreated
///    with the configured storage;
/// 4. without a StatefulSet, an existing ledger claim (left by a StatefulSet
///    deleted by hand, or retained from an earlier session of the same name)
///    keeps the session on a volume;
/// 5. otherwise the configured storage.
///
/// In 1, 2 and 4 a configured storage that differs is returned in
/// [`LedgerPlan::outdated`].
pub fn plan(
    configured: LedgerStorage,
    live: Option<&StatefulSet>,
    claim_exists: bool,
    settings: &LedgerSettings,
) -> LedgerPlan {
    let kept = match live {
        Some(sts) => match LedgerStorage::of_stateful_set(sts) {
            Some(LedgerStorage::Database(live_secret)) => match &configured {
                LedgerStorage::Database(_) => configured.clone(),
                LedgerStorage::Volume { .. } => LedgerStorage::Database(live_secret),
            },
            Some(volume) => volume,
            None => {
                return LedgerPlan {
                    storage: configured,
                    outdated: None,
                    recreate: true,
                };
            }
        },
        None if claim_exists && !configured.is_volume() => LedgerStorage::volume(settings),
        None => configured.clone(),
    };
    let outdated = (!kept.same_as(&configured)).then_some(configured);
    LedgerPlan {
        storage: kept,
        outdated,
        recreate: false,
    }
}

/// Whether `owners` holds a reference to the object with `uid`.
fn has_owner(owners: Option<&Vec<OwnerReference>>, uid: &str) -> bool {
    owners.is_some_and(|o| o.iter().any(|r| r.uid == uid))
}

/// The server-side apply body that gives the ledger claim the ownership
/// `retention` asks for, or `None` when it already has it: with
/// [`VolumeRetention::Delete`] an owner reference to the session (not a
/// controller reference: the claim's controller, if any, is the StatefulSet
/// controller's business); with [`VolumeRetention::Retain`] none from us (an
/// apply without `ownerReferences` removes the one this field manager set).
pub fn claim_ownership_patch(
    claim: &PersistentVolumeClaim,
    session_owner: &OwnerReference,
    retention: VolumeRetention,
) -> Option<Value> {
    let owned = has_owner(claim.metadata.owner_references.as_ref(), &session_owner.uid);
    let metadata = json!({
        "name": claim.metadata.name,
        "namespace": claim.metadata.namespace,
    });
    let mut body =
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata});
    match retention {
        VolumeRetention::Delete if !owned => {
            let owner = OwnerReference {
                controller: None,
                block_owner_deletion: None,
                ..session_owner.clone()
            };
            body["metadata"]["ownerReferences"] = json!([owner]);
            Some(body)
        }
        VolumeRetention::Retain if owned => Some(body),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        apps::v1::StatefulSetSpec,
        core::v1::{Container, PodSpec, PodTemplateSpec},
    };

    use super::*;

    fn secret(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    fn volume(size: &str, class: Option<&str>) -> LedgerStorage {
        LedgerStorage::Volume {
            size: size.into(),
            class: class.map(Into::into),
        }
    }

    fn account(ledger: &str) -> PaperAccount {
        serde_yaml::from_str(&format!(
            "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: a}}\nspec: {{initialBalance: \"1\"{ledger}}}\n"
        ))
        .unwrap()
    }

    /// A StatefulSet with the given storage rendered as the builders do.
    fn sts_with(storage: Option<&LedgerStorage>) -> StatefulSet {
        StatefulSet {
            spec: Some(StatefulSetSpec {
                volume_claim_templates: storage.and_then(LedgerStorage::claim_templates),
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: CONTAINER_NAME.into(),
                            env: storage.and_then(LedgerStorage::env).map(|e| vec![e]),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn account_secret_wins_over_the_flag_which_wins_over_a_volume() {
        let mut settings = LedgerSettings::default();
        assert_eq!(
            LedgerStorage::configured(&account(""), &settings),
            volume("1Gi", None)
        );
        settings.database_secret = Some(secret("flag", "url"));
        settings.storage_class = Some("fast".into());
        assert_eq!(
            LedgerStorage::configured(&account(""), &settings),
            LedgerStorage::Database(secret("flag", "url"))
        );
        let own = account(", ledger: {databaseUrlSecretRef: {name: pg-app, key: uri}}");
        assert_eq!(
            LedgerStorage::configured(&own, &settings),
            LedgerStorage::Database(secret("pg-app", "uri"))
        );
        // An empty `ledger` object overrides nothing.
        assert_eq!(
            LedgerStorage::configured(&account(", ledger: {}"), &settings),
            LedgerStorage::Database(secret("flag", "url"))
        );
    }

    #[test]
    fn storage_is_read_back_from_a_stateful_set() {
        for storage in [
            LedgerStorage::Database(secret("pg", "uri")),
            volume("5Gi", Some("fast")),
            volume("1Gi", None),
        ] {
            assert_eq!(
                LedgerStorage::of_stateful_set(&sts_with(Some(&storage))),
                Some(storage)
            );
        }
        assert_eq!(LedgerStorage::of_stateful_set(&sts_with(None)), None);
        assert_eq!(
            LedgerStorage::of_stateful_set(&StatefulSet::default()),
            None
        );
    }

    #[test]
    fn volumes_compare_sizes_by_value() {
        assert!(volume("1Gi", None).same_as(&volume("1024Mi", None)));
        assert!(!volume("1Gi", None).same_as(&volume("2Gi", None)));
        assert!(!volume("1Gi", None).same_as(&volume("1Gi", Some("fast"))));
        assert!(!volume("1Gi", None).same_as(&LedgerStorage::Database(secret("a", "b"))));
    }

    #[test]
    fn a_new_session_gets_the_configured_storage() {
        let s = LedgerSettings::default();
        for configured in [
            volume("1Gi", None),
            LedgerStorage::Database(secret("a", "b")),
        ] {
            let p = plan(configured.clone(), None, false, &s);
            assert_eq!(
                p,
                LedgerPlan {
                    storage: configured,
                    outdated: None,
                    recreate: false
                }
            );
        }
    }

    #[test]
    fn a_volume_ledger_is_kept_when_the_configuration_changes() {
        let s = LedgerSettings::default();
        let live = sts_with(Some(&volume("1Gi", Some("slow"))));
        let db = LedgerStorage::Database(secret("pg", "uri"));
        let p = plan(db.clone(), Some(&live), true, &s);
        assert_eq!(p.storage, volume("1Gi", Some("slow")));
        assert_eq!(p.outdated, Some(db));
        assert!(!p.recreate);
        // A new size or class cannot change the claim template either.
        let p = plan(volume("5Gi", Some("slow")), Some(&live), true, &s);
        assert_eq!(p.storage, volume("1Gi", Some("slow")));
        assert_eq!(p.outdated, Some(volume("5Gi", Some("slow"))));
        // The same size written differently is no change.
        let p = plan(volume("1024Mi", Some("slow")), Some(&live), true, &s);
        assert_eq!((p.storage, p.outdated), (volume("1Gi", Some("slow")), None));
    }

    #[test]
    fn a_database_ledger_follows_the_secret_but_never_moves_to_a_volume() {
        let s = LedgerSettings::default();
        let live = sts_with(Some(&LedgerStorage::Database(secret("old", "url"))));
        let new = LedgerStorage::Database(secret("new", "uri"));
        let p = plan(new.clone(), Some(&live), false, &s);
        assert_eq!((p.storage, p.outdated), (new, None));
        let p = plan(volume("1Gi", None), Some(&live), false, &s);
        assert_eq!(p.storage, LedgerStorage::Database(secret("old", "url")));
        assert_eq!(p.outdated, Some(volume("1Gi", None)));
    }

    #[test]
    fn an_existing_claim_keeps_a_session_without_stateful_set_on_its_volume() {
        let s = LedgerSettings {
            storage_size: "2Gi".into(),
            ..Default::default()
        };
        let db = LedgerStorage::Database(secret("pg", "uri"));
        let p = plan(db.clone(), None, true, &s);
        assert_eq!(p.storage, volume("2Gi", None));
        assert_eq!(p.outdated, Some(db));
    }

    #[test]
    fn an_emptydir_ledger_is_recreated_with_durable_storage() {
        let s = LedgerSettings::default();
        let p = plan(volume("1Gi", None), Some(&sts_with(None)), false, &s);
        assert!(p.recreate);
        assert_eq!(p.storage, volume("1Gi", None));
        assert_eq!(p.outdated, None);
    }

    #[test]
    fn runtime_wiring_per_storage() {
        let db = LedgerStorage::Database(secret("pg-app", "uri"));
        assert!(db.runtime_args().is_empty());
        assert!(db.claim_templates().is_none());
        let env = db.env().unwrap();
        assert_eq!(env.name, "DATABASE_URL");
        assert!(env.value.is_none(), "the URL is never inlined");
        let sel = env.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("pg-app", "uri"));

        let vol = volume("3Gi", Some("fast"));
        assert_eq!(
            vol.runtime_args(),
            ["--ledger", "/var/lib/paperbot/ledger/ledger.db"]
        );
        assert!(vol.env().is_none());
        let t = &vol.claim_templates().unwrap()[0];
        assert_eq!(t.metadata.name.as_deref(), Some("ledger"));
        let spec = t.spec.as_ref().unwrap();
        assert_eq!(
            spec.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_string()][..])
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            Quantity("3Gi".into())
        );
        assert_eq!(claim_name("bot-runtime"), "ledger-bot-runtime-0");
        assert_eq!(
            vol.describe("ledger-bot-runtime-0"),
            "SQLite on PersistentVolumeClaim ledger-bot-runtime-0 (3Gi, storage class \"fast\")"
        );
    }

    #[test]
    fn claim_ownership_follows_the_retention() {
        let owner = OwnerReference {
            api_version: "paperbot.io/v1alpha1".into(),
            kind: "BotSession".into(),
            name: "bot".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let mut claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("ledger-bot-runtime-0".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let patch = claim_ownership_patch(&claim, &owner, VolumeRetention::Delete).unwrap();
        assert_eq!(
            patch["metadata"]["ownerReferences"],
            json!([{"apiVersion": "paperbot.io/v1alpha1", "kind": "BotSession", "name": "bot", "uid": "u-1"}]),
            "an owner, not a controller"
        );
        assert_eq!(
            claim_ownership_patch(&claim, &owner, VolumeRetention::Retain),
            None
        );
        claim.metadata.owner_references = Some(vec![owner.clone()]);
        assert_eq!(
            claim_ownership_patch(&claim, &owner, VolumeRetention::Delete),
            None
        );
        let release = claim_ownership_patch(&claim, &owner, VolumeRetention::Retain).unwrap();
        assert!(release["metadata"].get("ownerReferences").is_none());
        assert_eq!(release["metadata"]["name"], "ledger-bot-runtime-0");
    }
}
