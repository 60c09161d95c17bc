//! Several ingesters over one object store. Each ingester (`store.ingester = "<name>"`)
//! keeps its files, rollups and catalog under `ingesters/<name>/`, written by it alone, so
//! ingesters never contend for one catalog. A querier ([`crate::Store::open_querier`]) reads
//! the root's catalog (a single process's files) and every ingester's as one, re-read
//! periodically ([`crate::Store::run_catalog_refresh`]): the object store is the only thing
//! they share.

use std::sync::Arc;

use arrow::array::Array;
use exawatch_protocol::{Batch, SeriesKey, Value};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::buffer::{Chunk, HashMap};
use crate::catalog::{CATALOG_PATH, Catalog, FileMeta};
use crate::{InvalidIngesterSnafu, ObjectStoreSnafu, Result, chunk_rows, persist, wal};

/// Where ingesters keep their objects: `ingesters/<name>/`.
pub(crate) const INGESTERS: &str = "ingesters";

/// The object-store prefix of ingester `name`, checked: letters, digits, `.`, `_` and `-`.
pub(crate) fn ingester_prefix(name: &str) -> Result<String> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return InvalidIngesterSnafu { name }.fail();
    }
    Ok(format!("{INGESTERS}/{name}"))
}

/// Where an ingester says where its API is, under its prefix.
pub(crate) const ENDPOINT_PATH: &str = "endpoint.json";

/// An ingester's `endpoint.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Endpoint {
    /// Base URL of its HTTP API, as queriers reach it.
    pub(crate) url: String,
}

/// The ingesters' prefixes under `root` (`ingesters/<name>`), by name.
pub(crate) async fn ingester_prefixes(root: &dyn ObjectStore) -> Result<Vec<ObjectPath>> {
    let mut prefixes = match root
        .list_with_delimiter(Some(&ObjectPath::from(INGESTERS)))
        .await
    {
        Ok(listing) => listing.common_prefixes,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(source) => return Err(source).context(ObjectStoreSnafu),
    };
    prefixes.sort();
    Ok(prefixes)
}

/// The URL an ingester advertises under `prefix`, if it wrote one.
pub(crate) async fn endpoint(root: &dyn ObjectStore, prefix: &ObjectPath) -> Option<String> {
    let bytes = root
        .get(&prefix.clone().join(ENDPOINT_PATH))
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    serde_json::from_slice::<Endpoint>(&bytes)
        .ok()
        .map(|e| e.url)
}

/// The catalog an ingester wrote under `prefix` (empty before its first flush).
pub(crate) async fn ingester_catalog(
    root: &dyn ObjectStore,
    prefix: &ObjectPath,
) -> Result<Catalog> {
    persist::load_catalog_at(root, &prefix.clone().join(CATALOG_PATH)).await
}

/// The catalogs of the root and of every ingester under `root`, as one catalog whose file
/// paths are relative to `root`; tag columns in order of first appearance (root first, then
/// ingesters by name).
pub(crate) async fn load_union(root: &dyn ObjectStore) -> Result<Catalog> {
    let root_catalog = persist::load_catalog_at(root, &ObjectPath::from(CATALOG_PATH)).await?;
    let mut catalogs = Vec::new();
    for prefix in ingester_prefixes(root).await? {
        let catalog = ingester_catalog(root, &prefix).await?;
        catalogs.push((prefix, catalog));
    }
    Ok(union(root_catalog, catalogs))
}

/// `root_catalog` with the files of each ingester's catalog, their paths put under its
/// prefix.
pub(crate) fn union(root_catalog: Catalog, ingesters: Vec<(ObjectPath, Catalog)>) -> Catalog {
    let mut union = root_catalog;
    for (prefix, catalog) in ingesters {
        let under = |files: Vec<FileMeta>| {
            files.into_iter().map(|f| FileMeta {
                path: format!("{prefix}/{}", f.path),
                ..f
            })
        };
        union.files.extend(under(catalog.files));
        for (resolution, files) in catalog.rollups {
            union
                .rollups
                .entry(resolution)
                .or_default()
                .extend(under(files));
        }
        for column in catalog.tag_columns {
            if !union.tag_columns.contains(&column) {
                union.tag_columns.push(column);
            }
        }
    }
    union
}

