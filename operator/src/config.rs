//! Operator configuration: command-line flags, each also readable from a
//! `PAPERBOT_*` environment variable (the pod's identity comes from the
//! downward-API variables `POD_NAME` and `POD_NAMESPACE`).
//!
//! Values are checked when they are parsed, so a bad value is reported by
//! clap with the flag's name; [`OperatorConfig::runtime_settings`] checks the
//! runtime defaults again for configs built in code.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use clap::{Parser, ValueEnum, builder::BoolishValueParser};
use k8s_openapi::{
    api::core::v1::ResourceRequirements, apimachinery::pkg::api::resource::Quantity,
};
use paperbot_crds::{
    DurationString, SecretKeyRef,
    account::{is_dns_subdomain, is_secret_key},
};

use crate::{
    builders::{RuntimePodOverlay, RuntimeSettings},
    leader::LeaderConfig,
    ledger::{DEFAULT_STORAGE_SIZE, LedgerSettings, VolumeRetention},
};

/// Image repository of the bot-runtime; the default tag is this crate's version.
pub const RUNTIME_IMAGE_REPOSITORY: &str = "ghcr.io/paperbot/bot-runtime";

/// Shortest accepted `--lease-duration`: the lease is renewed one third of
/// the duration (at least one second) before it expires.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(2);

/// Errors found when turning the configuration into runtime settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A resource flag is not a Kubernetes quantity.
    #[error(
        "--{flag}: {value:?} is not a Kubernetes quantity (expected e.g. \"100m\", \"1\", \"64Mi\" or \"1Gi\")"
    )]
    InvalidQuantity {
        /// Flag name without the leading dashes.
        flag: &'static str,
        /// The rejected value.
        value: String,
    },
    /// `--runtime-image` is empty.
    #[error("--runtime-image must not be empty")]
    EmptyImage,
    /// A flag naming an object or a Secret key has an invalid value.
    #[error(
        "--{flag}: {value:?} is not a valid name (expected lower-case letters, digits, '-' and '.'; a Secret key may also use upper case and '_')"
    )]
    InvalidName {
        /// Flag name without the leading dashes.
        flag: &'static str,
        /// The rejected value.
        value: String,
    },
    /// A request is larger than the matching limit; the API server would
    /// refuse every runtime pod.
    #[error(
        "--{prefix}-{resource}-request ({request}) is larger than --{prefix}-{resource}-limit ({limit})"
    )]
    RequestAboveLimit {
        /// `runtime` or `feed`.
        prefix: &'static str,
        /// `cpu` or `memory`.
        resource: &'static str,
        /// The request as given.
        request: String,
        /// The limit as given.
        limit: String,
    },
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors in clusters).
    Json,
}

impl LogFormat {
    /// The default: JSON inside a cluster, text elsewhere.
    pub fn default_for(in_cluster: bool) -> Self {
        if in_cluster { Self::Json } else { Self::Text }
    }
}

/// Command-line and environment configuration of the operator.
#[derive(Clone, Debug, Parser)]
#[command(name = "paperbot-operator", version, about)]
pub struct OperatorConfig {
    /// Container image of the bot-runtime pods.
    #[arg(long, env = "PAPERBOT_RUNTIME_IMAGE", default_value_t = default_runtime_image())]
    pub runtime_image: String,

    /// Image pull policy of the runtime container; unset lets Kubernetes decide.
    #[arg(long, env = "PAPERBOT_RUNTIME_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub runtime_image_pull_policy: Option<String>,

    /// Default CPU request of a runtime pod (Kubernetes quantity, cores: `100m` = 0.1 core).
    #[arg(long, env = "PAPERBOT_RUNTIME_CPU_REQUEST", default_value = "100m", value_parser = parse_quantity)]
    pub runtime_cpu_request: String,

    /// Default memory request of a runtime pod (Kubernetes quantity, bytes: `64Mi`).
    #[arg(long, env = "PAPERBOT_RUNTIME_MEMORY_REQUEST", default_value = "64Mi", value_parser = parse_quantity)]
    pub runtime_memory_request: String,

    /// Default CPU limit of a runtime pod (Kubernetes quantity, cores).
    #[arg(long, env = "PAPERBOT_RUNTIME_CPU_LIMIT", default_value = "1", value_parser = parse_quantity)]
    pub runtime_cpu_limit: String,

    /// Default memory limit of a runtime pod (Kubernetes quantity, bytes).
    #[arg(long, env = "PAPERBOT_RUNTIME_MEMORY_LIMIT", default_value = "256Mi", value_parser = parse_quantity)]
    pub runtime_memory_limit: String,

    /// Namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(long, env = "PAPERBOT_NAMESPACES", value_delimiter = ',', value_parser = parse_namespace)]
    pub namespaces: Vec<String>,

