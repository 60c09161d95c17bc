//! Configs, family listing, node naming and the run loop's start and stop.

use std::path::Path;

use super::*;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linux-node-exporter")
}

#[test]
fn defaults() {
    let c = CollectorConfig::default();
    assert_eq!(
        (c.mqtt.broker.as_str(), c.org.as_str(), c.cluster.as_str()),
        ("127.0.0.1:1883", "exawatch", "local")
    );
    assert_eq!(c.node, None);
    assert_eq!(c.period_secs, 2.0);
    assert_eq!(c.root, PathBuf::from("/"));
    assert_eq!((c.offline_buffer_messages, c.qos), (100_000, 0));
    let s = SimulateConfig::default();
    assert_eq!(
        (
            s.org.as_str(),
            s.cluster.as_str(),
            s.nodes,
            s.period_secs,
            s.seed
        ),
        ("acme", "sim", 0, 2.0, 42)
    );
}

#[test]
fn node_name_prefers_config_then_root_procfs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kernel = dir.path().join("proc/sys/kernel");
    std::fs::create_dir_all(&kernel).expect("mkdir");
    std::fs::write(kernel.join("hostname"), "cn042\n").expect("write hostname");
    let mut config = CollectorConfig {
        root: dir.path().to_owned(),
        ..CollectorConfig::default()
    };
    assert_eq!(config.node_name(), "cn042");
    config.node = Some(" login1 ".into());
    assert_eq!(config.node_name(), "login1");
    config.node = Some(String::new());
    assert_eq!(config.node_name(), "cn042");
    // Without a hostname under the root, some name is still found.
    config.root = fixture_root();
    assert!(!config.node_name().is_empty());
}

#[test]
fn list_reports_every_family_with_a_reason() {
    let mut config = CollectorConfig {
        root: fixture_root(),
        ..CollectorConfig::default()
    };
    let families = list(&config);
    let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "linux", "perf", "cpufreq", "rapl", "hwmon", "thermal", "jetson", "nvidia", "ipmi",
            "slurm"
        ]
    );
    assert!(families[0].available, "{}", families[0].reason);
    for family in &families {
        assert!(!family.reason.is_empty(), "{} has no reason", family.name);
    }
    // The procfs-only fixture has no sysfs: the sysfs families say so.
    let rapl = &families[3];
    assert!(
        !rapl.available && rapl.reason.starts_with("no RAPL zones"),
        "{}",
        rapl.reason
    );
    config.linux.enabled = false;
    let linux = &list(&config)[0];
    assert!(!linux.available);
    assert!(
        linux.reason.starts_with("disabled in the config"),
        "{}",
        linux.reason
    );
}

#[test]
fn family_sections_default_to_the_collector_period() {
    let c = CollectorConfig::default();
    assert_eq!(c.linux.period_secs, None);
    assert_eq!(c.rapl, FamilyConfig::default());
    assert_eq!(c.hwmon.period_secs, Some(5.0));
    assert_eq!(c.ipmi.period_secs, Some(10.0));
    assert_eq!(c.slurm.period_secs, Some(10.0));
    assert_eq!(c.nvidia.library, "libnvidia-ml.so.1");
    for family in FAMILIES {
        let (enabled, period) = (family.settings)(&c);
        let period = period.unwrap_or(c.period_secs);
        assert!(enabled, "{}", family.name);
        assert!((1.0..=10.0).contains(&period), "{} {period}", family.name);
    }
}

#[tokio::test]
async fn run_refuses_bad_configs() {
    let empty = tempfile::tempdir().expect("temp dir");
    let no_procfs = CollectorConfig {
        root: empty.path().to_owned(),
        ..CollectorConfig::default()
    };
    assert!(matches!(
        run(no_procfs, true, std::future::ready(())).await,
        Err(Error::NoFamily { .. })
    ));
    for period_secs in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let config = CollectorConfig {
            period_secs,
            root: fixture_root(),
            ..CollectorConfig::default()
        };
        assert!(matches!(
            run(config, false, std::future::ready(())).await,
            Err(Error::Period { .. })
        ));
    }
    let config = CollectorConfig {
        mqtt: MqttConnection::anonymous("no port:x"),
        root: fixture_root(),
        ..CollectorConfig::default()
    };
    assert!(matches!(
        run(config, false, std::future::ready(())).await,
        Err(Error::BrokerAddress { .. })
    ));
}

#[tokio::test]
async fn run_and_simulate_stop_on_shutdown() {
    let port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let broker = format!("127.0.0.1:{port}");
    let config = CollectorConfig {
        mqtt: MqttConnection::anonymous(broker.clone()),
        root: fixture_root(),
        node: Some("n1".into()),
        period_secs: 0.05,
        ..CollectorConfig::default()
    };
    let shutdown = tokio::time::sleep(std::time::Duration::from_millis(200));
    let stats = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        run(config, false, shutdown),
    )
    .await
    .expect("run stops")
    .expect("run ok");
    // Nobody listens: nothing published, several periods' samples pending.
    assert_eq!(stats.published, 0);
    assert!(stats.pending > 100, "{stats:?}");

    let config = SimulateConfig {
        mqtt: MqttConnection::anonymous(broker),
        nodes: 3,
        period_secs: 0.05,
        ..SimulateConfig::default()
    };
    let shutdown = tokio::time::sleep(std::time::Duration::from_millis(200));
    let stats = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        simulate(config, shutdown),
    )
    .await
    .expect("simulate stops")
    .expect("simulate ok");
    assert_eq!(stats.published, 0);
    assert!(
        stats.pending >= 3 * simulate::SERIES_PER_NODE as u64,
        "{stats:?}"
    );
}

/// The binary spawns these futures on a multi-threaded runtime.
#[test]
fn run_and_simulate_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let run = run(CollectorConfig::default(), true, std::future::ready(()));
    assert_send(&run);
    let simulate = simulate(SimulateConfig::default(), std::future::ready(()));
    assert_send(&simulate);
}

/// The `[collector]` sections of the repository's `exawatch.example.toml` are the defaults
/// (the binary's test checks the whole file; this one runs without building it).
#[test]
fn example_config_sections_are_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../exawatch.example.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let mut file: toml::Table = toml::from_str(&text).expect("valid TOML");
    let section = file.remove("collector").expect("[collector]");
    let config: CollectorConfig = section.try_into().expect("a collector config");
    assert_eq!(config, CollectorConfig::default());
}
