//! The `ipmi` family: BMC sensors (temperatures, fans, voltages, power supplies, total
//! power) from the text output of `ipmitool sdr` / `ipmitool sdr elist` or FreeIPMI's
//! `ipmi-sensors`, read in-band (this node's BMC through `/dev/ipmi0`) and out of band for
//! a list of BMCs in EXAMON's hosts-file style, at most `max_in_flight` at a time, each
//! command killed after `timeout_secs`.
//!
//! As in EXAMON's `ipmi_pub`, the metric is the sensor's name in lower case with runs of
//! other characters turned into `_` (`CPU1 Temp` → `cpu1_temp`), and the unit is a tag:
//! `.../node/<node>/plugin/ipmi/chnl/data/unit/<unit>/<sensor>` with `<unit>` one of `C`,
//! `F`, `RPM`, `V`, `A`, `W`, `pct` or the tool's own word. Out-of-band samples carry the
//! node named in the hosts file. Discrete sensors (`0x00`), `Not Readable`, `No Reading`,
//! `N/A` and `disabled` readings are left out; a name seen twice gets `_2`, `_3`, ….
//!
//! Hosts file, one BMC per line (`#` starts a comment): `ADDRESS;NODE[;CREDENTIALS_FILE]`.
//! A credentials file holds `username=…` and `password=…` lines; the password reaches
//! `ipmitool` through `IPMI_PASSWORD` (`-E`), never its command line.

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use exawatch_protocol::Sample;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::command::{self, CommandError};
use crate::emit::{Emitter, base_tags};
use crate::{Collector, Family, FamilyStatus, IpmiConfig, NodeTags};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "ipmi";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.ipmi),
    settings: |config| (config.ipmi.enabled, config.ipmi.period_secs),
    build: |cx| {
        IpmiCollector::new(&cx.config.ipmi, &cx.tags, cx.runtime.clone())
            .map(|c| Box::new(c) as Box<dyn Collector>)
    },
};

/// Where the kernel's IPMI driver puts the local BMC.
const IPMI_DEVICES: [&str; 3] = ["/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"];

/// One sensor reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The sensor name as the tool prints it.
    pub name: String,
    /// The value.
    pub value: f64,
    /// The unit, normalised (`C`, `RPM`, `V`, `A`, `W`, `pct`, …).
    pub unit: String,
}

/// Parses `ipmitool sdr` (`name | reading unit | status`), `ipmitool sdr elist`
/// (`name | id | status | entity | reading unit[, event]`) or `ipmi-sensors`
/// (`ID | Name | Type | Reading | Units | Event`, with a header line) output. Lines that are
/// not sensor readings (tool warnings, discrete sensors, headers) are skipped.
pub fn parse(text: &str) -> Vec<Reading> {
    let mut readings = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let reading = match fields.as_slice() {
            [name, reading, _status] => analog(name, reading),
            [name, _id, _status, _entity, reading] => analog(name, reading),
            [id, name, _kind, value, unit, _event] if id.parse::<u32>().is_ok() => {
                value.parse::<f64>().ok().map(|value| Reading {
                    name: (*name).to_owned(),
                    value,
                    unit: normalise_unit(unit),
                })
            }
            _ => None,
        };
        readings.extend(reading.filter(|r| r.value.is_finite() && !r.name.is_empty()));
    }
    readings
}

/// `45 degrees C`, `2610 RPM`, `110 Watts, Presence detected` → a reading; `0x00`,
/// `Not Readable`, `No Reading`, `disabled` → none.
fn analog(name: &str, reading: &str) -> Option<Reading> {
    let measured = reading.split(',').next()?.trim();
    let (number, unit) = measured.split_once(' ')?;
    let value = number.parse::<f64>().ok()?;
    Some(Reading {
        name: name.to_owned(),
        value,
        unit: normalise_unit(unit.trim()),
    })
}

/// `degrees C` → `C`, `Volts` → `V`, `percent` → `pct`, …; other units lower-cased with
/// spaces as `_`.
fn normalise_unit(unit: &str) -> String {
    match unit.to_ascii_lowercase().as_str() {
        "degrees c" | "c" => "C".to_owned(),
        "degrees f" | "f" => "F".to_owned(),
        "rpm" => "RPM".to_owned(),
        "volts" | "v" => "V".to_owned(),
        "amps" | "a" => "A".to_owned(),
        "watts" | "w" => "W".to_owned(),
        "percent" | "%" => "pct".to_owned(),
        other => other.replace(' ', "_"),
    }
}

