use super::proto::*;
use super::*;
use crate::Sample;

const T: u64 = 1_700_000_000_000_000_000;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(value.to_owned())),
        }),
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
            }),
            scope_metrics: vec![ScopeMetrics { metrics }],
        }],
    }
}

fn service() -> Vec<KeyValue> {
    vec![
        kv("service.name", "api"),
        kv("service.namespace", "shop"),
        kv("service.instance.id", "i-1"),
        kv("host.name", "cn01"),
        kv("deployment.environment", "prod"),
    ]
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.to_owned(),
        unit: unit.to_owned(),
        data: Some(data),
    }
}

fn number(time: u64, value: Number, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: 1,
        time_unix_nano: time,
        value: Some(value),
        flags: 0,
    }
}

fn sum(points: Vec<NumberDataPoint>, temporality: AggregationTemporality, monotonic: bool) -> Data {
    Data::Sum(proto::Sum {
        data_points: points,
        aggregation_temporality: temporality as i32,
        is_monotonic: monotonic,
    })
}

fn decode_request(request: &ExportMetricsServiceRequest, deltas: &DeltaTotals) -> Export {
    decode(&request.encode_to_vec(), Format::Protobuf, 0, deltas).unwrap()
}

/// The samples as `metric{tags} value @time` lines, sorted.
fn lines(export: &Export) -> Vec<String> {
    let mut lines: Vec<String> = export
        .batch
        .samples()
        .map(
            |Sample {
                 metric,
                 tags,
                 time_ns,
                 value,
             }| {
                let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let Value::Float(v) = value else { panic!() };
                format!("{metric}{{{}}} {v} @{}", tags.join(","), time_ns - T as i64)
            },
        )
        .collect();
    lines.sort();
    lines
}

const TAGS: &str = "instance=i-1,job=shop/api,node=cn01";

#[test]
fn names_as_prometheus_3() {
    let cases = [
        (
            "http.server.request.duration",
            "s",
            Kind::Histogram,
            "http_server_request_duration_seconds",
        ),
        (
            "system.memory.usage",
            "By",
            Kind::UpDownCounter,
            "system_memory_usage_bytes",
        ),
        ("requests", "1", Kind::Counter, "requests_total"),
        (
            "requests.total",
            "{request}",
            Kind::Counter,
            "requests_total",
        ),
        ("cpu.utilization", "1", Kind::Gauge, "cpu_utilization_ratio"),
        (
            "cpu.utilization",
            "1",
            Kind::UpDownCounter,
            "cpu_utilization",
        ),
        (
            "network.io",
            "By/s",
            Kind::Gauge,
            "network_io_bytes_per_second",
        ),
        ("latency_seconds", "s", Kind::Gauge, "latency_seconds"),
        ("temp", "Cel", Kind::Gauge, "temp_celsius"),
        (
            "disk..ops__x",
            "{ops}/s",
            Kind::Counter,
            "disk_ops_x_per_second_total",
        ),
        ("2xx.rate", "", Kind::Gauge, "_2xx_rate"),
        ("power", "W", Kind::Counter, "power_watts_total"),
        ("weird", "foo.bar", Kind::Gauge, "weird_foo_bar"),
        ("ratio.x", "%", Kind::Gauge, "ratio_x_percent"),
        ("a:b", "ms", Kind::Summary, "a:b_milliseconds"),
        ("...", "", Kind::Gauge, ""),
    ];
    for (name, unit, kind, want) in cases {
        assert_eq!(
            metric_name(name, unit, kind),
            want,
            "{name} [{unit}] {kind:?}"
        );
    }
    for (key, want) in [
        ("http.request.method", Some("http_request_method")),
        ("k8s--pod", Some("k8s_pod")),
        ("1st", Some("key_1st")),
        ("__meta__", Some("__meta__")),
        ("_private", Some("_private")),
        ("ünï", Some("_n_")),
        ("..", None),
    ] {
        assert_eq!(label_name(key).as_deref(), want, "{key}");
    }
}

