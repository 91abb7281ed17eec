//! What counts as a change between two runs: the rule that turns the statistics of
//! `compare::stats` into "changed (p < 0.01, +x %)", "no significant change (within noise)"
//! or "no significant change (n too small)". A rank test on thousands of samples finds a 1 %
//! shift between two runs of the same plan on a busy machine; that is a real difference of the
//! machine, not of the service. So a latency is "changed" only when the difference is both
//! unlikely by chance and large enough to matter; `docs/report.md#comparing-two-runs` states
//! the rule and why.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::stats::{self, ProportionMethod};

/// The thresholds of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rule {
    /// A difference is put down to chance unless its p-value is below this.
    pub alpha: f64,
    /// Fewest samples (latency) or finished sessions (failure rates) on each side for a test.
    pub min_samples: u64,
    /// A latency effect is negligible while Vargha–Delaney A stays within `0.5 +/- this`
    /// (0.06: below a "small" effect).
    pub negligible_effect: f64,
    /// Smallest relative change of a median that counts (0.10: 10 %).
    pub min_relative: f64,
    /// Smallest absolute change of a median that counts, microseconds.
    pub min_shift_us: u64,
    /// Coverage of the quantile intervals (0.99).
    pub confidence: f64,
    /// Smallest factor by which a tail quantile (p95, p99) must grow or shrink to count when
    /// the median did not change (3: tripled, or down to a third).
    #[serde(default = "default_tail_ratio")]
    pub min_tail_ratio: f64,
    /// Smallest absolute change of that tail quantile, microseconds.
    #[serde(default = "default_tail_shift_us")]
    pub min_tail_shift_us: u64,
}

fn default_tail_ratio() -> f64 {
    3.0
}

fn default_tail_shift_us() -> u64 {
    100_000
}

/// The defaults: p < 0.01 with 20 samples a side; A beyond 0.5 +/- 0.06; a median moved by
/// 10 % and 5 ms; 99 % intervals. The floors come from measurement: 21 pairs of runs of one
/// plan against the testbed on a 2-core machine busy compiling (load 2.9 to 4.7) moved
/// `session` medians by up to 4 % (5.0 ms), event medians by up to 6 % (2.6 ms) and loopback
/// connection metrics (medians of 4 to 5 ms) by up to 2.4 ms (+50 %): each floor is at least
/// twice the largest move seen where it is the one that binds
/// (`docs/report.md#comparing-two-runs`).
impl Default for Rule {
    fn default() -> Rule {
        Rule {
            alpha: 0.01,
            min_samples: 20,
            negligible_effect: 0.06,
            min_relative: 0.10,
            min_shift_us: 5_000,
            confidence: 0.99,
            min_tail_ratio: default_tail_ratio(),
            min_tail_shift_us: default_tail_shift_us(),
        }
    }
}

/// What a comparison of one metric or failure rate found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A significant change: unlikely by chance and beyond the noise floor.
    Changed,
    /// Tested, and either likely by chance or too small to matter.
    WithinNoise,
    /// Fewer samples than `min_samples` on a side.
    NTooSmall,
    /// The data for a test is missing (a report without histograms).
    CannotTest,
}

/// Which way the later run moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Faster, or fewer failures.
    Better,
    /// Slower, or more failures.
    Worse,
    /// No difference (or nothing to tell).
    Same,
}

impl Direction {
    fn of(delta: f64) -> Direction {
        if delta > 0.0 {
            Direction::Worse
        } else if delta < 0.0 {
            Direction::Better
        } else {
            Direction::Same
        }
    }
}

/// How large a rank test's effect is (Vargha and Delaney's bands of |A - 0.5|: below 0.06,
/// 0.14, 0.21, and beyond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Magnitude {
    /// |A - 0.5| < 0.06.
    Negligible,
    /// Below 0.14.
    Small,
    /// Below 0.21.
    Medium,
    /// 0.21 or more.
    Large,
}

