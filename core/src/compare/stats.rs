//! The statistics behind a comparison, computed from what report.json carries: a rank test
//! (Mann–Whitney U) from two HdrHistograms bucket by bucket, its effect size (Vargha–Delaney
//! A), distribution-free confidence intervals for quantiles (binomial order statistics of the
//! histogram), and a two-proportion test for failure rates (pooled z, or Fisher's exact test
//! when a count is small). Pure arithmetic: no rule about what is "significant" lives here
//! (that is `compare::rule`).

use hdrhistogram::Histogram;

/// A histogram's non-empty buckets, ascending: `(value, count)`, the value being the highest
/// value the bucket stands for (as `value_at_quantile` reports it). Two gauntlet histograms
/// (same precision, from 1 us) have the same buckets, so equal values are tied samples.
pub fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Mann–Whitney U of two samples given as buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankTest {
    /// Samples before.
    pub n_before: u64,
    /// Samples after.
    pub n_after: u64,
    /// U of the later sample: pairs (before, after) in which the later value is larger, a tie
    /// counting one half.
    pub u_after: f64,
    /// The normal approximation's z (tie-corrected, with continuity correction); positive
    /// when the later values tend to be larger.
    pub z: f64,
    /// Two-sided p-value of z.
    pub p_value: f64,
    /// Vargha–Delaney A: the probability that a later sample is larger than an earlier one,
    /// ties counting one half (`u_after / (n_before * n_after)`); 0.5 is no effect.
    pub a: f64,
}

/// The rank test of `after` against `before` (buckets as [`buckets`] gives them: ascending,
/// values distinct within one side). `None` when either side is empty.
///
/// Every sample in a bucket is tied with every other sample in the same bucket, on either side
/// (a histogram knows values only to its bucket's width, 0.1 % here): each gets the bucket's
/// mid-rank, and the variance of U carries the usual tie correction
/// `n1 n2 / 12 * ((N + 1) - sum(t^3 - t) / (N (N - 1)))`.
pub fn mann_whitney(before: &[(u64, u64)], after: &[(u64, u64)]) -> Option<RankTest> {
    let n1: u64 = before.iter().map(|b| b.1).sum();
    let n2: u64 = after.iter().map(|b| b.1).sum();
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (mut i, mut j) = (0, 0);
    // Earlier samples below the current value; U of the later sample; sum of t^3 - t.
    let mut below = 0f64;
    let mut u = 0f64;
    let mut ties = 0f64;
    while i < before.len() || j < after.len() {
        let v = match (before.get(i), after.get(j)) {
            (Some(b), Some(a)) => b.0.min(a.0),
            (Some(b), None) => b.0,
            (None, Some(a)) => a.0,
            (None, None) => break,
        };
        let b = match before.get(i) {
            Some(&(value, count)) if value == v => {
                i += 1;
                count as f64
            }
            _ => 0.0,
        };
        let a = match after.get(j) {
            Some(&(value, count)) if value == v => {
                j += 1;
                count as f64
            }
            _ => 0.0,
        };
        u += a * (below + b / 2.0);
        below += b;
        let t = a + b;
        ties += t * t * t - t;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let n = n1f + n2f;
    let mean = n1f * n2f / 2.0;
    let variance = n1f * n2f / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let (z, p_value) = if variance > 0.0 {
        let d = u - mean;
        let z = d.signum() * (d.abs() - 0.5).max(0.0) / variance.sqrt();
        (z, two_sided(z))
    } else {
        // Every sample in one bucket: nothing to tell apart.
        (0.0, 1.0)
    };
    Some(RankTest {
        n_before: n1,
        n_after: n2,
        u_after: u,
        z,
        p_value,
        a: u / (n1f * n2f),
    })
}

/// The 1-based ranks `(l, u)` of the order statistics that bound quantile `q` of `n` samples
/// with at least `confidence` coverage, whatever the distribution: `P(l <= B < u) >=
/// confidence` for `B ~ Binomial(n, q)`, each tail at most `(1 - confidence) / 2`. Exact
/// binomial sums, over the part of the distribution that carries mass (the mean +/- 40
/// standard deviations: beyond, each term is below 1e-300), so a million samples cost a few
/// thousand terms. `None` when `n` is too small for the interval to be bounded by samples on
/// both sides (a p99 needs 528 samples at 99 %).
pub fn quantile_ranks(n: u64, q: f64, confidence: f64) -> Option<(u64, u64)> {
    if n == 0 || q <= 0.0 || q >= 1.0 {
        return None;
    }
    let tail = (1.0 - confidence) / 2.0;
    let nf = n as f64;
    let reach = 40.0 * (nf * q * (1.0 - q)).sqrt() + 10.0;
    let lo = (nf * q - reach).max(0.0).floor() as u64;
    let hi = ((nf * q + reach).ceil() as u64).min(n);
    let (lq, lp) = (q.ln(), (1.0 - q).ln());
    let ln_n = ln_factorial(n);
    // P(B <= lo - 1) is nothing: rank lo bounds from below.
    let mut l = (lo > 0).then_some(lo);
    let mut u = None;
    let mut cdf = 0.0;
    for j in lo..=hi {
        let ln_pmf =
            ln_n - ln_factorial(j) - ln_factorial(n - j) + j as f64 * lq + (n - j) as f64 * lp;
        cdf = (cdf + ln_pmf.exp()).min(1.0);
        // Rank j + 1 has P(B <= j) below it.
        if cdf <= tail {
            l = Some(j + 1);
        }
        if u.is_none() && cdf >= 1.0 - tail {
            u = Some(j + 1);
        }
    }
    match (l, u) {
        (Some(l), Some(u)) if u <= n => Some((l, u)),
        _ => None,
    }
}

/// The value of the sample of 1-based rank `k` in `buckets` (the largest when `k` is beyond).
pub fn value_at_rank(buckets: &[(u64, u64)], k: u64) -> u64 {
    let mut seen = 0u64;
    for &(value, count) in buckets {
        seen = seen.saturating_add(count);
        if seen >= k {
            return value;
        }
    }
    buckets.last().map_or(0, |b| b.0)
}

/// A distribution-free confidence interval `[low, high]` (microseconds) for quantile `q` of
/// the samples in `buckets` ([`quantile_ranks`], [`value_at_rank`]).
pub fn quantile_interval(buckets: &[(u64, u64)], q: f64, confidence: f64) -> Option<[u64; 2]> {
    let n: u64 = buckets.iter().map(|b| b.1).sum();
    let (l, u) = quantile_ranks(n, q, confidence)?;
    Some([value_at_rank(buckets, l), value_at_rank(buckets, u)])
}

/// How a difference of two proportions was tested.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProportionMethod {
    /// The pooled two-proportion z-test (every expected count at least 5).
    Z,
    /// Fisher's exact test, two-sided (some expected count below 5, where z is unreliable).
    Fisher,
}

