use super::*;

const MS: i64 = 1_000_000;

fn sample(metric: &str, tags: &[(&str, &str)], ms: i64, value: Value) -> Sample {
    Sample::new(
        metric,
        tags.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ms * MS,
        value,
    )
}

/// The example of KairosDB's "Add Data Points" documentation, plus the shapes EXAMON's
/// examon-common `put_metrics` sends (a list of `{name, timestamp, value, tags}`).
#[test]
fn well_formed_bodies() {
    let host1 = [("host", "server1"), ("data_center", "DC1")];
    let cases: Vec<(&str, &str, Vec<Sample>)> = vec![
        (
            "datapoints list with integer and float values",
            r#"[{"name": "archive_file_tracked", "datapoints": [[1359788400000, 123], [1359788300000, 13.2]],
                 "tags": {"host": "server1", "data_center": "DC1"}, "ttl": 300}]"#,
            vec![
                sample(
                    "archive_file_tracked",
                    &host1,
                    1359788400000,
                    Value::Float(123.0),
                ),
                sample(
                    "archive_file_tracked",
                    &host1,
                    1359788300000,
                    Value::Float(13.2),
                ),
            ],
        ),
        (
            "one object with timestamp and value",
            r#"{"name": "archive_file_search", "timestamp": 1359786400000, "value": 321, "tags": {"host": "server2"}}"#,
            vec![sample(
                "archive_file_search",
                &[("host", "server2")],
                1359786400000,
                Value::Float(321.0),
            )],
        ),
        (
            "examon-common put_metrics: EXAMON topic tags",
            r#"[{"name": "temp", "timestamp": 1700000000123, "value": 41.5,
                 "tags": {"org": "acme", "cluster": "c1", "node": "n01", "plugin": "ipmi", "chnl": "data"}}]"#,
            vec![sample(
                "temp",
                &[
                    ("org", "acme"),
                    ("cluster", "c1"),
                    ("node", "n01"),
                    ("plugin", "ipmi"),
                    ("chnl", "data"),
                ],
                1700000000123,
                Value::Float(41.5),
            )],
        ),
        (
            "time is an alias of timestamp",
            r#"{"name": "m", "time": 5, "value": 1, "tags": {"a": "b"}}"#,
            vec![sample("m", &[("a", "b")], 5, Value::Float(1.0))],
        ),
        (
            "string values: numeric strings are numbers, others text",
            r#"{"name": "state", "datapoints": [[1, "2.5"], [2, "OK - load 0.1"]], "tags": {"node": "n1"}}"#,
            vec![
                sample("state", &[("node", "n1")], 1, Value::Float(2.5)),
                sample(
                    "state",
                    &[("node", "n1")],
                    2,
                    Value::Text("OK - load 0.1".into()),
                ),
            ],
        ),
        (
            "type string keeps numbers as text",
            r#"{"name": "version", "type": "string", "datapoints": [[1, "1.10"], [2, 7]], "tags": {"node": "n1"}}"#,
            vec![
                sample("version", &[("node", "n1")], 1, Value::Text("1.10".into())),
                sample("version", &[("node", "n1")], 2, Value::Text("7".into())),
            ],
        ),
        (
            "a per-point type overrides the metric's",
            r#"{"name": "v", "type": "string", "datapoints": [[1, "3", "long"]], "tags": {"node": "n1"}}"#,
            vec![sample("v", &[("node", "n1")], 1, Value::Float(3.0))],
        ),
        (
            "fractional milliseconds are truncated, numeric tag values kept as text",
            r#"{"name": "m", "datapoints": [[1700000000123.9, 1]], "tags": {"core": 3}}"#,
            vec![sample(
                "m",
                &[("core", "3")],
                1700000000123,
                Value::Float(1.0),
            )],
        ),
        (
            "no tags (KairosDB requires one; exawatch does not)",
            r#"{"name": "m", "datapoints": [[1, 1]]}"#,
            vec![sample("m", &[], 1, Value::Float(1.0))],
        ),
        (
            "both forms in one metric",
            r#"{"name": "m", "timestamp": 1, "value": 1, "datapoints": [[2, 2]], "tags": {"a": "b"}}"#,
            vec![
                sample("m", &[("a", "b")], 1, Value::Float(1.0)),
                sample("m", &[("a", "b")], 2, Value::Float(2.0)),
            ],
        ),
        ("an empty list", "[]", vec![]),
        (
            "a metric without data points",
            r#"{"name": "m", "tags": {"a": "b"}}"#,
            vec![],
        ),
    ];
    for (what, body, expected) in cases {
        assert_eq!(
            decode_datapoints(body.as_bytes()),
            Ok(expected),
            "{what}: {body}"
        );
    }
}