#[test]
fn gauges_sums_and_resource_tags() {
    let points = |v: Number| vec![number(T + 5, v, vec![kv("cpu", "0"), kv("state", "")])];
    let request = request(
        service(),
        vec![
            metric(
                "cpu.temp",
                "Cel",
                Data::Gauge(Gauge {
                    data_points: points(Number::AsDouble(51.5)),
                }),
            ),
            metric(
                "load",
                "1",
                Data::Gauge(Gauge {
                    data_points: points(Number::AsInt(3)),
                }),
            ),
            metric(
                "requests",
                "{request}",
                sum(
                    points(Number::AsInt(7)),
                    AggregationTemporality::Cumulative,
                    true,
                ),
            ),
            metric(
                "queue.size",
                "{item}",
                sum(
                    points(Number::AsInt(-2)),
                    AggregationTemporality::Cumulative,
                    false,
                ),
            ),
        ],
    );
    let export = decode_request(&request, &DeltaTotals::default());
    assert_eq!(export.rejections.total(), 0);
    assert_eq!(
        lines(&export),
        [
            format!("cpu_temp_celsius{{cpu=0,{TAGS}}} 51.5 @5"),
            format!("load_ratio{{cpu=0,{TAGS}}} 3 @5"),
            format!("queue_size{{cpu=0,{TAGS}}} -2 @5"),
            format!("requests_total{{cpu=0,{TAGS}}} 7 @5"),
            format!("target_info{{deployment_environment=prod,{TAGS}}} 1 @5"),
        ]
    );
}

#[test]
fn attributes_meet_and_resource_wins() {
    let attributes = vec![
        kv("a.b", "1"),
        kv("a_b", "2"),
        kv("job", "mine"),
        kv("node", "x"),
    ];
    let request = request(
        vec![kv("service.name", "svc"), kv("host.name", "n1")],
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![number(T, Number::AsDouble(1.0), attributes)],
            }),
        )],
    );
    let export = decode_request(&request, &DeltaTotals::default());
    assert_eq!(lines(&export), ["g{a_b=1;2,job=svc,node=n1} 1 @0"]);
}

