//! `Store::select_series`: whole series by key from files (through their series index) and
//! the buffer, checked against SQL over the same store.

#[path = "support/store.rs"]
mod support;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::datatypes::{Float64Type, Int8Type, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use exawatch_protocol::{Sample, Value};
use exawatch_store::buffer::SeriesKey;
use exawatch_store::{Error, SeriesSamples, Steps, Store, StoreConfig};
use prometheus_client::registry::Registry;

const SEC: i64 = 1_000_000_000;

fn sample(metric: &str, node: &str, secs: i64, value: f64) -> Sample {
    Sample::new(
        metric,
        vec![("node".into(), node.into())],
        secs * SEC,
        Value::Float(value),
    )
}

/// Compacting two files at a time, deleting replaced files at once.
fn compacting() -> StoreConfig {
    StoreConfig {
        compaction_min_files: 2,
        delete_delay_secs: 0.0,
        ..StoreConfig::test_config()
    }
}

async fn open(dir: &std::path::Path) -> Store {
    support::open(dir, compacting()).await
}

/// `temp` of node `node`, whole.
async fn temp_of(store: &Store, node: &str, min_ns: i64, max_ns: i64) -> Vec<SeriesSamples> {
    let wanted = |key: &SeriesKey| key.metric == "temp" && key.tag("node") == Some(node);
    store
        .select_series(Some("temp"), &wanted, min_ns, max_ns, None, usize::MAX)
        .await
        .unwrap()
}

/// The number of float `temp` samples of `node` in `[min_ns, max_ns]`, by SQL.
async fn sql_count(store: &Store, node: &str, min_ns: i64, max_ns: i64) -> usize {
    let ctx = SessionContext::new();
    store.register(&ctx).unwrap();
    let query = format!(
        "SELECT count(value) FROM samples WHERE metric = 'temp' AND node = '{node}' \
         AND time >= to_timestamp_nanos({min_ns}) AND time <= to_timestamp_nanos({max_ns})"
    );
    let batches = ctx.sql(&query).await.unwrap().collect().await.unwrap();
    let counts = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    counts.value(0) as usize
}

/// 3 nodes × `temp` and `load` at 1 s for 10 000 s (several index marks per series), a
/// text sample, then more `temp` of n1 in the buffer, one at a time already in a file.
async fn filled(dir: &std::path::Path) -> Store {
    let store = open(dir).await;
    let mut samples = Vec::new();
    for node in ["n3", "n1", "n2"] {
        for metric in ["temp", "load"] {
            // `load` in eighths: stored with a decimal scale of 3.
            let divisor = if metric == "load" { 8.0 } else { 1.0 };
            samples.extend((0..10_000).map(|s| sample(metric, node, s, s as f64 / divisor)));
        }
    }
    samples.push(Sample::new(
        "temp",
        vec![("node".into(), "n1".into())],
        20_000 * SEC,
        Value::Text("fan fault".into()),
    ));
    store.write(samples).await.unwrap();
    store.flush().await.unwrap();
    store
        .write(
            (10_000..10_010)
                .map(|s| sample("temp", "n1", s, s as f64))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    store
        .write(vec![sample("temp", "n1", 5, -1.0)])
        .await
        .unwrap();
    store
}

#[tokio::test]
async fn series_come_whole_from_files_and_buffer_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path()).await;
    let all = temp_of(&store, "n1", i64::MIN, i64::MAX).await;
    assert_eq!(all.len(), 1);
    let n1 = &all[0];
    assert_eq!(
        *n1.key,
        SeriesKey {
            metric: "temp".into(),
            tags: vec![("node".into(), "n1".into())]
        }
    );
    assert_eq!(
        n1.times.len(),
        10_011,
        "10 000 in the file, 11 buffered, no text"
    );
    assert!(n1.times.is_sorted());
    // Time 5 s: the file's 5.0, then the later write -1.0.
    let at5: Vec<f64> = n1
        .times
        .iter()
        .zip(&n1.values)
        .filter(|(t, _)| **t == 5 * SEC)
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(at5, vec![5.0, -1.0]);
    assert_eq!(*n1.times.last().unwrap(), 10_009 * SEC);

