use super::*;

fn sample(name: &str, labels: &[(&str, &str)], value: f64, timestamp_ms: Option<i64>) -> Exposed {
    Exposed {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        value,
        timestamp_ms,
    }
}

#[test]
fn text_format_counters_gauges_histograms_summaries() {
    let body = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# A comment.
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9
metric_without_timestamp_and_labels 12.47
something_weird{problem="division by zero"} +Inf -3982045
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="1"} 133988
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="1"} NaN
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
trailing_comma{a="b",} -Inf
"#;
    let parsed = parse(body, Format::Text).unwrap();
    assert_eq!(parsed.len(), 15);
    assert_eq!(
        parsed[0],
        sample(
            "http_requests_total",
            &[("method", "post"), ("code", "200")],
            1027.0,
            Some(1395066363000)
        )
    );
    assert_eq!(
        parsed[2],
        sample(
            "msdos_file_access_time_seconds",
            &[
                ("path", "C:\\DIR\\FILE.TXT"),
                ("error", "Cannot find file:\n\"FILE.TXT\"")
            ],
            1.458255915e9,
            None
        )
    );
    assert_eq!(parsed[4].value, f64::INFINITY);
    assert_eq!(parsed[4].timestamp_ms, Some(-3982045));
    assert_eq!(parsed[6].labels, [("le".into(), "1.0".into())]);
    assert_eq!(parsed[7].labels, [("le".into(), "+Inf".into())]);
    assert_eq!(parsed[10].labels, [("quantile".into(), "0.5".into())]);
    assert_eq!(parsed[11].labels, [("quantile".into(), "1.0".into())]);
    assert!(parsed[11].value.is_nan());
    assert_eq!(parsed[12].value, 1.7560473e7);
    assert_eq!(
        parsed[14],
        sample("trailing_comma", &[("a", "b")], f64::NEG_INFINITY, None)
    );
}

#[test]
fn openmetrics_keeps_total_drops_created_and_exemplars() {
    let body = "# TYPE acme_http_router_request_seconds summary\n\
# UNIT acme_http_router_request_seconds seconds\n\
acme_http_router_request_seconds_sum{path=\"/api/v1\",method=\"GET\"} 9036.32\n\
acme_http_router_request_seconds_count{path=\"/api/v1\",method=\"GET\"} 807283.0\n\
acme_http_router_request_seconds_created{path=\"/api/v1\",method=\"GET\"} 1605281325.0\n\
# TYPE go_goroutines gauge\n\
go_goroutines 69 1520430000.123\n\
# TYPE process_cpu_seconds counter\n\
process_cpu_seconds_total 4.20072246e+06\n\
process_cpu_seconds_created 1520430000.0\n\
# TYPE foo histogram\n\
foo_bucket{le=\"0.01\"} 0\n\
foo_bucket{le=\"1.0\"} 10 # {trace_id=\"KOO5S4vxi0o\"} 0.67 1520879607.789\n\
foo_bucket{le=\"+Inf\"} 17\n\
foo_count 17\n\
foo_sum 324789.3\n\
foo_created 1520430000.123\n\
# EOF\n";
    let parsed = parse(body, Format::OpenMetrics).unwrap();
    let names: Vec<&str> = parsed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "acme_http_router_request_seconds_sum",
            "acme_http_router_request_seconds_count",
            "go_goroutines",
            "process_cpu_seconds_total",
            "foo_bucket",
            "foo_bucket",
            "foo_bucket",
            "foo_count",
            "foo_sum"
        ]
    );
    assert_eq!(parsed[2].timestamp_ms, Some(1520430000123));
    assert_eq!(parsed[3].value, 4.20072246e6);
    assert_eq!(
        parsed[5],
        sample("foo_bucket", &[("le", "1.0")], 10.0, None)
    );
}

#[test]
fn openmetrics_needs_eof_and_nothing_after_it() {
    assert_eq!(
        parse("a 1\n", Format::OpenMetrics).unwrap_err().to_string(),
        "line 1: OpenMetrics data does not end with # EOF"
    );
    assert_eq!(
        parse("a 1\n# EOF\nb 2\n", Format::OpenMetrics)
            .unwrap_err()
            .to_string(),
        "line 3: content after # EOF"
    );
    // The text format has no EOF marker: a `# EOF` there is a comment.
    assert_eq!(parse("a 1\n# EOF\n", Format::Text).unwrap().len(), 1);
}

#[test]
fn bad_lines_fail_the_scrape_naming_the_line() {
    let cases = [
        ("ok 1\n1bad 2\n", "line 2: invalid metric name \"1bad\""),
        ("m{a=\"b\" 1\n", "line 1: expected , or } after label \"a\""),
        ("m{a=b} 1\n", "line 1: label \"a\": value not quoted"),
        ("m{a=\"b\",a=\"c\"} 1\n", "line 1: duplicate label \"a\""),
        ("m{a=\"b} 1\n", "line 1: label \"a\": unterminated value"),
        ("m\n", "line 1: no value after m"),
        ("m one\n", "line 1: invalid value \"one\""),
        ("m 1 12.5\n", "line 1: invalid timestamp \"12.5\""),
        ("m 1 2 3\n", "line 1: unexpected \"3\" after the timestamp"),
        ("# TYPE m\n", "line 1: # TYPE needs a name and a type"),
    ];
    for (body, error) in cases {
        assert_eq!(
            parse(body, Format::Text).unwrap_err().to_string(),
            error,
            "{body:?}"
        );
    }
}

#[test]
fn content_type_picks_the_format() {
    assert_eq!(
        Format::from_content_type(Some(
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        )),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::from_content_type(Some("text/plain; version=0.0.4; charset=utf-8")),
        Format::Text
    );
    assert_eq!(Format::from_content_type(None), Format::Text);
}

/// As Go's `strconv.FormatFloat(f, 'g', -1, 64)` plus `.0`, what Prometheus 3 stores.
#[test]
fn bounds_are_written_as_prometheus_3_writes_them() {
    let cases = [
        (1.0, "1.0"),
        (0.0, "0.0"),
        (-0.0, "0.0"),
        (0.005, "0.005"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (2.5, "2.5"),
        (100000.0, "100000.0"),
        (1e6, "1e+06"),
        (2.5e6, "2.5e+06"),
        (123456789.0, "1.23456789e+08"),
        (1e21, "1e+21"),
        (-7.0, "-7.0"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ];
    for (value, text) in cases {
        assert_eq!(format_float(value), text, "{value}");
    }
}

#[test]
fn names() {
    assert!(valid_metric_name("node_cpu_seconds_total"));
    assert!(valid_metric_name("job:rate5m"));
    assert!(!valid_metric_name("0abc"));
    assert!(!valid_metric_name(""));
    assert!(valid_label_name("__name__"));
    assert!(!valid_label_name("a:b"));
}
