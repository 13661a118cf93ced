//! Admission of executions: a fixed number of slots, and a bounded queue
//! with a deadline in front of them.
//!
//! A request that finds every slot busy waits its turn (tokio's semaphore
//! is first-in, first-out) instead of being refused on arrival: refusing at
//! once turned a flood of 128 connections into 98% `503`s while the slots
//! were busy only a millisecond at a time. The queue is bounded in length
//! (`--queue-depth`) and in time (`--queue-timeout-ms`), so a flood cannot
//! build an unbounded backlog: past either bound the answer is
//! `503 overloaded`, saying which bound was hit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// Execution slots and the queue in front of them.
pub struct Admission {
    slots: Arc<Semaphore>,
    max_slots: usize,
    /// Requests waiting for a slot now.
    waiting: AtomicUsize,
    queue_depth: usize,
    queue_timeout: Duration,
}

/// Leaves the queue when dropped, however the wait ended.
struct InQueue<'a>(&'a AtomicUsize);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    pub fn new(max_slots: usize, queue_depth: usize, queue_timeout: Duration) -> Self {
        let max_slots = max_slots.max(1);
        Admission {
            slots: Arc::new(Semaphore::new(max_slots)),
            max_slots,
            waiting: AtomicUsize::new(0),
            queue_depth,
            queue_timeout,
        }
    }

    /// Slots in use now.
    pub fn in_flight(&self) -> usize {
        self.max_slots - self.slots.available_permits()
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Takes a slot: at once if one is free, else after waiting in the
    /// queue; `503 overloaded` if the queue is full or the wait outlasts
    /// the queue's deadline.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        // The hot path: a free slot, no queue, no timer.
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _in_queue = InQueue(&self.waiting);
        if before >= self.queue_depth {
            return Err(ApiError::overloaded(format!(
                "all {} execution slots are busy and {} requests are already queued (--queue-depth); retry shortly",
                self.max_slots, self.queue_depth
            )));
        }
        match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(ApiError::internal("the execution slots were closed")),
            Err(_elapsed) => Err(ApiError::overloaded(format!(
                "all {} execution slots stayed busy for {} ms while this request was queued (--queue-timeout-ms); retry shortly",
                self.max_slots,
                self.queue_timeout.as_millis()
            ))),
        }
    }
}