    // Ranges inside one index block, across blocks, at the edges: the same counts as SQL.
    for (min, max) in [
        (4_500, 4_505),
        (4_000, 9_000),
        (0, 0),
        (9_999, 10_005),
        (-10, -1),
        (10_100, 30_000),
    ] {
        let (min, max) = (min * SEC, max * SEC);
        let got: usize = temp_of(&store, "n1", min, max)
            .await
            .iter()
            .map(|s| s.times.len())
            .sum();
        assert_eq!(
            got,
            sql_count(&store, "n1", min, max).await,
            "{min}..={max}"
        );
    }
    let window = &temp_of(&store, "n2", 4_500 * SEC, 4_505 * SEC).await[0];
    assert_eq!(
        window.values,
        vec![4500.0, 4501.0, 4502.0, 4503.0, 4504.0, 4505.0]
    );

    // Every series of a metric; none for an unknown one.
    let temps = store
        .select_series(
            None,
            &|k: &SeriesKey| k.metric == "temp",
            0,
            i64::MAX,
            None,
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(temps.len(), 3);
    let nothing = store
        .select_series(
            Some("nope"),
            &|_: &SeriesKey| true,
            0,
            i64::MAX,
            None,
            usize::MAX,
        )
        .await
        .unwrap();
    assert!(nothing.is_empty());

    // Reading past the limit is refused, not truncated.
    let refused = store
        .select_series(
            None,
            &|k: &SeriesKey| k.metric == "temp",
            0,
            i64::MAX,
            None,
            20_000,
        )
        .await;
    assert!(
        matches!(refused, Err(Error::TooManySamples { limit: 20_000 })),
        "{refused:?}"
    );

    // After a second flush and a compaction the answer is the same.
    store.flush().await.unwrap();
    assert_eq!(store.catalog().files.len(), 2);
    store.maintain(0).await.unwrap();
    assert_eq!(store.catalog().files.len(), 1);
    assert_eq!(
        temp_of(&store, "n1", i64::MIN, i64::MAX).await,
        all,
        "the same samples, the later write of 5 s still last"
    );
    store.shutdown().await.unwrap();
}

/// Sum and count of every float value, by SQL.
async fn sql_totals(store: &Store) -> String {
    let ctx = SessionContext::new();
    store.register(&ctx).unwrap();
    let query = "SELECT metric, sum(value), count(value), min(value), max(value) FROM samples \
                 GROUP BY metric UNION ALL \
                 SELECT 'rolled ' || metric, sum(sum), sum(count), min(min), max(max) \
                 FROM samples_1m GROUP BY metric UNION ALL \
                 SELECT 'last ' || metric, sum(last), count(last), min(last), max(last) \
                 FROM samples_1h GROUP BY metric ORDER BY 1";
    let batches = ctx.sql(query).await.unwrap().collect().await.unwrap();
    arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

/// A batch as an earlier version wrote it: every value a double in `value`, no mantissa.
fn without_mantissas(batch: &RecordBatch) -> RecordBatch {
    let column = |name: &str| Arc::clone(batch.column(batch.schema().index_of(name).unwrap()));
    let raw = column("value");
    let raw = raw.as_primitive::<Float64Type>();
    let mantissas = column("value_mantissa");
    let mantissas = mantissas.as_primitive::<Int64Type>();
    let scales = column("value_scale");
    let scales = scales.as_primitive::<Int8Type>();
    let values: Float64Array = (0..batch.num_rows())
        .map(|r| {
            if mantissas.is_valid(r) {
                Some(mantissas.value(r) as f64 / 10f64.powi(scales.value(r).into()))
            } else {
                raw.is_valid(r).then(|| raw.value(r))
            }
        })
        .collect();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.name().as_str() {
            "value_mantissa" | "value_scale" => continue,
            "value" => columns.push(Arc::new(values.clone()) as ArrayRef),
            _ => columns.push(Arc::clone(array)),
        }
        fields.push(Arc::clone(field));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// A rollup file as an earlier version wrote it: every aggregate a double, no decimals.
fn rollup_without_decimals(batch: &RecordBatch) -> RecordBatch {
    let column = |name: &str| Arc::clone(batch.column(batch.schema().index_of(name).unwrap()));
    let int64 = |name: &str| column(name).as_primitive::<Int64Type>().clone();
    let scales = column("scale");
    let scales = scales.as_primitive::<Int8Type>();
    let (min, count) = (int64("min_mantissa"), int64("count"));
    let decoded = |name: &str, offset: Option<&str>| -> ArrayRef {
        let raw = column(name);
        let raw = raw.as_primitive::<Float64Type>();
        let offset = offset.map(int64);
        let values: Float64Array = (0..batch.num_rows())
            .map(|r| {
                if scales.is_null(r) {
                    return Some(raw.value(r));
                }
                let multiplier = if name == "sum" { count.value(r) } else { 1 };
                let mantissa =
                    offset.as_ref().map_or(0, |o| o.value(r)) + multiplier * min.value(r);
                Some(mantissa as f64 / 10f64.powi(scales.value(r).into()))
            })
            .collect();
        Arc::new(values)
    };
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        match name {
            "scale" | "min_mantissa" | "max_offset" | "last_offset" | "sum_offset" => continue,
            "min" => columns.push(decoded(name, None)),
            "max" | "last" | "sum" => columns.push(decoded(name, Some(&format!("{name}_offset")))),
            _ => columns.push(Arc::clone(array)),
        }
        fields.push(Arc::new(field.as_ref().clone().with_nullable(false)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Rewrites the Parquet file at `path` with `rewrite` applied to each batch, without the
/// footer metadata; returns its new size and whether the old one had a series index.
fn rewrite_file(path: &std::path::Path, rewrite: fn(&RecordBatch) -> RecordBatch) -> (u64, bool) {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap();
    let indexed = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .is_some_and(|kv| {
            kv.iter()
                .any(|kv| kv.key.starts_with("exawatch.series_index"))
        });
    let batches: Vec<_> = reader
        .build()
        .unwrap()
        .map(|b| rewrite(&b.unwrap()))
        .collect();
    let schema = batches[0].schema();
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
    std::fs::write(path, &bytes).unwrap();
    (bytes.len() as u64, indexed)
}

/// Files written by an earlier version, without a series index and with every value a
/// double, are indexed from their label columns when first read, with the same answers;
/// rollup files likewise with every aggregate a double.
#[tokio::test]
async fn files_of_earlier_versions_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    // Reopened, so that the buffered samples are in files and rollups too.
    filled(dir.path()).await.shutdown().await.unwrap();
    let store = open(dir.path()).await;
    let expected = temp_of(&store, "n2", 0, i64::MAX).await;
    let totals = sql_totals(&store).await;
    for row in ["| load        | 18748125.0 ", "| rolled load | 18748125.0 "] {
        assert!(totals.contains(row), "{totals}");
    }
    store.shutdown().await.unwrap();

    // Rewrite the file without its footer metadata, and tell the catalog its new size.
    let catalog_path = dir.path().join("store/catalog.json");
    let mut catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&catalog_path).unwrap()).unwrap();
    let store_dir = dir.path().join("store");
    let file = store_dir.join(catalog["files"][0]["path"].as_str().unwrap());
    let (bytes, indexed) = rewrite_file(&file, without_mantissas);
    assert!(indexed, "files are written with their series index");
    catalog["files"][0]["bytes"] = bytes.into();
    for resolution in ["1m", "1h"] {
        for meta in catalog["rollups"][resolution].as_array_mut().unwrap() {
            let path = store_dir.join(meta["path"].as_str().unwrap());
            meta["bytes"] = rewrite_file(&path, rollup_without_decimals).0.into();
        }
    }
    std::fs::write(&catalog_path, serde_json::to_vec(&catalog).unwrap()).unwrap();

    let store = open(dir.path()).await;
    assert_eq!(temp_of(&store, "n2", 0, i64::MAX).await, expected);
    assert_eq!(sql_totals(&store).await, totals);
    store.shutdown().await.unwrap();
}

/// The latest sample at or before `at` and no older than `lookback` before it.
fn latest(s: &SeriesSamples, at: i64, lookback: i64) -> Option<(i64, f64)> {
    let i = s.times.partition_point(|&t| t <= at);
    (i > 0 && s.times[i - 1] >= at - lookback).then(|| (s.times[i - 1], s.values[i - 1]))
}

/// With steps, a selection keeps the sample each step uses, and not much more.
#[tokio::test]
async fn steps_keep_the_sample_each_step_uses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Every second but for a 400 s gap, then a second file that overlaps the first and
    // rewrites some of its times.
    // Text samples between the numbers, never kept, must not get in the way either.
    let texts = (0..3000).step_by(97).map(|s| {
        Sample::new(
            "temp",
            vec![("node".into(), "n1".into())],
            s * SEC + SEC / 2,
            Value::Text("note".into()),
        )
    });
    let first: Vec<Sample> = (0..3000)
        .filter(|s| !(1000..1400).contains(s))
        .map(|s| sample("temp", "n1", s, s as f64))
        .chain(texts)
        .collect();
    store.write(first).await.unwrap();
    store.flush().await.unwrap();
    let second: Vec<Sample> = (2500..3500)
        .step_by(7)
        .map(|s| sample("temp", "n1", s, -(s as f64)))
        .collect();
    store.write(second).await.unwrap();
    store.flush().await.unwrap();
    store
        .write(vec![sample("temp", "n1", 3600, 1.5)])
        .await
        .unwrap();
    let all = &temp_of(&store, "n1", i64::MIN, i64::MAX).await[0];

    for (first_ns, interval_ns, lookback_ns) in [
        (999_999, 15 * SEC, 300 * SEC - 1),
        (7 * SEC + 500, 60 * SEC, 100 * SEC),
        (-50 * SEC, SEC / 2, 0),
    ] {
        let steps = Steps {
            first_ns,
            interval_ns,
            lookback_ns,
            whole_windows: false,
        };
        let wanted = |key: &SeriesKey| key.metric == "temp";
        let thinned = store
            .select_series(None, &wanted, i64::MIN, i64::MAX, Some(steps), usize::MAX)
            .await
            .unwrap();
        let thinned = &thinned[0];
        let mut used = 0;
        let mut at = first_ns;
        while at <= 3700 * SEC {
            let expected = latest(all, at, lookback_ns);
            assert_eq!(
                latest(thinned, at, lookback_ns),
                expected,
                "{steps:?} at {at}"
            );
            used += usize::from(expected.is_some());
            at += interval_ns;
        }
        // Each kept sample is used by a step, but for the overlap of the two files and the
        // buffer's sample.
        assert!(
            thinned.times.len() <= used + 2 * 143 + 1,
            "{steps:?}: {} kept for {used} steps",
            thinned.times.len()
        );
    }

    // Range selectors with windows shorter than the interval: every sample of every window.
    for (first_ns, interval_ns, lookback_ns) in [
        (999_999, 120 * SEC, 60 * SEC - 1),
        (7 * SEC + 500, 600 * SEC, 300 * SEC),
        (-50 * SEC, 10 * SEC, 0),
    ] {
        let steps = Steps {
            first_ns,
            interval_ns,
            lookback_ns,
            whole_windows: true,
        };
        let wanted = |key: &SeriesKey| key.metric == "temp";
        let windowed = store
            .select_series(None, &wanted, i64::MIN, i64::MAX, Some(steps), usize::MAX)
            .await
            .unwrap();
        let windowed = &windowed[0];
        let mut used = 0;
        let mut at = first_ns;
        while at <= 3700 * SEC {
            let window = |s: &SeriesSamples| -> Vec<(i64, u64)> {
                s.times
                    .iter()
                    .zip(&s.values)
                    .filter(|(t, _)| (at - lookback_ns..=at).contains(*t))
                    .map(|(&t, v)| (t, v.to_bits()))
                    .collect()
            };
            let expected = window(all);
            assert_eq!(window(windowed), expected, "{steps:?} at {at}");
            used += expected.len();
            at += interval_ns;
        }
        assert!(used > 0);
        assert!(
            windowed.times.len() <= used + 1,
            "{steps:?}: {} kept for {used} in windows",
            windowed.times.len()
        );
    }
    store.shutdown().await.unwrap();
}

/// Values without a short decimal form stay in the file's float column, next to decimals
/// in the same file, and read back bit for bit; so do decimals of a file with none of them.
#[tokio::test]
async fn float_and_decimal_values_of_one_file_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let value = |node: &str, s: i64| match node {
        "thirds" => s as f64 / 3.0,
        _ => s as f64 / 8.0,
    };
    let write = |nodes: &'static [&'static str]| {
        nodes
            .iter()
            .flat_map(|node| (0..3000).map(move |s| sample("temp", node, s, value(node, s))))
            .collect::<Vec<_>>()
    };
    store.write(write(&["eighths", "thirds"])).await.unwrap();
    store.flush().await.unwrap();
    store.write(write(&["only_decimals"])).await.unwrap();
    store.flush().await.unwrap();
    for node in ["eighths", "thirds", "only_decimals"] {
        let series = temp_of(&store, node, i64::MIN, i64::MAX).await;
        assert_eq!(series.len(), 1, "{node}");
        let expected: Vec<u64> = (0..3000).map(|s| value(node, s).to_bits()).collect();
        let got: Vec<u64> = series[0].values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, expected, "{node}");
    }
}

