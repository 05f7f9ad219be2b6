//! `bot-runtime`: run paper-trading sessions from manifests (`run`), serve
//! one as a long-lived service with an HTTP API (`serve`, what the
//! operator's pods run), backtest a strategy on candle files (`backtest`),
//! check manifests (`validate`),
//! inspect and close the sessions of a ledger (`sessions`), aggregate trade
//! files into candle files (`data candles`), and regenerate a
//! session's report from the ledger alone (`report`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context, bail};
use bot_runtime::{
    config::{self, SessionPlan},
    ledger::{self, LedgerStore},
    preflight,
    report::summary_table,
    runner::{RetryPolicy, RunOptions, StopSignal, prepare, prepare_with_start, run_session},
    sessions_cli, sweep,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use paperbot_crds::schema::MAX_CURRENCY_LENGTH;
use paperbot_crds::{
    BotSessionSpec, DecimalString, DesiredState, DurationString, ExecutionSpec, MarketDataSource,
    MarketDataSpec, ObjectRef, PaperAccountSpec, ReplayFile, ReplayFormat, ReplaySpec,
    SlippageSpec, Speed, StrategyConfig, VolumeUnit,
};

/// paperbot's bot runtime: paper-trade strategies on recorded or simulated markets.
#[derive(Parser, Debug)]
#[command(name = "bot-runtime", version, about)]
struct Cli {
    /// Log format: human-readable text (default) or JSON lines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PAPERBOT_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `bot-runtime feed` arguments.
#[derive(Args, Debug)]
struct FeedArgs {
    /// The feed's YAML configuration (pollInterval, maxAge, jumpBandPct,
    /// forgetAfterPolls, symbols, sources).
    #[arg(long)]
    config: PathBuf,
    /// Address to serve on; port 0 picks a free one. The chosen address is
    /// printed on stdout as `feed listening on http://ADDR`.
    #[arg(long, default_value = "0.0.0.0:8090")]
    listen: std::net::SocketAddr,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every BotSession in a manifest file (PaperAccount, StrategyConfig and
    /// BotSession documents, exactly as for `kubectl apply`).
    Run {
        /// The manifest file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Only run the BotSession with this name.
        #[arg(long)]
        session: Option<String>,
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Serve one BotSession as a long-lived service: trade it on the wall
    /// clock (resuming its unfinished run, or starting one), answer its HTTP
    /// API (status, control, metrics), and keep serving its final status
    /// after it ends. What the operator's pods run.
    Serve(ServeArgs),
    /// Serve one market-data feed shared by the live sessions of a
    /// namespace: poll each upstream once per interval for the union of the
    /// symbols clients asked for, and answer `GET /v1/prices?symbols=…` from
    /// the cache (plus /healthz, /readyz, /metrics). API keys from
    /// PAPERBOT_LIVE_API_KEY_<NAME>.
    Feed(FeedArgs),
    /// Backtest one strategy on one or more candle files.
    Backtest {
        #[command(flatten)]
        exec: BacktestArgs,
        /// Name of the session in the ledger and report.
        #[arg(long, default_value = "backtest")]
        name: String,
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Backtest every combination of a grid of strategy parameter values on
    /// the same candles (read once) on all cores, without a ledger; print
    /// the variants ranked by --metric and write `sweep.csv` (every variant),
    /// `summaries.jsonl` (every variant's full summary) and `best.yaml` (the best as a StrategyConfig manifest) into --out.
    /// Each variant's figures equal those of `backtest` with its strategy.
    Sweep {
        #[command(flatten)]
        exec: BacktestArgs,
        /// The grid: comma-separated `path=values` items, a path being the
        /// StrategyConfig spec's camelCase field path, values a list
        /// (`1,2,3`) and/or ranges `start..end:step` (inclusive, exact
        /// decimals), e.g.
        /// `signals.smaCrossover.fastPeriod=5..20:5,risk.stopLossPct=1,2,3`.
        /// At most 10,000 variants.
        #[arg(long)]
        grid: String,
        /// Rank by this figure (descending; drawdown ascending); ties keep
        /// grid order.
        #[arg(long, value_enum, default_value = "roi")]
        metric: bot_runtime::compare::SortBy,
        /// Worker threads (default: the available parallelism).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        jobs: Option<u16>,
        /// Directory for `sweep.csv`, `summaries.jsonl` and `best.yaml`
        /// (created; files replaced).
        #[arg(long, default_value = "reports/sweep")]
        out: PathBuf,
        /// Rows of the ranked table printed (all are in sweep.csv).
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Market time between performance snapshots, e.g. `1h` (as `backtest`).
        #[arg(long, default_value = "1h")]
        snapshot_interval: String,
        /// Hide the progress bar.
        #[arg(long)]
        no_progress: bool,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Check a manifest file without running it.
    Validate {
        /// The manifest file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List, show or close the sessions stored in a ledger.
    Sessions {
        #[command(flatten)]
        ledger: LedgerArg,
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Convert market data files.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Regenerate a session's report directory from the ledger alone.
    Report {
        #[command(flatten)]
        ledger: LedgerArg,
        /// The ledger session id (as `sessions list` shows it).
        #[arg(long)]
        session: String,
        /// Directory to write the report into (created; files replaced).
        #[arg(long)]
        out: PathBuf,
        /// The session's candle files, as `PATH` (symbol from the file name
        /// up to the first `_`) or `SYMBOL=PATH`, for the price charts and
        /// the benchmark line; without them those draw the recorded
        /// decision and fill prices.
        #[arg(long = "data", num_args = 1..)]
        data: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Aggregate a trade file (`timestamp,price,quantity,side`) into a
    /// candle CSV file (`timestamp,open,high,low,close,volume`): candles on
    /// the UTC grid of the interval, no candle for an interval without
    /// trades. OUT is replaced only once the whole input is valid.
    Candles {
        /// Candle length, e.g. `1m`, `5m`, `1h`, `1d`.
        #[arg(long)]
        interval: DurationString,
        /// The trade CSV file.
        input: PathBuf,
        /// The candle CSV file to write (replaced).
        output: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum SessionsCommand {
    /// One line per session: phase, period, trades, equity, writer.
    List,
    /// Everything the ledger holds about one session.
    Show {
        /// The ledger session id.
        id: String,
    },
    /// Close an unfinished session (an orphan of a crashed or interrupted
    /// run) as `Stopped`, with its summary computed from the ledger. Refused
    /// while a live runtime writes it.
    Close {
        /// The ledger session id.
        id: String,
    },
    /// Key figures of 2 to 20 sessions side by side (the figures `report`
    /// gives), plus `compare.csv` and `compare_equity.png` (equity as % of
    /// initial, one line per session) in --out.
    Compare {
        /// Directory for `compare.csv` and `compare_equity.png` (created;
        /// files replaced).
        #[arg(long, default_value = "reports/compare")]
        out: PathBuf,
        /// Sort the rows by this figure (default: the order given).
        #[arg(long, value_enum)]
        sort: Option<bot_runtime::compare::SortBy>,
        /// Session ids or BotSession names (a name means its newest run).
        ids: Vec<String>,
    },
}

/// Where the ledger is.
#[derive(Args, Debug)]
struct LedgerArg {
    /// Ledger: a SQLite file path (created and migrated if missing),
    /// `sqlite::memory:`, or a PostgreSQL URL (`postgres://user:pass@host/db`).
    /// Default: $PAPERBOT_LEDGER, else $DATABASE_URL, else `paperbot.db`.
    #[arg(long, env = "PAPERBOT_LEDGER", global = true)]
    ledger: Option<String>,
}

impl LedgerArg {
    fn url(&self) -> String {
        self.ledger
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "paperbot.db".into())
    }
}

/// Arguments of `serve`; the defaults fit the pod the operator renders.
#[derive(Args, Debug)]
struct ServeArgs {
    /// The manifest file (the operator mounts its ConfigMap here).
    #[arg(
        short = 'f',
        long = "file",
        default_value = "/etc/paperbot/session.yaml"
    )]
    file: PathBuf,
    /// The BotSession to serve (needed when the file holds several).
    #[arg(long)]
    session: Option<String>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "0.0.0.0:8080", env = "PAPERBOT_LISTEN")]
    listen: std::net::SocketAddr,
    /// Address serving `/metrics` alone (Prometheus); `none` to serve it on
    /// the API address only.
    #[arg(long, default_value = "0.0.0.0:9090", env = "PAPERBOT_METRICS_LISTEN")]
    metrics_listen: String,
    /// File holding the API's bearer token (e.g. a mounted Secret key);
    /// default: $PAPERBOT_API_TOKEN (the operator sets it from the session's
    /// Secret). Without a token the control routes are refused.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve the read routes (`GET /v1/*`: status, histories, the event
    /// stream) without a token; control routes always need it.
    #[arg(long)]
    open_reads: bool,
    /// Pace: `max` (as fast as possible) or a multiple of real time from
    /// 0.001 to 1000000; default: the BotSession's `spec.marketData.speed`,
    /// else 1 for a simulated market and `max` for a replay.
    #[arg(long)]
    speed: Option<String>,
    /// Directory for reports (one sub-directory per session).
    #[arg(long, default_value = "reports")]
    report_dir: PathBuf,
    #[command(flatten)]
    ledger: LedgerArg,
    /// Market time between performance snapshots, e.g. `1h`.
    #[arg(long, default_value = "1h")]
    snapshot_interval: String,
    /// Record Hold decisions in the ledger and decisions.csv.
    #[arg(long)]
    record_holds: bool,
    /// Commit the engine's records at least every this many candles (also
    /// at least once a second, before every paced wait, on every control
    /// request and at every stop).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    batch_candles: u64,
    /// While the ledger fails, pause trading and retry commits with backoff
    /// for this long before giving up (exit 1; the session stays resumable).
    #[arg(long, default_value = "10m")]
    ledger_retry_timeout: String,
    /// When the unfinished run's strategy in force (the manifest's at the
    /// start, or a hot-reloaded one) differs from the manifest's
    /// StrategyConfig and nothing else differs, put the manifest's in force
    /// as a hot reload instead of refusing to resume.
    #[arg(long)]
    adopt_manifest_strategy: bool,
    /// Accepted and ignored (`serve` always resumes and never shows a
    /// progress bar), so that `run`'s pod arguments serve as they are.
    #[arg(long, hide = true)]
    resume: bool,
    /// See `--resume`.
    #[arg(long, hide = true)]
    no_progress: bool,
}

/// The inputs and execution model of `backtest` (and `sweep`).
#[derive(Args, Debug)]
struct BacktestArgs {
    /// Candle CSV, as `PATH` (symbol taken from the file name up to the first `_`)
    /// or `SYMBOL=PATH`. Repeat for several symbols; they are merged by time.
    #[arg(long = "data", required = true, num_args = 1..)]
    data: Vec<String>,
    /// A YAML file holding a StrategyConfig (other documents in it are ignored).
    #[arg(long)]
    strategy: PathBuf,
    /// Starting cash, in `--currency`.
    #[arg(long, default_value = "100000")]
    initial_cash: String,
    /// Currency of the cash and of every money figure (the account's
    /// `baseCurrency`): the quote currency of the pairs traded, e.g. `BTC`
    /// for `ETH-BTC`. It sets the report's labels and decimal places.
    #[arg(long, default_value = "USD")]
    currency: String,
    /// Fee, percent of notional.
    #[arg(long, default_value = "0")]
    fee_rate_pct: String,
    /// Fixed slippage, basis points.
    #[arg(long, default_value = "0")]
    slippage_bps: String,
    /// Market-impact slippage at full candle participation, percent.
    #[arg(long, default_value = "0")]
    impact_pct: String,
    /// Decision-to-fill latency, e.g. `250ms`.
    #[arg(long, default_value = "0s")]
    latency: String,
    /// Probability that an order fails, percent.
    #[arg(long, default_value = "0")]
    failure_rate_pct: String,
    /// Seed of the execution RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Symbols whose volume column is quote-currency notional (default: base units).
    #[arg(long, value_delimiter = ',')]
    quote_volume: Vec<String>,
}

impl BacktestArgs {
    /// The session these flags describe, named `name`, validated like a
    /// manifest.
    fn plan(&self, name: &str) -> anyhow::Result<SessionPlan> {
        let dec = |flag: &str, v: &str| -> anyhow::Result<DecimalString> {
            v.parse()
                .map_err(|e: String| anyhow::anyhow!("--{flag}: {e}"))
        };
        let execution = ExecutionSpec {
            fee_rate_pct: Some(dec("fee-rate-pct", &self.fee_rate_pct)?),
            slippage: Some(SlippageSpec {
                base_bps: Some(dec("slippage-bps", &self.slippage_bps)?),
                impact_pct: Some(dec("impact-pct", &self.impact_pct)?),
            }),
            latency: Some(
                self.latency
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--latency: {e}"))?,
            ),
            failure_rate_pct: Some(dec("failure-rate-pct", &self.failure_rate_pct)?),
            seed: self.seed,
            ..Default::default()
        };
        let currency = self.currency.trim();
        if currency.is_empty() || currency.chars().count() > MAX_CURRENCY_LENGTH {
            anyhow::bail!(
                "--currency {:?}: expected a currency code of 1 to {MAX_CURRENCY_LENGTH} \
                 characters, such as USD or BTC",
                self.currency
            );
        }
        backtest_plan(
            &self.data,
            &self.strategy,
            currency,
            dec("initial-cash", &self.initial_cash)?,
            execution,
            &self.quote_volume,
            name,
        )
    }
}

/// The time range of the replay files to trade.
#[derive(Args, Debug)]
struct RangeArgs {
    /// Trade only candles opening at or after this RFC 3339 UTC time (e.g.
    /// `2024-01-01T00:00:00Z`); overrides `spec.marketData.replay.from`.
    #[arg(long)]
    from: Option<String>,
    /// Trade only candles opening before this RFC 3339 UTC time (exclusive);
    /// overrides `spec.marketData.replay.to`.
    #[arg(long)]
    to: Option<String>,
}

impl RangeArgs {
    /// Apply the flags to `plan` (a given flag replaces that bound of the
    /// manifest, an absent one keeps it).
    fn apply(&self, plan: &mut SessionPlan) -> anyhow::Result<()> {
        plan.override_range(self.from.as_deref(), self.to.as_deref())
            .map_err(anyhow::Error::msg)
    }
}

#[derive(Args, Debug)]
struct OutputArgs {
    /// Pace replay at this multiple of real time (e.g. 60 = one minute per
    /// second), from 0.001 to 1000000; `max` or no --speed: as fast as possible.
    #[arg(long)]
    speed: Option<String>,
    /// Directory for reports (one sub-directory per session).
    #[arg(long, default_value = "reports")]
    report_dir: PathBuf,
    #[command(flatten)]
    ledger: LedgerArg,
    /// Market time between performance snapshots, e.g. `1h`.
    #[arg(long, default_value = "1h")]
    snapshot_interval: String,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Record Hold decisions in the ledger and decisions.csv.
    #[arg(long)]
    record_holds: bool,
    /// Resume the newest run of each session where its ledger ends if it is
    /// unfinished (interrupted or crashed); a session that never ran starts,
    /// one whose newest run has ended is not run again. Refused when the
    /// manifest no longer matches what the ledger recorded.
    #[arg(long)]
    resume: bool,
    /// Commit the engine's records every this many candles (also at least
    /// once a second, on every paced candle and at every stop).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    batch_candles: u64,
    /// While the ledger fails, pause trading and retry commits with backoff
    /// for this long before giving up (the session stays resumable), e.g.
    /// `10m`; `0s` retries until stopped.
    #[arg(long, default_value = "10m")]
    ledger_retry_timeout: String,
}

impl OutputArgs {
    fn options(&self) -> anyhow::Result<RunOptions> {
        let snapshot: DurationString = self
            .snapshot_interval
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--snapshot-interval: {e}"))?;
        let retry: DurationString = self
            .ledger_retry_timeout
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--ledger-retry-timeout: {e}"))?;
        let retry = std::time::Duration::from_millis(retry.as_millis_i64().max(0) as u64);
        let speed = match parse_speed(self.speed.as_deref())? {
            None | Some(Speed::Max) => None,
            Some(s) => s.factor(),
        };
        Ok(RunOptions {
            speed,
            report_dir: self.report_dir.clone(),
            progress: !self.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            snapshot_interval_ms: snapshot.as_millis_i64().max(1),
            batch_candles: self.batch_candles,
            resume: self.resume,
            retry: RetryPolicy {
                give_up_after: (!retry.is_zero()).then_some(retry),
                ..RetryPolicy::default()
            },
            ..RunOptions::default()
        })
    }
}

/// `--speed`: `max`, or a multiple of real time checked by
/// [`config::check_speed`] (any float syntax, e.g. `60`, `1e3`).
fn parse_speed(text: Option<&str>) -> anyhow::Result<Option<Speed>> {
    let Some(text) = text else { return Ok(None) };
    if text.trim() == "max" {
        return Ok(Some(Speed::Max));
    }
    let v: f64 = text.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "--speed: {text:?} is not a number: expected `max` or a multiple of real time such \
             as 60"
        )
    })?;
    config::check_speed(v).map_err(|e| anyhow::anyhow!("--speed: {e}"))?;
    let d = rust_decimal::Decimal::from_f64_retain(v)
        .ok_or_else(|| anyhow::anyhow!("--speed: {v} is not representable"))?;
    Ok(Some(Speed::Factor(d)))
}

/// A duration flag such as `--ledger-retry-timeout 10m` as a retry budget
/// (`0s`: retry until stopped).
fn retry_policy(flag: &str, text: &str) -> anyhow::Result<RetryPolicy> {
    let d: DurationString = text
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--{flag}: {e}"))?;
    let d = std::time::Duration::from_millis(d.as_millis_i64().max(0) as u64);
    Ok(RetryPolicy {
        give_up_after: (!d.is_zero()).then_some(d),
        ..RetryPolicy::default()
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal (never in a pod's log file) and not under
    // NO_COLOR (https://no-color.org).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Validate { file } => {
            // The same checks `run` makes before its first trade: the manifest
            // rules, then every data row of every session, then the warnings.
            let plans = config::plan_sessions(&config::load_manifests(&file)?)?;
            let mut failed = 0;
            for p in &plans {
                match preflight::check(p) {
                    Ok(checked) => {
                        println!(
                            "ok: BotSession {:?} (account {:?}, strategy {:?}, {} symbol(s), {} data)",
                            p.name,
                            p.account_name,
                            p.strategy_name,
                            p.symbols.len(),
                            match p.session.market_data.source {
                                MarketDataSource::Replay => "replayed",
                                MarketDataSource::Simulated => "simulated",
                                MarketDataSource::Live => "live",
                            }
                        );
                        if let Ok(range) = p.replay_range()
                            && !range.is_full()
                        {
                            println!(
                                "  range: candles opening {range}; the counts below are the \
                                 candles in it (every row was validated)"
                            );
                        }
                        for f in &checked.files {
                            println!("  read {f}");
                        }
                        if let Some(sim) = &checked.simulated {
                            println!("  {sim}");
                        }
                        for w in &checked.warnings {
                            println!("  warning: {w}");
                        }
                    }
                    Err(e) => {
                        eprintln!("error: BotSession {:?}: {e}", p.name);
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!(
                    "{}: {failed} of {} session(s) have bad market data",
                    file.display(),
                    plans.len()
                );
            }
            Ok(())
        }
        Command::Run {
            file,
            session,
            range,
            out,
        } => {
            let mut plans = config::plan_sessions(&config::load_manifests(&file)?)?;
            if let Some(name) = session {
                plans.retain(|p| p.name == name);
                if plans.is_empty() {
                    bail!("{}: no BotSession named {name:?}", file.display());
                }
            }
            for p in &mut plans {
                range.apply(p)?;
            }
            run_plans(plans, out.options()?, &out.ledger.url(), out.record_holds)
        }
        Command::Serve(args) => serve(args),
        Command::Feed(args) => feed(args),
        Command::Data {
            command:
                DataCommand::Candles {
                    interval,
                    input,
                    output,
                },
        } => {
            let written = bot_runtime::data_cli::candles_from_trades(
                &input,
                &output,
                interval.as_millis_i64(),
            )?;
            println!("{written}");
            Ok(())
        }
        Command::Sessions {
            ledger,
            command: SessionsCommand::Compare { out, sort, ids },
        } => with_runtime(async move {
            let url = ledger.url();
            bot_runtime::compare::check_count(&ids)?;
            bot_runtime::compare::check_ledger_exists(&url)?;
            let store = ledger::open(&url).await?;
            let result = bot_runtime::compare::compare(&store, &ids, sort, &out).await;
            store.close().await;
            let written = result?;
            println!("{}", written.table);
            println!("wrote {}", written.csv.display());
            println!("wrote {}", written.png.display());
            Ok(())
        }),
        Command::Sessions { ledger, command } => with_runtime(async move {
            let url = ledger.url();
            let mut store = ledger::open(&url).await?;
            let result = match command {
                SessionsCommand::List => sessions_cli::list(&store).await,
                SessionsCommand::Show { id } => sessions_cli::show(&store, &id).await,
                SessionsCommand::Close { id } => {
                    sessions_cli::close(&mut store, &id, &bot_runtime::runner::default_writer())
                        .await
                }
                // Matched by the arm above (it must not open the ledger first).
                SessionsCommand::Compare { .. } => {
                    Err(anyhow::anyhow!("sessions compare is handled on its own"))
                }
            };
            store.close().await;
            result.map(|text| print!("{text}"))
        }),
        Command::Report {
            ledger,
            session,
            out,
            data,
        } => with_runtime(async move {
            let files = data
                .iter()
                .map(|d| symbol_and_path(d))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let store = ledger::open(&ledger.url()).await?;
            let result =
                bot_runtime::rebuild::regenerate_report(&store, &session, &out, &files).await;
            store.close().await;
            let r = result?;
            println!("{}", summary_table(&r.summary, &r.currency));
            println!(
                "report regenerated from the ledger: {}",
                r.files.dir.display()
            );
            Ok(())
        }),
        Command::Backtest {
            exec,
            name,
            range,
            out,
        } => {
            let mut plan = exec.plan(&name)?;
            range.apply(&mut plan)?;
            run_plans(
                vec![plan],
                out.options()?,
                &out.ledger.url(),
                out.record_holds,
            )
        }
        Command::Sweep {
            exec,
            grid,
            metric,
            jobs,
            out,
            top,
            snapshot_interval,
            no_progress,
            range,
        } => {
            let mut plan = exec.plan("sweep")?;
            range.apply(&mut plan)?;
            let snapshot: DurationString = snapshot_interval
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--snapshot-interval: {e}"))?;
            let strategy = config::load_manifests(&exec.strategy)?
                .strategies
                .into_iter()
                .next()
                .map(|s| s.object)
                .with_context(|| {
                    format!(
                        "{}: no StrategyConfig document found",
                        exec.strategy.display()
                    )
                })?;
            let jobs = jobs.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                usize::from,
            );
            sweep::run(sweep::SweepArgs {
                plan,
                strategy,
                grid: &grid,
                metric,
                jobs,
                out: &out,
                top,
                snapshot_interval_ms: snapshot.as_millis_i64().max(1),
                progress: !no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            })
        }
    }
}

/// A `--data` value: `SYMBOL=PATH`, or `PATH` whose file name up to the
/// first `_` is the symbol (`BTC-USD_1m_….csv` → `BTC-USD`).
fn symbol_and_path(d: &str) -> anyhow::Result<(String, PathBuf)> {
    Ok(match d.split_once('=') {
        Some((s, p)) => (s.to_string(), PathBuf::from(p)),
        None => {
            let stem = Path::new(d)
                .file_stem()
                .and_then(|s| s.to_str())
                .with_context(|| format!("--data {d}: not a file path"))?;
            (
                stem.split('_').next().unwrap_or(stem).to_string(),
                PathBuf::from(d),
            )
        }
    })
}
/// Build a session from `backtest` flags, validated like a manifest.
fn backtest_plan(
    data: &[String],
    strategy_file: &Path,
    currency: &str,
    initial_cash: DecimalString,
    execution: ExecutionSpec,
    quote_volume: &[String],
    name: &str,
) -> anyhow::Result<SessionPlan> {
    let manifests = config::load_manifests(strategy_file)?;
    let strategy: &StrategyConfig = &manifests
        .strategies
        .first()
        .with_context(|| {
            format!(
                "{}: no StrategyConfig document found",
                strategy_file.display()
            )
        })?
        .object;
    let mut files = Vec::new();
    for d in data {
        let (symbol, path) = symbol_and_path(d)?;
        let unit = if quote_volume.contains(&symbol) {
            VolumeUnit::Quote
        } else {
            VolumeUnit::Base
        };
        files.push(ReplayFile {
            symbol,
            path: std::path::absolute(&path)?.display().to_string(),
            interval: None,
            volume_unit: unit,
            format: ReplayFormat::Candles,
        });
    }
    let account = PaperAccountSpec {
        base_currency: currency.into(),
        initial_balance: initial_cash,
        limits: None,
        ledger: None,
        reset_request: None,
    };
    let session = BotSessionSpec {
        account_ref: ObjectRef {
            name: "backtest".into(),
        },
        strategy_ref: ObjectRef {
            name: strategy.metadata.name.clone().unwrap_or_default(),
        },
        allocation: initial_cash,
        symbols: files.iter().map(|f| f.symbol.clone()).collect(),
        market_data: MarketDataSpec {
            source: MarketDataSource::Replay,
            replay: Some(ReplaySpec {
                files,
                from: None,
                to: None,
            }),
            simulated: None,
            live: None,
            speed: None,
        },
        execution,
        desired_state: DesiredState::Running,
        stop_after: None,
        record_holds: false,
        reset_request: None,
        runtime: None,
    };
    let account_doc = serde_yaml::to_string(&serde_json::json!({
        "apiVersion": paperbot_crds::API_VERSION, "kind": "PaperAccount",
        "metadata": {"name": "backtest"}, "spec": account,
    }))?;
    let strategy_doc = serde_yaml::to_string(strategy)?;
    let session_doc = serde_yaml::to_string(&serde_json::json!({
        "apiVersion": paperbot_crds::API_VERSION, "kind": "BotSession",
        "metadata": {"name": name}, "spec": session,
    }))?;
    let text = format!("{account_doc}---\n{strategy_doc}---\n{session_doc}");
    let plans = config::plan_sessions(&config::parse_manifests(
        &text,
        &std::path::absolute(strategy_file)?,
    )?)?;
    plans
        .into_iter()
        .next()
        .context("backtest produced no session")
}

/// Run `f` on a small multi-threaded tokio runtime.
fn with_runtime<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}

/// `bot-runtime feed`: build the chain, then poll and serve until SIGTERM or
/// SIGINT (requests in flight finish, then it exits 0).
fn feed(args: FeedArgs) -> anyhow::Result<()> {
    let cfg = bot_runtime::feed::FeedConfig::load(&args.config)?;
    let built = bot_runtime::feed::build_chain(&cfg, |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("feed config {}: {e}", args.config.display()))?;
    with_runtime(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("feed listening on http://{addr}");
        tracing::info!(%addr, symbols = built.served.len(), unmapped = built.unmapped.len(), sources = cfg.sources.len(), "feed started");
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        watch_signals_with(
            Arc::new(StopSignal::new()),
            "finishing requests in flight and exiting...",
            Some(tx),
        );
        let feed = Arc::new(
            bot_runtime::feed::Feed::new(built.served, cfg.forget_after_polls)
                .with_unmapped(&built.unmapped),
        );
        bot_runtime::feed::serve(
            feed,
            built.chain,
            built.served_by,
            cfg.poll_interval.get(),
            listener,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )
        .await?;
        Ok(())
    })
}

/// SIGTERM or SIGINT: the first asks the running session to stop (commit,
/// record it as interrupted, write the report, exit 0); a second exits at
/// once with status 130. Committed batches are durable, so nothing recorded
/// is lost either way: the resumed run redoes the uncommitted tail exactly.
fn watch_signals(stop: Arc<StopSignal>) {
    watch_signals_with(
        stop,
        "committing the current batch, recording the session as interrupted (resume with \
         --resume) and writing the report...",
        None,
    );
}

/// [`watch_signals`] saying `what` the first signal does, and also setting
/// `first` (when given) on the first signal.
fn watch_signals_with(
    stop: Arc<StopSignal>,
    what: &'static str,
    first: Option<tokio::sync::watch::Sender<bool>>,
) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install SIGTERM/SIGINT handlers");
            return;
        };
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            seen += 1;
            if seen == 1 {
                eprintln!("\n{name}: stopping: {what}");
                stop.request();
                if let Some(tx) = &first {
                    let _ = tx.send(true);
                }
            } else {
                eprintln!("{name} again: exiting now (every committed batch is kept)");
                std::process::exit(130);
            }
        }
    });
}

