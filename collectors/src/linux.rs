//! The `linux` family: CPU, memory, virtual memory events, load, network, disks, pressure
//! stall information and filesystem usage from procfs under a configurable root
//! (`<root>/proc/...`; filesystems through `statvfs` on `<root>/<mount point>`), as EXAMON
//! samples
//! `org/<org>/cluster/<cluster>/node/<host>/plugin/linux/chnl/data/[<item>/<name>/]<metric>`.
//!
//! Utilisation and `_per_sec` rates come from the difference between two reads, so the
//! first read only establishes the baseline. A counter that went backwards (wrap, reset,
//! reboot) yields no rate for that period. A file that cannot be read disables its part
//! with one WARN log.
//!
//! Every metric, with its item tag ([`METRICS`] is the same list as data):
//!
//! | item tag | metrics |
//! |---|---|
//! | `core/<n>` and none (node total) | `cpu_user` (% user + nice), `cpu_system` (% system + irq + softirq), `cpu_iowait`, `cpu_idle`, `cpu_util` (= 100 − idle − iowait) |
//! | none | `ctxt`, `intr` (since boot), `ctxt_per_sec`, `intr_per_sec`, `procs_running`, `procs_blocked`, `load1`, `load5`, `load15` |
//! | none | `mem_total_bytes`, `mem_free_bytes`, `mem_available_bytes`, `mem_used_bytes` (= total − available), `mem_cached_bytes`, `mem_buffers_bytes`, `swap_total_bytes`, `swap_used_bytes` |
//! | `iface/<name>` (not `lo`) | `rx_bytes`, `rx_packets`, `rx_errors`, `rx_drops`, `tx_bytes`, `tx_packets`, `tx_errors`, `tx_drops`, and each with `_per_sec` |
//! | `dev/<name>` (whole disks) | `read_bytes`, `write_bytes`, `read_ops`, `write_ops` and each with `_per_sec`; `io_time_ms`, `io_util` (% of the period busy) |
//! | none | `pgfault`, `pgmajfault`, `pgpgin`, `pgpgout`, `pswpin`, `pswpout`, `oom_kill` (since boot, from `/proc/vmstat`) and each with `_per_sec` |
//! | `mount/<path>`, `fstype/<type>` | `fs_size_bytes`, `fs_free_bytes`, `fs_avail_bytes` (free for unprivileged users), `fs_used_bytes`, `fs_files`, `fs_files_free` |
//! | `resource/<cpu\|memory\|io>` | `psi_some_avg10`, `psi_some_avg60`, `psi_some_avg300`, `psi_some_total_us`, `psi_full_avg10`, `psi_full_avg60`, `psi_full_avg300`, `psi_full_total_us` |

mod fs;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use exawatch_protocol::Sample;
use tracing::warn;

use crate::emit::{Emitter, base_tags};
use crate::{Collector, Family, FamilyStatus, NodeTags};
use fs::{FsStats, StatError, StatFn, StatWorker};
use parse::{CpuTimes, cpu};

/// The family (and `plugin` tag) name.
pub const FAMILY: &str = "linux";

/// The family as the scheduler sees it.
pub(crate) const FAMILY_DEF: Family = Family {
    name: FAMILY,
    status: |config| status(&config.root),
    settings: |config| (config.linux.enabled, config.linux.period_secs),
    build: |cx| {
        Ok(Box::new(LinuxCollector::with_statvfs(
            &cx.config.root,
            &cx.tags,
            fs::statvfs,
            Duration::from_millis(cx.config.linux.statvfs_timeout_ms),
        )))
    },
};

