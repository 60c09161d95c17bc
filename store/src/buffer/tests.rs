use arrow::array::{AsArray, Float64Array};
use arrow::datatypes::TimestampNanosecondType;

use exawatch_protocol::Sample;

use super::*;

fn sample(metric: &str, tags: &[(&str, &str)], time_ns: i64, value: f64) -> Sample {
    Sample::new(
        metric,
        tags.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        time_ns,
        Value::Float(value),
    )
}

/// A buffer and its series table, as the store keeps them: what each test starts from.
struct Buffered {
    table: SeriesTable,
    buffer: Buffer,
}

impl Buffered {
    fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        Self {
            table: SeriesTable::new(Vec::new(), limits),
            buffer: Buffer::default(),
        }
    }

    /// Inserts `samples` as one batch; the samples refused by a limit.
    fn insert(&mut self, samples: Vec<Sample>) -> Rejections {
        let hashed = HashedBatch::new(samples.into(), self.table.hasher());
        self.buffer.insert(&hashed, &mut self.table).unwrap()
    }
}

#[test]
fn tag_columns_keep_first_appearance_order() {
    let mut b = Buffered::new();
    b.insert(vec![
        sample("a", &[("org", "o"), ("node", "n1")], 1, 1.0),
        sample("b", &[("core", "0"), ("node", "n1")], 2, 2.0),
    ]);
    // EXAMON's tags in topic order, then others as they appear.
    assert_eq!(b.table.tag_columns(), ["org", "node", "core"]);
    let names: Vec<_> = b
        .table
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["time", "metric", "value", "text", "org", "node", "core"]
    );
    assert_eq!(b.table.len(), 2);
}

#[test]
fn chunks_seal_and_read_back() {
    let mut b = Buffered::new();
    let samples: Vec<Sample> = (0..CHUNK_ROWS + 10)
        .map(|i| sample("m", &[("node", &format!("n{}", i % 3))], i as i64, i as f64))
        .collect();
    b.insert(samples);
    b.insert(vec![Sample::new(
        "status",
        vec![],
        99,
        Value::Text("OK".into()),
    )]);
    assert_eq!(b.buffer.rows(), CHUNK_ROWS + 11);
    let chunks = b.buffer.chunks();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].len(), CHUNK_ROWS);
    let batch = chunks[1]
        .batch(b.table.keys(), b.table.tag_columns())
        .unwrap();
    let last = conform(batch, &b.table.schema()).unwrap();
    assert_eq!(last.num_rows(), 11);
    let node = last.column_by_name("node").unwrap();
    assert_eq!(
        node.logical_null_count(),
        1,
        "the status series has no node tag"
    );
    let text = last.column_by_name("text").unwrap().as_string::<i32>();
    assert_eq!(text.value(10), "OK");
    assert_eq!(
        text.null_count(),
        10,
        "the numeric rows before the text one"
    );
    // Only a chunk with a text sample holds a text column.
    assert!(chunks[0].text.is_none());
    let first = chunks[0]
        .batch(b.table.keys(), b.table.tag_columns())
        .unwrap();
    assert_eq!(
        first.column_by_name("text").unwrap().null_count(),
        CHUNK_ROWS
    );
    // Reading does not take: the buffer still holds everything.
    assert_eq!(b.buffer.chunks().len(), 2);
    let taken = b.buffer.take();
    assert_eq!(
        taken.iter().map(|c| c.len()).sum::<usize>(),
        CHUNK_ROWS + 11
    );
    assert_eq!(b.buffer.rows(), 0);
}

#[test]
fn sorted_batch_orders_by_series_then_time() {
    let mut b = Buffered::new();
    b.insert(vec![
        sample("temp", &[("node", "n2")], 30, 3.0),
        sample("temp", &[("node", "n1")], 20, 2.0),
        sample("load", &[("node", "n2")], 10, 1.0),
        sample("temp", &[("node", "n1")], 10, 1.5),
    ]);
    let chunks = b.buffer.take();
    let sorted = sorted_batch(&chunks, &b.table.keys_of(&chunks), b.table.tag_columns()).unwrap();
    let batch = sorted.batch(0..sorted.len()).unwrap();
    let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
    let values = batch
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    // load{n2}, temp{n1} @10, temp{n1} @20, temp{n2}
    assert_eq!(times.values(), &[10, 10, 20, 30]);
    assert_eq!(values.values(), &[1.0, 1.5, 2.0, 3.0]);
    let metric = arrow::compute::cast(batch.column(1), &DataType::Utf8).unwrap();
    let metric = metric.as_string::<i32>();
    assert_eq!(
        metric.iter().flatten().collect::<Vec<_>>(),
        ["load", "temp", "temp", "temp"]
    );
}

#[test]
fn sorted_batch_sorts_column_by_column_and_keeps_the_last_duplicate() {
    let mut b = Buffered::new();
    b.insert(vec![
        sample("m", &[("node", "b"), ("core", "1")], 5, 1.0),
        sample("m", &[("node", "a")], 5, 2.0),
        sample("m", &[("node", "b")], 5, 3.0),
        sample("m", &[("node", "b"), ("core", "0")], 5, 4.0),
        // Written again for the same series and time: the later value wins.
        sample("m", &[("node", "a")], 5, 5.0),
    ]);
    let chunks = b.buffer.take();
    let sorted = sorted_batch(&chunks, &b.table.keys_of(&chunks), b.table.tag_columns()).unwrap();
    let batch = sorted.batch(0..sorted.len()).unwrap();
    let values = batch
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    // (node, core): (a, -), (b, -), (b, 0), (b, 1) — a missing tag sorts first.
    assert_eq!(values.values(), &[5.0, 3.0, 4.0, 1.0]);
    assert_eq!(
        sort_order(b.table.tag_columns()),
        ["metric", "node", "core", "time"]
    );
}

