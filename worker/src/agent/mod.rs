//! The worker's side of the fleet: an [`Agent`] registers with the coordinator, keeps one
//! Session stream, runs each assignment with the engine from the common start instant
//! (`share`), hands what the coordinator must hear to its outbox (`outbox`: numbered
//! snapshots, progress, `Done`s, resent after a reconnect until acknowledged), reconnects
//! with backoff, stops its sessions when the coordinator stays away past the lease, and
//! drains on shutdown.
//!
//! # Layout
//! - this file: [`run_agent`], the [`Agent`] (register, open the stream, serve it, reconnect,
//!   drain) and what it tells its operator when the coordinator cannot be reached;
//! - `outbox`: what is owed to the coordinator per assignment, and its pruning;
//! - `share`: one assignment's life, from its plan to its `Done`.

use std::collections::BTreeMap;
use std::time::Duration;

use gauntlet_proto::PROTOCOL_VERSION;
use gauntlet_proto::auth::attach_token;
use gauntlet_proto::v1::worker_service_client::WorkerServiceClient;
use gauntlet_proto::v1::{self, coordinator_message, worker_message};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod outbox;
mod share;

use outbox::{ShareKey, SharedOutbox};

/// Messages queued to the coordinator while a stream is open; when full, snapshots wait in
/// the outbox and go out with the next resend.
const OUTBOX: usize = 256;

/// How to reach the coordinator and what to tell it.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Coordinator URL (`http://127.0.0.1:7000`).
    pub coordinator: String,
    /// Worker name.
    pub name: String,
    /// Relative capacity.
    pub capacity: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// How long to wait for running sessions when shutting down.
    pub drain: Duration,
    /// Bearer token the coordinator requires, if any.
    pub token: Option<String>,
    /// Extra CA certificate (PEM) trusted for an `https://` coordinator.
    pub tls_ca: Option<Vec<u8>>,
    /// What plans may read and reach on this worker.
    pub access: crate::access::Access,
    /// The source addresses its connections are bound to (`--local-addresses`).
    pub sources: crate::sources::SourceAddresses,
}

/// A failure that ends the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The coordinator refused this worker (a protocol mismatch).
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    /// The coordinator URL is not usable.
    #[error("bad coordinator URL `{0}`: {1}")]
    BadUrl(String, String),
}

/// Runs the agent until `shutdown`; then stops its sessions (graceful stop) and flushes the
/// last snapshots, waiting at most `config.drain`.
pub async fn run_agent(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    Agent::new(config)?.run(shutdown).await
}

/// This worker's identity at the coordinator, empty until the first registration and kept
/// across reconnects (the coordinator then knows it is the same worker).
#[derive(Debug, Default)]
struct Identity {
    worker_id: String,
    session_key: String,
}

/// What a registration settled: how long the coordinator keeps our shares while it does not
/// hear from us, and how often we heartbeat.
#[derive(Debug, Clone, Copy)]
struct Terms {
    lease: Duration,
    heartbeat: Duration,
}

/// One worker's connection to the coordinator and the assignments it runs.
#[derive(Debug)]
pub struct Agent {
    endpoint: tonic::transport::Endpoint,
    config: AgentConfig,
    identity: Identity,
    /// What the coordinator must hear, shared with the running assignments.
    outbox: SharedOutbox,
    /// The running assignments.
    jobs: TaskTracker,
    /// Cancelled when this worker shuts down: every share stops starting sessions at once.
    leaving: CancellationToken,
    /// Parent of every assignment's stop token (a child of `leaving`); cancelled when the
    /// coordinator stayed away past the lease, and replaced once those assignments ended.
    jobs_stop: CancellationToken,
    /// Per run: cancels its assignments (a Stop from the coordinator). A run's token goes
    /// once all its assignments here finished and their `Done`s were acknowledged.
    stops: BTreeMap<String, CancellationToken>,
}

impl Agent {
    /// An agent for `config`, not yet connected.
    pub fn new(config: AgentConfig) -> Result<Agent, AgentError> {
        let endpoint =
            gauntlet_proto::auth::endpoint(&config.coordinator, config.tls_ca.as_deref())
                .map_err(|e| AgentError::BadUrl(config.coordinator.clone(), e.to_string()))?;
        let leaving = CancellationToken::new();
        Ok(Agent {
            endpoint,
            config,
            identity: Identity::default(),
            outbox: SharedOutbox::default(),
            jobs: TaskTracker::new(),
            jobs_stop: leaving.child_token(),
            leaving,
            stops: BTreeMap::new(),
        })
    }

