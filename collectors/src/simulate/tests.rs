//! The simulated node model over simulated time: plausible ranges, monotonic counters, power
//! following the job phases, determinism, and the EXAMON topics of `gen_nodes.py`.

use std::collections::{BTreeSet, HashMap};

use exawatch_protocol::examon::decode;

use super::*;

/// Index of the slot `(plugin, item, metric)` in [`SLOTS`].
fn index(plugin: &str, item: Option<(&str, &str)>, metric: &str) -> usize {
    SLOTS
        .iter()
        .position(|s| s.plugin == plugin && s.item == item && s.metric == metric)
        .unwrap_or_else(|| panic!("no slot {plugin} {item:?} {metric}"))
}

/// `(plugin, item, metric)` of a series.
type SeriesKey = (
    &'static str,
    Option<(&'static str, &'static str)>,
    &'static str,
);

const COUNTERS: [SeriesKey; 10] = [
    ("procfs", None, "ctxt"),
    ("procfs", None, "intr"),
    ("procfs", Some(("iface", "eth0")), "rx_bytes"),
    ("procfs", Some(("iface", "eth0")), "tx_bytes"),
    ("procfs", Some(("iface", "ib0")), "rx_bytes"),
    ("procfs", Some(("iface", "ib0")), "tx_bytes"),
    ("procfs", Some(("dev", "nvme0n1")), "read_bytes"),
    ("procfs", Some(("dev", "nvme0n1")), "write_bytes"),
    ("procfs", Some(("dev", "nvme0n1")), "read_ops"),
    ("procfs", Some(("dev", "nvme0n1")), "write_ops"),
];

/// Three simulated hours of one node: every node goes through idle and job phases in that
/// time (idle ≤ 600 s at start, jobs average 20 min, idle gaps 4 min).
const SECONDS: u64 = 3 * 3600;

#[test]
fn values_stay_plausible_and_counters_monotonic() {
    for node_index in 0..4 {
        let mut node = SimNode::new(node_index, 42);
        node.step();
        let mut previous = *node.values();
        for _ in 1..SECONDS {
            node.step();
            let v = node.values();
            for (i, slot) in SLOTS.iter().enumerate() {
                assert!(v[i].is_finite(), "{slot:?} = {}", v[i]);
                if slot.metric.ends_with("util") {
                    assert!((0.0..=100.0).contains(&v[i]), "{slot:?} = {}", v[i]);
                }
                if slot.metric.ends_with("_temp") || slot.metric == "temp" {
                    assert!((15.0..=110.0).contains(&v[i]), "{slot:?} = {}", v[i]);
                }
                if slot.metric.starts_with("fan") {
                    assert!((2000.0..=10_000.0).contains(&v[i]), "{slot:?} = {}", v[i]);
                    assert_eq!(v[i] % 60.0, 0.0);
                }
                if slot.metric.ends_with("power") {
                    assert!(v[i] > 0.0 && v[i] < 2000.0, "{slot:?} = {}", v[i]);
                }
            }
            for (plugin, item, metric) in COUNTERS {
                let i = index(plugin, item, metric);
                assert!(v[i] >= previous[i], "{metric} {item:?} went backwards");
                assert_eq!(v[i].fract(), 0.0, "{metric} not an integer");
            }
            let mem: f64 = ["mem_used", "mem_free", "mem_cached", "mem_buffers"]
                .iter()
                .map(|m| v[index("procfs", None, m)])
                .sum();
            assert_eq!(mem, 256.0 * (1u64 << 30) as f64, "memory does not add up");
            previous = *v;
        }
    }
}

#[test]
fn power_and_utilisation_rise_in_job_phases() {
    let pkg0 = index("rapl", Some(("socket", "0")), "pkg_power");
    let node_power = index("ipmi", None, "node_power");
    let cpu_util = index("procfs", None, "cpu_util");
    let gpu_power = index("nvml", Some(("gpu", "0")), "power");
    let (mut saw_gpu_job, mut saw_cpu_job) = (false, false);
    for node_index in 0..6 {
        let mut node = SimNode::new(node_index, 7);
        // (sum, count) for idle, CPU job, GPU job.
        let mut phases: HashMap<&str, [(f64, f64); 4]> = HashMap::new();
        for _ in 0..SECONDS {
            node.step();
            let phase = match (node.in_job(), node.in_gpu_job()) {
                (false, _) => "idle",
                (true, false) => "cpu",
                (true, true) => "gpu",
            };
            let acc = phases.entry(phase).or_default();
            for (slot, (sum, count)) in [pkg0, node_power, cpu_util, gpu_power].iter().zip(acc) {
                *sum += node.values()[*slot];
                *count += 1.0;
            }
        }
        let mean = |phase: &str, k: usize| phases.get(phase).map(|acc| acc[k].0 / acc[k].1);
        let idle_power = mean("idle", 1).expect("an idle phase");
        let idle_util = mean("idle", 2).expect("an idle phase");
        assert!(idle_util < 10.0, "idle cpu_util {idle_util}");
        for job in ["cpu", "gpu"] {
            if let (Some(power), Some(pkg), Some(util)) = (mean(job, 1), mean(job, 0), mean(job, 2))
            {
                assert!(
                    power > idle_power + 20.0,
                    "{job} node_power {power} vs {idle_power}"
                );
                assert!(
                    pkg > mean("idle", 0).expect("idle") + 10.0,
                    "{job} pkg_power {pkg}"
                );
                assert!(util > 20.0, "{job} cpu_util {util}");
            }
        }
        if let (Some(gpu), Some(idle)) = (mean("gpu", 3), mean("idle", 3)) {
            assert!(gpu > idle + 50.0, "gpu power {gpu} vs idle {idle}");
            saw_gpu_job = true;
        }
        saw_cpu_job |= mean("cpu", 1).is_some();
    }
    assert!(saw_gpu_job && saw_cpu_job, "no GPU or CPU job in the runs");
}