impl Magnitude {
    /// The band of Vargha–Delaney `a`.
    pub fn of(a: f64) -> Magnitude {
        match (a - 0.5).abs() {
            d if d < 0.06 => Magnitude::Negligible,
            d if d < 0.14 => Magnitude::Small,
            d if d < 0.21 => Magnitude::Medium,
            _ => Magnitude::Large,
        }
    }
}

/// The verdict on one metric's latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LatencyJudgement {
    /// Rank-test p-value (two-sided); null when not tested.
    pub p_value: Option<f64>,
    /// Vargha–Delaney A: the probability that a later sample is slower than an earlier one
    /// (ties count half); 0.5 is no effect.
    pub effect_size: Option<f64>,
    /// The band of `effect_size`.
    pub effect: Option<Magnitude>,
    /// Relative change of the median, `p50_after / p50_before - 1`; null when p50 before
    /// is 0.
    pub relative_change: Option<f64>,
    /// 99 % interval of p50 before, `[low, high]` microseconds.
    pub p50_ci_before: Option<[u64; 2]>,
    /// Of p50 after.
    pub p50_ci_after: Option<[u64; 2]>,
    /// Of p95 before (needs 108 samples).
    #[serde(default)]
    pub p95_ci_before: Option<[u64; 2]>,
    /// Of p95 after.
    #[serde(default)]
    pub p95_ci_after: Option<[u64; 2]>,
    /// Of p99 before (needs 528 samples).
    pub p99_ci_before: Option<[u64; 2]>,
    /// Of p99 after.
    pub p99_ci_after: Option<[u64; 2]>,
    /// When the tail changed but the median did not: which quantile (`p95` or `p99`) and its
    /// relative change (from the midpoints of its intervals).
    #[serde(default)]
    pub tail_change: Option<TailChange>,
    /// Which way the later run moved: the sign of `effect_size - 0.5` when tested, else of
    /// the median's change.
    pub direction: Direction,
    /// What was found.
    pub status: Status,
    /// `status` is `changed`.
    pub significant: bool,
    /// In words: `changed (p < 0.01, +12.3 %)`, `no significant change (within noise: ...)`,
    /// `no significant change (n too small: 12 and 9 samples)`, `cannot test (...)`.
    pub verdict: String,
}

/// A change of the tail alone: the median held, a high quantile moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TailChange {
    /// `p95` or `p99`.
    pub quantile: String,
    /// Its relative change, `after / before - 1` of the intervals' midpoints.
    pub relative_change: f64,
}

/// What one side of a latency comparison holds.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// Samples.
    pub count: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// The histogram's buckets ([`stats::buckets`]), when the report carries it.
    pub buckets: Option<&'a [(u64, u64)]>,
}

/// A signed percentage with one decimal: `+12.3 %`.
pub fn signed_percent(x: f64) -> String {
    format!("{:+.1} %", 100.0 * x)
}

/// `x` (below `floor` in size) as a signed percentage with as many decimals as it takes not
/// to round up to the floor: `+9.97 %` under 10 %, not `+10.0 %`.
fn percent_below(x: f64, floor: f64) -> String {
    let pct = 100.0 * x;
    for digits in 1..4 {
        let scale = 10f64.powi(digits);
        if ((pct * scale).round() / scale).abs() < 100.0 * floor {
            return format!("{pct:+.*} %", digits as usize);
        }
    }
    format!("{pct:+.4} %")
}

/// A p-value in words: `p < 0.01`, `p = 0.43`, `p < 0.0001`.
pub fn p_words(p: f64, alpha: f64) -> String {
    if p < 0.0001 {
        "p < 0.0001".into()
    } else if p < alpha {
        format!("p < {alpha}")
    } else {
        format!("p = {p:.2}")
    }
}

fn too_small(before: u64, after: u64, unit: &str) -> String {
    format!("no significant change (n too small: {before} and {after} {unit})")
}

