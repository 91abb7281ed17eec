//! Snapshot admission: before anything a worker reports is merged, the coordinator checks
//! what it can. The sender must hold the share the sequence number names; the number must be
//! inside the share's window and the time inside the run; every name must be one the plan has
//! (its metrics, checks, scenarios, steps and failure categories); the figures must agree with
//! each other (as many `session` samples as sessions finished, as many failure patterns as
//! sessions failed, check counts that add up, every attribution table counting each session
//! that ended exactly once, under its outcome); and the share's running totals must be ones its
//! VUs or arrivals could have produced (no session met more sessions in flight than the share
//! has VUs). A snapshot that fails any of these is refused with a
//! [`Refusal`] (sent back to the worker, logged, counted by reason), never merged.
//!
//! What it cannot check: a worker holding a share can still invent figures its share could
//! physically have produced (docs/security.md says so).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;

use gauntlet_core::attribution::{MAX_LEVEL, Outcomes, Table};
use gauntlet_core::metrics::DETAIL_BYTES;
use gauntlet_core::names::{METRIC_SESSION, Vocabulary};
use gauntlet_core::plan::{Model, Plan};
use gauntlet_core::schedule::Ramp;
use gauntlet_core::segment::ExecutionSegment;
use gauntlet_core::sparse::Delta;
use gauntlet_core::words::FailureCategory;

/// Why a snapshot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The sender holds no share of the run under that sequence number.
    NotYourShare,
    /// No such run on this coordinator.
    UnknownRun,
    /// The sequence number is outside the share's window.
    OutOfWindow,
    /// Its time is past the end the run can have.
    AfterTheRun,
    /// It does not decode within bounds (histograms, sizes, entries).
    Undecodable,
    /// It names a metric, check, scenario, step or category the plan does not have.
    UnknownName,
    /// Its figures contradict each other.
    Inconsistent,
    /// Its share could not have produced its figures.
    Implausible,
}

impl Reason {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Reason; 8] = [
        Reason::NotYourShare,
        Reason::UnknownRun,
        Reason::OutOfWindow,
        Reason::AfterTheRun,
        Reason::Undecodable,
        Reason::UnknownName,
        Reason::Inconsistent,
        Reason::Implausible,
    ];

    /// Its stable name (the `reason` label on `/metrics`, and `Refused.reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotYourShare => "not_your_share",
            Reason::UnknownRun => "unknown_run",
            Reason::OutOfWindow => "out_of_window",
            Reason::AfterTheRun => "after_the_run",
            Reason::Undecodable => "undecodable",
            Reason::UnknownName => "unknown_name",
            Reason::Inconsistent => "inconsistent",
            Reason::Implausible => "implausible",
        }
    }
}

/// A refused snapshot: why, in a word and in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// In words, with the figures.
    pub detail: String,
}

impl Refusal {
    fn new(reason: Reason, detail: String) -> Refusal {
        Refusal { reason, detail }
    }
}

/// Refused snapshots counted by reason since the coordinator started, for `/metrics`.
#[derive(Debug, Default)]
pub struct Rejections([AtomicU64; Reason::ALL.len()]);

impl Rejections {
    /// Counts one refusal.
    pub fn count(&self, reason: Reason) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals for `reason` so far.
    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason as usize].load(Ordering::Relaxed)
    }

    /// Every refusal so far.
    pub fn total(&self) -> u64 {
        Reason::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

/// What one share has had merged so far, as admission needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShareTally {
    /// Snapshots merged.
    pub merged: u64,
    /// The highest sequence number merged, as an offset from the share's `first_seq`.
    pub highest: u64,
    /// Sessions started.
    pub started: u64,
    /// Sessions passed or failed.
    pub finished: u64,
    /// Sessions interrupted by the end of the run.
    pub interrupted: u64,
    /// The sum of the finished sessions' durations, microseconds.
    pub session_us: f64,
}

impl ShareTally {
    /// The tally with `delta` (snapshot number `offset` of the share) merged too.
    fn with(self, offset: u64, delta: &Delta) -> ShareTally {
        let c = &delta.rest.counters;
        let session_us = delta
            .histograms
            .get(METRIC_SESSION)
            .map_or(0.0, |h| h.mean() * h.len() as f64);
        ShareTally {
            merged: self.merged + 1,
            highest: self.highest.max(offset),
            started: self.started.saturating_add(c.sessions_started),
            finished: self
                .finished
                .saturating_add(c.sessions_passed)
                .saturating_add(c.sessions_failed),
            interrupted: self.interrupted.saturating_add(c.sessions_interrupted),
            session_us: self.session_us + session_us,
        }
    }

    /// Snapshots below the highest merged one that have not arrived (yet).
    fn gaps(&self) -> u64 {
        self.highest.saturating_sub(self.merged)
    }
}

