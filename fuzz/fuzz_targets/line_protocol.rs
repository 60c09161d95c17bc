//! Influx line protocol: never panics; bad lines are reported, good ones kept; a body gives
//! the same samples as its lines parsed one by one (what the per-body series cache must not
//! change).
#![no_main]

use exawatch_protocol::line_protocol::{Precision, parse_lines};
use exawatch_protocol::{Batch, Sample, Value};
use libfuzzer_sys::fuzz_target;

fn same(a: &Sample, b: &Sample) -> bool {
    a.metric == b.metric
        && a.tags == b.tags
        && a.time_ns == b.time_ns
        && match (&a.value, &b.value) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (x, y) => x == y,
        }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for precision in [Precision::Nanoseconds, Precision::Hours] {
        let mut whole = Batch::new();
        let errors = parse_lines(text, precision, 0, &mut whole);
        assert!(errors.iter().all(|e| e.line >= 1));
        let mut by_line = Batch::new();
        let line_errors: usize = text
            .lines()
            .map(|line| parse_lines(line, precision, 0, &mut by_line).len())
            .sum();
        assert_eq!(errors.len(), line_errors);
        let (whole, by_line): (Vec<Sample>, Vec<Sample>) =
            (whole.samples().collect(), by_line.samples().collect());
        assert_eq!(whole.len(), by_line.len());
        assert!(whole.iter().zip(&by_line).all(|(a, b)| same(a, b)));
    }
});
