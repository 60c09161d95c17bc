//! The EXAMON wire format, as EXAMON plugins and examon-common publish it over MQTT.
//!
//! - topic: alternating key/value segments, then the metric name, e.g.
//!   `org/antarex/cluster/c1/node/mabus/plugin/pmu_pub/chnl/data/core/0/instr`; segments may be
//!   URL-quoted; tag order is free.
//! - payload `value;timestamp` (seconds, float): a value that is not a number is a text sample.
//! - payloads `CK` and `__FLUSH` are markers; topics with `chnl/cmd` carry collector commands.
//! - examon-common's `json` format (one `{name, value, timestamp (ms), tags}` object, the topic
//!   is free) and `bulk` format (a JSON list of those, usually gzipped).

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use snafu::Snafu;

use crate::compression::gunzip;
use crate::{Batch, RESERVED_COLUMNS, Sample, Value};

pub use cache::TopicCache;

#[cfg(test)]
mod tests;

mod cache;

/// Why a message was rejected. [`DecodeError::reason`] is the label it is counted under.
#[derive(Debug, Clone, Snafu, PartialEq)]
#[snafu(visibility(pub(crate)))]
pub enum DecodeError {
    /// The topic is not valid UTF-8.
    #[snafu(display("topic is not valid UTF-8"))]
    TopicNotUtf8,
    /// The topic is not `key/value/…/metric`.
    #[snafu(display("topic {topic:?} is not key/value pairs followed by a metric name"))]
    TopicShape { topic: String },
    /// A topic segment (or a JSON name or tag) is empty.
    #[snafu(display("empty segment in topic {topic:?}"))]
    EmptySegment { topic: String },
    /// A URL-quoted segment does not decode to UTF-8.
    #[snafu(display("segment {segment:?} does not URL-decode to UTF-8"))]
    BadEscape { segment: String },
    /// The same tag key appears twice.
    #[snafu(display("tag {key:?} appears twice"))]
    DuplicateTag { key: String },
    /// A tag key collides with a column of the `samples` table.
    #[snafu(display(
        "tag key {key:?} is reserved (time, metric, value, text, value_mantissa, value_scale)"
    ))]
    ReservedTag { key: String },
    /// The payload is not valid UTF-8.
    #[snafu(display("payload is not valid UTF-8"))]
    PayloadNotUtf8,
    /// The payload has no `;timestamp`.
    #[snafu(display("payload {payload:?} has no ';timestamp'"))]
    MissingTimestamp { payload: String },
    /// The timestamp is not a number of seconds in range.
    #[snafu(display("timestamp {timestamp:?} is not seconds since the epoch"))]
    BadTimestamp { timestamp: String },
    /// The value is empty.
    #[snafu(display("payload has an empty value"))]
    EmptyValue,
    /// A gzip payload does not inflate, or inflates beyond
    /// [`MAX_DECOMPRESSED_BYTES`](crate::compression::MAX_DECOMPRESSED_BYTES).
    #[snafu(display("gzip payload does not inflate: {message}"))]
    BadGzip { message: String },
    /// A JSON payload does not parse as examon-common's `json`/`bulk` format.
    #[snafu(display("JSON payload is not examon-common json/bulk: {message}"))]
    BadJson { message: String },
    /// An EXAMON SDK v3 topic has not the configured number of levels.
    #[snafu(display(
        "topic {topic:?} does not have the {expected} levels its [[ingest.mqtt]] rule names (tags, then the metric)"
    ))]
    TopicLevels { topic: String, expected: usize },
    /// An EXAMON SDK v3 payload is not a JSON object with a value `v` and a time `ts`.
    #[snafu(display("EXAMON v3 payload: {message}"))]
    BadV3Payload { message: String },
}

impl DecodeError {
    /// A short, stable label for counting rejections per reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TopicNotUtf8 => "topic_not_utf8",
            Self::TopicShape { .. } => "topic_shape",
            Self::EmptySegment { .. } => "empty_segment",
            Self::BadEscape { .. } => "bad_escape",
            Self::DuplicateTag { .. } => "duplicate_tag",
            Self::ReservedTag { .. } => "reserved_tag",
            Self::PayloadNotUtf8 => "payload_not_utf8",
            Self::MissingTimestamp { .. } => "missing_timestamp",
            Self::BadTimestamp { .. } => "bad_timestamp",
            Self::EmptyValue => "empty_value",
            Self::BadGzip { .. } => "bad_gzip",
            Self::BadJson { .. } => "bad_json",
            Self::TopicLevels { .. } => "topic_levels",
            Self::BadV3Payload { .. } => "bad_v3_payload",
        }
    }

    /// Every label [`DecodeError::reason`] can return, e.g. to pre-register counters.
    pub const REASONS: [&'static str; 14] = [
        "topic_not_utf8",
        "topic_shape",
        "empty_segment",
        "bad_escape",
        "duplicate_tag",
        "reserved_tag",
        "payload_not_utf8",
        "missing_timestamp",
        "bad_timestamp",
        "empty_value",
        "bad_gzip",
        "bad_json",
        "topic_levels",
        "bad_v3_payload",
    ];
}

