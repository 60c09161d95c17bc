//! A job's summary, from the samples of its nodes over its time (up to now while it runs).
//!
//! Energy, per source present (see [`sources`]): the source's power samples of one node at
//! one time are added up (packages and DRAM, every GPU), then integrated per node with left
//! rectangles, `Σ wᵢ·(tᵢ₊₁ − tᵢ)`, over consecutive samples inside the job's time that are at
//! most [`MAX_GAP_NS`] apart; `coverage` is the share of the job's node-time those intervals
//! cover. A node that other jobs share at the same time gives this job the part of each
//! interval's energy its allocated cores hold among all their cores there (a job's cores on
//! one node: its CPUs over its node count).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use exawatch_protocol::job::JobRecord;
use exawatch_store::JobFilter;
use serde_json::{Value, json};

use crate::{ApiError, ApiState, sql};

/// Longest gap between two power samples still counted as measured.
pub(crate) const MAX_GAP_NS: i64 = 300_000_000_000;

/// The energy sources whose samples `has` (a column test) allows: each a name and the SQL
/// condition selecting its power samples (watts), with the metric names the collectors and
/// the simulator publish.
fn sources(has: impl Fn(&str) -> bool) -> Vec<(&'static str, &'static str)> {
    if !has("plugin") {
        return Vec::new();
    }
    let rapl = if has("domain") {
        "plugin = 'rapl' AND (metric IN ('pkg_power', 'dram_power') OR (metric = 'power_w' AND domain IN ('package', 'dram')))"
    } else {
        "plugin = 'rapl' AND metric IN ('pkg_power', 'dram_power')"
    };
    vec![
        (
            "ipmi",
            "plugin = 'ipmi' AND metric IN ('node_power', 'total_power', 'sys_power', 'pwr_consumption', 'system_power')",
        ),
        ("rapl", rapl),
        (
            "gpu",
            "(plugin = 'nvml' AND metric = 'power') OR (plugin = 'nvidia' AND metric = 'power_w')",
        ),
    ]
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn column(batch: &RecordBatch, index: usize, to: &DataType) -> Result<Arc<dyn Array>, ApiError> {
    arrow::compute::cast(batch.column(index), to).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The summary of `job` as of `now_ns` (null when it has not started or has no nodes).
pub(crate) async fn summarize(
    state: &ApiState,
    job: &JobRecord,
    now_ns: i64,
) -> Result<Value, ApiError> {
    let (Some(start), false) = (job.start_ns, job.nodes.is_empty()) else {
        return Ok(Value::Null);
    };
    let end = job.end_ns.unwrap_or(now_ns).max(start);
    let (schema, _) = sql::run(state, "SELECT * FROM samples LIMIT 0").await?;
    let has = |name: &str| schema.column_with_name(name).is_some();
    if !has("node") {
        return Ok(json!({"running": job.end_ns.is_none(), "energy": {}}));
    }
    let nodes = job
        .nodes
        .iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(", ");
    let window = format!(
        "node IN ({nodes}) AND time >= {} AND time <= {}",
        quote(&rfc3339(start)),
        quote(&rfc3339(end))
    );
    let shares = Shares::of(state, job, start, end).await?;
    let node_time = (end - start) as f64 * job.nodes.len() as f64;

    let mut energy = serde_json::Map::new();
    for (name, condition) in sources(has) {
        let query = format!(
            "SELECT node AS n, CAST(time AS BIGINT) AS t, sum(value) AS w FROM samples \
             WHERE ({condition}) AND {window} AND value IS NOT NULL GROUP BY node, time ORDER BY n, t"
        );
        let (_, batches) = sql::run(state, &query).await?;
        let mut series: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
        for batch in &batches {
            let node = column(batch, 0, &DataType::Utf8)?;
            let time = column(batch, 1, &DataType::Int64)?;
            let watts = column(batch, 2, &DataType::Float64)?;
            let (node, time, watts) = (
                node.as_string::<i32>(),
                time.as_primitive::<Int64Type>(),
                watts.as_primitive::<Float64Type>(),
            );
            for i in 0..batch.num_rows() {
                series
                    .entry(node.value(i).to_owned())
                    .or_default()
                    .push((time.value(i), watts.value(i)));
            }
        }
        if series.is_empty() {
            continue;
        }
        let (mut joules, mut covered) = (0.0, 0.0);
        for (node, points) in &series {
            for pair in points.windows(2) {
                let ((t0, w0), (t1, _)) = (pair[0], pair[1]);
                let dt = t1 - t0;
                if dt <= MAX_GAP_NS {
                    joules += w0 * dt as f64 / 1e9 * shares.share(node, t0);
                    covered += dt as f64;
                }
            }
        }
        energy.insert(
            name.to_owned(),
            json!({
                "joules": joules,
                "kwh": joules / 3.6e6,
                "coverage": if node_time > 0.0 { covered / node_time } else { 0.0 },
                "nodes": series.len(),
            }),
        );
    }

    let core = if has("core") { " AND core IS NULL" } else { "" };
    let stats = |metrics: &str| {
        format!(
            "SELECT avg(value), max(value) FROM samples WHERE metric IN ({metrics}){core} AND {window}"
        )
    };
    let (_, cpu) = sql::run(state, &stats("'cpu_util'")).await?;
    let (_, mem) = sql::run(state, &stats("'mem_used', 'mem_used_bytes'")).await?;
    let pair = |batches: &[RecordBatch]| -> Result<(Value, Value), ApiError> {
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok((Value::Null, Value::Null));
        };
        let value = |i| -> Result<Value, ApiError> {
            let array = column(batch, i, &DataType::Float64)?;
            let array = array.as_primitive::<Float64Type>();
            Ok(if array.is_null(0) {
                Value::Null
            } else {
                array.value(0).into()
            })
        };
        Ok((value(0)?, value(1)?))
    };
    let (cpu_mean, cpu_peak) = pair(&cpu)?;
    let (_, mem_peak) = pair(&mem)?;
    Ok(json!({
        "from": start as f64 / 1e9,
        "to": end as f64 / 1e9,
        "running": job.end_ns.is_none(),
        "energy": energy,
        "cpu_util_mean": cpu_mean,
        "cpu_util_peak": cpu_peak,
        "mem_used_peak": mem_peak,
    }))
}

/// Who holds each node's cores when: this job's and every other job's, per node.
struct Shares {
    /// This job's cores on one node.
    mine: f64,
    /// Per node, other jobs' `(start, end, cores)`.
    others: HashMap<String, Vec<(i64, i64, f64)>>,
}

/// A job's cores on each of its nodes (1 when unknown).
fn cores_per_node(job: &JobRecord) -> f64 {
    job.cpus
        .map_or(1.0, |cpus| cpus as f64 / job.nodes.len().max(1) as f64)
        .max(f64::MIN_POSITIVE)
}

impl Shares {
    async fn of(state: &ApiState, job: &JobRecord, start: i64, end: i64) -> Result<Self, ApiError> {
        let overlapping = state
            .store
            .jobs(&JobFilter {
                from_ns: Some(start),
                to_ns: Some(end),
                ..JobFilter::default()
            })
            .await?;
        let mut others: HashMap<String, Vec<(i64, i64, f64)>> = HashMap::new();
        for other in overlapping {
            let other = other.record;
            if (other.cluster == job.cluster && other.id == job.id) || other.start_ns.is_none() {
                continue;
            }
            let span = (
                other.start_ns.unwrap_or(i64::MAX),
                other.end_ns.unwrap_or(i64::MAX),
                cores_per_node(&other),
            );
            for node in other.nodes.iter().filter(|n| job.nodes.contains(n)) {
                others.entry(node.clone()).or_default().push(span);
            }
        }
        Ok(Self {
            mine: cores_per_node(job),
            others,
        })
    }

    /// This job's share of `node` at `t`.
    fn share(&self, node: &str, t: i64) -> f64 {
        let others: f64 = self
            .others
            .get(node)
            .map(|spans| {
                spans
                    .iter()
                    .filter(|(start, end, _)| *start <= t && t < *end)
                    .map(|(_, _, cores)| cores)
                    .sum()
            })
            .unwrap_or(0.0);
        self.mine / (self.mine + others)
    }
}
