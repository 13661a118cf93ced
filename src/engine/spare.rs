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
//! Kept per thread (`crate::per_thread`): a call takes an instance its
//! own thread kept, and keeps it there again. One list per module shared
//! by every thread (the first design) put a lock, and a process-wide
//! count, that every core writes twice per call on the path of every small
//! call; on eight cores those cache lines move between cores on nearly
//! every call. A thread without an instance of its own for a module takes
//! another thread's, and makes one (the usual path) only when no thread
//! keeps one, as a call did when the one list was empty.
//!
//! A module that imports only functions, from modules that keep nothing
//! either (`CompiledModule::stateless_when_linked`), is kept the same way
//! with the instances of its whole link graph, in one store: no instance
//! of the graph has anywhere to keep state. Such a spare remembers which
//! graph it was linked to (each host module's name and hash), and serves
//! only calls linking the same one: a host module registered again with
//! other code makes a different graph.
//!
//! The instances kept are bounded twice per thread: [`PER_MODULE`] spares
//! for one module (a thread runs one call at a time, a few more while
//! calls wait on their fibers), and [`PER_THREAD`] instances for all
//! modules (a linked spare holds one per module of its graph), since each
//! holds one of the pooling allocator's instance slots, which executions
//! need: at most [`SHARDS`] × [`PER_THREAD`] of its 1,000 slots, and in
//! practice the worker threads' share of that.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use wasmtime::{Instance, Store};

use super::funcs::Funcs;
use super::store::StoreState;
use crate::per_thread::{Padded, SHARDS, shard};

/// Most spares of one module a thread keeps.
const PER_MODULE: usize = 4;

/// Most instances a thread keeps, of all modules.
const PER_THREAD: usize = 8;

/// Instances kept, per thread.
static HELD: [Padded<AtomicUsize>; SHARDS] = [const { Padded(AtomicUsize::new(0)) }; SHARDS];

/// A stateless module's instance between calls, with its store (and the
/// instances of the host modules it links, in the same store).
pub(crate) struct Spare {
    pub store: Store<StoreState>,
    pub root: Instance,
    /// The exports earlier calls looked up, valid as long as the store:
    /// the next call of the same function skips the lookup (and keeping
    /// its name).
    pub funcs: Funcs,
    /// The host modules' instances by name, in link order; empty for a
    /// module that links nothing.
    pub hosts: Vec<(String, Instance)>,
    /// The SHA-256 of each host module, in the order of `hosts`: with
    /// their names, which graph the spare was linked to.
    pub graph: Box<[[u8; 32]]>,
}

impl Spare {
    /// The pooling allocator's instance slots it holds.
    fn instances(&self) -> usize {
        1 + self.hosts.len()
    }
}

/// One thread's kept instances of one module.
type List = Padded<Mutex<Vec<Spare>>>;

/// One module's kept instances, a list per thread; the lists are made at
/// the first instance kept (most modules, those with state, never keep
/// one).
#[derive(Default)]
pub(crate) struct Spares(OnceLock<Box<[List; SHARDS]>>);

impl Spares {
    /// An instance the calling thread kept, else one another thread kept
    /// (a thread's first call of the module, or one after a burst of its
    /// calls), so that an instance is made only when none is kept
    /// anywhere. Once each thread running the module's calls keeps its
    /// own, calls take from their own thread's list only.
    fn pop(&self) -> Option<Spare> {
        let lists = self.0.get()?;
        let mine = shard();
        if let Some(spare) = lock(&lists[mine].0).pop() {
            HELD[mine].0.fetch_sub(spare.instances(), Ordering::Relaxed);
            return Some(spare);
        }
        // Another thread's list in use now is passed over, not waited for.
        (1..SHARDS).map(|i| (mine + i) % SHARDS).find_map(|at| {
            let spare = lists[at].0.try_lock().ok()?.pop()?;
            HELD[at].0.fetch_sub(spare.instances(), Ordering::Relaxed);
            Some(spare)
        })
    }

    /// A kept instance linked as the call needs (`fits`: to the same host
    /// modules, or to none), taken as [`Self::pop`] says. One linked
    /// otherwise (a host module registered again since, or code sent with
    /// other host modules) is dropped instead: the module's calls now
    /// link otherwise, and it was kept for a graph that is gone.
    pub fn take(&self, fits: impl FnOnce(&Spare) -> bool) -> Option<Spare> {
        self.pop().filter(fits)
    }

    /// Keeps an instance that has finished its call, in the calling
    /// thread's list, if there is room; otherwise it is dropped (and its
    /// slot freed).
    pub fn keep(&self, spare: Spare) {
        let at = shard();
        let lists = self
            .0
            .get_or_init(|| Box::new(std::array::from_fn(|_| Padded::default())));
        let mut spares = lock(&lists[at].0);
        if spares.len() >= PER_MODULE {
            return;
        }
        let instances = spare.instances();
        if HELD[at].0.fetch_add(instances, Ordering::Relaxed) + instances > PER_THREAD {
            HELD[at].0.fetch_sub(instances, Ordering::Relaxed);
            return;
        }
        spares.push(spare);
    }
}

