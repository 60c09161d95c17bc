//! The `linux` collector against prometheus/node_exporter's procfs fixtures (real hosts'
//! files, see `tests/fixtures/linux-node-exporter/README.md`).

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use exawatch_protocol::{Sample, Value};

use super::*;
use crate::publisher::sample_topic;

const T0: i64 = 1_700_000_000_000_000_000;
/// Two seconds after [`T0`].
const T1: i64 = T0 + 2_000_000_000;
const KIB: f64 = 1024.0;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linux-node-exporter")
}

fn collector(root: &Path) -> LinuxCollector {
    let tags = NodeTags {
        org: "acme".into(),
        cluster: "c1".into(),
        node: "n1".into(),
    };
    LinuxCollector::with_statvfs(root, &tags, fake_statvfs, Duration::from_secs(5))
}

const GIB: u64 = 1 << 30;

/// Stands in for `statvfs`: the fixture's mount points do not exist on the test machine.
/// `/boot` is a 1 GiB filesystem, `/run/user/1000` fails, every other mount (the root is
/// the fixture directory itself) is 10 GiB.
fn fake_statvfs(path: &Path) -> std::io::Result<fs::FsStats> {
    if path.ends_with("boot") {
        return Ok(fs::FsStats {
            size_bytes: GIB,
            free_bytes: GIB / 4,
            avail_bytes: GIB / 8,
            files: 65_536,
            files_free: 65_000,
        });
    }
    if path.ends_with("run/user/1000") {
        return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
    }
    Ok(fs::FsStats {
        size_bytes: 10 * GIB,
        free_bytes: 6 * GIB,
        avail_bytes: 5 * GIB,
        files: 655_360,
        files_free: 600_000,
    })
}

fn collect(collector: &mut LinuxCollector, now_ns: i64) -> Vec<Sample> {
    let mut out = Vec::new();
    collector.collect(now_ns, &mut out);
    out
}

const ITEM_TAGS: [&str; 5] = ["core", "iface", "dev", "resource", "mount"];

/// The value of `metric` for `item` (`None`: the node-level series).
fn value(samples: &[Sample], metric: &str, item: Option<(&str, &str)>) -> Option<f64> {
    let matches = |s: &&Sample| {
        s.metric == metric
            && match item {
                Some((key, name)) => s.tag(key) == Some(name),
                None => ITEM_TAGS.iter().all(|key| s.tag(key).is_none()),
            }
    };
    let found: Vec<&Sample> = samples.iter().filter(matches).collect();
    assert!(found.len() <= 1, "{metric} {item:?} emitted twice");
    found.first().map(|s| match s.value {
        Value::Float(v) => v,
        Value::Text(ref t) => panic!("text value {t:?}"),
    })
}

fn assert_close(actual: Option<f64>, expected: f64, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: no sample"));
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{what}: {actual} != {expected}"
    );
}

/// One expected sample: metric, the `(tag, value)` of its item if it has one, value.
type Expected<'a> = (&'a str, Option<(&'a str, &'a str)>, f64);

/// Each `(metric, item, expected)`: the sample is there, within 1e-9 (relative) of `expected`.
fn assert_values(samples: &[Sample], expected: &[Expected]) {
    for &(metric, item, want) in expected {
        assert_close(
            value(samples, metric, item),
            want,
            &format!("{metric} {item:?}"),
        );
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture");
        }
    }
}

/// Replaces `old` (which must occur) by `new` in `<root>/<file>`.
fn edit(root: &Path, file: &str, old: &str, new: &str) {
    let path = root.join(file);
    let text = std::fs::read_to_string(&path).expect("read fixture copy");
    assert!(text.contains(old), "{file} has no {old:?}");
    std::fs::write(&path, text.replacen(old, new, 1)).expect("write fixture copy");
}

