//! The one place a [`Report`] is built, live (while the run goes, for the live page) and final
//! (at its end, for the client, the files and the history): the measured figures, every check
//! the plan declares (evaluated or not), each classifier's matches, the workers, the failure
//! attribution, the findings (live: so far) and the verdict.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::checks::declared;
use crate::metrics::Snapshot;
use crate::names::Vocabulary;
use crate::plan::Plan;
use crate::report::{
    IntervalReport, MetricReport, PlanRef, Report, SCHEMA_VERSION, ThresholdReport, WorkerReport,
    findings, summarize,
};
use crate::words::{Cause, Judgement, RunPhase, Verdict};

/// What every report of a run says, live or final.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The run's id.
    pub id: &'a str,
    /// Its plan.
    pub plan: &'a Plan,
    /// SHA-256 of the plan's text, hex (empty live).
    pub plan_hash: &'a str,
    /// When it started (wall clock).
    pub started: SystemTime,
    /// Now, or when it ended.
    pub now: SystemTime,
    /// Everything merged.
    pub total: &'a Snapshot,
    /// Its snapshot interval (the plan's, or the coordinator's default for it).
    pub interval: std::time::Duration,
}

/// Required checks that never evaluated in `total`: expectations, sequences and isolation
/// checks the plan declares (not marked optional) with no evaluation.
pub fn never_evaluated(plan: &Plan, total: &Snapshot) -> Vec<String> {
    declared(plan)
        .into_iter()
        .filter(|d| d.kind.must_evaluate() && !d.optional)
        .filter(|d| total.checks.get(&d.name).is_none_or(|c| c.run == 0))
        .map(|d| d.name)
        .collect()
}

/// A provisional report of a run still going: what has been merged so far, verdict `error`
/// with the phase as reason (not known before the end), no thresholds judged.
pub fn live(
    run: Run<'_>,
    phase: RunPhase,
    workers: Vec<WorkerReport>,
    intervals: Vec<IntervalReport>,
) -> Report {
    let judgement = Judgement::error(Cause::Unrecorded, phase.as_str());
    // The findings so far (whether each subject ran on one share alone is known only at the
    // end, so the live count a subject saw is not taken for its whole count here).
    let found = findings::find(
        run.total,
        findings::Context {
            workers: &workers,
            interval_ms: (run.interval.as_millis() as u64).max(1),
            intervals: &intervals,
            subjects_on_one_share: false,
        },
    );
    let mut report = assemble(run, workers, intervals, Vec::new(), judgement);
    report.findings = found;
    report.ended_at = String::new();
    report.never_evaluated = Vec::new();
    report.classifiers = BTreeMap::new();
    report
}

/// The final report of a run.
#[derive(Debug)]
pub struct Final {
    /// The thresholds, judged.
    pub thresholds: Vec<ThresholdReport>,
    /// The verdict.
    pub judgement: Judgement,
    /// The fraction of the planned load delivered.
    pub delivered: f64,
    /// Sessions of unknown outcome (at most).
    pub unknown: u64,
    /// Required checks that never evaluated ([`never_evaluated`]).
    pub never_evaluated: Vec<String>,
    /// Whether every subject's sessions were reported by one share alone (so the live count
    /// each saw on its worker was its subject's whole count); `false` when unknown.
    pub subjects_on_one_share: bool,
}

/// The final report of `run`.
pub fn finished(
    run: Run<'_>,
    workers: Vec<WorkerReport>,
    intervals: Vec<IntervalReport>,
    done: Final,
) -> Report {
    let cx = findings::Context {
        workers: &workers,
        interval_ms: (run.interval.as_millis() as u64).max(1),
        intervals: &intervals,
        subjects_on_one_share: done.subjects_on_one_share,
    };
    let found = findings::find(run.total, cx);
    let mut report = assemble(run, workers, intervals, done.thresholds, done.judgement);
    // The final report carries each metric's whole histogram, so runs compare exactly.
    for (name, m) in &mut report.metrics {
        if let Some(h) = run.total.histograms.get(name) {
            *m = MetricReport {
                safe_name: std::mem::take(&mut m.safe_name),
                ..MetricReport::with_histogram(h)
            };
        }
    }
    report.findings = found;
    report.delivered = done.delivered;
    report.totals.unknown = done.unknown;
    report.never_evaluated = done.never_evaluated;
    report
}

fn assemble(
    run: Run<'_>,
    workers: Vec<WorkerReport>,
    intervals: Vec<IntervalReport>,
    thresholds: Vec<ThresholdReport>,
    judgement: Judgement,
) -> Report {
    let mut measured = summarize(run.total);
    let safe = Vocabulary::of(run.plan).safe_metrics();
    for (name, m) in &mut measured.metrics {
        m.safe_name = safe.get(name).into_owned();
    }
    // Every declared check is shown, evaluated or not.
    for d in declared(run.plan) {
        measured.checks.entry(d.name).or_insert([0, 0]);
    }
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
    let verdict: Verdict = judgement.verdict;
    Report {
        schema_version: SCHEMA_VERSION,
        run_id: run.id.to_owned(),
        plan: PlanRef {
            name: run.plan.name.clone(),
            hash: run.plan_hash.to_owned(),
        },
        started_at: humantime::format_rfc3339_millis(run.started).to_string(),
        ended_at: humantime::format_rfc3339_millis(run.now).to_string(),
        duration_s: run
            .now
            .duration_since(run.started)
            .unwrap_or_default()
            .as_secs_f64(),
        verdict,
        verdict_reason: judgement.reason,
        verdict_cause: judgement.cause,
        delivered: 0.0,
        totals: measured.totals,
        failures: measured.failures,
        metrics: measured.metrics,
        checks: measured.checks,
        never_evaluated: Vec::new(),
        classifiers,
        thresholds,
        workers,
        intervals,
        overrides: run.plan.overrides.clone(),
        findings: Vec::new(),
        attribution: findings::AttributionReport::of(&run.total.attribution),
    }
}
