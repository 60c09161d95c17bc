use super::*;
use crate::compression::{gzip, gzip_bomb};

fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut tags: Vec<_> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tags.sort();
    tags
}

fn one(topic: &str, payload: &[u8]) -> Result<Sample, DecodeError> {
    let mut out = Batch::new();
    assert_eq!(
        decode(topic.as_bytes(), payload, &mut out)?,
        Decoded::Samples(1)
    );
    Ok(out.samples().next().unwrap())
}

#[test]
fn pmu_pub_topic_from_design_doc() {
    let sample = one(
        "org/antarex/cluster/testcluster/node/mabus/plugin/pmu_pub/chnl/data/core/0/instr",
        b"123456;1700000000.123",
    )
    .unwrap();
    assert_eq!(sample.metric, "instr");
    assert_eq!(
        sample.tags,
        tags(&[
            ("org", "antarex"),
            ("cluster", "testcluster"),
            ("node", "mabus"),
            ("plugin", "pmu_pub"),
            ("chnl", "data"),
            ("core", "0"),
        ])
    );
    assert_eq!(sample.time_ns, 1_700_000_000_123_000_000);
    assert_eq!(sample.value, Value::Float(123456.0));
}

#[test]
fn tag_order_does_not_matter() {
    let a = one("node/n1/org/o/temp", b"1;1").unwrap();
    let b = one("org/o/node/n1/temp", b"1;1").unwrap();
    assert_eq!(a, b);
}

#[test]
fn any_number_of_pairs() {
    assert_eq!(one("power", b"5;10").unwrap().tags, vec![]);
    let deep = (0..20).map(|i| format!("k{i}/v{i}/")).collect::<String>() + "m";
    assert_eq!(one(&deep, b"5;10").unwrap().tags.len(), 20);
}

#[test]
fn url_quoted_segments() {
    let sample = one("node/rack%2F1%20a/sensor/CPU%2B%231/temp%25", b"40;1").unwrap();
    assert_eq!(sample.tag("node"), Some("rack/1 a"));
    assert_eq!(sample.tag("sensor"), Some("CPU+#1"));
    assert_eq!(sample.metric, "temp%");
}

#[test]
fn timestamps() {
    let cases: &[(&str, i64)] = &[
        ("1700000000", 1_700_000_000_000_000_000),
        ("1700000000.5", 1_700_000_000_500_000_000),
        ("1700000000.000001", 1_700_000_000_000_001_000),
        ("1700000000.1234567891", 1_700_000_000_123_456_789),
        ("1.7e9", 1_700_000_000_000_000_000),
        ("0.001", 1_000_000),
    ];
    for (text, ns) in cases {
        assert_eq!(parse_seconds(text), Some(*ns), "{text}");
    }
    for bad in ["", "abc", "1e30", "nan", "inf", "1.2.3", "--1"] {
        assert_eq!(parse_seconds(bad), None, "{bad}");
    }
}

#[test]
fn values_numbers_and_text() {
    let cases: &[(&[u8], Value)] = &[
        (b"42;1", Value::Float(42.0)),
        (b"-1.5e3;1", Value::Float(-1500.0)),
        (b" 3.25 ;1", Value::Float(3.25)),
        (
            b"OK - load average: 0.1;1",
            Value::Text("OK - load average: 0.1".into()),
        ),
        (b"a;b;c;1", Value::Text("a;b;c".into())),
        (b"[CRITICAL] disk;1", Value::Text("[CRITICAL] disk".into())),
    ];
    for (payload, value) in cases {
        assert_eq!(&one("node/n/m", payload).unwrap().value, value);
    }
}

#[test]
fn markers_and_commands_store_nothing() {
    let mut out = Batch::new();
    for marker in [&b"CK"[..], b"__FLUSH"] {
        assert_eq!(decode(b"node/n/m", marker, &mut out), Ok(Decoded::Marker));
    }
    let cmd = b"org/o/cluster/c/node/n/plugin/p/chnl/cmd";
    assert_eq!(decode(cmd, b"-s 2", &mut out), Ok(Decoded::Command));
    assert_eq!(
        decode(b"chnl/cmd/x", b"1;1", &mut out),
        Ok(Decoded::Command)
    );
    assert!(out.is_empty());
}

