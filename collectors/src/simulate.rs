//! Simulated nodes publishing realistic EXAMON telemetry, for `exawatch up --simulate N`.
//!
//! The node model ([`SimNode`]) is `bench/gen_nodes.py` ported to Rust, with the same plugin
//! names, tags and metric names as its `--format examon` output ([`SLOTS`]):
//! `org/<org>/cluster/<cluster>/node/nodeNNN/plugin/<procfs|rapl|ipmi|nvml>/chnl/data/`
//! `[core/<i>/|iface/<x>/|dev/<x>/|socket/<i>/|gpu/<i>/]<metric>`.
//!
//! Every node publishes all its [`SERIES_PER_NODE`] series once per period, timestamped with
//! the wall clock; node `i` publishes `i / N` of a period after node 0, so the broker sees a
//! steady stream rather than bursts. The model runs one step per simulated second, so
//! counters grow at the same rate whatever the period.
//!
//! The nodes' job phases are also published as Slurm-like job records (`simulate/jobs.rs`).

mod jobs;
mod model;
#[cfg(test)]
mod tests;

use std::time::Duration;

use exawatch_protocol::Value;
use exawatch_protocol::examon::{encode_payload, encode_topic};
use tokio::time::Instant;
use tracing::warn;

pub use model::{SERIES_PER_NODE, SLOTS, SimNode, Slot};

use self::jobs::SimJobs;
use crate::SimulateConfig;
use crate::publisher::{Message, Publisher};

/// Most model steps one node takes at once to catch up after a stall (one simulated hour).
pub const MAX_CATCH_UP_STEPS: u64 = 3600;

/// Name of simulated node `index`: `node000`, `node001`, …
pub fn node_name(index: usize) -> String {
    format!("node{index:03}")
}

/// The EXAMON topics of simulated node `index`, in [`SLOTS`] order.
pub fn node_topics(org: &str, cluster: &str, index: usize) -> Vec<String> {
    let node = node_name(index);
    SLOTS
        .iter()
        .map(|slot| {
            let tags = [
                ("org", org),
                ("cluster", cluster),
                ("node", node.as_str()),
                ("plugin", slot.plugin),
                ("chnl", "data"),
            ]
            .into_iter()
            .chain(slot.item);
            encode_topic(tags, slot.metric)
        })
        .collect()
}

impl SimNode {
    /// Steps until `seconds` simulated seconds have passed (at most [`MAX_CATCH_UP_STEPS`]
    /// per call, so a long stall cannot freeze the simulator).
    pub fn advance_to(&mut self, seconds: u64) {
        let mut budget = MAX_CATCH_UP_STEPS;
        while self.steps() < seconds && budget > 0 {
            self.step();
            budget -= 1;
        }
    }

    /// This node's messages for its current values, stamped `now_ns`.
    pub fn messages<'a>(
        &'a self,
        topics: &'a [String],
        now_ns: i64,
    ) -> impl Iterator<Item = Message> + 'a {
        topics
            .iter()
            .zip(self.values())
            .map(move |(topic, value)| Message {
                topic: topic.clone(),
                payload: encode_payload(&Value::Float(*value), now_ns).into_bytes(),
            })
    }
}

/// An injected fault, for testing anomaly detection: from `at_secs` after the start, node
/// `node`'s fans read 0 rpm and its CPU and exhaust temperatures read 25 °C hotter (a fan
/// failure).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// Index of the faulty node.
    pub node: usize,
    /// Seconds after the start.
    pub at_secs: f64,
}

impl Fault {
    /// `value` of `slot` as the faulty node reports it.
    pub fn apply(slot: &Slot, value: f64) -> f64 {
        match slot.metric {
            "fan1" | "fan2" | "fan3" | "fan4" => 0.0,
            "cpu0_temp" | "cpu1_temp" | "exhaust_temp" => value + 25.0,
            _ => value,
        }
    }
}

/// Publishes every node once per `period`, staggered across it, until the future is
/// dropped. Cycles that are already over when reached are skipped, not caught up in a burst.
pub(crate) async fn drive(config: &SimulateConfig, period: Duration, publisher: &Publisher) {
    let mut nodes: Vec<SimNode> = (0..config.nodes)
        .map(|i| SimNode::new(i, config.seed))
        .collect();
    let topics: Vec<Vec<String>> = (0..config.nodes)
        .map(|i| node_topics(&config.org, &config.cluster, i))
        .collect();
    let mut jobs = SimJobs::new(&config.cluster, nodes.len(), config.seed);
    let spacing = period.div_f64(nodes.len().max(1) as f64);
    let start = Instant::now();
    let fault = config.fault_node.map(|node| Fault {
        node,
        at_secs: config.fault_at_secs,
    });
    let mut cycle: u64 = 0;
    let mut warned_late = false;
    loop {
        let cycle_start = start + period.mul_f64(cycle as f64);
        for (i, topics) in topics.iter().enumerate() {
            tokio::time::sleep_until(cycle_start + spacing.mul_f64(i as f64)).await;
            nodes[i].advance_to(start.elapsed().as_secs() + 1);
            let now_ns = exawatch_protocol::time::now_ns();
            publisher.publish_many(jobs.after_step(i, &mut nodes, now_ns));
            let node = &nodes[i];
            match fault {
                Some(f) if f.node == i && start.elapsed().as_secs_f64() >= f.at_secs => {
                    let values = node.values().iter().zip(SLOTS.iter());
                    publisher.publish_many(topics.iter().zip(values).map(|(topic, (v, slot))| {
                        Message {
                            topic: topic.clone(),
                            payload: encode_payload(&Value::Float(Fault::apply(slot, *v)), now_ns)
                                .into_bytes(),
                        }
                    }));
                }
                _ => publisher.publish_many(node.messages(topics, now_ns)),
            }
        }
        cycle += 1;
        let due = (start.elapsed().as_secs_f64() / period.as_secs_f64()) as u64;
        if due > cycle {
            if !warned_late {
                warn!(
                    nodes = nodes.len(),
                    skipped = due - cycle,
                    "Simulator behind schedule; skipping periods."
                );
                warned_late = true;
            }
            cycle = due;
        }
    }
}
