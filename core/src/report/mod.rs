//! The run report (`report.json`): what a person and a CI system read after a run. Built by
//! the coordinator from the merged snapshot; its JSON shape is `docs/report.schema.json`. A
//! field added with a default (old reports still read) keeps `SCHEMA_VERSION`; any other change
//! of shape raises it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metrics::Snapshot;
use crate::words::FailureCategory;

pub mod build;
pub mod delivery;
pub mod files;
pub mod findings;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod odds;
pub mod unknown;
pub mod verdict;

/// Version of the report's JSON shape.
pub const SCHEMA_VERSION: u32 = 1;

pub use crate::words::{Cause, Judgement, Verdict};

/// The plan a report is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanRef {
    /// Plan name.
    pub name: String,
    /// SHA-256 of the plan's text, hex.
    pub hash: String,
}

/// Session totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Totals {
    /// Sessions started.
    pub sessions: u64,
    /// Sessions passed.
    pub passed: u64,
    /// Sessions failed.
    pub failed: u64,
    /// Sessions interrupted by the end of the run.
    pub interrupted: u64,
    /// Open-model arrivals dropped for lack of a free VU.
    pub dropped: u64,
    /// Sessions of unknown outcome: at most this many sessions ran on workers that were lost
    /// and never reported how they ended (the sum of the lost workers' `in_flight_bound`).
    #[serde(default)]
    pub unknown: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Checks run.
    pub checks_run: u64,
    /// Checks failed.
    pub checks_failed: u64,
}

/// One failure pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FailureReport {
    /// Category.
    pub category: FailureCategory,
    /// Detail inside the category.
    pub detail: String,
    /// Scenario.
    pub scenario: String,
    /// Step.
    pub step: String,
    /// Sessions.
    pub count: u64,
    /// First seen, ms since the run started.
    pub first_seen_ms: u64,
    /// Last seen, ms since the run started.
    pub last_seen_ms: u64,
    /// First raw samples.
    pub samples: Vec<String>,
}

/// Latency summary of one metric, microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricReport {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// The percentile spectrum: `[percentile, microseconds]` from 0 to 100, denser in the tail.
    pub spectrum: Vec<(f64, u64)>,
    /// The whole histogram (microseconds, 3 significant digits): its HdrHistogram V2 + deflate
    /// bytes in base64, so that two runs can be compared exactly (`gauntlet compare`). In
    /// final reports only; absent in live ones and in reports written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
    /// The metric's name where it must stand without quoting: the `metric` label on
    /// `/metrics`, file names, shell words (`step.chat.expect_pong` for
    /// `step.chat.expect pong`; the mapping is in docs/metrics.md). Equal to the name when that
    /// is safe already; empty in reports written before it was recorded.
    #[serde(default)]
    pub safe_name: String,
}

/// Percentiles of the spectrum (the tail gets most points: that is where latency hides).
pub const SPECTRUM: [f64; 15] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
];

impl MetricReport {
    /// The summary of `h`.
    pub fn of(h: &Histogram<u64>) -> MetricReport {
        MetricReport {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            spectrum: SPECTRUM
                .iter()
                .map(|p| (*p, h.value_at_percentile(*p)))
                .collect(),
            histogram: None,
            safe_name: String::new(),
        }
    }

    /// The summary of `h`, carrying `h` itself.
    pub fn with_histogram(h: &Histogram<u64>) -> MetricReport {
        MetricReport {
            histogram: crate::hdr::to_base64(h),
            ..MetricReport::of(h)
        }
    }

    /// The histogram this summary carries, decoded within bounds ([`crate::hdr::from_base64`])
    /// and checked against the summary's own figures: `None` when it carries none.
    pub fn decode_histogram(&self) -> Option<Result<Histogram<u64>, HistogramMismatch>> {
        let text = self.histogram.as_deref()?;
        let decoded = crate::hdr::from_base64(text)
            .map_err(HistogramMismatch::Undecodable)
            .and_then(|h| {
                if h.len() == self.count && (h.is_empty() || h.max() == self.max_us) {
                    Ok(h)
                } else {
                    Err(HistogramMismatch::Figures {
                        samples: h.len(),
                        max_us: h.max(),
                        count: self.count,
                        report_max_us: self.max_us,
                    })
                }
            });
        Some(decoded)
    }
}

