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
//!
//! Taking and giving back a slot under one lock wrote that lock's cache
//! line twice per call from every core: on two threads in process,
//! `POST /execute` made 620k calls/s with it and 770k without any
//! admission (docs/BENCHMARKS.md, 2026-12-05). So while nothing goes
//! through the queues, each thread takes slots on its own, from a small
//! allowance on a line of its own ([`Inner::per_thread`]: the smaller of
//! the slots and the share, divided among `per_thread::SHARDS` threads, so
//! that all allowances together never exceed a client's share or the
//! slots). A request that finds its thread's allowance used, or anyone
//! already in the shared path, goes through the lock as before, and while
//! any request holds or waits for a slot that way, no thread takes one on
//! its own: the shared path counts the slots threads hold (and whose
//! client holds each) and hands out only what is really free, so the
//! share, the slots and the turns hold exactly as before.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::client::ClientId;
use super::error::{ApiError, ErrorCode};
use crate::per_thread::{Padded, SHARDS, shard};

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
    /// Slots a thread may hold on its own (0: every request goes through
    /// `state`).
    per_thread: usize,
    /// Requests deciding, holding or waiting for a slot through `state`.
    /// While it is above zero no thread takes a slot on its own; while it
    /// is zero, it is a line that requests only read.
    shared_users: Padded<AtomicUsize>,
    /// The slots each thread holds on its own.
    own: Box<[Padded<OwnSlots>; SHARDS]>,
    state: Mutex<State>,
    refused: Refusals,
}

/// The slots one thread holds on its own.
#[derive(Default)]
struct OwnSlots {
    /// How many: the shared path reads this first and takes the lock only
    /// of the threads that hold some, so that a shared path busy for a
    /// while does not write every thread's line at every decision.
    held: AtomicUsize,
    /// Their clients.
    clients: Mutex<Vec<ClientId>>,
}

impl OwnSlots {
    /// Locks the clients, also after a panic elsewhere: it is a list of
    /// clients.
    fn lock(&self) -> MutexGuard<'_, Vec<ClientId>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
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
    /// Slots held through this state (not those threads hold on their
    /// own).
    running: usize,
    waiting: usize,
    last_waiter: u64,
    /// Hashed with foldhash (seeded per process), not SipHash: every
    /// request looks its client up here two or three times, and SipHash
    /// on the client's id was a sixtieth of a small call's work.
    clients: HashMap<ClientId, Client, foldhash::fast::RandomState>,
    /// Clients with requests waiting, in the order they are served.
    turns: VecDeque<ClientId>,
}

/// One client's running (through the shared state) and waiting requests.
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
    /// The thread list it was taken from on its own, if it was.
    own: Option<usize>,
}

