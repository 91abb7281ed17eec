//! The worker's side of the fleet: registers with the coordinator, keeps one Session stream,
//! runs each assignment with the engine from the common start instant, streams numbered
//! snapshots and keeps the unacknowledged ones to resend after a reconnect, reconnects with
//! backoff, stops its sessions when the coordinator stays away past the lease, and drains on
//! shutdown.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gauntlet_core::plan::Plan;
use gauntlet_core::segment::ExecutionSegment;
use gauntlet_proto::auth::attach_token;
use gauntlet_proto::v1::worker_service_client::WorkerServiceClient;
use gauntlet_proto::v1::{self, coordinator_message, worker_message};
use gauntlet_proto::{PROTOCOL_VERSION, snapshot_to_proto};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{Delta, Progress, RunConfig};
use crate::program::Program;

/// Unacknowledged snapshots kept per assignment; beyond this the oldest are dropped (and
/// logged): ten minutes of 1 s snapshots while the coordinator is unreachable.
const UNACKED_LIMIT: usize = 600;
/// Messages queued to the coordinator while a stream is open; when full, snapshots wait in
/// the unacknowledged buffer and go out with the next resend.
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

/// Snapshots not yet acknowledged, and finished assignments, by (run, first_seq).
#[derive(Debug, Default)]
struct Pending {
    unacked: BTreeMap<(String, u64), VecDeque<v1::Snapshot>>,
    done: Vec<v1::Done>,
    /// Per run: cancels its assignments (a Stop from the coordinator).
    stops: BTreeMap<String, CancellationToken>,
    /// The open stream's sender, if connected.
    outbox: Option<mpsc::Sender<v1::WorkerMessage>>,
    /// Running shares by (run, first_seq): live counts, when the engine began, its offset (ms).
    running: BTreeMap<(String, u64), (Arc<Progress>, Instant, u64)>,
}

impl Pending {
    /// Drops snapshot `seq` of `run` from what is resent (acknowledged, or refused).
    fn forget(&mut self, run: &str, seq: u64) {
        for ((r, _), queue) in self.unacked.iter_mut() {
            if r == run {
                queue.retain(|s| s.seq != seq);
            }
        }
    }

    /// A heartbeat with every running share's live counts.
    fn heartbeat(&self) -> v1::WorkerMessage {
        use std::sync::atomic::Ordering;
        let progress = self
            .running
            .iter()
            .map(|((run, first_seq), (p, began, offset))| v1::ShareProgress {
                run_id: run.clone(),
                first_seq: *first_seq,
                started: p.started.load(Ordering::Relaxed),
                active: p.active.load(Ordering::Relaxed),
                at_ms: offset + began.elapsed().as_millis() as u64,
                shortest_us: match p.shortest_us.load(Ordering::Relaxed) {
                    u64::MAX => 0,
                    us => us,
                },
                dropped: p.dropped.load(Ordering::Relaxed),
            })
            .collect();
        v1::WorkerMessage {
            kind: Some(worker_message::Kind::Heartbeat(v1::Heartbeat { progress })),
        }
    }
}

type Shared = Arc<Mutex<Pending>>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn snapshot_msg(s: v1::Snapshot) -> v1::WorkerMessage {
    v1::WorkerMessage {
        kind: Some(worker_message::Kind::Snapshot(s)),
    }
}

