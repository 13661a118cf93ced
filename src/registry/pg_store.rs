//! The [`ModuleStore`] on PostgreSQL (`--store postgres://…`), so that
//! several server nodes can share one registry.
//!
//! The contract's integrity rules are the database's constraints, checked
//! inside each statement's transaction, not read-then-write in front of it:
//! the name is the primary key (of two nodes inserting one name, one gets a
//! unique violation), a record's host modules are foreign keys (a missing
//! host fails the insert; a linked host cannot be deleted, `RESTRICT`), and
//! a record's binary is a foreign key too. The schema is embedded in the
//! binary (`migrations/`) and applied at start by sqlx's migrator, under a
//! PostgreSQL advisory lock, so nodes starting at once do not fight over it.
//!
//! The trait is synchronous (the registry calls it on the blocking pool);
//! each method runs its queries on the async pool through the runtime's
//! handle, which a blocking-pool thread may block on.
//!
//! Compiled artifacts are machine code: loading one from a database that
//! other nodes write to would run whatever they stored. Until artifacts
//! carry a tag under a cluster key, this store keeps none (every node
//! compiles for itself).

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::runtime::Handle;

use super::store::{ModuleRecord, ModuleStore, StoreError, TokenQuota};

/// The schema, applied at start.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connections kept open to the database.
const POOL_SIZE: u32 = 8;

/// How long a query waits for a free connection (or for the database to
/// answer a new one) before the store reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The registry in a PostgreSQL database.
pub struct PgStore {
    pool: PgPool,
    runtime: Handle,
}

/// A failure of the database, told apart from one of reaching it: a
/// connection refused, dropped or timed out, or the server shutting down
/// (SQLSTATE classes 08 and 57P) is [`StoreError::Unavailable`], which the
/// API answers with `503 store_unavailable` until the pool reconnects.
fn backend(e: sqlx::Error) -> StoreError {
    let unreachable = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        other => sqlstate(other).is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
    };
    if unreachable {
        StoreError::Unavailable(format!(
            "the module store (PostgreSQL) cannot be reached ({e}); the registry cannot change until it answers again, and modules this node has loaded keep running"
        ))
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// The SQLSTATE of a database error, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
}

const UNIQUE_VIOLATION: &str = "23505";
const FOREIGN_KEY_VIOLATION: &str = "23503";

impl PgStore {
    /// Connects to `url` and brings the schema up to date. Must be called
    /// within the tokio runtime that will serve the store.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to the PostgreSQL store: {e}")))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot apply the store's schema: {e}")))?;
        Ok(PgStore {
            pool,
            runtime: Handle::current(),
        })
    }

    /// Runs `query` to completion from the blocking pool.
    fn run<T>(&self, query: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        self.runtime.block_on(query)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(backend)
    }
}

async fn insert(
    pool: &PgStore,
    record: &ModuleRecord,
    wasm: &[u8],
    quota: Option<&TokenQuota>,
) -> Result<(), StoreError> {
    let mut txn = pool.begin().await?;
    if let (Some(quota), Some(owner)) = (quota, record.owner.as_deref()) {
        // One owner's registrations take turns, on every node, until
        // commit: the count below cannot go stale before the insert.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('quota:' || $1, 0))")
            .bind(owner)
            .execute(&mut *txn)
            .await
            .map_err(backend)?;
        let (count, bytes): (i64, i64) =
            sqlx::query_as("SELECT count(*), COALESCE(sum(size), 0)::bigint FROM modules WHERE owner = $1")
                .bind(owner)
                .fetch_one(&mut *txn)
                .await
                .map_err(backend)?;
        let (count, bytes) = (
            usize::try_from(count).unwrap_or(usize::MAX),
            u64::try_from(bytes).unwrap_or(0),
        );
        if let Some(why) = quota.refuses(count, bytes, record.size) {
            return Err(StoreError::QuotaExceeded(why));
        }
    }
    // Lock the binary's row (inserting it if new) until commit, so that a
    // concurrent removal of another record sharing it cannot drop it.
    sqlx::query(
        "INSERT INTO binaries (sha256, wasm) VALUES ($1, $2)
         ON CONFLICT (sha256) DO UPDATE SET sha256 = EXCLUDED.sha256",
    )
    .bind(&record.sha256)
    .bind(wasm)
    .execute(&mut *txn)
    .await
    .map_err(backend)?;
    let inserted = sqlx::query("INSERT INTO modules (name, sha256, size, created, owner) VALUES ($1, $2, $3, $4, $5)")
        .bind(&record.name)
        .bind(&record.sha256)
        .bind(i64::try_from(record.size).unwrap_or(i64::MAX))
        .bind(&record.created)
        .bind(&record.owner)
        .execute(&mut *txn)
        .await;
    if let Err(e) = inserted {
        return Err(match sqlstate(&e).as_deref() {
            Some(UNIQUE_VIOLATION) => StoreError::Exists(record.name.clone()),
            _ => backend(e),
        });
    }
    for (position, host) in record.host_modules.iter().enumerate() {
        let linked = sqlx::query("INSERT INTO module_hosts (name, position, host) VALUES ($1, $2, $3)")
            .bind(&record.name)
            .bind(i32::try_from(position).unwrap_or(i32::MAX))
            .bind(host)
            .execute(&mut *txn)
            .await;
        if let Err(e) = linked {
            return Err(match sqlstate(&e).as_deref() {
                Some(FOREIGN_KEY_VIOLATION) => StoreError::MissingHostModule(host.clone()),
                _ => backend(e),
            });
        }
    }
    txn.commit().await.map_err(backend)
}

