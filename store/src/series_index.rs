//! The series index of a file: every series' key and its contiguous rows.
//!
//! Files are sorted by series, then time, so each series is one run of rows. The index lists
//! the runs, with the time of every [`MARK_ROWS`]-th row of each, and is kept in the file's
//! Parquet footer (key-value metadata [`INDEX_KEY`]: zstd-compressed JSON in base64). A
//! selector then reads only `time` and `value` of its series' rows in the time range
//! ([`crate::select`]), and no label column at all.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, TimestampNanosecondArray, new_null_array};
use arrow::datatypes::{DataType, Int32Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::buffer::{SeriesKey, SortedRows, dictionary_type};

/// The Parquet key-value metadata key that holds a file's index.
pub(crate) const INDEX_KEY: &str = "exawatch.series_index.v1";

/// Rows between two time marks of a series.
pub(crate) const MARK_ROWS: u64 = 4096;

/// The runs of a file, in file order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SeriesIndex {
    pub(crate) series: Vec<IndexedSeries>,
}

/// One series' run of rows.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IndexedSeries {
    pub(crate) key: SeriesKey,
    /// First row of the run in the file.
    pub(crate) start: u64,
    /// Rows in the run.
    pub(crate) rows: u64,
    /// Time (ns) of rows `start`, `start + MARK_ROWS`, `start + 2 * MARK_ROWS`, …
    pub(crate) marks: Vec<i64>,
}

impl IndexedSeries {
    /// The file rows of this series that may hold times in `[min, max]` (whole blocks of
    /// [`MARK_ROWS`] rows), or an empty range.
    pub(crate) fn rows_in(&self, min: i64, max: i64) -> Range<u64> {
        let first = self.marks.partition_point(|&t| t <= min).saturating_sub(1) as u64;
        let end = self.marks.partition_point(|&t| t <= max) as u64;
        let from = self.start + (first * MARK_ROWS).min(self.rows);
        let to = self.start + (end * MARK_ROWS).min(self.rows);
        from..to.max(from)
    }
}

impl SeriesIndex {
    /// The index of rows sorted for a file, from the series of each row that the sort
    /// already knows.
    pub(crate) fn of_sorted(sorted: &SortedRows) -> Self {
        let mut index = Self::default();
        let mut previous = None;
        for (&series, &time) in sorted.keys.values().iter().zip(sorted.times.values()) {
            let starts_run = previous != Some(series);
            previous = Some(series);
            index.add_row(
                starts_run,
                || sorted.series[series as usize].as_ref().clone(),
                time,
            );
        }
        index
    }

    /// Appends the next row of the file; `key` is asked for when the row starts a run.
    fn add_row(&mut self, starts_run: bool, key: impl FnOnce() -> SeriesKey, time: i64) {
        if starts_run {
            let start = self.series.last().map_or(0, |s| s.start + s.rows);
            self.series.push(IndexedSeries {
                key: key(),
                start,
                rows: 0,
                marks: Vec::new(),
            });
        }
        let run = self.series.last_mut().expect("a run was started");
        if run.rows.is_multiple_of(MARK_ROWS) {
            run.marks.push(time);
        }
        run.rows += 1;
    }

    /// The index as the footer stores it.
    pub(crate) fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("the index serializes");
        let compressed = zstd::bulk::compress(&json, 3).expect("zstd compresses in memory");
        base64::engine::general_purpose::STANDARD.encode(compressed)
    }

    /// Reads an index written by [`SeriesIndex::encode`].
    pub(crate) fn decode(text: &str) -> Result<Self, String> {
        let compressed = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| e.to_string())?;
        let json = zstd::stream::decode_all(compressed.as_slice()).map_err(|e| e.to_string())?;
        serde_json::from_slice(&json).map_err(|e| e.to_string())
    }
}

/// Builds the index of rows streamed in file order.
pub(crate) struct SeriesIndexBuilder {
    /// `metric`, then the tag columns.
    columns: Vec<String>,
    converter: RowConverter,
    last: Option<OwnedRow>,
    index: SeriesIndex,
}

