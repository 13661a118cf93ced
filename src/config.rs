//! Every setting of the server: command-line flag, environment variable and
//! default, in one place. `docs/API.md` ("Limits") lists them for users.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::api::admission::AdmissionSettings;
use crate::api::auth::Tokens;
use crate::api::job_table::JobSettings;
use crate::api::state::CallBounds;
use crate::engine::{EngineSettings, ExecLimits, TierMode};
use crate::instances::InstanceSettings;
use crate::registry::ArtifactSeal;

/// Run WebAssembly over HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "wasm-exec-api", version, about)]
pub struct Settings {
    /// TCP port to listen on (0 picks a free one).
    #[arg(short = 'p', long, env = "WASM_EXEC_PORT", default_value_t = 4000)]
    pub port: u16,

    /// Address to bind. Keep the loopback default unless the server sits
    /// behind access control.
    #[arg(long, env = "WASM_EXEC_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Directory for the persistent registry [default: the per-user data
    /// directory, e.g. ~/.local/share/wasm-exec-api].
    #[arg(short = 'd', long, env = "WASM_EXEC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// An API token, `scope:secret` with scope `admin` or `execute`
    /// (repeatable; the variable takes a comma-separated list). With any
    /// token configured, requests need `Authorization: Bearer <secret>`.
    #[arg(
        long = "token",
        env = "WASM_EXEC_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Vec<String>,

    /// A file of `scope:secret` lines (blank lines and `#` comments skipped).
    #[arg(long, env = "WASM_EXEC_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Requests per second per client (its token, else its IP address), with
    /// bursts of twice that; more get `429`. 0 turns rate limiting off.
    #[arg(long, env = "WASM_EXEC_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,

    /// A load balancer or proxy (an address, or a network such as
    /// `10.0.0.0/8`) whose connections say which client they carry: for
    /// its requests the client is the rightmost `X-Forwarded-For` address
    /// that is not a trusted proxy's. Repeat it, or separate with commas.
    /// None by default (the header is ignored: any client can write it).
    #[arg(
        long = "trusted-proxy",
        env = "WASM_EXEC_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = crate::api::proxies::parse_network
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Bytes of the registry file's pages kept in memory.
    #[arg(long, env = "WASM_EXEC_STORE_CACHE_BYTES", default_value_t = 64 << 20)]
    pub store_cache_bytes: usize,

    /// Modules one API token may have registered at once.
    #[arg(long, env = "WASM_EXEC_MAX_MODULES_PER_TOKEN", default_value_t = 1000)]
    pub max_modules_per_token: usize,

    /// Bytes of module binaries one API token may have registered at once.
    #[arg(long, env = "WASM_EXEC_MAX_BYTES_PER_TOKEN", default_value_t = 1 << 30)]
    pub max_bytes_per_token: u64,

    /// Keep the registry in memory only; nothing is written to disk.
    #[arg(short = 'm', long, env = "WASM_EXEC_MEMORY")]
    pub memory: bool,

    /// Keep the registry in a PostgreSQL database instead of the embedded
    /// file, so that several nodes can share it: a URL such as
    /// postgres://user@host:5432/db. Its schema is created or updated at
    /// start.
    #[arg(long, env = "WASM_EXEC_STORE", conflicts_with = "memory")]
    pub store: Option<String>,

    /// The cluster key under which compiled artifacts are sealed (an
    /// HMAC-SHA256 tag) so that nodes sharing a --store database load each
    /// other's instead of compiling; several keys separated by whitespace:
    /// the first seals, any opens (for rotation). Prefer the environment or
    /// --artifact-key-file to the flag, which other local users can see.
    /// Without a key, nodes on a shared database keep no artifacts there.
    #[arg(long, env = "WASM_EXEC_ARTIFACT_KEY", hide_env_values = true)]
    pub artifact_key: Option<String>,

    /// A file holding the artifact key(s), one per line (see --artifact-key).
    #[arg(long, env = "WASM_EXEC_ARTIFACT_KEY_FILE", conflicts_with = "artifact_key")]
    pub artifact_key_file: Option<PathBuf>,