    /// How often each running session's runtime is polled (`GET /v1/status`),
    /// and so at most how often its status is written; a Kubernetes-style
    /// duration (`15s`, `1m`).
    #[arg(long, env = "PAPERBOT_STATUS_SYNC_INTERVAL", default_value = "15s", value_parser = parse_positive_duration)]
    pub status_sync_interval: DurationString,

    /// Timeout of one request to a runtime's API.
    #[arg(long, env = "PAPERBOT_RUNTIME_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub runtime_request_timeout: DurationString,

    /// Requests to runtimes in flight at most (1 to 1024).
    #[arg(long, env = "PAPERBOT_RUNTIME_POLL_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub runtime_poll_concurrency: u16,

    /// Failed polls in a row after which a session shows `RuntimeNotReporting`
    /// (`Degraded=True`, `CircuitBreakerOpen=Unknown`), 1 to 1000.
    #[arg(long, env = "PAPERBOT_RUNTIME_NOT_REPORTING_AFTER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runtime_not_reporting_after: u32,

    /// Reach a session's runtime at the URL in its `paperbot.io/runtime-endpoint`
    /// annotation instead of its Service (tests, runtimes outside the cluster).
    /// Off by default: the annotation would let anyone who can edit a
    /// BotSession point the operator, with the session's token, at any URL.
    #[arg(long, env = "PAPERBOT_ALLOW_RUNTIME_ENDPOINT_OVERRIDE", default_value_t = false, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub allow_runtime_endpoint_override: bool,

    /// Requeue interval of a healthy object: a safety net, since watch
    /// events ask for every reconcile that is needed (`10m`).
    #[arg(long, env = "PAPERBOT_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_positive_duration)]
    pub resync_interval: DurationString,

    /// BotSession reconciles run at a time (1–256).
    #[arg(long, env = "PAPERBOT_RECONCILE_CONCURRENCY", default_value_t = crate::run::DEFAULT_SESSION_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub reconcile_concurrency: u16,

    /// Seconds the operator waits after SIGTERM for reconciles in flight
    /// before it exits anyway (whole seconds, 1–60).
    #[arg(long, env = "PAPERBOT_SHUTDOWN_GRACE", default_value = "4s", value_parser = parse_shutdown_grace)]
    pub shutdown_grace: DurationString,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "PAPERBOT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Put `prometheus.io/scrape`, `prometheus.io/port` (9090) and
    /// `prometheus.io/path` (`/metrics`) annotations on runtime pods, for a
    /// Prometheus that discovers pods by annotation (`true`/`false`).
    #[arg(long, env = "PAPERBOT_RUNTIME_SCRAPE_ANNOTATIONS", default_value_t = false, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub runtime_scrape_annotations: bool,

    /// Elect a leader through a Lease so that only one replica writes (`true`/`false`).
    #[arg(long, env = "PAPERBOT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub leader_election: bool,

    /// Name of the coordination.k8s.io/v1 Lease used for leader election.
    #[arg(long, env = "PAPERBOT_LEASE_NAME", default_value = "paperbot-operator", value_parser = parse_dns_name)]
    pub lease_name: String,

    /// Namespace of the Lease (normally the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default", value_parser = parse_namespace)]
    pub lease_namespace: String,

    /// This replica's identity in the Lease; defaults to the host name, or a random string.
    #[arg(long, env = "POD_NAME", default_value_t = default_identity())]
    pub identity: String,

    /// How long a Lease stays valid without renewal (whole seconds, at least 2s).
    #[arg(long, env = "PAPERBOT_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: DurationString,

    /// Secret (in each session's namespace) holding the PostgreSQL URL of the
    /// runtimes' ledger; unset: SQLite on a PersistentVolumeClaim per session.
    /// A PaperAccount's `spec.ledger.databaseUrlSecretRef` overrides it.
    #[arg(long, env = "PAPERBOT_LEDGER_DATABASE_SECRET", value_parser = parse_dns_name)]
    pub ledger_database_secret: Option<String>,

    /// Key of `--ledger-database-secret` holding the URL.
    #[arg(long, env = "PAPERBOT_LEDGER_DATABASE_SECRET_KEY", default_value = paperbot_crds::account::DEFAULT_SECRET_KEY, value_parser = parse_secret_key)]
    pub ledger_database_secret_key: String,

    /// Size of each session's ledger volume (Kubernetes quantity, bytes: `1Gi`).
    /// Fixed when a session is created.
    #[arg(long, env = "PAPERBOT_LEDGER_STORAGE_SIZE", default_value = DEFAULT_STORAGE_SIZE, value_parser = parse_storage_size)]
    pub ledger_storage_size: String,

