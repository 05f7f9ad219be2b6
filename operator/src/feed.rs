//! The shared market-data feed (`bot-runtime feed`) the operator deploys for
//! live sessions, so a fleet polls each upstream once per interval instead of
//! once per session.
//!
//! # Design
//!
//! Per namespace, the live BotSessions that use the shared feed
//! (`marketData.source: Live`, `live.useSharedFeed` not `false`, not being
//! deleted, `desiredState` not `Stopped`) are grouped by the
//! [`fingerprint`] of their `marketData.live.sources` (kinds, names, base
//! URLs, budgets, API key Secret references, symbol overrides: everything
//! that decides which upstream is asked what, and with whose key). Sessions
//! with the same chain can share one poller; sessions with different chains
//! cannot (another key, another proxy, another budget). Each group gets the
//! objects of [`build_feed`], all named [`feed_name`]
//! (`paperbot-feed-<10 hex of the fingerprint>`):
//!
//! - a ConfigMap with `feed.yaml` ([`FeedFile`]): the union of the group's
//!   symbols, the smallest `pollInterval`, `maxAge` and `jumpBandPct` of the
//!   group (the strictest session sets the pace and the checks), the
//!   group's sources;
//! - a Deployment (`--feed-replicas`, 1 by default) running the runtime
//!   image as `bot-runtime feed --config /etc/paperbot/feed.yaml`, API keys
//!   as `secretKeyRef` environment variables named like the runtime's
//!   (`PAPERBOT_LIVE_API_KEY_<NAME>`), the runtime pods' hardened security
//!   context, liveness `/healthz`, readiness `/readyz`, and the hash of
//!   `feed.yaml` on its pod template ([`FEED_CONFIG_HASH_ANNOTATION`]) so a
//!   changed ConfigMap rolls it;
//! - a ClusterIP Service on port [`FEED_PORT`].
//!
//! Runtime pods of the group get `PAPERBOT_FEED_URL =
//! http://paperbot-feed-<hash>.<namespace>.svc:8090` ([`feed_url`]), which is
//! a function of the session alone (its own sources), so building a runtime
//! never needs the rest of the fleet. The runtime puts the feed first in its
//! chain and falls back to its direct sources, within their budgets, while
//! the feed is missing or down.
//!
//! # Lifecycle
//!
//! Every BotSession reconcile (and every cleanup of a deleted session) calls
//! [`reconcile_namespace`]: it computes the groups of the namespace from the
//! store, applies each group's objects through the operator's one apply path
//! ([`crate::controllers::apply_child`]: only what changed is written), and
//! deletes the feeds of groups that have no session left (Events
//! `SharedFeedDeployed` and `SharedFeedDeleted` on the session whose
//! reconcile did it; applies are counted in
//! `paperbot_operator_child_applies_total` as kind `Deployment`, `Service`,
//! `ConfigMap`). Feeds are not
//! owned by a session (no owner reference): a feed is shared by the whole
//! group, and an owner list of every member would be rewritten at each
//! arrival and departure (a 1000-session group would write a 1000-entry
//! list a thousand times). Instead the operator remembers the feeds it knows
//! per namespace, reading them once with a label selector
//! ([`FEED_COMPONENT`]) the first time it touches a namespace, so feeds left
//! behind while the operator was down are deleted too. Feed reconciles are
//! serialised per operator (one lock), since sessions of one group are
//! reconciled concurrently.
//!
//! Not detected: someone editing a feed object by hand between two changes
//! of its group (the operator compares with what it last applied, not with
//! a watch of the feed objects); deleting the Deployment's pods is harmless
//! (its ReplicaSet recreates them).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use k8s_openapi::api::{
    apps::v1::{Deployment, DeploymentSpec},
    core::v1::{
        ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, PodSpec,
        PodTemplateSpec, ResourceRequirements, Service, ServicePort, ServiceSpec, Volume,
        VolumeMount,
    },
};
use k8s_openapi::apimachinery::pkg::{
    api::resource::Quantity,
    apis::meta::v1::{LabelSelector, ObjectMeta},
    util::intstr::IntOrString,
};
use kube::{
    Resource, ResourceExt,
    api::{Api, DeleteParams, ListParams},
};
use paperbot_crds::{
    BotSession, DecimalString, DesiredState, GoDuration, LiveSourceSpec, LiveSpec, MarketDataSource,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::{Result, controllers::Context};

/// Prefix of every feed object's name.
pub const FEED_NAME_PREFIX: &str = "paperbot-feed-";
/// Port of the feed's HTTP API (`/v1/prices`, `/healthz`, `/readyz`,
/// `/metrics`), container and Service (named `http`).
pub const FEED_PORT: i32 = 8090;
/// ConfigMap key of the feed's configuration.
pub const FEED_CONFIG_KEY: &str = "feed.yaml";
/// Where the feed's ConfigMap is mounted.
pub const FEED_CONFIG_DIR: &str = "/etc/paperbot";
/// Environment variable of runtime pods naming their feed (read by the
/// runtime, `bot_runtime::runner::live::FEED_URL_ENV`).
pub const FEED_URL_ENV: &str = "PAPERBOT_FEED_URL";
/// Pod-template annotation with the hash of `feed.yaml`: a changed
/// configuration rolls the feed's pods.
pub const FEED_CONFIG_HASH_ANNOTATION: &str = "paperbot.io/feed-config-hash";
/// `app.kubernetes.io/component` of every feed object (the label selector
/// the operator lists feeds with).
pub const FEED_COMPONENT: &str = "market-data-feed";
/// Label carrying the feed's name (its pods' selector).
pub const FEED_LABEL: &str = "paperbot.io/feed";
/// Name of the feed container.
pub const FEED_CONTAINER: &str = "feed";
/// Hex characters of the fingerprint in a feed's name (40 bits: a clash
/// between two chains of one namespace is negligible).
pub const FINGERPRINT_LEN: usize = 10;

/// Operator-wide settings of the feeds (flags `--shared-feed`,
/// `--feed-replicas`, `--feed-*-request`, `--feed-*-limit`).
#[derive(Clone, Debug, PartialEq)]
pub struct FeedSettings {
    /// Deploy feeds and point runtimes at them; `false`: every live runtime
    /// polls its sources directly and the operator does not touch feeds at
    /// all (feeds left from when it was on stay until deleted by hand:
    /// `kubectl delete deploy,svc,cm -l
    /// app.kubernetes.io/component=market-data-feed`).
    pub enabled: bool,
    /// Replicas of each feed Deployment (each replica polls the upstreams on
    /// its own, so more than one multiplies the upstream requests).
    pub replicas: i32,
    /// Requests and limits of the feed container.
    pub resources: ResourceRequirements,
}

impl Default for FeedSettings {
    /// Disabled (code that builds settings opts in); 1 replica; 50m CPU and
    /// 32Mi requested, 500m and 128Mi at most.
    fn default() -> Self {
        Self {
            enabled: false,
            replicas: 1,
            resources: ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".into(), Quantity("50m".into())),
                    ("memory".into(), Quantity("32Mi".into())),
                ])),
                limits: Some(BTreeMap::from([
                    ("cpu".into(), Quantity("500m".into())),
                    ("memory".into(), Quantity("128Mi".into())),
                ])),
                claims: None,
            },
        }
    }
}

