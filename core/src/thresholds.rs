//! Thresholds: pass/fail rules on latency percentiles, failure counts and rates, and check
//! pass rates, over the whole run or over any sliding window; judged once, centrally, on the
//! merged data. A threshold with nothing measured fails: no samples is never a pass.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::Snapshot;
use crate::report::ThresholdReport;

/// A latency statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Stat {
    /// Median.
    #[serde(rename = "p50")]
    P50,
    /// 90th percentile.
    #[serde(rename = "p90")]
    P90,
    /// 95th percentile.
    #[serde(rename = "p95")]
    P95,
    /// 99th percentile.
    #[serde(rename = "p99")]
    P99,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    P999,
    /// Largest.
    #[serde(rename = "max")]
    Max,
    /// Smallest.
    #[serde(rename = "min")]
    Min,
    /// Mean.
    #[serde(rename = "mean")]
    Mean,
}

impl Stat {
    fn name(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::P999 => "p99.9",
            Stat::Max => "max",
            Stat::Min => "min",
            Stat::Mean => "mean",
        }
    }

    fn of(self, h: &hdrhistogram::Histogram<u64>) -> f64 {
        match self {
            Stat::P50 => h.value_at_quantile(0.5) as f64,
            Stat::P90 => h.value_at_quantile(0.9) as f64,
            Stat::P95 => h.value_at_quantile(0.95) as f64,
            Stat::P99 => h.value_at_quantile(0.99) as f64,
            Stat::P999 => h.value_at_quantile(0.999) as f64,
            Stat::Max => h.max() as f64,
            Stat::Min => h.min() as f64,
            Stat::Mean => h.mean(),
        }
    }
}

/// One threshold, as written in a plan's `[[thresholds]]`. Exactly one of `metric`,
/// `failures` and `check` says what it is about.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Latency: the metric (`session`, `event.agent-run.agent_completed`, ...).
    #[serde(default)]
    pub metric: Option<String>,
    /// Latency: which statistic.
    #[serde(default)]
    pub stat: Option<Stat>,
    /// Latency: the statistic must stay below this.
    #[serde(default, with = "humantime_serde::option")]
    pub below: Option<Duration>,
    /// Failures: a category, or `*` for every failed session.
    #[serde(default)]
    pub failures: Option<String>,
    /// Failures: at most this many sessions.
    #[serde(default)]
    pub at_most: Option<u64>,
    /// Failures: fewer than this fraction of finished sessions.
    #[serde(default)]
    pub rate_below: Option<f64>,
    /// Checks: a check name (`scenario/step`, `isolation:name`) or `*` for all.
    #[serde(default)]
    pub check: Option<String>,
    /// Checks: at least this fraction must pass.
    #[serde(default)]
    pub pass_rate_at_least: Option<f64>,
    /// Judge over every sliding window of this length instead of the whole run.
    #[serde(default, with = "humantime_serde::option")]
    pub window: Option<Duration>,
    /// Stop the run as soon as it fails (after `grace`).
    #[serde(default)]
    pub abort_on_fail: bool,
    /// With `abort_on_fail`: not judged live before this much of the run has passed.
    #[serde(default, with = "humantime_serde::option")]
    pub grace: Option<Duration>,
}

impl Threshold {
    /// The implicit threshold of a plan without any: no session may fail.
    pub fn no_failed_sessions() -> Threshold {
        Threshold {
            failures: Some("*".into()),
            at_most: Some(0),
            ..Threshold::empty()
        }
    }

    fn empty() -> Threshold {
        Threshold {
            metric: None,
            stat: None,
            below: None,
            failures: None,
            at_most: None,
            rate_below: None,
            check: None,
            pass_rate_at_least: None,
            window: None,
            abort_on_fail: false,
            grace: None,
        }
    }