/// Every metric this family emits, with what it measures.
pub const METRICS: &[(&str, &str)] = &[
    (
        CPU_USER,
        "percent of CPU time in user mode, nice included (per core and total)",
    ),
    (
        CPU_SYSTEM,
        "percent of CPU time in kernel mode, irq and softirq included",
    ),
    (CPU_IOWAIT, "percent of CPU time idle waiting for I/O"),
    (CPU_IDLE, "percent of CPU time idle"),
    (CPU_UTIL, "percent of CPU time busy: 100 - idle - iowait"),
    (CTXT, "context switches since boot"),
    (CTXT_PER_SEC, "context switches per second"),
    (INTR, "interrupts since boot"),
    (INTR_PER_SEC, "interrupts per second"),
    (PROCS_RUNNING, "runnable tasks"),
    (PROCS_BLOCKED, "tasks blocked on I/O"),
    (LOAD1, "load average over 1 minute"),
    (LOAD5, "load average over 5 minutes"),
    (LOAD15, "load average over 15 minutes"),
    ("pgfault", "page faults since boot"),
    ("pgmajfault", "major page faults (needing I/O) since boot"),
    ("pgpgin", "KiB paged in from disk since boot"),
    ("pgpgout", "KiB paged out to disk since boot"),
    ("pswpin", "pages swapped in since boot"),
    ("pswpout", "pages swapped out since boot"),
    ("oom_kill", "processes killed by the OOM killer since boot"),
    ("pgfault_per_sec", "page faults per second"),
    ("pgmajfault_per_sec", "major page faults per second"),
    ("pgpgin_per_sec", "KiB paged in per second"),
    ("pgpgout_per_sec", "KiB paged out per second"),
    ("pswpin_per_sec", "pages swapped in per second"),
    ("pswpout_per_sec", "pages swapped out per second"),
    ("oom_kill_per_sec", "OOM kills per second"),
    (FS_SIZE, "filesystem size, bytes (per mount)"),
    (FS_FREE, "free space including root's reserve, bytes"),
    (FS_AVAIL, "space available to unprivileged users, bytes"),
    (FS_USED, "size - free, bytes"),
    (FS_FILES, "inodes"),
    (FS_FILES_FREE, "free inodes"),
    (MEM_TOTAL, "usable RAM, bytes"),
    (MEM_FREE, "unused RAM, bytes"),
    (
        MEM_AVAILABLE,
        "RAM available without swapping (MemAvailable, else free + buffers + cached), bytes",
    ),
    (MEM_USED, "total - available, bytes"),
    (MEM_CACHED, "page cache, bytes"),
    (MEM_BUFFERS, "block device buffers, bytes"),
    (SWAP_TOTAL, "swap space, bytes"),
    (SWAP_USED, "swap space in use, bytes"),
    ("rx_bytes", "bytes received since boot (per iface)"),
    ("rx_packets", "packets received since boot"),
    ("rx_errors", "receive errors since boot"),
    ("rx_drops", "received packets dropped since boot"),
    ("tx_bytes", "bytes sent since boot"),
    ("tx_packets", "packets sent since boot"),
    ("tx_errors", "send errors since boot"),
    ("tx_drops", "packets dropped on send since boot"),
    ("rx_bytes_per_sec", "bytes received per second"),
    ("rx_packets_per_sec", "packets received per second"),
    ("rx_errors_per_sec", "receive errors per second"),
    ("rx_drops_per_sec", "received packets dropped per second"),
    ("tx_bytes_per_sec", "bytes sent per second"),
    ("tx_packets_per_sec", "packets sent per second"),
    ("tx_errors_per_sec", "send errors per second"),
    ("tx_drops_per_sec", "packets dropped on send per second"),
    ("read_bytes", "bytes read since boot (per dev)"),
    ("write_bytes", "bytes written since boot"),
    ("read_ops", "reads completed since boot"),
    ("write_ops", "writes completed since boot"),
    ("read_bytes_per_sec", "bytes read per second"),
    ("write_bytes_per_sec", "bytes written per second"),
    ("read_ops_per_sec", "reads completed per second"),
    ("write_ops_per_sec", "writes completed per second"),
    (IO_TIME, "milliseconds spent doing I/O since boot"),
    (IO_UTIL, "percent of the period the device was busy"),
    (
        "psi_some_avg10",
        "percent of time some tasks stalled, 10 s average (per resource)",
    ),
    (
        "psi_some_avg60",
        "percent of time some tasks stalled, 60 s average",
    ),
    (
        "psi_some_avg300",
        "percent of time some tasks stalled, 300 s average",
    ),
    (
        "psi_some_total_us",
        "time some tasks stalled since boot, microseconds",
    ),
    (
        "psi_full_avg10",
        "percent of time all tasks stalled, 10 s average",
    ),
    (
        "psi_full_avg60",
        "percent of time all tasks stalled, 60 s average",
    ),
    (
        "psi_full_avg300",
        "percent of time all tasks stalled, 300 s average",
    ),
    (
        "psi_full_total_us",
        "time all tasks stalled since boot, microseconds",
    ),
];

