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
use gauntlet_proto::{counters_to_proto, snapshot_from_proto, v1};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::aggregator::{Aggregator, MAIN_METRICS};
use crate::intake::{Intake, Reason, Refusal, ShareTally, ShareView};
use crate::{Coordinator, lock};

/// Why a lost worker is told to stop: whatever it still runs of the run is no longer its own.
const LOST: &str = "this worker was declared lost: its share went on without it";
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
    /// Where in the run's time it starts (non-zero for a share taken over).
    offset_ms: u64,
    /// When it was sent; a share whose snapshots stop advancing is measured from here.
    assigned_at: Instant,
    /// When its worker's last snapshot for it was merged.
    progressed_at: Option<Instant>,
    /// What its merged snapshots say, as admission checks it.
    tally: ShareTally,
    /// `at_ms` and active VUs of its latest merged snapshot.
    last_at_ms: u64,
    last_active: u64,
    /// Its latest heartbeat progress: sessions started by then, and when (run ms).
    progress: Option<(u64, u64)>,
    /// The shortest session its worker says it ran (microseconds).
    shortest_us: Option<u64>,
    /// Arrivals it dropped (no free VU) by its latest heartbeat.
    dropped: u64,
    /// Sessions it started in all, as its Done says.
    started_total: Option<u64>,
    /// When a lost share's worker was last told to stop.
    told_at: Option<Instant>,
    done: bool,
    /// When its Done arrived, ms since the run started.
    done_at_ms: Option<u64>,
    /// When its worker says it stopped starting sessions (told to stop, or shutting down).
    stopped_at_ms: Option<u64>,
    /// Its Done's last sequence number.
    last_seq: u64,
    error: Option<String>,
    lost_at_ms: Option<u64>,
    /// For a lost share: when its worker was last heard from, ms since the run started.
    last_heard_ms: Option<u64>,
    /// The worker stopped this share early because it was shutting down.
    left_at_ms: Option<u64>,
    /// Its remaining load was dealt with (handed over, dropped, or the run aborted).
    handed_over: bool,
}

impl Share {
    /// Sessions its merged snapshots say ended (passed, failed, interrupted).
    fn reported_finished(&self) -> u64 {
        self.tally.finished.saturating_add(self.tally.interrupted)
    }

    /// The share as admission sees it.
    fn view(&self) -> ShareView {
        ShareView {
            segment: self.segment,
            first_seq: self.first_seq,
            offset_ms: self.offset_ms,
            tally: self.tally,
        }
    }

