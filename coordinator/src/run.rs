//! One run's life on the coordinator: wait for enough workers, cut the load into segments by
//! capacity, start everyone at one instant, merge what comes back, detect lost workers and
//! hand their share to the survivors (or go on, or abort), judge thresholds live and at the
//! end, and write the report. A run always ends: workers finish, are lost, or hit the deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gauntlet_core::plan::{Model, Plan, WorkerLoss};
use gauntlet_core::report::{self, PlanRef, Report, ThresholdReport, Verdict, WorkerReport};
use gauntlet_core::schedule::Ramp;
use gauntlet_core::segment::ExecutionSegment;
use gauntlet_core::thresholds::{Threshold, windowed_metrics};
use gauntlet_proto::{counters_to_proto, v1};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::aggregator::{Aggregator, MAIN_METRICS};
use crate::{Coordinator, lock};

/// How often a running run looks at its workers and thresholds.
const TICK: Duration = Duration::from_millis(250);
/// Sequence numbers of one assignment start at `index * SEQ_BLOCK`.
const SEQ_BLOCK: u64 = 1 << 32;

/// What a run was asked to do.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The plan, as written.
    pub plan_toml: String,
    /// Its file name (for messages).
    pub plan_file: String,
    /// `--target`.
    pub target: String,
    /// `--ws-target`.
    pub ws_target: String,
    /// Workers to wait for (0: the plan's, or 1).
    pub min_workers: u32,
    /// How long to wait for them (zero: the plan's, or the coordinator's default).
    pub min_workers_timeout: Duration,
}

/// One share of the run given to one worker.
#[derive(Debug, Clone)]
struct Share {
    worker: String,
    name: String,
    segment: ExecutionSegment,
    first_seq: u64,
    done: bool,
    error: Option<String>,
    lost_at_ms: Option<u64>,
    /// The worker stopped this share early because it was shutting down.
    left_at_ms: Option<u64>,
    /// Its remaining load was dealt with (handed over, dropped, or the run aborted).
    handed_over: bool,
}

impl Share {
    /// The `index`-th share of a run; its sequence numbers start at `index * SEQ_BLOCK`.
    fn new(worker: &str, name: &str, segment: ExecutionSegment, index: usize) -> Share {
        Share {
            worker: worker.to_owned(),
            name: name.to_owned(),
            segment,
            first_seq: index as u64 * SEQ_BLOCK,
            done: false,
            error: None,
            lost_at_ms: None,
            left_at_ms: None,
            handed_over: false,
        }
    }
}

#[derive(Debug)]
struct State {
    phase: &'static str,
    agg: Aggregator,
    shares: Vec<Share>,
    started: Option<Instant>,
    started_wall: Option<SystemTime>,
    report: Option<Report>,
    /// Set when the run ends early: (verdict, reason).
    ended_early: Option<(Verdict, String)>,
    /// Share of the load lost with workers and not handed over (fraction of the whole).
    undelivered: f64,
}

/// A run.
#[derive(Debug)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// The validated plan.
    pub plan: Plan,
    request: RunRequest,
    thresholds: Vec<Threshold>,
    interval: Duration,
    state: Mutex<State>,
    progress: watch::Sender<v1::RunProgress>,
    cancel: CancellationToken,
}

