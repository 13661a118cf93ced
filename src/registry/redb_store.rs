//! [`ModuleStore`] on redb, an embedded, crash-safe key-value store.
//!
//! redb commits are copy-on-write with a checksummed commit record and an
//! fsync, so an acknowledged registration survives a crash and a torn write
//! is never visible. Write transactions are serialized by redb itself, which
//! is what makes check-then-insert on a name atomic. With `--memory` the same
//! code runs on redb's in-memory backend, so both modes share one tested path.
//!
//! Layout: `modules` maps name → JSON [`ModuleRecord`]; `blobs` maps SHA-256
//! hex → module binary (content-addressed, so identical modules registered
//! under two names are stored once); `artifacts` maps `sha256/engine-hash` →
//! the compiled module, so a restart does not recompile.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::store::{ModuleRecord, ModuleStore, StoreError, TokenQuota};

const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
const ARTIFACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("artifacts");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// Artifacts are keyed `<sha256>/<engine hash>`, so one binary can have an
/// artifact per engine version and all of a binary's are found by prefix.
fn artifact_key(sha256: &str, engine: &str) -> String {
    format!("{sha256}/{engine}")
}

/// The embedded store.
pub struct RedbStore {
    db: Database,
    /// The database file; `None` for the in-memory backend.
    path: Option<std::path::PathBuf>,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the database file `path`, keeping at most
    /// `cache_bytes` of its pages in memory (redb's default is 1 GiB, which
    /// a server holding thousands of compiled artifacts would slowly fill).
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        Self::with_tables(db, Some(path.to_path_buf()))
    }

    /// A store that lives in memory only and is gone when dropped.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(backend)?;
        Self::with_tables(db, None)
    }

    fn with_tables(db: Database, path: Option<std::path::PathBuf>) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(MODULES).map_err(backend)?;
        txn.open_table(BLOBS).map_err(backend)?;
        txn.open_table(ARTIFACTS).map_err(backend)?;
        txn.open_table(JOBS).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(RedbStore { db, path })
    }
}

fn decode(bytes: &[u8]) -> Result<ModuleRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend(format!("unreadable module record: {e}")))
}

impl ModuleStore for RedbStore {
    fn put_job(&self, id: &str, record: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        txn.open_table(JOBS)
            .map_err(backend)?
            .insert(id, record)
            .map_err(backend)?;
        txn.commit().map_err(backend)
    }

    fn job(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(JOBS).map_err(backend)?;
        Ok(table.get(id).map_err(backend)?.map(|v| v.value().to_vec()))
    }

    fn jobs(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(JOBS).map_err(backend)?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(backend)? {
            records.push(entry.map_err(backend)?.1.value().to_vec());
        }
        Ok(records)
    }

    fn remove_job(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        txn.open_table(JOBS).map_err(backend)?.remove(id).map_err(backend)?;
        txn.commit().map_err(backend)
    }

    fn list(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(MODULES).map_err(backend)?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(backend)? {
            let (_, value) = entry.map_err(backend)?;
            records.push(decode(value.value())?);
        }
        Ok(records)
    }

    fn insert(&self, record: &ModuleRecord, wasm: &[u8], quota: Option<&TokenQuota>) -> Result<(), StoreError> {
        let encoded = serde_json::to_vec(record).map_err(backend)?;
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut modules = txn.open_table(MODULES).map_err(backend)?;
            if modules.get(record.name.as_str()).map_err(backend)?.is_some() {
                return Err(StoreError::Exists(record.name.clone()));
            }
            // One writer at a time: what this transaction reads is current.
            if let (Some(quota), Some(owner)) = (quota, record.owner.as_deref()) {
                let (mut count, mut bytes) = (0usize, 0u64);
                for entry in modules.iter().map_err(backend)? {
                    let (_, value) = entry.map_err(backend)?;
                    let other = decode(value.value())?;
                    if other.owner.as_deref() == Some(owner) {
                        count += 1;
                        bytes += other.size;
                    }
                }
                if let Some(why) = quota.refuses(count, bytes, record.size) {
                    return Err(StoreError::QuotaExceeded(why));
                }
            }
            for host in &record.host_modules {
                if modules.get(host.as_str()).map_err(backend)?.is_none() {
                    return Err(StoreError::MissingHostModule(host.clone()));
                }
            }
            modules
                .insert(record.name.as_str(), encoded.as_slice())
                .map_err(backend)?;
            let mut blobs = txn.open_table(BLOBS).map_err(backend)?;
            if blobs.get(record.sha256.as_str()).map_err(backend)?.is_none() {
                blobs.insert(record.sha256.as_str(), wasm).map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)
    }

    fn wasm(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(BLOBS).map_err(backend)?;
        Ok(table.get(sha256).map_err(backend)?.map(|v| v.value().to_vec()))
    }

    fn artifact(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(ARTIFACTS).map_err(backend)?;
        Ok(table
            .get(artifact_key(sha256, engine).as_str())
            .map_err(backend)?
            .map(|v| v.value().to_vec()))
    }

    fn put_artifact(&self, sha256: &str, engine: &str, artifact: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            // Only for binaries still stored: a module deleted meanwhile
            // leaves no orphan artifact behind.
            if txn
                .open_table(BLOBS)
                .map_err(backend)?
                .get(sha256)
                .map_err(backend)?
                .is_none()
            {
                return Ok(());
            }
            let mut table = txn.open_table(ARTIFACTS).map_err(backend)?;
            table
                .insert(artifact_key(sha256, engine).as_str(), artifact)
                .map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    fn remove(&self, name: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut modules = txn.open_table(MODULES).map_err(backend)?;
            let target = match modules.get(name).map_err(backend)? {
                Some(v) => decode(v.value())?,
                None => return Err(StoreError::NotFound(name.to_string())),
            };
            let mut dependents = Vec::new();
            let mut blob_shared = false;
            for entry in modules.iter().map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                if key.value() == name {
                    continue;
                }
                let other = decode(value.value())?;
                if other.host_modules.iter().any(|h| h == name) {
                    dependents.push(other.name.clone());
                }
                blob_shared |= other.sha256 == target.sha256;
            }
            if !dependents.is_empty() {
                return Err(StoreError::InUse {
                    name: name.to_string(),
                    dependents,
                });
            }
            modules.remove(name).map_err(backend)?;
            if !blob_shared {
                txn.open_table(BLOBS)
                    .map_err(backend)?
                    .remove(target.sha256.as_str())
                    .map_err(backend)?;
                let mut artifacts = txn.open_table(ARTIFACTS).map_err(backend)?;
                let prefix = format!("{}/", target.sha256);
                let keys: Vec<String> = artifacts
                    .range(prefix.as_str()..)
                    .map_err(backend)?
                    .map_while(|entry| entry.ok().map(|(k, _)| k.value().to_string()))
                    .take_while(|k| k.starts_with(&prefix))
                    .collect();
                for key in keys {
                    artifacts.remove(key.as_str()).map_err(backend)?;
                }
            }
        }
        txn.commit().map_err(backend)
    }

    fn check(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(MODULES).map_err(backend)?;
        table.len().map_err(backend)?;
        Ok(())
    }

    fn size_on_disk(&self) -> Option<u64> {
        let path = self.path.as_ref()?;
        std::fs::metadata(path).ok().map(|m| m.len())
    }

    fn record(&self, name: &str) -> Result<Option<ModuleRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(MODULES).map_err(backend)?;
        let value = table.get(name).map_err(backend)?;
        value.map(|v| decode(v.value())).transpose()
    }
}
