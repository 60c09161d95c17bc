//! EXAMON SDK v3 (EXAMON v0.5's `examon-base-plugin`): a positional topic and a JSON payload.
//!
//! - topic: the plugin's `topic_prefix`, then one level per tag, then the metric, e.g.
//!   `examon/e4red/nvml_pub/cn01/temperature.gpu` for the tags `org`, `cluster`, `plugin`,
//!   `node`. The levels carry no names: which tag each level is comes from the
//!   configuration ([`crate::mqtt::TopicRule::tags`]; an empty name skips a level, such as a
//!   prefix). Levels are URL-quoted by the SDK's `sanitize_topic` and unquoted here.
//! - payload: `{"v": 58.0, "ts": 1716480000123}`: the value (a number, or text) and the time
//!   in milliseconds since the epoch (the arrival time when absent). Any other field is a tag
//!   of this sample, overriding the topic's tag of the same name.

use serde_json::Value as Json;

use crate::examon::{DecodeError, Decoded, check_tags, unquote};
use crate::{Batch, Sample, Value};

/// Decodes one message whose topic levels are the tags named by `tags`, then the metric;
/// appends its sample to `out`. On error nothing is appended.
pub fn decode(
    tags: &[String],
    topic: &str,
    payload: &[u8],
    now_ns: i64,
    out: &mut Batch,
) -> Result<Decoded, DecodeError> {
    let levels: Vec<&str> = topic.split('/').collect();
    if levels.len() != tags.len() + 1 {
        return Err(DecodeError::TopicLevels {
            topic: topic.to_owned(),
            expected: tags.len() + 1,
        });
    }
    let (named, metric) = levels.split_at(tags.len());
    let mut sample_tags = Vec::with_capacity(tags.len());
    for (name, level) in tags.iter().zip(named) {
        if !name.is_empty() {
            sample_tags.push((name.clone(), unquote(level)?));
        }
    }
    let metric = unquote(metric[0])?;
    if metric.is_empty() {
        return Err(DecodeError::EmptySegment {
            topic: topic.to_owned(),
        });
    }
    let bad = |message: &str| DecodeError::BadV3Payload {
        message: message.to_owned(),
    };
    let Ok(Json::Object(fields)) = serde_json::from_slice::<Json>(payload) else {
        return Err(bad(
            r#"expected a JSON object {"v": value, "ts": milliseconds}"#,
        ));
    };
    let mut value = None;
    let mut time_ns = now_ns;
    for (name, field) in fields {
        match (name.as_str(), field) {
            ("v", Json::Number(n)) => value = n.as_f64().map(Value::Float),
            ("v", Json::String(s)) if !s.is_empty() => value = Some(Value::Text(s)),
            ("v", _) => return Err(bad(r#""v" must be a number or non-empty text"#)),
            ("ts", Json::Number(ms)) => {
                // Whole milliseconds exactly; fractions as near as a double allows.
                let exact = ms.as_i64().and_then(|ms| ms.checked_mul(1_000_000));
                let near = || {
                    ms.as_f64()
                        .map(|ms| ms * 1e6)
                        .filter(|ns| ns.is_finite() && ns.abs() < i64::MAX as f64)
                        .map(|ns| ns as i64)
                };
                time_ns = exact
                    .or_else(near)
                    .ok_or_else(|| bad(r#""ts" is not milliseconds since the epoch"#))?;
            }
            ("ts", _) => return Err(bad(r#""ts" must be a number of milliseconds"#)),
            (_, field) => {
                let text = match field {
                    Json::String(s) => s,
                    Json::Number(n) => n.to_string(),
                    Json::Bool(b) => b.to_string(),
                    _ => {
                        return Err(bad(
                            "an extra field (a tag) must be text, a number or a boolean",
                        ));
                    }
                };
                match sample_tags.iter_mut().find(|(key, _)| *key == name) {
                    Some(tag) => tag.1 = text,
                    None => sample_tags.push((name, text)),
                }
            }
        }
    }
    let value = value.ok_or_else(|| bad(r#"no "v""#))?;
    out.push_sample(Sample {
        metric,
        tags: check_tags(sample_tags)?,
        time_ns,
        value,
    });
    Ok(Decoded::Samples(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> Vec<String> {
        ["org", "cluster", "plugin", "node"]
            .map(String::from)
            .to_vec()
    }

    fn run(tags: &[String], topic: &str, payload: &str) -> Result<Vec<Sample>, DecodeError> {
        let mut out = Batch::new();
        decode(tags, topic, payload.as_bytes(), 5, &mut out)?;
        Ok(out.samples().collect())
    }

    #[test]
    fn the_sdk_v3_example() {
        let out = run(
            &tags(),
            "examon/e4red/nvml_pub/cn01/temperature.gpu",
            r#"{"v": 58.0, "ts": 1716480000123}"#,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].metric, "temperature.gpu");
        assert_eq!(out[0].value, Value::Float(58.0));
        assert_eq!(out[0].time_ns, 1_716_480_000_123_000_000);
        let tags: Vec<(&str, &str)> = out[0]
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            tags,
            [
                ("cluster", "e4red"),
                ("node", "cn01"),
                ("org", "examon"),
                ("plugin", "nvml_pub")
            ]
        );
    }

    #[test]
    fn quoted_levels_extra_fields_skipped_levels_and_text() {
        let named = ["", "node"].map(String::from).to_vec();
        let out = run(
            &named,
            "site%2Fa/cn%2001/power%2Fpsu",
            r#"{"v": "OK", "node": "cn02", "gpu": 1}"#,
        )
        .unwrap();
        assert_eq!(out[0].metric, "power/psu");
        assert_eq!(out[0].value, Value::Text("OK".into()));
        assert_eq!(out[0].time_ns, 5, "no ts: the arrival time");
        assert_eq!(out[0].tag("node"), Some("cn02"), "the payload's tag wins");
        assert_eq!(out[0].tag("gpu"), Some("1"));
        assert_eq!(out[0].tags.len(), 2, "the skipped level is no tag");
    }

    #[test]
    fn what_does_not_fit_is_refused_with_a_reason() {
        let reason =
            |topic: &str, payload: &str| run(&tags(), topic, payload).unwrap_err().reason();
        assert_eq!(reason("a/b/c/metric", r#"{"v":1}"#), "topic_levels");
        assert_eq!(reason("a/b/c/d/e/f", r#"{"v":1}"#), "topic_levels");
        assert_eq!(reason("a/b/c/d/m", "1;1700000000"), "bad_v3_payload");
        assert_eq!(reason("a/b/c/d/m", r#"{"ts": 1}"#), "bad_v3_payload");
        assert_eq!(reason("a/b/c/d/m", r#"{"v": null}"#), "bad_v3_payload");
        assert_eq!(
            reason("a/b/c/d/m", r#"{"v": 1, "ts": "x"}"#),
            "bad_v3_payload"
        );
        assert_eq!(
            reason("a/b/c/d/m", r#"{"v": 1, "ts": 1e300}"#),
            "bad_v3_payload"
        );
        assert_eq!(
            reason("a/b/c/d/m", r#"{"v": 1, "x": [1]}"#),
            "bad_v3_payload"
        );
        assert_eq!(
            reason("a/b/c/d/m", r#"{"v": 1, "time": "t"}"#),
            "reserved_tag"
        );
        assert_eq!(reason("a/b//d/m", r#"{"v": 1}"#), "empty_segment");
        assert_eq!(reason("a/b/c/d/", r#"{"v": 1}"#), "empty_segment");
        assert_eq!(reason("a/b/c/%ff/m", r#"{"v": 1}"#), "bad_escape");
    }
}