impl Rule {
    /// Judges one metric, `before` against `after`.
    pub fn latency(&self, before: Side<'_>, after: Side<'_>) -> LatencyJudgement {
        let relative =
            (before.p50_us > 0).then(|| after.p50_us as f64 / before.p50_us as f64 - 1.0);
        let shift = after.p50_us as f64 - before.p50_us as f64;
        let mut j = LatencyJudgement {
            p_value: None,
            effect_size: None,
            effect: None,
            relative_change: relative,
            p50_ci_before: None,
            p50_ci_after: None,
            p95_ci_before: None,
            p95_ci_after: None,
            p99_ci_before: None,
            p99_ci_after: None,
            tail_change: None,
            direction: Direction::of(shift),
            status: Status::CannotTest,
            significant: false,
            verdict: String::new(),
        };
        let (b, a) = match (before.buckets, after.buckets) {
            (Some(b), Some(a)) => (b, a),
            (None, Some(_)) => {
                j.verdict = "cannot test (the earlier report.json has no histogram)".into();
                return j;
            }
            (Some(_), None) => {
                j.verdict = "cannot test (the later report.json has no histogram)".into();
                return j;
            }
            (None, None) => {
                j.verdict = "cannot test (report.json has no histogram)".into();
                return j;
            }
        };
        j.p50_ci_before = stats::quantile_interval(b, 0.5, self.confidence);
        j.p50_ci_after = stats::quantile_interval(a, 0.5, self.confidence);
        j.p95_ci_before = stats::quantile_interval(b, 0.95, self.confidence);
        j.p95_ci_after = stats::quantile_interval(a, 0.95, self.confidence);
        j.p99_ci_before = stats::quantile_interval(b, 0.99, self.confidence);
        j.p99_ci_after = stats::quantile_interval(a, 0.99, self.confidence);
        if before.count < self.min_samples || after.count < self.min_samples {
            j.status = Status::NTooSmall;
            j.verdict = too_small(before.count, after.count, "samples");
            return j;
        }
        let Some(test) = stats::mann_whitney(b, a) else {
            j.verdict = "cannot test (no samples)".into();
            return j;
        };
        j.p_value = Some(test.p_value);
        j.effect_size = Some(test.a);
        j.effect = Some(Magnitude::of(test.a));
        j.direction = Direction::of(test.a - 0.5);
        let overlap = match (j.p50_ci_before, j.p50_ci_after) {
            (Some([lb, hb]), Some([la, ha])) => la <= hb && lb <= ha,
            _ => true,
        };
        // Every condition must hold; the first that does not is the reason.
        let noise = if test.p_value >= self.alpha {
            Some(p_words(test.p_value, self.alpha))
        } else if (test.a - 0.5).abs() < self.negligible_effect {
            Some(format!(
                "{}, but A = {:.3} is a negligible effect",
                p_words(test.p_value, self.alpha),
                test.a
            ))
        } else if Direction::of(shift) != j.direction {
            Some(format!(
                "the median moved {} against the ranks (A = {:.3})",
                relative.map_or("from 0".into(), signed_percent),
                test.a
            ))
        } else if relative.is_none_or(|r| r.abs() < self.min_relative) {
            Some(format!(
                "the median moved {}, under {:.0} %",
                relative.map_or("from 0".into(), |r| percent_below(r, self.min_relative)),
                100.0 * self.min_relative
            ))
        } else if shift.abs() < self.min_shift_us as f64 {
            Some(format!(
                "the median moved {:+.2} ms, under {:.2} ms",
                shift / 1000.0,
                self.min_shift_us as f64 / 1000.0
            ))
        } else if overlap {
            Some(format!(
                "the medians' {:.0} % intervals overlap",
                100.0 * self.confidence
            ))
        } else {
            None
        };
        match noise {
            Some(why) => match self.tail(&j) {
                // The median held but the tail moved: a change of its own.
                Some((tail, [lb, hb], [la, ha])) => {
                    j.direction = Direction::of(tail.relative_change);
                    j.status = Status::Changed;
                    j.significant = true;
                    j.verdict = format!(
                        "changed in the tail ({} {}: {:.0} % intervals {:.2}-{:.2} ms and {:.2}-{:.2} ms do not overlap; the median: {why})",
                        tail.quantile,
                        signed_percent(tail.relative_change),
                        100.0 * self.confidence,
                        lb as f64 / 1000.0,
                        hb as f64 / 1000.0,
                        la as f64 / 1000.0,
                        ha as f64 / 1000.0,
                    );
                    j.tail_change = Some(tail);
                }
                None => {
                    j.status = Status::WithinNoise;
                    j.verdict = format!("no significant change (within noise: {why})");
                }
            },
            None => {
                j.status = Status::Changed;
                j.significant = true;
                j.verdict = format!(
                    "changed ({}, {})",
                    p_words(test.p_value, self.alpha),
                    relative.map_or("from 0".into(), signed_percent)
                );
            }
        }
        j
    }

