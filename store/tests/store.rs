//! The store through its public API: writes, SQL over buffer and files, flush, replay.

#[path = "support/store.rs"]
mod support;

use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use exawatch_protocol::{Sample, Value};
use exawatch_store::{Store, StoreConfig};
use support::open;

fn sample(metric: &str, node: &str, secs: i64, value: Value) -> Sample {
    Sample::new(
        metric,
        vec![("node".into(), node.into()), ("org".into(), "o".into())],
        secs * 1_000_000_000,
        value,
    )
}

async fn sql(store: &Store, query: &str) -> String {
    let ctx = SessionContext::new();
    store.register(&ctx).unwrap();
    let batches = ctx.sql(query).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test]
async fn writes_are_queryable_at_once_then_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreConfig::test_config()).await;
    store
        .write(vec![
            sample("temp", "n1", 100, Value::Float(40.5)),
            sample("temp", "n2", 100, Value::Float(41.0)),
            sample("status", "n1", 101, Value::Text("OK".into())),
        ])
        .await
        .unwrap();
    let query = "SELECT time, metric, node, value, text FROM samples ORDER BY metric, node";
    let expected = "\
+----------------------+--------+------+-------+------+
| time                 | metric | node | value | text |
+----------------------+--------+------+-------+------+
| 1970-01-01T00:01:41Z | status | n1   |       | OK   |
| 1970-01-01T00:01:40Z | temp   | n1   | 40.5  |      |
| 1970-01-01T00:01:40Z | temp   | n2   | 41.0  |      |
+----------------------+--------+------+-------+------+";
    assert_eq!(sql(&store, query).await, expected);

    store.flush().await.unwrap();
    assert_eq!(store.buffered_rows(), 0);
    let catalog = store.catalog();
    assert_eq!(catalog.files.len(), 1);
    assert_eq!(catalog.files[0].rows, 3);
    assert_eq!(catalog.files[0].min_time, 100_000_000_000);
    assert_eq!(
        sql(&store, query).await,
        expected,
        "same answer from the file"
    );

    // New data and a new tag column after the flush: buffer and file together.
    store
        .write(vec![Sample::new(
            "temp",
            vec![("node".into(), "n3".into()), ("rack".into(), "r7".into())],
            200_000_000_000,
            Value::Float(39.0),
        )])
        .await
        .unwrap();
    assert_eq!(
        sql(
            &store,
            "SELECT count(*) AS n, count(rack) AS racks FROM samples WHERE metric = 'temp'"
        )
        .await,
        "+---+-------+\n| n | racks |\n+---+-------+\n| 3 | 1     |\n+---+-------+"
    );
    // Time pruning: only the new row is in range.
    assert_eq!(
        sql(
            &store,
            "SELECT node FROM samples WHERE time >= '1970-01-01T00:03:00Z'"
        )
        .await,
        "+------+\n| node |\n+------+\n| n3   |\n+------+"
    );
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reopened_store_replays_what_was_not_flushed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), StoreConfig::test_config()).await;
        store
            .write(vec![sample("a", "n1", 1, Value::Float(1.0))])
            .await
            .unwrap();
        store.flush().await.unwrap();
        store
            .write(vec![sample("a", "n1", 2, Value::Float(2.0))])
            .await
            .unwrap();
        store
            .write_waiting(vec![sample("a", "n1", 3, Value::Float(3.0))].into(), false)
            .await
            .unwrap();
        // Dropped without shutdown: as if the process died (the WAL thread may still be
        // finishing the last write; the reopen below waits for nothing else).
        let _ = store.write(vec![]).await;
        std::mem::forget(store);
    }
    // Give the orphaned WAL thread a moment to finish its queued write.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let store = open(dir.path(), StoreConfig::test_config()).await;
    assert_eq!(
        sql(&store, "SELECT sum(value) AS s, count(*) AS n FROM samples").await,
        "+-----+---+\n| s   | n |\n+-----+---+\n| 6.0 | 3 |\n+-----+---+"
    );
    store.shutdown().await.unwrap();
    // A clean shutdown leaves everything in files and nothing to replay.
    let store = open(dir.path(), StoreConfig::test_config()).await;
    assert_eq!(store.buffered_rows(), 0);
    assert_eq!(store.catalog().files.iter().map(|f| f.rows).sum::<u64>(), 3);
    store.shutdown().await.unwrap();
}

