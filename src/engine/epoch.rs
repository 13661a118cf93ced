//! The epoch ticker: the one thread that advances the engine's epoch, by
//! which guest code yields its worker thread and its timeout is checked.
//!
//! A module of its own so that the epoch callback (`store`) can tell the
//! ticker that a guest runs long without importing the settings module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::error::EngineError;

/// While no guest was running when the epoch last moved, the ticker sleeps
/// this many ticks before moving it again, instead of one.
///
/// Why: a wake-up every millisecond on an idle or short-call server is a
/// context switch onto a core that is busy serving requests, a thousand
/// times a second, for nothing: a call shorter than a tick reaches its
/// deadline callback only if the epoch happens to move while it runs. The
/// cost of sleeping longer falls only on the first ticks of a long-running
/// guest (see [`guest_running`]).
const IDLE_TICKS: u32 = 10;

/// Set by the epoch callback, that is by a guest running when the epoch
/// moved (a long guest, at every epoch; a short call, only when the epoch
/// moved during it); taken by the ticker, which ticks fast while it finds
/// it set.
static GUEST_RUNNING: AtomicBool = AtomicBool::new(false);

/// Tells the epoch ticker that guest code was running when the epoch moved
/// (a guest that runs long does so at every epoch), so that it ticks
/// every `--epoch-tick-ms` (timeouts checked and the thread yielded at that
/// granularity) rather than every [`IDLE_TICKS`] ticks. Called from the
/// epoch callback, so at most once per tick per running guest; it writes the
/// shared flag only when it is clear, so that guests on many cores do not
/// all write the same cache line every tick.
pub(crate) fn guest_running() {
    if !GUEST_RUNNING.load(Ordering::Relaxed) {
        GUEST_RUNNING.store(true, Ordering::Relaxed);
    }
}

/// Advances the engine's epoch on one shared thread: every `tick` while
/// guest code runs long, every [`IDLE_TICKS`] ticks while none does.
///
/// One ticker for the whole process: a ticker per request costs a thread
/// spawn per call. The thread holds only a weak handle, so it ends by itself
/// once the engine is dropped (in tests, many engines come and go). The slow
/// tick never stops, so a guest that starts while the ticker is slow still
/// reaches its deadline callback, at most `IDLE_TICKS` ticks later, and
/// its second one at most `IDLE_TICKS` after that; from then on every
/// tick, for as long as it runs.
pub(crate) fn spawn_epoch_ticker(engine: &wasmtime::Engine, tick: Duration) -> Result<(), EngineError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            let mut fast = false;
            loop {
                // One sleep per epoch, whichever its length (a tick, then
                // the rest, was two wake-ups per slow epoch). The flag is
                // taken just before the epoch moves, so it holds what the
                // callbacks of the last epoch said: a long guest answers
                // each epoch within the tick after it.
                std::thread::sleep(if fast { tick } else { tick * IDLE_TICKS });
                fast = GUEST_RUNNING.swap(false, Ordering::Relaxed);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        // Without a ticker timeouts would never fire; refuse to run blind.
        .map_err(|e| EngineError::Internal(format!("cannot start the epoch ticker thread: {e}")))?;
    Ok(())
}
