//! Thresholds: pass/fail rules on latency percentiles, failure counts and rates, and check
//! pass rates, over the whole run or over any sliding window; judged once, centrally, on the
//! merged data. A threshold with nothing measured fails: no samples is never a pass.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::metrics::Snapshot;
use crate::report::ThresholdReport;

/// A latency statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
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

/// What is wrong with a threshold as written, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidThreshold(pub String);

/// One threshold, as written in a plan's `[[thresholds]]`. Exactly one of `metric`,
/// `failures` and `check` says what it is about; [`ThresholdSpec::check`] says what is wrong,
/// [`ThresholdSpec::resolve`] makes the typed [`Threshold`].
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// Latency: the metric (`session`, `event.agent-run.agent_completed`, ...).
    #[serde(default)]
    pub metric: Option<String>,
    /// Latency: which statistic.
    #[serde(default)]
    pub stat: Option<Stat>,
    /// Latency: the statistic must stay below this.
    #[serde(default, with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
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
    #[schemars(with = "Option<String>")]
    pub window: Option<Duration>,
    /// Stop the run as soon as it fails (after `grace`).
    #[serde(default)]
    pub abort_on_fail: bool,
    /// With `abort_on_fail`: not judged live before this much of the run has passed.
    #[serde(default, with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
    pub grace: Option<Duration>,
}

impl ThresholdSpec {
    /// Rules serde cannot express.
    pub fn check(&self) -> Result<(), InvalidThreshold> {
        let kinds = [
            self.metric.is_some(),
            self.failures.is_some(),
            self.check.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(InvalidThreshold(
                "give exactly one of metric, failures and check".into(),
            ));
        }
        if self.metric.is_some() && (self.stat.is_none() || self.below.is_none()) {
            return Err(InvalidThreshold(
                "a latency threshold needs stat and below".into(),
            ));
        }
        if self.metric.is_none() && (self.stat.is_some() || self.below.is_some()) {
            return Err(InvalidThreshold(
                "stat and below belong to a latency threshold (metric = ...)".into(),
            ));
        }
        if self.failures.is_some() && self.at_most.is_some() == self.rate_below.is_some() {
            return Err(InvalidThreshold(
                "a failures threshold needs exactly one of at_most and rate_below".into(),
            ));
        }
        if self.failures.is_none() && (self.at_most.is_some() || self.rate_below.is_some()) {
            return Err(InvalidThreshold(
                "at_most and rate_below belong to a failures threshold".into(),
            ));
        }
        if self.check.is_some() != self.pass_rate_at_least.is_some() {
            return Err(InvalidThreshold(
                "a check threshold needs check and pass_rate_at_least".into(),
            ));
        }
        for (name, v) in [
            ("rate_below", self.rate_below),
            ("pass_rate_at_least", self.pass_rate_at_least),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return Err(InvalidThreshold(format!(
                    "{name} must be between 0 and 1 (got {v})"
                )));
            }
        }
        if self.window.is_some_and(|w| w.is_zero()) {
            return Err(InvalidThreshold("window must be above 0".into()));
        }
        if self.grace.is_some() && !self.abort_on_fail {
            return Err(InvalidThreshold(
                "grace only applies with abort_on_fail = true".into(),
            ));
        }
        Ok(())
    }

    /// The typed threshold (`None` when [`ThresholdSpec::check`] would refuse it).
    pub fn resolve(&self) -> Option<Threshold> {
        self.check().ok()?;
        let rule = if let Some(metric) = &self.metric {
            Rule::Latency {
                metric: metric.clone(),
                stat: self.stat?,
                below: self.below?,
            }
        } else if let Some(category) = &self.failures {
            Rule::Failures {
                category: (category != "*").then(|| category.clone()),
                limit: match (self.at_most, self.rate_below) {
                    (Some(n), None) => FailureLimit::AtMost(n),
                    (None, Some(r)) => FailureLimit::RateBelow(r),
                    _ => return None,
                },
            }
        } else {
            let check = self.check.as_deref()?;
            Rule::Checks {
                check: (check != "*").then(|| check.to_owned()),
                pass_rate_at_least: self.pass_rate_at_least?,
            }
        };
        Some(Threshold {
            rule,
            window: self.window,
            abort: self.abort_on_fail.then(|| Abort {
                grace: self.grace.unwrap_or_default(),
            }),
        })
    }
}

