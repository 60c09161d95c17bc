//! Live anomaly scoring cost: a 1000-node simulated cluster (every series of
//! `exawatch up --simulate`, one sample every 2 s) scored every 10 s window by the default
//! detector (`forecast`) and by the ensemble, in process, against a real store.
//!
//! Two costs per scoring round (one 10 s window of every node):
//! - **detector**: the feature rows of the window already built; the detector scores every
//!   node's row and explains the anomalous ones. CPU time of the scoring thread
//!   (`CLOCK_THREAD_CPUTIME_ID`).
//! - **round**: what the live scorer does each window (`score::score_window`): the DataFusion
//!   feature query over the store (buffer and Parquet), the pivot, the detector, and writing
//!   the scores and anomaly events back to the store. CPU time of the whole process, all
//!   threads (`CLOCK_PROCESS_CPUTIME_ID`), so DataFusion's worker threads count.
//!
//! Each run scores `BENCH_ROUNDS` windows after `BENCH_TRAIN_WINDOWS` of training data, every
//! entity's state starting fresh; per-round CPU times go into an hdrhistogram per run; the
//! table shows, for p50, p99 and max, the median over `BENCH_RUNS` runs, and the share of one
//! core that the p50 and p99 cost at one round every 10 s.
//!
//! Run: `cargo bench --bench scoring` (env: `BENCH_NODES`, default 1000;
//! `BENCH_TRAIN_WINDOWS`, default 12; `BENCH_ROUNDS`, default 10; `BENCH_RUNS`, default 5).
//! Prints a Markdown table for `benches/RESULTS.md`.

#[path = "support.rs"]
mod support;

use std::collections::HashMap;

use exawatch_analytics::DEFAULT_DETECTOR;
use exawatch_analytics::features::{self, Frame};
use exawatch_analytics::model::{self, Model};
use exawatch_analytics::score;
use exawatch_analytics::train::TrainRequest;
use exawatch_collectors::simulate::{SLOTS, SimNode, node_name};
use exawatch_protocol::{Sample, Value};
use exawatch_store::{Store, StoreConfig};
use hdrhistogram::Histogram;
use support::{env_or, median};

/// The live system's window and scoring period.
const WINDOW_NS: i64 = 10_000_000_000;
/// Simulated samples per series per window (one every 2 s).
const STEPS_PER_WINDOW: i64 = 5;
const T0: i64 = 1_800_000_000_000_000_000;
/// Memory bound of each feature query and of training: the live scorer's default
/// (`analytics.query_memory_bytes`).
const MEMORY: usize = 256 << 20;
/// Top metrics kept per anomaly, as the live scorer's default.
const TOP_METRICS: usize = 3;

/// CPU time of `clock` (a thread or the process) in ns.
fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; the clock ids used are always supported on
    // Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Writes one window of every simulated node.
