//! Execution segments: a worker's share `[start, end)` of the whole load, in exact integer
//! arithmetic. The load is cut into [`ONE`] = 2^63 ticks; a segment's ends are tick counts, so
//! shares of a fleet never overlap and always add up to exactly the whole, however often a
//! lost share is cut again among survivors ([`ExecutionSegment::sub_segment`], like k6's
//! execution segments on exact rationals). VU ids are cut at `floor(start * total)`, and
//! open-model arrival `k` belongs to the segment holding the `k`-th point of the van der
//! Corput sequence, so every arrival has exactly one owner and each share stays within a few
//! arrivals of its fraction however long the run.

use std::ops::Range;

/// The whole load, in ticks: a segment's ends are multiples of `1 / ONE`.
pub const ONE: u64 = 1 << 63;

/// A part `[start, end)` of the load, in ticks, `0 <= start < end <= ONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExecutionSegment {
    start: u64,
    end: u64,
}

impl ExecutionSegment {
    /// All of the load (one worker).
    pub const WHOLE: ExecutionSegment = ExecutionSegment { start: 0, end: ONE };

    /// `[start, end)` in ticks, if it is a valid, non-empty part of the whole.
    pub fn from_ticks(start: u64, end: u64) -> Option<ExecutionSegment> {
        (start < end && end <= ONE).then_some(ExecutionSegment { start, end })
    }

    /// Its start, in ticks.
    pub fn start_ticks(&self) -> u64 {
        self.start
    }

    /// Its end, in ticks.
    pub fn end_ticks(&self) -> u64 {
        self.end
    }

    /// Its start as a fraction of the whole.
    pub fn start(&self) -> f64 {
        self.start as f64 / ONE as f64
    }

    /// Its end as a fraction of the whole.
    pub fn end(&self) -> f64 {
        self.end as f64 / ONE as f64
    }

    /// Its width as a fraction of the whole.
    pub fn width(&self) -> f64 {
        (self.end - self.start) as f64 / ONE as f64
    }

    /// Cuts the whole into consecutive segments proportional to `weights` (zero weights get
    /// none: they are skipped). Empty when the weights add up to zero.
    pub fn split(weights: &[u64]) -> Vec<(usize, ExecutionSegment)> {
        ExecutionSegment::WHOLE.split_among(weights)
    }

    /// Cuts this segment into consecutive parts proportional to `weights`: the parts meet end
    /// to end and cover it exactly.
    pub fn split_among(&self, weights: &[u64]) -> Vec<(usize, ExecutionSegment)> {
        let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
        if total == 0 {
            return Vec::new();
        }
        let width = u128::from(self.end - self.start);
        // The boundary after `acc` of `total`, rounded up to a whole tick: integer arithmetic,
        // so the last part ends exactly at `end` and neighbours share their boundary; rounded
        // up, so a boundary at a fraction `a/b` cuts `n` VUs at exactly `floor(n a / b)`.
        let at = |acc: u128| self.start + (width * acc).div_ceil(total) as u64;
        let mut acc = 0u128;
        let mut out = Vec::new();
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            let start = at(acc);
            acc += u128::from(*w);
            let end = at(acc);
            if let Some(part) = ExecutionSegment::from_ticks(start, end) {
                out.push((i, part));
            }
        }
        out
    }

    /// The part of this segment that `part` is of the whole (`[0, 1/2)` of `[1/2, 1)` is
    /// `[1/2, 3/4)`).
    pub fn sub_segment(&self, part: &ExecutionSegment) -> Option<ExecutionSegment> {
        let width = u128::from(self.end - self.start);
        let at = |t: u64| self.start + (width * u128::from(t)).div_ceil(u128::from(ONE)) as u64;
        ExecutionSegment::from_ticks(at(part.start), at(part.end))
    }

    /// This share's VU ids out of `total` fleet-wide VUs.
    pub fn vus(&self, total: u64) -> Range<u64> {
        let cut = |t: u64| (u128::from(t) * u128::from(total) / u128::from(ONE)) as u64;
        cut(self.start)..cut(self.end)
    }

    /// Whether open-model arrival `k` (0-based, fleet-wide) is this share's.
    pub fn owns_arrival(&self, k: u64) -> bool {
        let p = van_der_corput_ticks(k);
        self.start <= p && p < self.end
    }
}

/// The base-2 radical inverse of `k` in ticks: 0, ONE/2, ONE/4, 3 ONE/4, ONE/8... (a
/// low-discrepancy sequence).
pub fn van_der_corput_ticks(k: u64) -> u64 {
    k.reverse_bits() >> 1
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
    fn shares_cut_again_and_again_still_add_up_exactly() {
        // A share lost and handed to 3 survivors, one of whose parts is lost and handed to
        // 7, and so on: the parts always meet end to end and cover the lost share exactly.
        let mut shares: Vec<ExecutionSegment> = ExecutionSegment::split(&[3, 5, 7])
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        for weights in [
            &[1u64, 1, 1][..],
            &[2, 9, 1, 1, 5, 3, 7],
            &[1_000_000, 1, 999_999],
        ] {
            let lost = shares.remove(1);
            let parts: Vec<ExecutionSegment> = lost
                .split_among(weights)
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            assert_eq!(parts[0].start_ticks(), lost.start_ticks());
            assert_eq!(parts.last().unwrap().end_ticks(), lost.end_ticks());
            for w in parts.windows(2) {
                assert_eq!(w[0].end_ticks(), w[1].start_ticks());
            }
            shares.extend(parts);
            shares.sort_by_key(|s| s.start_ticks());
            let covered: u64 = shares.iter().map(|s| s.end_ticks() - s.start_ticks()).sum();
            assert_eq!(covered, ONE, "the shares add up to exactly the whole");
            let mut owners = vec![0u32; 4096];
            for s in &shares {
                for (k, n) in owners.iter_mut().enumerate() {
                    *n += u32::from(s.owns_arrival(k as u64));
                }
            }
            assert!(
                owners.iter().all(|n| *n == 1),
                "every arrival has one owner"
            );
        }
        let half = ExecutionSegment::from_ticks(ONE / 2, ONE).unwrap();
        let first_half = ExecutionSegment::from_ticks(0, ONE / 2).unwrap();
        assert_eq!(
            half.sub_segment(&first_half),
            ExecutionSegment::from_ticks(ONE / 2, ONE / 4 * 3)
        );
    }

    #[test]
    fn vus_are_cut_where_the_fractions_fall() {
        let thirds = ExecutionSegment::split(&[1, 1, 1]);
        let counts: Vec<u64> = thirds
            .iter()
            .map(|(_, s)| s.vus(120).count() as u64)
            .collect();
        assert_eq!(counts, [40, 40, 40]);
        let halves = ExecutionSegment::split(&[1, 1]);
        assert_eq!(halves[0].1.vus(1), 0..0);
        assert_eq!(halves[1].1.vus(1), 0..1);
        assert_eq!(halves[0].1.vus(7), 0..3);
    }

    #[test]
    fn invalid_segments_are_refused() {
        assert!(ExecutionSegment::from_ticks(5, 5).is_none());
        assert!(ExecutionSegment::from_ticks(0, ONE + 1).is_none());
        assert_eq!(ExecutionSegment::WHOLE.vus(10), 0..10);
        assert_eq!(ExecutionSegment::split(&[0, 0]), Vec::new());
    }
}
