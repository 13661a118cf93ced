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
//! other nodes write to would run whatever they stored. The store keeps
//! them as given; the registry seals them under the cluster key before they
//! come here and verifies them after (`super::seal`), and without a key
//! neither keeps nor loads them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, Transaction};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::store::{Changes, ModuleRecord, ModuleStore, StoreError, TokenQuota};

/// The channel on which a registry change is announced (its payload is
/// the new version).
const CHANNEL: &str = "wasm_exec_registry";

/// How many entries of the change log are kept; a node further behind
/// than this lists every record again.
const CHANGES_KEPT: i64 = 4096;

/// The schema, applied at start.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pooled connection idle this long is pinged before it is used.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Connections kept open to the database.
const POOL_SIZE: u32 = 8;

/// How long a query waits for a free connection (or for the database to
/// answer a new one) before the store reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The registry in a PostgreSQL database.
pub struct PgStore {
    pool: PgPool,
    runtime: Handle,
    hints: Arc<Notify>,
    listener: JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
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
            // A ping before every use doubled each query's round trips
            // (benches/store.rs); a connection idle for a second or more
            // is still pinged, so that one the database dropped while it
            // was down or restarting is replaced instead of failing the
            // first requests after it is back.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to the PostgreSQL store: {e}")))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot apply the store's schema: {e}")))?;
        let hints = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(pool.clone(), hints.clone()));
        Ok(PgStore {
            pool,
            runtime: Handle::current(),
            hints,
            listener,
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

/// Listens for registry changes and wakes `hints` on each, and on each
/// (re)connection: notifications sent while the listener was away are
/// lost, so a new connection is itself a reason to look.
async fn listen(pool: PgPool, hints: Arc<Notify>) {
    loop {
        if let Ok(mut listener) = PgListener::connect_with(&pool).await
            && listener.listen(CHANNEL).await.is_ok()
        {
            hints.notify_one();
            // `Ok(None)`: the connection dropped; the next call reconnects
            // (an error ends this connection's loop).
            while let Ok(_notification) = listener.try_recv().await {
                hints.notify_one();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Takes the next registry version for a change of `name`, logs it and
/// announces it (delivered at commit). Called last in the change's
/// transaction: the version row stays locked until commit, so versions
/// are taken in commit order and no reader can see version v+1 before v.
async fn bump_version(txn: &mut Transaction<'static, Postgres>, name: &str) -> Result<(), StoreError> {
    let version: i64 = sqlx::query_scalar("UPDATE registry_version SET version = version + 1 RETURNING version")
        .fetch_one(&mut **txn)
        .await
        .map_err(backend)?;
    sqlx::query("INSERT INTO registry_changes (version, name) VALUES ($1, $2)")
        .bind(version)
        .bind(name)
        .execute(&mut **txn)
        .await
        .map_err(backend)?;
    if version % 256 == 0 {
        sqlx::query("DELETE FROM registry_changes WHERE version <= $1")
            .bind(version - CHANGES_KEPT)
            .execute(&mut **txn)
            .await
            .map_err(backend)?;
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(version.to_string())
        .execute(&mut **txn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The columns of a record, hosts in order (see [`record_of`]).
const RECORD_SELECT: &str = "SELECT m.name, m.sha256, m.size, m.created, m.owner,
        COALESCE(array_agg(h.host ORDER BY h.position) FILTER (WHERE h.host IS NOT NULL), '{}') AS hosts
     FROM modules m LEFT JOIN module_hosts h ON h.name = m.name";

fn record_of(row: &PgRow) -> Result<ModuleRecord, StoreError> {
    Ok(ModuleRecord {
        name: row.try_get("name").map_err(backend)?,
        sha256: row.try_get("sha256").map_err(backend)?,
        size: u64::try_from(row.try_get::<i64, _>("size").map_err(backend)?).unwrap_or(0),
        host_modules: row.try_get("hosts").map_err(backend)?,
        created: row.try_get("created").map_err(backend)?,
        owner: row.try_get("owner").map_err(backend)?,
    })
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
    bump_version(&mut txn, &record.name).await?;
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
    bump_version(&mut txn, name).await?;
    txn.commit().await.map_err(backend)
}

impl ModuleStore for PgStore {
    fn list(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        self.run(async {
            let rows = sqlx::query(&format!("{RECORD_SELECT} GROUP BY m.name ORDER BY m.name"))
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
            rows.iter().map(record_of).collect()
        })
    }

    fn record(&self, name: &str) -> Result<Option<ModuleRecord>, StoreError> {
        self.run(async {
            let row = sqlx::query(&format!("{RECORD_SELECT} WHERE m.name = $1 GROUP BY m.name"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
            row.as_ref().map(record_of).transpose()
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn version(&self) -> Result<u64, StoreError> {
        self.run(async {
            let version: i64 = sqlx::query_scalar("SELECT version FROM registry_version")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            Ok(u64::try_from(version).unwrap_or(0))
        })
    }

    fn changes_since(&self, version: u64) -> Result<Changes, StoreError> {
        self.run(async {
            let since = i64::try_from(version).unwrap_or(i64::MAX);
            // One statement, one snapshot: the current version and the log
            // up to it.
            let rows: Vec<(i64, Option<i64>, Option<String>)> = sqlx::query_as(
                "SELECT v.version, c.version, c.name FROM registry_version v
                 LEFT JOIN registry_changes c ON c.version > $1 AND c.version <= v.version
                 ORDER BY c.version",
            )
            .bind(since)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            let current = rows.first().map_or(0, |r| r.0);
            let names: Vec<String> = rows.into_iter().filter_map(|r| r.2).collect();
            if current < since || names.len() as i64 != current - since {
                return Ok(Changes::Gap);
            }
            Ok(Changes::Since {
                version: u64::try_from(current).unwrap_or(0),
                names,
            })
        })
    }

    fn change_hints(&self) -> Option<Arc<Notify>> {
        Some(self.hints.clone())
    }

    /// Also forgets nodes not heard from for a day (nodes started without
    /// `--node-id` get a new name each start).
    fn announce_node(&self, id: &str, url: &str) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query(
                "INSERT INTO nodes (id, url) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, seen = now()",
            )
            .bind(id)
            .bind(url)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            sqlx::query("DELETE FROM nodes WHERE seen < now() - interval '1 day'")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(backend)
        })
    }

    fn node_url(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.run(async {
            sqlx::query_scalar("SELECT url FROM nodes WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)
        })
    }

    fn insert(&self, record: &ModuleRecord, wasm: &[u8], quota: Option<&TokenQuota>) -> Result<(), StoreError> {
        self.run(insert(self, record, wasm, quota))
    }

    fn put_job(&self, id: &str, record: &[u8]) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query(
                "INSERT INTO jobs (id, record) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            )
            .bind(id)
            .bind(record)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(backend)
        })
    }

    fn job(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(async {
            sqlx::query_scalar("SELECT record FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)
        })
    }

    fn jobs(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.run(async {
            sqlx::query_scalar("SELECT record FROM jobs ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(backend)
        })
    }

    fn remove_job(&self, id: &str) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query("DELETE FROM jobs WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(backend)
        })
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

    fn artifact(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(async {
            sqlx::query_scalar("SELECT artifact FROM artifacts WHERE sha256 = $1 AND engine = $2")
                .bind(sha256)
                .bind(engine)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)
        })
    }

    fn has_artifact(&self, sha256: &str, engine: &str) -> Result<bool, StoreError> {
        self.run(async {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM artifacts WHERE sha256 = $1 AND engine = $2)")
                .bind(sha256)
                .bind(engine)
                .fetch_one(&self.pool)
                .await
                .map_err(backend)
        })
    }

    /// Replaces any artifact stored for the pair (one that did not verify
    /// is so mended by the next compile); nothing is kept for a binary
    /// removed meanwhile.
    fn put_artifact(&self, sha256: &str, engine: &str, artifact: &[u8]) -> Result<(), StoreError> {
        self.run(async {
            let kept = sqlx::query(
                "INSERT INTO artifacts (sha256, engine, artifact) VALUES ($1, $2, $3)
                 ON CONFLICT (sha256, engine) DO UPDATE SET artifact = EXCLUDED.artifact",
            )
            .bind(sha256)
            .bind(engine)
            .bind(artifact)
            .execute(&self.pool)
            .await;
            match kept {
                Ok(_) => Ok(()),
                Err(e) if sqlstate(&e).as_deref() == Some(FOREIGN_KEY_VIOLATION) => Ok(()),
                Err(e) => Err(backend(e)),
            }
        })
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
