//! Findings: why sessions failed, stated only as clean separations the merged attribution
//! supports ("every", "only", "none"), each with the figures behind it and the chance that
//! failures spread at random would have looked that clean. A category whose failures the
//! data cannot tell apart from a random spread, with enough of them to tell, is said to be
//! spread; with too few sessions nothing is said.
//!
//! Per failure category, in this order:
//! - **exact** kinds, which say which sessions failed: `subjects` (every session of these
//!   subjects failed and none of the others'), `subject_concurrency` (every session whose
//!   subject already had K or more live sessions on its worker failed, none below);
//! - when no exact kind holds, **one-sided** kinds, which say where failures were confined:
//!   `worker`, `target` (only from one), `window` (only between two times), `load` (only at or
//!   above a number of sessions in flight). Once an exact kind says which sessions failed, any
//!   pattern in another dimension follows from it and is not stated again;
//! - otherwise `spread`, when no value of any dimension stands out.
//!
//! A finding is stated only if its chance is below [`ALPHA`]; a value beyond a table's cap
//! (untracked) that holds failures of the category makes the kinds that would need it say
//! nothing, so every figure stated is exact.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::odds;
use super::{IntervalReport, WorkerReport};
use crate::attribution::{Attribution, MAX_LEVEL, Outcomes, Table};
use crate::metrics::Snapshot;
use crate::words::FailureCategory;

/// A finding is stated only when a random spread of the same failures would look at least
/// as clean with a probability below this (one in a million).
pub const ALPHA: f64 = 1e-6;
/// A stretch of intervals inside a window without any failure splits the window (it is two
/// bursts, not one window) when so long a clean stretch had a chance below this at the
/// window's own failure rate.
pub const GAP_ALPHA: f64 = 1e-3;
/// A category is said to be spread evenly only if no value of any dimension stands out at
/// this level (Bonferroni over every value tested).
pub const SPREAD_ALPHA: f64 = 1e-3;
/// The fewest failures (and the fewest sessions not failed so) a category needs before it
/// can be said to be spread evenly: with fewer nothing could stand out.
pub const SPREAD_MIN: u64 = 10;
/// Subjects listed by name in one `subjects` finding (`subject_count` says how many there are).
pub const LISTED_SUBJECTS: usize = 100;
/// Values of each dimension `report.json`'s `attribution` lists (those with most failures).
pub const TOP_VALUES: usize = 20;

/// A numeric pattern shared by the subjects of a `subjects` finding and by none of the others
/// seen: the same prefix and a decimal suffix in a range, or with given remainders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Pattern {
    /// Suffixes `min..=max`: every subject seen in the range is one of them, none outside.
    Range {
        /// What every subject seen starts with.
        prefix: String,
        /// Smallest suffix.
        min: u64,
        /// Largest suffix.
        max: u64,
    },
    /// Suffixes whose remainder modulo `modulus` is one of `remainders`, and no other subject
    /// seen has one.
    Remainder {
        /// What every subject seen starts with.
        prefix: String,
        /// The modulus.
        modulus: u64,
        /// The remainders.
        remainders: Vec<u64>,
    },
}

/// Failed sessions among the sessions of a band of in-flight counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Band {
    /// Lowest count of the band.
    pub from: u64,
    /// Highest count of the band.
    pub to: u64,
    /// Sessions that began with that many in flight.
    pub sessions: u64,
    /// Of those, failed with the category.
    pub failed: u64,
}

/// How a `load` finding counted the sessions in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadMeasure {
    /// Across the fleet, by the interval a session connected in: the most sessions in flight
    /// (every worker's, sampled at each interval's end) at that interval's start or end. The
    /// same whatever the number of workers; judged with intervals as the units.
    Fleet,
    /// Per session, on its worker: the sessions in flight on its worker (share) when it
    /// connected. Exact per session, but on several workers each sees only its own part.
    Worker,
}

/// A dimension a `spread` finding looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Looked {
    /// `subject`, `target`, `live`, `in_flight`, `started` or `worker`.
    pub dimension: String,
    /// Its values that had sessions.
    pub values: u64,
}

/// What a finding says, with its own figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// Every session of these subjects failed with the category, and no session of the others.
    Subjects {
        /// The subjects (at most [`LISTED_SUBJECTS`], in order).
        subjects: Vec<String>,
        /// How many subjects these are.
        subject_count: u64,
        /// Their sessions (every one failed).
        subject_sessions: u64,
        /// Other subjects seen, none of whose sessions failed so.
        other_subjects: u64,
        /// Their sessions (with those of subjects beyond the tracking cap).
        other_sessions: u64,
        /// What the subjects' ids share and no other's does, if anything simple.
        pattern: Option<Pattern>,
    },
    /// Every session whose subject already had `min_live` or more live sessions on its worker
    /// when it connected failed with the category; none with fewer did: a per-user limit.
    SubjectConcurrency {
        /// The fewest live sessions of its subject a failed session met.
        min_live: u64,
        /// The most live sessions of its subject a session that did not fail so met.
        max_ok_live: u64,
        /// Sessions that met fewer than `min_live` (none failed so).
        sessions_below: u64,
        /// Whether each subject's sessions all ran on one worker (share), so that the live
        /// counts are the subjects' whole counts. When not, `min_live` is a count on one
        /// worker and the service's limit, counting every worker's sessions, may be higher.
        subjects_on_one_worker: bool,
    },
    /// Failures only from this worker.
    Worker {
        /// Its id.
        worker: String,
        /// Its name.
        name: String,
        /// Its sessions.
        worker_sessions: u64,
        /// Other workers (none of their sessions failed so).
        other_workers: u64,
        /// Their sessions.
        other_sessions: u64,
    },
    /// Failures only at this target address.
    Target {
        /// The address (`host:port`).
        target: String,
        /// Sessions that used it.
        target_sessions: u64,
        /// Other addresses (none of their sessions failed so).
        other_targets: u64,
        /// Their sessions (with those of addresses beyond the tracking cap).
        other_sessions: u64,
    },
    /// Failures only between `t1_ms` and `t2_ms`.
    Window {
        /// The first failure, ms since the run started.
        t1_ms: u64,
        /// The last failure, ms since the run started.
        t2_ms: u64,
        /// Start of the first connect interval with a failure, ms.
        window_start_ms: u64,
        /// End of the last connect interval with a failure, ms.
        window_end_ms: u64,
        /// Sessions that connected in those intervals.
        sessions_inside: u64,
        /// Sessions that connected in the others (none failed so).
        sessions_outside: u64,
    },
    /// Failures only at or above `min_in_flight` sessions in flight, none below (counted as
    /// `measure` says).
    Load {
        /// What was counted.
        measure: LoadMeasure,
        /// The fewest sessions in flight a failure met.
        min_in_flight: u64,
        /// Sessions that met fewer (none failed so).
        sessions_below: u64,
        /// Sessions that met that many or more.
        sessions_at_or_above: u64,
        /// Those, in up to three bands of in-flight counts.
        bands: Vec<Band>,
    },
    /// No value of any dimension stands out: the failures look random.
    Spread {
        /// Failed over sessions that passed or failed so.
        rate: f64,
        /// The dimensions looked at (with two values or more).
        dimensions: Vec<Looked>,
    },
}