    /// Rules serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        let kinds = [
            self.metric.is_some(),
            self.failures.is_some(),
            self.check.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("give exactly one of metric, failures and check".into());
        }
        if self.metric.is_some() && (self.stat.is_none() || self.below.is_none()) {
            return Err("a latency threshold needs stat and below".into());
        }
        if self.metric.is_none() && (self.stat.is_some() || self.below.is_some()) {
            return Err("stat and below belong to a latency threshold (metric = ...)".into());
        }
        if self.failures.is_some() && self.at_most.is_some() == self.rate_below.is_some() {
            return Err("a failures threshold needs exactly one of at_most and rate_below".into());
        }
        if self.failures.is_none() && (self.at_most.is_some() || self.rate_below.is_some()) {
            return Err("at_most and rate_below belong to a failures threshold".into());
        }
        if self.check.is_some() != self.pass_rate_at_least.is_some() {
            return Err("a check threshold needs check and pass_rate_at_least".into());
        }
        for (name, v) in [
            ("rate_below", self.rate_below),
            ("pass_rate_at_least", self.pass_rate_at_least),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return Err(format!("{name} must be between 0 and 1 (got {v})"));
            }
        }
        if self.window.is_some_and(|w| w.is_zero()) {
            return Err("window must be above 0".into());
        }
        if self.grace.is_some() && !self.abort_on_fail {
            return Err("grace only applies with abort_on_fail = true".into());
        }
        Ok(())
    }

    /// The threshold in words.
    pub fn expr(&self) -> String {
        let base = if let Some(metric) = &self.metric {
            format!(
                "{}({metric}) < {}",
                self.stat.map_or("?", Stat::name),
                humantime::format_duration(self.below.unwrap_or_default())
            )
        } else if let Some(category) = &self.failures {
            let what = if category == "*" {
                "failed sessions".to_owned()
            } else {
                format!("failures[{category}]")
            };
            match (self.at_most, self.rate_below) {
                (Some(n), _) => format!("{what} <= {n}"),
                (None, Some(r)) => format!("rate({what}) < {r}"),
                _ => what,
            }
        } else {
            format!(
                "pass_rate(check {}) >= {}",
                self.check.as_deref().unwrap_or("?"),
                self.pass_rate_at_least.unwrap_or(0.0)
            )
        };
        match self.window {
            Some(w) => format!("{base} over any {} window", humantime::format_duration(w)),
            None => base,
        }
    }

    /// Judges the threshold. `total` is everything merged; `intervals` the per-interval
    /// deltas in order, each `interval` long (used by windowed thresholds).
    pub fn judge(
        &self,
        total: &Snapshot,
        intervals: &[Snapshot],
        interval: Duration,
    ) -> ThresholdReport {
        let observed = match self.window {
            None => self.observe(total),
            Some(window) => {
                let k = (window.as_millis() / interval.as_millis().max(1)).max(1) as usize;
                let k = k.min(intervals.len().max(1));
                let mut worst: Option<f64> = None;
                for start in 0..intervals.len().saturating_sub(k - 1) {
                    let mut merged = Snapshot::default();
                    for s in &intervals[start..start + k] {
                        merged.merge(s);
                    }
                    if let Some(v) = self.observe(&merged) {
                        worst = Some(match worst {
                            None => v,
                            Some(w) if self.worse(v, w) => v,
                            Some(w) => w,
                        });
                    }
                }
                worst
            }
        };
        let (unit, limit_ok): (&str, Box<dyn Fn(f64) -> bool>) = if let Some(below) = self.below {
            let limit = below.as_micros() as f64;
            ("us", Box::new(move |v| v < limit))
        } else if let Some(n) = self.at_most {
            ("count", Box::new(move |v| v <= n as f64))
        } else if let Some(r) = self.rate_below {
            ("ratio", Box::new(move |v| v < r))
        } else {
            let r = self.pass_rate_at_least.unwrap_or(1.0);
            ("ratio", Box::new(move |v| v >= r))
        };
        let (pass, reason) = match observed {
            None => (
                false,
                "nothing was measured for it (no samples is not a pass)".to_owned(),
            ),
            Some(v) if limit_ok(v) => (true, String::new()),
            Some(v) => (
                false,
                format!("observed {}, beyond the limit", show(v, unit)),
            ),
        };
        ThresholdReport {
            expr: self.expr(),
            observed,
            unit: unit.to_owned(),
            pass,
            reason,
        }
    }

    /// Whether `a` is worse than `b` for this threshold.
    fn worse(&self, a: f64, b: f64) -> bool {
        if self.pass_rate_at_least.is_some() {
            a < b
        } else {
            a > b
        }
    }

    /// The observed value over `s`, `None` when there is nothing to judge.
    fn observe(&self, s: &Snapshot) -> Option<f64> {
        if let Some(metric) = &self.metric {
            let h = s.histograms.get(metric).filter(|h| !h.is_empty())?;
            return Some(self.stat.map_or(0.0, |st| st.of(h)));
        }
        if let Some(category) = &self.failures {
            let failed: u64 = if category == "*" {
                s.counters.sessions_failed
            } else {
                s.failures
                    .iter()
                    .filter(|(k, _)| k.category == *category)
                    .map(|(_, v)| v.count)
                    .sum()
            };
            let finished = s.counters.sessions_passed + s.counters.sessions_failed;
            if finished == 0 {
                return None;
            }
            return Some(if self.at_most.is_some() {
                failed as f64
            } else {
                failed as f64 / finished as f64
            });
        }
        let name = self.check.as_deref()?;
        let (run, failed) = s
            .checks
            .iter()
            .filter(|(k, _)| name == "*" || k.as_str() == name)
            .fold((0, 0), |(r, f), (_, c)| (r + c.run, f + c.failed));
        (run > 0).then(|| 1.0 - failed as f64 / run as f64)
    }
}

/// Metrics that windowed thresholds need kept per interval.
pub fn windowed_metrics(thresholds: &[Threshold]) -> Vec<String> {
    thresholds
        .iter()
        .filter(|t| t.window.is_some())
        .filter_map(|t| t.metric.clone())
        .collect()
}