#[test]
fn histograms_as_classic_buckets() {
    let point = |counts: Vec<u64>, bounds: Vec<f64>| HistogramDataPoint {
        attributes: vec![kv("route", "/x")],
        start_time_unix_nano: 1,
        time_unix_nano: T,
        count: counts.iter().sum(),
        sum: Some(12.5),
        bucket_counts: counts,
        explicit_bounds: bounds,
        flags: 0,
    };
    let request = request(
        vec![kv("service.name", "svc")],
        vec![metric(
            "http.duration",
            "s",
            Data::Histogram(proto::Histogram {
                data_points: vec![
                    point(vec![1, 2, 0, 3], vec![0.005, 0.1, 1.0]),
                    point(vec![], vec![]),
                    point(vec![1, 2], vec![0.5, 1.0]),
                ],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )],
    );
    let export = decode_request(&request, &DeltaTotals::default());
    let tags = "job=svc,route=/x";
    assert_eq!(
        lines(&export),
        [
            "http_duration_seconds_bucket{job=svc,le=+Inf,route=/x} 6 @0".to_owned(),
            "http_duration_seconds_bucket{job=svc,le=0.005,route=/x} 1 @0".to_owned(),
            "http_duration_seconds_bucket{job=svc,le=0.1,route=/x} 3 @0".to_owned(),
            "http_duration_seconds_bucket{job=svc,le=1,route=/x} 3 @0".to_owned(),
            format!("http_duration_seconds_count{{{tags}}} 6 @0"),
            format!("http_duration_seconds_sum{{{tags}}} 12.5 @0"),
        ]
    );
    assert_eq!(export.rejections.total(), 2);
    assert_eq!(
        export.rejections.counts().collect::<Vec<_>>(),
        [(Rejection::NoBuckets, 1), (Rejection::Invalid, 1)]
    );
    let message = export.rejections.message();
    assert!(
        message.starts_with(
            "2 data points rejected: metric \"http.duration\": histogram point without buckets"
        ),
        "{message}"
    );
    assert!(
        message.contains("2 bucket counts for 2 bounds"),
        "{message}"
    );
}

#[test]
fn exponential_histograms_as_classic_buckets() {
    let mut point = ExponentialHistogramDataPoint {
        attributes: vec![],
        start_time_unix_nano: 1,
        time_unix_nano: T,
        count: 10,
        sum: Some(3.0),
        scale: 0,
        zero_count: 4,
        positive: Some(Buckets {
            offset: 0,
            bucket_counts: vec![1, 2],
        }),
        negative: Some(Buckets {
            offset: 0,
            bucket_counts: vec![3],
        }),
        flags: 0,
        zero_threshold: 0.0,
    };
    // Scale 0: bucket i holds (2^i, 2^(i+1)]; negative bucket 0 holds [-2, -1).
    assert_eq!(
        exponential_buckets(&point).unwrap(),
        [(-1.0, 3.0), (0.0, 7.0), (2.0, 8.0), (4.0, 10.0)]
    );
    // Scale 1: base √2, offset -2: (2^-1, 2^-0.5], (2^-0.5, 1].
    point.scale = 1;
    point.negative = None;
    point.zero_threshold = 0.25;
    point.positive = Some(Buckets {
        offset: -2,
        bucket_counts: vec![5, 1],
    });
    let buckets = exponential_buckets(&point).unwrap();
    assert_eq!(buckets.len(), 3);
    assert_eq!(buckets[0], (0.25, 4.0));
    assert!((buckets[1].0 - 0.5f64.sqrt()).abs() < 1e-15, "{buckets:?}");
    assert_eq!(buckets[2], (1.0, 10.0));
    // Scale -1: base 4.
    point.scale = -1;
    point.zero_threshold = 0.0;
    point.positive = Some(Buckets {
        offset: 1,
        bucket_counts: vec![1, 1],
    });
    assert_eq!(
        exponential_buckets(&point).unwrap(),
        [(0.0, 4.0), (16.0, 5.0), (64.0, 6.0)]
    );
    // A zero bucket wider than the first bucket: bounds would not ascend.
    point.zero_threshold = 20.0;
    assert!(
        exponential_buckets(&point)
            .unwrap_err()
            .contains("do not ascend")
    );
    point.zero_threshold = 0.0;
    point.scale = 21;
    assert!(
        exponential_buckets(&point)
            .unwrap_err()
            .contains("scale 21")
    );
    point.scale = 0;
    point.positive = Some(Buckets {
        offset: 1100,
        bucket_counts: vec![1],
    });
    assert!(
        exponential_buckets(&point)
            .unwrap_err()
            .contains("overflow")
    );

    point.positive = Some(Buckets {
        offset: 0,
        bucket_counts: vec![1, 2],
    });
    point.count = 7;
    let request = request(
        vec![],
        vec![metric(
            "size",
            "By",
            Data::ExponentialHistogram(proto::ExponentialHistogram {
                data_points: vec![point],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )],
    );
    assert_eq!(
        lines(&decode_request(&request, &DeltaTotals::default())),
        [
            "size_bytes_bucket{le=+Inf} 7 @0",
            "size_bytes_bucket{le=0} 4 @0",
            "size_bytes_bucket{le=2} 5 @0",
            "size_bytes_bucket{le=4} 7 @0",
            "size_bytes_count{} 7 @0",
            "size_bytes_sum{} 3 @0",
        ]
    );
}

#[test]
fn summaries() {
    let request = request(
        vec![],
        vec![metric(
            "rpc.latency",
            "ms",
            Data::Summary(proto::Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: vec![],
                    start_time_unix_nano: 1,
                    time_unix_nano: T,
                    count: 4,
                    sum: 10.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 2.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 4.5,
                        },
                    ],
                    flags: 0,
                }],
            }),
        )],
    );
    assert_eq!(
        lines(&decode_request(&request, &DeltaTotals::default())),
        [
            "rpc_latency_milliseconds_count{} 4 @0",
            "rpc_latency_milliseconds_sum{} 10 @0",
            "rpc_latency_milliseconds{quantile=0.5} 2 @0",
            "rpc_latency_milliseconds{quantile=0.99} 4.5 @0",
        ]
    );
}

