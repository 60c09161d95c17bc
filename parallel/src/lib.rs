//! Work over series shared out between threads: [`in_parallel`], with the number of cores
//! read once ([`cores`]). The store uses it to assemble selected series, PromQL to evaluate
//! range functions over them.
//!
//! Its own crate, with no dependencies, so that every crate that works over series can use
//! it without pulling in another's dependencies: PromQL without the store (what its fuzz
//! target builds) stays free of DataFusion, and `exawatch-protocol` stays codecs only.

use std::sync::LazyLock;

/// Samples below which [`in_parallel`] stays on one thread: starting threads costs more than
/// sharing out less work saves.
pub const PARALLEL_SAMPLES: usize = 256 * 1024;

/// Cores this process may use, read once: the standard library reads the cgroup's quota
/// from files each time it is asked.
static CORES: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(1, usize::from));

/// Cores this process may use (at least 1).
pub fn cores() -> usize {
    *CORES
}

/// `f` of each of `items`, in order; shared out between threads (contiguous shares, one
/// per core at most) when `samples`, the samples they hold, are worth it
/// (one thread per [`PARALLEL_SAMPLES`]).
pub fn in_parallel<T: Send, U: Send>(
    items: Vec<T>,
    samples: usize,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let threads = cores().min(items.len()).min(samples / PARALLEL_SAMPLES + 1);
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut items = items.into_iter();
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = std::iter::from_fn(|| {
            let share: Vec<T> = items.by_ref().take(per_thread).collect();
            (!share.is_empty()).then(|| scope.spawn(move || share.into_iter().map(f).collect()))
        })
        .collect();
        handles
            .into_iter()
            .flat_map(|h| -> Vec<U> { h.join().expect("a worker thread panicked") })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_on_one_thread_and_on_many() {
        let items: Vec<usize> = (0..1000).collect();
        let expected: Vec<usize> = items.iter().map(|i| i * 2).collect();
        assert_eq!(in_parallel(items.clone(), 0, |i| i * 2), expected);
        assert_eq!(
            in_parallel(items, 64 * PARALLEL_SAMPLES, |i| i * 2),
            expected
        );
        assert!(in_parallel(Vec::<u8>::new(), usize::MAX, |i| i).is_empty());
    }
}