#[test]
fn malformed_bodies_are_refused_with_every_reason() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("not JSON", "{nope", &["Invalid json."]),
        ("truncated", r#"[{"name": "m""#, &["Invalid json."]),
        ("a number", "42", &["Invalid start of json."]),
        (
            "a list of numbers",
            "[1]",
            &["metric[0] must be an object."],
        ),
        (
            "no name",
            r#"{"datapoints": [[1, 1]], "tags": {"a": "b"}}"#,
            &["metric[0].name cannot be null or empty."],
        ),
        (
            "empty name",
            r#"{"name": "", "datapoints": [[1, 1]]}"#,
            &["metric[0].name cannot be null or empty."],
        ),
        (
            "timestamp without value",
            r#"{"name": "m", "timestamp": 1, "tags": {"a": "b"}}"#,
            &["metric[0](name=m).value cannot be null or empty."],
        ),
        (
            "value without timestamp",
            r#"{"name": "m", "value": 1, "tags": {"a": "b"}}"#,
            &["metric[0](name=m).timestamp cannot be null."],
        ),
        (
            "pairs missing parts",
            r#"{"name": "m", "datapoints": [[], [1], [null, 2], [3, null], [4, ""]], "tags": {"a": "b"}}"#,
            &[
                "metric[0](name=m).datapoints[0].timestamp cannot be null or empty.",
                "metric[0](name=m).datapoints[1].value cannot be null or empty.",
                "metric[0](name=m).datapoints[2].timestamp cannot be null.",
                "metric[0](name=m).datapoints[3].value cannot be null or empty.",
                "metric[0](name=m).datapoints[4].value cannot be null or empty.",
            ],
        ),
        (
            "bad timestamps",
            r#"{"name": "m", "datapoints": [["yesterday", 1], [1e300, 1], [true, 1]], "tags": {"a": "b"}}"#,
            &[
                "metric[0](name=m).datapoints[0].timestamp must be milliseconds since the epoch.",
                "metric[0](name=m).datapoints[1].timestamp must be milliseconds since the epoch.",
                "metric[0](name=m).datapoints[2].timestamp must be milliseconds since the epoch.",
            ],
        ),
        (
            "bad values",
            r#"{"name": "m", "type": "double", "datapoints": [[1, "abc"], [2, [1]], [3, {}]], "tags": {"a": "b"}}"#,
            &[
                "metric[0](name=m).datapoints[0].value \"abc\" is not a number.",
                "metric[0](name=m).datapoints[1].value must be a number or a string.",
                "metric[0](name=m).datapoints[2].value must be a number or a string.",
            ],
        ),
        (
            "unknown type",
            r#"{"name": "m", "type": "histogram", "datapoints": [[1, 1]], "tags": {"a": "b"}}"#,
            &[
                "metric[0](name=m).type Unregistered data point type 'histogram' (long, double or string).",
            ],
        ),
        (
            "datapoints not a list",
            r#"{"name": "m", "datapoints": {"1": 2}, "tags": {"a": "b"}}"#,
            &["metric[0](name=m).datapoints must be a list of [timestamp, value] pairs."],
        ),
        (
            "a point that is not a pair",
            r#"{"name": "m", "datapoints": [5], "tags": {"a": "b"}}"#,
            &["metric[0](name=m).datapoints[0] must be a [timestamp, value] pair."],
        ),
        (
            "bad tags",
            r#"{"name": "m", "datapoints": [[1, 1]], "tags": {"": "x", "value": "v", "node": "", "core": null}}"#,
            &[
                "metric[0](name=m).tag[0].name cannot be null or empty.",
                "metric[0](name=m).tag[core].value cannot be null or empty.",
                "metric[0](name=m).tag[node].value cannot be null or empty.",
                "metric[0](name=m).tag[value].name is reserved (time, metric, value, text, value_mantissa and value_scale are columns).",
            ],
        ),
        (
            "tags not an object",
            r#"{"name": "m", "datapoints": [[1, 1]], "tags": ["a"]}"#,
            &["metric[0](name=m).tags must be an object."],
        ),
        (
            "one bad metric refuses the whole body",
            r#"[{"name": "good", "datapoints": [[1, 1]], "tags": {"a": "b"}},
                {"name": "bad", "datapoints": [[1, null]], "tags": {"a": "b"}}]"#,
            &["metric[1](name=bad).datapoints[0].value cannot be null or empty."],
        ),
    ];
    for (what, body, expected) in cases {
        let error = decode_datapoints(body.as_bytes()).expect_err(what);
        let messages = error.messages();
        assert_eq!(messages.len(), expected.len(), "{what}: {messages:?}");
        for (message, want) in messages.iter().zip(expected.iter()) {
            assert!(message.starts_with(want), "{what}: {message:?} vs {want:?}");
        }
    }
}

#[test]
fn at_most_max_reported_errors() {
    let points: Vec<String> = (0..500).map(|i| format!("[{i}, null]")).collect();
    let body = format!(r#"{{"name": "m", "datapoints": [{}]}}"#, points.join(","));
    let error = decode_datapoints(body.as_bytes()).unwrap_err();
    assert_eq!(error.messages().len(), MAX_REPORTED_ERRORS);
}