impl Run {
    /// Starts a run of `request` (already validated into `plan`) on `coordinator`.
    pub fn start(coordinator: &Coordinator, request: RunRequest, plan: Plan) -> Arc<Run> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!("run-{}-{:04x}", now.as_secs(), now.subsec_nanos() & 0xffff);
        let thresholds = if plan.thresholds.is_empty() {
            vec![Threshold::no_failed_sessions()]
        } else {
            plan.thresholds.clone()
        };
        let interval = plan.fleet.interval.unwrap_or(Duration::from_secs(1));
        let agg = Aggregator::new(interval.as_millis() as u64, windowed_metrics(&thresholds));
        let (progress, _) = watch::channel(v1::RunProgress {
            run_id: id.clone(),
            state: "waiting".into(),
            ..v1::RunProgress::default()
        });
        let run = Arc::new(Run {
            id,
            plan,
            request,
            thresholds,
            interval,
            state: Mutex::new(State {
                phase: "waiting",
                agg,
                shares: Vec::new(),
                started: None,
                started_wall: None,
                report: None,
                ended_early: None,
                undelivered: 0.0,
            }),
            progress,
            cancel: coordinator.shutdown.child_token(),
        });
        coordinator.add_run(Arc::clone(&run));
        tokio::spawn(drive(coordinator.clone(), Arc::clone(&run)));
        run
    }

    /// Live progress; the last value carries the report.
    pub fn watch(&self) -> watch::Receiver<v1::RunProgress> {
        self.progress.subscribe()
    }

    /// Asks the run to stop (running sessions get the plan's graceful stop).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// `waiting`, `running` or `finished`.
    pub fn phase(&self) -> &'static str {
        lock(&self.state).phase
    }

    /// The report, once finished.
    pub fn report(&self) -> Option<Report> {
        lock(&self.state).report.clone()
    }

    /// The report, or while the run is going a provisional one from what has been merged so
    /// far (verdict `error` with reason "running" until the end), for the live page.
    pub fn live_report(&self) -> Report {
        let state = lock(&self.state);
        if let Some(r) = &state.report {
            return r.clone();
        }
        let m = report::summarize(state.agg.total());
        let now = SystemTime::now();
        let started = state.started_wall.unwrap_or(now);
        let tallies = state.agg.workers();
        let mut workers: BTreeMap<String, WorkerReport> = BTreeMap::new();
        for share in &state.shares {
            let w = workers
                .entry(share.worker.clone())
                .or_insert_with(|| WorkerReport {
                    id: share.worker.clone(),
                    name: share.name.clone(),
                    share: 0.0,
                    sessions: tallies.get(&share.worker).map_or(0, |t| t.sessions),
                    snapshots: tallies.get(&share.worker).map_or(0, |t| t.snapshots),
                    lost_at_ms: share.lost_at_ms,
                    left_at_ms: share.left_at_ms,
                    in_flight_bound: None,
                });
            w.share += share.segment.end() - share.segment.start();
        }
        Report {
            schema_version: report::SCHEMA_VERSION,
            run_id: self.id.clone(),
            plan: PlanRef {
                name: self.plan.name.clone(),
                hash: String::new(),
            },
            started_at: humantime::format_rfc3339_millis(started).to_string(),
            ended_at: String::new(),
            duration_s: now
                .duration_since(started)
                .unwrap_or_default()
                .as_secs_f64(),
            verdict: Verdict::Error,
            verdict_reason: state.phase.into(),
            delivered: 1.0,
            totals: m.totals,
            failures: m.failures,
            metrics: m.metrics,
            checks: m.checks,
            thresholds: Vec::new(),
            workers: workers.into_values().collect(),
            intervals: state.agg.series(),
        }
    }

    /// Merges a snapshot from `worker`; returns whether it should be acknowledged (it was
    /// merged now or before).
    pub fn on_snapshot(&self, worker: &str, snapshot: &v1::Snapshot) -> bool {
        let mut state = lock(&self.state);
        if state.phase == "finished" {
            // Too late to count; acknowledge so the worker stops resending.
            return true;
        }
        match state.agg.merge(worker, snapshot) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(worker, run = %self.id, error = %e, "undecodable snapshot dropped");
                true
            }
        }
    }

    /// A worker finished one of its shares.
    pub fn on_done(&self, worker: &str, done: &v1::Done) {
        let mut state = lock(&self.state);
        let elapsed = Self::elapsed_ms(&state);
        if let Some(share) = state
            .shares
            .iter_mut()
            .find(|s| s.worker == worker && s.first_seq == done.first_seq)
        {
            share.done = true;
            if !done.error.is_empty() {
                share.error = Some(done.error.clone());
            }
            if done.left {
                share.left_at_ms = Some(elapsed);
            }
        }
    }

    fn elapsed_ms(state: &State) -> u64 {
        state.started.map_or(0, |s| {
            Instant::now().saturating_duration_since(s).as_millis() as u64
        })
    }

    fn publish(&self, planned: Option<Duration>) {
        let state = lock(&self.state);
        let total = state.agg.total();
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in &total.failures {
            *failures.entry(k.category.clone()).or_default() += v.count;
        }
        let metrics = MAIN_METRICS
            .iter()
            .filter_map(|m| {
                let h = total.histograms.get(*m)?;
                Some(v1::MetricSummary {
                    name: (*m).to_owned(),
                    count: h.len(),
                    p50_us: h.value_at_quantile(0.5),
                    p99_us: h.value_at_quantile(0.99),
                })
            })
            .collect();
        let progress = v1::RunProgress {
            run_id: self.id.clone(),
            state: state.phase.into(),
            elapsed_ms: Self::elapsed_ms(&state),
            planned_ms: planned.map_or(0, |p| p.as_millis() as u64),
            active_vus: state.agg.active_vus(),
            counters: Some(counters_to_proto(&total.counters)),
            failures: failures
                .into_iter()
                .map(|(category, count)| v1::CategoryCount { category, count })
                .collect(),
            metrics,
            report_json: state
                .report
                .as_ref()
                .and_then(|r| serde_json::to_string(r).ok())
                .unwrap_or_default(),
            workers: state
                .shares
                .iter()
                .map(|s| s.worker.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u32,
            workers_lost: state
                .shares
                .iter()
                .filter(|s| s.lost_at_ms.is_some())
                .count() as u32,
        };
        drop(state);
        self.progress.send_replace(progress);
    }

    fn stop_all(&self, coordinator: &Coordinator, reason: &str) {
        let state = lock(&self.state);
        let mut told = std::collections::BTreeSet::new();
        for share in state
            .shares
            .iter()
            .filter(|s| !s.done && s.lost_at_ms.is_none())
        {
            if told.insert(share.worker.clone()) {
                coordinator.registry.send(
                    &share.worker,
                    v1::CoordinatorMessage {
                        kind: Some(v1::coordinator_message::Kind::Stop(v1::Stop {
                            run_id: self.id.clone(),
                            reason: reason.to_owned(),
                        })),
                    },
                );
            }
        }
    }

    fn assign(
        &self,
        coordinator: &Coordinator,
        share: &Share,
        start_wall: SystemTime,
        offset: Duration,
        seed: u64,
    ) -> bool {
        let start_at = start_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        coordinator.registry.send(
            &share.worker,
            v1::CoordinatorMessage {
                kind: Some(v1::coordinator_message::Kind::Assignment(v1::Assignment {
                    run_id: self.id.clone(),
                    plan_toml: self.request.plan_toml.clone(),
                    plan_file: self.request.plan_file.clone(),
                    target: self.request.target.clone(),
                    ws_target: self.request.ws_target.clone(),
                    segment_start: share.segment.start(),
                    segment_end: share.segment.end(),
                    start_at_unix_ms: start_at,
                    offset_ms: offset.as_millis() as u64,
                    interval_ms: self.interval.as_millis() as u64,
                    seed,
                    first_seq: share.first_seq,
                })),
            },
        )
    }
}

