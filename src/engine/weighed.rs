//! A least-recently-used map bounded twice: in entries and in bytes.
//!
//! A bound in entries alone does not bound memory when entries differ in
//! size by five orders of magnitude: 1,024 compiled one-function modules
//! take a few megabytes, 1,024 compiled 30 MB programs take tens of
//! gigabytes. Each entry is weighed once, when it is put in; the map drops
//! the least recently used entries until both bounds hold again, except
//! the entry just put in, which stays even when it alone is over the byte
//! bound (the caller is about to use it; the next insertion drops it).

use std::hash::Hash;
use std::num::NonZeroUsize;

use lru::LruCache;

pub(crate) struct WeighedLru<K, V> {
    entries: LruCache<K, (V, usize)>,
    bytes: usize,
    max_bytes: usize,
}

impl<K: Hash + Eq + Copy, V> WeighedLru<K, V> {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        WeighedLru {
            entries: LruCache::new(NonZeroUsize::new(max_entries.max(1)).unwrap_or(NonZeroUsize::MIN)),
            bytes: 0,
            max_bytes,
        }
    }

    /// The entry under `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(value, _)| value)
    }

    /// Puts `value`, of `weight` bytes, under `key` (replacing what was
    /// there) and drops least recently used entries until the bounds hold.
    pub(crate) fn put(&mut self, key: K, value: V, weight: usize) {
        // `push` hands back the entry it replaced or the one it dropped to
        // stay within the entry bound.
        if let Some((_, (_, dropped))) = self.entries.push(key, (value, weight)) {
            self.bytes -= dropped;
        }
        self.bytes += weight;
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            match self.entries.pop_lru() {
                Some((_, (_, dropped))) => self.bytes -= dropped,
                None => break,
            }
        }
    }

    /// Takes the entry under `key` out.
    pub(crate) fn pop(&mut self, key: &K) -> Option<V> {
        let (value, weight) = self.entries.pop(key)?;
        self.bytes -= weight;
        Some(value)
    }

    /// Keeps only the entries `keep` says yes to.
    pub(crate) fn retain(&mut self, keep: impl Fn(&V) -> bool) {
        let dropped: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, (value, _))| !keep(value))
            .map(|(key, _)| *key)
            .collect();
        for key in dropped {
            self.pop(&key);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// What the entries held now weigh together.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::WeighedLru;

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn drops_the_least_recently_used_past_the_byte_bound() {
        let mut lru = WeighedLru::new(100, 10);
        lru.put(key(1), "a", 4);
        lru.put(key(2), "b", 4);
        assert_eq!(lru.get(&key(1)), Some(&"a"));
        lru.put(key(3), "c", 4);
        // 12 bytes > 10: the least recently used (2, since 1 was read) goes.
        assert_eq!(lru.get(&key(2)), None);
        assert_eq!(lru.get(&key(1)), Some(&"a"));
        assert_eq!(lru.get(&key(3)), Some(&"c"));
        assert_eq!((lru.len(), lru.bytes()), (2, 8));
    }

    #[test]
    fn the_entry_bound_still_holds_and_its_bytes_are_given_back() {
        let mut lru = WeighedLru::new(2, 1_000);
        lru.put(key(1), 1, 100);
        lru.put(key(2), 2, 200);
        lru.put(key(3), 3, 300);
        assert_eq!(lru.get(&key(1)), None);
        assert_eq!((lru.len(), lru.bytes()), (2, 500));
    }

    #[test]
    fn an_entry_over_the_bound_alone_stays_until_the_next_one() {
        let mut lru = WeighedLru::new(10, 10);
        lru.put(key(1), 1, 4);
        lru.put(key(2), 2, 50);
        assert_eq!((lru.len(), lru.bytes()), (1, 50));
        assert_eq!(lru.get(&key(2)), Some(&2));
        lru.put(key(3), 3, 4);
        assert_eq!((lru.len(), lru.bytes()), (1, 4));
        assert_eq!(lru.get(&key(3)), Some(&3));
    }

    #[test]
    fn replacing_an_entry_and_taking_one_out_keep_the_sum_right() {
        let mut lru = WeighedLru::new(10, 100);
        lru.put(key(1), 1, 30);
        lru.put(key(1), 2, 20);
        assert_eq!((lru.len(), lru.bytes()), (1, 20));
        lru.put(key(2), 3, 5);
        assert_eq!(lru.pop(&key(1)), Some(2));
        assert_eq!((lru.len(), lru.bytes()), (1, 5));
        lru.retain(|value| *value != 3);
        assert_eq!((lru.len(), lru.bytes()), (0, 0));
    }
}
