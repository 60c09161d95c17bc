//! The `hwmon` family: every hardware monitoring chip under `<root>/sys/class/hwmon`, on any
//! architecture: CPU temperatures (Intel `coretemp`, AMD `k10temp` and `zenpower`), board
//! sensors (fans, voltages, currents, power) and the SoC sensors of ARM boards.
//!
//! The sensors are found once at start; each collection reads only their `*_input` files.
//! A sensor whose read fails (a chip that went away, `EIO` from a bus) is skipped for that
//! period. `ina3221` chips are left to the [`jetson`](crate::jetson) family, which turns
//! their rails into power.
//!
//! Samples: `.../plugin/hwmon/chnl/data/chip/<name>/device/<dev>/sensor/<label>/<metric>`,
//! where `<dev>` is the chip's device (e.g. `coretemp.0`, `0000:00:18.3`) and `<label>`
//! the sensor's label (`Core 0`, `Tctl`, `Package id 0`) or its file stem (`temp1`).
//! `coretemp` sensors also carry `socket/<n>` (from the chip's `Package id`/`Physical id`
//! sensor) and, per core, `core/<n>`.
//!
//! | metric | file | unit conversion |
//! |---|---|---|
//! | `temp_c` | `tempN_input` | millidegree Celsius → °C |
//! | `fan_rpm` | `fanN_input` | RPM |
//! | `in_v` | `inN_input` | millivolt → V |
//! | `curr_a` | `currN_input` | milliampere → A |
//! | `power_w` | `powerN_input` (else `powerN_average`) | microwatt → W |

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use exawatch_protocol::Sample;

use crate::emit::{Emitter, base_tags};
use crate::{Collector, Family, FamilyStatus, NodeTags, sysfs};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "hwmon";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.root),
    settings: |config| (config.hwmon.enabled, config.hwmon.period_secs),
    build: |cx| Ok(Box::new(HwmonCollector::new(&cx.config.root, &cx.tags))),
};

const HWMON: &str = "sys/class/hwmon";
/// Chips another family reports.
const SKIPPED_CHIPS: [&str; 1] = ["ina3221"];

/// Sensor kinds: file prefix, metric, divisor from the file's unit (dividing keeps
/// 29400 m°C exactly 29.4, where multiplying by 1e-3 gives 29.400000000000002).
const KINDS: [(&str, &str, f64); 5] = [
    ("temp", "temp_c", 1e3),
    ("fan", "fan_rpm", 1.0),
    ("in", "in_v", 1e3),
    ("curr", "curr_a", 1e3),
    ("power", "power_w", 1e6),
];

/// One sensor input file and its tags.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sensor {
    /// The `*_input` (or `power*_average`) file.
    pub(crate) file: PathBuf,
    /// The metric name.
    pub(crate) metric: &'static str,
    /// Multiplier from the file's unit to the metric's.
    pub(crate) divisor: f64,
    /// Item tags, in order.
    pub(crate) tags: Vec<(&'static str, String)>,
}

/// Every sensor of every chip under `root`.
pub(crate) fn sensors(root: &Path) -> Vec<Sensor> {
    let mut found = Vec::new();
    for (_, chip_dir) in sysfs::numbered(&root.join(HWMON), "hwmon") {
        let Some(chip) = sysfs::read_string(&chip_dir.join("name")) else {
            continue;
        };
        if SKIPPED_CHIPS.contains(&chip.as_str()) {
            continue;
        }
        let device = std::fs::read_link(chip_dir.join("device"))
            .ok()
            .and_then(|target| Some(target.file_name()?.to_str()?.to_owned()));
        let files = sysfs::names(&chip_dir);
        let socket = (chip == "coretemp")
            .then(|| coretemp_socket(&chip_dir, &files))
            .flatten();
        for file in &files {
            let Some((kind, metric, divisor, stem)) = classify(file, &files) else {
                continue;
            };
            let label = sysfs::read_string(&chip_dir.join(format!("{stem}_label")));
            let mut tags = vec![("chip", chip.clone())];
            if let Some(device) = &device {
                tags.push(("device", device.clone()));
            }
            if let Some(socket) = &socket {
                tags.push(("socket", socket.clone()));
            }
            if chip == "coretemp"
                && kind == "temp"
                && let Some(core) = label.as_deref().and_then(|l| l.strip_prefix("Core "))
            {
                tags.push(("core", core.trim().to_owned()));
            }
            tags.push(("sensor", label.unwrap_or_else(|| stem.to_owned())));
            found.push(Sensor {
                file: chip_dir.join(file),
                metric,
                divisor,
                tags,
            });
        }
    }
    found
}

/// `(kind, metric, divisor, stem)` of an input file, e.g. `temp2_input` → `temp2`. Power
/// uses `powerN_average` when the chip has no `powerN_input`.
fn classify<'a>(
    file: &'a str,
    files: &[String],
) -> Option<(&'static str, &'static str, f64, &'a str)> {
    let (stem, suffix) = file.rsplit_once('_')?;
    let (kind, metric, divisor) = KINDS.into_iter().find(|(kind, _, _)| {
        stem.strip_prefix(kind)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })?;
    let wanted = match suffix {
        "input" => true,
        "average" => kind == "power" && !files.iter().any(|f| *f == format!("{stem}_input")),
        _ => false,
    };
    wanted.then_some((kind, metric, divisor, stem))
}

/// The package number of a coretemp chip, from its `Package id N` (or, on older kernels,
/// `Physical id N`) sensor label.
fn coretemp_socket(chip_dir: &Path, files: &[String]) -> Option<String> {
    files
        .iter()
        .filter(|f| f.ends_with("_label"))
        .filter_map(|f| sysfs::read_string(&chip_dir.join(f)))
        .find_map(|label| {
            let id = label
                .strip_prefix("Package id ")
                .or_else(|| label.strip_prefix("Physical id "))?;
            Some(id.trim().to_owned())
        })
}

/// Whether the family can run under `root`: it needs one chip with a sensor.
pub fn status(root: &Path) -> FamilyStatus {
    let sensors = sensors(root);
    let mut chips: Vec<&str> = sensors
        .iter()
        .filter_map(|s| s.tags.first().map(|(_, chip)| chip.as_str()))
        .collect();
    chips.dedup();
    FamilyStatus {
        name: FAMILY.to_owned(),
        available: !sensors.is_empty(),
        reason: if sensors.is_empty() {
            format!("no hwmon sensors under {}", root.join(HWMON).display())
        } else {
            format!("reads {} sensors of {}", sensors.len(), chips.join(", "))
        },
    }
}

/// The hwmon collector: the sensors found at start.
#[derive(Debug)]
pub struct HwmonCollector {
    base: Vec<(String, String)>,
    sensors: Vec<Sensor>,
}

impl HwmonCollector {
    /// A collector for the chips under `root`, tagging samples with `tags`.
    pub fn new(root: &Path, tags: &NodeTags) -> Self {
        Self {
            base: base_tags(tags, FAMILY),
            sensors: sensors(root),
        }
    }
}

impl Collector for HwmonCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        let mut emitter = Emitter::new(&self.base, now_ns, out);
        for sensor in &self.sensors {
            let Some(raw) = sysfs::read_i64(&sensor.file) else {
                continue;
            };
            let items: Vec<(&str, &str)> =
                sensor.tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
            emitter.emit(&items, sensor.metric, raw as f64 / sensor.divisor);
        }
    }
}
