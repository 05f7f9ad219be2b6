//! `bot-runtime`: run paper-trading sessions from manifests (`run`), backtest
//! a strategy on candle files (`backtest`), or check manifests (`validate`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::{Context, bail};
use bot_runtime::{
    config::{self, SessionPlan},
    preflight,
    report::summary_table,
    runner::{RunOptions, run_session},
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use paperbot_crds::{
    BotSessionSpec, DecimalString, DesiredState, DurationString, ExecutionSpec, MarketDataSource,
    MarketDataSpec, ObjectRef, PaperAccountSpec, ReplayFile, ReplaySpec, SlippageSpec,
    StrategyConfig, VolumeUnit,
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
        out: OutputArgs,
    },
    /// Backtest one strategy on one or more candle files.
    Backtest {
        /// Candle CSV, as `PATH` (symbol taken from the file name up to the first `_`)
        /// or `SYMBOL=PATH`. Repeat for several symbols; they are merged by time.
        #[arg(long = "data", required = true, num_args = 1..)]
        data: Vec<String>,
        /// A YAML file holding a StrategyConfig (other documents in it are ignored).
        #[arg(long)]
        strategy: PathBuf,
        /// Starting cash, quote currency.
        #[arg(long, default_value = "100000")]
        initial_cash: String,
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
        /// Name of the session in the ledger and report.
        #[arg(long, default_value = "backtest")]
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Check a manifest file without running it.
    Validate {
        /// The manifest file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
struct OutputArgs {
    /// Pace replay at this multiple of real time (e.g. 60 = one minute per second);
    /// default: as fast as possible.
    #[arg(long)]
    speed: Option<f64>,
    /// Directory for reports (one sub-directory per session).
    #[arg(long, default_value = "reports")]
    report_dir: PathBuf,
    /// SQLite ledger file (created and migrated if missing), or `sqlite::memory:`.
    #[arg(long, default_value = "paperbot.db", env = "PAPERBOT_LEDGER")]
    ledger: String,
    /// Market time between performance snapshots, e.g. `1h`.
    #[arg(long, default_value = "1h")]
    snapshot_interval: String,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Record Hold decisions in the ledger and decisions.csv.
    #[arg(long)]
    record_holds: bool,
}

impl OutputArgs {
    fn options(&self) -> anyhow::Result<RunOptions> {
        let snapshot: DurationString = self
            .snapshot_interval
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--snapshot-interval: {e}"))?;
        if let Some(s) = self.speed {
            config::check_speed(s).map_err(|e| anyhow::anyhow!("--speed: {e}"))?;
        }
        Ok(RunOptions {
            speed: self.speed,
            report_dir: self.report_dir.clone(),
            ledger: self.ledger.clone(),
            progress: !self.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            snapshot_interval_ms: snapshot.as_millis_i64().max(1),
            ..RunOptions::default()
        })
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
                            }
                        );
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
        Command::Run { file, session, out } => {
            let mut plans = config::plan_sessions(&config::load_manifests(&file)?)?;
            if let Some(name) = session {
                plans.retain(|p| p.name == name);
                if plans.is_empty() {
                    bail!("{}: no BotSession named {name:?}", file.display());
                }
            }
            run_plans(plans, out.options()?, out.record_holds)
        }
        Command::Backtest {
            data,
            strategy,
            initial_cash,
            fee_rate_pct,
            slippage_bps,
            impact_pct,
            latency,
            failure_rate_pct,
            seed,
            quote_volume,
            name,
            out,
        } => {
            let dec = |flag: &str, v: &str| -> anyhow::Result<DecimalString> {
                v.parse()
                    .map_err(|e: String| anyhow::anyhow!("--{flag}: {e}"))
            };
            let execution = ExecutionSpec {
                fee_rate_pct: Some(dec("fee-rate-pct", &fee_rate_pct)?),
                slippage: Some(SlippageSpec {
                    base_bps: Some(dec("slippage-bps", &slippage_bps)?),
                    impact_pct: Some(dec("impact-pct", &impact_pct)?),
                }),
                latency: Some(
                    latency
                        .parse()
                        .map_err(|e: String| anyhow::anyhow!("--latency: {e}"))?,
                ),
                failure_rate_pct: Some(dec("failure-rate-pct", &failure_rate_pct)?),
                seed,
                ..Default::default()
            };
            let plan = backtest_plan(
                &data,
                &strategy,
                dec("initial-cash", &initial_cash)?,
                execution,
                &quote_volume,
                &name,
            )?;
            run_plans(vec![plan], out.options()?, out.record_holds)
        }
    }
}

/// Build a session from `backtest` flags, validated like a manifest.
fn backtest_plan(
    data: &[String],
    strategy_file: &Path,
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
        let (symbol, path) = match d.split_once('=') {
            Some((s, p)) => (s.to_string(), p.to_string()),
            None => {
                let stem = Path::new(d)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .with_context(|| format!("--data {d}: not a file path"))?;
                (
                    stem.split('_').next().unwrap_or(stem).to_string(),
                    d.clone(),
                )
            }
        };
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
        });
    }
    let account = PaperAccountSpec {
        base_currency: "USD".into(),
        initial_balance: initial_cash,
        limits: None,
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
            replay: Some(ReplaySpec { files }),
            simulated: None,
        },
        execution,
        tick_interval: None,
        desired_state: DesiredState::Running,
        stop_after: None,
        record_holds: false,
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

fn run_plans(plans: Vec<SessionPlan>, opts: RunOptions, record_holds: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: finishing the current batch and writing the report...");
                s.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        for mut plan in plans {
            if plan.session.desired_state != DesiredState::Running {
                println!(
                    "BotSession {:?}: desiredState is {:?}, not running it",
                    plan.name, plan.session.desired_state
                );
                continue;
            }
            plan.session.record_holds |= record_holds;
            tracing::info!(session = %plan.name, symbols = ?plan.symbols, "starting session");
            let out = run_session(&plan, &opts, stop.clone())
                .await
                .with_context(|| format!("BotSession {:?}", plan.name))?;
            println!(
                "\nBotSession {:?} — ledger session {:?} — {}",
                plan.name, out.session_id, out.phase
            );
            println!(
                "{}",
                summary_table(&out.summary, &plan.account.base_currency)
            );
            println!("report: {}", out.files.dir.display());
            println!("  {}", out.files.summary_json.display());
            println!("  {}", out.files.trades_csv.display());
            println!("  {}", out.files.round_trips_csv.display());
            println!("  {}", out.files.decisions_csv.display());
            println!("  {}", out.files.equity_png.display());
            println!("ledger: {}", opts.ledger);
        }
        Ok(())
    })
}
