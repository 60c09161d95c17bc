//! The `perf` family: per-core hardware counters through `perf_event_open(2)` (the PMU
//! events EXAMON's `pmu_pub` reads from MSRs): instructions, core cycles and reference
//! cycles, counted system-wide on each online CPU as one group.
//!
//! From two readings it derives, per core: instructions per cycle, the effective frequency
//! while not halted (`nominal × Δcycles / Δref_cycles`) and the load (time in C0:
//! `Δref_cycles / (Δt × nominal)`). The nominal frequency comes from
//! `cpufreq/base_frequency`, else the `@ x.xxGHz` of `/proc/cpuinfo`'s model name; without
//! it, or without a reference-cycles event (most ARM PMUs), frequency and load are left out.
//! Counts are scaled by `time_enabled / time_running` when the kernel multiplexes counters.
//!
//! Counting on every CPU needs `perf_event_paranoid` ≤ 0 or `CAP_PERFMON`; where the kernel
//! refuses (that, no PMU in a VM or container) the family is off and [`status`] says why.
//!
//! Samples: `.../plugin/perf/chnl/data/core/<n>/<metric>`:
//! `instr_per_sec`, `cycles_per_sec`, `ref_cycles_per_sec`, `ipc`, `freq_hz`, `load`
//! (percent).

#[cfg(test)]
mod tests;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use exawatch_protocol::Sample;

use crate::emit::{Emitter, base_tags};
use crate::{Collector, Family, FamilyStatus, NodeTags, sysfs};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "perf";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.root),
    settings: |config| (config.perf.enabled, config.perf.period_secs),
    build: |cx| {
        let counters = PerfCounters::open(&online_cpus(&cx.config.root))?;
        Ok(Box::new(PerfCollector::new(
            counters,
            nominal_hz(&cx.config.root),
            &cx.tags,
        )))
    },
};

/// One reading of a core's counter group, as the kernel returns it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    /// Retired instructions.
    pub(crate) instructions: u64,
    /// Core cycles (not counting while halted).
    pub(crate) cycles: u64,
    /// Reference cycles at the nominal rate (not while halted); `None` if the PMU has none.
    pub(crate) ref_cycles: Option<u64>,
    /// Nanoseconds the group was enabled.
    pub(crate) time_enabled: u64,
    /// Nanoseconds it was actually counting (less when multiplexed).
    pub(crate) time_running: u64,
}

/// Where readings come from: the kernel, or a fake in tests.
pub(crate) trait CounterSource: Send + std::fmt::Debug {
    /// The CPUs counted.
    fn cpus(&self) -> Vec<u32>;
    /// The group of `cpu` now; `None` if the read failed.
    fn read(&mut self, cpu: u32) -> Option<Reading>;
}

/// Per-core metrics between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CoreMetrics {
    /// Instructions per second.
    pub(crate) instr_per_sec: f64,
    /// Core cycles per second.
    pub(crate) cycles_per_sec: f64,
    /// Reference cycles per second.
    pub(crate) ref_cycles_per_sec: Option<f64>,
    /// Instructions per core cycle.
    pub(crate) ipc: Option<f64>,
    /// Effective frequency while not halted, Hz.
    pub(crate) freq_hz: Option<f64>,
    /// Percent of the time not halted.
    pub(crate) load: Option<f64>,
}

/// Metrics between `old` and `new` readings of one core; `None` if the group did not run
/// or a counter went backwards.
pub(crate) fn derive(old: &Reading, new: &Reading, nominal_hz: Option<f64>) -> Option<CoreMetrics> {
    let enabled = new.time_enabled.checked_sub(old.time_enabled)?;
    let running = new.time_running.checked_sub(old.time_running)?;
    if enabled == 0 || running == 0 {
        return None;
    }
    let scale = enabled as f64 / running as f64;
    let secs = enabled as f64 / 1e9;
    let instr = new.instructions.checked_sub(old.instructions)? as f64 * scale;
    let cycles = new.cycles.checked_sub(old.cycles)? as f64 * scale;
    let refs = match (new.ref_cycles, old.ref_cycles) {
        (Some(n), Some(o)) => Some(n.checked_sub(o)? as f64 * scale),
        _ => None,
    };
    Some(CoreMetrics {
        instr_per_sec: instr / secs,
        cycles_per_sec: cycles / secs,
        ref_cycles_per_sec: refs.map(|r| r / secs),
        ipc: (cycles > 0.0).then(|| instr / cycles),
        freq_hz: nominal_hz
            .zip(refs)
            .and_then(|(nominal, r)| (r > 0.0).then(|| nominal * cycles / r)),
        load: nominal_hz
            .zip(refs)
            .map(|(nominal, r)| (r / (secs * nominal) * 100.0).min(100.0)),
    })
}

