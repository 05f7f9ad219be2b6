//! Loading manifests: the same multi-document YAML a user would
//! `kubectl apply`, resolved into one [`SessionPlan`] per `BotSession`.
//!
//! Every error names the file, the line where the YAML shows it, the object,
//! the field path and what was expected — before any trading starts.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use paperbot_crds::{
    API_VERSION, BotSession, BotSessionSpec, FieldError, LiveSourceKind, LiveSpec,
    MarketDataSource, PaperAccount, PaperAccountSpec, ReplayFormat, StrategyConfig,
    StrategyConfigSpec, VolumeUnit, WarmUp,
};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

use crate::{market::simulated::GbmParams, params::EffectiveParams};

/// Where in which file something is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// A manifest that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read manifest: {source}")]
    Read {
        /// Path given.
        file: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// A document is not valid YAML or does not match the resource's schema.
    #[error("{at}: {what}: {message}")]
    Schema {
        /// File and line.
        at: Location,
        /// `kind "name"` or `document N`.
        what: String,
        /// Field path and what was expected.
        message: String,
    },
    /// A spec breaks a validation rule (one message per broken rule).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
    /// A reference or cross-object rule is broken.
    #[error("{at}: {what}: {message}")]
    Reference {
        /// File and line.
        at: Location,
        /// `kind "name"`.
        what: String,
        /// What is wrong.
        message: String,
    },
}

/// Slowest accepted `--speed`: 0.001× real time (one minute of market time
/// takes 1,000 minutes of wall time).
pub const MIN_SPEED: f64 = 0.001;

/// Fastest accepted `--speed`: 1,000,000× real time (about 11.6 days of
/// market time per second of wall time; beyond that, run unpaced).
pub const MAX_SPEED: f64 = 1_000_000.0;

/// Check a `--speed` value: a finite multiple of real time from [`MIN_SPEED`]
/// to [`MAX_SPEED`].
///
/// # Errors
///
/// A message quoting the value and the accepted range, for NaN, infinities,
/// zero, negatives and values outside the range.
pub fn check_speed(speed: f64) -> Result<f64, String> {
    if speed.is_finite() && (MIN_SPEED..=MAX_SPEED).contains(&speed) {
        Ok(speed)
    } else {
        Err(format!(
            "{speed} is out of range: expected a multiple of real time from {MIN_SPEED} to \
             {MAX_SPEED} (e.g. 60 = one minute of market time per second), or no --speed to run \
             as fast as possible"
        ))
    }
}

/// Wall time a paced run takes for `market_ms` milliseconds of market time at
/// `speed`× real time: `market_ms / 1000 / speed` seconds.
///
/// The conversion from `f64` seconds is checked (`Duration::try_from_secs_f64`):
/// a negative or NaN result gives zero, one too large for a `Duration`
/// saturates at `Duration::MAX`; it never panics, whatever `speed` is.
pub fn paced_wall_time(market_ms: i64, speed: f64) -> Duration {
    let secs = market_ms as f64 / 1000.0 / speed;
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// A parsed object with where it came from.
#[derive(Clone, Debug)]
pub struct Sourced<T> {
    /// The object.
    pub object: T,
    /// File and line of its document's first line.
    pub at: Location,
    /// The document's text (for locating fields in later errors).
    text: String,
    /// 0-based line of the document in the file.
    line_offset: usize,
}

impl<T> Sourced<T> {
    /// Location of `path` (e.g. `spec.risk.stopLossPct`) inside this document:
    /// the line of the deepest key of the path that can be found.
    pub fn locate(&self, path: &str) -> Location {
        Location {
            file: self.at.file.clone(),
            line: Some(
                locate_path(&self.text, path)
                    .map_or(self.line_offset + 1, |l| self.line_offset + l),
            ),
        }
    }
}

/// All objects of one manifest file.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// PaperAccounts in file order.
    pub accounts: Vec<Sourced<PaperAccount>>,
    /// StrategyConfigs in file order.
    pub strategies: Vec<Sourced<StrategyConfig>>,
    /// BotSessions in file order.
    pub sessions: Vec<Sourced<BotSession>>,
    /// Directory relative data paths are resolved against.
    pub base_dir: PathBuf,
}

/// One replay file with its resolved path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplaySource {
    /// Symbol index in [`SessionPlan::symbols`].
    pub symbol: usize,
    /// Absolute or manifest-relative path resolved against the manifest's directory.
    pub path: PathBuf,
    /// Candle length, milliseconds, if given.
    pub interval_ms: Option<i64>,
    /// Unit of the volume column.
    pub volume_unit: VolumeUnit,
    /// Candles, or trades aggregated into candles of `interval_ms` (then
    /// always given: the manifest rules require it).
    pub format: ReplayFormat,
}