/// What a querier asks an ingester for: the rows after those it holds, and the catalog if
/// its copy is not the current one. Query parameters of the ingester's
/// `/api/v1/internal/unflushed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnflushedRequest {
    /// Epoch of the rows the querier holds (0: none).
    pub epoch: u64,
    /// Number of the first row it lacks.
    pub from: u64,
    /// Version of the ingester's catalog it holds (0: none).
    pub catalog_version: u64,
}

/// The answer's header: which rows follow and what the files hold.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UnflushedHeader {
    /// Epoch of the ingester's row numbering.
    pub(crate) epoch: u64,
    /// Number of the first row in memory (all before are in the catalog's files).
    pub(crate) flushed: u64,
    /// Number of the first row sent.
    pub(crate) start: u64,
    /// Version of the ingester's catalog.
    pub(crate) catalog_version: u64,
    /// The catalog, when the querier's copy is not this version.
    pub(crate) catalog: Option<Catalog>,
}

/// An ingester's answer: header and rows.
#[derive(Debug)]
pub(crate) struct Unflushed {
    pub(crate) header: UnflushedHeader,
    pub(crate) rows: Batch,
}

/// Encodes the answer: the header's JSON length (4 bytes, big-endian), the header, then
/// the rows as a WAL record body ([`wal::encode_batch`]).
pub(crate) fn encode_unflushed(
    header: &UnflushedHeader,
    chunks: &[Arc<Chunk>],
    skip: usize,
    keys: &HashMap<u32, Arc<SeriesKey>>,
) -> Vec<u8> {
    let mut batch = Batch::new();
    let mut in_batch: HashMap<u32, u32> = HashMap::default();
    let mut skip = skip;
    for chunk in chunks {
        if skip >= chunk.len() {
            skip -= chunk.len();
            continue;
        }
        for row in std::mem::take(&mut skip)..chunk.len() {
            let id = chunk.series[chunk.keys.value(row) as usize];
            let series = *in_batch
                .entry(id)
                .or_insert_with(|| batch.add_shared_series(Arc::clone(&keys[&id])));
            let value = match &chunk.text {
                Some(text) if chunk.value.is_null(row) => Value::Text(text.value(row).to_owned()),
                _ => Value::Float(chunk.value.value(row)),
            };
            batch.push(series, chunk.time.value(row), value);
        }
    }
    let header = serde_json::to_vec(header).expect("the header serializes");
    let rows = wal::encode_batch(&batch);
    let mut out = Vec::with_capacity(4 + header.len() + rows.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&rows);
    out
}

/// Decodes what [`encode_unflushed`] wrote.
pub(crate) fn decode_unflushed(bytes: &[u8]) -> std::result::Result<Unflushed, String> {
    let length = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or("shorter than its header length")?;
    let header = bytes.get(4..4 + length).ok_or("shorter than its header")?;
    let header: UnflushedHeader =
        serde_json::from_slice(header).map_err(|e| format!("header: {e}"))?;
    let rows = wal::decode_batch(&bytes[4 + length..]).ok_or("malformed rows")?;
    Ok(Unflushed { header, rows })
}

/// A querier's copy of what one ingester holds in memory, as chunks of the querier's
/// series table, and of its catalog.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    epoch: u64,
    /// Number of the first row of `chunks`.
    first: u64,
    pub(crate) chunks: Vec<Arc<Chunk>>,
    catalog_version: u64,
    pub(crate) catalog: Catalog,
}

impl Mirror {
    /// What to ask the ingester for next.
    pub(crate) fn request(&self) -> UnflushedRequest {
        UnflushedRequest {
            epoch: self.epoch,
            from: self.end(),
            catalog_version: self.catalog_version,
        }
    }

    fn end(&self) -> u64 {
        self.first + chunk_rows(&self.chunks) as u64
    }