    /// This node's name among nodes sharing a --store database: the prefix
    /// of the instance ids it hands out, by which a balancer routes calls to
    /// the node that holds the instance. Letters, digits and `-`; random
    /// when not set.
    #[arg(long, env = "WASM_EXEC_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// The address at which other nodes and clients reach this node (e.g.
    /// http://10.0.0.5:8000), announced in the shared store and named in the
    /// `421 instance_on_other_node` answer a node gives for an instance it
    /// does not hold.
    #[arg(long, env = "WASM_EXEC_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Fuel per request, about one unit per WebAssembly instruction (bulk
    /// memory and table operations cost one unit, whatever their length),
    /// shared by instantiation and the call; a request may lower it
    /// (`limits.fuel`). Exhausted: `422 limit_exceeded`, `limit: "fuel"`. The
    /// default outlasts the default timeout (a tight loop burns about 10^10
    /// units a second), so time is the usual bound and fuel the
    /// deterministic one a request can lower.
    #[arg(long, env = "WASM_EXEC_MAX_FUEL", default_value_t = 1_000_000_000_000)]
    pub max_fuel: u64,

    /// Wall-clock limit per request, in milliseconds, shared by
    /// instantiation and the call, checked at epoch ticks (see
    /// `--epoch-tick-ms`); a request may lower it (`limits.timeout_ms`).
    /// Exceeded: `limit: "time"`.
    #[arg(long, env = "WASM_EXEC_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,

    /// Linear memory per execution, in bytes, all memories of the link graph
    /// together; a request may lower it (`limits.memory_bytes`). A memory
    /// that cannot be created within it refuses the module (`limit:
    /// "memory"`); a `memory.grow` past it returns -1 to the guest, which
    /// goes on, and the response lists `memory` in `stats.limits_hit`.
    #[arg(long, env = "WASM_EXEC_MAX_MEMORY_BYTES", default_value_t = 256 << 20)]
    pub max_memory_bytes: u64,

    /// Elements per table; a request may lower it (`limits.table_elements`).
    /// A table that cannot be created within it refuses the module (`limit:
    /// "table_elements"`); a `table.grow` past it returns -1 to the guest and
    /// `stats.limits_hit` lists `table_elements`.
    #[arg(long, env = "WASM_EXEC_MAX_TABLE_ELEMENTS", default_value_t = 100_000)]
    pub max_table_elements: u64,

    /// Memories one module may define (imported ones do not count); more:
    /// `limit: "memories"`.
    #[arg(long, env = "WASM_EXEC_MAX_MEMORIES_PER_MODULE", default_value_t = 16)]
    pub max_memories_per_module: usize,

    /// Tables one module may define (imported ones do not count); more:
    /// `limit: "tables"`.
    #[arg(long, env = "WASM_EXEC_MAX_TABLES_PER_MODULE", default_value_t = 16)]
    pub max_tables_per_module: usize,

    /// Instances one execution's link graph may create (the module and every
    /// registered module it links, directly or not), and instances one
    /// environment may hold; more: `limit: "instances"`.
    #[arg(long, env = "WASM_EXEC_MAX_LINK_INSTANCES", default_value_t = 1000)]
    pub max_link_instances: usize,

    /// Instances all environments may hold together. They have slots of
    /// their own in the pooling allocator, beyond those of executions and
    /// live instances, so environments cannot take the slots other
    /// requests run in; past it, adding an instance is `429
    /// instance_capacity`.
    #[arg(long, env = "WASM_EXEC_MAX_ENVIRONMENT_INSTANCES", default_value_t = 3000)]
    pub max_environment_instances: usize,

    /// Which tier runs code: `auto` runs a module's first calls on the
    /// interpreter and compiles code seen again in the background;
    /// `interpreter` interprets whatever the interpreter can run;
    /// `compiled` always compiles first. `stats.tier` says which ran.
    #[arg(long, env = "WASM_EXEC_TIER", value_enum, default_value_t = TierMode::Auto)]
    pub tier: TierMode,

    /// WebAssembly stack size in bytes, server-wide; deeper recursion is
    /// `trap` `stack_overflow`.
    #[arg(long, env = "WASM_EXEC_MAX_STACK_BYTES", default_value_t = 512 << 10)]
    pub max_stack_bytes: usize,

    /// Largest request body, in bytes (the default has room for a 32 MiB
    /// module in base64); larger: `413 payload_too_large`.
    #[arg(long, env = "WASM_EXEC_MAX_BODY_BYTES", default_value_t = 48 << 20)]
    pub max_body_bytes: usize,