/// One finding about one failure category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// The category.
    pub category: FailureCategory,
    /// What was found, and its figures (`kind` names it).
    #[serde(flatten)]
    pub kind: Kind,
    /// Sessions that failed with the category.
    pub failed: u64,
    /// Sessions that ended in the run (passed or failed).
    pub sessions: u64,
    /// The chance that the same number of failures, spread at random over the sessions that
    /// passed or failed so, would look at least this clean (for `spread`: that the most uneven
    /// value would look at least that uneven), corrected for the patterns tried. Stated only
    /// below [`ALPHA`] (`spread`: above [`SPREAD_ALPHA`]).
    pub chance: f64,
    /// In plain words.
    pub text: String,
}

/// One value of a dimension in `report.json`'s `attribution`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ValueReport {
    /// The value (a subject, an address, a count, an interval index, a worker id).
    pub value: String,
    /// Sessions that passed.
    pub passed: u64,
    /// Sessions that failed, by category.
    pub failed: BTreeMap<String, u64>,
}

/// One dimension in `report.json`'s `attribution`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DimensionReport {
    /// Distinct values counted exactly.
    pub distinct: u64,
    /// The [`TOP_VALUES`] values with most failed sessions (then most sessions), exact.
    pub top: Vec<ValueReport>,
    /// The other values counted exactly, summed (`value` empty).
    pub rest: ValueReport,
    /// Sessions whose value was beyond a tracking cap, summed (`value` empty).
    pub untracked: ValueReport,
}

/// Failure attribution as `report.json` carries it: per dimension, the top values and the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttributionReport {
    /// By JWT subject.
    pub subject: DimensionReport,
    /// By target address.
    pub target: DimensionReport,
    /// By live sessions the subject already had on its worker at connect time.
    pub live: DimensionReport,
    /// By sessions in flight on the worker at connect time.
    pub in_flight: DimensionReport,
    /// By the interval the session connected in (interval `i` starts at `i x interval`).
    #[serde(default)]
    pub started: DimensionReport,
    /// By worker id.
    pub worker: DimensionReport,
}

fn value_report(value: String, o: &Outcomes) -> ValueReport {
    ValueReport {
        value,
        passed: o.passed,
        failed: o.failed.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
    }
}

fn dimension_report<K: Ord + Clone + ToString>(t: &Table<K>) -> DimensionReport {
    let mut rows: Vec<(&K, &Outcomes)> = t.values.iter().collect();
    rows.sort_by(|a, b| {
        b.1.failed_total()
            .cmp(&a.1.failed_total())
            .then_with(|| b.1.sessions().cmp(&a.1.sessions()))
            .then_with(|| a.0.cmp(b.0))
    });
    let mut rest = Outcomes::default();
    for (_, o) in rows.iter().skip(TOP_VALUES) {
        rest.add(o);
    }
    DimensionReport {
        distinct: t.values.len() as u64,
        top: rows
            .iter()
            .take(TOP_VALUES)
            .map(|(k, o)| value_report(k.to_string(), o))
            .collect(),
        rest: value_report(String::new(), &rest),
        untracked: value_report(String::new(), &t.untracked),
    }
}

impl AttributionReport {
    /// The report form of `a`.
    pub fn of(a: &Attribution) -> AttributionReport {
        AttributionReport {
            subject: dimension_report(&a.subject),
            target: dimension_report(&a.target),
            live: dimension_report(&a.live),
            in_flight: dimension_report(&a.in_flight),
            started: dimension_report(&a.started),
            worker: dimension_report(&a.worker),
        }
    }
}

/// One value of a dimension, as a category sees it.
#[derive(Debug, Clone, Copy)]
struct Cell {
    /// Sessions (passed or failed with any category).
    all: u64,
    /// Failed with the category.
    failed: u64,
    /// Passed or failed with the category: the sessions that could have failed so.
    at_risk: u64,
}

impl Cell {
    fn of(o: &Outcomes, c: &FailureCategory) -> Cell {
        let failed = o.failed_with(c);
        Cell {
            all: o.sessions(),
            failed,
            at_risk: o.passed.saturating_add(failed),
        }
    }
}

/// A dimension's tracked values (with sessions) and its untracked ones, for one category.
struct Column<K> {
    cells: Vec<(K, Cell)>,
    untracked: Cell,
}

impl<K: Ord + Clone> Column<K> {
    fn of(t: &Table<K>, c: &FailureCategory) -> Column<K> {
        Column {
            cells: t
                .values
                .iter()
                .map(|(k, o)| (k.clone(), Cell::of(o, c)))
                .filter(|(_, cell)| cell.all > 0)
                .collect(),
            untracked: Cell::of(&t.untracked, c),
        }
    }

    /// Values with sessions, the untracked ones counting as one.
    fn values(&self) -> u64 {
        self.cells.len() as u64 + u64::from(self.untracked.all > 0)
    }

    fn at_risk(&self) -> u64 {
        self.cells.iter().fold(self.untracked.at_risk, |a, (_, c)| {
            a.saturating_add(c.at_risk)
        })
    }

    fn all(&self) -> u64 {
        self.cells
            .iter()
            .fold(self.untracked.all, |a, (_, c)| a.saturating_add(c.all))
    }
}

/// What findings need besides the merged snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The workers (for their names).
    pub workers: &'a [WorkerReport],
    /// The snapshot interval, ms.
    pub interval_ms: u64,
    /// The per-interval series (for the fleet's sessions in flight).
    pub intervals: &'a [IntervalReport],
    /// Whether every subject's sessions ran on one share (one worker) alone.
    pub subjects_on_one_share: bool,
}