/// A pass/fail rule, typed.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema, Serialize)]
pub struct Threshold {
    /// What it is about and its limit.
    pub rule: Rule,
    /// Judge over every sliding window of this length instead of the whole run.
    #[serde(with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
    pub window: Option<Duration>,
    /// Stop the run as soon as it fails, once past the grace.
    pub abort: Option<Abort>,
}

/// What a threshold is about, and its limit.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A latency statistic of a metric must stay below a limit.
    Latency {
        /// The metric (`session`, `event.agent-run.agent_completed`, ...).
        metric: String,
        /// Which statistic.
        stat: Stat,
        /// The statistic must stay below this.
        #[serde(with = "humantime_serde")]
        #[schemars(with = "String")]
        below: Duration,
    },
    /// Failed sessions of a category (or of any, `None`) within a limit.
    Failures {
        /// The category; `None` for every failed session.
        category: Option<String>,
        /// The limit.
        limit: FailureLimit,
    },
    /// Checks (one, or every one: `None`) must pass at least this often.
    Checks {
        /// The check name (`scenario/step`, `isolation:name`); `None` for all.
        check: Option<String>,
        /// The smallest fraction of evaluations that must pass.
        pass_rate_at_least: f64,
    },
}

/// The limit of a failures threshold.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureLimit {
    /// At most this many sessions.
    AtMost(u64),
    /// Fewer than this fraction of finished sessions.
    RateBelow(f64),
}

/// Stopping the run when a threshold fails live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
pub struct Abort {
    /// Not judged live before this much of the run has passed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub grace: Duration,
}

impl Threshold {
    /// The implicit threshold of a plan without any: no session may fail.
    pub fn no_failed_sessions() -> Threshold {
        Threshold {
            rule: Rule::Failures {
                category: None,
                limit: FailureLimit::AtMost(0),
            },
            window: None,
            abort: None,
        }
    }

    /// The threshold in words.
    pub fn expr(&self) -> String {
        let base = match &self.rule {
            Rule::Latency {
                metric,
                stat,
                below,
            } => format!(
                "{}({metric}) < {}",
                stat.name(),
                humantime::format_duration(*below)
            ),
            Rule::Failures { category, limit } => {
                let what = match category {
                    None => "failed sessions".to_owned(),
                    Some(c) => format!("failures[{c}]"),
                };
                match limit {
                    FailureLimit::AtMost(n) => format!("{what} <= {n}"),
                    FailureLimit::RateBelow(r) => format!("rate({what}) < {r}"),
                }
            }
            Rule::Checks {
                check,
                pass_rate_at_least,
            } => format!(
                "pass_rate(check {}) >= {pass_rate_at_least}",
                check.as_deref().unwrap_or("*")
            ),
        };
        match self.window {
            Some(w) => format!("{base} over any {} window", humantime::format_duration(w)),
            None => base,
        }
    }

    /// With `abort_on_fail`: the grace before it is judged live.
    pub fn abort_grace(&self) -> Option<Duration> {
        self.abort.map(|a| a.grace)
    }

    /// Judges the threshold. `total` is everything merged; `intervals` the per-interval
    /// deltas in order, each `interval` long (used by windowed thresholds).
    pub fn judge(
        &self,
        total: &Snapshot,
        intervals: &[Snapshot],
        interval: Duration,
    ) -> ThresholdReport {
        let observed = match self.window_intervals(interval) {
            None => self.observe(total),
            Some(k) => {
                let k = k.min(intervals.len().max(1));
                let mut worst = None;
                for start in 0..intervals.len().saturating_sub(k - 1) {
                    let mut merged = Snapshot::default();
                    for s in &intervals[start..start + k] {
                        merged.merge(s);
                    }
                    worst = self.worst(worst, self.observe(&merged));
                }
                worst
            }
        };
        self.report(observed)
    }