#[test]
fn deterministic_for_a_seed() {
    let run = |index: usize, seed: u64| {
        let mut node = SimNode::new(index, seed);
        (0..600)
            .map(|_| {
                node.step();
                *node.values()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(3, 42), run(3, 42));
    assert_ne!(run(3, 42), run(4, 42));
    assert_ne!(run(3, 42), run(3, 43));
}

#[test]
fn advance_to_steps_once_per_simulated_second() {
    let mut node = SimNode::new(0, 42);
    node.advance_to(5);
    assert_eq!(node.steps(), 5);
    node.advance_to(5);
    assert_eq!(node.steps(), 5);
    let mut same = SimNode::new(0, 42);
    for _ in 0..5 {
        same.step();
    }
    assert_eq!(node.values(), same.values());
    node.advance_to(1_000_000);
    assert_eq!(node.steps(), 5 + MAX_CATCH_UP_STEPS);
}

#[test]
fn topics_match_gen_nodes_examon_format() {
    let topics = node_topics("acme", "sim", 7);
    assert_eq!(topics.len(), SERIES_PER_NODE);
    assert_eq!(
        topics[0],
        "org/acme/cluster/sim/node/node007/plugin/procfs/chnl/data/core/0/util"
    );
    assert_eq!(
        topics[index("procfs", None, "mem_used")],
        "org/acme/cluster/sim/node/node007/plugin/procfs/chnl/data/mem_used"
    );
    assert_eq!(
        topics[index("rapl", Some(("socket", "1")), "dram_power")],
        "org/acme/cluster/sim/node/node007/plugin/rapl/chnl/data/socket/1/dram_power"
    );
    assert_eq!(
        topics[index("nvml", Some(("gpu", "1")), "mem_used")],
        "org/acme/cluster/sim/node/node007/plugin/nvml/chnl/data/gpu/1/mem_used"
    );
    assert_eq!(node_name(1234), "node1234");
    let unique: BTreeSet<&String> = topics.iter().collect();
    assert_eq!(unique.len(), SERIES_PER_NODE, "two series share a topic");
}

#[test]
fn messages_decode_as_examon_samples() {
    let mut node = SimNode::new(1, 42);
    node.step();
    let topics = node_topics("acme", "sim", 1);
    let now = 1_700_000_000_123_000_000;
    let mut batch = exawatch_protocol::Batch::new();
    for message in node.messages(&topics, now) {
        decode(message.topic.as_bytes(), &message.payload, &mut batch).expect("decodes");
    }
    let samples: Vec<_> = batch.samples().collect();
    assert_eq!(samples.len(), SERIES_PER_NODE);
    for (sample, value) in samples.iter().zip(node.values()) {
        assert_eq!(sample.time_ns, now);
        assert_eq!(sample.tag("node"), Some("node001"));
        assert_eq!(sample.value, exawatch_protocol::Value::Float(*value));
    }
    // Values keep gen_nodes.py's precision: two decimals for utilisation.
    let util = node.values()[0];
    assert_eq!((util * 100.0).round() / 100.0, util);
}

#[test]
fn job_records_follow_the_nodes_job_phases() {
    let count = 8;
    let mut nodes: Vec<SimNode> = (0..count).map(|i| SimNode::new(i, 42)).collect();
    let mut jobs = SimJobs::new("sim", count, 42);
    let mut records = Vec::new();
    for second in 1..=4 * 3600 {
        for i in 0..count {
            nodes[i].advance_to(second);
            let messages = jobs.after_step(i, &mut nodes, second as i64 * 1_000_000_000);
            for m in messages {
                assert_eq!(m.topic, "exawatch/jobs/sim");
                let errors =
                    exawatch_protocol::job::decode(m.topic.as_bytes(), &m.payload, &mut records);
                assert!(errors.is_empty(), "{errors:?}");
            }
        }
    }
    let started: Vec<_> = records.iter().filter(|r| r.state == "RUNNING").collect();
    let ended: Vec<_> = records.iter().filter(|r| r.end_ns.is_some()).collect();
    assert!(started.len() > 10, "{} jobs started", started.len());
    assert!(
        ended.len() + count >= started.len(),
        "every job but the running ones ended"
    );
    assert!(started.iter().any(|r| r.nodes.len() > 1), "multi-node jobs");
    assert!(started.iter().any(|r| r.id.contains('_')), "array tasks");
    assert!(started.iter().any(|r| r.partition == "gpu"));
    for end in &ended {
        let start = started
            .iter()
            .find(|s| s.id == end.id)
            .expect("started before");
        assert_eq!(start.nodes, end.nodes);
        assert!(end.end_ns > end.start_ns);
        assert!(["COMPLETED", "FAILED", "TIMEOUT"].contains(&end.state.as_str()));
        // While it ran, its nodes ran no other job.
        for other in &ended {
            let overlaps =
                other.id != end.id && other.start_ns < end.end_ns && end.start_ns < other.end_ns;
            if overlaps {
                assert!(
                    other.nodes.iter().all(|n| !end.nodes.contains(n)),
                    "{} and {}",
                    end.id,
                    other.id
                );
            }
        }
    }
    let ids: BTreeSet<&str> = started.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), started.len(), "ids are unique");
}
