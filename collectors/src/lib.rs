//! exawatch node collectors: sensor families that sample a node, the sampling scheduler, the
//! MQTT publisher with its bounded offline buffer, and a telemetry simulator.
//!
//! Data flow: [`run`] finds which families can run here ([`list`]), starts one task per
//! family (see `schedule`), each sampling on its own period: [`Collector::collect`] appends
//! samples stamped with one timestamp; each sample becomes one EXAMON message
//! (`org/…/node/…/plugin/<family>/chnl/data/[item/…/]metric`, payload `value;seconds`)
//! handed to the [`publisher::Publisher`], which delivers it to the broker and buffers while
//! the broker is away. The publisher also subscribes to the node's command topics
//! (`…/plugin/<family>/chnl/cmd`) and the scheduler applies `-s <seconds>`, `on` and `off`.
//! [`simulate()`] publishes the same way for many simulated nodes ([`simulate::SimNode`]).
//!
//! Families (each a module): [`linux`] (procfs, vmstat, filesystems), [`perf`] (PMU
//! counters), [`cpufreq`] (frequency, C-states), [`rapl`] (x86 energy), [`hwmon`]
//! (coretemp, k10temp, zenpower, fans, rails), [`thermal`] (thermal zones), [`jetson`]
//! (INA3221 rails), [`nvidia`] (NVML), [`ipmi`] (BMC sensors) and [`slurm`] (jobs).

mod command;
mod config;
pub mod cpufreq;
mod emit;
mod error;
pub mod hwmon;
pub mod ipmi;
pub mod jetson;
pub mod linux;
pub mod nvidia;
pub mod perf;
pub mod publisher;
pub mod rapl;
mod schedule;
pub mod simulate;
pub mod slurm;
mod sysfs;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
pub mod thermal;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use exawatch_protocol::Sample;
use exawatch_protocol::settings::{InvalidSetting, Validate, within};
use exawatch_protocol::time::now_ns;
use snafu::ensure;
use tokio::sync::watch;
use tracing::{info, warn};

pub use config::{
    CollectorConfig, FamilyConfig, IpmiConfig, LinuxConfig, MqttConnection, NvidiaConfig,
    SlurmConfig,
};
pub use error::{Error, Result};

use crate::error::{NoFamilySnafu, PeriodSnafu};
use crate::publisher::{Publisher, PublisherConfig, PublisherStats};
use crate::schedule::{FamilyTask, Outbox, SharedJobs};

/// How long `run(.., once = true, ..)` waits between its two reads, so that utilisation and
/// rates have a delta to work from (50 scheduler ticks per core at `USER_HZ` = 100).
pub const ONCE_SAMPLE_GAP: Duration = Duration::from_millis(500);
/// How long `run(.., once = true, ..)` waits for the broker to take every message.
pub const ONCE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping collector or simulator keeps trying to deliver what is buffered.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// One sensor family on one node: reads its sensors and appends samples.
///
/// Implementations never fail a whole collection: a sensor that cannot be read is logged
/// (once) and skipped. Samples carry every tag, including the common ones (`org`, `cluster`,
/// `node`, `plugin`, `chnl`), and all use `now_ns` as their time.
pub trait Collector: Send {
    /// The family name, as in [`list`] (e.g. `linux`).
    fn name(&self) -> &'static str;
    /// Reads the sensors once and appends the samples to `out`.
    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>);
}

impl CollectorConfig {
    /// The `node` tag: the configured name, else `<root>/proc/sys/kernel/hostname`, else this
    /// machine's `/proc/sys/kernel/hostname` or `/etc/hostname`, else `$HOSTNAME`, else
    /// `localhost`.
    pub fn node_name(&self) -> String {
        if let Some(node) = &self.node
            && !node.trim().is_empty()
        {
            return node.trim().to_owned();
        }
        hostname(&self.root)
    }
}

