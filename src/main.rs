//! The `exawatch` command: the server (`up`), the node collector (`collect`), a SQL client
//! (`query`), store inspection (`store stats`), the PromQL test runner (`promqltest`), the
//! rule checker and unit-test runner (`check-rules`, `test-rules`) and
//! analytics (`train`, `models`, `report`, `eval`). Wiring only; the work is in the crates.

mod analytics;
mod config;
mod jobs;
mod query;
mod scrape;
mod stats;
mod tls;
mod up;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

/// Ingest allocates for every sample; with glibc's malloc, allocation and freeing took about
/// 30 % of line-protocol ingest CPU (perf) and memory stayed fragmented after bursts.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`; its Rust bindings leave options unnamed).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's `mi_option_allow_thp` (`mimalloc.h` of mimalloc 3, which libmimalloc-sys builds).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// How long freed memory stays with the process before mimalloc gives it back to the OS:
/// longer than a flush cycle under load (a flush of `store.flush_max_rows` takes about a
/// second), so that each flush reuses the memory of the last instead of faulting in fresh
/// pages (with huge pages and 4 M-row flushes, mimalloc's 1 s default made page zeroing half
/// of ingest CPU, perf), and short enough that memory a thread freed and no longer uses
/// (mimalloc keeps it per thread) does not add up. On `lp_ingest`'s 5,000 series with
/// 1 M-row flushes, peak RSS: 250 MiB returning it at once (but 1.5× the CPU per sample),
/// 310 MiB after 0.25 s, 360 MiB after 2 s, 430 MiB after 30 s at the same CPU as 2 s.
const PURGE_DELAY_MS: std::os::raw::c_long = 2_000;

/// Sets the allocator up for ingest, unless mimalloc's own environment variables
/// (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ALLOW_THP`) say otherwise:
/// - keeps freed memory [`PURGE_DELAY_MS`];
/// - turns transparent huge pages off for the process. mimalloc asks for them on its arenas,
///   and every first touch of one then zeroes 2 MiB: with them, page zeroing took 44 % of
///   line-protocol ingest CPU (perf; 5,000 series ingested at ~2.1 M samples/s, without
///   them at ~4 M). mimalloc reads its environment before `main`; setting the option now
///   stops further requests, and `PR_SET_THP_DISABLE` covers the arenas already requested.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, once, before other threads start.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: as above; prctl takes no pointers.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// exawatch: data-center and HPC monitoring (collectors → MQTT → columnar store → SQL).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: embedded MQTT broker, store, HTTP API, and a collector for this machine.
    Up(UpArgs),
    /// Run the node collector, publishing EXAMON topics to a broker.
    Collect(CollectArgs),
    /// Run SQL against a running server.
    Query(QueryArgs),
    /// List the job records of a running server.
    Jobs(jobs::JobsArgs),
    /// One job of a running server, with its energy and utilisation summary (JSON).
    Job(jobs::JobArgs),
    /// Train an anomaly model from the store of a running server (a new version if it exists).
    Train(analytics::TrainArgs),
    /// List the trained models of a running server.
    Models(analytics::UrlArgs),
    /// Make an anomaly report of a time range now.
    Report(analytics::ReportArgs),
    /// Measure anomaly detectors on labelled CSV data (one file per service).
    Eval(analytics::EvalArgs),
    /// Inspect the store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run Prometheus test-language files against the PromQL engine over a real store.
    Promqltest(PromqltestArgs),
    /// Check rule files (Prometheus' format), as `promtool check rules` does.
    CheckRules(RuleFilesArgs),
    /// Run rule unit-test files (`promtool test rules` format) through exawatch's evaluator.
    TestRules(RuleFilesArgs),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Files, rows, bytes, bytes per sample and time range, in all and per metric. Reads the
    /// files only (safe while a server runs on the same directory).
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
struct StatsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Data directory [data_dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: stats::Format,
}

/// Configuration shared by commands that read `exawatch.toml`.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// Configuration file (TOML); see exawatch.example.toml for every key and its default.
    #[arg(long, short = 'c', env = "EXAWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Override any configuration key, e.g. `--set store.flush_interval_secs=10` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config> {
        Config::load(self.config.as_deref(), &self.set)
    }
}

#[derive(Debug, Args)]
struct UpArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Data directory (WAL, Parquet files, catalog) [data_dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// MQTT port (3.1.1 and 5) [broker.listen].
    #[arg(long)]
    mqtt_port: Option<u16>,
    /// HTTP port [api.listen].
    #[arg(long)]
    http_port: Option<u16>,
    /// Publish telemetry from N simulated nodes [simulate.nodes].
    #[arg(long, value_name = "N")]
    simulate: Option<usize>,
    /// Do not run a collector for this machine [local_collector = false].
    #[arg(long)]
    no_collector: bool,
    /// What this process does: all, ingest or query [role].
    #[arg(long, value_enum)]
    role: Option<config::Role>,
}

#[derive(Debug, Args)]
struct CollectArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Broker address HOST:PORT [collector.broker].
    #[arg(long)]
    broker: Option<String>,
    /// Read /proc and /sys under DIR instead of / [collector.root].
    #[arg(long)]
    root: Option<PathBuf>,
    /// Sample once, publish, and exit.
    #[arg(long)]
    once: bool,
    /// List the sensor families, whether each is available here, and why.
    #[arg(long)]
    list: bool,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "EXAWATCH_URL")]
    url: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: query::Format,
    /// The SQL query.
    sql: String,
}

