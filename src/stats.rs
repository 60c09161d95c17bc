//! `exawatch store stats`: what the store's files hold.

use std::path::Path;

use anyhow::{Context, Result};
use exawatch_store::{Figures, Store, StoreConfig};

/// Output formats of `exawatch store stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object.
    Json,
}

/// Prints the statistics of the store under `data_dir`.
pub(crate) async fn run(data_dir: &Path, config: &StoreConfig, format: Format) -> Result<()> {
    let store = Store::open_read_only(data_dir, config)
        .await
        .with_context(|| format!("no readable store in {}", data_dir.display()))?;
    let stats = store.stats().await?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    println!(
        "{} files, {} rows, {} series, {}, {:.2} bytes/sample, {} … {}; WAL {}",
        stats.files,
        stats.total.rows,
        stats.total.series,
        human_bytes(stats.total.bytes),
        stats.total.bytes_per_sample,
        time(stats.total.min_time),
        time(stats.total.max_time),
        human_bytes(stats.wal_bytes),
    );
    let mut rows = vec![
        [
            "metric", "rows", "series", "bytes", "B/sample", "from", "to",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (metric, figures) in &stats.metrics {
        rows.push(line(metric, figures));
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}

fn line(metric: &str, f: &Figures) -> Vec<String> {
    vec![
        metric.to_owned(),
        f.rows.to_string(),
        f.series.to_string(),
        human_bytes(f.bytes),
        format!("{:.2}", f.bytes_per_sample),
        time(f.min_time),
        time(f.max_time),
    ]
}

fn time(ns: Option<i64>) -> String {
    ns.map_or_else(
        || "-".to_owned(),
        |ns| {
            chrono::DateTime::from_timestamp_nanos(ns)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        },
    )
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
