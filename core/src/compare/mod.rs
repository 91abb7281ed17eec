//! Progress between two runs of a plan ("same failure count, different patterns"): which
//! failure categories were resolved, which are new, which moved up or down, how each latency
//! changed, and, for each, whether the change is real or noise (the statistics in [`stats`],
//! the rule that judges them in [`rule`]).
//!
//! # Layout
//! - [`stats`]: the rank test from two histograms, its effect size, quantile intervals, the
//!   two-proportion test.
//! - [`rule`]: what counts as a change ([`Rule`]), and the verdict in words.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::report::markdown::code;
use crate::report::{HistogramMismatch, MetricReport, Report};

pub mod rule;
pub mod stats;

pub use rule::{Direction, LatencyJudgement, Magnitude, RateChange, Rule, Status};

/// One category's failed sessions before and after, and the verdict on its rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CategoryChange {
    /// Category.
    pub category: String,
    /// Its failed sessions and their rate among finished sessions, tested.
    #[serde(flatten)]
    pub rate: RateChange,
}

/// One metric's latency before and after (microseconds), and the verdict on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LatencyChange {
    /// Metric.
    pub metric: String,
    /// Samples before.
    pub n_before: u64,
    /// Samples after.
    pub n_after: u64,
    /// p50 before.
    pub p50_before: u64,
    /// p50 after.
    pub p50_after: u64,
    /// p99 before.
    pub p99_before: u64,
    /// p99 after.
    pub p99_after: u64,
    /// The test and its verdict.
    #[serde(flatten)]
    pub judgement: LatencyJudgement,
}

/// What changed from `before` to `after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "gauntlet comparison",
    description = "What `gauntlet compare BEFORE AFTER --json` prints."
)]
pub struct Comparison {
    /// Earlier run id.
    pub before_run: String,
    /// Later run id.
    pub after_run: String,
    /// Verdicts, before and after.
    pub verdicts: (String, String),
    /// Sessions, before and after.
    pub sessions: (u64, u64),
    /// Failed sessions, before and after.
    pub failed: (u64, u64),
    /// The rate of failed sessions among finished ones (passed + failed), tested.
    pub failed_sessions: RateChange,
    /// Categories present before and gone now.
    pub resolved: Vec<CategoryChange>,
    /// Categories absent before and present now.
    pub new: Vec<CategoryChange>,
    /// Categories in both runs whose count changed or not.
    pub persisting: Vec<CategoryChange>,
    /// Latency of metrics present in both runs.
    pub latency: Vec<LatencyChange>,
    /// What got significantly worse: metric names and `failures:<category>` /
    /// `failures:sessions`; empty when nothing did.
    pub regressions: Vec<String>,
    /// The rule the verdicts follow.
    pub rule: Rule,
}

/// A report whose histograms cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {side} run `{run}`: metric `{metric}`: {source}")]
pub struct CompareError {
    /// `earlier` or `later`.
    pub side: &'static str,
    /// Its run id.
    pub run: String,
    /// The metric.
    pub metric: String,
    /// What is wrong with its histogram.
    #[source]
    pub source: HistogramMismatch,
}

fn by_category(r: &Report) -> BTreeMap<String, u64> {
    r.failures_by_category()
        .into_iter()
        .map(|(c, n)| (c.as_str().to_owned(), n))
        .collect()
}

/// Compares two runs with the default [`Rule`]. A histogram that cannot be decoded makes its
/// metric "cannot test" with the reason (report.md is written whatever a stored report holds);
/// [`compare_with`] refuses it instead.
pub fn compare(before: &Report, after: &Report) -> Comparison {
    build(before, after, &Rule::default()).0
}

/// Compares two runs under `rule`; a histogram in either report that does not decode, or does
/// not hold what its summary says, is an error naming the run and the metric.
pub fn compare_with(
    before: &Report,
    after: &Report,
    rule: &Rule,
) -> Result<Comparison, CompareError> {
    let (comparison, errors) = build(before, after, rule);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(comparison),
    }
}

