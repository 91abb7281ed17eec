//! Seeded, order-independent random draws: each decision hashes (seed, what, who, which one),
//! so the same seed and workload give the same faults and delays however connections interleave.

/// A SplitMix64 stream: tiny, fast, and good enough for fault draws and delays.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A stream keyed by `parts` (seed first).
    pub fn keyed(parts: &[u64]) -> SplitMix {
        let mut state = 0x243F_6A88_85A3_08D3_u64;
        for &part in parts {
            state = mix(state ^ part);
        }
        SplitMix(state)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p >= 1.0 || (p > 0.0 && self.next_f64() < p)
    }

    /// A standard normal deviate (Box-Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a string (FNV-1a), for keying draws by user or path.
pub fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_stream_other_key_other_stream() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SplitMix::keyed(&[1, 2]), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SplitMix::keyed(&[1, 2]), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SplitMix::keyed(&[2, 1]), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn chance_matches_rate() {
        let hits = (0..100_000u64)
            .filter(|&i| SplitMix::keyed(&[9, i]).chance(0.25))
            .count();
        assert!((24_000..26_000).contains(&hits), "{hits}");
        assert!(SplitMix::keyed(&[1]).chance(1.0));
        assert!(!SplitMix::keyed(&[1]).chance(0.0));
    }
}
