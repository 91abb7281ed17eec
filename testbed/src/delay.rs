//! Delay distributions for agent events: fixed, uniform, normal (truncated at 0) and log-normal
//! given by its median and p99.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix;

/// z-score of the 99th percentile of the standard normal distribution.
const Z_P99: f64 = 2.326_347_874_040_841;

/// A delay distribution, written in TOML as `{ kind = "fixed", value = "20ms" }`,
/// `{ kind = "uniform", min, max }`, `{ kind = "normal", mean, stddev }` or
/// `{ kind = "lognormal", median, p99 }`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Delay {
    /// Always `value`.
    Fixed {
        /// The delay.
        #[serde(with = "humantime_serde")]
        value: Duration,
    },
    /// Uniform in `[min, max]`.
    Uniform {
        /// Lower bound.
        #[serde(with = "humantime_serde")]
        min: Duration,
        /// Upper bound.
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
    /// Normal, negative draws clamped to 0.
    Normal {
        /// Mean.
        #[serde(with = "humantime_serde")]
        mean: Duration,
        /// Standard deviation.
        #[serde(with = "humantime_serde")]
        stddev: Duration,
    },
    /// Log-normal with the given median and 99th percentile (the "p99 knob").
    #[serde(rename = "lognormal")]
    LogNormal {
        /// Median.
        #[serde(with = "humantime_serde")]
        median: Duration,
        /// 99th percentile; must be at least the median.
        #[serde(with = "humantime_serde")]
        p99: Duration,
    },
}

impl Delay {
    /// No delay at all.
    pub const ZERO: Delay = Delay::Fixed {
        value: Duration::ZERO,
    };

    /// Rules serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Delay::Uniform { min, max } if min > max => Err("uniform: min exceeds max".into()),
            Delay::LogNormal { median, p99 } if p99 < median => {
                Err("lognormal: p99 is below the median".into())
            }
            Delay::LogNormal { median, .. } if median.is_zero() => {
                Err("lognormal: median must be above 0".into())
            }
            _ => Ok(()),
        }
    }

    /// One draw.
    pub fn sample(&self, rng: &mut SplitMix) -> Duration {
        let secs = match *self {
            Delay::Fixed { value } => return value,
            Delay::Uniform { min, max } => {
                let (lo, hi) = (min.as_secs_f64(), max.as_secs_f64());
                lo + (hi - lo) * rng.next_f64()
            }
            Delay::Normal { mean, stddev } => {
                mean.as_secs_f64() + stddev.as_secs_f64() * rng.next_normal()
            }
            Delay::LogNormal { median, p99 } => {
                let mu = median.as_secs_f64().ln();
                let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln() / Z_P99;
                (mu + sigma * rng.next_normal()).exp()
            }
        };
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantiles(delay: Delay, n: u64) -> (f64, f64, f64, f64) {
        let mut v: Vec<f64> = (0..n)
            .map(|i| delay.sample(&mut SplitMix::keyed(&[42, i])).as_secs_f64() * 1e3)
            .collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((n as f64 - 1.0) * p) as usize];
        let mean = v.iter().sum::<f64>() / n as f64;
        (q(0.0), q(0.5), q(0.99), mean)
    }

    #[test]
    fn fixed_is_exact() {
        let d = Delay::Fixed {
            value: Duration::from_millis(7),
        };
        assert_eq!(
            d.sample(&mut SplitMix::keyed(&[1])),
            Duration::from_millis(7)
        );
    }

    #[test]
    fn uniform_stays_in_bounds_and_centres() {
        let d = Delay::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(30),
        };
        let (min, median, _, mean) = quantiles(d, 20_000);
        assert!(min >= 10.0);
        assert!((median - 20.0).abs() < 0.5, "{median}");
        assert!((mean - 20.0).abs() < 0.5, "{mean}");
    }

    #[test]
    fn normal_has_its_mean_and_spread() {
        let d = Delay::Normal {
            mean: Duration::from_millis(50),
            stddev: Duration::from_millis(5),
        };
        let (_, median, p99, mean) = quantiles(d, 50_000);
        assert!((mean - 50.0).abs() < 0.2, "{mean}");
        assert!((median - 50.0).abs() < 0.2, "{median}");
        // p99 of N(50, 5) is 50 + 2.326 * 5 = 61.6
        assert!((p99 - 61.6).abs() < 0.6, "{p99}");
    }

    #[test]
    fn lognormal_hits_median_and_p99_knob() {
        let d = Delay::LogNormal {
            median: Duration::from_millis(20),
            p99: Duration::from_millis(200),
        };
        let (_, median, p99, _) = quantiles(d, 100_000);
        assert!((median - 20.0).abs() < 0.6, "{median}");
        assert!((p99 - 200.0).abs() < 12.0, "{p99}");
    }

    #[test]
    fn bad_shapes_are_refused() {
        let d = Delay::Uniform {
            min: Duration::from_millis(2),
            max: Duration::from_millis(1),
        };
        assert!(d.check().is_err());
        let d = Delay::LogNormal {
            median: Duration::from_millis(2),
            p99: Duration::from_millis(1),
        };
        assert!(d.check().is_err());
    }
}
