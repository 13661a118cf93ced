//! Instances of stateless modules kept between one-shot calls.
//!
//! A one-shot call promises a fresh instance. For a module with nowhere to
//! keep state (`CompiledModule::stateless`: no memory, table, mutable
//! global, import, start function or GC type), an instance that has
//! finished a call, even a trapped one, is indistinguishable from a fresh
//! one, so a later call may take it instead of instantiating: that skips
//! making a store, allocating the instance in the pool, registering it and
//! tearing it all down again, about a tenth of a small request's work.
//!
//! The instances kept are bounded twice: [`PER_MODULE`] for one module
//! (about the number of calls of it running at once on a small server),
//! and [`IN_ALL`] for the process, since each holds one of the pooling
//! allocator's instance slots, which executions need.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::{Instance, Store};

use super::funcs::Funcs;
use super::store::StoreState;

/// Most instances kept for one module.
const PER_MODULE: usize = 4;

/// Most instances kept in the whole process (of the pool's 1,000 slots).
const IN_ALL: usize = 32;

/// Instances kept in the whole process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// A stateless module's instance between calls, with its store.
pub(crate) struct Spare {
    pub store: Store<StoreState>,
    pub root: Instance,
    /// The exports earlier calls looked up, valid as long as the store:
    /// the next call of the same function skips the lookup (and keeping
    /// its name).
    pub funcs: Funcs,
}

/// One module's kept instances.
#[derive(Default)]
pub(crate) struct Spares(Mutex<Vec<Spare>>);

impl Spares {
    /// A kept instance, if there is one.
    pub fn take(&self) -> Option<Spare> {
        let spare = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if spare.is_some() {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
        spare
    }

    /// Keeps an instance that has finished its call, if there is room;
    /// otherwise it is dropped (and its slot freed).
    pub fn keep(&self, spare: Spare) {
        let mut spares = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if spares.len() >= PER_MODULE {
            return;
        }
        if HELD.fetch_add(1, Ordering::Relaxed) >= IN_ALL {
            HELD.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        spares.push(spare);
    }
}

/// The module's kept instances go with it (when it leaves the compile
/// cache), and leave the process's count.
impl Drop for Spares {
    fn drop(&mut self) {
        let kept = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).len();
        HELD.fetch_sub(kept, Ordering::Relaxed);
    }
}
