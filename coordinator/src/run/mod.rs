//! One run's life on the coordinator: wait for enough workers, cut the load into segments by
//! capacity, start everyone at one instant, admit and merge what comes back, detect lost
//! workers and hand their share to the survivors (or go on, or abort), judge thresholds live
//! and at the end, and build the report. A run always ends: workers finish, are lost, or hit
//! the deadline.
//!
//! # Layout
//! - this file: [`Run`], its state, and what workers' messages do to it (each wakes the
//!   lifecycle);
//! - [`intake`]: what a snapshot must pass before it is merged;
//! - `shares`: one share of the run, the loss policy and hand-overs (bounded: a few heirs
//!   per loss, a rate and a limit per run; a tenth of the fleet silent at once is suspected to
//!   be the coordinator's or the network's fault first);
//! - `watchdog`: notices when the coordinator itself did not run, so nobody is lost on
//!   that time;
//! - `lifecycle`: the driver, an event-driven state machine (waiting, running, stopping,
//!   finished) woken by workers' messages and by its own deadlines;
//! - `finish`: the facts of the end, handed to `gauntlet_core::report` to judge and build;
//! - `figures`: what `/metrics` shows of a run.

pub mod intake;

mod figures;
mod finish;
mod lifecycle;
mod shares;
mod watchdog;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gauntlet_core::plan::Plan;
use gauntlet_core::report::{self, Report, WorkerReport};
use gauntlet_core::schedule::Ramp;
use gauntlet_core::thresholds::Threshold;
use gauntlet_core::words::{Judgement, RunPhase};
use gauntlet_proto::{counters_to_proto, delta_from_proto, v1};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aggregator::{Aggregator, MAIN_METRICS};
use crate::{Coordinator, lock};

pub use figures::{LiveFigures, LiveLatency, RunFigures};
use intake::{Intake, Reason, Refusal};
use shares::{Handovers, SEQ_BLOCK, Share};

/// What a run was asked to do.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The plan, as written (for the history and the plan's hash).
    pub plan_toml: String,
    /// Its file name (for messages).
    pub plan_file: String,
    /// Workers to wait for (0: the plan's, or 1).
    pub min_workers: u32,
    /// How long to wait for them (zero: the plan's, or the coordinator's default).
    pub min_workers_timeout: Duration,
}

#[derive(Debug)]
struct State {
    phase: RunPhase,
    agg: Aggregator,
    shares: Vec<Share>,
    started: Option<Instant>,
    started_wall: Option<SystemTime>,
    report: Option<Report>,
    /// Set when the run ends early: how it is judged.
    ended_early: Option<Judgement>,
    /// When the run was told to stop early (cancel, abort, deadline), ms since its start.
    stopped_at_ms: Option<u64>,
    /// The `abort_on_fail` threshold that stopped the run, and when.
    aborted_by: Option<(String, u64)>,
    /// Shares the run started with.
    initial_shares: usize,
    /// What was done about lost shares.
    handovers: Handovers,
}

impl State {
    fn elapsed_ms(&self) -> u64 {
        self.started.map_or(0, |s| {
            Instant::now().saturating_duration_since(s).as_millis() as u64
        })
    }
}

/// A run.
#[derive(Debug)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// The validated, resolved plan.
    pub plan: Plan,
    /// The resolved plan as workers get it (JSON), made once.
    plan_json: String,
    request: RunRequest,
    thresholds: Vec<Threshold>,
    interval: Duration,
    /// What a snapshot must pass to be merged.
    intake: Intake,
    state: Mutex<State>,
    progress: watch::Sender<v1::RunProgress>,
    cancel: CancellationToken,
    /// Woken by every worker message that changes the run, so the lifecycle reacts at once.
    wake: Notify,
    /// Notices when the coordinator itself did not run.
    watchdog: watchdog::Watchdog,
}

/// Planned sessions up to which a run bound by iterations only snapshots every 250 ms: such
/// runs (every starter plan) are short, and at 1 s their charts were one or two dots.
pub const FINE_ITERATIONS: u64 = 10_000;

