//! A run's driver: an event-driven state machine. **Waiting** for enough workers (woken when
//! a worker's stream opens or closes), then **running** and, once told to stop, **stopping**
//! (woken by every worker message that changes the run, and by its own deadlines: a worker's
//! silence or stall, the run's hard deadline, the drain's end, an abort threshold's grace),
//! then **finished** with its report. Each wake takes the run's state once, decides (losses,
//! hand-overs, a live abort, the deadline, the end) and publishes the progress.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gauntlet_core::plan::Plan;
use gauntlet_core::schedule::Ramp;
use gauntlet_core::segment::ExecutionSegment;
use gauntlet_core::words::{Cause, Judgement, RunPhase, Verdict};
use tokio::time::{Instant, sleep_until};

use super::shares::{Share, handle_losses, loss_deadline};
use super::{Run, State, finish};
use crate::{Coordinator, lock};

/// The least time between two decisions of a running run: a burst of messages (a thousand
/// workers' snapshots) is decided on once.
const SETTLE: Duration = Duration::from_millis(50);
/// Progress goes to watchers at least this often, so their clocks move.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// How often a run waiting for workers looks again even if no stream opened (a connected
/// worker may turn stale).
const WAITING_RECHECK: Duration = Duration::from_secs(1);

/// The run's driver task.
pub(super) async fn drive(coordinator: Coordinator, run: Arc<Run>) {
    let plan = &run.plan;
    let planned = Ramp::of(&plan.load).total();
    let Some(workers) = wait_for_workers(&coordinator, &run).await else {
        return;
    };

    // Segments by capacity, one common start.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let weights: Vec<u64> = workers.iter().map(|w| u64::from(w.capacity)).collect();
    let start_wall = SystemTime::now() + coordinator.config.start_delay;
    let started = Instant::now() + coordinator.config.start_delay;
    {
        let mut state = lock(&run.state);
        state.phase = RunPhase::Running;
        state.started = Some(started);
        state.started_wall = Some(start_wall);
        for (i, segment) in ExecutionSegment::split(&weights) {
            let share = Share::new(
                &workers[i].id,
                &workers[i].name,
                segment,
                state.shares.len(),
                0,
            );
            state.shares.push(share);
        }
        state.initial_shares = state.shares.len();
        for share in &state.shares {
            if !run.assign(&coordinator, share, start_wall, seed) {
                tracing::warn!(worker = %share.worker, "could not send the assignment");
            }
        }
    }
    tracing::info!(run = %run.id, workers = workers.len(), "run started");
    let watchdog = tokio_util::sync::CancellationToken::new();
    {
        let run = Arc::clone(&run);
        let stop = watchdog.clone();
        tokio::spawn(async move { run.watchdog.run(stop).await });
    }
    let _watchdog = watchdog.drop_guard();
    if let Some(h) = &coordinator.history {
        let started_at = humantime::format_rfc3339_millis(start_wall).to_string();
        if let Err(e) =
            lock(h).store_started(&run.id, &run.plan.name, &started_at, &run.request.plan_toml)
        {
            tracing::error!(run = %run.id, error = %e, "cannot record the run in the history");
        }
    }

    // Running, then stopping, until every share is done or lost; every run has a hard
    // deadline, and once stopping a drain.
    let (hard, deadline_why) = run_deadline(plan, planned);
    let hard = started + hard;
    let drain = drain_time(&coordinator, plan);
    let mut stop_deadline: Option<Instant> = None;
    let mut last_publish = Instant::now();
    loop {
        let now = Instant::now();
        let wake_at = next_wake(&coordinator, &run, hard, stop_deadline, last_publish);
        tokio::select! {
            _ = run.wake.notified() => {}
            _ = sleep_until(wake_at) => {}
            _ = run.cancel.cancelled(), if stop_deadline.is_none() => {}
        }
        // Messages that arrive together are decided on together.
        tokio::time::sleep_until((now + SETTLE).min(wake_at).max(now)).await;
        let ended = step(
            &coordinator,
            &run,
            seed,
            (hard, &deadline_why),
            &mut stop_deadline,
            drain,
        );
        if ended || Instant::now() >= last_publish + PUBLISH_EVERY / 5 {
            run.publish(planned);
            last_publish = Instant::now();
        }
        if ended {
            break;
        }
    }
    finish::finish(&coordinator, &run, None);
}

/// Waits until enough workers are connected; `None` when the run ended instead (too few in
/// time, or cancelled), its report written.
async fn wait_for_workers(
    coordinator: &Coordinator,
    run: &Run,
) -> Option<Vec<crate::registry::WorkerEntry>> {
    let plan = &run.plan;
    let min_workers = match run.request.min_workers {
        0 => plan.fleet.min_workers.unwrap_or(1).max(1),
        n => n,
    } as usize;
    let wait = if run.request.min_workers_timeout.is_zero() {
        plan.fleet
            .min_workers_timeout
            .unwrap_or(coordinator.config.min_workers_timeout)
    } else {
        run.request.min_workers_timeout
    };
    let deadline = Instant::now() + wait;
    let mut changes = coordinator.registry.changes();
    loop {
        let connected = coordinator
            .registry
            .connected(coordinator.config.heartbeat_timeout);
        if connected.len() >= min_workers {
            return Some(connected);
        }
        let cancelled = run.cancel.is_cancelled();
        if Instant::now() >= deadline || cancelled {
            let reason = format!(
                "only {} of the {min_workers} workers needed connected within {}",
                connected.len(),
                humantime::format_duration(wait)
            );
            let cause = if cancelled {
                Cause::Cancelled
            } else {
                Cause::TooFewWorkers
            };
            finish::finish(coordinator, run, Some(Judgement::error(cause, reason)));
            return None;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = run.cancel.cancelled() => {}
            _ = sleep_until(deadline.min(Instant::now() + WAITING_RECHECK)) => {}
        }
    }
}