/// A metric's histogram in report.json that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramMismatch {
    /// The text does not decode.
    #[error("its histogram cannot be decoded: {0}")]
    Undecodable(#[source] crate::hdr::HistogramError),
    /// It decodes, but does not hold what the summary says.
    #[error(
        "its histogram holds {samples} samples up to {max_us} us, \
         the report says {count} up to {report_max_us} us"
    )]
    Figures {
        /// Samples in the histogram.
        samples: u64,
        /// Its largest value.
        max_us: u64,
        /// `count` in the report.
        count: u64,
        /// `max_us` in the report.
        report_max_us: u64,
    },
}

/// One threshold's judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ThresholdReport {
    /// The threshold, in words (`p99(session) < 2s over any 30s window`).
    pub expr: String,
    /// What was observed (the worst window for windowed thresholds); `None` when nothing was
    /// measured, which fails the threshold.
    pub observed: Option<f64>,
    /// Unit of `observed` (`us`, `count`, `ratio`).
    pub unit: String,
    /// Whether it held.
    pub pass: bool,
    /// Why it failed, in words.
    pub reason: String,
}

/// One worker's part in the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerReport {
    /// Worker id.
    pub id: String,
    /// Worker name.
    pub name: String,
    /// Fraction of the planned load this worker delivered: its segments' widths, each for the
    /// part of the run it covered (a lost worker's share stops when it was last heard from), so
    /// the shares of all workers add up to `delivered`.
    pub share: f64,
    /// Sessions it started.
    pub sessions: u64,
    /// Snapshots merged from it.
    pub snapshots: u64,
    /// When it was lost, ms since the run started.
    pub lost_at_ms: Option<u64>,
    /// When it left early because it was shutting down (its sessions drained and reported),
    /// ms since the run started.
    pub left_at_ms: Option<u64>,
    /// For a lost worker: at most this many sessions it started have no outcome in the report
    /// (in flight at its last merged snapshot, plus those it could have started before it was
    /// last heard from and one heartbeat interval beyond).
    pub in_flight_bound: Option<u64>,
    /// Names of the workers that took over the rest of its share when it was lost or left
    /// (at most four per loss), in the order they were given it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handed_to: Vec<String>,
}

impl WorkerReport {
    /// What became of it, in words: `ok`, lost (with its sessions of unknown outcome) or left,
    /// and who took its share over.
    pub fn status(&self) -> String {
        let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
        let mut status = match (self.lost_at_ms, self.left_at_ms) {
            (Some(at), _) => format!(
                "lost at {} (up to {} sessions of unknown outcome)",
                secs(at),
                self.in_flight_bound.unwrap_or(0)
            ),
            (None, Some(at)) => format!("left at {} (drained)", secs(at)),
            _ => "ok".into(),
        };
        if !self.handed_to.is_empty() {
            status.push_str(&format!(
                "; its share went to {}",
                self.handed_to.join(", ")
            ));
        }
        status
    }
}