/// The live settings of `s` when it runs on live data and uses the shared
/// feed (`useSharedFeed` unset or `true`); whether it is active is not
/// checked here.
pub fn shared_feed_spec(s: &BotSession) -> Option<&LiveSpec> {
    let md = &s.spec.market_data;
    md.live
        .as_ref()
        .filter(|l| md.source == MarketDataSource::Live && l.use_shared_feed != Some(false))
}

/// Fingerprint of a chain: SHA-256 of the JSON form of `sources` (in
/// order: the order is the fallback order), as lowercase hex cut to
/// [`FINGERPRINT_LEN`]. Field order is the struct's and symbol overrides are
/// a sorted map, so equal chains give equal fingerprints on every run.
pub fn fingerprint(sources: &[LiveSourceSpec]) -> String {
    // A Vec of plain structs and BTreeMaps always serialises.
    let json = serde_json::to_vec(sources).unwrap_or_default();
    let mut hex = hex::encode(Sha256::digest(&json));
    hex.truncate(FINGERPRINT_LEN);
    hex
}

/// Name of the feed objects of a chain: `paperbot-feed-<fingerprint>` (24
/// characters, an RFC 1035 label: valid for a Service).
pub fn feed_name(sources: &[LiveSourceSpec]) -> String {
    format!("{FEED_NAME_PREFIX}{}", fingerprint(sources))
}

