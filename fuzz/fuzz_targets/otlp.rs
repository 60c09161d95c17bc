//! OTLP/HTTP metrics (protobuf and JSON): never panics, whatever the body; every series it
//! makes has a metric and sorted, unique, non-empty, non-reserved tags; the answer to what
//! was read always encodes.
#![no_main]

use std::sync::LazyLock;

use exawatch_protocol::RESERVED_COLUMNS;
use exawatch_protocol::otlp::{self, DeltaTotals, Format};
use libfuzzer_sys::fuzz_target;

/// One set of totals for the run, so delta points meet earlier ones (and reverts).
static DELTAS: LazyLock<DeltaTotals> = LazyLock::new(DeltaTotals::default);

fuzz_target!(|data: &[u8]| {
    for format in [Format::Protobuf, Format::Json] {
        let Ok(export) = otlp::decode(data, format, 1_700_000_000_000_000_000, &DELTAS) else {
            continue;
        };
        for series in export.batch.series() {
            assert!(!series.metric.is_empty(), "{series:?}");
            assert!(
                series.tags.windows(2).all(|w| w[0].0 < w[1].0),
                "{series:?}"
            );
            assert!(
                series.tags.iter().all(|(k, v)| !k.is_empty()
                    && !v.is_empty()
                    && !RESERVED_COLUMNS.contains(&k.as_str())),
                "{series:?}"
            );
        }
        let _ = otlp::encode_response(format, &export.rejections);
        if export.batch.len() % 2 == 1 {
            DELTAS.revert(export.receipt);
        }
    }
});
