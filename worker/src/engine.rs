//! The load schedulers: runs a compiled plan's share (an execution segment) with the closed
//! model (VUs looping sessions, ramped by stages) or the open model (sessions arriving on
//! schedule, dropped when no VU is free), stops on time or on request with a graceful period,
//! and streams a [`Delta`] (a [`Snapshot`] with its time and the active VUs) every interval.
//!
//! In the open model a session's identity (subject, token, `{vu}`, `{iteration}`, scenario,
//! random draws) follows its fleet-wide arrival number, not the VU slot that happens to be
//! free, so the same plan sends the same users with one worker or seven.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gauntlet_core::metrics::{Counters, Snapshot};
use gauntlet_core::plan::{Model, TokenPer};
use gauntlet_core::schedule::Ramp;
use gauntlet_core::segment::ExecutionSegment;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::program::Program;
use crate::recorder::Collector;
use crate::rng::Rng;
use crate::session::{SubjectTokens, Vu, pause_duration, run_session};

/// How a worker runs its share.
#[derive(Debug, Clone, Copy)]
pub struct RunConfig {
    /// The share of the load.
    pub segment: ExecutionSegment,
    /// How often a snapshot delta is sent.
    pub interval: Duration,
    /// Seeds VU random sources (think times, scenario picks, UUIDs).
    pub seed: u64,
    /// Time already elapsed in the run when this share starts (a share taken over from a
    /// lost worker): the ramp and the arrivals continue from there.
    pub offset: Duration,
}

/// One interval's measurements.
#[derive(Debug)]
pub struct Delta {
    /// What was measured.
    pub snapshot: Snapshot,
    /// When the interval ended, since the run's start (offset included).
    pub at: Duration,
    /// VUs in a session at that moment.
    pub active_vus: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            segment: ExecutionSegment::WHOLE,
            interval: Duration::from_secs(1),
            seed: 0,
            offset: Duration::ZERO,
        }
    }
}

/// Live counts of one share, read at any moment (the agent sends them with its heartbeats, so
/// a coordinator that loses this worker knows how many sessions it had started).
#[derive(Debug)]
pub struct Progress {
    /// Sessions started so far.
    pub started: AtomicU64,
    /// Sessions running now.
    pub active: AtomicU64,
    /// The shortest session so far, microseconds (`u64::MAX` before the first ends).
    pub shortest_us: AtomicU64,
    /// Open model: arrivals dropped so far (no free VU).
    pub dropped: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            started: AtomicU64::new(0),
            active: AtomicU64::new(0),
            shortest_us: AtomicU64::new(u64::MAX),
            dropped: AtomicU64::new(0),
        }
    }
}

/// Closed model: how often a VU above the ramp's current target looks again.
const RAMP_POLL: Duration = Duration::from_millis(100);

/// Runs `program`'s share and sends snapshot deltas to `out` (the last one after every
/// session ended). Cancelling `stop` starts no new session and gives running ones the
/// plan's `graceful_stop`. Returns the run's length.
pub async fn run(
    program: Arc<Program>,
    config: RunConfig,
    stop: CancellationToken,
    out: mpsc::Sender<Delta>,
) -> Duration {
    run_with_progress(program, config, stop, out, Arc::default()).await
}