    /// Serves the coordinator until `shutdown`, then drains. Ends early only if the
    /// coordinator refuses this worker.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let connected = self.on_shutdown(shutdown);
        self.reconnect(&connected).await?;
        self.drain().await;
        Ok(())
    }

    /// On `shutdown` the shares stop starting sessions at once; the stream stays open while
    /// they drain, so that their `Leaving` (the coordinator hands the share over at once) and
    /// their last snapshots go out live. The returned token ends the connection after that.
    fn on_shutdown(&self, shutdown: CancellationToken) -> CancellationToken {
        let connected = CancellationToken::new();
        let (leaving, jobs, drain) = (self.leaving.clone(), self.jobs.clone(), self.config.drain);
        let disconnect = connected.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            leaving.cancel();
            jobs.close();
            let _ = tokio::time::timeout(drain, jobs.wait()).await;
            disconnect.cancel();
        });
        connected
    }

    /// Connects, serves and reconnects with backoff until `connected` is cancelled; past the
    /// lease without the coordinator, stops the running sessions (it has given them away).
    async fn reconnect(&mut self, connected: &CancellationToken) -> Result<(), AgentError> {
        let mut backoff = Duration::from_millis(100);
        let mut disconnected_since: Option<Instant> = None;
        let mut lease = Duration::from_secs(5);
        let mut unreachable = Unreachable::default();
        loop {
            if connected.is_cancelled() {
                return Ok(());
            }
            // Away from the coordinator past the lease: it has given our shares away.
            if disconnected_since.is_some_and(|d| d.elapsed() > lease)
                && !self.jobs.is_empty()
                && !self.jobs_stop.is_cancelled()
            {
                tracing::warn!("coordinator unreachable past the lease: stopping running sessions");
                self.jobs_stop.cancel();
            }
            if self.jobs_stop.is_cancelled() && self.jobs.is_empty() && !self.leaving.is_cancelled()
            {
                self.jobs_stop = self.leaving.child_token();
            }
            match self.connect_once(connected).await {
                Ok(lease_was) => {
                    lease = lease_was;
                    backoff = Duration::from_millis(100);
                    disconnected_since = Some(Instant::now());
                    unreachable = Unreachable::default();
                }
                Err(Failure::Refused(refused)) => return Err(refused),
                Err(Failure::Unreachable(why)) => {
                    disconnected_since.get_or_insert_with(Instant::now);
                    unreachable.tell(&self.config.coordinator, &why);
                }
            }
            tokio::select! {
                _ = connected.cancelled() => return Ok(()),
                _ = sleep(backoff) => {}
            }
            // Capped well under a lease: a short network cut must not cost the worker its
            // shares.
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Running sessions get their graceful stop; the last snapshots go out if a stream is open
    /// (a reconnect is attempted once more if not).
    async fn drain(&mut self) {
        self.jobs_stop.cancel();
        self.jobs.close();
        let _ = tokio::time::timeout(self.config.drain, self.jobs.wait()).await;
        if self.outbox.lock().has_unacked_snapshots() {
            let flush = CancellationToken::new();
            let deadline = flush.clone();
            tokio::spawn(async move {
                sleep(Duration::from_secs(3)).await;
                deadline.cancel();
            });
            let _ = self.connect_once(&flush).await;
        }
    }

    /// One connection: register, open the Session stream, serve it until it ends or `until`
    /// is cancelled. `Ok(lease)` after a session.
    async fn connect_once(&mut self, until: &CancellationToken) -> Result<Duration, Failure> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| Failure::Unreachable(chain(&e)))?;
        let mut client =
            WorkerServiceClient::with_interceptor(channel, attach_token(self.config.token.clone()));
        let reply = client.register(self.registration()).await;
        let terms = self.register(reply)?;
        let (tx, rx) = mpsc::channel(OUTBOX);
        // The stream was just created: this cannot find it full.
        let _ = tx.try_send(self.hello());
        let inbound = match client.session(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Err(Failure::Unreachable(format!(
                    "the session stream was refused: {}",
                    chain(&status)
                )));
            }
        };
        tracing::info!(worker = %self.identity.worker_id, "connected to the coordinator");
        self.serve(tx, inbound, terms.heartbeat, until).await;
        Ok(terms.lease)
    }

    /// What this worker registers with: its name, capacity, labels, protocol and the identity
    /// of an earlier registration.
    fn registration(&self) -> v1::RegisterRequest {
        v1::RegisterRequest {
            name: self.config.name.clone(),
            capacity: self.config.capacity,
            version: env!("CARGO_PKG_VERSION").into(),
            labels: self.config.labels.clone().into_iter().collect(),
            protocol: PROTOCOL_VERSION,
            worker_id: self.identity.worker_id.clone(),
            session_key: self.identity.session_key.clone(),
        }
    }

    /// Takes the coordinator's answer to [`Agent::registration`]: the identity to keep and
    /// the terms of this connection, or why there is none.
    fn register(
        &mut self,
        reply: Result<tonic::Response<v1::RegisterResponse>, tonic::Status>,
    ) -> Result<Terms, Failure> {
        let registered = match reply {
            Ok(r) => r.into_inner(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::FailedPrecondition
                        | tonic::Code::Unauthenticated
                        | tonic::Code::InvalidArgument
                ) =>
            {
                return Err(Failure::Refused(AgentError::Refused(
                    status.message().to_owned(),
                )));
            }
            Err(status) => {
                return Err(Failure::Unreachable(format!(
                    "registration failed: {}",
                    chain(&status)
                )));
            }
        };
        self.identity = Identity {
            worker_id: registered.worker_id,
            session_key: registered.session_key,
        };
        Ok(Terms {
            lease: Duration::from_millis(registered.lease_ms.max(1000)),
            // Running shares' live counts go out at least every PROGRESS_INTERVAL.
            heartbeat: Duration::from_millis(registered.heartbeat_interval_ms.clamp(100, 60_000))
                .min(gauntlet_proto::PROGRESS_INTERVAL),
        })
    }

    /// The first message of a Session stream.
    fn hello(&self) -> v1::WorkerMessage {
        v1::WorkerMessage {
            kind: Some(worker_message::Kind::Hello(v1::Hello {
                worker_id: self.identity.worker_id.clone(),
                session_key: self.identity.session_key.clone(),
            })),
        }
    }

    /// Serves an open Session stream: resends what is owed, heartbeats, takes the
    /// coordinator's messages, until the stream ends or `until` is cancelled.
    async fn serve(
        &mut self,
        tx: mpsc::Sender<v1::WorkerMessage>,
        mut inbound: tonic::Streaming<v1::CoordinatorMessage>,
        heartbeat: Duration,
        until: &CancellationToken,
    ) {
        // However this ends (even dropped mid-await), the stream's sender leaves the outbox
        // with it, so nothing more is written into a connection nobody serves.
        let _attached = self.outbox.attach(tx.clone());
        let mut ticker = tokio::time::interval(heartbeat);
        loop {
            tokio::select! {
                _ = until.cancelled() => return,
                _ = ticker.tick() => {
                    let beat = self.outbox.lock().heartbeat();
                    if tx.try_send(beat).is_err() && tx.is_closed() {
                        return;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        if let Some(kind) = m.kind {
                            self.take(kind);
                        }
                    }
                    Ok(None) | Err(_) => return,
                },
            }
        }
    }

    /// One message from the coordinator.
    fn take(&mut self, kind: coordinator_message::Kind) {
        match kind {
            coordinator_message::Kind::Assignment(a) => {
                let stop = self
                    .stops
                    .entry(a.run_id.clone())
                    .or_insert_with(|| self.jobs_stop.child_token())
                    .clone();
                self.outbox.lock().assign(ShareKey::of(&a));
                self.jobs.spawn(share::run(
                    a,
                    self.outbox.clone(),
                    stop,
                    (self.jobs_stop.clone(), self.leaving.clone()),
                    self.config.access.clone(),
                    self.config.sources.clone(),
                ));
            }
            coordinator_message::Kind::Stop(stop) => {
                tracing::info!(run = %stop.run_id, reason = %stop.reason, "stop requested");
                if let Some(token) = self.stops.get(&stop.run_id) {
                    token.cancel();
                }
            }
            // Snapshot numbers start after `first_seq`: never 0. An Ack numbered 0 answers a
            // Done.
            coordinator_message::Kind::Ack(ack) if ack.seq == 0 => {
                let over = self
                    .outbox
                    .lock()
                    .done_acknowledged(&ack.run_id, ack.done_first_seq);
                if over {
                    // Nothing of the run is left here to stop.
                    self.stops.remove(&ack.run_id);
                }
            }
            coordinator_message::Kind::Ack(ack) => {
                self.outbox.lock().forget(&ack.run_id, ack.seq);
            }
            coordinator_message::Kind::Refused(r) => {
                // It will never be merged: resending it is of no use.
                tracing::warn!(run = %r.run_id, seq = r.seq, reason = %r.reason, detail = %r.detail, "the coordinator refused a snapshot");
                self.outbox.lock().forget(&r.run_id, r.seq);
            }
        }
    }
}

