use std::io::Write;

use super::*;

fn sample(metric: &str, node: &str, time_ns: i64, value: Value) -> Sample {
    Sample::new(
        metric,
        vec![("node".into(), node.into()), ("org".into(), "o".into())],
        time_ns,
        value,
    )
}

fn batch() -> Vec<Sample> {
    vec![
        sample("temp", "n1", 1_700_000_000_000_000_000, Value::Float(41.5)),
        sample("temp", "n2", -5, Value::Float(f64::NAN)),
        sample("status", "n1", i64::MAX, Value::Text("OK;all good".into())),
        Sample::new("bare", vec![], 0, Value::Float(-0.0)),
    ]
}

fn same(a: &[Sample], b: &[Sample]) -> bool {
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
    let samples = batch();
    let body = encode_batch(&samples);
    assert!(same(&decode_batch(&body).unwrap(), &samples));
    assert!(same(&decode_batch(&encode_batch(&[])).unwrap(), &[]));
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
    let second = encode_batch(&batch()[..1]);
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
