//! Load shapes over time, as pure functions: how many VUs the closed model wants at `t`, and
//! when the open model's `k`-th session is due. Engines drive their clocks from these.

use std::time::Duration;

use crate::plan::{Load, Stage};

/// The ramp of a load: a start value and stages (or one flat stage of `duration`).
#[derive(Debug, Clone)]
pub struct Ramp {
    start: f64,
    stages: Vec<Stage>,
}

impl Ramp {
    /// The ramp of `load` (VUs for the closed model, sessions/s for the open one). A load with
    /// `iterations` and neither duration nor stages has no time bound: `total()` is `None`.
    pub fn of(load: &Load) -> Ramp {
        let (start, stages) = load.ramp();
        Ramp { start, stages }
    }

    /// How long sessions keep starting; `None` when only iterations bound the run.
    pub fn total(&self) -> Option<Duration> {
        (!self.stages.is_empty()).then(|| self.stages.iter().map(|s| s.duration).sum())
    }

    /// The value at `t` (the last stage's target after the end; the start value without
    /// stages).
    pub fn value_at(&self, t: Duration) -> f64 {
        let mut from = self.start;
        let mut elapsed = Duration::ZERO;
        for stage in &self.stages {
            if t < elapsed + stage.duration {
                let f = (t - elapsed).as_secs_f64() / stage.duration.as_secs_f64();
                return from + (stage.target - from) * f;
            }
            elapsed += stage.duration;
            from = stage.target;
        }
        from
    }

    /// Closed model: VUs wanted at `t` (VU ids `0..n` run).
    pub fn vus_at(&self, t: Duration) -> u64 {
        self.value_at(t).max(0.0).floor() as u64
    }

    /// Open model: when arrival `k` (0-based) is due, or `None` if the ramp ends first.
    /// Arrival `k` is due when the integral of the rate reaches `k`.
    pub fn arrival_time(&self, k: u64) -> Option<Duration> {
        let k = k as f64;
        let mut from = self.start;
        let mut elapsed = 0.0f64;
        let mut count = 0.0f64;
        for stage in &self.stages {
            let d = stage.duration.as_secs_f64();
            let to = stage.target;
            let in_stage = (from + to) / 2.0 * d;
            if k < count + in_stage {
                let need = k - count;
                let a = (to - from) / (2.0 * d);
                let tau = if a.abs() < 1e-12 {
                    need / from
                } else {
                    (-from + (from * from + 4.0 * a * need).max(0.0).sqrt()) / (2.0 * a)
                };
                return Some(Duration::from_secs_f64(elapsed + tau.clamp(0.0, d)));
            }
            count += in_stage;
            elapsed += d;
            from = to;
        }
        None
    }

    /// The load planned between the start and `t`: the integral of the ramp (VU-seconds for
    /// the closed model, arrivals for the open one). `delivered` compares these.
    pub fn integral(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        let mut from = self.start;
        let mut elapsed = 0.0f64;
        let mut sum = 0.0f64;
        for stage in &self.stages {
            let d = stage.duration.as_secs_f64();
            if t <= elapsed {
                break;
            }
            let part = (t - elapsed).min(d);
            let at = if d > 0.0 {
                from + (stage.target - from) * part / d
            } else {
                stage.target
            };
            sum += (from + at) / 2.0 * part;
            elapsed += d;
            from = stage.target;
        }
        sum
    }

    /// Closed model: the VU-seconds that VUs `lo..hi` are planned to run between `from` and
    /// `to` (VU `i` runs while the ramp's whole-VU count exceeds `i`), exact for linear stages.
    /// A share of VUs delivered its planned load when it covered this.
    pub fn vu_seconds(&self, lo: u64, hi: u64, from: Duration, to: Duration) -> f64 {
        let n = hi.saturating_sub(lo) as f64;
        let lo = lo as f64;
        // g(v): VUs of the range running when the ramp stands at v; G: its integral over v.
        let g = |v: f64| (v.max(0.0).floor() - lo).clamp(0.0, n);
        let big_g = |x: f64| {
            let x = x.max(0.0);
            let k = x.floor();
            // Sum of g(j) for whole j in 0..k: 0 up to lo, then 1, 2, ... n, then n each.
            let m = k - 1.0;
            let s = if m <= lo {
                0.0
            } else {
                let p = (m.min(lo + n) - lo).max(0.0);
                p * (p + 1.0) / 2.0 + n * (m - lo - n).max(0.0)
            };
            s + (x - k) * g(k)
        };
        let (from, to) = (from.as_secs_f64(), to.as_secs_f64());
        let mut v0 = self.start;
        let mut start = 0.0f64;
        let mut sum = 0.0;
        for stage in &self.stages {
            let d = stage.duration.as_secs_f64();
            let (a, b) = (from.max(start), to.min(start + d));
            if b > a && d > 0.0 {
                let slope = (stage.target - v0) / d;
                let va = v0 + slope * (a - start);
                let vb = v0 + slope * (b - start);
                sum += if slope.abs() < 1e-12 {
                    g(va) * (b - a)
                } else {
                    (big_g(vb) - big_g(va)) / slope
                };
            }
            start += d;
            v0 = stage.target;
        }
        sum
    }

