//! The `cpufreq` family: per-core frequency (`cpufreq`), C-state residency (`cpuidle`) and
//! thermal throttling counts from `<root>/sys/devices/system/cpu/cpuN/`, on any
//! architecture.
//!
//! Residency is the share of the time between two readings a core spent in a C-state:
//! the increase of the state's `time` (µs) over the elapsed microseconds. A counter that
//! went backwards (CPU hot-unplugged and back) gives no residency for that period.
//!
//! Samples: `.../plugin/cpufreq/chnl/data/core/<n>/[state/<name>/]<metric>`:
//!
//! | metric | from | unit |
//! |---|---|---|
//! | `freq_hz`, `freq_min_hz`, `freq_max_hz` | `cpufreq/scaling_{cur,min,max}_freq` | kHz → Hz |
//! | `cstate_residency` | `cpuidle/stateK/time` delta | percent of the period |
//! | `cstate_time_us`, `cstate_usage` | `cpuidle/stateK/{time,usage}` | µs, entries since boot |
//! | `core_throttle_count`, `package_throttle_count` | `thermal_throttle/*` | events since boot |

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use exawatch_protocol::Sample;

use crate::emit::{Emitter, base_tags};
use crate::{Collector, Family, FamilyStatus, NodeTags, sysfs};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "cpufreq";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.root),
    settings: |config| (config.cpufreq.enabled, config.cpufreq.period_secs),
    build: |cx| Ok(Box::new(CpufreqCollector::new(&cx.config.root, &cx.tags))),
};

const CPUS: &str = "sys/devices/system/cpu";

/// Frequency files and their metrics.
const FREQS: [(&str, &str); 3] = [
    ("scaling_cur_freq", "freq_hz"),
    ("scaling_min_freq", "freq_min_hz"),
    ("scaling_max_freq", "freq_max_hz"),
];
const THROTTLES: [(&str, &str); 2] = [
    ("core_throttle_count", "core_throttle_count"),
    ("package_throttle_count", "package_throttle_count"),
];

/// One core's directories.
#[derive(Debug, Clone)]
struct Core {
    number: String,
    dir: PathBuf,
    /// `(state name, state directory)`.
    states: Vec<(String, PathBuf)>,
}

fn cores(root: &Path) -> Vec<Core> {
    sysfs::numbered(&root.join(CPUS), "cpu")
        .into_iter()
        .map(|(n, dir)| Core {
            number: n.to_string(),
            states: sysfs::numbered(&dir.join("cpuidle"), "state")
                .into_iter()
                .filter_map(|(_, state)| Some((sysfs::read_string(&state.join("name"))?, state)))
                .collect(),
            dir,
        })
        .filter(|core| !core.states.is_empty() || core.dir.join("cpufreq").is_dir())
        .collect()
}

/// Whether the family can run under `root`: some core needs `cpufreq` or `cpuidle`.
pub fn status(root: &Path) -> FamilyStatus {
    let cores = cores(root);
    let with_freq = cores
        .iter()
        .filter(|c| c.dir.join("cpufreq").is_dir())
        .count();
    let with_idle = cores.iter().filter(|c| !c.states.is_empty()).count();
    FamilyStatus {
        name: FAMILY.to_owned(),
        available: !cores.is_empty(),
        reason: if cores.is_empty() {
            format!("no cpufreq or cpuidle under {}", root.join(CPUS).display())
        } else {
            format!("reads {with_freq} cores' cpufreq, {with_idle} cores' cpuidle")
        },
    }
}

/// The cpufreq collector: the cores found at start and each C-state's previous time.
#[derive(Debug)]
pub struct CpufreqCollector {
    base: Vec<(String, String)>,
    cores: Vec<Core>,
    /// State directory → (time ns, residency µs) at the previous reading.
    previous: HashMap<PathBuf, (i64, u64)>,
}

impl CpufreqCollector {
    /// A collector for the cores under `root`, tagging samples with `tags`.
    pub fn new(root: &Path, tags: &NodeTags) -> Self {
        Self {
            base: base_tags(tags, FAMILY),
            cores: cores(root),
            previous: HashMap::new(),
        }
    }
}

impl Collector for CpufreqCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        let mut emitter = Emitter::new(&self.base, now_ns, out);
        for core in &self.cores {
            let items = [("core", core.number.as_str())];
            for (file, metric) in FREQS {
                if let Some(khz) = sysfs::read_u64(&core.dir.join("cpufreq").join(file)) {
                    emitter.emit(&items, metric, khz as f64 * 1000.0);
                }
            }
            for (file, metric) in THROTTLES {
                if let Some(n) = sysfs::read_u64(&core.dir.join("thermal_throttle").join(file)) {
                    emitter.emit(&items, metric, n as f64);
                }
            }
            for (name, dir) in &core.states {
                let items = [("core", core.number.as_str()), ("state", name.as_str())];
                if let Some(usage) = sysfs::read_u64(&dir.join("usage")) {
                    emitter.emit(&items, "cstate_usage", usage as f64);
                }
                let Some(time_us) = sysfs::read_u64(&dir.join("time")) else {
                    continue;
                };
                emitter.emit(&items, "cstate_time_us", time_us as f64);
                if let Some((then, old)) = self.previous.insert(dir.clone(), (now_ns, time_us))
                    && now_ns > then
                    && time_us >= old
                {
                    let elapsed_us = (now_ns - then) as f64 / 1e3;
                    let percent = (time_us - old) as f64 * 100.0 / elapsed_us;
                    emitter.emit(&items, "cstate_residency", percent.min(100.0));
                }
            }
        }
    }
}
