//! Connection routers kept between connections.
//!
//! Each connection gets a router and a state count of its own
//! (`router::Api::connection`), so that the counts its requests write are
//! written by one core. Building one turns every route into a service
//! with its state: about 4 µs, five keep-alive `GET /healthz` requests'
//! worth, paid on every request by a client that opens a connection per
//! request (docs/BENCHMARKS.md, 2026-12-05). A router whose connection has
//! closed holds nothing of that connection (only a count no one else
//! wrote), so it is as good as a new one: it is kept for a later
//! connection instead of dropped.
//!
//! Kept per thread (`crate::per_thread`), as the spare instances are: a
//! connection ends on the worker that served it, and the next is accepted
//! on whichever worker runs the accept loop, which takes its own thread's
//! router first and another thread's when it has none.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;

use crate::per_thread::{Padded, SHARDS, shard};

/// Most routers one thread keeps: enough for a burst of short connections
/// closing on that worker, few enough that the pool's memory stays small
/// (a router is a few kilobytes of boxed services).
const PER_THREAD: usize = 8;

/// Routers kept for later connections, a list per thread.
pub struct RouterPool {
    lists: Box<[Padded<Mutex<Vec<Router>>>; SHARDS]>,
}

impl Default for RouterPool {
    fn default() -> Self {
        RouterPool {
            lists: Box::new(std::array::from_fn(|_| Padded(Mutex::new(Vec::new())))),
        }
    }
}

impl RouterPool {
    /// A kept router: this thread's if it has one, else another thread's.
    pub fn take(&self) -> Option<Router> {
        let mine = shard();
        (0..SHARDS).find_map(|offset| lock(&self.lists[(mine + offset) % SHARDS].0).pop())
    }

    /// Keeps `router` on this thread's list, unless the list is full.
    fn keep(&self, router: Router) {
        let mut list = lock(&self.lists[shard()].0);
        if list.len() < PER_THREAD {
            list.push(router);
        }
    }

    /// Routers kept now, on every thread.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lists.iter().map(|list| lock(&list.0).len()).sum()
    }
}

/// Locks a list, also after a panic elsewhere: a list of routers has no
/// state to break.
fn lock(list: &Mutex<Vec<Router>>) -> MutexGuard<'_, Vec<Router>> {
    list.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's router, given back to its pool when the connection
/// ends (when this is dropped).
pub struct LentRouter {
    router: Option<Router>,
    pool: Arc<RouterPool>,
}

impl LentRouter {
    pub fn new(router: Router, pool: Arc<RouterPool>) -> Self {
        LentRouter {
            router: Some(router),
            pool,
        }
    }
}

impl Drop for LentRouter {
    fn drop(&mut self) {
        if let Some(router) = self.router.take() {
            self.pool.keep(router);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_router_given_back_is_taken_again_and_the_pool_is_bounded() {
        let pool = Arc::new(RouterPool::default());
        assert!(pool.take().is_none());
        let lent: Vec<_> = (0..PER_THREAD + 3)
            .map(|_| LentRouter::new(Router::new(), pool.clone()))
            .collect();
        assert_eq!(pool.len(), 0, "a router lent out is not kept");
        drop(lent);
        assert_eq!(pool.len(), PER_THREAD, "a thread keeps at most PER_THREAD routers");
        assert!(pool.take().is_some());
        assert_eq!(pool.len(), PER_THREAD - 1);
    }

    #[test]
    fn a_thread_without_routers_takes_another_threads() {
        let pool = Arc::new(RouterPool::default());
        let elsewhere = pool.clone();
        std::thread::spawn(move || drop(LentRouter::new(Router::new(), elsewhere)))
            .join()
            .unwrap();
        assert_eq!(pool.len(), 1);
        assert!(pool.take().is_some(), "the other thread's router is taken");
        assert_eq!(pool.len(), 0);
    }
}
