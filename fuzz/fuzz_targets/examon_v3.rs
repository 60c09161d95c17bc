//! The EXAMON SDK v3 decoder (positional topic, `{"v", "ts"}` payload): never panics; every
//! sample it returns has a metric and sorted, unique, non-reserved tags. The first byte picks
//! how many topic levels are tags (one in four skipped).
#![no_main]

use exawatch_protocol::RESERVED_COLUMNS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&levels, data)) = data.split_first() else {
        return;
    };
    let tags: Vec<String> = (0..levels % 8)
        .map(|i| if i % 4 == 3 { String::new() } else { format!("t{i}") })
        .collect();
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (topic, payload) = data.split_at(split);
    let payload = payload.get(1..).unwrap_or_default();
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    let mut out = exawatch_protocol::Batch::new();
    let _ = exawatch_protocol::examon_v3::decode(&tags, topic, payload, 0, &mut out);
    for sample in out.samples() {
        assert!(!sample.metric.is_empty());
        assert!(sample.tags.windows(2).all(|w| w[0].0 < w[1].0), "tags sorted and unique");
        assert!(sample.tags.iter().all(|(k, _)| !RESERVED_COLUMNS.contains(&k.as_str())));
    }
});