/// The run's driver task.
async fn drive(coordinator: Coordinator, run: Arc<Run>) {
    let plan = &run.plan;
    let ramp = Ramp::of(&plan.load);
    let planned = ramp.total();
    // 1. Enough workers.
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
    let workers = loop {
        let connected = coordinator
            .registry
            .connected(coordinator.config.heartbeat_timeout);
        if connected.len() >= min_workers {
            break connected;
        }
        if Instant::now() >= deadline || run.cancel.is_cancelled() {
            let reason = format!(
                "only {} of the {min_workers} workers needed connected within {}",
                connected.len(),
                humantime::format_duration(wait)
            );
            finish(&coordinator, &run, Some((Verdict::Error, reason)));
            return;
        }
        sleep(Duration::from_millis(100)).await;
    };

    // 2. Segments by capacity, one common start.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let weights: Vec<u64> = workers.iter().map(|w| u64::from(w.capacity)).collect();
    let start_wall = SystemTime::now() + coordinator.config.start_delay;
    let started = Instant::now() + coordinator.config.start_delay;
    {
        let mut state = lock(&run.state);
        state.phase = "running";
        state.started = Some(started);
        state.started_wall = Some(start_wall);
        for (i, segment) in ExecutionSegment::split(&weights) {
            let share = Share::new(
                &workers[i].id,
                &workers[i].name,
                segment,
                state.shares.len(),
            );
            state.shares.push(share);
        }
        for share in &state.shares {
            if !run.assign(&coordinator, share, start_wall, Duration::ZERO, seed) {
                tracing::warn!(worker = %share.worker, "could not send the assignment");
            }
        }
    }
    tracing::info!(run = %run.id, workers = workers.len(), "run started");
    if let Some(h) = &coordinator.history {
        let started_at = humantime::format_rfc3339_millis(start_wall).to_string();
        if let Err(e) =
            lock(h).store_started(&run.id, &run.plan.name, &started_at, &run.request.plan_toml)
        {
            tracing::error!(run = %run.id, error = %e, "cannot record the run in the history");
        }
    }

    // 3. Watch until every share is done or lost.
    let hard_deadline =
        planned.map(|p| started + p + plan.load.graceful_stop + Duration::from_secs(30));
    // Once stopping, workers get the graceful period and a heartbeat timeout to report back.
    let drain =
        plan.load.graceful_stop + coordinator.config.heartbeat_timeout + Duration::from_secs(5);
    let mut stop_deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = sleep(TICK) => {}
            _ = run.cancel.cancelled(), if stop_deadline.is_none() => {
                run.stop_all(&coordinator, "cancelled");
                let why = if coordinator.shutdown.is_cancelled() {
                    "interrupted: the coordinator shut down mid-run"
                } else {
                    "the run was cancelled"
                };
                lock(&run.state).ended_early.get_or_insert((Verdict::Error, why.into()));
            }
        }
        handle_losses(&coordinator, &run, seed);
        let judging = lock(&run.state).ended_early.is_none();
        if judging && let Some((failed, expr)) = live_abort(&run, started) {
            run.stop_all(&coordinator, "a threshold failed");
            lock(&run.state).ended_early.get_or_insert((
                Verdict::Fail,
                format!("aborted: threshold `{expr}` failed ({failed})"),
            ));
        }
        let judging = lock(&run.state).ended_early.is_none();
        if judging && hard_deadline.is_some_and(|d| Instant::now() >= d) {
            run.stop_all(&coordinator, "deadline");
            lock(&run.state).ended_early.get_or_insert((
                Verdict::Error,
                "the run overran its planned duration by 30 s and was stopped".into(),
            ));
        }
        let ending = lock(&run.state).ended_early.is_some();
        if stop_deadline.is_none() && ending {
            stop_deadline = Some(Instant::now() + drain);
        }
        run.publish(planned);
        let all_ended = lock(&run.state)
            .shares
            .iter()
            .all(|s| s.done || s.lost_at_ms.is_some());
        if all_ended || stop_deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    finish(&coordinator, &run, None);
}