    /// Milliseconds a client may take to send its whole request body; slower
    /// bodies get `408`.
    #[arg(long, env = "WASM_EXEC_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,

    /// Largest module binary, in bytes; larger: `413 payload_too_large`.
    /// Generous, because real WASI programs (interpreters, databases) are
    /// often tens of megabytes.
    #[arg(long, env = "WASM_EXEC_MAX_MODULE_BYTES", default_value_t = 32 << 20)]
    pub max_module_bytes: usize,

    /// Executions, instance creations and calls, and registrations in flight
    /// at once; more wait in a queue (see `--queue-depth`).
    #[arg(long, env = "WASM_EXEC_MAX_CONCURRENCY", default_value_t = 32)]
    pub max_concurrency: usize,

    /// Requests that may wait for an execution slot, all clients together;
    /// past it: `503 overloaded` with `Retry-After: 1`.
    #[arg(long, env = "WASM_EXEC_QUEUE_DEPTH", default_value_t = 1024)]
    pub queue_depth: usize,

    /// Most calls in one `POST /batch`.
    #[arg(long, env = "WASM_EXEC_MAX_BATCH_CALLS", default_value_t = 1000)]
    pub max_batch_calls: usize,

    /// Milliseconds one `POST /batch` may run, all its calls together (a
    /// batch may ask for less); calls not started by then answer
    /// `limit_exceeded` (`batch_time`).
    #[arg(long, env = "WASM_EXEC_BATCH_TIMEOUT_MS", default_value_t = 60_000)]
    pub batch_timeout_ms: u64,

    /// Jobs (`POST /jobs`) running at once; more wait, queued.
    #[arg(long, env = "WASM_EXEC_JOB_CONCURRENCY", default_value_t = 4)]
    pub job_concurrency: usize,

    /// Jobs one client may have queued or running; past it:
    /// `429 too_many_jobs`.
    #[arg(long, env = "WASM_EXEC_MAX_JOBS_PER_CLIENT", default_value_t = 16)]
    pub max_jobs_per_client: usize,

    /// A job's time limit at most, in milliseconds (a call's, or a
    /// batch's budget): longer than a request's (`--max-timeout-ms`).
    #[arg(long, env = "WASM_EXEC_MAX_JOB_TIMEOUT_MS", default_value_t = 600_000)]
    pub max_job_timeout_ms: u64,

    /// A job's fuel at most.
    #[arg(long, env = "WASM_EXEC_MAX_JOB_FUEL", default_value_t = 1 << 40)]
    pub max_job_fuel: u64,

    /// Finished jobs kept per client; past it the oldest are forgotten
    /// before their retention ends (bounding the store in bytes).
    #[arg(long, env = "WASM_EXEC_MAX_FINISHED_JOBS_PER_CLIENT", default_value_t = 256)]
    pub max_finished_jobs_per_client: usize,

    /// Seconds a finished job (done, failed or cancelled) is kept.
    #[arg(long, env = "WASM_EXEC_JOB_RETENTION_SECS", default_value_t = 86_400)]
    pub job_retention_secs: u64,

    /// Most `runs` of one call (each on a fresh instance, for timing and
    /// fuel figures).
    #[arg(long, env = "WASM_EXEC_MAX_RUNS", default_value_t = 100)]
    pub max_runs: u32,

    /// Execution slots one client (a token, else an IP address) may hold at
    /// once; its further requests wait their turn. Default: half of
    /// `--max-concurrency`, rounded up.
    #[arg(long, env = "WASM_EXEC_CLIENT_SHARE")]
    pub client_share: Option<usize>,

    /// Requests one client may have waiting for a slot; past it:
    /// `429 concurrency_limit` with `Retry-After: 1`. Default: its share.
    #[arg(long, env = "WASM_EXEC_CLIENT_QUEUE_DEPTH")]
    pub client_queue_depth: Option<usize>,

    /// Milliseconds a request may wait in the queue for an execution slot;
    /// past it: `503 overloaded` with `Retry-After: 1`.
    #[arg(long, env = "WASM_EXEC_QUEUE_TIMEOUT_MS", default_value_t = 10_000)]
    pub queue_timeout_ms: u64,