/// URL of the feed serving `s`, when feeds are enabled and `s` uses one:
/// `http://<feed_name>.<namespace>.svc:8090`. `None` also when `s` has no
/// namespace.
pub fn feed_url(settings: &FeedSettings, s: &BotSession) -> Option<String> {
    if !settings.enabled {
        return None;
    }
    let live = shared_feed_spec(s)?;
    let ns = s.metadata.namespace.as_deref()?;
    Some(format!(
        "http://{}.{ns}.svc:{FEED_PORT}",
        feed_name(&live.sources)
    ))
}

/// The `PAPERBOT_FEED_URL` variable of a runtime pod of `s` ([`feed_url`]).
pub fn feed_env(settings: &FeedSettings, s: &BotSession) -> Option<EnvVar> {
    feed_url(settings, s).map(|url| EnvVar {
        name: FEED_URL_ENV.into(),
        value: Some(url),
        ..Default::default()
    })
}

/// `feed.yaml`, as `bot-runtime feed --config` reads it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedFile {
    /// The smallest `pollInterval` of the group.
    pub poll_interval: GoDuration,
    /// The smallest `maxAge` of the group (at least the smallest poll
    /// interval, since each session's is at least its own).
    pub max_age: GoDuration,
    /// The smallest `jumpBandPct` of the group, percent.
    pub jump_band_pct: DecimalString,
    /// The union of the group's `spec.symbols`, sorted.
    pub symbols: Vec<String>,
    /// The group's sources (equal in every session of the group).
    pub sources: Vec<LiveSourceSpec>,
}

/// One group of sessions sharing a feed.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedGroup {
    /// [`feed_name`] of the group's chain.
    pub name: String,
    /// Namespace of the group.
    pub namespace: String,
    /// Names of the sessions in the group, sorted.
    pub sessions: Vec<String>,
    /// The feed's configuration.
    pub file: FeedFile,
}

/// Whether `s` counts in its group: it uses the shared feed, is not being
/// deleted and is not `Stopped` (a stopped session runs no runtime).
fn is_member(s: &BotSession) -> bool {
    s.metadata.deletion_timestamp.is_none()
        && s.spec.desired_state != DesiredState::Stopped
        && shared_feed_spec(s).is_some()
}

/// The feed groups of `namespace` among `sessions` (other namespaces are
/// ignored), by feed name.
pub fn groups(sessions: &[Arc<BotSession>], namespace: &str) -> BTreeMap<String, FeedGroup> {
    let mut out: BTreeMap<String, FeedGroup> = BTreeMap::new();
    let mut symbols: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sessions {
        if s.metadata.namespace.as_deref() != Some(namespace) || !is_member(s) {
            continue;
        }
        let Some(live) = shared_feed_spec(s) else {
            continue;
        };
        let name = feed_name(&live.sources);
        symbols
            .entry(name.clone())
            .or_default()
            .extend(s.spec.symbols.iter().cloned());
        let g = out.entry(name.clone()).or_insert_with(|| FeedGroup {
            name,
            namespace: namespace.to_string(),
            sessions: Vec::new(),
            file: FeedFile {
                poll_interval: live.poll_interval,
                max_age: live.max_age,
                jump_band_pct: live.jump_band_pct,
                symbols: Vec::new(),
                sources: live.sources.clone(),
            },
        });
        g.sessions.push(s.name_any());
        let f = &mut g.file;
        if live.poll_interval.get() < f.poll_interval.get() {
            f.poll_interval = live.poll_interval;
        }
        if live.max_age.get() < f.max_age.get() {
            f.max_age = live.max_age;
        }
        if live.jump_band_pct.get() < f.jump_band_pct.get() {
            f.jump_band_pct = live.jump_band_pct;
        }
    }
    for g in out.values_mut() {
        g.sessions.sort();
        g.file.symbols = symbols
            .remove(&g.name)
            .unwrap_or_default()
            .into_iter()
            .collect();
    }
    out
}

