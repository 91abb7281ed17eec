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
    pub(super) handed_over: bool,
    /// Names of the workers its rest was handed over to.
    pub(super) handed_to: Vec<String>,
    /// Its worker left it because it was cut off from the coordinator past its lease, not
    /// because it is shutting down: it may take shares again.
    pub(super) gave_up: bool,
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
            handed_to: Vec::new(),
            gave_up: false,
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

/// A share left this long (ms) before it is handed over is continued from the hand-over,
/// not from where it stopped: survivors catch up on at most this much of a schedule.
const CATCH_UP_MS: u64 = 1000;

/// The most survivors one lost share is split among: a loss moves its share once, to a few
/// workers, never to the whole fleet (a thousand-worker fleet losing workers must not make a
/// thousand shares of each).
pub(super) const MAX_HEIRS: usize = 4;
/// Rounds of suspicion when many workers fall silent at once: the first lasts a
/// heartbeat timeout, each next one twice the one before (1 + 2 + 4 + 8 timeouts in all),
/// then the silent workers are lost.
const SUSPICION_ROUNDS: u32 = 4;

/// When many workers went quiet at once: the coordinator's side, the machine or the network
/// are suspected before the workers, and losses wait until `until`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Suspicion {
    pub(super) until: Instant,
    round: u32,
}

/// What a run has done about lost shares: hand-overs made (each a share moved to at most
/// [`MAX_HEIRS`] survivors), when the recent ones were made, and shares left without one.
#[derive(Debug, Default)]
pub(super) struct Handovers {
    pub(super) suspicion: Option<Suspicion>,
    /// When the last suspicion was lifted (the fleet was heard again): silence and stalls are
    /// counted from then, as after a stall of the coordinator.
    settled_at: Option<Instant>,
    made: usize,
    recent: std::collections::VecDeque<Instant>,
    /// Lost shares whose rest nobody took (no survivor, or the run's limit reached).
    pub(super) not_handed_over: usize,
}

impl Handovers {
    /// The most hand-overs in a run of `initial` shares: twice as many as it began with, and
    /// at least 8. Beyond, lost load is not reassigned (the report's `delivered` shows it).
    fn limit(initial: usize) -> usize {
        (2 * initial).max(8)
    }

    /// The most hand-overs in any heartbeat timeout: a tenth of the fleet, at least 4.
    fn rate(initial: usize) -> usize {
        (initial / 10).max(4)
    }

