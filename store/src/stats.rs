//! What the store holds: files, rows, bytes, time range, and the same per metric.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use serde::Serialize;

use crate::{Error, Result, Store};

/// Figures for the whole store or one metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Samples (rows).
    pub rows: u64,
    /// Distinct series.
    pub series: u64,
    /// Bytes on disk (for a metric: its share of each file's bytes by rows).
    pub bytes: u64,
    /// Bytes per sample.
    pub bytes_per_sample: f64,
    /// Oldest sample, ns.
    pub min_time: Option<i64>,
    /// Newest sample, ns.
    pub max_time: Option<i64>,
}

/// The store's contents, from its files (the WAL and buffer are not counted).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreStats {
    /// Parquet files.
    pub files: u64,
    /// All files together.
    pub total: Figures,
    /// Per metric, by name.
    pub metrics: Vec<(String, Figures)>,
    /// Bytes in WAL segments not yet in files.
    pub wal_bytes: u64,
}

impl Store {
    /// Counts what the store's files hold (reads every file's `metric`, tag and `time` columns).
    pub async fn stats(&self) -> Result<StoreStats> {
        let catalog = self.catalog();
        let total_rows: u64 = catalog.files.iter().map(|f| f.rows).sum();
        let total_bytes: u64 = catalog.files.iter().map(|f| f.bytes).sum();
        let ctx = self.query_context(1 << 30)?;
        let series_key: Vec<String> = std::iter::once("metric".to_owned())
            .chain(
                catalog
                    .tag_columns
                    .iter()
                    .map(|c| format!("\"{}\"", c.replace('"', "\"\""))),
            )
            .collect();
        let query = format!(
            "SELECT metric, sum(n) AS rows, count(*) AS series, min(lo) AS min_time, max(hi) AS max_time \
             FROM (SELECT {key}, count(*) AS n, min(time) AS lo, max(time) AS hi FROM samples GROUP BY {key}) \
             GROUP BY metric ORDER BY metric",
            key = series_key.join(", ")
        );
        let sql_error = |e: datafusion::error::DataFusionError| Error::Encode {
            message: format!("stats query: {e}"),
        };
        let batches = ctx
            .sql(&query)
            .await
            .map_err(sql_error)?
            .collect()
            .await
            .map_err(sql_error)?;
        let mut stats = StoreStats {
            files: catalog.files.len() as u64,
            wal_bytes: wal_bytes(&self.inner.wal_dir),
            ..StoreStats::default()
        };
        for batch in &batches {
            let metric = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| Error::Encode {
                message: e.to_string(),
            })?;
            let metric = metric.as_string::<i32>();
            let rows = batch.column(1).as_primitive::<Int64Type>();
            let series = batch.column(2).as_primitive::<Int64Type>();
            let lo = batch.column(3).as_primitive::<TimestampNanosecondType>();
            let hi = batch.column(4).as_primitive::<TimestampNanosecondType>();
            for i in 0..batch.num_rows() {
                let rows_i = rows.value(i) as u64;
                let bytes =
                    (total_bytes as f64 * rows_i as f64 / total_rows.max(1) as f64).round() as u64;
                let figures = Figures {
                    rows: rows_i,
                    series: series.value(i) as u64,
                    bytes,
                    bytes_per_sample: bytes as f64 / rows_i.max(1) as f64,
                    min_time: lo.is_valid(i).then(|| lo.value(i)),
                    max_time: hi.is_valid(i).then(|| hi.value(i)),
                };
                stats.total.series += figures.series;
                stats.metrics.push((metric.value(i).to_owned(), figures));
            }
        }
        stats.total.rows = total_rows;
        stats.total.bytes = total_bytes;
        stats.total.bytes_per_sample = total_bytes as f64 / total_rows.max(1) as f64;
        stats.total.min_time = catalog.files.iter().map(|f| f.min_time).min();
        stats.total.max_time = catalog.files.iter().map(|f| f.max_time).max();
        Ok(stats)
    }
}

fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
