//! The series of EXAMON topics seen before on one connection. A collector publishes the same
//! topics every period, so after the first message of a topic the next ones cost a hash
//! lookup and the parse of `value;timestamp`, instead of splitting, unquoting and sorting the
//! topic's tags again; and a batch lists each series once.

use std::collections::HashMap;
use std::sync::Arc;

use super::{decode_topic, is_command_topic, parse_seconds, parse_value};
use crate::batch::SeriesKey;
use crate::{Batch, Value};

/// A topic's series, and where it is in the batch last filled.
#[derive(Debug)]
struct Cached {
    key: Arc<SeriesKey>,
    /// Index of the key in the batch it was last added to (checked before use).
    index: u32,
}

/// EXAMON data topics → their series, for one connection.
#[derive(Debug, Default)]
pub struct TopicCache {
    topics: HashMap<Box<[u8]>, Cached, ahash::RandomState>,
}

impl TopicCache {
    /// Topics kept at most; past it the cache starts over.
    pub const CAPACITY: usize = 1 << 16;

    /// Appends the sample of a `value;timestamp` message on a data topic to `out`, and
    /// returns true. Returns false, appending nothing, for anything else (markers, JSON,
    /// gzip, line protocol, command topics, malformed messages): the caller decodes those in
    /// full, which also says why a message is refused.
    pub fn decode_csv(&mut self, topic: &[u8], payload: &[u8], out: &mut Batch) -> bool {
        let Some((value, time_ns)) = csv_payload(payload) else {
            return false;
        };
        if !self.topics.contains_key(topic) {
            let Some(key) = data_topic(topic) else {
                return false;
            };
            if self.topics.len() >= Self::CAPACITY {
                self.topics.clear();
            }
            self.topics.insert(
                topic.into(),
                Cached {
                    key: Arc::new(key),
                    index: u32::MAX,
                },
            );
        }
        let cached = self.topics.get_mut(topic).expect("inserted above");
        let listed = out
            .series()
            .get(cached.index as usize)
            .is_some_and(|key| Arc::ptr_eq(key, &cached.key));
        if !listed {
            cached.index = out.add_shared_series(Arc::clone(&cached.key));
        }
        out.push(cached.index, time_ns, value);
        true
    }
}

/// The value and time of a well-formed `value;timestamp` payload.
fn csv_payload(payload: &[u8]) -> Option<(Value, i64)> {
    let at = payload.iter().rposition(|&b| b == b';')?;
    let (value, timestamp) = (&payload[..at], &payload[at + 1..]);
    let value = std::str::from_utf8(value).ok()?;
    let first = value.trim_start().bytes().next()?;
    if matches!(first, b'{' | b'[') || value.as_bytes().starts_with(&[0x1f, 0x8b]) {
        return None;
    }
    let time_ns = parse_seconds(std::str::from_utf8(timestamp).ok()?.trim())?;
    Some((parse_value(value), time_ns))
}

/// The series of a data topic (not a command topic, not malformed).
fn data_topic(topic: &[u8]) -> Option<SeriesKey> {
    let topic = std::str::from_utf8(topic).ok()?;
    if is_command_topic(topic) {
        return None;
    }
    let (tags, metric) = decode_topic(topic).ok()?;
    Some(SeriesKey { metric, tags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examon::decode;

    /// The cache gives what the full decoder gives, and falls back where it must.
    #[test]
    fn same_samples_as_the_full_decoder() {
        let messages: [(&str, &[u8]); 9] = [
            ("org/o/node/n%201/plugin/p/temp", b"40.5;1700000000.123"),
            ("org/o/node/n%201/plugin/p/temp", b"41;1700000001"),
            ("org/o/node/n2/plugin/p/state", b"OK - fine;1700000000"),
            ("org/o/node/n2/plugin/p/temp", b" 7 ;1700000000"),
            ("org/o/node/n%201/plugin/p/temp", b"42;1700000002"),
            ("org/o/node/n2/plugin/p/chnl/cmd", b"-s 2;1"),
            ("org/o/node/n2/plugin/p/temp", b"CK"),
            ("org//bad", b"1;1"),
            ("org/o/node/n2/plugin/p/temp", b"{\"v\": 1};1"),
        ];
        let mut cache = TopicCache::default();
        let mut cached = Batch::new();
        let mut full = Batch::new();
        let mut fast = 0;
        for (topic, payload) in messages {
            if cache.decode_csv(topic.as_bytes(), payload, &mut cached) {
                fast += 1;
            } else {
                let _ = decode(topic.as_bytes(), payload, &mut cached);
            }
            let _ = decode(topic.as_bytes(), payload, &mut full);
        }
        assert_eq!(fast, 5);
        assert_eq!(
            cached.samples().collect::<Vec<_>>(),
            full.samples().collect::<Vec<_>>()
        );
        // The fast path lists each of its series once (three here), the full decoder one per
        // message it decodes (one).
        assert_eq!(cached.series().len(), 4);
        // A new batch lists the series again.
        let mut next = Batch::new();
        assert!(cache.decode_csv(b"org/o/node/n2/plugin/p/temp", b"1;1", &mut next));
        assert_eq!(next.series().len(), 1);
        assert_eq!(next.samples().next().unwrap().tag("node"), Some("n2"));
    }
}