/// The objects of one feed.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedObjects {
    /// `feed.yaml`.
    pub config_map: ConfigMap,
    /// The `bot-runtime feed` pods.
    pub deployment: Deployment,
    /// ClusterIP Service, port `http` ([`FEED_PORT`]).
    pub service: Service,
}

/// Labels of a feed's objects, also its pods' selector:
/// `app.kubernetes.io/name=paperbot-feed`, `app.kubernetes.io/instance=<name>`,
/// `app.kubernetes.io/component=market-data-feed`,
/// `app.kubernetes.io/managed-by=paperbot-operator`, `paperbot.io/feed=<name>`.
pub fn feed_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "paperbot-feed".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("app.kubernetes.io/component".into(), FEED_COMPONENT.into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "paperbot-operator".into(),
        ),
        (FEED_LABEL.into(), name.into()),
    ])
}

/// Build the ConfigMap, Deployment and Service of `group` with the runtime
/// image and extra labels of `runtime` and the replicas and resources of
/// `feed`.
///
/// # Errors
/// [`crate::Error`] when `feed.yaml` cannot be rendered as YAML.
pub fn build_feed(
    group: &FeedGroup,
    runtime: &crate::builders::RuntimeSettings,
    feed: &FeedSettings,
) -> Result<FeedObjects> {
    let rendered = serde_yaml::to_string(&group.file).map_err(|source| {
        crate::builders::BuildError::Render {
            kind: "feed ConfigMap",
            source,
        }
    })?;
    let hash = crate::builders::config_hash(&rendered);
    let selector = feed_labels(&group.name);
    let mut all_labels = runtime.extra_labels.clone();
    all_labels.extend(selector.clone());
    let meta = ObjectMeta {
        name: Some(group.name.clone()),
        namespace: Some(group.namespace.clone()),
        labels: Some(all_labels.clone()),
        ..Default::default()
    };
    let config_map = ConfigMap {
        metadata: meta.clone(),
        data: Some(BTreeMap::from([(FEED_CONFIG_KEY.to_string(), rendered)])),
        ..Default::default()
    };
    let service = Service {
        metadata: meta.clone(),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector.clone()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: FEED_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let env = crate::builders::api_key_env(&group.file.sources);
    let container = Container {
        name: FEED_CONTAINER.into(),
        image: Some(runtime.image.clone()),
        image_pull_policy: runtime.image_pull_policy.clone(),
        args: Some(
            [
                "--log-format",
                "json",
                "feed",
                "--config",
                &format!("{FEED_CONFIG_DIR}/{FEED_CONFIG_KEY}"),
                "--listen",
                &format!("0.0.0.0:{FEED_PORT}"),
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(env).filter(|e| !e.is_empty()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: FEED_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(crate::builders::http_probe_on("http", "/readyz", 5, 3)),
        liveness_probe: Some(crate::builders::http_probe_on("http", "/healthz", 10, 6)),
        resources: Some(feed.resources.clone()),
        security_context: Some(crate::builders::container_security_context()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: FEED_CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        security_context: Some(crate::builders::pod_security_context()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        node_selector: Some(runtime.pod_overlay.node_selector.clone()).filter(|m| !m.is_empty()),
        tolerations: Some(runtime.pod_overlay.tolerations.clone()).filter(|t| !t.is_empty()),
        affinity: runtime.pod_overlay.affinity.clone(),
        priority_class_name: runtime.pod_overlay.priority_class_name.clone(),
        volumes: Some(vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: group.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "tmp".into(),
                empty_dir: Some(Default::default()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(feed.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(all_labels),
                    annotations: Some(BTreeMap::from([(
                        FEED_CONFIG_HASH_ANNOTATION.to_string(),
                        hash,
                    )])),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(FeedObjects {
        config_map,
        deployment,
        service,
    })
}

/// What the operator knows of the feeds: per namespace, the objects it last
/// applied, by feed name. Behind one async lock, held for a whole
/// [`reconcile_namespace`].
#[derive(Debug, Default)]
pub struct FeedState {
    inner: tokio::sync::Mutex<HashMap<String, BTreeMap<String, Applied>>>,
}

/// What was last applied of one feed (the objects as the API server
/// returned them, or `None` for a feed found by listing).
#[derive(Debug, Default)]
struct Applied {
    config_map: Option<ConfigMap>,
    deployment: Option<Deployment>,
    service: Option<Service>,
}

/// Bring the feeds of `namespace` in line with its sessions: apply each
/// group's objects (writing only what changed), delete the feeds no group
/// needs. `current` is the session being reconciled, as fresh as the caller
/// has it (it replaces the store's copy, which may lag).
///
/// # Errors
/// A failed list, apply or delete (the reconcile is retried).
pub async fn reconcile_namespace(
    namespace: &str,
    current: &BotSession,
    ctx: &Context,
) -> Result<()> {
    let feed_settings = &ctx.settings.feed;
    // Read the store under the lock, so the last of several concurrent
    // reconciles decides from the newest view.
    let mut state = ctx.feeds.inner.lock().await;
    let mut sessions: Vec<Arc<BotSession>> = ctx
        .stores
        .sessions
        .state()
        .into_iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && !(s.metadata.uid.is_some() && s.metadata.uid == current.metadata.uid)
                && s.name_any() != current.name_any()
        })
        .collect();
    sessions.push(Arc::new(current.clone()));
    let wanted = if feed_settings.enabled {
        groups(&sessions, namespace)
    } else {
        BTreeMap::new()
    };
    let known = match state.get_mut(namespace) {
        Some(k) => k,
        None => {
            // First touch of the namespace: learn the feeds already there.
            let list = Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
                .list_metadata(&ListParams::default().labels(&format!(
                    "app.kubernetes.io/component={FEED_COMPONENT},app.kubernetes.io/managed-by=paperbot-operator"
                )))
                .await?;
            let found = list
                .items
                .into_iter()
                .map(|d| (d.name_any(), Applied::default()))
                .collect();
            state.entry(namespace.to_string()).or_insert(found)
        }
    };
    let client = ctx.client.clone();
    let metrics = &*ctx.metrics;
    for (name, group) in &wanted {
        let objects = build_feed(group, &ctx.settings, feed_settings)?;
        let entry = known.entry(name.clone()).or_default();
        let r = crate::controllers::apply_child(
            &Api::<ConfigMap>::namespaced(client.clone(), namespace),
            objects.config_map,
            entry.config_map.as_ref(),
            |_| Ok(()),
            metrics,
            "ConfigMap",
        )
        .await?;
        if let Some(o) = r.applied {
            entry.config_map = Some((*o).clone());
        }
        let r = crate::controllers::apply_child(
            &Api::<Service>::namespaced(client.clone(), namespace),
            objects.service,
            entry.service.as_ref(),
            |_| Ok(()),
            metrics,
            "Service",
        )
        .await?;
        if let Some(o) = r.applied {
            entry.service = Some((*o).clone());
        }
        let r = crate::controllers::apply_child(
            &Api::<Deployment>::namespaced(client.clone(), namespace),
            objects.deployment,
            entry.deployment.as_ref(),
            |_| Ok(()),
            metrics,
            "Deployment",
        )
        .await?;
        if let Some(o) = r.applied {
            if entry.deployment.is_none() {
                info!(feed = %name, namespace, sessions = group.sessions.len(), "shared feed deployed");
                event(
                    ctx,
                    current,
                    "SharedFeedDeployed",
                    &format!(
                        "shared market-data feed {name} applied for {} live session(s) on {} symbol(s)",
                        group.sessions.len(),
                        group.file.symbols.len()
                    ),
                )
                .await;
            }
            entry.deployment = Some((*o).clone());
        }
    }
    let gone: Vec<String> = known
        .keys()
        .filter(|n| !wanted.contains_key(*n))
        .cloned()
        .collect();
    for name in gone {
        delete_feed(&client, namespace, &name).await?;
        known.remove(&name);
        info!(feed = %name, namespace, "shared feed deleted: no session uses it");
        event(
            ctx,
            current,
            "SharedFeedDeleted",
            &format!("shared market-data feed {name} deleted: no live session uses it any more"),
        )
        .await;
    }
    Ok(())
}

/// A Normal Event about the feeds on `s` (the session whose reconcile
/// changed them); a failure is logged, never fails the reconcile.
async fn event(ctx: &Context, s: &BotSession, reason: &str, note: &str) {
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &s.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing event failed");
    }
}

/// Delete the Deployment, Service and ConfigMap `name` (absent ones are
/// fine).
async fn delete_feed(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let dp = DeleteParams::background();
    let ignore_missing = |r: std::result::Result<(), kube::Error>| match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        r => r,
    };
    ignore_missing(
        Api::<Deployment>::namespaced(client.clone(), namespace)
            .delete(name, &dp)
            .await
            .map(|_| ()),
    )?;
    ignore_missing(
        Api::<Service>::namespaced(client.clone(), namespace)
            .delete(name, &dp)
            .await
            .map(|_| ()),
    )?;
    ignore_missing(
        Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .delete(name, &dp)
            .await
            .map(|_| ()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::RuntimeSettings;

    /// A live session `name` in `ns` on `symbols`, polling every `poll`,
    /// with `sources` (YAML flow list) and `extra` live settings.
    fn session(
        ns: &str,
        name: &str,
        symbols: &str,
        poll: &str,
        sources: &str,
        extra: &str,
    ) -> Arc<BotSession> {
        let yaml = format!(
            "apiVersion: paperbot.io/v1alpha1\nkind: BotSession\n\
             metadata: {{name: {name}, namespace: {ns}, uid: uid-{name}}}\n\
             spec:\n  accountRef: {{name: a}}\n  strategyRef: {{name: s}}\n  allocation: \"100\"\n  \
             symbols: {symbols}\n  marketData:\n    source: Live\n    live:\n      \
             interval: 1m\n      pollInterval: {poll}\n{extra}      sources: {sources}\n"
        );
        Arc::new(serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")))
    }

    const CG: &str = "[{name: coingecko, kind: CoinGecko, requestsPerMinute: 30, \
                      apiKeySecretRef: {name: cg-key, key: apiKey}}]";
    const BN: &str = "[{name: binance, kind: Binance, requestsPerMinute: 600}]";

    fn enabled() -> FeedSettings {
        FeedSettings {
            enabled: true,
            ..FeedSettings::default()
        }
    }

    #[test]
    fn sessions_with_the_same_sources_share_one_feed_with_the_union_and_the_smallest_settings() {
        let sessions = vec![
            session(
                "t",
                "a",
                "[BTC-USD, ETH-USD]",
                "10s",
                CG,
                "      jumpBandPct: \"15\"\n",
            ),
            session(
                "t",
                "b",
                "[SOL-USD, BTC-USD]",
                "5s",
                CG,
                "      maxAge: 30s\n",
            ),
            session("t", "c", "[XRP-USD]", "10s", BN, ""),
            session("other", "d", "[DOGE-USD]", "1s", CG, ""),
            session(
                "t",
                "off",
                "[ADA-USD]",
                "1s",
                CG,
                "      useSharedFeed: false\n",
            ),
        ];
        let g = groups(&sessions, "t");
        assert_eq!(g.len(), 2, "{g:#?}");
        let cg = &g[&feed_name(&sessions[0].spec.market_data.live.as_ref().unwrap().sources)];
        assert_eq!(cg.sessions, ["a", "b"]);
        assert_eq!(cg.namespace, "t");
        assert_eq!(cg.file.symbols, ["BTC-USD", "ETH-USD", "SOL-USD"]);
        assert_eq!(cg.file.poll_interval.get().as_secs(), 5);
        assert_eq!(cg.file.max_age.get().as_secs(), 30);
        assert_eq!(cg.file.jump_band_pct.get(), rust_decimal::Decimal::from(15));
        let bn = g.values().find(|x| x.name != cg.name).unwrap();
        assert_eq!(bn.sessions, ["c"]);
        assert_eq!(bn.file.symbols, ["XRP-USD"]);
        assert_eq!(bn.file.sources[0].name, "binance");
    }

    #[test]
    fn stopped_deleting_and_non_live_sessions_need_no_feed() {
        let mut stopped = (*session("t", "a", "[BTC-USD]", "10s", CG, "")).clone();
        stopped.spec.desired_state = DesiredState::Stopped;
        let mut deleting = (*session("t", "b", "[BTC-USD]", "10s", CG, "")).clone();
        deleting.metadata.deletion_timestamp = Some(crate::controllers::now());
        let mut replay = (*session("t", "c", "[BTC-USD]", "10s", CG, "")).clone();
        replay.spec.market_data.source = MarketDataSource::Simulated;
        let g = groups(&[stopped, deleting, replay.clone()].map(Arc::new), "t");
        assert!(g.is_empty(), "{g:#?}");
        assert_eq!(feed_url(&enabled(), &replay), None);
    }

    #[test]
    fn fingerprints_are_stable_and_see_every_source_setting() {
        let a = session("t", "a", "[BTC-USD]", "10s", CG, "");
        let sources = &a.spec.market_data.live.as_ref().unwrap().sources;
        // Computed on this build and pinned: a change renames every feed
        // (and rolls every live runtime), so it must be deliberate.
        assert_eq!(fingerprint(sources), "7b06a55518");
        assert_eq!(
            feed_name(sources).len(),
            FEED_NAME_PREFIX.len() + FINGERPRINT_LEN
        );
        assert!(feed_name(sources).starts_with(FEED_NAME_PREFIX));
        let base = fingerprint(sources);
        let variants = [
            "[{name: coingecko2, kind: CoinGecko, requestsPerMinute: 30, apiKeySecretRef: {name: cg-key, key: apiKey}}]",
            "[{name: coingecko, kind: CoinGecko, requestsPerMinute: 31, apiKeySecretRef: {name: cg-key, key: apiKey}}]",
            "[{name: coingecko, kind: CoinGecko, requestsPerMinute: 30, apiKeySecretRef: {name: cg-key, key: other}}]",
            "[{name: coingecko, kind: CoinGecko, requestsPerMinute: 30}]",
            "[{name: coingecko, kind: CoinGecko, requestsPerMinute: 30, baseUrl: 'http://proxy:1', apiKeySecretRef: {name: cg-key, key: apiKey}}]",
            "[{name: coingecko, kind: CoinGecko, requestsPerMinute: 30, symbols: {BTC-USD: bitcoin}, apiKeySecretRef: {name: cg-key, key: apiKey}}]",
        ];
        let mut seen = BTreeSet::from([base.clone()]);
        for v in variants {
            let s = session("t", "x", "[BTC-USD]", "10s", v, "");
            let f = fingerprint(&s.spec.market_data.live.as_ref().unwrap().sources);
            assert!(seen.insert(f), "{v} has the fingerprint of another chain");
        }
        // Poll settings and symbols are not part of it: they merge.
        let other = session("u", "y", "[ETH-USD]", "3s", CG, "      maxAge: 9s\n");
        assert_eq!(
            fingerprint(&other.spec.market_data.live.as_ref().unwrap().sources),
            base
        );
    }

    #[test]
    fn runtime_pods_get_the_feed_url_only_when_enabled_and_not_opted_out() {
        let a = session("trading", "a", "[BTC-USD]", "10s", CG, "");
        let name = feed_name(&a.spec.market_data.live.as_ref().unwrap().sources);
        let env = feed_env(&enabled(), &a).unwrap();
        assert_eq!(env.name, FEED_URL_ENV);
        assert_eq!(
            env.value.as_deref(),
            Some(format!("http://{name}.trading.svc:8090").as_str())
        );
        assert_eq!(feed_env(&FeedSettings::default(), &a), None);
        let off = session(
            "trading",
            "b",
            "[BTC-USD]",
            "10s",
            CG,
            "      useSharedFeed: false\n",
        );
        assert_eq!(feed_env(&enabled(), &off), None);
        let on = session(
            "trading",
            "c",
            "[BTC-USD]",
            "10s",
            CG,
            "      useSharedFeed: true\n",
        );
        assert!(feed_env(&enabled(), &on).is_some());
    }

    #[test]
    fn the_runtime_statefulset_carries_the_feed_url() {
        use crate::builders::{BuildInput, build_children};
        use crate::ledger::{LedgerSettings, LedgerStorage};
        let a = session("trading", "a", "[BTC-USD]", "10s", CG, "");
        let settings = RuntimeSettings {
            image: "img".into(),
            feed: enabled(),
            ..Default::default()
        };
        let account: paperbot_crds::PaperAccount = serde_yaml::from_str(
            "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {name: a}\nspec: {initialBalance: \"1000\"}",
        )
        .unwrap();
        let ledger = LedgerStorage::configured(&account, &LedgerSettings::default());
        let env_of = |settings: &RuntimeSettings| {
            let c = build_children(&BuildInput {
                session: &a,
                config: "x",
                settings,
                api_token: "t",
                ledger: &ledger,
                suspended: false,
                stopping: false,
            })
            .unwrap();
            c.stateful_set
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .containers[0]
                .env
                .clone()
                .unwrap()
        };
        let env = env_of(&settings);
        let url = env.iter().find(|e| e.name == FEED_URL_ENV).unwrap();
        assert_eq!(url.value, feed_url(&settings.feed, &a));
        let off = RuntimeSettings {
            feed: FeedSettings::default(),
            ..settings
        };
        assert!(!env_of(&off).iter().any(|e| e.name == FEED_URL_ENV));
    }

    #[test]
    fn feed_objects_run_the_feed_hardened_with_keys_from_secrets_and_a_config_hash() {
        let sessions = vec![
            session("t", "a", "[BTC-USD, ETH-USD]", "10s", CG, ""),
            session("t", "b", "[SOL-USD]", "10s", CG, ""),
        ];
        let g = groups(&sessions, "t").into_values().next().unwrap();
        let runtime = RuntimeSettings {
            image: "ghcr.io/paperbot/bot-runtime:1".into(),
            extra_labels: BTreeMap::from([("team".into(), "quant".into())]),
            ..Default::default()
        };
        let o = build_feed(&g, &runtime, &enabled()).unwrap();
        for meta in [
            &o.config_map.metadata,
            &o.deployment.metadata,
            &o.service.metadata,
        ] {
            assert_eq!(meta.name.as_deref(), Some(g.name.as_str()));
            assert_eq!(meta.namespace.as_deref(), Some("t"));
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/component"], FEED_COMPONENT);
            assert_eq!(labels["team"], "quant");
            assert!(meta.owner_references.is_none());
        }
        let text = &o.config_map.data.as_ref().unwrap()[FEED_CONFIG_KEY];
        let back: serde_json::Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(
            back["symbols"],
            serde_json::json!(["BTC-USD", "ETH-USD", "SOL-USD"])
        );
        assert_eq!(back["pollInterval"], "10s");
        assert_eq!(back["sources"][0]["name"], "coingecko");
        assert!(!text.contains("apiKey:"), "no key in the ConfigMap: {text}");

        let spec = o.deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let tpl = &spec.template;
        let pod = tpl.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/paperbot/bot-runtime:1"));
        let args = c.args.as_ref().unwrap().join(" ");
        assert!(
            args.contains("feed --config /etc/paperbot/feed.yaml --listen 0.0.0.0:8090"),
            "{args}"
        );
        let key = &c.env.as_ref().unwrap()[0];
        assert_eq!(key.name, "PAPERBOT_LIVE_API_KEY_COINGECKO");
        let sel = key
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("cg-key", "apiKey"));
        assert_eq!(
            c.security_context,
            Some(crate::builders::container_security_context())
        );
        assert_eq!(
            pod.security_context,
            Some(crate::builders::pod_security_context())
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone()
        };
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(
            spec.selector.match_labels.as_ref(),
            Some(&feed_labels(&g.name))
        );
        let svc = o.service.spec.as_ref().unwrap();
        assert_eq!(svc.selector.as_ref(), Some(&feed_labels(&g.name)));
        assert_eq!(svc.ports.as_ref().unwrap()[0].port, FEED_PORT);

        // A new symbol changes feed.yaml and so the pods' hash (a roll);
        // building again changes nothing.
        let hash = |o: &FeedObjects| {
            o.deployment
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[FEED_CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_eq!(build_feed(&g, &runtime, &enabled()).unwrap(), o);
        let mut more = sessions.clone();
        more.push(session("t", "c", "[XRP-USD]", "10s", CG, ""));
        let g2 = groups(&more, "t").into_values().next().unwrap();
        assert_eq!(g2.name, g.name);
        assert_ne!(
            hash(&build_feed(&g2, &runtime, &enabled()).unwrap()),
            hash(&o)
        );
    }
}
