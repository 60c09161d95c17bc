//! [`Batch`]: many samples with each series' identity held once, what decoders produce and
//! the store ingests. A line-protocol request of 10,000 lines names a few thousand series
//! tens of thousands of times; a batch keeps each name once and its points refer to it.

use std::sync::Arc;

use crate::{Sample, Value};

/// The identity of a series: metric name and tags sorted by key.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct SeriesKey {
    /// Metric name.
    pub metric: String,
    /// Tags sorted by key, keys unique.
    pub tags: Vec<(String, String)>,
}

impl SeriesKey {
    /// The value of tag `key`, if the series has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.tags[i].1.as_str())
    }
}

/// One sample of a [`Batch`]: which of its series, when, what.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Index into [`Batch::series`].
    pub series: u32,
    /// Nanoseconds since the Unix epoch, UTC.
    pub time_ns: i64,
    /// The reading.
    pub value: Value,
}

/// Samples of many series; each point refers to its series by index. A series may appear
/// more than once (two spellings of the same tags), and a series no point refers to is
/// ignored by the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    series: Vec<Arc<SeriesKey>>,
    points: Vec<Point>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a series and returns its index for [`Batch::push`].
    pub fn add_series(&mut self, key: SeriesKey) -> u32 {
        self.add_shared_series(Arc::new(key))
    }

    /// Adds a series whose key is shared (a cache's, the store's) and returns its index.
    pub fn add_shared_series(&mut self, key: Arc<SeriesKey>) -> u32 {
        self.series.push(key);
        (self.series.len() - 1) as u32
    }

    /// Adds a point of series `series` (an index from [`Batch::add_series`]).
    pub fn push(&mut self, series: u32, time_ns: i64, value: Value) {
        debug_assert!((series as usize) < self.series.len());
        self.points.push(Point {
            series,
            time_ns,
            value,
        });
    }

    /// Adds one sample as its own series.
    pub fn push_sample(&mut self, sample: Sample) {
        let series = self.add_series(SeriesKey {
            metric: sample.metric,
            tags: sample.tags,
        });
        self.push(series, sample.time_ns, sample.value);
    }

    /// The series points refer to.
    pub fn series(&self) -> &[Arc<SeriesKey>] {
        &self.series
    }

    /// The points, in the order they were added.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Number of points (samples).
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when the batch has no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Drops the points after the first `points` (series stay: they may be shared).
    pub fn truncate_points(&mut self, points: usize) {
        self.points.truncate(points);
    }

    /// Every point as a [`Sample`], in order.
    pub fn samples(&self) -> impl Iterator<Item = Sample> + '_ {
        self.points.iter().map(|p| {
            let key = &self.series[p.series as usize];
            Sample {
                metric: key.metric.clone(),
                tags: key.tags.clone(),
                time_ns: p.time_ns,
                value: p.value.clone(),
            }
        })
    }
}

impl FromIterator<Sample> for Batch {
    fn from_iter<I: IntoIterator<Item = Sample>>(samples: I) -> Self {
        let mut batch = Self::new();
        for sample in samples {
            batch.push_sample(sample);
        }
        batch
    }
}

impl From<Vec<Sample>> for Batch {
    fn from(samples: Vec<Sample>) -> Self {
        samples.into_iter().collect()
    }
}

impl Extend<Sample> for Batch {
    fn extend<I: IntoIterator<Item = Sample>>(&mut self, samples: I) {
        for sample in samples {
            self.push_sample(sample);
        }
    }
}