    /// StorageClass of the ledger volumes; unset uses the cluster's default class.
    #[arg(long, env = "PAPERBOT_LEDGER_STORAGE_CLASS", value_parser = parse_dns_name)]
    pub ledger_storage_class: Option<String>,

    /// What happens to a session's ledger volume when the session is deleted:
    /// `Delete` (garbage-collected with it) or `Retain` (kept for you to delete).
    #[arg(
        long,
        env = "PAPERBOT_LEDGER_STORAGE_RETENTION",
        value_enum,
        default_value = "Delete"
    )]
    pub ledger_storage_retention: VolumeRetention,

    /// Scheduling and metadata added to every runtime pod, as JSON with the
    /// Kubernetes field names: `nodeSelector`, `tolerations`, `affinity`,
    /// `priorityClassName`, `podAnnotations` (see [`RuntimePodOverlay`]).
    /// Unknown keys are an error.
    #[arg(long, env = "PAPERBOT_RUNTIME_POD_OVERLAY", value_parser = parse_pod_overlay)]
    pub runtime_pod_overlay: Option<RuntimePodOverlay>,

    /// Deploy one shared market-data feed (`bot-runtime feed`) per group of
    /// live sessions with the same sources in a namespace, and point their
    /// runtimes at it (`PAPERBOT_FEED_URL`); `false`: every live runtime
    /// polls its sources directly (`true`/`false`).
    #[arg(long, env = "PAPERBOT_SHARED_FEED", default_value_t = true, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub shared_feed: bool,

    /// Replicas of each shared feed's Deployment (1 to 10; every replica
    /// polls the upstreams itself, so each one adds its own requests).
    #[arg(long, env = "PAPERBOT_FEED_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=10))]
    pub feed_replicas: i32,

    /// CPU request of a feed pod (Kubernetes quantity, cores).
    #[arg(long, env = "PAPERBOT_FEED_CPU_REQUEST", default_value = "50m", value_parser = parse_quantity)]
    pub feed_cpu_request: String,

    /// Memory request of a feed pod (Kubernetes quantity, bytes).
    #[arg(long, env = "PAPERBOT_FEED_MEMORY_REQUEST", default_value = "32Mi", value_parser = parse_quantity)]
    pub feed_memory_request: String,

    /// CPU limit of a feed pod (Kubernetes quantity, cores).
    #[arg(long, env = "PAPERBOT_FEED_CPU_LIMIT", default_value = "500m", value_parser = parse_quantity)]
    pub feed_cpu_limit: String,

    /// Memory limit of a feed pod (Kubernetes quantity, bytes).
    #[arg(long, env = "PAPERBOT_FEED_MEMORY_LIMIT", default_value = "128Mi", value_parser = parse_quantity)]
    pub feed_memory_limit: String,

    /// Log format; defaults to `json` when KUBERNETES_SERVICE_HOST is set, else `text`.
    /// The level comes from RUST_LOG (default `info`).
    #[arg(long, env = "PAPERBOT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

impl OperatorConfig {
    /// Defaults for runtime pods: image, pull policy, requests and limits.
    ///
    /// # Errors
    /// [`ConfigError`] when the image is empty, a quantity does not parse, or
    /// a request exceeds its limit.
    pub fn runtime_settings(&self) -> Result<RuntimeSettings, ConfigError> {
        if self.runtime_image.trim().is_empty() {
            return Err(ConfigError::EmptyImage);
        }
        let default_resources = requirements(
            ("runtime-cpu-request", &self.runtime_cpu_request),
            ("runtime-memory-request", &self.runtime_memory_request),
            ("runtime-cpu-limit", &self.runtime_cpu_limit),
            ("runtime-memory-limit", &self.runtime_memory_limit),
        )?;
        let feed_resources = requirements(
            ("feed-cpu-request", &self.feed_cpu_request),
            ("feed-memory-request", &self.feed_memory_request),
            ("feed-cpu-limit", &self.feed_cpu_limit),
            ("feed-memory-limit", &self.feed_memory_limit),
        )?;
        Ok(RuntimeSettings {
            image: self.runtime_image.trim().to_owned(),
            image_pull_policy: self.runtime_image_pull_policy.clone(),
            default_resources,
            extra_labels: BTreeMap::new(),
            scrape_annotations: self.runtime_scrape_annotations,
            ledger: self.ledger_settings()?,
            pod_overlay: self.runtime_pod_overlay.clone().unwrap_or_default(),
            feed: crate::feed::FeedSettings {
                enabled: self.shared_feed,
                replicas: self.feed_replicas.clamp(1, 10),
                resources: feed_resources,
            },
        })
    }

