//! The `cpufreq` family on two machines: node_exporter's Intel host (`intel_pstate`
//! frequencies and thermal throttle counts) and the Firecracker VM these tests were written
//! on (the `haltpoll` cpuidle driver: `POLL` and `haltpoll idle` states).

use super::*;
use crate::testutil::{assert_close, copy_fixture, fixture, tags, value, write};

const T0: i64 = 1_700_000_000_000_000_000;
/// Two seconds after [`T0`].
const T1: i64 = T0 + 2_000_000_000;

fn collect(collector: &mut CpufreqCollector, now: i64) -> Vec<Sample> {
    let mut out = Vec::new();
    collector.collect(now, &mut out);
    out
}

/// As found on node_exporter's Intel host: four cores under `intel_pstate`.
#[test]
fn intel_pstate_frequencies_and_throttling() {
    let root = fixture("x86-node-exporter");
    let samples = collect(&mut CpufreqCollector::new(&root, &tags()), T0);
    // scaling_cur_freq 1699981 kHz on cpu0, 8000 kHz on cpu2.
    assert_close(
        value(&samples, "freq_hz", &[("core", "0")]),
        1_699_981_000.0,
    );
    assert_close(value(&samples, "freq_hz", &[("core", "2")]), 8_000_000.0);
    assert_close(
        value(&samples, "freq_min_hz", &[("core", "0")]),
        800_000_000.0,
    );
    assert_close(
        value(&samples, "freq_max_hz", &[("core", "3")]),
        4_200_000_000.0,
    );
    assert_close(
        value(&samples, "core_throttle_count", &[("core", "0")]),
        5.0,
    );
    assert_close(
        value(&samples, "package_throttle_count", &[("core", "2")]),
        6.0,
    );
    assert!(samples.iter().all(|s| !s.metric.starts_with("cstate")));
    assert_eq!(
        status(&root).reason,
        "reads 4 cores' cpufreq, 0 cores' cpuidle"
    );
}

/// As captured on a Firecracker VM: C-state residency from `time` deltas.
#[test]
fn firecracker_haltpoll_residency() {
    let copy = copy_fixture("x86-firecracker-vm");
    let root = copy.path();
    let mut collector = CpufreqCollector::new(root, &tags());
    let first = collect(&mut collector, T0);
    let halt0 = [("core", "0"), ("state", "haltpoll idle")];
    assert_close(value(&first, "cstate_time_us", &halt0), 992_395_863.0);
    assert_close(value(&first, "cstate_usage", &halt0), 80_188.0);
    assert_eq!(value(&first, "cstate_residency", &halt0), None);

    // Two seconds later: cpu0 idle 1.5 s of them, cpu1's counter went backwards.
    let state = |cpu: u32| format!("sys/devices/system/cpu/cpu{cpu}/cpuidle/state1/time");
    write(root, &state(0), "993895863\n");
    write(root, &state(1), "5\n");
    let second = collect(&mut collector, T1);
    assert_close(value(&second, "cstate_residency", &halt0), 75.0);
    assert_close(
        value(
            &second,
            "cstate_residency",
            &[("core", "0"), ("state", "POLL")],
        ),
        0.0,
    );
    assert_eq!(
        value(
            &second,
            "cstate_residency",
            &[("core", "1"), ("state", "haltpoll idle")]
        ),
        None
    );
    assert_eq!(
        status(root).reason,
        "reads 0 cores' cpufreq, 2 cores' cpuidle"
    );
}

#[test]
fn nothing_to_read() {
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(!status(empty.path()).available);
    assert!(collect(&mut CpufreqCollector::new(empty.path(), &tags()), T0).is_empty());
}