/// A second snapshot two seconds after the fixture, with known deltas and two resets.
fn second_snapshot() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_tree(&fixture_root(), dir.path());
    let root = dir.path();
    // Total and cpu3: user +100, system +50, idle +300, iowait +20 ticks (470 in all).
    edit(
        root,
        "proc/stat",
        "cpu  301854 612 111922 8979004 3552 ",
        "cpu  301954 612 111972 8979304 3572 ",
    );
    edit(
        root,
        "proc/stat",
        "cpu3 47054 102 15683 1113230 533 ",
        "cpu3 47154 102 15733 1113530 553 ",
    );
    // cpu5 went backwards (as after a counter reset): no utilisation for it.
    edit(
        root,
        "proc/stat",
        "cpu5 29271 101 11586 1136270 672 0 30 0 7 6",
        "cpu5 10 0 10 100 0 0 0 0 0 0",
    );
    edit(root, "proc/stat", "ctxt 38014093", "ctxt 38034093");
    // 1000 page faults more, 10 of them major.
    edit(
        root,
        "proc/vmstat",
        "pgfault 2320168809",
        "pgfault 2320169809",
    );
    edit(
        root,
        "proc/vmstat",
        "pgmajfault 507162",
        "pgmajfault 507172",
    );
    // eth0: +2 MB and +100 packets received.
    edit(
        root,
        "proc/net/dev",
        "eth0:68210035552 520993275 ",
        "eth0:68212035552 520993375 ",
    );
    // wlan0's receive bytes wrapped.
    edit(root, "proc/net/dev", "wlan0: 10437182923 ", "wlan0: 1000 ");
    // sda: +1000 reads, +20480 sectors read, +500 ms busy.
    edit(
        root,
        "proc/diskstats",
        "sda 25354637 34367663 1003346126 18492372 28444756 11134226 505697032 63877960 0 9653880 ",
        "sda 25355637 34367663 1003366606 18492372 28444756 11134226 505697032 63877960 0 9654380 ",
    );
    dir
}

#[test]
fn meminfo_in_bytes() {
    let samples = collect(&mut collector(&fixture_root()), T0);
    // No MemAvailable in this kernel: free + buffers + cached.
    let available = (225_472.0 + 22_040.0 + 930_888.0) * KIB;
    assert_values(
        &samples,
        &[
            ("mem_total_bytes", None, 3_742_148.0 * KIB),
            ("mem_free_bytes", None, 225_472.0 * KIB),
            ("mem_cached_bytes", None, 930_888.0 * KIB),
            ("mem_buffers_bytes", None, 22_040.0 * KIB),
            ("mem_available_bytes", None, available),
            ("mem_used_bytes", None, 3_742_148.0 * KIB - available),
            ("swap_total_bytes", None, 4_194_300.0 * KIB),
            ("swap_used_bytes", None, (4_194_300.0 - 3_155_360.0) * KIB),
        ],
    );
}

#[test]
fn first_read_has_counters_but_no_utilisation_or_rates() {
    let samples = collect(&mut collector(&fixture_root()), T0);
    assert_values(
        &samples,
        &[
            ("ctxt", None, 38_014_093.0),
            ("intr", None, 8_885_917.0),
            ("procs_running", None, 2.0),
            ("procs_blocked", None, 0.0),
            ("load1", None, 0.21),
            ("load5", None, 0.37),
            ("load15", None, 0.39),
        ],
    );
    assert!(
        samples.iter().all(|s| !s.metric.starts_with("cpu_")
            && !s.metric.ends_with("_per_sec")
            && s.metric != "io_util"),
        "utilisation or a rate on the first read"
    );
}

#[test]
fn samples_carry_examon_tags() {
    let samples = collect(&mut collector(&fixture_root()), T0);
    let eth0 = samples
        .iter()
        .find(|s| s.metric == "rx_bytes" && s.tag("iface") == Some("eth0"))
        .expect("eth0 rx_bytes");
    assert_eq!(
        sample_topic(eth0),
        "org/acme/cluster/c1/node/n1/plugin/linux/chnl/data/iface/eth0/rx_bytes"
    );
    assert_eq!(eth0.time_ns, T0);
    let load = samples.iter().find(|s| s.metric == "load1").expect("load1");
    assert_eq!(
        sample_topic(load),
        "org/acme/cluster/c1/node/n1/plugin/linux/chnl/data/load1"
    );
}

