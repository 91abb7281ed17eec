//! Latency histograms as their non-zero counts, and a snapshot whose histograms are held so:
//! how the coordinator reads a worker's snapshot. A dense 3-digit histogram of latencies up
//! to 50 ms is some 7,000 counters, of which a second's 200 samples fill at most 200: decoding
//! into the non-zero counts and adding those to the run's totals costs a few hundred steps a
//! histogram instead of allocating, zeroing and scanning thousands.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::metrics::{Snapshot, histogram};

/// Where values sit in a histogram of `digits` significant digits from 1: what
/// `hdrhistogram` computes for such a histogram, so that an index read from the wire names the
/// same value it did in the histogram that wrote it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// log2 of half the number of sub-buckets.
    half_magnitude: u32,
}

impl Layout {
    pub(crate) fn of(digits: u8) -> Layout {
        let largest = 2 * 10u32.pow(u32::from(digits));
        let magnitude = f64::from(largest).log2().ceil() as u32;
        Layout {
            half_magnitude: magnitude.max(1) - 1,
        }
    }

    /// How many counters a histogram declaring `highest` as its highest trackable value has
    /// (hdrhistogram's `distinct_values`): a decoder reads no count past them.
    pub(crate) fn counters_for(self, highest: u64) -> u64 {
        let sub_count = 2u64 << self.half_magnitude;
        let (mut smallest_untrackable, mut buckets) = (sub_count, 1u64);
        while smallest_untrackable <= highest {
            if smallest_untrackable > u64::MAX / 2 {
                buckets += 1;
                break;
            }
            smallest_untrackable <<= 1;
            buckets += 1;
        }
        (buckets + 1) * (sub_count / 2)
    }

    /// The lowest value of counter `index`, with the width of its range (as a power of two),
    /// or `None` past any value a histogram can hold.
    pub(crate) fn value_for(self, index: u64) -> Option<(u64, u32)> {
        let half = 1u64 << self.half_magnitude;
        let bucket = (index >> self.half_magnitude) as i64 - 1;
        let mut sub = (index & (half - 1)) + half;
        let bucket = if bucket < 0 {
            sub -= half;
            0
        } else {
            u32::try_from(bucket).ok()?
        };
        // A value must fit 64 bits with room for its range (in u64: a hostile index makes
        // `bucket` as large as u32 allows).
        if u64::from(bucket) + u64::from(self.half_magnitude) + 1 >= 63 {
            return None;
        }
        Some((sub << bucket, bucket))
    }
}

/// One histogram as its non-zero counts, in value order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sparse {
    /// (lowest value of the counter, log2 of the counter's range, count), by value.
    counts: Vec<(u64, u32, u64)>,
    /// Samples in all.
    len: u64,
}

impl Sparse {
    /// Counts in value order from a decoder: `(lowest value, log2 of its range, count)`,
    /// every count non-zero, their sum `len`.
    pub(crate) fn from_counts(counts: Vec<(u64, u32, u64)>, len: u64) -> Sparse {
        Sparse { counts, len }
    }

    /// The non-zero counts of `h` (a histogram of gauntlet's precision).
    pub fn of(h: &Histogram<u64>) -> Sparse {
        let counts: Vec<(u64, u32, u64)> = h
            .iter_recorded()
            .map(|v| {
                let low = h.lowest_equivalent(v.value_iterated_to());
                let width = h.equivalent_range(low).trailing_zeros();
                (low, width, v.count_at_value())
            })
            .collect();
        Sparse {
            counts,
            len: h.len(),
        }
    }

    /// Samples in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest value it may hold, as `Histogram::max` says it (0 when empty).
    pub fn max(&self) -> u64 {
        self.counts
            .last()
            .map_or(0, |(low, width, _)| low + (1u64 << width) - 1)
    }

    /// The mean, as `Histogram::mean` computes it (each count at its range's middle).
    pub fn mean(&self) -> f64 {
        if self.len == 0 {
            return 0.0;
        }
        self.counts.iter().fold(0.0, |total, (low, width, n)| {
            total + (low + ((1u64 << width) >> 1)) as f64 * *n as f64 / self.len as f64
        })
    }

    /// Adds its counts into `h` (which grows as needed), exactly as `h.add` of the histogram
    /// it came from would.
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for (low, _, n) in &self.counts {
            // Grows to hold it (a value is below 2^40: decoding refuses more), counts
            // saturate; `saturating_record_n` would clamp instead of growing.
            let _ = h.record_n(*low, *n);
        }
    }

    /// The dense histogram of gauntlet's precision.
    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = histogram();
        self.add_to(&mut h);
        h
    }
}

/// A snapshot as the coordinator merges it: its latency histograms as their non-zero counts,
/// everything else as it is.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    /// Counters, failures, checks and attribution (its `histograms` are empty).
    pub rest: Snapshot,
    /// Latency histograms by metric name.
    pub histograms: BTreeMap<String, Sparse>,
}

impl Delta {
    /// `s` with its histograms as their non-zero counts (tests; in-process senders).
    pub fn of(s: &Snapshot) -> Delta {
        let histograms = s
            .histograms
            .iter()
            .map(|(name, h)| (name.clone(), Sparse::of(h)))
            .collect();
        let rest = Snapshot {
            histograms: BTreeMap::new(),
            ..s.clone()
        };
        Delta { rest, histograms }
    }