impl SeriesIndexBuilder {
    /// A builder for rows with these tag columns (a batch may lack some: NULL there).
    pub(crate) fn new(tag_columns: &[String]) -> Result<Self, ArrowError> {
        let columns: Vec<String> = std::iter::once("metric".to_owned())
            .chain(tag_columns.iter().cloned())
            .collect();
        let fields = columns
            .iter()
            .map(|_| SortField::new(dictionary_type()))
            .collect();
        Ok(Self {
            columns,
            converter: RowConverter::new(fields)?,
            last: None,
            index: SeriesIndex::default(),
        })
    }

    /// Adds the next rows of the file.
    pub(crate) fn push(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let n = batch.num_rows();
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|name| match batch.column_by_name(name) {
                Some(column) if column.data_type() == &dictionary_type() => Ok(Arc::clone(column)),
                Some(column) => arrow::compute::cast(column, &dictionary_type()),
                None => Ok(new_null_array(&dictionary_type(), n)),
            })
            .collect::<Result<_, _>>()?;
        let times = batch
            .column_by_name("time")
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            .ok_or_else(|| ArrowError::SchemaError("no nanosecond time column".into()))?;
        let rows = self.converter.convert_columns(&arrays)?;
        for (i, row) in rows.iter().enumerate() {
            let starts_run = self.last.as_ref().is_none_or(|last| last.row() != row);
            if starts_run {
                self.last = Some(row.owned());
            }
            self.index.add_row(
                starts_run,
                || key_at(&self.columns, &arrays, i),
                times.value(i),
            );
        }
        Ok(())
    }

    /// Series seen so far.
    pub(crate) fn series(&self) -> u64 {
        self.index.series.len() as u64
    }

    /// The index of every row pushed.
    pub(crate) fn finish(self) -> SeriesIndex {
        self.index
    }
}

/// The series key of row `row`: `arrays` are `columns` (metric, then tags) as dictionaries.
fn key_at(columns: &[String], arrays: &[ArrayRef], row: usize) -> SeriesKey {
    let value = |array: &ArrayRef| -> Option<String> {
        let dictionary = array.as_dictionary::<Int32Type>();
        if !dictionary.is_valid(row) {
            return None;
        }
        let key = dictionary.keys().value(row) as usize;
        let values = dictionary.values();
        match values.data_type() {
            DataType::Utf8 => Some(values.as_string::<i32>().value(key).to_owned()),
            _ => None,
        }
    };
    let mut tags: Vec<(String, String)> = columns[1..]
        .iter()
        .zip(&arrays[1..])
        .filter_map(|(name, array)| value(array).map(|v| (name.clone(), v)))
        .collect();
    tags.sort_unstable();
    SeriesKey {
        metric: value(&arrays[0]).unwrap_or_default(),
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(rows: u64, marks: Vec<i64>) -> IndexedSeries {
        IndexedSeries {
            key: SeriesKey {
                metric: "m".into(),
                tags: Vec::new(),
            },
            start: 100,
            rows,
            marks,
        }
    }

    #[test]
    fn rows_in_covers_the_blocks_that_may_hold_the_range() {
        // Three blocks starting at t = 0, 10, 20; 10 000 rows.
        let s = series(10_000, vec![0, 10, 20]);
        assert_eq!(s.rows_in(0, 30), 100..10_100);
        assert_eq!(s.rows_in(12, 15), 100 + 4096..100 + 8192);
        assert_eq!(s.rows_in(10, 10), 100 + 4096..100 + 8192);
        assert_eq!(s.rows_in(9, 10), 100..100 + 8192);
        assert_eq!(s.rows_in(25, 99), 100 + 8192..10_100);
        assert_eq!(s.rows_in(-5, -1), 100..100);
    }

    #[test]
    fn the_index_round_trips_through_its_footer_text() {
        let index = SeriesIndex {
            series: vec![series(3, vec![7])],
        };
        let decoded = SeriesIndex::decode(&index.encode()).unwrap();
        assert_eq!(decoded.series.len(), 1);
        assert_eq!(decoded.series[0].rows, 3);
        assert_eq!(decoded.series[0].marks, vec![7]);
        assert!(SeriesIndex::decode("not base64!").is_err());
    }
}
