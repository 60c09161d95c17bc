//! KairosDB `POST /api/v1/datapoints` bodies, plain and gzipped: never panic; a body is
//! either refused with errors or decoded whole.
#![no_main]

use exawatch_protocol::compression::gunzip;
use exawatch_protocol::kairosdb::decode_datapoints;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_datapoints(data) {
        Ok(samples) => assert!(samples.iter().all(|s| !s.metric.is_empty())),
        Err(error) => assert!(!error.messages().is_empty()),
    }
    if let Ok(inflated) = gunzip(data) {
        let _ = decode_datapoints(&inflated);
    }
});
