//! Influx line protocol: never panics; bad lines are reported, good ones kept.
#![no_main]

use exawatch_protocol::line_protocol::{Precision, parse_lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for precision in [Precision::Nanoseconds, Precision::Hours] {
        let mut out = Vec::new();
        let errors = parse_lines(text, precision, 0, &mut out);
        assert!(errors.iter().all(|e| e.line >= 1));
    }
});