#[test]
fn deltas_become_running_totals() {
    let deltas = DeltaTotals::default();
    let delta = |time: u64, value: i64| {
        request(
            vec![kv("service.name", "svc")],
            vec![metric(
                "jobs",
                "",
                sum(
                    vec![number(T + time, Number::AsInt(value), vec![])],
                    AggregationTemporality::Delta,
                    true,
                ),
            )],
        )
    };
    assert_eq!(
        lines(&decode_request(&delta(10, 3), &deltas)),
        ["jobs_total{job=svc} 3 @10"]
    );
    assert_eq!(
        lines(&decode_request(&delta(20, 4), &deltas)),
        ["jobs_total{job=svc} 7 @20"]
    );
    // A retry of a stored request (or an older point) is refused, not counted twice.
    let retry = decode_request(&delta(20, 4), &deltas);
    assert!(retry.batch.is_empty());
    assert_eq!(
        retry.rejections.counts().collect::<Vec<_>>(),
        [(Rejection::OutOfOrder, 1)]
    );
    assert!(
        retry.rejections.message().contains("not newer"),
        "{}",
        retry.rejections.message()
    );
    // A request that could not be stored is taken back, so its retry counts.
    let failed = decode_request(&delta(30, 5), &deltas);
    assert_eq!(lines(&failed), ["jobs_total{job=svc} 12 @30"]);
    deltas.revert(failed.receipt);
    assert_eq!(
        lines(&decode_request(&delta(30, 5), &deltas)),
        ["jobs_total{job=svc} 12 @30"]
    );
    assert_eq!(deltas.len(), 1);
    // Idle series are forgotten.
    let later = decode(
        &delta(40, 1).encode_to_vec(),
        Format::Protobuf,
        DELTA_IDLE_NS / 2,
        &deltas,
    )
    .unwrap();
    assert_eq!(lines(&later), ["jobs_total{job=svc} 13 @40"]);
    let idle = request(
        vec![],
        vec![metric(
            "other",
            "",
            sum(
                vec![number(T, Number::AsInt(1), vec![])],
                AggregationTemporality::Delta,
                false,
            ),
        )],
    );
    decode(
        &idle.encode_to_vec(),
        Format::Protobuf,
        4 * DELTA_IDLE_NS,
        &deltas,
    )
    .unwrap();
    assert_eq!(deltas.len(), 1, "jobs_total was idle for over an hour");

    // Delta histograms add up bucket by bucket.
    let histogram = |time: u64, counts: Vec<u64>| {
        request(
            vec![],
            vec![metric(
                "h",
                "",
                Data::Histogram(proto::Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: vec![],
                        start_time_unix_nano: 0,
                        time_unix_nano: T + time,
                        count: counts.iter().sum(),
                        sum: None,
                        bucket_counts: counts,
                        explicit_bounds: vec![1.0],
                        flags: 0,
                    }],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                }),
            )],
        )
    };
    decode_request(&histogram(1, vec![1, 2]), &deltas);
    assert_eq!(
        lines(&decode_request(&histogram(2, vec![4, 0]), &deltas)),
        [
            "h_bucket{le=+Inf} 7 @2",
            "h_bucket{le=1} 5 @2",
            "h_count{} 7 @2"
        ]
    );
}

