//! Putting each series together from its parts (files in catalog order, then the buffer):
//! [`Selection`] gathers the parts under the sample limit, and a k-way merge of each
//! series' parts, in time order, the later write of a time last, builds it.

use std::collections::HashMap;
use std::sync::Arc;

use exawatch_parallel::in_parallel;

use crate::buffer::SeriesKey;
use crate::{Error, Result};

use super::part::Part;
use super::{SampleSink, SeriesSamples};

/// The series gathered so far: each series' parts with their place in write order.
pub(super) struct Selection {
    series: Vec<Vec<(usize, Part)>>,
    by_key: HashMap<Arc<SeriesKey>, usize>,
    samples: usize,
    max_samples: usize,
}

impl Selection {
    pub(super) fn new(max_samples: usize) -> Self {
        Self {
            series: Vec::new(),
            by_key: HashMap::new(),
            samples: 0,
            max_samples,
        }
    }

    /// Adds a part of a series; `order` is its place in write order (the file's in the
    /// catalog, the buffer last): parts may be added in any order.
    pub(super) fn add(&mut self, order: usize, part: Part) -> Result<()> {
        let len = part.len();
        self.samples += len;
        if self.samples > self.max_samples {
            return Err(Error::TooManySamples {
                limit: self.max_samples,
            });
        }
        if len == 0 {
            return Ok(());
        }
        match self.by_key.get(part.key()) {
            Some(&i) => self.series[i].push((order, part)),
            None => {
                self.by_key
                    .insert(Arc::clone(part.key()), self.series.len());
                self.series.push(vec![(order, part)]);
            }
        }
        Ok(())
    }

    /// Every series with its samples in time order (stable: the later write of a time last),
    /// put together on several threads when there are many samples (it is a copy of each).
    pub(super) fn finish<S: SampleSink>(self) -> Vec<S> {
        in_parallel(self.series, self.samples, |mut parts| {
            parts.sort_by_key(|(order, _)| *order);
            merge_parts(parts.into_iter().map(|(_, part)| part).collect())
        })
    }
}

/// One series from its parts in write order. Parts each in time order (files; the buffer's
/// unless written out of order) are merged run by run straight into the sink: parts that
/// follow one another in time, or overlap only at their edges (flushes of concurrent
/// writers), are copied in a few long runs. Otherwise the samples are sorted.
fn merge_parts<S: SampleSink>(mut parts: Vec<Part>) -> S {
    if parts
        .iter()
        .any(|p| matches!(p, Part::Samples(s) if !s.times.is_sorted()))
    {
        return S::from_samples(sort(parts.into_iter().map(Part::into_samples).collect()));
    }
    if let [Part::Samples(_)] = &parts[..]
        && let Some(Part::Samples(s)) = parts.pop()
    {
        return S::from_samples(s);
    }
    let total = parts.iter().map(Part::len).sum();
    let mut out = S::with_capacity(Arc::clone(parts[0].key()), total);
    let mut cursors: Vec<Cursor> = parts.iter().map(Cursor::new).collect();
    cursors.retain(|c| !c.done());
    while !cursors.is_empty() {
        // The part whose next sample comes first; of equal times, the one written first.
        let first = (0..cursors.len())
            .min_by_key(|&i| cursors[i].head())
            .expect("not empty");
        // It goes on until another part's next sample, which goes first if that part was
        // written earlier and on an equal time (`limit` is exclusive).
        let limit = cursors
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != first)
            .map(|(i, c)| c.head().saturating_add(i64::from(i > first)))
            .min();
        let cursor = &mut cursors[first];
        let (times, values) = cursor.slices[cursor.slice];
        let end = match limit {
            Some(limit) => cursor.row + times[cursor.row..].partition_point(|&t| t < limit),
            None => times.len(),
        };
        out.extend(&times[cursor.row..end], &values[cursor.row..end]);
        cursor.advance_to(end);
        if cursor.done() {
            cursors.remove(first);
        }
    }
    out
}

/// A place in a part in time order: its non-empty slices, the current one and the row in it.
struct Cursor<'a> {
    slices: Vec<(&'a [i64], &'a [f64])>,
    slice: usize,
    row: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(part: &'a Part) -> Self {
        Self {
            slices: part.slices().filter(|(t, _)| !t.is_empty()).collect(),
            slice: 0,
            row: 0,
        }
    }

    fn done(&self) -> bool {
        self.slice == self.slices.len()
    }

    /// The time of the next sample.
    fn head(&self) -> i64 {
        self.slices[self.slice].0[self.row]
    }

    /// Moves to `row` of the current slice (to the next slice at its end).
    fn advance_to(&mut self, row: usize) {
        self.row = row;
        if row == self.slices[self.slice].0.len() {
            (self.slice, self.row) = (self.slice + 1, 0);
        }
    }
}

