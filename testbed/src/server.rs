//! The router, [`serve`] (the testbed as a library: config, listener, shutdown token) and the
//! in-process [`Testbed`] handle that tests and `gauntlet demo` use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::routing::{any, get};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::Validator;
use crate::config::TestbedConfig;
use crate::factory::Factory;
use crate::faults::Faults;
use crate::http;
use crate::stats::{Stats, StatsSnapshot};

/// Why the testbed could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration cannot work (no key, unreadable key file, ...).
    #[error("invalid testbed configuration: {0}")]
    Config(String),
    /// Binding or serving failed.
    #[error("testbed I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// State shared by every connection and request.
#[derive(Debug)]
pub struct App {
    /// Settings fixed at start.
    pub config: TestbedConfig,
    faults: RwLock<Arc<Faults>>,
    /// Ground truth.
    pub stats: Stats,
    /// The per-user manager factory.
    pub factory: Factory,
    /// Token validation.
    pub validator: Validator,
    /// `server_id` in frames.
    pub server_id: String,
    /// Cancelled when the testbed stops; open connections close 1001.
    pub shutdown: CancellationToken,
    started: Instant,
    connections: AtomicU64,
    http_requests: Mutex<HashMap<String, u64>>,
}

impl App {
    /// Builds the state; fails when no token could ever validate.
    pub fn new(config: TestbedConfig, shutdown: CancellationToken) -> Result<App, ServeError> {
        let validator = Validator::new(&config.auth).map_err(ServeError::Config)?;
        let ws = &config.websocket;
        let factory = Factory::new(
            ws.max_managers_per_user,
            ws.cleanup_threshold,
            ws.manager_idle,
        );
        Ok(App {
            faults: RwLock::new(Arc::new(config.faults.clone())),
            stats: Stats::default(),
            factory,
            validator,
            server_id: format!("testbed-{}", std::process::id()),
            shutdown,
            started: Instant::now(),
            connections: AtomicU64::new(0),
            http_requests: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// The fault switches in force now.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces every fault switch.
    pub fn set_faults(&self, faults: Faults) {
        tracing::info!(?faults, "fault switches replaced");
        *self.faults.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(faults);
    }

    /// Still inside the configured warm-up?
    pub fn warming_up(&self) -> bool {
        self.started.elapsed() < self.config.http.warmup
    }

    /// Numbers connections for their ids.
    pub fn next_connection_id(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::Relaxed)
    }

    /// Numbers requests per route, to key `http_error` draws.
    pub fn next_http_request(&self, route: &str) -> u64 {
        let mut map = self.http_requests.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(route.to_owned()).or_default();
        *n += 1;
        *n - 1
    }

    /// Ground truth now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot(self.factory.snapshot())
    }
}

/// Every route of the testbed.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new()
        .route("/ws", any(crate::connection::upgrade))
        .route("/websocket", any(crate::connection::upgrade))
        .route("/ws/test", any(crate::connection::test_upgrade))
        .route("/health", get(http::health))
        .route("/api/health", get(http::health))
        .route("/api/discovery/services", get(http::discovery))
        .route("/api/mcp/config", get(http::mcp_config))
        .route("/api/mcp/servers", get(http::mcp_servers))
        .route("/__testbed/stats", get(http::stats))
        .route(
            "/__testbed/faults",
            get(http::get_faults).put(http::put_faults),
        );
    for path in http::MESSAGE_PATHS {
        router = router.route(path, get(http::messages).post(http::messages));
    }
    router
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            http::count_and_inject,
        ))
        .with_state(app)
}

/// Serves the testbed on `listener` until `shutdown` is cancelled.
pub async fn serve(
    config: TestbedConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let app = Arc::new(App::new(config, shutdown.clone())?);
    run(app, listener).await
}

async fn run(app: Arc<App>, listener: TcpListener) -> Result<(), ServeError> {
    use axum::serve::ListenerExt;
    let shutdown = app.shutdown.clone();
    let sweeper = {
        let app = app.clone();
        let period = app
            .config
            .websocket
            .manager_idle
            .max(std::time::Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = app.shutdown.cancelled() => break,
                    _ = tick.tick() => app.factory.sweep(),
                }
            }
        })
    };
    let listener = listener.tap_io(|tcp| {
        // Small frames must leave at once: Nagle plus delayed ACKs would add 40 ms stalls.
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    sweeper.abort();
    Ok(result?)
}

/// A testbed running inside this process, for tests, benchmarks and `gauntlet demo`.
#[derive(Debug)]
pub struct Testbed {
    addr: SocketAddr,
    app: Arc<App>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Testbed {
    /// Starts on `addr` (`127.0.0.1:0` for any free port).
    pub async fn start(config: TestbedConfig, addr: SocketAddr) -> Result<Testbed, ServeError> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App::new(config, CancellationToken::new())?);
        let task = tokio::spawn(run(app.clone(), listener));
        Ok(Testbed { addr, app, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Ground truth now.
    pub fn stats(&self) -> StatsSnapshot {
        self.app.snapshot()
    }

    /// Replaces every fault switch.
    pub fn set_faults(&self, faults: Faults) {
        self.app.set_faults(faults);
    }

    /// The shared state (for tests that look inside).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, closes open connections (1001) and waits for the server to end.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.app.shutdown.cancel();
        self.task
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
    }
}
