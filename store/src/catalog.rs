//! The catalog: which Parquet files hold which time range, the tag columns in order, and
//! how far the WAL has been persisted. Stored as one versioned JSON object
//! (`catalog.json`), replaced atomically on every change.

use std::collections::BTreeMap;

use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

/// Object-store path of the catalog.
pub const CATALOG_PATH: &str = "catalog.json";

/// The version written by this build.
pub const CATALOG_VERSION: u32 = 1;

/// One Parquet file of the `samples` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Object-store path, e.g. `files/00000000000000000001.parquet`.
    pub path: String,
    /// Smallest `time` in the file (ns).
    pub min_time: i64,
    /// Largest `time` in the file (ns).
    pub max_time: i64,
    /// Rows (samples) in the file.
    pub rows: u64,
    /// Distinct series in the file.
    pub series: u64,
    /// File size in bytes.
    pub bytes: u64,
}

/// The persisted catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version ([`CATALOG_VERSION`]).
    pub version: u32,
    /// Tag columns of the `samples` table, in order of first appearance.
    pub tag_columns: Vec<String>,
    /// The table's files, oldest first.
    pub files: Vec<FileMeta>,
    /// Rollup files by resolution (`1m`, `1h`), oldest first.
    #[serde(default)]
    pub rollups: BTreeMap<String, Vec<FileMeta>>,
    /// Every WAL segment up to this id is in `files`.
    pub persisted_segment: u64,
    /// Id for the next file.
    pub next_file_id: u64,
}

impl Catalog {
    /// An empty catalog of the current version.
    pub fn new() -> Self {
        Self {
            version: CATALOG_VERSION,
            next_file_id: 1,
            ..Self::default()
        }
    }

    /// Path for the file with id `id`.
    pub fn file_path(id: u64) -> ObjectPath {
        ObjectPath::from(format!("files/{id:020}.parquet"))
    }
}
