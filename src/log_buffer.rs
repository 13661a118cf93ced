//! Log lines on their way to stdout: each thread appends to a buffer of its
//! own, and one flush takes them all and writes them out together, merged
//! back into time order.
//!
//! Why a buffer per thread: with one shared buffer, every request on every
//! core took the same lock and wrote into the same few cache lines, and a
//! buffer that had just been written out grew again from nothing, copying
//! itself under that lock, while every other thread that logged waited on
//! it. On one or two cores that costs little; on eight, one lock touched by
//! every request is where a server stops scaling. A thread's own buffer
//! behind its own lock is only ever contended by the flush, once every
//! [`FLUSH_EVERY`].
//!
//! Why merged: within one thread lines are in time order; across threads a
//! flush interleaves them by their timestamps, so whoever reads the log
//! sees one ordered stream, as with one buffer. Every line starts with a
//! fixed-width RFC 3339 timestamp in UTC (`telemetry::timestamp`), so byte
//! order is time order and the merge compares bytes. A line that does not
//! start with a timestamp (the rest of a message that spans lines) stays
//! with the line before it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How often buffered lines are written out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// A thread's buffer this large is written out at once, with all others,
/// by the thread that filled it.
pub const FLUSH_BYTES: usize = 256 * 1024;

/// `2026-11-30T12:00:00.123456Z`: the bytes of a line's timestamp.
const TIMESTAMP_LEN: usize = 27;

/// One thread's lines since the last flush.
#[derive(Default)]
struct Shard {
    lines: Mutex<Vec<u8>>,
}

impl Shard {
    /// Appends `bytes`; true when the buffer has grown past [`FLUSH_BYTES`].
    fn append(&self, bytes: &[u8]) -> bool {
        let mut lines = lock(&self.lines);
        lines.extend_from_slice(bytes);
        lines.len() >= FLUSH_BYTES
    }
}

/// Every thread's buffer, for the flush to visit. A thread that has ended
/// leaves its buffer here (held only by this list) until a flush has
/// emptied it.
static SHARDS: Mutex<Vec<Arc<Shard>>> = Mutex::new(Vec::new());

/// Lines logged by a thread whose own buffer is already gone (a line
/// logged by a thread-local's destructor as the thread ends).
static LATE: Shard = Shard {
    lines: Mutex::new(Vec::new()),
};

thread_local! {
    /// This thread's buffer, listed in [`SHARDS`] on first use.
    static MINE: Arc<Shard> = {
        let shard = Arc::new(Shard::default());
        lock(&SHARDS).push(shard.clone());
        shard
    };
}

/// The flush's own buffers, kept from one flush to the next so that none
/// of them grows from nothing again. Held for the whole of a flush, which
/// also keeps two flushes from writing their lines out of order.
struct Flushing {
    /// The buffers swapped out of the shards; emptied after each flush and
    /// swapped in again at the next, so every shard keeps a buffer with
    /// room.
    taken: Vec<Vec<u8>>,
    /// Every taken line, merged into time order.
    merged: Vec<u8>,
}

static FLUSHING: Mutex<Flushing> = Mutex::new(Flushing {
    taken: Vec::new(),
    merged: Vec::new(),
});

/// Locks `mutex`, also when a thread panicked holding it: a log buffer
/// stays usable (at worst a line is cut short).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands whole lines to this thread's buffer; when it has grown past
/// [`FLUSH_BYTES`], writes out every buffer at once.
pub fn append(bytes: &[u8]) {
    let full = MINE
        .try_with(|shard| shard.append(bytes))
        .unwrap_or_else(|_| LATE.append(bytes));
    if full {
        flush();
    }
}

/// Writes every buffered line to stdout, in time order.
pub fn flush() {
    let mut flushing = lock(&FLUSHING);
    let lines = flushing.collect();
    if !lines.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(lines);
        let _ = out.flush();
    }
    flushing.clear();
}

impl Flushing {
    /// Takes every shard's lines and merges them: what a flush writes.
    fn collect(&mut self) -> &[u8] {
        take_all(&mut self.taken);
        merge(&self.taken, &mut self.merged);
        &self.merged
    }

    /// Empties the buffers, keeping their capacity for the next flush.
    fn clear(&mut self) {
        self.merged.clear();
        self.taken.iter_mut().for_each(Vec::clear);
    }
}

/// Swaps every shard's lines for an empty buffer of `taken`, and forgets
/// the shards of threads that have ended once they are empty.
fn take_all(taken: &mut Vec<Vec<u8>>) {
    let shards = lock(&SHARDS).clone();
    taken.resize_with(shards.len() + 1, Vec::new);
    for (shard, spare) in shards.iter().map(|shard| &**shard).chain([&LATE]).zip(taken.iter_mut()) {
        let mut lines = lock(&shard.lines);
        if !lines.is_empty() {
            std::mem::swap(&mut *lines, spare);
        }
    }
    drop(shards);
    // A shard held only by the list belongs to a thread that has ended;
    // one that got lines after they were taken above keeps them for the
    // next flush.
    lock(&SHARDS).retain(|shard| Arc::strong_count(shard) > 1 || !lock(&shard.lines).is_empty());
}