/// EXAMON-style metric name: lower case, other characters runs as one `_`.
pub fn metric_name(sensor: &str) -> String {
    let mut name = String::with_capacity(sensor.len());
    for c in sensor.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    name.trim_matches('_').to_owned()
}

/// One BMC to read over the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmc {
    /// Address (host name or IP) of the BMC.
    pub address: String,
    /// The node it manages: the samples' `node` tag.
    pub node: String,
    /// Its credentials file, else the configured default.
    pub credentials: Option<PathBuf>,
}

/// Parses a hosts file: `ADDRESS;NODE[;CREDENTIALS_FILE]` lines, `#` comments. Lines
/// without both an address and a node are skipped.
pub fn parse_hosts(text: &str) -> Vec<Bmc> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let mut fields = line.split(';').map(str::trim);
            let address = fields.next().filter(|a| !a.is_empty())?;
            let node = fields.next().filter(|n| !n.is_empty())?;
            let credentials = fields.next().filter(|c| !c.is_empty()).map(PathBuf::from);
            Some(Bmc {
                address: address.to_owned(),
                node: node.to_owned(),
                credentials,
            })
        })
        .collect()
}

/// User name and password of a BMC.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username=`.
    pub username: String,
    /// `password=`.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses a credentials file: `username=…` and `password=…` lines.
pub fn parse_credentials(text: &str) -> Option<Credentials> {
    let mut username = None;
    let mut password = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "username" | "user" => username = Some(value.trim().to_owned()),
            "password" => password = Some(value.trim_end_matches(['\r', '\n']).trim().to_owned()),
            _ => {}
        }
    }
    Some(Credentials {
        username: username?,
        password: password?,
    })
}

/// Whether the tool is installed, and in-band and out-of-band targets exist.
pub fn status(config: &IpmiConfig) -> FamilyStatus {
    let mut reasons = Vec::new();
    let tool = command::find_program(&config.tool);
    let device = IPMI_DEVICES.iter().find(|d| Path::new(d).exists());
    let in_band = config.in_band && device.is_some();
    if config.in_band && device.is_none() {
        reasons.push("no local BMC device (/dev/ipmi0)".to_owned());
    }
    let bmcs = match &config.hosts_file {
        None => 0,
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) => parse_hosts(&text).len(),
            Err(error) => {
                reasons.push(format!("hosts file {}: {error}", file.display()));
                0
            }
        },
    };
    let (available, reason) = match tool {
        None => (false, format!("{} not found", config.tool)),
        Some(_) if !in_band && bmcs == 0 => {
            if config.hosts_file.is_none() {
                reasons.push("no hosts_file for out-of-band BMCs".to_owned());
            }
            (false, reasons.join("; "))
        }
        Some(path) => {
            let mut targets = Vec::new();
            if let Some(device) = device.filter(|_| in_band) {
                targets.push(format!("this node's BMC ({device})"));
            }
            if bmcs > 0 {
                targets.push(format!("{bmcs} BMCs out of band"));
            }
            (
                true,
                format!("{} reads {}", path.display(), targets.join(" and ")),
            )
        }
    };
    FamilyStatus {
        name: FAMILY.to_owned(),
        available,
        reason,
    }
}

/// One command to run for one node.
#[derive(Debug, Clone)]
struct Target {
    node: String,
    args: Vec<String>,
    password: Option<String>,
}

/// The IPMI collector: the commands to run each period.
#[derive(Debug)]
pub struct IpmiCollector {
    tags: NodeTags,
    tool: String,
    targets: Vec<Target>,
    max_in_flight: usize,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
}

