//! Pure parsers for the procfs files the `linux` collector reads. Lenient: a malformed line
//! is skipped, the rest of the file still counts.

use std::collections::HashMap;

/// `/proc/stat` CPU times in `USER_HZ` ticks: user, nice, system, idle, iowait, irq, softirq,
/// steal. `guest` and `guest_nice` are left out: the kernel already counts them in `user` and
/// `nice`.
pub(crate) type CpuTimes = [u64; 8];

/// Indexes into [`CpuTimes`].
pub(crate) mod cpu {
    pub(crate) const USER: usize = 0;
    pub(crate) const NICE: usize = 1;
    pub(crate) const SYSTEM: usize = 2;
    pub(crate) const IDLE: usize = 3;
    pub(crate) const IOWAIT: usize = 4;
    pub(crate) const IRQ: usize = 5;
    pub(crate) const SOFTIRQ: usize = 6;
}

/// What the collector uses from `/proc/stat`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Stat {
    /// The `cpu` line: all cores together.
    pub(crate) total: Option<CpuTimes>,
    /// The `cpuN` lines, in file order.
    pub(crate) cores: Vec<(u32, CpuTimes)>,
    /// Context switches since boot.
    pub(crate) ctxt: Option<u64>,
    /// Interrupts since boot (first field of `intr`).
    pub(crate) intr: Option<u64>,
    /// Runnable tasks now.
    pub(crate) procs_running: Option<u64>,
    /// Tasks blocked on I/O now.
    pub(crate) procs_blocked: Option<u64>,
}

pub(crate) fn stat(text: &str) -> Stat {
    let mut stat = Stat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        let first = |mut fields: std::str::SplitAsciiWhitespace<'_>| {
            fields.next().and_then(|v| v.parse::<u64>().ok())
        };
        match key {
            "ctxt" => stat.ctxt = first(fields),
            "intr" => stat.intr = first(fields),
            "procs_running" => stat.procs_running = first(fields),
            "procs_blocked" => stat.procs_blocked = first(fields),
            "cpu" => stat.total = cpu_times(fields),
            _ => {
                if let Some(core) = key.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok())
                    && let Some(times) = cpu_times(fields)
                {
                    stat.cores.push((core, times));
                }
            }
        }
    }
    stat
}

/// Up to eight tick counters; kernels older than 2.6.11 have fewer (missing ones are 0).
fn cpu_times<'a>(fields: impl Iterator<Item = &'a str>) -> Option<CpuTimes> {
    let mut times = [0u64; 8];
    let mut n = 0;
    for (slot, field) in times.iter_mut().zip(fields) {
        *slot = field.parse().ok()?;
        n += 1;
    }
    (n >= 4).then_some(times)
}

/// `/proc/meminfo` as bytes (`kB` values × 1024; unitless values such as `HugePages_Total`
/// as they are).
pub(crate) fn meminfo(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let mut parts = rest.split_ascii_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            let value = match parts.next() {
                Some("kB") => value.checked_mul(1024)?,
                Some(_) => return None,
                None => value,
            };
            Some((key.trim(), value))
        })
        .collect()
}

/// `/proc/vmstat`: `name value` lines.
pub(crate) fn vmstat(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name, value.trim().parse().ok()?))
        })
        .collect()
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub(crate) fn loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// One interface line of `/proc/net/dev`: the 16 counters, receive then transmit (bytes,
/// packets, errs, drop, fifo, frame|colls, compressed, multicast|carrier).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NetDev {
    pub(crate) name: String,
    pub(crate) counters: [u64; 16],
}

/// `/proc/net/dev`. The name ends at the *last* colon: names may contain colons
/// (`ibr10:30`), and the first counter may touch the colon (`eth0:68210035552`).
pub(crate) fn net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.rsplit_once(':')?;
            let mut counters = [0u64; 16];
            let mut n = 0;
            for (slot, field) in counters.iter_mut().zip(rest.split_ascii_whitespace()) {
                *slot = field.parse().ok()?;
                n += 1;
            }
            (n == 16).then(|| NetDev {
                name: name.trim().to_owned(),
                counters,
            })
        })
        .collect()
}

/// One line of `/proc/diskstats`: the counters the collector uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DiskStat {
    pub(crate) name: String,
    /// Reads completed.
    pub(crate) reads: u64,
    /// 512-byte sectors read (always 512, whatever the device's sector size).
    pub(crate) sectors_read: u64,
    /// Writes completed.
    pub(crate) writes: u64,
    /// 512-byte sectors written.
    pub(crate) sectors_written: u64,
    /// Milliseconds spent doing I/O.
    pub(crate) io_ms: u64,
}

/// `/proc/diskstats`: `major minor name` then at least 11 counters (newer kernels add
/// discard and flush counters, which are ignored).
pub(crate) fn diskstats(text: &str) -> Vec<DiskStat> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace().skip(2);
            let name = fields.next()?.to_owned();
            let mut v = [0u64; 11];
            for slot in &mut v {
                *slot = fields.next()?.parse().ok()?;
            }
            Some(DiskStat {
                name,
                reads: v[0],
                sectors_read: v[2],
                writes: v[4],
                sectors_written: v[6],
                io_ms: v[9],
            })
        })
        .collect()
}

/// One line of a `/proc/pressure/*` file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pressure {
    /// Percent of time stalled, averaged over 10 s, 60 s, 300 s.
    pub(crate) avg: [f64; 3],
    /// Total stall time in microseconds.
    pub(crate) total_us: u64,
}

/// A `/proc/pressure/{cpu,memory,io}` file: its `some` and `full` lines, when present.
pub(crate) fn pressure(text: &str) -> (Option<Pressure>, Option<Pressure>) {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let (mut avg, mut total_us) = ([None; 3], None);
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => avg[0] = value.parse().ok(),
                "avg60" => avg[1] = value.parse().ok(),
                "avg300" => avg[2] = value.parse().ok(),
                "total" => total_us = value.parse().ok(),
                _ => {}
            }
        }
        if let ([Some(a10), Some(a60), Some(a300)], Some(total_us)) = (avg, total_us) {
            *slot = Some(Pressure {
                avg: [a10, a60, a300],
                total_us,
            });
        }
    }
    (some, full)
}