/// Runs the agent until `shutdown`; then stops its sessions (graceful stop) and flushes the
/// last snapshots, waiting at most `config.drain`.
pub async fn run_agent(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let endpoint = gauntlet_proto::auth::endpoint(&config.coordinator, config.tls_ca.as_deref())
        .map_err(|e| AgentError::BadUrl(config.coordinator.clone(), e.to_string()))?;
    let pending: Shared = Arc::default();
    // Cancelled when this worker shuts down: every share stops starting sessions at once.
    let leaving = CancellationToken::new();
    // Parent of every assignment's stop token; replaced after it is used.
    let mut jobs_stop = leaving.child_token();
    let jobs = TaskTracker::new();
    // On shutdown the stream stays open while the shares drain, so that their Leaving (the
    // coordinator hands the share over at once) and their last snapshots go out live.
    let connected = CancellationToken::new();
    {
        let (shutdown, leaving, connected, jobs) = (
            shutdown.clone(),
            leaving.clone(),
            connected.clone(),
            jobs.clone(),
        );
        let drain = config.drain;
        tokio::spawn(async move {
            shutdown.cancelled().await;
            leaving.cancel();
            jobs.close();
            let _ = tokio::time::timeout(drain, jobs.wait()).await;
            connected.cancel();
        });
    }
    // This worker's identity at the coordinator: (id, session key).
    let mut worker_id = (String::new(), String::new());
    let mut backoff = Duration::from_millis(100);
    let mut disconnected_since: Option<Instant> = None;
    let mut lease = Duration::from_secs(5);
    let mut unreachable = Unreachable::default();
    loop {
        if connected.is_cancelled() {
            break;
        }
        // Away from the coordinator past the lease: it has given our shares away.
        if disconnected_since.is_some_and(|d| d.elapsed() > lease)
            && !jobs.is_empty()
            && !jobs_stop.is_cancelled()
        {
            tracing::warn!("coordinator unreachable past the lease: stopping running sessions");
            jobs_stop.cancel();
        }
        if jobs_stop.is_cancelled() && jobs.is_empty() && !leaving.is_cancelled() {
            jobs_stop = leaving.child_token();
        }
        let session = connect_once(
            &endpoint,
            &config,
            &mut worker_id,
            &pending,
            &jobs,
            &jobs_stop,
            &connected,
        )
        .await;
        match session {
            Ok(lease_was) => {
                lease = lease_was;
                backoff = Duration::from_millis(100);
                disconnected_since = Some(Instant::now());
                unreachable = Unreachable::default();
            }
            Err(Failure::Refused(refused)) => return Err(refused),
            Err(Failure::Unreachable(why)) => {
                disconnected_since.get_or_insert_with(Instant::now);
                unreachable.tell(&config.coordinator, &why);
            }
        }
        tokio::select! {
            _ = connected.cancelled() => break,
            _ = sleep(backoff) => {}
        }
        // Capped well under a lease: a short network cut must not cost the worker its shares.
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    // Drain: running sessions get their graceful stop; the last snapshots go out if a stream
    // is open (a reconnect is attempted once more if not).
    jobs_stop.cancel();
    jobs.close();
    let _ = tokio::time::timeout(config.drain, jobs.wait()).await;
    if !lock(&pending).unacked.values().all(VecDeque::is_empty) {
        let flush = CancellationToken::new();
        let deadline = flush.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(3)).await;
            deadline.cancel();
        });
        let _ = connect_once(
            &endpoint,
            &config,
            &mut worker_id,
            &pending,
            &jobs,
            &jobs_stop,
            &flush,
        )
        .await;
    }
    Ok(())
}