/// Appends the lines of all `buffers` to `into`, in time order: a k-way
/// merge by each line's timestamp, each buffer's own order kept.
fn merge(buffers: &[Vec<u8>], into: &mut Vec<u8>) {
    let mut rests: Vec<&[u8]> = buffers.iter().filter(|b| !b.is_empty()).map(Vec::as_slice).collect();
    if let [only] = rests.as_slice() {
        into.extend_from_slice(only);
        return;
    }
    let mut next: BinaryHeap<Reverse<(&[u8], usize)>> = rests
        .iter()
        .enumerate()
        .map(|(i, rest)| Reverse((key(rest), i)))
        .collect();
    while let Some(Reverse((_, i))) = next.pop() {
        let rest = rests[i];
        let (record, after) = rest.split_at(record_len(rest));
        into.extend_from_slice(record);
        rests[i] = after;
        if !after.is_empty() {
            next.push(Reverse((key(after), i)));
        }
    }
}

/// What a record is ordered by: its timestamp.
fn key(record: &[u8]) -> &[u8] {
    &record[..record.len().min(TIMESTAMP_LEN)]
}

/// The length of the record `rest` starts with: its first line and every
/// line after it that does not start with a timestamp.
fn record_len(rest: &[u8]) -> usize {
    let mut end = line_end(rest, 0);
    while end < rest.len() && !starts_with_timestamp(&rest[end..]) {
        end = line_end(rest, end);
    }
    end
}

/// Where the line starting at `from` ends, past its newline.
fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |at| from + at + 1)
}

/// Whether `line` starts like `2026-`.
fn starts_with_timestamp(line: &[u8]) -> bool {
    line.len() > 4 && line[..4].iter().all(u8::is_ascii_digit) && line[4] == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(second: u32, text: &str) -> String {
        format!("2026-12-02T10:00:{second:02}.000000Z  INFO {text}\n")
    }

    /// Lines from several buffers come out in time order; equal times keep
    /// their buffer's order, and the rest of a message that spans lines
    /// stays with its first line.
    #[test]
    fn buffers_are_merged_by_timestamp() {
        let a = [
            line(1, "a1"),
            line(4, "a4 first"),
            "  continued\n".into(),
            line(4, "a4 second"),
        ]
        .concat();
        let b = [line(2, "b2"), line(4, "b4"), line(9, "b9")].concat();
        let c = String::new();
        let mut merged = Vec::new();
        merge(&[a.into_bytes(), c.into_bytes(), b.into_bytes()], &mut merged);
        let expected = [
            line(1, "a1"),
            line(2, "b2"),
            line(4, "a4 first"),
            "  continued\n".into(),
            line(4, "a4 second"),
            line(4, "b4"),
            line(9, "b9"),
        ]
        .concat();
        assert_eq!(String::from_utf8(merged).unwrap(), expected);
    }

    /// A single buffer, and one whose last line lacks its newline, are
    /// written as they are.
    #[test]
    fn one_buffer_is_written_as_it_is() {
        let only = [line(3, "x"), "2026-12-02T10:00:01.000000Z no newline".into()].concat();
        let mut merged = Vec::new();
        merge(&[Vec::new(), only.clone().into_bytes()], &mut merged);
        assert_eq!(merged, only.as_bytes());
        let mut merged = Vec::new();
        merge(&[line(5, "y").into_bytes(), "tail".into()], &mut merged);
        assert_eq!(
            String::from_utf8(merged).unwrap(),
            [line(5, "y"), "tail".into()].concat()
        );
    }

    /// Lines appended by threads that are still running and by threads
    /// that have ended are all taken, each once, and an ended thread's
    /// buffer is forgotten once it is empty.
    #[test]
    fn every_thread_s_lines_are_taken_once() {
        let marker = "every-thread-s-lines";
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for n in 0..10 {
                        append(line(n, &format!("{marker} {t} {n}")).as_bytes());
                    }
                    MINE.with(Arc::downgrade)
                })
            })
            .collect();
        let ended: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        append(line(30, &format!("{marker} main")).as_bytes());
        let mut flushing = lock(&FLUSHING);
        let text = String::from_utf8(flushing.collect().to_vec()).unwrap();
        flushing.clear();
        let ours: Vec<&str> = text.lines().filter(|l| l.contains(marker)).collect();
        assert_eq!(ours.len(), 41, "{text}");
        for t in 0..4 {
            let mine: Vec<&str> = ours
                .iter()
                .copied()
                .filter(|l| l.contains(&format!("{marker} {t} ")))
                .collect();
            let expected: Vec<String> = (0..10).map(|n| format!("{marker} {t} {n}")).collect();
            assert!(
                mine.iter().zip(&expected).all(|(l, e)| l.ends_with(e.as_str())),
                "{mine:?}"
            );
            assert_eq!(mine.len(), 10);
        }
        assert!(ours.last().unwrap().ends_with("main"), "{ours:?}");
        // The ended threads' buffers are gone; this thread's stays listed.
        assert!(ended.iter().all(|shard| shard.upgrade().is_none()));
        assert!(MINE.with(|mine| lock(&SHARDS).iter().any(|shard| Arc::ptr_eq(shard, mine))));
    }
}
