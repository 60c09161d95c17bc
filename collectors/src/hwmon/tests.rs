//! The `hwmon` family on three machines' layouts: node_exporter's two-socket Intel host
//! (`coretemp`), an AMD EPYC 9224 server (`k10temp`) and an AMD Ryzen desktop with the
//! out-of-tree `zenpower` driver (see each fixture's README).

use super::*;
use crate::testutil::{assert_close, copy_fixture, fixture, tags, value, write};

const T0: i64 = 1_700_000_000_000_000_000;

fn collect(root: &Path) -> Vec<Sample> {
    let mut out = Vec::new();
    HwmonCollector::new(root, &tags()).collect(T0, &mut out);
    out
}

/// As found on node_exporter's Intel fixture host: `coretemp.0` and `coretemp.1`, each
/// with a package sensor and four cores.
#[test]
fn intel_coretemp_per_core_and_package() {
    let root = fixture("x86-node-exporter");
    let samples = collect(&root);
    assert_eq!(samples.len(), 10);
    let package = [("device", "coretemp.0"), ("sensor", "Physical id 0")];
    assert_close(value(&samples, "temp_c", &package), 55.0);
    let core2 = [("device", "coretemp.0"), ("core", "2"), ("socket", "0")];
    assert_close(value(&samples, "temp_c", &core2), 53.0);
    assert_close(
        value(
            &samples,
            "temp_c",
            &[("device", "coretemp.1"), ("core", "3")],
        ),
        50.0,
    );
    let sample = samples
        .iter()
        .find(|s| s.tag("device") == Some("coretemp.0") && s.tag("core") == Some("0"))
        .expect("core 0");
    assert_eq!(
        crate::publisher::sample_topic(sample),
        "org/acme/cluster/c1/node/n1/plugin/hwmon/chnl/data/chip/coretemp/core/0/device/coretemp.0/sensor/Core%200/socket/0/temp_c"
    );
    assert_eq!(status(&root).reason, "reads 10 sensors of coretemp");
}

/// As found on an AMD EPYC 9224 (Zen 4) server: `Tctl` and four CCD temperatures, no `Tdie`.
#[test]
fn amd_epyc_k10temp() {
    let samples = collect(&fixture("x86-amd-epyc9224"));
    let temp = |sensor: &str| {
        value(
            &samples,
            "temp_c",
            &[("chip", "k10temp"), ("sensor", sensor)],
        )
    };
    assert_close(temp("Tctl"), 34.8);
    assert_close(temp("Tccd1"), 29.4);
    assert_close(temp("Tccd2"), 29.0);
    assert_close(temp("Tccd3"), 28.9);
    assert_close(temp("Tccd4"), 29.6);
    assert_eq!(samples.len(), 5);
    assert!(
        samples
            .iter()
            .all(|s| s.tag("device") == Some("0000:00:18.3"))
    );
}

/// As found on an AMD Ryzen desktop with `zenpower`: SVI2 voltages, currents and power
/// next to the temperatures, each in its own unit.
#[test]
fn amd_ryzen_zenpower_units() {
    let samples = collect(&fixture("x86-amd-ryzen-zenpower"));
    let get = |metric: &str, sensor: &str| value(&samples, metric, &[("sensor", sensor)]);
    assert_close(get("temp_c", "Tdie"), 43.0);
    assert_close(get("temp_c", "Tccd1"), 42.25);
    assert_close(get("in_v", "SVI2_Core"), 1.257);
    assert_close(get("in_v", "SVI2_SoC"), 1.188);
    assert_close(get("curr_a", "SVI2_C_Core"), 15.152);
    assert_close(get("curr_a", "SVI2_C_SoC"), 13.537);
    assert_close(get("power_w", "SVI2_P_Core"), 15.646);
    assert_close(get("power_w", "SVI2_P_SoC"), 16.082);
    // temp1_max is a limit, not a reading.
    assert_eq!(samples.len(), 9);
}

#[test]
fn unlabelled_broken_and_skipped_sensors() {
    let copy = copy_fixture("x86-amd-ryzen-zenpower");
    let root = copy.path();
    let chip = "sys/class/hwmon/hwmon3";
    std::fs::remove_file(root.join(chip).join("temp3_label")).expect("rm label");
    write(root, &format!("{chip}/curr2_input"), "not a number\n");
    write(root, &format!("{chip}/power3_average"), "2500000\n");
    let samples = collect(root);
    assert_close(value(&samples, "temp_c", &[("sensor", "temp3")]), 42.25);
    assert_eq!(value(&samples, "curr_a", &[("sensor", "SVI2_C_SoC")]), None);
    assert_close(value(&samples, "power_w", &[("sensor", "power3")]), 2.5);

    // INA3221 chips belong to the jetson family.
    write(root, &format!("{chip}/name"), "ina3221\n");
    assert!(collect(root).is_empty());
    assert!(!status(root).available);
}