    /// Milliseconds a request waits for its module to compile; past it the
    /// request gets `limit_exceeded` (`compile_time`). The compile itself
    /// runs on to the end (it cannot be interrupted) and is cached.
    #[arg(long, env = "WASM_EXEC_COMPILE_TIMEOUT_MS", default_value_t = 60_000)]
    pub compile_timeout_ms: u64,

    /// Compiled modules kept in memory.
    #[arg(long, env = "WASM_EXEC_CACHE_ENTRIES", default_value_t = 1024)]
    pub cache_entries: usize,

    /// Bytes of compiled modules kept in memory, all together: each weighs
    /// its machine code and data plus its binary. Past it (or past
    /// --cache-entries) the least recently used are dropped and compiled
    /// again, or loaded from their stored artifact, when next called.
    /// Compiled components, and the interpreter's forms of registered
    /// modules, are kept within the same two bounds, each on its own.
    #[arg(long, env = "WASM_EXEC_CACHE_BYTES", default_value_t = 1 << 30)]
    pub cache_bytes: usize,

    /// Modules compiled at once [default: one per CPU core].
    #[arg(long, env = "WASM_EXEC_COMPILE_THREADS", default_value_t = default_compile_threads(), hide_default_value = true)]
    pub compile_threads: usize,

    /// Bytes kept of a WASI program's stdout, and of its stderr; the rest
    /// is dropped and the response says `truncated`.
    #[arg(long, env = "WASM_EXEC_MAX_OUTPUT_BYTES", default_value_t = 1 << 20)]
    pub max_output_bytes: usize,

    /// Bytes a request may read out of guest memory, all reads together.
    #[arg(long, env = "WASM_EXEC_MAX_READ_BYTES", default_value_t = 16 << 20)]
    pub max_read_bytes: u64,

    /// Live instances at once (POST /instances).
    #[arg(long, env = "WASM_EXEC_MAX_INSTANCES", default_value_t = 64)]
    pub max_instances: usize,

    /// Memory all live instances may reserve together, in bytes; each
    /// reserves its `memory_bytes` limit.
    #[arg(long, env = "WASM_EXEC_MAX_INSTANCE_MEMORY_BYTES", default_value_t = 4 << 30)]
    pub max_instance_memory_bytes: u64,

    /// Live instances and environments one client (a token, else an IP
    /// address) may hold; past it: `429 instance_capacity`. Default: half
    /// of `--max-instances`, rounded up.
    #[arg(long, env = "WASM_EXEC_MAX_INSTANCES_PER_CLIENT")]
    pub max_instances_per_client: Option<usize>,

    /// Memory one client's live instances and environments may reserve
    /// together, in bytes. Default: half of `--max-instance-memory-bytes`.
    #[arg(long, env = "WASM_EXEC_MAX_INSTANCE_MEMORY_PER_CLIENT")]
    pub max_instance_memory_per_client: Option<u64>,

    /// Seconds an instance may go without a call before it is dropped.
    #[arg(long, env = "WASM_EXEC_INSTANCE_IDLE_SECS", default_value_t = 300)]
    pub instance_idle_secs: u64,

    /// Allocate instances from wasmtime's pooling allocator (reused,
    /// pre-reserved slots); `false` maps memory per instance instead.
    #[arg(long, env = "WASM_EXEC_POOLING", default_value_t = true, action = clap::ArgAction::Set)]
    pub pooling: bool,

    /// Epoch tick in milliseconds: timeout granularity, and how long guest
    /// code runs before yielding its thread to other requests. While no
    /// guest runs longer than a tick the ticker ticks every 10 ticks, so a
    /// guest's first two yields and timeout checks may each come up to 10
    /// ticks late; from then on, every tick.
    #[arg(long, env = "WASM_EXEC_EPOCH_TICK_MS", default_value_t = 1)]
    pub epoch_tick_ms: u64,
}

