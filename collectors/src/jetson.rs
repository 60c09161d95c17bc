//! The `jetson` family: the INA3221 power monitors of NVIDIA Jetson boards, one rail per
//! channel, in both layouts the kernels of Jetson Linux have used:
//!
//! - L4T 32 and older (`ina3221x`, IIO):
//!   `<root>/sys/bus/i2c/drivers/ina3221x/<dev>/iio:device<k>/rail_name_<n>`,
//!   `in_voltage<n>_input` (mV), `in_current<n>_input` (mA), `in_power<n>_input` (mW);
//! - L4T 34 and newer (mainline `ina3221`, hwmon):
//!   `<root>/sys/bus/i2c/drivers/ina3221/<dev>/hwmon/hwmon<k>/in<n>_label`, `in<n>_input`
//!   (mV) and `curr<n>_input` (mA) for channels 1–3; power is volts × amps. Channel 7 (the
//!   sum of shunt voltages) is not a rail and is left out.
//!
//! Samples: `.../plugin/jetson/chnl/data/rail/<label>/sensor/<dev>/<metric>` with
//! `power_w`, `voltage_v`, `current_a`.

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use exawatch_protocol::Sample;

use crate::emit::{Emitter, base_tags};
use crate::{Collector, Family, FamilyStatus, NodeTags, sysfs};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "jetson";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.root),
    settings: |config| (config.jetson.enabled, config.jetson.period_secs),
    build: |cx| Ok(Box::new(JetsonCollector::new(&cx.config.root, &cx.tags))),
};

const IIO_DRIVER: &str = "sys/bus/i2c/drivers/ina3221x";
const HWMON_DRIVER: &str = "sys/bus/i2c/drivers/ina3221";

/// How a rail's files are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `in_voltage<n>_input`, `in_current<n>_input`, `in_power<n>_input`.
    Iio,
    /// `in<n>_input`, `curr<n>_input`.
    Hwmon,
}

/// One monitored rail.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rail {
    dir: PathBuf,
    channel: u32,
    label: String,
    device: String,
    layout: Layout,
}

fn rails(root: &Path) -> Vec<Rail> {
    let mut rails = Vec::new();
    let iio = root.join(IIO_DRIVER);
    for device in sysfs::names(&iio) {
        for name in sysfs::names(&iio.join(&device)) {
            if !name.starts_with("iio:device") {
                continue;
            }
            let dir = iio.join(&device).join(&name);
            for channel in 0..3 {
                if let Some(label) = sysfs::read_string(&dir.join(format!("rail_name_{channel}"))) {
                    rails.push(Rail {
                        dir: dir.clone(),
                        channel,
                        label,
                        device: device.clone(),
                        layout: Layout::Iio,
                    });
                }
            }
        }
    }
    let hwmon = root.join(HWMON_DRIVER);
    for device in sysfs::names(&hwmon) {
        for (_, dir) in sysfs::numbered(&hwmon.join(&device).join("hwmon"), "hwmon") {
            for channel in 1..=3 {
                if let Some(label) = sysfs::read_string(&dir.join(format!("in{channel}_label"))) {
                    rails.push(Rail {
                        dir: dir.clone(),
                        channel,
                        label,
                        device: device.clone(),
                        layout: Layout::Hwmon,
                    });
                }
            }
        }
    }
    rails
}

/// Whether the family can run under `root`: it needs an INA3221 rail.
pub fn status(root: &Path) -> FamilyStatus {
    let rails = rails(root);
    FamilyStatus {
        name: FAMILY.to_owned(),
        available: !rails.is_empty(),
        reason: if rails.is_empty() {
            "no INA3221 power monitor (not a Jetson board)".to_owned()
        } else {
            let labels: Vec<&str> = rails.iter().map(|r| r.label.as_str()).collect();
            format!("reads {} rails: {}", rails.len(), labels.join(", "))
        },
    }
}

/// The Jetson collector: the rails found at start.
#[derive(Debug)]
pub struct JetsonCollector {
    base: Vec<(String, String)>,
    rails: Vec<Rail>,
}

impl JetsonCollector {
    /// A collector for the rails under `root`, tagging samples with `tags`.
    pub fn new(root: &Path, tags: &NodeTags) -> Self {
        Self {
            base: base_tags(tags, FAMILY),
            rails: rails(root),
        }
    }
}

impl Collector for JetsonCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        let mut emitter = Emitter::new(&self.base, now_ns, out);
        for rail in &self.rails {
            let read = |file: String| sysfs::read_i64(&rail.dir.join(file)).map(|v| v as f64);
            let n = rail.channel;
            let (mv, ma, mw) = match rail.layout {
                Layout::Iio => (
                    read(format!("in_voltage{n}_input")),
                    read(format!("in_current{n}_input")),
                    read(format!("in_power{n}_input")),
                ),
                Layout::Hwmon => {
                    let mv = read(format!("in{n}_input"));
                    let ma = read(format!("curr{n}_input"));
                    (mv, ma, mv.zip(ma).map(|(v, i)| v * i / 1000.0))
                }
            };
            let items = [
                ("rail", rail.label.as_str()),
                ("sensor", rail.device.as_str()),
            ];
            for (metric, value) in [("voltage_v", mv), ("current_a", ma), ("power_w", mw)] {
                if let Some(value) = value {
                    emitter.emit(&items, metric, value / 1000.0);
                }
            }
        }
    }
}
