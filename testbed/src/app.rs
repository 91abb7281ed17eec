//! The shared state: [`App`], one per testbed, which every connection, request and the router
//! hold (settings, fault switches and the clock their windows read, ground truth, the manager
//! factory, the run limit, token validation, the shutdown token), and [`ServeError`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::Validator;
use crate::capacity::Capacity;
use crate::config::TestbedConfig;
use crate::factory::Factory;
use crate::faults::Faults;
use crate::stats::{Stats, StatsSnapshot};

/// Why the testbed could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration cannot work (no key, unreadable key file, ...).
    #[error("invalid testbed configuration: {0}")]
    Config(#[from] crate::auth::KeyError),
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
    /// The testbed-wide run limit.
    pub capacity: Arc<Capacity>,
    /// Token validation.
    pub validator: Validator,
    /// `server_id` in frames.
    pub server_id: String,
    /// Cancelled when the testbed stops; open connections close 1001.
    pub shutdown: CancellationToken,
    started: Instant,
    /// The testbed's first request other than the admin endpoints: fault windows count from it.
    first_request: OnceLock<Instant>,
    connections: AtomicU64,
    http_requests: Mutex<HashMap<String, u64>>,
}

impl App {
    /// Builds the state; fails when no token could ever validate.
    pub fn new(config: TestbedConfig, shutdown: CancellationToken) -> Result<App, ServeError> {
        let validator = Validator::new(&config.auth)?;
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
            capacity: Capacity::new(config.pipeline.concurrency),
            validator,
            server_id: format!("testbed-{}", std::process::id()),
            shutdown,
            started: Instant::now(),
            first_request: OnceLock::new(),
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

    /// The fault switches on now: those with a window (`from_s`, `until_s`) only inside it, on
    /// the clock that starts at the testbed's first request ([`App::mark_request`]).
    pub fn faults_in_force(&self) -> Arc<Faults> {
        let faults = self.faults();
        if !faults.timed() {
            return faults;
        }
        Arc::new(faults.in_force(self.clock()))
    }

    /// Starts the fault clock at the first request other than the admin endpoints.
    pub fn mark_request(&self) {
        self.first_request.get_or_init(Instant::now);
    }

    /// Time since the first request other than the admin endpoints (zero before it).
    pub fn clock(&self) -> Duration {
        self.first_request
            .get()
            .map_or(Duration::ZERO, |first| first.elapsed())
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
        self.stats
            .snapshot(self.factory.snapshot(), self.capacity.snapshot())
    }
}
