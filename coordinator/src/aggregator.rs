//! The exact merge of a run's snapshots: each (worker, sequence number) is merged once, into
//! the run's total and into its interval (by the snapshot's time), so fleet-wide percentiles
//! equal those of one histogram that saw every sample, and a resent snapshot changes nothing.
//! The total's failure attribution gets the dimension workers do not carry: the worker (the
//! sender).

use std::collections::{BTreeMap, HashSet};

use gauntlet_core::attribution::{Outcomes, TABLE_KEYS};
use gauntlet_core::metrics::Snapshot;
use gauntlet_core::report::IntervalReport;
use gauntlet_core::thresholds::keep_for_windows;
use gauntlet_proto::{ConvertError, snapshot_from_proto, v1};

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

/// Metrics whose p50/p99 the per-interval series carries.
pub const MAIN_METRICS: [&str; 3] = ["session", "ws.handshake", "ws.confirmation"];

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

/// A run's merged measurements.
#[derive(Debug)]
pub struct Aggregator {
    interval_ms: u64,
    total: Snapshot,
    /// Per interval: everything but the histograms of metrics no windowed threshold reads.
    intervals: Vec<Snapshot>,
    /// Per interval: the main metrics' histograms, for the series.
    main: Vec<Snapshot>,
    active_vus: Vec<BTreeMap<String, u64>>,
    /// Per interval: sessions started by worker.
    per_worker: Vec<BTreeMap<String, u64>>,
    windowed: Vec<String>,
    seen: HashSet<(String, u64)>,
    workers: BTreeMap<String, WorkerTally>,
    /// Per subject, the one share that reported it, or `None` once a second one did (at most
    /// [`TABLE_KEYS`] subjects; beyond, or with untracked subjects, `spread_subjects` is set).
    subject_shares: BTreeMap<String, Option<u64>>,
    spread_subjects: bool,
}

