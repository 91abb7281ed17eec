//! Failure attribution's raw material: every session that ended (passed or failed) counted,
//! by outcome (passed, or failed with its category), under what it had in common with others:
//! its subject, the target address it used, the live sessions its subject already had on its
//! worker when it connected, the sessions in flight on its worker then, the interval it
//! connected in, and its worker. One bounded [`Table`] per dimension; tables merge exactly, and
//! values beyond a table's cap are counted together as untracked, never dropped.
//!
//! Time is the interval a session *connected* in, never the one it ended in: how long a session
//! lasts depends on how it ends (a refused one ends at once, a timed-out one late), so sessions
//! grouped by their end would seem to fail "at a time" when they only fail fast.
//!
//! Workers fill the first five (they carry them in their snapshots); the coordinator fills
//! `worker` itself when it merges a snapshot (it knows who sent it), so no peer can claim it.

use std::collections::BTreeMap;

use crate::words::FailureCategory;

/// The highest live or in-flight count recorded exactly; higher counts are recorded as this
/// one, which therefore means "this many or more".
pub const MAX_LEVEL: u64 = 1000;
/// Distinct subjects one worker records exactly in one run (per share); the sessions of any
/// further subject are counted as untracked.
pub const WORKER_SUBJECTS: usize = 10_000;
/// Distinct target addresses one worker records exactly in one run (per share).
pub const WORKER_TARGETS: usize = 64;
/// Distinct intervals sessions connected in that one worker records exactly in one run (per
/// share): 2.7 hours at the default 1 s interval; later ones are untracked.
pub const WORKER_STARTS: usize = 10_000;
/// Distinct values a merged table (the coordinator's, per run and dimension) holds exactly:
/// the first ones merged; sessions of later values are counted as untracked.
pub const TABLE_KEYS: usize = 20_000;
/// Longest subject or target value kept, in bytes (cut on a character boundary, marked `…`).
pub const VALUE_BYTES: usize = 128;
/// The target of a session that never made a connection (it failed before, or made none).
pub const NO_TARGET: &str = "(none)";

/// How the sessions under one value ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Sessions that passed.
    pub passed: u64,
    /// Sessions that failed, by category (never a zero count).
    pub failed: BTreeMap<FailureCategory, u64>,
}

impl Outcomes {
    /// One session: passed (`None`) or failed with `failure`.
    pub fn one(failure: Option<&FailureCategory>) -> Outcomes {
        let mut o = Outcomes::default();
        match failure {
            None => o.passed = 1,
            Some(c) => {
                o.failed.insert(c.clone(), 1);
            }
        }
        o
    }

    /// Adds `other` into `self` (sums saturate: a peer's counts never wrap the fleet's).
    pub fn add(&mut self, other: &Outcomes) {
        self.passed = self.passed.saturating_add(other.passed);
        for (c, n) in &other.failed {
            let mine = self.failed.entry(c.clone()).or_default();
            *mine = mine.saturating_add(*n);
        }
    }

    /// Sessions failed with `category`.
    pub fn failed_with(&self, category: &FailureCategory) -> u64 {
        self.failed.get(category).copied().unwrap_or(0)
    }

    /// Sessions failed with any category.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().fold(0, |a, n| a.saturating_add(*n))
    }

    /// Sessions, passed or failed.
    pub fn sessions(&self) -> u64 {
        self.passed.saturating_add(self.failed_total())
    }
}

/// One dimension: outcomes per value, exactly for at most a cap of distinct values, and the
/// sessions of every further value together (`untracked`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table<K: Ord> {
    /// Outcomes per value, exact.
    pub values: BTreeMap<K, Outcomes>,
    /// Sessions whose value was not tracked (beyond a cap).
    pub untracked: Outcomes,
}

impl<K: Ord> Default for Table<K> {
    fn default() -> Self {
        Table {
            values: BTreeMap::new(),
            untracked: Outcomes::default(),
        }
    }
}

impl<K: Ord + Clone> Table<K> {
    /// Adds `outcomes` under `key` (untracked when `None`, or when the table already holds
    /// `cap` other values).
    pub fn add(&mut self, key: Option<&K>, outcomes: &Outcomes, cap: usize) {
        let full = self.values.len() >= cap;
        match key {
            Some(k) => match self.values.get_mut(k) {
                Some(mine) => mine.add(outcomes),
                None if !full => {
                    self.values.insert(k.clone(), outcomes.clone());
                }
                None => self.untracked.add(outcomes),
            },
            None => self.untracked.add(outcomes),
        }
    }

    /// Adds `other` into `self`, holding at most `cap` values exactly.
    pub fn merge(&mut self, other: &Table<K>, cap: usize) {
        for (k, o) in &other.values {
            self.add(Some(k), o, cap);
        }
        self.untracked.add(&other.untracked);
    }

    /// Everything in the table: every session it counts.
    pub fn total(&self) -> Outcomes {
        let mut all = self.untracked.clone();
        for o in self.values.values() {
            all.add(o);
        }
        all
    }