#[test]
fn net_dev_per_interface() {
    let samples = collect(&mut collector(&fixture_root()), T0);
    let eth0 = Some(("iface", "eth0"));
    assert_values(
        &samples,
        &[
            ("rx_bytes", eth0, 68_210_035_552.0),
            ("rx_packets", eth0, 520_993_275.0),
            ("tx_bytes", eth0, 9_315_587_528.0),
            ("tx_packets", eth0, 43_451_486.0),
            ("rx_errors", eth0, 0.0),
            // A name with a colon, and loopback left out.
            ("tx_bytes", Some(("iface", "ibr10:30")), 0.0),
        ],
    );
    let ifaces: BTreeSet<&str> = samples.iter().filter_map(|s| s.tag("iface")).collect();
    let expected = [
        "docker0",
        "eth0",
        "ibr10:30",
        "lxcbr0",
        "tun0",
        "veth4B09XN",
        "wlan0",
    ];
    assert_eq!(ifaces, expected.into_iter().collect());
}

#[test]
fn diskstats_whole_disks_only() {
    let samples = collect(&mut collector(&fixture_root()), T0);
    let (sda, nvme) = (Some(("dev", "sda")), Some(("dev", "nvme0n1")));
    assert_values(
        &samples,
        &[
            ("read_bytes", sda, 1_003_346_126.0 * 512.0),
            ("write_bytes", sda, 505_697_032.0 * 512.0),
            ("read_ops", sda, 25_354_637.0),
            ("write_ops", sda, 28_444_756.0),
            ("io_time_ms", sda, 9_653_880.0),
            ("read_ops", nvme, 47_114.0),
            ("write_bytes", nvme, 39_451_633.0 * 512.0),
            // sdc has the flush counters of kernels 5.5+.
            ("read_ops", Some(("dev", "sdc")), 126_552.0),
        ],
    );
    let devs: BTreeSet<&str> = samples.iter().filter_map(|s| s.tag("dev")).collect();
    let expected = [
        "dm-0", "dm-1", "dm-2", "dm-3", "dm-4", "dm-5", "mmcblk0", "nvme0n1", "sda", "sdb", "sdc",
        "vda",
    ];
    assert_eq!(devs, expected.into_iter().collect());
}

#[test]
fn pressure_stall_information() {
    let samples = collect(&mut collector(&fixture_root()), T0);
    let (io, cpu) = (Some(("resource", "io")), Some(("resource", "cpu")));
    assert_values(
        &samples,
        &[
            ("psi_some_avg10", io, 0.18),
            ("psi_some_avg60", io, 0.34),
            ("psi_some_avg300", io, 0.10),
            ("psi_some_total_us", io, 159_886_802.0),
            ("psi_full_total_us", io, 159_229_614.0),
            ("psi_some_total_us", cpu, 14_036_781.0),
            ("psi_full_avg10", Some(("resource", "memory")), 0.0),
        ],
    );
    // irq pressure is not one of the three resources read.
    assert!(samples.iter().all(|s| s.tag("resource") != Some("irq")));
}

