//! Live instances that keep their memory and globals across calls.
//!
//! Each instance owns its own store. Calls on one instance are serialized by
//! its async mutex; different instances run in parallel. The table is
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

use crate::engine::{CallFailure, ExecLimits, ExecStats, LiveInstance, ModuleInterface, Tier};

/// Bounds on the instance table.
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    /// Most live instances at once.
    pub max_instances: usize,
    /// Most memory reserved by all live instances together, in bytes.
    pub max_total_memory_bytes: u64,
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
    #[error("{0}")]
    Capacity(String),
    #[error("instantiation failed")]
    Instantiate(Box<CallFailure>),
}

/// One live instance and what is known about it without locking it.
pub struct Slot {
    pub id: String,
    /// The registered module name, or `inline` for inline code.
    pub module: String,
    pub sha256: String,
    pub interface: ModuleInterface,
    pub limits: ExecLimits,
    /// The tier that runs its calls, for its whole life.
    pub tier: Tier,
    /// The token that created it (`None` when access control is off).
    pub owner: Option<usize>,
    pub created: SystemTime,
    created_at: Instant,
    last_used: Mutex<Instant>,
    calls: AtomicU64,
    /// The instance itself; holding the lock is holding the right to call.
    pub live: tokio::sync::Mutex<LiveInstance>,
}

impl Slot {
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
}

struct Table {
    slots: HashMap<String, Arc<Slot>>,
    /// Memory reserved by live instances plus those being created.
    reserved_memory: u64,
    /// Instances being created (counted against the cap).
    pending: usize,
}

/// What the table records of an instance about to be made.
pub struct NewInstance {
    /// The registered module name, or `inline` for inline code.
    pub module: String,
    pub sha256: String,
    pub interface: ModuleInterface,
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

    /// Makes a new live instance by running `instantiate`, if the caps
    /// allow it (checked, and its memory reserved, before it runs).
    /// Returns the slot and the instantiation's stats.
    pub async fn create(
        &self,
        new: NewInstance,
        owner: Option<usize>,
        instantiate: impl Future<Output = Result<LiveInstance, CallFailure>>,
    ) -> Result<(Arc<Slot>, ExecStats), InstanceError> {
        let memory = new.limits.memory_bytes;
        {
            let mut table = self.lock();
            if table.slots.len() + table.pending >= self.settings.max_instances {
                return Err(InstanceError::Capacity(format!(
                    "the server holds its maximum of {} live instances; delete one or let idle ones expire",
                    self.settings.max_instances
                )));
            }
            if table.reserved_memory.saturating_add(memory) > self.settings.max_total_memory_bytes {
                return Err(InstanceError::Capacity(format!(
                    "live instances have reserved {} of {} bytes of memory; this one asks for {memory} (lower limits.memory_bytes, or delete an instance)",
                    table.reserved_memory, self.settings.max_total_memory_bytes
                )));
            }
            table.pending += 1;
            table.reserved_memory += memory;
        }
        // Released however this ends, also if the request is dropped while
        // instantiating (the client went away).
        let reservation = Reservation { table: self, memory };
        let created = instantiate.await;
        let mut live = match created {
            Ok(live) => live,
            Err(failure) => return Err(InstanceError::Instantiate(Box::new(failure))),
        };
        std::mem::forget(reservation);
        let mut table = self.lock();
        table.pending -= 1;
        let stats = live.take_instantiation_stats();
        let now = Instant::now();
        let slot = Arc::new(Slot {
            id: format!("{}.{}", self.settings.node_id, uuid::Uuid::new_v4().simple()),
            tier: live.tier(),
            module: new.module,
            sha256: new.sha256,
            interface: new.interface,
            limits: new.limits,
            owner,
            created: SystemTime::now(),
            created_at: now,
            last_used: Mutex::new(now),
            calls: AtomicU64::new(0),
            live: tokio::sync::Mutex::new(live),
        });
        table.slots.insert(slot.id.clone(), slot.clone());
        Ok((slot, stats))
    }

    /// The instance `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Slot>, InstanceError> {
        self.lock()
            .slots
            .get(id)
            .cloned()
            .ok_or_else(|| InstanceError::NotFound(id.to_string()))
    }

    /// The node that handed out `id`, when it is not this one (ids are
    /// `NODE.RANDOM`).
    pub fn other_node<'a>(&self, id: &'a str) -> Option<&'a str> {
        let (node, _) = id.split_once('.')?;
        (node != self.settings.node_id).then_some(node)
    }

    /// Every live instance, oldest first.
    pub fn list(&self) -> Vec<Arc<Slot>> {
        let mut slots: Vec<Arc<Slot>> = self.lock().slots.values().cloned().collect();
        slots.sort_by_key(|s| std::cmp::Reverse(s.age()));
        slots
    }

    /// How many instances are live.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no instance is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the instance `id`. A call in progress finishes first; the
    /// instance is freed when it returns.
    pub fn remove(&self, id: &str) -> Result<(), InstanceError> {
        let mut table = self.lock();
        let slot = table
            .slots
            .remove(id)
            .ok_or_else(|| InstanceError::NotFound(id.to_string()))?;
        table.reserved_memory -= slot.limits.memory_bytes;
        Ok(())
    }

    /// Drops instances idle for longer than the timeout and not in a call.
    fn reap(&self) {
        let timeout = self.settings.idle_timeout;
        let mut table = self.lock();
        let expired: Vec<String> = table
            .slots
            .values()
            .filter(|s| s.idle() >= timeout && s.live.try_lock().is_ok())
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            if let Some(slot) = table.slots.remove(&id) {
                table.reserved_memory -= slot.limits.memory_bytes;
                tracing::info!(instance = %id, "dropped idle instance");
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
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        table.pending -= 1;
        table.reserved_memory -= self.memory;
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
