//! Decoded blocks of files, kept for later selections.
//!
//! A block is [`MARK_ROWS`](crate::series_index::MARK_ROWS) rows of one series' run in one
//! file (the unit a selection reads, see [`crate::series_index`]), decoded to times and float
//! values. Files never change, so a block stays valid while its file is in the catalog.
//! Dashboards ask for the same recent series over and over; from the cache such a query
//! costs an index lookup and a copy instead of reading, decompressing and decoding pages.
//! The cache is bounded in bytes (`store.read_cache_mib`); when full, the blocks used least
//! recently go first.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// The decoded samples of one block (text samples left out), times ascending.
#[derive(Debug, Default)]
pub(crate) struct Block {
    pub(crate) times: Vec<i64>,
    pub(crate) values: Vec<f64>,
}

impl Block {
    /// Memory the block holds, as the cache counts it.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.times.capacity() * 8 + self.values.capacity() * 8
    }
}

/// A block's place: the file (its number in this process), the series' position in the
/// file's index, and the block's number within the series' run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BlockKey {
    pub(crate) file: u64,
    pub(crate) series: u32,
    pub(crate) block: u32,
}

/// The cache: at most `budget` bytes of blocks.
#[derive(Debug)]
pub(crate) struct BlockCache {
    budget: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each block with the tick of its last use.
    blocks: HashMap<BlockKey, (Arc<Block>, u64)>,
    bytes: usize,
    tick: u64,
}

/// What a selection found in the cache for one run of blocks.
pub(crate) enum Lookup {
    /// Every block, in order.
    Hit(Vec<Arc<Block>>),
    /// At least one block is missing: the run is read.
    Miss,
}

impl BlockCache {
    /// A cache of at most `budget` bytes (0: nothing is kept).
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::new(State::default()),
        }
    }

    /// The blocks `blocks` of `series` in `file`, if all are cached.
    pub(crate) fn get(&self, file: u64, series: u32, blocks: std::ops::Range<u32>) -> Lookup {
        if self.budget == 0 {
            return Lookup::Miss;
        }
        let mut state = self.state.lock();
        state.tick += 1;
        let tick = state.tick;
        let mut found = Vec::with_capacity(blocks.len());
        for block in blocks {
            match state.blocks.get_mut(&BlockKey {
                file,
                series,
                block,
            }) {
                Some((cached, used)) => {
                    *used = tick;
                    found.push(Arc::clone(cached));
                }
                None => return Lookup::Miss,
            }
        }
        Lookup::Hit(found)
    }

    /// Whether blocks of about `bytes` are worth keeping: at most a quarter of the budget,
    /// so that one large scan does not push out everything else.
    pub(crate) fn would_keep(&self, bytes: usize) -> bool {
        bytes <= self.budget / 4
    }

    /// Keeps blocks just read; when over budget, drops the least recently used quarter.
    pub(crate) fn insert(&self, blocks: impl IntoIterator<Item = (BlockKey, Arc<Block>)>) {
        if self.budget == 0 {
            return;
        }
        let mut state = self.state.lock();
        state.tick += 1;
        let tick = state.tick;
        for (key, block) in blocks {
            let bytes = block.bytes();
            if let Some((old, _)) = state.blocks.insert(key, (block, tick)) {
                state.bytes -= old.bytes();
            }
            state.bytes += bytes;
        }
        if state.bytes > self.budget {
            state.evict(self.budget / 4 * 3);
        }
    }

    /// Drops the blocks of files no longer read (compacted or expired).
    pub(crate) fn forget_files(&self, files: &[u64]) {
        if files.is_empty() {
            return;
        }
        let mut state = self.state.lock();
        let mut freed = 0;
        state.blocks.retain(|key, (block, _)| {
            let keep = !files.contains(&key.file);
            if !keep {
                freed += block.bytes();
            }
            keep
        });
        state.bytes -= freed;
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

impl State {
    /// Drops the least recently used blocks until at most `target` bytes are held.
    fn evict(&mut self, target: usize) {
        let mut by_age: Vec<(u64, BlockKey, usize)> = self
            .blocks
            .iter()
            .map(|(key, (block, used))| (*used, *key, block.bytes()))
            .collect();
        by_age.sort_unstable_by_key(|(used, _, _)| *used);
        for (_, key, bytes) in by_age {
            if self.bytes <= target {
                break;
            }
            self.blocks.remove(&key);
            self.bytes -= bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(samples: usize) -> Arc<Block> {
        Arc::new(Block {
            times: (0..samples as i64).collect(),
            values: vec![1.0; samples],
        })
    }

    fn key(file: u64, block: u32) -> BlockKey {
        BlockKey {
            file,
            series: 0,
            block,
        }
    }

    #[test]
    fn a_run_hits_only_when_every_block_is_cached() {
        let cache = BlockCache::new(1 << 20);
        cache.insert([(key(1, 0), block(10)), (key(1, 1), block(5))]);
        match cache.get(1, 0, 0..2) {
            Lookup::Hit(blocks) => {
                assert_eq!(
                    blocks.iter().map(|b| b.times.len()).collect::<Vec<_>>(),
                    [10, 5]
                );
            }
            Lookup::Miss => panic!("both blocks are cached"),
        }
        assert!(matches!(cache.get(1, 0, 0..3), Lookup::Miss));
        assert!(matches!(cache.get(2, 0, 0..1), Lookup::Miss));
        // A read of more than a quarter of the budget is not kept.
        assert!(cache.would_keep(1 << 18));
        assert!(!cache.would_keep((1 << 18) + 1));
    }

    #[test]
    fn the_least_recently_used_blocks_go_first_and_forgotten_files_free_their_bytes() {
        let one = block(1000).bytes();
        let cache = BlockCache::new(one * 4);
        for b in 0..4 {
            cache.insert([(key(1, b), block(1000))]);
        }
        // Block 0 used again: block 1 is now the oldest.
        assert!(matches!(cache.get(1, 0, 0..1), Lookup::Hit(_)));
        cache.insert([(key(1, 4), block(1000))]);
        assert!(cache.bytes() <= one * 3);
        assert!(matches!(cache.get(1, 0, 0..1), Lookup::Hit(_)));
        assert!(matches!(cache.get(1, 0, 3..5), Lookup::Hit(_)));
        assert!(matches!(cache.get(1, 0, 1..2), Lookup::Miss));
        assert!(matches!(cache.get(1, 0, 2..3), Lookup::Miss));
        cache.forget_files(&[1]);
        assert_eq!(cache.bytes(), 0);
        assert!(matches!(cache.get(1, 0, 0..1), Lookup::Miss));
    }

    #[test]
    fn a_cache_without_budget_keeps_nothing() {
        let cache = BlockCache::new(0);
        cache.insert([(key(1, 0), block(10))]);
        assert!(matches!(cache.get(1, 0, 0..1), Lookup::Miss));
        assert_eq!(cache.bytes(), 0);
    }
}
