//! The `rapl` family: Intel/AMD RAPL energy counters from the powercap framework
//! (`<root>/sys/class/powercap/intel-rapl:*`), as joules and watts.
//!
//! Zones `intel-rapl:N` are packages (`package-K`) or the platform (`psys`); their
//! sub-zones `intel-rapl:N:M` are `core`, `uncore` and `dram`. `energy_uj` is a counter
//! that wraps to 0 after `max_energy_range_uj`; power is the energy difference between two
//! readings over the time between them, the wrap taken into account. Since Linux 5.10
//! (CVE-2020-8694) `energy_uj` is readable by root only.
//!
//! Samples: `.../plugin/rapl/chnl/data/domain/<package|core|uncore|dram|psys>/socket/<K>/<metric>`
//! (`socket` absent for `psys`):
//!
//! | metric | what |
//! |---|---|
//! | `energy_j` | the counter as read, joules (wraps) |
//! | `power_w` | average power since the previous reading, watts |
//! | `power_limit_w` | the long-term power limit (constraint 0), watts |

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use exawatch_protocol::Sample;

use crate::emit::{Emitter, base_tags, counter_delta};
use crate::{Collector, Family, FamilyStatus, NodeTags, sysfs};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "rapl";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.root),
    settings: |config| (config.rapl.enabled, config.rapl.period_secs),
    build: |cx| Ok(Box::new(RaplCollector::new(&cx.config.root, &cx.tags))),
};

/// Energy counter, joules.
pub const ENERGY: &str = "energy_j";
/// Average power since the previous reading, watts.
pub const POWER: &str = "power_w";
/// Long-term power limit, watts.
pub const POWER_LIMIT: &str = "power_limit_w";

const POWERCAP: &str = "sys/class/powercap";

/// One RAPL zone found under powercap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zone {
    /// Directory, e.g. `.../intel-rapl:0:1`.
    pub(crate) dir: PathBuf,
    /// `package`, `core`, `uncore`, `dram`, `psys`, or the zone's own name.
    pub(crate) domain: String,
    /// The package number, for package zones and their sub-zones.
    pub(crate) socket: Option<String>,
    /// Where `energy_uj` wraps, microjoules.
    pub(crate) max_energy_uj: Option<u64>,
}

/// The RAPL zones under `root`, packages before their sub-zones.
pub(crate) fn zones(root: &Path) -> Vec<Zone> {
    let dir = root.join(POWERCAP);
    let mut zones = Vec::new();
    for name in sysfs::names(&dir) {
        let Some(id) = name.strip_prefix("intel-rapl:") else {
            continue;
        };
        let parts: Vec<&str> = id.split(':').collect();
        if parts.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.parse::<u32>().is_err()) {
            continue;
        }
        let zone_dir = dir.join(&name);
        let Some(zone_name) = sysfs::read_string(&zone_dir.join("name")) else {
            continue;
        };
        // A sub-zone belongs to the package of its parent zone.
        let package_name = if parts.len() == 2 {
            sysfs::read_string(&dir.join(format!("intel-rapl:{}", parts[0])).join("name"))
        } else {
            Some(zone_name.clone())
        };
        let socket = package_name
            .as_deref()
            .and_then(|n| n.strip_prefix("package-"))
            .map(str::to_owned);
        let domain = if zone_name.starts_with("package-") {
            "package".to_owned()
        } else {
            zone_name
        };
        zones.push(Zone {
            max_energy_uj: sysfs::read_u64(&zone_dir.join("max_energy_range_uj")),
            dir: zone_dir,
            domain,
            socket,
        });
    }
    zones.sort_by(|a, b| a.dir.cmp(&b.dir));
    zones
}

/// Whether the family can run under `root`: some zone's `energy_uj` must be readable.
pub fn status(root: &Path) -> FamilyStatus {
    let zones = zones(root);
    let readable = zones
        .iter()
        .filter(|z| sysfs::read_u64(&z.dir.join("energy_uj")).is_some())
        .count();
    let (available, reason) = if zones.is_empty() {
        (
            false,
            format!("no RAPL zones under {}", root.join(POWERCAP).display()),
        )
    } else if readable == 0 {
        (
            false,
            format!(
                "{} RAPL zones but energy_uj is unreadable (root only since Linux 5.10)",
                zones.len()
            ),
        )
    } else {
        let domains: Vec<String> = zones
            .iter()
            .map(|z| match &z.socket {
                Some(s) => format!("{}/{s}", z.domain),
                None => z.domain.clone(),
            })
            .collect();
        (
            true,
            format!("reads {} zones: {}", zones.len(), domains.join(", ")),
        )
    };
    FamilyStatus {
        name: FAMILY.to_owned(),
        available,
        reason,
    }
}

/// The RAPL collector: the zones found at start and their previous readings.
#[derive(Debug)]
pub struct RaplCollector {
    base: Vec<(String, String)>,
    zones: Vec<Zone>,
    /// Zone directory → (time, energy µJ) at the previous reading.
    previous: HashMap<PathBuf, (i64, u64)>,
}

impl RaplCollector {
    /// A collector for the zones under `root`, tagging samples with `tags`.
    pub fn new(root: &Path, tags: &NodeTags) -> Self {
        Self {
            base: base_tags(tags, FAMILY),
            zones: zones(root),
            previous: HashMap::new(),
        }
    }
}

impl Collector for RaplCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        let mut emitter = Emitter::new(&self.base, now_ns, out);
        for zone in &self.zones {
            let mut items = vec![("domain", zone.domain.as_str())];
            if let Some(socket) = &zone.socket {
                items.push(("socket", socket.as_str()));
            }
            if let Some(limit) = sysfs::read_u64(&zone.dir.join("constraint_0_power_limit_uw")) {
                emitter.emit(&items, POWER_LIMIT, limit as f64 / 1e6);
            }
            let Some(energy) = sysfs::read_u64(&zone.dir.join("energy_uj")) else {
                continue;
            };
            emitter.emit(&items, ENERGY, energy as f64 / 1e6);
            let previous = self.previous.insert(zone.dir.clone(), (now_ns, energy));
            if let Some((then, old)) = previous
                && now_ns > then
                && let Some(delta) = counter_delta(energy, old, zone.max_energy_uj)
            {
                let secs = (now_ns - then) as f64 / 1e9;
                emitter.emit(&items, POWER, delta as f64 / 1e6 / secs);
            }
        }
    }
}