/// Live market data settings of a session (`spec.marketData.live`), in the
/// runtime's units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivePlan {
    /// Candle length the engine trades, ms (> 0).
    pub interval_ms: i64,
    /// Time between polls, ms (at least 1000, at most `interval_ms`).
    pub poll_interval_ms: i64,
    /// Age after which a price is stale and trips the price-feed breaker,
    /// ms (at least `poll_interval_ms`).
    pub max_age_ms: i64,
    /// Largest accepted move from the last accepted price, percent (0-1000].
    pub jump_band_pct: Decimal,
    /// How indicator history is filled before the first decision.
    pub warm_up: WarmUp,
    /// The fallback chain, in order (1 to 5 sources).
    pub sources: Vec<LiveSourcePlan>,
    /// Whether to take prices from the namespace's shared feed when one
    /// serves them (default `true`).
    pub use_shared_feed: bool,
}

/// One source of a [`LivePlan`]'s fallback chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSourcePlan {
    /// Source name (a DNS-1123 label), used in metrics and status.
    pub name: String,
    /// API the source speaks.
    pub kind: LiveSourceKind,
    /// Request budget, requests a minute (1 to 6000).
    pub requests_per_minute: u32,
    /// Base URL override (`http://` or `https://`); `None` = the public API.
    pub base_url: Option<String>,
    /// Environment variable holding the API key (set by the operator from
    /// the Secret reference), when the source has one; the key itself is
    /// read from the environment at start, never stored in the plan.
    pub api_key_env: Option<String>,
    /// Overrides of the built-in symbol mapping: session symbol → source
    /// identifier.
    pub symbols: std::collections::BTreeMap<String, String>,
}

impl LivePlan {
    /// The plan of validated live settings (see
    /// [`BotSessionSpec::validate`], which bounds every value used here).
    pub fn from_spec(live: &LiveSpec) -> Self {
        Self {
            interval_ms: live.interval.as_millis_i64(),
            poll_interval_ms: live.poll_interval.as_millis_i64(),
            max_age_ms: live.max_age.as_millis_i64(),
            jump_band_pct: live.jump_band_pct.get(),
            warm_up: live.warm_up,
            sources: live
                .sources
                .iter()
                .map(|s| LiveSourcePlan {
                    name: s.name.clone(),
                    kind: s.kind,
                    requests_per_minute: s.requests_per_minute,
                    base_url: s.base_url.clone(),
                    api_key_env: s.api_key_secret_ref.as_ref().map(|_| s.api_key_env()),
                    symbols: s.symbols.clone(),
                })
                .collect(),
            use_shared_feed: live.use_shared_feed.unwrap_or(true),
        }
    }
}

/// Everything needed to run one session.
#[derive(Clone, Debug)]
pub struct SessionPlan {
    /// BotSession name.
    pub name: String,
    /// PaperAccount name.
    pub account_name: String,
    /// StrategyConfig name.
    pub strategy_name: String,
    /// The account.
    pub account: PaperAccountSpec,
    /// The strategy.
    pub strategy: StrategyConfigSpec,
    /// The session.
    pub session: BotSessionSpec,
    /// Symbols, in `spec.symbols` order (index = `SymbolId`).
    pub symbols: Vec<String>,
    /// Replay files (empty for a simulated or live source).
    pub replay: Vec<ReplaySource>,
    /// Live settings (`Some` exactly when `source: Live`).
    pub live: Option<LivePlan>,
    /// Volume unit per symbol index.
    pub volume_units: Vec<VolumeUnit>,
    /// Strategy resolved into numbers.
    pub params: EffectiveParams,
    /// The StrategyConfig's revision as the operator rendered it (its
    /// `paperbot.io/strategy-revision` annotation); `None` in a hand-written
    /// manifest.
    pub strategy_revision: Option<String>,
}

/// The part of the replay files a session trades: candles whose open time
/// `t` satisfies `from <= t < to` (`None`: unbounded on that side). From
/// `spec.marketData.replay.from` / `to`, or the `--from` / `--to` flags of
/// `bot-runtime run` and `backtest`, which override them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// First open time traded, inclusive.
    pub from: Option<crate::types::Timestamp>,
    /// Open time where trading stops, exclusive.
    pub to: Option<crate::types::Timestamp>,
}

impl TimeRange {
    /// Whether this selects every candle (neither bound set).
    pub fn is_full(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    /// Whether a candle opening at `t` is traded.
    pub fn contains(&self, t: crate::types::Timestamp) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e)
    }

    /// Whether every candle opening at or after `t` is past the range.
    pub fn is_past(&self, t: crate::types::Timestamp) -> bool {
        self.to.is_some_and(|e| t >= e)
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.from, self.to) {
            (Some(a), Some(b)) => write!(f, "between {a} (inclusive) and {b} (exclusive)"),
            (Some(a), None) => write!(f, "from {a} on"),
            (None, Some(b)) => write!(f, "before {b}"),
            (None, None) => f.write_str("in the whole file"),
        }
    }
}

