//! What an MQTT message to exawatch may carry: EXAMON (`value;timestamp` with the tags in the
//! topic, examon-common `json`/`bulk`) or Influx line protocol (as Telegraf's MQTT output
//! publishes it, on any topic).
//!
//! The rule: a payload with a space and a `=` but no `;` that is not JSON is line protocol;
//! anything else is EXAMON, except that an EXAMON payload whose timestamp does not parse is
//! tried as line protocol (a string field may contain `;`). Topics that an `[[ingest.mqtt]]`
//! rule ([`TopicRule`]) gives another scheme are read by that scheme ([`decode_with`]).

use serde::{Deserialize, Serialize};

use crate::examon::{self, DecodeError, Decoded};
use crate::line_protocol::{self, Precision};
use crate::settings::{InvalidSetting, Validate};
use crate::{Batch, RESERVED_COLUMNS, examon_v3};

/// How the MQTT messages on some topics are read: `[[ingest.mqtt]]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// The MQTT topic filter (`+` and `#` wildcards) of the topics this rule reads.
    pub filter: String,
    /// How their topic and payload are read.
    pub scheme: Scheme,
    /// For [`Scheme::ExamonV3`]: the tag name of each topic level before the metric, in
    /// order (`""` skips a level, such as a prefix).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A way to read an MQTT message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// EXAMON's key/value topics and `value;timestamp`, json or bulk payloads, or Influx line
    /// protocol: what every topic gets without a rule.
    Examon,
    /// EXAMON SDK v3's positional topics and `{"v", "ts"}` payloads ([`examon_v3`]).
    ExamonV3,
}

/// The `[ingest]` section: rules for reading MQTT topics, the first matching rule wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// `[[ingest.mqtt]]` rules, tried in order.
    pub mqtt: Vec<TopicRule>,
}

impl Validate for IngestConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        for (i, rule) in self.mqtt.iter().enumerate() {
            let invalid = |key: &str, value: String, allowed: &str| InvalidSetting {
                key: format!("mqtt[{i}].{key}"),
                value,
                allowed: allowed.to_owned(),
            };
            if !valid_filter(&rule.filter) {
                return Err(invalid(
                    "filter",
                    format!("{:?}", rule.filter),
                    "an MQTT topic filter (`+` alone in a level, `#` alone in the last)",
                ));
            }
            let named: Vec<&String> = rule.tags.iter().filter(|t| !t.is_empty()).collect();
            let duplicate = named
                .iter()
                .enumerate()
                .any(|(j, t)| named[..j].contains(t));
            let reserved = named.iter().any(|t| RESERVED_COLUMNS.contains(&t.as_str()));
            if match rule.scheme {
                Scheme::ExamonV3 => named.is_empty() || duplicate || reserved,
                Scheme::Examon => !rule.tags.is_empty(),
            } {
                return Err(invalid(
                    "tags",
                    format!("{:?}", rule.tags),
                    "for scheme = \"examon_v3\", one tag name per topic level before the metric (\"\" to skip a level), at least one, unique, none of time, metric, value, text; none for scheme = \"examon\"",
                ));
            }
        }
        Ok(())
    }
}

/// Whether `filter` is a valid MQTT topic filter: not empty, no NUL, `+` alone in its level,
/// `#` alone in the last level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Whether `topic` matches `filter` (MQTT §4.7). A filter starting with a wildcard does not
/// match a topic starting with `$` (§4.7.2).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            _ => {
                if topic_levels.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// The first of `rules` matching `topic`, if any.
pub fn scheme_of<'a>(rules: &'a [TopicRule], topic: &[u8]) -> Option<&'a TopicRule> {
    if rules.is_empty() {
        return None;
    }
    let topic = std::str::from_utf8(topic).ok()?;
    rules.iter().find(|rule| topic_matches(&rule.filter, topic))
}

/// [`decode`], or the way `rule` (the topic's, from [`scheme_of`]) says.
pub fn decode_with(
    rule: Option<&TopicRule>,
    topic: &[u8],
    payload: &[u8],
    now_ns: i64,
    out: &mut Batch,
) -> Result<Decoded, MessageError> {
    match rule {
        Some(rule) if rule.scheme == Scheme::ExamonV3 => {
            let topic = std::str::from_utf8(topic).expect("matched as UTF-8");
            examon_v3::decode(&rule.tags, topic, payload, now_ns, out).map_err(MessageError::Examon)
        }
        _ => decode(topic, payload, now_ns, out),
    }
}