#[test]
fn utilisation_and_rates_between_two_snapshots() {
    let fixture = fixture_root();
    let mut c = collector(&fixture);
    collect(&mut c, T0);
    let second = second_snapshot();
    // Same collector state, the files now read from the edited copy.
    let mut moved = collector(second.path());
    moved.prev_cpu = std::mem::take(&mut c.prev_cpu);
    moved.prev_events = std::mem::take(&mut c.prev_events);
    moved.prev_net = std::mem::take(&mut c.prev_net);
    moved.prev_disk = std::mem::take(&mut c.prev_disk);
    moved.prev_vmstat = std::mem::take(&mut c.prev_vmstat);
    let samples = collect(&mut moved, T1);
    assert_values(
        &samples,
        &[
            ("pgfault_per_sec", None, 500.0),
            ("pgmajfault_per_sec", None, 5.0),
            ("pswpout_per_sec", None, 0.0),
        ],
    );

    let pct = |ticks: f64| ticks * 100.0 / 470.0;
    for item in [None, Some(("core", "3"))] {
        assert_values(
            &samples,
            &[
                ("cpu_user", item, pct(100.0)),
                ("cpu_system", item, pct(50.0)),
                ("cpu_iowait", item, pct(20.0)),
                ("cpu_idle", item, pct(300.0)),
                ("cpu_util", item, pct(150.0)),
            ],
        );
    }
    // Unchanged counters: no tick passed, so no utilisation; cpu5 went backwards.
    assert_eq!(value(&samples, "cpu_util", Some(("core", "0"))), None);
    assert_eq!(value(&samples, "cpu_util", Some(("core", "5"))), None);
    let (eth0, wlan0) = (Some(("iface", "eth0")), Some(("iface", "wlan0")));
    assert_eq!(
        value(&samples, "rx_bytes_per_sec", wlan0),
        None,
        "wrapped counter"
    );
    let sda = Some(("dev", "sda"));
    assert_values(
        &samples,
        &[
            ("ctxt_per_sec", None, 10_000.0),
            ("intr_per_sec", None, 0.0),
            ("rx_bytes_per_sec", eth0, 1_000_000.0),
            ("rx_packets_per_sec", eth0, 50.0),
            ("tx_bytes_per_sec", eth0, 0.0),
            ("rx_bytes", wlan0, 1000.0),
            ("tx_bytes_per_sec", wlan0, 0.0),
            ("read_ops_per_sec", sda, 500.0),
            ("read_bytes_per_sec", sda, 20_480.0 * 512.0 / 2.0),
            ("write_bytes_per_sec", sda, 0.0),
            ("io_util", sda, 25.0),
        ],
    );

    assert!(
        samples.iter().all(|s| match s.value {
            Value::Float(v) => v.is_finite() && v >= 0.0,
            Value::Text(_) => false,
        }),
        "negative or non-finite value"
    );
}

#[test]
fn every_metric_is_documented_and_emitted() {
    let mut c = collector(&fixture_root());
    let mut samples = collect(&mut c, T0);
    let second = second_snapshot();
    let mut moved = collector(second.path());
    moved.prev_cpu = std::mem::take(&mut c.prev_cpu);
    moved.prev_events = std::mem::take(&mut c.prev_events);
    moved.prev_net = std::mem::take(&mut c.prev_net);
    moved.prev_disk = std::mem::take(&mut c.prev_disk);
    moved.prev_vmstat = std::mem::take(&mut c.prev_vmstat);
    samples.extend(collect(&mut moved, T1));

    let emitted: BTreeSet<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
    let documented: BTreeSet<&str> = METRICS.iter().map(|(name, _)| *name).collect();
    assert_eq!(documented.len(), METRICS.len(), "duplicate in METRICS");
    assert_eq!(emitted, documented);
    for sample in &samples {
        assert_eq!(sample.tag("plugin"), Some("linux"));
        assert_eq!(sample.tag("chnl"), Some("data"));
        assert_eq!(sample.tag("node"), Some("n1"));
    }
}

#[test]
fn missing_files_disable_their_part_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
    std::fs::copy(
        fixture_root().join("proc/meminfo"),
        dir.path().join("proc/meminfo"),
    )
    .expect("copy meminfo");
    let mut c = collector(dir.path());
    for now in [T0, T1] {
        let samples = collect(&mut c, now);
        let metrics: HashSet<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
        assert!(metrics.contains("mem_total_bytes"));
        assert!(!metrics.contains("ctxt") && !metrics.contains("rx_bytes"));
    }
    assert!(c.meminfo.enabled);
    assert!(!c.stat.enabled && !c.net_dev.enabled && !c.diskstats.enabled);

    let partial = status(dir.path());
    assert!(partial.available);
    assert!(
        partial.reason.contains("missing: proc/stat"),
        "{}",
        partial.reason
    );
    let empty = tempfile::tempdir().expect("temp dir");
    assert!(!status(empty.path()).available);
}

