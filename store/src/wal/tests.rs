use std::io::Write;

use exawatch_protocol::{Sample, Value};

use super::*;

fn sample(metric: &str, node: &str, time_ns: i64, value: Value) -> Sample {
    Sample::new(
        metric,
        vec![("node".into(), node.into()), ("org".into(), "o".into())],
        time_ns,
        value,
    )
}

fn samples() -> Vec<Sample> {
    vec![
        sample("temp", "n1", 1_700_000_000_000_000_000, Value::Float(41.5)),
        sample("temp", "n2", -5, Value::Float(f64::NAN)),
        sample("status", "n1", i64::MAX, Value::Text("OK;all good".into())),
        Sample::new("bare", vec![], 0, Value::Float(-0.0)),
    ]
}

fn batch() -> Batch {
    let mut batch = Batch::from(samples());
    // A series with several points, and points out of time order.
    let temp = batch.add_shared_series(std::sync::Arc::clone(&batch.series()[0]));
    batch.push(temp, 1_700_000_001_000_000_000, Value::Float(42.0));
    batch.push(temp, 3, Value::Float(43.0));
    batch
}

fn same(a: &Batch, b: &Batch) -> bool {
    let (a, b): (Vec<Sample>, Vec<Sample>) = (a.samples().collect(), b.samples().collect());
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.metric == y.metric
                && x.tags == y.tags
                && x.time_ns == y.time_ns
                && match (&x.value, &y.value) {
                    (Value::Float(p), Value::Float(q)) => p.to_bits() == q.to_bits(),
                    (p, q) => p == q,
                }
        })
}

#[test]
fn batches_round_trip() {
    let batch = batch();
    let body = encode_batch(&batch);
    assert_eq!(decode_batch(&body).unwrap().series(), batch.series());
    assert!(same(&decode_batch(&body).unwrap(), &batch));
    let empty = Batch::new();
    assert!(same(&decode_batch(&encode_batch(&empty)).unwrap(), &empty));
}

#[test]
fn damaged_bodies_are_refused_not_panicked_on() {
    let body = encode_batch(&batch());
    for cut in 0..body.len() {
        assert!(decode_batch(&body[..cut]).is_none(), "cut at {cut}");
    }
    let mut longer = body.clone();
    longer.push(0);
    assert!(decode_batch(&longer).is_none());
}

#[test]
fn segments_replay_whole_records_and_stop_at_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = SegmentWriter::create(dir.path(), 7).unwrap();
    let first = encode_batch(&batch());
    let second = encode_batch(&Batch::from(samples()[..1].to_vec()));
    writer.append(&[&first, &second]).unwrap();
    writer.sync().unwrap();
    assert!(
        SegmentWriter::create(dir.path(), 7).is_err(),
        "segments are never reopened"
    );

    let path = segment_path(dir.path(), 7);
    let clean = read_segment(&path).unwrap();
    assert_eq!(clean.batches.len(), 2);
    assert_eq!(clean.discarded_bytes, 0);
    assert!(same(&clean.batches[0], &batch()));

    // A crash in the middle of a write leaves half a record.
    let whole = fs::read(&path).unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    let third = encode_batch(&batch());
    let mut record = (third.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32fast::hash(&third).to_le_bytes());
    record.extend_from_slice(&third[..third.len() / 2]);
    file.write_all(&record).unwrap();
    let torn = read_segment(&path).unwrap();
    assert_eq!(torn.batches.len(), 2);
    assert_eq!(torn.discarded_bytes, record.len() as u64);

    // A flipped bit in the second record drops it and everything after it.
    let mut flipped = whole.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    fs::write(&path, &flipped).unwrap();
    let corrupt = read_segment(&path).unwrap();
    assert_eq!(corrupt.batches.len(), 1);
    assert_eq!(corrupt.discarded_bytes, 8 + second.len() as u64);

    assert_eq!(list_segments(dir.path()).unwrap(), vec![7]);
}

#[test]
fn a_file_without_the_magic_is_discarded_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 1);
    fs::write(&path, b"garbage").unwrap();
    let contents = read_segment(&path).unwrap();
    assert!(contents.batches.is_empty());
    assert_eq!(contents.discarded_bytes, 7);
}

/// A record body of format 1, as versions before format 2 wrote it: `n_strings, (len,
/// bytes)*, n_samples, (metric, n_tags, (key, value)*, zigzag(time_ns), kind, value)*`.
fn encode_v1(samples: &[Sample]) -> Vec<u8> {
    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut strings: Vec<String> = Vec::new();
    let mut index = |s: &str| match strings.iter().position(|t| t == s) {
        Some(i) => i as u64,
        None => {
            strings.push(s.to_owned());
            (strings.len() - 1) as u64
        }
    };
    let mut rows = Vec::new();
    put_varint(&mut rows, samples.len() as u64);
    for sample in samples {
        put_varint(&mut rows, index(&sample.metric));
        put_varint(&mut rows, sample.tags.len() as u64);
        for (key, value) in &sample.tags {
            put_varint(&mut rows, index(key));
            put_varint(&mut rows, index(value));
        }
        let t = sample.time_ns;
        put_varint(&mut rows, ((t << 1) ^ (t >> 63)) as u64);
        match &sample.value {
            Value::Float(v) => {
                rows.push(0);
                rows.extend_from_slice(&v.to_le_bytes());
            }
            Value::Text(text) => {
                rows.push(1);
                put_varint(&mut rows, index(text));
            }
        }
    }
    let mut body = Vec::new();
    put_varint(&mut body, strings.len() as u64);
    for s in &strings {
        put_varint(&mut body, s.len() as u64);
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(&rows);
    body
}

#[test]
fn segments_of_format_1_still_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 3);
    let body = encode_v1(&samples());
    let mut segment = MAGIC_V1.to_vec();
    segment.extend_from_slice(&(body.len() as u32).to_le_bytes());
    segment.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    segment.extend_from_slice(&body);
    fs::write(&path, &segment).unwrap();
    let contents = read_segment(&path).unwrap();
    assert_eq!(contents.discarded_bytes, 0);
    assert_eq!(contents.batches.len(), 1);
    assert!(same(&contents.batches[0], &Batch::from(samples())));
}

#[test]
fn a_point_naming_a_missing_series_is_refused() {
    // Each a one-byte varint.
    let mut body = vec![0u8, 0, 1, 5, 0, 0];
    body.extend_from_slice(&1f64.to_le_bytes());
    // strings 0, series 0, points 1: series 5 (there is none).
    assert!(decode_batch(&body).is_none());
}
