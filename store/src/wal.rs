//! The write-ahead log: numbered segment files of checksummed records, each record one
//! batch of samples.
//!
//! Segment file `<id:020>.wal`: the magic `EXAWAL02`, then records
//! `len: u32 LE | crc32(body): u32 LE | body`. A body is a string table, the batch's series
//! and its points ([`exawatch_protocol::record`]). Segments of format 1 (`EXAWAL01`, one series per
//! sample) written by earlier versions are still replayed. Replay stops at the first
//! truncated or corrupt record of a segment: that is where a crash cut the last write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

pub use exawatch_protocol::record::{decode_batch, encode_batch};
use exawatch_protocol::{Batch, record::decode_samples};
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
