//! `gauntlet capacity`: finding the highest load a target holds. Each step is one run of the
//! plan at one load (arrival rate in the open model, VUs in the closed one), judged by the
//! plan's thresholds on that run alone and by whether its queue drained; [`search`] chooses the
//! next load (climb, then bisect between the last load that held and the first that broke, then
//! re-test the edge) and [`render`] writes the answer for people (capacity.md, .html, .svg) and
//! tools (capacity.json).
//!
//! # Layout
//! - this file: the words ([`Step`], [`Outcome`], [`Capacity`]) and judging one step's report;
//! - `search`: the search's state machine, pure (no fleet): tested on its own;
//! - `render`: the files.

use serde::{Deserialize, Serialize};

use crate::plan::Model;
use crate::report::Report;
use crate::words::{Cause, Verdict};

pub mod render;
pub mod search;

pub use search::{Knobs, Search};

/// The metric whose latency a step is summarised by.
pub const SESSION_METRIC: &str = "session";

/// How one step came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every threshold held, nothing dropped, the queue drained, enough sessions.
    Held,
    /// The target did not hold this load (why: [`Step::why`]).
    Broke,
    /// Too few sessions finished to judge: the load is run again, longer.
    Inconclusive,
}

impl Outcome {
    /// `held`, `broke`, `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Held => "held",
            Outcome::Broke => "broke",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// A series that kept growing through a step: a queue that will not drain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    /// `sessions in flight` or `session p50 latency (ms)`.
    pub series: String,
    /// Mean over the step's first third.
    pub from: f64,
    /// Mean over its last third.
    pub to: f64,
}

/// One step of the search: the load, its run, the key figures and the judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// 1-based, in the order run.
    pub index: u32,
    /// Sessions per second (open model) or VUs (closed).
    pub load: f64,
    /// Whether this step re-tested a load that had held.
    pub retest: bool,
    /// The step's run.
    pub run_id: String,
    /// What it came to.
    pub outcome: Outcome,
    /// Why it did not hold, one sentence per reason (empty when it held).
    pub why: Vec<String>,
    /// The run's verdict.
    pub verdict: Verdict,
    /// Sessions started.
    pub sessions: u64,
    /// Sessions passed.
    pub passed: u64,
    /// Sessions failed.
    pub failed: u64,
    /// Arrivals dropped for want of a free VU (open model).
    pub dropped: u64,
    /// Failed over finished sessions.
    pub failure_rate: f64,
    /// Finished sessions per second of the run.
    pub throughput: f64,
    /// Session latency, milliseconds: p50, p95, p99 (`None` without sessions).
    pub p50_ms: Option<f64>,
    /// p95.
    pub p95_ms: Option<f64>,
    /// p99.
    pub p99_ms: Option<f64>,
    /// Sessions in flight (active VUs) at the step's start and end (means of its first and
    /// last thirds).
    pub in_flight: (f64, f64),
    /// Failed sessions by category, most frequent first.
    pub failures: Vec<(String, u64)>,
    /// Thresholds that failed, with what was observed.
    pub thresholds_failed: Vec<String>,
    /// The series that kept growing, when the queue did not drain.
    pub growth: Vec<Growth>,
    /// The step's findings in plain words (why its sessions failed: the failure attribution
    /// of its run, report.json `findings`), most telling first.
    #[serde(default)]
    pub findings: Vec<String>,
}

/// The answer of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// The plan's name.
    pub plan: String,
    /// `open` (load is sessions per second) or `closed` (VUs).
    pub model: Model,
    /// `sessions/s` or `VUs`.
    pub unit: String,
    /// The searched range.
    pub from: f64,
    /// Its top.
    pub to: f64,
    /// The highest load that held (re-tests included), if any.
    pub held: Option<Step>,
    /// The lowest load that broke above it, if any.
    pub broke: Option<Step>,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
    /// The answer in words.
    pub answer: String,
    /// Why the search stopped where it did (converged, step or time budget, an error).
    pub stopped: String,
    /// 0: a limit found inside the range (or none up to its top, which held); 1: even the
    /// lowest step broke; 3: no answer (an error of the fleet or the plan, a load that could
    /// not be judged, or a budget spent before either a broken load or the top).
    pub exit_code: u8,
}