impl Drop for ExecPermit<'_> {
    fn drop(&mut self) {
        let inner = self.admission;
        if let Some(list) = self.own {
            inner.give_back_own(list, self.client);
            return;
        }
        let mut state = inner.lock();
        if let Some(client) = state.clients.get_mut(self.client) {
            client.running -= 1;
        }
        state.running -= 1;
        state.forget_if_idle(self.client);
        inner.hand_out(&mut state);
        drop(state);
        inner.leave();
    }
}

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Self {
        let settings = AdmissionSettings {
            max_slots: settings.max_slots.max(1),
            client_share: settings.client_share.clamp(1, settings.max_slots.max(1)),
            ..settings
        };
        Admission(Arc::new(Inner {
            per_thread: settings.max_slots.min(settings.client_share) / SHARDS,
            settings,
            shared_users: Padded(AtomicUsize::new(0)),
            own: Box::default(),
            state: Mutex::new(State::default()),
            refused: Refusals::default(),
        }))
    }

    pub fn settings(&self) -> &AdmissionSettings {
        &self.0.settings
    }

    /// Slots in use now.
    pub fn in_flight(&self) -> usize {
        let state = self.0.lock();
        state.running + self.0.held_on_their_own().len()
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
        if let Some(permit) = self.admit_on_own(client) {
            return Ok(permit);
        }
        // Counted before anything is read, so that no thread takes a slot
        // on its own from here on without this request seeing it.
        inner.shared_users.0.fetch_add(1, Ordering::SeqCst);
        let (id, mut woken) = {
            let mut state = inner.lock();
            let own = inner.held_on_their_own();
            // A slot a thread gave back may not have been handed out yet
            // (its hand-out waits for this lock): the requests already
            // waiting get it first.
            inner.hand_out_counted(&mut state, &own);
            let free = settings.max_slots.saturating_sub(state.running + own.len());
            let held_on_own = own.iter().filter(|c| *c == client).count();
            let mine = state.clients.entry(client.clone()).or_default();
            let running = mine.running + held_on_own;
            // A free slot, under the share, nobody of this client ahead in
            // its queue.
            if free > 0 && running < settings.client_share && mine.waiters.is_empty() {
                mine.running += 1;
                state.running += 1;
                return Ok(self.permit(client, None));
            }
            let queued_by_client = mine.waiters.len();
            if state.waiting >= settings.queue_depth {
                state.forget_if_idle(client);
                drop(state);
                inner.leave();
                inner.refused.queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::overloaded(format!(
                    "all {} execution slots are busy and {} requests are already queued (--queue-depth); retry shortly",
                    settings.max_slots, settings.queue_depth
                )));
            }
            if queued_by_client >= settings.client_queue_depth {
                state.forget_if_idle(client);
                drop(state);
                inner.leave();
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
            return Ok(self.permit(client, None));
        }
        // The deadline passed (or the sender went): still queued means no
        // slot came; else one was handed over just now, and it is ours.
        let mut state = inner.lock();
        if state.remove_waiter(client, id) {
            state.forget_if_idle(client);
            drop(state);
            inner.leave();
            inner.refused.queue_timeout.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::overloaded(format!(
                "all {} execution slots stayed busy for {} ms while this request was queued (--queue-timeout-ms); retry shortly",
                settings.max_slots,
                settings.queue_timeout.as_millis()
            )));
        }
        drop(state);
        Ok(self.permit(client, None))
    }

    /// A slot from this thread's own allowance, if it has one left and no
    /// request is in the shared path.
    fn admit_on_own<'a>(&'a self, client: &'a ClientId) -> Option<ExecPermit<'a>> {
        let inner = &self.0;
        if inner.per_thread == 0 || inner.shared_users.0.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let list = shard();
        let slots = &inner.own[list].0;
        let mut clients = slots.lock();
        if clients.len() >= inner.per_thread {
            return None;
        }
        clients.push(client.clone());
        slots.held.store(clients.len(), Ordering::SeqCst);
        drop(clients);
        // Written, then read again: a request entering the shared path
        // counts itself, then reads `held`, so either it sees this slot
        // taken or this sees it coming. If this sees it, the slot is given
        // back and told to it (it may have counted the slot as held).
        if inner.shared_users.0.load(Ordering::SeqCst) > 0 {
            inner.give_back_own(list, client);
            return None;
        }
        Some(self.permit(client, Some(list)))
    }

    fn permit<'a>(&'a self, client: &'a ClientId, own: Option<usize>) -> ExecPermit<'a> {
        ExecPermit {
            admission: &self.0,
            client,
            own,
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
            state.running -= 1;
            inner.hand_out(&mut state);
        }
        state.forget_if_idle(self.client);
        drop(state);
        inner.leave();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives back a slot `client` held on its own from thread list
    /// `list`; if a request is in the shared path, hands it out there.
    fn give_back_own(&self, list: usize, client: &ClientId) {
        {
            let slots = &self.own[list].0;
            let mut clients = slots.lock();
            if let Some(at) = clients.iter().position(|c| c == client) {
                clients.swap_remove(at);
            }
            slots.held.store(clients.len(), Ordering::SeqCst);
        }
        // Read after the slot is given back: a request that entered the
        // shared path before that counted it as held, and is told here
        // that it is free.
        if self.shared_users.0.load(Ordering::SeqCst) > 0 {
            self.hand_out(&mut self.lock());
        }
    }

    /// One request fewer in the shared path.
    fn leave(&self) {
        self.shared_users.0.fetch_sub(1, Ordering::SeqCst);
    }

    /// The client of every slot threads hold on their own now. Once a
    /// request is in the shared path no thread takes more, so what this
    /// answers can only shrink meanwhile, and each slot given back then
    /// calls [`Inner::hand_out`].
    fn held_on_their_own(&self) -> Vec<ClientId> {
        if self.per_thread == 0 {
            return Vec::new();
        }
        self.own
            .iter()
            .filter(|slots| slots.0.held.load(Ordering::SeqCst) > 0)
            .flat_map(|slots| slots.0.lock().clone())
            .collect()
    }

    /// Hands free slots to waiting requests: each to the next client in
    /// turn that is under its share, which then goes to the back.
    fn hand_out(&self, state: &mut State) {
        if state.turns.is_empty() {
            return;
        }
        self.hand_out_counted(state, &self.held_on_their_own());
    }

    /// [`Inner::hand_out`], with the slots threads hold on their own
    /// already counted (`own`).
    fn hand_out_counted(&self, state: &mut State, own: &[ClientId]) {
        let share = self.settings.client_share;
        let mut free = self.settings.max_slots.saturating_sub(state.running + own.len());
        while free > 0 {
            let mut handed = false;
            for _ in 0..state.turns.len() {
                let Some(id) = state.turns.pop_front() else { break };
                let Some(client) = state.clients.get_mut(&id) else {
                    continue;
                };
                if client.waiters.is_empty() {
                    continue;
                }
                if client.running + own.iter().filter(|c| **c == id).count() >= share {
                    state.turns.push_back(id);
                    continue;
                }
                let waiter = client.waiters.pop_front().expect("checked non-empty");
                state.waiting -= 1;
                // A waiter whose request went away is skipped (its `Waiting`
                // guard is about to find it gone and gives nothing back).
                if waiter.wake.send(()).is_ok() {
                    client.running += 1;
                    state.running += 1;
                    free -= 1;
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::pin::pin;

    use super::*;

    fn admission(max_slots: usize, client_share: usize, queue_timeout_ms: u64) -> Admission {
        Admission::new(AdmissionSettings {
            max_slots,
            client_share,
            client_queue_depth: client_share,
            queue_depth: 1024,
            queue_timeout: Duration::from_millis(queue_timeout_ms),
        })
    }

    fn client(last: u8) -> ClientId {
        ClientId::Address(Ipv4Addr::new(127, 0, 0, last).into())
    }

    fn shared_users(admission: &Admission) -> usize {
        admission.0.shared_users.0.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_threads_own_slot_counts_toward_its_clients_share() {
        // 16 of 32 slots per client: one slot per thread on its own.
        let admission = admission(32, 16, 20);
        assert_eq!(admission.0.per_thread, 1);
        let (a, b) = (client(1), client(2));
        let first = admission.admit(&a).await.unwrap();
        assert!(first.own.is_some(), "the first slot is the thread's own");
        assert_eq!(shared_users(&admission), 0);
        let mut more = Vec::new();
        for _ in 0..15 {
            let permit = admission.admit(&a).await.unwrap();
            assert!(permit.own.is_none(), "past the thread's own slot, the shared path");
            more.push(permit);
        }
        assert_eq!(admission.in_flight(), 16);
        // The client's share is full, counting the slot held on its own.
        let refused = admission
            .admit(&a)
            .await
            .err()
            .expect("over the share: queued, then refused");
        assert_eq!(refused.code, ErrorCode::Overloaded);
        // Another client still gets a slot.
        let other = admission.admit(&b).await.unwrap();
        assert_eq!(admission.in_flight(), 17);
        drop((first, more, other));
        assert_eq!(admission.in_flight(), 0);
        assert_eq!(shared_users(&admission), 0, "nobody left in the shared path");
        let again = admission.admit(&a).await.unwrap();
        assert!(
            again.own.is_some(),
            "with the shared path empty, the thread's own slot again"
        );
    }

    #[tokio::test]
    async fn a_slot_given_back_from_a_threads_own_goes_to_the_next_waiter() {
        let admission = admission(16, 16, 60_000);
        let a = client(1);
        let own = admission.admit(&a).await.unwrap();
        assert!(own.own.is_some());
        let mut shared = Vec::new();
        for _ in 0..15 {
            shared.push(admission.admit(&a).await.unwrap());
        }
        // Every slot is taken: the next request waits.
        let mut waiting = pin!(admission.admit(&a));
        assert!(futures::poll!(&mut waiting).is_pending());
        assert_eq!(admission.queued(), 1);
        drop(own);
        let handed = waiting.await.expect("the slot given back is handed over");
        assert!(handed.own.is_none());
        assert_eq!(admission.queued(), 0);
        assert_eq!(admission.in_flight(), 16);
        drop((handed, shared));
        assert_eq!(admission.in_flight(), 0);
        assert_eq!(shared_users(&admission), 0);
    }

    #[test]
    fn under_concurrent_use_no_client_passes_its_share_and_no_slot_is_lost() {
        use std::sync::atomic::AtomicUsize;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let admission = Admission::new(AdmissionSettings {
            max_slots: 32,
            client_share: 16,
            client_queue_depth: 4096,
            queue_depth: 4096,
            queue_timeout: Duration::from_secs(60),
        });
        let clients = [client(1), client(2), client(3)];
        let running: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let most: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let total = Arc::new(AtomicUsize::new(0));
        let most_total = Arc::new(AtomicUsize::new(0));
        // Permits taken on a thread's own and through the shared path.
        let ways: Arc<[AtomicUsize; 2]> = Arc::new(Default::default());
        runtime.block_on(async {
            let tasks: Vec<_> = (0..3_000)
                .map(|i| {
                    let (admission, which) = (admission.clone(), i % 3);
                    let client = clients[which].clone();
                    let (running, most, total, most_total, ways) = (
                        running.clone(),
                        most.clone(),
                        total.clone(),
                        most_total.clone(),
                        ways.clone(),
                    );
                    tokio::spawn(async move {
                        let permit = admission
                            .admit(&client)
                            .await
                            .expect("the queue is deep and long enough");
                        ways[usize::from(permit.own.is_none())].fetch_add(1, Ordering::SeqCst);
                        let now = running[which].fetch_add(1, Ordering::SeqCst) + 1;
                        most[which].fetch_max(now, Ordering::SeqCst);
                        let all = total.fetch_add(1, Ordering::SeqCst) + 1;
                        most_total.fetch_max(all, Ordering::SeqCst);
                        // Some hold their slot across an await, as a call on
                        // a fiber does, so that the shared path is taken.
                        if i % 5 == 0 {
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                        running[which].fetch_sub(1, Ordering::SeqCst);
                        total.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        for (which, most) in most.iter().enumerate() {
            let most = most.load(Ordering::SeqCst);
            assert!((1..=16).contains(&most), "client {which} held {most} slots at once");
        }
        assert!(most_total.load(Ordering::SeqCst) <= 32);
        let [own, shared] = [0, 1].map(|way| ways[way].load(Ordering::SeqCst));
        assert!(
            own > 0 && shared > 0,
            "both ways were taken: {own} own, {shared} shared"
        );
        assert_eq!(admission.in_flight(), 0);
        assert_eq!(admission.queued(), 0);
        assert_eq!(shared_users(&admission), 0);
    }

    #[tokio::test]
    async fn with_fewer_slots_than_threads_every_request_takes_the_shared_path() {
        let admission = admission(4, 2, 20);
        assert_eq!(admission.0.per_thread, 0);
        let a = client(1);
        let permits = [admission.admit(&a).await.unwrap(), admission.admit(&a).await.unwrap()];
        assert!(permits.iter().all(|p| p.own.is_none()));
        let refused = admission.admit(&a).await.err().expect("over the share of 2");
        assert_eq!(refused.code, ErrorCode::Overloaded);
        drop(permits);
        assert_eq!((admission.in_flight(), shared_users(&admission)), (0, 0));
    }
}
