//! The module registry: named, immutable, persisted modules and their links.
//!
//! [`Registry`] keeps an in-memory index of every record (so the hot path of
//! `/execute` reads no storage) in front of a [`ModuleStore`] backend, and
//! uses the engine to validate modules and to resolve a module's host
//! modules into the graph an execution instantiates. Store calls run on the
//! blocking pool; the store, not the index, decides races.

mod components;
mod graph;
pub mod pg_store;
pub mod redb_store;
pub mod seal;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::task::TaskTracker;

use crate::engine::{
    CacheOutcome, CompiledComponent, CompiledModule, EngineError, InterpretedCode, LinkedComponent, LinkedModule,
    ModuleInterface, Sha256Digest, TierMode, WasmEngine, encode_hex,
};
use crate::per_thread::Memo;
pub use graph::LinkGraph;
pub use pg_store::PgStore;
pub use redb_store::RedbStore;
pub use seal::ArtifactSeal;
pub use store::{Changes, ModuleRecord, ModuleStore, StoreError, TokenQuota};

/// Longest module name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Import module names the WebAssembly system interface uses; reserved so a
/// registered module can never stand in for it.
const RESERVED_NAMES: &[&str] = &["wasi_snapshot_preview1", "wasi_unstable"];

/// Failures of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The module name breaks the naming rules.
    #[error("{0}")]
    InvalidName(String),
    /// No module has this name.
    #[error("no module named `{0}` is registered")]
    NotFound(String),
    /// A listed host module is not registered.
    #[error("host module `{0}` is not registered")]
    HostModuleNotFound(String),
    /// The name is taken; names are immutable.
    #[error("a module named `{0}` is already registered; names are immutable, so choose another or delete it first")]
    Exists(String),
    /// The token has used up its storage quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Other modules depend on this one.
    #[error("module `{name}` is a host module of {}; delete those first", dependents.join(", "))]
    InUse { name: String, dependents: Vec<String> },
    /// Validation, compilation or linking failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The storage backend failed.
    #[error("{0}")]
    Storage(String),
    /// The storage backend cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(n) => RegistryError::Exists(n),
            StoreError::NotFound(n) => RegistryError::NotFound(n),
            StoreError::MissingHostModule(n) => RegistryError::HostModuleNotFound(n),
            StoreError::InUse { name, dependents } => RegistryError::InUse { name, dependents },
            StoreError::QuotaExceeded(m) => RegistryError::QuotaExceeded(m),
            StoreError::Backend(m) => RegistryError::Storage(m),
            StoreError::Unavailable(m) => RegistryError::Unavailable(m),
        }
    }
}

/// A registered component, compiled, with its link graph.
pub struct ResolvedComponent {
    pub compiled: Arc<CompiledComponent>,
    pub compile: CacheOutcome,
    /// Registered components it imports from, directly or not, each once,
    /// dependencies first.
    pub graph: Vec<LinkedComponent>,
}

/// A registered module's interpreter form and its link graph's.
pub struct Interpreted {
    pub code: Arc<InterpretedCode>,
    /// Every module it links, dependencies first (see `Registry::link_graph`).
    pub graph: Vec<(String, Arc<InterpretedCode>)>,
    /// The host modules it was registered with.
    pub host_modules: Vec<String>,
}

/// Where a call of a registered module runs ([`Registry::runnable`]).
pub enum Runnable {
    Component(ResolvedComponent),
    /// On the interpreter, with its whole graph.
    Interpreted(Interpreted),
    /// Compiled, linked to `graph` (every registered module it depends on,
    /// dependencies first).
    Compiled {
        root: Arc<CompiledModule>,
        compile: CacheOutcome,
        graph: Vec<LinkedModule>,
    },
}

/// An index entry: the record plus its digest in binary form.
struct Entry {
    record: ModuleRecord,
    digest: Sha256Digest,
    /// Whether the binary is a component, once known (set at registration,
    /// else by `Registry::entry_is_component`): the record does not say, so
    /// an entry indexed from the store learns it at the first call that
    /// needs to know.
    component: std::sync::OnceLock<bool>,
}

impl Entry {
    fn new(record: ModuleRecord, digest: Sha256Digest) -> Self {
        Entry {
            record,
            digest,
            component: std::sync::OnceLock::new(),
        }
    }
}

