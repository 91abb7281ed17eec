//! gauntlet-coordinator: the fleet's centre. Workers register and keep a Session stream; runs
//! are split into execution segments by worker capacity, started at one instant, merged
//! exactly, watched for lost workers, judged against thresholds once, and reported.
//!
//! # Layout
//! - this file: [`Coordinator`] (its settings and shared state) and [`Coordinator::serve`],
//!   what the CLI and the tests start.
//! - [`registry`]: known workers, their streams and heartbeats.
//! - [`run`]: one run's life (its rooms: intake, shares, lifecycle, finish, figures): wait
//!   for workers, assign, admit and merge snapshots, hand lost shares over, judge, report.
//! - [`aggregator`]: the exact, idempotent merge of snapshots.
//! - [`timeline`]: a run's measurements over time in bounded memory (recent intervals in
//!   full, older ones compacted into the series), windowed thresholds judged as windows close.
//! - [`history`]: the SQLite run history.
//! - [`listen`]: guarded listening sockets (connection limit, idle timeout).
//! - [`http`]: the HTTP port (`/`, `/api/runs`, `/api/live`, `/metrics`, `/healthz`).
//! - [`service`]: the gRPC services (WorkerService, ControlService) over the above; errors
//!   become `tonic::Status` there and nowhere else.

pub mod aggregator;
pub mod history;
pub mod http;
pub mod listen;
pub mod registry;
pub mod run;
pub mod service;
pub mod timeline;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gauntlet_core::words::RunPhase;
use gauntlet_proto::v1::control_service_server::ControlServiceServer;
use gauntlet_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use registry::Registry;
pub use run::Run;

/// Coordinator settings.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    /// A worker silent for this long is lost.
    pub heartbeat_timeout: Duration,
    /// How often workers send heartbeats.
    pub heartbeat_interval: Duration,
    /// Delay between assigning a run and its common start instant.
    pub start_delay: Duration,
    /// How long a run waits for `min_workers` unless the plan or request says otherwise.
    pub min_workers_timeout: Duration,
    /// Connections each port (gRPC, HTTP) holds at once, and how long one may idle.
    pub connections: listen::ConnectionLimits,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            heartbeat_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            start_delay: Duration::from_millis(500),
            min_workers_timeout: Duration::from_secs(30),
            connections: listen::ConnectionLimits::default(),
        }
    }
}

/// Finished runs a coordinator keeps in memory (for `/api/runs`, the live page, `WatchRun` and
/// `GetRun`), the newest ones; older ones are only in the history.
pub const KEPT_FINISHED_RUNS: usize = 100;

/// The coordinator's shared state.
#[derive(Debug, Clone)]
pub struct Coordinator {
    /// Settings.
    pub config: CoordinatorConfig,
    /// Workers.
    pub registry: Arc<Registry>,
    runs: Arc<Mutex<BTreeMap<String, Arc<Run>>>>,
    shutdown: CancellationToken,
    /// Bearer token every worker call must carry, if set (and every control call, unless a
    /// submit token is set).
    token: Option<String>,
    /// Bearer token of the ControlService (submit, cancel, watch), if set: then a worker's
    /// token cannot steer runs.
    submit_token: Option<String>,
    /// Token of the HTTP port (all but `/healthz`), if set apart from the submit token.
    http_token: Option<String>,
    /// Certificate chain and private key (PEM) for TLS on the gRPC port, if set.
    tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Where runs are recorded (started, then finished), if set.
    pub(crate) history: Option<Arc<Mutex<history::History>>>,
    /// Snapshots refused since the start, by reason, for `/metrics`.
    pub rejected: Arc<run::intake::Rejections>,
    /// Connections closed on arrival because a port held its maximum, for `/metrics`.
    pub refused_connections: Arc<std::sync::atomic::AtomicU64>,
}

impl Coordinator {
    /// A coordinator that stops its runs when `shutdown` is cancelled.
    pub fn new(config: CoordinatorConfig, shutdown: CancellationToken) -> Coordinator {
        Coordinator {
            config,
            registry: Arc::new(Registry::default()),
            runs: Arc::new(Mutex::new(BTreeMap::new())),
            shutdown,
            token: None,
            submit_token: None,
            http_token: None,
            tls: None,
            history: None,
            rejected: Arc::default(),
            refused_connections: Arc::default(),
        }
    }

