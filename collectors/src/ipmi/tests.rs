//! The `ipmi` family: parsing captured `ipmitool` outputs (see
//! `tests/fixtures/ipmi/README.md`), the hosts and credentials files, and out-of-band reads
//! through a fake `ipmitool` script, with a timeout and a bound on BMCs in flight.

use std::time::Instant;

use super::*;
use crate::testutil::{assert_close, fixture, tags, value};

fn capture(name: &str) -> String {
    std::fs::read_to_string(fixture("ipmi").join(name)).expect("fixture")
}

fn summary(readings: &[Reading]) -> Vec<(String, f64, String)> {
    readings
        .iter()
        .map(|r| (r.name.clone(), r.value, r.unit.clone()))
        .collect()
}

/// As found on an IBM System x server: 13 analog sensors among 133 lines.
#[test]
fn ibm_system_x_sdr() {
    let readings = parse(&capture("ibm-system-x.sdr.txt"));
    let expected = [
        ("Ambient Temp", 20.0, "C"),
        ("Altitude", 80.0, "feet"),
        ("Avg Power", 210.0, "W"),
        ("Planar 3.3V", 3.29, "V"),
        ("Planar 5V", 4.9, "V"),
        ("Planar 12V", 12.04, "V"),
        ("Planar VBAT", 3.05, "V"),
        ("Fan 1A Tach", 2610.0, "RPM"),
        ("Fan 1B Tach", 1775.0, "RPM"),
        ("Fan 2A Tach", 2001.0, "RPM"),
        ("Fan 2B Tach", 1275.0, "RPM"),
        ("Fan 3A Tach", 2929.0, "RPM"),
        ("Fan 3B Tach", 2125.0, "RPM"),
    ];
    let expected: Vec<(String, f64, String)> = expected
        .iter()
        .map(|(n, v, u)| ((*n).to_owned(), *v, (*u).to_owned()))
        .collect();
    assert_eq!(summary(&readings), expected);
}

/// `sdr elist` lines: readings with events after a comma, negative margins, tool warnings
/// and discrete sensors in between.
#[test]
fn elist_lines_with_tool_warnings() {
    let readings = parse(&capture("telegraf-elist.txt"));
    let expected = [
        ("Fan1", 5040.0, "RPM"),
        ("Inlet Temp", 25.0, "C"),
        ("Current 1", 7.2, "A"),
        ("Power Supply 1", 110.0, "W"),
        ("DIMM Thrm Mrgn 1", -55.0, "C"),
    ];
    let expected: Vec<(String, f64, String)> = expected
        .iter()
        .map(|(n, v, u)| ((*n).to_owned(), *v, (*u).to_owned()))
        .collect();
    assert_eq!(summary(&readings), expected);
}

/// FreeIPMI's default layout, lines built from ipmi-sensors(8) (no licensed capture found).
#[test]
fn ipmi_sensors_layout() {
    let text = "ID | Name        | Type        | Reading    | Units | Event\n\
                4  | CPU Temp    | Temperature | 41.00      | C     | 'OK'\n\
                9  | FAN1        | Fan         | 3500.00    | RPM   | 'OK'\n\
                12 | PS1 Status  | Power Supply| N/A        | N/A   | 'Presence detected'\n\
                17 | 12V         | Voltage     | 12.19      | V     | 'OK'\n";
    let readings = parse(text);
    assert_eq!(
        summary(&readings),
        [
            ("CPU Temp".to_owned(), 41.0, "C".to_owned()),
            ("FAN1".to_owned(), 3500.0, "RPM".to_owned()),
            ("12V".to_owned(), 12.19, "V".to_owned()),
        ]
    );
}

#[test]
fn garbage_never_panics() {
    for text in [
        "",
        "|||",
        "a | b | c",
        "x | nan Volts | ok",
        "| 1 Volts | ok",
        "\u{0}|\u{1}|",
    ] {
        assert!(parse(text).is_empty(), "{text:?}");
    }
    assert_eq!(metric_name("PS1 12V OV Fault"), "ps1_12v_ov_fault");
    assert_eq!(metric_name("  CPU1 Temp (°C) "), "cpu1_temp_c");
    assert_eq!(metric_name("---"), "");
}

#[test]
fn hosts_and_credentials_files() {
    let hosts = "# BMC;node;credentials\n10.0.0.11;cn001\n10.0.0.12 ; cn002 ; /etc/exawatch/bmc-cn002\n\nbroken-line\n;cn004\n";
    assert_eq!(
        parse_hosts(hosts),
        [
            Bmc {
                address: "10.0.0.11".into(),
                node: "cn001".into(),
                credentials: None
            },
            Bmc {
                address: "10.0.0.12".into(),
                node: "cn002".into(),
                credentials: Some("/etc/exawatch/bmc-cn002".into())
            },
        ]
    );
    let creds = parse_credentials("username=ADMIN\npassword= s3cret \n").expect("creds");
    assert_eq!(
        (creds.username.as_str(), creds.password.as_str()),
        ("ADMIN", "s3cret")
    );
    assert!(!format!("{creds:?}").contains("s3cret"));
    assert_eq!(parse_credentials("username=ADMIN\n"), None);
}