/// One share as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct ShareView {
    /// Its segment of the load.
    pub segment: ExecutionSegment,
    /// Its first sequence number (exclusive: its snapshots are numbered from `first_seq + 1`).
    pub first_seq: u64,
    /// Where in the run's time it started, ms.
    pub offset_ms: u64,
    /// What has been merged of it so far.
    pub tally: ShareTally,
}

/// A worker's clock may run ahead of the coordinator's (it starts when its own clock says
/// so): figures are allowed this much more time than the coordinator has seen pass.
const CLOCK_SLACK: Duration = Duration::from_secs(10);
/// Snapshots a share may send beyond one per interval (its last, resends after reconnects are
/// the same numbers).
const SPARE_SNAPSHOTS: u64 = 16;
/// Arrivals a share may start beyond its exact part of the fleet's (its ownership of arrival
/// numbers is a low-discrepancy sequence, off by at most a few from its width's share).
const SPARE_ARRIVALS: f64 = 64.0;

/// Admission rules for one run.
#[derive(Debug)]
pub struct Intake {
    vocabulary: Vocabulary,
    ramp: Ramp,
    model: Model,
    max_vus: u64,
    iterations: Option<u64>,
    interval_ms: u64,
    /// The latest a snapshot's `at_ms` may be: the run's hard deadline, its drain and slack.
    end_ms: u64,
}

impl Intake {
    /// The rules for a run of `plan`, snapshots every `interval`, stopped at the latest at
    /// `last` (its hard deadline plus the drain).
    pub fn new(plan: &Plan, interval: Duration, last: Duration) -> Intake {
        Intake {
            vocabulary: Vocabulary::of(plan),
            ramp: Ramp::of(&plan.load),
            model: plan.load.model(),
            max_vus: plan.max_vus(),
            iterations: plan.load.iterations(),
            interval_ms: (interval.as_millis() as u64).max(1),
            end_ms: (last + CLOCK_SLACK).as_millis() as u64,
        }
    }

    /// Checks snapshot `seq` of `share`, taken at `at_ms`, before it is decoded.
    pub fn check_envelope(&self, share: &ShareView, seq: u64, at_ms: u64) -> Result<(), Refusal> {
        let window = self.end_ms / self.interval_ms + SPARE_SNAPSHOTS;
        let offset = seq.wrapping_sub(share.first_seq);
        if seq <= share.first_seq || offset > window {
            return Err(Refusal::new(
                Reason::OutOfWindow,
                format!(
                    "snapshot {offset} of its share: a share sends at most {window} (one per {} ms for the whole run)",
                    self.interval_ms
                ),
            ));
        }
        if at_ms > self.end_ms {
            return Err(Refusal::new(
                Reason::AfterTheRun,
                format!(
                    "taken at {at_ms} ms, past the latest this run can last ({} ms)",
                    self.end_ms
                ),
            ));
        }
        Ok(())
    }

    /// Checks a snapshot's histogram names before any is decoded: each one of the plan's
    /// metrics, none twice. So decoding a snapshot costs at most one bounded histogram per
    /// metric of the plan, whatever a peer packs into it.
    pub fn check_histogram_names<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Refusal> {
        let mut seen = std::collections::BTreeSet::new();
        for name in names {
            if !self.vocabulary.metrics.contains(name) {
                return Err(Refusal::new(
                    Reason::UnknownName,
                    format!("metric `{}` is not in the plan", cut(name)),
                ));
            }
            if !seen.insert(name) {
                return Err(Refusal::new(
                    Reason::Inconsistent,
                    format!("metric `{}` twice in one snapshot", cut(name)),
                ));
            }
        }
        Ok(())
    }

    /// Checks a decoded snapshot of `share` (number `seq`) when the coordinator has seen
    /// `elapsed` of the run; returns the share's tally with it merged.
    pub fn admit(
        &self,
        share: &ShareView,
        seq: u64,
        delta: &Delta,
        elapsed: Duration,
    ) -> Result<ShareTally, Refusal> {
        self.names(delta)?;
        consistent(delta)?;
        let tally = share.tally.with(seq - share.first_seq, delta);
        self.plausible(share, &tally, delta, elapsed)?;
        Ok(tally)
    }