    /// Adds it into `total`, as `total.merge` of the snapshot it came from would.
    pub fn merge_into(&self, total: &mut Snapshot) {
        total.merge(&self.rest);
        for (name, h) in &self.histograms {
            match total.histograms.get_mut(name) {
                Some(mine) => h.add_to(mine),
                None => {
                    total.histograms.insert(name.clone(), h.to_histogram());
                }
            }
        }
    }

    /// Samples of metric `name` (0 when it has none).
    pub fn len(&self, name: &str) -> u64 {
        self.histograms.get(name).map_or(0, Sparse::len)
    }

    /// Adds into `window` what a sliding window keeps of it: its counters, failure patterns
    /// and checks, and of its histograms only `metrics`' (no copy of it is made first).
    pub fn merge_windowed_into(&self, window: &mut Snapshot, metrics: &[String]) {
        window.merge_outcomes(&self.rest);
        for m in metrics {
            if let Some(h) = self.histograms.get(m) {
                h.add_to(window.histograms.entry(m.clone()).or_insert_with(histogram));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Whether `a` and `b` hold the same counts at the same values (whatever their sizes).
    fn same(a: &Histogram<u64>, b: &Histogram<u64>) -> bool {
        let counts = |h: &Histogram<u64>| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect::<Vec<_>>()
        };
        (a.len(), a.min(), a.max()) == (b.len(), b.min(), b.max()) && counts(a) == counts(b)
    }

    fn spread(seed: u64, n: usize, top: u64) -> Histogram<u64> {
        let mut h = histogram();
        let mut x = seed;
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            h.record(1 + x % top).unwrap();
        }
        h
    }

    #[test]
    fn sparse_counts_add_up_to_what_the_dense_histogram_adds() {
        for (seed, top) in [(1, 100), (7, 5_000), (99, 50_000), (5, 3_000_000_000)] {
            let h = spread(seed, 500, top);
            let s = Sparse::of(&h);
            assert_eq!(s.len(), h.len());
            assert_eq!(s.max(), h.max());
            assert_eq!(s.mean(), h.mean());
            let mut dense = spread(seed + 1, 300, 20_000);
            let mut via_sparse = dense.clone();
            dense.add(&h).unwrap();
            s.add_to(&mut via_sparse);
            assert!(same(&dense, &via_sparse), "top {top}");
            assert!(same(&s.to_histogram(), &h), "top {top}");
        }
        let empty = Sparse::of(&histogram());
        assert!(empty.is_empty());
        assert_eq!((empty.max(), empty.mean()), (0, 0.0));
    }

    #[test]
    fn layouts_name_the_values_hdrhistogram_does() {
        for digits in [2u8, 3] {
            let layout = Layout::of(digits);
            let h = Histogram::<u64>::new_with_bounds(1, 1 << 40, digits).unwrap();
            for index in [0u64, 1, 127, 128, 255, 256, 1023, 1024, 2047, 2048, 5000] {
                let (low, width) = layout.value_for(index).unwrap();
                assert_eq!(h.lowest_equivalent(low), low, "{digits} {index}");
                assert_eq!(h.equivalent_range(low), 1 << width, "{digits} {index}");
                if index > 0 {
                    let (before, _) = layout.value_for(index - 1).unwrap();
                    assert_eq!(h.next_non_equivalent(before), low, "{digits} {index}");
                }
            }
            assert_eq!(layout.value_for(u64::MAX >> 1), None);
            for highest in [2u64, 1000, 2047, 2048, 50_000, 1 << 30, 1 << 40] {
                let h = Histogram::<u64>::new_with_bounds(1, highest, digits).unwrap();
                assert_eq!(
                    layout.counters_for(highest),
                    h.distinct_values() as u64,
                    "{digits} {highest}"
                );
            }
            // Indexes whose bucket nears u32::MAX (an overflow once) are no value either.
            for shift in [40u32, 41, 42, 43] {
                for index in [(1u64 << shift) - 1, 1 << shift, (1 << shift) + 5] {
                    assert_eq!(layout.value_for(index), None, "{digits} {index}");
                }
            }
        }
    }

    #[test]
    fn a_delta_merges_like_its_snapshot() {
        let mut s = Snapshot::default();
        s.histograms
            .insert("session".into(), spread(3, 200, 40_000));
        s.histograms
            .insert("ws.handshake".into(), spread(4, 200, 4_000));
        s.counters.sessions_passed = 200;
        let mut total = Snapshot::default();
        total
            .histograms
            .insert("session".into(), spread(8, 50, 90_000));
        let mut expected = total.clone();
        expected.merge(&s);
        Delta::of(&s).merge_into(&mut total);
        assert_eq!(total.histograms.len(), expected.histograms.len());
        for (name, h) in &expected.histograms {
            assert!(same(&total.histograms[name], h), "{name}");
        }
        assert_eq!(total.counters, expected.counters);
        let mut kept = Snapshot::default();
        Delta::of(&s).merge_windowed_into(&mut kept, &["session".into()]);
        assert_eq!(kept.histograms.len(), 1);
        assert!(same(&kept.histograms["session"], &s.histograms["session"]));
    }
}
