//! A batch as one binary record: the body of a WAL record, and the rows a querier fetches
//! from an ingester. Strings and series are stored once per record, times as varint deltas.

use crate::{Batch, SeriesKey, Value};

/// aHash: every string of every record on the ingest path is looked up here.
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// Strings of one record, each stored once.
#[derive(Default)]
struct Interner<'a> {
    index: HashMap<&'a str, u64>,
    strings: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    /// A record body: the string table, then `rows`.
    fn table_then(&self, rows: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(rows.len() + self.strings.len() * 8);
        put_varint(&mut body, self.strings.len() as u64);
        for s in &self.strings {
            put_varint(&mut body, s.len() as u64);
            body.extend_from_slice(s.as_bytes());
        }
        body.extend_from_slice(rows);
        body
    }

    /// Appends a value: kind 0 and the float, or kind 1 and the text's string index.
    fn put_value(&mut self, rows: &mut Vec<u8>, value: &'a Value) {
        match value {
            Value::Float(v) => {
                rows.push(0);
                rows.extend_from_slice(&v.to_le_bytes());
            }
            Value::Text(t) => {
                rows.push(1);
                put_varint(rows, self.get(t));
            }
        }
    }

    fn get(&mut self, s: &'a str) -> u64 {
        let strings = &mut self.strings;
        *self.index.entry(s).or_insert_with(|| {
            strings.push(s);
            (strings.len() - 1) as u64
        })
    }
}

/// Serializes a batch into one record body (format 2).
///
/// Layout (integers LEB128): `n_strings, (len, bytes)*, n_series, series*, n_points, point*`,
/// where a series is `metric, n_tags, (key, value)*` with strings given as indexes into the
/// table, and a point is `series, zigzag(time_ns - previous point's time_ns), kind, f64 LE
/// (kind 0) | text (kind 1)`. Each string and each series is stored once per batch.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut interner = Interner::default();
    let mut rows = Vec::with_capacity(batch.series().len() * 16 + batch.len() * 14);
    put_varint(&mut rows, batch.series().len() as u64);
    for key in batch.series() {
        put_varint(&mut rows, interner.get(&key.metric));
        put_varint(&mut rows, key.tags.len() as u64);
        for (tag, value) in &key.tags {
            put_varint(&mut rows, interner.get(tag));
            put_varint(&mut rows, interner.get(value));
        }
    }
    put_varint(&mut rows, batch.len() as u64);
    let mut previous = 0i64;
    for point in batch.points() {
        put_varint(&mut rows, u64::from(point.series));
        put_varint(&mut rows, zigzag(point.time_ns.wrapping_sub(previous)));
        previous = point.time_ns;
        interner.put_value(&mut rows, &point.value);
    }
    interner.table_then(&rows)
}

/// A record body's string table, and the cursor after it.
fn string_table(body: &[u8]) -> Option<(Vec<&str>, &[u8])> {
    let mut cursor = body;
    let n_strings = get_varint(&mut cursor)? as usize;
    let mut strings = Vec::with_capacity(n_strings.min(cursor.len()));
    for _ in 0..n_strings {
        let len = get_varint(&mut cursor)? as usize;
        let bytes = cursor.get(..len)?;
        strings.push(std::str::from_utf8(bytes).ok()?);
        cursor = &cursor[len..];
    }
    Some((strings, cursor))
}

/// A string of the table, by the index at the cursor.
fn string(strings: &[&str], cursor: &mut &[u8]) -> Option<String> {
    strings
        .get(get_varint(cursor)? as usize)
        .map(|s| s.to_string())
}

/// A series: `metric, n_tags, (key, value)*`, strings by index.
fn series_key(strings: &[&str], cursor: &mut &[u8]) -> Option<SeriesKey> {
    let metric = string(strings, cursor)?;
    let n_tags = get_varint(cursor)? as usize;
    let mut tags = Vec::with_capacity(n_tags.min(cursor.len()));
    for _ in 0..n_tags {
        tags.push((string(strings, cursor)?, string(strings, cursor)?));
    }
    Some(SeriesKey { metric, tags })
}

/// A value: its kind byte, then the float or the text's string index.
fn value(strings: &[&str], cursor: &mut &[u8]) -> Option<Value> {
    let (&kind, rest) = cursor.split_first()?;
    *cursor = rest;
    match kind {
        0 => {
            let bytes: [u8; 8] = cursor.get(..8)?.try_into().ok()?;
            *cursor = &cursor[8..];
            Some(Value::Float(f64::from_le_bytes(bytes)))
        }
        1 => Some(Value::Text(string(strings, cursor)?)),
        _ => None,
    }
}

/// Decodes a record body written by [`encode_batch`]; `None` if it is malformed.
pub fn decode_batch(body: &[u8]) -> Option<Batch> {
    let (strings, mut cursor) = string_table(body)?;
    let n_series = get_varint(&mut cursor)? as usize;
    let mut batch = Batch::new();
    for _ in 0..n_series {
        batch.add_series(series_key(&strings, &mut cursor)?);
    }
    let n_points = get_varint(&mut cursor)? as usize;
    let mut time_ns = 0i64;
    for _ in 0..n_points {
        let series = u32::try_from(get_varint(&mut cursor)?).ok()?;
        if series as usize >= n_series {
            return None;
        }
        time_ns = time_ns.wrapping_add(unzigzag(get_varint(&mut cursor)?));
        let value = value(&strings, &mut cursor)?;
        batch.push(series, time_ns, value);
    }
    cursor.is_empty().then_some(batch)
}

/// Decodes a record body of format 1 (segments written before batches held each series
/// once): `n_strings, (len, bytes)*, n_samples, sample*`, a sample being `metric, n_tags,
/// (key, value)*, zigzag(time_ns), kind, f64 LE | text`.
pub fn decode_samples(body: &[u8]) -> Option<Batch> {
    let (strings, mut cursor) = string_table(body)?;
    let n_samples = get_varint(&mut cursor)? as usize;
    let mut batch = Batch::new();
    for _ in 0..n_samples {
        let key = series_key(&strings, &mut cursor)?;
        let time_ns = unzigzag(get_varint(&mut cursor)?);
        let value = value(&strings, &mut cursor)?;
        let series = batch.add_series(key);
        batch.push(series, time_ns, value);
    }
    cursor.is_empty().then_some(batch)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(cursor: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = cursor.split_first()?;
        *cursor = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}
