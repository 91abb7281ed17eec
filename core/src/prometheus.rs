//! A latency histogram in Prometheus' terms, for the coordinator's `/metrics`: fixed bucket
//! bounds, the cumulative count of samples at or below each, exact quantiles, and seconds
//! written as exact decimals (docs/metrics.md).

use hdrhistogram::Histogram;

/// Upper bounds of the exposed buckets, microseconds: 1-2-5 steps from 1 ms to 100 s (16
/// bounds; `+Inf` follows). Fixed, so that every run and every metric can be summed by `le`.
pub const BUCKETS_US: [u64; 16] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
];

/// The quantiles exposed as summaries (the report's p50, p90, p95, p99 and p99.9), with their
/// `quantile` label.
pub const QUANTILES: [(f64, &str); 5] = [
    (0.5, "0.5"),
    (0.9, "0.9"),
    (0.95, "0.95"),
    (0.99, "0.99"),
    (0.999, "0.999"),
];

/// How far back the recent-window summary reaches: the snapshot intervals that began in the
/// last 10 s.
pub const RECENT_WINDOW_MS: u64 = 10_000;

/// A histogram as Prometheus buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buckets {
    /// Samples at or below each bound of [`BUCKETS_US`] (cumulative).
    pub cumulative: [u64; BUCKETS_US.len()],
    /// Every sample (the `+Inf` bucket and `_count`).
    pub count: u64,
    /// Sum of the samples, microseconds (each counted at the middle of its HdrHistogram bucket,
    /// as the report's mean is).
    pub sum_us: u128,
}

impl Buckets {
    /// The buckets of `h`. A sample counts at or below a bound when the value the report gives
    /// it (the highest value of its HdrHistogram bucket, as the report's percentiles are) is:
    /// then the report's quantile `q` and Prometheus' `histogram_quantile(q, ...)` of these
    /// buckets always fall in the same bucket.
    pub fn of(h: &Histogram<u64>) -> Buckets {
        let mut b = Buckets {
            count: h.len(),
            ..Buckets::default()
        };
        let mut bound = 0;
        let mut below = 0u64;
        for v in h.iter_recorded() {
            let value = v.value_iterated_to();
            let n = v.count_at_value();
            while bound < BUCKETS_US.len() && value > BUCKETS_US[bound] {
                b.cumulative[bound] = below;
                bound += 1;
            }
            below = below.saturating_add(n);
            b.sum_us = b
                .sum_us
                .saturating_add(u128::from(h.median_equivalent(value)) * u128::from(n));
        }
        for c in &mut b.cumulative[bound..] {
            *c = below;
        }
        b
    }
}

/// The exact quantiles [`QUANTILES`] of `h`, microseconds (what the report says of it).
pub fn quantiles(h: &Histogram<u64>) -> [u64; QUANTILES.len()] {
    QUANTILES.map(|(q, _)| h.value_at_quantile(q))
}

/// `us` microseconds as seconds, an exact decimal without trailing zeros (`1500` is `0.0015`,
/// `2000000` is `2`).
pub fn seconds(us: u128) -> String {
    let (whole, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::histogram;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_000), "0.001");
        assert_eq!(seconds(1_500), "0.0015");
        assert_eq!(seconds(105_375), "0.105375");
        assert_eq!(seconds(2_000_000), "2");
        assert_eq!(seconds(100_000_001), "100.000001");
        let le: Vec<String> = BUCKETS_US.iter().map(|b| seconds(u128::from(*b))).collect();
        assert_eq!(
            le.join(" "),
            "0.001 0.002 0.005 0.01 0.02 0.05 0.1 0.2 0.5 1 2 5 10 20 50 100"
        );
    }

    #[test]
    fn buckets_are_cumulative_and_count_every_sample() {
        let mut h = histogram();
        // 3 below 1 ms, 1 at exactly 1 ms, 2 at 7 ms, 1 at 3 min (beyond the last bound).
        for v in [10, 500, 999, 1_000, 7_000, 7_000, 180_000_000] {
            h.record(v).unwrap();
        }
        let b = Buckets::of(&h);
        assert_eq!(b.count, 7);
        assert_eq!(
            b.cumulative,
            [4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6]
        );
        assert!(b.cumulative.windows(2).all(|w| w[0] <= w[1]));
        let mean = h.mean() * h.len() as f64;
        assert!(
            (b.sum_us as f64 - mean).abs() < 1e-6 * mean,
            "{} {mean}",
            b.sum_us
        );
        assert_eq!(Buckets::of(&histogram()), Buckets::default());
    }

    /// Prometheus' `histogram_quantile` (promql/quantile.go, `bucketQuantile`) over buckets
    /// `(upper bound, cumulative count)` ending with `+Inf`.
    fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
        let observations = buckets[buckets.len() - 1].1;
        let rank = q * observations;
        let b = buckets[..buckets.len() - 1]
            .iter()
            .position(|(_, c)| *c >= rank)
            .unwrap_or(buckets.len() - 1);
        if b == buckets.len() - 1 {
            return buckets[buckets.len() - 2].0;
        }
        let (start, below) = if b == 0 { (0.0, 0.0) } else { buckets[b - 1] };
        let (end, count) = buckets[b];
        start + (end - start) * ((rank - below) / (count - below))
    }

    #[test]
    fn histogram_quantile_lands_in_the_bucket_of_the_reports_quantile() {
        // Values on and around the bounds, where HdrHistogram buckets straddle a bound
        // (50 ms: its bucket is 32 us wide there).
        let mut x = 11u64;
        let mut h = histogram();
        for i in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // (Not the last bound: beyond it histogram_quantile can only say the last bound.)
            let around = BUCKETS_US[(x >> 60) as usize % (BUCKETS_US.len() - 1)];
            let v = match i % 3 {
                0 => around,
                1 => around + (x >> 40) % 64,
                _ => 1 + (x >> 33) % 3_000_000,
            };
            h.record(v.saturating_sub((x >> 50) % 64)).unwrap();
        }
        let b = Buckets::of(&h);
        let mut series: Vec<(f64, f64)> = BUCKETS_US
            .iter()
            .zip(b.cumulative)
            .map(|(le, c)| (*le as f64 / 1e6, c as f64))
            .collect();
        series.push((f64::INFINITY, b.count as f64));
        let bucket_of_us = |us: u64| BUCKETS_US.iter().position(|le| us <= *le);
        let bucket_of_s = |s: f64| BUCKETS_US.iter().position(|le| s <= *le as f64 / 1e6);
        for q in [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999] {
            let exact = h.value_at_quantile(q);
            let estimate = histogram_quantile(q, &series);
            assert_eq!(
                bucket_of_s(estimate),
                bucket_of_us(exact),
                "q={q}: {estimate} s vs {exact} us"
            );
        }
        assert_eq!(quantiles(&h)[3], h.value_at_quantile(0.99));
    }
}
