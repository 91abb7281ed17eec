//! The router (every route to its handler in [`crate::connection`] or [`crate::http`]),
//! [`serve`] (the testbed as a library: config, listener, shutdown token) and the in-process
//! [`Testbed`] handle that tests and `gauntlet demo` use.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::app::{App, ServeError};
use crate::config::TestbedConfig;
use crate::connection;
use crate::faults::Faults;
use crate::http;
use crate::stats::StatsSnapshot;

/// Every route of the testbed.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new()
        .route("/ws", any(connection::upgrade))
        .route("/websocket", any(connection::upgrade))
        .route("/ws/test", any(connection::test_upgrade))
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
    let counted = app.clone();
    let listener = listener.tap_io(move |tcp| {
        // Small frames must leave at once: Nagle plus delayed ACKs would add 40 ms stalls.
        let _ = tcp.set_nodelay(true);
        if let Ok(peer) = tcp.peer_addr() {
            counted.stats.peer(peer.ip());
        }
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