/// [`run`], keeping `progress` current as sessions start and end.
pub async fn run_with_progress(
    program: Arc<Program>,
    config: RunConfig,
    stop: CancellationToken,
    out: mpsc::Sender<Delta>,
    active: Arc<Progress>,
) -> Duration {
    let now = Instant::now();
    // The run's start: earlier than now by the offset of a taken-over share.
    let started = now.checked_sub(config.offset).unwrap_or(now);
    let collector = Arc::new(
        Collector::new(
            program.metric_names.clone(),
            program.check_names.clone(),
            started,
        )
        .with_interval(config.interval),
    );
    let stopping = stop.child_token();
    let hard = CancellationToken::new();
    let tracker = TaskTracker::new();

    let ticker = {
        let collector = Arc::clone(&collector);
        let active = Arc::clone(&active);
        let out = out.clone();
        let done = CancellationToken::new();
        let guard = done.clone();
        let handle = tokio::spawn(async move {
            // Ticks fall on whole intervals of the run's clock (a taken-over share joins the
            // same grid), and each delta carries its nominal time, so the coordinator files
            // it under the right interval however late the tick ran.
            let interval = config.interval.max(Duration::from_millis(1));
            let mut tick = config.offset.as_nanos() / interval.as_nanos() + 1;
            loop {
                let at = interval * tick as u32;
                tokio::select! {
                    _ = guard.cancelled() => break,
                    _ = sleep_until(started + at) => {}
                }
                tick += 1;
                let delta = Delta {
                    snapshot: collector.take(),
                    at,
                    active_vus: active.active.load(Ordering::Relaxed),
                };
                // The receiver gone means nobody wants results any more.
                if out.send(delta).await.is_err() {
                    break;
                }
            }
        });
        (done, handle)
    };

    let ramp = Ramp::of(&program.plan.load);
    let starts_end = ramp.total().map(|t| started + t);
    match program.plan.load.model() {
        Model::Closed => {
            let vus = config.segment.vus(program.plan.max_vus());
            for id in vus {
                let vu = Vu::new(&program, id, collector.recorder(id), config.seed);
                tracker.spawn(closed_vu(
                    Arc::clone(&program),
                    vu,
                    ramp.clone(),
                    started,
                    // A token of its own: a session checks it at every poll, and a token that
                    // every VU shared would be one lock they all took (it cancels with `hard`).
                    (stopping.clone(), hard.child_token()),
                    Arc::clone(&active),
                ));
            }
        }
        Model::Open => {
            tracker.spawn(open_arrivals(
                Arc::clone(&program),
                Arc::clone(&collector),
                config,
                ramp.clone(),
                started,
                // A stop request, not the ramp's end: every arrival is due before the end, and
                // one the loop reaches late (a busy machine) must still run, not vanish
                // uncounted as it did when the end raced the last arrivals.
                (stop.clone(), hard.clone()),
                tracker.clone(),
                Arc::clone(&active),
            ));
        }
    }
    tracker.close();

    // Phase 1: sessions start until the ramp ends, every VU is done, or a stop request.
    tokio::select! {
        _ = stopping.cancelled() => {}
        _ = tracker.wait() => {}
        _ = async {
            match starts_end {
                Some(end) => sleep_until(end).await,
                None => std::future::pending().await,
            }
        } => {}
    }
    stopping.cancel();
    // Phase 2: running sessions get the graceful period, then are interrupted.
    tokio::select! {
        _ = tracker.wait() => {}
        _ = sleep(program.plan.load.graceful_stop()) => {
            hard.cancel();
            tracker.wait().await;
        }
    }
    let (done, handle) = ticker;
    done.cancel();
    let _ = handle.await;
    let _ = out
        .send(Delta {
            snapshot: collector.take(),
            at: started.elapsed(),
            active_vus: 0,
        })
        .await;
    now.elapsed()
}

/// Counts a session as started, and as active while it lives; keeps the shortest.
struct ActiveGuard(Arc<Progress>, Instant);

impl ActiveGuard {
    fn new(progress: &Arc<Progress>) -> ActiveGuard {
        progress.started.fetch_add(1, Ordering::Relaxed);
        progress.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(progress), Instant::now())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        let took = self.1.elapsed().as_micros() as u64;
        self.0.shortest_us.fetch_min(took, Ordering::Relaxed);
    }
}