/// Files in the store's `files/` directory.
fn files_on_disk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("store/files")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn compaction_merges_small_files_into_one_sorted_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        compaction_min_files: 4,
        delete_delay_secs: 0.0,
        ..StoreConfig::test_config()
    };
    let store = open(dir.path(), config).await;
    // Five flushes, interleaving series and times; the fourth brings a new tag column.
    for round in 0..5i64 {
        let mut samples = Vec::new();
        for node in ["n2", "n1", "n3"] {
            for metric in ["temp", "load"] {
                let mut tags = vec![("node".to_owned(), node.to_owned())];
                if round >= 3 && node == "n1" {
                    tags.push(("rack".to_owned(), "r1".to_owned()));
                }
                let secs = 1_000 + round * 10;
                let value = (round * 100 + secs) as f64;
                samples.push(Sample::new(
                    metric,
                    tags,
                    secs * 1_000_000_000,
                    Value::Float(value),
                ));
            }
        }
        store.write(samples).await.unwrap();
        store.flush().await.unwrap();
    }
    let query = "SELECT metric, node, rack, time, value FROM samples ORDER BY metric, node, rack NULLS FIRST, time";
    let before = sql(&store, query).await;
    assert_eq!(store.catalog().files.len(), 5);

    store.maintain(0).await.unwrap();
    let catalog = store.catalog();
    assert_eq!(catalog.files.len(), 1, "{catalog:?}");
    assert_eq!(catalog.files[0].rows, 30);
    assert_eq!(
        catalog.files[0].series, 8,
        "2 metrics × (3 nodes + n1 with a rack)"
    );
    assert_eq!(
        (catalog.files[0].min_time, catalog.files[0].max_time),
        (1_000_000_000_000, 1_040_000_000_000)
    );
    assert_eq!(
        sql(&store, query).await,
        before,
        "same answers from the merged file"
    );
    assert_eq!(
        files_on_disk(dir.path()),
        1,
        "inputs deleted once their delay passed"
    );

    // The merged file is in the table's sort order: metric, node, rack (nulls first), time.
    let path = dir.path().join("store").join(&catalog.files[0].path);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    // Values are compared above; here the order (files hold `value` as mantissa and scale).
    let keys = ["time", "metric", "text", "node", "rack"];
    let batches: Vec<_> = reader
        .map(|b| {
            let b = b.unwrap();
            let columns = keys.map(|k| b.schema().index_of(k).unwrap());
            b.project(&columns).unwrap()
        })
        .collect();
    let text = pretty_format_batches(&batches).unwrap().to_string();
    let ctx = SessionContext::new();
    store.register(&ctx).unwrap();
    let ordered = ctx
        .sql("SELECT time, metric, text, node, rack FROM samples ORDER BY metric, node, rack NULLS FIRST, time")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(text, pretty_format_batches(&ordered).unwrap().to_string());
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_drops_old_files_and_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        retention_days: 1.0,
        delete_delay_secs: 0.0,
        compaction_min_files: 100,
        ..StoreConfig::test_config()
    };
    let store = open(dir.path(), config).await;
    let day = 86_400i64;
    let now = 100 * day;
    store
        .write(vec![sample("m", "old", now - 3 * day, Value::Float(1.0))])
        .await
        .unwrap();
    store.flush().await.unwrap();
    store
        .write(vec![sample(
            "m",
            "recent",
            now - day / 2,
            Value::Float(2.0),
        )])
        .await
        .unwrap();
    store.flush().await.unwrap();
    store
        .write(vec![sample(
            "m",
            "buffered",
            now - 5 * day,
            Value::Float(3.0),
        )])
        .await
        .unwrap();

    store.maintain(now * 1_000_000_000).await.unwrap();
    assert_eq!(
        sql(&store, "SELECT node FROM samples ORDER BY node").await,
        "+----------+\n| node     |\n+----------+\n| buffered |\n| recent   |\n+----------+",
        "the old file is gone; buffered rows wait for their file"
    );
    assert_eq!(store.catalog().files.len(), 1);
    assert_eq!(files_on_disk(dir.path()), 1);
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn files_left_by_an_interrupted_compaction_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreConfig::test_config()).await;
    store
        .write(vec![sample("m", "n", 1, Value::Float(1.0))])
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    // A merged file written, then a crash before the catalog named it.
    std::fs::write(
        dir.path().join("store/files/00000000000000000099.parquet"),
        b"partial",
    )
    .unwrap();
    assert_eq!(files_on_disk(dir.path()), 2);
    let store = open(dir.path(), StoreConfig::test_config()).await;
    assert_eq!(files_on_disk(dir.path()), 1);
    assert_eq!(
        sql(&store, "SELECT count(*) AS n FROM samples").await,
        "+---+\n| n |\n+---+\n| 1 |\n+---+"
    );
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn rollups_agree_with_the_raw_data_before_and_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        compaction_min_files: 2,
        delete_delay_secs: 0.0,
        ..StoreConfig::test_config()
    };
    let store = open(dir.path(), config).await;
    // Sums may differ in the last bits with the order of addition: compare rounded.
    // Two series, a sample every 7 s for 10 minutes, flushed every 100 s so that flushes cut
    // minute buckets in two; a text sample that rollups skip.
    let mut time = 3_600i64 * 1000;
    for flush in 0..6 {
        let mut samples = Vec::new();
        while time < 3_600 * 1000 + (flush + 1) * 100 {
            for node in ["n1", "n2"] {
                let value =
                    ((time * 7919) % 1000) as f64 / 10.0 + if node == "n2" { 1000.0 } else { 0.0 };
                samples.push(sample("temp", node, time, Value::Float(value)));
            }
            time += 7;
        }
        samples.push(sample("state", "n1", time, Value::Text("ok".into())));
        store.write(samples).await.unwrap();
        store.flush().await.unwrap();
    }
    let expected = |width: &str| {
        format!(
            "SELECT date_bin(interval '{width}', time) AS time, node, min(value) AS min, max(value) AS max, \
             round(sum(value), 6) AS sum, count(value) AS count, last_value(value ORDER BY time) AS last, \
             round(avg(value), 6) AS avg \
             FROM samples WHERE metric = 'temp' GROUP BY 1, node ORDER BY 1, node"
        )
    };
    let rolled = |table: &str| {
        format!(
            "SELECT time, node, min, max, round(sum, 6) AS sum, count, last, round(avg, 6) AS avg \
             FROM {table} WHERE metric = 'temp' ORDER BY time, node"
        )
    };
    for (width, table) in [("1 minute", "samples_1m"), ("1 hour", "samples_1h")] {
        assert_eq!(
            sql(&store, &rolled(table)).await,
            sql(&store, &expected(width)).await,
            "{table}"
        );
    }
    assert_eq!(store.catalog().rollups["1m"].len(), 6);
    assert_eq!(
        sql(
            &store,
            "SELECT count(*) AS n FROM samples_1m WHERE metric = 'state'"
        )
        .await,
        "+---+\n| n |\n+---+\n| 0 |\n+---+",
        "text samples are not rolled up"
    );

    // Compaction merges the rollup files too, combining the partial buckets.
    while store.catalog().rollups["1m"].len() > 1 {
        store.maintain(0).await.unwrap();
    }
    let catalog = store.catalog();
    assert_eq!(
        catalog.rollups["1m"][0].rows,
        2 * 10,
        "one row per series and minute"
    );
    assert_eq!(catalog.rollups["1h"].len(), 1);
    assert_eq!(catalog.rollups["1h"][0].rows, 2);
    for (width, table) in [("1 minute", "samples_1m"), ("1 hour", "samples_1h")] {
        assert_eq!(
            sql(&store, &rolled(table)).await,
            sql(&store, &expected(width)).await,
            "{table}"
        );
    }
    store.shutdown().await.unwrap();
}