/// One connection: register, open the Session stream, resend what is pending, serve it until
/// it ends or `until` is cancelled. `Ok(lease)` after a session.
#[allow(clippy::too_many_arguments)]
async fn connect_once(
    endpoint: &tonic::transport::Endpoint,
    config: &AgentConfig,
    worker_id: &mut (String, String),
    pending: &Shared,
    jobs: &TaskTracker,
    jobs_stop: &CancellationToken,
    until: &CancellationToken,
) -> Result<Duration, Failure> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Failure::Unreachable(chain(&e)))?;
    let mut client =
        WorkerServiceClient::with_interceptor(channel, attach_token(config.token.clone()));
    let registered = client
        .register(v1::RegisterRequest {
            name: config.name.clone(),
            capacity: config.capacity,
            version: env!("CARGO_PKG_VERSION").into(),
            labels: config.labels.clone().into_iter().collect(),
            protocol: PROTOCOL_VERSION,
            worker_id: worker_id.0.clone(),
            session_key: worker_id.1.clone(),
        })
        .await;
    let registered = match registered {
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
    *worker_id = (registered.worker_id.clone(), registered.session_key.clone());
    let lease = Duration::from_millis(registered.lease_ms.max(1000));
    // Running shares' live counts go out at least every PROGRESS_INTERVAL.
    let heartbeat = Duration::from_millis(registered.heartbeat_interval_ms.clamp(100, 60_000))
        .min(gauntlet_proto::PROGRESS_INTERVAL);
    let (tx, rx) = mpsc::channel(OUTBOX);
    let hello = v1::WorkerMessage {
        kind: Some(worker_message::Kind::Hello(v1::Hello {
            worker_id: worker_id.0.clone(),
            session_key: worker_id.1.clone(),
        })),
    };
    // The stream was just created: these cannot find it full.
    let _ = tx.try_send(hello);
    let mut inbound = match client.session(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return Err(Failure::Unreachable(format!(
                "the session stream was refused: {}",
                chain(&status)
            )));
        }
    };
    tracing::info!(worker = %worker_id.0, "connected to the coordinator");
    {
        let mut p = lock(pending);
        for s in p.unacked.values().flatten() {
            let _ = tx.try_send(snapshot_msg(s.clone()));
        }
        for d in &p.done {
            let _ = tx.try_send(v1::WorkerMessage {
                kind: Some(worker_message::Kind::Done(d.clone())),
            });
        }
        p.outbox = Some(tx.clone());
    }
    // However this function ends (even dropped mid-await), the stream's sender goes with it,
    // so nothing more is written into a connection nobody serves.
    let _detach = Detach(Arc::clone(pending));
    let mut ticker = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            _ = until.cancelled() => break Ok(lease),
            _ = ticker.tick() => {
                let beat = lock(pending).heartbeat();
                if tx.try_send(beat).is_err() && tx.is_closed() {
                    break Ok(lease);
                }
            }
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break Ok(lease),
                };
                match msg.kind {
                    Some(coordinator_message::Kind::Assignment(a)) => {
                        let stop = lock(pending)
                            .stops
                            .entry(a.run_id.clone())
                            .or_insert_with(|| jobs_stop.child_token())
                            .clone();
                        jobs.spawn(run_assignment(a, Arc::clone(pending), stop, jobs_stop.clone(), config.access.clone()));
                    }
                    Some(coordinator_message::Kind::Stop(stop)) => {
                        tracing::info!(run = %stop.run_id, reason = %stop.reason, "stop requested");
                        if let Some(token) = lock(pending).stops.get(&stop.run_id) {
                            token.cancel();
                        }
                    }
                    Some(coordinator_message::Kind::Ack(ack)) => {
                        lock(pending).forget(&ack.run_id, ack.seq);
                    }
                    Some(coordinator_message::Kind::Refused(r)) => {
                        // It will never be merged: resending it is of no use.
                        tracing::warn!(run = %r.run_id, seq = r.seq, reason = %r.reason, detail = %r.detail, "the coordinator refused a snapshot");
                        lock(pending).forget(&r.run_id, r.seq);
                    }
                    None => {}
                }
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

/// Clears the shared outbox when a connection ends.
struct Detach(Shared);

impl Drop for Detach {
    fn drop(&mut self) {
        lock(&self.0).outbox = None;
    }
}