impl Settings {
    /// The engine's part of the settings.
    pub fn engine(&self) -> EngineSettings {
        EngineSettings {
            max_module_bytes: self.max_module_bytes,
            max_stack_bytes: self.max_stack_bytes,
            cache_entries: self.cache_entries,
            cache_bytes: self.cache_bytes,
            epoch_tick: Duration::from_millis(self.epoch_tick_ms.max(1)),
            compile_threads: self.compile_threads,
            compile_timeout: Duration::from_millis(self.compile_timeout_ms.max(1)),
            max_output_bytes: self.max_output_bytes,
            max_read_bytes: self.max_read_bytes,
            pooling: self.pooling,
            max_memories_per_module: self.max_memories_per_module.max(1),
            max_tables_per_module: self.max_tables_per_module.max(1),
            max_link_instances: self.max_link_instances.max(1),
            max_environment_instances: self.max_environment_instances,
            tier: self.tier,
            limits: ExecLimits {
                fuel: self.max_fuel,
                timeout_ms: self.timeout_ms,
                memory_bytes: self.max_memory_bytes,
                table_elements: self.max_table_elements,
            },
        }
    }

    /// How execution slots are shared between clients.
    pub fn admission(&self) -> AdmissionSettings {
        let max_slots = self.max_concurrency.max(1);
        let client_share = self.client_share.unwrap_or(max_slots.div_ceil(2)).clamp(1, max_slots);
        AdmissionSettings {
            max_slots,
            client_share,
            client_queue_depth: self.client_queue_depth.unwrap_or(client_share),
            queue_depth: self.queue_depth,
            queue_timeout: Duration::from_millis(self.queue_timeout_ms),
        }
    }

    /// Bounds on jobs.
    pub fn jobs(&self) -> JobSettings {
        JobSettings {
            concurrency: self.job_concurrency,
            max_per_client: self.max_jobs_per_client,
            max_timeout: Duration::from_millis(self.max_job_timeout_ms),
            max_fuel: self.max_job_fuel,
            retention: Duration::from_secs(self.job_retention_secs),
            max_finished_per_client: self.max_finished_jobs_per_client,
        }
    }

    /// Bounds on batches and `runs`.
    pub fn call_bounds(&self) -> CallBounds {
        CallBounds {
            max_batch_calls: self.max_batch_calls,
            batch_timeout: Duration::from_millis(self.batch_timeout_ms),
            max_runs: self.max_runs,
        }
    }

    /// The instance table's part of the settings.
    pub fn instances(&self, node_id: &str) -> InstanceSettings {
        InstanceSettings {
            max_instances: self.max_instances,
            max_total_memory_bytes: self.max_instance_memory_bytes,
            max_per_client: self.max_instances_per_client.unwrap_or(self.max_instances.div_ceil(2)),
            max_memory_per_client: self
                .max_instance_memory_per_client
                .unwrap_or(self.max_instance_memory_bytes / 2),
            idle_timeout: Duration::from_secs(self.instance_idle_secs),
            node_id: node_id.to_string(),
        }
    }

    /// This node's name: `--node-id`, else 8 random hex digits.
    pub fn node_name(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string())
    }

    /// The configured API tokens, from flags, the environment and the file.
    pub fn access_tokens(&self) -> Result<Tokens, String> {
        let mut entries: Vec<String> = self.tokens.clone();
        if let Some(path) = &self.tokens_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
            entries.extend(text.lines().map(str::to_string));
        }
        Tokens::parse(entries.iter().map(String::as_str))
    }

    /// The artifact keys, from the flag, the environment or the file.
    pub fn artifact_seal(&self) -> Result<Option<ArtifactSeal>, String> {
        let text = match (&self.artifact_key, &self.artifact_key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read artifact key file {}: {e}", path.display()))?,
            (None, None) => return Ok(None),
        };
        ArtifactSeal::parse(&text).map(Some)
    }

    /// Where the registry lives on disk, or `None` with `--memory`.
    pub fn registry_path(&self) -> Option<PathBuf> {
        if self.memory {
            return None;
        }
        let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        Some(dir.join("registry.redb"))
    }
}

/// One compile at a time per core: measured on 2 cores, two concurrent
/// compiles of small modules gave 29% more compiles per second than one.
fn default_compile_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A node name: 1 to 32 letters, digits and `-` (no `.`, which ends it
/// in an instance id).
fn parse_node_id(text: &str) -> Result<String, String> {
    let ok = !text.is_empty() && text.len() <= 32 && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(text.to_string())
    } else {
        Err("use 1 to 32 letters, digits and `-`".into())
    }
}

fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "wasm-exec-api")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("wasm-exec-api-data"))
}