/// Why a message was dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageError {
    /// A malformed EXAMON message.
    Examon(DecodeError),
    /// Line protocol with bad lines (the good lines of the message were kept).
    LineProtocol(Vec<line_protocol::LineError>),
}

impl MessageError {
    /// The label the drop is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Examon(e) => e.reason(),
            Self::LineProtocol(_) => "line_protocol",
        }
    }
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Examon(e) => e.fmt(f),
            Self::LineProtocol(errors) => match errors.first() {
                Some(first) => write!(f, "line protocol: {first} ({} bad lines)", errors.len()),
                None => f.write_str("line protocol"),
            },
        }
    }
}

/// Decodes one MQTT message into `out`; line-protocol lines without a timestamp get
/// `now_ns`. On an EXAMON error nothing is appended; with line protocol the good lines are.
pub fn decode(
    topic: &[u8],
    payload: &[u8],
    now_ns: i64,
    out: &mut Batch,
) -> Result<Decoded, MessageError> {
    let start = payload.trim_ascii_start();
    let is_line_protocol = !payload.contains(&b';')
        && payload.contains(&b' ')
        && payload.contains(&b'=')
        && !start.starts_with(b"{")
        && !start.starts_with(b"[");
    if !is_line_protocol {
        return match examon::decode(topic, payload, out) {
            Err(error @ DecodeError::BadTimestamp { .. }) => {
                line_protocol_only(payload, now_ns, out).ok_or(MessageError::Examon(error))
            }
            result => result.map_err(MessageError::Examon),
        };
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return Err(MessageError::Examon(DecodeError::PayloadNotUtf8));
    };
    let before = out.len();
    let errors = line_protocol::parse_lines(text, Precision::Nanoseconds, now_ns, out);
    if errors.is_empty() {
        Ok(Decoded::Samples(out.len() - before))
    } else {
        Err(MessageError::LineProtocol(errors))
    }
}

/// The payload as line protocol, if every line of it parses.
fn line_protocol_only(payload: &[u8], now_ns: i64, out: &mut Batch) -> Option<Decoded> {
    let text = std::str::from_utf8(payload).ok()?;
    let before = out.len();
    let errors = line_protocol::parse_lines(text, Precision::Nanoseconds, now_ns, out);
    if !errors.is_empty() || out.len() == before {
        out.truncate_points(before);
        return None;
    }
    Some(Decoded::Samples(out.len() - before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Sample, Value};

    fn run(topic: &str, payload: &str) -> (Result<Decoded, MessageError>, Vec<Sample>) {
        let mut out = Batch::new();
        let result = decode(topic.as_bytes(), payload.as_bytes(), 7, &mut out);
        (result, out.samples().collect())
    }

    #[test]
    fn examon_and_line_protocol_side_by_side() {
        let (result, out) = run("node/n1/temp", "40;1700000000");
        assert_eq!(result, Ok(Decoded::Samples(1)));
        assert_eq!(out[0].metric, "temp");

        // Telegraf's MQTT output: any topic, line protocol payload (several lines).
        let (result, out) = run(
            "telegraf/n1/cpu",
            "cpu,host=n1 usage=3.5 1000\ncpu,host=n2 usage=4 1000",
        );
        assert_eq!(result, Ok(Decoded::Samples(2)));
        assert_eq!(out[1].metric, "cpu_usage");
        assert_eq!(out[1].tag("host"), Some("n2"));

        // A string field with ';' is still line protocol.
        let (result, out) = run("t", "nagios,host=n1 state=\"OK; all fine\"");
        assert_eq!(result, Ok(Decoded::Samples(1)));
        assert_eq!(out[0].value, Value::Text("OK; all fine".into()));
        assert_eq!(out[0].time_ns, 7);
    }

    #[test]
    fn failures_keep_their_reasons() {
        let (result, out) = run("node/n1/temp", "40;yesterday");
        assert_eq!(result.unwrap_err().reason(), "bad_timestamp");
        assert!(out.is_empty());
        let (result, out) = run("t", "good v=1 1\nbad line");
        assert_eq!(result.unwrap_err().reason(), "line_protocol");
        assert_eq!(out.len(), 1, "the good line is kept");
        // No timestamp and nothing like line protocol: EXAMON's reason.
        let (result, _) = run("node/n1/temp", "42");
        assert_eq!(result.unwrap_err().reason(), "missing_timestamp");
    }
}