/// Validate every session in full (every data file, every row), then run
/// them one after the other into one ledger. A stop request ends the running
/// session as interrupted and starts no further one; one that arrives while
/// the inputs are being validated starts none.
fn run_plans(
    plans: Vec<SessionPlan>,
    opts: RunOptions,
    ledger_url: &str,
    record_holds: bool,
) -> anyhow::Result<()> {
    with_runtime(async move {
        let stop = Arc::new(StopSignal::new());
        watch_signals(stop.clone());
        let prepared = tokio::task::block_in_place(|| -> anyhow::Result<Vec<_>> {
            let mut prepared = Vec::new();
            for mut plan in plans {
                if plan.session.desired_state != DesiredState::Running {
                    println!(
                        "BotSession {:?}: desiredState is {:?}, not running it",
                        plan.name, plan.session.desired_state
                    );
                    continue;
                }
                plan.session.record_holds |= record_holds;
                let name = plan.name.clone();
                let p = prepare(plan).with_context(|| format!("BotSession {name:?}"))?;
                for w in &p.warnings {
                    eprintln!("warning: BotSession {name:?}: {w}");
                }
                prepared.push(p);
            }
            Ok(prepared)
        })?;
        let mut ledger = ledger::open(ledger_url).await?;
        let mut result = Ok(());
        for p in prepared {
            if stop.is_requested() {
                println!("BotSession {:?}: not started (stop requested)", p.plan.name);
                continue;
            }
            let name = p.plan.name.clone();
            if opts.resume
                && let Some(done) = ledger
                    .list_sessions()
                    .await?
                    .into_iter()
                    .find(|s| s.name == name)
                    .filter(|s| !s.is_unfinished())
            {
                // Idempotent in a pod that restarts after the end: the run is
                // not repeated as `<name>-2`.
                println!(
                    "BotSession {name:?}: its newest run {:?} already ended ({}); nothing to \
                     resume (run without --resume to start a new run)",
                    done.id, done.phase
                );
                continue;
            }
            // A simulated market without a start of its own began where the
            // ledger says (`serve` starts it at the wall clock): resume there.
            let p = match ledger.find_unfinished(&name).await? {
                Some(info)
                    if opts.resume
                        && p.plan.session.market_data.source == MarketDataSource::Simulated
                        && p.plan
                            .session
                            .market_data
                            .simulated
                            .as_ref()
                            .is_some_and(|s| s.start.is_none()) =>
                {
                    prepare_with_start(p.plan, Some(info.started_at))
                        .with_context(|| format!("BotSession {name:?}"))?
                }
                _ => p,
            };
            let currency = p.plan.account.base_currency.clone();
            tracing::info!(session = %name, symbols = ?p.plan.symbols, "starting session");
            let out = match run_session(p, &opts, stop.clone(), &mut ledger).await {
                Ok(out) => out,
                Err(e) => {
                    result = Err(anyhow::Error::new(e).context(format!("BotSession {name:?}")));
                    break;
                }
            };
            let resumed = if out.resumed { " (resumed)" } else { "" };
            println!(
                "\nBotSession {name:?} — ledger session {:?}{resumed} — {}",
                out.session_id, out.phase
            );
            println!("{}", summary_table(&out.summary, &currency));
            println!("report: {}", out.files.dir.display());
            println!("  {}", out.files.summary_json.display());
            println!("  {}", out.files.trades_csv.display());
            println!("  {}", out.files.round_trips_csv.display());
            println!("  {}", out.files.decisions_csv.display());
            println!("  {}", out.files.equity_png.display());
            println!("  {}", out.files.by_symbol_csv.display());
            println!("  {}", out.files.by_exit_reason_csv.display());
            println!("  {}", out.files.daily_csv.display());
            println!("ledger: {}", ledger::url::redact(ledger_url));
            if out.phase == bot_runtime::ledger::store::INTERRUPTED_PHASE {
                println!("resume with: the same command and --resume");
            }
        }
        ledger.close().await;
        result
    })
}