async fn remove(store: &PgStore, name: &str) -> Result<(), StoreError> {
    let mut txn = store.begin().await?;
    let sha: Option<String> = sqlx::query_scalar("SELECT sha256 FROM modules WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *txn)
        .await
        .map_err(backend)?;
    let Some(sha) = sha else {
        return Err(StoreError::NotFound(name.to_string()));
    };
    // The binary's row first: an insert sharing it holds it until commit.
    sqlx::query("SELECT 1 FROM binaries WHERE sha256 = $1 FOR UPDATE")
        .bind(&sha)
        .execute(&mut *txn)
        .await
        .map_err(backend)?;
    let deleted = sqlx::query("DELETE FROM modules WHERE name = $1")
        .bind(name)
        .execute(&mut *txn)
        .await;
    match deleted {
        Ok(done) if done.rows_affected() == 0 => return Err(StoreError::NotFound(name.to_string())),
        Ok(_) => {}
        Err(e) if sqlstate(&e).as_deref() == Some(FOREIGN_KEY_VIOLATION) => {
            drop(txn);
            let dependents: Vec<String> =
                sqlx::query_scalar("SELECT DISTINCT name FROM module_hosts WHERE host = $1 ORDER BY name")
                    .bind(name)
                    .fetch_all(&store.pool)
                    .await
                    .map_err(backend)?;
            return Err(StoreError::InUse {
                name: name.to_string(),
                dependents,
            });
        }
        Err(e) => return Err(backend(e)),
    }
    // A new statement sees what committed while it waited for the lock.
    sqlx::query("DELETE FROM binaries WHERE sha256 = $1 AND NOT EXISTS (SELECT 1 FROM modules WHERE sha256 = $1)")
        .bind(&sha)
        .execute(&mut *txn)
        .await
        .map_err(backend)?;
    txn.commit().await.map_err(backend)
}

impl ModuleStore for PgStore {
    fn list(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        self.run(async {
            let rows = sqlx::query(
                "SELECT m.name, m.sha256, m.size, m.created, m.owner,
                        COALESCE(array_agg(h.host ORDER BY h.position) FILTER (WHERE h.host IS NOT NULL), '{}') AS hosts
                 FROM modules m LEFT JOIN module_hosts h ON h.name = m.name
                 GROUP BY m.name ORDER BY m.name",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            rows.iter()
                .map(|row| {
                    Ok(ModuleRecord {
                        name: row.try_get("name").map_err(backend)?,
                        sha256: row.try_get("sha256").map_err(backend)?,
                        size: u64::try_from(row.try_get::<i64, _>("size").map_err(backend)?).unwrap_or(0),
                        host_modules: row.try_get("hosts").map_err(backend)?,
                        created: row.try_get("created").map_err(backend)?,
                        owner: row.try_get("owner").map_err(backend)?,
                    })
                })
                .collect()
        })
    }

    fn insert(&self, record: &ModuleRecord, wasm: &[u8], quota: Option<&TokenQuota>) -> Result<(), StoreError> {
        self.run(insert(self, record, wasm, quota))
    }

    fn wasm(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(async {
            sqlx::query_scalar("SELECT wasm FROM binaries WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)
        })
    }

    /// None: see the module docs (artifacts are not shared unverified).
    fn artifact(&self, _sha256: &str, _engine: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    /// Keeps nothing: see the module docs.
    fn put_artifact(&self, _sha256: &str, _engine: &str, _artifact: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.run(remove(self, name))
    }

    fn check(&self) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query("SELECT 1 FROM modules LIMIT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(backend)
        })
    }

    fn size_on_disk(&self) -> Option<u64> {
        None
    }
}
