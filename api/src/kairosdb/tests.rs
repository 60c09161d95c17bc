//! The KairosDB API on a real store in a temporary directory, through the router (no socket).

use std::io::{Read, Write};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use exawatch_protocol::{Sample, Value};
use serde_json::{Value as Json, json};

use super::execute::{self, Limits};
use super::{query, response};
use crate::ApiConfig;
use crate::testutil::{TestApi, sample};

/// 2023-11-14T22:13:20Z, a minute boundary plus 20 s.
const BASE_MS: i64 = 1_700_000_000_000;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `POST /api/v1/datapoints/query`, which must succeed.
trait KairosQuery {
    async fn query(&self, query: Json) -> Json;
}

impl KairosQuery for TestApi {
    async fn query(&self, query: Json) -> Json {
        let (status, body) = self
            .post("/api/v1/datapoints/query", query.to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        body
    }
}

/// The response of KairosDB's query documentation, on EXAMON data: groups by tag and type,
/// `tags` with every value seen, `[ms, value]` pairs, whole numbers without a fraction.
#[tokio::test]
async fn response_shape() {
    let api = TestApi::new().await;
    let cpu = |node, core| vec![("org", "acme"), ("node", node), ("core", core)];
    api.store
        .write(vec![
            sample("load", &cpu("n01", "0"), BASE_MS, Value::Float(1.5)),
            sample("load", &cpu("n01", "1"), BASE_MS + 1, Value::Float(2.0)),
            sample("load", &cpu("n02", "0"), BASE_MS + 2, Value::Float(3.25)),
            sample("other", &cpu("n02", "0"), BASE_MS, Value::Float(9.0)),
        ])
        .await
        .unwrap();
    let body = api
        .query(json!({
            "start_absolute": BASE_MS, "end_absolute": BASE_MS + 10,
            "metrics": [
                {"name": "load", "group_by": [{"name": "tag", "tags": ["node"]}]},
                {"name": "load", "tags": {"core": ["1"]}},
                {"name": "missing"},
                {"name": "load", "tags": {"rack": "r1"}},
            ]
        }))
        .await;
    assert_eq!(
        body,
        json!({"queries": [
            {"sample_size": 3, "results": [
                {"name": "load",
                 "group_by": [{"name": "tag", "tags": ["node"], "group": {"node": "n01"}},
                              {"name": "type", "type": "number"}],
                 "tags": {"core": ["0", "1"], "node": ["n01"], "org": ["acme"]},
                 "values": [[BASE_MS, 1.5], [BASE_MS + 1, 2]]},
                {"name": "load",
                 "group_by": [{"name": "tag", "tags": ["node"], "group": {"node": "n02"}},
                              {"name": "type", "type": "number"}],
                 "tags": {"core": ["0"], "node": ["n02"], "org": ["acme"]},
                 "values": [[BASE_MS + 2, 3.25]]}]},
            {"sample_size": 1, "results": [
                {"name": "load", "group_by": [{"name": "type", "type": "number"}],
                 "tags": {"core": ["1"], "node": ["n01"], "org": ["acme"]},
                 "values": [[BASE_MS + 1, 2]]}]},
            {"sample_size": 0, "results": [{"name": "missing", "tags": {}, "values": []}]},
            {"sample_size": 0, "results": [{"name": "load", "tags": {}, "values": []}]},
        ]})
    );
}

/// Text samples form their own result (`type: text`), after the numbers.
#[tokio::test]
async fn text_values() {
    let api = TestApi::new().await;
    let node = [("node", "n01")];
    api.store
        .write(vec![
            sample("state", &node, BASE_MS, Value::Text("OK".into())),
            sample("state", &node, BASE_MS + 5, Value::Float(2.0)),
            sample(
                "state",
                &node,
                BASE_MS + 70_000,
                Value::Text("WARN \"disk\"".into()),
            ),
        ])
        .await
        .unwrap();
    let body = api
        .query(json!({"start_absolute": BASE_MS, "metrics": [
            {"name": "state", "exclude_tags": true},
            {"name": "state", "exclude_tags": true, "aggregators": [
                {"name": "count", "sampling": {"value": 1, "unit": "minutes"}, "align_sampling": true, "align_start_time": true}]}
        ]}))
        .await;
    let minute = BASE_MS - 20_000;
    assert_eq!(
        body,
        json!({"queries": [
            {"sample_size": 3, "results": [
                {"name": "state", "group_by": [{"name": "type", "type": "number"}], "values": [[BASE_MS + 5, 2]]},
                {"name": "state", "group_by": [{"name": "type", "type": "text"}],
                 "values": [[BASE_MS, "OK"], [BASE_MS + 70_000, "WARN \"disk\""]]}]},
            // The type is the group's, before aggregation, as in KairosDB.
            {"sample_size": 3, "results": [
                {"name": "state", "group_by": [{"name": "type", "type": "number"}], "values": [[minute, 1]]},
                {"name": "state", "group_by": [{"name": "type", "type": "text"}],
                 "values": [[minute, 1], [minute + 60_000, 1]]}]},
        ]})
    );
}

/// `limit` keeps the first points per group (the last with `order: desc`) before the
/// aggregators; `desc` returns them newest first.
#[tokio::test]
async fn limit_and_order() {
    let api = TestApi::new().await;
    let samples: Vec<_> = (0..10)
        .map(|i| {
            sample(
                "m",
                &[("node", "n1")],
                BASE_MS + i * 1000,
                Value::Float(i as f64),
            )
        })
        .collect();
    api.store.write(samples).await.unwrap();
    let values = |body: &Json| body["queries"][0]["results"][0]["values"].clone();
    let asc = api
        .query(json!({"start_absolute": BASE_MS, "metrics": [{"name": "m", "limit": 3}]}))
        .await;
    assert_eq!(
        values(&asc),
        json!([[BASE_MS, 0], [BASE_MS + 1000, 1], [BASE_MS + 2000, 2]])
    );
    assert_eq!(asc["queries"][0]["sample_size"], 10);
    let desc = api
        .query(json!({"start_absolute": BASE_MS, "metrics": [{"name": "m", "limit": 2, "order": "desc"}]}))
        .await;
    assert_eq!(
        values(&desc),
        json!([[BASE_MS + 9000, 9], [BASE_MS + 8000, 8]])
    );
    let summed = api
        .query(
            json!({"start_absolute": BASE_MS, "metrics": [{"name": "m", "limit": 4,
            "aggregators": [{"name": "sum", "sampling": {"value": 1, "unit": "hours"}}]}]}),
        )
        .await;
    assert_eq!(values(&summed), json!([[BASE_MS, 6]]));
}

/// Calendar sampling in the query's `time_zone`: days in Rome start at 23:00 UTC in winter.
#[tokio::test]
async fn days_in_the_query_time_zone() {
    let api = TestApi::new().await;
    // 21:13:20Z and 23:13:20Z on the 14th: 22:13:20 on the 14th and 00:13:20 on the 15th in
    // Rome.
    let samples = vec![
        sample(
            "m",
            &[("node", "n1")],
            BASE_MS - 3_600_000,
            Value::Float(1.0),
        ),
        sample(
            "m",
            &[("node", "n1")],
            BASE_MS + 3_600_000,
            Value::Float(2.0),
        ),
    ];
    api.store.write(samples).await.unwrap();
    let daily = |tz: &str| {
        json!({"start_absolute": BASE_MS - 86_400_000, "time_zone": tz, "metrics": [{"name": "m",
            "aggregators": [{"name": "sum", "sampling": {"value": 1, "unit": "days"},
                             "align_sampling": true, "align_start_time": true}]}]})
    };
    let rome = api.query(daily("Europe/Rome")).await;
    let midnight_rome: i64 = 1_699_916_400_000; // 2023-11-13T23:00:00Z
    assert_eq!(
        rome["queries"][0]["results"][0]["values"],
        json!([[midnight_rome, 1], [midnight_rome + 86_400_000, 2]])
    );
    let utc = api.query(daily("UTC")).await;
    let midnight_utc: i64 = 1_699_920_000_000; // 2023-11-14T00:00:00Z
    assert_eq!(
        utc["queries"][0]["results"][0]["values"],
        json!([[midnight_utc, 3]])
    );
}

/// A deterministic mix of series for comparing the DataFusion and Rust paths: three nodes,
/// cores 0–1 (and one series without a core), sub-millisecond times, quarter values (exact
/// sums), one NaN, one text series.
fn mixed_samples() -> Vec<Sample> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::new();
    for node in ["n01", "n02", "n03"] {
        for core in [Some("0"), Some("1"), None] {
            if node == "n03" && core.is_none() {
                continue;
            }
            let mut tags = vec![
                ("org".to_string(), "acme".to_string()),
                ("node".into(), node.into()),
            ];
            if let Some(core) = core {
                tags.push(("core".into(), core.into()));
            }
            let mut ns = (BASE_MS + 3_000) * 1_000_000;
            for _ in 0..120 {
                ns += 900_000_000 + (next() % 2_000_000_000) as i64;
                let value = (next() % 800) as f64 / 4.0 - 100.0;
                out.push(Sample::new("load", tags.clone(), ns, Value::Float(value)));
            }
        }
    }
    out.push(Sample::new(
        "load",
        vec![
            ("node".into(), "n02".into()),
            ("core".into(), "1".into()),
            ("org".into(), "acme".into()),
        ],
        (BASE_MS + 100_000) * 1_000_000 + 17,
        Value::Float(f64::NAN),
    ));
    for i in 0..20 {
        out.push(Sample::new(
            "load",
            vec![("node".into(), "n01".into()), ("org".into(), "acme".into())],
            (BASE_MS + 5_000 + i * 9_000) * 1_000_000,
            Value::Text(format!("state {}", i % 3)),
        ));
    }
    out
}

