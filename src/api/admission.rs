//! Admission of executions: a fixed number of slots, shared fairly between
//! clients, and bounded queues with a deadline in front of them.
//!
//! Each client ([`ClientId`]: its token, else its address) may hold at most
//! its *share* of the slots at once (`--client-share`). A request that
//! cannot start at once (no slot free, or its client at its share) waits in
//! its client's own queue instead of being refused: refusing at once turned
//! a flood of 128 connections into 98% `503`s while the slots were busy only
//! a millisecond at a time. When a slot frees it goes to the next client in
//! turn that has a request waiting and is under its share (round-robin over
//! clients, first-in first-out within one), so a client that queued a
//! hundred requests does not stand in front of one that queued one.
//!
//! Every wait is bounded: in length per client (`--client-queue-depth`,
//! past it `429 concurrency_limit`: that client should slow down), in
//! length overall (`--queue-depth`, past it `503 overloaded`: the server
//! is full) and in time (`--queue-timeout-ms`, `503 overloaded`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::client::ClientId;
use super::error::{ApiError, ErrorCode};

/// How the slots are shared.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionSettings {
    /// Execution slots in all.
    pub max_slots: usize,
    /// Most slots one client holds at once.
    pub client_share: usize,
    /// Most requests one client may have waiting.
    pub client_queue_depth: usize,
    /// Most requests waiting in all.
    pub queue_depth: usize,
    /// Longest a request waits for a slot.
    pub queue_timeout: Duration,
}

/// Execution slots and the queues in front of them.
#[derive(Clone)]
pub struct Admission(Arc<Inner>);

struct Inner {
    settings: AdmissionSettings,
    state: Mutex<State>,
    refused: Refusals,
}

/// Requests refused, by reason, since start (for `/metrics`).
#[derive(Default)]
pub struct Refusals {
    pub client_queue_full: AtomicU64,
    pub queue_full: AtomicU64,
    pub queue_timeout: AtomicU64,
}

#[derive(Default)]
struct State {
    free: usize,
    waiting: usize,
    last_waiter: u64,
    /// Hashed with foldhash (seeded per process), not SipHash: every
    /// request looks its client up here two or three times, and SipHash
    /// on the client's id was a sixtieth of a small call's work.
    clients: HashMap<ClientId, Client, foldhash::fast::RandomState>,
    /// Clients with requests waiting, in the order they are served.
    turns: VecDeque<ClientId>,
}

/// One client's running and waiting requests.
#[derive(Default)]
struct Client {
    running: usize,
    waiters: VecDeque<Waiter>,
}

struct Waiter {
    id: u64,
    /// Told when a slot has been handed to it.
    wake: oneshot::Sender<()>,
}

/// A slot held by one client's request; given back when dropped.
///
/// It borrows the admission and the client rather than holding an `Arc`
/// and a copy: the request that holds it holds both anyway, and a clone
/// and a drop of the `Arc` were two more writes per request on a count
/// that every request on every core writes.
pub struct ExecPermit<'a> {
    admission: &'a Inner,
    client: &'a ClientId,
}

