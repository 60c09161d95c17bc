//! The data model: one timestamped value of one series.

/// Column names of the `samples` table and of its files that tags may not use.
pub const RESERVED_COLUMNS: [&str; 6] = [
    "time",
    "metric",
    "value",
    "text",
    "value_mantissa",
    "value_scale",
];

/// The value of a sample: a number, or a string (EXAMON also sends text, e.g. Nagios output).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A numeric reading.
    Float(f64),
    /// A text reading, stored in the `text` column.
    Text(String),
}

/// One reading of one series: `metric` + `tags` identify the series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `load_core`.
    pub metric: String,
    /// Tag pairs sorted by key, keys unique.
    pub tags: Vec<(String, String)>,
    /// Nanoseconds since the Unix epoch, UTC.
    pub time_ns: i64,
    /// The reading.
    pub value: Value,
}

impl Sample {
    /// A numeric sample; `tags` are sorted here.
    pub fn new(
        metric: impl Into<String>,
        mut tags: Vec<(String, String)>,
        time_ns: i64,
        value: Value,
    ) -> Self {
        tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self {
            metric: metric.into(),
            tags,
            time_ns,
            value,
        }
    }

    /// The value of tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.tags[i].1.as_str())
    }
}