impl SessionPlan {
    /// The replayed range (`spec.marketData.replay.from` / `to`); the full
    /// range for a simulated or live source.
    ///
    /// # Errors
    /// A message when a bound is not RFC 3339 UTC or `from` is not before `to`
    /// (checked when the plan was made, so only a plan changed since fails).
    pub fn replay_range(&self) -> Result<TimeRange, String> {
        let Some(r) = &self.session.market_data.replay else {
            return Ok(TimeRange::default());
        };
        if self.session.market_data.source != MarketDataSource::Replay {
            return Ok(TimeRange::default());
        }
        let (from, to) = r.range_ms()?;
        Ok(TimeRange {
            from: from.map(crate::types::Timestamp),
            to: to.map(crate::types::Timestamp),
        })
    }

    /// Override the replayed range with the `--from` / `--to` flags: a
    /// given flag replaces that bound of `spec.marketData.replay`, an absent
    /// one keeps the manifest's. The override is part of the recorded
    /// configuration, so a resume must give the same range.
    ///
    /// # Errors
    /// A message naming the flag when a value is not RFC 3339 UTC, when the
    /// resulting `from` is not before `to`, or when the session does not
    /// replay files (a simulated or live source has no range).
    pub fn override_range(&mut self, from: Option<&str>, to: Option<&str>) -> Result<(), String> {
        if from.is_none() && to.is_none() {
            return Ok(());
        }
        let replay = match (
            self.session.market_data.source,
            self.session.market_data.replay.as_mut(),
        ) {
            (MarketDataSource::Replay, Some(r)) => r,
            _ => {
                return Err(format!(
                    "BotSession {:?}: --from/--to select a range of replay files, but its \
                     marketData.source is {:?}",
                    self.name, self.session.market_data.source
                ));
            }
        };
        if let Some(f) = from {
            paperbot_crds::parse_utc_time("--from", f)?;
            replay.from = Some(f.trim().to_string());
        }
        if let Some(t) = to {
            paperbot_crds::parse_utc_time("--to", t)?;
            replay.to = Some(t.trim().to_string());
        }
        replay
            .range_ms()
            .map(|_| ())
            .map_err(|e| format!("BotSession {:?} with --from/--to: {e}", self.name))
    }

    /// The resolved configuration as one JSON document (stored in the ledger and
    /// rendered into the operator's ConfigMap later).
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "session": { "name": self.name, "spec": self.session },
            "account": { "name": self.account_name, "spec": self.account },
            "strategy": { "name": self.strategy_name, "spec": self.strategy },
            "effective": self.params,
        })
        .to_string()
    }
}

const KINDS: &str = "PaperAccount, StrategyConfig, BotSession";

/// Split a YAML stream into documents: (0-based first line, text).
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut cur = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            if !cur.trim().is_empty() {
                docs.push((start, std::mem::take(&mut cur)));
            }
            cur.clear();
            start = i + 1;
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.trim().is_empty() {
        docs.push((start, cur));
    }
    docs
}

/// 1-based line within `doc` of the deepest key of `path` found, following
/// the path's keys in order (list indexes like `[2]` are skipped).
fn locate_path(doc: &str, path: &str) -> Option<usize> {
    let mut best = None;
    let mut from = 0;
    let lines: Vec<&str> = doc.lines().collect();
    for seg in path.split('.') {
        let key = seg.split('[').next().unwrap_or(seg);
        if key.is_empty() {
            continue;
        }
        let found = lines.iter().enumerate().skip(from).find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
        });
        match found {
            Some((i, _)) => {
                best = Some(i + 1);
                from = i + 1;
            }
            None => break,
        }
    }
    best
}

fn kind_label(kind: &str, name: &str) -> String {
    format!("{kind} {name:?}")
}

fn parse_typed<T: DeserializeOwned>(
    doc: &str,
    at: &Location,
    line_offset: usize,
    what: &str,
) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(doc);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let line = e.inner().location().map(|l| line_offset + l.line());
        let path = e.path().to_string();
        let mut msg = e.inner().to_string();
        // serde_yaml appends " at line X column Y"; the location is already in front.
        if let Some(i) = msg.find(" at line ") {
            msg.truncate(i);
        }
        // serde_yaml names the enclosing mapping itself ("spec.risk: unknown field ...").
        let has_path = msg
            .split_once(": ")
            .is_some_and(|(p, _)| !p.contains(' ') && path.starts_with(p));
        let message = if path == "." || has_path {
            msg
        } else {
            format!("{path}: {msg}")
        };
        ConfigError::Schema {
            at: Location {
                file: at.file.clone(),
                line: line.or(at.line),
            },
            what: what.to_string(),
            message,
        }
    })
}

