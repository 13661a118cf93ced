//! Cells that each thread writes on a cache line of its own.
//!
//! Why: on one or two cores an atomic add or an uncontended lock on the
//! request path costs next to nothing; on eight, every request that
//! writes the same line (a counter, the lock of a shared list) first has
//! to take that line from the core that wrote it last, and those moves
//! add up to a share of a small call's work that grows with the cores.
//! So what every request writes is kept per thread ([`shard`]) and added
//! up, or looked through, only when someone reads it: `/metrics`
//! (`api::sharded`) and the instances kept between calls
//! (`engine::spare`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Cells per sharded value: a thread past this many shares a cell with
/// another (still correct, only contended again).
pub const SHARDS: usize = 16;

/// The shard of the calling thread, handed out in turn as threads first
/// ask, so that the runtime's few worker threads get a cell each.
pub fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.try_with(|shard| *shard).unwrap_or(0)
}

/// A value on a cache line (and its neighbour, which x86 fetches along)
/// of its own.
#[derive(Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// A `u64` total that threads add to in cells of their own.
#[derive(Default)]
pub struct Counter {
    cells: [Padded<AtomicU64>; SHARDS],
}

impl Counter {
    /// Adds `n` to the calling thread's cell; returns that cell's value
    /// before the add (not the total, which would read every cell).
    pub fn add(&self, n: u64) -> u64 {
        self.cells[shard()].0.fetch_add(n, Ordering::Relaxed)
    }

    /// Every cell added up.
    pub fn total(&self) -> u64 {
        self.cells
            .iter()
            .fold(0u64, |sum, cell| sum.wrapping_add(cell.0.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts from more threads than there are shards add up.
    #[test]
    fn a_counter_adds_up_every_thread_s_counts() {
        let counter = Counter::default();
        let threads = SHARDS as u64 + 3;
        std::thread::scope(|scope| {
            for t in 0..threads {
                let counter = &counter;
                scope.spawn(move || {
                    for _ in 0..1000 {
                        counter.add(1);
                    }
                    counter.add(t);
                });
            }
        });
        assert_eq!(counter.total(), threads * 1000 + threads * (threads - 1) / 2);
    }

    /// A thread keeps its shard, whichever cell it is.
    #[test]
    fn a_thread_keeps_its_shard() {
        let first = shard();
        assert_eq!(shard(), first);
        assert!(first < SHARDS);
    }
}
