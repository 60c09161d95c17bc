//! The `rapl` family on node_exporter's powercap fixture (an Intel host with a package
//! zone and its `core` sub-zone; see `tests/fixtures/x86-node-exporter/README.md`).

use super::*;
use crate::testutil::{assert_close, copy_fixture, fixture, tags, value, write};

const T0: i64 = 1_700_000_000_000_000_000;
const T1: i64 = T0 + 2_000_000_000;
const ZONE0: &str = "sys/class/powercap/intel-rapl:0";
const CORE0: &str = "sys/class/powercap/intel-rapl:0:0";

fn collect(collector: &mut RaplCollector, now: i64) -> Vec<Sample> {
    let mut out = Vec::new();
    collector.collect(now, &mut out);
    out
}

/// As found on node_exporter's Intel fixture host: `package-0` and its `core`.
#[test]
fn intel_package_and_core_zones() {
    let root = fixture("x86-node-exporter");
    let found = zones(&root);
    let summary: Vec<(&str, Option<&str>, Option<u64>)> = found
        .iter()
        .map(|z| (z.domain.as_str(), z.socket.as_deref(), z.max_energy_uj))
        .collect();
    assert_eq!(
        summary,
        [
            ("package", Some("0"), Some(262_143_328_850)),
            ("core", Some("0"), Some(262_143_328_850)),
        ]
    );
    let status = status(&root);
    assert!(status.available, "{}", status.reason);
    assert_eq!(status.reason, "reads 2 zones: package/0, core/0");

    let samples = collect(&mut RaplCollector::new(&root, &tags()), T0);
    let package = [("domain", "package"), ("socket", "0")];
    let core = [("domain", "core"), ("socket", "0")];
    // energy_uj: 240422366267 and 118821284256 µJ.
    assert_close(value(&samples, ENERGY, &package), 240_422.366_267);
    assert_close(value(&samples, ENERGY, &core), 118_821.284_256);
    // constraint_0_power_limit_uw: 4090000000 and 0 µW.
    assert_close(value(&samples, POWER_LIMIT, &package), 4090.0);
    assert_close(value(&samples, POWER_LIMIT, &core), 0.0);
    // One reading: no power yet.
    assert_eq!(value(&samples, POWER, &package), None);
    assert_eq!(
        crate::publisher::sample_topic(&samples[0]),
        "org/acme/cluster/c1/node/n1/plugin/rapl/chnl/data/domain/package/socket/0/power_limit_w"
    );
}

/// Power from energy deltas, the core counter wrapping at `max_energy_range_uj`.
#[test]
fn watts_from_energy_deltas_across_a_wrap() {
    let copy = copy_fixture("x86-node-exporter");
    let root = copy.path();
    // The core counter 328850 µJ below its wrap point.
    write(root, &format!("{CORE0}/energy_uj"), "262143000000\n");
    let mut collector = RaplCollector::new(root, &tags());
    collect(&mut collector, T0);
    // Two seconds later: package +20 J; core wrapped and is at 1671150 µJ (2 J in all).
    write(root, &format!("{ZONE0}/energy_uj"), "240442366267\n");
    write(root, &format!("{CORE0}/energy_uj"), "1671150\n");
    let samples = collect(&mut collector, T1);
    assert_close(value(&samples, POWER, &[("domain", "package")]), 10.0);
    assert_close(value(&samples, POWER, &[("domain", "core")]), 1.0);
    assert_close(value(&samples, ENERGY, &[("domain", "core")]), 1.671_15);

    // A RAPL counter only goes backwards by wrapping (it resets at boot, and so does the
    // collector): any decrease is read as a wrap.
    write(root, &format!("{ZONE0}/energy_uj"), "100\n");
    let samples = collect(&mut collector, T1 + 2_000_000_000);
    let watts = value(&samples, POWER, &[("domain", "package")]).expect("power");
    assert_close(
        Some(watts),
        (262_143_328_850.0 - 240_442_366_267.0 + 100.0) / 1e6 / 2.0,
    );
}

#[test]
fn counter_delta_edge_cases() {
    assert_eq!(counter_delta(10, 4, None), Some(6));
    assert_eq!(counter_delta(4, 10, None), None);
    assert_eq!(counter_delta(4, 10, Some(12)), Some(6));
    // Above the wrap point: not this counter any more.
    assert_eq!(counter_delta(4, 13, Some(12)), None);
    assert_eq!(counter_delta(0, 0, Some(0)), Some(0));
}

/// Since Linux 5.10 `energy_uj` is root-only: zones visible, counters not.
#[test]
fn unreadable_counters_turn_the_family_off() {
    let copy = copy_fixture("x86-node-exporter");
    let root = copy.path();
    std::fs::remove_file(root.join(ZONE0).join("energy_uj")).expect("rm");
    std::fs::remove_file(root.join(CORE0).join("energy_uj")).expect("rm");
    let status = status(root);
    assert!(!status.available);
    assert_eq!(
        status.reason,
        "2 RAPL zones but energy_uj is unreadable (root only since Linux 5.10)"
    );
    // Garbage in a counter never panics and yields no sample.
    write(root, &format!("{ZONE0}/energy_uj"), "12x\n");
    let samples = collect(&mut RaplCollector::new(root, &tags()), T0);
    assert_eq!(value(&samples, ENERGY, &[("domain", "package")]), None);
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(status_reason_starts(
        &super::status(empty.path()),
        "no RAPL zones"
    ));
}

fn status_reason_starts(status: &FamilyStatus, prefix: &str) -> bool {
    !status.available && status.reason.starts_with(prefix)
}