    /// Records every run in `history` (runs a previous coordinator left running are marked
    /// `interrupted` now).
    pub fn with_history(mut self, history: history::History) -> Coordinator {
        match history.mark_interrupted() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                runs = n,
                "runs left running by an earlier coordinator marked interrupted"
            ),
            Err(e) => tracing::error!(error = %e, "cannot mark interrupted runs"),
        }
        self.history = Some(Arc::new(Mutex::new(history)));
        self
    }

    /// Serves gRPC over TLS with this certificate chain and key (PEM).
    pub fn with_tls(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Coordinator {
        self.tls = Some((cert_pem, key_pem));
        self
    }

    /// Requires `token` (as `authorization: Bearer <token>`) on every gRPC call.
    pub fn with_token(mut self, token: Option<String>) -> Coordinator {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Requires `token` on the ControlService instead of the worker token, so that a worker's
    /// credential cannot submit or cancel runs.
    pub fn with_submit_token(mut self, token: Option<String>) -> Coordinator {
        self.submit_token = token.filter(|t| !t.is_empty());
        self
    }

    /// Requires `token` on the HTTP port (all but `/healthz`); without one it is the submit
    /// token (or, failing that, the worker token): whoever may steer runs may watch them.
    pub fn with_http_token(mut self, token: Option<String>) -> Coordinator {
        self.http_token = token.filter(|t| !t.is_empty());
        self
    }

    /// The token the HTTP port requires, if any.
    pub fn http_token(&self) -> Option<String> {
        self.http_token
            .clone()
            .or_else(|| self.submit_token.clone())
            .or_else(|| self.token.clone())
    }

    /// The run `id`.
    pub fn run(&self, id: &str) -> Option<Arc<Run>> {
        lock(&self.runs).get(id).cloned()
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Vec<Arc<Run>> {
        lock(&self.runs).values().cloned().collect()
    }

    /// Adds `run`, and lets go of the oldest finished runs beyond [`KEPT_FINISHED_RUNS`] (their
    /// reports are in the history and the files their submitters wrote): a coordinator that
    /// lives for months of runs holds a bounded number of reports.
    fn add_run(&self, run: Arc<Run>) {
        let mut runs = lock(&self.runs);
        runs.insert(run.id.clone(), run);
        let finished: Vec<String> = runs
            .iter()
            .filter(|(_, r)| r.phase() == RunPhase::Finished)
            .map(|(id, _)| id.clone())
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(KEPT_FINISHED_RUNS))
        {
            runs.remove(id);
        }
    }

    /// Serves the gRPC port on `grpc` and, if given, the HTTP port on `http`, until
    /// `shutdown` is cancelled: what `gauntlet coordinator` and the tests both start.
    pub async fn serve(
        self,
        grpc: TcpListener,
        http: Option<TcpListener>,
    ) -> Result<(), ServeError> {
        let web = http.map(|http| {
            let served = self.clone();
            tokio::spawn(async move { served.serve_http(http).await })
        });
        self.serve_grpc(grpc).await.map_err(ServeError::Grpc)?;
        if let Some(web) = web {
            match web.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(ServeError::Http(e)),
                Err(e) => return Err(ServeError::Http(std::io::Error::other(e))),
            }
        }
        Ok(())
    }

    /// Serves both gRPC services on `listener` until `shutdown` is cancelled.
    pub async fn serve_grpc(self, listener: TcpListener) -> Result<(), tonic::transport::Error> {
        let shutdown = self.shutdown.clone();
        let incoming = listen::GuardedListener::new(
            listener,
            self.config.connections,
            Arc::clone(&self.refused_connections),
        )
        .into_stream();
        let check = gauntlet_proto::auth::check_token(self.token.clone());
        let check_submit = gauntlet_proto::auth::check_token(
            self.submit_token.clone().or_else(|| self.token.clone()),
        );
        // Every connection is pinged: a peer that stops answering is closed, and a live one is
        // never idle for the connection guard.
        let keepalive = (self.config.connections.idle / 3).max(Duration::from_millis(100));
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(keepalive))
            .http2_keepalive_timeout(Some(keepalive))
            .max_concurrent_streams(Some(MAX_STREAMS));
        if let Some((cert, key)) = &self.tls {
            let identity = tonic::transport::Identity::from_pem(cert, key);
            builder =
                builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
        }
        builder
            .add_service(WorkerServiceServer::with_interceptor(
                service::Workers(self.clone()),
                check.clone(),
            ))
            .add_service(ControlServiceServer::with_interceptor(
                service::Control(self.clone()),
                check_submit,
            ))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
    }

    /// Serves the HTTP port (`/`, `/api/runs`, `/api/live`, `/metrics`, `/healthz`) on
    /// `listener` until `shutdown` is cancelled.
    pub async fn serve_http(self, listener: TcpListener) -> std::io::Result<()> {
        let shutdown = self.shutdown.clone();
        let guarded = listen::GuardedListener::new(
            listener,
            self.config.connections,
            Arc::clone(&self.refused_connections),
        );
        axum::serve(guarded, http::router(self))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    /// Binds `addr` and serves in a background task; returns the bound address.
    pub async fn start(
        self,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let handle = tokio::spawn(async move {
            if let Err(e) = self.serve_grpc(listener).await {
                tracing::error!(error = %e, "coordinator server stopped");
            }
        });
        Ok((bound, handle))
    }
}

/// A port that stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC port.
    #[error("the coordinator's gRPC port stopped: {0}")]
    Grpc(#[source] tonic::transport::Error),
    /// The HTTP port.
    #[error("the coordinator's HTTP port stopped: {0}")]
    Http(#[source] std::io::Error),
}

/// HTTP/2 streams one connection may have open at once (a worker needs one, a run client a
/// few).
const MAX_STREAMS: u32 = 64;

/// Locks a mutex, going on with the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