    /// The tail's own change, for a metric whose median did not change: the highest of p99
    /// and p95 whose intervals exist on both sides, do not overlap, and whose midpoints moved
    /// by a factor of at least `min_tail_ratio` and by at least `min_tail_shift_us`. Disjoint
    /// intervals alone say little: between identical runs the tails move far more than the
    /// samples within one run suggest (the machine's own stalls), so the floors are what
    /// decide, and they sit above every move measured between identical runs
    /// (`docs/report.md#comparing-two-runs`).
    fn tail(&self, j: &LatencyJudgement) -> Option<(TailChange, [u64; 2], [u64; 2])> {
        [
            ("p99", j.p99_ci_before, j.p99_ci_after),
            ("p95", j.p95_ci_before, j.p95_ci_after),
        ]
        .into_iter()
        .find_map(|(q, before, after)| {
            let ([lb, hb], [la, ha]) = (before?, after?);
            if la <= hb && lb <= ha {
                return None;
            }
            let (mb, ma) = ((lb + hb) as f64 / 2.0, (la + ha) as f64 / 2.0);
            if mb <= 0.0 || ma <= 0.0 {
                return None;
            }
            let relative = ma / mb - 1.0;
            ((ma / mb).max(mb / ma) >= self.min_tail_ratio
                && (ma - mb).abs() >= self.min_tail_shift_us as f64)
                .then(|| {
                    (
                        TailChange {
                            quantile: q.into(),
                            relative_change: relative,
                        },
                        [lb, hb],
                        [la, ha],
                    )
                })
        })
    }

    /// Judges a failure rate: `before` of `n_before` finished sessions against `after` of
    /// `n_after`.
    pub fn rate(&self, before: u64, n_before: u64, after: u64, n_after: u64) -> RateChange {
        let rate = |x: u64, n: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let (rb, ra) = (rate(before, n_before), rate(after, n_after));
        let mut r = RateChange {
            before,
            after,
            n_before,
            n_after,
            rate_before: rb,
            rate_after: ra,
            relative_change: (rb > 0.0).then(|| ra / rb - 1.0),
            test: None,
            p_value: None,
            direction: Direction::of(ra - rb),
            status: Status::CannotTest,
            significant: false,
            verdict: String::new(),
        };
        if n_before < self.min_samples || n_after < self.min_samples {
            r.status = Status::NTooSmall;
            r.verdict = too_small(n_before, n_after, "sessions");
            return r;
        }
        let Some(test) = stats::two_proportions(before, n_before, after, n_after) else {
            r.verdict =
                format!("cannot test ({before} of {n_before} and {after} of {n_after} sessions)");
            return r;
        };
        r.test = Some(test.method);
        r.p_value = Some(test.p_value);
        let change = match r.relative_change {
            Some(x) => signed_percent(x),
            None => format!("0 -> {:.2} % of sessions", 100.0 * ra),
        };
        if test.p_value < self.alpha && ra != rb {
            r.status = Status::Changed;
            r.significant = true;
            r.verdict = format!("changed ({}, {change})", p_words(test.p_value, self.alpha));
        } else {
            r.status = Status::WithinNoise;
            r.verdict = format!(
                "no significant change (within noise: {})",
                p_words(test.p_value, self.alpha)
            );
        }
        r
    }
}