/// `[simulate]` settings: simulated nodes publishing EXAMON telemetry (`up --simulate N`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimulateConfig {
    /// The broker and the login: `broker`, `username`, `password` (keys of this section).
    #[serde(flatten)]
    pub mqtt: MqttConnection,
    /// `org` tag of every sample.
    pub org: String,
    /// `cluster` tag of every sample.
    pub cluster: String,
    /// Number of simulated nodes, named `node000` … ; 0 simulates nothing.
    pub nodes: usize,
    /// Seconds between two publications of one node.
    pub period_secs: f64,
    /// Seed of every node's random generator: equal seeds give equal telemetry.
    pub seed: u64,
    /// Inject a fan failure into this node (index) for testing anomaly detection: see
    /// [`simulate::Fault`].
    pub fault_node: Option<usize>,
    /// Seconds after the simulator starts when the fault begins.
    pub fault_at_secs: f64,
}

impl Validate for SimulateConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        within("period_secs", self.period_secs, config::PERIOD_SECS)?;
        within("fault_at_secs", self.fault_at_secs, 0.0..=365.0 * 86_400.0)
    }
}

impl Default for SimulateConfig {
    fn default() -> Self {
        Self {
            mqtt: MqttConnection::default(),
            org: "acme".to_owned(),
            cluster: "sim".to_owned(),
            nodes: 0,
            period_secs: 2.0,
            seed: 42,
            fault_node: None,
            fault_at_secs: 0.0,
        }
    }
}

/// A sensor family and whether it can run on this node, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FamilyStatus {
    /// Family name, e.g. `linux`.
    pub name: String,
    /// Whether [`run`] will sample it.
    pub available: bool,
    /// What it reads, or why it cannot run.
    pub reason: String,
}

/// What a run delivered, from the publisher's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Messages written to (QoS 0) or acknowledged by (QoS 1) the broker.
    pub published: u64,
    /// Messages dropped because the offline buffer overflowed.
    pub dropped: u64,
    /// Messages still undelivered when the run ended.
    pub pending: u64,
    /// Failed connection attempts and lost connections.
    pub connection_errors: u64,
}

impl From<PublisherStats> for RunStats {
    fn from(stats: PublisherStats) -> Self {
        Self {
            published: stats.published,
            dropped: stats.dropped,
            pending: stats.pending(),
            connection_errors: stats.connection_errors,
        }
    }
}

/// What a family's constructor gets.
#[derive(Debug, Clone)]
pub(crate) struct BuildContext {
    /// The whole collector config (each family reads its own section).
    pub(crate) config: CollectorConfig,
    /// This node's tags.
    pub(crate) tags: NodeTags,
    /// For families that run subprocesses from the blocking pool.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Written by `slurm`, read by the scheduler for the `job` tag.
    pub(crate) jobs: SharedJobs,
    /// Job records from `slurm`, published by the scheduler.
    pub(crate) outbox: Outbox,
}

/// One sensor family: its name, whether it can run here, its settings and its constructor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family {
    /// The family (and `plugin` tag) name.
    pub(crate) name: &'static str,
    /// Whether it can run on this node, and why (not).
    pub(crate) status: fn(&CollectorConfig) -> FamilyStatus,
    /// `(enabled, period_secs)` from its config section.
    pub(crate) settings: fn(&CollectorConfig) -> (bool, Option<f64>),
    /// Builds the collector; the error says why it cannot run after all.
    pub(crate) build: fn(&BuildContext) -> std::result::Result<Box<dyn Collector>, String>,
}

/// Every family, in `--list` order.
pub(crate) const FAMILIES: &[Family] = &[
    linux::FAMILY_DEF,
    perf::FAMILY_DEF,
    cpufreq::FAMILY_DEF,
    rapl::FAMILY_DEF,
    hwmon::FAMILY_DEF,
    thermal::FAMILY_DEF,
    jetson::FAMILY_DEF,
    nvidia::FAMILY_DEF,
    ipmi::FAMILY_DEF,
    slurm::FAMILY_DEF,
];

/// Each sensor family and whether it can run on this node, with the reason. A family
/// switched off in the config is listed as off, with the reason it could (not) run.
pub fn list(config: &CollectorConfig) -> Vec<FamilyStatus> {
    FAMILIES
        .iter()
        .map(|family| {
            let mut status = (family.status)(config);
            let (enabled, _) = (family.settings)(config);
            if !enabled {
                status.available = false;
                status.reason = format!("disabled in the config ({})", status.reason);
            }
            status
        })
        .collect()
}

