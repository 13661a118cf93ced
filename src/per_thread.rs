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
//! (`engine::spare`). What every request reads under a lock (a registered
//! name's entry, the compile cache's module) is remembered per thread
//! ([`Memo`]), so that a hot lookup takes no lock every core writes.
//! What a thread uses again call after call (the module it called last,
//! the link graph it resolved last) it holds and lends ([`lend`]), so
//! that a hot call does not even write a reference count.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::LocalKey;

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

/// Answers a thread remembers, per memo.
const REMEMBERED: usize = 4;

/// The last few answers of a lookup made under a lock that every thread
/// takes (a read lock writes its lock word too), remembered by each
/// thread on a line of its own, and all forgotten at once whenever the
/// looked-up state changes.
///
/// A lookup reads the memo's version (a line no request writes while
/// nothing changes) and its own thread's answers; only a thread that
/// remembers nothing valid looks up under the shared lock. The owner calls
/// [`Memo::changed`] after every change, and a thread remembers an answer
/// under the version it read *before* looking it up: an answer looked up
/// across a change is then remembered under the older version, so it is
/// never taken for current.
pub struct Memo<K, V> {
    version: Padded<AtomicU64>,
    cells: Box<[Cell<K, V>; SHARDS]>,
}

/// One thread's answers, on a line of its own.
type Cell<K, V> = Padded<Mutex<Remembered<K, V>>>;

/// One thread's answers, all of one version, the newest last.
struct Remembered<K, V> {
    version: u64,
    answers: Vec<(K, V)>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            version: Padded::default(),
            cells: Box::new(std::array::from_fn(|_| {
                Padded(Mutex::new(Remembered {
                    version: 0,
                    answers: Vec::new(),
                }))
            })),
        }
    }
}

impl<K, V> Memo<K, V> {
    /// The answer for `key`: the one this thread remembers, if nothing has
    /// changed since and `usable` takes it (a `Weak` that still upgrades,
    /// say); else `look_up`'s, which gives the answer and what to remember
    /// of it, or `None` (nothing is remembered then). `key` is any form the
    /// memo's key borrows as (a `&str` for a `String`).
    pub fn answer<Q, T>(
        &self,
        key: &Q,
        usable: impl FnOnce(V) -> Option<T>,
        look_up: impl FnOnce() -> Option<(T, V)>,
    ) -> Option<T>
    where
        K: Borrow<Q>,
        Q: Eq + ToOwned<Owned = K> + ?Sized,
        V: Clone,
    {
        if let Some(answer) = self.recall(key).and_then(usable) {
            return Some(answer);
        }
        // Read before looking up (see the type's doc).
        let version = self.version();
        let (answer, kept) = look_up()?;
        self.remember(version, key.to_owned(), kept);
        Some(answer)
    }

    /// The answer this thread remembers for `key`, if nothing has changed
    /// since it was looked up.
    fn recall<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        V: Clone,
    {
        let now = self.version();
        let mut mine = self.mine();
        if mine.version != now {
            mine.answers.clear();
            mine.version = now;
            return None;
        }
        mine.answers
            .iter()
            .rev()
            .find(|(known, _)| known.borrow() == key)
            .map(|(_, value)| value.clone())
    }

    /// The version to remember an answer under: read it before looking
    /// the answer up. It changes whenever what the answers come from does.
    pub fn version(&self) -> u64 {
        self.version.0.load(Ordering::Acquire)
    }

    /// Remembers `value` for `key` in the calling thread's answers, if
    /// `version` (read before `value` was looked up) is still current.
    fn remember(&self, version: u64, key: K, value: V) {
        let mut mine = self.mine();
        if version < mine.version {
            return;
        }
        if version > mine.version {
            mine.answers.clear();
            mine.version = version;
        }
        if mine.answers.len() >= REMEMBERED {
            mine.answers.remove(0);
        }
        mine.answers.push((key, value));
    }

    /// Forgets every thread's answers: call it after each change to what
    /// the answers were looked up in, once the change is visible there.
    pub fn changed(&self) {
        self.version.0.fetch_add(1, Ordering::AcqRel);
    }

    fn mine(&self) -> MutexGuard<'_, Remembered<K, V>> {
        self.cells[shard()].0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a thread holds for its next call ([`lend`]): a value and the key
/// it was looked up under.
pub type Held<K, V> = RefCell<Option<(K, V)>>;

/// `f` of the value the calling thread holds in `slot`, if its key
/// `matches`; else of `look_up`'s, which the thread then holds instead,
/// under `key()`. `None` when `look_up` finds nothing (what was held
/// stays).
///
/// Lending writes nothing another core reads: no lock, and no reference
/// count (an `Arc` cloned for the call and dropped after it is two writes
/// to a line every core calling the same code writes). The key carries
/// whatever must not have changed since the lookup (a cache's version,
/// read before looking up), so a held value is never lent once it may be
/// stale. `f` runs while the value is borrowed: a lookup `f` makes in the
/// same slot is answered without holding what it finds.
pub fn lend<K, V, R>(
    slot: &'static LocalKey<Held<K, V>>,
    matches: impl FnOnce(&K) -> bool,
    key: impl FnOnce() -> K,
    look_up: impl FnOnce() -> Option<V>,
    f: impl FnOnce(&V) -> R,
) -> Option<R> {
    slot.try_with(|held| {
        if let Ok(slot) = held.try_borrow()
            && let Some((_, value)) = slot.as_ref().filter(|(k, _)| matches(k))
        {
            return Some(f(value));
        }
        let value = look_up()?;
        let answer = f(&value);
        if let Ok(mut slot) = held.try_borrow_mut() {
            *slot = Some((key(), value));
        }
        Some(answer)
    })
    .unwrap_or_else(|_| None)
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

    /// A thread recalls what it remembered until the memo changes, and
    /// an answer looked up across a change is never recalled.
    #[test]
    fn a_memo_forgets_at_a_change_what_was_looked_up_before_it() {
        let memo: Memo<Box<str>, u32> = Memo::default();
        assert_eq!(memo.recall("a"), None);
        let before = memo.version();
        memo.remember(before, "a".into(), 1);
        assert_eq!(memo.recall("a"), Some(1));
        assert_eq!(memo.recall("b"), None);

        memo.changed();
        assert_eq!(memo.recall("a"), None, "a change forgets every answer");
        // Looked up before the change, remembered after it: not recalled.
        memo.remember(before, "a".into(), 1);
        assert_eq!(memo.recall("a"), None);
        memo.remember(memo.version(), "a".into(), 2);
        assert_eq!(memo.recall("a"), Some(2));

        // Only the newest few answers are kept.
        let now = memo.version();
        for (i, key) in ["b", "c", "d", "e"].into_iter().enumerate() {
            memo.remember(now, key.into(), i as u32);
        }
        assert_eq!(memo.recall("a"), None, "the oldest of five answers is forgotten");
        assert_eq!(memo.recall("b"), Some(0));
        assert_eq!(memo.recall("e"), Some(3));

        // A thread of another shard remembers nothing of this thread's.
        let here = shard();
        std::thread::scope(|scope| {
            let memo = &memo;
            let elsewhere = (0..SHARDS)
                .map(|_| {
                    scope
                        .spawn(move || (shard() != here).then(|| memo.recall("e")))
                        .join()
                        .unwrap()
                })
                .find_map(|recalled| recalled)
                .expect("a thread of another shard");
            assert_eq!(elsewhere, None);
        });
        assert_eq!(memo.recall("e"), Some(3));
    }
}