/// `serve`: one session as a long-lived service (see [`bot_runtime::service`]).
///
/// The first SIGTERM/SIGINT stops trading (commit, record `Interrupted`
/// unless the session has ended, close the ledger) and exits 0; a second
/// exits 130 at once. A session that ends (Completed, Halted, Stopped,
/// Failed) keeps being served until a signal. A session that cannot run
/// (ledger unreachable or failing past `--ledger-retry-timeout`, a manifest
/// that no longer matches the unfinished run) exits 1, resumable.
fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut plans = config::plan_sessions(&config::load_manifests(&args.file)?)?;
    if let Some(name) = &args.session {
        plans.retain(|p| &p.name == name);
    }
    let mut plan = match (plans.len(), &args.session) {
        (1, _) => plans.remove(0),
        (0, Some(name)) => bail!("{}: no BotSession named {name:?}", args.file.display()),
        (0, None) => bail!("{}: no BotSession", args.file.display()),
        (n, _) => bail!(
            "{}: {n} BotSessions ({}): choose one with --session",
            args.file.display(),
            plans
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    plan.session.record_holds |= args.record_holds;
    let speed = parse_speed(args.speed.as_deref())?;
    let snapshot: DurationString = args
        .snapshot_interval
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--snapshot-interval: {e}"))?;
    let run = RunOptions {
        report_dir: args.report_dir.clone(),
        progress: false,
        snapshot_interval_ms: snapshot.as_millis_i64().max(1),
        batch_candles: args.batch_candles,
        resume: true,
        retry: retry_policy("ledger-retry-timeout", &args.ledger_retry_timeout)?,
        adopt_manifest_strategy: args.adopt_manifest_strategy,
        ..RunOptions::default()
    };
    let metrics_listen = match args.metrics_listen.trim() {
        "none" | "" => None,
        a => Some(
            a.parse()
                .map_err(|e| anyhow::anyhow!("--metrics-listen {a:?}: {e}"))?,
        ),
    };
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}", path.display()))?,
        ),
        None => std::env::var("PAPERBOT_API_TOKEN").ok(),
    }
    .filter(|t| !t.trim().is_empty())
    .map(|t| bot_runtime::api::ApiToken::new(&t))
    .transpose()
    .map_err(|e| anyhow::anyhow!("API token (--token-file or $PAPERBOT_API_TOKEN): {e}"))?;
    if token.is_none() {
        tracing::warn!(
            "no API token (--token-file or $PAPERBOT_API_TOKEN): control requests will be refused"
        );
    }
    let (listen, open_reads) = (args.listen, args.open_reads);
    // A replay of candle files gives the API's report the same price charts
    // as the run's own report.
    let report_data: Vec<(String, PathBuf)> = if plan.live.is_none()
        && plan
            .replay
            .iter()
            .all(|r| r.format == paperbot_crds::ReplayFormat::Candles)
    {
        plan.replay
            .iter()
            .filter_map(|r| Some((plan.symbols.get(r.symbol)?.clone(), r.path.clone())))
            .collect()
    } else {
        Vec::new()
    };
    let ledger_url = args.ledger.url();
    with_runtime(async move {
        let stop = Arc::new(StopSignal::new());
        let (signal_tx, mut signal_rx) = tokio::sync::watch::channel(false);
        watch_signals_with(
            stop.clone(),
            "committing the current batch, recording the session as interrupted unless it \
             has ended, closing the ledger...",
            Some(signal_tx),
        );
        let ledger = ledger::open(&ledger_url).await?;
        // Paged histories read beside the writer (after it created and
        // migrated the ledger); an in-memory SQLite ledger shares its pool.
        let reader = if ledger_url.contains(":memory:") {
            bot_runtime::ledger::query::LedgerReader::from_ledger(&ledger)
        } else {
            bot_runtime::ledger::query::LedgerReader::open(&ledger_url).await?
        };
        let mut api = bot_runtime::api::ApiOptions::new(listen, reader);
        api.metrics_listen = metrics_listen;
        api.token = token;
        api.open_reads = open_reads;
        api.report_data = report_data;
        let opts = bot_runtime::service::ServeOptions {
            run,
            speed,
            ledger_url: Some(ledger_url.clone()),
        };
        let (handle, mut session) = bot_runtime::service::start(plan, opts, ledger, stop.clone())?;
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::watch::channel(false);
        let mut server = tokio::spawn(bot_runtime::api::serve(handle, api, async move {
            let _ = shutdown_rx.wait_for(|s| *s).await;
        }));
        let outcome = tokio::select! {
            r = &mut session => r,
            r = &mut server => {
                // The API could not start (e.g. the address is taken): stop.
                stop.request();
                let _ = (&mut session).await;
                return match r {
                    Ok(Ok(())) => Err(anyhow::anyhow!("the API server ended unexpectedly")),
                    Ok(Err(e)) => Err(anyhow::Error::new(e).context("API server")),
                    Err(e) => Err(anyhow::anyhow!("API server task: {e}")),
                };
            }
        };
        let result = match outcome {
            Ok(Ok(out)) => {
                if let bot_runtime::service::ServeEnd::Final(phase) = out.end {
                    tracing::info!(
                        phase = ?phase,
                        "the session has ended; serving its final status until stopped"
                    );
                    tokio::select! {
                        _ = signal_rx.wait_for(|s| *s) => {}
                        r = &mut server => {
                            return r
                                .map_err(|e| anyhow::anyhow!("API server task: {e}"))?
                                .context("API server");
                        }
                    }
                }
                Ok(())
            }
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("serve")),
            Err(e) => Err(anyhow::anyhow!("session task: {e}")),
        };
        let _ = shutdown_tx.send(true);
        match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "API server"),
            Err(_) => tracing::warn!("the API server did not stop within 5 s"),
            _ => {}
        }
        result
    })
}
