//! Live instances and environments, which keep their state across calls.
//!
//! Each instance or environment owns its own store. Calls on one are
//! serialized by its async mutex; different ones run in parallel. The
//! table holds both kinds under one set of caps, and is
//! bounded in count and in reserved memory (each instance reserves its
//! memory limit when created, so the total can never be exceeded by later
//! growth), and instances idle for longer than the idle timeout are dropped
//! by a reaper task. Ids are the node's name, a dot and 122 random bits:
//! one client cannot guess another's instance, and a balancer in front of
//! several nodes can route a call to the node that holds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::engine::{CallFailure, CodeInterface, Environment, ExecLimits, ExecStats, LiveInstance, Tier};

/// Bounds on the instance table.
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    /// Most live instances at once.
    pub max_instances: usize,
    /// Most memory reserved by all live instances together, in bytes.
    pub max_total_memory_bytes: u64,
    /// Most live instances and environments one client holds.
    pub max_per_client: usize,
    /// Most memory one client's instances and environments reserve.
    pub max_memory_per_client: u64,
    /// An instance not called for this long is dropped.
    pub idle_timeout: Duration,
    /// This node's name: the prefix of every instance id it hands out.
    pub node_id: String,
}

/// Why an instance could not be created or found.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("no live instance has id `{0}` (it may have been deleted or expired after being idle)")]
    NotFound(String),
    #[error("no environment has id `{0}` (it may have been deleted or expired after being idle)")]
    EnvironmentNotFound(String),
    #[error("{0}")]
    Capacity(String),
    #[error("instantiation failed")]
    Instantiate(Box<CallFailure>),
}

/// Who an instance is counted against, for the per-client caps: a stable
/// key, and how messages name the client.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub key: String,
    pub name: String,
}

/// A client's instances and environments, and their reserved memory
/// (those being created included).
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    count: usize,
    memory: u64,
}

/// What is known of a live instance without locking it.
pub struct InstanceInfo {
    /// The registered module name, or `inline` for inline code.
    pub module: String,
    pub sha256: String,
    pub interface: CodeInterface,
    /// The tier that runs its calls, for its whole life.
    pub tier: Tier,
}

/// One live instance or environment (`T`) and what is known about it
/// without locking it (`I`).
pub struct Slot<T, I = ()> {
    pub id: String,
    pub info: I,
    pub limits: ExecLimits,
    /// The token that created it (`None` when access control is off).
    pub owner: Option<usize>,
    /// The client its reservation is counted against.
    tenant: String,
    pub created: SystemTime,
    created_at: Instant,
    last_used: Mutex<Instant>,
    calls: AtomicU64,
    /// Holding the lock is holding the right to call.
    pub live: tokio::sync::Mutex<T>,
}

/// A live instance's slot.
pub type InstanceSlot = Slot<LiveInstance, InstanceInfo>;

/// An environment's slot.
pub type EnvironmentSlot = Slot<Environment>;

impl<T, I> Slot<T, I> {
    fn new(id: String, info: I, limits: ExecLimits, owner: Option<usize>, tenant: String, live: T) -> Self {
        let now = Instant::now();
        Slot {
            id,
            info,
            limits,
            owner,
            tenant,
            created: SystemTime::now(),
            created_at: now,
            last_used: Mutex::new(now),
            calls: AtomicU64::new(0),
            live: tokio::sync::Mutex::new(live),
        }
    }