impl IpmiCollector {
    /// The in-band target (if `in_band` and a local device exists) and every BMC of the
    /// hosts file. Fails if there is nothing to read.
    pub fn new(
        config: &IpmiConfig,
        tags: &NodeTags,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let sensors_tool = Path::new(&config.tool)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("ipmi-sensors"));
        let mut targets = Vec::new();
        if config.in_band && IPMI_DEVICES.iter().any(|d| Path::new(d).exists()) {
            targets.push(Target {
                node: tags.node.clone(),
                args: if sensors_tool {
                    vec![]
                } else {
                    vec!["sdr".to_owned()]
                },
                password: None,
            });
        }
        if let Some(file) = &config.hosts_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("hosts file {}: {e}", file.display()))?;
            for bmc in parse_hosts(&text) {
                match out_of_band(&bmc, config.credentials_file.as_deref(), sensors_tool) {
                    Ok(target) => targets.push(target),
                    Err(reason) => {
                        warn!(bmc = %bmc.address, node = %bmc.node, %reason, "BMC skipped.")
                    }
                }
            }
        }
        if targets.is_empty() {
            return Err("no BMC to read".to_owned());
        }
        Ok(Self {
            tags: tags.clone(),
            tool: config.tool.clone(),
            targets,
            max_in_flight: config.max_in_flight.max(1),
            timeout: Duration::from_secs_f64(config.timeout_secs.clamp(0.1, 3600.0)),
            runtime,
        })
    }

    /// Runs every target's command, at most `max_in_flight` at once; `(node, output)` of
    /// those that succeeded, in target order.
    async fn run_all(&self) -> Vec<(String, String)> {
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, target) in self.targets.iter().cloned().enumerate() {
            let permits = Arc::clone(&permits);
            let tool = self.tool.clone();
            let timeout = self.timeout;
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.ok()?;
                let env: Vec<(&str, &str)> = target
                    .password
                    .as_deref()
                    .map(|p| ("IPMI_PASSWORD", p))
                    .into_iter()
                    .collect();
                match command::run(&tool, &target.args, &env, timeout).await {
                    Ok(output) => Some((i, target.node, output)),
                    Err(error) => {
                        log_failure(&target.node, &error);
                        None
                    }
                }
            });
        }
        let mut outputs: Vec<(usize, String, String)> =
            tasks.join_all().await.into_iter().flatten().collect();
        outputs.sort_by_key(|(i, _, _)| *i);
        outputs
            .into_iter()
            .map(|(_, node, out)| (node, out))
            .collect()
    }
}

fn log_failure(node: &str, error: &CommandError) {
    match error {
        CommandError::Timeout => debug!(node, %error, "IPMI read timed out."),
        _ => debug!(node, %error, "IPMI read failed."),
    }
}

/// The `ipmitool -I lanplus -H … -U … -E sdr` command for one BMC.
fn out_of_band(bmc: &Bmc, default: Option<&Path>, sensors_tool: bool) -> Result<Target, String> {
    if sensors_tool {
        return Err("out-of-band reading needs ipmitool".to_owned());
    }
    let file = bmc
        .credentials
        .as_deref()
        .or(default)
        .ok_or("no credentials file")?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("credentials file {}: {e}", file.display()))?;
    let credentials = parse_credentials(&text).ok_or_else(|| {
        format!(
            "credentials file {}: needs username= and password=",
            file.display()
        )
    })?;
    Ok(Target {
        node: bmc.node.clone(),
        args: [
            "-I",
            "lanplus",
            "-H",
            &bmc.address,
            "-U",
            &credentials.username,
            "-E",
            "sdr",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        password: Some(credentials.password),
    })
}

/// Appends one node's readings as samples.
fn emit_readings(
    tags: &NodeTags,
    node: &str,
    readings: &[Reading],
    now_ns: i64,
    out: &mut Vec<Sample>,
) {
    let node_tags = NodeTags {
        node: node.to_owned(),
        ..tags.clone()
    };
    let base = base_tags(&node_tags, FAMILY);
    let mut emitter = Emitter::new(&base, now_ns, out);
    let mut seen: Vec<String> = Vec::with_capacity(readings.len());
    for reading in readings {
        let stem = metric_name(&reading.name);
        if stem.is_empty() {
            continue;
        }
        let mut metric = stem.clone();
        let mut n = 1;
        while seen.contains(&metric) {
            n += 1;
            metric = format!("{stem}_{n}");
        }
        seen.push(metric.clone());
        emitter.emit(&[("unit", reading.unit.as_str())], &metric, reading.value);
    }
}

impl Collector for IpmiCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        // Runs on the blocking pool, so waiting on the runtime here is allowed.
        let outputs = self.runtime.block_on(self.run_all());
        for (node, output) in outputs {
            emit_readings(&self.tags, &node, &parse(&output), now_ns, out);
        }
    }
}