/// The oracle test: every range aggregator DataFusion can compute gives the same answer as
/// the Rust implementation of KairosDB's aggregators, over buffered and Parquet data alike.
#[tokio::test]
async fn pushdown_equals_the_rust_aggregators() {
    let api = TestApi::new().await;
    let samples = mixed_samples();
    let half = samples.len() / 2;
    api.store.write(samples[..half].to_vec()).await.unwrap();
    api.store.flush().await.unwrap();
    api.store.write(samples[half..].to_vec()).await.unwrap();
    let ctx = api.store.query_context(1 << 30).unwrap();

    let kinds = ["avg", "sum", "min", "max", "count", "first", "last"];
    let aligns = [
        json!({}),
        json!({"align_start_time": true}),
        json!({"align_end_time": true}),
    ];
    let group_bys = [
        json!(null),
        json!(["node"]),
        json!(["node", "core", "rack"]),
    ];
    let samplings = [
        json!({"value": 1, "unit": "minutes"}),
        json!({"value": 7, "unit": "seconds"}),
    ];
    let mut compared = 0;
    for (i, kind) in kinds.iter().enumerate() {
        for (j, align) in aligns.iter().enumerate() {
            for (k, group_by) in group_bys.iter().enumerate() {
                let n = i + j + k;
                let mut first = json!({"name": kind, "sampling": samplings[n % 2],
                                        "align_sampling": n % 3 != 0});
                for (key, value) in align.as_object().unwrap() {
                    first[key] = value.clone();
                }
                let mut aggregators = vec![first];
                if n % 4 == 1 {
                    aggregators.push(json!({"name": "diff"}));
                }
                let mut metric = json!({"name": "load", "aggregators": aggregators});
                if !group_by.is_null() {
                    metric["group_by"] = json!([{"name": "tag", "tags": group_by}]);
                }
                if n % 5 == 2 {
                    metric["tags"] = json!({"node": ["n01", "n03"]});
                }
                let body = json!({
                    "start_absolute": BASE_MS + 1_234, "end_absolute": BASE_MS + 200_000,
                    "metrics": [metric]
                });
                let query = query::parse(body.to_string().as_bytes(), 0).unwrap();
                let answers = futures::future::join_all([true, false].map(|pushdown| {
                    let (ctx, query) = (&ctx, &query);
                    async move {
                        let limits = Limits {
                            max_rows: 1_000_000,
                            pushdown,
                        };
                        let result = execute::run_metric(ctx, query, &query.metrics[0], limits)
                            .await
                            .unwrap();
                        String::from_utf8(response::query(&[(&query.metrics[0], result)])).unwrap()
                    }
                }))
                .await;
                assert_eq!(answers[0], answers[1], "{body}");
                assert!(
                    answers[0].contains("\"values\":[["),
                    "{body}: {}",
                    answers[0]
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, kinds.len() * aligns.len() * group_bys.len());
}

#[tokio::test]
async fn bad_queries_get_400_with_every_reason() {
    let api = TestApi::new().await;
    let cases: &[(&str, &str)] = &[
        ("{", "Invalid json."),
        ("[]", "query must be a JSON object"),
        (
            r#"{"metrics": [{"name": "m"}]}"#,
            "query.start_time relative or absolute time must be set",
        ),
        (
            r#"{"start_absolute": 1}"#,
            "query.metric[] must have a size of at least 1",
        ),
        (
            r#"{"start_absolute": 5, "end_absolute": 1, "metrics": [{"name": "m"}]}"#,
            "query.end_time must be greater than the start time",
        ),
        (
            r#"{"start_relative": {"value": 1, "unit": "fortnights"}, "metrics": [{"name": "m"}]}"#,
            "query.start_relative.unit must be one of MILLISECONDS,SECONDS,MINUTES,HOURS,DAYS,WEEKS,MONTHS,YEARS",
        ),
        (
            r#"{"start_absolute": 1, "time_zone": "Mars/Olympus", "metrics": [{"name": "m"}]}"#,
            "query.time_zone \"Mars/Olympus\" is not a time zone",
        ),
        (
            r#"{"start_absolute": 1, "metrics": [{"name": ""}]}"#,
            "query.metric[0].name may not be empty",
        ),
        (
            r#"{"start_absolute": 1, "metrics": [{"name": "m", "aggregators": [{"name": "median"}]}]}"#,
            "query.metric[0].aggregators[0].median invalid aggregator name",
        ),
        (
            r#"{"start_absolute": 1, "metrics": [{"name": "m", "aggregators": [{"name": "avg", "sampling": {"value": 0, "unit": "minutes"}}]}]}"#,
            "query.metric[0].aggregators[0].sampling.value must be an integer greater than or equal to 1",
        ),
        (
            r#"{"start_absolute": 1, "metrics": [{"name": "m", "aggregators": [{"name": "avg", "smapling": {}}]}]}"#,
            "query.metric[0].aggregators[0]: property 'smapling' is not known for aggregator 'avg'",
        ),
        (
            r#"{"start_absolute": 1, "metrics": [{"name": "m", "aggregators": [{"name": "percentile", "percentile": 1.5}]}]}"#,
            "query.metric[0].aggregators[0].percentile must be a number greater than 0 and at most 1",
        ),
        (
            r#"{"start_absolute": 1, "metrics": [{"name": "m", "group_by": [{"name": "time"}]}]}"#,
            "query.metric[0].group_by[0].time grouping is not supported",
        ),
        (
            r#"{"start_absolute": 1, "metrics": [{"name": "m", "group_by": [{"name": "tag", "tags": []}]}]}"#,
            "query.metric[0].group_by[0].tags may not be empty",
        ),
        (
            r#"{"start_absolute": 1, "metrics": [{"name": "m", "limit": -1}]}"#,
            "query.metric[0].limit must be a non-negative integer",
        ),
        (
            r#"{"start_absolute": 1, "metrics": [{"name": "m", "order": "up"}]}"#,
            "query.metric[0].order \"up\" is not asc or desc",
        ),
    ];
    for (body, reason) in cases {
        let (status, answer) = api.post("/api/v1/datapoints/query", *body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let errors = answer["errors"].as_array().unwrap();
        assert!(
            errors[0].as_str().unwrap().starts_with(reason),
            "{body}: {answer}"
        );
    }
    // Several bad metrics: one reason each.
    let (status, answer) = api
        .post(
            "/api/v1/datapoints/query",
            r#"{"start_absolute": 1, "metrics": [{"name": ""}, {"name": "m", "limit": "x"}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["errors"].as_array().unwrap().len(), 2, "{answer}");

    // Rate over two points with the same time cannot be computed: 400, not a panic.
    api.store
        .write(vec![
            sample("m", &[("core", "0")], BASE_MS, Value::Float(1.0)),
            sample("m", &[("core", "1")], BASE_MS, Value::Float(2.0)),
        ])
        .await
        .unwrap();
    let (status, answer) = api
        .post(
            "/api/v1/datapoints/query",
            json!({"start_absolute": BASE_MS, "metrics": [{"name": "m", "aggregators": [{"name": "rate"}]}]})
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["errors"][0]
            .as_str()
            .unwrap()
            .contains("same time stamp")
    );
}

/// `POST /api/v1/datapoints` as examon-common's `put_metrics` sends it (gzip with
/// `Content-Type: application/gzip`), plain JSON, and `Content-Encoding: gzip`.
#[tokio::test]
async fn writes() {
    let api = TestApi::new().await;
    let body = json!([
        {"name": "power", "timestamp": BASE_MS, "value": 250.5, "tags": {"node": "n01", "plugin": "ipmi"}},
        {"name": "power", "datapoints": [[BASE_MS + 1000, 251], [BASE_MS + 2000, "252.25"]], "tags": {"node": "n02"}},
    ])
    .to_string();
    let request = Request::post("/api/v1/datapoints")
        .header(header::CONTENT_TYPE, "application/gzip")
        .body(Body::from(gzip(body.as_bytes())))
        .unwrap();
    let (status, _, answer) = api.send(request).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let request = Request::post("/api/v1/datapoints")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(
            br#"{"name": "fan", "timestamp": 5, "value": 4800, "tags": {"node": "n01"}}"#,
        )))
        .unwrap();
    assert_eq!(api.send(request).await.0, StatusCode::NO_CONTENT);
    let (status, _) = api
        .post(
            "/api/v1/datapoints",
            r#"{"name": "state", "datapoints": [[6, "OK"]], "tags": {"node": "n01"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let answer = api
        .query(json!({"start_absolute": 0, "metrics": [
            {"name": "power", "group_by": [{"name": "tag", "tags": ["node"]}], "exclude_tags": true},
            {"name": "fan", "exclude_tags": true}, {"name": "state", "exclude_tags": true}]}))
        .await;
    let values: Vec<Json> = answer["queries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|q| {
            q["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["values"].clone())
        })
        .collect();
    assert_eq!(
        values,
        [
            json!([[BASE_MS, 250.5]]),
            json!([[BASE_MS + 1000, 251], [BASE_MS + 2000, 252.25]]),
            json!([[5, 4800]]),
            json!([[6, "OK"]]),
        ]
    );

    // Invalid: 400 with the reasons, and nothing of the body stored.
    let (status, answer) = api
        .post(
            "/api/v1/datapoints",
            r#"[{"name": "kept_out", "timestamp": 1, "value": 1, "tags": {"a": "b"}},
                {"name": "bad", "datapoints": [[1]], "tags": {"a": "b"}}]"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer,
        json!({"errors": ["metric[1](name=bad).datapoints[0].value cannot be null or empty."]})
    );
    let request = Request::post("/api/v1/datapoints")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from("not gzip at all"))
        .unwrap();
    assert_eq!(api.send(request).await.0, StatusCode::BAD_REQUEST);
    let (_, names) = api.get("/api/v1/metricnames").await;
    assert_eq!(names, json!({"results": ["fan", "power", "state"]}));
}

#[tokio::test]
async fn metadata_routes() {
    let api = TestApi::new().await;
    api.store
        .write(vec![
            sample(
                "cpu_load",
                &[("node", "n01"), ("core", "0")],
                BASE_MS,
                Value::Float(1.0),
            ),
            sample(
                "cpu_temp",
                &[("node", "n02"), ("core", "1")],
                BASE_MS,
                Value::Float(1.0),
            ),
            sample(
                "power",
                &[("node", "n02"), ("plugin", "ipmi")],
                BASE_MS,
                Value::Float(1.0),
            ),
        ])
        .await
        .unwrap();
    let cases = [
        (
            "/api/v1/metricnames",
            json!({"results": ["cpu_load", "cpu_temp", "power"]}),
        ),
        (
            "/api/v1/metricnames?prefix=cpu_",
            json!({"results": ["cpu_load", "cpu_temp"]}),
        ),
        (
            "/api/v1/tagnames",
            json!({"results": ["core", "node", "plugin"]}),
        ),
        (
            "/api/v1/tagvalues",
            json!({"results": ["0", "1", "ipmi", "n01", "n02"]}),
        ),
        ("/api/v1/health/status", json!(["Datastore-Query: OK"])),
    ];
    for (path, want) in cases {
        assert_eq!(api.get(path).await, (StatusCode::OK, want), "{path}");
    }
    let (status, version) = api.get("/api/v1/version").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        version["version"]
            .as_str()
            .unwrap()
            .starts_with("KairosDB 1.3")
    );
    assert_eq!(
        api.get("/api/v1/health/check").await.0,
        StatusCode::NO_CONTENT
    );

    // query/tags, as ExamonQL's query_metricstags asks it.
    let (status, tags) = api
        .post(
            "/api/v1/datapoints/query/tags",
            r#"{"start_absolute": 0, "cache_time": 0, "metrics": [{"name": "cpu_temp"}, {"name": "power", "tags": {"node": ["n02"]}}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        tags,
        json!({"queries": [
            {"results": [{"name": "cpu_temp", "tags": {"core": ["1"], "node": ["n02"]}, "values": []}]},
            {"results": [{"name": "power", "tags": {"node": ["n02"], "plugin": ["ipmi"]}, "values": []}]},
        ]})
    );
}

#[tokio::test]
async fn gzip_answers_when_accepted() {
    let api = TestApi::new().await;
    for (accept, gzipped) in [
        (Some("gzip, deflate"), true),
        (Some("deflate, gzip;q=0"), false),
        (Some("*"), true),
        (Some("br"), false),
        (None, false),
    ] {
        let mut request = Request::get("/api/v1/version");
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT_ENCODING, accept);
        }
        let (status, headers, body) = api.send(request.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers.get(header::CONTENT_ENCODING).is_some(),
            gzipped,
            "{accept:?}"
        );
        let body = if gzipped { gunzip(&body) } else { body };
        let json: Json = serde_json::from_slice(&body).unwrap();
        assert!(json["version"].is_string());
    }
    // 204 answers stay empty.
    let request = Request::get("/api/v1/health/check")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = api.send(request).await;
    assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn basic_auth_when_configured() {
    let api = TestApi::with_config(ApiConfig {
        users: vec![crate::ApiUser {
            name: "examon".into(),
            role: crate::Role::Read,
            token: String::new(),
            password: "s3cret".into(),
        }],
        ..ApiConfig::default()
    })
    .await;
    let get = |auth: Option<&str>| {
        let mut request = Request::get("/api/v1/metricnames");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request.body(Body::empty()).unwrap()
    };
    let (status, headers, _) = api.send(get(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers.get(header::WWW_AUTHENTICATE).unwrap(),
        "Basic realm=\"exawatch\""
    );
    // "examon:wrong", then "examon:s3cret".
    assert_eq!(
        api.send(get(Some("Basic ZXhhbW9uOndyb25n"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.send(get(Some("Basic ZXhhbW9uOnMzY3JldA=="))).await.0,
        StatusCode::OK
    );
    // Health checks stay open for load balancers.
    assert_eq!(
        api.get("/api/v1/health/check").await.0,
        StatusCode::NO_CONTENT
    );
}

/// Extreme numbers in a query are answered (or refused), never a panic.
#[tokio::test]
async fn extreme_values_do_not_panic() {
    let api = TestApi::new().await;
    api.store
        .write(vec![sample(
            "m",
            &[("node", "n1")],
            BASE_MS,
            Value::Float(1.0),
        )])
        .await
        .unwrap();
    for unit in ["milliseconds", "hours", "days", "weeks", "months", "years"] {
        for align in [true, false] {
            let query = json!({"start_absolute": 0, "time_zone": "Europe/Rome", "metrics": [{"name": "m",
                "aggregators": [{"name": "sum", "sampling": {"value": i64::MAX, "unit": unit},
                                 "align_sampling": align, "align_end_time": true},
                                {"name": "rate", "sampling": {"value": i64::MAX, "unit": unit}}]}]});
            let (status, body) = api
                .post("/api/v1/datapoints/query", query.to_string())
                .await;
            assert_eq!(status, StatusCode::OK, "{unit}: {body}");
        }
    }
    for query in [
        json!({"start_relative": {"value": i64::MAX, "unit": "years"}, "metrics": [{"name": "m"}]}),
        json!({"start_absolute": i64::MAX, "metrics": [{"name": "m"}]}),
        json!({"start_absolute": 0, "end_absolute": 1e300, "metrics": [{"name": "m"}]}),
        json!({"start_absolute": 0, "metrics": [{"name": "m", "limit": 1e300}]}),
    ] {
        let (status, body) = api
            .post("/api/v1/datapoints/query", query.to_string())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
}
