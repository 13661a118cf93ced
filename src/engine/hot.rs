//! The compiled module this thread called last, held for its next call.
//!
//! Why: a call finds its compiled module in the compile cache's per-thread
//! memo (`per_thread::Memo`), which keeps a `Weak` so that it keeps
//! nothing alive. Upgrading that `Weak` to an `Arc` for the call, and
//! dropping the `Arc` after it, are two writes to the module's count, a
//! cache line every core calling the module writes: on a 2-core machine
//! two threads calling one module made fewer calls together than one did
//! alone (docs/BENCHMARKS.md). A thread that calls the same module again
//! now borrows it from here, writing nothing another core reads.
//!
//! What it costs: each thread keeps one module alive (its compiled code
//! and spare instances) until it calls another one, or the compile cache
//! changes (an entry added or evicted, which the memo's version counts)
//! and the thread calls again. A module kept so after it left the cache
//! is still the right code for its digest, and is never handed out once
//! the cache has changed.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::compile::{CompiledModule, Sha256Digest};
use crate::per_thread::{self, Held};

/// What a held module must match to be lent: a module runs only in its
/// own engine's stores (and tests run several engines in one process),
/// and is lent only while the cache is at the version it was looked up
/// at.
#[derive(PartialEq, Eq)]
struct Key {
    engine: EngineId,
    version: u64,
    digest: Sha256Digest,
}

thread_local! {
    static HELD: Held<Key, Arc<CompiledModule>> = const { RefCell::new(None) };
}

/// A number unique to one engine in this process (an address could be
/// reused by a later engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EngineId(u64);

impl EngineId {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        EngineId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// `f` of the module `digest` of `engine`: the one this thread holds if it
/// matches and the cache is still at `version` (read before `look_up`
/// could run), else `look_up`'s, which this thread then holds instead.
/// `None` when `look_up` finds nothing.
///
/// `f` runs while the held module is borrowed; a lookup `f` makes on this
/// thread (none does today) is answered without holding what it finds.
pub(crate) fn with<R>(
    engine: EngineId,
    version: u64,
    digest: &Sha256Digest,
    look_up: impl FnOnce() -> Option<Arc<CompiledModule>>,
    f: impl FnOnce(&Arc<CompiledModule>) -> R,
) -> Option<R> {
    let key = || Key {
        engine,
        version,
        digest: *digest,
    };
    per_thread::lend(&HELD, |held| *held == key(), key, look_up, f)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::Arc;

    use super::{EngineId, with};
    use crate::engine::compile::{CompiledModule, returning};

    /// What [`with`] hands `f`, and whether it looked the module up.
    fn ask(
        engine: EngineId,
        version: u64,
        module: &Arc<CompiledModule>,
        looked_up: &Cell<u32>,
    ) -> Option<(Arc<CompiledModule>, usize)> {
        let look_up = || {
            looked_up.set(looked_up.get() + 1);
            Some(module.clone())
        };
        // The count as `f` sees it: a borrowed module is not counted again.
        with(engine, version, module.sha256(), look_up, |m| {
            (m.clone(), Arc::strong_count(m) - 1)
        })
    }

    #[test]
    fn a_thread_borrows_the_module_it_called_last_until_anything_changes() {
        let wasmtime = wasmtime::Engine::default();
        let (a, b) = (returning(&wasmtime, 1), returning(&wasmtime, 2));
        let (engine, other) = (EngineId::new(), EngineId::new());
        let looked_up = Cell::new(0);
        let (got, _) = ask(engine, 7, &a, &looked_up).unwrap();
        assert!(Arc::ptr_eq(&got, &a) && looked_up.get() == 1);
        drop(got);
        assert_eq!(Arc::strong_count(&a), 2, "held by this thread, and here");
        // Asked again: borrowed, neither looked up nor counted.
        let (got, counted) = ask(engine, 7, &a, &looked_up).unwrap();
        assert!(Arc::ptr_eq(&got, &a) && looked_up.get() == 1);
        assert_eq!(counted, 2, "the held module was cloned for the call, not lent");
        drop(got);
        // The cache changed, or another engine asks: looked up again.
        ask(engine, 8, &a, &looked_up).unwrap();
        assert_eq!(looked_up.get(), 2);
        ask(other, 8, &a, &looked_up).unwrap();
        assert_eq!(looked_up.get(), 3);
        // Another module: held instead, the first let go.
        ask(other, 8, &b, &looked_up).unwrap();
        assert_eq!(looked_up.get(), 4);
        assert_eq!((Arc::strong_count(&a), Arc::strong_count(&b)), (1, 2));
        // Nothing found: `f` is not called, nothing is held.
        let called = Cell::new(false);
        assert!(with(engine, 9, a.sha256(), || None, |_| called.set(true)).is_none());
        assert!(!called.get());
        assert_eq!(Arc::strong_count(&b), 2, "still held: a miss changes nothing");
    }
}
