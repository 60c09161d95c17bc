//! Batch records (`exawatch_protocol::record`), as WAL replay reads them from disk and a
//! querier from an ingester's answer (`/api/v1/internal/unflushed`): never panics, whatever
//! the bytes, and a record that decodes encodes back to one that decodes to the same batch.
#![no_main]

use exawatch_protocol::record::{decode_batch, encode_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(batch) = decode_batch(data) {
        let again = decode_batch(&encode_batch(&batch)).expect("an encoded batch decodes");
        assert_eq!(again.series(), batch.series());
        let points = |b: &exawatch_protocol::Batch| {
            b.points()
                .iter()
                .map(|p| (p.series, p.time_ns, format!("{:?}", p.value)))
                .collect::<Vec<_>>()
        };
        assert_eq!(points(&again), points(&batch));
    }
});