    /// Records a call (for idle expiry and `calls`).
    pub fn touch(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn age(&self) -> Duration {
        self.created_at.elapsed()
    }

    pub fn idle(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    /// Idle for `timeout` and not in a call.
    fn expired(&self, timeout: Duration) -> bool {
        self.idle() >= timeout && self.live.try_lock().is_ok()
    }
}

/// What the table holds under an id.
pub enum Entry {
    Instance(Arc<InstanceSlot>),
    Environment(Arc<EnvironmentSlot>),
}

impl Entry {
    /// Memory reserved for it.
    fn memory(&self) -> u64 {
        match self {
            Entry::Instance(slot) => slot.limits.memory_bytes,
            Entry::Environment(slot) => slot.limits.memory_bytes,
        }
    }

    /// The client it is counted against.
    fn tenant(&self) -> &str {
        match self {
            Entry::Instance(slot) => &slot.tenant,
            Entry::Environment(slot) => &slot.tenant,
        }
    }

    fn expired(&self, timeout: Duration) -> bool {
        match self {
            Entry::Instance(slot) => slot.expired(timeout),
            Entry::Environment(slot) => slot.expired(timeout),
        }
    }
}

/// A kind of thing the table holds (a live instance, an environment):
/// how its slot goes into an [`Entry`] and comes back out, so that each
/// table operation is written once for both.
pub trait Held: Sized {
    /// What is known of it without locking it.
    type Info;
    /// How messages and paths name it: `instance`, `environment`.
    const NOUN: &'static str;
    fn entry(slot: Arc<Slot<Self, Self::Info>>) -> Entry;
    fn slot(entry: &Entry) -> Option<&Arc<Slot<Self, Self::Info>>>;
    /// The error for an id that names none of this kind.
    fn not_found(id: &str) -> InstanceError;
}

impl Held for LiveInstance {
    type Info = InstanceInfo;
    const NOUN: &'static str = "instance";

    fn entry(slot: Arc<InstanceSlot>) -> Entry {
        Entry::Instance(slot)
    }

    fn slot(entry: &Entry) -> Option<&Arc<InstanceSlot>> {
        match entry {
            Entry::Instance(slot) => Some(slot),
            Entry::Environment(_) => None,
        }
    }

    fn not_found(id: &str) -> InstanceError {
        InstanceError::NotFound(id.to_string())
    }
}

impl Held for Environment {
    type Info = ();
    const NOUN: &'static str = "environment";

    fn entry(slot: Arc<EnvironmentSlot>) -> Entry {
        Entry::Environment(slot)
    }

    fn slot(entry: &Entry) -> Option<&Arc<EnvironmentSlot>> {
        match entry {
            Entry::Environment(slot) => Some(slot),
            Entry::Instance(_) => None,
        }
    }

    fn not_found(id: &str) -> InstanceError {
        InstanceError::EnvironmentNotFound(id.to_string())
    }
}

struct Table {
    slots: HashMap<String, Entry>,
    /// Memory reserved by live instances plus those being created.
    reserved_memory: u64,
    /// Instances being created (counted against the cap).
    pending: usize,
    /// Each client's share in use, pending creations included.
    usage: HashMap<String, Usage>,
}

impl Table {
    /// Takes back what an entry (or a creation) of `tenant` reserved.
    fn release(&mut self, tenant: &str, memory: u64) {
        self.reserved_memory -= memory;
        if let Some(usage) = self.usage.get_mut(tenant) {
            usage.count -= 1;
            usage.memory -= memory;
            if usage.count == 0 {
                self.usage.remove(tenant);
            }
        }
    }
}

/// What the table records of an instance about to be made.
pub struct NewInstance {
    /// The registered module name, or `inline` for inline code.
    pub module: String,
    pub sha256: String,
    pub interface: CodeInterface,
    pub limits: ExecLimits,
}

/// The live-instance table.
pub struct Instances {
    settings: InstanceSettings,
    table: Mutex<Table>,
}

impl Instances {
    pub fn new(settings: InstanceSettings) -> Arc<Self> {
        let instances = Arc::new(Instances {
            settings,
            table: Mutex::new(Table {
                slots: HashMap::new(),
                reserved_memory: 0,
                pending: 0,
                usage: HashMap::new(),
            }),
        });
        spawn_reaper(Arc::downgrade(&instances), instances.settings.idle_timeout);
        instances
    }

    pub fn settings(&self) -> &InstanceSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new instance or environment of `memory` reserved bytes
    /// against the caps, the server's and its client's, or says which is
    /// reached.
    fn reserve(&self, memory: u64, tenant: &Tenant) -> Result<Reservation<'_>, InstanceError> {
        let mut table = self.lock();
        if table.slots.len() + table.pending >= self.settings.max_instances {
            return Err(InstanceError::Capacity(format!(
                "the server holds its maximum of {} live instances and environments; delete one or let idle ones expire",
                self.settings.max_instances
            )));
        }
        if table.reserved_memory.saturating_add(memory) > self.settings.max_total_memory_bytes {
            return Err(InstanceError::Capacity(format!(
                "live instances and environments have reserved {} of {} bytes of memory; this one asks for {memory} (lower limits.memory_bytes, or delete one)",
                table.reserved_memory, self.settings.max_total_memory_bytes
            )));
        }
        let used = table.usage.get(&tenant.key).copied().unwrap_or_default();
        if used.count >= self.settings.max_per_client {
            return Err(InstanceError::Capacity(format!(
                "{} holds {} live instances and environments, as many as one client may (--max-instances-per-client); \
                 delete one or let idle ones expire",
                tenant.name, used.count
            )));
        }
        if used.memory.saturating_add(memory) > self.settings.max_memory_per_client {
            return Err(InstanceError::Capacity(format!(
                "the live instances and environments of {} have reserved {} of the {} bytes one client may \
                 (--max-instance-memory-per-client); this one asks for {memory} (lower limits.memory_bytes, or delete one)",
                tenant.name, used.memory, self.settings.max_memory_per_client
            )));
        }
        table.pending += 1;
        table.reserved_memory += memory;
        let usage = table.usage.entry(tenant.key.clone()).or_default();
        usage.count += 1;
        usage.memory += memory;
        Ok(Reservation {
            table: self,
            memory,
            tenant: tenant.key.clone(),
            armed: true,
        })
    }

    /// Puts a slot made under `reservation` in the table.
    fn insert<T: Held>(&self, reservation: Reservation<'_>, slot: Arc<Slot<T, T::Info>>) {
        // The reservation's count and memory pass to the slot (released
        // when it is removed).
        let mut reservation = reservation;
        reservation.armed = false;
        drop(reservation);
        let mut table = self.lock();
        table.pending -= 1;
        table.slots.insert(slot.id.clone(), T::entry(slot));
    }

    /// A new id: this node's name, a dot and 122 random bits.
    fn new_id(&self) -> String {
        format!("{}.{}", self.settings.node_id, uuid::Uuid::new_v4().simple())
    }

    /// Makes a new live instance by running `instantiate`, if the caps
    /// allow it (checked, and its memory reserved, before it runs).
    /// Returns the slot and the instantiation's stats.
    pub async fn create(
        &self,
        new: NewInstance,
        owner: Option<usize>,
        tenant: &Tenant,
        instantiate: impl Future<Output = Result<LiveInstance, CallFailure>>,
    ) -> Result<(Arc<InstanceSlot>, ExecStats), InstanceError> {
        // Released however this ends, also if the request is dropped while
        // instantiating (the client went away).
        let reservation = self.reserve(new.limits.memory_bytes, tenant)?;
        let mut live = match instantiate.await {
            Ok(live) => live,
            Err(failure) => return Err(InstanceError::Instantiate(Box::new(failure))),
        };
        let stats = live.take_instantiation_stats();
        let info = InstanceInfo {
            module: new.module,
            sha256: new.sha256,
            interface: new.interface,
            tier: live.tier(),
        };
        let slot = Arc::new(Slot::new(
            self.new_id(),
            info,
            new.limits,
            owner,
            tenant.key.clone(),
            live,
        ));
        self.insert(reservation, slot.clone());
        Ok((slot, stats))
    }

    /// Makes an environment, if the caps allow it: its memory limit is
    /// reserved for its whole life, as an instance's is.
    pub fn create_environment(
        &self,
        limits: ExecLimits,
        owner: Option<usize>,
        tenant: &Tenant,
        environment: Environment,
    ) -> Result<Arc<EnvironmentSlot>, InstanceError> {
        let reservation = self.reserve(limits.memory_bytes, tenant)?;
        let slot = Arc::new(Slot::new(
            self.new_id(),
            (),
            limits,
            owner,
            tenant.key.clone(),
            environment,
        ));
        self.insert(reservation, slot.clone());
        Ok(slot)
    }

    /// The instance or environment `id`.
    pub fn get<T: Held>(&self, id: &str) -> Result<Arc<Slot<T, T::Info>>, InstanceError> {
        self.lock()
            .slots
            .get(id)
            .and_then(T::slot)
            .cloned()
            .ok_or_else(|| T::not_found(id))
    }

    /// The node that handed out `id`, when it is not this one (ids are
    /// `NODE.RANDOM`).
    pub fn other_node<'a>(&self, id: &'a str) -> Option<&'a str> {
        let (node, _) = id.split_once('.')?;
        (node != self.settings.node_id).then_some(node)
    }

    /// Every live instance, or every environment, oldest first.
    pub fn list<T: Held>(&self) -> Vec<Arc<Slot<T, T::Info>>> {
        let mut slots: Vec<Arc<Slot<T, T::Info>>> = self.lock().slots.values().filter_map(T::slot).cloned().collect();
        slots.sort_by_key(|s| std::cmp::Reverse(s.age()));
        slots
    }

    /// How many live instances, or environments, there are.
    pub fn count<T: Held>(&self) -> usize {
        self.lock().slots.values().filter(|e| T::slot(e).is_some()).count()
    }

    /// How many instances and environments are live.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether none is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the instance or environment `id`. A call in progress finishes
    /// first; it is freed when that returns.
    pub fn remove<T: Held>(&self, id: &str) -> Result<(), InstanceError> {
        let mut table = self.lock();
        if table.slots.get(id).and_then(T::slot).is_none() {
            return Err(T::not_found(id));
        }
        if let Some(entry) = table.slots.remove(id) {
            table.release(entry.tenant(), entry.memory());
        }
        Ok(())
    }

    /// Drops instances and environments idle for longer than the timeout
    /// and not in a call.
    fn reap(&self) {
        let timeout = self.settings.idle_timeout;
        let mut table = self.lock();
        let expired: Vec<String> = table
            .slots
            .iter()
            .filter(|(_, e)| e.expired(timeout))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(entry) = table.slots.remove(&id) {
                table.release(entry.tenant(), entry.memory());
                tracing::info!(id = %id, "dropped idle instance or environment");
            }
        }
    }
}

/// An instance being made: counted against the caps until it is in the
/// table. Dropped (on failure, or when the request is) it gives back its
/// place and memory.
struct Reservation<'a> {
    table: &'a Instances,
    memory: u64,
    tenant: String,
    /// Gives its place back when dropped; off once the slot holds it.
    armed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut table = self.table.lock();
        table.pending -= 1;
        table.release(&self.tenant, self.memory);
    }
}

/// Checks for idle instances a few times per timeout. Holds a weak handle,
/// so it ends when the table is dropped.
fn spawn_reaper(instances: Weak<Instances>, idle_timeout: Duration) {
    let period = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(10));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            match instances.upgrade() {
                Some(instances) => instances.reap(),
                None => break,
            }
        }
    });
}
