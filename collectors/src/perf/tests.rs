//! The `perf` family's arithmetic on fake counter readings, and what the kernel of the
//! machine running the tests allows.

use super::*;
use crate::testutil::{assert_close, fixture, tags, value};

/// Readings handed out in order, per CPU.
#[derive(Debug)]
struct FakeCounters {
    readings: Vec<(u32, Vec<Reading>)>,
}

impl CounterSource for FakeCounters {
    fn cpus(&self) -> Vec<u32> {
        self.readings.iter().map(|(cpu, _)| *cpu).collect()
    }

    fn read(&mut self, cpu: u32) -> Option<Reading> {
        let (_, queue) = self.readings.iter_mut().find(|(c, _)| *c == cpu)?;
        (!queue.is_empty()).then(|| queue.remove(0))
    }
}

fn reading(
    instructions: u64,
    cycles: u64,
    ref_cycles: Option<u64>,
    enabled: u64,
    running: u64,
) -> Reading {
    Reading {
        instructions,
        cycles,
        ref_cycles,
        time_enabled: enabled,
        time_running: running,
    }
}

const NOMINAL: f64 = 2.0e9;

#[test]
fn ipc_frequency_and_load_from_two_readings() {
    // One second: 3e9 instructions, 1.5e9 cycles at 3 GHz while busy, 1e9 ref cycles at
    // the 2 GHz nominal rate: busy half the time.
    let old = reading(0, 0, Some(0), 0, 0);
    let new = reading(
        3_000_000_000,
        1_500_000_000,
        Some(1_000_000_000),
        1_000_000_000,
        1_000_000_000,
    );
    let m = derive(&old, &new, Some(NOMINAL)).expect("metrics");
    assert_close(Some(m.instr_per_sec), 3e9);
    assert_close(Some(m.cycles_per_sec), 1.5e9);
    assert_close(m.ipc, 2.0);
    assert_close(m.freq_hz, 3e9);
    assert_close(m.load, 50.0);

    // Multiplexed: counting a quarter of the time, counts scale by 4.
    let new = reading(
        750_000_000,
        375_000_000,
        Some(250_000_000),
        1_000_000_000,
        250_000_000,
    );
    let m = derive(&old, &new, Some(NOMINAL)).expect("metrics");
    assert_close(Some(m.instr_per_sec), 3e9);
    assert_close(m.freq_hz, 3e9);
    assert_close(m.load, 50.0);

    // No ref-cycles event (ARM) or no nominal frequency: IPC only.
    let new = reading(3_000, 1_500, None, 1_000, 1_000);
    let m = derive(&reading(0, 0, None, 0, 0), &new, Some(NOMINAL)).expect("metrics");
    assert_close(m.ipc, 2.0);
    assert_eq!((m.freq_hz, m.load), (None, None));

    // Not counted at all, or a counter going backwards: nothing.
    assert_eq!(
        derive(&old, &reading(1, 1, Some(1), 10, 0), Some(NOMINAL)),
        None
    );
    assert_eq!(derive(&new, &old, Some(NOMINAL)), None);
}

#[test]
fn collector_publishes_per_core_after_the_second_reading() {
    let fake = FakeCounters {
        readings: vec![
            (
                0,
                vec![
                    reading(0, 0, Some(0), 0, 0),
                    reading(2_000, 1_000, Some(1_000), 1_000, 1_000),
                ],
            ),
            (1, vec![reading(0, 0, Some(0), 0, 0)]),
        ],
    };
    let mut collector = PerfCollector::new(fake, Some(NOMINAL), &tags());
    let mut out = Vec::new();
    collector.collect(1, &mut out);
    assert!(out.is_empty());
    collector.collect(2, &mut out);
    let core0 = [("core", "0")];
    assert_close(value(&out, "ipc", &core0), 2.0);
    // 1000 reference cycles in 1000 ns at 2 GHz: busy half the time, at the nominal rate.
    assert_close(value(&out, "freq_hz", &core0), NOMINAL);
    assert_close(value(&out, "load", &core0), 50.0);
    assert_close(value(&out, "instr_per_sec", &core0), 2e9);
    // cpu1 could not be read the second time.
    assert_eq!(value(&out, "ipc", &[("core", "1")]), None);
    assert_eq!(out.len(), 6);
}

#[test]
fn cpu_lists_and_nominal_frequency() {
    assert_eq!(parse_cpu_list("0-3,8,10-11\n"), [0, 1, 2, 3, 8, 10, 11]);
    assert_eq!(parse_cpu_list("0"), [0]);
    assert_eq!(parse_cpu_list("5-2,x,"), Vec::<u32>::new());
    assert_eq!(online_cpus(&fixture("x86-node-exporter")), [0, 1, 2, 3]);
    assert_eq!(online_cpus(&fixture("x86-firecracker-vm")), [0, 1]);
    // The node_exporter fixture's cpuinfo is not copied: no nominal frequency there.
    assert_eq!(nominal_hz(&fixture("x86-node-exporter")), None);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
    std::fs::write(
        dir.path().join("proc/cpuinfo"),
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6130 CPU @ 2.10GHz\n",
    )
    .expect("write");
    assert_close(nominal_hz(dir.path()), 2.1e9);
}

/// Whatever this machine is, the status is decided without panicking and explains itself;
/// where counting works, two readings of the real counters give sane numbers.
#[test]
fn this_host_pmu() {
    let status = status(Path::new("/"));
    assert!(!status.reason.is_empty());
    if !status.available {
        assert!(
            status.reason.starts_with("perf_event_open: "),
            "{}",
            status.reason
        );
        return;
    }
    let counters = PerfCounters::open(&[0]).expect("opened");
    let mut collector = PerfCollector::new(counters, None, &tags());
    let mut out = Vec::new();
    collector.collect(1, &mut out);
    std::thread::sleep(std::time::Duration::from_millis(50));
    collector.collect(2, &mut out);
    if let Some(ipc) = value(&out, "ipc", &[("core", "0")]) {
        assert!((0.0..20.0).contains(&ipc), "{ipc}");
    }
}