#[test]
fn the_series_limit_counts_series_written_in_the_last_hour() {
    let limits = Limits {
        max_series_per_metric: 2,
        max_tag_keys: 8,
    };
    let mut b = Buffered::with_limits(limits);
    let node = |n| sample("m", &[("node", n)], 1, 1.0);
    assert_eq!(b.insert(vec![node("a")]).total(), 0);
    b.table.expire_idle(30);
    assert_eq!(b.insert(vec![node("b"), node("c")]).series_per_metric, 1);
    // At minute 60 `a` has been idle for an hour, `b` for half of one: `c` now fits.
    b.table.expire_idle(LIVE_MINUTES);
    assert_eq!(b.insert(vec![node("c")]).total(), 0);
    // `a` returns as a new series would, and the limit is full again.
    let refused = b.insert(vec![node("a")]);
    assert_eq!(refused.series_per_metric, 1);
    assert!(
        refused
            .first
            .unwrap()
            .contains("written in the last 60 minutes"),
        "the message says what counts"
    );
    b.table.expire_idle(30 + LIVE_MINUTES);
    assert_eq!(b.insert(vec![node("a")]).total(), 0, "b has gone idle");
    assert_eq!(b.table.len(), 3, "ids stay: the buffer refers to them");
}

#[test]
fn cardinality_limits_refuse_new_series_only() {
    let limits = Limits {
        max_series_per_metric: 2,
        max_tag_keys: 2,
    };
    let mut b = Buffered::with_limits(limits);
    let rejections = b.insert(vec![
        sample("m", &[("node", "a")], 1, 1.0),
        sample("m", &[("node", "b")], 1, 1.0),
        sample("m", &[("node", "c")], 1, 1.0),
        // Known series are still taken.
        sample("m", &[("node", "a")], 2, 1.0),
        sample("other", &[("node", "c"), ("rack", "r")], 1, 1.0),
        sample(
            "other",
            &[("node", "c"), ("rack", "r"), ("pdu", "p")],
            1,
            1.0,
        ),
    ]);
    assert_eq!(b.buffer.rows(), 4);
    assert_eq!(rejections.series_per_metric, 1);
    assert_eq!(rejections.tag_keys, 1);
    assert!(
        rejections
            .first
            .as_deref()
            .unwrap()
            .contains("\"m\" has 2 series"),
        "{rejections:?}"
    );
    assert_eq!(b.table.tag_columns(), ["node", "rack"]);
}

/// Across several chunks, with times out of order, duplicates (some in other chunks) and
/// text samples: the same rows as sorting (series, time, arrival) and keeping each
/// (series, time)'s last arrival.
#[test]
fn sorted_batch_matches_a_plain_sort_over_many_chunks() {
    let mut b = Buffered::new();
    let mut state = 7u64;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut samples = Vec::new();
    for i in 0..3 * CHUNK_ROWS {
        let node = format!("n{}", next(40));
        let time = (i as i64 / 7) - next(5) as i64;
        let value = if next(50) == 0 {
            Value::Text(format!("t{i}"))
        } else {
            Value::Float(i as f64)
        };
        samples.push(Sample::new("m", vec![("node".into(), node)], time, value));
    }
    b.insert(samples.clone());
    let chunks = b.buffer.take();
    assert_eq!(chunks.len(), 3);
    let sorted = sorted_batch(&chunks, &b.table.keys_of(&chunks), b.table.tag_columns()).unwrap();

    let mut expected: Vec<(String, i64, usize)> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| (s.tag("node").unwrap().to_owned(), s.time_ns, i))
        .collect();
    expected.sort();
    expected.dedup_by(|later, earlier| {
        let duplicate = (&later.0, later.1) == (&earlier.0, earlier.1);
        if duplicate {
            *earlier = later.clone();
        }
        duplicate
    });
    let batch = conform(&sorted.batch(0..sorted.len()).unwrap(), &b.table.schema()).unwrap();
    let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
    let node =
        arrow::compute::cast(batch.column_by_name("node").unwrap(), &DataType::Utf8).unwrap();
    let node = node.as_string::<i32>();
    let values = batch
        .column(2)
        .as_primitive::<arrow::datatypes::Float64Type>();
    let texts = batch.column(3).as_string::<i32>();
    assert_eq!(batch.num_rows(), expected.len());
    for (row, (n, t, i)) in expected.iter().enumerate() {
        assert_eq!(
            (node.value(row), times.value(row)),
            (n.as_str(), *t),
            "row {row}"
        );
        match &samples[*i].value {
            Value::Float(v) => assert_eq!(values.value(row), *v, "row {row}"),
            Value::Text(text) => {
                assert!(values.is_null(row));
                assert_eq!(texts.value(row), text, "row {row}");
            }
        }
        assert_eq!(
            sorted.series[sorted.keys.value(row) as usize].tag("node"),
            Some(n.as_str())
        );
    }
}
