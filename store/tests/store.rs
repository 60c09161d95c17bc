//! The store through its public API: writes, SQL over buffer and files, flush, replay.

use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use exawatch_protocol::{Sample, Value};
use exawatch_store::{Store, StoreConfig};
use prometheus_client::registry::Registry;

fn sample(metric: &str, node: &str, secs: i64, value: Value) -> Sample {
    Sample::new(
        metric,
        vec![("node".into(), node.into()), ("org".into(), "o".into())],
        secs * 1_000_000_000,
        value,
    )
}

async fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreConfig::test_config(), &mut Registry::default())
        .await
        .unwrap()
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
    let store = open(dir.path()).await;
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
        let store = open(dir.path()).await;
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
            .write_unconfirmed(vec![sample("a", "n1", 3, Value::Float(3.0))])
            .await
            .unwrap();
        // Dropped without shutdown: as if the process died (the WAL thread may still be
        // finishing the last write; the reopen below waits for nothing else).
        let _ = store.write(vec![]).await;
        std::mem::forget(store);
    }
    // Give the orphaned WAL thread a moment to finish its queued write.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let store = open(dir.path()).await;
    assert_eq!(
        sql(&store, "SELECT sum(value) AS s, count(*) AS n FROM samples").await,
        "+-----+---+\n| s   | n |\n+-----+---+\n| 6.0 | 3 |\n+-----+---+"
    );
    store.shutdown().await.unwrap();
    // A clean shutdown leaves everything in files and nothing to replay.
    let store = open(dir.path()).await;
    assert_eq!(store.buffered_rows(), 0);
    assert_eq!(store.catalog().files.iter().map(|f| f.rows).sum::<u64>(), 3);
    store.shutdown().await.unwrap();
}