const CPU_USER: &str = "cpu_user";
const CPU_SYSTEM: &str = "cpu_system";
const CPU_IOWAIT: &str = "cpu_iowait";
const CPU_IDLE: &str = "cpu_idle";
const CPU_UTIL: &str = "cpu_util";
const CTXT: &str = "ctxt";
const CTXT_PER_SEC: &str = "ctxt_per_sec";
const INTR: &str = "intr";
const INTR_PER_SEC: &str = "intr_per_sec";
const PROCS_RUNNING: &str = "procs_running";
const PROCS_BLOCKED: &str = "procs_blocked";
const LOAD1: &str = "load1";
const LOAD5: &str = "load5";
const LOAD15: &str = "load15";
const MEM_TOTAL: &str = "mem_total_bytes";
const MEM_FREE: &str = "mem_free_bytes";
const MEM_AVAILABLE: &str = "mem_available_bytes";
const MEM_USED: &str = "mem_used_bytes";
const MEM_CACHED: &str = "mem_cached_bytes";
const MEM_BUFFERS: &str = "mem_buffers_bytes";
const SWAP_TOTAL: &str = "swap_total_bytes";
const SWAP_USED: &str = "swap_used_bytes";
const IO_TIME: &str = "io_time_ms";
const FS_SIZE: &str = "fs_size_bytes";
const FS_FREE: &str = "fs_free_bytes";
const FS_AVAIL: &str = "fs_avail_bytes";
const FS_USED: &str = "fs_used_bytes";
const FS_FILES: &str = "fs_files";
const FS_FILES_FREE: &str = "fs_files_free";

/// `/proc/vmstat` counters used: (counter, rate).
const VMSTAT_COUNTERS: [(&str, &str); 7] = [
    ("pgfault", "pgfault_per_sec"),
    ("pgmajfault", "pgmajfault_per_sec"),
    ("pgpgin", "pgpgin_per_sec"),
    ("pgpgout", "pgpgout_per_sec"),
    ("pswpin", "pswpin_per_sec"),
    ("pswpout", "pswpout_per_sec"),
    ("oom_kill", "oom_kill_per_sec"),
];
const IO_UTIL: &str = "io_util";

/// `/proc/net/dev` counters used, by index: (counter, rate).
const NET_COUNTERS: [(usize, &str, &str); 8] = [
    (0, "rx_bytes", "rx_bytes_per_sec"),
    (1, "rx_packets", "rx_packets_per_sec"),
    (2, "rx_errors", "rx_errors_per_sec"),
    (3, "rx_drops", "rx_drops_per_sec"),
    (8, "tx_bytes", "tx_bytes_per_sec"),
    (9, "tx_packets", "tx_packets_per_sec"),
    (10, "tx_errors", "tx_errors_per_sec"),
    (11, "tx_drops", "tx_drops_per_sec"),
];

/// Disk counters (see [`disk_counters`]): (counter, rate).
const DISK_COUNTERS: [(&str, &str); 4] = [
    ("read_bytes", "read_bytes_per_sec"),
    ("write_bytes", "write_bytes_per_sec"),
    ("read_ops", "read_ops_per_sec"),
    ("write_ops", "write_ops_per_sec"),
];

/// PSI metric names: `[some, full]` × `[avg10, avg60, avg300, total]`.
const PSI_METRICS: [[&str; 4]; 2] = [
    [
        "psi_some_avg10",
        "psi_some_avg60",
        "psi_some_avg300",
        "psi_some_total_us",
    ],
    [
        "psi_full_avg10",
        "psi_full_avg60",
        "psi_full_avg300",
        "psi_full_total_us",
    ],
];

/// PSI resources and their files.
const PSI_RESOURCES: [(&str, &str); 3] = [
    ("cpu", "proc/pressure/cpu"),
    ("memory", "proc/pressure/memory"),
    ("io", "proc/pressure/io"),
];

/// Every file read, relative to the root.
const FILES: [&str; 10] = [
    "proc/stat",
    "proc/meminfo",
    "proc/vmstat",
    "proc/mounts",
    "proc/loadavg",
    "proc/net/dev",
    "proc/diskstats",
    "proc/pressure/cpu",
    "proc/pressure/memory",
    "proc/pressure/io",
];