    /// Whether it counts no session.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.untracked == Outcomes::default()
    }
}

/// What one session had in common with others, as its worker records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTags {
    /// Its JWT subject, cut to [`VALUE_BYTES`] (`None`: beyond the worker's subject cap).
    pub subject: Option<String>,
    /// The address of the connection its steps used last (`host:port` as resolved, or as
    /// tried when it did not resolve), [`NO_TARGET`] when it made none (`None`: beyond the
    /// worker's target cap).
    pub target: Option<String>,
    /// Sessions of its subject live on its worker when it connected (at most [`MAX_LEVEL`]).
    pub live: u64,
    /// Sessions in flight on its worker when it connected, every subject's (at most
    /// [`MAX_LEVEL`]).
    pub in_flight: u64,
    /// The interval it connected in (`i`: from `i x interval` to `(i + 1) x interval`; `None`:
    /// beyond the worker's cap).
    pub started: Option<u64>,
}

/// Every dimension of failure attribution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// By JWT subject (carried by workers).
    pub subject: Table<String>,
    /// By target address (carried by workers).
    pub target: Table<String>,
    /// By live sessions of the subject on its worker at connect time (carried by workers).
    pub live: Table<u64>,
    /// By sessions in flight on its worker at connect time (carried by workers).
    pub in_flight: Table<u64>,
    /// By the interval it connected in (carried by workers).
    pub started: Table<u64>,
    /// By worker id (filled by the coordinator).
    pub worker: Table<String>,
}

impl Attribution {
    /// Records one session that ended (passed when `failure` is `None`).
    pub fn record(&mut self, tags: &SessionTags, failure: Option<&FailureCategory>) {
        let one = Outcomes::one(failure);
        self.carried(tags, &one);
    }

    /// Counts `outcomes` under `tags` in each carried dimension (subject, target, live,
    /// in-flight, started): sessions that had the same tags.
    pub fn carried(&mut self, tags: &SessionTags, outcomes: &Outcomes) {
        self.subject
            .add(tags.subject.as_ref(), outcomes, TABLE_KEYS);
        self.target.add(tags.target.as_ref(), outcomes, TABLE_KEYS);
        self.live
            .add(Some(&tags.live.min(MAX_LEVEL)), outcomes, TABLE_KEYS);
        self.in_flight
            .add(Some(&tags.in_flight.min(MAX_LEVEL)), outcomes, TABLE_KEYS);
        self.started
            .add(tags.started.as_ref(), outcomes, TABLE_KEYS);
    }

    /// Adds `other` into `self`, each table holding at most [`TABLE_KEYS`] values exactly.
    pub fn merge(&mut self, other: &Attribution) {
        self.subject.merge(&other.subject, TABLE_KEYS);
        self.target.merge(&other.target, TABLE_KEYS);
        self.live.merge(&other.live, TABLE_KEYS);
        self.in_flight.merge(&other.in_flight, TABLE_KEYS);
        self.started.merge(&other.started, TABLE_KEYS);
        self.worker.merge(&other.worker, TABLE_KEYS);
    }

    /// Whether it counts no session in any dimension.
    pub fn is_empty(&self) -> bool {
        self.subject.is_empty()
            && self.target.is_empty()
            && self.live.is_empty()
            && self.in_flight.is_empty()
            && self.started.is_empty()
            && self.worker.is_empty()
    }
}

/// Cuts a subject or target to [`VALUE_BYTES`] on a character boundary, marking the cut.
pub fn value(text: &str) -> String {
    crate::metrics::cut(text.to_owned(), VALUE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_count_every_session_and_cap_their_values() {
        let mut t: Table<String> = Table::default();
        let fail = FailureCategory::FactoryInitFailed;
        for i in 0..10 {
            let o = Outcomes::one((i % 2 == 0).then_some(&fail));
            t.add(Some(&format!("u{}", i % 5)), &o, 3);
        }
        assert_eq!(t.values.len(), 3);
        assert_eq!(t.total().sessions(), 10, "nothing is dropped");
        assert_eq!(t.untracked.sessions(), 4, "u3 and u4 are beyond the cap");
        // A value tracked once stays tracked; merging respects the cap too.
        let mut m: Table<String> = Table::default();
        m.merge(&t, 2);
        assert_eq!(m.values.len(), 2);
        assert_eq!(m.total(), t.total());
        assert_eq!(m.total().failed_with(&fail), 5);
    }

    #[test]
    fn levels_above_the_bound_are_recorded_at_it() {
        let mut a = Attribution::default();
        let tags = SessionTags {
            subject: Some("s".into()),
            target: None,
            live: 5000,
            in_flight: 7,
            started: Some(3),
        };
        a.record(&tags, None);
        assert_eq!(
            a.live.values.keys().copied().collect::<Vec<_>>(),
            [MAX_LEVEL]
        );
        assert_eq!(a.target.untracked.passed, 1);
        assert!(value(&"é".repeat(200)).len() <= VALUE_BYTES + '…'.len_utf8());
    }
}
