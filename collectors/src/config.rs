//! `[collector]` and its per-family sections (`[collector.rapl]`, …) of exawatch.toml.
//!
//! Every family section has `enabled` and `period_secs`; an unset `period_secs` means the
//! collector-wide `period_secs`. A family that is enabled but cannot run on this node (no
//! RAPL, no NVML, …) is skipped with the reason [`list`](crate::list) gives.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use exawatch_protocol::settings::{InvalidSetting, Validate, at_least, redacted, within};

/// Sampling periods (`period_secs`) from a millisecond to a day.
pub(crate) const PERIOD_SECS: RangeInclusive<f64> = 0.001..=86_400.0;
/// How long an external command (`ipmitool`, `squeue`) may run: 0.1 s to an hour.
const COMMAND_TIMEOUT_SECS: RangeInclusive<f64> = 0.1..=3600.0;

/// How a publisher reaches the MQTT broker and logs in: keys of `[collector]` and of
/// `[simulate]` alike (flattened into each).
#[derive(Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct MqttConnection {
    /// MQTT broker, `HOST[:PORT]`.
    pub broker: String,
    /// MQTT user name, when the broker requires a login; empty: anonymous.
    pub username: String,
    /// MQTT password.
    pub password: String,
}

impl Default for MqttConnection {
    fn default() -> Self {
        Self {
            broker: "127.0.0.1:1883".to_owned(),
            username: String::new(),
            password: String::new(),
        }
    }
}

impl std::fmt::Debug for MqttConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConnection")
            .field("broker", &self.broker)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .finish()
    }
}

impl MqttConnection {
    /// An anonymous connection to `broker`.
    pub fn anonymous(broker: impl Into<String>) -> Self {
        Self {
            broker: broker.into(),
            ..Self::default()
        }
    }

    /// The login, none when `username` is empty.
    pub(crate) fn credentials(&self) -> Option<(String, String)> {
        (!self.username.is_empty()).then(|| (self.username.clone(), self.password.clone()))
    }
}

/// `[collector]` section of exawatch.toml; every field also a CLI flag or `--set` key in the
/// binary.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// The broker and the login: `broker`, `username`, `password` (keys of this section).
    #[serde(flatten)]
    pub mqtt: MqttConnection,
    /// `org` tag of every sample.
    pub org: String,
    /// `cluster` tag of every sample.
    pub cluster: String,
    /// `node` tag; `None` means this host's name (see [`CollectorConfig::node_name`]).
    pub node: Option<String>,
    /// Sampling period in seconds of every family that does not set its own.
    pub period_secs: f64,
    /// Filesystem root holding `proc/` and `sys/`; `/` on a real node.
    pub root: PathBuf,
    /// Messages kept while the broker is unreachable; the oldest are dropped beyond this.
    pub offline_buffer_messages: usize,
    /// MQTT QoS, 0 or 1.
    pub qos: u8,
    /// `linux`: procfs counters and filesystem usage.
    pub linux: LinuxConfig,
    /// `perf`: per-core hardware counters through `perf_event_open`.
    pub perf: FamilyConfig,
    /// `cpufreq`: per-core frequency, C-state residency and throttling from sysfs.
    pub cpufreq: FamilyConfig,
    /// `rapl`: RAPL energy counters from `/sys/class/powercap`, as joules and watts.
    pub rapl: FamilyConfig,
    /// `hwmon`: hardware monitoring chips (coretemp, k10temp, zenpower, fans, rails).
    pub hwmon: FamilyConfig,
    /// `thermal`: thermal zones and cooling devices.
    pub thermal: FamilyConfig,
    /// `jetson`: the INA3221 power rails of NVIDIA Jetson boards.
    pub jetson: FamilyConfig,
    /// `nvidia`: GPUs through NVML, loaded at run time.
    pub nvidia: NvidiaConfig,
    /// `ipmi`: BMC sensors, in-band and out of band.
    pub ipmi: IpmiConfig,
    /// `slurm`: the jobs running on this node.
    pub slurm: SlurmConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            mqtt: MqttConnection::default(),
            org: "exawatch".to_owned(),
            cluster: "local".to_owned(),
            node: None,
            period_secs: 2.0,
            root: PathBuf::from("/"),
            offline_buffer_messages: 100_000,
            qos: 0,
            linux: LinuxConfig::default(),
            perf: FamilyConfig::default(),
            cpufreq: FamilyConfig::default(),
            rapl: FamilyConfig::default(),
            hwmon: FamilyConfig::with_period(5.0),
            thermal: FamilyConfig::with_period(5.0),
            jetson: FamilyConfig::default(),
            nvidia: NvidiaConfig::default(),
            ipmi: IpmiConfig::default(),
            slurm: SlurmConfig::default(),
        }
    }
}