/// Interfaces not reported.
const SKIPPED_IFACES: [&str; 1] = ["lo"];
/// Block device name prefixes that are not disks (followed by a number): RAM disks, loop
/// devices, floppies, optical drives.
const VIRTUAL_DISKS: [&str; 5] = ["ram", "zram", "loop", "fd", "sr"];

/// Whether the family can run under `root`: it needs at least one of its procfs files.
pub fn status(root: &Path) -> FamilyStatus {
    let (present, missing): (Vec<&str>, Vec<&str>) =
        FILES.iter().partition(|file| root.join(file).is_file());
    let proc_dir = root.join("proc");
    let reason = if present.is_empty() {
        format!("no procfs files under {}", proc_dir.display())
    } else if missing.is_empty() {
        format!("reads {}", proc_dir.display())
    } else {
        format!(
            "reads {}; missing: {}",
            proc_dir.display(),
            missing.join(", ")
        )
    };
    FamilyStatus {
        name: FAMILY.to_owned(),
        available: !present.is_empty(),
        reason,
    }
}

/// One procfs file; the first failed read logs one WARN and disables it for good (procfs
/// files do not come back).
#[derive(Debug)]
struct Source {
    path: PathBuf,
    enabled: bool,
}

impl Source {
    fn new(root: &Path, relative: &str) -> Self {
        Self {
            path: root.join(relative),
            enabled: true,
        }
    }

    fn read(&mut self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Some(text),
            Err(error) => {
                warn!(path = %self.path.display(), %error, "Cannot read procfs file; its metrics are disabled.");
                self.enabled = false;
                None
            }
        }
    }
}

/// Counters of one part at its previous read.
#[derive(Debug)]
struct Previous<K, V> {
    time_ns: i64,
    values: HashMap<K, V>,
}

