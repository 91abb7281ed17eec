//! Small validated value types that reject bad input while a file is parsed.

use serde::{Deserialize, Deserializer, Serialize};

/// A probability in `0.0..=1.0` (a fault rate, a fraction of a limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Rate(f64);

impl Rate {
    /// Never.
    pub const ZERO: Rate = Rate(0.0);
    /// Always.
    pub const ONE: Rate = Rate(1.0);

    /// `value` if it lies in `0.0..=1.0`.
    pub fn new(value: f64) -> Option<Rate> {
        (0.0..=1.0).contains(&value).then_some(Rate(value))
    }

    /// The probability.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Rate::new(value).ok_or_else(|| {
            serde::de::Error::custom(format!("must be between 0 and 1 (got {value})"))
        })
    }
}
