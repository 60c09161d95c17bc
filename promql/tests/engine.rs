//! The engine over a real store on odd and hostile queries: every one gets an answer or an
//! error, never a panic, and errors are classified as Prometheus' API classifies them.

use std::sync::Arc;
use std::time::Duration;

use exawatch_promql::promqltest::TestStore;
use exawatch_promql::{Engine, EngineOptions, Error, QueryValue, StoreSource};
use exawatch_protocol::{Sample, Value};

async fn engine(options: EngineOptions) -> (Engine, TestStore) {
    let test = TestStore::open().await.unwrap();
    let store = test.store.clone();
    let mut samples = Vec::new();
    for k in 0..100i64 {
        for node in ["n1", "n2"] {
            samples.push(Sample::new(
                "power",
                vec![("node".into(), node.into())],
                k * 15_000_000_000,
                Value::Float(100.0 + k as f64),
            ));
        }
    }
    store.write(samples).await.unwrap();
    let source = StoreSource::new(store, 64 << 20);
    (Engine::new(Arc::new(source), options), test)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_get_answers_or_errors() {
    let (engine, _dir) = engine(EngineOptions::default()).await;
    let queries = [
        "power @ 9999999999",
        "power @ -9999999999",
        "power offset 10000y",
        "power offset -10000y",
        "rate(power[10000y])",
        "rate(power[1ms])",
        "max_over_time(power[1h:1ms])",
        "max_over_time(power[1ms:1h])",
        "sum_over_time(rate(power[5m])[30m:1m] offset 1h)",
        "topk(1e300, power)",
        "topk(-1e300, power)",
        "quantile(Inf, power)",
        "histogram_quantile(0.5, power)",
        "label_replace(power, \"x\", \"$1\", \"node\", \"(\")",
        "label_replace(power, \"\", \"$1\", \"node\", \"(.*)\")",
        "count_values(\"\", power)",
        "power / on(node) group_left power",
        "power + power{node=\"nope\"}",
        "-power",
        "power == bool power",
        "1 / 0",
        "time() % 0",
        "vector(NaN) > 1",
        "absent(nope{a=\"b\", a=\"c\"})",
        "round(power, 0)",
        "clamp(power, 10, 1)",
        "sort_by_label(power, \"node\", \"missing\")",
        "{__name__=~\".+\"}",
        "{node!~\"x\"}",
        "\"just a string\"",
        "power[5m]",
        "day_of_week(vector(-1e18))",
        "holt_winters(power[5m], 2, 0.5)",
    ];
    for query in queries {
        let _ = engine.instant(query, 1_000_000).await;
        let _ = engine.range(query, 0, 1_500_000, 15_000).await;
    }
    // Classification.
    assert!(matches!(
        engine.instant("sum(", 0).await,
        Err(Error::Parse { .. })
    ));
    assert!(matches!(
        engine.range("power[5m]", 0, 60_000, 15_000).await,
        Err(Error::BadQuery { .. })
    ));
    assert!(matches!(
        engine.range("power", 0, 1_000_000_000, 1).await,
        Err(Error::BadQuery { .. })
    ));
    assert!(matches!(
        engine.instant("power + on() power", 60_000).await,
        Err(Error::Execution { .. })
    ));
    match engine.instant("sum(power)", 60_000).await.unwrap().value {
        QueryValue::Vector(series) => assert_eq!(series[0].points[0].v, 2.0 * 104.0),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_stop_queries() {
    let (engine, _dir) = engine(EngineOptions {
        max_samples: 100,
        ..EngineOptions::default()
    })
    .await;
    assert!(matches!(
        engine.range("power", 0, 1_500_000, 15_000).await,
        Err(Error::Limit { .. })
    ));
    let (engine, _dir) = engine_with_timeout().await;
    assert!(matches!(
        engine
            .range("max_over_time(power[1h:1s])", 0, 1_500_000, 1_000)
            .await,
        Err(Error::Timeout)
    ));
}

async fn engine_with_timeout() -> (Engine, TestStore) {
    engine(EngineOptions {
        timeout: Some(Duration::from_nanos(1)),
        ..EngineOptions::default()
    })
    .await
}