/// Read and parse a manifest file (no validation beyond the schema).
pub fn load_manifests(path: &Path) -> Result<Manifests, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.display().to_string(),
        source,
    })?;
    parse_manifests(&text, path)
}

/// Parse manifest text as if read from `path`.
pub fn parse_manifests(text: &str, path: &Path) -> Result<Manifests, ConfigError> {
    let mut m = Manifests {
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        ..Default::default()
    };
    let docs = split_documents(text);
    if docs.is_empty() {
        return Err(ConfigError::Schema {
            at: Location {
                file: path.to_path_buf(),
                line: None,
            },
            what: "file".into(),
            message: format!("no YAML documents: expected {KINDS} objects separated by ---"),
        });
    }
    for (n, (offset, doc)) in docs.into_iter().enumerate() {
        let at = Location {
            file: path.to_path_buf(),
            line: Some(offset + 1),
        };
        let what = format!("document {}", n + 1);
        let value: serde_yaml::Value = parse_typed(&doc, &at, offset, &what)?;
        let map = value.as_mapping().ok_or_else(|| ConfigError::Schema {
            at: at.clone(),
            what: what.clone(),
            message: format!(
                "expected a mapping with apiVersion, kind, metadata and spec ({KINDS})"
            ),
        })?;
        let field = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let schema_err = |message: String| ConfigError::Schema {
            at: at.clone(),
            what: what.clone(),
            message,
        };
        let kind = field("kind")
            .ok_or_else(|| schema_err(format!("missing kind: expected one of {KINDS}")))?;
        let api = field("apiVersion").unwrap_or_default();
        if api != API_VERSION {
            return Err(schema_err(format!(
                "apiVersion {api:?}: expected {API_VERSION:?}"
            )));
        }
        for k in map.keys() {
            let k = k.as_str().unwrap_or("?");
            if !matches!(k, "apiVersion" | "kind" | "metadata" | "spec" | "status") {
                return Err(schema_err(format!(
                    "unknown top-level field `{k}`: expected apiVersion, kind, metadata, spec"
                )));
            }
        }
        let name = map
            .get("metadata")
            .and_then(|md| md.get("name"))
            .and_then(|n| n.as_str())
            .ok_or_else(|| {
                schema_err("metadata.name is missing: every object needs a name".into())
            })?
            .to_string();
        let what = kind_label(&kind, &name);
        macro_rules! push {
            ($list:expr, $ty:ty) => {{
                let object: $ty = parse_typed(&doc, &at, offset, &what)?;
                $list.push(Sourced {
                    object,
                    at: at.clone(),
                    text: doc.clone(),
                    line_offset: offset,
                });
            }};
        }
        match kind.as_str() {
            "PaperAccount" => push!(m.accounts, PaperAccount),
            "StrategyConfig" => push!(m.strategies, StrategyConfig),
            "BotSession" => push!(m.sessions, BotSession),
            other => {
                return Err(schema_err(format!(
                    "unknown kind {other:?}: expected one of {KINDS}"
                )));
            }
        }
    }
    Ok(m)
}

fn field_errors<T>(src: &Sourced<T>, what: &str, errs: Vec<FieldError>) -> Vec<ConfigError> {
    errs.into_iter()
        .map(|e| ConfigError::Schema {
            at: src.locate(&e.path),
            what: what.to_string(),
            message: e.to_string(),
        })
        .collect()
}

fn name_of<T: kube::Resource>(o: &T) -> String {
    o.meta().name.clone().unwrap_or_default()
}

/// Check that a session name is a DNS-1123 label (what Kubernetes requires
/// of the objects a BotSession owns, and what keeps a name that becomes a
/// path inside `--report-dir`); see
/// [`paperbot_crds::validation::check_dns1123_label`]. The runner may call it
/// again before it creates a path (defence in depth).
pub use paperbot_crds::validation::{DNS1123_LABEL_MAX_LENGTH, check_dns1123_label};

