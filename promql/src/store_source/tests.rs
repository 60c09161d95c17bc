//! The store source over a real store: matcher semantics (absent label = ""), anchored
//! regexes, time ranges, staleness markers through Parquet, and the pushed-down plan.

use exawatch_protocol::{Sample, Value};
use promql_parser::label::Matcher;
use promql_parser::parser::{Expr, parse};

use super::*;
use crate::promqltest::TestStore;
use crate::value::{is_stale, stale_nan};

/// A store with `power` and `temp` series, in a file and in the buffer.
async fn store() -> TestStore {
    let test = TestStore::open().await.unwrap();
    let store = &test.store;
    let sample = |metric: &str, tags: &[(&str, &str)], t_ms: i64, v: f64| {
        Sample::new(
            metric,
            tags.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            t_ms * 1_000_000,
            Value::Float(v),
        )
    };
    store
        .write(vec![
            sample("power", &[("node", "n1"), ("rack", "r1")], 1_000, 10.0),
            sample("power", &[("node", "n10"), ("rack", "r1")], 1_000, 20.0),
            sample("power", &[("node", "n2")], 1_000, 30.0),
            sample("temp", &[("node", "n1")], 1_000, 40.0),
            sample(
                "power",
                &[("node", "n1"), ("rack", "r1")],
                2_000,
                stale_nan(),
            ),
        ])
        .await
        .unwrap();
    store.flush().await.unwrap();
    // A later sample stays in the buffer: queries see both.
    store
        .write(vec![sample(
            "power",
            &[("node", "n1"), ("rack", "r1")],
            9_000,
            11.0,
        )])
        .await
        .unwrap();
    test
}

fn matchers(selector: &str) -> Vec<Matcher> {
    let Expr::VectorSelector(vs) = parse(selector).unwrap() else {
        panic!("{selector} is not a selector");
    };
    crate::matcher_sets(&vs).remove(0)
}

async fn nodes(source: &StoreSource, selector: &str) -> Vec<String> {
    let mut nodes: Vec<String> = source
        .select(&matchers(selector), 0, 10_000, None)
        .await
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.labels.get_or_empty(METRIC_NAME),
                s.labels.get_or_empty("node")
            )
        })
        .collect();
    nodes.sort();
    nodes
}

#[tokio::test]
async fn matchers_treat_absent_labels_as_empty_and_regexes_as_anchored() {
    let test = store().await;
    let source = StoreSource::new(test.store.clone(), 64 << 20);
    assert_eq!(
        nodes(&source, "power").await,
        ["power/n1", "power/n10", "power/n2"]
    );
    assert_eq!(nodes(&source, "power{rack=\"\"}").await, ["power/n2"]);
    assert_eq!(
        nodes(&source, "power{rack!=\"\"}").await,
        ["power/n1", "power/n10"]
    );
    assert_eq!(nodes(&source, "power{rack!=\"r1\"}").await, ["power/n2"]);
    assert_eq!(nodes(&source, "power{node=~\"n1\"}").await, ["power/n1"]);
    assert_eq!(nodes(&source, "power{node!~\"n1.*\"}").await, ["power/n2"]);
    assert_eq!(
        nodes(&source, "power{rack=~\"r1|\"}").await,
        ["power/n1", "power/n10", "power/n2"]
    );
    assert_eq!(nodes(&source, "power{rack!~\"r.*\"}").await, ["power/n2"]);
    assert_eq!(
        nodes(&source, "{node=\"n1\"}").await,
        ["power/n1", "temp/n1"]
    );
    assert_eq!(nodes(&source, "{__name__=~\"t.*\"}").await, ["temp/n1"]);
    // A label no series has is empty everywhere.
    assert_eq!(nodes(&source, "temp{gpu=\"\"}").await, ["temp/n1"]);
    assert!(nodes(&source, "temp{gpu=\"0\"}").await.is_empty());
}

#[tokio::test]
async fn samples_come_in_time_order_within_the_range_with_stale_markers_intact() {
    let test = store().await;
    let source = StoreSource::new(test.store.clone(), 64 << 20);
    let series = source
        .select(&matchers("power{node=\"n1\"}"), 0, 10_000, None)
        .await
        .unwrap();
    let points = &series[0].points;
    assert_eq!(
        points.iter().map(|p| p.t).collect::<Vec<_>>(),
        [1_000, 2_000, 9_000]
    );
    assert!(is_stale(points[1].v), "the marker's bits survive Parquet");
    let later = source
        .select(&matchers("power{node=\"n1\"}"), 1_500, 10_000, None)
        .await
        .unwrap();
    assert_eq!(later[0].points.len(), 2);
    assert!(
        source
            .select(&matchers("power"), 20_000, 30_000, None)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn series_and_label_values() {
    let test = store().await;
    let source = StoreSource::new(test.store.clone(), 64 << 20);
    let mut series = source.series(&matchers("power"), 0, 10_000).await.unwrap();
    series.sort();
    assert_eq!(series.len(), 3);
    assert_eq!(
        series[0].to_string(),
        r#"{__name__="power", node="n1", rack="r1"}"#
    );
    assert_eq!(
        source.label_values("node", &[], 0, 10_000).await.unwrap(),
        ["n1", "n10", "n2"]
    );
    assert_eq!(
        source
            .label_values(METRIC_NAME, &matchers("{node=\"n1\"}"), 0, 10_000)
            .await
            .unwrap(),
        ["power", "temp"]
    );
    assert!(
        source
            .label_values("gpu", &[], 0, 10_000)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn matchers_and_time_range_are_pushed_into_the_scan() {
    let test = store().await;
    let source = StoreSource::new(test.store.clone(), 64 << 20);
    let (frame, _) = source
        .filtered(&matchers("power{node=~\"n1|n2\"}"), 1_000, 2_000)
        .await
        .unwrap()
        .unwrap();
    let plan = frame.create_physical_plan().await.unwrap();
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    assert!(text.contains("metric@1 = power"), "{text}");
    assert!(text.contains("^(?:n1|n2)$"), "{text}");
    assert!(text.contains("time@0 >="), "{text}");
    assert!(
        text.contains("predicate="),
        "the Parquet scan gets the predicate: {text}"
    );
}

/// Samples within one millisecond are one point (the last written), inside a file and where
/// two files of successive flushes meet.
#[tokio::test]
async fn samples_of_one_millisecond_are_one_point() {
    let test = TestStore::open().await.unwrap();
    let store = &test.store;
    let sample = |t_ns: i64, v: f64| Sample::new("cpu", Vec::new(), t_ns, Value::Float(v));
    let ms = 1_000_000;
    store
        .write(vec![
            sample(ms, 1.0),
            sample(ms + 10, 2.0),
            sample(2 * ms, 3.0),
        ])
        .await
        .unwrap();
    store.flush().await.unwrap();
    store
        .write(vec![sample(2 * ms + 500, 4.0), sample(3 * ms, 5.0)])
        .await
        .unwrap();
    store.flush().await.unwrap();
    let source = StoreSource::new(store.clone(), 64 << 20);
    for _ in 0..2 {
        let series = source.select(&matchers("cpu"), 0, 10, None).await.unwrap();
        let points: Vec<(i64, f64)> = series[0].points.iter().map(|p| (p.t, p.v)).collect();
        assert_eq!(points, [(1, 2.0), (2, 4.0), (3, 5.0)]);
    }
}