impl Drop for ExecPermit<'_> {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        if let Some(client) = state.clients.get_mut(self.client) {
            client.running -= 1;
        }
        state.free += 1;
        state.forget_if_idle(self.client);
        self.admission.hand_out(&mut state);
    }
}

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Self {
        let settings = AdmissionSettings {
            max_slots: settings.max_slots.max(1),
            client_share: settings.client_share.clamp(1, settings.max_slots.max(1)),
            ..settings
        };
        let state = State {
            free: settings.max_slots,
            ..State::default()
        };
        Admission(Arc::new(Inner {
            settings,
            state: Mutex::new(state),
            refused: Refusals::default(),
        }))
    }

    pub fn settings(&self) -> &AdmissionSettings {
        &self.0.settings
    }

    /// Slots in use now.
    pub fn in_flight(&self) -> usize {
        self.0.settings.max_slots - self.0.lock().free
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.0.lock().waiting
    }

    /// Requests refused since start, by reason.
    pub fn refusals(&self) -> &Refusals {
        &self.0.refused
    }

    /// Takes a slot for `client`: at once if one is free and the client is
    /// under its share, else after waiting its turn; `429
    /// concurrency_limit` if the client's queue is full, `503 overloaded`
    /// if all queues together are, or the wait outlasts the deadline.
    pub async fn admit<'a>(&'a self, client: &'a ClientId) -> Result<ExecPermit<'a>, ApiError> {
        let inner = &self.0;
        let settings = &inner.settings;
        let (id, mut woken) = {
            let mut state = inner.lock();
            let free = state.free;
            let mine = state.clients.entry(client.clone()).or_default();
            // The hot path: a free slot, under the share, nobody of this
            // client ahead in its queue.
            if free > 0 && mine.running < settings.client_share && mine.waiters.is_empty() {
                mine.running += 1;
                state.free -= 1;
                return Ok(self.permit(client));
            }
            let queued_by_client = mine.waiters.len();
            let running = mine.running;
            if state.waiting >= settings.queue_depth {
                state.forget_if_idle(client);
                inner.refused.queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::overloaded(format!(
                    "all {} execution slots are busy and {} requests are already queued (--queue-depth); retry shortly",
                    settings.max_slots, settings.queue_depth
                )));
            }
            if queued_by_client >= settings.client_queue_depth {
                state.forget_if_idle(client);
                inner.refused.client_queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::new(
                    ErrorCode::ConcurrencyLimit,
                    format!(
                        "{client} has {running} executions running (of its share of {}, --client-share) and \
                         {queued_by_client} waiting (--client-queue-depth); wait for one to finish",
                        settings.client_share
                    ),
                ));
            }
            state.last_waiter += 1;
            let id = state.last_waiter;
            let (wake, woken) = oneshot::channel();
            state.waiting += 1;
            let mine = state.clients.entry(client.clone()).or_default();
            mine.waiters.push_back(Waiter { id, wake });
            if mine.waiters.len() == 1 {
                state.turns.push_back(client.clone());
            }
            (id, woken)
        };
        // However the wait ends (the deadline, or the request dropped while
        // waiting), the queue forgets it, and a slot handed over meanwhile
        // goes back.
        let mut waiting = Waiting {
            admission: self,
            client,
            id,
            settled: false,
        };
        let handed = tokio::time::timeout(settings.queue_timeout, &mut woken).await;
        waiting.settled = true;
        if let Ok(Ok(())) = handed {
            return Ok(self.permit(client));
        }
        // The deadline passed (or the sender went): still queued means no
        // slot came; else one was handed over just now, and it is ours.
        let mut state = inner.lock();
        if state.remove_waiter(client, id) {
            state.forget_if_idle(client);
            inner.refused.queue_timeout.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::overloaded(format!(
                "all {} execution slots stayed busy for {} ms while this request was queued (--queue-timeout-ms); retry shortly",
                settings.max_slots,
                settings.queue_timeout.as_millis()
            )));
        }
        drop(state);
        Ok(self.permit(client))
    }

    fn permit<'a>(&'a self, client: &'a ClientId) -> ExecPermit<'a> {
        ExecPermit {
            admission: &self.0,
            client,
        }
    }
}

/// A request in a client's queue; leaves it when dropped unsettled.
struct Waiting<'a> {
    admission: &'a Admission,
    client: &'a ClientId,
    id: u64,
    settled: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let inner = &self.admission.0;
        let mut state = inner.lock();
        if !state.remove_waiter(self.client, self.id) {
            // A slot was handed over as the request went away: give it back.
            if let Some(client) = state.clients.get_mut(self.client) {
                client.running -= 1;
            }
            state.free += 1;
            inner.hand_out(&mut state);
        }
        state.forget_if_idle(self.client);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands free slots to waiting requests: each to the next client in
    /// turn that is under its share, which then goes to the back.
    fn hand_out(&self, state: &mut State) {
        let share = self.settings.client_share;
        while state.free > 0 {
            let mut handed = false;
            for _ in 0..state.turns.len() {
                let Some(id) = state.turns.pop_front() else { break };
                let Some(client) = state.clients.get_mut(&id) else {
                    continue;
                };
                if client.waiters.is_empty() {
                    continue;
                }
                if client.running >= share {
                    state.turns.push_back(id);
                    continue;
                }
                let waiter = client.waiters.pop_front().expect("checked non-empty");
                state.waiting -= 1;
                // A waiter whose request went away is skipped (its `Waiting`
                // guard is about to find it gone and gives nothing back).
                if waiter.wake.send(()).is_ok() {
                    client.running += 1;
                    state.free -= 1;
                    handed = true;
                }
                let more = !client.waiters.is_empty();
                if more {
                    state.turns.push_back(id.clone());
                }
                state.forget_if_idle(&id);
                if handed {
                    break;
                }
            }
            if !handed {
                break;
            }
        }
    }
}

impl State {
    /// Takes waiter `id` out of `client`'s queue; false if it is not there
    /// (a slot was handed to it).
    fn remove_waiter(&mut self, client: &ClientId, id: u64) -> bool {
        let Some(mine) = self.clients.get_mut(client) else {
            return false;
        };
        let Some(at) = mine.waiters.iter().position(|w| w.id == id) else {
            return false;
        };
        mine.waiters.remove(at);
        if mine.waiters.is_empty() {
            self.turns.retain(|c| c != client);
        }
        self.waiting -= 1;
        true
    }

    /// Drops a client with nothing running or waiting, so the map holds
    /// only clients with work.
    fn forget_if_idle(&mut self, client: &ClientId) {
        if self
            .clients
            .get(client)
            .is_some_and(|c| c.running == 0 && c.waiters.is_empty())
        {
            self.clients.remove(client);
        }
    }
}