    /// Where runtimes keep their ledger: the database Secret, or the size,
    /// class and retention of per-session volumes.
    ///
    /// # Errors
    /// [`ConfigError`] when a value set in code is not what its flag accepts.
    pub fn ledger_settings(&self) -> Result<LedgerSettings, ConfigError> {
        let database_secret = match &self.ledger_database_secret {
            None => None,
            Some(name) => {
                let name = parse_dns_name(name).map_err(|_| ConfigError::InvalidName {
                    flag: "ledger-database-secret",
                    value: name.clone(),
                })?;
                let key = parse_secret_key(&self.ledger_database_secret_key).map_err(|_| {
                    ConfigError::InvalidName {
                        flag: "ledger-database-secret-key",
                        value: self.ledger_database_secret_key.clone(),
                    }
                })?;
                Some(SecretKeyRef { name, key })
            }
        };
        let storage_size = parse_storage_size(&self.ledger_storage_size).map_err(|_| {
            ConfigError::InvalidQuantity {
                flag: "ledger-storage-size",
                value: self.ledger_storage_size.clone(),
            }
        })?;
        let storage_class = match &self.ledger_storage_class {
            None => None,
            Some(c) => Some(parse_dns_name(c).map_err(|_| ConfigError::InvalidName {
                flag: "ledger-storage-class",
                value: c.clone(),
            })?),
        };
        Ok(LedgerSettings {
            database_secret,
            storage_size,
            storage_class,
            retention: self.ledger_storage_retention,
        })
    }

    /// Lease parameters for [`crate::leader::LeaderElection::start`].
    pub fn leader_config(&self) -> LeaderConfig {
        LeaderConfig {
            lease_name: self.lease_name.clone(),
            namespace: self.lease_namespace.clone(),
            identity: self.identity.clone(),
            lease_duration: self.lease_duration.get(),
        }
    }

    /// How often a session's fast-moving status figures are refreshed.
    pub fn status_sync_interval(&self) -> Duration {
        self.status_sync_interval.get()
    }

    /// Settings of the runtime status poller.
    pub fn sync_settings(&self) -> crate::sync::SyncSettings {
        crate::sync::SyncSettings {
            interval: self.status_sync_interval.get(),
            timeout: self.runtime_request_timeout.get(),
            concurrency: usize::from(self.runtime_poll_concurrency),
            not_reporting_after: self.runtime_not_reporting_after,
            allow_endpoint_override: self.allow_runtime_endpoint_override,
            endpoint_template: None,
        }
    }

    /// Requeue interval of a healthy object.
    pub fn resync_interval(&self) -> Duration {
        self.resync_interval.get()
    }

    /// How long to wait for reconciles in flight after SIGTERM.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace.get()
    }

    /// The namespaces to watch, or `None` for all namespaces.
    pub fn watch_namespaces(&self) -> Option<&[String]> {
        (!self.namespaces.is_empty()).then_some(self.namespaces.as_slice())
    }

    /// The log format: `--log-format`, else JSON when running in a cluster
    /// (`KUBERNETES_SERVICE_HOST` set), else text.
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or_else(|| {
            LogFormat::default_for(std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())
        })
    }

    /// Installs the global `tracing` subscriber in [`Self::log_format`],
    /// filtered by `RUST_LOG` (default `info`). JSON lines carry the current
    /// span's fields (e.g. the reconciled object's name). Does nothing if a
    /// global subscriber is already installed.
    pub fn init_tracing(&self) {
        use tracing_subscriber::EnvFilter;
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        // Colours only on a terminal (never in a pod's log) and not under
        // NO_COLOR (https://no-color.org).
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi);
        let installed = match self.log_format() {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .try_init(),
            LogFormat::Text => builder.try_init(),
        };
        if installed.is_err() {
            tracing::debug!("a tracing subscriber was already installed");
        }
    }
}