#[test]
fn fixture_tree_is_fully_available() {
    let full = status(&fixture_root());
    assert!(full.available);
    assert!(!full.reason.contains("missing"), "{}", full.reason);
}

#[test]
fn partitions_and_virtual_devices_are_not_disks() {
    let names: HashSet<&str> = [
        "sda",
        "sda1",
        "nvme0n1",
        "nvme0n1p1",
        "mmcblk0",
        "mmcblk0p2",
        "md0",
        "dm-0",
        "loop0",
        "ram1",
        "zram0",
        "fd0",
        "sr0",
        "sdaa",
    ]
    .into_iter()
    .collect();
    let disks: BTreeSet<&str> = names
        .iter()
        .copied()
        .filter(|n| is_whole_disk(n, &names))
        .collect();
    let expected = ["dm-0", "md0", "mmcblk0", "nvme0n1", "sda", "sdaa"];
    assert_eq!(disks, expected.into_iter().collect());
}

#[test]
fn cpu_percent_edge_cases() {
    let old = [100, 0, 50, 800, 50, 0, 0, 0];
    // iowait going backwards on its own (a known kernel quirk) counts as zero.
    let new = [200, 0, 100, 900, 40, 0, 0, 0];
    let [user, system, iowait, idle, util] = cpu_percent(&new, &old).expect("percent");
    assert_eq!(
        (user, system, iowait, idle, util),
        (40.0, 20.0, 0.0, 40.0, 60.0)
    );
    assert_eq!(cpu_percent(&old, &old), None);
    assert_eq!(cpu_percent(&[0; 8], &old), None);
}

/// On a Linux host (CI included), the real procfs parses too.
#[test]
fn reads_this_host_procfs() {
    let root = Path::new("/");
    if !root.join("proc/stat").is_file() {
        return;
    }
    let mut c = collector(root);
    collect(&mut c, T0);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let samples = collect(&mut c, T0 + 100_000_000);
    let util = value(&samples, "cpu_util", None).expect("total cpu_util");
    assert!((0.0..=100.0).contains(&util), "cpu_util {util}");
    assert!(value(&samples, "mem_total_bytes", None).expect("MemTotal") > 0.0);
    assert!(value(&samples, "mem_available_bytes", None).is_some());
    assert!(value(&samples, "ctxt_per_sec", None).expect("ctxt rate") > 0.0);
}

#[test]
fn vmstat_counters() {
    let samples = collect(&mut collector(&fixture_root()), T0);
    assert_values(
        &samples,
        &[
            ("pgfault", None, 2_320_168_809.0),
            ("pgmajfault", None, 507_162.0),
            ("pgpgin", None, 7_344_136.0),
            ("pgpgout", None, 1_541_180_581.0),
            ("pswpin", None, 1476.0),
            ("pswpout", None, 35_045.0),
            ("oom_kill", None, 0.0),
        ],
    );
}