/// What a well-formed message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// This many samples were appended to the output.
    Samples(usize),
    /// A `CK` or `__FLUSH` marker: nothing to store.
    Marker,
    /// A message on a `chnl/cmd` topic: a command for collectors, not data.
    Command,
}

/// Decodes one MQTT message, appending its samples to `out`.
///
/// On error nothing is appended.
pub fn decode(topic: &[u8], payload: &[u8], out: &mut Batch) -> Result<Decoded, DecodeError> {
    if payload == b"CK" || payload == b"__FLUSH" {
        return Ok(Decoded::Marker);
    }
    let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::TopicNotUtf8)?;
    if is_command_topic(topic) {
        return Ok(Decoded::Command);
    }
    if payload.starts_with(&[0x1f, 0x8b]) {
        let inflated = gunzip(payload).map_err(|e| DecodeError::BadGzip {
            message: e.to_string(),
        })?;
        return decode_json(&inflated, out);
    }
    let text = std::str::from_utf8(payload).map_err(|_| DecodeError::PayloadNotUtf8)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // A text value may start with a bracket ("[OK] ..."): fall back to `value;timestamp`,
        // and report the JSON error if that fails too.
        return match decode_json(trimmed.as_bytes(), out) {
            Ok(decoded) => Ok(decoded),
            Err(json_error) => decode_csv(topic, text, out).map_err(|_| json_error),
        };
    }
    decode_csv(topic, text, out)
}

/// True for topics whose `chnl` tag is `cmd`.
pub fn is_command_topic(topic: &str) -> bool {
    let segments: Vec<&str> = topic.split('/').collect();
    segments
        .chunks_exact(2)
        .any(|pair| pair[0] == "chnl" && pair[1] == "cmd")
}

/// Splits a data topic into its sorted tags and its metric name.
pub fn decode_topic(topic: &str) -> Result<(Vec<(String, String)>, String), DecodeError> {
    let segments: Vec<&str> = topic.split('/').collect();
    if segments.len().is_multiple_of(2) {
        return TopicShapeSnafu { topic }.fail();
    }
    if segments.iter().any(|s| s.is_empty()) {
        return EmptySegmentSnafu { topic }.fail();
    }
    let (pairs, metric) = segments.split_at(segments.len() - 1);
    let tags = pairs
        .chunks_exact(2)
        .map(|kv| Ok((unquote(kv[0])?, unquote(kv[1])?)))
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok((check_tags(tags)?, unquote(metric[0])?))
}

/// A topic level, URL-unquoted.
pub(crate) fn unquote(segment: &str) -> Result<String, DecodeError> {
    if !segment.contains('%') {
        return Ok(segment.to_owned());
    }
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| DecodeError::BadEscape {
            segment: segment.to_owned(),
        })
}

