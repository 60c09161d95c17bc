//! The MQTT message decoder (EXAMON csv/json/bulk and line protocol): never panics; every
//! sample it returns has a metric and sorted, unique, non-reserved tags.
#![no_main]

use exawatch_protocol::RESERVED_COLUMNS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (topic, payload) = data.split_at(split);
    let payload = payload.get(1..).unwrap_or_default();
    let mut out = exawatch_protocol::Batch::new();
    let _ = exawatch_protocol::mqtt::decode(topic, payload, 0, &mut out);
    for sample in out.samples() {
        assert!(!sample.metric.is_empty());
        assert!(sample.tags.windows(2).all(|w| w[0].0 < w[1].0), "tags sorted and unique");
        assert!(sample.tags.iter().all(|(k, _)| !RESERVED_COLUMNS.contains(&k.as_str())));
    }
});