/// `ghcr.io/paperbot/bot-runtime:<crate version>`.
/// Requests and limits from four `(flag, value)` pairs (CPU request,
/// memory request, CPU limit, memory limit; flags without the dashes).
///
/// # Errors
/// [`ConfigError::InvalidQuantity`] naming the flag, or
/// [`ConfigError::RequestAboveLimit`] when a request exceeds its limit.
fn requirements(
    cpu_request: (&'static str, &str),
    memory_request: (&'static str, &str),
    cpu_limit: (&'static str, &str),
    memory_limit: (&'static str, &str),
) -> Result<ResourceRequirements, ConfigError> {
    let quantity = |(flag, value): (&'static str, &str)| {
        quantity_value(value)
            .map(|v| (Quantity(value.trim().to_owned()), v))
            .ok_or_else(|| ConfigError::InvalidQuantity {
                flag,
                value: value.to_owned(),
            })
    };
    let prefix = cpu_request.0.trim_end_matches("-cpu-request");
    let (cpu_request, cpu_request_v) = quantity(cpu_request)?;
    let (memory_request, memory_request_v) = quantity(memory_request)?;
    let (cpu_limit, cpu_limit_v) = quantity(cpu_limit)?;
    let (memory_limit, memory_limit_v) = quantity(memory_limit)?;
    for (resource, request, request_v, limit, limit_v) in [
        ("cpu", &cpu_request, cpu_request_v, &cpu_limit, cpu_limit_v),
        (
            "memory",
            &memory_request,
            memory_request_v,
            &memory_limit,
            memory_limit_v,
        ),
    ] {
        if request_v > limit_v {
            return Err(ConfigError::RequestAboveLimit {
                prefix,
                resource,
                request: request.0.clone(),
                limit: limit.0.clone(),
            });
        }
    }
    Ok(ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), cpu_request),
            ("memory".to_owned(), memory_request),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_owned(), cpu_limit),
            ("memory".to_owned(), memory_limit),
        ])),
        claims: None,
    })
}

fn default_runtime_image() -> String {
    format!("{RUNTIME_IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// The host name (the pod name in Kubernetes), else a random string.
fn default_identity() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            use rand::{RngExt, distr::Alphanumeric};
            let suffix: String = rand::rng()
                .sample_iter(Alphanumeric)
                .take(12)
                .map(char::from)
                .collect();
            format!("paperbot-operator-{}", suffix.to_ascii_lowercase())
        })
}

/// Value of a Kubernetes quantity in base units (cores or bytes), or `None`
/// when `s` is not one. Grammar: an unsigned decimal number followed by an
/// optional binary (`Ki`…`Ei`) or decimal (`m`, `k`, `M`…`E`) suffix or a
/// decimal exponent (`e3`). The value is `f64`, used only for comparisons.
pub fn quantity_value(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || number.matches('.').count() > 1 {
        return None;
    }
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let digits = exp.strip_prefix(['e', 'E'])?;
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(digits.parse().ok()?)
        }
    };
    number.parse::<f64>().ok().map(|n| n * multiplier)
}

fn parse_quantity(s: &str) -> Result<String, String> {
    quantity_value(s)
        .map(|_| s.trim().to_owned())
        .ok_or_else(|| format!("{s:?} is not a Kubernetes quantity (expected e.g. \"100m\", \"1\", \"64Mi\" or \"1Gi\")"))
}

/// A quantity of bytes greater than zero (a volume size).
fn parse_storage_size(s: &str) -> Result<String, String> {
    let size = parse_quantity(s)?;
    match quantity_value(&size) {
        Some(v) if v >= 1.0 && v.fract() == 0.0 => Ok(size),
        _ => Err(format!(
            "{s:?} is not a volume size: expected a whole number of bytes greater than zero, e.g. \"1Gi\""
        )),
    }
}

/// A key of a Secret's `data`.
fn parse_secret_key(s: &str) -> Result<String, String> {
    let s = s.trim();
    if is_secret_key(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a Secret key (letters, digits, '-', '_' and '.', at most 253)"
        ))
    }
}

fn parse_positive_duration(s: &str) -> Result<DurationString, String> {
    let d: DurationString = s.parse()?;
    if d.get().is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

fn parse_shutdown_grace(s: &str) -> Result<DurationString, String> {
    let d: DurationString = s.parse()?;
    if d.get() < Duration::from_secs(1) || d.get() > Duration::from_secs(60) {
        return Err(format!(
            "{s:?}: the shutdown grace must be between 1s and 60s"
        ));
    }
    Ok(d)
}

fn parse_lease_duration(s: &str) -> Result<DurationString, String> {
    let d: DurationString = s.parse()?;
    if d.get() < MIN_LEASE_DURATION || d.get().subsec_nanos() != 0 {
        return Err(format!(
            "{s:?}: a lease duration must be a whole number of seconds, at least {}s",
            MIN_LEASE_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// A DNS-1123 label (namespace names).
fn parse_namespace(s: &str) -> Result<String, String> {
    let s = s.trim();
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"
        ))
    }
}

/// A DNS-1123 subdomain (object names).
fn parse_dns_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if is_dns_subdomain(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not an object name (lower-case letters, digits, '-' and '.')"
        ))
    }
}