    fn names(&self, delta: &Delta) -> Result<(), Refusal> {
        let v = &self.vocabulary;
        let unknown = |what: &str, name: &str| {
            Err(Refusal::new(
                Reason::UnknownName,
                format!("{what} `{}` is not in the plan", cut(name)),
            ))
        };
        if let Some(m) = delta.histograms.keys().find(|m| !v.metrics.contains(*m)) {
            return unknown("metric", m);
        }
        if let Some(c) = delta.rest.checks.keys().find(|c| !v.checks.contains(*c)) {
            return unknown("check", c);
        }
        for key in delta.rest.failures.keys() {
            if !v.categories.contains(key.category.as_str()) {
                return unknown("failure category", key.category.as_str());
            }
            if !v.steps.contains_key(&key.scenario) {
                return unknown("scenario", &key.scenario);
            }
            if !v.has_step(&key.scenario, &key.step) {
                return unknown("step", &format!("{}/{}", key.scenario, key.step));
            }
            if key.detail.len() > DETAIL_BYTES + '…'.len_utf8() {
                return Err(Refusal::new(
                    Reason::Inconsistent,
                    format!(
                        "a failure detail of {} bytes (workers cut them to {DETAIL_BYTES})",
                        key.detail.len()
                    ),
                ));
            }
        }
        let a = &delta.rest.attribution;
        let tables = [&a.subject.untracked, &a.target.untracked]
            .into_iter()
            .chain(a.subject.values.values())
            .chain(a.target.values.values())
            .chain(a.live.values.values())
            .chain(a.in_flight.values.values())
            .chain(a.started.values.values());
        for o in tables {
            if let Some(c) = o.failed.keys().find(|c| !v.categories.contains(c.as_str())) {
                return unknown("failure category", c.as_str());
            }
        }
        Ok(())
    }