impl Capacity {
    /// The answer of `search` on plan `plan` (`model`), which stopped because of `stopped`;
    /// `error`: the search could not go on (exit 3).
    pub fn conclude(
        plan: &str,
        model: Model,
        search: &Search,
        stopped: &str,
        error: Option<String>,
    ) -> Capacity {
        let unit = match model {
            Model::Open => "sessions/s",
            Model::Closed => "VUs",
        };
        let k = search.knobs();
        // The step that decided each bound: the last run at that load.
        let last_at = |load: f64| {
            search
                .steps()
                .iter()
                .rev()
                .find(|s| s.load == load)
                .cloned()
        };
        let held = search.held().and_then(last_at);
        let broke = search.broke().and_then(last_at);
        // Why a step did not hold, and why its sessions failed (its findings), when known.
        let why = |s: &Step| {
            let mut why = s.why.join("; ");
            if !s.findings.is_empty() {
                why = format!("{why}; {}", s.findings.join("; "));
            }
            why
        };
        // A search that stopped on a load it could not judge (too few sessions).
        let unjudged = search
            .steps()
            .last()
            .filter(|s| s.outcome == Outcome::Inconclusive);
        let (answer, exit_code) = match (&held, &broke, &error) {
            (_, _, Some(e)) => (format!("the search stopped on an error: {e}"), 3),
            (Some(h), Some(b), None) => {
                let narrow = (b.load - h.load) / h.load <= k.resolution;
                (
                    format!(
                        "the target held {} {unit} and broke at {} {unit}: {}{}",
                        num(h.load),
                        num(b.load),
                        why(b),
                        if narrow {
                            String::new()
                        } else {
                            format!(
                                " (the limit is between the two: the search stopped because {stopped}, before --resolution)"
                            )
                        }
                    ),
                    0,
                )
            }
            (Some(h), None, None) if h.load >= k.to => (
                format!(
                    "the target held every load tried, up to {} {unit} (the top of the range: the limit is above it)",
                    num(h.load)
                ),
                0,
            ),
            (Some(h), None, None) => (
                format!(
                    "no limit found: the target held every load judged, up to {} {unit}, but the search stopped because {stopped}{}, below the top of the range ({} {unit})",
                    num(h.load),
                    unjudged.map_or(String::new(), |s| format!(
                        " ({} {unit} could not be judged: {})",
                        num(s.load),
                        s.why.join("; ")
                    )),
                    num(k.to)
                ),
                3,
            ),
            (None, Some(b), None) => (
                format!(
                    "even the lowest load tried, {} {unit}, did not hold: {}",
                    num(b.load),
                    why(b)
                ),
                1,
            ),
            (None, None, None) => match unjudged {
                Some(s) => (
                    format!(
                        "no answer: {} {unit} could not be judged ({}); lengthen --step-duration or lower --min-samples",
                        num(s.load),
                        s.why.join("; ")
                    ),
                    3,
                ),
                None => ("no step ran".into(), 3),
            },
        };
        Capacity {
            plan: plan.to_owned(),
            model,
            unit: unit.into(),
            from: k.from,
            to: k.to,
            held,
            broke,
            steps: search.steps().to_vec(),
            answer,
            stopped: stopped.to_owned(),
            exit_code,
        }
    }
}

/// The folder of step `index` at `load` inside the search's output folder: `steps/07-194`.
pub fn step_dir(index: u32, load: f64) -> String {
    format!("steps/{index:02}-{}", num(load))
}

/// A load as people read it: `200`, `212.5`.
pub fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Why a step's run says nothing about the target's capacity: the search stops (exit 3).
pub fn not_about_capacity(report: &Report) -> Option<String> {
    match report.verdict_cause {
        Cause::SharesFailed
        | Cause::TooFewWorkers
        | Cause::Cancelled
        | Cause::Interrupted
        | Cause::WorkerLost
        | Cause::Unjudged
        | Cause::NothingRan => Some(format!(
            "run {} ended in error: {}",
            report.run_id, report.verdict_reason
        )),
        _ => None,
    }
}