/// Workers silent past the heartbeat timeout are lost, and workers that shut down left their
/// shares early; the rest of those shares is handed over, dropped or ends the run, as the plan
/// says.
fn handle_losses(coordinator: &Coordinator, run: &Run, seed: u64) {
    let timeout = coordinator.config.heartbeat_timeout;
    let mut state = lock(&run.state);
    if state.ended_early.is_some() {
        // Stopping: shares end because they were told to; nothing to hand over.
        return;
    }
    let elapsed = Run::elapsed_ms(&state);
    let mut newly_lost = Vec::new();
    for (i, share) in state.shares.iter().enumerate() {
        if share.handed_over || share.lost_at_ms.is_some() {
            continue;
        }
        if share.left_at_ms.is_some() {
            newly_lost.push(i);
            continue;
        }
        if share.done {
            continue;
        }
        let silent = coordinator
            .registry
            .get(&share.worker)
            .is_none_or(|w| Instant::now().duration_since(w.last_seen) >= timeout);
        if silent {
            newly_lost.push(i);
        }
    }
    if newly_lost.is_empty() {
        return;
    }
    let lost_workers: Vec<String> = newly_lost
        .iter()
        .map(|i| state.shares[*i].worker.clone())
        .collect();
    for i in &newly_lost {
        let share = &mut state.shares[*i];
        share.handed_over = true;
        if share.left_at_ms.is_some() {
            tracing::info!(run = %run.id, worker = %share.worker, "worker left (shutting down)");
        } else {
            share.lost_at_ms = Some(elapsed);
            tracing::warn!(run = %run.id, worker = %share.worker, "worker lost");
        }
    }
    let remaining = remaining_fraction(run, elapsed);
    match run.plan.fleet.on_worker_loss {
        WorkerLoss::Abort => {
            drop(state);
            run.stop_all(coordinator, "a worker was lost");
            lock(&run.state).ended_early.get_or_insert((
                Verdict::Error,
                format!(
                    "aborted: worker {} was lost (on_worker_loss = \"abort\")",
                    lost_workers.join(", ")
                ),
            ));
        }
        WorkerLoss::Continue => {
            for i in &newly_lost {
                let share = state.shares[*i].segment;
                state.undelivered += (share.end() - share.start()) * remaining;
            }
        }
        WorkerLoss::Reassign => {
            let survivors: Vec<(String, String, u32)> = {
                let mut seen = std::collections::BTreeSet::new();
                state
                    .shares
                    .iter()
                    .filter(|s| {
                        !s.done && s.lost_at_ms.is_none() && !lost_workers.contains(&s.worker)
                    })
                    .filter(|s| seen.insert(s.worker.clone()))
                    .filter_map(|s| {
                        coordinator
                            .registry
                            .get(&s.worker)
                            .map(|w| (w.id, w.name, w.capacity))
                    })
                    .collect()
            };
            if survivors.is_empty() {
                for i in &newly_lost {
                    let share = state.shares[*i].segment;
                    state.undelivered += (share.end() - share.start()) * remaining;
                }
                return;
            }
            let offset = Duration::from_millis(elapsed);
            let start_wall = SystemTime::now() + Duration::from_millis(100);
            let weights: Vec<u64> = survivors.iter().map(|(_, _, c)| u64::from(*c)).collect();
            for i in newly_lost {
                let lost = state.shares[i].segment;
                for (j, part) in ExecutionSegment::split(&weights) {
                    let width = lost.end() - lost.start();
                    let Some(segment) = ExecutionSegment::new(
                        lost.start() + width * part.start(),
                        lost.start() + width * part.end(),
                    ) else {
                        continue;
                    };
                    let share = Share::new(
                        &survivors[j].0,
                        &survivors[j].1,
                        segment,
                        state.shares.len(),
                    );
                    if run.assign(coordinator, &share, start_wall, offset, seed) {
                        tracing::info!(run = %run.id, to = %share.worker, "share reassigned");
                        state.shares.push(share);
                    }
                }
            }
        }
    }
}

