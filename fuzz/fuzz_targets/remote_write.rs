//! Prometheus remote write (snappy protobuf): never panics, whatever the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = exawatch_protocol::remote_write::decode(data);
    // Also valid snappy around arbitrary protobuf bytes, to reach the decoder.
    if let Ok(framed) = snap::raw::Encoder::new().compress_vec(data) {
        let _ = exawatch_protocol::remote_write::decode(&framed);
    }
});