/// Refuses code compiled from a stored binary whose hash is not the one
/// its record names (a damaged store).
fn verify_digest(name: &str, entry: &Entry, compiled: &Sha256Digest) -> Result<(), RegistryError> {
    if compiled != &entry.digest {
        return Err(RegistryError::Storage(format!(
            "stored binary of module `{name}` does not match its SHA-256"
        )));
    }
    Ok(())
}

/// Named modules, their storage, and their link graphs.
pub struct Registry {
    store: Arc<dyn ModuleStore>,
    engine: WasmEngine,
    quota: TokenQuota,
    index: RwLock<Index>,
    /// Each thread's last few names looked up by [`Self::with_compiled_now`],
    /// with their digests (`None`: the module links others), forgotten at
    /// every change to the index ([`Self::change_index`]); its version
    /// also tells a link graph a thread holds from a stale one ([`graph`]).
    recent: Memo<String, Option<Sha256Digest>>,
    /// Tells this registry's link graphs held by threads from another's.
    id: graph::RegistryId,
    /// The store version the index reflects (see [`Self::sync`]).
    version: AtomicU64,
    artifacts: Artifacts,
    /// Stored artifacts refused because their seal did not verify.
    artifacts_rejected: AtomicU64,
    /// Background compiles under way, which shutdown waits for so that
    /// their artifacts are kept (see [`Self::finish_background`]).
    background: TaskTracker,
}

/// How this node treats the compiled artifacts in its store.
enum Artifacts {
    /// Kept and loaded as they are: a store only this process writes.
    Trusted,
    /// Sealed and verified under the cluster key (`--artifact-key`).
    Sealed(ArtifactSeal),
    /// Neither kept nor loaded: a store other nodes write to, and no key to
    /// tell their artifacts from anyone else's.
    Off,
}

/// How often a node on a shared store announces itself again.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(60);

/// How often the index is checked against a shared store without a hint.
const SYNC_EVERY: Duration = Duration::from_secs(5);

/// Checks a module name: 1 to 128 characters of `A-Z a-z 0-9 _ . -`, not
/// starting with `.` or `-`, and not a reserved system interface name.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    let bad = |why: &str| {
        Err(RegistryError::InvalidName(format!(
            "invalid module name {name:?}: {why}"
        )))
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("it must be 1 to 128 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return bad("use only letters, digits, `_`, `.` and `-`");
    }
    if name.starts_with(['.', '-']) {
        return bad("it must start with a letter, digit or `_`");
    }
    if RESERVED_NAMES.contains(&name) {
        return bad("the name is reserved for the WebAssembly system interface");
    }
    Ok(())
}