async fn write_window(store: &Store, nodes: &mut [SimNode], window: i64) {
    let mut samples = Vec::with_capacity(nodes.len() * SLOTS.len() * STEPS_PER_WINDOW as usize);
    for step in 0..STEPS_PER_WINDOW {
        let t = T0 + window * WINDOW_NS + step * (WINDOW_NS / STEPS_PER_WINDOW);
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

/// p50, p99 and max of one run's per-round CPU times, in ms.
fn percentiles(h: &Histogram<u64>) -> [f64; 3] {
    [
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.max() as f64 / 1e3,
    ]
}

/// Medians over runs of each percentile.
fn median_of(runs: &[[f64; 3]]) -> [f64; 3] {
    [0, 1, 2].map(|i| median(runs.iter().map(|r| r[i]).collect()))
}

/// One run of the detector alone over prebuilt `frames`; per-round thread CPU in µs.
fn detector_run(model: &Model, frames: &[Frame]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut states = HashMap::new();
    let mut anomalies = 0usize;
    for frame in frames {
        let start = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        for (i, (window, entity)) in frame.keys.iter().enumerate() {
            let state = states.entry(entity.clone()).or_default();
            let step = window.div_euclid(WINDOW_NS);
            let scored = model.fitted.score(step, frame.matrix.row(i), state);
            if scored.score > model.fitted.threshold {
                anomalies += model.fitted.explain(&scored, TOP_METRICS).len().min(1);
            }
        }
        h.record((cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - start) / 1000)
            .unwrap();
    }
    std::hint::black_box(anomalies);
    h
}

/// One run of whole scoring rounds from the store; per-round process CPU in µs.
async fn round_run(store: &Store, model: &Model, windows: std::ops::Range<i64>) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut states = HashMap::new();
    for w in windows {
        let start = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
        let result = score::score_window(
            store,
            model,
            &mut states,
            T0 + w * WINDOW_NS,
            TOP_METRICS,
            MEMORY,
        )
        .await
        .unwrap();
        store.write(result.samples).await.unwrap();
        h.record((cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - start) / 1000)
            .unwrap();
    }
    h
}

fn main() {
    let nodes_n: usize = env_or("BENCH_NODES", 1000);
    let train_windows: i64 = env_or("BENCH_TRAIN_WINDOWS", 12);
    let rounds: i64 = env_or("BENCH_ROUNDS", 10);
    let runs: usize = env_or("BENCH_RUNS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let store = Store::open(dir.path(), StoreConfig::test_config(), &mut registry)
            .await
            .unwrap();
        let mut nodes: Vec<SimNode> = (0..nodes_n).map(|i| SimNode::new(i, 42)).collect();
        for w in 0..train_windows + rounds {
            write_window(&store, &mut nodes, w).await;
            // The training windows in Parquet files, the scored ones partly in the buffer,
            // as in a running server.
            if w == train_windows - 1 {
                store.flush().await.unwrap();
            }
        }
        let scored = train_windows..train_windows + rounds;
        println!(
            "scoring: {nodes_n} nodes, {} series each, {train_windows} training windows of 10 s, \
             {rounds} scored windows per run, {runs} runs",
            SLOTS.len()
        );
        println!();
        println!(
            "| detector | features | cost per round | p50 | p99 | max | p50 % of one core | p99 % of one core |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for detector in [DEFAULT_DETECTOR.name(), "ensemble"] {
            let request: TrainRequest = serde_json::from_value(serde_json::json!({
                "name": detector,
                "detector": detector,
                "window_secs": 10.0,
                "from": (T0 as f64 / 1e9).to_string(),
                "to": ((T0 + train_windows * WINDOW_NS) as f64 / 1e9).to_string(),
            }))
            .unwrap();
            let info = exawatch_analytics::train::train(&store, &request, MEMORY)
                .await
                .unwrap();
            let model = model::load_latest(&store, detector)
                .await
                .unwrap()
                .unwrap();
            let spec = &model.info.spec;
            let mut frames = Vec::new();
            for w in scored.clone() {
                let from = T0 + w * WINDOW_NS;
                let aggregates = features::aggregate(&store, spec, from, from + WINDOW_NS, MEMORY)
                    .await
                    .unwrap();
                let frame = features::pivot(&aggregates, &model.columns);
                assert_eq!(frame.keys.len(), nodes_n, "every node has a row");
                frames.push(frame);
            }
            let detector_runs: Vec<[f64; 3]> = (0..runs)
                .map(|_| percentiles(&detector_run(&model, &frames)))
                .collect();
            let mut round_runs = Vec::new();
            for _ in 0..runs {
                round_runs.push(percentiles(&round_run(&store, &model, scored.clone()).await));
            }
            for (what, runs) in [
                ("detector (features built)", detector_runs),
                ("round (features from the store, results written)", round_runs),
            ] {
                let [p50, p99, max] = median_of(&runs);
                println!(
                    "| {} | {} | {what} | {p50:.2} ms | {p99:.2} ms | {max:.2} ms | {:.3}% | {:.3}% |",
                    info.detector,
                    info.features.len(),
                    p50 / 10_000.0 * 100.0,
                    p99 / 10_000.0 * 100.0,
                );
            }
        }
        store.shutdown().await.unwrap();
    });
}