/// A two-proportion test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProportionTest {
    /// Which test.
    pub method: ProportionMethod,
    /// z of the pooled test (also computed when Fisher's decided; 0 when no variation).
    pub z: f64,
    /// Two-sided p-value of the test used.
    pub p_value: f64,
}

/// Whether `x2` of `n2` differs from `x1` of `n1` (the later proportion against the earlier).
/// `None` when either `n` is 0 or an `x` exceeds its `n`.
pub fn two_proportions(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<ProportionTest> {
    if n1 == 0 || n2 == 0 || x1 > n1 || x2 > n2 {
        return None;
    }
    let (x1f, n1f, x2f, n2f) = (x1 as f64, n1 as f64, x2 as f64, n2 as f64);
    let pooled = (x1f + x2f) / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    let z = if se > 0.0 {
        (x2f / n2f - x1f / n1f) / se
    } else {
        0.0
    };
    let expected = [
        n1f * pooled,
        n1f * (1.0 - pooled),
        n2f * pooled,
        n2f * (1.0 - pooled),
    ];
    if expected.iter().all(|e| *e >= 5.0) {
        return Some(ProportionTest {
            method: ProportionMethod::Z,
            z,
            p_value: two_sided(z),
        });
    }
    Some(ProportionTest {
        method: ProportionMethod::Fisher,
        z,
        p_value: fisher_exact(x1, n1, x2, n2),
    })
}

/// Fisher's exact test of the 2x2 table `[[x1, n1 - x1], [x2, n2 - x2]]`, two-sided: the
/// probability, given the margins, of a table no more likely than the one observed.
pub fn fisher_exact(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    let k = x1 + x2;
    let n = n1 + n2;
    let ln_total = ln_choose(n, k);
    let ln_p = |a: u64| ln_choose(n1, a) + ln_choose(n2, k - a) - ln_total;
    let observed = ln_p(x1);
    let lo = k.saturating_sub(n2);
    let hi = k.min(n1);
    let mut p = 0.0;
    for a in lo..=hi {
        let l = ln_p(a);
        // The relative tolerance R's fisher.test uses, so equal tables count as equal.
        if l <= observed + 1e-7 {
            p += l.exp();
        }
    }
    p.min(1.0)
}

/// Two-sided p-value of a standard normal z.
pub fn two_sided(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0)
}