/// One interval of the run, fleet-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IntervalReport {
    /// Interval end, ms since the run started.
    pub at_ms: u64,
    /// Sessions started in it.
    pub sessions: u64,
    /// Sessions passed in it.
    pub passed: u64,
    /// Sessions failed in it.
    pub failed: u64,
    /// Failed sessions by category.
    pub failures: BTreeMap<String, u64>,
    /// p50, p90, p99 and max of the main metrics (microseconds), by metric.
    pub latency: BTreeMap<String, [u64; 4]>,
    /// VUs active at its end.
    pub active_vus: u64,
    /// Sessions started in it, by worker id.
    pub per_worker: BTreeMap<String, u64>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "gauntlet run report",
    description = "report.json, written by `gauntlet run` and `gauntlet demo`."
)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Run id.
    pub run_id: String,
    /// The plan.
    pub plan: PlanRef,
    /// RFC 3339 start.
    pub started_at: String,
    /// RFC 3339 end.
    pub ended_at: String,
    /// Length, seconds.
    pub duration_s: f64,
    /// Pass, fail or error.
    pub verdict: Verdict,
    /// Why, in words.
    pub verdict_reason: String,
    /// What decided the verdict (`held`, `thresholds_failed`, `nothing_ran`,
    /// `target_unreachable`, `cancelled`, `incomplete`...), for tools that act on it;
    /// `unrecorded` in reports written before it was.
    #[serde(default)]
    pub verdict_cause: Cause,
    /// Fraction of the planned load actually delivered: closed model with iterations only,
    /// sessions started over VUs x iterations; otherwise the planned load (VU-seconds for the
    /// closed model, arrivals for the open one) inside the time each share covered, over the
    /// whole plan's. Below 1 when workers were lost, the run was cancelled, aborted, stopped at
    /// its deadline or by the coordinator shutting down.
    pub delivered: f64,
    /// Totals.
    pub totals: Totals,
    /// Failure patterns, most frequent first.
    pub failures: Vec<FailureReport>,
    /// Latency summaries by metric name.
    pub metrics: BTreeMap<String, MetricReport>,
    /// Checks by name: `[run, failed]`; every check the plan declares is here, `[0, 0]` when
    /// it never evaluated.
    pub checks: BTreeMap<String, [u64; 2]>,
    /// Expectations, sequences and isolation checks (not marked `optional`) that never
    /// evaluated in the whole run: each makes the verdict an error.
    #[serde(default)]
    pub never_evaluated: Vec<String>,
    /// The plan's classifiers by category: failed sessions they classified (0: the failure
    /// they name did not happen, which is no error).
    #[serde(default)]
    pub classifiers: BTreeMap<String, u64>,
    /// Thresholds and their judgement.
    pub thresholds: Vec<ThresholdReport>,
    /// Workers.
    pub workers: Vec<WorkerReport>,
    /// Per-interval series.
    pub intervals: Vec<IntervalReport>,
    /// What the command line replaced in the plan for this run, as flags (`--vus 20`,
    /// `--duration 30s`, `--target ...`); empty when the plan ran as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
    /// Why sessions failed, per category, as clean separations the attribution supports
    /// (`subjects`, `subject_concurrency`, `worker`, `target`, `window`, `load`) or `spread`;
    /// empty live, and for categories where the data tells nothing.
    #[serde(default)]
    pub findings: Vec<findings::Finding>,
    /// Every session that ended, counted by subject, target, live sessions of its subject,
    /// sessions in flight, the interval it connected in and its worker: per dimension the
    /// values with most failures.
    #[serde(default)]
    pub attribution: findings::AttributionReport,
}

/// What a snapshot measured, in report form.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Totals.
    pub totals: Totals,
    /// Failure patterns, most frequent first.
    pub failures: Vec<FailureReport>,
    /// Latency summaries.
    pub metrics: BTreeMap<String, MetricReport>,
    /// Checks: `[run, failed]`.
    pub checks: BTreeMap<String, [u64; 2]>,
}

/// An observed value in its unit, written the same way in the verdict, the summary, report.md
/// and junit.xml (`1.50 ms`, `0.5111`, `3`).
pub fn show(v: f64, unit: &str) -> String {
    match unit {
        "us" => format!("{:.2} ms", v / 1000.0),
        "ratio" => format!("{v:.4}"),
        _ => format!("{v:.0}"),
    }
}