/// Validate every object and resolve each BotSession into a [`SessionPlan`].
///
/// Checks: each spec's own rules; duplicate names; references to a missing
/// account or strategy; the allocations of an account's running sessions must
/// not exceed its initial balance; replay files must exist.
pub fn plan_sessions(m: &Manifests) -> Result<Vec<SessionPlan>, ConfigError> {
    let mut errors = Vec::new();
    for a in &m.accounts {
        if let Err(e) = a.object.spec.validate() {
            errors.extend(field_errors(
                a,
                &kind_label("PaperAccount", &name_of(&a.object)),
                e,
            ));
        }
    }
    for s in &m.strategies {
        if let Err(e) = s.object.spec.validate() {
            errors.extend(field_errors(
                s,
                &kind_label("StrategyConfig", &name_of(&s.object)),
                e,
            ));
        }
    }
    for s in &m.sessions {
        if let Err(e) = s.object.validate() {
            errors.extend(field_errors(
                s,
                &kind_label("BotSession", &name_of(&s.object)),
                e,
            ));
        }
    }
    fn dup<T: kube::Resource>(list: &[Sourced<T>], kind: &str, errors: &mut Vec<ConfigError>) {
        let mut seen = std::collections::BTreeSet::new();
        for o in list {
            let n = name_of(&o.object);
            if !seen.insert(n.clone()) {
                errors.push(ConfigError::Reference {
                    at: o.at.clone(),
                    what: kind_label(kind, &n),
                    message: "defined twice: names must be unique per kind".into(),
                });
            }
        }
    }
    dup(&m.accounts, "PaperAccount", &mut errors);
    dup(&m.strategies, "StrategyConfig", &mut errors);
    dup(&m.sessions, "BotSession", &mut errors);
    if m.sessions.is_empty() {
        errors.push(ConfigError::Reference {
            at: Location {
                file: m.base_dir.clone(),
                line: None,
            },
            what: "manifest".into(),
            message: "no BotSession: expected at least one object of kind BotSession".into(),
        });
    }
    if !errors.is_empty() {
        return Err(flatten(errors));
    }

    let mut plans = Vec::new();
    for src in &m.sessions {
        let s = &src.object;
        let name = name_of(s);
        let what = kind_label("BotSession", &name);
        let refer = |path: &str, message: String| ConfigError::Reference {
            at: src.locate(path),
            what: what.clone(),
            message,
        };
        let account = m
            .accounts
            .iter()
            .find(|a| name_of(&a.object) == s.spec.account_ref.name);
        let strategy = m
            .strategies
            .iter()
            .find(|a| name_of(&a.object) == s.spec.strategy_ref.name);
        let (Some(account), Some(strategy)) = (account, strategy) else {
            if account.is_none() {
                errors.push(refer(
                    "spec.accountRef.name",
                    format!(
                        "spec.accountRef.name: PaperAccount {:?} not found in this file (have: {:?})",
                        s.spec.account_ref.name,
                        m.accounts.iter().map(|a| name_of(&a.object)).collect::<Vec<_>>()
                    ),
                ));
            }
            if strategy.is_none() {
                errors.push(refer(
                    "spec.strategyRef.name",
                    format!(
                        "spec.strategyRef.name: StrategyConfig {:?} not found in this file (have: {:?})",
                        s.spec.strategy_ref.name,
                        m.strategies.iter().map(|a| name_of(&a.object)).collect::<Vec<_>>()
                    ),
                ));
            }
            continue;
        };
        let limits = account.object.spec.limits.clone().unwrap_or_default();
        let params = match EffectiveParams::resolve(
            &strategy.object.spec,
            limits.max_drawdown_pct.map(|v| v.get()),
            limits.daily_loss_pct.map(|v| v.get()),
        ) {
            Ok(p) => p,
            Err(msg) => {
                errors.push(ConfigError::Schema {
                    at: strategy.locate("spec.autopilot.bounds"),
                    what: kind_label("StrategyConfig", &name_of(&strategy.object)),
                    message: msg,
                });
                continue;
            }
        };
        if s.spec.market_data.source == MarketDataSource::Simulated
            && let Some(sim) = &s.spec.market_data.simulated
            && let Err((path, message)) = check_simulated(sim, s.spec.stop_after)
        {
            errors.push(ConfigError::Schema {
                at: src.locate(path),
                what: what.clone(),
                message: format!("{path}: {message}"),
            });
            continue;
        }
        let mut replay = Vec::new();
        let mut volume_units = vec![VolumeUnit::Base; s.spec.symbols.len()];
        if s.spec.market_data.source == MarketDataSource::Replay
            && let Some(r) = &s.spec.market_data.replay
        {
            for (i, f) in r.files.iter().enumerate() {
                let path = m.base_dir.join(&f.path);
                if !path.is_file() {
                    errors.push(refer(
                        &format!("spec.marketData.replay.files[{i}].path"),
                        format!(
                            "spec.marketData.replay.files[{i}].path: data file {} not found (relative paths are resolved against {})",
                            path.display(),
                            if m.base_dir.as_os_str().is_empty() { ".".into() } else { m.base_dir.display().to_string() }
                        ),
                    ));
                    continue;
                }
                let symbol = s
                    .spec
                    .symbols
                    .iter()
                    .position(|x| x == &f.symbol)
                    .unwrap_or(0);
                volume_units[symbol] = f.volume_unit;
                replay.push(ReplaySource {
                    symbol,
                    path,
                    interval_ms: f.interval.map(|i| i.as_millis_i64()),
                    volume_unit: f.volume_unit,
                    format: f.format,
                });
            }
        }
        plans.push(SessionPlan {
            name,
            account_name: name_of(&account.object),
            strategy_name: name_of(&strategy.object),
            account: account.object.spec.clone(),
            strategy: strategy.object.spec.clone(),
            session: s.spec.clone(),
            symbols: s.spec.symbols.clone(),
            replay,
            live: match s.spec.market_data.source {
                MarketDataSource::Live => s.spec.market_data.live.as_ref().map(LivePlan::from_spec),
                _ => None,
            },
            volume_units,
            params,
            strategy_revision: strategy
                .object
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(paperbot_crds::runtime_api::STRATEGY_REVISION_ANNOTATION))
                .cloned(),
        });
    }

    // Allocations of running sessions must fit in their account.
    for a in &m.accounts {
        let an = name_of(&a.object);
        let total: Decimal = plans
            .iter()
            .filter(|p| {
                p.account_name == an
                    && p.session.desired_state != paperbot_crds::DesiredState::Stopped
            })
            .map(|p| p.session.allocation.get())
            .sum();
        if total > a.object.spec.initial_balance.get() {
            errors.push(ConfigError::Reference {
                at: a.locate("spec.initialBalance"),
                what: kind_label("PaperAccount", &an),
                message: format!(
                    "sessions allocate {total} in total but spec.initialBalance is {}: lower the allocations or raise the balance",
                    a.object.spec.initial_balance
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(flatten(errors))
    }
}

/// Latest market time a session may reach: 9999-12-31T23:59:59.999Z, the end
/// of the RFC 3339 calendar, in ms since the epoch.
pub const MAX_MARKET_TIME_MS: i64 = 253_402_300_799_999;

/// The checks `run` makes on a simulated source before it trades
/// ([`GbmParams::from_spec`]), plus: the last candle must open by
/// [`MAX_MARKET_TIME_MS`] (start + candles × interval, or start + `stopAfter`
/// for an unbounded source). Returns the field path and the message.
fn check_simulated(
    sim: &paperbot_crds::SimulatedSpec,
    stop_after: Option<paperbot_crds::DurationString>,
) -> Result<(), (&'static str, String)> {
    const PATH: &str = "spec.marketData.simulated";
    let params = GbmParams::from_spec(sim).map_err(|m| (PATH, m))?;
    let start = i128::from(params.start.millis());
    let (end, path, what) = match (params.candles, stop_after) {
        (Some(n), _) => (
            start + i128::from(n) * i128::from(params.interval_ms),
            "spec.marketData.simulated.candles",
            format!(
                "{n} candles of {} from {}",
                paperbot_crds::DurationString(std::time::Duration::from_millis(
                    params.interval_ms.unsigned_abs()
                )),
                params.start
            ),
        ),
        (None, Some(d)) => (
            start + i128::from(d.as_millis_i64()),
            "spec.stopAfter",
            format!("stopAfter {d} from {}", params.start),
        ),
        (None, None) => return Ok(()),
    };
    if end > i128::from(MAX_MARKET_TIME_MS) {
        return Err((
            path,
            format!(
                "{what} run past 9999-12-31T23:59:59.999Z: expected a session that ends within \
                 the RFC 3339 calendar (fewer candles, a shorter interval or an earlier start)"
            ),
        ));
    }
    Ok(())
}

fn flatten(mut errors: Vec<ConfigError>) -> ConfigError {
    if errors.len() == 1 {
        errors.pop().expect("one error")
    } else {
        ConfigError::Invalid(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata:
  name: acct
spec:
  initialBalance: "10000"
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata:
  name: strat
spec:
  signals:
    smaCrossover: {fastPeriod: 10, slowPeriod: 30}
  risk:
    maxPositionSizePct: "10"
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata:
  name: bot
spec:
  accountRef: {name: acct}
  strategyRef: {name: strat}
  allocation: "5000"
  symbols: [SIM]
  marketData:
    source: Simulated
    simulated: {seed: 1, candles: 100}
"#;

    fn parse(text: &str) -> Result<Vec<SessionPlan>, ConfigError> {
        plan_sessions(&parse_manifests(text, Path::new("test.yaml"))?)
    }

    #[test]
    fn live_manifest_plans_its_sources_and_key_env_without_the_key() {
        let text = GOOD.replace(
            "    source: Simulated\n    simulated: {seed: 1, candles: 100}\n",
            "    source: Live\n    live:\n      pollInterval: 5s\n      sources:\n\
             \x20       - {name: coin-gecko, kind: CoinGecko, requestsPerMinute: 30, \
             apiKeySecretRef: {name: cg, key: apiKey}, symbols: {SIM: bitcoin}}\n\
             \x20       - {name: binance, kind: Binance, requestsPerMinute: 600, \
             baseUrl: \"http://127.0.0.1:9\"}\n",
        );
        let plans = parse(&text).unwrap();
        let live = plans[0].live.clone().unwrap();
        assert_eq!(
            (live.interval_ms, live.poll_interval_ms, live.max_age_ms),
            (60_000, 5_000, 60_000)
        );
        assert_eq!(live.jump_band_pct, Decimal::from(20));
        assert!(live.use_shared_feed);
        assert_eq!(live.sources.len(), 2);
        assert_eq!(
            live.sources[0].api_key_env.as_deref(),
            Some("PAPERBOT_LIVE_API_KEY_COIN_GECKO")
        );
        assert_eq!(live.sources[0].symbols["SIM"], "bitcoin");
        assert_eq!(live.sources[1].kind, LiveSourceKind::Binance);
        assert_eq!(live.sources[1].api_key_env, None);
        assert_eq!(
            live.sources[1].base_url.as_deref(),
            Some("http://127.0.0.1:9")
        );
        // A symbol one of the sources cannot map is refused at start, naming
        // the symbol, the source and how to fix it (SIM has a CoinGecko
        // override but no Binance identifier).
        let e = match crate::runner::prepare(plans[0].clone()) {
            Ok(_) => panic!("a symbol Binance cannot map must not start"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("symbol \"SIM\" has no binance identifier") && e.contains("override"),
            "{e}"
        );
        // An invalid chain is refused with file, line and field.
        let bad = text.replace("pollInterval: 5s", "pollInterval: 2m");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains("test.yaml:") && e.contains("spec.marketData.live.pollInterval"),
            "{e}"
        );
    }

    #[test]
    fn good_manifest_plans_one_session() {
        let plans = parse(GOOD).unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].name, "bot");
        assert_eq!(plans[0].params.tunable.max_position_size_pct, Decimal::TEN);
    }

    #[test]
    fn unknown_field_names_path_and_line() {
        let bad = GOOD.replace(
            "    maxPositionSizePct: \"10\"",
            "    maxPositionSize: \"10\"",
        );
        let e = parse(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "test.yaml:16: StrategyConfig \"strat\": spec.risk: unknown field `maxPositionSize`"
            ),
            "{e}"
        );
    }

    #[test]
    fn percentage_out_of_range_names_field_and_line() {
        let bad = GOOD.replace("\"10\"", "\"150\"");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains("test.yaml:16: StrategyConfig \"strat\": spec.risk.maxPositionSizePct: 150 is out of range: expected 0 to 100"),
            "{e}"
        );
    }

    #[test]
    fn unquoted_and_malformed_decimals_are_refused() {
        let e = parse(&GOOD.replace("\"5000\"", "5000"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.allocation: expected a decimal string, found the number 5000"),
            "{e}"
        );
        let e = parse(&GOOD.replace("\"5000\"", "\"abc\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "test.yaml:25: BotSession \"bot\": spec.allocation: invalid decimal \"abc\""
            ),
            "{e}"
        );
    }

    #[test]
    fn references_and_funds_are_checked() {
        let e = parse(&GOOD.replace("strategyRef: {name: strat}", "strategyRef: {name: nope}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("StrategyConfig \"nope\" not found"), "{e}");
        let e = parse(&GOOD.replace("\"5000\"", "\"20000\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sessions allocate 20000 in total but spec.initialBalance is 10000"),
            "{e}"
        );
    }

    #[test]
    fn missing_data_file_and_bad_kind_are_reported() {
        let replay = GOOD.replace(
            "    source: Simulated\n    simulated: {seed: 1, candles: 100}",
            "    source: Replay\n    replay:\n      files:\n        - {symbol: SIM, path: missing.csv}",
        );
        let e = parse(&replay).unwrap_err().to_string();
        assert!(e.contains("data file missing.csv not found"), "{e}");
        let e = parse(&GOOD.replace("kind: BotSession", "kind: BotSessions"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown kind \"BotSessions\""), "{e}");
    }

    #[test]
    fn session_names_that_would_escape_the_report_dir_are_refused() {
        for (bad, what) in [
            ("..", "character '.' at position 1 is not allowed"),
            ("/abs/path", "character '/' at position 1 is not allowed"),
            ("../../x", "character '.' at position 1 is not allowed"),
            ("a/b", "character '/' at position 2 is not allowed"),
            ("Bot", "character 'B' at position 1 is not allowed"),
            ("bot_1", "character '_' at position 4 is not allowed"),
            ("-bot", "it starts or ends with '-'"),
            ("bot-", "it starts or ends with '-'"),
            ("", "it is empty"),
        ] {
            let text = GOOD.replace("  name: bot\n", &format!("  name: {bad:?}\n"));
            let e = parse(&text).unwrap_err().to_string();
            let expected = format!(
                "test.yaml:21: BotSession {bad:?}: metadata.name: {bad:?} is not a valid session \
                 name: {what} (expected a DNS-1123 label: 1 to 63 lowercase letters, digits and \
                 '-', starting and ending with a letter or digit, e.g. \"btc-trend-1\")"
            );
            assert_eq!(e, expected);
        }
        let long = "a".repeat(64);
        let e = check_dns1123_label(&long).unwrap_err();
        assert!(e.contains("it is 64 characters long, more than 63"), "{e}");
        for good in ["a", "bot", "btc-trend-1", "0x", &"a".repeat(63)] {
            assert_eq!(check_dns1123_label(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn speed_is_a_finite_multiple_in_range_and_pacing_never_panics() {
        for good in [0.001, 1.0, 60.0, 1_000_000.0] {
            assert_eq!(check_speed(good), Ok(good));
        }
        for bad in [
            1e-300,
            0.0,
            -1.0,
            0.000999,
            1_000_001.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let e = check_speed(bad).unwrap_err();
            assert!(
                e.ends_with(
                    "is out of range: expected a multiple of real time from 0.001 to 1000000 \
                     (e.g. 60 = one minute of market time per second), or no --speed to run as \
                     fast as possible"
                ),
                "{bad}: {e}"
            );
        }
        assert_eq!(paced_wall_time(60_000, 60.0), Duration::from_secs(1));
        assert_eq!(paced_wall_time(-5, 1.0), Duration::ZERO);
        // Values check_speed refuses still give a Duration, never a panic.
        assert_eq!(paced_wall_time(i64::MAX, 1e-300), Duration::MAX);
        assert_eq!(paced_wall_time(1, f64::NAN), Duration::ZERO);
        assert_eq!(paced_wall_time(1, 0.0), Duration::MAX);
        assert!(paced_wall_time(i64::MAX, MIN_SPEED).as_secs() > 9_000_000_000_000_000_000);
    }

    #[test]
    fn values_beyond_the_engine_range_are_refused_with_file_line_and_path() {
        let cases = [
            (
                GOOD.replace("\"5000\"", "\"1000000000000001\""),
                "test.yaml:25: BotSession \"bot\": spec.allocation: 1000000000000001 is out of \
                 range: expected at most 1000000000000000",
            ),
            (
                GOOD.replace("candles: 100}", "candles: 100, initialPrice: \"1e3\"}"),
                "test.yaml:29: BotSession \"bot\": spec.marketData.simulated.initialPrice: \
                 invalid decimal \"1e3\": expected a plain decimal string such as \"10000\" or \"2.5\"",
            ),
            (
                GOOD.replace("candles: 100}", "candles: 100, annualVolatility: \"11\"}"),
                "test.yaml:29: BotSession \"bot\": spec.marketData.simulated.annualVolatility: 11 \
                 is out of range: expected at most 10 (fraction a year)",
            ),
            (
                GOOD.replace("seed: 1,", "seed: 18446744073709551615,"),
                "test.yaml:29: BotSession \"bot\": spec.marketData.simulated.seed: \
                 18446744073709551615 is out of range: expected at most 9007199254740991",
            ),
            (
                GOOD.replace("candles: 100}", "candles: 100}\n  stopAfter: 900000h"),
                "test.yaml:30: BotSession \"bot\": spec.stopAfter: 900000h is too long: expected \
                 at most 876000h (100 years)",
            ),
            (
                GOOD.replace("candles: 100}", "candles: 1000000000, interval: 876000h}"),
                "test.yaml:29: BotSession \"bot\": spec.marketData.simulated.candles: 1000000000 \
                 candles of 876000h from 2024-01-01T00:00:00Z run past 9999-12-31T23:59:59.999Z: \
                 expected a session that ends within the RFC 3339 calendar (fewer candles, a \
                 shorter interval or an earlier start)",
            ),
            (
                GOOD.replace("candles: 100}", "candles: 100, start: \"soon\"}"),
                "test.yaml:29: BotSession \"bot\": spec.marketData.simulated: simulated.start: \
                 \"soon\" is not an RFC 3339 time (premature end of input; expected \
                 e.g. 2024-01-01T00:00:00Z)",
            ),
            (
                GOOD.replace(
                    "smaCrossover: {fastPeriod: 10, slowPeriod: 30}",
                    "smaCrossover: {fastPeriod: 10, slowPeriod: 4000000000}",
                ),
                "test.yaml:14: StrategyConfig \"strat\": spec.signals.smaCrossover.slowPeriod: \
                 4000000000 is out of range: expected at most 100000",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert_eq!(e, expected);
        }
    }
}
