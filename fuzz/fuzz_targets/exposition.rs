//! The exposition parser (Prometheus text 0.0.4 and OpenMetrics 1.0): never panics; every
//! sample it returns has a valid metric name and valid, unique label names; and what the
//! labeller makes of it has sorted, unique, non-reserved tags.
#![no_main]

use std::collections::BTreeMap;

use exawatch_protocol::RESERVED_COLUMNS;
use exawatch_protocol::exposition::{self, Format, valid_label_name, valid_metric_name};
use exawatch_protocol::scrape::{Labelled, Labeller, ScrapeJob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(body) else {
        return;
    };
    let format = if first & 1 == 0 {
        Format::Text
    } else {
        Format::OpenMetrics
    };
    let Ok(samples) = exposition::parse(body, format) else {
        return;
    };
    let mut job = ScrapeJob::new("fuzz", &["cn01:9100"]);
    job.honor_labels = first & 2 != 0;
    let labeller = Labeller::new(&job, "cn01:9100", &BTreeMap::new(), Vec::new());
    for sample in &samples {
        assert!(valid_metric_name(&sample.name), "{:?}", sample.name);
        assert!(sample.labels.iter().all(|(k, _)| valid_label_name(k)));
        for (i, (k, _)) in sample.labels.iter().enumerate() {
            assert!(
                sample.labels[..i].iter().all(|(other, _)| other != k),
                "unique"
            );
        }
        if let Labelled::Series(key) = labeller.label(sample) {
            assert!(!key.metric.is_empty());
            assert!(
                key.tags.windows(2).all(|w| w[0].0 < w[1].0),
                "tags sorted and unique"
            );
            assert!(
                key.tags
                    .iter()
                    .all(|(k, v)| !v.is_empty() && !RESERVED_COLUMNS.contains(&k.as_str()))
            );
        }
    }
});
