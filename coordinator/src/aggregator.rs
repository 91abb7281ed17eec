//! The exact merge of a run's snapshots: each (worker, sequence number) is merged once, into
//! the run's total and into its [`Timeline`] (by the snapshot's time), so fleet-wide
//! percentiles equal those of one histogram that saw every sample, and a resent snapshot
//! changes nothing. The total's failure attribution gets the dimension workers do not carry:
//! the worker (the sender). What it holds does not grow with the run's length: the total, a
//! bounded timeline, and per share the sequence numbers merged (a watermark and those above it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use gauntlet_core::attribution::{Outcomes, TABLE_KEYS};
use gauntlet_core::metrics::Snapshot;
use gauntlet_core::report::{IntervalReport, ThresholdReport};
use gauntlet_core::sparse::Delta;
use gauntlet_core::thresholds::Threshold;
use gauntlet_proto::{ConvertError, delta_from_proto, v1};

pub use crate::timeline::MAIN_METRICS;
use crate::timeline::Timeline;

/// How the sessions that ended in `delta` ended: passed, or failed by category.
fn delta_outcomes(delta: &Snapshot) -> Outcomes {
    let mut o = Outcomes {
        passed: delta.counters.sessions_passed,
        ..Outcomes::default()
    };
    for (k, f) in &delta.failures {
        if f.count > 0 {
            let n = o.failed.entry(k.category.clone()).or_default();
            *n = n.saturating_add(f.count);
        }
    }
    o
}

/// What one worker contributed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerTally {
    /// Sessions it started (merged).
    pub sessions: u64,
    /// Snapshots merged.
    pub snapshots: u64,
    /// `at_ms` of its latest merged snapshot.
    pub last_at_ms: u64,
    /// VUs active at its latest merged snapshot.
    pub last_active_vus: u64,
    /// Sessions it started in its latest merged snapshot's interval.
    pub last_sessions: u64,
}

/// The sequence numbers of one share merged so far: every one below `below`, and those above
/// it that came early. Snapshots are sent in order and resent until acknowledged, so `above`
/// stays small; a share's numbers start at 1 past its first (`run::shares`).
#[derive(Debug)]
struct Merged {
    below: u64,
    above: BTreeSet<u64>,
}

impl Merged {
    /// Notes `offset`; whether it is new.
    fn insert(&mut self, offset: u64) -> bool {
        if offset < self.below || !self.above.insert(offset) {
            return false;
        }
        while self.above.remove(&self.below) {
            self.below += 1;
        }
        true
    }

    fn contains(&self, offset: u64) -> bool {
        offset < self.below || self.above.contains(&offset)
    }
}

impl Default for Merged {
    fn default() -> Self {
        Merged {
            below: 1,
            above: BTreeSet::new(),
        }
    }
}

/// A run's merged measurements.
#[derive(Debug)]
pub struct Aggregator {
    total: Snapshot,
    timeline: Timeline,
    /// Per (worker, share): the sequence numbers merged. Sequence numbers of share `i` start
    /// at `i x 2^32` (`run::shares::SEQ_BLOCK`).
    merged: HashMap<(String, u64), Merged>,
    workers: BTreeMap<String, WorkerTally>,
    /// Per subject, the one share that reported it, or `None` once a second one did (at most
    /// [`TABLE_KEYS`] subjects; beyond, or with untracked subjects, `spread_subjects` is set).
    subject_shares: BTreeMap<String, Option<u64>>,
    spread_subjects: bool,
}

impl Aggregator {
    /// An aggregator for snapshots every `interval`, judging `thresholds`' windows as they
    /// close; an interval is closed to snapshots `late_after` past it ([`Timeline`]).
    pub fn new(interval: Duration, thresholds: &[Threshold], late_after: Duration) -> Aggregator {
        Aggregator {
            total: Snapshot::default(),
            timeline: Timeline::new(interval, thresholds, late_after),
            merged: HashMap::new(),
            workers: BTreeMap::new(),
            subject_shares: BTreeMap::new(),
            spread_subjects: false,
        }
    }

    /// Whether every subject's sessions came from one share alone (then the live counts each
    /// worker saw were its subjects' whole counts). Unknown (`false`) when subjects were
    /// untracked.
    pub fn subjects_on_one_share(&self) -> bool {
        !self.spread_subjects
    }

    /// Notes which share reported which subjects.
    fn note_subjects(&mut self, seq: u64, delta: &Snapshot) {
        let share = seq >> 32;
        let subjects = &delta.attribution.subject;
        if subjects.untracked.sessions() > 0 {
            self.spread_subjects = true;
        }
        for name in subjects.values.keys() {
            let full = self.subject_shares.len() >= TABLE_KEYS;
            match self.subject_shares.get_mut(name) {
                Some(one) => {
                    if *one != Some(share) {
                        *one = None;
                        self.spread_subjects = true;
                    }
                }
                None if !full => {
                    self.subject_shares.insert(name.clone(), Some(share));
                }
                None => self.spread_subjects = true,
            }
        }
    }