    /// Open model: arrivals the whole ramp plans (fleet-wide).
    pub fn planned_arrivals(&self) -> u64 {
        let mut from = self.start;
        let mut count = 0.0;
        for stage in &self.stages {
            count += (from + stage.target) / 2.0 * stage.duration.as_secs_f64();
            from = stage.target;
        }
        // Arrival k exists when k < count.
        count.ceil().max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_integral_is_the_planned_load_so_far() {
        let r = ramp(0.0, &[(10, 10.0), (10, 10.0)]);
        assert!((r.integral(Duration::from_secs(10)) - 50.0).abs() < 1e-9);
        assert!((r.integral(Duration::from_secs(20)) - 150.0).abs() < 1e-9);
        assert!((r.integral(Duration::from_secs(99)) - 150.0).abs() < 1e-9);
        assert!((r.integral(Duration::from_secs(5)) - 12.5).abs() < 1e-9);
        assert_eq!(r.integral(Duration::ZERO), 0.0);
    }

    #[test]
    fn vu_seconds_follow_the_whole_vus_of_a_range() {
        let flat = ramp(10.0, &[(10, 10.0)]);
        let s = |r: &Ramp, lo, hi, a, b| {
            r.vu_seconds(lo, hi, Duration::from_secs(a), Duration::from_secs(b))
        };
        // 10 VUs cut 3/3/4 carry 30/30/40 % of the VU-seconds, not a third each.
        assert!((s(&flat, 0, 3, 0, 10) - 30.0).abs() < 1e-9);
        assert!((s(&flat, 6, 10, 0, 10) - 40.0).abs() < 1e-9);
        assert!((s(&flat, 6, 10, 5, 10) - 20.0).abs() < 1e-9);
        // A ramp 0 -> 12 over 12 s: VU i runs from t = i + 1 on, so 0..4 run 11+10+9+8 s.
        let up = ramp(0.0, &[(12, 12.0)]);
        assert!((s(&up, 0, 4, 0, 12) - 38.0).abs() < 1e-9);
        assert!((s(&up, 8, 12, 0, 12) - 6.0).abs() < 1e-9);
        let all = s(&up, 0, 12, 0, 12);
        assert!((all - 66.0).abs() < 1e-9, "{all}");
        // Down again: the whole ramp's ranges add up.
        let hill = ramp(0.0, &[(12, 12.0), (12, 0.0)]);
        let parts: f64 = [(0, 4), (4, 8), (8, 12)]
            .iter()
            .map(|(lo, hi)| s(&hill, *lo, *hi, 0, 24))
            .sum();
        assert!((parts - s(&hill, 0, 12, 0, 24)).abs() < 1e-9);
    }

    fn ramp(start: f64, stages: &[(u64, f64)]) -> Ramp {
        Ramp {
            start,
            stages: stages
                .iter()
                .map(|(s, t)| Stage {
                    duration: Duration::from_secs(*s),
                    target: *t,
                })
                .collect(),
        }
    }

    #[test]
    fn constant_rate_spaces_arrivals_evenly() {
        let r = ramp(10.0, &[(2, 10.0)]);
        assert_eq!(r.arrival_time(0), Some(Duration::ZERO));
        assert_eq!(r.arrival_time(5), Some(Duration::from_millis(500)));
        assert_eq!(r.arrival_time(19), Some(Duration::from_millis(1900)));
        assert_eq!(r.arrival_time(20), None);
        assert_eq!(r.planned_arrivals(), 20);
    }

    #[test]
    fn linear_ramp_integrates_the_rate() {
        // 0 -> 10/s over 2 s: 10 arrivals; the 5th half-way through the area, at sqrt(2) s.
        let r = ramp(0.0, &[(2, 10.0), (1, 0.0)]);
        assert_eq!(r.planned_arrivals(), 15);
        let t = r.arrival_time(5).unwrap().as_secs_f64();
        assert!((t - 2f64.sqrt()).abs() < 1e-9, "{t}");
        let mut last = Duration::ZERO;
        for k in 0..15 {
            let t = r.arrival_time(k).unwrap();
            assert!(t >= last);
            last = t;
        }
        assert_eq!(r.arrival_time(15), None);
    }

    #[test]
    fn closed_ramp_counts_vus() {
        let r = ramp(2.0, &[(10, 12.0), (10, 12.0), (5, 0.0)]);
        assert_eq!(r.vus_at(Duration::ZERO), 2);
        assert_eq!(r.vus_at(Duration::from_secs(5)), 7);
        assert_eq!(r.vus_at(Duration::from_secs(15)), 12);
        assert_eq!(r.vus_at(Duration::from_secs(30)), 0);
        assert_eq!(r.total(), Some(Duration::from_secs(25)));
    }
}