/// Why one connection to the coordinator ended without a session.
#[derive(Debug)]
enum Failure {
    /// The coordinator refused this worker: retrying cannot help.
    Refused(AgentError),
    /// It could not be reached (or spoke no gRPC): retried with backoff.
    Unreachable(String),
}

/// An error and its causes on one line (a TLS or protocol problem hides in the causes).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !out.contains(&c_text) {
            out.push_str(": ");
            out.push_str(&c_text);
        }
        cause = c.source();
    }
    out
}

/// Says, at most every [`Unreachable::EVERY`], that the coordinator cannot be reached and why
/// (a wrong CA, a plain-HTTP URL for a TLS coordinator, nothing listening): the worker keeps
/// retrying, but its operator hears about it.
#[derive(Debug, Default)]
struct Unreachable {
    since: Option<Instant>,
    told: Option<Instant>,
    attempts: u64,
}

impl Unreachable {
    const EVERY: Duration = Duration::from_secs(30);

    fn tell(&mut self, url: &str, why: &str) {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        self.attempts += 1;
        if self
            .told
            .is_none_or(|t| now.duration_since(t) >= Self::EVERY)
        {
            self.told = Some(now);
            tracing::warn!(
                coordinator = url,
                error = why,
                attempts = self.attempts,
                for_s = now.duration_since(since).as_secs(),
                "cannot reach the coordinator; retrying"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn agent() -> Agent {
        Agent::new(AgentConfig {
            coordinator: "http://127.0.0.1:1".into(),
            name: "w".into(),
            capacity: 1,
            labels: BTreeMap::new(),
            drain: Duration::from_secs(1),
            token: None,
            tls_ca: None,
            access: crate::access::Access::open(),
            sources: Default::default(),
        })
        .unwrap()
    }

    /// An assignment of `run` this worker cannot run (its plan is unreadable): it finishes at
    /// once, with an error in its Done.
    fn unrunnable(run: &str, first_seq: u64) -> coordinator_message::Kind {
        coordinator_message::Kind::Assignment(v1::Assignment {
            run_id: run.into(),
            first_seq,
            plan_json: "not a plan".into(),
            ..v1::Assignment::default()
        })
    }

    fn ack(run: &str, seq: u64, done_first_seq: u64) -> coordinator_message::Kind {
        coordinator_message::Kind::Ack(v1::Ack {
            run_id: run.into(),
            seq,
            done_first_seq,
        })
    }

    /// The `first_seq` of every Done a reconnect would resend now.
    fn dones_resent(agent: &Agent) -> Vec<u64> {
        let (tx, mut rx) = mpsc::channel(64);
        drop(agent.outbox.attach(tx));
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|m| match m.kind {
                Some(worker_message::Kind::Done(d)) => {
                    assert!(!d.error.is_empty(), "{d:?}");
                    Some(d.first_seq)
                }
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn an_acknowledged_done_is_not_resent_and_a_finished_run_lets_go_of_its_stop() {
        let mut agent = agent();
        let second = 1 << 32;
        agent.take(unrunnable("r", 0));
        agent.take(unrunnable("r", second));
        agent.take(unrunnable("other", 0));
        agent.jobs.close();
        agent.jobs.wait().await;
        assert_eq!(
            dones_resent(&agent),
            [0, 0, second],
            "other/0, r/0, r/second"
        );
        assert_eq!(agent.stops.len(), 2);

        agent.take(ack("r", 0, 0));
        assert_eq!(dones_resent(&agent), [0, second], "other/0, r/second");
        assert!(
            agent.stops.contains_key("r"),
            "a Done of the run is still unacknowledged"
        );
        // A snapshot's acknowledgement (numbered, never 0) is not a Done's.
        agent.take(ack("r", second + 1, second));
        assert_eq!(dones_resent(&agent), [0, second]);

        agent.take(ack("r", 0, second));
        assert_eq!(dones_resent(&agent), [0], "other/0");
        assert!(!agent.stops.contains_key("r"));
        assert!(agent.stops.contains_key("other"));
        // A Stop of a run that is over here finds nothing to stop.
        agent.take(coordinator_message::Kind::Stop(v1::Stop {
            run_id: "r".into(),
            reason: "done".into(),
        }));
        assert!(!agent.stops["other"].is_cancelled());
    }

    #[tokio::test]
    async fn a_stop_cancels_its_runs_assignments_only() {
        let mut agent = agent();
        agent.take(unrunnable("r", 0));
        agent.take(unrunnable("other", 0));
        agent.take(coordinator_message::Kind::Stop(v1::Stop {
            run_id: "r".into(),
            reason: "cancelled".into(),
        }));
        assert!(agent.stops["r"].is_cancelled());
        assert!(!agent.stops["other"].is_cancelled());
        agent.jobs.close();
        agent.jobs.wait().await;
    }
}