/// The CPUs listed in `<root>/sys/devices/system/cpu/online` (`0-3,8`); CPU 0 if absent.
pub(crate) fn online_cpus(root: &Path) -> Vec<u32> {
    sysfs::read_string(&root.join("sys/devices/system/cpu/online"))
        .map(|list| parse_cpu_list(&list))
        .filter(|cpus| !cpus.is_empty())
        .unwrap_or_else(|| vec![0])
}

/// Parses a kernel CPU list such as `0-3,8,10-11`; bad parts are skipped.
pub(crate) fn parse_cpu_list(list: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>())
                    && a <= b
                    && b - a < 65_536
                {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.trim().parse::<u32>().ok()),
        }
    }
    cpus
}

/// The nominal (base) frequency in Hz: `cpufreq/base_frequency` (kHz) of CPU 0, else the
/// `@ 2.60GHz` at the end of `/proc/cpuinfo`'s model name.
pub(crate) fn nominal_hz(root: &Path) -> Option<f64> {
    if let Some(khz) =
        sysfs::read_u64(&root.join("sys/devices/system/cpu/cpu0/cpufreq/base_frequency"))
    {
        return Some(khz as f64 * 1000.0);
    }
    let cpuinfo = std::fs::read_to_string(root.join("proc/cpuinfo")).ok()?;
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("model name"))
        .find_map(|line| {
            let ghz = line.rsplit_once('@')?.1.trim().strip_suffix("GHz")?;
            Some(ghz.trim().parse::<f64>().ok()? * 1e9)
        })
}

/// Whether the kernel lets this process count cycles on CPU 0, and why not.
pub fn status(root: &Path) -> FamilyStatus {
    let (available, reason) = match PerfCounters::open(&[0]) {
        Ok(counters) => {
            let refs = counters.groups.first().is_some_and(|g| g.has_ref);
            let cpus = online_cpus(root).len();
            let nominal =
                nominal_hz(root).map_or("unknown".to_owned(), |hz| format!("{} MHz", hz / 1e6));
            (
                true,
                format!(
                    "counts instructions, cycles{} on {cpus} CPUs; nominal frequency {nominal}",
                    if refs {
                        ", ref-cycles"
                    } else {
                        " (no ref-cycles event)"
                    },
                ),
            )
        }
        Err(reason) => (false, reason),
    };
    FamilyStatus {
        name: FAMILY.to_owned(),
        available,
        reason,
    }
}

/// The perf collector: a counter source and each core's previous reading.
#[derive(Debug)]
pub struct PerfCollector {
    base: Vec<(String, String)>,
    source: Box<dyn CounterSource>,
    nominal_hz: Option<f64>,
    previous: Vec<(u32, Reading)>,
}

impl PerfCollector {
    /// A collector over `source`, tagging samples with `tags`.
    pub(crate) fn new(
        source: impl CounterSource + 'static,
        nominal_hz: Option<f64>,
        tags: &NodeTags,
    ) -> Self {
        Self {
            base: base_tags(tags, FAMILY),
            source: Box::new(source),
            nominal_hz,
            previous: Vec::new(),
        }
    }
}