#[test]
fn malformed_messages_are_rejected_with_a_reason() {
    let cases: &[(&[u8], &[u8], &str)] = &[
        (b"\xff/x/m", b"1;1", "topic_not_utf8"),
        (b"node/n", b"1;1", "topic_shape"),
        (b"", b"1;1", "empty_segment"),
        (b"node//m", b"1;1", "empty_segment"),
        (b"node/n/", b"1;1", "empty_segment"),
        (b"node/%ff/m", b"1;1", "bad_escape"),
        (b"node/a/node/b/m", b"1;1", "duplicate_tag"),
        (b"time/a/m", b"1;1", "reserved_tag"),
        (b"node/n/m", b"\xff;1", "payload_not_utf8"),
        (b"node/n/m", b"42", "missing_timestamp"),
        (b"node/n/m", b"", "missing_timestamp"),
        (b"node/n/m", b"42;yesterday", "bad_timestamp"),
        (b"node/n/m", b";1", "empty_value"),
        (b"node/n/m", b"\x1f\x8bnot gzip", "bad_gzip"),
        (b"node/n/m", b"{\"name\": 3}", "bad_json"),
        (b"node/n/m", b"[1, 2]", "bad_json"),
        (b"node/n/m", b"{\"name\":\"x\",\"value\":1}", "bad_json"),
    ];
    for (topic, payload, reason) in cases {
        let mut out = Batch::new();
        let err = decode(topic, payload, &mut out).unwrap_err();
        assert_eq!(err.reason(), *reason, "{topic:?} {payload:?}: {err}");
        assert!(DecodeError::REASONS.contains(reason));
        assert!(out.is_empty());
    }
}

#[test]
fn examon_common_json() {
    let payload = br#"{"name": "temp", "value": 41.5, "timestamp": 1700000000123,
        "tags": {"node": "n1", "org": "o", "core": 3}}"#;
    let sample = one("any/topic", payload).unwrap();
    assert_eq!(sample.metric, "temp");
    assert_eq!(
        sample.tags,
        tags(&[("core", "3"), ("node", "n1"), ("org", "o")])
    );
    assert_eq!(sample.time_ns, 1_700_000_000_123_000_000);
    assert_eq!(sample.value, Value::Float(41.5));
    // examon-common may also gzip a single json object.
    assert_eq!(one("x", &gzip(payload)).unwrap(), sample);
}

#[test]
fn examon_common_bulk_gzipped_and_plain() {
    let list = br#"[{"name": "a", "value": 1, "timestamp": 1000, "tags": {"node": "n"}},
                    {"name": "b", "value": "up", "timestamp": 2000.5, "tags": {"node": "n"}}]"#;
    for payload in [list.to_vec(), gzip(list)] {
        let mut out = Batch::new();
        assert_eq!(decode(b"bulk", &payload, &mut out), Ok(Decoded::Samples(2)));
        let out: Vec<Sample> = out.samples().collect();
        assert_eq!(out[0].time_ns, 1_000_000_000);
        assert_eq!(out[1].value, Value::Text("up".into()));
        assert_eq!(out[1].time_ns, 2_000_500_000);
    }
}

#[test]
fn a_bad_item_in_bulk_rejects_the_message_whole() {
    let list = br#"[{"name": "a", "value": 1, "timestamp": 1000}, {"name": "", "value": 1, "timestamp": 1}]"#;
    let mut out = Batch::new();
    assert_eq!(
        decode(b"bulk", &gzip(list), &mut out).unwrap_err().reason(),
        "bad_json"
    );
    assert!(out.is_empty());
}

#[test]
fn gzip_bombs_are_refused() {
    let mut out = Batch::new();
    assert_eq!(
        decode(b"bulk", &gzip_bomb(), &mut out)
            .unwrap_err()
            .reason(),
        "bad_gzip"
    );
}

#[test]
fn encode_round_trips_through_decode() {
    let topic = encode_topic(
        [
            ("org", "e4"),
            ("node", "r1/n 2"),
            ("plugin", "linux"),
            ("chnl", "data"),
        ],
        "load#1",
    );
    assert_eq!(
        topic,
        "org/e4/node/r1%2Fn%202/plugin/linux/chnl/data/load%231"
    );
    for value in [
        Value::Float(0.1),
        Value::Float(-3e-7),
        Value::Text("hi".into()),
    ] {
        let payload = encode_payload(&value, 1_700_000_000_250_000_000);
        let sample = one(&topic, payload.as_bytes()).unwrap();
        assert_eq!(sample.value, value);
        assert_eq!(sample.time_ns, 1_700_000_000_250_000_000);
        assert_eq!(sample.tag("node"), Some("r1/n 2"));
        assert_eq!(sample.metric, "load#1");
    }
}