    /// Whether snapshot `seq` of `worker` was merged already.
    pub fn has(&self, worker: &str, seq: u64) -> bool {
        self.merged
            .get(&(worker.to_owned(), seq >> 32))
            .is_some_and(|m| m.contains(seq & 0xffff_ffff))
    }

    /// Decodes and merges snapshot `wire` from `worker` unless that (worker, seq) was merged
    /// already. Returns whether it was new.
    pub fn merge(&mut self, worker: &str, wire: &v1::Snapshot) -> Result<bool, ConvertError> {
        if self.has(worker, wire.seq) {
            return Ok(false);
        }
        let delta = delta_from_proto(wire)?;
        Ok(self.merge_decoded(worker, wire.seq, wire.at_ms, wire.active_vus, &delta))
    }

    /// Merges `delta`, snapshot `seq` of `worker` taken at `at_ms` with `active_vus` VUs in a
    /// session, unless that (worker, seq) was merged already. Returns whether it was new.
    pub fn merge_decoded(
        &mut self,
        worker: &str,
        seq: u64,
        at_ms: u64,
        active_vus: u64,
        delta: &Delta,
    ) -> bool {
        let new = self
            .merged
            .entry((worker.to_owned(), seq >> 32))
            .or_default()
            .insert(seq & 0xffff_ffff);
        if !new {
            return false;
        }
        delta.merge_into(&mut self.total);
        self.note_subjects(seq, &delta.rest);
        // The dimension of attribution a peer cannot claim: who sent it.
        let ended = delta_outcomes(&delta.rest);
        if ended.sessions() > 0 {
            self.total
                .attribution
                .worker
                .add(Some(&worker.to_owned()), &ended, TABLE_KEYS);
        }
        self.timeline.add(worker, at_ms, active_vus, delta);
        let tally = self.workers.entry(worker.to_owned()).or_default();
        tally.sessions = tally
            .sessions
            .saturating_add(delta.rest.counters.sessions_started);
        tally.snapshots += 1;
        if at_ms >= tally.last_at_ms {
            tally.last_at_ms = at_ms;
            tally.last_active_vus = active_vus;
            tally.last_sessions = delta.rest.counters.sessions_started;
        }
        true
    }

    /// Everything merged so far.
    pub fn total(&self) -> &Snapshot {
        &self.total
    }

    /// The run's measurements over time.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// `thresholds` (those this aggregator was made with) judged: on the total, or, windowed,
    /// over every window so far.
    pub fn judge(&self, thresholds: &[Threshold]) -> Vec<ThresholdReport> {
        let mut windowed: BTreeMap<usize, ThresholdReport> =
            self.timeline.judge().into_iter().collect();
        thresholds
            .iter()
            .enumerate()
            .map(|(i, t)| {
                windowed
                    .remove(&i)
                    .unwrap_or_else(|| t.report(t.observe(&self.total)))
            })
            .collect()
    }

    /// Threshold `index` of those this aggregator was made with, judged live: on the total,
    /// or, windowed, over the windows closed so far and the latest one.
    pub fn judge_live(&self, index: usize, t: &Threshold) -> ThresholdReport {
        self.timeline
            .judge_live(index)
            .unwrap_or_else(|| t.report(t.observe(&self.total)))
    }

    /// The main metrics' histograms merged over the intervals that began at or after
    /// `from_ms` (ms since the run's start), for `/metrics`' recent window: exact for a window
    /// within the timeline's late horizon (20 s at least), where intervals are held in full.
    pub fn main_since(&self, from_ms: u64) -> Snapshot {
        Snapshot {
            histograms: self.timeline.main_since(from_ms),
            ..Snapshot::default()
        }
    }

    /// What each worker contributed.
    pub fn workers(&self) -> &BTreeMap<String, WorkerTally> {
        &self.workers
    }

    /// VUs active fleet-wide at the latest interval.
    pub fn active_vus(&self) -> u64 {
        self.timeline.active_vus()
    }