fn digest_of(record: &ModuleRecord) -> Result<Sha256Digest, RegistryError> {
    let bytes =
        hex::decode(&record.sha256).map_err(|e| RegistryError::Storage(format!("bad digest in record: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| RegistryError::Storage(format!("bad digest length in record `{}`", record.name)))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::Storage(format!("storage task failed: {e}")))?
        .map_err(RegistryError::from)
}

/// Every record of `store`, indexed by name, with the store's version. The
/// version is read first: changes that land during the listing are applied
/// again by the next sync, which is harmless.
/// The registry's modules by name, hashed with foldhash (seeded per
/// process): every call of a registered module looks its name up here.
type Index = HashMap<String, Arc<Entry>, foldhash::fast::RandomState>;

async fn read_index(store: &Arc<dyn ModuleStore>) -> Result<(u64, Index), RegistryError> {
    let (version, records) = {
        let store = store.clone();
        blocking(move || Ok((store.version()?, store.list()?))).await?
    };
    let mut index = Index::with_capacity_and_hasher(records.len(), Default::default());
    for record in records {
        let digest = digest_of(&record)?;
        index.insert(record.name.clone(), Arc::new(Entry::new(record, digest)));
    }
    Ok((version, index))
}

impl Registry {
    /// Opens the registry over `store`, loading the index of every record.
    pub async fn open(
        store: Arc<dyn ModuleStore>,
        engine: WasmEngine,
        quota: TokenQuota,
        seal: Option<ArtifactSeal>,
    ) -> Result<Self, RegistryError> {
        let artifacts = match seal {
            Some(seal) => Artifacts::Sealed(seal),
            None if store.shared() => {
                tracing::info!("compiled artifacts are not shared between nodes: no --artifact-key");
                Artifacts::Off
            }
            None => Artifacts::Trusted,
        };
        let (version, index) = read_index(&store).await?;
        Ok(Registry {
            store,
            engine,
            quota,
            index: RwLock::new(index),
            recent: Memo::default(),
            id: graph::RegistryId::new(),
            version: AtomicU64::new(version),
            artifacts,
            artifacts_rejected: AtomicU64::new(0),
            background: TaskTracker::new(),
        })
    }

    fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Changes the index, then has every thread forget the names it
    /// remembered from it: every write to the index goes through here.
    fn change_index<R>(&self, change: impl FnOnce(&mut Index) -> R) -> R {
        let changed = change(&mut self.index.write().unwrap_or_else(|p| p.into_inner()));
        self.recent.changed();
        changed
    }

    /// The entry of `name`: from the index, else (on a store other nodes
    /// write to) from the store, so that a module registered on another
    /// node runs here at once, before the change notification arrives.
    async fn lookup(&self, name: &str) -> Result<Arc<Entry>, RegistryError> {
        if let Some(entry) = self.entry(name) {
            return Ok(entry);
        }
        if !self.store.shared() {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        match self.read_record(name).await? {
            Some(record) => self.index_record(record),
            None => Err(RegistryError::NotFound(name.to_string())),
        }
    }

    /// The record `name` as the store has it now.
    async fn read_record(&self, name: &str) -> Result<Option<ModuleRecord>, RegistryError> {
        let (store, name) = (self.store.clone(), name.to_string());
        blocking(move || store.record(&name)).await
    }

    /// Puts `record` into the index (replacing any entry of its name). An
    /// entry already there for the same record stays, with what calls have
    /// learnt of it (whether it is a component): learning it again would
    /// read the binary from the store, which a call of a loaded module
    /// should never need.
    fn index_record(&self, record: ModuleRecord) -> Result<Arc<Entry>, RegistryError> {
        let digest = digest_of(&record)?;
        Ok(self.change_index(|index| {
            if let Some(known) = index.get(&record.name)
                && known.record == record
            {
                return known.clone();
            }
            let name = record.name.clone();
            let entry = Arc::new(Entry::new(record, digest));
            index.insert(name, entry.clone());
            entry
        }))
    }

    /// Keeps the index in step with a store that other nodes write to:
    /// brings it up to date whenever the store hints at a change, and every
    /// few seconds in case a hint was lost. Ends with the registry.
    pub fn start_sync(self: &Arc<Self>) {
        let Some(hints) = self.store.change_hints() else {
            return;
        };
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(SYNC_EVERY, hints.notified()).await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                if let Err(e) = registry.sync().await {
                    tracing::debug!(error = %e, "cannot bring the registry index up to date; retrying");
                }
            }
        });
    }

    /// Applies the store's changes since the version the index reflects:
    /// each changed name is read again (the store, not the hint, says
    /// whether it exists now); when the store no longer has every change,
    /// every record is read again.
    pub async fn sync(&self) -> Result<(), RegistryError> {
        let since = self.version.load(Ordering::Acquire);
        let changes = {
            let store = self.store.clone();
            blocking(move || store.changes_since(since)).await?
        };
        match changes {
            Changes::Since { version, names } => {
                if version == since {
                    return Ok(());
                }
                let unique: HashSet<String> = names.into_iter().collect();
                for name in unique {
                    match self.read_record(&name).await? {
                        Some(record) => {
                            self.index_record(record)?;
                        }
                        None => {
                            self.change_index(|index| index.remove(&name));
                        }
                    }
                }
                self.version.fetch_max(version, Ordering::AcqRel);
            }
            Changes::Gap => {
                let (version, mut index) = read_index(&self.store).await?;
                self.change_index(|kept| {
                    // Unchanged records keep their entries (see `index_record`).
                    for (name, entry) in index.iter_mut() {
                        if let Some(known) = kept.get(name)
                            && known.record == entry.record
                        {
                            *entry = known.clone();
                        }
                    }
                    *kept = index;
                });
                self.version.store(version, Ordering::Release);
                tracing::info!(version, "registry index read again from the store");
            }
        }
        Ok(())
    }

    /// Every record, in name order.
    pub fn list(&self) -> Vec<ModuleRecord> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut records: Vec<ModuleRecord> = index.values().map(|e| e.record.clone()).collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        records
    }

    /// How many modules are registered.
    pub fn len(&self) -> usize {
        self.index.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Registered modules' total binary size in bytes.
    pub fn total_bytes(&self) -> u64 {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.values().map(|e| e.record.size).sum()
    }

    /// Whether the store answers a read (readiness).
    pub async fn check_store(&self) -> Result<(), RegistryError> {
        let store = self.store.clone();
        blocking(move || store.check()).await
    }

    /// Bytes the store occupies on disk, when it is on disk.
    pub fn store_size_on_disk(&self) -> Option<u64> {
        self.store.size_on_disk()
    }

    /// Whether no module is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record of `name`.
    pub async fn get(&self, name: &str) -> Result<ModuleRecord, RegistryError> {
        Ok(self.lookup(name).await?.record.clone())
    }

    /// The binary of `name`.
    pub async fn wasm(&self, name: &str) -> Result<Vec<u8>, RegistryError> {
        let entry = self.lookup(name).await?;
        let store = self.store.clone();
        let sha = entry.record.sha256.clone();
        blocking(move || store.wasm(&sha))
            .await?
            .ok_or_else(|| RegistryError::Storage(format!("binary of module `{name}` is missing from storage")))
    }

    /// The compiled form of `name`: from the cache, else from the compiled
    /// artifact in the store, else compiled from the stored binary (and the
    /// artifact kept for next time).
    pub async fn compiled(&self, name: &str) -> Result<(Arc<CompiledModule>, CacheOutcome), RegistryError> {
        let entry = self.lookup(name).await?;
        self.compile_entry(name, &entry).await
    }

    /// What a call of `name` needs, from one index lookup: its compiled form
    /// and the graph of its host modules. (Used by `crate::resolve`; its
    /// imports were checked at registration.)
    pub async fn resolve_registered(
        &self,
        name: &str,
    ) -> Result<(Arc<CompiledModule>, CacheOutcome, Vec<LinkedModule>), RegistryError> {
        let entry = self.lookup(name).await?;
        let (compiled, outcome) = self.compile_entry(name, &entry).await?;
        let graph = self.link_graph(&entry.record.host_modules).await?;
        Ok((compiled, outcome, graph))
    }

    /// Where a call of `name` runs, decided from one index lookup: a
    /// component, the interpreter (its whole graph there) or compiled code
    /// (see [`Runnable`]). A one-shot call asks this once; asking
    /// [`Self::component`], [`Self::interpreted`] and
    /// [`Self::resolve_registered`] in turn looked the name up three times.
    pub async fn runnable(self: &Arc<Self>, name: &str) -> Result<Runnable, RegistryError> {
        let entry = self.lookup(name).await?;
        if self.entry_is_component(name, &entry).await? {
            return self.component_of(name, &entry).await.map(Runnable::Component);
        }
        if let Some(interpreted) = self.interpreted_entry(name, &entry).await {
            return Ok(Runnable::Interpreted(interpreted));
        }
        let (root, compile) = self.compile_entry(name, &entry).await?;
        let graph = self.link_graph(&entry.record.host_modules).await?;
        Ok(Runnable::Compiled { root, compile, graph })
    }

    /// `f` of what [`Self::runnable`] finds for `name` when it can tell
    /// without awaiting: the module is in the index, compiled in memory (so
    /// neither a component nor interpreted) and links nothing. `None` when
    /// any of that is not so; the caller then asks [`Self::runnable`]. The
    /// name is looked up in the calling thread's memo first, not under the
    /// index's lock, which every core would write (see
    /// [`crate::per_thread`]), and the module is borrowed from the thread's
    /// hold when the thread called it last (see [`WasmEngine::with_cached`]).
    pub fn with_compiled_now<R>(&self, name: &str, f: impl FnOnce(&Arc<CompiledModule>) -> R) -> Option<R> {
        let digest = self
            .recent
            .answer(name, Some, || {
                let entry = self.entry(name)?;
                let digest = entry.record.host_modules.is_empty().then_some(entry.digest);
                Some((digest, digest))
            })
            .flatten()?;
        self.engine.with_cached(&digest, f)
    }

    async fn compile_entry(
        &self,
        name: &str,
        entry: &Entry,
    ) -> Result<(Arc<CompiledModule>, CacheOutcome), RegistryError> {
        if let Some(hit) = self.engine.cached(&entry.digest) {
            return Ok((hit, CacheOutcome::Cached));
        }
        if let Some(artifact) = self.stored_artifact(name, entry).await? {
            let size = entry.record.size as usize;
            match self.engine.load_artifact(entry.digest, size, artifact).await {
                Ok(loaded) => return Ok((loaded, CacheOutcome::Loaded)),
                Err(e) => tracing::warn!(module = name, error = %e, "unusable compiled artifact; compiling again"),
            }
        }
        let wasm = self.wasm(name).await?;
        let (compiled, outcome) = self.engine.compile(wasm).await?;
        verify_digest(name, entry, compiled.sha256())?;
        self.keep_artifact(&compiled).await;
        Ok((compiled, outcome))
    }

    /// The interpreter's form of `name` and of its link graph, when its
    /// calls should run there: it is not compiled in memory nor (in `auto`
    /// mode) in the store, and the interpreter runs it and every module it
    /// links. A registered module found so (just registered, or after a
    /// restart that came before its artifact was kept) is compiled in the
    /// background meanwhile, in `auto` mode.
    pub async fn interpreted(self: &Arc<Self>, name: &str) -> Option<Interpreted> {
        let entry = self.lookup(name).await.ok()?;
        self.interpreted_entry(name, &entry).await
    }

    /// [`Self::interpreted`] of an entry already looked up.
    async fn interpreted_entry(self: &Arc<Self>, name: &str, entry: &Entry) -> Option<Interpreted> {
        let code = self.interpreted_root(name, entry).await?;
        let hosts = &entry.record.host_modules;
        let graph = self.interpreted_graph(hosts).await.ok()??;
        Some(Interpreted {
            code,
            graph,
            host_modules: hosts.clone(),
        })
    }

    /// The interpreter's form of `entry` itself, when its calls should run
    /// there (see [`Self::interpreted`]).
    async fn interpreted_root(self: &Arc<Self>, name: &str, entry: &Entry) -> Option<Arc<InterpretedCode>> {
        if self.engine.settings().tier == TierMode::Compiled || self.engine.is_compiled(&entry.digest) {
            return None;
        }
        if let Some(code) = self.engine.parsed_code(&entry.digest) {
            return Some(code);
        }
        // Cold: not parsed since this process started. Loading a stored
        // artifact beats interpreting; without one, interpret and compile.
        let has_artifact = match self.artifacts {
            Artifacts::Off => false,
            Artifacts::Trusted | Artifacts::Sealed(_) => {
                let (store, sha) = (self.store.clone(), entry.record.sha256.clone());
                let engine_hash = self.engine.compatibility_hash().to_string();
                blocking(move || store.has_artifact(&sha, &engine_hash)).await.ok()?
            }
        };
        if has_artifact && self.engine.settings().tier == TierMode::Auto {
            return None;
        }
        let code = self.parse_stored(name, entry).await.ok()??;
        self.compile_later(name);
        Some(code)
    }

    /// Reads `entry`'s binary and parses it for the interpreter (kept by the
    /// engine for [`WasmEngine::parsed_code`]); `None` if the interpreter
    /// does not run it, or the binary is not the one recorded.
    async fn parse_stored(&self, name: &str, entry: &Entry) -> Result<Option<Arc<InterpretedCode>>, RegistryError> {
        let wasm = self.wasm(name).await?;
        Ok(self
            .engine
            .interpret_registered(&wasm)
            .await
            .filter(|code| code.digest() == &entry.digest))
    }

    /// Compiles `name` on the compile pool without anyone waiting for it,
    /// and keeps its artifact (in `auto` mode; `--tier interpreter` never
    /// compiles in the background).
    pub fn compile_later(self: &Arc<Self>, name: &str) {
        if self.engine.settings().tier != TierMode::Auto {
            return;
        }
        let (registry, name) = (self.clone(), name.to_string());
        self.background.spawn(async move {
            if let Err(e) = registry.compiled(&name).await {
                tracing::warn!(module = %name, error = %e, "background compile of a registered module failed");
            }
        });
    }

    /// Waits up to `within` for the background compiles under way to end,
    /// each with its artifact kept. Shutdown calls it once requests have
    /// finished: a module whose compile is cut off is compiled again after
    /// the restart, and interpreted meanwhile.
    pub async fn finish_background(&self, within: Duration) {
        self.background.close();
        let pending = self.background.len();
        if pending == 0 {
            return;
        }
        tracing::info!(pending, "waiting for background compiles to keep their artifacts");
        if tokio::time::timeout(within, self.background.wait()).await.is_err() {
            tracing::warn!(
                pending = self.background.len(),
                "background compiles still running at shutdown; they are compiled again after a restart"
            );
        }
    }

    /// The exports and imports of `name`: from the interpreter's form while
    /// it has one, so that describing a module never waits for a compile.
    pub async fn interface(self: &Arc<Self>, name: &str) -> Result<ModuleInterface, RegistryError> {
        let entry = self.lookup(name).await?;
        // The module's own form is enough: its graph plays no part here.
        if let Some(code) = self.interpreted_root(name, &entry).await {
            return Ok(code.interface.clone());
        }
        let (compiled, _) = self.compiled(name).await?;
        Ok(compiled.interface())
    }

    /// The machine code stored for `entry` and this engine, if there is
    /// some this node may load: sealed artifacts must verify (one that
    /// does not is counted, logged and left to be replaced by a compile).
    async fn stored_artifact(&self, name: &str, entry: &Entry) -> Result<Option<Vec<u8>>, RegistryError> {
        if matches!(self.artifacts, Artifacts::Off) {
            return Ok(None);
        }
        let (store, sha) = (self.store.clone(), entry.record.sha256.clone());
        let engine_hash = self.engine.compatibility_hash().to_string();
        let artifact = blocking(move || store.artifact(&sha, &engine_hash)).await?;
        let Artifacts::Sealed(seal) = &self.artifacts else {
            return Ok(artifact);
        };
        let Some(sealed) = artifact else {
            return Ok(None);
        };
        match seal.open(&entry.record.sha256, self.engine.compatibility_hash(), sealed) {
            Ok(code) => Ok(Some(code)),
            Err(why) => {
                self.artifacts_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(module = name, reason = %why, "refused to load a stored compiled artifact; compiling instead");
                Ok(None)
            }
        }
    }

    /// Whether other nodes share this registry's store.
    pub fn is_shared(&self) -> bool {
        self.store.shared()
    }

    /// Records in the shared store that node `id` answers at `url`.
    pub async fn announce_node(&self, id: &str, url: &str) -> Result<(), RegistryError> {
        let (store, id, url) = (self.store.clone(), id.to_string(), url.to_string());
        blocking(move || store.announce_node(&id, &url)).await
    }

    /// Announces this node again every minute while the registry lives,
    /// so that its row stays fresh (the store forgets nodes silent for a
    /// day) and comes back if the database lost it.
    pub fn keep_announcing(self: &Arc<Self>, id: String, url: String) {
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ANNOUNCE_EVERY).await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                if let Err(e) = registry.announce_node(&id, &url).await {
                    tracing::debug!(error = %e, "cannot announce this node; retrying");
                }
            }
        });
    }

    /// The address node `id` advertised, if it did.
    pub async fn node_url(&self, id: &str) -> Result<Option<String>, RegistryError> {
        let (store, id) = (self.store.clone(), id.to_string());
        blocking(move || store.node_url(&id)).await
    }

    /// Stores the record of job `id` (jobs live in the modules' store; see
    /// `api::jobs`).
    pub async fn put_job(&self, id: &str, record: Vec<u8>) -> Result<(), RegistryError> {
        let (store, id) = (self.store.clone(), id.to_string());
        blocking(move || store.put_job(&id, &record)).await
    }

    /// The stored record of job `id`.
    pub async fn job(&self, id: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let (store, id) = (self.store.clone(), id.to_string());
        blocking(move || store.job(&id)).await
    }

    /// Every stored job record.
    pub async fn jobs(&self) -> Result<Vec<Vec<u8>>, RegistryError> {
        let store = self.store.clone();
        blocking(move || store.jobs()).await
    }

    /// Forgets job `id`.
    pub async fn remove_job(&self, id: &str) -> Result<(), RegistryError> {
        let (store, id) = (self.store.clone(), id.to_string());
        blocking(move || store.remove_job(&id)).await
    }

    /// Stored artifacts refused because their seal did not verify.
    pub fn artifacts_rejected(&self) -> u64 {
        self.artifacts_rejected.load(Ordering::Relaxed)
    }

    /// Stores the compiled artifact of `compiled` (sealed under the cluster
    /// key when there is one). A failure is logged, not returned:
    /// artifacts only save time.
    async fn keep_artifact(&self, compiled: &Arc<CompiledModule>) {
        if matches!(self.artifacts, Artifacts::Off) {
            return;
        }
        let mut artifact = match self.engine.artifact(compiled).await {
            Ok(a) => a,
            Err(e) => return tracing::warn!(error = %e, "cannot serialize a compiled module"),
        };
        let (store, sha) = (self.store.clone(), compiled.sha256_hex().to_string());
        let engine_hash = self.engine.compatibility_hash().to_string();
        if let Artifacts::Sealed(seal) = &self.artifacts {
            artifact = seal.seal(&sha, &engine_hash, &artifact);
        }
        if let Err(e) = blocking(move || store.put_artifact(&sha, &engine_hash, &artifact)).await {
            tracing::warn!(error = %e, "cannot store a compiled artifact");
        }
    }

    /// Resolves `hosts` and everything they depend on into a list in which
    /// each module appears once, after all of its own host modules.
    pub async fn link_graph(&self, hosts: &[String]) -> Result<Vec<LinkedModule>, RegistryError> {
        let mut graph = Vec::new();
        for name in self.graph_order(hosts).await? {
            let (compiled, _) = self.compiled(&name).await?;
            graph.push(LinkedModule { name, compiled });
        }
        Ok(graph)
    }

    /// `f` of [`Self::link_graph`] when it can be told without awaiting:
    /// every module of the graph is in the index and compiled in memory.
    /// `None` otherwise (the caller then asks [`Self::link_graph`], which
    /// reads the store, compiles, and names what is missing). The graph is
    /// lent: the calling thread holds it for its next call of the same
    /// hosts, until the index or the compile cache changes ([`graph`]).
    pub fn with_link_graph_now<R>(&self, hosts: &[String], f: impl FnOnce(&LinkGraph) -> R) -> Option<R> {
        // Read before looking up (see `per_thread::lend`).
        let versions = (self.recent.version(), self.engine.cache_version());
        let count_hits = |graph: &LinkGraph| {
            // Each use of a module found in the compile cache is a hit, as
            // when it is looked up there call by call.
            self.engine.count_cache_hits(graph.modules.len() as u64);
            f(graph)
        };
        graph::with(self.id, versions, hosts, || self.link_graph_now(hosts), count_hits)
    }

    /// The lookup of [`Self::with_link_graph_now`].
    fn link_graph_now(&self, hosts: &[String]) -> Option<LinkGraph> {
        let order = self.indexed_graph_order(hosts).ok()?;
        let mut modules = Vec::with_capacity(order.len());
        for name in order {
            let compiled = self.engine.cached_uncounted(&self.entry(&name)?.digest)?;
            modules.push(LinkedModule { name, compiled });
        }
        let direct = Self::direct_hosts(&modules, hosts);
        Some(LinkGraph { modules, direct })
    }

    /// The interpreter's form of `hosts` and everything they depend on, in
    /// the order of [`Self::link_graph`] (empty for no hosts); `None` when
    /// one of them is not code the interpreter runs (the graph then runs
    /// compiled, whole), and with `--tier compiled`.
    pub async fn interpreted_graph(
        &self,
        hosts: &[String],
    ) -> Result<Option<Vec<(String, Arc<InterpretedCode>)>>, RegistryError> {
        if self.engine.settings().tier == TierMode::Compiled {
            return Ok(None);
        }
        let mut graph = Vec::new();
        for name in self.graph_order(hosts).await? {
            let Some(entry) = self.entry(&name) else {
                return Err(RegistryError::HostModuleNotFound(name));
            };
            let code = match self.engine.parsed_code(&entry.digest) {
                Some(code) => code,
                None => match self.parse_stored(&name, &entry).await? {
                    Some(code) => code,
                    None => return Ok(None),
                },
            };
            graph.push((name, code));
        }
        Ok(Some(graph))
    }

    /// The names of `hosts` and everything they depend on, each once, after
    /// all of its own host modules. A host the index does not have is asked
    /// of a shared store (another node may have registered it a moment
    /// ago), and the walk starts again; only then is it
    /// [`RegistryError::HostModuleNotFound`].
    async fn graph_order(&self, hosts: &[String]) -> Result<Vec<String>, RegistryError> {
        loop {
            match self.indexed_graph_order(hosts) {
                Err(RegistryError::HostModuleNotFound(name)) if self.store.shared() => {
                    self.lookup(&name).await.map_err(|e| match e {
                        RegistryError::NotFound(name) => RegistryError::HostModuleNotFound(name),
                        other => other,
                    })?;
                }
                order => return order,
            }
        }
    }

    /// [`Self::graph_order`] by the index alone.
    fn indexed_graph_order(&self, hosts: &[String]) -> Result<Vec<String>, RegistryError> {
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        // Iterative post-order walk; the graph is acyclic because a module's
        // host modules must exist before it is registered and names never
        // change, but `seen` also guards against a corrupted store.
        let mut order: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut stack: Vec<(String, bool)> = hosts.iter().rev().map(|h| (h.clone(), false)).collect();
        while let Some((name, expanded)) = stack.pop() {
            if expanded {
                order.push(name);
                continue;
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            let entry = self
                .entry(&name)
                .ok_or_else(|| RegistryError::HostModuleNotFound(name.clone()))?;
            stack.push((name, true));
            for host in entry.record.host_modules.iter().rev() {
                if !seen.contains(host) {
                    stack.push((host.clone(), false));
                }
            }
        }
        Ok(order)
    }

    /// The direct host modules `hosts`, picked out of a resolved `graph`.
    pub fn direct_hosts(graph: &[LinkedModule], hosts: &[String]) -> Vec<LinkedModule> {
        graph.iter().filter(|m| hosts.contains(&m.name)).cloned().collect()
    }

    /// The checks a new registration passes before its code is compiled:
    /// the name is valid and free, and `owner` has room for `size` bytes.
    pub fn check_new(&self, name: &str, size: u64, owner: Option<&str>) -> Result<(), RegistryError> {
        validate_name(name)?;
        if self.entry(name).is_some() {
            return Err(RegistryError::Exists(name.to_string()));
        }
        if let Some(owner) = owner {
            self.check_quota(owner, size)?;
        }
        Ok(())
    }

    /// Stores a module that `crate::resolve` has checked (compiled and
    /// linked, or parsed for the interpreter) under `name`, keeps its
    /// compiled artifact if it has one, and indexes it. The store, not
    /// the earlier check, decides a race for the name.
    pub async fn insert(
        &self,
        name: &str,
        wasm: Vec<u8>,
        digest: Sha256Digest,
        compiled: Option<&Arc<CompiledModule>>,
        host_modules: Vec<String>,
        owner: Option<String>,
    ) -> Result<ModuleRecord, RegistryError> {
        let record = ModuleRecord {
            name: name.to_string(),
            sha256: encode_hex(digest),
            size: wasm.len() as u64,
            host_modules,
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            owner,
        };
        let component = crate::engine::is_component(&wasm);
        {
            let store = self.store.clone();
            let record = record.clone();
            let quota = self.quota;
            blocking(move || store.insert(&record, &wasm, Some(&quota))).await?;
        }
        if let Some(compiled) = compiled {
            self.keep_artifact(compiled).await;
        }
        let entry = Entry::new(record.clone(), digest);
        let _ = entry.component.set(component);
        let entry = Arc::new(entry);
        self.change_index(|index| index.insert(name.to_string(), entry));
        Ok(record)
    }

    /// Refuses early a registration that would take `owner` past its caps,
    /// by the index (before anything is compiled). The store checks again
    /// in its insert's transaction, which decides races between requests
    /// and between nodes.
    fn check_quota(&self, owner: &str, size: u64) -> Result<(), RegistryError> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let (count, bytes) = index
            .values()
            .filter(|e| e.record.owner.as_deref() == Some(owner))
            .fold((0usize, 0u64), |(n, b), e| (n + 1, b + e.record.size));
        match self.quota.refuses(count, bytes, size) {
            Some(why) => Err(RegistryError::QuotaExceeded(why)),
            None => Ok(()),
        }
    }

    /// Deletes `name`, unless other modules depend on it.
    pub async fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let store = self.store.clone();
        let owned = name.to_string();
        blocking(move || store.remove(&owned)).await?;
        self.change_index(|index| index.remove(name));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn names_follow_the_rules() {
        for ok in ["utils", "a", "my-mod.v2", "_x", "A1"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "white space",
            "wasi_snapshot_preview1",
            &"x".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
