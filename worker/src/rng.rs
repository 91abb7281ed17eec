//! A small, fast, seedable random source (SplitMix64) for think times, scenario picks and
//! UUIDs: statistical quality is all these need, and a VU carries it without locking.

/// SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator keyed by `parts` (the same parts give the same sequence).
    pub fn keyed(parts: &[u64]) -> Rng {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        for p in parts {
            r.0 ^= p.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            r.next_u64();
        }
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A random (version 4) UUID in its text form.
    pub fn uuid(&mut self) -> String {
        self.uuid_bytes().iter().map(|&b| char::from(b)).collect()
    }

    /// A random (version 4) UUID's text, without allocating: the 32 hex digits of its two
    /// halves in order, with dashes after the 8th, 12th, 16th and 20th.
    pub fn uuid_bytes(&mut self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hi = (self.next_u64() & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
        let lo = (self.next_u64() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        let digits = (u128::from(hi) << 64) | u128::from(lo);
        let mut out = [b'-'; 36];
        let mut shift = 128;
        for (i, slot) in out.iter_mut().enumerate() {
            if !matches!(i, 8 | 13 | 18 | 23) {
                shift -= 4;
                *slot = HEX[((digits >> shift) & 0xF) as usize];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let mut r = Rng::keyed(&[1, 2]);
        let u = r.uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, r.uuid());
    }

    #[test]
    fn uuid_text_is_the_halves_in_hex() {
        let mut a = Rng::keyed(&[3]);
        let mut b = a.clone();
        for _ in 0..1000 {
            let u = a.uuid();
            let hi = (b.next_u64() & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
            let lo = (b.next_u64() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
            let want = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                hi >> 32,
                (hi >> 16) & 0xFFFF,
                hi & 0xFFFF,
                lo >> 48,
                lo & 0xFFFF_FFFF_FFFF
            );
            assert_eq!(u, want);
        }
    }

    #[test]
    fn unit_is_in_range() {
        let mut r = Rng::keyed(&[7]);
        for _ in 0..10_000 {
            let x = r.unit();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