/// Locks one thread's list, also after a panic elsewhere (a list of
/// instances that finished their calls stays valid).
fn lock(list: &Mutex<Vec<Spare>>) -> MutexGuard<'_, Vec<Spare>> {
    list.lock().unwrap_or_else(|p| p.into_inner())
}

/// The module's kept instances go with it (when it leaves the compile
/// cache), and leave their threads' counts.
impl Drop for Spares {
    fn drop(&mut self) {
        let Some(lists) = self.0.get_mut() else { return };
        for (at, list) in lists.iter_mut().enumerate() {
            let list = list.0.get_mut().unwrap_or_else(|p| p.into_inner());
            let kept: usize = list.iter().map(Spare::instances).sum();
            HELD[at].0.fetch_sub(kept, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::limits::ExecLimits;

    /// For a call of a module that links nothing.
    fn unlinked(spare: &Spare) -> bool {
        spare.hosts.is_empty()
    }

    /// A stateless instance of an empty module, as a call leaves it.
    fn spare(engine: &wasmtime::Engine, module: &wasmtime::Module) -> Spare {
        let limits = ExecLimits {
            fuel: 1,
            timeout_ms: 1,
            memory_bytes: 0,
            table_elements: 0,
        };
        let mut store = super::super::store::new_store(engine, &limits, None);
        let root = Instance::new(&mut store, module, &[]).unwrap();
        Spare {
            store,
            root,
            funcs: Funcs::default(),
            hosts: Vec::new(),
            graph: Box::new([]),
        }
    }

    /// What a thread keeps it takes back, up to the bounds; a thread that
    /// kept none takes another thread's.
    #[test]
    fn a_thread_takes_back_what_it_kept_within_the_bounds() {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, b"\0asm\x01\0\0\0").unwrap();
        let modules: Vec<Spares> = (0..3).map(|_| Spares::default()).collect();
        assert!(modules[0].take(unlinked).is_none(), "nothing kept yet");
        for _ in 0..PER_MODULE + 1 {
            modules[0].keep(spare(&engine, &module));
        }
        // A thread of another shard (the next threads' shards differ from
        // this one's unless sixteen threads were handed one in between)
        // has none of its own, and takes one of this thread's.
        let mine = shard();
        let taken_elsewhere = std::thread::scope(|scope| {
            (0..64)
                .find_map(|_| {
                    let other = || (shard() != mine).then(|| modules[0].take(unlinked).is_some());
                    scope.spawn(other).join().unwrap()
                })
                .expect("a thread with another shard")
        });
        assert!(taken_elsewhere, "a thread with none of its own took none");
        let taken = std::iter::from_fn(|| modules[0].take(unlinked)).count();
        assert_eq!(taken, PER_MODULE - 1, "one module's instances kept by a thread");
        // Across modules, a thread keeps PER_THREAD at most.
        for spares in &modules {
            for _ in 0..PER_MODULE {
                spares.keep(spare(&engine, &module));
            }
        }
        let taken: usize = modules
            .iter()
            .map(|spares| std::iter::from_fn(|| spares.take(unlinked)).count())
            .sum();
        assert_eq!(taken, PER_THREAD, "instances kept by one thread, all modules");
        // Dropped with instances still kept, a module gives their count back.
        modules[1].keep(spare(&engine, &module));
        assert_eq!(HELD[mine].0.load(Ordering::Relaxed), 1);
        drop(modules);
        assert_eq!(HELD[mine].0.load(Ordering::Relaxed), 0);
    }

    /// A linked spare serves only the calls it fits, and counts each of
    /// its instances toward the thread's bound.
    #[test]
    fn a_linked_spare_serves_calls_it_fits_and_counts_its_instances() {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, b"\0asm\x01\0\0\0").unwrap();
        let linked = |hosts: &[(&str, u8)]| {
            let mut spare = spare(&engine, &module);
            for (name, _) in hosts {
                let host = Instance::new(&mut spare.store, &module, &[]).unwrap();
                spare.hosts.push((name.to_string(), host));
            }
            spare.graph = hosts.iter().map(|(_, code)| [*code; 32]).collect();
            spare
        };
        let held = || HELD[shard()].0.load(Ordering::Relaxed);
        let spares = Spares::default();
        spares.keep(linked(&[("utils", 1)]));
        assert_eq!(held(), 2, "the root's instance and its host's");
        // Taken for a call it does not fit, it is dropped, and its count goes.
        assert!(spares.take(unlinked).is_none());
        assert_eq!(held(), 0);
        spares.keep(linked(&[("utils", 1)]));
        let fits = |spare: &Spare| spare.graph[..] == [[1; 32]];
        assert!(spares.take(fits).is_some_and(|s| s.hosts[0].0 == "utils"));

        // Three instances each: two fit in a thread's bound, a third does not.
        for _ in 0..3 {
            spares.keep(linked(&[("a", 1), ("b", 2)]));
        }
        assert_eq!(held(), 6);
        assert_eq!(std::iter::from_fn(|| spares.take(|_| true)).count(), 2);
        assert_eq!(held(), 0);
    }
}