/// Rows (count and sum of values) a store answers with.
async fn rows(store: &Store) -> (u64, u64) {
    let ctx = SessionContext::new();
    store.register(&ctx).unwrap();
    let batches = ctx
        .sql("SELECT count(*) AS n, CAST(coalesce(sum(value), 0) AS BIGINT) AS s FROM samples")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let column = |i: usize| {
        let array = batches[0].column(i);
        arrow::array::cast::AsArray::as_primitive::<arrow::datatypes::Int64Type>(array.as_ref())
            .value(0) as u64
    };
    (column(0), column(1))
}

/// Waits (up to 10 s) until `store` answers with `expected` rows, checking at every look
/// that it never answers with more: a row counted twice would show.
async fn settles_at(store: &Store, expected: (u64, u64), what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let seen = rows(store).await;
        assert!(
            seen.0 <= expected.0,
            "{what}: {seen:?} rows, more than {expected:?}"
        );
        if seen == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {seen:?}, not {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_querier_answers_with_an_ingesters_memory_each_row_once() {
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        object_store_url: format!("file://{}", dir.path().join("objects").display()),
        ingester: "a".into(),
        compaction_min_files: 2,
        ..StoreConfig::test_config()
    };
    let ingester = open(&dir.path().join("a"), config.clone()).await;
    ingester.advertise("http://a.example:9090").await.unwrap();
    let querier_config = StoreConfig {
        ingester: String::new(),
        ..config.clone()
    };
    let querier = Store::open_querier(&dir.path().join("q"), &querier_config)
        .await
        .unwrap();
    // The ingester as the querier reaches it: in-process here, `None` while "down".
    let reachable = Arc::new(Mutex::new(Some(ingester.clone())));
    let fetch = {
        let reachable = Arc::clone(&reachable);
        move |url: String, request| {
            let ingester = reachable.lock().unwrap().clone();
            async move {
                assert_eq!(url, "http://a.example:9090");
                let ingester = ingester.ok_or("connection refused")?;
                ingester.unflushed(request).map_err(|e| e.to_string())
            }
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let refresh = {
        let querier = querier.clone();
        tokio::spawn(async move {
            let interval = std::time::Duration::from_millis(5);
            querier
                .run_refresh(interval, fetch, async move {
                    let _ = stopped.await;
                })
                .await;
        })
    };

    // Distinct values: a lost or doubled row changes the sum as well as the count.
    let mut written = (0u64, 0u64);
    let mut next = 0i64;
    let mut write = async |store: &Store, points: i64, written: &mut (u64, u64)| {
        let samples: Vec<Sample> = (next..next + points)
            .map(|i| {
                sample(
                    "temp",
                    &format!("n{}", i % 7),
                    1_000 + i,
                    Value::Float(i as f64),
                )
            })
            .collect();
        store.write(samples).await.unwrap();
        written.0 += points as u64;
        written.1 += (next..next + points).sum::<i64>() as u64;
        next += points;
    };
    write(&ingester, 1_000, &mut written).await;
    settles_at(&querier, written, "nothing flushed yet").await;
    assert!(querier.catalog().files.is_empty());

    // Flushes while the querier keeps asking, some with rows written while they run.
    for round in 0..4 {
        write(&ingester, 300, &mut written).await;
        let flushing = {
            let ingester = ingester.clone();
            tokio::spawn(async move { ingester.flush().await.unwrap() })
        };
        write(&ingester, 50, &mut written).await;
        flushing.await.unwrap();
        settles_at(&querier, written, &format!("flush {round}")).await;
    }
    assert!(
        !querier.catalog().files.is_empty(),
        "the querier sees the files"
    );

    // Compaction replaces files: the same rows.
    ingester.maintain(i64::MAX / 2).await.unwrap();
    settles_at(&querier, written, "after compaction").await;

    // Unreachable: the files only; back: everything again.
    ingester.flush().await.unwrap();
    let flushed = written;
    *reachable.lock().unwrap() = None;
    write(&ingester, 100, &mut written).await;
    settles_at(&querier, flushed, "ingester unreachable").await;
    *reachable.lock().unwrap() = Some(ingester.clone());
    settles_at(&querier, written, "ingester back").await;

    // A restart: a new numbering of rows (epoch), the files as they were.
    ingester.shutdown().await.unwrap();
    drop(ingester);
    let ingester = open(&dir.path().join("a"), config).await;
    write(&ingester, 70, &mut written).await;
    *reachable.lock().unwrap() = Some(ingester.clone());
    settles_at(&querier, written, "after a restart").await;
    ingester.shutdown().await.unwrap();

    let _ = stop.send(());
    refresh.await.unwrap();
}