impl Collector for PerfCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        let mut emitter = Emitter::new(&self.base, now_ns, out);
        let mut current = Vec::new();
        for cpu in self.source.cpus() {
            let Some(reading) = self.source.read(cpu) else {
                continue;
            };
            current.push((cpu, reading));
            let Some((_, old)) = self.previous.iter().find(|(c, _)| *c == cpu) else {
                continue;
            };
            let Some(m) = derive(old, &reading, self.nominal_hz) else {
                continue;
            };
            let core = cpu.to_string();
            let items = [("core", core.as_str())];
            emitter.emit(&items, "instr_per_sec", m.instr_per_sec);
            emitter.emit(&items, "cycles_per_sec", m.cycles_per_sec);
            for (metric, value) in [
                ("ref_cycles_per_sec", m.ref_cycles_per_sec),
                ("ipc", m.ipc),
                ("freq_hz", m.freq_hz),
                ("load", m.load),
            ] {
                if let Some(value) = value {
                    emitter.emit(&items, metric, value);
                }
            }
        }
        self.previous = current;
    }
}

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (112 bytes), the layout every
/// kernel since 4.1 accepts.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
const PERF_COUNT_HW_REF_CPU_CYCLES: u64 = 9;
const PERF_FORMAT_TOTAL_TIME_ENABLED: u64 = 1;
const PERF_FORMAT_TOTAL_TIME_RUNNING: u64 = 2;
const PERF_FORMAT_GROUP: u64 = 8;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// Opens one hardware counter on `cpu` (all processes), in the group of `leader`.
fn open_counter(config: u64, cpu: u32, leader: Option<&OwnedFd>) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_HARDWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        read_format: PERF_FORMAT_GROUP
            | PERF_FORMAT_TOTAL_TIME_ENABLED
            | PERF_FORMAT_TOTAL_TIME_RUNNING,
        ..PerfEventAttr::default()
    };
    let group_fd = leader.map_or(-1, AsRawFd::as_raw_fd);
    // SAFETY: perf_event_open(2) reads `attr` (a valid, fully initialised struct of the
    // size it declares) and returns a new file descriptor or -1; nothing else is touched.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            group_fd,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One CPU's counter group: cycles (leader), instructions, and ref-cycles if available.
#[derive(Debug)]
struct Group {
    cpu: u32,
    leader: OwnedFd,
    // Members stay open as long as the leader: closing them would remove them from the group.
    _members: Vec<OwnedFd>,
    has_ref: bool,
}

/// Counters opened with `perf_event_open` on each CPU.
#[derive(Debug)]
pub(crate) struct PerfCounters {
    groups: Vec<Group>,
}

impl PerfCounters {
    /// Opens a group on each of `cpus`; fails with the reason if the first CPU is refused.
    /// CPUs that refuse later (offline) are left out.
    fn open(cpus: &[u32]) -> Result<Self, String> {
        let mut groups = Vec::new();
        for (i, &cpu) in cpus.iter().enumerate() {
            match Self::open_group(cpu) {
                Ok(group) => groups.push(group),
                Err(error) if i == 0 => return Err(refusal(&error)),
                Err(error) => tracing::debug!(cpu, %error, "CPU left out of perf counting."),
            }
        }
        Ok(Self { groups })
    }

    fn open_group(cpu: u32) -> std::io::Result<Group> {
        let leader = open_counter(PERF_COUNT_HW_CPU_CYCLES, cpu, None)?;
        let instructions = open_counter(PERF_COUNT_HW_INSTRUCTIONS, cpu, Some(&leader))?;
        let mut members = vec![instructions];
        let refs = open_counter(PERF_COUNT_HW_REF_CPU_CYCLES, cpu, Some(&leader)).ok();
        let has_ref = refs.is_some();
        members.extend(refs);
        Ok(Group {
            cpu,
            leader,
            _members: members,
            has_ref,
        })
    }
}

/// Why the kernel refused, in words an operator can act on.
fn refusal(error: &std::io::Error) -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map_or_else(|_| "unknown".to_owned(), |p| p.trim().to_owned());
    let hint = match error.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => {
            "counting every CPU needs perf_event_paranoid <= 0 or CAP_PERFMON"
        }
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV) => {
            "no hardware PMU (virtual machine or container?)"
        }
        Some(libc::ENOSYS) => "perf_event_open not supported by this kernel",
        _ => "the kernel refused the counter",
    };
    format!("perf_event_open: {error}: {hint} (perf_event_paranoid = {paranoid})")
}

impl CounterSource for PerfCounters {
    fn cpus(&self) -> Vec<u32> {
        self.groups.iter().map(|g| g.cpu).collect()
    }

    fn read(&mut self, cpu: u32) -> Option<Reading> {
        let group = self.groups.iter().find(|g| g.cpu == cpu)?;
        // nr, time_enabled, time_running, then one value per counter (at most 3).
        let mut buffer = [0u64; 6];
        // SAFETY: reads at most the buffer's size into it from a descriptor we own.
        let n = unsafe {
            libc::read(
                group.leader.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                std::mem::size_of_val(&buffer),
            )
        };
        let words = usize::try_from(n).ok()? / 8;
        let nr = usize::try_from(buffer[0]).ok()?;
        if words < 3 + nr || nr < 2 {
            return None;
        }
        Some(Reading {
            time_enabled: buffer[1],
            time_running: buffer[2],
            cycles: buffer[3],
            instructions: buffer[4],
            ref_cycles: (nr >= 3 && group.has_ref).then_some(buffer[5]),
        })
    }
}
