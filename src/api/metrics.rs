//! `GET /metrics` in the Prometheus/OpenMetrics text format, and the
//! counters the request path feeds.
//!
//! Counters that change on every request (requests, executions, fuel) live
//! in [`Metrics`] and cost an atomic add or two per request, each in a cell
//! of the calling thread's own (`sharded`), so that cores do not contend.
//! Everything that is a property of the server's state (live instances,
//! registered modules, store size, compile-cache totals) is read at scrape
//! time instead, so the hot path never maintains it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::{Registry, Unit};

use super::sharded::{ShardedCounter, ShardedHistogram};
use crate::engine::CacheStats;
use crate::per_thread::{Padded, SHARDS, shard};

/// Labels of `wasm_exec_http_requests`. All `'static`: counting a request
/// allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// The route template (`/modules/{name}`), never the raw path, so that
    /// the number of series stays bounded whatever clients send.
    route: &'static str,
    status: u16,
}

/// Labels of `wasm_exec_executions` and `wasm_exec_execution_duration`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecLabels {
    /// `inline` (`POST /`), `registered` (`POST /execute`) or `instance`.
    endpoint: &'static str,
    /// `ok`, or the error code (`trap`, `limit_exceeded`, ...).
    outcome: &'static str,
}

/// Labels of `wasm_exec_admission_refusals`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// Which endpoint ran a call, for the execution metrics.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    Inline,
    Registered,
    Instance,
    Environment,
}

impl Endpoint {
    /// Every endpoint in declaration order, so that `endpoint as usize`
    /// indexes it.
    const ALL: [Endpoint; 4] = [
        Endpoint::Inline,
        Endpoint::Registered,
        Endpoint::Instance,
        Endpoint::Environment,
    ];

    fn label(self) -> &'static str {
        match self {
            Endpoint::Inline => "inline",
            Endpoint::Registered => "registered",
            Endpoint::Instance => "instance",
            Endpoint::Environment => "environment",
        }
    }
}

/// The server's request-path counters.
pub struct Metrics {
    /// Every served route template, matched against request paths as the
    /// router matches them (the front middleware, which labels requests,
    /// runs before routing), to label requests with a `&'static str`
    /// instead of a fresh `String`.
    routes: matchit::Router<&'static str>,
    requests: Family<RequestLabels, ShardedCounter>,
    /// The `200` series of `requests` of every served method and route,
    /// made up front (so they show from the start, at zero): counting a
    /// request there skips the family's lock and its SipHash of the
    /// labels, which were about 1% of a small call's work.
    answered: HashMap<(&'static str, &'static str), ShardedCounter, foldhash::fast::RandomState>,
    durations: Family<ExecLabels, ShardedHistogram>,
    /// The `ok` series of `durations`, by [`Endpoint`], made up front: most
    /// executions succeed (a batch records thousands), and a series held
    /// here skips the family's lock and lookup.
    ok: [ShardedHistogram; Endpoint::ALL.len()],
    fuel: ShardedCounter,
    /// Process-unique prefix of generated request ids.
    id_prefix: String,
    /// The next request id's count, per thread (see [`Metrics::request_id`]),
    /// each cell on a line of its own.
    next_ids: [Padded<AtomicU64>; SHARDS],
}

/// A request method as its label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The server's state at scrape time, read by the `/metrics` handler.
pub struct Gauges {
    pub cache: CacheStats,
    /// Stored artifacts refused because their seal did not verify.
    pub artifacts_rejected: u64,
    pub live_instances: usize,
    pub environments: usize,
    /// Instances all environments hold together.
    pub environment_instances: usize,
    pub in_flight: usize,
    /// Requests waiting for an execution slot.
    pub queued: usize,
    /// Requests refused a slot since start: a client's queue full, all
    /// queues full, the queue's deadline passed.
    pub refused_client_queue: u64,
    pub refused_queue_full: u64,
    pub refused_queue_timeout: u64,
    /// Calls begun synchronously and run again on a fiber since start.
    pub sync_reruns: u64,
    /// Jobs queued and running in this process.
    pub jobs_queued: usize,
    pub jobs_running: usize,
    pub registered_modules: usize,
    pub registered_bytes: u64,
    /// Size of the store's file, when it is on disk.
    pub store_file_bytes: Option<u64>,
}