/// When the running run must look again even if no message arrives: the earliest of its
/// shares' loss deadlines, the hard deadline (or once stopping, the drain's end), the end of
/// an abort threshold's grace, and the next progress for watchers.
fn next_wake(
    coordinator: &Coordinator,
    run: &Run,
    hard: Instant,
    stop_deadline: Option<Instant>,
    last_publish: Instant,
) -> Instant {
    let state = lock(&run.state);
    let mut at = last_publish + PUBLISH_EVERY;
    match stop_deadline {
        Some(d) => at = at.min(d),
        None => at = at.min(hard),
    }
    if let Some(started) = state.started {
        for grace in run.thresholds.iter().filter_map(|t| t.abort_grace()) {
            let ends = started + grace;
            if ends > Instant::now() {
                at = at.min(ends);
            }
        }
    }
    let awake = run.watchdog.awake_since(Instant::now());
    for share in &state.shares {
        if let Some(d) = loss_deadline(coordinator, run, &state, share, awake) {
            at = at.min(d);
        }
    }
    // A share waiting for the hand-over rate is looked at again within a second.
    if state
        .shares
        .iter()
        .any(|s| !s.handed_over && (s.lost_at_ms.is_some() || s.left_at_ms.is_some()))
        && stop_deadline.is_none()
    {
        at = at.min(Instant::now() + Duration::from_secs(1));
    }
    at
}

/// One decision of a running run, its state taken once: a cancel, lost or departed workers
/// and their shares, a live abort, the hard deadline, the end. Returns whether the run ended.
fn step(
    coordinator: &Coordinator,
    run: &Run,
    seed: u64,
    (hard, deadline_why): (Instant, &str),
    stop_deadline: &mut Option<Instant>,
    drain: Duration,
) -> bool {
    let mut state = lock(&run.state);
    if run.cancel.is_cancelled() && state.ended_early.is_none() {
        run.stop_all(coordinator, &state, "cancelled");
        let (why, cause) = if coordinator.shutdown.is_cancelled() {
            (
                "interrupted: the coordinator shut down mid-run",
                Cause::Interrupted,
            )
        } else {
            ("the run was cancelled", Cause::Cancelled)
        };
        let at = state.elapsed_ms();
        state.stopped_at_ms.get_or_insert(at);
        state
            .ended_early
            .get_or_insert(Judgement::error(cause, why));
    }
    handle_losses(coordinator, run, &mut state, seed);
    if state.ended_early.is_none()
        && let Some((failed, expr)) = live_abort(run, &state)
    {
        run.stop_all(coordinator, &state, "a threshold failed");
        let at = state.elapsed_ms();
        state.stopped_at_ms.get_or_insert(at);
        state.aborted_by = Some((expr.clone(), at));
        // The reason is written again at the end with the whole run's figures.
        state.ended_early.get_or_insert(Judgement::new(
            Verdict::Fail,
            Cause::Aborted,
            format!("aborted: threshold `{expr}` failed ({failed})"),
        ));
    }
    if state.ended_early.is_none() && Instant::now() >= hard {
        run.stop_all(coordinator, &state, "deadline");
        let at = state.elapsed_ms();
        state.stopped_at_ms.get_or_insert(at);
        state.ended_early.get_or_insert(Judgement::error(
            Cause::Deadline,
            format!("the run reached its hard deadline ({deadline_why}) and was stopped"),
        ));
    }
    if stop_deadline.is_none() && state.ended_early.is_some() {
        *stop_deadline = Some(Instant::now() + drain);
    }
    state.shares.iter().all(Share::ended) || stop_deadline.is_some_and(|d| Instant::now() >= d)
}

/// How long a stopping run waits for its workers: the graceful period and a heartbeat timeout
/// to report back.
pub(super) fn drain_time(coordinator: &Coordinator, plan: &Plan) -> Duration {
    plan.load.graceful_stop() + coordinator.config.heartbeat_timeout + Duration::from_secs(5)
}

/// The hard deadline of a run from its start, and how it was set: the plan's
/// `fleet.deadline`, else its planned duration plus graceful stop plus 30 s, else (a plan bound
/// by iterations only) one hour.
pub(super) fn run_deadline(plan: &Plan, planned: Option<Duration>) -> (Duration, String) {
    match (plan.fleet.deadline, planned) {
        (Some(d), _) => (
            d,
            format!("fleet.deadline = {}", humantime::format_duration(d)),
        ),
        (None, Some(p)) => (
            p + plan.load.graceful_stop() + Duration::from_secs(30),
            "its planned duration and graceful stop plus 30 s".into(),
        ),
        (None, None) => (
            Duration::from_secs(3600),
            "1 h, the default for a plan bound by iterations only; set fleet.deadline".into(),
        ),
    }
}

/// The first `abort_on_fail` threshold that fails now (past its grace), with its observation.
fn live_abort(run: &Run, state: &State) -> Option<(String, String)> {
    let elapsed = state.started.map_or(Duration::ZERO, |s| {
        Instant::now().saturating_duration_since(s)
    });
    for (i, t, grace) in run
        .thresholds
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.abort_grace().map(|g| (i, t, g)))
    {
        if elapsed < grace {
            continue;
        }
        let judged = state.agg.judge_live(i, t);
        // Live, "no samples yet" is not a reason to abort.
        if !judged.pass && judged.observed.is_some() {
            return Some((judged.reason, judged.expr));
        }
    }
    None
}