/// Fraction of the run's planned load still ahead at `elapsed_ms` (1 without a time bound).
fn remaining_fraction(run: &Run, elapsed_ms: u64) -> f64 {
    match Ramp::of(&run.plan.load).total() {
        Some(total) if !total.is_zero() => {
            (1.0 - elapsed_ms as f64 / total.as_millis() as f64).clamp(0.0, 1.0)
        }
        _ => 1.0,
    }
}

/// The first `abort_on_fail` threshold that fails now (past its grace), with its observation.
fn live_abort(run: &Run, started: Instant) -> Option<(String, String)> {
    let elapsed = Instant::now().saturating_duration_since(started);
    let state = lock(&run.state);
    for t in run.thresholds.iter().filter(|t| t.abort_on_fail) {
        if elapsed < t.grace.unwrap_or_default() {
            continue;
        }
        let judged = t.judge(state.agg.total(), state.agg.intervals(), run.interval);
        // Live, "no samples yet" is not a reason to abort.
        if !judged.pass && judged.observed.is_some() {
            return Some((judged.reason, judged.expr));
        }
    }
    None
}

/// Builds the report and publishes it.
fn finish(coordinator: &Coordinator, run: &Run, early: Option<(Verdict, String)>) {
    let mut state = lock(&run.state);
    if let Some(e) = early {
        state.ended_early.get_or_insert(e);
    }
    let total = state.agg.total().clone();
    let measured = report::summarize(&total);
    let thresholds: Vec<ThresholdReport> = run
        .thresholds
        .iter()
        .map(|t| t.judge(&total, state.agg.intervals(), run.interval))
        .collect();
    let (verdict, reason) = verdict(&total, &thresholds, &state, run);
    let now = SystemTime::now();
    let started_wall = state.started_wall.unwrap_or(now);
    let tallies = state.agg.workers().clone();
    let mut workers: BTreeMap<String, WorkerReport> = BTreeMap::new();
    for share in &state.shares {
        let w = workers.entry(share.worker.clone()).or_insert_with(|| {
            let t = tallies.get(&share.worker).cloned().unwrap_or_default();
            WorkerReport {
                id: share.worker.clone(),
                name: share.name.clone(),
                share: 0.0,
                sessions: t.sessions,
                snapshots: t.snapshots,
                lost_at_ms: None,
                left_at_ms: None,
                in_flight_bound: None,
            }
        });
        if let Some(at) = share.left_at_ms {
            w.left_at_ms = Some(at);
        }
        w.share += share.segment.end() - share.segment.start();
        if let Some(at) = share.lost_at_ms {
            w.lost_at_ms = Some(at);
            let t = tallies.get(&share.worker).cloned().unwrap_or_default();
            w.in_flight_bound = Some(unreported_bound(
                run,
                &total,
                share.segment,
                t.last_at_ms,
                at,
                t.last_active_vus,
            ));
        }
    }
    let planned_sessions = match (
        run.plan.load.model,
        run.plan.load.iterations,
        Ramp::of(&run.plan.load).total(),
    ) {
        (Model::Closed, Some(n), None) => Some(run.plan.max_vus() * n),
        _ => None,
    };
    let delivered = match planned_sessions {
        Some(p) if p > 0 => (total.counters.sessions_started as f64 / p as f64).min(1.0),
        _ => (1.0 - state.undelivered).clamp(0.0, 1.0),
    };
    let report = Report {
        schema_version: report::SCHEMA_VERSION,
        run_id: run.id.clone(),
        plan: PlanRef {
            name: run.plan.name.clone(),
            hash: hex(&Sha256::digest(run.request.plan_toml.as_bytes())),
        },
        started_at: humantime::format_rfc3339_millis(started_wall).to_string(),
        ended_at: humantime::format_rfc3339_millis(now).to_string(),
        duration_s: now
            .duration_since(started_wall)
            .unwrap_or_default()
            .as_secs_f64(),
        verdict,
        verdict_reason: reason,
        delivered,
        totals: measured.totals,
        failures: measured.failures,
        metrics: measured.metrics,
        checks: measured.checks,
        thresholds,
        workers: workers.into_values().collect(),
        intervals: state.agg.series(),
    };
    state.report = Some(report);
    state.phase = "finished";
    drop(state);
    run.publish(Ramp::of(&run.plan.load).total());
    if let (Some(h), Some(report)) = (&coordinator.history, run.report())
        && let Err(e) = lock(h).store(&report, &run.request.plan_toml)
    {
        tracing::error!(run = %run.id, error = %e, "cannot store the run in the history");
    }
    // The report holds what is kept; the merged histograms go (a coordinator lives for many
    // runs). Snapshots arriving later are acknowledged and dropped.
    lock(&run.state).agg = Aggregator::new(run.interval.as_millis() as u64, Vec::new());
    tracing::info!(run = %run.id, ?verdict, "run finished");
}

