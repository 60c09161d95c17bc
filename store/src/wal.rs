//! The write-ahead log: numbered segment files of checksummed records, each record one
//! batch of samples.
//!
//! Segment file `<id:020>.wal`: the magic `EXAWAL02`, then records
//! `len: u32 LE | crc32(body): u32 LE | body`. A body is a string table, the batch's series
//! and its points (see [`encode_batch`]). Segments of format 1 (`EXAWAL01`, one series per
//! sample) written by earlier versions are still replayed. Replay stops at the first
//! truncated or corrupt record of a segment: that is where a crash cut the last write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use exawatch_protocol::{Batch, SeriesKey, Value};

use crate::buffer::HashMap;
use snafu::{ResultExt, Snafu};

#[cfg(test)]
mod tests;

/// The magic of segments this version writes (records of [`encode_batch`]).
const MAGIC: &[u8; 8] = b"EXAWAL02";
/// The magic of segments of format 1 (records of [`decode_samples`]), still replayed.
const MAGIC_V1: &[u8; 8] = b"EXAWAL01";
/// A record larger than this is treated as corrupt (a real one is a few MiB at most).
const MAX_RECORD_BYTES: usize = 256 << 20;

/// WAL errors.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum WalError {
    /// A segment could not be created, written or synced.
    #[snafu(display("WAL segment {}: {source}", path.display()))]
    SegmentIo { path: PathBuf, source: io::Error },
    /// The WAL directory could not be read.
    #[snafu(display("WAL directory {}: {source}", path.display()))]
    DirIo { path: PathBuf, source: io::Error },
}

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
fn decode_samples(body: &[u8]) -> Option<Batch> {
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

/// Path of segment `id` in `dir`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// The ids of the segments in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut ids = Vec::new();
    let entries = fs::read_dir(dir).context(DirIoSnafu { path: dir })?;
    for entry in entries {
        let entry = entry.context(DirIoSnafu { path: dir })?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        ids.push(id);
    }
    ids.sort_unstable();
    Ok(ids)
}

/// What reading a segment found.
#[derive(Debug, Default)]
pub struct SegmentContents {
    /// The record bodies that were whole and intact, in order.
    pub batches: Vec<Batch>,
    /// Bytes at the end that did not form a whole, intact record (0 for a clean segment).
    pub discarded_bytes: u64,
}

/// Reads every intact record of a segment, stopping at the first damaged one.
pub fn read_segment(path: &Path) -> Result<SegmentContents, WalError> {
    let file = File::open(path).context(SegmentIoSnafu { path })?;
    let total = file.metadata().context(SegmentIoSnafu { path })?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut contents = SegmentContents::default();
    let mut magic = [0u8; 8];
    let decode: fn(&[u8]) -> Option<Batch> = match reader.read_exact(&mut magic) {
        Ok(()) if &magic == MAGIC => decode_batch,
        Ok(()) if &magic == MAGIC_V1 => decode_samples,
        _ => {
            contents.discarded_bytes = total;
            return Ok(contents);
        }
    };
    let mut consumed = MAGIC.len() as u64;
    loop {
        let mut header = [0u8; 8];
        match read_full(&mut reader, &mut header).context(SegmentIoSnafu { path })? {
            0 => break,
            8 => {}
            _ => break,
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD_BYTES {
            break;
        }
        let mut body = vec![0u8; len];
        if read_full(&mut reader, &mut body).context(SegmentIoSnafu { path })? != len {
            break;
        }
        if crc32fast::hash(&body) != crc {
            break;
        }
        let Some(batch) = decode(&body) else {
            break;
        };
        contents.batches.push(batch);
        consumed += 8 + len as u64;
    }
    contents.discarded_bytes = total - consumed;
    Ok(contents)
}

/// Like `read_exact`, but returns how many bytes it got before end of file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The segment being appended to.
#[derive(Debug)]
pub struct SegmentWriter {
    id: u64,
    path: PathBuf,
    file: File,
    bytes: u64,
}

impl SegmentWriter {
    /// Creates segment `id` in `dir` (which must exist); fails if it exists already.
    pub fn create(dir: &Path, id: u64) -> Result<Self, WalError> {
        let path = segment_path(dir, id);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .context(SegmentIoSnafu { path: &path })?;
        if let Err(source) = file.write_all(MAGIC) {
            // Do not leave a headless file behind (a full disk): the id stays free for the
            // next attempt.
            let _ = fs::remove_file(&path);
            return Err(WalError::SegmentIo { path, source });
        }
        Ok(Self {
            id,
            path,
            file,
            bytes: MAGIC.len() as u64,
        })
    }

    /// This segment's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes written to this segment so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends records (bodies from [`encode_batch`]) with one `write` call. The data is in
    /// the OS page cache when this returns (it survives a crash of the process, not of the
    /// machine); [`SegmentWriter::sync`] makes it durable.
    pub fn append(&mut self, bodies: &[&[u8]]) -> Result<u64, WalError> {
        let size: usize = bodies.iter().map(|b| 8 + b.len()).sum();
        let mut buf = Vec::with_capacity(size);
        for body in bodies {
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            buf.extend_from_slice(body);
        }
        self.file
            .write_all(&buf)
            .context(SegmentIoSnafu { path: &self.path })?;
        self.bytes += size as u64;
        Ok(size as u64)
    }

    /// Flushes the segment to stable storage (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.file
            .sync_data()
            .context(SegmentIoSnafu { path: &self.path })
    }
}
