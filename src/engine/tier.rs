//! Which tier runs a module: the tier setting, and the record of modules
//! seen that decides when one is worth compiling.
//!
//! In `auto` mode a module's first call runs on the interpreter at once;
//! seen a second time, or after a first call that ran long (the interpreter
//! is several times slower than compiled code on CPU-heavy work), it is
//! compiled in the background (no call waits for it), and once compiled its
//! calls run compiled. Code seen once (a
//! playground's every edit, a grader's every submission) is never compiled
//! at all.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use lru::LruCache;

use super::compile::Sha256Digest;
use super::weighed::WeighedLru;

/// The `--tier` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TierMode {
    /// Interpret first calls, compile code seen again in the background.
    #[default]
    Auto,
    /// Always interpret what the interpreter can run (for tests and
    /// comparisons); never compile in the background.
    Interpreter,
    /// Always compile before running, as before the interpreter existed.
    Compiled,
}

/// Where a recently seen module stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Seen once, not compiled.
    Once,
    /// A background compile of it is running.
    Compiling,
}

/// Modules seen recently, by hash, and the background compiles running.
pub(crate) struct Sightings {
    seen: Mutex<LruCache<Sha256Digest, Seen>>,
    background: AtomicUsize,
    max_background: usize,
}

impl Sightings {
    pub(crate) fn new(entries: usize, max_background: usize) -> Self {
        Sightings {
            seen: Mutex::new(LruCache::new(
                NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN),
            )),
            background: AtomicUsize::new(0),
            max_background: max_background.max(1),
        }
    }

    /// Records a sighting of `sha`; `true` if it was seen before and a
    /// background compile should start now (the caller then calls
    /// [`Self::finished`] when it ends).
    pub(crate) fn seen_again(&self, sha: Sha256Digest) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&sha).copied() {
            None => {
                seen.put(sha, Seen::Once);
                false
            }
            Some(Seen::Once) => self.start(&mut seen, sha),
            Some(Seen::Compiling) => false,
        }
    }

    /// A call of `sha` ran long on the interpreter: `true` if a background
    /// compile should start now, without waiting for a second sighting.
    pub(crate) fn ran_long(&self, sha: Sha256Digest) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&sha).copied() {
            Some(Seen::Compiling) => false,
            _ => self.start(&mut seen, sha),
        }
    }

    /// Marks `sha` as compiling if fewer than the most background compiles
    /// run; otherwise it stays seen once, and a later sighting tries again.
    fn start(&self, seen: &mut LruCache<Sha256Digest, Seen>, sha: Sha256Digest) -> bool {
        if self.background.fetch_add(1, Ordering::Relaxed) >= self.max_background {
            self.background.fetch_sub(1, Ordering::Relaxed);
            seen.put(sha, Seen::Once);
            return false;
        }
        seen.put(sha, Seen::Compiling);
        true
    }

    /// The background compile of `sha` has ended: the compile cache has it
    /// now, or it failed and a later sighting may try again.
    pub(crate) fn finished(&self, sha: &Sha256Digest) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).pop(sha);
        self.background.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Code ready to run by its binary's hash, most recently used kept, bounded
/// in entries and in bytes: the interpreter's parsed modules, and compiled
/// components.
pub(crate) struct Parsed<T> {
    entries: Mutex<WeighedLru<Sha256Digest, T>>,
}

impl<T: Clone> Parsed<T> {
    pub(crate) fn new(entries: usize, bytes: usize) -> Self {
        Parsed {
            entries: Mutex::new(WeighedLru::new(entries, bytes)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WeighedLru<Sha256Digest, T>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `code`, which costs `weight` bytes to hold.
    pub(crate) fn put(&self, sha: Sha256Digest, code: T, weight: usize) {
        self.lock().put(sha, code, weight);
    }

    pub(crate) fn get(&self, sha: &Sha256Digest) -> Option<T> {
        self.lock().get(sha).cloned()
    }

    /// Keeps only the entries `keep` says yes to.
    pub(crate) fn retain(&self, keep: impl Fn(&T) -> bool) {
        self.lock().retain(keep);
    }
}
