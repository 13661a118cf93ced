//! The hashes of small inline modules, remembered by each thread.
//!
//! Why: a cached inline call (`POST /` with code the compile cache holds)
//! finds its module by the SHA-256 of the bytes it was sent. On a CPU
//! without SHA instructions that hash is the largest single step of the
//! call: about 3,500 instructions for a 41-byte module, a tenth of the
//! whole request (callgrind, whose CPU model has no SHA extensions). A
//! thread that was sent the same bytes lately compares them instead, a
//! few dozen instructions. The answer is the hash of the bytes, whatever
//! the cache holds, so nothing here goes stale; it is only remembered for
//! code that hit the cache, so a flood of never-seen modules writes
//! nothing here.

use std::cell::RefCell;

use super::compile::{Sha256Digest, sha256};

/// Modules larger than this are hashed every time: comparing them costs
/// less than hashing, but each thread would keep a copy.
const MAX_BYTES: usize = 4096;

/// Modules each thread remembers.
const REMEMBERED: usize = 4;

thread_local! {
    static RECENT: RefCell<Recent> = const { RefCell::new(Recent { entries: Vec::new(), next: 0 }) };
}

/// A thread's last few modules and their hashes, replaced in turn.
struct Recent {
    entries: Vec<(Box<[u8]>, Sha256Digest)>,
    next: usize,
}

/// The hash of `wasm` if this thread remembers it.
fn recall(wasm: &[u8]) -> Option<Sha256Digest> {
    if wasm.len() > MAX_BYTES {
        return None;
    }
    RECENT
        .try_with(|recent| {
            let recent = recent.borrow();
            recent
                .entries
                .iter()
                .find(|(bytes, _)| **bytes == *wasm)
                .map(|(_, sha)| *sha)
        })
        .ok()
        .flatten()
}

/// Remembers that `wasm` hashes to `sha` (which the caller worked out
/// with [`sha256`]), replacing the entry remembered longest.
pub(crate) fn remember(wasm: &[u8], sha: Sha256Digest) {
    if wasm.len() > MAX_BYTES {
        return;
    }
    let _ = RECENT.try_with(|recent| {
        let mut recent = recent.borrow_mut();
        let entry = (Box::<[u8]>::from(wasm), sha);
        if recent.entries.len() < REMEMBERED {
            recent.entries.push(entry);
        } else {
            let next = recent.next;
            recent.entries[next] = entry;
            recent.next = (next + 1) % REMEMBERED;
        }
    });
}

/// The hash of `wasm`: remembered, or worked out (and then not
/// remembered: see [`remember`]). Whether it was remembered is the second
/// value.
pub(crate) fn hash(wasm: &[u8]) -> (Sha256Digest, bool) {
    match recall(wasm) {
        Some(sha) => (sha, true),
        None => (sha256(wasm), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remembered hash is the bytes' own; only the last few small
    /// modules are remembered, and bytes that differ in one place are not
    /// taken for them.
    #[test]
    fn remembers_the_last_few_small_modules_by_their_bytes() {
        let modules: Vec<Vec<u8>> = (0..=REMEMBERED as u8).map(|n| vec![n; 41]).collect();
        for wasm in &modules {
            assert_eq!(hash(wasm), (sha256(wasm), false));
            remember(wasm, sha256(wasm));
        }
        // The first was replaced by the last; the others are recalled.
        assert_eq!(recall(&modules[0]), None);
        for wasm in &modules[1..] {
            assert_eq!(hash(wasm), (sha256(wasm), true));
        }
        let mut almost = modules[1].clone();
        almost[40] ^= 1;
        assert_eq!(recall(&almost), None);
        assert_eq!(recall(&modules[1][..40]), None);
        let large = vec![7u8; MAX_BYTES + 1];
        remember(&large, sha256(&large));
        assert_eq!(recall(&large), None);
    }
}
