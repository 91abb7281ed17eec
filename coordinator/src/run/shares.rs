//! One share of a run (a segment of its load given to one worker) and what happens to shares
//! whose worker is lost or leaves: the loss policy (hand the rest over to the survivors, go on
//! without it, or abort) and the hand-over itself, cut exactly from the lost segment.

use std::time::{Duration, SystemTime};

use gauntlet_core::plan::WorkerLoss;
use gauntlet_core::report::delivery::Span;
use gauntlet_core::report::unknown::ShareFacts;
use gauntlet_core::segment::ExecutionSegment;
use gauntlet_core::words::{Cause, Judgement};
use gauntlet_proto::v1;
use tokio::time::Instant;

use super::intake::{ShareTally, ShareView};
use super::{Run, State};
use crate::Coordinator;

/// Why a lost worker is told to stop: whatever it still runs of the run is no longer its own.
pub(super) const LOST: &str = "this worker was declared lost: its share went on without it";
/// Sequence numbers of one assignment start at `index * SEQ_BLOCK`.
pub(super) const SEQ_BLOCK: u64 = 1 << 32;

/// One share of the run given to one worker.
#[derive(Debug, Clone)]
pub(super) struct Share {
    pub(super) worker: String,
    pub(super) name: String,
    pub(super) segment: ExecutionSegment,
    pub(super) first_seq: u64,
    /// Where in the run's time it starts (non-zero for a share taken over).
    pub(super) offset_ms: u64,
    /// When it was sent; a share whose snapshots stop advancing is measured from here.
    pub(super) assigned_at: Instant,
    /// When its worker's last snapshot for it was merged.
    pub(super) progressed_at: Option<Instant>,
    /// What its merged snapshots say, as admission checks it.
    pub(super) tally: ShareTally,
    /// `at_ms` and active VUs of its latest merged snapshot.
    pub(super) last_at_ms: u64,
    pub(super) last_active: u64,
    /// Its latest heartbeat progress: sessions started by then, and when (run ms).
    progress: Option<(u64, u64)>,
    /// The shortest session its worker says it ran (microseconds).
    shortest_us: Option<u64>,
    /// Arrivals it dropped (no free VU) by its latest heartbeat.
    pub(super) dropped: u64,
    /// Sessions it started in all, as its Done says.
    started_total: Option<u64>,
    /// When a lost share's worker was last told to stop.
    pub(super) told_at: Option<Instant>,
    pub(super) done: bool,
    /// When its Done arrived, ms since the run started.
    done_at_ms: Option<u64>,
    /// When its worker says it stopped starting sessions (told to stop, or shutting down).
    stopped_at_ms: Option<u64>,
    /// Its Done's last sequence number.
    last_seq: u64,
    pub(super) error: Option<String>,
    pub(super) lost_at_ms: Option<u64>,
    /// For a lost share: when its worker was last heard from, ms since the run started.
    last_heard_ms: Option<u64>,
    /// The worker stopped this share early because it was shutting down.
    pub(super) left_at_ms: Option<u64>,
    /// Its remaining load was dealt with (handed over, dropped, or the run aborted).
    handed_over: bool,
}

