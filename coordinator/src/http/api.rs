//! `/api/runs` (every run with its phase and verdict, and the workers) and `/api/live` (the
//! live page's data: the recent runs' figures and charts).

use serde_json::{Value, json};

use crate::Coordinator;

pub(super) fn runs(coordinator: &Coordinator) -> Value {
    let runs: Vec<Value> = coordinator
        .runs()
        .iter()
        .map(|r| {
            let report = r.report();
            json!({
                "run_id": r.id,
                "plan": r.plan.name,
                "state": r.phase().as_str(),
                "verdict": report.as_ref().map(|rep| rep.verdict.as_str()),
                "verdict_reason": report.as_ref().map(|rep| rep.verdict_reason.clone()),
            })
        })
        .collect();
    json!({ "runs": runs, "workers": live_workers(coordinator), "workers_known": coordinator.registry.all().len() })
}

/// Workers connected now (a stream open and heard from within the heartbeat timeout); the
/// registry also remembers workers that left.
pub(super) fn live_workers(coordinator: &Coordinator) -> usize {
    coordinator
        .registry
        .connected(coordinator.config.heartbeat_timeout)
        .len()
}

/// Runs shown on the live page: the running ones and the most recent others.
const LIVE_RUNS: usize = 5;

/// The live page's data: per run its figures and charts (SVG, the same as report.html's).
pub fn live(coordinator: &Coordinator) -> Value {
    let mut runs = coordinator.runs();
    runs.sort_by(|a, b| b.id.cmp(&a.id));
    let runs: Vec<Value> = runs
        .iter()
        .take(LIVE_RUNS)
        .map(|r| {
            let report = r.live_report();
            let finished = r.phase() == gauntlet_core::words::RunPhase::Finished;
            json!({
                "run_id": r.id,
                "plan": r.plan.name,
                "state": r.phase().as_str(),
                "verdict": if finished { report.verdict.as_str() } else { "" },
                "verdict_reason": if finished { report.verdict_reason.clone() } else { String::new() },
                "elapsed_s": report.duration_s,
                "sessions": report.totals.sessions,
                "passed": report.totals.passed,
                "failed": report.totals.failed,
                "findings": report.findings.iter().map(|f| f.text.as_str()).collect::<Vec<_>>(),
                "charts": gauntlet_core::report::html::charts(&report),
            })
        })
        .collect();
    json!({ "runs": runs, "workers": live_workers(coordinator), "workers_known": coordinator.registry.all().len() })
}