/// Totals, failures, metrics and checks of `s`, in report form.
pub fn summarize(s: &Snapshot) -> Measured {
    let c = &s.counters;
    let totals = Totals {
        sessions: c.sessions_started,
        passed: c.sessions_passed,
        failed: c.sessions_failed,
        interrupted: c.sessions_interrupted,
        dropped: c.dropped_arrivals,
        unknown: 0,
        frames_sent: c.frames_sent,
        frames_received: c.frames_received,
        checks_run: c.checks_run,
        checks_failed: c.checks_failed,
    };
    let mut failures: Vec<FailureReport> = s
        .failures
        .iter()
        .map(|(k, v)| FailureReport {
            category: k.category.clone(),
            detail: k.detail.clone(),
            scenario: k.scenario.clone(),
            step: k.step.clone(),
            count: v.count,
            first_seen_ms: v.first_ms,
            last_seen_ms: v.last_ms,
            samples: v.samples.clone(),
        })
        .collect();
    failures.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.category.as_str().cmp(b.category.as_str()))
    });
    let metrics = s
        .histograms
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (name.clone(), MetricReport::of(h)))
        .collect();
    let checks = s
        .checks
        .iter()
        .map(|(k, c)| (k.clone(), [c.run, c.failed]))
        .collect();
    Measured {
        totals,
        failures,
        metrics,
        checks,
    }
}

impl Report {
    /// Failed sessions by category, most frequent first ([`crate::words::tally`]).
    pub fn failures_by_category(&self) -> Vec<(FailureCategory, u64)> {
        crate::words::tally(self.failures.iter().map(|f| (&f.category, f.count)))
    }

    /// A plain-text summary for a terminal.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let finished = t.passed + t.failed;
        let rate = if finished > 0 {
            100.0 * t.passed as f64 / finished as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "run {} of plan `{}` ({:.1} s)",
            self.run_id, self.plan.name, self.duration_s
        );
        let _ = writeln!(
            out,
            "sessions: {} started, {} passed, {} failed, {} interrupted ({rate:.1} % passed)",
            t.sessions, t.passed, t.failed, t.interrupted
        );
        if !self.overrides.is_empty() {
            let _ = writeln!(out, "overrides: {}", self.overrides.join(" "));
        }
        if t.dropped > 0 {
            let _ = writeln!(out, "dropped arrivals (no free VU): {}", t.dropped);
        }
        if t.unknown > 0 {
            let _ = writeln!(
                out,
                "unknown outcome: up to {} sessions ran on lost workers and never reported",
                t.unknown
            );
        }
        if self.delivered < 1.0 {
            let _ = writeln!(
                out,
                "load delivered: {} of the plan",
                percent(self.delivered)
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\nfailures:");
            for f in &self.failures {
                let detail = if f.detail.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", f.detail)
                };
                let _ = writeln!(
                    out,
                    "  {:<24} {:>7}  {}/{}{detail}  e.g. {}",
                    f.category,
                    f.count,
                    f.scenario,
                    f.step,
                    f.samples.first().map(String::as_str).unwrap_or("-")
                );
            }
        }
        if !self.findings.is_empty() {
            let _ = writeln!(out, "\nfindings:");
            for f in &self.findings {
                let _ = writeln!(out, "  {}", f.text);
            }
        }
        if !self.metrics.is_empty() {
            let w = self
                .metrics
                .keys()
                .map(|k| k.chars().count())
                .max()
                .unwrap_or(0)
                .max(12);
            let _ = writeln!(
                out,
                "\n{:<w$} {:>8} {:>10} {:>10} {:>10} {:>10}",
                "latency (ms)", "count", "p50", "p90", "p99", "max"
            );
            for (name, m) in &self.metrics {
                let ms = |v: u64| v as f64 / 1000.0;
                let _ = writeln!(
                    out,
                    "{name:<w$} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                    m.count,
                    ms(m.p50_us),
                    ms(m.p90_us),
                    ms(m.p99_us),
                    ms(m.max_us)
                );
            }
        }
        if !self.checks.is_empty() {
            let w = self
                .checks
                .keys()
                .map(|k| k.chars().count())
                .max()
                .unwrap_or(0)
                .max(6);
            let _ = writeln!(
                out,
                "\n{:<w$} {:>10} {:>8}",
                "checks", "evaluated", "failed"
            );
            for (name, [run, failed]) in &self.checks {
                let note = if self.never_evaluated.contains(name) {
                    "  NEVER EVALUATED"
                } else {
                    ""
                };
                let _ = writeln!(out, "{name:<w$} {run:>10} {failed:>8}{note}");
            }
        }
        if !self.classifiers.is_empty() {
            let _ = writeln!(out, "\nclassifiers (failed sessions matched):");
            for (category, n) in &self.classifiers {
                let note = if *n == 0 { "  (matched nothing)" } else { "" };
                let _ = writeln!(out, "  {category:<24} {n:>7}{note}");
            }
        }
        if !self.workers.is_empty() {
            let _ = writeln!(out, "\nworkers:");
            for w in &self.workers {
                let lost = match (w.lost_at_ms, w.in_flight_bound) {
                    (None, _) if w.left_at_ms.is_some() => format!(
                        "  left at {:.1} s (shut down; its sessions were drained and reported)",
                        w.left_at_ms.unwrap_or(0) as f64 / 1000.0
                    ),
                    (Some(at), bound) => format!(
                        "  LOST at {:.1} s (up to {} sessions of unknown outcome)",
                        at as f64 / 1000.0,
                        bound.unwrap_or(0)
                    ),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  {} ({}) share {:.1} %, {} sessions{lost}",
                    w.name,
                    w.id,
                    100.0 * w.share,
                    w.sessions
                );
            }
        }
        if !self.thresholds.is_empty() {
            let _ = writeln!(out, "\nthresholds:");
            for th in &self.thresholds {
                let mark = if th.pass { "ok  " } else { "FAIL" };
                let observed = match th.observed {
                    Some(v) => format!("observed {}", show(v, &th.unit)),
                    None => th.reason.clone(),
                };
                let _ = writeln!(out, "  {mark} {} ({observed})", th.expr);
            }
        }
        let _ = writeln!(
            out,
            "\nverdict: {}: {}",
            self.verdict.as_str(),
            self.verdict_reason
        );
        out
    }
}