impl Share {
    /// The `index`-th share of a run; its sequence numbers start at `index * SEQ_BLOCK`.
    pub(super) fn new(
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

    /// Sessions its merged snapshots say ended (passed, failed, interrupted).
    fn reported_finished(&self) -> u64 {
        self.tally.finished.saturating_add(self.tally.interrupted)
    }

    /// The share as admission sees it.
    pub(super) fn view(&self) -> ShareView {
        ShareView {
            segment: self.segment,
            first_seq: self.first_seq,
            offset_ms: self.offset_ms,
            tally: self.tally,
        }
    }

    /// Whether it still runs: not done, not lost, not left.
    pub(super) fn active(&self) -> bool {
        !self.done && self.lost_at_ms.is_none() && self.left_at_ms.is_none()
    }

    /// Whether it needs no more watching: done, or lost.
    pub(super) fn ended(&self) -> bool {
        self.done || self.lost_at_ms.is_some()
    }

    /// Its worker's heartbeat said how far it got, `elapsed` ms into the run. A peer's figures:
    /// times no later than now, counts that never go back.
    pub(super) fn heard(&mut self, p: &v1::ShareProgress, elapsed: u64) {
        let at = p.at_ms.min(elapsed);
        if self
            .progress
            .is_none_or(|(started, _)| p.started >= started)
        {
            self.progress = Some((p.started, at));
        }
        self.dropped = self.dropped.max(p.dropped);
        if p.shortest_us > 0 {
            self.shortest_us = Some(
                self.shortest_us
                    .map_or(p.shortest_us, |s| s.min(p.shortest_us)),
            );
        }
    }

    /// Its worker is shutting down and stopped starting sessions at `stopped_at_ms`.
    pub(super) fn leaving(&mut self, stopped_at_ms: u64, elapsed: u64) {
        self.stopped_at_ms
            .get_or_insert(stopped_at_ms.clamp(self.offset_ms, elapsed.max(self.offset_ms)));
        self.left_at_ms.get_or_insert(elapsed);
    }

    /// Its Done arrived, `elapsed` ms into the run (a resend after a reconnect changes
    /// nothing: the first one counts).
    pub(super) fn finished(&mut self, done: &v1::Done, elapsed: u64) {
        if self.done {
            return;
        }
        self.done = true;
        self.done_at_ms = Some(elapsed);
        self.last_seq = done.last_seq.max(self.first_seq);
        self.started_total = (done.error.is_empty()).then_some(done.sessions_started);
        // A peer's figure: never later than now.
        if done.stopped_at_ms > 0 {
            self.stopped_at_ms.get_or_insert(
                done.stopped_at_ms
                    .clamp(self.offset_ms, elapsed.max(self.offset_ms)),
            );
        }
        if !done.error.is_empty() {
            // A peer's words, which the verdict quotes: bounded.
            self.error = Some(gauntlet_core::metrics::cut(done.error.clone(), 1000));
        }
        if done.left {
            self.left_at_ms.get_or_insert(elapsed);
        }
    }

    /// What the unknown-outcome bound needs of it; `heard_ms` is when its worker was last
    /// heard from (the registry's record, if later than the share's own).
    pub(super) fn facts(&self, heard_ms: Option<u64>) -> ShareFacts {
        ShareFacts {
            segment: Some(self.segment),
            offset_ms: self.offset_ms,
            done: self.done,
            all_merged: self.tally.merged >= self.last_seq.saturating_sub(self.first_seq),
            started_total: self.started_total,
            reported_started: self.tally.started,
            reported_finished: self.reported_finished(),
            progress: self.progress,
            heard_ms: self.last_heard_ms.map(|h| heard_ms.map_or(h, |r| h.max(r))),
            done_at_ms: self.done_at_ms,
            last_at_ms: self.last_at_ms,
            last_active: self.last_active,
            dropped: self.dropped,
            shortest_us: self.shortest_us,
        }
    }

    /// The part of the run it covered: from its start to where it stopped (the last time a lost
    /// worker was heard from, when it stopped starting sessions, the plan's end if it ran out
    /// of work by itself, when its Done came if an error cut it short), no further than
    /// `run_stopped_ms` (the run was stopped) or `ended_ms` (still going at the end).
    pub(super) fn span(&self, run_stopped_ms: Option<u64>, ended_ms: u64) -> Span {
        let end = self
            .last_heard_ms
            .or(self.stopped_at_ms)
            .or(self.left_at_ms)
            .or(self
                .done_at_ms
                .map(|at| if self.error.is_none() { u64::MAX } else { at }))
            .unwrap_or(ended_ms);
        Span {
            worker: self.worker.clone(),
            segment: self.segment,
            from_ms: self.offset_ms,
            to_ms: run_stopped_ms.map_or(end, |s| end.min(s)),
        }
    }
}

/// How long a running share may go without a merged snapshot before its worker is lost
/// although it still heartbeats: the heartbeat timeout plus two snapshot intervals.
pub(super) fn stall_timeout(coordinator: &Coordinator, run: &Run) -> Duration {
    coordinator.config.heartbeat_timeout + 2 * run.interval
}

/// When a running share would next be found lost, if nothing is heard by then: its worker's
/// silence deadline or its stall deadline, whichever comes first.
pub(super) fn loss_deadline(
    coordinator: &Coordinator,
    run: &Run,
    state: &State,
    share: &Share,
) -> Option<Instant> {
    if share.handed_over || share.lost_at_ms.is_some() || share.done || share.left_at_ms.is_some() {
        return None;
    }
    let started = state.started?;
    let silent_at = coordinator
        .registry
        .get(&share.worker)
        .map(|w| w.last_seen + coordinator.config.heartbeat_timeout)
        .unwrap_or_else(Instant::now);
    let since = share
        .progressed_at
        .unwrap_or(share.assigned_at.max(started));
    Some(silent_at.min(since + stall_timeout(coordinator, run)))
}

/// Workers silent past the heartbeat timeout are lost, and workers that shut down left their
/// shares early; the rest of those shares is handed over, dropped or ends the run, as the plan
/// says. `state` is the run's, locked.
pub(super) fn handle_losses(coordinator: &Coordinator, run: &Run, state: &mut State, seed: u64) {
    let timeout = coordinator.config.heartbeat_timeout;
    let stall = stall_timeout(coordinator, run);
    // Once stopping, shares end because they were told to: nothing is handed over, but a
    // worker that dies while draining is still lost (its sessions' outcomes are unknown).
    let stopping = state.ended_early.is_some();
    let elapsed = state.elapsed_ms();
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
        run.stop_all(coordinator, state, "a worker was lost");
        state.stopped_at_ms.get_or_insert(elapsed);
        state.ended_early.get_or_insert(Judgement::error(
            Cause::WorkerLost,
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
            .filter(|s| s.active() && !leaving.contains(&s.worker))
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