/// Selections of `temp`: whole, in ranges within and across blocks, with steps and windows.
async fn temp_selections(store: &Store) -> Vec<Vec<SeriesSamples>> {
    let wanted = |key: &SeriesKey| key.metric == "temp";
    let steps = |first_ns, interval_ns, lookback_ns, whole_windows| {
        Some(Steps {
            first_ns,
            interval_ns,
            lookback_ns,
            whole_windows,
        })
    };
    let mut out = Vec::new();
    for (min, max, steps) in [
        (i64::MIN, i64::MAX, None),
        (4_500 * SEC, 4_505 * SEC, None),
        (100 * SEC, 9_000 * SEC, None),
        (0, i64::MAX, steps(SEC / 2, 60 * SEC, 300 * SEC, false)),
        (0, i64::MAX, steps(0, 600 * SEC, 60 * SEC, true)),
    ] {
        let mut got = store
            .select_series(None, &wanted, min, max, steps, usize::MAX)
            .await
            .unwrap();
        got.sort_by(|a, b| a.key.cmp(&b.key));
        out.push(got);
    }
    out
}

/// The store's `exawatch_read_cache_hits`.
fn cache_hits(registry: &Registry) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("exawatch_read_cache_hits_total "))
        .expect("the hits counter")
        .parse()
        .unwrap()
}