impl<K, V> Default for Previous<K, V> {
    fn default() -> Self {
        Self {
            time_ns: 0,
            values: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V> Previous<K, V> {
    /// Seconds since the previous read (None on the first read), and replaces the stored
    /// values by `values` after handing the old ones out.
    fn advance(&mut self, now_ns: i64, values: HashMap<K, V>) -> (Option<f64>, HashMap<K, V>) {
        let dt = (!self.values.is_empty() && now_ns > self.time_ns)
            .then(|| (now_ns - self.time_ns) as f64 / 1e9);
        self.time_ns = now_ns;
        (dt, std::mem::replace(&mut self.values, values))
    }
}

/// Per-second rate of a counter; None if it went backwards or no time passed.
fn rate(new: u64, old: u64, dt_secs: f64) -> Option<f64> {
    (new >= old && dt_secs > 0.0).then(|| (new - old) as f64 / dt_secs)
}

/// The procfs collector: one instance per node, keeping the previous counters for rates.
#[derive(Debug)]
pub struct LinuxCollector {
    /// `org`, `cluster`, `node`, `plugin`, `chnl`.
    base: Vec<(String, String)>,
    stat: Source,
    meminfo: Source,
    loadavg: Source,
    net_dev: Source,
    diskstats: Source,
    vmstat: Source,
    mounts: Source,
    root: PathBuf,
    statvfs: StatWorker,
    pressure: Vec<(&'static str, Source)>,
    /// Keyed by core number, `None` for the total.
    prev_cpu: Previous<Option<u32>, CpuTimes>,
    /// `ctxt`, `intr`.
    prev_events: Previous<&'static str, u64>,
    prev_net: Previous<String, [u64; 16]>,
    prev_disk: Previous<String, [u64; 5]>,
    prev_vmstat: Previous<&'static str, u64>,
}

impl LinuxCollector {
    /// A collector reading `<root>/proc/...`, tagging samples with `tags`.
    pub fn new(root: &Path, tags: &NodeTags) -> Self {
        Self::with_statvfs(root, tags, fs::statvfs, Duration::from_secs(1))
    }

    /// As [`new`](Self::new), measuring filesystems with `stat`, waiting at most `timeout`
    /// for each mount.
    pub(crate) fn with_statvfs(
        root: &Path,
        tags: &NodeTags,
        stat: StatFn,
        timeout: Duration,
    ) -> Self {
        Self {
            base: base_tags(tags, FAMILY),
            stat: Source::new(root, "proc/stat"),
            meminfo: Source::new(root, "proc/meminfo"),
            loadavg: Source::new(root, "proc/loadavg"),
            net_dev: Source::new(root, "proc/net/dev"),
            diskstats: Source::new(root, "proc/diskstats"),
            vmstat: Source::new(root, "proc/vmstat"),
            mounts: Source::new(root, "proc/mounts"),
            root: root.to_owned(),
            statvfs: StatWorker::new(stat, timeout),
            pressure: PSI_RESOURCES
                .iter()
                .map(|(resource, file)| (*resource, Source::new(root, file)))
                .collect(),
            prev_cpu: Previous::default(),
            prev_events: Previous::default(),
            prev_net: Previous::default(),
            prev_disk: Previous::default(),
            prev_vmstat: Previous::default(),
        }
    }

    fn collect_vmstat(&mut self, out: &mut Emitter<'_>) {
        let Some(text) = self.vmstat.read() else {
            return;
        };
        let values = parse::vmstat(&text);
        let current: HashMap<&'static str, u64> = VMSTAT_COUNTERS
            .iter()
            .filter_map(|(name, _)| Some((*name, *values.get(name)?)))
            .collect();
        let (dt, old) = self.prev_vmstat.advance(out.now_ns(), current);
        for (counter, per_sec) in VMSTAT_COUNTERS {
            let Some(&new) = self.prev_vmstat.values.get(counter) else {
                continue;
            };
            out.emit(&[], counter, new as f64);
            if let (Some(dt), Some(&old)) = (dt, old.get(counter))
                && let Some(r) = rate(new, old, dt)
            {
                out.emit(&[], per_sec, r);
            }
        }
    }

    fn collect_filesystems(&mut self, out: &mut Emitter<'_>) {
        let Some(text) = self.mounts.read() else {
            return;
        };
        for mount in fs::data_mounts(fs::parse_mounts(&text)) {
            let relative = mount.mount_point.trim_start_matches('/');
            let path = if relative.is_empty() {
                self.root.clone()
            } else {
                self.root.join(relative)
            };
            let stats: FsStats = match self.statvfs.stat(&path) {
                Ok(stats) => stats,
                Err(StatError::Failed(error)) => {
                    tracing::debug!(mount = %path.display(), %error, "statvfs failed.");
                    continue;
                }
                Err(StatError::Stuck | StatError::TimedOut) => continue,
            };
            if stats.size_bytes == 0 {
                // Nothing to measure (e.g. an autofs trigger that slipped through).
                continue;
            }
            let items = [
                ("fstype", mount.fstype.as_str()),
                ("mount", mount.mount_point.as_str()),
            ];
            for (metric, value) in [
                (FS_SIZE, stats.size_bytes),
                (FS_FREE, stats.free_bytes),
                (FS_AVAIL, stats.avail_bytes),
                (FS_USED, stats.size_bytes.saturating_sub(stats.free_bytes)),
                (FS_FILES, stats.files),
                (FS_FILES_FREE, stats.files_free),
            ] {
                out.emit(&items, metric, value as f64);
            }
        }
    }

    fn collect_stat(&mut self, out: &mut Emitter<'_>) {
        let Some(text) = self.stat.read() else { return };
        let stat = parse::stat(&text);

        let cpus: HashMap<Option<u32>, CpuTimes> = stat
            .total
            .map(|t| (None, t))
            .into_iter()
            .chain(stat.cores.iter().map(|(n, t)| (Some(*n), *t)))
            .collect();
        let (dt, old) = self.prev_cpu.advance(out.now_ns(), cpus);
        if dt.is_some() {
            let mut keys: Vec<Option<u32>> = self.prev_cpu.values.keys().copied().collect();
            keys.sort_unstable();
            for key in keys {
                let (Some(new), Some(old)) = (self.prev_cpu.values.get(&key), old.get(&key)) else {
                    continue;
                };
                let Some(percent) = cpu_percent(new, old) else {
                    continue;
                };
                let core = key.map(|n| n.to_string());
                let item = core.as_deref().map(|n| ("core", n));
                for (metric, value) in [CPU_USER, CPU_SYSTEM, CPU_IOWAIT, CPU_IDLE, CPU_UTIL]
                    .into_iter()
                    .zip(percent)
                {
                    out.emit(item.as_slice(), metric, value);
                }
            }
        }

        let events: HashMap<&'static str, u64> = [(CTXT, stat.ctxt), (INTR, stat.intr)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        let (dt, old) = self.prev_events.advance(out.now_ns(), events);
        for (counter, per_sec) in [(CTXT, CTXT_PER_SEC), (INTR, INTR_PER_SEC)] {
            let Some(&new) = self.prev_events.values.get(counter) else {
                continue;
            };
            out.emit(&[], counter, new as f64);
            if let (Some(dt), Some(&old)) = (dt, old.get(counter))
                && let Some(r) = rate(new, old, dt)
            {
                out.emit(&[], per_sec, r);
            }
        }
        for (metric, value) in [
            (PROCS_RUNNING, stat.procs_running),
            (PROCS_BLOCKED, stat.procs_blocked),
        ] {
            if let Some(value) = value {
                out.emit(&[], metric, value as f64);
            }
        }
    }

    fn collect_meminfo(&mut self, out: &mut Emitter<'_>) {
        let Some(text) = self.meminfo.read() else {
            return;
        };
        let mem = parse::meminfo(&text);
        let get = |key: &str| mem.get(key).copied();
        let Some(total) = get("MemTotal") else { return };
        let free = get("MemFree");
        let buffers = get("Buffers");
        let cached = get("Cached");
        // Kernels before 3.14 have no MemAvailable: estimate it as `free` did then.
        let available = get("MemAvailable").or_else(|| Some(free? + buffers? + cached?));
        let swap_total = get("SwapTotal");
        let swap_used = swap_total
            .zip(get("SwapFree"))
            .map(|(t, f)| t.saturating_sub(f));
        for (metric, value) in [
            (MEM_TOTAL, Some(total)),
            (MEM_FREE, free),
            (MEM_AVAILABLE, available),
            (MEM_USED, available.map(|a| total.saturating_sub(a))),
            (MEM_CACHED, cached),
            (MEM_BUFFERS, buffers),
            (SWAP_TOTAL, swap_total),
            (SWAP_USED, swap_used),
        ] {
            if let Some(value) = value {
                out.emit(&[], metric, value as f64);
            }
        }
    }

    fn collect_loadavg(&mut self, out: &mut Emitter<'_>) {
        let Some(text) = self.loadavg.read() else {
            return;
        };
        if let Some(loads) = parse::loadavg(&text) {
            for (metric, value) in [LOAD1, LOAD5, LOAD15].into_iter().zip(loads) {
                out.emit(&[], metric, value);
            }
        }
    }

    fn collect_net(&mut self, out: &mut Emitter<'_>) {
        let Some(text) = self.net_dev.read() else {
            return;
        };
        let devs: Vec<parse::NetDev> = parse::net_dev(&text)
            .into_iter()
            .filter(|dev| !SKIPPED_IFACES.contains(&dev.name.as_str()))
            .collect();
        let current = devs
            .iter()
            .map(|dev| (dev.name.clone(), dev.counters))
            .collect();
        let (dt, old) = self.prev_net.advance(out.now_ns(), current);
        for dev in &devs {
            let item = Some(("iface", dev.name.as_str()));
            let old = old.get(&dev.name);
            for (index, counter, per_sec) in NET_COUNTERS {
                let new = dev.counters[index];
                out.emit(item.as_slice(), counter, new as f64);
                if let (Some(dt), Some(old)) = (dt, old)
                    && let Some(r) = rate(new, old[index], dt)
                {
                    out.emit(item.as_slice(), per_sec, r);
                }
            }
        }
    }

    fn collect_disks(&mut self, out: &mut Emitter<'_>) {
        let Some(text) = self.diskstats.read() else {
            return;
        };
        let all = parse::diskstats(&text);
        let names: HashSet<&str> = all.iter().map(|d| d.name.as_str()).collect();
        let disks: Vec<(&str, [u64; 5])> = all
            .iter()
            .filter(|d| is_whole_disk(&d.name, &names))
            .map(|d| (d.name.as_str(), disk_counters(d)))
            .collect();
        let current = disks.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
        let (dt, old) = self.prev_disk.advance(out.now_ns(), current);
        for (name, counters) in disks {
            let item = Some(("dev", name));
            let old = old.get(name);
            for (i, (counter, per_sec)) in DISK_COUNTERS.into_iter().enumerate() {
                out.emit(item.as_slice(), counter, counters[i] as f64);
                if let (Some(dt), Some(old)) = (dt, old)
                    && let Some(r) = rate(counters[i], old[i], dt)
                {
                    out.emit(item.as_slice(), per_sec, r);
                }
            }
            out.emit(item.as_slice(), IO_TIME, counters[4] as f64);
            if let (Some(dt), Some(old)) = (dt, old)
                && let Some(ms_per_sec) = rate(counters[4], old[4], dt)
            {
                out.emit(item.as_slice(), IO_UTIL, (ms_per_sec / 10.0).min(100.0));
            }
        }
    }

    fn collect_pressure(&mut self, out: &mut Emitter<'_>) {
        for (resource, source) in &mut self.pressure {
            let Some(text) = source.read() else { continue };
            let (some, full) = parse::pressure(&text);
            let item = Some(("resource", *resource));
            for (names, line) in PSI_METRICS.iter().zip([some, full]) {
                let Some(line) = line else { continue };
                for (name, value) in names.iter().zip(line.avg) {
                    out.emit(item.as_slice(), name, value);
                }
                out.emit(item.as_slice(), names[3], line.total_us as f64);
            }
        }
    }
}

impl Collector for LinuxCollector {
    fn name(&self) -> &'static str {
        FAMILY
    }

    fn collect(&mut self, now_ns: i64, out: &mut Vec<Sample>) {
        let base = std::mem::take(&mut self.base);
        let mut emitter = Emitter::new(&base, now_ns, out);
        self.collect_stat(&mut emitter);
        self.collect_meminfo(&mut emitter);
        self.collect_vmstat(&mut emitter);
        self.collect_loadavg(&mut emitter);
        self.collect_net(&mut emitter);
        self.collect_disks(&mut emitter);
        self.collect_pressure(&mut emitter);
        self.collect_filesystems(&mut emitter);
        self.base = base;
    }
}

/// `[user, system, iowait, idle, util]` in percent between two reads; None if the counters
/// went backwards overall (reset) or no tick passed. A single field that went backwards
/// (iowait can, on some kernels) counts as zero.
fn cpu_percent(new: &CpuTimes, old: &CpuTimes) -> Option<[f64; 5]> {
    if new.iter().sum::<u64>() < old.iter().sum::<u64>() {
        return None;
    }
    let mut delta = [0u64; 8];
    for (d, (n, o)) in delta.iter_mut().zip(new.iter().zip(old)) {
        *d = n.saturating_sub(*o);
    }
    let total = delta.iter().sum::<u64>();
    if total == 0 {
        return None;
    }
    let pct = |ticks: u64| ticks as f64 * 100.0 / total as f64;
    let user = pct(delta[cpu::USER] + delta[cpu::NICE]);
    let system = pct(delta[cpu::SYSTEM] + delta[cpu::IRQ] + delta[cpu::SOFTIRQ]);
    let iowait = pct(delta[cpu::IOWAIT]);
    let idle = pct(delta[cpu::IDLE]);
    Some([user, system, iowait, idle, (100.0 - idle - iowait).max(0.0)])
}

/// `[read_bytes, write_bytes, read_ops, write_ops, io_time_ms]`.
fn disk_counters(disk: &parse::DiskStat) -> [u64; 5] {
    [
        disk.sectors_read.saturating_mul(512),
        disk.sectors_written.saturating_mul(512),
        disk.reads,
        disk.writes,
        disk.io_ms,
    ]
}

/// False for RAM disks, loop devices, floppies and optical drives, and for partitions: a
/// name that extends another listed device's name by digits (`sda1`) or by `p` and digits
/// (`nvme0n1p1`, `mmcblk0p2`).
fn is_whole_disk(name: &str, all: &HashSet<&str>) -> bool {
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if VIRTUAL_DISKS.iter().any(|prefix| numbered(prefix)) {
        return false;
    }
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == name.len() {
        return true;
    }
    let parent_listed =
        all.contains(stem) || stem.strip_suffix('p').is_some_and(|p| all.contains(p));
    !parent_listed
}