/// Runs one assignment with the engine and reports it. `leaving` is cancelled when this
/// worker shuts down (or gives its shares up): a share stopped by it is reported as left.
async fn run_assignment(
    a: v1::Assignment,
    pending: Shared,
    stop: CancellationToken,
    leaving: CancellationToken,
    access: crate::access::Access,
) {
    let key = (a.run_id.clone(), a.first_seq);
    let finish = |error: String, last_seq: u64, stopped_at_ms: u64, sessions_started: u64| {
        let done = v1::Done {
            run_id: a.run_id.clone(),
            last_seq,
            error,
            first_seq: a.first_seq,
            left: leaving.is_cancelled(),
            stopped_at_ms,
            sessions_started,
        };
        let mut p = lock(&pending);
        if let Some(o) = &p.outbox {
            let _ = o.try_send(v1::WorkerMessage {
                kind: Some(worker_message::Kind::Done(done.clone())),
            });
        }
        p.done.push(done);
    };
    // The coordinator resolved the plan: it is read as it is (a message gRPC has already
    // bounded in size), checked against what this worker allows, and compiled.
    let program = serde_json::from_str::<Plan>(&a.plan_json)
        .map_err(|e| {
            format!(
                "{}: the coordinator sent a plan this worker cannot read: {e}",
                a.plan_file
            )
        })
        .and_then(|plan| {
            Program::compile_for(plan, access).map_err(|e| format!("{}: {e}", a.plan_file))
        });
    let program = match program {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::error!(run = %a.run_id, error = %gauntlet_core::redact::message(&e), "cannot run this assignment");
            finish(e, a.first_seq, 0, 0);
            return;
        }
    };
    let Some(segment) = ExecutionSegment::from_ticks(a.segment_start, a.segment_end) else {
        finish(
            format!(
                "bad segment [{}, {}) (ticks)",
                a.segment_start, a.segment_end
            ),
            a.first_seq,
            0,
            0,
        );
        return;
    };
    // Everyone starts at the same instant.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let wait = Duration::from_millis(a.start_at_unix_ms.saturating_sub(now_ms));
    tokio::select! {
        _ = stop.cancelled() => {
            finish(String::new(), a.first_seq, a.offset_ms.max(1), 0);
            return;
        }
        _ = sleep(wait) => {}
    }
    let config = RunConfig {
        segment,
        interval: Duration::from_millis(a.interval_ms.max(100)),
        seed: a.seed,
        offset: Duration::from_millis(a.offset_ms),
    };
    let (tx, mut rx) = mpsc::channel::<Delta>(16);
    let began = Instant::now();
    let progress = Arc::new(Progress::default());
    lock(&pending)
        .running
        .insert(key.clone(), (Arc::clone(&progress), began, a.offset_ms));
    let engine = tokio::spawn(crate::engine::run_with_progress(
        program,
        config,
        stop.clone(),
        tx,
        Arc::clone(&progress),
    ));
    let mut seq = a.first_seq;
    // When the share was told to stop, on the run's clock: the coordinator counts the load
    // delivered up to there.
    let mut stopped_at_ms = 0;
    loop {
        let delta = tokio::select! {
            _ = stop.cancelled(), if stopped_at_ms == 0 => {
                stopped_at_ms = (a.offset_ms + began.elapsed().as_millis() as u64).max(1);
                if leaving.is_cancelled() {
                    // Shutting down: the coordinator hands the share over now, not after the
                    // drain.
                    let p = lock(&pending);
                    if let Some(o) = &p.outbox {
                        let _ = o.try_send(v1::WorkerMessage {
                            kind: Some(worker_message::Kind::Leaving(v1::Leaving {
                                run_id: a.run_id.clone(),
                                first_seq: a.first_seq,
                                stopped_at_ms,
                            })),
                        });
                    }
                }
                continue;
            }
            delta = rx.recv() => delta,
        };
        let Some(delta) = delta else { break };
        seq += 1;
        tracing::debug!(run = %a.run_id, seq, at_ms = delta.at.as_millis() as u64, sessions = delta.snapshot.counters.sessions_started, active = delta.active_vus, "snapshot");
        let wire = snapshot_to_proto(
            &delta.snapshot,
            &a.run_id,
            seq,
            delta.at.as_millis() as u64,
            delta.active_vus,
        );
        let mut p = lock(&pending);
        if let Some(o) = &p.outbox {
            // A full outbox leaves the snapshot to the resend after the next reconnect.
            let _ = o.try_send(snapshot_msg(wire.clone()));
        }
        let queue = p.unacked.entry(key.clone()).or_default();
        queue.push_back(wire);
        if queue.len() > UNACKED_LIMIT {
            queue.pop_front();
            tracing::warn!(run = %a.run_id, "unacknowledged snapshot buffer full: the oldest is dropped");
        }
    }
    let _ = engine.await;
    lock(&pending).running.remove(&key);
    let started = progress.started.load(std::sync::atomic::Ordering::Relaxed);
    finish(String::new(), seq, stopped_at_ms, started);
}