/// The comparison, and the histograms that could not be used (their metrics "cannot test").
fn build(before: &Report, after: &Report, rule: &Rule) -> (Comparison, Vec<CompareError>) {
    let b = by_category(before);
    let a = by_category(after);
    let finished = |r: &Report| r.totals.passed + r.totals.failed;
    let (nb, na) = (finished(before), finished(after));
    let change = |category: &String| CategoryChange {
        category: category.clone(),
        rate: rule.rate(
            b.get(category).copied().unwrap_or(0),
            nb,
            a.get(category).copied().unwrap_or(0),
            na,
        ),
    };
    let resolved: Vec<CategoryChange> = b
        .keys()
        .filter(|k| !a.contains_key(*k))
        .map(change)
        .collect();
    let new: Vec<CategoryChange> = a
        .keys()
        .filter(|k| !b.contains_key(*k))
        .map(change)
        .collect();
    let persisting: Vec<CategoryChange> = b
        .keys()
        .filter(|k| a.contains_key(*k))
        .map(change)
        .collect();
    let mut latency = Vec::new();
    let mut errors = Vec::new();
    for (name, m) in &before.metrics {
        let Some(n) = after.metrics.get(name) else {
            continue;
        };
        let decoded = |side: &'static str, r: &Report, m: &MetricReport| match m.decode_histogram()
        {
            None => Ok(None),
            Some(Ok(h)) => Ok(Some(stats::buckets(&h))),
            Some(Err(source)) => Err(CompareError {
                side,
                run: r.run_id.clone(),
                metric: name.clone(),
                source,
            }),
        };
        let (hb, ha) = match (decoded("earlier", before, m), decoded("later", after, n)) {
            (Ok(hb), Ok(ha)) => (hb, ha),
            (Err(e), _) | (_, Err(e)) => {
                let mut judgement = rule.latency(side(m, None), side(n, None));
                judgement.verdict = format!("cannot test ({e})");
                latency.push(latency_change(name, m, n, judgement));
                errors.push(e);
                continue;
            }
        };
        let judgement = rule.latency(side(m, hb.as_deref()), side(n, ha.as_deref()));
        latency.push(latency_change(name, m, n, judgement));
    }
    let failed_sessions = rule.rate(before.totals.failed, nb, after.totals.failed, na);
    let worse = |significant: bool, d: Direction| significant && d == Direction::Worse;
    let mut regressions: Vec<String> = latency
        .iter()
        .filter(|l| worse(l.judgement.significant, l.judgement.direction))
        .map(|l| l.metric.clone())
        .collect();
    if worse(failed_sessions.significant, failed_sessions.direction) {
        regressions.push("failures:sessions".into());
    }
    for c in new.iter().chain(&persisting) {
        if worse(c.rate.significant, c.rate.direction) {
            regressions.push(format!("failures:{}", c.category));
        }
    }
    let comparison = Comparison {
        before_run: before.run_id.clone(),
        after_run: after.run_id.clone(),
        verdicts: (
            before.verdict.as_str().into(),
            after.verdict.as_str().into(),
        ),
        sessions: (before.totals.sessions, after.totals.sessions),
        failed: (before.totals.failed, after.totals.failed),
        failed_sessions,
        resolved,
        new,
        persisting,
        latency,
        regressions,
        rule: *rule,
    };
    (comparison, errors)
}

fn side<'a>(m: &MetricReport, buckets: Option<&'a [(u64, u64)]>) -> rule::Side<'a> {
    rule::Side {
        count: m.count,
        p50_us: m.p50_us,
        buckets,
    }
}

fn latency_change(
    name: &str,
    m: &MetricReport,
    n: &MetricReport,
    judgement: LatencyJudgement,
) -> LatencyChange {
    LatencyChange {
        metric: name.to_owned(),
        n_before: m.count,
        n_after: n.count,
        p50_before: m.p50_us,
        p50_after: n.p50_us,
        p99_before: m.p99_us,
        p99_after: n.p99_us,
        judgement,
    }
}

/// The JSON Schema of [`Comparison`] (what `gauntlet compare --json` prints;
/// `docs/compare.schema.json` holds it).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Comparison);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// A verdict as a Markdown table cell: a metric or run named inside it (an undecodable
/// histogram's) cannot end the cell or the line.
fn verdict_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

impl Comparison {
    /// Whether anything got significantly worse: a metric, the rate of failed sessions or of
    /// one category (a new category included).
    pub fn regressed(&self) -> bool {
        !self.regressions.is_empty()
    }