/// Every finding `total` supports, most frequent category first.
pub fn find(total: &Snapshot, cx: Context<'_>) -> Vec<Finding> {
    let a = &total.attribution;
    let sessions = total
        .counters
        .sessions_passed
        .saturating_add(total.counters.sessions_failed);
    let mut out = Vec::new();
    for (category, failed) in total.failures_by_category() {
        // Attribution covers every session that ended; a category it does not hold (a report
        // from before attribution) says nothing.
        if a.subject.total().failed_with(&category) != failed || failed == 0 {
            continue;
        }
        let mut found: Vec<(Kind, f64)> = Vec::new();
        found.extend(subjects(a, &category));
        found.extend(subject_concurrency(a, &category, cx.subjects_on_one_share));
        if found.is_empty() {
            found.extend(single(&a.worker, &category).map(|(k, v, o, n, chance)| {
                let name = cx
                    .workers
                    .iter()
                    .find(|w| w.id == k)
                    .map_or_else(|| k.clone(), |w| w.name.clone());
                (
                    Kind::Worker {
                        worker: k,
                        name,
                        worker_sessions: v,
                        other_workers: o,
                        other_sessions: n,
                    },
                    chance,
                )
            }));
            // A session that could not resolve its target has a name but no address: its target
            // depends on how it failed, so it says nothing about where `dns` failures happen.
            let target = (category != FailureCategory::Dns)
                .then(|| single(&a.target, &category))
                .flatten();
            found.extend(target.map(|(k, v, o, n, chance)| {
                (
                    Kind::Target {
                        target: k,
                        target_sessions: v,
                        other_targets: o,
                        other_sessions: n,
                    },
                    chance,
                )
            }));
            // A worker or target every session of which failed, and nothing elsewhere, is the
            // whole story: when its sessions ran (failing fast, they cycle sooner) and how busy
            // the fleet was then are its consequences, not findings of their own.
            let whole = found.iter().any(|(k, _)| match k {
                Kind::Worker {
                    worker_sessions: v, ..
                }
                | Kind::Target {
                    target_sessions: v, ..
                } => *v == failed,
                _ => false,
            });
            if !whole {
                found.extend(window(total, &category, cx.interval_ms));
                found.extend(
                    fleet(a, (cx.intervals, cx.interval_ms), &category)
                        .or_else(|| on_worker(a, &category)),
                );
            }
        }
        if found.is_empty() {
            found.extend(spread(a, &category));
        }
        for (kind, chance) in found {
            let text = words(&category, &kind, failed);
            out.push(Finding {
                category: category.clone(),
                kind,
                failed,
                sessions,
                chance,
                text,
            });
        }
    }
    out
}

/// `subjects`: every tracked subject all failed or none; none of the untracked failed so.
fn subjects(a: &Attribution, c: &FailureCategory) -> Option<(Kind, f64)> {
    let col = Column::of(&a.subject, c);
    if col.untracked.failed > 0 {
        return None;
    }
    let (mut failing, mut failing_sessions) = (Vec::new(), 0u64);
    let (mut others, mut other_sessions) = (0u64, col.untracked.all);
    for (k, cell) in &col.cells {
        if cell.failed == 0 {
            others += 1;
            other_sessions = other_sessions.saturating_add(cell.all);
        } else if cell.failed == cell.all {
            failing.push(k.clone());
            failing_sessions = failing_sessions.saturating_add(cell.all);
        } else {
            return None;
        }
    }
    if failing.is_empty() || other_sessions == 0 {
        return None;
    }
    let f: u64 = col.cells.iter().map(|(_, c)| c.failed).sum();
    let p = f as f64 / col.at_risk().max(1) as f64;
    // Untracked subjects' sessions are left out: their factors are at most 1.
    let chance = odds::all_or_none(col.cells.iter().map(|(_, c)| c.at_risk), p);
    if chance >= ALPHA {
        return None;
    }
    let seen: Vec<&String> = col.cells.iter().map(|(k, _)| k).collect();
    let pattern = pattern(&failing, &seen);
    Some((
        Kind::Subjects {
            subject_count: failing.len() as u64,
            subjects: failing.into_iter().take(LISTED_SUBJECTS).collect(),
            subject_sessions: failing_sessions,
            other_subjects: others,
            other_sessions,
            pattern,
        },
        chance,
    ))
}

/// Splits `user-17` into `("user-", 17)`.
fn suffixed(s: &str) -> Option<(&str, u64)> {
    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 18 {
        return None;
    }
    let (prefix, n) = s.split_at(s.len() - digits);
    Some((prefix, n.parse().ok()?))
}

/// The simplest rule on numeric suffixes that holds for every one of `failing` and for none of
/// the other subjects `seen`: a range, else remainders of the smallest modulus up to 64.
fn pattern(failing: &[String], seen: &[&String]) -> Option<Pattern> {
    if failing.len() < 2 {
        return None;
    }
    let mut prefix = None;
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for s in seen {
        let (p, n) = suffixed(s)?;
        if *prefix.get_or_insert(p) != p {
            return None;
        }
        if failing.contains(s) {
            inside.push(n);
        } else {
            outside.push(n);
        }
    }
    let prefix = prefix?.to_owned();
    let (min, max) = (*inside.iter().min()?, *inside.iter().max()?);
    if !outside.iter().any(|n| (min..=max).contains(n)) {
        return Some(Pattern::Range { prefix, min, max });
    }
    for modulus in 2..=64u64 {
        let mut remainders: Vec<u64> = inside.iter().map(|n| n % modulus).collect();
        remainders.sort_unstable();
        remainders.dedup();
        if remainders.len() as u64 * 2 > modulus {
            continue;
        }
        if !outside.iter().any(|n| remainders.contains(&(n % modulus))) {
            return Some(Pattern::Remainder {
                prefix,
                modulus,
                remainders,
            });
        }
    }
    None
}

/// `subject_concurrency`: every session at or above the lowest failing live count failed.
fn subject_concurrency(
    a: &Attribution,
    c: &FailureCategory,
    one_share: bool,
) -> Option<(Kind, f64)> {
    let col = Column::of(&a.live, c);
    if col.untracked.all > 0 {
        return None;
    }
    let k = col.cells.iter().find(|(_, c)| c.failed > 0)?.0;
    if k == 0 || k >= MAX_LEVEL {
        return None;
    }
    let mut below = 0u64;
    let mut max_ok = 0u64;
    for (level, cell) in &col.cells {
        if *level < k {
            below = below.saturating_add(cell.all);
            if cell.all > cell.failed {
                max_ok = *level;
            }
        } else if cell.failed != cell.all {
            return None;
        }
    }
    if below == 0 {
        return None;
    }
    let f: u64 = col.cells.iter().map(|(_, c)| c.failed).sum();
    // The failures are exactly the sessions at or above one of the levels seen.
    let chance = col.values() as f64 * odds::exactly(f, col.at_risk());
    (chance < ALPHA).then_some((
        Kind::SubjectConcurrency {
            min_live: k,
            max_ok_live: max_ok,
            sessions_below: below,
            subjects_on_one_worker: one_share,
        },
        chance,
    ))
}