    /// Takes an answer in: its rows (as `chunks`, in order) follow those held, or replace
    /// them when the ingester restarted or some were missed; rows the ingester has since
    /// put in files are dropped, as the answer's catalog (if any) now holds them.
    pub(crate) fn apply(&mut self, header: UnflushedHeader, chunks: Vec<Arc<Chunk>>) {
        if header.epoch != self.epoch || header.start != self.end() {
            self.epoch = header.epoch;
            self.first = header.start;
            self.chunks.clear();
        }
        self.chunks.extend(chunks);
        let mut flushed = header.flushed.saturating_sub(self.first);
        let whole = self
            .chunks
            .iter()
            .take_while(|c| {
                let inside = (c.len() as u64) <= flushed;
                if inside {
                    flushed -= c.len() as u64;
                }
                inside
            })
            .count();
        let dropped: usize = self.chunks.drain(..whole).map(|c| c.len()).sum();
        self.first += dropped as u64;
        if flushed > 0
            && let Some(first) = self.chunks.first_mut()
        {
            *first = Arc::new(first.tail(flushed as usize));
            self.first += flushed;
        }
        if let Some(catalog) = header.catalog {
            self.catalog = catalog;
            self.catalog_version = header.catalog_version;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingester_names_are_path_safe() {
        assert_eq!(ingester_prefix("ing-1.a_b").unwrap(), "ingesters/ing-1.a_b");
        for bad in ["", "a/b", "..", ".hidden", "a b", "é"] {
            assert!(ingester_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Rows at times `times` of one series, as the querier's chunks, and the table they are in.
    fn chunks(
        times: std::ops::Range<i64>,
        table: &mut crate::buffer::SeriesTable,
    ) -> Vec<Arc<Chunk>> {
        let mut batch = Batch::new();
        let series = batch.add_series(SeriesKey {
            metric: "m".into(),
            tags: vec![("node".into(), "n1".into())],
        });
        for t in times {
            batch.push(series, t, Value::Float(t as f64));
        }
        let hashed = crate::buffer::HashedBatch::new(batch, table.hasher());
        let mut buffer = crate::buffer::Buffer::default();
        buffer.insert(&hashed, table).unwrap();
        buffer.take()
    }

    fn header(epoch: u64, flushed: u64, start: u64) -> UnflushedHeader {
        UnflushedHeader {
            epoch,
            flushed,
            start,
            catalog_version: 1,
            catalog: None,
        }
    }

    fn times(mirror: &Mirror) -> Vec<i64> {
        mirror
            .chunks
            .iter()
            .flat_map(|c| c.time.values().to_vec())
            .collect()
    }

    #[test]
    fn a_mirror_keeps_exactly_the_rows_not_in_files() {
        let mut table = crate::buffer::SeriesTable::default();
        let mut mirror = Mirror::default();
        mirror.apply(header(7, 0, 0), chunks(0..10, &mut table));
        assert_eq!(mirror.request().from, 10);
        // Four rows went to a file, and two more came: a chunk is cut, not dropped whole.
        mirror.apply(header(7, 4, 10), chunks(10..12, &mut table));
        assert_eq!(times(&mirror), (4..12).collect::<Vec<_>>());
        // Past the first chunk.
        mirror.apply(header(7, 11, 12), Vec::new());
        assert_eq!(times(&mirror), vec![11]);
        // Rows the mirror never saw went to files meanwhile: it starts again from the answer.
        mirror.apply(header(7, 20, 20), chunks(20..22, &mut table));
        assert_eq!(times(&mirror), vec![20, 21]);
        assert_eq!(mirror.request().from, 22);
        // A restarted ingester numbers its rows anew.
        mirror.apply(header(8, 0, 0), chunks(100..101, &mut table));
        assert_eq!(times(&mirror), vec![100]);
        assert_eq!(mirror.request().epoch, 8);
    }

    #[test]
    fn answers_round_trip_and_damaged_ones_are_refused() {
        let mut table = crate::buffer::SeriesTable::default();
        let sent = chunks(0..5, &mut table);
        let keys = table.keys_of(&sent);
        let bytes = encode_unflushed(&header(3, 0, 2), &sent, 2, &keys);
        let answer = decode_unflushed(&bytes).unwrap();
        assert_eq!((answer.header.epoch, answer.header.start), (3, 2));
        let times: Vec<i64> = answer.rows.points().iter().map(|p| p.time_ns).collect();
        assert_eq!(times, vec![2, 3, 4]);
        assert_eq!(answer.rows.series()[0].metric, "m");
        for cut in [0, 3, 10, bytes.len() - 1] {
            assert!(decode_unflushed(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