    fn plausible(
        &self,
        share: &ShareView,
        tally: &ShareTally,
        delta: &Delta,
        elapsed: Duration,
    ) -> Result<(), Refusal> {
        let implausible = |detail: String| Err(Refusal::new(Reason::Implausible, detail));
        let vus = share.segment.vus(self.max_vus).count() as u64;
        // The share's own time, as long as a worker ahead of the coordinator may have had.
        let offset = Duration::from_millis(share.offset_ms);
        let span = (elapsed + CLOCK_SLACK).saturating_sub(offset);
        // Every VU (or open-model slot) runs one session at a time: started sessions have
        // ended (or were interrupted) but for one running per VU, and a snapshot that has not
        // arrived yet may hold the ends (or the starts) of one more per VU.
        let slack = vus.saturating_mul(1 + tally.gaps());
        if tally.started
            > tally
                .finished
                .saturating_add(tally.interrupted)
                .saturating_add(slack)
        {
            return implausible(format!(
                "{} sessions started but {} ended, with {vus} VUs",
                tally.started,
                tally.finished + tally.interrupted
            ));
        }
        if tally.finished.saturating_add(tally.interrupted)
            > tally
                .started
                .saturating_add(vus.saturating_mul(tally.gaps()))
        {
            return implausible(format!(
                "{} sessions ended but {} started",
                tally.finished + tally.interrupted,
                tally.started
            ));
        }
        // A session meets at most the share's other VUs' sessions in flight (or live for its
        // subject).
        let most = vus.saturating_sub(1).min(MAX_LEVEL);
        for (what, t) in [
            ("in flight", &delta.rest.attribution.in_flight),
            ("live for its subject", &delta.rest.attribution.live),
        ] {
            if let Some(level) = t.values.keys().find(|l| **l > most) {
                return implausible(format!(
                    "a session that met {level} other sessions {what} in a share of {vus} VUs"
                ));
            }
        }
        // Nobody connected in an interval the run has not reached.
        let reached = (elapsed + CLOCK_SLACK).as_millis() as u64 / self.interval_ms;
        if let Some(i) = delta
            .rest
            .attribution
            .started
            .values
            .keys()
            .find(|i| **i > reached)
        {
            return implausible(format!(
                "a session that connected in interval {i}, when the run has reached at most {reached}"
            ));
        }
        // No latency can exceed the time the share has run.
        let longest = delta
            .histograms
            .values()
            .map(|h| h.max())
            .max()
            .unwrap_or(0);
        let limit_us = span.as_micros() as u64 + span.as_micros() as u64 / 100;
        if longest > limit_us {
            return implausible(format!(
                "a latency of {longest} us in a share that has run for at most {limit_us} us"
            ));
        }
        match self.model {
            Model::Closed => {
                if let Some(n) = self.iterations
                    && tally.started > vus.saturating_mul(n)
                {
                    return implausible(format!(
                        "{} sessions started by {vus} VUs of {n} iterations each",
                        tally.started
                    ));
                }
                // A VU's sessions run one after another: together they last no longer than
                // the VU has run.
                let vu_us = vus as f64 * span.as_micros() as f64 * 1.01;
                if tally.session_us > vu_us {
                    return implausible(format!(
                        "sessions lasting {:.0} s in all from {vus} VUs in {:.0} s",
                        tally.session_us / 1e6,
                        span.as_secs_f64()
                    ));
                }
            }
            Model::Open => {
                // Arrivals are on a schedule: the share owns its width's part of those due
                // since it started.
                let to = match self.ramp.total() {
                    Some(total) => span.saturating_add(offset).min(total),
                    None => span.saturating_add(offset),
                };
                let due = self.ramp.integral(to) - self.ramp.integral(offset.min(to));
                let width = share.segment.width();
                let owned = (width * due + SPARE_ARRIVALS).ceil() as u64;
                if tally.started > owned {
                    return implausible(format!(
                        "{} sessions started where the share owns about {owned} arrivals so far",
                        tally.started
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The figures of one snapshot that must agree: a worker records a session's end (its
/// `session` samples, its outcome and its failure) in one step, so each snapshot carries them
/// together.
fn consistent(delta: &Delta) -> Result<(), Refusal> {
    let inconsistent = |detail: String| Err(Refusal::new(Reason::Inconsistent, detail));
    let c = &delta.rest.counters;
    let finished = c.sessions_passed.saturating_add(c.sessions_failed);
    let len = |name: &str| delta.len(name);
    if len(METRIC_SESSION) != finished {
        return inconsistent(format!(
            "{} `session` samples for {finished} sessions passed or failed",
            len(METRIC_SESSION)
        ));
    }
    let per_scenario: u64 = delta
        .histograms
        .iter()
        .filter(|(name, _)| name.starts_with("session."))
        .map(|(_, h)| h.len())
        .fold(0, u64::saturating_add);
    if per_scenario != finished {
        return inconsistent(format!(
            "{per_scenario} samples of the scenarios' sessions for {finished} sessions"
        ));
    }
    let failures = delta
        .rest
        .failures
        .values()
        .map(|f| f.count)
        .fold(0, u64::saturating_add);
    if failures != c.sessions_failed {
        return inconsistent(format!(
            "{failures} failures for {} failed sessions",
            c.sessions_failed
        ));
    }
    if let Some((_, f)) = delta
        .rest
        .failures
        .iter()
        .find(|(_, f)| f.first_ms > f.last_ms)
    {
        return inconsistent(format!(
            "a failure first seen at {} ms and last at {} ms",
            f.first_ms, f.last_ms
        ));
    }
    let (run, failed) = delta.rest.checks.values().fold((0u64, 0u64), |(r, f), c| {
        (r.saturating_add(c.run), f.saturating_add(c.failed))
    });
    if run != c.checks_run || failed != c.checks_failed {
        return inconsistent(format!(
            "checks add up to {run} run and {failed} failed, the counters say {} and {}",
            c.checks_run, c.checks_failed
        ));
    }
    if delta.rest.checks.values().any(|c| c.failed > c.run) {
        return inconsistent("a check failed more often than it ran".into());
    }
    // Every session that ended is counted once in each attribution table, under its outcome.
    let mut by_category: BTreeMap<&FailureCategory, u64> = BTreeMap::new();
    for (k, f) in &delta.rest.failures {
        let n = by_category.entry(&k.category).or_default();
        *n = n.saturating_add(f.count);
    }
    let a = &delta.rest.attribution;
    for (what, total) in [
        ("subject", sum(&a.subject)),
        ("target", sum(&a.target)),
        ("live", sum(&a.live)),
        ("in-flight", sum(&a.in_flight)),
        ("connect interval", sum(&a.started)),
    ] {
        let Some(total) = total else {
            return inconsistent(format!("the {what} table's counts overflow"));
        };
        let agrees = total.passed == c.sessions_passed
            && total.failed.len() == by_category.len()
            && total
                .failed
                .iter()
                .all(|(cat, n)| by_category.get(cat) == Some(n));
        if !agrees {
            return inconsistent(format!(
                "the {what} table counts {} passed and {} failed sessions, the snapshot {} and {}",
                total.passed,
                total
                    .failed
                    .values()
                    .fold(0u64, |a, n| a.saturating_add(*n)),
                c.sessions_passed,
                c.sessions_failed
            ));
        }
    }
    if !a.worker.is_empty() {
        return inconsistent("a worker table, which only the coordinator fills".into());
    }
    Ok(())
}

/// Everything a table counts, or `None` when a sum overflows (no worker's count does).
fn sum<K: Ord>(t: &Table<K>) -> Option<Outcomes> {
    let mut all = Outcomes::default();
    for o in t.values.values().chain(std::iter::once(&t.untracked)) {
        all.passed = all.passed.checked_add(o.passed)?;
        for (c, n) in &o.failed {
            let mine = all.failed.entry(c.clone()).or_default();
            *mine = mine.checked_add(*n)?;
        }
    }
    Some(all)
}

/// A peer's name, cut for a message.
fn cut(name: &str) -> String {
    gauntlet_core::metrics::cut(name.to_owned(), 80)
}

#[cfg(test)]
mod tests;
