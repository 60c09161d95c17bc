//! Train → save → load → score against a real store: synthetic telemetry of 5 nodes written
//! with `Store::write`, a model trained from it through DataFusion features, saved in the
//! object store, loaded back, scoring a new window in which node n3 overheats; the anomaly is
//! written back, read through the `anomalies` view and the query API, and reported.

use std::collections::HashMap;

use exawatch_analytics::anomalies::{self, AnomalyQuery};
use exawatch_analytics::train::TrainRequest;
use exawatch_analytics::{features, model, report, score};
use exawatch_protocol::{Sample, Value};
use exawatch_store::{Store, StoreConfig};

const WINDOW_NS: i64 = 10_000_000_000;
const T0: i64 = 1_700_000_000_000_000_000;
const MEMORY: usize = 256 << 20;

fn node_samples(node: usize, t: i64, hot: bool, rng: &mut fastrand::Rng) -> Vec<Sample> {
    let tags = |plugin: &str| {
        vec![
            ("node".to_owned(), format!("n{node}")),
            ("plugin".to_owned(), plugin.to_owned()),
        ]
    };
    let secs = (t - T0) as f64 / 1e9;
    let load = 0.5 + 0.3 * (secs / 60.0 + node as f64).sin();
    let temp = 40.0 + 20.0 * load + rng.f64() + if hot { 30.0 } else { 0.0 };
    vec![
        Sample::new(
            "power",
            tags("ipmi"),
            t,
            Value::Float(200.0 + 200.0 * load + rng.f64() * 5.0),
        ),
        Sample::new("temp", tags("ipmi"), t, Value::Float(temp)),
        Sample::new(
            "util",
            tags("procfs"),
            t,
            Value::Float(100.0 * load + rng.f64() * 3.0),
        ),
        // A counter (bytes at a rate of 1 + load MB/s, the integral of it): becomes a rate
        // feature.
        Sample::new(
            "rx_bytes",
            tags("procfs"),
            t,
            Value::Float(1e6 * (1.5 * secs - 18.0 * (secs / 60.0 + node as f64).cos())),
        ),
    ]
}

async fn write_windows(store: &Store, windows: std::ops::Range<i64>, hot_from: Option<i64>) {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut samples = Vec::new();
    for w in windows {
        for step in 0..5 {
            let t = T0 + w * WINDOW_NS + step * 2_000_000_000;
            for node in 0..5 {
                let hot = node == 3 && hot_from.is_some_and(|h| w >= h);
                samples.extend(node_samples(node, t, hot, &mut rng));
            }
        }
    }
    store.write(samples).await.unwrap();
}

#[tokio::test]
async fn train_save_load_score_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let store = Store::open(dir.path(), StoreConfig::test_config(), &mut registry)
        .await
        .unwrap();
    write_windows(&store, 0..60, None).await;
    // Half of it in Parquet files, so features read both files and the buffer.
    store.flush().await.unwrap();
    write_windows(&store, 60..62, Some(61)).await;

    let request: TrainRequest = serde_json::from_value(serde_json::json!({
        "name": "roundtrip",
        "detector": "ensemble",
        "window_secs": 10.0,
        "from": (T0 as f64 / 1e9).to_string(),
        "to": ((T0 + 60 * WINDOW_NS) as f64 / 1e9).to_string(),
    }))
    .unwrap();
    let info = exawatch_analytics::train::train(&store, &request, MEMORY)
        .await
        .unwrap();
    assert_eq!((info.version, info.entities, info.rows), (1, 5, 300));
    assert_eq!(
        info.features,
        [
            "ipmi/power",
            "procfs/rx_bytes:rate",
            "ipmi/temp",
            "procfs/util"
        ]
    );
    // A second training is version 2; the list has both.
    let again = exawatch_analytics::train::train(&store, &request, MEMORY)
        .await
        .unwrap();
    assert_eq!(again.version, 2);
    let listed = model::list(&store).await.unwrap();
    assert_eq!(listed.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);

    let loaded = model::load_latest(&store, "roundtrip")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.info, again);
    let mut states = HashMap::new();
    let healthy = score::score_window(&store, &loaded, &mut states, T0 + 60 * WINDOW_NS, 2, MEMORY)
        .await
        .unwrap();
    assert_eq!(healthy.scored, 5);
    assert!(healthy.anomalies.is_empty(), "{:?}", healthy.anomalies);
    let hot = score::score_window(&store, &loaded, &mut states, T0 + 61 * WINDOW_NS, 2, MEMORY)
        .await
        .unwrap();
    assert_eq!(hot.anomalies.len(), 1, "{:?}", hot.anomalies);
    assert_eq!(hot.anomalies[0].node, "n3");
    assert_eq!(hot.anomalies[0].top_metrics[0].0, "ipmi/temp");
    store.write(hot.samples).await.unwrap();

    let query = AnomalyQuery {
        from_ns: T0,
        to_ns: T0 + 100 * WINDOW_NS,
        model: Some("roundtrip".into()),
        node: None,
        limit: 10,
    };
    let found = anomalies::query(&store, &query, MEMORY).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], hot.anomalies[0]);
    let ctx = store.query_context(MEMORY).unwrap();
    anomalies::register_view(&ctx).await.unwrap();
    let rows = ctx
        .sql("SELECT node, model, score > threshold AS above, top_metrics FROM anomalies")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&rows)
        .unwrap()
        .to_string();
    assert!(
        text.contains("| n3   | roundtrip | true  | ipmi/temp="),
        "{text}"
    );

    let made = report::generate(&store, T0, T0 + 100 * WINDOW_NS, MEMORY)
        .await
        .unwrap();
    assert_eq!((made.anomalies, made.nodes), (1, 1));
    let html = String::from_utf8(report::html(&store, &made.id).await.unwrap().unwrap()).unwrap();
    assert!(
        html.contains("<td>n3</td>") && html.contains("<path class=\"node\" d=\"M"),
        "{html}"
    );
    assert_eq!(report::list(&store).await.unwrap(), vec![made]);
    assert!(report::html(&store, "../catalog").await.unwrap().is_none());

    // Bad requests are refused with reasons.
    let bad = TrainRequest {
        name: "x".into(),
        ..request.clone()
    };
    let bad = TrainRequest {
        spec: features::FeatureSpec {
            group_by: "rack".into(),
            ..bad.spec.clone()
        },
        ..bad
    };
    let error = exawatch_analytics::train::train(&store, &bad, MEMORY)
        .await
        .unwrap_err();
    assert!(error.is_user_error(), "{error}");
    assert!(model::load_latest(&store, "../x").await.is_err());
    store.shutdown().await.unwrap();
}
