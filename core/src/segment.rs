//! Execution segments: a worker's share `[start, end)` of the whole load. Shares of a fleet
//! never overlap and always add up: VU ids are cut at `floor(fraction * total)`, and open-model
//! arrival `k` belongs to the segment holding the `k`-th point of the van der Corput sequence,
//! so every arrival has exactly one owner and each share stays within a few arrivals of its
//! fraction however long the run.

use std::ops::Range;

/// A fraction `[start, end)` of the load, `0 <= start < end <= 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecutionSegment {
    start: f64,
    end: f64,
}

impl ExecutionSegment {
    /// All of the load (one worker).
    pub const WHOLE: ExecutionSegment = ExecutionSegment {
        start: 0.0,
        end: 1.0,
    };

    /// `[start, end)` if it is a valid, non-empty part of `[0, 1)`.
    pub fn new(start: f64, end: f64) -> Option<ExecutionSegment> {
        (0.0 <= start && start < end && end <= 1.0).then_some(ExecutionSegment { start, end })
    }

    /// Start of the share.
    pub fn start(&self) -> f64 {
        self.start
    }

    /// End of the share.
    pub fn end(&self) -> f64 {
        self.end
    }

    /// Cuts `[0, 1)` into consecutive segments proportional to `weights` (zero weights get
    /// none: they are skipped). Empty when the weights add up to zero.
    pub fn split(weights: &[u64]) -> Vec<(usize, ExecutionSegment)> {
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return Vec::new();
        }
        let mut acc = 0u64;
        let mut out = Vec::new();
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            let start = acc as f64 / total as f64;
            acc += w;
            let end = if acc == total {
                1.0
            } else {
                acc as f64 / total as f64
            };
            out.push((i, ExecutionSegment { start, end }));
        }
        out
    }

    /// This share's VU ids out of `total` fleet-wide VUs.
    pub fn vus(&self, total: u64) -> Range<u64> {
        let cut = |f: f64| ((f * total as f64).floor() as u64).min(total);
        cut(self.start)..cut(self.end)
    }

    /// Whether open-model arrival `k` (0-based, fleet-wide) is this share's.
    pub fn owns_arrival(&self, k: u64) -> bool {
        let p = van_der_corput(k);
        self.start <= p && p < self.end
    }
}

/// The base-2 radical inverse of `k`: 0, 1/2, 1/4, 3/4, 1/8... (a low-discrepancy sequence).
pub fn van_der_corput(k: u64) -> f64 {
    k.reverse_bits() as f64 / 2f64.powi(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vu_ranges_partition_the_fleet() {
        let segs = ExecutionSegment::split(&[1, 2, 0, 3]);
        assert_eq!(segs.len(), 3);
        for total in [0, 1, 7, 100, 1001] {
            let mut next = 0;
            for (_, s) in &segs {
                let r = s.vus(total);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn every_arrival_has_one_owner_and_shares_do_not_drift() {
        let segs = ExecutionSegment::split(&[1, 1, 1]);
        let mut counts = [0u64; 3];
        for k in 0..30_000u64 {
            let owners: Vec<usize> = segs
                .iter()
                .enumerate()
                .filter(|(_, (_, s))| s.owns_arrival(k))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(owners.len(), 1, "arrival {k}");
            counts[owners[0]] += 1;
        }
        for c in counts {
            assert!(c.abs_diff(10_000) <= 20, "{counts:?}");
        }
    }

    #[test]
    fn invalid_segments_are_refused() {
        assert!(ExecutionSegment::new(0.5, 0.5).is_none());
        assert!(ExecutionSegment::new(-0.1, 0.5).is_none());
        assert!(ExecutionSegment::new(0.0, 1.1).is_none());
        assert_eq!(ExecutionSegment::WHOLE.vus(10), 0..10);
    }
}