impl Aggregator {
    /// An aggregator for snapshots every `interval_ms`, keeping per-interval histograms of
    /// `windowed` metrics (those windowed thresholds read).
    pub fn new(interval_ms: u64, windowed: Vec<String>) -> Aggregator {
        Aggregator {
            interval_ms: interval_ms.max(1),
            total: Snapshot::default(),
            intervals: Vec::new(),
            main: Vec::new(),
            active_vus: Vec::new(),
            per_worker: Vec::new(),
            windowed,
            seen: HashSet::new(),
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
        // Sequence numbers of share `i` start at `i x 2^32` (run::shares::SEQ_BLOCK).
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
        self.seen.contains(&(worker.to_owned(), seq))
    }

    /// Decodes and merges snapshot `wire` from `worker` unless that (worker, seq) was merged
    /// already. Returns whether it was new.
    pub fn merge(&mut self, worker: &str, wire: &v1::Snapshot) -> Result<bool, ConvertError> {
        if self.has(worker, wire.seq) {
            return Ok(false);
        }
        let delta = snapshot_from_proto(wire)?;
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
        delta: &Snapshot,
    ) -> bool {
        if !self.seen.insert((worker.to_owned(), seq)) {
            return false;
        }
        self.total.merge(delta);
        self.note_subjects(seq, delta);
        // The interval ending at or after `at_ms`.
        let index = (at_ms.saturating_sub(1) / self.interval_ms) as usize;
        // The dimension of attribution a peer cannot claim: who sent it.
        let ended = delta_outcomes(delta);
        if ended.sessions() > 0 {
            self.total
                .attribution
                .worker
                .add(Some(&worker.to_owned()), &ended, TABLE_KEYS);
        }
        if self.intervals.len() <= index {
            self.intervals.resize_with(index + 1, Snapshot::default);
            self.main.resize_with(index + 1, Snapshot::default);
            self.active_vus.resize_with(index + 1, BTreeMap::new);
            self.per_worker.resize_with(index + 1, BTreeMap::new);
        }
        self.intervals[index].merge(&keep_for_windows(delta, &self.windowed));
        let mut main = Snapshot::default();
        for m in MAIN_METRICS {
            if let Some(h) = delta.histograms.get(m) {
                main.histograms.insert(m.to_owned(), h.clone());
            }
        }
        self.main[index].merge(&main);
        self.active_vus[index].insert(worker.to_owned(), active_vus);
        let n = self.per_worker[index].entry(worker.to_owned()).or_default();
        *n = n.saturating_add(delta.counters.sessions_started);
        let tally = self.workers.entry(worker.to_owned()).or_default();
        tally.sessions = tally
            .sessions
            .saturating_add(delta.counters.sessions_started);
        tally.snapshots += 1;
        if at_ms >= tally.last_at_ms {
            tally.last_at_ms = at_ms;
            tally.last_active_vus = active_vus;
            tally.last_sessions = delta.counters.sessions_started;
        }
        true
    }

    /// Everything merged so far.
    pub fn total(&self) -> &Snapshot {
        &self.total
    }

    /// Per-interval deltas (for windowed thresholds).
    pub fn intervals(&self) -> &[Snapshot] {
        &self.intervals
    }

    /// The main metrics' histograms merged over the intervals that began at or after
    /// `from_ms` (ms since the run's start), for `/metrics`' recent window.
    pub fn main_since(&self, from_ms: u64) -> Snapshot {
        let first = from_ms.div_ceil(self.interval_ms) as usize;
        let mut merged = Snapshot::default();
        for main in self.main.iter().skip(first) {
            merged.merge(main);
        }
        merged
    }

    /// What each worker contributed.
    pub fn workers(&self) -> &BTreeMap<String, WorkerTally> {
        &self.workers
    }

    /// VUs active fleet-wide at the latest interval.
    pub fn active_vus(&self) -> u64 {
        self.active_vus.last().map_or(0, |m| m.values().sum())
    }

    /// The per-interval series.
    pub fn series(&self) -> Vec<IntervalReport> {
        self.intervals
            .iter()
            .zip(&self.main)
            .zip(&self.active_vus)
            .zip(&self.per_worker)
            .enumerate()
            .map(|(i, (((s, main), vus), per_worker))| {
                let failures = s
                    .failures_by_category()
                    .into_iter()
                    .map(|(c, n)| (c.to_string(), n))
                    .collect();
                let latency = main
                    .histograms
                    .iter()
                    .filter(|(_, h)| !h.is_empty())
                    .map(|(name, h)| {
                        (
                            name.clone(),
                            [
                                h.value_at_quantile(0.5),
                                h.value_at_quantile(0.9),
                                h.value_at_quantile(0.99),
                                h.max(),
                            ],
                        )
                    })
                    .collect();
                IntervalReport {
                    at_ms: (i as u64 + 1) * self.interval_ms,
                    sessions: s.counters.sessions_started,
                    passed: s.counters.sessions_passed,
                    failed: s.counters.sessions_failed,
                    failures,
                    latency,
                    active_vus: vus.values().sum(),
                    per_worker: per_worker.clone(),
                }
            })
            .collect()
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
        let mut a = Aggregator::new(1000, vec![]);
        a.merge_decoded("w1", 1, 1000, 0, &delta(&[10, 20], 2));
        a.merge_decoded("w2", 1, 2500, 0, &delta(&[10], 1));
        a.merge_decoded("w2", 1, 2500, 0, &delta(&[10], 1));
        let t = &a.total().attribution;
        assert_eq!(t.worker.values["w1"].passed, 2);
        assert_eq!(t.worker.values["w2"].passed, 1, "merged once");
        assert!(
            a.intervals().iter().all(|s| s.attribution.is_empty()),
            "intervals keep no attribution"
        );
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
        let mut a = Aggregator::new(1000, vec![]);
        a.merge_decoded("w1", 1, 1000, 0, &with("u0"));
        a.merge_decoded("w1", 2, 2000, 0, &with("u0"));
        a.merge_decoded("w2", (1 << 32) + 1, 1000, 0, &with("u1"));
        assert!(a.subjects_on_one_share());
        a.merge_decoded("w2", (1 << 32) + 2, 2000, 0, &with("u0"));
        assert!(!a.subjects_on_one_share());
    }

    #[test]
    fn the_recent_window_holds_the_intervals_that_began_in_it() {
        let mut a = Aggregator::new(1000, vec![]);
        a.merge_decoded("w1", 1, 1000, 0, &delta(&[1_000, 1_000], 2));
        a.merge_decoded("w1", 2, 2500, 0, &delta(&[5_000], 1));
        a.merge_decoded("w1", 3, 12000, 0, &delta(&[9_000], 1));
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
        let mut a = Aggregator::new(1000, vec![]);
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
        let mut a = Aggregator::new(1000, vec![]);
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