/// A snapshot holding only `metrics`' histograms (and everything else) of `s`: what an
/// interval keeps for windowed thresholds.
pub fn keep_for_windows(s: &Snapshot, metrics: &[String]) -> Snapshot {
    let mut kept = Snapshot {
        counters: s.counters,
        failures: s.failures.clone(),
        checks: s.checks.clone(),
        ..Snapshot::default()
    };
    for m in metrics {
        if let Some(h) = s.histograms.get(m) {
            kept.histograms.insert(m.clone(), h.clone());
        }
    }
    kept
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::histogram;

    fn latency(values: &[u64]) -> Snapshot {
        let mut s = Snapshot::default();
        let mut h = histogram();
        for v in values {
            h.record(*v).unwrap();
        }
        s.histograms.insert("session".into(), h);
        s
    }

    fn t(text: &str) -> Threshold {
        let t: Threshold = toml::from_str(text).unwrap();
        t.check().unwrap();
        t
    }

    #[test]
    fn whole_run_latency() {
        let th = t("metric = \"session\"\nstat = \"p99\"\nbelow = \"2s\"");
        let ok = latency(&[1000; 100]);
        assert!(th.judge(&ok, &[], Duration::from_secs(1)).pass);
        let slow = latency(&[3_000_000; 100]);
        let r = th.judge(&slow, &[], Duration::from_secs(1));
        assert!(!r.pass);
        assert_eq!(r.expr, "p99(session) < 2s");
    }

    #[test]
    fn a_windowed_threshold_trips_on_one_slow_window_the_whole_run_hides() {
        // 60 one-second intervals of fast sessions, one interval of slow ones.
        let mut intervals: Vec<Snapshot> = (0..60).map(|_| latency(&[1000; 100])).collect();
        intervals[30] = latency(&[3_000_000; 10]);
        let mut total = Snapshot::default();
        for i in &intervals {
            total.merge(i);
        }
        let whole = t("metric = \"session\"\nstat = \"p99\"\nbelow = \"2s\"");
        assert!(
            whole.judge(&total, &intervals, Duration::from_secs(1)).pass,
            "1 % of the run is slow"
        );
        let windowed = t("metric = \"session\"\nstat = \"p99\"\nbelow = \"2s\"\nwindow = \"10s\"");
        let r = windowed.judge(&total, &intervals, Duration::from_secs(1));
        assert!(!r.pass, "{r:?}");
        assert!(r.observed.unwrap() >= 2_900_000.0);
        assert_eq!(r.expr, "p99(session) < 2s over any 10s window");
    }

    #[test]
    fn no_samples_is_a_failure() {
        let th = t("metric = \"nothing.here\"\nstat = \"p50\"\nbelow = \"1s\"");
        let r = th.judge(&Snapshot::default(), &[], Duration::from_secs(1));
        assert!(!r.pass);
        assert!(r.reason.contains("no samples"), "{r:?}");
        let failures = Threshold::no_failed_sessions();
        assert!(
            !failures
                .judge(&Snapshot::default(), &[], Duration::from_secs(1))
                .pass
        );
    }

    #[test]
    fn failure_counts_rates_and_check_rates() {
        let mut s = Snapshot::default();
        s.counters.sessions_passed = 90;
        s.counters.sessions_failed = 10;
        s.failures.insert(
            crate::metrics::FailureKey {
                category: "timeout".into(),
                detail: String::new(),
                scenario: "s".into(),
                step: "x".into(),
            },
            crate::metrics::FailureStats {
                count: 10,
                first_ms: 0,
                last_ms: 0,
                samples: vec![],
            },
        );
        s.checks.insert(
            "s/x".into(),
            crate::metrics::CheckStats {
                run: 100,
                failed: 10,
            },
        );
        let d = Duration::from_secs(1);
        assert!(
            !t("failures = \"timeout\"\nat_most = 5")
                .judge(&s, &[], d)
                .pass
        );
        assert!(
            t("failures = \"timeout\"\nrate_below = 0.2")
                .judge(&s, &[], d)
                .pass
        );
        assert!(
            t("failures = \"factory_init_failed\"\nat_most = 0")
                .judge(&s, &[], d)
                .pass
        );
        assert!(
            t("check = \"s/x\"\npass_rate_at_least = 0.9")
                .judge(&s, &[], d)
                .pass
        );
        assert!(
            !t("check = \"*\"\npass_rate_at_least = 0.95")
                .judge(&s, &[], d)
                .pass
        );
    }

    #[test]
    fn malformed_thresholds_are_refused() {
        for bad in [
            "metric = \"x\"\nbelow = \"1s\"",
            "failures = \"*\"",
            "failures = \"*\"\nat_most = 1\nrate_below = 0.1",
            "metric = \"x\"\nstat = \"p99\"\nbelow = \"1s\"\nfailures = \"*\"",
            "check = \"x\"\npass_rate_at_least = 1.5",
            "failures = \"*\"\nat_most = 0\ngrace = \"1s\"",
        ] {
            let th: Threshold = toml::from_str(bad).unwrap();
            assert!(th.check().is_err(), "{bad}");
        }
    }
}