/// Sorts tags by key and rejects duplicate, reserved and empty keys or values.
pub(crate) fn check_tags(
    mut tags: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, DecodeError> {
    tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (i, (key, value)) in tags.iter().enumerate() {
        if key.is_empty() || value.is_empty() {
            return EmptySegmentSnafu {
                topic: format!("{key}={value}"),
            }
            .fail();
        }
        if RESERVED_COLUMNS.contains(&key.as_str()) {
            return ReservedTagSnafu { key }.fail();
        }
        if i > 0 && tags[i - 1].0 == *key {
            return DuplicateTagSnafu { key }.fail();
        }
    }
    Ok(tags)
}

fn decode_csv(topic: &str, payload: &str, out: &mut Batch) -> Result<Decoded, DecodeError> {
    let (tags, metric) = decode_topic(topic)?;
    let Some((value, timestamp)) = payload.rsplit_once(';') else {
        return MissingTimestampSnafu { payload }.fail();
    };
    let time_ns = parse_seconds(timestamp.trim()).ok_or_else(|| DecodeError::BadTimestamp {
        timestamp: timestamp.to_owned(),
    })?;
    if value.is_empty() {
        return Err(DecodeError::EmptyValue);
    }
    let value = parse_value(value);
    out.push_sample(Sample {
        metric,
        tags,
        time_ns,
        value,
    });
    Ok(Decoded::Samples(1))
}

/// A number if the text parses as one, otherwise text.
fn parse_value(value: &str) -> Value {
    match value.trim().parse::<f64>() {
        Ok(v) => Value::Float(v),
        Err(_) => Value::Text(value.to_owned()),
    }
}

/// Parses seconds since the epoch (`1700000000`, `1700000000.123`, `1.7e9`) into nanoseconds,
/// exactly for plain decimals.
pub fn parse_seconds(text: &str) -> Option<i64> {
    let (int_part, frac_part) = text.split_once('.').unwrap_or((text, ""));
    let plain = !int_part.is_empty()
        && int_part.bytes().all(|b| b.is_ascii_digit())
        && frac_part.bytes().all(|b| b.is_ascii_digit());
    if plain {
        let secs: i64 = int_part.parse().ok()?;
        let mut frac_ns: i64 = 0;
        for (i, digit) in frac_part.bytes().take(9).enumerate() {
            frac_ns += i64::from(digit - b'0') * 10i64.pow(8 - i as u32);
        }
        return secs.checked_mul(1_000_000_000)?.checked_add(frac_ns);
    }
    let secs: f64 = text.parse().ok()?;
    float_to_ns(secs * 1e9)
}

fn float_to_ns(ns: f64) -> Option<i64> {
    // Reject NaN, infinities and anything outside i64 (about year 2262).
    (ns.is_finite() && ns.abs() < 9.2e18).then(|| ns.round() as i64)
}

/// examon-common's `json` (one object) and `bulk` (a list) payloads.
fn decode_json(payload: &[u8], out: &mut Batch) -> Result<Decoded, DecodeError> {
    let bad = |message: String| DecodeError::BadJson { message };
    let json: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))?;
    let objects = match json {
        serde_json::Value::Array(items) => items,
        object @ serde_json::Value::Object(_) => vec![object],
        _ => return Err(bad("expected an object or a list of objects".into())),
    };
    let samples = objects
        .iter()
        .map(json_sample)
        .collect::<Result<Vec<_>, _>>()?;
    let n = samples.len();
    out.extend(samples);
    Ok(Decoded::Samples(n))
}

fn json_sample(object: &serde_json::Value) -> Result<Sample, DecodeError> {
    use serde_json::Value as J;
    let bad = |message: &str| DecodeError::BadJson {
        message: message.to_owned(),
    };
    let name = match object.get("name") {
        Some(J::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err(bad("missing or empty \"name\"")),
    };
    let value = match object.get("value") {
        Some(J::Number(n)) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        Some(J::String(s)) if s.is_empty() => return Err(DecodeError::EmptyValue),
        Some(J::String(s)) => parse_value(s),
        Some(J::Bool(b)) => Value::Float(f64::from(u8::from(*b))),
        _ => return Err(bad("missing \"value\" (number or string)")),
    };
    let time_ns = match object.get("timestamp") {
        Some(J::Number(ms)) => match ms.as_i64() {
            Some(ms) => ms.checked_mul(1_000_000),
            None => ms.as_f64().and_then(|ms| float_to_ns(ms * 1e6)),
        },
        Some(J::String(ms)) => ms.parse::<f64>().ok().and_then(|ms| float_to_ns(ms * 1e6)),
        _ => None,
    }
    .ok_or_else(|| bad("missing or bad \"timestamp\" (milliseconds)"))?;
    let tags = match object.get("tags") {
        None | Some(J::Null) => Vec::new(),
        Some(J::Object(tags)) => tags
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    J::String(s) => s.clone(),
                    J::Number(n) => n.to_string(),
                    J::Bool(b) => b.to_string(),
                    _ => return Err(bad("tag values must be strings or numbers")),
                };
                Ok((k.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad("\"tags\" must be an object")),
    };
    Ok(Sample {
        metric: name,
        tags: check_tags(tags)?,
        time_ns,
        value,
    })
}

/// Characters that cannot appear raw in a topic segment.
const TOPIC_SEGMENT: &AsciiSet = &CONTROLS.add(b'/').add(b'+').add(b'#').add(b'%').add(b' ');

/// Builds an EXAMON data topic from tag pairs (in the given order) and a metric name,
/// URL-quoting what MQTT topics cannot carry.
pub fn encode_topic<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    metric: &str,
) -> String {
    let mut topic = String::new();
    for (key, value) in tags {
        topic.extend(utf8_percent_encode(key, TOPIC_SEGMENT));
        topic.push('/');
        topic.extend(utf8_percent_encode(value, TOPIC_SEGMENT));
        topic.push('/');
    }
    topic.extend(utf8_percent_encode(metric, TOPIC_SEGMENT));
    topic
}

/// Builds an EXAMON `value;timestamp` payload, the timestamp in seconds with millisecond
/// precision as EXAMON plugins send it.
pub fn encode_payload(value: &Value, time_ns: i64) -> String {
    let millis = time_ns.div_euclid(1_000_000);
    let (secs, ms) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    match value {
        Value::Float(v) => format!("{v};{secs}.{ms:03}"),
        Value::Text(t) => format!("{t};{secs}.{ms:03}"),
    }
}