/// `worker` / `target`: every failure at one tracked value, none at the others (and none
/// untracked). Returns the value, its sessions, the other values, their sessions and the
/// chance.
fn single(t: &Table<String>, c: &FailureCategory) -> Option<(String, u64, u64, u64, f64)> {
    let col = Column::of(t, c);
    if col.untracked.failed > 0 {
        return None;
    }
    let mut failing = col.cells.iter().filter(|(_, cell)| cell.failed > 0);
    let (key, cell) = failing.next()?;
    if failing.next().is_some() {
        return None;
    }
    let others = col.values() - 1;
    let other_sessions = col.all().saturating_sub(cell.all);
    if other_sessions == 0 {
        return None;
    }
    let chance = col.values() as f64 * odds::all_inside(cell.at_risk, cell.failed, col.at_risk());
    (chance < ALPHA).then(|| (key.clone(), cell.all, others, other_sessions, chance))
}

/// `window`: failures among the sessions that connected in one stretch of intervals (no
/// implausibly clean gap inside), none among those that connected outside it.
fn window(total: &Snapshot, c: &FailureCategory, interval_ms: u64) -> Option<(Kind, f64)> {
    let col = Column::of(&total.attribution.started, c);
    if col.untracked.all > 0 {
        return None;
    }
    let first = col.cells.iter().find(|(_, c)| c.failed > 0)?.0;
    let last = col.cells.iter().rev().find(|(_, c)| c.failed > 0)?.0;
    let (mut inside, mut outside) = (Cell::of(&Outcomes::default(), c), 0u64);
    for (i, cell) in &col.cells {
        if (first..=last).contains(i) {
            inside.all = inside.all.saturating_add(cell.all);
            inside.failed = inside.failed.saturating_add(cell.failed);
            inside.at_risk = inside.at_risk.saturating_add(cell.at_risk);
        } else {
            outside = outside.saturating_add(cell.all);
        }
    }
    if outside == 0 {
        return None;
    }
    // A clean stretch inside that the window's own rate makes implausible: two bursts.
    let rate = inside.failed as f64 / inside.at_risk.max(1) as f64;
    let mut gap = 0u64;
    for (_, cell) in col.cells.iter().filter(|(i, _)| (first..=last).contains(i)) {
        if cell.failed == 0 {
            gap = gap.saturating_add(cell.at_risk);
            if (1.0 - rate).powf(gap as f64) < GAP_ALPHA {
                return None;
            }
        } else {
            gap = 0;
        }
    }
    let span = col.cells.last()?.0 - col.cells.first()?.0 + 1;
    let tried = (span * (span + 1) / 2) as f64;
    let chance = tried * odds::all_inside(inside.at_risk, inside.failed, col.at_risk());
    if chance >= ALPHA {
        return None;
    }
    let times = total.failures.iter().filter(|(k, _)| k.category == *c);
    let t1 = times.clone().map(|(_, s)| s.first_ms).min()?;
    let t2 = times.map(|(_, s)| s.last_ms).max()?;
    Some((
        Kind::Window {
            t1_ms: t1,
            t2_ms: t2,
            window_start_ms: first.saturating_mul(interval_ms),
            window_end_ms: (last + 1).saturating_mul(interval_ms),
            sessions_inside: inside.all,
            sessions_outside: outside,
        },
        chance,
    ))
}

/// The fleet's sessions in flight when sessions connected, as a column of levels: the sessions
/// that connected in interval `j` under the most sessions in flight at its start or end (the
/// fleet's count at the ends of intervals `j - 1` and `j`). Also, per level, the connect
/// intervals and those with a failure of the category.
fn fleet_load(
    a: &Attribution,
    (intervals, interval_ms): (&[IntervalReport], u64),
    c: &FailureCategory,
) -> (Column<u64>, Vec<(u64, u64, u64)>) {
    // The series' point holding interval `j` (a long run's points cover several intervals:
    // then the most in flight at any of their ends).
    let active = |j: u64| {
        let start = j.saturating_mul(interval_ms);
        intervals
            .get(intervals.partition_point(|i| i.at_ms <= start))
            .map_or(0, |i| i.active_vus)
    };
    let mut levels: BTreeMap<u64, (Cell, u64, u64)> = BTreeMap::new();
    let col = Column::of(&a.started, c);
    for (j, cell) in &col.cells {
        let level = active(*j).max(j.checked_sub(1).map_or(0, active));
        let (mine, n, failing) = levels.entry(level).or_insert((
            Cell {
                all: 0,
                failed: 0,
                at_risk: 0,
            },
            0,
            0,
        ));
        mine.all = mine.all.saturating_add(cell.all);
        mine.failed = mine.failed.saturating_add(cell.failed);
        mine.at_risk = mine.at_risk.saturating_add(cell.at_risk);
        *n += 1;
        *failing += u64::from(cell.failed > 0);
    }
    let units = levels.iter().map(|(l, (_, n, f))| (*l, *n, *f)).collect();
    let column = Column {
        cells: levels
            .into_iter()
            .map(|(l, (cell, _, _))| (l, cell))
            .collect(),
        untracked: col.untracked,
    };
    (column, units)
}

/// `load` across the fleet: judged with intervals as the units (a level is an interval's, so
/// the chance is that of the failing intervals all falling at or above it).
fn fleet(
    a: &Attribution,
    (intervals, interval_ms): (&[IntervalReport], u64),
    c: &FailureCategory,
) -> Option<(Kind, f64)> {
    if intervals.is_empty() {
        return None;
    }
    let (col, units) = fleet_load(a, (intervals, interval_ms), c);
    load(&col, LoadMeasure::Fleet, |x| {
        let count = |keep: &dyn Fn(&(u64, u64, u64)) -> bool,
                     pick: &dyn Fn(&(u64, u64, u64)) -> u64| {
            units.iter().filter(|u| keep(u)).map(pick).sum::<u64>()
        };
        let all = count(&|_| true, &|u| u.1);
        let above = count(&|u| u.0 >= x, &|u| u.1);
        let failing = count(&|_| true, &|u| u.2);
        units.len() as f64 * odds::all_inside(above, failing, all)
    })
}

