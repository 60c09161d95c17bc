//! [`Part`]: one file's or the buffer's samples of a series, as decoded samples or as rows
//! of cached blocks, and [`assemble`], which makes a file's part from its blocks.

use std::ops::Range;
use std::sync::Arc;

use crate::block_cache::Block;
use crate::buffer::SeriesKey;

use super::steps::{Steps, Thinning};
use super::{SampleSink, SeriesSamples};

/// One file's or the buffer's samples of a series.
pub(super) enum Part {
    /// Decoded samples.
    Samples(SeriesSamples),
    /// The rows of blocks in the selection's range, all of them (copied once, when the
    /// series is put together).
    Blocks {
        key: Arc<SeriesKey>,
        blocks: Vec<(Arc<Block>, Range<usize>)>,
    },
}

impl Part {
    pub(super) fn key(&self) -> &Arc<SeriesKey> {
        match self {
            Part::Samples(s) => &s.key,
            Part::Blocks { key, .. } => key,
        }
    }

    /// The samples as slices of times and values, in order.
    pub(super) fn slices(&self) -> Box<dyn Iterator<Item = (&[i64], &[f64])> + '_> {
        match self {
            Part::Samples(s) => Box::new(std::iter::once((&s.times[..], &s.values[..]))),
            Part::Blocks { blocks, .. } => Box::new(
                blocks
                    .iter()
                    .map(|(b, rows)| (&b.times[rows.clone()], &b.values[rows.clone()])),
            ),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slices().map(|(times, _)| times.len()).sum()
    }

    pub(super) fn into_samples(self) -> SeriesSamples {
        match self {
            Part::Samples(s) => s,
            blocks => {
                let mut s = SeriesSamples::with_capacity(Arc::clone(blocks.key()), blocks.len());
                for (times, values) in blocks.slices() {
                    s.extend(times, values);
                }
                s
            }
        }
    }
}

/// One file's part of a series from its blocks: the samples in `[min_ns, max_ns]`, only
/// those the steps use.
pub(super) fn assemble(
    key: Arc<SeriesKey>,
    blocks: &[Arc<Block>],
    (min_ns, max_ns): (i64, i64),
    steps: Option<Steps>,
) -> Part {
    let in_range = |b: &Block| {
        let from = b.times.partition_point(|&t| t < min_ns);
        let to = b.times.partition_point(|&t| t <= max_ns);
        from..to.max(from)
    };
    let Some(steps) = steps else {
        let blocks = blocks
            .iter()
            .map(|b| (Arc::clone(b), in_range(b)))
            .filter(|(_, rows)| !rows.is_empty())
            .collect();
        return Part::Blocks { key, blocks };
    };
    let mut out = SeriesSamples {
        key,
        times: Vec::new(),
        values: Vec::new(),
    };
    let mut thinning = Thinning::new(steps);
    for block in blocks {
        let rows = in_range(block);
        let (times, values) = (&block.times[rows.clone()], &block.values[rows]);
        if steps.whole_windows {
            for window in thinning.windows(times) {
                out.times.extend_from_slice(&times[window.clone()]);
                out.values.extend_from_slice(&values[window]);
            }
        } else {
            thinning.push_sorted(times, values, &mut out);
        }
    }
    thinning.flush(&mut out);
    Part::Samples(out)
}
