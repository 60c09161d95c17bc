//! SQL as API users send it: any text run through the read-only options in a bounded session
//! over a store holding one flushed file and buffered rows never panics; it is a result or an
//! error, and the store still answers a plain query afterwards.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use exawatch_protocol::{Sample, Value};
use exawatch_store::{Store, StoreConfig};
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;


fn store() -> &'static (tokio::runtime::Runtime, Store, tempfile::TempDir) {
    static STORE: OnceLock<(tokio::runtime::Runtime, Store, tempfile::TempDir)> = OnceLock::new();
    STORE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = runtime.block_on(async {
            let mut registry = prometheus_client::registry::Registry::default();
            let store = Store::open(dir.path(), StoreConfig::default(), &mut registry).await.unwrap();
            let sample = |series: usize, k: usize| {
                let tags = vec![("node".to_owned(), format!("n{series}")), ("rack".to_owned(), "r1".to_owned())];
                Sample::new(["temp", "power", "util"][series], tags, k as i64 * 1_000_000_000, Value::Float(k as f64))
            };
            store.write((0..3).flat_map(|s| (0..20).map(move |k| sample(s, k))).collect::<Vec<_>>()).await.unwrap();
            store.flush().await.unwrap();
            store.write((0..20).map(|k| sample(0, 100 + k)).collect::<Vec<_>>()).await.unwrap();
            store
        });
        (runtime, store, dir)
    })
}

/// Runs `sql` as the API does; the number of rows, or `None` on an error.
async fn run(store: &Store, sql: &str) -> Option<usize> {
    let ctx = store.query_context(64 << 20).ok()?;
    let frame = ctx.sql_with_options(sql, Store::read_only_sql()).await.ok()?;
    let mut stream = frame.execute_stream().await.ok()?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch.ok()?.num_rows();
        if rows > 100_000 {
            return None;
        }
    }
    Some(rows)
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let (runtime, store, _) = store();
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(2), run(store, sql)).await;
        let count = run(store, "SELECT count(*) FROM samples").await;
        assert_eq!(count, Some(1), "the store still answers");
    });
});