    /// The comparison as Markdown (a "progress vs previous cycle" section, and what
    /// `gauntlet compare` prints).
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Compared with run `{}`: verdict {} -> {}, sessions {} -> {}, failed {} -> {}.\n",
            self.before_run,
            self.verdicts.0,
            self.verdicts.1,
            self.sessions.0,
            self.sessions.1,
            self.failed.0,
            self.failed.1
        );
        let list = |out: &mut String, title: &str, items: &[CategoryChange]| {
            if items.is_empty() {
                let _ = writeln!(out, "- {title}: none");
            } else {
                let names: Vec<String> = items
                    .iter()
                    .map(|c| format!("`{}` ({} -> {})", c.category, c.rate.before, c.rate.after))
                    .collect();
                let _ = writeln!(out, "- {title}: {}", names.join(", "));
            }
        };
        list(&mut out, "Resolved categories", &self.resolved);
        list(&mut out, "New categories", &self.new);
        let _ = writeln!(out);
        let pct = |r: f64| format!("{:.2} %", 100.0 * r);
        let _ = writeln!(
            out,
            "| failed sessions | before | after | change | rate before | rate after | significance |\n|---|---:|---:|---:|---:|---:|---|"
        );
        let row = |out: &mut String, name: &str, r: &RateChange| {
            let delta = r.after as i64 - r.before as i64;
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {delta:+} | {} | {} | {} |",
                r.before,
                r.after,
                pct(r.rate_before),
                pct(r.rate_after),
                verdict_cell(&r.verdict)
            );
        };
        row(&mut out, "all categories", &self.failed_sessions);
        for c in self
            .resolved
            .iter()
            .chain(&self.new)
            .chain(&self.persisting)
        {
            row(&mut out, &code(&c.category, 80), &c.rate);
        }
        let _ = writeln!(out);
        if !self.latency.is_empty() {
            let _ = writeln!(
                out,
                "| metric | samples | p50 before | p50 after | p99 before | p99 after | p50 change | significance |\n|---|---:|---:|---:|---:|---:|---:|---|"
            );
            let ms = |v: u64| format!("{:.2} ms", v as f64 / 1000.0);
            let with_ci = |v: u64, ci: Option<[u64; 2]>| match ci {
                Some([lo, hi]) => format!(
                    "{} [{:.2}, {:.2}]",
                    ms(v),
                    lo as f64 / 1000.0,
                    hi as f64 / 1000.0
                ),
                None => ms(v),
            };
            for l in &self.latency {
                let j = &l.judgement;
                let _ = writeln!(
                    out,
                    "| {} | {} / {} | {} | {} | {} | {} | {} | {} |",
                    code(&l.metric, 120),
                    l.n_before,
                    l.n_after,
                    with_ci(l.p50_before, j.p50_ci_before),
                    with_ci(l.p50_after, j.p50_ci_after),
                    with_ci(l.p99_before, j.p99_ci_before),
                    with_ci(l.p99_after, j.p99_ci_after),
                    j.relative_change.map_or("-".into(), rule::signed_percent),
                    verdict_cell(&j.verdict)
                );
            }
            let _ = writeln!(
                out,
                "\nIntervals in brackets: {:.0} % distribution-free (binomial order statistics of \
                 the histogram), in ms.",
                100.0 * self.rule.confidence
            );
        }
        let r = &self.rule;
        let _ = writeln!(
            out,
            "\nSignificant means p < {} (Mann–Whitney U on the histograms; two-proportion test on \
             failure rates), at least {} samples a side, and for latency an effect beyond \
             A = 0.5 +/- {}, a median moved at least {:.0} % and {:.2} ms, and medians' \
             intervals apart; or, the median unchanged, a p99 (or p95) moved by a factor of \
             {} and {:.0} ms with its intervals apart (changed in the tail).",
            r.alpha,
            r.min_samples,
            r.negligible_effect,
            100.0 * r.min_relative,
            r.min_shift_us as f64 / 1000.0,
            r.min_tail_ratio,
            r.min_tail_shift_us as f64 / 1000.0
        );
        if self.regressions.is_empty() {
            let _ = writeln!(out, "Significantly worse: nothing.");
        } else {
            let names: Vec<String> = self.regressions.iter().map(|n| code(n, 120)).collect();
            let _ = writeln!(out, "Significantly worse: {}.", names.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::report::tests::sample;

    /// `sample`'s report with every metric's histogram replaced by `n` samples spread over
    /// `[from, from + width)` microseconds.
    fn with_latency(mut r: Report, n: u64, from: u64, width: u64, histogram: bool) -> Report {
        let mut h = crate::metrics::histogram();
        for i in 0..n {
            h.record(from + i * width / n).unwrap();
        }
        for m in r.metrics.values_mut() {
            *m = if histogram {
                MetricReport::with_histogram(&h)
            } else {
                MetricReport::of(&h)
            };
        }
        r
    }

    #[test]
    fn identical_runs_change_nothing_and_a_slower_one_regresses() {
        let a = with_latency(sample("r1", 0, 0), 1_000, 20_000, 2_000, true);
        let same = compare_with(&a, &a, &Rule::default()).unwrap();
        assert!(!same.regressed());
        assert_eq!(same.latency.len(), 2);
        for l in &same.latency {
            assert_eq!(l.judgement.status, Status::WithinNoise, "{l:?}");
        }
        let slow = with_latency(sample("r2", 0, 0), 1_000, 40_000, 4_000, true);
        let c = compare_with(&a, &slow, &Rule::default()).unwrap();
        assert_eq!(c.regressions, ["session", "session.chat"]);
        let md = c.to_markdown();
        assert!(
            md.contains("| `session` | 1000 / 1000 | 21.01 ms [20.93, 21.09] | 42.02 ms [41.85, 42.17] | 21.98 ms [21.97, 22.00] | 43.97 ms [43.94, 44.00] | +100.0 % | changed (p < 0.0001, +100.0 %) |"),
            "{md}"
        );
        assert!(
            md.contains("Significantly worse: `session`, `session.chat`."),
            "{md}"
        );
        // Faster is a change, not a regression.
        let back = compare_with(&slow, &a, &Rule::default()).unwrap();
        assert!(!back.regressed());
        assert_eq!(back.latency[0].judgement.direction, Direction::Better);
    }

    #[test]
    fn failure_categories_are_tested_and_a_new_one_regresses() {
        // 10 sessions each: too few to test.
        let c = compare(&sample("r1", 2, 1), &sample("r2", 0, 3));
        assert_eq!(c.new.len(), 0);
        assert_eq!(c.resolved[0].rate.status, Status::NTooSmall);
        assert_eq!(c.persisting[0].category, "missing_event");
        assert!(!c.regressed());
        // 1000 sessions: 0 -> 40 missing events is new and significant.
        let scale = |mut r: Report, missing: u64| {
            r.totals.passed = 1_000 - missing;
            r.totals.failed = missing;
            r.failures
                .retain(|f| f.category.as_str() == "missing_event");
            for f in &mut r.failures {
                f.count = missing;
            }
            r
        };
        let c = compare(
            &scale(sample("r1", 0, 0), 0),
            &scale(sample("r2", 0, 1), 40),
        );
        assert_eq!(c.new[0].category, "missing_event");
        assert!(c.new[0].rate.significant);
        assert_eq!(
            c.regressions,
            ["failures:sessions", "failures:missing_event"]
        );
        let md = c.to_markdown();
        assert!(
            md.contains("| `missing_event` | 0 | 40 | +40 | 0.00 % | 4.00 % | changed (p < 0.0001, 0 -> 4.00 % of sessions) |"),
            "{md}"
        );
    }

    #[test]
    fn a_report_without_histograms_cannot_be_tested_and_a_bad_one_is_an_error() {
        let old = with_latency(sample("r1", 0, 0), 1_000, 20_000, 2_000, false);
        let slow = with_latency(sample("r2", 0, 0), 1_000, 40_000, 4_000, true);
        let c = compare_with(&old, &slow, &Rule::default()).unwrap();
        assert!(!c.regressed(), "never a claim without the data");
        assert_eq!(
            c.latency[0].judgement.verdict,
            "cannot test (the earlier report.json has no histogram)"
        );
        let mut bad = slow.clone();
        bad.metrics.get_mut("session").unwrap().histogram = Some("!!".into());
        let e = compare_with(&old, &bad, &Rule::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the later run `r2`: metric `session`: its histogram cannot be decoded: not base64: \
             Invalid symbol 33, offset 0."
        );
        // report.md's comparison says so and goes on.
        let c = compare(&old, &bad);
        assert!(
            c.latency[0]
                .judgement
                .verdict
                .starts_with("cannot test (the later run `r2`")
        );
        // ... in a table a metric's name cannot break.
        let (mut piped_old, mut piped_bad) = (old.clone(), bad.clone());
        piped_old
            .metrics
            .insert("a|b".into(), old.metrics["session"].clone());
        piped_bad
            .metrics
            .insert("a|b".into(), bad.metrics["session"].clone());
        let md = compare(&piped_old, &piped_bad).to_markdown();
        assert!(
            md.contains("| `a\\|b` | 1000 / 1000 |")
                && md.contains("| cannot test (the later run `r2`: metric `a\\|b`: its histogram"),
            "{md}"
        );
        // A histogram that decodes but holds other figures than the summary.
        let mut other = slow.clone();
        let small = with_latency(sample("r3", 0, 0), 10, 1_000, 10, true);
        other.metrics.get_mut("session").unwrap().histogram =
            small.metrics["session"].histogram.clone();
        let e = compare_with(&slow, &other, &Rule::default()).unwrap_err();
        assert!(e.to_string().contains("holds 10 samples"), "{e}");
    }

    /// `docs/compare.schema.json` is generated from the types: this fails when they drift.
    /// Regenerate with `UPDATE_SCHEMA=1 cargo test -p gauntlet-core compare_schema`.
    #[test]
    fn compare_schema_doc_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/compare.schema.json");
        let generated = json_schema();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &generated).expect("write the schema");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/compare.schema.json is stale: run UPDATE_SCHEMA=1 cargo test -p gauntlet-core compare_schema"
        );
    }
}
