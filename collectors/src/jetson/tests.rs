//! The `jetson` family on the two INA3221 layouts: Jetson Xavier NX under Jetson Linux 34+
//! (hwmon) and Jetson Nano under Jetson Linux 32 (IIO). Paths and rail names are the
//! boards'; the readings are not captured (see the fixtures' READMEs).

use super::*;
use crate::testutil::{assert_close, fixture, tags, value};

fn collect(root: &Path) -> Vec<Sample> {
    let mut out = Vec::new();
    JetsonCollector::new(root, &tags()).collect(1, &mut out);
    out
}

#[test]
fn xavier_nx_hwmon_rails() {
    let root = fixture("arm-jetson-xavier-nx");
    let samples = collect(&root);
    let rail = |label: &'static str| [("rail", label), ("sensor", "7-0040")];
    assert_close(value(&samples, "voltage_v", &rail("VDD_IN")), 5.016);
    assert_close(value(&samples, "current_a", &rail("VDD_IN")), 1.268);
    // 5016 mV × 1268 mA.
    assert_close(value(&samples, "power_w", &rail("VDD_IN")), 5.016 * 1.268);
    assert_close(
        value(&samples, "power_w", &rail("VDD_CPU_GPU_CV")),
        5.008 * 0.48,
    );
    assert_close(value(&samples, "power_w", &rail("VDD_SOC")), 5.016 * 0.576);
    // Channel 7 (sum of shunt voltages) is not a rail.
    assert_eq!(samples.len(), 9);
    assert_eq!(
        status(&root).reason,
        "reads 3 rails: VDD_IN, VDD_CPU_GPU_CV, VDD_SOC"
    );
}

#[test]
fn nano_iio_rails() {
    let samples = collect(&fixture("arm-jetson-nano"));
    let rail = |label: &'static str| [("rail", label), ("sensor", "6-0040")];
    assert_close(value(&samples, "power_w", &rail("POM_5V_IN")), 2.8);
    assert_close(value(&samples, "current_a", &rail("POM_5V_GPU")), 0.04);
    assert_close(value(&samples, "voltage_v", &rail("POM_5V_CPU")), 5.0);
    assert_eq!(samples.len(), 9);
}

#[test]
fn not_a_jetson() {
    let root = fixture("x86-node-exporter");
    assert!(!status(&root).available);
    assert!(collect(&root).is_empty());
}