    /// The series over time.
    pub fn series(&self) -> Vec<IntervalReport> {
        self.timeline.series()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use gauntlet_core::metrics::histogram;
    use gauntlet_proto::snapshot_to_proto;

    fn delta(values: &[u64], passed: u64) -> Snapshot {
        let mut s = Snapshot::default();
        let mut h = histogram();
        for v in values {
            h.record(*v).unwrap();
        }
        s.histograms.insert("session".into(), h);
        s.counters.sessions_started = passed;
        s.counters.sessions_passed = passed;
        s
    }

    #[test]
    fn the_sender_becomes_attribution() {
        let mut a = Aggregator::new(Duration::from_secs(1), &[], Duration::from_secs(30));
        a.merge_decoded("w1", 1, 1000, 0, &Delta::of(&delta(&[10, 20], 2)));
        a.merge_decoded("w2", 1, 2500, 0, &Delta::of(&delta(&[10], 1)));
        a.merge_decoded("w2", 1, 2500, 0, &Delta::of(&delta(&[10], 1)));
        let t = &a.total().attribution;
        assert_eq!(t.worker.values["w1"].passed, 2);
        assert_eq!(t.worker.values["w2"].passed, 1, "merged once");
    }

    #[test]
    fn subjects_reported_by_two_shares_are_spread() {
        use gauntlet_core::attribution::{Outcomes, SessionTags};
        let with = |subject: &str| {
            let mut d = delta(&[10], 1);
            d.attribution.carried(
                &SessionTags {
                    subject: Some(subject.into()),
                    ..SessionTags::default()
                },
                &Outcomes {
                    passed: 1,
                    ..Outcomes::default()
                },
            );
            d
        };
        let mut a = Aggregator::new(Duration::from_secs(1), &[], Duration::from_secs(30));
        a.merge_decoded("w1", 1, 1000, 0, &Delta::of(&with("u0")));
        a.merge_decoded("w1", 2, 2000, 0, &Delta::of(&with("u0")));
        a.merge_decoded("w2", (1 << 32) + 1, 1000, 0, &Delta::of(&with("u1")));
        assert!(a.subjects_on_one_share());
        a.merge_decoded("w2", (1 << 32) + 2, 2000, 0, &Delta::of(&with("u0")));
        assert!(!a.subjects_on_one_share());
    }

    #[test]
    fn the_recent_window_holds_the_intervals_that_began_in_it() {
        let mut a = Aggregator::new(Duration::from_secs(1), &[], Duration::from_secs(30));
        a.merge_decoded("w1", 1, 1000, 0, &Delta::of(&delta(&[1_000, 1_000], 2)));
        a.merge_decoded("w1", 2, 2500, 0, &Delta::of(&delta(&[5_000], 1)));
        a.merge_decoded("w1", 3, 12000, 0, &Delta::of(&delta(&[9_000], 1)));
        let h = |from: u64| {
            a.main_since(from)
                .histograms
                .get("session")
                .map(|h| h.len())
        };
        assert_eq!(h(0), Some(4));
        assert_eq!(h(1), Some(2), "the interval 0-1 s began before 1 ms");
        assert_eq!(h(2000), Some(2));
        assert_eq!(h(2001), Some(1));
        assert_eq!(h(12000), None);
    }

    #[test]
    fn each_worker_and_sequence_is_merged_once() {
        let mut a = Aggregator::new(Duration::from_secs(1), &[], Duration::from_secs(30));
        let one = snapshot_to_proto(&delta(&[10, 20], 2), "r", 1, 1000, 2);
        assert!(a.merge("w1", &one).unwrap());
        assert!(!a.merge("w1", &one).unwrap(), "a resend changes nothing");
        assert!(
            a.merge("w2", &one).unwrap(),
            "another worker's seq 1 is its own"
        );
        assert_eq!(a.total().counters.sessions_passed, 4);
        assert_eq!(a.total().histograms["session"].len(), 4);
        assert_eq!(a.workers()["w1"].snapshots, 1);
        assert_eq!(a.active_vus(), 4);
    }

    #[test]
    fn fleet_percentiles_equal_one_histogram_that_saw_every_sample() {
        let mut all = histogram();
        let mut a = Aggregator::new(Duration::from_secs(1), &[], Duration::from_secs(30));
        let mut x = 7u64;
        for worker in 0..3 {
            for seq in 1..=20u64 {
                let mut values = Vec::new();
                for _ in 0..500 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let v = 1 + (x >> 35) % 30_000_000;
                    values.push(v);
                    all.record(v).unwrap();
                }
                let wire = snapshot_to_proto(&delta(&values, 1), "r", seq, seq * 1000, 1);
                a.merge(&format!("w{worker}"), &wire).unwrap();
            }
        }
        let merged = &a.total().histograms["session"];
        assert_eq!(merged.len(), all.len());
        for q in [0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.value_at_quantile(q),
                all.value_at_quantile(q),
                "q={q}"
            );
        }
        assert_eq!(a.series().len(), 20);
        assert_eq!(a.series()[4].sessions, 3);
    }
}