/// A fraction as a percentage, cut (never rounded up) to one decimal: a shortfall never reads
/// as 100 % (0.99999 is 99.9 %).
pub fn percent(f: f64) -> String {
    if f >= 1.0 {
        return "100.0 %".into();
    }
    format!("{:.1} %", (1000.0 * f).floor() / 10.0)
}

/// The JSON Schema of [`Report`] (what `docs/report.schema.json` holds).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Report);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::{CheckStats, FailureKey, FailureStats, histogram};

    /// A report of 10 sessions of scenario `chat`: 7 passed, 2 factory-init failures and one
    /// missing event (whose sample contains markup and a pipe).
    pub(crate) fn sample(run_id: &str, factory: u64, missing: u64) -> Report {
        let mut s = Snapshot::default();
        let passed = 10 - factory - missing;
        s.counters.sessions_started = 10;
        s.counters.sessions_passed = passed;
        s.counters.sessions_failed = factory + missing;
        let mut h = histogram();
        for v in 1..=10u64 {
            h.record(v * 1000).unwrap();
        }
        s.histograms.insert("session".into(), h.clone());
        s.histograms.insert("session.chat".into(), h);
        let key = |category: &str, step: &str| FailureKey {
            category: category.into(),
            detail: String::new(),
            scenario: "chat".into(),
            step: step.into(),
        };
        if factory > 0 {
            s.failures.insert(
                key("factory_init_failed", "ws_connect"),
                FailureStats {
                    count: factory,
                    first_ms: 100,
                    last_ms: 900,
                    samples: vec!["close 1011 \"Factory SSOT validation failed\"".into()],
                },
            );
        }
        if missing > 0 {
            s.failures.insert(
                key("missing_event", "agent events"),
                FailureStats {
                    count: missing,
                    first_ms: 200,
                    last_ms: 200,
                    samples: vec!["<tool_completed> & a|b".into()],
                },
            );
        }
        s.checks.insert(
            "chat/ws_connect".into(),
            CheckStats {
                run: 10,
                failed: factory,
            },
        );
        s.checks.insert(
            "chat/agent events".into(),
            CheckStats {
                run: 10 - factory,
                failed: missing,
            },
        );
        s.checks.insert(
            "isolation:event-user".into(),
            CheckStats { run: 40, failed: 0 },
        );
        let m = summarize(&s);
        Report {
            schema_version: SCHEMA_VERSION,
            run_id: run_id.into(),
            plan: PlanRef {
                name: "agent".into(),
                hash: "00".into(),
            },
            started_at: "2026-11-21T00:00:00Z".into(),
            ended_at: "2026-11-21T00:00:10Z".into(),
            duration_s: 10.0,
            verdict: if factory + missing > 0 {
                Verdict::Fail
            } else {
                Verdict::Pass
            },
            verdict_reason: "test".into(),
            verdict_cause: Cause::Unrecorded,
            delivered: 1.0,
            totals: m.totals,
            failures: m.failures,
            metrics: m.metrics,
            checks: m.checks,
            never_evaluated: vec![],
            classifiers: BTreeMap::new(),
            thresholds: vec![ThresholdReport {
                expr: "failed sessions <= 0".into(),
                observed: Some((factory + missing) as f64),
                unit: "count".into(),
                pass: factory + missing == 0,
                reason: String::new(),
            }],
            workers: vec![],
            intervals: vec![],
            overrides: vec![],
            findings: vec![],
            attribution: Default::default(),
        }
    }

    #[test]
    fn markdown_has_the_numbers() {
        let before = sample("r1", 2, 1);
        let after = sample("r2", 0, 3);
        let md = markdown::render(&after, Some(&crate::compare::compare(&before, &after)));
        assert!(md.contains("# gauntlet run `r2`: FAIL"), "{md}");
        assert!(md.contains("| `chat` | 10 | 7 | 3 |"), "{md}");
        assert!(
            md.contains("| `missing_event` |  | `chat/agent events` | 3 |"),
            "{md}"
        );
        assert!(md.contains("&"), "{md}");
        assert!(md.contains("a\\|b"), "pipes are escaped: {md}");
        assert!(
            md.contains("- Resolved categories: `factory_init_failed` (2 -> 0)"),
            "{md}"
        );
        assert!(md.contains("- New categories: none"), "{md}");
        assert!(md.contains("| `missing_event` | 1 | 3 | +2 |"), "{md}");
        assert!(
            md.contains("| `failed sessions <= 0` | 3 | **FAIL** |"),
            "{md}"
        );
    }

    #[test]
    fn junit_lists_checks_and_thresholds_with_failures() {
        let xml = junit::render(&sample("r", 2, 1));
        assert!(
            xml.contains("<testsuites name=\"gauntlet agent\" tests=\"4\" failures=\"3\""),
            "{xml}"
        );
        assert!(xml.contains("<failure type=\"factory_init_failed\" message=\"2 of 10 failed; factory_init_failed x2\">close 1011 &quot;Factory SSOT validation failed&quot;</failure>"), "{xml}");
        assert!(xml.contains("&lt;tool_completed&gt; &amp; a|b"), "{xml}");
        assert!(
            xml.contains("<testcase classname=\"agent.isolation\" name=\"isolation:event-user\"><system-out>evaluated 40, failed 0</system-out></testcase>"),
            "{xml}"
        );
        // It parses, and the failures are where CI looks for them.
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let failures: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("failure"))
            .filter_map(|n| n.attribute("type"))
            .collect();
        assert_eq!(
            failures,
            ["missing_event", "factory_init_failed", "threshold"],
            "checks in name order, then thresholds"
        );
    }

    #[test]
    fn findings_are_said_in_every_form() {
        let mut r = sample("r", 2, 1);
        r.findings.push(findings::Finding {
            category: FailureCategory::FactoryInitFailed,
            kind: findings::Kind::SubjectConcurrency {
                min_live: 2,
                max_ok_live: 1,
                sessions_below: 8,
                subjects_on_one_worker: true,
            },
            failed: 2,
            sessions: 10,
            chance: 1e-9,
            text: "factory_init_failed: every session of <user-1> failed".into(),
        });
        let text = r.render_text();
        assert!(
            text.contains("findings:\n  factory_init_failed: every session of <user-1> failed"),
            "{text}"
        );
        let md = markdown::render(&r, None);
        assert!(
            md.contains(
                "## Findings\n\n- factory\\_init\\_failed: every session of \\<user-1\\> failed"
            ),
            "{md}"
        );
        let page = html::render(&r, None);
        assert!(
            page.contains("<h2>Findings</h2><ul><li>factory_init_failed: every session of &lt;user-1&gt; failed</li></ul>"),
            "{page}"
        );
        // junit.xml: the failed check of that category says why, before its raw sample; the
        // check of another category does not.
        let xml = junit::render(&r);
        assert!(
            xml.contains("<failure type=\"factory_init_failed\" message=\"2 of 10 failed; factory_init_failed x2\">finding: factory_init_failed: every session of &lt;user-1&gt; failed\nclose 1011"),
            "{xml}"
        );
        assert_eq!(xml.matches("finding: ").count(), 1, "{xml}");
    }

    #[test]
    fn reports_keep_the_human_name_and_carry_the_safe_one() {
        let text = r#"
name = "names"
[target]
base_url = "http://127.0.0.1:1"
[load]
vus = 1
iterations = 1
[[scenarios]]
name = "chat"
steps = [
  { ws_connect = {} },
  { ws_send = { json = { type = "ping" }, name = "say \"héllo\" / 日本" } },
  { ws_expect = { type = "pong" } },
]
"#;
        let plan = crate::plan::Plan::from_text("n.toml", text, &crate::plan::Overrides::default())
            .unwrap();
        let human = "step.chat.say \"héllo\" / 日本";
        let mut total = Snapshot::default();
        let mut h = histogram();
        h.record(1500).unwrap();
        for name in [human, "event.chat.expect pong", "session"] {
            total.histograms.insert(name.into(), h.clone());
        }
        total.counters.sessions_started = 1;
        total.counters.sessions_passed = 1;
        let now = std::time::SystemTime::now();
        let r = build::finished(
            build::Run {
                id: "r",
                plan: &plan,
                plan_hash: "00",
                started: now,
                now,
                total: &total,
                interval: std::time::Duration::from_secs(1),
            },
            vec![],
            vec![],
            build::Final {
                thresholds: vec![],
                judgement: Judgement::new(Verdict::Pass, Cause::Held, "held"),
                delivered: 1.0,
                unknown: 0,
                never_evaluated: vec![],
                subjects_on_one_share: true,
            },
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        let m = &json["metrics"][human];
        assert_eq!(
            m["safe_name"], "step.chat.say__hu00e9llo____u65e5u672c",
            "{json}"
        );
        assert!(
            m["histogram"].is_string(),
            "the final report keeps the histogram"
        );
        assert_eq!(
            json["metrics"]["event.chat.expect pong"]["safe_name"],
            "event.chat.expect_pong"
        );
        assert_eq!(json["metrics"]["session"]["safe_name"], "session");
        let md = markdown::render(&r, None);
        assert!(
            md.contains("| `step.chat.say \"héllo\" / 日本` (safe: `step.chat.say__hu00e9llo____u65e5u672c`) | 1 |"),
            "{md}"
        );
        assert!(
            md.contains("| `session` | 1 |"),
            "a safe name is not repeated: {md}"
        );
        let page = html::render(&r, None);
        assert!(
            page.contains("<code>step.chat.say &quot;héllo&quot; &#x2F; 日本</code> <small>(safe: <code>step.chat.say__hu00e9llo____u65e5u672c</code>)</small>"),
            "{page}"
        );
        assert!(
            r.render_text().contains(human),
            "the terminal shows the human name"
        );
    }

    /// `docs/report.schema.json` is generated from the types: this fails when they drift.
    /// Regenerate with `UPDATE_SCHEMA=1 cargo test -p gauntlet-core report_schema`.
    #[test]
    fn report_schema_doc_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/report.schema.json");
        let generated = json_schema();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &generated).expect("write the schema");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/report.schema.json is stale: run UPDATE_SCHEMA=1 cargo test -p gauntlet-core report_schema"
        );
    }
}