/// `load` on each session's worker: judged with sessions as the units.
fn on_worker(a: &Attribution, c: &FailureCategory) -> Option<(Kind, f64)> {
    let col = Column::of(&a.in_flight, c);
    load(&col, LoadMeasure::Worker, |x| {
        let above: Vec<&(u64, Cell)> = col.cells.iter().filter(|(l, _)| *l >= x).collect();
        let at_risk: u64 = above.iter().map(|(_, c)| c.at_risk).sum();
        let f: u64 = above.iter().map(|(_, c)| c.failed).sum();
        col.values() as f64 * odds::all_inside(at_risk, f, col.at_risk())
    })
}

/// `load`: no failure below some number of sessions in flight, in `col` (levels in order);
/// `chance` of the separation at a level.
fn load(
    col: &Column<u64>,
    measure: LoadMeasure,
    chance: impl Fn(u64) -> f64,
) -> Option<(Kind, f64)> {
    if col.untracked.all > 0 {
        return None;
    }
    let x = col.cells.iter().find(|(_, c)| c.failed > 0)?.0;
    let below: u64 = col
        .cells
        .iter()
        .filter(|(l, _)| *l < x)
        .map(|(_, c)| c.all)
        .sum();
    if below == 0 {
        return None;
    }
    let chance = chance(x);
    if chance >= ALPHA {
        return None;
    }
    let above: Vec<&(u64, Cell)> = col.cells.iter().filter(|(l, _)| *l >= x).collect();
    // Up to three bands of about equal sessions.
    let all: u64 = above.iter().map(|(_, c)| c.all).sum();
    let mut bands: Vec<Band> = Vec::new();
    let mut acc = 0u64;
    for (level, cell) in &above {
        let band_no = (acc.saturating_mul(3) / all.max(1)).min(2);
        acc = acc.saturating_add(cell.all);
        let same = bands.len() as u64 == band_no + 1;
        match bands.last_mut() {
            Some(b) if same => {
                b.to = *level;
                b.sessions += cell.all;
                b.failed += cell.failed;
            }
            _ => bands.push(Band {
                from: *level,
                to: *level,
                sessions: cell.all,
                failed: cell.failed,
            }),
        }
    }
    Some((
        Kind::Load {
            measure,
            min_in_flight: x,
            sessions_below: below,
            sessions_at_or_above: all,
            bands,
        },
        chance,
    ))
}

