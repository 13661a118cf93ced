//! The interpreter's wasmi engines, one generation at a time.
//!
//! A wasmi `Engine` keeps every function of every module parsed in it, as
//! bytes to translate or as translated code, until the engine itself is
//! dropped: dropping a `Module` frees none of it. One engine for the life
//! of the server would so grow with every never-seen module a client
//! sends, which is a way to run the server out of memory. Instead an
//! engine parses only so many bytes; then a new one takes over for the
//! modules parsed after, and the old one is freed when the last module,
//! store and instance made in it are gone (a call in flight, a live
//! instance, a parsed registered module the engine has not let go of yet).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a module is charged beside its bytes: the engine's entries for it
/// (its functions, its types) outweigh a tiny module's bytes.
const MODULE_WEIGHT: usize = 512;

/// One wasmi engine and the linker defined in it (WASI's functions).
pub(crate) struct Generation<T> {
    pub(crate) engine: wasmi::Engine,
    pub(crate) linker: wasmi::Linker<T>,
    /// Bytes charged to this engine so far (see [`Engines::charge`]).
    charged: AtomicUsize,
}

/// The engine new modules are parsed in, replaced by a fresh one once it
/// has been charged `budget` bytes.
pub(crate) struct Engines<T> {
    config: wasmi::Config,
    /// Defines the host functions every generation's linker provides.
    define: fn(&mut wasmi::Linker<T>),
    budget: usize,
    current: Mutex<Arc<Generation<T>>>,
    /// Set when a generation is retired, until [`Self::take_retired`].
    retired: AtomicBool,
}

impl<T> Engines<T> {
    pub(crate) fn new(config: wasmi::Config, define: fn(&mut wasmi::Linker<T>), budget: usize) -> Self {
        let first = Self::generation(&config, define);
        Engines {
            config,
            define,
            budget,
            current: Mutex::new(Arc::new(first)),
            retired: AtomicBool::new(false),
        }
    }

    fn generation(config: &wasmi::Config, define: fn(&mut wasmi::Linker<T>)) -> Generation<T> {
        let engine = wasmi::Engine::new(config);
        let mut linker = wasmi::Linker::new(&engine);
        define(&mut linker);
        Generation {
            engine,
            linker,
            charged: AtomicUsize::new(0),
        }
    }

    /// The generation new modules are parsed in.
    pub(crate) fn current(&self) -> Arc<Generation<T>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `generation` is the one new modules are parsed in.
    pub(crate) fn is_current(&self, generation: &Arc<Generation<T>>) -> bool {
        Arc::ptr_eq(&self.current.lock().unwrap_or_else(|p| p.into_inner()), generation)
    }

    /// Charges `generation` for a module of `bytes` parsed in it (whether
    /// or not the parse succeeded: a refused module may have left entries
    /// too), and retires it if that takes it past the budget. The one
    /// charge that crosses the budget makes the new generation, outside
    /// the lock.
    pub(crate) fn charge(&self, generation: &Arc<Generation<T>>, bytes: usize) {
        let weight = bytes.saturating_add(MODULE_WEIGHT);
        let before = generation.charged.fetch_add(weight, Ordering::Relaxed);
        if before < self.budget && before.saturating_add(weight) >= self.budget {
            let next = Arc::new(Self::generation(&self.config, self.define));
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::ptr_eq(&current, generation) {
                *current = next;
                self.retired.store(true, Ordering::Release);
                tracing::debug!(charged = before + weight, "a new interpreter engine takes over");
            }
        }
    }

    /// Whether a generation was retired since the last call: whoever keeps
    /// modules parsed in one should let go of them so that it can be freed.
    pub(crate) fn take_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed) && self.retired.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines(budget: usize) -> Engines<()> {
        Engines::new(wasmi::Config::default(), |_| {}, budget)
    }

    /// A valid module with one function returning `n`, so that each is new.
    fn module(n: i32) -> Vec<u8> {
        wat::parse_str(format!("(module (func (export \"f\") (result i32) i32.const {n}))")).unwrap()
    }

    /// Parses `wasm` in the current generation and charges for it.
    fn parse(engines: &Engines<()>, wasm: &[u8]) -> (wasmi::Module, Arc<Generation<()>>) {
        let generation = engines.current();
        let parsed = wasmi::Module::new(&generation.engine, wasm).unwrap();
        engines.charge(&generation, wasm.len());
        (parsed, generation)
    }

    #[test]
    fn an_engine_is_replaced_once_its_budget_is_spent_and_freed_once_unused() {
        let budget = 4 * (MODULE_WEIGHT + 64);
        let engines = engines(budget);
        let first = engines.current();
        let mut kept = Vec::new();
        let mut n = 0;
        while engines.is_current(&first) {
            kept.push(parse(&engines, &module(n)));
            n += 1;
            assert!(n < 100, "the first engine was never retired");
        }
        assert!(engines.take_retired(), "the retirement is reported");
        assert!(!engines.take_retired(), "and reported once");
        let spent = first.charged.load(Ordering::Relaxed);
        assert!(spent >= budget && spent < budget + MODULE_WEIGHT + 64, "{spent}");

        // Modules parsed now land in the new engine.
        let (_, second) = parse(&engines, &module(n));
        assert!(Arc::ptr_eq(&second, &engines.current()));
        assert!(!wasmi::Engine::same(&first.engine, &second.engine));

        // The old engine lives while anything made in it does, no longer.
        let old = Arc::downgrade(&first);
        let old_engine = first.engine.weak();
        drop(first);
        assert!(old.upgrade().is_some(), "the kept modules hold it");
        kept.clear();
        assert!(old.upgrade().is_none(), "nothing holds the old generation");
        assert!(old_engine.upgrade().is_none(), "nothing holds the old wasmi engine");
    }

    #[test]
    fn a_late_charge_to_a_retired_engine_retires_nothing_else() {
        let engines = engines(MODULE_WEIGHT + 8);
        let first = engines.current();
        engines.charge(&first, 8);
        assert!(engines.take_retired());
        let second = engines.current();
        // A module parsed in the first engine before it was retired is
        // charged after: the second engine stays.
        engines.charge(&first, 8);
        assert!(engines.is_current(&second));
        assert!(!engines.take_retired());
    }
}