impl Validate for CollectorConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        within("period_secs", self.period_secs, PERIOD_SECS)?;
        at_least("offline_buffer_messages", self.offline_buffer_messages, 1)?;
        within("qos", self.qos, 0..=1)?;
        for family in crate::FAMILIES {
            if let (_, Some(period_secs)) = (family.settings)(self) {
                let key = format!("{}.period_secs", family.name);
                within(&key, period_secs, PERIOD_SECS)?;
            }
        }
        at_least("ipmi.max_in_flight", self.ipmi.max_in_flight, 1)?;
        within(
            "ipmi.timeout_secs",
            self.ipmi.timeout_secs,
            COMMAND_TIMEOUT_SECS,
        )?;
        within(
            "slurm.timeout_secs",
            self.slurm.timeout_secs,
            COMMAND_TIMEOUT_SECS,
        )?;
        within(
            "slurm.jobs_overlap_secs",
            self.slurm.jobs_overlap_secs,
            0.0..=30.0 * 86_400.0,
        )?;
        within(
            "slurm.jobs_lookback_secs",
            self.slurm.jobs_lookback_secs,
            0.0..=366.0 * 86_400.0,
        )
    }
}

/// The settings every family has.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FamilyConfig {
    /// Sample this family (when it can run here); also switched at run time by `on`/`off`
    /// on its command topic.
    pub enabled: bool,
    /// Seconds between samples; `None`: the collector's `period_secs`.
    pub period_secs: Option<f64>,
}

impl Default for FamilyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            period_secs: None,
        }
    }
}

impl FamilyConfig {
    /// Enabled, sampling every `period_secs`.
    pub fn with_period(period_secs: f64) -> Self {
        Self {
            enabled: true,
            period_secs: Some(period_secs),
        }
    }
}

/// `[collector.linux]`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LinuxConfig {
    /// Sample this family.
    pub enabled: bool,
    /// Seconds between samples; `None`: the collector's `period_secs`.
    pub period_secs: Option<f64>,
    /// A `statvfs` taking longer than this (a hung NFS or Lustre server) marks the mount
    /// stuck: it is skipped until the call returns.
    pub statvfs_timeout_ms: u64,
}

impl Default for LinuxConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            period_secs: None,
            statvfs_timeout_ms: 1000,
        }
    }
}

/// `[collector.nvidia]`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NvidiaConfig {
    /// Sample this family.
    pub enabled: bool,
    /// Seconds between samples; `None`: the collector's `period_secs`.
    pub period_secs: Option<f64>,
    /// The NVML shared library, a file name (searched as `dlopen` does) or a path.
    pub library: String,
}

impl Default for NvidiaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            period_secs: None,
            library: "libnvidia-ml.so.1".to_owned(),
        }
    }
}

/// `[collector.ipmi]`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IpmiConfig {
    /// Sample this family.
    pub enabled: bool,
    /// Seconds between samples; `None`: the collector's `period_secs`.
    pub period_secs: Option<f64>,
    /// The tool: `ipmitool` (runs `ipmitool sdr`) or `ipmi-sensors` (FreeIPMI); a name
    /// looked up in `PATH` or a path. Out of band needs `ipmitool`.
    pub tool: String,
    /// Read this node's own BMC through the local IPMI device (`/dev/ipmi0`).
    pub in_band: bool,
    /// BMCs to read over the network, one per line, EXAMON style:
    /// `ADDRESS;NODE[;CREDENTIALS_FILE]` (`#` starts a comment). Samples carry `NODE` as
    /// their `node` tag.
    pub hosts_file: Option<PathBuf>,
    /// Credentials of BMCs whose line names none: `username=…` and `password=…` lines.
    /// The password reaches `ipmitool` through its environment (`-E`), never its arguments.
    pub credentials_file: Option<PathBuf>,
    /// BMCs queried at the same time.
    pub max_in_flight: usize,
    /// A BMC that has not answered within this time is killed and skipped for the period.
    pub timeout_secs: f64,
}

impl Default for IpmiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            period_secs: Some(10.0),
            tool: "ipmitool".to_owned(),
            in_band: true,
            hosts_file: None,
            credentials_file: None,
            max_in_flight: 16,
            timeout_secs: 5.0,
        }
    }
}

/// `[collector.slurm]`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    /// Sample this family.
    pub enabled: bool,
    /// Seconds between samples; `None`: the collector's `period_secs`.
    pub period_secs: Option<f64>,
    /// `squeue`, a name looked up in `PATH` or a path.
    pub squeue: String,
    /// `scontrol`, a name looked up in `PATH` or a path.
    pub scontrol: String,
    /// A command that has not finished within this time is killed.
    pub timeout_secs: f64,
    /// Add a `job` tag (the running job ids, comma-separated) to every other family's
    /// samples while jobs run on this node.
    pub tag_metrics: bool,
    /// Publish every job of the cluster as a job record (`sacct` and `squeue`); turn on
    /// for one node per cluster (a login or controller node).
    pub job_records: bool,
    /// `sacct`, a name looked up in `PATH` or a path.
    pub sacct: String,
    /// Where the `sacct` cursor (end of the latest ended job seen, Unix seconds) is kept.
    pub cursor_file: PathBuf,
    /// Each `sacct` poll starts this long before the cursor (records published again are
    /// ignored by the store).
    pub jobs_overlap_secs: f64,
    /// Without a cursor file, the first poll reaches this far back.
    pub jobs_lookback_secs: f64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            period_secs: Some(10.0),
            squeue: "squeue".to_owned(),
            scontrol: "scontrol".to_owned(),
            timeout_secs: 5.0,
            tag_metrics: true,
            job_records: false,
            sacct: "sacct".to_owned(),
            cursor_file: PathBuf::from("/var/lib/exawatch/slurm_jobs.cursor"),
            jobs_overlap_secs: 600.0,
            jobs_lookback_secs: 86_400.0,
        }
    }
}