/// A fake `ipmitool`: answers with the IBM capture for `-H 10.0.0.1`, the elist capture
/// for `-H 10.0.0.2`, hangs for `-H 10.0.0.3`; every call also reports the length of the
/// password it got in `IPMI_PASSWORD` and sleeps 200 ms.
fn fake_ipmitool(dir: &Path) -> PathBuf {
    let script = dir.join("ipmitool");
    let ibm = fixture("ipmi").join("ibm-system-x.sdr.txt");
    let elist = fixture("ipmi").join("telegraf-elist.txt");
    let body = format!(
        "#!/bin/sh\nsleep 0.2\nhost=\"\"\nwhile [ $# -gt 0 ]; do [ \"$1\" = -H ] && host=$2; shift; done\n\
         echo \"Pw Length        | ${{#IPMI_PASSWORD}} Volts        | ok\"\n\
         case $host in\n 10.0.0.1) cat '{}' ;;\n 10.0.0.2) cat '{}' ;;\n 10.0.0.3) exec sleep 30 ;;\n *) echo 'Error: Unable to establish IPMI v2 / RMCP+ session' >&2; exit 1 ;;\nesac\n",
        ibm.display(),
        elist.display()
    );
    std::fs::write(&script, body).expect("write script");
    let mut perms = std::fs::metadata(&script).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");
    script
}

#[test]
fn out_of_band_bmcs_with_timeout_and_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = fake_ipmitool(dir.path());
    let creds = dir.path().join("bmc.cred");
    std::fs::write(&creds, "username=ADMIN\npassword=abcdefgh\n").expect("creds");
    let other = dir.path().join("cn003.cred");
    std::fs::write(&other, "username=root\npassword=xyz\n").expect("creds");
    let hosts = dir.path().join("bmcs");
    std::fs::write(
        &hosts,
        format!(
            "10.0.0.1;cn001\n10.0.0.2;cn002;{}\n10.0.0.3;cn003\n10.0.0.4;cn004\n",
            other.display()
        ),
    )
    .expect("hosts");
    let config = IpmiConfig {
        tool: tool.display().to_string(),
        in_band: false,
        hosts_file: Some(hosts),
        credentials_file: Some(creds),
        max_in_flight: 2,
        timeout_secs: 1.0,
        ..IpmiConfig::default()
    };
    let status = status(&config);
    assert!(status.available, "{}", status.reason);
    assert!(
        status.reason.ends_with("reads 4 BMCs out of band"),
        "{}",
        status.reason
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut collector =
        IpmiCollector::new(&config, &tags(), runtime.handle().clone()).expect("collector");
    let started = Instant::now();
    let mut out = Vec::new();
    collector.collect(1_700_000_000_000_000_000, &mut out);
    let elapsed = started.elapsed();
    // Two at a time: cn001+cn002 (0.2 s), then cn003 (killed at 1 s) with cn004 (fails).
    assert!(
        elapsed >= std::time::Duration::from_millis(1000),
        "{elapsed:?}"
    );
    assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");

    let cn001 = [("node", "cn001"), ("unit", "W")];
    assert_close(value(&out, "avg_power", &cn001), 210.0);
    assert_close(value(&out, "fan_1a_tach", &[("node", "cn001")]), 2610.0);
    assert_close(value(&out, "power_supply_1", &[("node", "cn002")]), 110.0);
    // The password reached the tool through its environment: 8 and 3 characters.
    assert_close(value(&out, "pw_length", &[("node", "cn001")]), 8.0);
    assert_close(value(&out, "pw_length", &[("node", "cn002")]), 3.0);
    assert!(
        out.iter()
            .all(|s| !matches!(s.tag("node"), Some("cn003" | "cn004")))
    );
    assert_eq!(
        out.iter()
            .filter(|s| s.tag("node") == Some("cn001"))
            .count(),
        14
    );
    let sample = out
        .iter()
        .find(|s| s.metric == "ambient_temp")
        .expect("ambient");
    assert_eq!(
        crate::publisher::sample_topic(sample),
        "org/acme/cluster/c1/node/cn001/plugin/ipmi/chnl/data/unit/C/ambient_temp"
    );
}

#[test]
fn duplicate_sensor_names_are_numbered() {
    let text = "Temp             | 0Eh | ok  |  3.1 | 41 degrees C\nTemp             | 0Fh | ok  |  3.2 | 40 degrees C\n";
    let mut out = Vec::new();
    emit_readings(&tags(), "n1", &parse(text), 1, &mut out);
    assert_close(value(&out, "temp", &[]), 41.0);
    assert_close(value(&out, "temp_2", &[]), 40.0);
}

#[test]
fn nothing_to_read_is_off_with_reasons() {
    let config = IpmiConfig {
        tool: "/nonexistent/ipmitool".into(),
        ..IpmiConfig::default()
    };
    let status = status(&config);
    assert_eq!(
        (status.available, status.reason.as_str()),
        (false, "/nonexistent/ipmitool not found")
    );
    let config = IpmiConfig {
        tool: "sh".into(),
        in_band: false,
        ..IpmiConfig::default()
    };
    let status = super::status(&config);
    assert!(!status.available);
    assert_eq!(status.reason, "no hosts_file for out-of-band BMCs");
}