#[test]
fn refused_points_are_counted_and_named() {
    let mut flagged = number(T, Number::AsDouble(1.0), vec![]);
    flagged.flags = FLAG_NO_RECORDED_VALUE;
    let mut no_value = number(T, Number::AsDouble(1.0), vec![]);
    no_value.value = None;
    let request = request(
        vec![],
        vec![
            metric(
                "ok",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![number(T, Number::AsDouble(2.0), vec![])],
                }),
            ),
            metric(
                "flagged",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![flagged],
                }),
            ),
            metric(
                "empty",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![no_value],
                }),
            ),
            metric(
                "untimed",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![number(0, Number::AsDouble(1.0), vec![])],
                }),
            ),
            metric(
                "future",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![number(u64::MAX, Number::AsDouble(1.0), vec![])],
                }),
            ),
            Metric {
                name: "unknown".to_owned(),
                unit: String::new(),
                data: None,
            },
            metric(
                "nodir",
                "",
                sum(
                    vec![number(T, Number::AsInt(1), vec![]); 2],
                    AggregationTemporality::Unspecified,
                    true,
                ),
            ),
            metric(
                "reserved",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![number(T, Number::AsDouble(1.0), vec![kv("value", "x")])],
                }),
            ),
            metric(
                "nan.delta",
                "",
                sum(
                    vec![number(T, Number::AsDouble(f64::NAN), vec![])],
                    AggregationTemporality::Delta,
                    false,
                ),
            ),
        ],
    );
    let export = decode_request(&request, &DeltaTotals::default());
    assert_eq!(lines(&export), ["ok{} 2 @0"]);
    assert_eq!(
        export.rejections.counts().collect::<Vec<_>>(),
        [
            (Rejection::NoRecordedValue, 1),
            (Rejection::NoValue, 1),
            (Rejection::NoTime, 1),
            (Rejection::UnknownType, 1),
            (Rejection::Temporality, 2),
            (Rejection::Invalid, 3),
        ]
    );
    let message = export.rejections.message();
    assert!(
        message.starts_with("9 data points rejected: metric \"flagged\": point flagged"),
        "{message}"
    );
    for part in [
        "\"empty\"",
        "\"untimed\"",
        "\"future\": time_unix_nano",
        "\"unknown\"",
    ] {
        assert!(message.contains(part), "{part} in {message}");
    }
    assert!(
        message.ends_with("; 3 more"),
        "only the first few: {message}"
    );
    for (rejection, reason) in [
        (Rejection::NoBuckets, "otlp_no_buckets"),
        (Rejection::OutOfOrder, "otlp_delta_out_of_order"),
    ] {
        assert_eq!(rejection.reason(), reason);
    }
}

#[test]
fn json_encoding() {
    let body = r#"{"resourceMetrics":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"svc"}},
        {"key":"host.name","value":{"stringValue":"n1"}},
        {"key":"cores","value":{"intValue":"8"}},
        {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"},{"boolValue":true}]}}},
        {"key":"raw","value":{"bytesValue":"AQI="}}]},
      "scopeMetrics":[{"scope":{"name":"x"},"metrics":[
        {"name":"g","unit":"1","gauge":{"dataPoints":[{"timeUnixNano":"1700000000000000001","asDouble":0.5,
            "attributes":[{"key":"k","value":{"doubleValue":1.5}}]}]}},
        {"name":"c","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
            {"timeUnixNano":1700000000000000002,"asInt":"9007199254740993"}]}},
        {"name":"d","sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","dataPoints":[
            {"timeUnixNano":"1700000000000000003","asDouble":"Infinity"}]}},
        {"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[
            {"timeUnixNano":"1700000000000000004","count":"3","sum":6,"bucketCounts":["1","2"],"explicitBounds":[2.5]},
            {"timeUnixNano":"1700000000000000004","count":"3"}]}},
        {"name":"e","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[
            {"timeUnixNano":"1700000000000000005","count":"3","scale":0,"zeroCount":"1","positive":{"offset":1,"bucketCounts":["2"]}}]}},
        {"name":"q","summary":{"dataPoints":[{"timeUnixNano":"1700000000000000006","count":"2","sum":3,
            "quantileValues":[{"quantile":0.5,"value":1}]}]}}
      ]}]}]}"#;
    let export = decode(body.as_bytes(), Format::Json, 0, &DeltaTotals::default()).unwrap();
    let tags = "job=svc,node=n1";
    assert_eq!(
        lines(&export),
        [
            format!("c_total{{{tags}}} 9007199254740992 @2"),
            "e_bucket{job=svc,le=+Inf,node=n1} 3 @5".to_owned(),
            "e_bucket{job=svc,le=0,node=n1} 1 @5".to_owned(),
            "e_bucket{job=svc,le=4,node=n1} 3 @5".to_owned(),
            format!("e_count{{{tags}}} 3 @5"),
            "g_ratio{job=svc,k=1.5,node=n1} 0.5 @1".to_owned(),
            "h_bucket{job=svc,le=+Inf,node=n1} 3 @4".to_owned(),
            "h_bucket{job=svc,le=2.5,node=n1} 1 @4".to_owned(),
            format!("h_count{{{tags}}} 3 @4"),
            format!("h_sum{{{tags}}} 6 @4"),
            format!("q_count{{{tags}}} 2 @6"),
            format!("q_sum{{{tags}}} 3 @6"),
            format!("q{{{tags},quantile=0.5}} 1 @6"),
            format!("target_info{{cores=8,{tags},raw=AQI=,tags=[\"a\",true]}} 1 @6"),
        ]
    );
    assert_eq!(
        export.rejections.counts().collect::<Vec<_>>(),
        [(Rejection::NoBuckets, 1), (Rejection::Invalid, 1)],
        "{}",
        export.rejections.message()
    );
}