impl Metrics {
    /// Counters for a server that serves `routes` (each a method and a
    /// route template).
    pub fn new(routes: &[(Method, &'static str)]) -> Self {
        let requests = Family::<RequestLabels, ShardedCounter>::default();
        let answered = routes
            .iter()
            .map(|(method, route)| {
                let labels = RequestLabels {
                    method: method_label(method),
                    route,
                    status: 200,
                };
                ((labels.method, *route), requests.get_or_create(&labels).clone())
            })
            .collect();
        let mut matcher = matchit::Router::new();
        for (_, route) in routes {
            // A template served under several methods is inserted once;
            // the router took every template, so matchit does too.
            let _ = matcher.insert(*route, *route);
        }
        let routes = matcher;
        // 50 µs to about 7 s, each bucket 2.5× the last.
        let durations: Family<ExecLabels, ShardedHistogram> =
            Family::new_with_constructor(|| ShardedHistogram::new(exponential_buckets(0.000_05, 2.5, 14)));
        let ok = Endpoint::ALL.map(|endpoint| {
            let labels = ExecLabels {
                endpoint: endpoint.label(),
                outcome: "ok",
            };
            durations.get_or_create(&labels).clone()
        });
        Metrics {
            routes,
            requests,
            answered,
            durations,
            ok,
            fuel: ShardedCounter::default(),
            id_prefix: format!("{:08x}", uuid::Uuid::new_v4().as_u128() as u32),
            next_ids: Default::default(),
        }
    }

    /// A new request id: unique within this process and, by its random
    /// prefix, across restarts. A count, not a random UUID per request,
    /// because it costs one atomic add; and the add is to the calling
    /// thread's own cell (`per_thread::shard`), not to one counter every
    /// core writes. Cell `s`'s `k`-th id is `k * SHARDS + s + 1`, so no two
    /// cells make the same number, and one thread's ids still rise.
    pub fn request_id(&self) -> String {
        let cell = shard();
        let k = self.next_ids[cell].0.fetch_add(1, Ordering::Relaxed);
        let n = k * SHARDS as u64 + cell as u64 + 1;
        // `{prefix}-{n:010}`, written without a formatter.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n);
        let mut id = String::with_capacity(self.id_prefix.len() + 1 + digits.len().max(10));
        id.push_str(&self.id_prefix);
        id.push('-');
        for _ in digits.len()..10 {
            id.push('0');
        }
        id.push_str(digits);
        id
    }

    /// The label for a request to `path`: the route template it matches
    /// (`/modules/{name}`) for our routes, `/docs` for the Swagger UI's
    /// pages, else `unmatched`.
    pub fn route_label(&self, path: &str) -> &'static str {
        match self.routes.at(path) {
            Ok(found) => found.value,
            Err(_) if path == "/docs" || path.starts_with("/docs/") => "/docs",
            Err(_) => "unmatched",
        }
    }

    /// Counts one answered request.
    pub fn request(&self, method: &Method, route: &'static str, status: u16) {
        let method = method_label(method);
        if status == 200
            && let Some(counter) = self.answered.get(&(method, route))
        {
            counter.inc();
            return;
        }
        self.requests
            .get_or_create(&RequestLabels { method, route, status })
            .inc();
    }

    /// Records one execution: its wall time, outcome and fuel.
    pub fn execution(&self, endpoint: Endpoint, outcome: &'static str, seconds: f64, fuel: u64) {
        if outcome == "ok" {
            self.ok[endpoint as usize].observe(seconds);
        } else {
            self.durations
                .get_or_create(&ExecLabels {
                    endpoint: endpoint.label(),
                    outcome,
                })
                .observe(seconds);
        }
        self.fuel.inc_by(fuel);
    }

    /// The text exposition of every metric, counters and scrape-time state.
    pub fn render(&self, gauges: &Gauges) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("wasm_exec");
        // Families and counters are handles onto shared atomics: a clone
        // registered here reads the same values the request path updates.
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "execution_duration",
            "Wall time of executions (instantiate and call), by endpoint and outcome",
            Unit::Seconds,
            self.durations.clone(),
        );
        registry.register("fuel_consumed", "Fuel consumed by all executions", self.fuel.clone());
        let cache = gauges.cache;
        registry.register(
            "compile_cache_hits",
            "Modules found already compiled in memory",
            ConstCounter::new(cache.hits),
        );
        registry.register(
            "compile_cache_misses",
            "Modules compiled because neither memory nor the store had them compiled",
            ConstCounter::new(cache.compiled),
        );
        registry.register(
            "compile_cache_artifact_loads",
            "Modules loaded from a compiled artifact kept in the store",
            ConstCounter::new(cache.loaded),
        );
        registry.register(
            "compile_cache_artifacts_rejected",
            "Stored compiled artifacts not loaded because their seal did not verify under the artifact key",
            ConstCounter::new(gauges.artifacts_rejected),
        );
        registry.register(
            "compile_cache_entries",
            "Compiled modules held in memory",
            ConstGauge::new(cache.entries as i64),
        );
        registry.register(
            "compile_cache_bytes",
            "What the compiled modules held in memory weigh (machine code and data, plus their binaries), in bytes",
            ConstGauge::new(cache.bytes as i64),
        );
        registry.register(
            "sync_calls_rerun",
            "Calls of stateless modules begun on the request's thread that ran into an epoch and were run again on a fiber",
            ConstCounter::new(gauges.sync_reruns),
        );
        registry.register(
            "live_instances",
            "Stateful instances alive now",
            ConstGauge::new(gauges.live_instances as i64),
        );
        registry.register(
            "environments",
            "Environments alive now",
            ConstGauge::new(gauges.environments as i64),
        );
        registry.register(
            "environment_instances",
            "Instances all environments hold together (of --max-environment-instances)",
            ConstGauge::new(gauges.environment_instances as i64),
        );
        registry.register(
            "executions_in_flight",
            "Executions and registrations running now",
            ConstGauge::new(gauges.in_flight as i64),
        );
        registry.register(
            "executions_queued",
            "Requests waiting for an execution slot",
            ConstGauge::new(gauges.queued as i64),
        );
        // Counted by the admission queues; copied into a family at scrape
        // time, so a refusal costs the request path one atomic add.
        let refusals = Family::<RefusalLabels, Counter>::default();
        for (reason, count) in [
            ("client_queue_full", gauges.refused_client_queue),
            ("queue_full", gauges.refused_queue_full),
            ("queue_timeout", gauges.refused_queue_timeout),
        ] {
            refusals.get_or_create(&RefusalLabels { reason }).inc_by(count);
        }
        registry.register(
            "admission_refusals",
            "Requests refused an execution slot, by reason: client_queue_full (429 concurrency_limit: the client \
             held its share and its queue was full), queue_full and queue_timeout (503 overloaded)",
            refusals,
        );
        registry.register(
            "jobs_queued",
            "Jobs (POST /jobs) waiting to run in this process",
            ConstGauge::new(gauges.jobs_queued as i64),
        );
        registry.register(
            "jobs_running",
            "Jobs running in this process",
            ConstGauge::new(gauges.jobs_running as i64),
        );
        registry.register(
            "registered_modules",
            "Modules in the registry",
            ConstGauge::new(gauges.registered_modules as i64),
        );
        registry.register_with_unit(
            "registered_module",
            "Total size of the registered modules' binaries",
            Unit::Bytes,
            ConstGauge::new(i64::try_from(gauges.registered_bytes).unwrap_or(i64::MAX)),
        );
        if let Some(size) = gauges.store_file_bytes {
            registry.register_with_unit(
                "store_file",
                "Size of the registry's database file",
                Unit::Bytes,
                ConstGauge::new(i64::try_from(size).unwrap_or(i64::MAX)),
            );
        }
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    /// `Metrics::ok` is indexed by `endpoint as usize`.
    #[test]
    fn every_endpoint_indexes_its_own_series() {
        for (index, endpoint) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(endpoint as usize, index, "{endpoint:?}");
        }
    }

    /// A request is labelled by the template its path matches, with or
    /// without parameters; the Swagger UI's pages by `/docs`; anything
    /// else is `unmatched`.
    #[test]
    fn requests_are_labelled_by_the_route_they_match() {
        use axum::http::Method;
        let metrics = super::Metrics::new(&[
            (Method::POST, "/"),
            (Method::POST, "/execute"),
            (Method::GET, "/modules/{name}"),
            (Method::DELETE, "/modules/{name}"),
            (Method::GET, "/modules"),
        ]);
        for (path, label) in [
            ("/", "/"),
            ("/execute", "/execute"),
            ("/modules", "/modules"),
            ("/modules/double", "/modules/{name}"),
            ("/execute/x", "unmatched"),
            ("/docs/index.html", "/docs"),
            ("/nope", "unmatched"),
        ] {
            assert_eq!(metrics.route_label(path), label, "{path}");
        }
    }

    /// Generated ids are the process prefix, a dash and the count padded to
    /// ten digits, as `format!("{prefix}-{n:010}")` writes them; a thread's
    /// count steps by the number of cells.
    #[test]
    fn request_ids_are_the_prefix_and_a_padded_count() {
        use crate::per_thread::{SHARDS, shard};
        let metrics = super::Metrics::new(&[]);
        let cell = shard();
        let first = metrics.request_id();
        let (prefix, count) = first.split_once('-').unwrap();
        assert_eq!(prefix.len(), 8, "{first}");
        assert_eq!(count, format!("{:010}", cell + 1));
        assert_eq!(metrics.request_id(), format!("{prefix}-{:010}", SHARDS + cell + 1));
        metrics.next_ids[cell]
            .0
            .store(1_000_000_000, std::sync::atomic::Ordering::Relaxed);
        let big = 1_000_000_000 * SHARDS as u64 + cell as u64 + 1;
        assert_eq!(metrics.request_id(), format!("{prefix}-{big}"));
    }

    /// Threads that count in cells of their own (or share one, past
    /// `SHARDS` threads) never make the same id.
    #[test]
    fn request_ids_made_on_many_threads_are_all_different() {
        let metrics = super::Metrics::new(&[]);
        let threads = crate::per_thread::SHARDS + 4;
        let ids: Vec<String> = std::thread::scope(|scope| {
            let made: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| (0..500).map(|_| metrics.request_id()).collect::<Vec<_>>()))
                .collect();
            made.into_iter().flat_map(|m| m.join().unwrap()).collect()
        });
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), threads * 500);
        assert_eq!(distinct.len(), ids.len(), "some request ids were made twice");
    }
}
