//! Reading the wanted series' samples from the in-memory buffer's chunks, picked by each
//! chunk's series list.

use std::sync::Arc;

use arrow::array::Array;

use crate::buffer::{Chunk, SeriesKey};

use super::SeriesSamples;

/// The wanted series' samples of the buffered chunks (in write order). `keys` are the
/// series table's keys by id; `wanted` is asked once per series.
pub(super) fn read_buffer(
    chunks: &[Arc<Chunk>],
    keys: &[Arc<SeriesKey>],
    wanted: &(dyn Fn(&SeriesKey) -> bool + Send + Sync),
    min_ns: i64,
    max_ns: i64,
) -> Vec<SeriesSamples> {
    const UNSEEN: u32 = u32::MAX;
    const UNWANTED: u32 = u32::MAX - 1;
    let mut out: Vec<SeriesSamples> = Vec::new();
    // Series id → position in `out`, UNWANTED, or UNSEEN.
    let mut slots = vec![UNSEEN; keys.len()];
    for chunk in chunks {
        let local: Vec<u32> = chunk
            .series
            .iter()
            .map(|&id| {
                let Some(slot) = slots.get_mut(id as usize) else {
                    return UNWANTED;
                };
                if *slot == UNSEEN {
                    let key = &keys[id as usize];
                    *slot = if wanted(key) {
                        out.push(SeriesSamples {
                            key: Arc::clone(key),
                            times: Vec::new(),
                            values: Vec::new(),
                        });
                        (out.len() - 1) as u32
                    } else {
                        UNWANTED
                    };
                }
                *slot
            })
            .collect();
        if local.iter().all(|&slot| slot == UNWANTED) {
            continue;
        }
        let (times, values) = (&chunk.time, &chunk.value);
        for (row, key) in chunk.keys.values().iter().enumerate() {
            let slot = local[*key as usize];
            if slot == UNWANTED {
                continue;
            }
            let t = times.value(row);
            if t >= min_ns && t <= max_ns && values.is_valid(row) {
                let s = &mut out[slot as usize];
                s.times.push(t);
                s.values.push(values.value(row));
            }
        }
    }
    out
}
