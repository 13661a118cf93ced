//! Building the application from settings, binding, and serving until a
//! shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::engine::{self, WasmEngine};
use crate::instances::Instances;
use crate::registry::{ModuleStore, PgStore, RedbStore, Registry, TokenQuota};

/// The builder of the multi-threaded runtime the server runs on. Its
/// worker threads get stacks of [`engine::WORKER_STACK_BYTES`], with room
/// for a guest's whole stack beside the server's frames, so that short
/// calls of stateless modules can run on them without switching onto a
/// fiber (see `engine::store::call`).
pub fn runtime_builder(settings: &Settings) -> tokio::runtime::Builder {
    let max_stack_bytes = settings.max_stack_bytes;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .thread_stack_size(engine::WORKER_STACK_BYTES)
        .on_thread_start(move || engine::allow_sync_calls(max_stack_bytes))
        .enable_all();
    builder
}

/// A bound, ready-to-serve server.
pub struct Application {
    listener: TcpListener,
    api: api::Api,
    addr: SocketAddr,
    /// Kept to let background compiles end at shutdown.
    registry: Arc<Registry>,
}

/// How long shutdown waits for background compiles to keep their artifacts.
const BACKGROUND_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl Application {
    /// Opens the store the settings name (a redb file, `--memory`, or a
    /// PostgreSQL database with `--store`), then
    /// builds the rest as [`Application::build_with_store`] does.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if let Some(url) = settings.store.clone() {
            tracing::info!("opening registry in PostgreSQL (--store)");
            let store: Arc<dyn ModuleStore> = Arc::new(PgStore::connect(&url).await?);
            return Self::build_with_store(settings, store).await;
        }
        let store: Arc<dyn ModuleStore> = match settings.registry_path() {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", dir.display()))?;
                }
                tracing::info!(path = %path.display(), "opening registry");
                Arc::new(RedbStore::open(&path, settings.store_cache_bytes)?)
            }
            None => {
                tracing::info!("registry kept in memory only (--memory)");
                Arc::new(RedbStore::in_memory()?)
            }
        };
        Self::build_with_store(settings, store).await
    }

    /// Builds the engine and registry over `store`, and binds the listener
    /// (port 0 picks a free port; see [`Application::port`]). Tests use it
    /// to run the real server over a store that fails on demand.
    pub async fn build_with_store(settings: Settings, store: Arc<dyn ModuleStore>) -> anyhow::Result<Self> {
        let engine = WasmEngine::new(settings.engine())?;
        let quota = TokenQuota {
            max_modules: settings.max_modules_per_token,
            max_bytes: settings.max_bytes_per_token,
        };
        let seal = settings.artifact_seal().map_err(|e| anyhow::anyhow!(e))?;
        let registry = Arc::new(Registry::open(store, engine.clone(), quota, seal).await?);
        registry.start_sync();
        let node_id = settings.node_name();
        tracing::info!(modules = registry.len(), "registry loaded");
        let instances = Instances::new(settings.instances(&node_id));
        let body_rules = api::extract::BodyRules {
            timeout: std::time::Duration::from_millis(settings.body_timeout_ms),
            max_bytes: settings.max_body_bytes,
        };
        let state = AppState::new(
            engine,
            registry.clone(),
            instances,
            api::admission::Admission::new(settings.admission()),
            settings.call_bounds(),
            api::job_table::Jobs::new(settings.jobs()),
            body_rules,
            api::served_routes(),
        );
        // Jobs queued before a restart run again; running ones are failed.
        api::jobs::recover(&state)
            .await
            .map_err(|e| anyhow::anyhow!("cannot recover stored jobs: {}", e.message))?;
        let tokens = settings.access_tokens().map_err(|e| anyhow::anyhow!(e))?;
        if tokens.is_empty() && !settings.bind.is_loopback() {
            tracing::warn!(
                bind = %settings.bind,
                "listening beyond loopback with no API tokens: anyone who can reach this address can run code here; configure --token or --tokens-file"
            );
        }
        if !tokens.is_empty() {
            tracing::info!(tokens = tokens.len(), "access control on: requests need a bearer token");
        }
        let rate_limits = api::quota::RateLimits::new(settings.rate_limit);
        let proxies = api::proxies::TrustedProxies::new(settings.trusted_proxies.clone());
        let api = api::router(state, tokens, rate_limits, proxies);
        let listener = TcpListener::bind((settings.bind, settings.port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind {}:{}: {e}", settings.bind, settings.port))?;
        let addr = listener.local_addr()?;
        if registry.is_shared() {
            let url = settings
                .advertise_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"));
            registry.announce_node(&node_id, &url).await?;
            tracing::info!(node = %node_id, url = %url, "node announced in the shared registry");
            registry.keep_announcing(node_id, url);
        }
        Ok(Application {
            listener,
            api,
            addr,
            registry,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API the listener's connections would be served by, for driving
    /// it in process (`examples/front_scaling.rs`): each
    /// [`api::Api::connection`] serves as one connection does.
    pub fn into_api(self) -> api::Api {
        self.api
    }

    /// Serves until `shutdown` completes, then lets in-flight requests
    /// finish and background compiles keep their artifacts (for up to
    /// [`BACKGROUND_GRACE`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        tracing::info!(addr = %self.addr, "listening");
        // Each connection gets its own service, which knows the client's
        // address (for the rate limiter and fair shares).
        axum::serve(self.listener, self.api.into_make_service())
            .with_graceful_shutdown(shutdown)
            .await?;
        self.registry.finish_background(BACKGROUND_GRACE).await;
        Ok(())
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