/// One series from parts not all in time order: their samples in write order, sorted by
/// time (stable: the later write of a time last).
fn sort(parts: Vec<SeriesSamples>) -> SeriesSamples {
    let total = parts.iter().map(|p| p.times.len()).sum();
    let mut all = SeriesSamples::with_capacity(Arc::clone(&parts[0].key), total);
    for part in &parts {
        all.extend(&part.times, &part.values);
    }
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by_key(|&i| all.times[i]);
    all.times = order.iter().map(|&i| all.times[i]).collect();
    all.values = order.iter().map(|&i| all.values[i]).collect();
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_cache::Block;

    fn part(key: &Arc<SeriesKey>, samples: &[(i64, f64)]) -> SeriesSamples {
        SeriesSamples {
            key: Arc::clone(key),
            times: samples.iter().map(|s| s.0).collect(),
            values: samples.iter().map(|s| s.1).collect(),
        }
    }

    /// The parts joined, each given as decoded samples and as cached blocks of 2 rows.
    fn merged(key: &Arc<SeriesKey>, parts: &[&[(i64, f64)]]) -> Vec<(i64, f64)> {
        let joined = |parts: Vec<Part>| {
            let s: SeriesSamples = merge_parts(parts);
            s.times.into_iter().zip(s.values).collect::<Vec<_>>()
        };
        let decoded = joined(parts.iter().map(|p| Part::Samples(part(key, p))).collect());
        let in_blocks = parts.iter().map(|p| {
            let p = part(key, p);
            let blocks = p
                .times
                .chunks(2)
                .zip(p.values.chunks(2))
                .map(|(times, values)| {
                    let block = Block {
                        times: times.to_vec(),
                        values: values.to_vec(),
                    };
                    (Arc::new(block), 0..times.len())
                })
                .collect();
            match p.times.is_sorted() {
                true => Part::Blocks {
                    key: Arc::clone(key),
                    blocks,
                },
                false => Part::Samples(p),
            }
        });
        assert_eq!(joined(in_blocks.collect()), decoded);
        decoded
    }

    #[test]
    fn parts_merge_in_time_order_with_the_later_write_of_a_time_last() {
        let key = Arc::new(SeriesKey {
            metric: "m".into(),
            tags: Vec::new(),
        });
        // Overlapping edges, as flushes of concurrent writers leave them.
        assert_eq!(
            merged(
                &key,
                &[
                    &[(1, 1.0), (3, 3.0), (5, 5.0)],
                    &[(2, 2.0), (5, 50.0), (6, 6.0)]
                ]
            ),
            [(1, 1.0), (2, 2.0), (3, 3.0), (5, 5.0), (5, 50.0), (6, 6.0)]
        );
        // Disjoint parts in order, and in reverse order.
        assert_eq!(
            merged(&key, &[&[(1, 1.0)], &[(2, 2.0)], &[(3, 3.0)]]),
            [(1, 1.0), (2, 2.0), (3, 3.0)]
        );
        assert_eq!(
            merged(&key, &[&[(3, 3.0)], &[(1, 1.0), (2, 2.0)]]),
            [(1, 1.0), (2, 2.0), (3, 3.0)]
        );
        // Interleaved parts, equal times among them.
        assert_eq!(
            merged(
                &key,
                &[
                    &[(1, 1.0), (3, 3.0), (5, 5.0), (7, 7.0)],
                    &[(1, 10.0), (2, 2.0), (5, 50.0), (8, 8.0)],
                    &[(0, 0.0), (5, 500.0), (7, 70.0)]
                ]
            ),
            [
                (0, 0.0),
                (1, 1.0),
                (1, 10.0),
                (2, 2.0),
                (3, 3.0),
                (5, 5.0),
                (5, 50.0),
                (5, 500.0),
                (7, 7.0),
                (7, 70.0),
                (8, 8.0)
            ]
        );
        // A part out of order (the buffer's, written late) is sorted, stably.
        assert_eq!(
            merged(&key, &[&[(1, 1.0), (4, 4.0)], &[(4, 40.0), (2, 2.0)]]),
            [(1, 1.0), (2, 2.0), (4, 4.0), (4, 40.0)]
        );
    }
}