/// Blocks decoded for one selection serve the next ones from memory, with the same samples
/// as a store that keeps none; compaction's new file is read, not the replaced files' blocks.
#[tokio::test]
async fn selections_from_cached_blocks_match_uncached_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path()).await;
    store.flush().await.unwrap();
    store.shutdown().await.unwrap();

    let uncached_config = StoreConfig {
        read_cache_mib: 0,
        ..StoreConfig::test_config()
    };
    let mut registry = Registry::default();
    let uncached = support::open_registered(dir.path(), uncached_config, &mut registry).await;
    let expected = temp_selections(&uncached).await;
    assert_eq!(cache_hits(&registry), 0);
    uncached.shutdown().await.unwrap();

    let mut registry = Registry::default();
    let store = support::open_registered(dir.path(), compacting(), &mut registry).await;
    assert_eq!(temp_selections(&store).await, expected, "first read");
    let hits = cache_hits(&registry);
    assert_eq!(temp_selections(&store).await, expected, "from the cache");
    assert!(
        cache_hits(&registry) > hits,
        "the second round hit the cache"
    );

    // A changed value in a compacted file: the answer follows the new file.
    store
        .write(vec![sample("temp", "n2", 4_502, 99.0)])
        .await
        .unwrap();
    store.flush().await.unwrap();
    store.maintain(0).await.unwrap();
    assert_eq!(store.catalog().files.len(), 1);
    let window = &temp_of(&store, "n2", 4_502 * SEC, 4_502 * SEC).await[0];
    assert_eq!(window.values, vec![4502.0, 99.0]);
    store.shutdown().await.unwrap();
}

