//! Live scoring cost: one 10 s window of a 1000-node simulated cluster (50 series per node,
//! one sample per series every 2 s, as `exawatch up --simulate` publishes) scored by the
//! default detector, from the store's buffer through the DataFusion feature query, the
//! pivot, the detector and the write-back of scores and anomalies.
//!
//! Measured: process CPU time (user + system, all threads) per scored window, as a share of
//! one core over the 10 s the window lasts. Run: `cargo bench -p exawatch-analytics --bench
//! scoring` (env: `BENCH_NODES`, default 1000; `BENCH_WINDOWS`, default 5).

use std::collections::HashMap;
use std::time::Instant;

use exawatch_analytics::train::TrainRequest;
use exawatch_analytics::{model, score};
use exawatch_collectors::simulate::{SLOTS, SimNode, node_name};
use exawatch_protocol::{Sample, Value};
use exawatch_store::{Store, StoreConfig};

const WINDOW_NS: i64 = 10_000_000_000;
const T0: i64 = 1_800_000_000_000_000_000;
const TRAIN_WINDOWS: i64 = 6;
const MEMORY: usize = 1 << 30;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds of this process so far (utime + stime from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn write_window(store: &Store, nodes: &mut [SimNode], window: i64) {
    let mut samples = Vec::with_capacity(nodes.len() * SLOTS.len() * 5);
    for step in 0..5 {
        let t = T0 + window * WINDOW_NS + step * 2_000_000_000;
        for (i, node) in nodes.iter_mut().enumerate() {
            node.step();
            node.step();
            for (slot, value) in SLOTS.iter().zip(node.values()) {
                let mut tags = vec![
                    ("node".to_owned(), node_name(i)),
                    ("plugin".to_owned(), slot.plugin.to_owned()),
                ];
                if let Some((k, v)) = slot.item {
                    tags.push((k.to_owned(), v.to_owned()));
                }
                samples.push(Sample::new(slot.metric, tags, t, Value::Float(*value)));
            }
        }
    }
    for chunk in samples.chunks(50_000) {
        store.write(chunk.to_vec()).await.unwrap();
    }
}

fn main() {
    let nodes_n = env_or("BENCH_NODES", 1000);
    let windows = env_or("BENCH_WINDOWS", 5) as i64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let store = Store::open(dir.path(), StoreConfig::test_config(), &mut registry).await.unwrap();
        let mut nodes: Vec<SimNode> = (0..nodes_n).map(|i| SimNode::new(i, 42)).collect();
        for w in 0..TRAIN_WINDOWS + windows {
            write_window(&store, &mut nodes, w).await;
        }
        let request: TrainRequest = serde_json::from_value(serde_json::json!({
            "name": "bench",
            "window_secs": 10.0,
            "from": (T0 as f64 / 1e9).to_string(),
            "to": ((T0 + TRAIN_WINDOWS * WINDOW_NS) as f64 / 1e9).to_string(),
        }))
        .unwrap();
        let info = exawatch_analytics::train::train(&store, &request, MEMORY).await.unwrap();
        let model = model::load_latest(&store, "bench").await.unwrap().unwrap();
        let mut states = HashMap::new();
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        let mut scored = 0;
        for w in TRAIN_WINDOWS..TRAIN_WINDOWS + windows {
            let result = score::score_window(&store, &model, &mut states, T0 + w * WINDOW_NS, 3, MEMORY).await.unwrap();
            scored += result.scored;
            store.write(result.samples).await.unwrap();
        }
        let cpu = (cpu_seconds() - cpu0) / windows as f64;
        let wall = wall0.elapsed().as_secs_f64() / windows as f64;
        println!(
            "scoring: {nodes_n} nodes x {} features ({}), {} windows of 10 s, {} node-windows scored: \
             {:.3} CPU s and {:.3} s wall per window = {:.2}% of one core",
            info.features.len(),
            info.detector,
            windows,
            scored,
            cpu,
            wall,
            cpu / 10.0 * 100.0
        );
        store.shutdown().await.unwrap();
    });
}
