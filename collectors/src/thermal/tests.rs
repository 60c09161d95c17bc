//! The `thermal` family on node_exporter's fixture: one `cpu-thermal` zone (the SoC zone of
//! an ARM board) and one `Processor` cooling device.

use super::*;
use crate::testutil::{assert_close, copy_fixture, fixture, tags, value, write};

fn collect(root: &Path) -> Vec<Sample> {
    let mut out = Vec::new();
    ThermalCollector::new(root, &tags()).collect(1, &mut out);
    out
}

#[test]
fn zones_and_cooling_devices() {
    let root = fixture("x86-node-exporter");
    let samples = collect(&root);
    assert_close(
        value(
            &samples,
            "temp_c",
            &[("type", "cpu-thermal"), ("zone", "0")],
        ),
        12.376,
    );
    let cdev = [("type", "Processor"), ("cdev", "0")];
    assert_close(value(&samples, "cooling_state", &cdev), 0.0);
    assert_close(value(&samples, "cooling_max_state", &cdev), 3.0);
    assert_eq!(samples.len(), 3);
    assert_eq!(
        status(&root).reason,
        "reads 1 thermal zones, 1 cooling devices"
    );
}

#[test]
fn a_disabled_zone_is_skipped() {
    let copy = copy_fixture("x86-node-exporter");
    write(
        copy.path(),
        "sys/devices/virtual/thermal/thermal_zone0/temp",
        "",
    );
    let samples = collect(copy.path());
    assert_eq!(value(&samples, "temp_c", &[("zone", "0")]), None);
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(!status(empty.path()).available);
}
