//! The storage contract for registered modules.
//!
//! The trait is small and synchronous on purpose: every backend (the
//! embedded redb file today, a networked database later) implements the same
//! few operations, each atomic on its own, and callers run them on the
//! blocking pool. Integrity rules that must hold across concurrent writers
//! (names are unique, a module's host modules exist, a module others depend
//! on cannot be removed) are part of the contract, so that several server
//! nodes sharing one database keep them too.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// What is stored about a registered module besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleRecord {
    /// Unique, immutable name; also the import module name dependents use.
    pub name: String,
    /// SHA-256 of the module binary, lowercase hex.
    pub sha256: String,
    /// Size of the module binary in bytes.
    pub size: u64,
    /// Registered modules whose exports this module may import.
    pub host_modules: Vec<String>,
    /// When it was registered, RFC 3339 UTC.
    pub created: String,
    /// Fingerprint of the API token that registered it (absent when access
    /// control is off): what per-token storage caps count against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Storage caps per API token (`--max-modules-per-token`,
/// `--max-bytes-per-token`).
#[derive(Debug, Clone, Copy)]
pub struct TokenQuota {
    pub max_modules: usize,
    pub max_bytes: u64,
}

impl TokenQuota {
    /// Why a token that has `count` modules taking `bytes` bytes may not
    /// add one of `size` bytes, if it may not. One rule for the registry's
    /// early check and for every store's check inside its transaction.
    pub fn refuses(&self, count: usize, bytes: u64, size: u64) -> Option<String> {
        if count >= self.max_modules {
            return Some(format!(
                "this token has registered {count} modules, its maximum (--max-modules-per-token); delete some first"
            ));
        }
        if bytes.saturating_add(size) > self.max_bytes {
            return Some(format!(
                "this token's modules take {bytes} bytes; adding {size} would pass its maximum of {} (--max-bytes-per-token)",
                self.max_bytes
            ));
        }
        None
    }
}

/// Failures of a [`ModuleStore`] operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name is taken.
    #[error("a module named `{0}` is already registered")]
    Exists(String),
    /// No module has this name.
    #[error("no module named `{0}` is registered")]
    NotFound(String),
    /// A host module named by the new record is not stored.
    #[error("host module `{0}` is not registered")]
    MissingHostModule(String),
    /// The record's owner is at its storage caps.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Other modules list this one as a host module.
    #[error("module `{name}` is a host module of {}; delete those first", dependents.join(", "))]
    InUse { name: String, dependents: Vec<String> },
    /// The backend failed (I/O, corruption).
    #[error("storage failure: {0}")]
    Backend(String),
    /// The backend cannot be reached now (a networked database that is
    /// down or unreachable); retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// Persistent storage of module records and binaries.
pub trait ModuleStore: Send + Sync + 'static {
    /// Every stored record, in name order.
    fn list(&self) -> Result<Vec<ModuleRecord>, StoreError>;

    /// Stores `record` and its binary, atomically. Fails with
    /// [`StoreError::Exists`] if the name is taken (of two concurrent inserts
    /// of one name exactly one succeeds), with
    /// [`StoreError::MissingHostModule`] if a host module is not stored, and,
    /// when `quota` is given and the record has an owner, with
    /// [`StoreError::QuotaExceeded`] if the owner's records would pass it
    /// (checked in the same transaction: concurrent inserts for one owner,
    /// from any node, cannot overshoot). When it returns `Ok`, the record
    /// survives a crash.
    fn insert(&self, record: &ModuleRecord, wasm: &[u8], quota: Option<&TokenQuota>) -> Result<(), StoreError>;

    /// The binary with this SHA-256 (hex), if stored.
    fn wasm(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The compiled artifact of the binary `sha256` for the engine whose
    /// compatibility hash is `engine`, if one was stored.
    fn artifact(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Keeps a compiled artifact. Artifacts are a cache: losing one costs a
    /// compile, never correctness, so this is not atomic with `insert`.
    fn put_artifact(&self, sha256: &str, engine: &str, artifact: &[u8]) -> Result<(), StoreError>;

    /// Removes the record `name`, atomically refusing with
    /// [`StoreError::InUse`] while another record lists it as a host module.
    /// Its binary (and compiled artifacts) go too unless another record
    /// shares it.
    fn remove(&self, name: &str) -> Result<(), StoreError>;

    /// Stores the record of job `id` (opaque bytes: the API's JSON),
    /// replacing an earlier one. When it returns `Ok`, the record survives
    /// a crash.
    fn put_job(&self, id: &str, record: &[u8]) -> Result<(), StoreError>;

    /// The record of job `id`, if stored.
    fn job(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every stored job record.
    fn jobs(&self) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Forgets job `id` (nothing happens if it is not stored).
    fn remove_job(&self, id: &str) -> Result<(), StoreError>;

    /// Proves the backend answers (a read that touches storage), for
    /// `GET /readyz`. A networked backend would round-trip to its server.
    fn check(&self) -> Result<(), StoreError>;

    /// Bytes the store occupies on disk, when it knows (`None` in memory).
    fn size_on_disk(&self) -> Option<u64>;

    /// Whether a compiled artifact of `sha256` for `engine` is stored.
    fn has_artifact(&self, sha256: &str, engine: &str) -> Result<bool, StoreError> {
        Ok(self.artifact(sha256, engine)?.is_some())
    }

    /// The record `name`, if stored.
    fn record(&self, name: &str) -> Result<Option<ModuleRecord>, StoreError> {
        Ok(self.list()?.into_iter().find(|r| r.name == name))
    }

    /// Whether other processes (other nodes) write to this store too, so
    /// that a reader's view must be brought up to date (see
    /// [`Self::changes_since`]). A store with one writer never changes
    /// behind its back.
    fn shared(&self) -> bool {
        false
    }

    /// The store's registry version: a counter that every insert and
    /// removal advances by one, in commit order (0 where nothing else
    /// writes).
    fn version(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// The names of the records inserted or removed after `version`, with
    /// the version they bring the reader to; [`Changes::Gap`] when the
    /// store no longer knows every change since then (the reader must list
    /// everything again).
    fn changes_since(&self, version: u64) -> Result<Changes, StoreError> {
        Ok(Changes::Since {
            version,
            names: Vec::new(),
        })
    }

    /// Woken when the store may have changed (a hint: versions decide);
    /// `None` for a store that does not tell.
    fn change_hints(&self) -> Option<Arc<Notify>> {
        None
    }

    /// Records that node `id` is reachable at `url`.
    fn announce_node(&self, _id: &str, _url: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// The advertised address of node `id`, if it announced one.
    fn node_url(&self, _id: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}

/// What changed in a store after a given version (see
/// [`ModuleStore::changes_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// These names changed; reading them brings the reader to `version`.
    Since { version: u64, names: Vec<String> },
    /// Too far behind: read every record again.
    Gap,
}
