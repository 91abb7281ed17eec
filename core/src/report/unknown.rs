//! Sessions of unknown outcome: how many sessions of a share may have run without their
//! outcome reaching the report, bounded from what the share's worker said (its snapshots, its
//! heartbeats' live counts, its Done).
//!
//! A share that finished and reported all its snapshots has none. One that finished but whose
//! last snapshots never arrived: the sessions its Done says it started, minus the outcomes
//! merged. A lost share: its heartbeats said how many it had started (`started` at `at`); the
//! merged snapshots say how many finished. It died after it was last heard from and, since it
//! heartbeats every progress interval, before one such interval later (or before its Done, if
//! it came back and sent one); in between it could start at most: open model, the arrivals its
//! segment owns that were due by then and not yet started or dropped; closed model, per VU one
//! session per shortest session seen (fleet-wide, or by that worker in its heartbeats), plus
//! one. Without heartbeat progress (it died first) the count starts from its last snapshot
//! instead: the sessions running then, plus what it could start after.

use std::time::Duration;

use crate::plan::{Load, Model};
use crate::schedule::Ramp;
use crate::segment::ExecutionSegment;

/// What is known of one share.
#[derive(Debug, Clone, Default)]
pub struct ShareFacts {
    /// Its segment (`None` only in tests of shares without load).
    pub segment: Option<ExecutionSegment>,
    /// Where in the run's time it started, ms.
    pub offset_ms: u64,
    /// Its Done arrived.
    pub done: bool,
    /// Every snapshot its Done announced was merged.
    pub all_merged: bool,
    /// Sessions it started in all, as its Done says (without an error).
    pub started_total: Option<u64>,
    /// Sessions its merged snapshots say started.
    pub reported_started: u64,
    /// Sessions its merged snapshots say ended (passed, failed, interrupted).
    pub reported_finished: u64,
    /// Its latest heartbeat progress: sessions started by then, and when (run ms).
    pub progress: Option<(u64, u64)>,
    /// For a lost share: when its worker was last heard from, ms since the run started (the
    /// latest of the share's own record and its worker's last message).
    pub heard_ms: Option<u64>,
    /// When its Done arrived, ms since the run started.
    pub done_at_ms: Option<u64>,
    /// `at_ms` and active VUs of its latest merged snapshot.
    pub last_at_ms: u64,
    /// VUs active at its latest merged snapshot.
    pub last_active: u64,
    /// Open model: arrivals it dropped by its latest heartbeat.
    pub dropped: u64,
    /// The shortest session its worker says it ran, microseconds.
    pub shortest_us: Option<u64>,
}

/// At most how many sessions of the share `f` have no outcome in the report. `shortest_us` is
/// the shortest session merged fleet-wide (if any); `beat` the progress interval.
pub fn unreported(f: &ShareFacts, load: &Load, shortest_us: Option<u64>, beat: Duration) -> u64 {
    if f.done && f.all_merged {
        return 0;
    }
    let Some(heard) = f.heard_ms else {
        // Not lost: done (or still draining at the end) with snapshots missing.
        return match f.started_total {
            Some(n) if f.done => n.saturating_sub(f.reported_finished),
            _ => f
                .progress
                .map_or(f.reported_started, |(n, _)| n.max(f.reported_started))
                .saturating_sub(f.reported_finished),
        };
    };
    // A lost worker may come back (it was frozen, or cut off) and start sessions before its
    // Stop arrives: the window runs to when it was last heard from, whenever that was, and no
    // further than its Done if it sent one.
    let to_ms = heard
        .saturating_add(beat.as_millis() as u64)
        .min(f.done_at_ms.unwrap_or(u64::MAX));
    if let (true, Some(n)) = (f.done, f.started_total) {
        // It came back and said how many it started in all.
        return n.saturating_sub(f.reported_finished);
    }
    let (known, from_ms) = match f.progress {
        Some((started, at)) => (
            started
                .max(f.reported_started)
                .saturating_sub(f.reported_finished),
            at,
        ),
        None => (
            f.reported_started
                .saturating_sub(f.reported_finished)
                .max(f.last_active),
            f.last_at_ms.max(f.offset_ms),
        ),
    };
    let Some(segment) = f.segment else {
        return known;
    };
    let ramp = Ramp::of(load);
    let after = match load.model() {
        Model::Open => {
            let to = Duration::from_millis(to_ms);
            let offset = Duration::from_millis(f.offset_ms);
            // Arrivals are taken in order: those it owns that were due by `to` and that it had
            // neither started nor dropped by its last heartbeat may have started since. (Without
            // a heartbeat, those due after its last snapshot.) Counted from its first own
            // arrival, not from the run's first.
            let (from, processed) = match f.progress {
                Some((started, _)) => (offset, started.saturating_add(f.dropped)),
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
            let shortest_us = match (shortest_us, f.shortest_us) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(1000),
            }
            .max(1);
            let vus = segment.vus(load.max_vus()).count() as u64;
            let gap_us = to_ms.saturating_sub(from_ms).saturating_mul(1000);
            let could = vus.saturating_mul(gap_us / shortest_us + 1);
            // A plan bound by iterations: no more than its VUs' iterations not yet started.
            match load.iterations() {
                Some(per_vu) => {
                    let started = f
                        .progress
                        .map_or(f.reported_started, |(n, _)| n.max(f.reported_started));
                    could.min(vus.saturating_mul(per_vu).saturating_sub(started))
                }
                None => could,
            }
        }
    };
    known.saturating_add(after)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plan::{Closed, VuSchedule};

    /// A lost share of a plan bound by iterations can have left unknown at most the sessions
    /// its VUs had not started yet, however long it was away: 12 VUs x 8 iterations, 10 of
    /// them started (4 finished), lost after 30 s of silence with 1 ms sessions seen.
    #[test]
    fn a_plan_bound_by_iterations_bounds_the_unknown_by_what_was_left_to_run() {
        let load = Load::Closed(Closed {
            vus: VuSchedule::Fixed {
                vus: 12,
                duration: None,
            },
            iterations: Some(8),
            think_time: None,
            graceful_stop: Duration::from_secs(1),
        });
        let facts = ShareFacts {
            segment: Some(ExecutionSegment::WHOLE),
            reported_started: 10,
            reported_finished: 4,
            progress: Some((10, 1_000)),
            heard_ms: Some(31_000),
            ..ShareFacts::default()
        };
        // 6 running when last heard from, and at most 96 - 10 not yet started.
        assert_eq!(
            unreported(&facts, &load, Some(1_000), Duration::from_millis(200)),
            6 + 86
        );
    }
}
