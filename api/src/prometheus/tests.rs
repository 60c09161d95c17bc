use axum::http::StatusCode;
use exawatch_protocol::Value;

use super::*;
use crate::ApiConfig;
use crate::testutil::{TestApi, sample};

#[test]
fn times_are_unix_seconds_or_rfc3339() {
    assert_eq!(parse_time("4"), Some(4000));
    assert_eq!(parse_time("1435781451.781"), Some(1_435_781_451_781));
    assert_eq!(
        parse_time("2015-07-01T20:10:51.781Z"),
        Some(1_435_781_451_781)
    );
    assert_eq!(
        parse_time("2015-07-01T22:10:51.781+02:00"),
        Some(1_435_781_451_781)
    );
    assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_time("yesterday"), None);
    assert_eq!(parse_time("2015-13-01T00:00:00Z"), None);
}

#[test]
fn durations_are_float_seconds_or_prometheus_durations() {
    assert_eq!(parse_duration("15"), Some(15_000));
    assert_eq!(parse_duration("0.5"), Some(500));
    assert_eq!(parse_duration("1m30s"), Some(90_000));
    assert_eq!(parse_duration("1h"), Some(3_600_000));
    assert_eq!(parse_duration("100ms"), Some(100));
    assert_eq!(parse_duration("5x"), None);
    assert_eq!(parse_duration(""), None);
}

/// A query past a sample limit, the store's (`api.query_memory_bytes` / 32 samples read) or
/// the engine's (`api.promql_max_samples`), asks for too much: 422 with errorType
/// `execution`, as SQL answers a query past `api.max_result_rows`, and no server error
/// (issue 28).
#[tokio::test]
async fn sample_limits_are_422_as_in_sql() {
    const BASE_MS: i64 = 1_700_000_000_000;
    let samples: Vec<_> = (0..100)
        .map(|i| {
            sample(
                "temp",
                &[("node", "n1")],
                BASE_MS + i * 1000,
                Value::Float(1.0),
            )
        })
        .collect();
    let query = format!(
        "/api/v1/query?query=count_over_time(temp%5B5m%5D)&time={}",
        BASE_MS / 1000 + 100
    );
    let limited = [
        ApiConfig {
            query_memory_bytes: 32 * 50,
            ..ApiConfig::default()
        },
        ApiConfig {
            promql_max_samples: 50,
            ..ApiConfig::default()
        },
    ];
    for config in limited {
        let api = TestApi::with_config(config).await;
        api.store.write(samples.clone()).await.unwrap();
        let (status, body) = api.get(&query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["status"], "error", "{body}");
        assert_eq!(body["errorType"], "execution", "{body}");
    }

    let api = TestApi::with_config(ApiConfig {
        max_result_rows: 50,
        ..ApiConfig::default()
    })
    .await;
    api.store.write(samples).await.unwrap();
    let sql = serde_json::json!({"query": "SELECT * FROM samples"});
    let (status, body) = api.post("/api/v1/sql", sql.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = api.get(&query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