async fn closed_vu(
    program: Arc<Program>,
    mut vu: Vu,
    ramp: Ramp,
    started: Instant,
    (stopping, hard): (CancellationToken, CancellationToken),
    active: Arc<Progress>,
) {
    let iterations = program.plan.load.iterations();
    let think = program.plan.load.think_time();
    loop {
        if stopping.is_cancelled() || iterations.is_some_and(|n| vu.iteration >= n) {
            break;
        }
        if ramp.vus_at(started.elapsed()) <= vu.id {
            tokio::select! {
                _ = stopping.cancelled() => break,
                _ = sleep(RAMP_POLL) => continue,
            }
        }
        let scenario = program.pick_scenario(Rng::keyed(&[vu.id, vu.iteration]).next_u64());
        let origin = Instant::now();
        let session = ActiveGuard::new(&active);
        let finished = tokio::select! {
            biased;
            _ = hard.cancelled() => false,
            _ = run_session(&program, &mut vu, scenario, origin) => true,
        };
        drop(session);
        if !finished {
            vu.rec.counters.sessions_interrupted += 1;
            break;
        }
        if let Some(pause) = &think {
            let d = pause_duration(pause, &mut vu.rng);
            tokio::select! {
                _ = stopping.cancelled() => break,
                _ = sleep(d) => {}
            }
        }
    }
    vu.rec.shrink();
}

#[allow(clippy::too_many_arguments)]
async fn open_arrivals(
    program: Arc<Program>,
    collector: Arc<Collector>,
    config: RunConfig,
    ramp: Ramp,
    started: Instant,
    (stop, hard): (CancellationToken, CancellationToken),
    tracker: TaskTracker,
    active: Arc<Progress>,
) {
    let pool = config.segment.vus(program.plan.max_vus());
    let mut next_new = pool.start;
    // Idle VUs, each with its own token cancelled by `hard` (see `run`); a session task puts
    // its VU back when it ends. Bounded by the pool size.
    let idle: Arc<Mutex<Vec<(Vu, CancellationToken)>>> = Arc::new(Mutex::new(Vec::new()));
    // Tokens kept per subject (`token_per = "vu"`): a slot runs arrivals of any subject.
    let tokens = program
        .minter
        .as_ref()
        .is_some_and(|m| m.token_per == TokenPer::Vu)
        .then(|| Arc::new(SubjectTokens::default()));
    let mut dropped = 0u64;
    let mut k = 0u64;
    while let Some(at) = ramp.arrival_time(k) {
        let arrival = k;
        k += 1;
        // Not this share's, or already past when a taken-over share starts.
        if !config.segment.owns_arrival(arrival) || at < config.offset {
            continue;
        }
        let due = started + at;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until(due) => {}
        }
        let vu = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let vu = match vu {
            Some(vu) => vu,
            None if next_new < pool.end => {
                next_new += 1;
                let vu = Vu::new(
                    &program,
                    next_new - 1,
                    collector.recorder(next_new - 1),
                    config.seed,
                );
                (vu, hard.child_token())
            }
            None => {
                dropped += 1;
                active.dropped.fetch_add(1, Ordering::Relaxed);
                if dropped % 64 == 1 {
                    tracing::debug!(arrival, dropped, "no free VU: arrival dropped");
                }
                collector.add_counters(&Counters {
                    dropped_arrivals: 1,
                    ..Counters::default()
                });
                continue;
            }
        };
        let program = Arc::clone(&program);
        let idle = Arc::clone(&idle);
        let tokens = tokens.clone();
        let session = ActiveGuard::new(&active);
        tracker.spawn(async move {
            let _session = session;
            let (mut vu, hard) = vu;
            vu.take_arrival(&program, config.seed, arrival);
            if let Some(tokens) = &tokens {
                tokens.lend(&mut vu);
            }
            // Picked as in the closed model, from the session's `{vu}` and `{iteration}`.
            let scenario = program.pick_scenario(Rng::keyed(&[vu.number, vu.iteration]).next_u64());
            let finished = tokio::select! {
                biased;
                _ = hard.cancelled() => false,
                _ = run_session(&program, &mut vu, scenario, due) => true,
            };
            if !finished {
                vu.rec.counters.sessions_interrupted += 1;
            }
            if let Some(tokens) = &tokens {
                tokens.keep(&vu);
            }
            vu.rec.shrink();
            idle.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((vu, hard));
        });
    }
}