/// The snapshot interval of a plan that sets none: 1 s, or 250 ms for a run planned to last
/// less than 10 s, or bound by iterations only with at most [`FINE_ITERATIONS`] sessions (so
/// its charts are lines of a dozen points or more, not two dots).
pub fn default_interval(plan: &Plan) -> Duration {
    let fine = Duration::from_millis(250);
    match Ramp::of(&plan.load).total() {
        Some(planned) if !planned.is_zero() && planned < Duration::from_secs(10) => fine,
        Some(_) => Duration::from_secs(1),
        None => match plan.load.iterations() {
            Some(n) if n.saturating_mul(plan.max_vus()) <= FINE_ITERATIONS => fine,
            _ => Duration::from_secs(1),
        },
    }
}

/// How long after its interval a snapshot may still come and count in windows: three
/// heartbeat timeouts (a worker cut off that long is lost), and at least 20 s.
fn late_after(coordinator: &Coordinator) -> Duration {
    (3 * coordinator.config.heartbeat_timeout).max(Duration::from_secs(20))
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
        let interval = plan
            .fleet
            .interval
            .unwrap_or_else(|| default_interval(&plan));
        let agg = Aggregator::new(interval, &thresholds, late_after(coordinator));
        let (progress, _) = watch::channel(v1::RunProgress {
            run_id: id.clone(),
            phase: v1::RunPhase::Waiting.into(),
            ..v1::RunProgress::default()
        });
        let (deadline, _) = lifecycle::run_deadline(&plan, Ramp::of(&plan.load).total());
        let intake = Intake::new(
            &plan,
            interval,
            coordinator.config.start_delay + deadline + lifecycle::drain_time(coordinator, &plan),
        );
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
                phase: RunPhase::Waiting,
                agg,
                shares: Vec::new(),
                started: None,
                started_wall: None,
                report: None,
                ended_early: None,
                stopped_at_ms: None,
                aborted_by: None,
                initial_shares: 0,
                handovers: Handovers::default(),
            }),
            progress,
            cancel: coordinator.shutdown.child_token(),
            wake: Notify::new(),
            watchdog: watchdog::Watchdog::new(),
        });
        coordinator.add_run(Arc::clone(&run));
        tokio::spawn(lifecycle::drive(coordinator.clone(), Arc::clone(&run)));
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

    /// Waiting, running or finished.
    pub fn phase(&self) -> RunPhase {
        lock(&self.state).phase
    }

    /// The report, once finished.
    pub fn report(&self) -> Option<Report> {
        lock(&self.state).report.clone()
    }

    /// The report, or while the run is going a provisional one from what has been merged so
    /// far (verdict `error` with the phase as reason until the end), for the live page.
    pub fn live_report(&self) -> Report {
        let state = lock(&self.state);
        if let Some(r) = &state.report {
            return r.clone();
        }
        let now = SystemTime::now();
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
                    handed_to: Vec::new(),
                });
            w.share += share.segment.width();
            w.handed_to.extend(share.handed_to.iter().cloned());
        }
        report::build::live(
            report::build::Run {
                id: &self.id,
                plan: &self.plan,
                plan_hash: "",
                started: state.started_wall.unwrap_or(now),
                now,
                total: state.agg.total(),
                interval: self.interval,
            },
            state.phase,
            workers.into_values().collect(),
            state.agg.series(),
        )
    }

    /// Admits and merges a snapshot from `worker`: acknowledged when merged (now or before) or
    /// too late to count, refused when it fails admission ([`intake`]).
    pub fn on_snapshot(
        &self,
        coordinator: &Coordinator,
        worker: &str,
        snapshot: &v1::Snapshot,
    ) -> Result<(), Refusal> {
        let result = self.admit(coordinator, worker, snapshot);
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
        self.wake.notify_one();
        result
    }

    fn admit(
        &self,
        coordinator: &Coordinator,
        worker: &str,
        snapshot: &v1::Snapshot,
    ) -> Result<(), Refusal> {
        if self
            .envelope(coordinator, &mut lock(&self.state), worker, snapshot)?
            .is_none()
        {
            return Ok(());
        }
        // Decoded outside the run's lock: the costly part, which a fleet's snapshots need at
        // once (a thousand workers' every second), is done in parallel; the merge under the
        // lock only adds counts.
        let delta = delta_from_proto(snapshot).map_err(|e| Refusal {
            reason: Reason::Undecodable,
            detail: e.to_string(),
        })?;
        let mut state = lock(&self.state);
        // Checked again: the run may have moved on meanwhile (finished, the share handed over,
        // the same snapshot merged from a resend).
        let Some((index, view)) = self.envelope(coordinator, &mut state, worker, snapshot)? else {
            return Ok(());
        };
        let elapsed = Duration::from_millis(state.elapsed_ms());
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
        self.lost_share_heard(coordinator, share);
        Ok(())
    }

    /// What admission checks before a snapshot is decoded: the share it names is the
    /// sender's, its number and time are within the run's. `None`: acknowledged without being
    /// merged (the run is over, or the snapshot was merged already).
    fn envelope(
        &self,
        coordinator: &Coordinator,
        state: &mut State,
        worker: &str,
        snapshot: &v1::Snapshot,
    ) -> Result<Option<(usize, intake::ShareView)>, Refusal> {
        if state.phase == RunPhase::Finished {
            // Too late to count; acknowledged so the worker stops resending.
            return Ok(None);
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
        self.intake
            .check_histogram_names(snapshot.histograms.iter().map(|h| h.name.as_str()))?;
        if state.agg.has(worker, snapshot.seq) {
            // A resend after a reconnect: merged already.
            self.lost_share_heard(coordinator, &mut state.shares[index]);
            return Ok(None);
        }
        Ok(Some((index, view)))
    }

    /// A worker's heartbeat told how far one of its shares got.
    pub fn on_progress(&self, coordinator: &Coordinator, worker: &str, p: &v1::ShareProgress) {
        let mut state = lock(&self.state);
        let elapsed = state.elapsed_ms();
        let index = (p.first_seq / SEQ_BLOCK) as usize;
        if let Some(share) = state.shares.get_mut(index)
            && share.worker == worker
            && share.first_seq == p.first_seq
        {
            // Also for a share already declared lost: if its worker comes back (it was frozen,
            // or cut off), what it started since must count in its bound.
            share.heard(p, elapsed);
            self.lost_share_heard(coordinator, share);
        }
    }

    /// A worker shutting down (or giving its shares up: it was cut off past its lease) stopped
    /// starting sessions on one of its shares (it drains them and sends its Done later): the
    /// share is handed over now.
    pub fn on_leaving(&self, worker: &str, leaving: &v1::Leaving) {
        let mut state = lock(&self.state);
        let elapsed = state.elapsed_ms();
        if let Some(share) = state
            .shares
            .iter_mut()
            .find(|s| s.worker == worker && s.first_seq == leaving.first_seq && !s.done)
        {
            share.leaving(leaving.stopped_at_ms, elapsed);
            share.gave_up = leaving.gave_up;
        }
        drop(state);
        self.wake.notify_one();
    }

    /// A worker finished one of its shares.
    pub fn on_done(&self, worker: &str, done: &v1::Done) {
        let mut state = lock(&self.state);
        let elapsed = state.elapsed_ms();
        if let Some(share) = state
            .shares
            .iter_mut()
            .find(|s| s.worker == worker && s.first_seq == done.first_seq)
        {
            share.finished(done, elapsed);
            if done.left {
                share.gave_up = done.gave_up;
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Sends the watchers the run's progress (the last one carries the report).
    fn publish(&self, planned: Option<Duration>) {
        let state = lock(&self.state);
        let total = state.agg.total();
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
            phase: phase_to_proto(state.phase).into(),
            elapsed_ms: state.elapsed_ms(),
            planned_ms: planned.map_or(0, |p| p.as_millis() as u64),
            active_vus: state.agg.active_vus(),
            counters: Some(counters_to_proto(&total.counters)),
            failures: total
                .failures_by_category()
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
            self.tell_to_stop(coordinator, &share.worker, shares::LOST);
        }
    }

    /// Tells every worker still running a share of this run to stop (`state` locked).
    fn stop_all(&self, coordinator: &Coordinator, state: &State, reason: &str) {
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

    /// Sends `share` to its worker, to start at `start_wall`.
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

/// A run phase on the wire.
pub fn phase_to_proto(phase: RunPhase) -> v1::RunPhase {
    match phase {
        RunPhase::Waiting => v1::RunPhase::Waiting,
        RunPhase::Running => v1::RunPhase::Running,
        RunPhase::Finished => v1::RunPhase::Finished,
    }
}
