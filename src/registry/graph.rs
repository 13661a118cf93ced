//! The link graph this thread resolved last, held for its next call.
//!
//! Why: resolving a graph without awaiting walks the index (a set, a copy
//! of each name, read locks every core takes), takes each module from the
//! compile cache (a reference count every core calling it writes), and
//! the call then copies its direct hosts out of the graph: together 4.8%
//! of a call of the origin's linking example (docs/BENCHMARKS.md). A
//! thread that links the same hosts again borrows all of that from here.
//!
//! What it costs: as with `engine::hot`, each thread keeps one graph's
//! modules alive until it links other hosts, or the index or the compile
//! cache changes and it links again. A held graph is never lent once
//! either has changed.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::LinkedModule;
use crate::per_thread::{self, Held};

/// A link graph resolved without awaiting
/// ([`super::Registry::with_link_graph_now`]).
pub struct LinkGraph {
    /// Every module of the graph, each after all of its own host modules.
    pub modules: Vec<LinkedModule>,
    /// The host modules asked for, picked out of `modules`: what the
    /// importing module's imports are checked against.
    pub direct: Vec<LinkedModule>,
}

/// A number unique to one registry in this process (tests open several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RegistryId(u64);

impl RegistryId {
    pub(super) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        RegistryId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a held graph must match to be lent: the registry and the host
/// names it was resolved for, and the index's and the compile cache's
/// versions read before it was.
struct Key {
    registry: RegistryId,
    index: u64,
    cache: u64,
    hosts: Box<[String]>,
}

thread_local! {
    static HELD: Held<Key, LinkGraph> = const { RefCell::new(None) };
}

/// `f` of the graph of `hosts` in `registry`: the one this thread holds
/// if it matches, else `look_up`'s, which the thread then holds instead.
/// `index` and `cache` are the versions read before `look_up` could run.
pub(super) fn with<R>(
    registry: RegistryId,
    (index, cache): (u64, u64),
    hosts: &[String],
    look_up: impl FnOnce() -> Option<LinkGraph>,
    f: impl FnOnce(&LinkGraph) -> R,
) -> Option<R> {
    per_thread::lend(
        &HELD,
        |held| held.registry == registry && held.index == index && held.cache == cache && *held.hosts == *hosts,
        || Key {
            registry,
            index,
            cache,
            hosts: hosts.into(),
        },
        look_up,
        f,
    )
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::Arc;

    use super::{LinkGraph, RegistryId, with};
    use crate::engine::LinkedModule;
    use crate::engine::compile::returning;

    fn graph_of(name: &str, module: &Arc<crate::engine::CompiledModule>) -> LinkGraph {
        let linked = LinkedModule {
            name: name.to_string(),
            compiled: module.clone(),
        };
        LinkGraph {
            modules: vec![linked.clone()],
            direct: vec![linked],
        }
    }

    #[test]
    fn a_thread_borrows_the_graph_it_linked_last_until_anything_changes() {
        let wasmtime = wasmtime::Engine::default();
        let (a, b) = (returning(&wasmtime, 1), returning(&wasmtime, 2));
        let (registry, other) = (RegistryId::new(), RegistryId::new());
        let hosts = ["utils".to_string()];
        let looked_up = Cell::new(0);
        // What `f` sees: the graph's module, and whether it was a lookup.
        let ask = |registry, versions, hosts: &[String], module: &Arc<_>| {
            let look_up = || {
                looked_up.set(looked_up.get() + 1);
                Some(graph_of(&hosts[0], module))
            };
            with(registry, versions, hosts, look_up, |g: &LinkGraph| {
                g.modules[0].compiled.clone()
            })
            .unwrap()
        };

        let got = ask(registry, (1, 1), &hosts, &a);
        assert!(Arc::ptr_eq(&got, &a) && looked_up.get() == 1);
        drop(got);
        assert_eq!(
            Arc::strong_count(&a),
            3,
            "held twice (graph and direct hosts), and here"
        );
        // Asked again: lent, not looked up (even if the lookup would find
        // other code: nothing says it changed).
        let got = ask(registry, (1, 1), &hosts, &b);
        assert!(Arc::ptr_eq(&got, &a) && looked_up.get() == 1);
        drop(got);
        // The index changed, the cache changed, other hosts, another
        // registry: each is looked up again, and held instead.
        for (n, (registry, versions, name)) in [
            (registry, (2, 1), "utils"),
            (registry, (2, 2), "utils"),
            (registry, (2, 2), "other"),
            (other, (2, 2), "other"),
        ]
        .into_iter()
        .enumerate()
        {
            let got = ask(registry, versions, &[name.to_string()], &b);
            assert!(Arc::ptr_eq(&got, &b) && looked_up.get() == n + 2, "{n}");
        }
        assert_eq!(Arc::strong_count(&a), 1, "let go once another graph is held");
        // Nothing found: `f` is not called, and what was held stays.
        let called = Cell::new(false);
        assert!(with(registry, (3, 3), &hosts, || None, |_| called.set(true)).is_none());
        assert!(!called.get());
        assert_eq!(Arc::strong_count(&b), 3);
    }
}