    /// A windowed threshold's window in intervals of `interval` (at least 1); `None` for a
    /// threshold on the whole run.
    pub fn window_intervals(&self, interval: Duration) -> Option<usize> {
        self.window
            .map(|w| (w.as_millis() / interval.as_millis().max(1)).max(1) as usize)
    }

    /// The worse of two observations (nothing observed is no observation).
    pub fn worst(&self, a: Option<f64>, b: Option<f64>) -> Option<f64> {
        match (a, b) {
            (Some(a), Some(b)) if self.worse(b, a) => Some(b),
            (Some(a), _) => Some(a),
            (None, b) => b,
        }
    }

    /// The threshold judged on `observed`: its value over the whole run, or its worst window.
    pub fn report(&self, observed: Option<f64>) -> ThresholdReport {
        let (unit, limit_ok): (&str, Box<dyn Fn(f64) -> bool>) = match &self.rule {
            Rule::Latency { below, .. } => {
                let limit = below.as_micros() as f64;
                ("us", Box::new(move |v| v < limit))
            }
            Rule::Failures {
                limit: FailureLimit::AtMost(n),
                ..
            } => {
                let n = *n;
                ("count", Box::new(move |v| v <= n as f64))
            }
            Rule::Failures {
                limit: FailureLimit::RateBelow(r),
                ..
            } => {
                let r = *r;
                ("ratio", Box::new(move |v| v < r))
            }
            Rule::Checks {
                pass_rate_at_least, ..
            } => {
                let r = *pass_rate_at_least;
                ("ratio", Box::new(move |v| v >= r))
            }
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
        match self.rule {
            Rule::Checks { .. } => a < b,
            _ => a > b,
        }
    }

    /// The observed value over `s`, `None` when there is nothing to judge.
    pub fn observe(&self, s: &Snapshot) -> Option<f64> {
        match &self.rule {
            Rule::Latency { metric, stat, .. } => {
                let h = s.histograms.get(metric).filter(|h| !h.is_empty())?;
                Some(stat.of(h))
            }
            Rule::Failures { category, limit } => {
                let failed: u64 = match category {
                    None => s.counters.sessions_failed,
                    Some(category) => s
                        .failures
                        .iter()
                        .filter(|(k, _)| k.category.as_str() == category)
                        .map(|(_, v)| v.count)
                        .sum(),
                };
                let finished = s.counters.sessions_passed + s.counters.sessions_failed;
                if finished == 0 {
                    return None;
                }
                Some(match limit {
                    FailureLimit::AtMost(_) => failed as f64,
                    FailureLimit::RateBelow(_) => failed as f64 / finished as f64,
                })
            }
            Rule::Checks { check, .. } => {
                let (run, failed) = s
                    .checks
                    .iter()
                    .filter(|(k, _)| check.as_ref().is_none_or(|c| *k == c))
                    .fold((0, 0), |(r, f), (_, c)| (r + c.run, f + c.failed));
                (run > 0).then(|| 1.0 - failed as f64 / run as f64)
            }
        }
    }
}

/// Metrics that windowed thresholds need kept per interval.
pub fn windowed_metrics(thresholds: &[Threshold]) -> Vec<String> {
    thresholds
        .iter()
        .filter(|t| t.window.is_some())
        .filter_map(|t| match &t.rule {
            Rule::Latency { metric, .. } => Some(metric.clone()),
            _ => None,
        })
        .collect()
}

pub use crate::report::show;

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
        let t: ThresholdSpec = toml::from_str(text).unwrap();
        t.check().unwrap();
        t.resolve().unwrap()
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
            let th: ThresholdSpec = toml::from_str(bad).unwrap();
            assert!(th.check().is_err(), "{bad}");
            assert!(th.resolve().is_none(), "{bad}");
        }
    }
}
