//! Building samples: the common EXAMON tags of one family on one node, one timestamp per
//! collection, and the item tags of each sample.
//!
//! Every family emits through [`Emitter`], and so keeps one rule: a collector publishes
//! finite numbers only. A reading that comes out NaN or ±Inf (a ratio over a zero total, a
//! sensor's error value, a counter read across a reset) says nothing a query could use, so
//! it is dropped here rather than stored.

use exawatch_protocol::{Sample, Value};

use crate::NodeTags;

/// `org`, `cluster`, `node`, `plugin`, `chnl` (= `data`) of one family's samples.
pub(crate) fn base_tags(tags: &NodeTags, family: &str) -> Vec<(String, String)> {
    [
        ("org", tags.org.as_str()),
        ("cluster", tags.cluster.as_str()),
        ("node", tags.node.as_str()),
        ("plugin", family),
        ("chnl", "data"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// Appends samples that share the base tags and the collection time.
#[derive(Debug)]
pub(crate) struct Emitter<'a> {
    base: &'a [(String, String)],
    now_ns: i64,
    out: &'a mut Vec<Sample>,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(base: &'a [(String, String)], now_ns: i64, out: &'a mut Vec<Sample>) -> Self {
        Self { base, now_ns, out }
    }

    /// The collection time every sample gets.
    pub(crate) fn now_ns(&self) -> i64 {
        self.now_ns
    }

    /// One numeric sample with the item tags `items` (none: `&[]`); dropped when the value
    /// is not finite.
    pub(crate) fn emit(&mut self, items: &[(&str, &str)], metric: &str, value: f64) {
        if value.is_finite() {
            self.push(items, metric, Value::Float(value));
        }
    }

    /// One text sample (e.g. a node state) with the item tags `items`.
    pub(crate) fn emit_text(&mut self, items: &[(&str, &str)], metric: &str, text: &str) {
        self.push(items, metric, Value::Text(text.to_owned()));
    }

    fn push(&mut self, items: &[(&str, &str)], metric: &str, value: Value) {
        let mut tags = Vec::with_capacity(self.base.len() + items.len());
        tags.extend_from_slice(self.base);
        tags.extend(
            items
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self.out.push(Sample::new(metric, tags, self.now_ns, value));
    }
}

/// Increase of a counter between two readings, the counter wrapping to 0 after `max`
/// (`None`: it never wraps). `None` when it went backwards without a known wrap point (a
/// reset) or from above `max`.
pub(crate) fn counter_delta(new: u64, old: u64, max: Option<u64>) -> Option<u64> {
    if new >= old {
        Some(new - old)
    } else {
        let max = max?;
        (old <= max).then(|| (max - old) + new)
    }
}