/// Runs the collector until `shutdown` resolves; with `once`, samples each family twice a
/// short moment apart (so utilisation, rates and power are filled), publishes the second
/// reading, waits until the publisher has flushed to the broker, and returns.
///
/// Fails before sampling if the config is invalid or no family can run; with `once`, also if
/// the broker did not take every message within [`ONCE_FLUSH_TIMEOUT`].
pub async fn run(
    config: CollectorConfig,
    once: bool,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunStats> {
    period(config.period_secs)?;
    let node = config.node_name();
    let tags = NodeTags {
        org: config.org.clone(),
        cluster: config.cluster.clone(),
        node: node.clone(),
    };
    let mut tasks = Vec::new();
    let mut reasons = Vec::new();
    let context = Arc::new(BuildContext {
        config: config.clone(),
        tags: tags.clone(),
        runtime: tokio::runtime::Handle::current(),
        jobs: SharedJobs::default(),
        outbox: Outbox::default(),
    });
    for family in FAMILIES {
        let (enabled, period_secs) = (family.settings)(&config);
        let period = period(period_secs.unwrap_or(config.period_secs))?;
        let status = (family.status)(&config);
        reasons.push(format!("{}: {}", status.name, status.reason));
        if !status.available {
            info!(family = family.name, reason = %status.reason, "Collector family unavailable.");
            continue;
        }
        let context = Arc::clone(&context);
        let build = family.build;
        tasks.push(FamilyTask {
            name: family.name,
            enabled,
            period,
            build: Box::new(move || build(&context)),
            tag_jobs: family.name != slurm::FAMILY && config.slurm.tag_metrics,
        });
    }
    ensure!(
        tasks.iter().any(|t| t.enabled),
        NoFamilySnafu {
            reasons: reasons.join("; "),
        }
    );
    let filter = schedule::command_filter(&tags);
    let (publisher, incoming) = Publisher::start_subscribed(
        PublisherConfig {
            connection: config.mqtt.clone(),
            client_id: format!("exawatch-collect-{node}-{}", std::process::id()),
            qos: config.qos,
            offline_buffer_messages: config.offline_buffer_messages,
        },
        if once {
            Vec::new()
        } else {
            vec![filter.clone()]
        },
    )?;
    let families: Vec<&str> = tasks.iter().filter(|t| t.enabled).map(|t| t.name).collect();
    info!(broker = %config.mqtt.broker, %node, ?families, once, "Collector started.");

    let mut shutdown = std::pin::pin!(shutdown);
    if once {
        return run_once(
            tasks,
            publisher,
            &context,
            config.mqtt.broker,
            &mut shutdown,
        )
        .await;
    }

    let publisher = Arc::new(publisher);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for task in tasks {
        let (tx, rx) = schedule::command_channel();
        senders.push((task.name, tx));
        handles.push(tokio::spawn(schedule::drive(
            task,
            Arc::clone(&publisher),
            Arc::clone(&context.jobs),
            Arc::clone(&context.outbox),
            rx,
            stop_rx.clone(),
        )));
    }
    let dispatcher = tokio::spawn(schedule::dispatch(incoming, filter, senders));
    shutdown.await;
    info!("Collector stopping.");
    stop_tx.send_replace(true);
    for handle in handles {
        if let Err(error) = handle.await {
            warn!(%error, "A collector family task ended abnormally.");
        }
    }
    dispatcher.abort();
    let publisher = match Arc::try_unwrap(publisher) {
        Ok(publisher) => publisher,
        Err(shared) => return Ok(shared.stats().into()),
    };
    Ok(publisher.close(SHUTDOWN_FLUSH_TIMEOUT).await.into())
}

/// `run(.., once = true, ..)`: two readings of every enabled family, the second published.
async fn run_once(
    tasks: Vec<FamilyTask>,
    publisher: Publisher,
    context: &BuildContext,
    broker: String,
    shutdown: &mut std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Result<RunStats> {
    let mut collectors = Vec::new();
    for task in tasks.into_iter().filter(|t| t.enabled) {
        match (task.build)() {
            Ok(collector) => collectors.push((task.tag_jobs, collector)),
            Err(reason) => warn!(family = task.name, %reason, "Collector family cannot start."),
        }
    }
    // The first reading only sets the baseline for utilisation, rates and power.
    let (mut collectors, _) = collect_blocking(collectors).await;
    tokio::select! {
        () = &mut *shutdown => return Ok(publisher.close(Duration::ZERO).await.into()),
        () = tokio::time::sleep(ONCE_SAMPLE_GAP) => {}
    }
    let readings;
    (collectors, readings) = collect_blocking(collectors).await;
    drop(collectors);
    for (tag_jobs, samples) in readings {
        schedule::publish(&publisher, samples, tag_jobs.then_some(&context.jobs));
    }
    schedule::publish_outbox(&publisher, &context.outbox);
    let flushed = tokio::select! {
        flushed = publisher.flush(ONCE_FLUSH_TIMEOUT) => flushed,
        () = &mut *shutdown => false,
    };
    let stats = publisher.close(Duration::ZERO).await;
    if !flushed {
        return Err(Error::FlushTimeout {
            broker,
            pending: stats.pending(),
            total: stats.accepted,
            timeout_secs: ONCE_FLUSH_TIMEOUT.as_secs(),
        });
    }
    Ok(stats.into())
}

/// Samples each collector once on the blocking pool (families may run subprocesses).
async fn collect_blocking(
    collectors: Vec<(bool, Box<dyn Collector>)>,
) -> (Vec<(bool, Box<dyn Collector>)>, Vec<(bool, Vec<Sample>)>) {
    let now = now_ns();
    tokio::task::spawn_blocking(move || {
        let mut readings = Vec::new();
        let mut collectors = collectors;
        for (tag_jobs, collector) in &mut collectors {
            let mut samples = Vec::new();
            collector.collect(now, &mut samples);
            readings.push((*tag_jobs, samples));
        }
        (collectors, readings)
    })
    .await
    .unwrap_or_else(|error| {
        warn!(%error, "Sampling failed.");
        (Vec::new(), Vec::new())
    })
}

/// Runs N simulated nodes until `shutdown` resolves.
pub async fn simulate(
    config: SimulateConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunStats> {
    let period = period(config.period_secs)?;
    if config.nodes == 0 {
        info!("No nodes to simulate.");
        return Ok(RunStats::default());
    }
    let publisher = Publisher::start(PublisherConfig {
        connection: config.mqtt.clone(),
        client_id: format!("exawatch-simulate-{}", std::process::id()),
        qos: 0,
        offline_buffer_messages: CollectorConfig::default().offline_buffer_messages,
    })?;
    info!(broker = %config.mqtt.broker, nodes = config.nodes, period_secs = config.period_secs, seed = config.seed, "Simulator started.");
    tokio::select! {
        () = shutdown => {}
        () = simulate::drive(&config, period, &publisher) => {}
    }
    info!("Simulator stopping.");
    Ok(publisher.close(SHUTDOWN_FLUSH_TIMEOUT).await.into())
}

/// The tags every sample of one node carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTags {
    /// `org` tag.
    pub org: String,
    /// `cluster` tag.
    pub cluster: String,
    /// `node` tag.
    pub node: String,
}

pub(crate) fn period(period_secs: f64) -> Result<Duration> {
    ensure!(
        config::PERIOD_SECS.contains(&period_secs),
        PeriodSnafu { period_secs }
    );
    Ok(Duration::from_secs_f64(period_secs))
}

/// This node's name without libc: procfs (under `root`, then the real one), `/etc/hostname`,
/// `$HOSTNAME`, then `localhost`.
pub fn hostname(root: &Path) -> String {
    let files = [
        root.join("proc/sys/kernel/hostname"),
        PathBuf::from("/proc/sys/kernel/hostname"),
        PathBuf::from("/etc/hostname"),
    ];
    files
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .find_map(|text| {
            let name = text.lines().next().unwrap_or("").trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}