#[derive(Debug, Args)]
struct PromqltestArgs {
    /// Test files (`load`, `clear`, `eval instant|range`, expected results, `expect …`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct RuleFilesArgs {
    /// The files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Logging when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info";

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // The test runner's output is its report: keep the store's INFO lines out of it.
    let default_filter = if matches!(
        cli.command,
        Command::Promqltest(_) | Command::TestRules(_) | Command::CheckRules(_)
    ) {
        "warn"
    } else {
        DEFAULT_LOG_FILTER
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up(mut args) => {
            // Before the configuration is checked, as `--set role=…` would be.
            if let Some(role) = args.role.and_then(|r| r.to_possible_value()) {
                args.config.set.push(format!("role={}", role.get_name()));
            }
            let mut config = args.config.load()?;
            if let Some(dir) = args.data_dir {
                config.data_dir = dir;
            }
            if let Some(port) = args.mqtt_port {
                config.broker.listen = with_port(&config.broker.listen, port);
            }
            if let Some(port) = args.http_port {
                config.api.listen = with_port(&config.api.listen, port);
            }
            if args.no_collector {
                config.local_collector = false;
            }

            let simulate = args.simulate.unwrap_or(config.simulate.nodes);
            runtime()?.block_on(up::run(config, simulate))
        }
        Command::Collect(args) => {
            let loaded = args.config.load()?;
            let scrape = loaded.scrape;
            let mut config = loaded.collector;
            if let Some(broker) = args.broker {
                config.mqtt.broker = broker;
            }
            if let Some(root) = args.root {
                config.root = root;
            }
            if args.list {
                for family in exawatch_collectors::list(&config) {
                    let state = if family.available { "available" } else { "off" };
                    println!("{:<10} {:<9} {}", family.name, state, family.reason);
                }
                return Ok(());
            }
            let once = args.once;
            let stats = runtime()?.block_on(collect(config, scrape, once))?;
            tracing::info!(
                published = stats.published,
                dropped = stats.dropped,
                "Collector stopped."
            );
            Ok(())
        }
        Command::Query(args) => query::run(&args.url, args.format, &args.sql),
        Command::Jobs(args) => jobs::list(&args),
        Command::Job(args) => jobs::show(&args),
        Command::Train(args) => analytics::train(&args),
        Command::Models(args) => analytics::models(&args),
        Command::Report(args) => analytics::report(&args),
        Command::Eval(args) => analytics::eval(&args),
        Command::Store(StoreCommand::Stats(args)) => {
            let config = args.config.load()?;
            let data_dir = args.data_dir.unwrap_or(config.data_dir);
            runtime()?.block_on(stats::run(&data_dir, &config.store, args.format))
        }
        Command::Promqltest(args) => {
            let totals = runtime()?.block_on(exawatch_promql::promqltest::run_files(
                &args.files,
                &mut std::io::stdout().lock(),
            ))?;
            if totals.failed > 0 {
                anyhow::bail!("{} eval(s) failed", totals.failed);
            }
            Ok(())
        }
        Command::CheckRules(args) => {
            for file in &args.files {
                let groups = exawatch_alerting::file::load_file(file)?;
                let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
                println!(
                    "Checking {}\n  SUCCESS: {rules} rules found",
                    file.display()
                );
            }
            Ok(())
        }
        Command::TestRules(args) => {
            let runtime = runtime()?;
            let mut failed = 0;
            for file in &args.files {
                println!("Unit Testing: {}", file.display());
                let report = runtime
                    .block_on(exawatch_alerting::unittest::run_file(file))
                    .map_err(anyhow::Error::msg)?;
                if report.failures.is_empty() {
                    println!("  SUCCESS ({} tests)", report.passed);
                } else {
                    println!("  FAILED:");
                    for failure in &report.failures {
                        println!("{failure}");
                    }
                }
                failed += report.failures.len();
            }
            if failed > 0 {
                anyhow::bail!("{failed} rule test(s) failed");
            }
            Ok(())
        }
    }
}

/// `exawatch collect`: the collector families and, unless `once`, the `[scrape]` jobs, until
/// SIGINT or SIGTERM (or until the families stop).
async fn collect(
    config: exawatch_collectors::CollectorConfig,
    scrape: exawatch_protocol::scrape::ScrapeConfig,
    once: bool,
) -> Result<exawatch_collectors::RunStats> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut scraping = None;
    if !once && !scrape.jobs.is_empty() {
        // Built first, so that a CA file that cannot be read stops the command at once.
        let scraper = scrape::Scraper::new(&scrape, scrape::ScrapeMetrics::default())?;
        let config = config.clone();
        scraping = Some(tokio::spawn(async move {
            scrape::run_on_node(scraper, &config, stopped).await
        }));
    }
    let stats = exawatch_collectors::run(config, once, up::shutdown_signal()).await;
    let _ = stop.send(true);
    if let Some(scraping) = scraping {
        scraping.await.context("the scraper panicked")??;
    }
    Ok(stats?)
}

/// `listen` with its port replaced.
fn with_port(listen: &str, port: u16) -> String {
    let host = listen.rsplit_once(':').map_or("0.0.0.0", |(host, _)| host);
    format!("{host}:{port}")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option numbers are mimalloc's purge delay (documented default 1000 ms) and
    /// transparent huge pages (allowed by default).
    #[test]
    fn option_numbers_are_mimallocs() {
        // SAFETY: reads mimalloc's options.
        let (purge_delay, allow_thp) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP),
            )
        };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay, 1000);
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            assert_eq!(allow_thp, 1);
        }
    }
}