#[test]
fn gzip_bodies_decode_after_gunzip() {
    let request = request(
        vec![],
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![number(T, Number::AsDouble(1.0), vec![])],
            }),
        )],
    );
    let body = crate::compression::gzip(&request.encode_to_vec());
    let inflated = crate::compression::gunzip(&body).unwrap();
    let export = decode(&inflated, Format::Protobuf, 0, &DeltaTotals::default()).unwrap();
    assert_eq!(lines(&export), ["g{} 1 @0"]);
}

#[test]
fn bad_bodies_are_errors() {
    let deltas = DeltaTotals::default();
    let error = decode(b"\xff\xff\xff", Format::Protobuf, 0, &deltas).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the body is not a protobuf ExportMetricsServiceRequest"),
        "{error}"
    );
    let error = decode(b"{\"resourceMetrics\": 3}", Format::Json, 0, &deltas).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the body is not an OTLP JSON ExportMetricsServiceRequest"),
        "{error}"
    );
    assert!(decode(b"not json", Format::Json, 0, &deltas).is_err());
    // An empty body is an empty request.
    let export = decode(b"", Format::Protobuf, 0, &deltas).unwrap();
    assert!(export.batch.is_empty() && export.rejections.total() == 0);
}

#[test]
fn answers() {
    assert_eq!(
        Format::from_content_type("application/x-protobuf"),
        Some(Format::Protobuf)
    );
    assert_eq!(
        Format::from_content_type("Application/JSON; charset=utf-8"),
        Some(Format::Json)
    );
    assert_eq!(Format::from_content_type("text/plain"), None);
    let mut rejections = Rejections::default();
    assert!(encode_response(Format::Protobuf, &rejections).is_empty());
    assert_eq!(encode_response(Format::Json, &rejections), b"{}");
    rejections.add(Rejection::NoBuckets, 2, "h", "no buckets");
    let response =
        ExportMetricsServiceResponse::decode(&encode_response(Format::Protobuf, &rejections)[..])
            .unwrap();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 2);
    assert_eq!(
        partial.error_message,
        "2 data points rejected: metric \"h\": no buckets"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&encode_response(Format::Json, &rejections)).unwrap();
    assert_eq!(json["partialSuccess"]["rejectedDataPoints"], "2");
    let status = Status::decode(&encode_status(Format::Protobuf, 3, "bad")[..]).unwrap();
    assert_eq!((status.code, status.message.as_str()), (3, "bad"));
    assert_eq!(
        encode_status(Format::Json, 3, "bad"),
        br#"{"code":3,"message":"bad"}"#
    );
}