/// Judges one step's report: `load` was asked for `measured_ms` (the step's own window, in
/// which its growth is looked for); `min_samples` finished sessions are needed to judge it.
pub fn judge(
    report: &Report,
    index: u32,
    load: f64,
    retest: bool,
    measured_ms: u64,
    min_samples: u64,
) -> Step {
    let t = &report.totals;
    let finished = t.passed + t.failed;
    let m = report.metrics.get(SESSION_METRIC);
    let ms = |us: u64| us as f64 / 1000.0;
    let failures: Vec<(String, u64)> = report
        .failures_by_category()
        .into_iter()
        .map(|(c, n)| (c.as_str().to_owned(), n))
        .collect();
    let thresholds_failed: Vec<String> = report
        .thresholds
        .iter()
        .filter(|th| !th.pass)
        .map(|th| match th.observed {
            Some(v) => format!("`{}` (observed {})", th.expr, short(v, &th.unit)),
            None => format!("`{}` ({})", th.expr, th.reason),
        })
        .collect();
    // The step's window without its first interval (connections opening) and without what
    // ran after the load stopped (the graceful drain).
    let window: Vec<_> = report
        .intervals
        .iter()
        .filter(|i| i.at_ms <= measured_ms)
        .skip(1)
        .collect();
    let in_flight: Vec<f64> = window.iter().map(|i| i.active_vus as f64).collect();
    let latency: Vec<f64> = window
        .iter()
        .filter_map(|i| i.latency.get(SESSION_METRIC).map(|l| l[0] as f64 / 1000.0))
        .collect();
    let mut growth = Vec::new();
    if let Some((from, to)) = grows(&in_flight, 3.0) {
        growth.push(Growth {
            series: "sessions in flight".into(),
            from,
            to,
        });
    }
    if let Some((from, to)) = grows(&latency, 2.0) {
        growth.push(Growth {
            series: "session p50 latency (ms)".into(),
            from,
            to,
        });
    }
    let thirds = |v: &[f64]| {
        if v.is_empty() {
            (0.0, 0.0)
        } else {
            let k = (v.len() / 3).max(1);
            (mean(&v[..k]), mean(&v[v.len() - k..]))
        }
    };
    let mut why = Vec::new();
    if report.verdict != Verdict::Pass {
        why.push(format!(
            "verdict {}: {}",
            report.verdict.as_str(),
            report.verdict_reason
        ));
    }
    if t.dropped > 0 {
        why.push(format!(
            "{} arrivals dropped: every VU was busy (sessions took longer than the VU pool allows)",
            t.dropped
        ));
    }
    for g in &growth {
        why.push(format!(
            "{} kept growing through the step ({:.1} -> {:.1}): a queue that does not drain",
            g.series, g.from, g.to
        ));
    }
    let outcome = if !why.is_empty() {
        Outcome::Broke
    } else if finished < min_samples {
        why.push(format!(
            "too few sessions to judge: {finished} finished, {min_samples} needed (--min-samples)"
        ));
        Outcome::Inconclusive
    } else {
        Outcome::Held
    };
    Step {
        index,
        load,
        retest,
        run_id: report.run_id.clone(),
        outcome,
        why,
        verdict: report.verdict,
        sessions: t.sessions,
        passed: t.passed,
        failed: t.failed,
        dropped: t.dropped,
        failure_rate: if finished > 0 {
            t.failed as f64 / finished as f64
        } else {
            0.0
        },
        throughput: if report.duration_s > 0.0 {
            finished as f64 / report.duration_s
        } else {
            0.0
        },
        p50_ms: m.map(|m| ms(m.p50_us)),
        p95_ms: m.map(|m| ms(m.p95_us)),
        p99_ms: m.map(|m| ms(m.p99_us)),
        in_flight: thirds(&in_flight),
        failures,
        thresholds_failed,
        growth,
        findings: report.findings.iter().map(|f| f.text.clone()).collect(),
    }
}

/// Whether `series` kept growing: at least 4 points, the mean of its last third at least
/// 1.5 times that of its first plus `floor` (so a series near zero does not "grow" by noise),
/// and rising point over point in at least 3 of 4 ordered pairs (Kendall's tau >= 0.5).
/// Returns the two means.
pub fn grows(series: &[f64], floor: f64) -> Option<(f64, f64)> {
    let n = series.len();
    if n < 4 {
        return None;
    }
    let k = (n / 3).max(1);
    let first = mean(&series[..k]);
    let last = mean(&series[n - k..]);
    if last < 1.5 * first + floor {
        return None;
    }
    let (mut up, mut down) = (0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            if series[j] > series[i] {
                up += 1;
            } else if series[j] < series[i] {
                down += 1;
            }
        }
    }
    let pairs = (n * (n - 1) / 2) as f64;
    ((up - down) as f64 / pairs >= 0.5).then_some((first, last))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// A threshold's observed value in its unit (`812.0 ms`, `2.5 %`).
fn short(v: f64, unit: &str) -> String {
    if unit.is_empty() {
        format!("{v:.3}")
    } else {
        format!("{v:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_that_fills_grows_a_steady_one_does_not() {
        assert_eq!(
            grows(&[20.0, 30.0, 41.0, 52.0, 60.0, 71.0], 3.0),
            Some((25.0, 65.5))
        );
        assert_eq!(grows(&[20.0, 22.0, 19.0, 21.0, 23.0, 20.0], 3.0), None);
        // Near zero, a jump of a session or two is noise.
        assert_eq!(grows(&[0.0, 1.0, 1.0, 2.0, 2.0, 3.0], 3.0), None);
        // One late spike is no trend.
        assert_eq!(grows(&[20.0, 20.0, 20.0, 20.0, 20.0, 80.0], 3.0), None);
        assert_eq!(grows(&[1.0, 100.0, 200.0], 3.0), None);
    }
}