/// The complementary error function (Chebyshev fit, fractional error below 1.2e-7 everywhere;
/// Numerical Recipes' `erfcc`).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The standard normal quantile of `p` in (0, 1), by bisection on [`erfc`] (60 halvings:
/// far finer than erfc's own precision).
pub fn normal_quantile(p: f64) -> f64 {
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        // P(Z <= mid) = erfc(-mid / sqrt 2) / 2.
        if erfc(-mid / std::f64::consts::SQRT_2) / 2.0 < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// `ln(n!)`.
pub fn ln_factorial(n: u64) -> f64 {
    ln_gamma(n as f64 + 1.0)
}

/// `ln(n choose k)` (`-inf` when `k > n`).
pub fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// `ln Γ(x)`: the findings' own ([`crate::report::odds::ln_gamma`]).
use crate::report::odds::ln_gamma;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::histogram;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn hist(values: &[(u64, u64)]) -> Histogram<u64> {
        let mut h = histogram();
        for &(v, n) in values {
            h.record_n(v, n).unwrap();
        }
        h
    }

    #[test]
    fn the_special_functions_match_tables() {
        assert!(close(erfc(0.0), 1.0, 1e-7));
        assert!(close(two_sided(1.959_964), 0.05, 1e-6));
        assert!(close(two_sided(2.575_829), 0.01, 1e-7));
        assert!(close(two_sided(-3.290_527), 0.001, 1e-8));
        assert!(close(normal_quantile(0.975), 1.959_964, 1e-5));
        assert!(close(normal_quantile(0.995), 2.575_829, 1e-5));
        assert!(close(ln_factorial(10), 3_628_800f64.ln(), 1e-10));
        assert!(close(ln_choose(52, 5), 2_598_960f64.ln(), 1e-10));
        assert!(close(ln_factorial(0), 0.0, 1e-12));
    }

    #[test]
    fn identical_samples_give_a_half_and_p_one() {
        let h = hist(&[(1_000, 40), (2_000, 30), (5_000, 30)]);
        let t = mann_whitney(&buckets(&h), &buckets(&h)).unwrap();
        assert_eq!((t.n_before, t.n_after), (100, 100));
        assert_eq!(t.a, 0.5);
        assert_eq!(t.u_after, 5_000.0);
        assert_eq!(t.z, 0.0);
        assert_eq!(t.p_value, 1.0);
    }

    #[test]
    fn a_shift_has_the_right_sign_and_separated_samples_give_a_of_one() {
        let before = hist(&(1..=50).map(|i| (1_000 + 10 * i, 1)).collect::<Vec<_>>());
        let after = hist(&(1..=50).map(|i| (2_000 + 10 * i, 1)).collect::<Vec<_>>());
        let up = mann_whitney(&buckets(&before), &buckets(&after)).unwrap();
        assert_eq!(up.a, 1.0);
        assert_eq!(up.u_after, 2_500.0);
        assert!(up.z > 0.0 && up.p_value < 1e-15, "{up:?}");
        // The normal approximation of two separated samples of 50: z = (2500 - 1250 - 0.5) /
        // sqrt(50 * 50 * 101 / 12).
        assert!(close(
            up.z,
            1_249.5 / (2_500.0 * 101.0 / 12.0f64).sqrt(),
            1e-12
        ));
        let down = mann_whitney(&buckets(&after), &buckets(&before)).unwrap();
        assert_eq!(down.a, 0.0);
        assert!(close(down.z, -up.z, 1e-12));
    }

    #[test]
    fn ties_get_mid_ranks_and_the_tie_corrected_variance() {
        // before: 1, 2, 2, 3; after: 2, 3, 3, 4 (values in us, each its own bucket).
        let before = hist(&[(1, 1), (2, 2), (3, 1)]);
        let after = hist(&[(2, 1), (3, 2), (4, 1)]);
        let t = mann_whitney(&buckets(&before), &buckets(&after)).unwrap();
        // Pairs where after > before, ties half: 2 vs {1} + half of {2,2} = 2;
        // 3 vs {1,2,2} + half {3} = 3.5, twice; 4 vs all 4 = 4. U = 13.
        assert_eq!(t.u_after, 13.0);
        assert_eq!(t.a, 13.0 / 16.0);
        // Ties: value 2 (t = 3), value 3 (t = 3): sum t^3 - t = 48; N = 8.
        let var: f64 = 16.0 / 12.0 * (9.0 - 48.0 / 56.0);
        assert!(close(t.z, (13.0 - 8.0 - 0.5) / var.sqrt(), 1e-12), "{t:?}");
        // Every sample in one bucket on both sides: no variance, nothing to tell apart.
        let one = hist(&[(1_500, 30)]);
        let t = mann_whitney(&buckets(&one), &buckets(&one)).unwrap();
        assert_eq!((t.a, t.p_value), (0.5, 1.0));
        assert!(mann_whitney(&[], &buckets(&one)).is_none());
    }

    #[test]
    fn quantile_ranks_match_the_binomial_tables() {
        // The classic 95 % interval of a median of 100 samples: x(40) to x(61).
        assert_eq!(quantile_ranks(100, 0.5, 0.95), Some((40, 61)));
        // Of 20 samples at 99 %: x(4) to x(17) (P(B <= 3) = 0.0013, P(B <= 4) = 0.0059).
        assert_eq!(quantile_ranks(20, 0.5, 0.99), Some((4, 17)));
        // Too few samples to bound a p99 at 99 % on both sides: 0.99^n must be below 0.005.
        assert_eq!(quantile_ranks(527, 0.99, 0.99), None);
        assert!(quantile_ranks(528, 0.99, 0.99).is_some());
        // A million samples: centred on the quantile, about 2.58 standard deviations a side
        // (sd = sqrt(n q (1 - q)) = 99.5 ranks for a p99).
        let (l, u) = quantile_ranks(1_000_000, 0.99, 0.99).unwrap();
        assert!(
            l.abs_diff(990_000 - 256) <= 3 && u.abs_diff(990_000 + 257) <= 3,
            "{l}..{u}"
        );
        assert_eq!(quantile_ranks(0, 0.5, 0.99), None);
    }

    #[test]
    fn quantile_intervals_come_from_the_histogram() {
        // 100 samples at 1..=100 ms: the 95 % interval of the median is [40 ms, 61 ms] (each
        // value the highest of its bucket).
        let h = hist(&(1..=100).map(|i| (i * 1_000, 1)).collect::<Vec<_>>());
        let [lo, hi] = quantile_interval(&buckets(&h), 0.5, 0.95).unwrap();
        assert_eq!(lo, h.highest_equivalent(40_000));
        assert_eq!(hi, h.highest_equivalent(61_000));
        assert_eq!(
            value_at_rank(&buckets(&h), 1_000),
            h.highest_equivalent(100_000)
        );
    }

    #[test]
    fn two_proportions_on_known_figures() {
        // 45 of 100 against 60 of 100: pooled 0.525, z = 0.15 / sqrt(0.525 * 0.475 * 0.02)
        // = 2.1240, p = 0.0337 (any textbook's prop.test without continuity correction).
        let t = two_proportions(45, 100, 60, 100).unwrap();
        assert_eq!(t.method, ProportionMethod::Z);
        assert!(close(t.z, 2.123_977, 1e-5), "{t:?}");
        assert!(close(t.p_value, 0.033_672, 1e-6), "{t:?}");
        // A fall is a negative z.
        assert!(two_proportions(60, 100, 45, 100).unwrap().z < 0.0);
        // Small counts: Fisher's exact test. The lady tasting tea: 3 of 4 against 1 of 4,
        // two-sided p = 0.4857.
        let t = two_proportions(3, 4, 1, 4).unwrap();
        assert_eq!(t.method, ProportionMethod::Fisher);
        assert!(close(t.p_value, 0.485_714, 1e-6), "{t:?}");
        // 0 of 1000 against 8 of 1000: p = 2 * C(1000,8) / C(2000,8) = 0.0077035.
        let t = two_proportions(0, 1_000, 8, 1_000).unwrap();
        assert_eq!(t.method, ProportionMethod::Fisher);
        assert!(close(t.p_value, 0.007_703_5, 1e-6), "{t:?}");
        // No failure on either side: nothing differs.
        assert_eq!(two_proportions(0, 500, 0, 700).unwrap().p_value, 1.0);
        assert!(two_proportions(1, 0, 1, 10).is_none());
        assert!(two_proportions(11, 10, 1, 10).is_none());
    }
}
