//! exawatch node collectors: sensor families that sample a node, the sampling scheduler, the
//! MQTT publisher with its bounded offline buffer, and a telemetry simulator.
//!
//! Data flow: every `period_secs` the scheduler in [`run`] asks each [`Collector`] (one per
//! sensor family, e.g. [`linux::LinuxCollector`]) for samples stamped with one timestamp; each
//! sample becomes one EXAMON message (`org/…/node/…/plugin/…/chnl/data/[item/…/]metric`,
//! payload `value;seconds`) handed to the [`publisher::Publisher`], which delivers it to the
//! broker and buffers while the broker is away. [`simulate()`] publishes the same way for many
//! simulated nodes ([`simulate::SimNode`]).

mod error;
pub mod linux;
pub mod publisher;
pub mod simulate;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use exawatch_protocol::Sample;
use snafu::ensure;
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

pub use error::{Error, Result};

use crate::error::{NoFamilySnafu, PeriodSnafu};
use crate::publisher::{Publisher, PublisherConfig, PublisherStats};

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

/// `[collector]` section of exawatch.toml; every field also a CLI flag in the binary.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// MQTT broker, `HOST[:PORT]`.
    pub broker: String,
    /// `org` tag of every sample.
    pub org: String,
    /// `cluster` tag of every sample.
    pub cluster: String,
    /// `node` tag; `None` means this host's name (see [`CollectorConfig::node_name`]).
    pub node: Option<String>,
    /// Sampling period in seconds.
    pub period_secs: f64,
    /// Filesystem root holding `proc/` (and later `sys/`); `/` on a real node.
    pub root: PathBuf,
    /// Messages kept while the broker is unreachable; the oldest are dropped beyond this.
    pub offline_buffer_messages: usize,
    /// MQTT QoS, 0 or 1.
    pub qos: u8,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            broker: "127.0.0.1:1883".to_owned(),
            org: "exawatch".to_owned(),
            cluster: "local".to_owned(),
            node: None,
            period_secs: 2.0,
            root: PathBuf::from("/"),
            offline_buffer_messages: 100_000,
            qos: 0,
        }
    }
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
    /// MQTT broker, `HOST[:PORT]`.
    pub broker: String,
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

impl Default for SimulateConfig {
    fn default() -> Self {
        Self {
            broker: "127.0.0.1:1883".to_owned(),
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

/// Each sensor family and whether it can run on this node, with the reason.
pub fn list(config: &CollectorConfig) -> Vec<FamilyStatus> {
    vec![linux::status(&config.root)]
}

/// Runs the collector until `shutdown` resolves; with `once`, samples once (two reads of
/// /proc/stat a short moment apart so utilisation is filled), publishes, waits until the
/// publisher has flushed to the broker, and returns.
///
/// Fails before sampling if the config is invalid or no family can run; with `once`, also if
/// the broker did not take every message within [`ONCE_FLUSH_TIMEOUT`].
pub async fn run(
    config: CollectorConfig,
    once: bool,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunStats> {
    let period = period(config.period_secs)?;
    let node = config.node_name();
    let statuses = list(&config);
    let mut collectors = build_collectors(&config, &node, &statuses);
    ensure!(
        !collectors.is_empty(),
        NoFamilySnafu {
            reasons: statuses
                .iter()
                .map(|s| format!("{}: {}", s.name, s.reason))
                .collect::<Vec<_>>()
                .join("; "),
        }
    );
    let publisher = Publisher::start(PublisherConfig {
        broker: config.broker.clone(),
        client_id: format!("exawatch-collect-{node}-{}", std::process::id()),
        qos: config.qos,
        offline_buffer_messages: config.offline_buffer_messages,
    })?;
    let families: Vec<&str> = collectors.iter().map(|c| c.name()).collect();
    info!(broker = %config.broker, %node, ?families, period_secs = config.period_secs, once, "Collector started.");

    let mut shutdown = std::pin::pin!(shutdown);
    let mut samples = Vec::new();
    if once {
        // The first read only sets the baseline for utilisation and rates.
        collect_all(&mut collectors, &mut samples);
        samples.clear();
        tokio::select! {
            () = &mut shutdown => return Ok(publisher.close(Duration::ZERO).await.into()),
            () = tokio::time::sleep(ONCE_SAMPLE_GAP) => {}
        }
        collect_all(&mut collectors, &mut samples);
        for sample in &samples {
            publisher.publish_sample(sample);
        }
        let flushed = tokio::select! {
            flushed = publisher.flush(ONCE_FLUSH_TIMEOUT) => flushed,
            () = &mut shutdown => false,
        };
        let stats = publisher.close(Duration::ZERO).await;
        if !flushed {
            return Err(Error::FlushTimeout {
                broker: config.broker,
                pending: stats.pending(),
                total: stats.accepted,
                timeout_secs: ONCE_FLUSH_TIMEOUT.as_secs(),
            });
        }
        return Ok(stats.into());
    }

    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = interval.tick() => {
                samples.clear();
                collect_all(&mut collectors, &mut samples);
                for sample in &samples {
                    publisher.publish_sample(sample);
                }
            }
        }
    }
    info!("Collector stopping.");
    Ok(publisher.close(SHUTDOWN_FLUSH_TIMEOUT).await.into())
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
        broker: config.broker.clone(),
        client_id: format!("exawatch-simulate-{}", std::process::id()),
        qos: 0,
        offline_buffer_messages: CollectorConfig::default().offline_buffer_messages,
    })?;
    info!(broker = %config.broker, nodes = config.nodes, period_secs = config.period_secs, seed = config.seed, "Simulator started.");
    tokio::select! {
        () = shutdown => {}
        () = simulate::drive(&config, period, &publisher) => {}
    }
    info!("Simulator stopping.");
    Ok(publisher.close(SHUTDOWN_FLUSH_TIMEOUT).await.into())
}

/// The families that can run, ready to sample.
fn build_collectors(
    config: &CollectorConfig,
    node: &str,
    statuses: &[FamilyStatus],
) -> Vec<Box<dyn Collector>> {
    let tags = NodeTags {
        org: config.org.clone(),
        cluster: config.cluster.clone(),
        node: node.to_owned(),
    };
    let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
    for status in statuses {
        if !status.available {
            warn!(family = %status.name, reason = %status.reason, "Collector family unavailable.");
            continue;
        }
        if status.name == linux::FAMILY {
            collectors.push(Box::new(linux::LinuxCollector::new(&config.root, &tags)));
        }
    }
    collectors
}

fn collect_all(collectors: &mut [Box<dyn Collector>], out: &mut Vec<Sample>) {
    let now = now_ns();
    for collector in collectors {
        collector.collect(now, out);
    }
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

fn period(period_secs: f64) -> Result<Duration> {
    ensure!(
        (0.001..=86_400.0).contains(&period_secs),
        PeriodSnafu { period_secs }
    );
    Ok(Duration::from_secs_f64(period_secs))
}

/// Wall-clock nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// This node's name without libc: procfs (under `root`, then the real one), `/etc/hostname`,
/// `$HOSTNAME`, then `localhost`.
fn hostname(root: &Path) -> String {
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