/// `--runtime-pod-overlay`: JSON object with the keys of [`RuntimePodOverlay`];
/// an empty string means none.
fn parse_pod_overlay(s: &str) -> Result<RuntimePodOverlay, String> {
    if s.trim().is_empty() {
        return Ok(RuntimePodOverlay::default());
    }
    let overlay: RuntimePodOverlay = serde_json::from_str(s).map_err(|e| {
        format!(
            "not a runtime pod overlay ({e}); expected a JSON object with any of nodeSelector, \
             tolerations, affinity, priorityClassName, podAnnotations"
        )
    })?;
    if let Some(p) = &overlay.priority_class_name
        && !is_dns_subdomain(p)
    {
        return Err(format!("priorityClassName {p:?} is not an object name"));
    }
    Ok(overlay)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<OperatorConfig, clap::Error> {
        OperatorConfig::try_parse_from(
            std::iter::once("paperbot-operator").chain(args.iter().copied()),
        )
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn clap_definition_is_consistent() {
        OperatorConfig::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            c.runtime_image,
            format!("ghcr.io/paperbot/bot-runtime:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(c.runtime_image_pull_policy, None);
        assert_eq!(c.watch_namespaces(), None);
        assert_eq!(c.status_sync_interval(), Duration::from_secs(15));
        assert_eq!(c.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert!(c.leader_election);
        assert!(!c.identity.is_empty());
        assert_eq!(
            c.leader_config(),
            LeaderConfig {
                lease_name: "paperbot-operator".into(),
                // POD_NAMESPACE is set when the tests run in a pod.
                namespace: std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into()),
                identity: c.identity.clone(),
                lease_duration: Duration::from_secs(15),
            }
        );
        assert_eq!(c.log_format, None);

        let settings = c.runtime_settings().unwrap();
        assert_eq!(settings.image, c.runtime_image);
        assert!(!settings.scrape_annotations);
        let res = settings.default_resources;
        assert_eq!(
            res.requests,
            Some(BTreeMap::from([
                ("cpu".into(), q("100m")),
                ("memory".into(), q("64Mi"))
            ]))
        );
        assert_eq!(
            res.limits,
            Some(BTreeMap::from([
                ("cpu".into(), q("1")),
                ("memory".into(), q("256Mi"))
            ]))
        );
    }

    #[test]
    fn flags_override_defaults() {
        let c = parse(&[
            "--runtime-image=registry.local/bot:dev",
            "--runtime-image-pull-policy=Always",
            "--runtime-cpu-request=250m",
            "--runtime-memory-request=128Mi",
            "--runtime-cpu-limit=2",
            "--runtime-memory-limit=1Gi",
            "--namespaces=trading,research",
            "--status-sync-interval=1m30s",
            "--metrics-addr=127.0.0.1:9090",
            "--leader-election=false",
            "--lease-name=pb-leader",
            "--lease-namespace=paperbot-system",
            "--identity=pod-a",
            "--lease-duration=30s",
            "--log-format=json",
            "--runtime-scrape-annotations=true",
        ])
        .unwrap();
        assert_eq!(
            c.watch_namespaces(),
            Some(&["trading".to_owned(), "research".to_owned()][..])
        );
        assert_eq!(c.status_sync_interval(), Duration::from_secs(90));
        assert_eq!(c.metrics_addr, "127.0.0.1:9090".parse().unwrap());
        assert!(!c.leader_election);
        assert_eq!(c.log_format(), LogFormat::Json);
        assert_eq!(
            c.leader_config(),
            LeaderConfig {
                lease_name: "pb-leader".into(),
                namespace: "paperbot-system".into(),
                identity: "pod-a".into(),
                lease_duration: Duration::from_secs(30),
            }
        );
        let s = c.runtime_settings().unwrap();
        assert!(s.scrape_annotations);
        assert_eq!(s.image, "registry.local/bot:dev");
        assert_eq!(s.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            s.default_resources.requests,
            Some(BTreeMap::from([
                ("cpu".into(), q("250m")),
                ("memory".into(), q("128Mi"))
            ]))
        );
        assert_eq!(
            s.default_resources.limits,
            Some(BTreeMap::from([
                ("cpu".into(), q("2")),
                ("memory".into(), q("1Gi"))
            ]))
        );
    }

    /// Every flag can come from the environment, under the documented name
    /// (checked on the clap definition so the test never mutates the
    /// process environment).
    #[test]
    fn every_flag_reads_an_env_var() {
        let cmd = OperatorConfig::command();
        let envs: BTreeMap<String, String> = cmd
            .get_arguments()
            .filter_map(|a| Some((a.get_long()?.to_owned(), a.get_env()?.to_str()?.to_owned())))
            .collect();
        let flags: Vec<&str> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !matches!(*l, "help" | "version"))
            .collect();
        for flag in &flags {
            let env = envs
                .get(*flag)
                .unwrap_or_else(|| panic!("--{flag} has no env var"));
            let expected = match *flag {
                "lease-namespace" => "POD_NAMESPACE".to_owned(),
                "identity" => "POD_NAME".to_owned(),
                f => format!("PAPERBOT_{}", f.to_uppercase().replace('-', "_")),
            };
            assert_eq!(env, &expected, "--{flag}");
        }
        assert_eq!(flags.len(), 35);
    }

    #[test]
    fn resync_concurrency_and_shutdown_grace_are_bounded() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.resync_interval(), Duration::from_secs(600));
        assert_eq!(
            c.reconcile_concurrency,
            crate::run::DEFAULT_SESSION_CONCURRENCY
        );
        assert_eq!(c.shutdown_grace(), Duration::from_secs(4));
        assert!(parse(&["--reconcile-concurrency=0"]).is_err());
        assert!(parse(&["--shutdown-grace=0s"]).is_err());
        assert!(parse(&["--shutdown-grace=2m"]).is_err());
        assert!(parse(&["--resync-interval=0s"]).is_err());
    }

    #[test]
    fn leader_election_accepts_boolish_values() {
        assert!(!parse(&["--leader-election", "no"]).unwrap().leader_election);
        assert!(parse(&["--leader-election=1"]).unwrap().leader_election);
    }

    #[test]
    fn bad_quantity_names_the_flag() {
        let e = parse(&["--runtime-memory-limit=lots"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--runtime-memory-limit") && e.contains("lots") && e.contains("quantity"),
            "{e}"
        );
        let e = parse(&["--runtime-cpu-request=-1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--runtime-cpu-request"), "{e}");
    }

    #[test]
    fn runtime_settings_rechecks_values_set_in_code() {
        let mut c = parse(&[]).unwrap();
        c.runtime_cpu_limit = "1.5 cores".into();
        assert_eq!(
            c.runtime_settings().unwrap_err(),
            ConfigError::InvalidQuantity {
                flag: "runtime-cpu-limit",
                value: "1.5 cores".into()
            }
        );
        assert!(
            c.runtime_settings()
                .unwrap_err()
                .to_string()
                .starts_with("--runtime-cpu-limit: ")
        );

        let mut c = parse(&[]).unwrap();
        c.runtime_image = "  ".into();
        assert_eq!(c.runtime_settings().unwrap_err(), ConfigError::EmptyImage);
    }

    #[test]
    fn request_above_limit_is_refused() {
        let c = parse(&[
            "--runtime-memory-request=512Mi",
            "--runtime-memory-limit=0.25Gi",
        ])
        .unwrap();
        let e = c.runtime_settings().unwrap_err();
        assert_eq!(
            e.to_string(),
            "--runtime-memory-request (512Mi) is larger than --runtime-memory-limit (0.25Gi)"
        );
        // Different spellings of the same amount are equal, not larger.
        let c = parse(&["--runtime-cpu-request=1000m", "--runtime-cpu-limit=1"]).unwrap();
        assert!(c.runtime_settings().is_ok());
    }

    #[test]
    fn bad_duration_names_the_flag() {
        let e = parse(&["--status-sync-interval=soon"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--status-sync-interval") && e.contains("soon"),
            "{e}"
        );
        let e = parse(&["--status-sync-interval=0s"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--status-sync-interval") && e.contains("longer than zero"),
            "{e}"
        );
        let e = parse(&["--lease-duration=1s"]).unwrap_err().to_string();
        assert!(
            e.contains("--lease-duration") && e.contains("at least 2s"),
            "{e}"
        );
        let e = parse(&["--lease-duration=2500ms"]).unwrap_err().to_string();
        assert!(e.contains("whole number of seconds"), "{e}");
    }

    #[test]
    fn bad_names_and_enums_are_refused() {
        let e = parse(&["--namespaces=ok,Not_OK"]).unwrap_err().to_string();
        assert!(e.contains("--namespaces") && e.contains("Not_OK"), "{e}");
        assert!(parse(&["--lease-name=-x"]).is_err());
        assert!(parse(&["--runtime-image-pull-policy=Sometimes"]).is_err());
        assert!(parse(&["--log-format=xml"]).is_err());
        assert!(parse(&["--metrics-addr=localhost"]).is_err());
    }

    #[test]
    fn quantity_grammar() {
        let cases = [
            ("100m", Some(0.1)),
            ("1", Some(1.0)),
            ("1.5", Some(1.5)),
            (".5", Some(0.5)),
            ("64Mi", Some(64.0 * 1024.0 * 1024.0)),
            ("1Gi", Some(1024f64.powi(3))),
            ("2k", Some(2000.0)),
            ("1e3", Some(1000.0)),
            ("1E", Some(1e18)),
            ("", None),
            (".", None),
            ("1..5", None),
            ("-1", None),
            ("1mi", None),
            ("10 Mi", None),
            ("1e", None),
            ("Mi", None),
        ];
        for (input, expected) in cases {
            let got = quantity_value(input);
            match (got, expected) {
                (Some(g), Some(e)) => assert!((g - e).abs() <= e * 1e-12, "{input}: {g} != {e}"),
                (None, None) => {}
                _ => panic!("{input}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn log_format_default_depends_on_cluster() {
        assert_eq!(LogFormat::default_for(true), LogFormat::Json);
        assert_eq!(LogFormat::default_for(false), LogFormat::Text);
    }

    #[test]
    fn ledger_defaults_to_a_1gi_volume_deleted_with_its_session() {
        let s = parse(&[]).unwrap().runtime_settings().unwrap().ledger;
        assert_eq!(s, LedgerSettings::default());
        assert_eq!(
            s,
            LedgerSettings {
                database_secret: None,
                storage_size: "1Gi".into(),
                storage_class: None,
                retention: VolumeRetention::Delete,
            }
        );
    }

    #[test]
    fn ledger_flags() {
        let s = parse(&[
            "--ledger-database-secret=pg-app",
            "--ledger-database-secret-key=uri",
            "--ledger-storage-size=5Gi",
            "--ledger-storage-class=fast-ssd",
            "--ledger-storage-retention=Retain",
        ])
        .unwrap()
        .ledger_settings()
        .unwrap();
        assert_eq!(
            s,
            LedgerSettings {
                database_secret: Some(SecretKeyRef {
                    name: "pg-app".into(),
                    key: "uri".into()
                }),
                storage_size: "5Gi".into(),
                storage_class: Some("fast-ssd".into()),
                retention: VolumeRetention::Retain,
            }
        );
        let key_only = parse(&["--ledger-database-secret=pg"]).unwrap();
        assert_eq!(
            key_only
                .ledger_settings()
                .unwrap()
                .database_secret
                .unwrap()
                .key,
            "url"
        );
    }

    #[test]
    fn bad_ledger_flags_name_the_flag() {
        for (arg, flag) in [
            ("--ledger-database-secret=PG", "--ledger-database-secret"),
            (
                "--ledger-database-secret-key=a/b",
                "--ledger-database-secret-key",
            ),
            ("--ledger-storage-size=0", "--ledger-storage-size"),
            ("--ledger-storage-size=100m", "--ledger-storage-size"),
            ("--ledger-storage-size=big", "--ledger-storage-size"),
            ("--ledger-storage-class=Fast_SSD", "--ledger-storage-class"),
            (
                "--ledger-storage-retention=Keep",
                "--ledger-storage-retention",
            ),
        ] {
            let e = parse(&[arg]).unwrap_err().to_string();
            assert!(e.contains(flag), "{arg}: {e}");
        }
        let mut c = parse(&[]).unwrap();
        c.ledger_storage_size = "-1Gi".into();
        assert_eq!(
            c.runtime_settings().unwrap_err().to_string(),
            "--ledger-storage-size: \"-1Gi\" is not a Kubernetes quantity (expected e.g. \"100m\", \"1\", \"64Mi\" or \"1Gi\")"
        );
        let mut c = parse(&["--ledger-database-secret=pg"]).unwrap();
        c.ledger_database_secret_key = "".into();
        assert!(matches!(
            c.ledger_settings(),
            Err(ConfigError::InvalidName {
                flag: "ledger-database-secret-key",
                ..
            })
        ));
    }

    #[test]
    fn runtime_pod_overlay_parses_kubernetes_fields_and_rejects_typos() {
        let c = parse(&[r#"--runtime-pod-overlay={"nodeSelector":{"pool":"bots"},"tolerations":[{"key":"bots","operator":"Exists","effect":"NoSchedule"}],"priorityClassName":"low","podAnnotations":{"prometheus.io/scrape":"true"}}"#]).unwrap();
        let o = c.runtime_settings().unwrap().pod_overlay;
        assert_eq!(
            o.node_selector.get("pool").map(String::as_str),
            Some("bots")
        );
        assert_eq!(o.tolerations[0].key.as_deref(), Some("bots"));
        assert_eq!(o.priority_class_name.as_deref(), Some("low"));
        assert_eq!(o.pod_annotations.len(), 1);
        assert_eq!(
            parse(&["--runtime-pod-overlay="])
                .unwrap()
                .runtime_settings()
                .unwrap()
                .pod_overlay,
            RuntimePodOverlay::default()
        );
        for bad in [
            r#"--runtime-pod-overlay={"nodeselector":{}}"#,
            r#"--runtime-pod-overlay={"tolerations":"all"}"#,
            r#"--runtime-pod-overlay={"priorityClassName":"Low Priority"}"#,
            "--runtime-pod-overlay=[1",
        ] {
            let e = parse(&[bad]).unwrap_err().to_string();
            assert!(e.contains("--runtime-pod-overlay"), "{bad}: {e}");
        }
    }
}