    /// The `index`-th share of a run; its sequence numbers start at `index * SEQ_BLOCK`.
    fn new(
        worker: &str,
        name: &str,
        segment: ExecutionSegment,
        index: usize,
        offset_ms: u64,
    ) -> Share {
        Share {
            worker: worker.to_owned(),
            name: name.to_owned(),
            segment,
            first_seq: index as u64 * SEQ_BLOCK,
            offset_ms,
            assigned_at: Instant::now(),
            progressed_at: None,
            tally: ShareTally::default(),
            last_at_ms: 0,
            last_active: 0,
            progress: None,
            shortest_us: None,
            dropped: 0,
            started_total: None,
            told_at: None,
            done: false,
            done_at_ms: None,
            stopped_at_ms: None,
            last_seq: 0,
            error: None,
            lost_at_ms: None,
            last_heard_ms: None,
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
    /// When the run was told to stop early (cancel, abort, deadline), ms since its start.
    stopped_at_ms: Option<u64>,
    /// The `abort_on_fail` threshold that stopped the run, and when.
    aborted_by: Option<(String, u64)>,
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
    /// What a snapshot must pass to be merged.
    intake: Intake,
    /// The resolved plan as workers get it (JSON), made once.
    plan_json: String,
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
        let (deadline, _) = run_deadline(&plan, Ramp::of(&plan.load).total());
        let intake = Intake::new(
            &plan,
            interval,
            coordinator.config.start_delay + deadline + drain_time(coordinator, &plan),
        );
        let (progress, _) = watch::channel(v1::RunProgress {
            run_id: id.clone(),
            state: "waiting".into(),
            ..v1::RunProgress::default()
        });
        // A plan that cannot be written as JSON (cannot happen: it is data) runs nothing; the
        // workers say they cannot read it.
        let plan_json = serde_json::to_string(&plan).unwrap_or_default();
        let run = Arc::new(Run {
            id,
            plan_json,
            plan,
            request,
            thresholds,
            interval,
            intake,
            state: Mutex::new(State {
                phase: "waiting",
                agg,
                shares: Vec::new(),
                started: None,
                started_wall: None,
                report: None,
                ended_early: None,
                stopped_at_ms: None,
                aborted_by: None,
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
            w.share += share.segment.width();
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
            // Not known before the end.
            delivered: 0.0,
            totals: m.totals,
            failures: m.failures,
            metrics: m.metrics,
            checks: m.checks,
            never_evaluated: Vec::new(),
            classifiers: BTreeMap::new(),
            thresholds: Vec::new(),
            workers: workers.into_values().collect(),
            intervals: state.agg.series(),
        }
    }

    /// Admits and merges a snapshot from `worker`: acknowledged when merged (now or before) or
    /// too late to count, refused when it fails admission ([`crate::intake`]).
    pub fn on_snapshot(
        &self,
        coordinator: &Coordinator,
        worker: &str,
        snapshot: &v1::Snapshot,
    ) -> Result<(), Refusal> {
        let result = self.admit(worker, snapshot);
        if let Err(refusal) = &result {
            coordinator.rejected.count(refusal.reason);
            tracing::warn!(
                worker,
                run = %self.id,
                seq = snapshot.seq,
                reason = refusal.reason.as_str(),
                detail = %refusal.detail,
                "snapshot refused"
            );
        }
        if result.is_ok() {
            let mut state = lock(&self.state);
            let index = (snapshot.seq / SEQ_BLOCK) as usize;
            if let Some(share) = state.shares.get_mut(index) {
                self.lost_share_heard(coordinator, share);
            }
        }
        result
    }

    fn admit(&self, worker: &str, snapshot: &v1::Snapshot) -> Result<(), Refusal> {
        let mut state = lock(&self.state);
        if state.phase == "finished" {
            // Too late to count; acknowledged so the worker stops resending.
            return Ok(());
        }
        // Only the worker holding a share reports for it: sequence numbers of share `i` start
        // at `i * SEQ_BLOCK`, and that share must be the sender's.
        let index = (snapshot.seq / SEQ_BLOCK) as usize;
        let Some(view) = state
            .shares
            .get(index)
            .filter(|s| s.worker == worker)
            .map(Share::view)
        else {
            return Err(Refusal {
                reason: Reason::NotYourShare,
                detail: format!(
                    "the sender holds no share of run {} numbered {}",
                    self.id, snapshot.seq
                ),
            });
        };
        self.intake
            .check_envelope(&view, snapshot.seq, snapshot.at_ms)?;
        if state.agg.has(worker, snapshot.seq) {
            // A resend after a reconnect: merged already.
            return Ok(());
        }
        let delta = snapshot_from_proto(snapshot).map_err(|e| Refusal {
            reason: Reason::Undecodable,
            detail: e.to_string(),
        })?;
        let elapsed = Duration::from_millis(Self::elapsed_ms(&state));
        let tally = self.intake.admit(&view, snapshot.seq, &delta, elapsed)?;
        // A worker's clock may run a little ahead: a snapshot is never filed later than a
        // little past now.
        let latest = elapsed.as_millis() as u64 + 2 * self.interval.as_millis() as u64 + 1000;
        if snapshot.at_ms > latest {
            tracing::warn!(worker, run = %self.id, at_ms = snapshot.at_ms, "snapshot from the future: filed at now");
        }
        let at_ms = snapshot.at_ms.min(latest);
        state
            .agg
            .merge_decoded(worker, snapshot.seq, at_ms, snapshot.active_vus, &delta);
        let share = &mut state.shares[index];
        share.tally = tally;
        share.progressed_at = Some(Instant::now());
        if at_ms >= share.last_at_ms {
            share.last_at_ms = at_ms;
            share.last_active = snapshot.active_vus;
        }
        Ok(())
    }

    /// A worker's heartbeat told how far one of its shares got.
    pub fn on_progress(&self, coordinator: &Coordinator, worker: &str, p: &v1::ShareProgress) {
        let mut state = lock(&self.state);
        let elapsed = Self::elapsed_ms(&state);
        let index = (p.first_seq / SEQ_BLOCK) as usize;
        if let Some(share) = state.shares.get_mut(index)
            && share.worker == worker
            && share.first_seq == p.first_seq
        {
            // Also for a share already declared lost: if its worker comes back (it was frozen,
            // or cut off), what it started since must count in its bound.
            // A peer's figures: times no later than now, counts that never go back.
            let at = p.at_ms.min(elapsed);
            if share
                .progress
                .is_none_or(|(started, _)| p.started >= started)
            {
                share.progress = Some((p.started, at));
            }
            share.dropped = share.dropped.max(p.dropped);
            self.lost_share_heard(coordinator, share);
            if p.shortest_us > 0 {
                share.shortest_us = Some(
                    share
                        .shortest_us
                        .map_or(p.shortest_us, |s| s.min(p.shortest_us)),
                );
            }
        }
    }

    /// A worker shutting down stopped starting sessions on one of its shares (it drains them
    /// and sends its Done later): the share is handed over now.
    pub fn on_leaving(&self, worker: &str, leaving: &v1::Leaving) {
        let mut state = lock(&self.state);
        let elapsed = Self::elapsed_ms(&state);
        if let Some(share) = state
            .shares
            .iter_mut()
            .find(|s| s.worker == worker && s.first_seq == leaving.first_seq && !s.done)
        {
            share.stopped_at_ms.get_or_insert(
                leaving
                    .stopped_at_ms
                    .clamp(share.offset_ms, elapsed.max(share.offset_ms)),
            );
            share.left_at_ms.get_or_insert(elapsed);
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
            if share.done {
                // Resent after a reconnect: the first one counts.
                return;
            }
            share.done = true;
            share.done_at_ms = Some(elapsed);
            share.last_seq = done.last_seq.max(share.first_seq);
            share.started_total = (done.error.is_empty()).then_some(done.sessions_started);
            // A peer's figure: never later than now.
            if done.stopped_at_ms > 0 {
                share.stopped_at_ms.get_or_insert(
                    done.stopped_at_ms
                        .clamp(share.offset_ms, elapsed.max(share.offset_ms)),
                );
            }
            if !done.error.is_empty() {
                // A peer's words, which the verdict quotes: bounded.
                share.error = Some(gauntlet_core::metrics::cut(done.error.clone(), 1000));
            }
            if done.left {
                share.left_at_ms.get_or_insert(elapsed);
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
        let failures = total.failures_by_category();
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
                .map(|(category, count)| v1::CategoryCount {
                    category: category.to_string(),
                    count,
                })
                .collect(),
            metrics,
            report_json: state
                .report
                .as_ref()
                .and_then(|r| serde_json::to_string(r).ok())
                .unwrap_or_default(),
            // Workers still running a share: a lost or departed one no longer counts.
            workers: state
                .shares
                .iter()
                .filter(|s| s.lost_at_ms.is_none() && s.left_at_ms.is_none())
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

    /// Tells `worker` to stop this run, saying why.
    fn tell_to_stop(&self, coordinator: &Coordinator, worker: &str, reason: &str) {
        coordinator.registry.send(
            worker,
            v1::CoordinatorMessage {
                kind: Some(v1::coordinator_message::Kind::Stop(v1::Stop {
                    run_id: self.id.clone(),
                    reason: reason.to_owned(),
                })),
            },
        );
    }

    /// A lost share's worker was heard from: tell it again to stop, at most once a second.
    fn lost_share_heard(&self, coordinator: &Coordinator, share: &mut Share) {
        if share.lost_at_ms.is_some()
            && !share.done
            && share
                .told_at
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            share.told_at = Some(Instant::now());
            self.tell_to_stop(coordinator, &share.worker, LOST);
        }
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
                self.tell_to_stop(coordinator, &share.worker, reason);
            }
        }
    }

    fn assign(
        &self,
        coordinator: &Coordinator,
        share: &Share,
        start_wall: SystemTime,
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
                    plan_json: self.plan_json.clone(),
                    plan_file: self.request.plan_file.clone(),
                    segment_start: share.segment.start_ticks(),
                    segment_end: share.segment.end_ticks(),
                    start_at_unix_ms: start_at,
                    offset_ms: share.offset_ms,
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
                0,
            );
            state.shares.push(share);
        }
        for share in &state.shares {
            if !run.assign(&coordinator, share, start_wall, seed) {
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

    // 3. Watch until every share is done or lost; every run has a hard deadline.
    let (hard_deadline, deadline_why) = run_deadline(plan, planned);
    let hard_deadline = started + hard_deadline;
    // Once stopping, workers get the graceful period and a heartbeat timeout to report back.
    let drain = drain_time(&coordinator, plan);
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
                let mut state = lock(&run.state);
                let at = Run::elapsed_ms(&state);
                state.stopped_at_ms.get_or_insert(at);
                state.ended_early.get_or_insert((Verdict::Error, why.into()));
            }
        }
        handle_losses(&coordinator, &run, seed);
        let judging = lock(&run.state).ended_early.is_none();
        if judging && let Some((failed, expr)) = live_abort(&run, started) {
            run.stop_all(&coordinator, "a threshold failed");
            let mut state = lock(&run.state);
            let at = Run::elapsed_ms(&state);
            state.stopped_at_ms.get_or_insert(at);
            state.aborted_by = Some((expr.clone(), at));
            // The reason is written again at the end with the whole run's figures.
            state.ended_early.get_or_insert((
                Verdict::Fail,
                format!("aborted: threshold `{expr}` failed ({failed})"),
            ));
        }
        let judging = lock(&run.state).ended_early.is_none();
        if judging && Instant::now() >= hard_deadline {
            run.stop_all(&coordinator, "deadline");
            let mut state = lock(&run.state);
            let at = Run::elapsed_ms(&state);
            state.stopped_at_ms.get_or_insert(at);
            state.ended_early.get_or_insert((
                Verdict::Error,
                format!("the run reached its hard deadline ({deadline_why}) and was stopped"),
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

/// How long a stopping run waits for its workers: the graceful period and a heartbeat timeout
/// to report back.
fn drain_time(coordinator: &Coordinator, plan: &Plan) -> Duration {
    plan.load.graceful_stop() + coordinator.config.heartbeat_timeout + Duration::from_secs(5)
}

/// The hard deadline of a run from its start, and how it was set: the plan's
/// `fleet.deadline`, else its planned duration plus graceful stop plus 30 s, else (a plan bound
/// by iterations only) one hour.
fn run_deadline(plan: &Plan, planned: Option<Duration>) -> (Duration, String) {
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

/// Workers silent past the heartbeat timeout are lost, and workers that shut down left their
/// shares early; the rest of those shares is handed over, dropped or ends the run, as the plan
/// says.
fn handle_losses(coordinator: &Coordinator, run: &Run, seed: u64) {
    let timeout = coordinator.config.heartbeat_timeout;
    let stall = stall_timeout(coordinator, run);
    let mut state = lock(&run.state);
    // Once stopping, shares end because they were told to: nothing is handed over, but a
    // worker that dies while draining is still lost (its sessions' outcomes are unknown).
    let stopping = state.ended_early.is_some();
    let elapsed = Run::elapsed_ms(&state);
    let started = state.started.unwrap_or_else(Instant::now);
    let now = Instant::now();
    let mut newly_lost = Vec::new();
    for (i, share) in state.shares.iter().enumerate() {
        if share.handed_over || share.lost_at_ms.is_some() {
            continue;
        }
        if share.left_at_ms.is_some() {
            if !stopping {
                newly_lost.push((i, None));
            }
            continue;
        }
        if share.done {
            continue;
        }
        let worker = coordinator.registry.get(&share.worker);
        let silent = worker
            .as_ref()
            .is_none_or(|w| now.duration_since(w.last_seen) >= timeout);
        // Heartbeats alone do not hold a share: its snapshots must keep coming.
        let since = share
            .progressed_at
            .unwrap_or(share.assigned_at.max(started));
        let stalled = now.saturating_duration_since(since) >= stall;
        if silent {
            let heard = worker.map_or(elapsed, |w| {
                w.last_seen.saturating_duration_since(started).as_millis() as u64
            });
            newly_lost.push((
                i,
                Some((heard.min(elapsed), "silent past the heartbeat timeout")),
            ));
        } else if stalled {
            // It still talks, but its share made no progress since its last snapshot.
            let last = if share.tally.merged > 0 {
                share.last_at_ms
            } else {
                share.offset_ms
            };
            newly_lost.push((
                i,
                Some((
                    last.min(elapsed),
                    "heartbeats but no snapshot for longer than the stall timeout",
                )),
            ));
        }
    }
    if newly_lost.is_empty() {
        return;
    }
    let mut told = std::collections::BTreeSet::new();
    let mut lost_workers = Vec::new();
    for (i, lost) in &newly_lost {
        let share = &mut state.shares[*i];
        share.handed_over = true;
        match lost {
            None => {
                tracing::info!(run = %run.id, worker = %share.worker, "worker left (shutting down)")
            }
            Some((heard, why)) => {
                share.lost_at_ms = Some(elapsed);
                share.last_heard_ms = Some(*heard);
                lost_workers.push(share.worker.clone());
                tracing::warn!(run = %run.id, worker = %share.worker, why, "worker lost");
                // If it comes back, it must not go on with a share that is no longer its own
                // (told again whenever it is heard from: this may not reach it).
                if told.insert(share.worker.clone()) {
                    run.tell_to_stop(coordinator, &share.worker, LOST);
                }
            }
        }
    }
    if stopping {
        return;
    }
    if run.plan.fleet.on_worker_loss == WorkerLoss::Abort && !lost_workers.is_empty() {
        drop(state);
        run.stop_all(coordinator, "a worker was lost");
        let mut state = lock(&run.state);
        state.stopped_at_ms.get_or_insert(elapsed);
        state.ended_early.get_or_insert((
            Verdict::Error,
            format!(
                "aborted: worker {} was lost (on_worker_loss = \"abort\")",
                lost_workers.join(", ")
            ),
        ));
        return;
    }
    // Drained shares (a worker shutting down) are always handed over; lost ones as the plan
    // says (`continue`: the run goes on without them, `delivered` shows what is missing).
    let handed: Vec<(usize, bool)> = newly_lost
        .iter()
        .filter(|(_, lost)| lost.is_none() || run.plan.fleet.on_worker_loss == WorkerLoss::Reassign)
        .map(|(i, lost)| (*i, lost.is_some()))
        .collect();
    let leaving: Vec<String> = newly_lost
        .iter()
        .map(|(i, _)| state.shares[*i].worker.clone())
        .collect();
    let survivors: Vec<(String, String, u32)> = {
        let mut seen = std::collections::BTreeSet::new();
        state
            .shares
            .iter()
            .filter(|s| {
                !s.done
                    && s.lost_at_ms.is_none()
                    && s.left_at_ms.is_none()
                    && !leaving.contains(&s.worker)
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
    if survivors.is_empty() || handed.is_empty() {
        return;
    }
    let start_wall = SystemTime::now() + Duration::from_millis(100);
    let weights: Vec<u64> = survivors.iter().map(|(_, _, c)| u64::from(*c)).collect();
    for (i, lost) in handed {
        let old = &state.shares[i];
        let lost_segment = old.segment;
        // A drained share is continued from where it stopped starting sessions (it says so
        // as it stops, so the survivors catch up on well under a second); a lost one from
        // now, since nobody knows when it died.
        let offset = if lost {
            elapsed
        } else {
            old.stopped_at_ms
                .or(old.left_at_ms)
                .unwrap_or(elapsed)
                .max(old.offset_ms)
        };
        for (j, segment) in lost_segment.split_among(&weights) {
            let share = Share::new(
                &survivors[j].0,
                &survivors[j].1,
                segment,
                state.shares.len(),
                offset,
            );
            if run.assign(coordinator, &share, start_wall, seed) {
                tracing::info!(run = %run.id, to = %share.worker, "share reassigned");
                state.shares.push(share);
            }
        }
    }
}

/// How long a running share may go without a merged snapshot before its worker is lost
/// although it still heartbeats: the heartbeat timeout plus two snapshot intervals.
fn stall_timeout(coordinator: &Coordinator, run: &Run) -> Duration {
    coordinator.config.heartbeat_timeout + 2 * run.interval
}

/// The first `abort_on_fail` threshold that fails now (past its grace), with its observation.
fn live_abort(run: &Run, started: Instant) -> Option<(String, String)> {
    let elapsed = Instant::now().saturating_duration_since(started);
    let state = lock(&run.state);
    for (t, grace) in run
        .thresholds
        .iter()
        .filter_map(|t| t.abort_grace().map(|g| (t, g)))
    {
        if elapsed < grace {
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
    let ended_ms = Run::elapsed_ms(&state);
    let total = state.agg.total().clone();
    let mut measured = report::summarize(&total);
    let thresholds: Vec<ThresholdReport> = run
        .thresholds
        .iter()
        .map(|t| t.judge(&total, state.agg.intervals(), run.interval))
        .collect();
    // An abort is told with the whole run's figures, as the threshold table shows them.
    if let Some((expr, at)) = &state.aborted_by
        && let Some(t) = run.thresholds.iter().position(|t| t.expr() == *expr)
    {
        let judged = &thresholds[t];
        let reason = if judged.pass {
            // Failed live (a window, or early figures) and holds over the whole run.
            format!(
                "aborted at {:.1} s: threshold `{expr}` failed when judged live (over the whole run it holds: observed {})",
                *at as f64 / 1000.0,
                judged
                    .observed
                    .map_or("nothing".into(), |v| gauntlet_core::thresholds::show(
                        v,
                        &judged.unit
                    ))
            )
        } else {
            format!(
                "aborted at {:.1} s: threshold `{expr}` failed ({})",
                *at as f64 / 1000.0,
                judged.reason
            )
        };
        state.ended_early = Some((Verdict::Fail, reason));
    }
    // Every declared check is shown, evaluated or not.
    let declared = gauntlet_core::checks::declared(&run.plan);
    for d in &declared {
        measured.checks.entry(d.name.clone()).or_insert([0, 0]);
    }
    let never_evaluated: Vec<String> = declared
        .iter()
        .filter(|d| d.kind.must_evaluate() && !d.optional)
        .filter(|d| measured.checks.get(&d.name).is_none_or(|c| c[0] == 0))
        .map(|d| d.name.clone())
        .collect();
    let mut classifiers: BTreeMap<String, u64> = run
        .plan
        .classifiers
        .iter()
        .map(|c| (c.category.clone(), 0))
        .collect();
    for f in &measured.failures {
        if let Some(n) = classifiers.get_mut(f.category.as_str()) {
            *n += f.count;
        }
    }
    let now = SystemTime::now();
    let started_wall = state.started_wall.unwrap_or(now);
    let tallies = state.agg.workers().clone();
    let delivery = Delivery::of(run, &state, ended_ms);
    let mut workers: BTreeMap<String, WorkerReport> = BTreeMap::new();
    let mut unreported_elsewhere = 0u64;
    let mut missing_from: Vec<String> = Vec::new();
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
        let bound = unreported_bound(coordinator, run, &total, share, state.started);
        if let Some(at) = share.lost_at_ms {
            w.lost_at_ms = Some(at);
            let b = w.in_flight_bound.get_or_insert(0);
            *b = b.saturating_add(bound);
        } else if bound > 0 {
            // Finished, but its last snapshots never arrived.
            unreported_elsewhere = unreported_elsewhere.saturating_add(bound);
            missing_from.push(share.name.clone());
        }
    }
    for (worker, share) in delivery.by_worker(&state, &tallies) {
        if let Some(w) = workers.get_mut(&worker) {
            w.share = share;
        }
    }
    measured.totals.unknown = workers
        .values()
        .filter_map(|w| w.in_flight_bound)
        .fold(unreported_elsewhere, u64::saturating_add);
    missing_from.dedup();
    let delivered = delivery.delivered(&total);
    let checks = Coverage {
        never_evaluated: &never_evaluated,
        delivered,
        unknown: measured.totals.unknown,
        lost: workers
            .values()
            .filter(|w| w.lost_at_ms.is_some())
            .map(|w| w.name.clone())
            .collect(),
        missing_from,
    };
    let (verdict, reason) = verdict(&total, &thresholds, &state, run, &checks);
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
        never_evaluated,
        classifiers,
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

/// How much of the planned load a run delivered.
///
/// - Closed model bound by iterations only: sessions started over VUs x iterations.
/// - Otherwise: each share covers the planned load (VU-seconds, or arrivals) of its segment
///   from where it started (0, or the point it took over from) to where it stopped: the plan's
///   end, the moment the run was stopped (cancel, abort, deadline), the moment a departing
///   worker stopped starting sessions, or the last time a lost worker was heard from.
struct Delivery {
    /// VUs x iterations for a plan bound by iterations only.
    planned_sessions: Option<u64>,
    ramp: Ramp,
    planned: Option<Duration>,
    /// Per share: (worker, fraction of the whole plan's load it covered).
    covered: Vec<(String, f64)>,
    /// Open model: the fraction of the plan's arrivals dropped for want of a free VU.
    dropped: f64,
}

/// Arrivals dropped fleet-wide, from the shares' heartbeats (the merged counters may lag).
fn total_dropped(state: &State) -> u64 {
    let heard: u64 = state
        .shares
        .iter()
        .fold(0u64, |n, s| n.saturating_add(s.dropped));
    heard.max(state.agg.total().counters.dropped_arrivals)
}

impl Delivery {
    fn of(run: &Run, state: &State, ended_ms: u64) -> Delivery {
        let ramp = Ramp::of(&run.plan.load);
        let planned = ramp.total();
        let planned_sessions = match (run.plan.load.model(), run.plan.load.iterations(), planned) {
            (Model::Closed, Some(n), None) => Some(run.plan.max_vus() * n),
            _ => None,
        };
        let mut covered = Vec::new();
        let mut dropped = 0.0;
        if let Some(total) = planned {
            let max_vus = run.plan.max_vus();
            let closed = run.plan.load.model() == Model::Closed;
            // The whole plan's load: VU-seconds of every VU, or arrivals.
            let whole = if closed {
                ramp.vu_seconds(0, max_vus, Duration::ZERO, total)
            } else {
                ramp.integral(total)
            };
            for share in &state.shares {
                let end = share
                    .last_heard_ms
                    .or(share.stopped_at_ms)
                    .or(share.left_at_ms)
                    // A share that ended by itself (its VUs or arrivals ran out) delivered its
                    // load to the plan's end; one cut short by an error did not.
                    .or(share
                        .done_at_ms
                        .map(|at| if share.error.is_none() { u64::MAX } else { at }))
                    .unwrap_or(ended_ms);
                let end = state.stopped_at_ms.map_or(end, |s| end.min(s));
                let (from, to) = (
                    Duration::from_millis(share.offset_ms).min(total),
                    Duration::from_millis(end).min(total),
                );
                let load = if to <= from {
                    0.0
                } else if closed {
                    // Exactly its VUs' planned VU-seconds (VU i runs while the ramp's whole
                    // VUs exceed i): low VU ids carry more of a ramp than a width says.
                    let vus = share.segment.vus(max_vus);
                    ramp.vu_seconds(vus.start, vus.end, from, to)
                } else {
                    // Its arrivals: a low-discrepancy share of the fleet's.
                    share.segment.width() * (ramp.integral(to) - ramp.integral(from))
                };
                let fraction = if whole > 0.0 {
                    (load / whole).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                covered.push((share.worker.clone(), fraction));
            }
            // Open model: an arrival dropped for want of a free VU was planned load not sent.
            if !closed && whole > 0.0 {
                dropped = total_dropped(state) as f64 / whole;
            }
        }
        Delivery {
            planned_sessions,
            ramp,
            planned,
            covered,
            dropped,
        }
    }

    /// The run's `delivered`.
    fn delivered(&self, total: &gauntlet_core::metrics::Snapshot) -> f64 {
        match (self.planned_sessions, self.planned) {
            (Some(p), _) if p > 0 => (total.counters.sessions_started as f64 / p as f64).min(1.0),
            (_, Some(t)) if self.ramp.integral(t) > 0.0 => {
                // Shares meet end to end; float sums of their widths may miss 1 by an ulp.
                let sum: f64 = self.covered.iter().map(|(_, f)| f).sum();
                let sum = if (1.0 - sum).abs() < 1e-9 { 1.0 } else { sum };
                (sum - self.dropped).clamp(0.0, 1.0)
            }
            // Nothing was planned.
            _ => 1.0,
        }
    }

    /// Each worker's part of `delivered`.
    fn by_worker(
        &self,
        state: &State,
        tallies: &BTreeMap<String, crate::aggregator::WorkerTally>,
    ) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        match self.planned_sessions {
            Some(p) if p > 0 => {
                for share in &state.shares {
                    let sessions = tallies.get(&share.worker).map_or(0, |t| t.sessions);
                    out.insert(share.worker.clone(), sessions as f64 / p as f64);
                }
            }
            _ => {
                for (worker, f) in &self.covered {
                    *out.entry(worker.clone()).or_default() += f;
                }
            }
        }
        out
    }
}

/// What the verdict weighs besides the thresholds.
struct Coverage<'a> {
    never_evaluated: &'a [String],
    delivered: f64,
    unknown: u64,
    lost: Vec<String>,
    /// Workers that finished a share whose last snapshots never arrived.
    missing_from: Vec<String>,
}

fn verdict(
    total: &gauntlet_core::metrics::Snapshot,
    thresholds: &[ThresholdReport],
    state: &State,
    run: &Run,
    coverage: &Coverage<'_>,
) -> (Verdict, String) {
    if let Some((v, r)) = &state.ended_early {
        return (*v, r.clone());
    }
    let errors: Vec<String> = state
        .shares
        .iter()
        // A worker's words (it may quote the plan's URL): masked before they reach the report.
        .filter_map(|s| {
            s.error
                .as_ref()
                .map(|e| format!("{}: {}", s.name, gauntlet_core::redact::message(e)))
        })
        .collect();
    let c = &total.counters;
    if c.sessions_passed + c.sessions_failed == 0 {
        let why = if !coverage.lost.is_empty() {
            format!(
                "no session's outcome reached the coordinator: lost workers: {} ({} of the planned load delivered, up to {} sessions of unknown outcome)",
                coverage.lost.join(", "),
                report::percent(coverage.delivered),
                coverage.unknown
            )
        } else if errors.is_empty() {
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
    // What makes the run impossible to judge: never a pass. A threshold without samples is
    // an error outright; the rest is an error unless a threshold failed, which is a fail
    // (what was measured failed, whatever is missing) that names them too.
    let mut incomplete = Vec::new();
    let unjudged: Vec<String> = thresholds
        .iter()
        .filter(|t| t.observed.is_none())
        .map(|t| format!("`{}`", t.expr))
        .collect();
    let min_delivered = run.plan.fleet.min_delivered.unwrap_or(1.0);
    if coverage.delivered + 1e-9 < min_delivered {
        let lost = if coverage.lost.is_empty() {
            String::new()
        } else {
            format!(" (lost workers: {})", coverage.lost.join(", "))
        };
        let dropped = match c.dropped_arrivals {
            0 => String::new(),
            n => format!(" ({n} arrivals dropped for want of a free VU: raise load.max_vus)"),
        };
        incomplete.push(format!(
            "only {} of the planned load was delivered{lost}{dropped}, below fleet.min_delivered = {min_delivered}",
            report::percent(coverage.delivered)
        ));
    }
    let max_unknown = run.plan.fleet.max_unknown.unwrap_or(0);
    if coverage.unknown > max_unknown {
        let mut whose = Vec::new();
        if !coverage.lost.is_empty() {
            whose.push(format!("lost workers: {}", coverage.lost.join(", ")));
        }
        if !coverage.missing_from.is_empty() {
            whose.push(format!(
                "last snapshots never arrived from: {}",
                coverage.missing_from.join(", ")
            ));
        }
        incomplete.push(format!(
            "the outcome of up to {} sessions is unknown ({}), above fleet.max_unknown = {max_unknown}",
            coverage.unknown,
            whose.join("; ")
        ));
    }
    if !coverage.never_evaluated.is_empty() {
        incomplete.push(format!(
            "never evaluated in the whole run: {} (a check that never ran proves nothing; mark it `optional = true` if that is expected)",
            coverage
                .never_evaluated
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let failed: Vec<&ThresholdReport> = thresholds
        .iter()
        .filter(|t| !t.pass && t.observed.is_some())
        .collect();
    if !unjudged.is_empty() {
        incomplete.insert(
            0,
            format!(
                "nothing was measured for {} (a threshold without samples is an error, not a pass)",
                unjudged.join(", ")
            ),
        );
        return (Verdict::Error, incomplete.join("; "));
    }
    let also = if incomplete.is_empty() {
        String::new()
    } else {
        format!("; also: {}", incomplete.join("; "))
    };
    if failed.is_empty() && !incomplete.is_empty() {
        return (Verdict::Error, incomplete.join("; "));
    }
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
                "{} of {} thresholds failed: {}{also}",
                failed.len(),
                thresholds.len(),
                list.join("; ")
            ),
        )
    }
}

/// How many sessions of a share have no outcome in the report.
///
/// A share that finished and reported all its snapshots has none. One that finished but whose
/// last snapshots never arrived: the sessions its Done says it started, minus the outcomes
/// merged. A lost share: its heartbeats said how many it had started (`started` at `at`); the
/// merged snapshots say how many finished. It died after it was last heard from and, since it
/// heartbeats every [`gauntlet_proto::PROGRESS_INTERVAL`], before one such interval later (or
/// before its Done, if it came back and sent one); in between it could start at most: open
/// model, the arrivals its segment owns that were due by then and not yet started or dropped;
/// closed model, per VU one session per shortest session seen (fleet-wide, or by that worker in
/// its heartbeats), plus one. Without heartbeat progress (it died first) the count starts from
/// its last snapshot instead: the sessions running then, plus what it could start after.
fn unreported_bound(
    coordinator: &Coordinator,
    run: &Run,
    total: &gauntlet_core::metrics::Snapshot,
    share: &Share,
    started: Option<Instant>,
) -> u64 {
    let all_merged = share.tally.merged >= share.last_seq.saturating_sub(share.first_seq);
    if share.done && all_merged {
        return 0;
    }
    let Some(heard) = share.last_heard_ms else {
        // Not lost: done (or still draining at the end) with snapshots missing.
        return match share.started_total {
            Some(n) if share.done => n.saturating_sub(share.reported_finished()),
            _ => share
                .progress
                .map_or(share.tally.started, |(n, _)| n.max(share.tally.started))
                .saturating_sub(share.reported_finished()),
        };
    };
    // A lost worker may come back (it was frozen, or cut off) and start sessions before its
    // Stop arrives: the window runs to when it was last heard from, whenever that was, and no
    // further than its Done if it sent one.
    let heard = coordinator
        .registry
        .get(&share.worker)
        .zip(started)
        .map_or(heard, |(w, started)| {
            heard.max(w.last_seen.saturating_duration_since(started).as_millis() as u64)
        });
    let beat = coordinator
        .config
        .heartbeat_interval
        .clamp(
            Duration::from_millis(100),
            gauntlet_proto::PROGRESS_INTERVAL,
        )
        .as_millis() as u64;
    let to_ms = heard
        .saturating_add(beat)
        .min(share.done_at_ms.unwrap_or(u64::MAX));
    if let (true, Some(n)) = (share.done, share.started_total) {
        // It came back and said how many it started in all.
        return n.saturating_sub(share.reported_finished());
    }
    let (known, from_ms) = match share.progress {
        Some((started, at)) => (
            started
                .max(share.tally.started)
                .saturating_sub(share.reported_finished()),
            at,
        ),
        None => (
            share
                .tally
                .started
                .saturating_sub(share.reported_finished())
                .max(share.last_active),
            share.last_at_ms.max(share.offset_ms),
        ),
    };
    let ramp = Ramp::of(&run.plan.load);
    let segment = share.segment;
    let vus = segment.vus(run.plan.max_vus()).count() as u64;
    let after = match run.plan.load.model() {
        Model::Open => {
            let to = Duration::from_millis(to_ms);
            let offset = Duration::from_millis(share.offset_ms);
            // Arrivals are taken in order: those it owns that were due by `to` and that it had
            // neither started nor dropped by its last heartbeat may have started since. (Without
            // a heartbeat, those due after its last snapshot.) Counted from its first own
            // arrival, not from the run's first.
            let (from, processed) = match share.progress {
                Some((started, _)) => (offset, started.saturating_add(share.dropped)),
                None => (Duration::from_millis(from_ms).max(offset), 0),
            };
            let mut owned = 0u64;
            let mut k = ramp.integral(from).floor().max(0.0) as u64;
            k = k.saturating_sub(1);
            while let Some(t) = ramp.arrival_time(k) {
                if t > to {
                    break;
                }
                if t >= from && segment.owns_arrival(k) {
                    owned += 1;
                }
                k += 1;
            }
            owned.saturating_sub(processed)
        }
        Model::Closed => {
            // The shortest session seen anywhere: the fleet's merged histogram, or what the
            // lost worker said in its heartbeats (it may have died before any snapshot).
            let merged = total
                .histograms
                .get("session")
                .filter(|h| !h.is_empty())
                .map(|h| h.min());
            let shortest_us = match (merged, share.shortest_us) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(1000),
            }
            .max(1);
            let gap_us = to_ms.saturating_sub(from_ms).saturating_mul(1000);
            vus.saturating_mul(gap_us / shortest_us + 1)
        }
    };
    known.saturating_add(after)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
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
    /// Sessions started, passed, failed, interrupted; dropped arrivals; sessions of unknown
    /// outcome (0 until the run ends).
    pub sessions: [u64; 6],
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
            f.sessions = [
                t.sessions,
                t.passed,
                t.failed,
                t.interrupted,
                t.dropped,
                t.unknown,
            ];
            for x in &r.failures {
                *f.failures
                    .entry((x.scenario.clone(), x.category.to_string()))
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
            0,
        ];
        for (k, v) in &total.failures {
            *f.failures
                .entry((k.scenario.clone(), k.category.to_string()))
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