/// `spread`: enough failures, and no value of any dimension with two values or more stands
/// out (two-sided binomial test of each value's failures at the category's rate).
fn spread(a: &Attribution, c: &FailureCategory) -> Option<(Kind, f64)> {
    fn column<K: Ord + Clone>(t: &Table<K>, c: &FailureCategory) -> Vec<Cell> {
        let col = Column::of(t, c);
        let mut cells: Vec<Cell> = col.cells.into_iter().map(|(_, c)| c).collect();
        if col.untracked.all > 0 {
            cells.push(col.untracked);
        }
        cells.retain(|c| c.at_risk > 0);
        cells
    }
    let dims: [(&str, Vec<Cell>); 6] = [
        ("subject", column(&a.subject, c)),
        ("target", column(&a.target, c)),
        ("live", column(&a.live, c)),
        ("in_flight", column(&a.in_flight, c)),
        ("started", column(&a.started, c)),
        ("worker", column(&a.worker, c)),
    ];
    let cells = &dims[0].1;
    let f: u64 = cells.iter().map(|c| c.failed).sum();
    let n: u64 = cells.iter().map(|c| c.at_risk).sum();
    if f < SPREAD_MIN || n.saturating_sub(f) < SPREAD_MIN {
        return None;
    }
    let p = f as f64 / n as f64;
    let looked: Vec<&(&str, Vec<Cell>)> = dims.iter().filter(|(_, v)| v.len() >= 2).collect();
    if looked.is_empty() {
        return None;
    }
    let tests: usize = looked.iter().map(|(_, v)| v.len()).sum();
    let worst = looked
        .iter()
        .flat_map(|(_, v)| v.iter())
        .map(|cell| odds::binomial_two_sided(cell.at_risk, cell.failed, p))
        .fold(1.0f64, f64::min);
    let chance = (worst * tests as f64).min(1.0);
    (chance >= SPREAD_ALPHA).then(|| {
        (
            Kind::Spread {
                rate: p,
                dimensions: looked
                    .iter()
                    .map(|(d, v)| Looked {
                        dimension: (*d).to_owned(),
                        values: v.len() as u64,
                    })
                    .collect(),
            },
            chance,
        )
    })
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn secs(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

/// The finding in plain words.
fn words(c: &FailureCategory, kind: &Kind, failed: u64) -> String {
    match kind {
        Kind::Subjects {
            subjects,
            subject_count,
            subject_sessions,
            other_subjects,
            other_sessions,
            pattern,
        } => {
            let mut names = subjects.join(", ");
            if *subject_count > subjects.len() as u64 {
                names.push_str(&format!(
                    " and {} more",
                    subject_count - subjects.len() as u64
                ));
            }
            let rule = match pattern {
                Some(Pattern::Range { prefix, min, max }) => format!(
                    "; their ids are exactly the subjects seen from {prefix}{min} to {prefix}{max}"
                ),
                Some(Pattern::Remainder {
                    prefix,
                    modulus,
                    remainders,
                }) => format!(
                    "; their ids are exactly the subjects seen named {prefix}N with N mod {modulus} in {{{}}}",
                    remainders
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            };
            format!(
                "{c}: every session of {} failed ({}) and no session of the {} did ({}): {names}{rule}",
                if *subject_count == 1 {
                    "this subject".to_owned()
                } else {
                    format!("these {subject_count} subjects")
                },
                plural(*subject_sessions, "session", "sessions"),
                plural(*other_subjects, "other subject", "other subjects"),
                plural(*other_sessions, "session", "sessions"),
            )
        }
        Kind::SubjectConcurrency {
            min_live,
            max_ok_live,
            sessions_below,
            subjects_on_one_worker,
        } => format!(
            "{c}: every session whose subject already had {min_live} or more live sessions on its worker when it connected failed ({}), and none of the {} with fewer did (the most a session that did not fail met: {max_ok_live}): {}",
            plural(failed, "session", "sessions"),
            plural(*sessions_below, "session", "sessions"),
            if *subjects_on_one_worker {
                format!(
                    "a per-user limit of {min_live} concurrent {}",
                    if *min_live == 1 {
                        "session"
                    } else {
                        "sessions"
                    }
                )
            } else {
                format!(
                    "a per-user limit, met at {min_live} concurrent sessions of a subject on one worker (its sessions ran on several workers: the service, counting them all, may allow more)"
                )
            },
        ),
        Kind::Worker {
            worker,
            name,
            worker_sessions,
            other_workers,
            other_sessions,
        } => format!(
            "{c}: only from worker {name} ({worker}): {failed} of its {worker_sessions} sessions; none of the {} on the {}",
            plural(*other_sessions, "session", "sessions"),
            plural(*other_workers, "other worker", "other workers"),
        ),
        Kind::Target {
            target,
            target_sessions,
            other_targets,
            other_sessions,
        } => format!(
            "{c}: only at target {target}: {failed} of its {target_sessions} sessions; none of the {} at the {}",
            plural(*other_sessions, "session", "sessions"),
            plural(*other_targets, "other target", "other targets"),
        ),
        Kind::Window {
            t1_ms,
            t2_ms,
            window_start_ms,
            window_end_ms,
            sessions_inside,
            sessions_outside,
        } => format!(
            "{c}: only between {} and {} into the run: {failed} of the {sessions_inside} sessions that connected from {} to {}; none of the {} that connected outside",
            secs(*t1_ms),
            secs(*t2_ms),
            secs(*window_start_ms),
            secs(*window_end_ms),
            plural(*sessions_outside, "session", "sessions"),
        ),
        Kind::Load {
            measure,
            min_in_flight,
            sessions_below,
            sessions_at_or_above,
            bands,
        } => format!(
            "{c}: the failure rate rises with load: none of the {} {} fewer than {min_in_flight} sessions in flight {} failed; from {min_in_flight} on, {failed} of {sessions_at_or_above} did ({})",
            plural(*sessions_below, "session", "sessions"),
            match measure {
                LoadMeasure::Fleet => "that connected in intervals with",
                LoadMeasure::Worker => "that began with",
            },
            match measure {
                LoadMeasure::Fleet => "across the fleet",
                LoadMeasure::Worker => "on their worker",
            },
            bands
                .iter()
                .map(|b| {
                    let range = if b.from == b.to {
                        b.from.to_string()
                    } else {
                        format!("{}-{}", b.from, b.to)
                    };
                    format!("{range} in flight: {} of {} failed", b.failed, b.sessions)
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Kind::Spread { rate, dimensions } => format!(
            "{c}: spread evenly (random): {failed} failed sessions ({} of those that passed or failed so), and no {} stands out",
            percent(*rate),
            dimensions
                .iter()
                .map(|d| format!("{} (of {})", dimension_word(&d.dimension), d.values))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}

/// A rate as a percentage with one decimal.
fn percent(f: f64) -> String {
    format!("{:.1} %", 100.0 * f)
}

fn dimension_word(d: &str) -> &str {
    match d {
        "live" => "live count of the subject",
        "in_flight" => "count of sessions in flight",
        "started" => "interval connected in",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::attribution::SessionTags;
    use crate::metrics::{FailureKey, FailureStats};

    /// One session as a test describes it.
    #[derive(Clone)]
    struct S {
        subject: String,
        target: &'static str,
        live: u64,
        in_flight: u64,
        worker: &'static str,
        interval: u64,
        failed: Option<FailureCategory>,
    }

    fn s(subject: impl Into<String>) -> S {
        S {
            subject: subject.into(),
            target: "127.0.0.1:8080",
            live: 0,
            in_flight: 0,
            worker: "w1",
            interval: 0,
            failed: None,
        }
    }

    /// The merged snapshot of `sessions`, as workers and the coordinator record it.
    fn snapshot(sessions: &[S], interval_ms: u64) -> Snapshot {
        let mut total = Snapshot::default();
        for x in sessions {
            let tags = SessionTags {
                subject: Some(x.subject.clone()),
                target: Some(x.target.to_owned()),
                live: x.live,
                in_flight: x.in_flight,
                started: Some(x.interval),
            };
            let mut one = Snapshot::default();
            one.attribution.record(&tags, x.failed.as_ref());
            let o = Outcomes::one(x.failed.as_ref());
            one.attribution
                .worker
                .add(Some(&x.worker.to_owned()), &o, usize::MAX);
            one.counters.sessions_started = 1;
            match &x.failed {
                None => one.counters.sessions_passed = 1,
                Some(c) => {
                    one.counters.sessions_failed = 1;
                    let at = x.interval * interval_ms + interval_ms / 2;
                    one.failures.insert(
                        FailureKey {
                            category: c.clone(),
                            detail: String::new(),
                            scenario: "s".into(),
                            step: "ws_connect".into(),
                        },
                        FailureStats::one(at, "x".into()),
                    );
                }
            }
            total.merge(&one);
        }
        total
    }

    fn cx() -> Context<'static> {
        Context {
            workers: &[],
            interval_ms: 1000,
            intervals: &[],
            subjects_on_one_share: true,
        }
    }

    fn kinds(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .map(|f| match f.kind {
                Kind::Subjects { .. } => "subjects",
                Kind::SubjectConcurrency { .. } => "subject_concurrency",
                Kind::Worker { .. } => "worker",
                Kind::Target { .. } => "target",
                Kind::Window { .. } => "window",
                Kind::Load { .. } => "load",
                Kind::Spread { .. } => "spread",
            })
            .collect()
    }

    const FACTORY: FailureCategory = FailureCategory::FactoryInitFailed;

    /// A small deterministic random source.
    struct Lcg(u64);
    impl Lcg {
        fn unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn failing_subjects_are_listed_with_their_pattern() {
        let mut all = Vec::new();
        for round in 0..20 {
            for i in 0..10 {
                let mut x = s(format!("user-{i}"));
                x.interval = round / 4;
                x.worker = if i % 2 == 0 { "w1" } else { "w2" };
                x.failed = (i % 4 == 0).then_some(FACTORY);
                all.push(x);
            }
        }
        let found = find(&snapshot(&all, 1000), cx());
        assert_eq!(kinds(&found), ["subjects"], "{found:#?}");
        let Kind::Subjects {
            subjects,
            subject_sessions,
            other_subjects,
            other_sessions,
            pattern,
            ..
        } = &found[0].kind
        else {
            unreachable!()
        };
        assert_eq!(subjects, &["user-0", "user-4", "user-8"]);
        assert_eq!(
            (*subject_sessions, *other_subjects, *other_sessions),
            (60, 7, 140)
        );
        assert_eq!(
            pattern,
            &Some(Pattern::Remainder {
                prefix: "user-".into(),
                modulus: 4,
                remainders: vec![0]
            })
        );
        assert_eq!(found[0].failed, 60);
        assert!(found[0].chance < 1e-20, "{}", found[0].chance);
        // report.json carries it flat, `kind` beside the category, and reads it back.
        let json = serde_json::to_value(&found).unwrap();
        assert_eq!(json[0]["kind"], "subjects");
        assert_eq!(json[0]["category"], "factory_init_failed");
        assert_eq!(json[0]["pattern"]["rule"], "remainder");
        let back: Vec<Finding> = serde_json::from_value(json).unwrap();
        assert_eq!(back, found);
        assert!(
            found[0]
                .text
                .contains("every session of these 3 subjects failed (60 sessions)")
                && found[0].text.contains("N mod 4 in {0}"),
            "{}",
            found[0].text
        );
        // A range of suffixes is said as a range.
        let mut all = Vec::new();
        for _ in 0..10 {
            for i in 0..10 {
                let mut x = s(format!("u{i}"));
                x.failed = (3..=5).contains(&i).then_some(FACTORY);
                all.push(x);
            }
        }
        let found = find(&snapshot(&all, 1000), cx());
        assert!(
            matches!(
                &found[0].kind,
                Kind::Subjects {
                    pattern: Some(Pattern::Range { min: 3, max: 5, .. }),
                    ..
                }
            ),
            "{found:#?}"
        );
    }

    #[test]
    fn a_live_report_states_the_findings_so_far() {
        let mut all = Vec::new();
        for _ in 0..20 {
            for i in 0..10 {
                let mut x = s(format!("user-{i}"));
                x.failed = (i < 3).then_some(FACTORY);
                all.push(x);
            }
        }
        let total = snapshot(&all, 1000);
        let plan = crate::plan::Plan::from_text(
            "p.toml",
            "name = \"p\"\n[target]\nbase_url = \"http://127.0.0.1:9\"\n[load]\nvus = 1\niterations = 1\n[[scenarios]]\nname = \"s\"\nsteps = [ { sleep = { duration = \"1ms\" } } ]\n",
            &crate::plan::Overrides::default(),
        )
        .unwrap();
        let now = std::time::SystemTime::now();
        let run = crate::report::build::Run {
            id: "r",
            plan: &plan,
            plan_hash: "",
            started: now,
            now,
            total: &total,
            interval: std::time::Duration::from_secs(1),
        };
        let live = crate::report::build::live(
            run,
            crate::words::RunPhase::Running,
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(kinds(&live.findings), ["subjects"], "{:#?}", live.findings);
        assert!(
            live.findings[0].text.contains("user-0, user-1, user-2"),
            "{}",
            live.findings[0].text
        );
    }

    #[test]
    fn a_subject_beyond_the_cap_with_failures_is_never_listed_as_exact() {
        let mut all = Vec::new();
        for _ in 0..20 {
            for i in 0..10 {
                let mut x = s(format!("user-{i}"));
                x.failed = (i < 3).then_some(FACTORY);
                all.push(x);
            }
        }
        let mut snap = snapshot(&all, 1000);
        // The sessions of user-0 were counted as untracked (beyond a worker's cap).
        let gone = snap.attribution.subject.values.remove("user-0").unwrap();
        snap.attribution.subject.untracked.add(&gone);
        let found = find(&snap, cx());
        assert!(!kinds(&found).contains(&"subjects"), "{found:#?}");
    }

    #[test]
    fn a_per_user_limit_is_found_with_its_level() {
        let mut all = Vec::new();
        for round in 0..30u64 {
            for i in 0..2 {
                let mut x = s(format!("user-{i}"));
                x.live = round % 5;
                x.in_flight = 2 * (round % 5) + i;
                x.interval = round / 10;
                x.failed = (x.live >= 3).then_some(FACTORY);
                all.push(x);
            }
        }
        let found = find(&snapshot(&all, 1000), cx());
        assert_eq!(kinds(&found), ["subject_concurrency"], "{found:#?}");
        assert_eq!(
            found[0].kind,
            Kind::SubjectConcurrency {
                min_live: 3,
                max_ok_live: 2,
                sessions_below: 36,
                subjects_on_one_worker: true,
            }
        );
        assert!(
            found[0]
                .text
                .contains("a per-user limit of 3 concurrent sessions")
        );
        // Subjects whose sessions ran on several workers: the count is one worker's.
        let spread_over = Context {
            subjects_on_one_share: false,
            ..cx()
        };
        let found = find(&snapshot(&all, 1000), spread_over);
        assert!(
            found[0]
                .text
                .contains("on one worker (its sessions ran on several workers"),
            "{}",
            found[0].text
        );
        // One session at the limit that passed: not a clean separation, nothing said about
        // concurrency.
        all[7].failed = None;
        assert_eq!(all[7].live, 3);
        let found = find(&snapshot(&all, 1000), cx());
        assert!(
            !kinds(&found).contains(&"subject_concurrency"),
            "{found:#?}"
        );
    }

    #[test]
    fn one_worker_one_target_one_window() {
        let mut r = Lcg(7);
        let mut all = Vec::new();
        for i in 0..400u64 {
            let mut x = s(format!("user-{}", i % 20));
            x.worker = if i % 2 == 0 { "w1" } else { "w2" };
            x.interval = i / 40;
            x.failed = (x.worker == "w2" && r.unit() < 0.3).then_some(FACTORY);
            all.push(x);
        }
        let workers = [WorkerReport {
            id: "w2".into(),
            name: "second".into(),
            share: 0.5,
            sessions: 200,
            snapshots: 10,
            lost_at_ms: None,
            left_at_ms: None,
            in_flight_bound: None,
            handed_to: Vec::new(),
        }];
        let found = find(
            &snapshot(&all, 1000),
            Context {
                workers: &workers,
                interval_ms: 1000,
                intervals: &[],
                subjects_on_one_share: true,
            },
        );
        assert_eq!(kinds(&found), ["worker"], "{found:#?}");
        assert!(
            found[0].text.contains("only from worker second (w2)")
                && found[0]
                    .text
                    .contains("none of the 200 sessions on the 1 other worker"),
            "{}",
            found[0].text
        );

        for x in &mut all {
            x.target = if x.worker == "w2" {
                "10.0.0.2:443"
            } else {
                "10.0.0.1:443"
            };
            x.worker = "w1";
        }
        let found = find(&snapshot(&all, 1000), cx());
        assert_eq!(kinds(&found), ["target"], "{found:#?}");

        for (i, x) in all.iter_mut().enumerate() {
            x.target = "10.0.0.1:443";
            x.failed = (120..200).contains(&i).then_some(FACTORY);
        }
        let found = find(&snapshot(&all, 1000), cx());
        assert_eq!(kinds(&found), ["window"], "{found:#?}");
        assert_eq!(
            found[0].kind,
            Kind::Window {
                t1_ms: 3500,
                t2_ms: 4500,
                window_start_ms: 3000,
                window_end_ms: 5000,
                sessions_inside: 80,
                sessions_outside: 320
            }
        );
        // Two bursts far apart are not one window.
        for (i, x) in all.iter_mut().enumerate() {
            x.failed = ((40..80).contains(&i) || (320..360).contains(&i)).then_some(FACTORY);
        }
        let found = find(&snapshot(&all, 1000), cx());
        assert!(!kinds(&found).contains(&"window"), "{found:#?}");
    }

    #[test]
    fn load_beyond_a_level() {
        let mut r = Lcg(3);
        let mut all = Vec::new();
        for i in 0..300u64 {
            let mut x = s(format!("user-{}", i % 50));
            x.in_flight = i % 12;
            x.interval = i / 30;
            let rate = match x.in_flight {
                0..=5 => 0.0,
                6..=8 => 0.3,
                _ => 0.8,
            };
            x.failed = (r.unit() < rate).then_some(FailureCategory::Timeout);
            all.push(x);
        }
        let found = find(&snapshot(&all, 1000), cx());
        assert_eq!(kinds(&found), ["load"], "{found:#?}");
        let Kind::Load {
            min_in_flight,
            sessions_below,
            bands,
            ..
        } = &found[0].kind
        else {
            unreachable!()
        };
        assert_eq!((*min_in_flight, *sessions_below), (6, 150));
        assert!(bands.len() <= 3 && bands[0].from == 6 && bands.last().unwrap().to == 11);
        let rate = |b: &Band| b.failed as f64 / b.sessions as f64;
        assert!(rate(&bands[0]) < rate(bands.last().unwrap()), "{bands:?}");
    }

    #[test]
    fn load_across_the_fleet_per_interval() {
        // 2 sessions in flight for 10 intervals, 12 for 10, 2 for 10, 12 for 10: failures in
        // every interval at 12 but the first of each stretch. Two bursts: no window.
        let active: Vec<u64> = (0..40)
            .map(|i| if (i / 10) % 2 == 1 { 12 } else { 2 })
            .collect();
        let mut intervals = Vec::new();
        let mut all = Vec::new();
        for (i, a) in active.iter().enumerate() {
            let (passed, failed) = if *a == 12 && i % 10 != 0 {
                (2, 4)
            } else {
                (6, 0)
            };
            for k in 0..passed + failed {
                let mut x = s(format!("user-{}", k % 3));
                x.interval = i as u64;
                x.worker = ["w1", "w2"][k % 2];
                x.failed = (k >= passed).then_some(FailureCategory::Timeout);
                all.push(x);
            }
            intervals.push(IntervalReport {
                at_ms: 1000 * (i as u64 + 1),
                sessions: (passed + failed) as u64,
                passed: passed as u64,
                failed: failed as u64,
                failures: [("timeout".to_owned(), failed as u64)]
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                latency: BTreeMap::new(),
                active_vus: *a,
                per_worker: BTreeMap::new(),
            });
        }
        let found = |intervals: &[IntervalReport]| {
            let cx = Context {
                workers: &[],
                interval_ms: 1000,
                intervals,
                subjects_on_one_share: true,
            };
            find(&snapshot(&all, 1000), cx)
        };
        let f = found(&intervals);
        assert_eq!(kinds(&f), ["load"], "{f:#?}");
        // The intervals that start or end at 12 count at 12: the 20 of the stretches and the
        // one after the first (none failed there).
        assert_eq!(
            f[0].kind,
            Kind::Load {
                measure: LoadMeasure::Fleet,
                min_in_flight: 12,
                sessions_below: 19 * 6,
                sessions_at_or_above: 21 * 6,
                bands: vec![Band {
                    from: 12,
                    to: 12,
                    sessions: 21 * 6,
                    failed: 18 * 4
                }],
            }
        );
        assert!(f[0].text.contains("across the fleet"), "{}", f[0].text);
        // Eight intervals are too few to tell load from chance, however many sessions each
        // holds: the units are intervals.
        let f = found(&intervals[..8]);
        assert!(!kinds(&f).contains(&"load"), "{f:#?}");
    }

    /// An evenly spread fault gives `spread` or nothing, never a pattern: 300 different draws
    /// of 20 % failures over subjects, workers, targets, intervals and concurrency.
    #[test]
    fn noise_is_never_a_pattern() {
        let mut spread_found = 0;
        for seed in 0..300u64 {
            let mut r = Lcg(seed);
            let mut all = Vec::new();
            for i in 0..200u64 {
                let mut x = s(format!("user-{}", i % 10));
                x.worker = ["w1", "w2"][(i % 2) as usize];
                x.target = ["a:1", "b:1", "c:1"][(i % 3) as usize];
                x.interval = i / 25;
                x.live = (i / 7) % 3;
                x.in_flight = (i / 3) % 9;
                x.failed = (r.unit() < 0.2).then_some(FACTORY);
                all.push(x);
            }
            let found = find(&snapshot(&all, 1000), cx());
            let k = kinds(&found);
            assert!(k.is_empty() || k == ["spread"], "seed {seed}: {found:#?}");
            spread_found += k.len();
        }
        assert!(
            spread_found >= 290,
            "spread said {spread_found} times of 300"
        );
    }

    #[test]
    fn too_few_sessions_say_nothing() {
        let mut all: Vec<S> = (0..6).map(|i| s(format!("user-{i}"))).collect();
        all[0].failed = Some(FACTORY);
        all[1].failed = Some(FACTORY);
        assert!(find(&snapshot(&all, 1000), cx()).is_empty());
        // One session per subject: every failure "separates" subjects, which proves nothing.
        let mut all: Vec<S> = (0..200).map(|i| s(format!("user-{i}"))).collect();
        for x in all.iter_mut().take(40) {
            x.failed = Some(FACTORY);
        }
        let found = find(&snapshot(&all, 1000), cx());
        assert!(!kinds(&found).contains(&"subjects"), "{found:#?}");
    }

    #[test]
    fn the_report_lists_the_values_with_most_failures_and_sums_the_rest() {
        let mut all = Vec::new();
        for i in 0..50 {
            let mut x = s(format!("user-{i}"));
            x.failed = (i < 3).then_some(FACTORY);
            all.push(x);
        }
        let r = AttributionReport::of(&snapshot(&all, 1000).attribution);
        assert_eq!(r.subject.distinct, 50);
        assert_eq!(r.subject.top.len(), TOP_VALUES);
        assert_eq!(r.subject.top[0].failed["factory_init_failed"], 1);
        assert_eq!(r.subject.rest.passed, 30);
        assert_eq!(r.worker.top[0].value, "w1");
    }
}