/// A failure rate before and after, and the verdict on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RateChange {
    /// Failed sessions before.
    pub before: u64,
    /// Failed sessions after.
    pub after: u64,
    /// Finished sessions (passed + failed) before.
    pub n_before: u64,
    /// Finished sessions after.
    pub n_after: u64,
    /// `before / n_before`.
    pub rate_before: f64,
    /// `after / n_after`.
    pub rate_after: f64,
    /// `rate_after / rate_before - 1`; null when nothing failed before.
    pub relative_change: Option<f64>,
    /// The test used: the pooled z-test, or Fisher's exact test when an expected count is
    /// below 5.
    pub test: Option<ProportionMethod>,
    /// Two-sided p-value.
    pub p_value: Option<f64>,
    /// Which way the rate moved.
    pub direction: Direction,
    /// What was found.
    pub status: Status,
    /// `status` is `changed`.
    pub significant: bool,
    /// In words.
    pub verdict: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::histogram;

    fn side(values: &[(u64, u64)]) -> (u64, u64, Vec<(u64, u64)>) {
        let mut h = histogram();
        for &(v, n) in values {
            h.record_n(v, n).unwrap();
        }
        (h.len(), h.value_at_quantile(0.5), stats::buckets(&h))
    }

    fn judge(
        rule: &Rule,
        b: &(u64, u64, Vec<(u64, u64)>),
        a: &(u64, u64, Vec<(u64, u64)>),
    ) -> LatencyJudgement {
        rule.latency(
            Side {
                count: b.0,
                p50_us: b.1,
                buckets: Some(&b.2),
            },
            Side {
                count: a.0,
                p50_us: a.1,
                buckets: Some(&a.2),
            },
        )
    }

    /// `n` samples spread evenly over `[from, from + width)` microseconds.
    fn spread(n: u64, from: u64, width: u64) -> Vec<(u64, u64)> {
        (0..n).map(|i| (from + i * width / n, 1)).collect()
    }

    #[test]
    fn identical_histograms_are_no_change() {
        let rule = Rule::default();
        let s = side(&spread(5_000, 20_000, 4_000));
        let j = judge(&rule, &s, &s);
        assert_eq!(j.status, Status::WithinNoise);
        assert!(!j.significant);
        assert_eq!(j.p_value, Some(1.0));
        assert_eq!(j.effect_size, Some(0.5));
        assert_eq!(j.direction, Direction::Same);
        assert_eq!(j.verdict, "no significant change (within noise: p = 1.00)");
    }

    #[test]
    fn a_doubled_latency_is_a_significant_worse_change_and_halving_it_better() {
        let rule = Rule::default();
        let before = side(&spread(200, 20_000, 2_000));
        let after = side(&spread(200, 40_000, 4_000));
        let j = judge(&rule, &before, &after);
        assert_eq!(j.status, Status::Changed, "{j:?}");
        assert!(j.significant);
        assert_eq!(j.direction, Direction::Worse);
        assert_eq!(j.effect_size, Some(1.0));
        assert_eq!(j.effect, Some(Magnitude::Large));
        assert_eq!(j.verdict, "changed (p < 0.0001, +100.0 %)");
        let back = judge(&rule, &after, &before);
        assert_eq!(
            (back.status, back.direction),
            (Status::Changed, Direction::Better)
        );
        assert_eq!(back.verdict, "changed (p < 0.0001, -50.0 %)");
    }

    #[test]
    fn a_significant_but_small_shift_is_within_noise() {
        let rule = Rule::default();
        // 20 000 samples each, shifted by 400 us (1.9 % of the 21 ms median): the rank test is sure, the
        // effect is not negligible (A = 0.6), but the median moved under 10 %.
        let before = side(&spread(20_000, 20_000, 2_000));
        let after = side(&spread(20_000, 20_400, 2_000));
        let j = judge(&rule, &before, &after);
        assert!(j.p_value.unwrap() < 1e-10, "{j:?}");
        assert_eq!(j.status, Status::WithinNoise);
        assert_eq!(
            j.verdict,
            "no significant change (within noise: the median moved +1.9 %, under 10 %)"
        );
        // A move just under the floor is not written as the floor.
        assert_eq!(percent_below(0.0997, 0.10), "+9.97 %");
        assert_eq!(percent_below(-0.031, 0.10), "-3.1 %");
        // A shift of 1 % of the spread: negligible effect.
        let after = side(&spread(20_000, 20_020, 2_000));
        let j = judge(&rule, &before, &after);
        assert!(j.p_value.unwrap() < 0.01, "{j:?}");
        assert_eq!(j.effect, Some(Magnitude::Negligible));
        assert!(
            j.verdict.contains("is a negligible effect"),
            "{}",
            j.verdict
        );
        // Sub-millisecond metrics: +50 % of 200 us is 0.10 ms, under the absolute floor.
        let before = side(&spread(2_000, 200, 20));
        let after = side(&spread(2_000, 300, 30));
        let j = judge(&rule, &before, &after);
        assert_eq!(j.status, Status::WithinNoise, "{j:?}");
        assert!(j.verdict.contains("under 5.00 ms"), "{}", j.verdict);
        // ... which a rule without the floor calls a change.
        let fine = Rule {
            min_shift_us: 0,
            ..Rule::default()
        };
        assert_eq!(judge(&fine, &before, &after).status, Status::Changed);
    }

    #[test]
    fn a_change_of_the_tail_alone_is_a_change_and_a_wobble_of_it_is_not() {
        let rule = Rule::default();
        // 1 000 samples over 100-110 ms; after, the same with the slowest 5 % replaced by
        // 1 s stalls: the median barely moves, p99 is 9 times what it was.
        let mut slowed = spread(950, 100_000, 9_500);
        slowed.push((1_000_000, 50));
        let before = side(&spread(1_000, 100_000, 10_000));
        let after = side(&slowed);
        let j = judge(&rule, &before, &after);
        assert_eq!(j.status, Status::Changed, "{j:?}");
        assert!(j.significant);
        assert_eq!(j.direction, Direction::Worse);
        let tail = j.tail_change.clone().unwrap();
        assert_eq!(tail.quantile, "p99");
        assert!(tail.relative_change > 8.0, "{tail:?}");
        assert!(
            j.verdict.starts_with("changed in the tail (p99 +")
                && j.verdict.contains("do not overlap; the median: "),
            "{}",
            j.verdict
        );
        // Without p99 intervals (under 528 samples), p95 decides: 200 samples, 10 % stalled.
        let mut few = spread(180, 100_000, 9_000);
        few.push((1_000_000, 20));
        let j = judge(&rule, &side(&spread(200, 100_000, 10_000)), &side(&few));
        assert_eq!(j.p99_ci_before, None);
        assert_eq!(j.tail_change.as_ref().unwrap().quantile, "p95", "{j:?}");
        assert_eq!(j.direction, Direction::Worse);
        // The stalls gone again: better, not a regression.
        let back = judge(&rule, &after, &before);
        assert_eq!(
            (back.status, back.direction),
            (Status::Changed, Direction::Better)
        );
        // The slowest 5 % at 300 ms instead (p99 2.7 times, +190 ms): the intervals are
        // apart, but the move is under the factor of 3 that noise between identical runs
        // reached.
        let mut wobble = spread(950, 100_000, 9_500);
        wobble.push((300_000, 50));
        let j = judge(&rule, &before, &side(&wobble));
        let ([_, hb], [la, _]) = (j.p99_ci_before.unwrap(), j.p99_ci_after.unwrap());
        assert!(la > hb, "{j:?}");
        assert_eq!(j.status, Status::WithinNoise, "{j:?}");
        assert_eq!(j.tail_change, None);
        // ... which a lower floor calls a change; a 3-fold tail of a fast metric (10 -> 30
        // ms) stays under the 100 ms floor.
        let fine = Rule {
            min_tail_ratio: 2.0,
            ..Rule::default()
        };
        assert_eq!(
            judge(&fine, &before, &side(&wobble)).status,
            Status::Changed
        );
        let mut fast = spread(950, 10_000, 950);
        fast.push((40_000, 50));
        let j = judge(&rule, &side(&spread(1_000, 10_000, 1_000)), &side(&fast));
        assert_eq!(j.status, Status::WithinNoise, "{j:?}");
    }

    #[test]
    fn few_samples_are_n_too_small_and_a_missing_histogram_cannot_be_tested() {
        let rule = Rule::default();
        let before = side(&spread(12, 20_000, 2_000));
        let after = side(&spread(9, 80_000, 2_000));
        let j = judge(&rule, &before, &after);
        assert_eq!(j.status, Status::NTooSmall);
        assert!(!j.significant);
        assert_eq!(
            j.verdict,
            "no significant change (n too small: 12 and 9 samples)"
        );
        assert_eq!(j.p_value, None);
        let b = side(&spread(500, 20_000, 2_000));
        let a = side(&spread(500, 40_000, 2_000));
        let old = rule.latency(
            Side {
                count: b.0,
                p50_us: b.1,
                buckets: None,
            },
            Side {
                count: a.0,
                p50_us: a.1,
                buckets: Some(&a.2),
            },
        );
        assert_eq!(old.status, Status::CannotTest);
        assert!(!old.significant);
        assert_eq!(
            old.verdict,
            "cannot test (the earlier report.json has no histogram)"
        );
        assert_eq!(old.relative_change, Some(a.1 as f64 / b.1 as f64 - 1.0));
    }

    #[test]
    fn failure_rates_are_tested_as_proportions() {
        let rule = Rule::default();
        // 45 of 100 against 60 of 100: p = 0.034, not below 0.01.
        let r = rule.rate(45, 100, 60, 100);
        assert_eq!(
            (r.status, r.direction),
            (Status::WithinNoise, Direction::Worse)
        );
        assert_eq!(r.test, Some(ProportionMethod::Z));
        assert_eq!(r.verdict, "no significant change (within noise: p = 0.03)");
        // 45 of 1000 against 90 of 1000: significant, twice the rate.
        let r = rule.rate(45, 1_000, 90, 1_000);
        assert!(r.significant);
        assert_eq!(r.verdict, "changed (p < 0.0001, +100.0 %)");
        // A new category: 0 of 1000 against 8 (Fisher, p = 0.0077) and against 3 (p = 0.25).
        let r = rule.rate(0, 1_000, 8, 1_000);
        assert_eq!(
            (r.status, r.test),
            (Status::Changed, Some(ProportionMethod::Fisher))
        );
        assert_eq!(r.verdict, "changed (p < 0.01, 0 -> 0.80 % of sessions)");
        assert!(!rule.rate(0, 1_000, 3, 1_000).significant);
        // Resolved: better.
        let r = rule.rate(40, 1_000, 0, 1_000);
        assert_eq!(
            (r.status, r.direction),
            (Status::Changed, Direction::Better)
        );
        // Nothing failed on either side.
        let r = rule.rate(0, 1_000, 0, 1_000);
        assert_eq!(
            (r.status, r.direction),
            (Status::WithinNoise, Direction::Same)
        );
        // Too few sessions.
        let r = rule.rate(5, 10, 0, 10);
        assert_eq!(
            r.verdict,
            "no significant change (n too small: 10 and 10 sessions)"
        );
    }
}