/// Files of successive flushes follow one another in time: their parts are joined in order,
/// whole and clipped to a range across the boundary, from the files and then from the cache.
#[tokio::test]
async fn files_that_follow_one_another_join_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for seconds in [0..5_000, 5_000..9_000, 9_000..9_500] {
        let samples: Vec<Sample> = seconds.map(|s| sample("temp", "n1", s, s as f64)).collect();
        store.write(samples).await.unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.catalog().files.len(), 3);
    for _ in 0..2 {
        let all = &temp_of(&store, "n1", i64::MIN, i64::MAX).await[0];
        let expected: Vec<f64> = (0..9_500).map(|s| s as f64).collect();
        assert_eq!(all.values, expected);
        assert_eq!(all.times, (0..9_500).map(|s| s * SEC).collect::<Vec<_>>());
        let across = &temp_of(&store, "n1", 4_990 * SEC, 9_010 * SEC).await[0];
        let expected: Vec<f64> = (4_990..=9_010).map(|s| s as f64).collect();
        assert_eq!(across.values, expected);
    }
    store.shutdown().await.unwrap();
}

/// Of two files with a sample at the same time, the newer one's comes last even when only
/// the newer file's blocks are in the cache (cached parts used to be taken first).
#[tokio::test]
async fn the_later_write_of_a_time_stays_last_whatever_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .write(vec![sample("temp", "n1", 5, 1.0)])
        .await
        .unwrap();
    store.flush().await.unwrap();
    store
        .write(vec![
            sample("temp", "n1", 5, 2.0),
            sample("temp", "n1", 200, 3.0),
        ])
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.catalog().files.len(), 2);
    // Only the newer file holds t = 200: reading it caches its block, t = 5 included.
    assert_eq!(
        temp_of(&store, "n1", 150 * SEC, 250 * SEC).await[0].values,
        [3.0]
    );
    let at_five = &temp_of(&store, "n1", 0, 10 * SEC).await[0];
    assert_eq!(at_five.times, [5 * SEC, 5 * SEC]);
    assert_eq!(at_five.values, [1.0, 2.0]);
    store.shutdown().await.unwrap();
}
