//! Progress between two runs of a plan ("same failure count, different patterns"): which
//! failure categories were resolved, which are new, which moved up or down, and how the main
//! latencies changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// One category's count before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryChange {
    /// Category.
    pub category: String,
    /// Failed sessions in the earlier run.
    pub before: u64,
    /// Failed sessions in the later run.
    pub after: u64,
}

/// One metric's p50 and p99 before and after (microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyChange {
    /// Metric.
    pub metric: String,
    /// p50 before.
    pub p50_before: u64,
    /// p50 after.
    pub p50_after: u64,
    /// p99 before.
    pub p99_before: u64,
    /// p99 after.
    pub p99_after: u64,
}

/// What changed from `before` to `after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Categories present before and gone now.
    pub resolved: Vec<CategoryChange>,
    /// Categories absent before and present now.
    pub new: Vec<CategoryChange>,
    /// Categories in both runs whose count changed or not.
    pub persisting: Vec<CategoryChange>,
    /// Latency of metrics present in both runs.
    pub latency: Vec<LatencyChange>,
}

fn by_category(r: &Report) -> BTreeMap<String, u64> {
    r.failures_by_category()
        .into_iter()
        .map(|(c, n)| (c.as_str().to_owned(), n))
        .collect()
}

/// Compares two runs.
pub fn compare(before: &Report, after: &Report) -> Comparison {
    let b = by_category(before);
    let a = by_category(after);
    let change = |category: &String| CategoryChange {
        category: category.clone(),
        before: b.get(category).copied().unwrap_or(0),
        after: a.get(category).copied().unwrap_or(0),
    };
    let resolved = b
        .keys()
        .filter(|k| !a.contains_key(*k))
        .map(change)
        .collect();
    let new = a
        .keys()
        .filter(|k| !b.contains_key(*k))
        .map(change)
        .collect();
    let persisting = b
        .keys()
        .filter(|k| a.contains_key(*k))
        .map(change)
        .collect();
    let latency = before
        .metrics
        .iter()
        .filter_map(|(name, m)| {
            let n = after.metrics.get(name)?;
            Some(LatencyChange {
                metric: name.clone(),
                p50_before: m.p50_us,
                p50_after: n.p50_us,
                p99_before: m.p99_us,
                p99_after: n.p99_us,
            })
        })
        .collect();
    Comparison {
        before_run: before.run_id.clone(),
        after_run: after.run_id.clone(),
        verdicts: (
            before.verdict.as_str().into(),
            after.verdict.as_str().into(),
        ),
        sessions: (before.totals.sessions, after.totals.sessions),
        failed: (before.totals.failed, after.totals.failed),
        resolved,
        new,
        persisting,
        latency,
    }
}

impl Comparison {
    /// The comparison as Markdown (a "progress vs previous cycle" section).
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
                    .map(|c| format!("`{}` ({} -> {})", c.category, c.before, c.after))
                    .collect();
                let _ = writeln!(out, "- {title}: {}", names.join(", "));
            }
        };
        list(&mut out, "Resolved categories", &self.resolved);
        list(&mut out, "New categories", &self.new);
        let _ = writeln!(out);
        if !self.persisting.is_empty() {
            let _ = writeln!(
                out,
                "| still failing | before | after | change |\n|---|---:|---:|---:|"
            );
            for c in &self.persisting {
                let delta = c.after as i64 - c.before as i64;
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {delta:+} |",
                    c.category, c.before, c.after
                );
            }
            let _ = writeln!(out);
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                out,
                "| metric | p50 before | p50 after | p99 before | p99 after | p99 change |\n|---|---:|---:|---:|---:|---:|"
            );
            for l in &self.latency {
                let ms = |v: u64| v as f64 / 1000.0;
                let change = if l.p99_before > 0 {
                    format!(
                        "{:+.1} %",
                        100.0 * (l.p99_after as f64 - l.p99_before as f64) / l.p99_before as f64
                    )
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    out,
                    "| `{}` | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {change} |",
                    l.metric,
                    ms(l.p50_before),
                    ms(l.p50_after),
                    ms(l.p99_before),
                    ms(l.p99_after)
                );
            }
        }
        out
    }
}
