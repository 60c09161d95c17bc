//! The `thermal` family: the kernel's thermal zones and cooling devices under
//! `<root>/sys/class/thermal` (on ARM boards often the only CPU temperature there is).
//!
//! Samples: `.../plugin/thermal/chnl/data/type/<type>/zone/<n>/temp_c` (millidegree Celsius
//! → °C) and `.../type/<type>/cdev/<n>/cooling_state` and `cooling_max_state`.

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use exawatch_protocol::Sample;

use crate::emit::{Emitter, base_tags};
use crate::{Collector, Family, FamilyStatus, NodeTags, sysfs};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "thermal";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.root),
    settings: |config| (config.thermal.enabled, config.thermal.period_secs),
    build: |cx| Ok(Box::new(ThermalCollector::new(&cx.config.root, &cx.tags))),
};

const THERMAL: &str = "sys/class/thermal";

/// A zone or cooling device: its directory, number and type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Device {
    dir: PathBuf,
    number: String,
    kind: String,
}

fn devices(root: &Path, prefix: &str) -> Vec<Device> {
    sysfs::numbered(&root.join(THERMAL), prefix)
        .into_iter()
        .filter_map(|(n, dir)| {
            Some(Device {
                kind: sysfs::read_string(&dir.join("type"))?,
                number: n.to_string(),
                dir,
            })
        })
        .collect()
}

/// Whether the family can run under `root`: it needs a thermal zone or cooling device.
pub fn status(root: &Path) -> FamilyStatus {
    let zones = devices(root, "thermal_zone");
    let cdevs = devices(root, "cooling_device");
    let available = !zones.is_empty() || !cdevs.is_empty();
    FamilyStatus {
        name: FAMILY.to_owned(),
        available,
        reason: if available {
            format!(
                "reads {} thermal zones, {} cooling devices",
                zones.len(),
                cdevs.len()
            )
        } else {
            format!("no thermal zones under {}", root.join(THERMAL).display())
        },
    }
}

/// The thermal collector: the zones and cooling devices found at start.
#[derive(Debug)]
pub struct ThermalCollector {
    base: Vec<(String, String)>,
    zones: Vec<Device>,
    cdevs: Vec<Device>,
}

impl ThermalCollector {
    /// A collector for the zones under `root`, tagging samples with `tags`.
    pub fn new(root: &Path, tags: &NodeTags) -> Self {
        Self {
            base: base_tags(tags, FAMILY),
            zones: devices(root, "thermal_zone"),
            cdevs: devices(root, "cooling_device"),
        }
    }
}

impl Collector for ThermalCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        let mut emitter = Emitter::new(&self.base, now_ns, out);
        for zone in &self.zones {
            // Disabled zones answer EINVAL or ENODATA: skipped.
            if let Some(milli) = sysfs::read_i64(&zone.dir.join("temp")) {
                let items = [("type", zone.kind.as_str()), ("zone", zone.number.as_str())];
                emitter.emit(&items, "temp_c", milli as f64 / 1000.0);
            }
        }
        for cdev in &self.cdevs {
            let items = [("cdev", cdev.number.as_str()), ("type", cdev.kind.as_str())];
            for (file, metric) in [
                ("cur_state", "cooling_state"),
                ("max_state", "cooling_max_state"),
            ] {
                if let Some(value) = sysfs::read_u64(&cdev.dir.join(file)) {
                    emitter.emit(&items, metric, value as f64);
                }
            }
        }
    }
}