    /// From when a worker's silence counts at the earliest: the coordinator's last resumption
    /// (`awake`) or the end of the last suspicion, whichever is later.
    pub(super) fn counted_from(&self, awake: Option<Instant>) -> Option<Instant> {
        match (awake, self.settled_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// When a running share would next be found lost, if nothing is heard by then: its worker's
/// silence deadline or its stall deadline, whichever comes first, counted from when the
/// coordinator last resumed at the earliest, and not before a suspicion of the whole fleet
/// ends.
pub(super) fn loss_deadline(
    coordinator: &Coordinator,
    run: &Run,
    state: &State,
    share: &Share,
    awake: Option<Instant>,
) -> Option<Instant> {
    if share.handed_over || share.lost_at_ms.is_some() || share.done || share.left_at_ms.is_some() {
        return None;
    }
    let started = state.started?;
    let awake = state.handovers.counted_from(awake);
    let from = |t: Instant| awake.map_or(t, |a| t.max(a));
    let silent_at = coordinator
        .registry
        .last_seen(&share.worker)
        .map(|seen| from(seen) + coordinator.config.heartbeat_timeout)
        .unwrap_or_else(Instant::now);
    let since = from(
        share
            .progressed_at
            .unwrap_or(share.assigned_at.max(started)),
    );
    let at = silent_at.min(since + stall_timeout(coordinator, run));
    Some(match state.handovers.suspicion {
        Some(s) => at.max(s.until),
        None => at,
    })
}

/// Workers silent past the heartbeat timeout are lost, and workers that shut down left their
/// shares early; the rest of those shares is handed over, dropped or ends the run, as the plan
/// says. `state` is the run's, locked. Silence counts only time the coordinator was running;
/// when a tenth of the fleet is silent at once the coordinator suspects its own side or the
/// network and waits (backing off) before it believes it.
pub(super) fn handle_losses(coordinator: &Coordinator, run: &Run, state: &mut State, seed: u64) {
    let timeout = coordinator.config.heartbeat_timeout;
    let stall = stall_timeout(coordinator, run);
    // Once stopping, shares end because they were told to: nothing is handed over, but a
    // worker that dies while draining is still lost (its sessions' outcomes are unknown).
    let stopping = state.ended_early.is_some();
    let elapsed = state.elapsed_ms();
    let started = state.started.unwrap_or_else(Instant::now);
    let now = Instant::now();
    let awake = state.handovers.counted_from(run.watchdog.awake_since(now));
    let from = |t: Instant| awake.map_or(t, |a| t.max(a));
    let mut quiet = Vec::new();
    // Workers half way to being lost: one fleet-wide silence crosses the timeout worker by
    // worker, a heartbeat apart, and must be seen as one.
    let mut quieting = std::collections::BTreeSet::new();
    for (i, share) in state.shares.iter().enumerate() {
        if share.handed_over
            || share.lost_at_ms.is_some()
            || share.left_at_ms.is_some()
            || share.done
        {
            continue;
        }
        let seen = coordinator.registry.last_seen(&share.worker);
        let silent = seen.is_none_or(|seen| now.duration_since(from(seen)) >= timeout);
        // Heartbeats alone do not hold a share: its snapshots must keep coming.
        let since = from(
            share
                .progressed_at
                .unwrap_or(share.assigned_at.max(started)),
        );
        let stalled = now.saturating_duration_since(since) >= stall;
        if seen.is_none_or(|seen| now.duration_since(from(seen)) >= timeout / 2)
            || now.saturating_duration_since(since) >= stall / 2
        {
            quieting.insert(share.worker.clone());
        }
        if silent {
            let heard = seen.map_or(elapsed, |seen| {
                seen.saturating_duration_since(started).as_millis() as u64
            });
            quiet.push((i, heard.min(elapsed), "silent past the heartbeat timeout"));
        } else if stalled {
            // It still talks, but its share made no progress since its last snapshot.
            let last = if share.tally.merged > 0 {
                share.last_at_ms
            } else {
                share.offset_ms
            };
            quiet.push((
                i,
                last.min(elapsed),
                "heartbeats but no snapshot for longer than the stall timeout",
            ));
        }
    }
    if (!quiet.is_empty() || state.handovers.suspicion.is_some())
        && suspect_ourselves(run, state, &quieting, now, timeout)
    {
        quiet.clear();
    }
    let mut told = std::collections::BTreeSet::new();
    let mut lost_workers = Vec::new();
    for (i, heard, why) in quiet {
        let share = &mut state.shares[i];
        share.lost_at_ms = Some(elapsed);
        share.last_heard_ms = Some(heard);
        lost_workers.push(share.worker.clone());
        tracing::warn!(run = %run.id, worker = %share.worker, why, "worker lost");
        // If it comes back, it must not go on with a share that is no longer its own (told
        // again whenever it is heard from: this may not reach it).
        if told.insert(share.worker.clone()) {
            run.tell_to_stop(coordinator, &share.worker, LOST);
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
    hand_over(coordinator, run, state, seed, now, elapsed);
}

/// Whether the coordinator should doubt that workers past their timeout are gone: a tenth of
/// the fleet's workers or more (at least two) are `quiet` (silent, or without a snapshot, for
/// half their timeout or more) at once, which a stalled coordinator, a starved machine or a
/// cut network explains better than that many workers failing together. Backs off: a
/// heartbeat timeout, then twice as long each round, [`SUSPICION_ROUNDS`] rounds, then
/// believes it.
fn suspect_ourselves(
    run: &Run,
    state: &mut State,
    quiet_workers: &std::collections::BTreeSet<String>,
    now: Instant,
    timeout: Duration,
) -> bool {
    let running: std::collections::BTreeSet<&str> = state
        .shares
        .iter()
        .filter(|s| s.active() && !s.handed_over)
        .map(|s| s.worker.as_str())
        .collect();
    if quiet_workers.len() < 2 || 10 * quiet_workers.len() < running.len() {
        if state.handovers.suspicion.take().is_some() {
            // The fleet was heard again: those still catching up (their snapshots
            // held back by the same stall) get a fresh timeout from now, not this decision.
            tracing::info!(run = %run.id, "the fleet is heard again: suspicion lifted");
            state.handovers.settled_at = Some(now);
            return true;
        }
        return false;
    }
    let (quiet_n, running_n) = (quiet_workers.len(), running.len());
    let round = match state.handovers.suspicion {
        Some(s) if now < s.until => return true,
        Some(s) => s.round + 1,
        None => 0,
    };
    if round >= SUSPICION_ROUNDS {
        tracing::warn!(
            run = %run.id,
            quiet = quiet_n,
            running = running_n,
            "many workers are still silent after backing off: they are lost"
        );
        state.handovers.suspicion = None;
        return false;
    }
    let wait = timeout * (1 << round);
    state.handovers.suspicion = Some(Suspicion {
        until: now + wait,
        round,
    });
    tracing::warn!(
        run = %run.id,
        quiet = quiet_n,
        running = running_n,
        wait_ms = wait.as_millis() as u64,
        "many workers fell silent at once: suspecting this coordinator, the machine or the network, waiting before declaring them lost"
    );
    true
}

/// Hands the rest of lost and departed shares over, each once: to at most [`MAX_HEIRS`]
/// survivors heard from recently, at most [`Handovers::rate`] a heartbeat timeout and
/// [`Handovers::limit`] in the run; lost ones only if the plan says `reassign`. A share that
/// must wait for the rate is handed over at a later decision, from then on.
fn hand_over(
    coordinator: &Coordinator,
    run: &Run,
    state: &mut State,
    seed: u64,
    now: Instant,
    elapsed: u64,
) {
    let timeout = coordinator.config.heartbeat_timeout;
    let initial = state.initial_shares;
    let pending: Vec<usize> = state
        .shares
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.handed_over && (s.lost_at_ms.is_some() || s.left_at_ms.is_some()))
        .map(|(i, _)| i)
        .collect();
    if pending.is_empty() {
        return;
    }
    while state
        .handovers
        .recent
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= timeout)
    {
        state.handovers.recent.pop_front();
    }
    for i in pending {
        let lost = state.shares[i].lost_at_ms.is_some();
        // Drained shares (a worker shutting down) are always handed over; lost ones as the plan
        // says (`continue`: the run goes on without them, `delivered` shows what is missing).
        if lost && run.plan.fleet.on_worker_loss != WorkerLoss::Reassign {
            state.shares[i].handed_over = true;
            continue;
        }
        if state.handovers.made >= Handovers::limit(initial) {
            state.shares[i].handed_over = true;
            state.handovers.not_handed_over += 1;
            tracing::warn!(
                run = %run.id,
                worker = %state.shares[i].worker,
                limit = Handovers::limit(initial),
                "the run's hand-over limit is reached: this share's rest is not reassigned"
            );
            continue;
        }
        if state.handovers.recent.len() >= Handovers::rate(initial) {
            // Handed over at a later decision.
            return;
        }
        let heirs = heirs(coordinator, state, now);
        if heirs.is_empty() {
            state.shares[i].handed_over = true;
            state.handovers.not_handed_over += 1;
            tracing::warn!(run = %run.id, worker = %state.shares[i].worker, "no survivor to take this share's rest");
            continue;
        }
        let old = &state.shares[i];
        if !lost {
            tracing::info!(run = %run.id, worker = %old.worker, "worker left (shutting down)");
        }
        let lost_segment = old.segment;
        // A drained share is continued from where it stopped starting sessions (it says so
        // as it stops, so the survivors catch up on well under a second); a lost one from
        // now, since nobody knows when it died; one given up while its worker was cut off,
        // whose word comes late, from now too: the time between is not delivered, and
        // `delivered` must not say it was.
        let stopped = old
            .stopped_at_ms
            .or(old.left_at_ms)
            .unwrap_or(elapsed)
            .max(old.offset_ms);
        let offset = if lost || elapsed.saturating_sub(stopped) > CATCH_UP_MS {
            elapsed
        } else {
            stopped
        };
        let start_wall = SystemTime::now() + Duration::from_millis(100);
        let weights: Vec<u64> = heirs.iter().map(|(_, _, c)| u64::from(*c)).collect();
        let mut handed_to = Vec::new();
        for (j, segment) in lost_segment.split_among(&weights) {
            let share = Share::new(
                &heirs[j].0,
                &heirs[j].1,
                segment,
                state.shares.len(),
                offset,
            );
            if run.assign(coordinator, &share, start_wall, seed) {
                tracing::info!(run = %run.id, to = %share.worker, "share reassigned");
                handed_to.push(share.name.clone());
                state.shares.push(share);
            }
        }
        state.shares[i].handed_to = handed_to;
        state.shares[i].handed_over = true;
        state.handovers.made += 1;
        state.handovers.recent.push_back(now);
    }
}

/// Who takes a lost or left share's rest: up to [`MAX_HEIRS`] of the run's workers heard from
/// within half a heartbeat timeout, the least loaded for their capacity first (by the widths of
/// their running shares: an idle one first). Not a worker that lost a share of the run, nor one
/// that left one because it is shutting down; one that gave its shares up when cut off past its
/// lease and is heard from again is one of the fleet again. (id, name, capacity).
fn heirs(coordinator: &Coordinator, state: &State, now: Instant) -> Vec<(String, String, u32)> {
    let fresh = coordinator.config.heartbeat_timeout / 2;
    // Per worker of the run: its running shares' widths, or `None` if it may not take more.
    let mut load: std::collections::BTreeMap<&str, Option<f64>> = std::collections::BTreeMap::new();
    for s in &state.shares {
        let entry = load.entry(s.worker.as_str()).or_insert(Some(0.0));
        let Some(width) = entry else { continue };
        // Lost, or shutting down.
        if s.lost_at_ms.is_some() || (s.left_at_ms.is_some() && !s.gave_up) {
            *entry = None;
        } else if s.active() {
            *width += s.segment.width();
        }
    }
    let mut candidates: Vec<(f64, String, String, u32)> = load
        .into_iter()
        .filter_map(|(id, width)| {
            let width = width?;
            let w = coordinator.registry.get(id)?;
            // Heard from, really: after a stall of the coordinator nobody is fresh until heard.
            (w.outbox.is_some() && now.saturating_duration_since(w.last_seen) < fresh).then(|| {
                (
                    width / f64::from(w.capacity.max(1)),
                    w.id,
                    w.name,
                    w.capacity,
                )
            })
        })
        .collect();
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    candidates
        .into_iter()
        .take(MAX_HEIRS)
        .map(|(_, id, name, capacity)| (id, name, capacity))
        .collect()
}