fn verdict(
    total: &gauntlet_core::metrics::Snapshot,
    thresholds: &[ThresholdReport],
    state: &State,
    run: &Run,
) -> (Verdict, String) {
    if let Some((v, r)) = &state.ended_early {
        return (*v, r.clone());
    }
    let errors: Vec<String> = state
        .shares
        .iter()
        .filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.name)))
        .collect();
    let c = &total.counters;
    if c.sessions_passed + c.sessions_failed == 0 {
        let why = if errors.is_empty() {
            if run.plan.scenarios.is_empty() {
                "the plan has no scenario"
            } else {
                "no session ran to completion"
            }
            .to_owned()
        } else {
            format!("no session ran: {}", errors.join("; "))
        };
        return (Verdict::Error, why);
    }
    if !errors.is_empty() {
        return (
            Verdict::Error,
            format!(
                "some workers could not run their share: {}",
                errors.join("; ")
            ),
        );
    }
    let unreachable = ["connect_refused", "dns", "tls"];
    if c.sessions_passed == 0
        && total
            .failures
            .keys()
            .all(|k| unreachable.contains(&k.category.as_str()))
    {
        return (
            Verdict::Error,
            "the target was never reached (every session failed to connect)".into(),
        );
    }
    let unjudged: Vec<&str> = thresholds
        .iter()
        .filter(|t| t.observed.is_none())
        .map(|t| t.expr.as_str())
        .collect();
    if !unjudged.is_empty() {
        return (
            Verdict::Error,
            format!(
                "nothing was measured for {} (a threshold without samples is an error, not a pass)",
                unjudged
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let failed: Vec<&ThresholdReport> = thresholds.iter().filter(|t| !t.pass).collect();
    if failed.is_empty() {
        let n = thresholds.len();
        let s = if n == 1 { "" } else { "s" };
        (
            Verdict::Pass,
            format!("{n} threshold{s} held over {} sessions", c.sessions_started),
        )
    } else {
        let list: Vec<String> = failed
            .iter()
            .map(|t| format!("`{}` ({})", t.expr, t.reason))
            .collect();
        (
            Verdict::Fail,
            format!(
                "{} of {} thresholds failed: {}",
                failed.len(),
                thresholds.len(),
                list.join("; ")
            ),
        )
    }
}

/// How many sessions a lost worker may have started between its last merged snapshot
/// (`last_ms`) and its loss (`lost_ms`) that no snapshot reported. Open model: the arrivals its
/// segment owned in that gap plus the sessions running at the snapshot. Closed model: each of
/// its VUs can have started at most one session per shortest session seen fleet-wide (plus the
/// one it was in).
fn unreported_bound(
    run: &Run,
    total: &gauntlet_core::metrics::Snapshot,
    segment: ExecutionSegment,
    last_ms: u64,
    lost_ms: u64,
    active_at_last: u64,
) -> u64 {
    let ramp = Ramp::of(&run.plan.load);
    match run.plan.load.model {
        Model::Open => {
            let (from, to) = (
                Duration::from_millis(last_ms),
                Duration::from_millis(lost_ms),
            );
            let mut owned = 0;
            let mut k = 0;
            while let Some(t) = ramp.arrival_time(k) {
                if t > to {
                    break;
                }
                if t > from && segment.owns_arrival(k) {
                    owned += 1;
                }
                k += 1;
            }
            owned + active_at_last
        }
        Model::Closed => {
            let vus = segment.vus(run.plan.max_vus()).count() as u64;
            let shortest_us = total
                .histograms
                .get("session")
                .filter(|h| !h.is_empty())
                .map_or(1000, |h| h.min())
                .max(1);
            let gap_us = lost_ms.saturating_sub(last_ms) * 1000;
            vus * (gap_us / shortest_us + 1)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A Prometheus summary: (count, sum in seconds, [(quantile, seconds)]).
pub type LatencySummary = (u64, f64, Vec<(f64, f64)>);

/// What `/metrics` shows of a run: live figures while it runs, the report's once finished.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    /// Sessions started, passed, failed, interrupted; dropped arrivals.
    pub sessions: [u64; 5],
    /// Failed sessions by (scenario, category).
    pub failures: BTreeMap<(String, String), u64>,
    /// Main metrics' latency.
    pub latency: BTreeMap<String, LatencySummary>,
    /// Active VUs.
    pub active_vus: u64,
}

impl Run {
    /// The run's figures for `/metrics`.
    pub fn figures(&self) -> RunFigures {
        let state = lock(&self.state);
        let mut f = RunFigures::default();
        if let Some(r) = &state.report {
            let t = &r.totals;
            f.sessions = [t.sessions, t.passed, t.failed, t.interrupted, t.dropped];
            for x in &r.failures {
                *f.failures
                    .entry((x.scenario.clone(), x.category.clone()))
                    .or_default() += x.count;
            }
            for m in MAIN_METRICS {
                if let Some(s) = r.metrics.get(m) {
                    let q = vec![
                        (0.5, s.p50_us as f64 / 1e6),
                        (0.9, s.p90_us as f64 / 1e6),
                        (0.99, s.p99_us as f64 / 1e6),
                    ];
                    f.latency
                        .insert(m.to_owned(), (s.count, s.mean_us * s.count as f64 / 1e6, q));
                }
            }
            return f;
        }
        let total = state.agg.total();
        let c = &total.counters;
        f.sessions = [
            c.sessions_started,
            c.sessions_passed,
            c.sessions_failed,
            c.sessions_interrupted,
            c.dropped_arrivals,
        ];
        for (k, v) in &total.failures {
            *f.failures
                .entry((k.scenario.clone(), k.category.clone()))
                .or_default() += v.count;
        }
        for m in MAIN_METRICS {
            if let Some(h) = total.histograms.get(m).filter(|h| !h.is_empty()) {
                let q = [0.5, 0.9, 0.99]
                    .map(|q| (q, h.value_at_quantile(q) as f64 / 1e6))
                    .to_vec();
                f.latency
                    .insert(m.to_owned(), (h.len(), h.mean() * h.len() as f64 / 1e6, q));
            }
        }
        f.active_vus = state.agg.active_vus();
        f
    }
}