/// The mount table of node_exporter's fixture host: pseudo filesystems, /proc, /sys and
/// /dev left out; escaped mount points decoded.
#[test]
fn filesystems_from_the_mount_table() {
    let text = std::fs::read_to_string(fixture_root().join("proc/mounts")).expect("mounts");
    let mounts = fs::data_mounts(fs::parse_mounts(&text));
    let points: Vec<(&str, &str)> = mounts
        .iter()
        .map(|m| (m.mount_point.as_str(), m.fstype.as_str()))
        .collect();
    let kubelet = "/var/lib/kubelet/plugins/kubernetes.io/vsphere-volume/mounts/[vsanDatastore]";
    let pvc = "bafb9e5a-8856-7e6c-699c-801844e77a4a/kubernetes-dynamic-pvc-3eba5bba-48a3-11e8-89ab-005056b92113.vmdk";
    let tab = format!("{kubelet}\t{pvc}");
    let space = format!("{kubelet} {pvc}");
    assert_eq!(
        points,
        [
            ("/", "ext4"),
            ("/boot", "ext2"),
            ("/run", "tmpfs"),
            ("/run/lock", "tmpfs"),
            ("/run/user/1000", "tmpfs"),
            (tab.as_str(), "ext4"),
            (space.as_str(), "ext4"),
        ]
    );

    let samples = collect(&mut collector(&fixture_root()), T0);
    let boot = [("mount", "/boot")];
    let get = |metric: &str, mount: &str| {
        samples
            .iter()
            .find(|s| s.metric == metric && s.tag("mount") == Some(mount))
            .map(|s| match s.value {
                Value::Float(v) => v,
                Value::Text(_) => f64::NAN,
            })
    };
    assert_eq!(get("fs_size_bytes", boot[0].1), Some(GIB as f64));
    assert_eq!(get("fs_free_bytes", "/boot"), Some((GIB / 4) as f64));
    assert_eq!(get("fs_avail_bytes", "/boot"), Some((GIB / 8) as f64));
    assert_eq!(get("fs_used_bytes", "/boot"), Some((GIB - GIB / 4) as f64));
    assert_eq!(get("fs_files", "/boot"), Some(65_536.0));
    assert_eq!(get("fs_files_free", "/boot"), Some(65_000.0));
    assert_eq!(get("fs_used_bytes", "/"), Some((4 * GIB) as f64));
    // statvfs failed: no samples for it.
    assert_eq!(get("fs_size_bytes", "/run/user/1000"), None);
    let fstype = samples
        .iter()
        .find(|s| s.metric == "fs_size_bytes" && s.tag("mount") == Some("/boot"))
        .and_then(|s| s.tag("fstype"));
    assert_eq!(fstype, Some("ext2"));
    let topic = samples
        .iter()
        .find(|s| s.metric == "fs_size_bytes" && s.tag("mount") == Some("/run/lock"))
        .map(sample_topic);
    assert_eq!(
        topic.as_deref(),
        Some(
            "org/acme/cluster/c1/node/n1/plugin/linux/chnl/data/fstype/tmpfs/mount/%2Frun%2Flock/fs_size_bytes"
        )
    );
}

fn hanging_statvfs(path: &Path) -> std::io::Result<fs::FsStats> {
    if path.ends_with("nfs") {
        std::thread::sleep(Duration::from_millis(400));
    }
    Ok(fs::FsStats {
        size_bytes: 1,
        free_bytes: 1,
        avail_bytes: 1,
        files: 1,
        files_free: 1,
    })
}

/// A hung network filesystem costs one timeout, then is skipped until its call returns;
/// the other mounts are measured meanwhile.
#[test]
fn a_hanging_mount_is_skipped_until_it_returns() {
    let mut worker = fs::StatWorker::new(hanging_statvfs, Duration::from_millis(50));
    let nfs = Path::new("/scratch/nfs");
    assert!(matches!(worker.stat(nfs), Err(fs::StatError::TimedOut)));
    assert!(matches!(worker.stat(nfs), Err(fs::StatError::Stuck)));
    assert!(worker.stat(Path::new("/home")).is_ok());
    std::thread::sleep(Duration::from_millis(600));
    assert!(matches!(worker.stat(nfs), Err(fs::StatError::TimedOut)));
}

/// The real `statvfs` on this machine's root.
#[test]
fn statvfs_of_this_host_root() {
    let stats = fs::statvfs(Path::new("/")).expect("statvfs /");
    assert!(stats.size_bytes > 0 && stats.free_bytes <= stats.size_bytes);
    assert!(fs::statvfs(Path::new("/no/such/dir")).is_err());
}
